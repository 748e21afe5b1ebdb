# Sourced by workflow/demo.sh and tests/run.sh: creates (or reuses) the Python environment
# in .venv with the pipeline and its test tools, and puts it first on PATH.
# Rebuilt only when pyproject.toml, this script or the extras change.
# Override: MAGICFLOW_VENV, PYTHON, MAGICFLOW_EXTRAS (pyproject extras, default test; the SLURM
# cluster test uses MAGICFLOW_VENV=.venv-slurm MAGICFLOW_EXTRAS=slurm).

MAGICFLOW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MAGICFLOW_VENV="${MAGICFLOW_VENV:-$MAGICFLOW_ROOT/.venv}"
MAGICFLOW_EXTRAS="${MAGICFLOW_EXTRAS:-test}"
_magicflow_want="$( (cat "$MAGICFLOW_ROOT/pyproject.toml" "${BASH_SOURCE[0]}"; echo "extras=$MAGICFLOW_EXTRAS") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$MAGICFLOW_VENV/.magicflow-env" 2>/dev/null)" != "$_magicflow_want" ]; then
    echo "Creating the Python environment in $MAGICFLOW_VENV (a minute or two, once) ..." >&2
    "${PYTHON:-python3}" -m venv "$MAGICFLOW_VENV"
    "$MAGICFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # torch first and pinned: a bare requirement in a fresh environment may pull a multi-GB CUDA build
    "$MAGICFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0
    "$MAGICFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$MAGICFLOW_ROOT[$MAGICFLOW_EXTRAS]"
    echo "$_magicflow_want" > "$MAGICFLOW_VENV/.magicflow-env"
fi
export PATH="$MAGICFLOW_VENV/bin:$PATH"
