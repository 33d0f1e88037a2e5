#!/usr/bin/env bash
# The main job on the embedded default, through the queue: start a worker, enqueue a
# summary of the sample transcript, print its JSON (checked against the template's
# full schema), stop the worker cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
TEMPLATE=${TEMPLATE:-generic_summary_v1}
SAMPLE=${SAMPLE:-scripts/samples/meeting.txt}
# A Redis DB of its own, so the demo never mixes with other queues on this Redis.
export STRUCTSUM_QUEUE__BROKER_URL=${STRUCTSUM_QUEUE__BROKER_URL:-redis://127.0.0.1:6379/13}
export STRUCTSUM_QUEUE__METRICS_PORT=${STRUCTSUM_QUEUE__METRICS_PORT:-0}
export HF_HUB_OFFLINE=1 VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}

workdir=$(mktemp -d)
worker_log="$workdir/worker.log"
"$BIN/structsum" worker --concurrency 4 --loglevel WARNING >"$worker_log" 2>&1 &
worker=$!
stop_worker() {
  if kill -0 "$worker" 2>/dev/null; then
    kill -TERM "$worker"  # Celery's warm shutdown: finish jobs, close the engine
    wait "$worker" || true
  fi
}
trap stop_worker EXIT
echo "worker started (pid $worker, log $worker_log); the first start compiles (~2 min)" >&2

started=$(date +%s)
if ! "$BIN/structsum" enqueue summarize "$SAMPLE" --template "$TEMPLATE" --wait --timeout 900 \
    >"$workdir/result.json"; then
  echo "the job failed; worker log:" >&2
  tail -40 "$worker_log" >&2
  exit 1
fi
echo "job done in $(( $(date +%s) - started )) s (engine start included)" >&2
"$BIN/python" - "$workdir/result.json" "schemas/$TEMPLATE/schema.json" <<'PY'
import json, sys
import jsonschema
result = json.load(open(sys.argv[1]))
schema = json.load(open(sys.argv[2]))
print(json.dumps(result["data"], indent=2, ensure_ascii=False))
jsonschema.validate(result["data"], schema)
tries = ", ".join(f"t={a['temperature']}:{a.get('decoding') or 'unguided'}:{'ok' if a['valid'] else 'invalid'}" for a in result["attempts"])
print(f"valid against {sys.argv[2]} after {len(result['attempts'])} attempt(s) [{tries}], "
      f"{result['elapsed_s']:.1f} s, model {result['model']}", file=sys.stderr)
g = result.get("grounding") or {}
if g.get("score") is not None:
    copied = f", verbatim fields copied {g['verbatim_copied']}/{g['verbatim_fields']}" if g.get("verbatim_fields") else ""
    print(f"grounding: {g['score']:.2f} of {g['content_words']} content words are in the text{copied}",
          file=sys.stderr)
PY
