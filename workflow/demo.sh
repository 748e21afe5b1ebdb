#!/usr/bin/env bash
# Quickstart 1: run the whole workflow on the built-in synthetic demo cohort.
# Creates .venv on first use. Extra arguments go to snakemake (e.g. a target, -n, --forcerun X).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/setup-env.sh"
cd "$MAGICFLOW_ROOT"
exec snakemake --cores "${CORES:-all}" "$@"
