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
#   real [ARGS]       the same on real weights: the bundled SmolLM2-135M, converted from its
#                     GGUF with structsum's model_store, every shipped template (validity)
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
    copy_parts
    install
    STRUCTSUM_ENGINE__MODEL=$(real_model | tail -n 1)
    export STRUCTSUM_ENGINE__MODEL
    rc=0
    timeout --kill-after=10 "${BENCH_TIMEOUT_S:-540}" python3 scripts/benchmark_followup.py \
      "$@" --result-dir "$out" \
      >"$out/followup-${1:-run}.log" 2>&1 || rc=$?
    grep -v -E '^\((EngineCore|Worker|APIServer|MainProcess)|^INFO|^WARNING|^[0-9-]+ [0-9:,]+ ' \
      "$out/followup-${1:-run}.log" | tail -n 40 || true
    echo "followup exit status: $rc"
    exit "$rc"
    ;;
  *)
    echo "usage: $0 copy | bench [ARGS] | tasks [ARGS] | real [ARGS] | followup ARGS" >&2
    exit 2
    ;;
esac
