"""The conda environments ask conda for little and pin what the test suite runs.

``envs/constraints.txt`` holds the exact version of every direct dependency in pyproject.toml (what
setup-env.sh installs and the suite runs). ``envs/magicflow-cpu.yaml``, ``envs/magicflow-cuda.yaml``
and ``envs/fsl.yaml`` are what ``snakemake --use-conda`` builds: conda gives the interpreter, pip and
FSL's binaries; pip installs every Python package at the constraints' version, so the conda route
runs the versions the suite tested (a version bumped in one place only would not). The two
magicflow variants differ only in their PyTorch build."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import tomllib
import yaml

from magicflow.config import REPO_ROOT

ENVS = REPO_ROOT / "envs"
CONDA_ENVS = ("magicflow-cpu.yaml", "magicflow-cuda.yaml", "fsl.yaml")
#: what each environment may ask conda for: the interpreter, the installer, FSL's packages
CONDA_ALLOWED = re.compile(r"^(python|pip|fsl-.+)$")
#: the PyTorch packages whose build differs between the variants; the CPU build comes from PyTorch's own index
TORCH_PACKAGES = {"torch", "torchvision"}
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
#: name, then ==version or =version[=build] (conda's exact and three-part forms)
CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:(?P<op>==|=)(?P<version>[^=\s]+)(?:=(?P<build>\S+))?)?$")
PIP_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>[^\s+]+)(?:\+(?P<local>\S+))?$")
REQUIREMENT_NAME = re.compile(r"^([A-Za-z0-9_.-]+)")


def normalise(name: str) -> str:
    """PEP 503 names: PyYAML, pyyaml and py_yaml are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    pins = {}
    for number, line in enumerate((ENVS / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            match = PIP_PIN.match(line)
            assert match and not match["local"], f"envs/constraints.txt line {number}: {line!r} is not name==version"
            name = normalise(match["name"])
            assert name not in pins, f"envs/constraints.txt line {number}: {name} pinned twice"
            pins[name] = match["version"]
    return pins


def conda_env(file: str) -> tuple[dict, dict[str, dict], dict[str, dict], list[str]]:
    """(the parsed file, conda specs by name, pip pins by PyPI name, pip option lines)."""
    env = yaml.safe_load((ENVS / file).read_text())
    conda, pip, options = {}, {}, []
    for item in env["dependencies"]:
        if isinstance(item, dict):
            for line in item["pip"]:
                line = line.strip()
                if line.startswith("-"):
                    options.append(line)
                    continue
                match = PIP_PIN.match(line)
                assert match, f"envs/{file}: pip entry {line!r} is not name==version"
                name = normalise(match["name"])
                assert name not in pip, f"envs/{file}: {name} twice"
                pip[name] = match.groupdict()
        else:
            match = CONDA_SPEC.match(str(item).strip())
            assert match, f"envs/{file}: cannot read the conda spec {item!r}"
            conda[match["name"]] = match.groupdict()
    return env, conda, pip, options


def pyproject_requirements() -> dict[str, list[str]]:
    """Requirement strings by group: the main list under "", each extra under its name."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {"": project["dependencies"], **project["optional-dependencies"]}


def test_constraints_pin_every_direct_dependency_of_pyproject():
    pins = constraints()
    for group, requirements in pyproject_requirements().items():
        for requirement in requirements:
            name = normalise(REQUIREMENT_NAME.match(requirement)[1])
            if name == "magicflow":  # an extra naming another extra
                continue
            if group == "slurm" and name == "pandas":  # its own pin below 3 (setup-env.sh drops the constraint)
                continue
            assert name in pins, (
                f"pyproject.toml requires {requirement!r} ({group or 'dependencies'}) but envs/constraints.txt does not pin it"
            )
            exact = re.search(r"==\s*([^\s,;]+)", requirement)
            if exact:
                assert exact[1] == pins[name], f"pyproject.toml pins {requirement!r}, envs/constraints.txt {name}=={pins[name]}"


def test_the_slurm_extra_pins_a_pandas_below_3_and_setup_env_drops_the_constraint():
    slurm = {normalise(REQUIREMENT_NAME.match(r)[1]): r for r in pyproject_requirements()["slurm"]}
    assert re.fullmatch(r"pandas==2\.\d+\.\d+", slurm["pandas"]), slurm["pandas"]
    assert "magicflow[workflow]" in slurm.values()  # a SLURM environment runs Snakemake
    setup = (REPO_ROOT / "workflow" / "scripts" / "setup-env.sh").read_text()
    assert "grep -v '^pandas=='" in setup and '-c "$_magicflow_constraints"' in setup


@pytest.mark.parametrize("file", CONDA_ENVS)
def test_conda_gives_only_the_interpreter_pip_and_binaries(file):
    env, conda, _, _ = conda_env(file)
    assert "defaults" not in env["channels"] and env["channels"][-2:] == ["conda-forge", "nodefaults"]
    extra = sorted(name for name in conda if not CONDA_ALLOWED.match(name))
    assert not extra, f"envs/{file} asks conda for {extra}: Python packages come from pip at the constraints' versions"
    assert conda["python"]["version"] == "3.11" and "pip" in conda


@pytest.mark.parametrize("file", CONDA_ENVS)
def test_every_pip_pin_is_the_version_the_suite_runs(file):
    pins = constraints()
    _, _, pip, _ = conda_env(file)
    unknown = sorted(set(pip) - set(pins))
    assert not unknown, f"envs/{file}: {unknown} not in envs/constraints.txt"
    differ = {name: (spec["version"], pins[name]) for name, spec in pip.items() if spec["version"] != pins[name]}
    assert not differ, f"envs/{file} vs envs/constraints.txt (env, constraint): {differ}"
    labelled = sorted(name for name, spec in pip.items() if spec["local"] and name not in TORCH_PACKAGES)
    assert not labelled, f"envs/{file}: a local version label on {labelled}"
    assert "snakemake" not in pip, f"envs/{file}: jobs run no Snakemake"


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_magicflow_variants_hold_every_runtime_dependency_and_differ_only_in_the_torch_build(variant):
    _, _, pip, options = conda_env(f"magicflow-{variant}.yaml")
    runtime = {normalise(REQUIREMENT_NAME.match(r)[1]) for r in pyproject_requirements()[""]}
    missing = sorted(runtime - set(pip))
    assert not missing, f"envs/magicflow-{variant}.yaml lacks runtime dependencies of pyproject.toml: {missing}"
    assert TORCH_PACKAGES <= set(pip)  # timm's torchvision pinned beside torch: an unpinned one may pull another torch
    for name in TORCH_PACKAGES:
        assert pip[name]["local"] == ("cpu" if variant == "cpu" else None), (variant, name, pip[name])
    # the CPU build is only on PyTorch's index (PyPI's Linux torch is the CUDA build)
    assert options == ([CPU_INDEX] if variant == "cpu" else []), options
    _, _, other, _ = conda_env(f"magicflow-{'cuda' if variant == 'cpu' else 'cpu'}.yaml")
    strip = lambda pins: {n: s["version"] for n, s in pins.items()}  # noqa: E731
    assert strip(pip) == strip(other)


def test_fsl_env_takes_fsl_from_its_channel_and_has_the_commands_the_backend_runs():
    env, conda, pip, _ = conda_env("fsl.yaml")
    assert env["channels"][0] == "https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/public/"
    # fslreorient2std/fslsmoothfill/fslmaths, bet/robustfov, fast, flirt, fnirt/applywarp, mcflirt, MNI152
    needed = {"fsl-avwutils", "fsl-bet2", "fsl-fast4", "fsl-flirt", "fsl-fnirt", "fsl-mcflirt", "fsl-data_standard"}
    assert needed <= set(conda), needed - set(conda)
    unpinned = sorted(n for n, s in conda.items() if n.startswith("fsl-") and n != "fsl-base" and s["op"] != "==")
    assert not unpinned, f"envs/fsl.yaml: no exact version for {unpinned}"
    assert {"nipype", "nibabel", "numpy", "scikit-image"} <= set(pip)
    assert not TORCH_PACKAGES & set(pip)  # registration needs no PyTorch


@pytest.mark.slow
@pytest.mark.parametrize("file", ["magicflow-cuda.yaml", "fsl.yaml"])
def test_pip_resolves_the_environment_from_pypi(file, tmp_path):
    """The pip half of an environment installs: pip resolves its list against PyPI alone (no local
    wheels, no pip config), for this Python, as conda's pip will (a dry run: metadata only, about
    15 s). The CPU variant's torch is on PyTorch's own index, which is not reachable here; its list
    is the suite's own (envs/constraints.txt), installed by setup-env.sh."""
    _, _, pip, options = conda_env(file)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join([*options, *(f"{n}=={s['version']}" for n, s in pip.items())]) + "\n")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed", "--quiet"]
    result = subprocess.run(
        [*command, "--report", str(report), "-r", str(requirements)], capture_output=True, text=True, timeout=600
    )
    if result.returncode and re.search(
        r"NewConnectionError|Network is unreachable|Temporary failure in name resolution", result.stderr
    ):
        pytest.skip("PyPI is not reachable")
    assert result.returncode == 0, result.stderr[-3000:]
    installed = {normalise(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert {n: installed.get(n) for n in pip} == {n: s["version"] for n, s in pip.items()}
    if "torch" in pip:  # PyPI's Linux torch is the CUDA build: it brings CUDA's libraries
        assert any(name.startswith("nvidia-cuda-runtime") for name in installed), sorted(installed)
