#!/usr/bin/env bash
# Quickstart 1: run the whole workflow on the built-in synthetic demo cohort.
# Creates .venv on first use. Extra arguments go to snakemake (e.g. a target, -n, --forcerun X).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/setup-env.sh"
cd "$MAGICFLOW_ROOT"
# nproc, not --cores all: Snakemake counts the host's CPUs, not the ones this process may use
exec snakemake --cores "${CORES:-$(nproc)}" "$@"
