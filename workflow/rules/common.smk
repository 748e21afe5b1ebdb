# Shared by every rule file: config validation, paths, and how rules call the package.

import os
import shlex
import sys
import traceback
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

# Run locally, the jobs running at once may together claim at most this machine's memory (each
# rule's mem_mb is its measured peak with a margin), so parallel jobs cannot exhaust a laptop.
# `--resources mem_mb=N` sets another limit; cluster executors give each job its own memory.
if workflow.local_exec and "mem_mb" not in workflow.global_resources:
    workflow.register_resource("mem_mb", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 9 // 10 // 2**20)

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
# Every shell rule runs its command through this: output to the rule's log, and on failure the log
# kept as <log>.failed-<time> and its end quoted in Snakemake's error output (workflow/scripts/logged.sh).
LOGGED = f"bash {shlex.quote(str(Path(workflow.basedir) / 'workflow' / 'scripts' / 'logged.sh'))}"


def write_logged(path, text, log):
    """A run: rule's one write, logged like a shell rule's command: a line on success, the
    traceback on failure, so that show-failed-logs has the cause to show."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    try:
        Path(path).write_text(text)
    except Exception:
        Path(log).write_text(traceback.format_exc())
        raise
    Path(log).write_text(f"wrote {path}\n")


def log_path(stage, name):
    return f"{RESULTS}/logs/{stage}/{name}.log"


def benchmark_path(stage, name):
    return f"{RESULTS}/benchmarks/{stage}/{name}.tsv"


def name_regex(names):
    """Wildcard constraint matching exactly these names (none: matches nothing)."""
    return "|".join(names) if names else "(?!)"
