#!/usr/bin/env bash
# Quickstart 2: run the whole test suite. Creates .venv on first use.
# Extra arguments go to pytest (e.g. -k manifest, -x).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../workflow/scripts/setup-env.sh"
cd "$MAGICFLOW_ROOT"
exec python -m pytest "$@"
