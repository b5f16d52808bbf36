#!/usr/bin/env bash
# The project's test command: bring up a local SLURM cluster (when it can be had), run every test, bring it down.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
started=0
if [ -x scripts/slurm/up.sh ] || [ -f scripts/slurm/up.sh ]; then
  if bash scripts/slurm/up.sh; then started=1; else echo "test.sh: SLURM cluster not available; SLURM tests will skip" >&2; fi
fi
"$PY" -m pytest -q "$@"
rc=$?
if [ "$started" = 1 ]; then bash scripts/slurm/down.sh || true; fi
exit $rc
