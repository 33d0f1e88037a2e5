#!/usr/bin/env bash
# The test suite; pytest's exit code 5 (nothing collected) is a failure here, with a message.
set -uo pipefail
python=${1:-python}
"$python" -m pytest -q "${@:2}"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: the suite is broken" >&2
  exit 1
fi
exit "$rc"
