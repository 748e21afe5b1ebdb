"""SALD adapter on per-subject folders (T1 plus an unused resting-state run) and the sheet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from adapter_fixtures import nifti
from magicflow.datasets.sald import read_sald
from magicflow.errors import InputError


@pytest.fixture
def sald(tmp_path: Path) -> Path:
    root = tmp_path / "SALD"
    for subject in ("031274", "031275"):
        nifti(root / f"sub-{subject}" / "anat" / "mprage_anonymized.nii.gz")
        nifti(root / f"sub-{subject}" / "func" / "rest.nii.gz", shape=(4, 4, 4, 3))
    nifti(root / "sub-031276" / "anat" / "mprage_anonymized.nii.gz")  # not in the sheet
    # Excel has dropped the leading zeros of the IDs; sex is coded
    pd.DataFrame({"Sub_ID": [31274, 31275], "Sex": [1, 2], "Age": [19, 80.5]}).to_excel(root / "sub_information.xlsx", index=False)
    return root


def test_sald_rows_and_exclusions(sald: Path):
    rows, excluded = read_sald(sald, "sald", "sub_information.xlsx", sex_labels={"1": "F", "2": "M"})
    by_subject = {r.subject: r for r in rows}
    assert sorted(by_subject) == ["031274", "031275"]
    row = by_subject["031274"]
    assert (row.image, row.modality, row.scanner, row.diagnosis, row.age, row.sex, row.reference) == (
        "sub-031274_anat_mprage-anonymized", "T1w", "Siemens TrioTim", "CN", "19", "F", "sub-031274_anat_mprage-anonymized")
    assert by_subject["031275"].age == "80.5"
    reasons = {Path(e.path).relative_to(sald).as_posix(): e.reason for e in excluded}
    assert reasons["sub-031274/func/rest.nii.gz"].startswith("not a T1 image")
    assert reasons["sub-031276/anat/mprage_anonymized.nii.gz"] == "subject 031276 is not in the demographics sheet"
    assert len(reasons) == 3


def test_sald_column_names_are_settings(sald: Path):
    pd.DataFrame({"ID": ["sub-031274"], "Gender": ["male"], "Years": ["30"]}).to_csv(sald / "demo.csv", index=False)
    rows, _ = read_sald(sald, "sald", sald / "demo.csv", demographic_columns={"subject": "ID", "sex": "Gender", "age": "Years"})
    assert [(r.subject, r.sex, r.age) for r in rows] == [("031274", "male", "30")]
    with pytest.raises(InputError, match="no column 'Sub_ID'"):
        read_sald(sald, "sald", "demo.csv")
