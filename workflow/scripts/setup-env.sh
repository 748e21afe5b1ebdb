# Sourced by workflow/demo.sh and tests/run.sh: creates (or reuses) the Python environment
# in .venv with the pipeline, Snakemake and the test tools, and puts it first on PATH.
# Every direct dependency is installed at its exact version in envs/constraints.txt (torch==2.13.0
# among them), the versions envs/*.yaml pin for --use-conda too.
# Rebuilt only when pyproject.toml, the constraints, this script or the extras change.
# Override: MAGICFLOW_VENV, PYTHON, MAGICFLOW_EXTRAS (pyproject extras, default test,workflow; the
# SLURM cluster test uses MAGICFLOW_VENV=.venv-slurm MAGICFLOW_EXTRAS=slurm, which includes workflow).

MAGICFLOW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MAGICFLOW_VENV="${MAGICFLOW_VENV:-$MAGICFLOW_ROOT/.venv}"
MAGICFLOW_EXTRAS="${MAGICFLOW_EXTRAS:-test,workflow}"
_magicflow_constraints="$MAGICFLOW_ROOT/envs/constraints.txt"
_magicflow_want="$( (cat "$MAGICFLOW_ROOT/pyproject.toml" "$_magicflow_constraints" "${BASH_SOURCE[0]}"; echo "extras=$MAGICFLOW_EXTRAS") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$MAGICFLOW_VENV/.magicflow-env" 2>/dev/null)" != "$_magicflow_want" ]; then
    echo "Creating the Python environment in $MAGICFLOW_VENV (a minute or two, once) ..." >&2
    "${PYTHON:-python3}" -m venv "$MAGICFLOW_VENV"
    "$MAGICFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    if [[ ",$MAGICFLOW_EXTRAS," == *,slurm,* ]]; then
        # the SLURM plugin caps pandas below 3: the slurm extra pins its pandas instead
        grep -v '^pandas==' "$_magicflow_constraints" > "$MAGICFLOW_VENV/constraints.txt"
        _magicflow_constraints="$MAGICFLOW_VENV/constraints.txt"
    fi
    # torch pinned by the constraints: a bare requirement in a fresh environment may pull another build
    "$MAGICFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$_magicflow_constraints" -e "$MAGICFLOW_ROOT[$MAGICFLOW_EXTRAS]"
    echo "$_magicflow_want" > "$MAGICFLOW_VENV/.magicflow-env"
fi
export PATH="$MAGICFLOW_VENV/bin:$PATH"
