"""The package works outside the checkout: built as a wheel, installed into a fresh virtual
environment, it runs its command line and validates a config with the schemas it ships, and
importing it needs no Snakemake (an optional extra, ``workflow``)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from magicflow.config import REPO_ROOT

PACKAGE = REPO_ROOT / "magicflow"


def snakemake_imports() -> list[str]:
    """'file:line' of every import of snakemake in the package's sources."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "snakemake" or n.startswith("snakemake.") for n in names):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def test_the_package_never_imports_snakemake():
    assert not snakemake_imports()


def test_the_schemas_are_package_data():
    from magicflow.config import SCHEMA_DIR
    from magicflow.datasets.manifest import SCHEMA_PATH as MANIFEST_SCHEMA

    assert SCHEMA_DIR == PACKAGE / "schemas" and MANIFEST_SCHEMA.parent == SCHEMA_DIR
    assert {p.name for p in SCHEMA_DIR.glob("*.yaml")} == {"config.schema.yaml", "manifest.schema.yaml"}
    assert not (REPO_ROOT / "workflow" / "schemas").exists()  # one copy only


def run(command: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_runs_outside_the_checkout(tmp_path: Path):
    # build from a copy of the sources, so that setuptools leaves no build/ or egg-info in the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "magicflow", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    wheels = tmp_path / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, source],
        tmp_path,
        env,
    )
    (wheel,) = wheels.glob("magicflow-*.whl")

    # a fresh venv that sees this environment's third-party packages through a .pth line (a path
    # in a .pth file is not itself a site directory, so the editable checkout's own hook stays out)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).stdout.strip())
    (site / "outer-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], tmp_path, env)

    work = tmp_path / "elsewhere"  # neither the checkout nor its parent
    work.mkdir()
    shutil.copy2(REPO_ROOT / "config" / "config.yaml", work / "config.yaml")
    (work / "bad.yaml").write_text((work / "config.yaml").read_text().replace("training:", "trainig:", 1))
    help_text = run([venv / "bin" / "magicflow", "--help"], work, env).stdout
    assert "preprocess-t1" in help_text and "report" in help_text

    probe = textwrap.dedent("""
        import json, sys
        import magicflow, magicflow.cli
        from magicflow.config import SCHEMA_PATH, load_config
        from magicflow.errors import InputError
        config = load_config("config.yaml")
        try:
            load_config("bad.yaml")
            bad = None
        except InputError as error:
            bad = str(error)
        print(json.dumps({"package": magicflow.__file__, "schema": str(SCHEMA_PATH), "qc_threshold": config["registration"]["qc_threshold"],
                          "bad": bad, "snakemake": sorted(m for m in sys.modules if m.split(".")[0] == "snakemake")}))
    """)
    found = json.loads(run([python, "-c", probe], work, env).stdout)
    assert Path(found["package"]).is_relative_to(venv), found["package"]  # the installed wheel, not the checkout
    assert Path(found["schema"]).is_relative_to(venv) and Path(found["schema"]).is_file()
    assert found["qc_threshold"] == 1.05  # a schema default, filled in by jsonschema alone
    assert "unknown key 'trainig' (did you mean 'training'?)" in found["bad"]
    assert found["snakemake"] == []
