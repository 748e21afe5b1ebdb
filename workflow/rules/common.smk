# Shared by every rule file: config validation, paths, and how rules call the package.

import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from magicflow.config import active_experiments, validate_config
from magicflow.errors import InputError

try:
    validate_config(config)
except InputError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None

EXPERIMENTS, SKIPPED_EXPERIMENTS = active_experiments(config)
for line in SKIPPED_EXPERIMENTS:
    print(line, file=sys.stderr)

DATASETS = sorted(config["datasets"])
DEMO_DATASETS = sorted(name for name, d in config["datasets"].items() if d["kind"] == "demo")
RESULTS = "results"

# Rules call the package as `python -m magicflow`. With --use-conda that is the rule's conda
# environment (which gets the package through PYTHONPATH); otherwise the Python running
# Snakemake, so no activation is needed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
_USES_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
MAGICFLOW = f"{'python' if _USES_CONDA else shlex.quote(sys.executable)} -m magicflow"
ENV_MAGICFLOW = "../../envs/magicflow.yaml"


def log_path(stage, name):
    return f"{RESULTS}/logs/{stage}/{name}.log"


def benchmark_path(stage, name):
    return f"{RESULTS}/benchmarks/{stage}/{name}.tsv"


def name_regex(names):
    """Wildcard constraint matching exactly these names (none: matches nothing)."""
    return "|".join(names) if names else "(?!)"
