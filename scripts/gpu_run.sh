#!/usr/bin/env bash
# What runs on the device machine (no network): put the carried wheel parts together,
# install vLLM 0.26.0 into /tmp/site once, and run the raw-engine benchmark with the
# carried model folder (1.7B Llama shape, random weights: --load-format dummy).
# The JSON report, a PNG and the log are written to $OUT, which comes back.
#
# Built here by scripts/gpu_bundle.sh. One device call per part, back to back (the
# machine keeps /tmp only while it is warm, 30 s after a call):
#   run(carry=[".gpu/part-00"], command="bash scripts/gpu_run.sh copy")
#   ... part-01 ... part-04 ...
#   run(carry=[".gpu/part-05", ".gpu/model"], command="bash scripts/gpu_run.sh bench [ARGS]")
# Later calls on the same warm machine reuse /tmp/site: "bash scripts/gpu_run.sh bench ARGS".
# ARGS go to scripts/benchmark_engine.py after the defaults below (the last one wins).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-bench}
shift || true
chunks=/tmp/chunks
site=/tmp/site
out=${OUT:-/tmp/out}
mkdir -p "$chunks" "$out"

copy_parts() {
  # Whatever parts this call carried (ignored files travel only when carried).
  for part in .gpu/part-*; do
    [[ -f "$part" ]] && cp "$part" "$chunks/"
  done
  ls -la "$chunks"
}

install() {
  if [[ -f "$site/.structsum-installed" ]]; then
    echo "reusing $site"
    return
  fi
  expected=$(wc -l <.gpu/MANIFEST 2>/dev/null || echo "?")
  echo "assembling $(ls "$chunks" | wc -l) parts ($expected packages in MANIFEST)"
  rm -rf /tmp/wheels
  cat "$chunks"/part-* | tar -C /tmp -xf -   # fails on a missing or short part
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" /tmp/wheels/*.whl
  touch "$site/.structsum-installed"
}

case "$mode" in
  copy)
    copy_parts
    ;;
  bench)
    copy_parts
    start=$(date +%s)
    install
    echo "install: $(( $(date +%s) - start )) s"
    # structsum is the src/ folder under another name (pyproject package-dir).
    mkdir -p /tmp/pkg && ln -sfn "$PWD/src" /tmp/pkg/structsum
    export PYTHONPATH=$site:/tmp/pkg PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
    # The FlashInfer sampler JIT needs CUDA headers the bundle leaves out.
    export VLLM_USE_FLASHINFER_SAMPLER=0
    nvidia-smi -L || true
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))" || true
    rc=0
    # Ends well inside the device's 10-minute call limit; the report is rewritten after
    # every backend, so a cut-short run still brings back what it measured.
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
    ls -la "$out"
    exit "$rc"
    ;;
  *)
    echo "usage: $0 copy | bench [benchmark_engine.py args]" >&2
    exit 2
    ;;
esac
