"""IXI adapter on a tree laid out like the unpacked per-modality archives, with IXI.xls."""

from __future__ import annotations

from pathlib import Path

import pytest
import xlwt

from adapter_fixtures import nifti
from magicflow.datasets.commands import build_manifest
from magicflow.datasets.ixi import read_ixi
from magicflow.datasets.manifest import read_manifest, write_manifest
from magicflow.errors import InputError

XLS_COLUMNS = [
    "IXI_ID",
    "SEX_ID (1=m, 2=f)",
    "HEIGHT",
    "WEIGHT",
    "ETHNIC_ID",
    "MARITAL_ID",
    "OCCUPATION_ID",
    "QUALIFICATION_ID",
    "DOB",
    "DATE_AVAILABLE",
    "STUDY_DATE",
    "AGE",
]


def ixi_xls(path: Path, rows: list[tuple]) -> Path:
    """IXI.xls as distributed: an old-style Excel sheet with numeric cells."""
    book = xlwt.Workbook()
    sheet = book.add_sheet("Table")
    for col, name in enumerate(XLS_COLUMNS):
        sheet.write(0, col, name)
    for r, (ixi_id, sex, age) in enumerate(rows, start=1):
        values = [ixi_id, sex, 170, 70, 1, 1, 1, 1, "1950-01-01", 1, "2005-06-01", age]
        for col, value in enumerate(values):
            if value is not None:
                sheet.write(r, col, value)
    book.save(str(path))
    return path


@pytest.fixture
def ixi(tmp_path: Path) -> Path:
    root = tmp_path / "IXI"
    for name in (
        "IXI002-Guys-0828-T1",
        "IXI002-Guys-0828-T2",
        "IXI012-HH-1211-T1",
        "IXI013-HH-1212-PD",
        "IXI013-HH-1212-T2",
        "IXI025-IOP-0890-T1",
        "IXI099-XYZ-0001-T1",
    ):
        nifti(root / f"IXI-{name.rsplit('-', 1)[1]}" / f"{name}.nii.gz")
    nifti(root / "IXI-DTI" / "IXI002-Guys-0828-DTI-00.nii.gz")
    nifti(root / "copy" / "IXI002-Guys-0828-T1.nii.gz")  # an archive unpacked twice
    (root / "IXI-T1" / "IXI026-IOP-0891-T1.nii.gz").write_bytes(b"truncated download")
    # IXI.xls lists IXI012 twice, the second time with the age filled in
    ixi_xls(root / "IXI.xls", [(2, 1, 35.80150581793292), (12, 2, None), (12, 2, 38.78), (25, 1, 58.65)])
    return root


def test_ixi_rows_scanners_labels_and_exclusions(ixi: Path, tmp_path: Path):
    rows, excluded = build_manifest("ixi", ixi, "ixi", {})
    write_manifest(rows, excluded, tmp_path / "m.tsv", tmp_path / "e.tsv", "ixi")
    table = read_manifest(tmp_path / "m.tsv").set_index("image")
    # stems follow the pipeline's contract, so the preprocessing rules take them
    assert sorted(table.index) == ["sub-IXI002_T1w", "sub-IXI002_T2w", "sub-IXI012_T1w", "sub-IXI025_T1w"]
    assert table.loc["sub-IXI002_T1w", "scanner"] == "Philips Gyroscan Intera 1.5T"
    assert table.loc["sub-IXI012_T1w", "scanner"] == "Philips Intera 3T"
    assert table.loc["sub-IXI025_T1w", "scanner"] == "GE 1.5T"
    assert table.loc["sub-IXI002_T2w", ["modality", "reference", "subject"]].tolist() == ["T2w", "sub-IXI002_T1w", "IXI002"]
    assert table.loc["sub-IXI002_T1w", ["age", "sex", "diagnosis"]].tolist() == ["35.8", "M", "CN"]
    assert table.loc["sub-IXI012_T1w", ["age", "sex"]].tolist() == ["38.78", "F"]
    reasons = {Path(e.path).relative_to(ixi).as_posix(): e.reason for e in excluded}
    assert reasons["IXI-T1/IXI099-XYZ-0001-T1.nii.gz"].startswith("unknown site code 'XYZ'")
    assert reasons["IXI-PD/IXI013-HH-1212-PD.nii.gz"].startswith("modality PD is not used")
    assert reasons["IXI-DTI/IXI002-Guys-0828-DTI-00.nii.gz"].startswith("modality DTI is not used")
    assert reasons["IXI-T1/IXI026-IOP-0891-T1.nii.gz"].startswith("unreadable NIfTI header")
    assert reasons["IXI-T2/IXI013-HH-1212-T2.nii.gz"].startswith("no T1w for subject IXI013")
    assert reasons["copy/IXI002-Guys-0828-T1.nii.gz"].endswith("IXI-T1/IXI002-Guys-0828-T1.nii.gz): the same image twice")
    assert len(reasons) == 6


def test_ixi_settings_override_sites_and_diagnosis(ixi: Path):
    rows, excluded = read_ixi(ixi, "ixi", sites={"XYZ": "Acme 7T"}, diagnosis="healthy")
    assert {r.image: r.scanner for r in rows} == {"sub-IXI099_T1w": "Acme 7T"}
    assert {r.diagnosis for r in rows} == {"healthy"}


def test_ixi_missing_sheet_or_column_stops(ixi: Path):
    with pytest.raises(InputError, match="IXI demographics .*nope.xls' does not exist"):
        read_ixi(ixi, "ixi", demographics="nope.xls")
    ixi_xls(ixi / "IXI.xls", [])
    (ixi / "bad.csv").write_text("ID,AGE\n2,30\n")
    with pytest.raises(InputError, match="no column 'IXI_ID'"):
        read_ixi(ixi, "ixi", demographics="bad.csv")
