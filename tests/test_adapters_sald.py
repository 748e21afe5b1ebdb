"""SALD adapter on the release as it unpacks: range archives holding per-subject BIDS-like
folders (T1 plus an unused resting-state run), and the sub_information.xlsx sheet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from adapter_fixtures import nifti
from magicflow.datasets.commands import build_manifest
from magicflow.datasets.sald import read_sald, subject_of
from magicflow.errors import InputError

RANGE = "sub-031274_sub-031323"


@pytest.fixture
def sald(tmp_path: Path) -> Path:
    """Two range archives unpacked: sub-031274_sub-031323.tar.gz and sub-031324_sub-031373.tar.gz."""
    root = tmp_path / "SALD"
    for subject in ("031274", "031323"):
        nifti(root / RANGE / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz")
        nifti(root / RANGE / f"sub-{subject}" / "func" / f"sub-{subject}_task-rest_bold.nii.gz", shape=(4, 4, 4, 3))
    nifti(root / "sub-031324_sub-031373" / "sub-031324" / "anat" / "sub-031324_T1w.nii.gz")  # not in the sheet
    # the same subject's T1 a second time, under another name: flagged, not merged
    nifti(root / RANGE / "sub-031323" / "anat" / "sub-031323_run-2_T1w.nii.gz")
    # Excel has dropped the leading zeros of the IDs; sex is coded 1/2
    pd.DataFrame({"Sub_ID": [31274, 31323], "Sex": [1, 2], "Age": [19, 80.5]}).to_excel(
        root / "sub_information.xlsx", index=False
    )
    return root


def test_subject_is_the_innermost_sub_label():
    assert subject_of(f"{RANGE}/sub-031323/anat/sub-031323_T1w.nii.gz") == "031323"
    assert subject_of(f"{RANGE}/sub-031323/anat/mprage.nii.gz") == "031323"
    assert subject_of("sub031274/t1.nii.gz") == "031274"
    assert subject_of("anat/t1.nii.gz") is None


def test_sald_release_rows_and_exclusions(sald: Path, capsys):
    rows, excluded = build_manifest("sald", sald, "sald", {"demographics": "sub_information.xlsx"})
    by_subject = {r.subject: r for r in rows}
    # every subject keeps its own ID, age and sex, never the range folder's first ID
    assert sorted(by_subject) == ["031274", "031323"]
    assert [(r.image, r.modality, r.scanner, r.diagnosis, r.age, r.sex, r.reference) for r in rows] == [
        ("sub-031274_T1w", "T1w", "Siemens TrioTim", "CN", "19", "F", "sub-031274_T1w"),
        ("sub-031323_T1w", "T1w", "Siemens TrioTim", "CN", "80.5", "M", "sub-031323_T1w"),
    ]
    assert by_subject["031323"].path.endswith(f"{RANGE}/sub-031323/anat/sub-031323_T1w.nii.gz")
    reasons = {Path(e.path).relative_to(sald).as_posix(): e.reason for e in excluded}
    assert reasons[f"{RANGE}/sub-031274/func/sub-031274_task-rest_bold.nii.gz"].startswith("not a T1 image")
    assert (
        reasons["sub-031324_sub-031373/sub-031324/anat/sub-031324_T1w.nii.gz"]
        == "subject 031324 is not in the demographics sheet"
    )
    assert reasons[f"{RANGE}/sub-031323/anat/sub-031323_run-2_T1w.nii.gz"].endswith(
        "sub-031323_T1w.nii.gz): a second T1w of subject 031323, not merged"
    )
    assert len(reasons) == 4
    assert "sex codes 1 -> F: 1, 2 -> M: 1" in capsys.readouterr().out


def test_sald_column_names_and_sex_codes_are_settings(sald: Path):
    pd.DataFrame({"ID": ["sub-031274"], "Gender": ["male"], "Years": ["30"]}).to_csv(sald / "demo.csv", index=False)
    rows, _ = read_sald(sald, "sald", sald / "demo.csv", demographic_columns={"subject": "ID", "sex": "Gender", "age": "Years"})
    assert [(r.subject, r.sex, r.age) for r in rows] == [("031274", "male", "30")]
    rows, _ = read_sald(sald, "sald", "sub_information.xlsx", sex_labels={"1": "M", "2": "F"})
    assert [r.sex for r in rows] == ["M", "F"]
    with pytest.raises(InputError, match="no column 'Sub_ID'"):
        read_sald(sald, "sald", "demo.csv")


def test_male_majority_under_the_mapping_warns(tmp_path: Path, capsys):
    root = tmp_path / "SALD"
    nifti(root / "sub-000001" / "anat" / "sub-000001_T1w.nii.gz")
    pd.DataFrame({"Sub_ID": range(1, 201), "Sex": [2] * 150 + [1] * 50, "Age": [30] * 200}).to_csv(root / "s.csv", index=False)
    read_sald(root, "sald", "s.csv")
    assert "150 of 200 subjects come out male" in capsys.readouterr().err


def test_packed_release_says_to_unpack(tmp_path: Path):
    (tmp_path / "SALD").mkdir()
    (tmp_path / "SALD" / f"{RANGE}.tar.gz").write_bytes(b"")
    pd.DataFrame({"Sub_ID": [1], "Sex": [1], "Age": [20]}).to_csv(tmp_path / "SALD" / "s.csv", index=False)
    with pytest.raises(InputError, match=f"unpack the release's archives \\({RANGE}.tar.gz"):
        read_sald(tmp_path / "SALD", "sald", "s.csv")
