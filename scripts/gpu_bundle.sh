#!/usr/bin/env bash
# Build what the GPU benchmark carries to the device machine, which has no network.
#
# The device (H100/H200) has Python 3.12, torch 2.11.0+cu130 and transformers, but no
# vLLM: vLLM 0.26.0 (the release built for torch 2.11) and its missing wheels travel in
# parts of PART_MB MiB, one part per device call (a call carries at most 64 MiB).
# The model folder is a 1.7B Llama shape (SmolLM2-1.7B's config) with the bundled
# SmolLM2 tokenizer; it is loaded with --load-format dummy (random weights): right for
# throughput, meaningless for output quality.
#
# usage (from the project root):
#   bash scripts/gpu_bundle.sh            # -> .gpu/part-00 ... part-NN, .gpu/MANIFEST, .gpu/model/
#   env: SHARED (default ../shared/gpu)  PART_MB (default 60)  MODEL_CONFIG (a config.json)
#        TOKENIZER_DIR (default: the converted bundled model under ~/.cache/structsum/models)
#        SKIP_WHEELS=1 rebuilds only .gpu/model
# then: docs/benchmarks.md, "On an H100", for the device calls.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/gpu}
model_config=${MODEL_CONFIG:-$shared/dummy-1.7b/config.json}
out=.gpu

# Pure-Python needs of structsum that the device image lacks (jinja2, rich, typer,
# prometheus-client are there already; vLLM's own resolution brings pydantic).
extra="xgrammar==0.2.6 pycountry pydantic-settings jsonschema referencing"

if [[ -z "${SKIP_WHEELS:-}" ]]; then
  EXTRA="$extra" PART_MB="${PART_MB:-60}" bash "$shared/fetch-vllm-wheels.sh" "$out"
fi

tokenizer_dir=${TOKENIZER_DIR:-}
if [[ -z "$tokenizer_dir" ]]; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/structsum/models
  tokenizer_dir=$(ls -d "$cache"/SmolLM2-135M-Instruct-*/ 2>/dev/null | head -1 || true)
  if [[ -z "$tokenizer_dir" ]]; then
    echo "no converted bundled model under $cache: run 'structsum templates list' or any" \
      "engine command once, or set TOKENIZER_DIR" >&2
    exit 1
  fi
fi
rm -rf "$out/model" && mkdir -p "$out/model"
cp "$model_config" "$out/model/config.json"
for f in tokenizer.json tokenizer_config.json chat_template.jinja generation_config.json; do
  if [[ -f "$tokenizer_dir/$f" ]]; then cp "$tokenizer_dir/$f" "$out/model/"; fi
done
echo "model folder: $(du -sh "$out/model" | cut -f1) in $out/model (config: $model_config)" >&2
ls -la "$out" >&2
