#!/usr/bin/env bash
# Quickstart 2: run the whole test suite. Creates .venv on first use.
# Extra arguments go to pytest (e.g. -k manifest, -x); --quick first runs the everyday subset.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../workflow/scripts/setup-env.sh"
cd "$MAGICFLOW_ROOT"
# tests/test_authors_notebooks.py compares the paper preset with the authors' notebooks where a copy
# of luca2245/MAGIC-Flow is at hand: a checkout or git directory named here, or where the tool
# library's fetch leaves one; skipped otherwise
fetched=/work/.mirror/luca2245+MAGIC-Flow/repo
if [ -z "${MAGICFLOW_AUTHORS_NOTEBOOKS:-}" ] && [ -d "$fetched" ]; then
    export MAGICFLOW_AUTHORS_NOTEBOOKS="$fetched"
fi
# --quick: the everyday subset (unit tests and dry runs, no registration or Snakemake run: every test
# not marked slow), a few minutes on 2 cores; the full suite stays what CI runs
if [ "${1:-}" = "--quick" ]; then
    shift
    exec python -m pytest -m "not slow" "$@"
fi
exec python -m pytest "$@"
