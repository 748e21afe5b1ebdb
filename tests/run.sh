#!/usr/bin/env bash
# Quickstart 2: run the whole test suite. Creates .venv on first use.
# Extra arguments go to pytest (e.g. -k manifest, -x).
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
exec python -m pytest "$@"
