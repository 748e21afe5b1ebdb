"""The command line: commands listed, bad input reported as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys


def magicflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "magicflow", *args], capture_output=True, text=True)


def test_help_lists_every_command():
    from magicflow.cli import COMMANDS

    result = magicflow("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_input_error_is_one_line_and_exit_2(tmp_path):
    result = magicflow("demo-cohort", str(tmp_path / "x"), "--subjects", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == "magicflow demo-cohort: error: --subjects must be at least 2 (one AD and one CN), got 1"
    assert not (tmp_path / "x").exists()
