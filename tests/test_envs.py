"""The pip route and the conda environments pin the same versions.

``envs/constraints.txt`` holds the exact version of every direct dependency in pyproject.toml (what
setup-env.sh installs and the suite runs); ``envs/magicflow.yaml`` and ``envs/fsl.yaml`` are what
``snakemake --use-conda`` builds. A version bumped in one place only would make the conda route run
untested versions, so every package the files share must carry the same version."""

from __future__ import annotations

import re

import pytest
import tomllib
import yaml

from magicflow.config import REPO_ROOT

ENVS = REPO_ROOT / "envs"
CONDA_ENVS = ("magicflow.yaml", "fsl.yaml")
#: conda-forge names whose PyPI distribution is named differently; every other package of the env
#: files that is on PyPI has the same name on both
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
#: conda packages with no PyPI counterpart among our dependencies (the interpreter, the installer, FSL)
NOT_PYPI = re.compile(r"^(python|pip|fsl-.+)$")
#: conda packages left unpinned on purpose (python: its minor version only; pip: an installer;
#: fsl-base: each FSL package requires its own range, see envs/fsl.yaml)
UNPINNED = {"python", "pip", "fsl-base"}
#: name, then ==version or =version[=build] (conda's exact and three-part forms)
CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:(?P<op>==|=)(?P<version>[^=\s]+)(?:=(?P<build>\S+))?)?$")
PIP_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+)$")
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
            assert match, f"envs/constraints.txt line {number}: {line!r} is not name==version"
            name = normalise(match["name"])
            assert name not in pins, f"envs/constraints.txt line {number}: {name} pinned twice"
            pins[name] = match["version"]
    return pins


def conda_env(file: str) -> tuple[dict, dict[str, dict], dict[str, str]]:
    """(the parsed file, conda specs by conda name, pip pins by PyPI name)."""
    env = yaml.safe_load((ENVS / file).read_text())
    conda, pip = {}, {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            for line in item["pip"]:
                match = PIP_PIN.match(line.strip())
                assert match, f"envs/{file}: pip entry {line!r} is not name==version"
                pip[normalise(match["name"])] = match["version"]
        else:
            match = CONDA_SPEC.match(str(item).strip())
            assert match, f"envs/{file}: cannot read the conda spec {item!r}"
            conda[match["name"]] = match.groupdict()
    return env, conda, pip


def pypi_versions(file: str) -> dict[str, str]:
    """Every PyPI package the env file pins, by PyPI name, whether conda or pip installs it."""
    _, conda, pip = conda_env(file)
    versions = {
        normalise(CONDA_TO_PYPI.get(name, name)): spec["version"] for name, spec in conda.items() if not NOT_PYPI.match(name)
    }
    assert not set(versions) & set(pip), f"envs/{file}: installed by both conda and pip: {set(versions) & set(pip)}"
    return {**versions, **pip}


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
def test_conda_env_versions_equal_the_constraints(file):
    pins = constraints()
    versions = pypi_versions(file)
    unknown = sorted(set(versions) - set(pins))
    assert not unknown, f"envs/{file}: {unknown} not in envs/constraints.txt (or map its conda name in CONDA_TO_PYPI)"
    differ = {name: (version, pins[name]) for name, version in versions.items() if version != pins[name]}
    assert not differ, f"envs/{file} vs envs/constraints.txt (env, constraint): {differ}"


@pytest.mark.parametrize("file", CONDA_ENVS)
def test_conda_envs_pin_exactly_and_leave_snakemake_out(file):
    _, conda, _ = conda_env(file)
    loose = [
        name
        for name, spec in conda.items()
        if name not in UNPINNED and (spec["version"] is None or spec["version"].endswith("*"))
    ]
    assert not loose, f"envs/{file}: no exact version for {loose}"
    fuzzy = [name for name, spec in conda.items() if spec["op"] == "=" and spec["build"] is None and name != "python"]
    assert not fuzzy, f"envs/{file}: 'name=version' is a prefix match in conda; write name==version for {fuzzy}"
    assert "snakemake" not in conda and "snakemake" not in pypi_versions(file), f"envs/{file}: jobs run no Snakemake"


def test_magicflow_env_is_conda_forge_only_with_a_cuda_pytorch_and_every_runtime_dependency():
    env, conda, pip = conda_env("magicflow.yaml")
    assert env["channels"] == ["conda-forge", "nodefaults"]
    torch = conda["pytorch"]
    assert torch["version"] == constraints()["torch"] and torch["build"] == "cuda*"
    assert "CONDA_OVERRIDE_CUDA" in (ENVS / "magicflow.yaml").read_text()
    runtime = {normalise(REQUIREMENT_NAME.match(r)[1]) for r in pyproject_requirements()[""]}
    missing = sorted(runtime - set(pypi_versions("magicflow.yaml")))
    assert not missing, f"envs/magicflow.yaml lacks runtime dependencies of pyproject.toml: {missing}"
    assert set(pip) == {"prdc", "normflows"}  # pip only for what conda-forge lacks


def test_fsl_env_takes_fsl_from_its_channel_and_has_the_commands_the_backend_runs():
    env, conda, _ = conda_env("fsl.yaml")
    assert env["channels"][0] == "https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/public/"
    assert "conda-forge" in env["channels"] and "defaults" not in env["channels"]
    # fslreorient2std/fslsmoothfill/fslmaths, bet/robustfov, fast, flirt, fnirt/applywarp, mcflirt, MNI152
    needed = {"fsl-avwutils", "fsl-bet2", "fsl-fast4", "fsl-flirt", "fsl-fnirt", "fsl-mcflirt", "fsl-data_standard"}
    assert needed <= set(conda), needed - set(conda)
