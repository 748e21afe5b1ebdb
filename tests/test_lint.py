"""Lint and formatting (pinned in the test extra and envs/constraints.txt; settings in
pyproject.toml): ruff reports nothing on the package and the tests, ``ruff format`` and
snakefmt would change no file."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from magicflow.config import REPO_ROOT


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: it comes with the test extra (bash tests/run.sh rebuilds .venv with it)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_reports_nothing():
    result = _run("ruff", "check", "--no-cache", "magicflow", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_is_formatted():
    result = _run("ruff", "format", "--check", "--no-cache", "magicflow", "tests")
    assert result.returncode == 0, "run `ruff format magicflow tests`:\n" + result.stdout + result.stderr


def test_rules_are_formatted():
    result = _run("snakefmt", "--check", "Snakefile", "workflow/rules")
    assert result.returncode == 0, "run `snakefmt Snakefile workflow/rules`:\n" + result.stdout + result.stderr
