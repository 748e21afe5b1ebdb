"""The workflow as Snakemake itself plans it, with no SLURM or conda needed (tests/cluster/run.sh
runs the SLURM profile on a real one-node cluster): dry runs over a matrix of configs (the demo,
every dataset kind on an empty fake root, the paper's tasks, the FSL backend this machine lacks,
a GPU device with one experiment kept on the CPU) checked on the jobs planned, their commands,
resources and the conda environments `--use-conda` would build; `snakemake --lint` finds nothing; the execution profiles name
rules that exist."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from magicflow.config import REPO_ROOT, validate_config

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile")]
SHIPPED = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
EXPERIMENTS = validate_config(copy.deepcopy(SHIPPED))["experiments"]  # schema defaults filled in
JOB_HEAD = re.compile(r"^(?:rule|checkpoint) (\w+):$")
TORCH_RULES = ("train_fold", "sample_fold", "classify_fold", "attribution_fold")


@dataclass
class Job:
    """One job of a dry run, as Snakemake prints it."""

    rule: str
    fields: dict[str, str]
    shell: str = ""

    @property
    def wildcards(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.fields.get("wildcards", "").split(", ") if item)

    @property
    def resources(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.fields.get("resources", "").split(", ") if item)

    @property
    def threads(self) -> int:
        return int(self.fields.get("threads", 1))  # Snakemake leaves out threads: 1


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, timeout=300)


def workdir(tmp_path: Path, edit=None) -> Path:
    config = copy.deepcopy(SHIPPED)
    if edit:
        edit(config)
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def plan(tmp_path: Path, edit=None) -> list[Job]:
    """Every job a dry run plans (the shell command of each too: profiles/default prints them)."""
    result = snakemake(workdir(tmp_path, edit), "-n", "--cores", "4")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    jobs: list[Job] = []
    for line in result.stdout.splitlines():
        head = JOB_HEAD.match(line)
        if head:
            jobs.append(Job(head.group(1), {}))
        elif jobs and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            jobs[-1].fields[key] = value
        elif jobs and line.startswith("Shell command: "):
            jobs[-1].shell = line.removeprefix("Shell command: ")
    assert jobs, result.stdout[-2000:]
    return jobs


def folds_run(experiment: dict) -> int:
    return experiment["run_folds"] or (experiment["folds"] if experiment["model"] == "classification" else 1)


def by_rule(jobs: list[Job], rule: str) -> list[Job]:
    return [job for job in jobs if job.rule == rule]


def fake_roots(tmp_path: Path, kinds: dict[str, str]) -> dict[str, dict]:
    """Dataset entries on empty folders, with the tables each kind requires (empty files: a dry
    run reads nothing)."""
    tables = {
        "ixi": {"demographics": "IXI.xls"},
        "sald": {"demographics": "participants.xlsx"},
        "ppmi": {"collection": "collection.csv"},
        "adni": {"collection": "collection.csv", "diagnosis_table": "ADNIMERGE.csv"},
    }
    entries = {}
    for name, kind in kinds.items():
        root = tmp_path / "data" / name
        root.mkdir(parents=True)
        for file in tables.get(kind, {}).values():
            (root / file).touch()
        entries[name] = {"kind": kind, "root": str(root), **tables.get(kind, {})}
    return entries


def test_the_demo_plans_every_stage_with_its_resources(tmp_path: Path):
    jobs = plan(tmp_path / "work")
    counts = Counter(job.rule for job in jobs)
    folds = sum(folds_run(e) for e in EXPERIMENTS.values() if e["datasets"] == ["demo"])
    assert counts["demo_cohort"] == counts["dataset_manifest"] == counts["preprocess_template"] == 1
    assert all(counts[rule] == folds for rule in TORCH_RULES), counts
    assert counts["evaluate_experiment"] == counts["report_experiment"] == 4
    # registration jobs come once the manifest and template checkpoints have run: not planned yet
    assert "preprocess_t1" not in counts
    for job in jobs:
        if job.shell != "None":  # the jobs that run a command (not all, nor the settings writers)
            assert {"mem_mb", "runtime"} <= set(job.resources), job.rule
            assert job.shell.startswith('bash "$MAGICFLOW_LOGGED" results/logs/'), job.shell
    assert {j.rule for j in jobs if j.shell == "None"} == {
        "all",
        "experiment_settings",
        "split_settings",
        "evaluation_settings",
        "baseline_settings",
    }
    for job in by_rule(jobs, "train_fold"):
        assert job.resources["gpu"] == "1"  # device auto: the scheduler may give it one
        assert job.resources["runtime"] == "240"  # training.runtime_minutes at the first attempt
        assert job.shell.split()[3:5] == ["OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"], job.shell
        assert f"--out results/{job.wildcards['experiment']}/models/{job.wildcards['fold']}" in job.shell
    (template,) = by_rule(jobs, "preprocess_template")
    assert "--backend auto --out-dir results/template" in template.shell
    # evaluation is given each fold's files by name, the training benchmark included
    evaluate = next(
        j for j in by_rule(jobs, "evaluate_experiment") if j.wildcards["experiment"] == "demo_diagnosis_classification"
    )
    for fold in ("fold-0", "fold-1", "fold-2"):
        assert f"--train-benchmark {fold}=results/benchmarks/train/demo_diagnosis_classification_{fold}.tsv" in evaluate.shell
        assert f"--attribution {fold}=results/demo_diagnosis_classification/attribution/{fold}" in evaluate.shell
    assert "results/benchmarks/train/demo_diagnosis_classification_fold-2.tsv" in evaluate.fields["input"]
    assert "--split results/demo_diagnosis_classification/splits/split.json" in evaluate.shell
    # every rule that writes a result keeps a benchmark, the run: rules included
    assert all("benchmark" in job.fields for job in jobs if job.rule != "all"), [
        j.rule for j in jobs if "benchmark" not in j.fields
    ]


@pytest.mark.parametrize("kind", ["bids", "ixi", "sald", "ppmi", "adni"])
def test_each_dataset_kind_plans_its_manifest_on_its_root(tmp_path: Path, kind: str):
    entries = fake_roots(tmp_path, {"ext": kind})
    jobs = plan(tmp_path / "work", lambda c: c["datasets"].update(entries))
    (manifest,) = [j for j in by_rule(jobs, "dataset_manifest") if j.wildcards["dataset"] == "ext"]
    root = entries["ext"]["root"]
    assert f"--kind {kind} --root {root}" in manifest.shell
    for key in ("demographics", "collection", "diagnosis_table"):  # tables the manifest reads are its inputs
        if key in entries["ext"]:
            assert f"{root}/{entries['ext'][key]}" in manifest.fields["input"], key
    converts = [j for j in by_rule(jobs, "dicom_to_nifti") if j.wildcards["dataset"] == "ext"]
    if kind in ("ppmi", "adni"):  # IDA downloads: DICOM converted first, the table read by the manifest
        (convert,) = converts
        assert "--nifti-dir results/ext/nifti --convert-only" in convert.shell
        assert (
            "results/ext/nifti/conversion.tsv" in manifest.fields["input"] and "--nifti-dir results/ext/nifti" in manifest.shell
        )
    else:
        assert not converts


def test_the_papers_tasks_are_planned_once_their_datasets_are_configured(tmp_path: Path):
    entries = fake_roots(tmp_path, {"ixi": "ixi", "sald": "sald", "ppmi": "ppmi", "adni": "adni"})
    jobs = plan(tmp_path / "work", lambda c: c["datasets"].update(entries))
    trained = Counter(j.wildcards["experiment"] for j in by_rule(jobs, "train_fold"))
    for name, experiment in EXPERIMENTS.items():
        if experiment["datasets"] != ["demo"]:
            assert trained[name] == folds_run(experiment), name
    assert {j.wildcards["dataset"] for j in by_rule(jobs, "dataset_manifest")} == {"demo", "ixi", "sald", "ppmi", "adni"}


#: Snakemake asks conda three things while it plans a `--use-conda` run (where conda lives, its
#: version, its channel priority) and nothing more in a dry run, which creates no environment. This
#: machine has no conda (no conda channel is reachable), so these answers stand in for them; any
#: other conda command fails, so a plan that tried to build an environment would fail here.
CONDA_STANDIN = """#!/bin/sh
case "$*" in
  "info --json") echo '{"conda_prefix": "%s", "platform": "linux-64"}';;
  "--version") echo "conda 25.1.1";;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}';;
  *) echo "conda stand-in: '$*' is more than planning" >&2; exit 1;;
esac
"""


def conda_environments(tmp_path: Path, edit=None, *targets: str) -> set[str]:
    """The environments `snakemake -n --use-conda` says it would create for the jobs planned."""
    standin = tmp_path / "conda-bin" / "conda"
    standin.parent.mkdir(parents=True)
    standin.write_text(CONDA_STANDIN % (tmp_path / "conda-prefix"))
    standin.chmod(0o755)
    result = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir(tmp_path, edit)), "-n", "--use-conda", "--cores", "4", *targets],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{standin.parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    found = re.findall(r"^Conda environment (\S+) will be created\.$", result.stdout + result.stderr, re.M)
    assert found, (result.stdout + result.stderr)[-2000:]
    return {str(Path(path).resolve().relative_to(REPO_ROOT)) for path in found}


CPU_ENV, CUDA_ENV, FSL_ENV = "envs/magicflow-cpu.yaml", "envs/magicflow-cuda.yaml", "envs/fsl.yaml"


@pytest.mark.parametrize(
    ("backend", "environments"),
    [
        ("auto", {CPU_ENV, CUDA_ENV}),  # auto takes the host's FSL where $FSLDIR has it, else ANTs
        ("fsl", {FSL_ENV, CPU_ENV, CUDA_ENV}),
        ("ants", {CPU_ENV, CUDA_ENV}),
    ],
)
@pytest.mark.slow
def test_the_backend_is_decided_in_the_job_and_its_environment(tmp_path: Path, backend: str, environments: set[str]):
    """No backend is resolved while the rules are read: `fsl` plans here, where FSL is missing,
    and the template job gets the backend to resolve where it runs, in the registration env."""
    edit = lambda c: c["registration"].update(backend=backend)  # noqa: E731
    (template,) = by_rule(plan(tmp_path / "plan", edit), "preprocess_template")
    assert f"preprocess-template --backend {backend} --out-dir results/template" in template.shell
    assert conda_environments(tmp_path / "envs", edit) == environments
    registration = {FSL_ENV if backend == "fsl" else CPU_ENV}
    assert conda_environments(tmp_path / "template", edit, "results/template") == registration


@pytest.mark.slow
def test_use_conda_plans_cuda_only_for_gpu_rules_and_only_when_asked(tmp_path: Path):
    """Rules that need no GPU never pull the CUDA environment; `conda.torch: cpu`, or experiments
    kept on the CPU, keep every job in the CPU one."""
    assert conda_environments(tmp_path / "manifest", None, "results/demo/manifest.tsv") == {CPU_ENV}

    def cpu_torch(config):
        config["conda"] = {"torch": "cpu"}

    def cpu_devices(config):
        for experiment in config["experiments"].values():
            experiment.setdefault("training", {})["device"] = "cpu"

    assert conda_environments(tmp_path / "cpu-torch", cpu_torch) == {CPU_ENV}
    assert conda_environments(tmp_path / "cpu-devices", cpu_devices) == {CPU_ENV}


def test_each_experiment_asks_for_a_gpu_by_its_own_device(tmp_path: Path):
    def edit(config):
        config["training"]["device"] = "cuda"
        config["experiments"]["demo_scanner_generation"]["training"]["device"] = "cpu"

    jobs = plan(tmp_path, edit)
    for rule in TORCH_RULES:
        gpus = {j.wildcards["experiment"]: j.resources["gpu"] for j in by_rule(jobs, rule)}
        assert gpus.pop("demo_scanner_generation") == "0", rule
        assert set(gpus.values()) == {"1"}, (rule, gpus)
        # each runs through a GPU slot of a local run, asking for what it asks the scheduler for
        for job in by_rule(jobs, rule):
            slot = f'"$MAGICFLOW_PYTHON" -m magicflow gpu-slot --gpus {job.resources["gpu"]} -- "$MAGICFLOW_PYTHON" -m magicflow '
            assert slot in job.shell, job.shell
    assert all("gpu" not in j.resources and "gpu-slot" not in j.shell for j in by_rule(jobs, "evaluate_experiment"))


def test_a_parse_time_error_is_one_line(tmp_path: Path):
    result = snakemake(workdir(tmp_path, lambda c: c["experiments"]["demo_scanner_generation"].update(run_folds=9)), "-n")
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == "invalid configuration: config key 'experiments.demo_scanner_generation.run_folds': 9 is more than folds=3"
    )
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr


def test_lint_finds_nothing(tmp_path: Path):
    result = snakemake(workdir(tmp_path), "--lint")
    assert result.returncode == 0 and "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )[-3000:]


def profile(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "profiles" / name / "config.yaml").read_text())


def test_slurm_profile_names_only_existing_rules(tmp_path: Path):
    listed = snakemake(workdir(tmp_path), "--list-rules")
    assert listed.returncode == 0, listed.stderr[-2000:]
    rules = set(listed.stdout.split())
    assert {"preprocess_t1", "train_fold", "dataset_manifest"} <= rules
    slurm = profile("slurm")
    named = set(slurm["set-threads"]) | set(slurm["set-resources"]) | set(slurm["groups"])
    assert named <= rules, named - rules
    assert set(slurm["group-components"]) <= set(slurm["groups"].values())


def test_slurm_profile_settings():
    slurm = profile("slurm")
    assert slurm["executor"] == "slurm" and slurm["jobs"] >= 1
    assert {"mem_mb", "runtime"} <= set(slurm["default-resources"])
    # registration sized for 1 mm, above the rules' own (local, demo-sized) settings
    assert slurm["set-threads"]["preprocess_t1"] >= 4 and slurm["set-resources"]["preprocess_t1"]["mem_mb"] >= 8000
    # per-subject preprocessing is grouped into one SLURM job
    assert {slurm["groups"][r] for r in ("preprocess_t1", "preprocess_coregister")} == {"subject"}


def test_default_profile_leaves_cluster_settings_to_the_slurm_profile():
    # Snakemake reads profiles/default on top of --profile profiles/slurm, and its keys win there
    clash = set(profile("default")) & set(profile("slurm"))
    assert not clash, f"profiles/default would override the SLURM profile's {sorted(clash)}"


def test_training_is_retried_with_a_longer_limit_per_attempt():
    """A training job killed at its time limit starts again (training.retries) with attempt x
    training.runtime_minutes, resuming from last.pt: read off the rule as Snakemake loads it."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings, StorageSettings

    with SnakemakeApi() as api:
        workflow = api.workflow(
            snakefile=REPO_ROOT / "Snakefile",
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(config={"training": {"runtime_minutes": 90, "retries": 3}}),
            storage_settings=StorageSettings(),
            workdir=REPO_ROOT,
        )._workflow
        for name in ("train_fold", "baseline_train", "translate_train"):  # all resume from last.pt
            rule = workflow.get_rule(name)
            assert rule._restart_times == 3, name
            assert [rule.resources["runtime"](None, attempt=a) for a in (1, 2, 4)] == [90, 180, 360], name


@pytest.mark.slow
def test_gpu_jobs_take_the_slurm_settings_of_the_config(tmp_path: Path):
    def edit(config):
        config["slurm"] = {"gpu_partition": "gpu-a100", "gpu_account": "lab-gpu", "cpus_per_gpu": 6}
        config["experiments"]["demo_scanner_generation"]["training"]["device"] = "cpu"

    gpu_jobs = 0
    for job in plan(tmp_path / "set", edit):
        slurm = {k: job.resources.get(k) for k in ("slurm_partition", "slurm_account", "cpus_per_gpu")}
        if job.resources.get("gpu") == "1":
            gpu_jobs += 1
            assert slurm == {"slurm_partition": "gpu-a100", "slurm_account": "lab-gpu", "cpus_per_gpu": "6"}, job
        else:  # other rules, and GPU rules of the experiment kept on the CPU: the profile's defaults
            assert slurm == dict.fromkeys(slurm), job
    assert gpu_jobs > 0
    # unset, partition and account are not declared at all: the profile's default-resources reach every job
    for job in plan(tmp_path / "unset"):
        assert "slurm_partition" not in job.resources and "slurm_account" not in job.resources, job
        assert job.resources.get("cpus_per_gpu") == ("4" if job.resources.get("gpu") == "1" else None), job


def test_a_folds_sampling_classification_and_attribution_are_one_group_job(tmp_path: Path, monkeypatch):
    """The SLURM profile's groups, planned by Snakemake itself (a dry run forms group jobs): per
    fold one group of exactly its three jobs, although sampling shares no file with the others.
    Planned on a machine with one GPU (a login node with one), whose local GPU limit must not
    refuse a group of three GPU steps."""
    monkeypatch.setenv("MAGICFLOW_GPUS", "1")
    slurm = profile("slurm")
    rules = ("sample_fold", "classify_fold", "attribution_fold")
    group = slurm["groups"]["sample_fold"]
    assert {slurm["groups"][r] for r in rules} == {group} and {"{experiment}", "{fold}"} <= set(re.findall(r"{\w+}", group))
    result = snakemake(
        workdir(tmp_path),
        "-n",
        "--cores",
        "4",
        "--groups",
        *(f"{r}={group}" for r in rules),
        "--group-components",
        f"{group}={slurm['group-components'][group]}",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    members: dict[str, list[str]] = {}
    current = None
    for line in result.stdout.splitlines():
        head = re.search(r"Group job (\S+) \(jobs", line)
        if head:
            current = head.group(1)
            members[current] = []
        elif current and re.match(r"^    (?:rule|checkpoint) (\w+):$", line):
            members[current].append(line.split()[1].rstrip(":"))
        elif line.startswith("["):  # an ungrouped job's time stamp (a group's jobs have theirs indented)
            current = None
    demo = {e: s for e, s in EXPERIMENTS.items() if s["datasets"] == ["demo"]}  # the experiments the demo runs
    folds = {f"inference_{e}_fold-{k}" for e, s in demo.items() for k in range(folds_run(s))}
    assert set(members) == folds, members
    assert all(sorted(m) == sorted(rules) for m in members.values()), members
