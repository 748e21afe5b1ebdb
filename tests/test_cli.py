"""The command line: commands listed, bad input reported as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def magicflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "magicflow", *args], capture_output=True, text=True)


def test_help_lists_every_command():
    from magicflow.cli import COMMANDS

    result = magicflow("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_every_command_names_its_two_functions():
    """The registry is the one place commands are listed: each entry's parser filler and runner
    exist under the names written there (a typo fails here, not when a stage first runs)."""
    import inspect

    from magicflow.cli import COMMANDS, load

    for name, command in COMMANDS.items():
        add, run = load(command.add), load(command.run)
        assert list(inspect.signature(add).parameters)[:1] == ["parser"], name
        assert list(inspect.signature(run).parameters) == ["args"], name


def test_input_error_is_one_line_and_exit_2(tmp_path):
    result = magicflow("demo-cohort", str(tmp_path / "x"), "--subjects", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == "magicflow demo-cohort: error: --subjects must be at least 2 (one AD and one CN), got 1"
    assert not (tmp_path / "x").exists()


def test_registration_qc_outputs_go_together(tmp_path):
    """One QC output without the other is refused before any registration work or output."""
    t1_json = tmp_path / "t1.json"  # never read: the check comes first
    out = tmp_path / "out"
    args = (
        "preprocess-coregister",
        "--image",
        str(tmp_path / "t2.nii.gz"),
        "--modality",
        "T2w",
        "--t1-json",
        str(t1_json),
        "--out-image",
        str(out / "t2_mni.nii.gz"),
        "--out-rigid",
        str(out / "rigid.mat"),
        "--out-json",
        str(out / "t2.json"),
        "--qc-png",
        str(out / "qc.png"),
    )
    result = magicflow(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == "magicflow preprocess-coregister: error: --qc-png and --qc-json go together"
    assert not out.exists()
    # a T2w/FLAIR/PET is scored against its own T1w in MNI: the QC outputs need it named
    result = magicflow(*args, "--qc-json", str(out / "qc.json"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("magicflow preprocess-coregister: error: --qc-png/--qc-json need --qc-t1w")
    assert not out.exists()


def test_an_unforeseen_failure_names_the_inputs_then_gives_the_traceback(tmp_path: Path):
    """A crash that is not a foreseen bad input: one line naming the command's existing inputs and
    the error first (what someone reading the log looks for), then the traceback."""
    broken = tmp_path / "qc.json"
    broken.write_text("[1, 2]")  # valid JSON, not a QC record: the table builder fails on it
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "magicflow",
            "preprocess-qc-table",
            "--inputs",
            str(broken),
            "--out-tsv",
            str(tmp_path / "qc.tsv"),
        ],
        capture_output=True,
        text=True,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 1
    assert lines[0].startswith(f"magicflow preprocess-qc-table: failed on {broken}: ")
    assert lines[1] == "Traceback (most recent call last):"
    assert not (tmp_path / "qc.tsv").exists()
