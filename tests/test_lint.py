"""ruff (pinned in the test extra and envs/constraints.txt; rules and line length in
pyproject.toml's [tool.ruff]) reports nothing on the package and the tests."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from magicflow.config import REPO_ROOT


def test_ruff_reports_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: it comes with the test extra (bash tests/run.sh rebuilds .venv with it)")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "magicflow", "tests"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
