"""The execution profiles and the per-rule conda environments, checked statically (no SLURM, no
conda needed; tests/cluster/run.sh runs the SLURM profile on a real one-node cluster)."""

from __future__ import annotations

import re

import pytest
import yaml

from magicflow.config import REPO_ROOT

RULE_FILES = [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))]
RULE_HEAD = re.compile(r"^(?:rule|checkpoint) (\w+):\n", re.M)
# what a job runs; `run:` blocks cannot have a conda environment, rules with none only gather inputs
EXECUTES = re.compile(r"^\s+(shell|script|notebook|wrapper):", re.M)


def rules() -> dict[str, str]:
    """Rule name -> its body, from every rule file."""
    found = {}
    for path in RULE_FILES:
        text = path.read_text()
        heads = list(RULE_HEAD.finditer(text))
        for head, after in zip(heads, [*heads[1:], None]):
            body = text[head.end(): after.start() if after else len(text)]
            body = body[: re.search(r"^\S", body, re.M).start()] if re.search(r"^\S", body, re.M) else body
            found[head.group(1)] = body
    return found


def profile(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "profiles" / name / "config.yaml").read_text())


def test_every_rule_that_runs_a_command_names_its_conda_environment():
    all_rules = rules()
    assert {"preprocess_t1", "train_fold", "dataset_manifest"} <= set(all_rules)  # the parser found the rules
    missing = [name for name, body in all_rules.items() if EXECUTES.search(body) and not re.search(r"^\s+conda:", body, re.M)]
    assert not missing, f"rules without a conda: directive: {missing}"


def test_conda_environments_exist():
    common = (REPO_ROOT / "workflow" / "rules" / "common.smk").read_text() + (REPO_ROOT / "workflow" / "rules" / "preprocess.smk").read_text()
    paths = set(re.findall(r'"(\.\./\.\./envs/[\w.-]+\.yaml)"', common))
    assert paths == {"../../envs/magicflow.yaml", "../../envs/fsl.yaml"}
    for path in paths:  # relative to workflow/rules, where the rules live
        env = yaml.safe_load((REPO_ROOT / "workflow" / "rules" / path).resolve().read_text())
        assert env["dependencies"], path


def test_slurm_profile_names_only_existing_rules():
    slurm, all_rules = profile("slurm"), rules()
    named = set(slurm["set-threads"]) | set(slurm["set-resources"]) | set(slurm["groups"])
    assert named <= set(all_rules), named - set(all_rules)
    assert set(slurm["group-components"]) <= set(slurm["groups"].values())


def test_slurm_profile_settings():
    slurm = profile("slurm")
    assert slurm["executor"] == "slurm" and slurm["jobs"] >= 1
    assert {"mem_mb", "runtime"} <= set(slurm["default-resources"])
    # registration sized for 1 mm, above the rules' own (local, demo-sized) settings
    assert slurm["set-threads"]["preprocess_t1"] >= 4 and slurm["set-resources"]["preprocess_t1"]["mem_mb"] >= 8000
    # per-subject preprocessing is grouped into one SLURM job
    assert {slurm["groups"][r] for r in ("preprocess_t1", "preprocess_coregister")} == {"subject"}


@pytest.mark.parametrize("rule", ["train_fold", "sample_fold", "classify_fold", "attribution_fold"])
def test_gpu_rules_request_the_resource_the_slurm_plugin_reads(rule):
    # snakemake-executor-plugin-slurm turns resources gpu=<n> (and optional gpu_model) into sbatch --gpus
    assert re.search(r"^\s+gpu=GPU,", rules()[rule], re.M), rule


def test_default_profile_leaves_cluster_settings_to_the_slurm_profile():
    # Snakemake reads profiles/default on top of --profile profiles/slurm, and its keys win there
    clash = set(profile("default")) & set(profile("slurm"))
    assert not clash, f"profiles/default would override the SLURM profile's {sorted(clash)}"
