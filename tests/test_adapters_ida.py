"""PPMI and ADNI adapters on IDA download trees: DICOM series converted by the real dcm2niix
(a dynamic PET becomes one 4D image with frame timing), NIfTI downloads, the collection CSV,
and ADNI diagnoses from ADNIMERGE or DXSUM within the visit window."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from adapter_fixtures import adni_download, collection_csv, nifti
from magicflow.datasets.adni import read_adni, read_diagnoses
from magicflow.datasets.ida import classify, convert_download
from magicflow.datasets.manifest import read_manifest, write_manifest
from magicflow.datasets.ppmi import read_ppmi
from magicflow.errors import InputError

@pytest.fixture(scope="module")
def adni(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("adni")
    root = adni_download(base / "download")
    convert_download(root, "ADNI", base / "nifti")
    return root, base / "nifti"


def test_adni_manifest(adni: tuple[Path, Path], tmp_path: Path):
    root, converted = adni
    rows, excluded = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", visit_window_days=180)
    write_manifest(rows, excluded, tmp_path / "m.tsv", tmp_path / "e.tsv", "adni")
    table = read_manifest(tmp_path / "m.tsv").set_index("image")
    t1 = "sub-941S1202_ses-20170510_img-I100001_T1w"
    assert sorted(table.index) == sorted([t1, "sub-941S1202_ses-20170510_img-I100002_FLAIR",
                                          "sub-941S1202_ses-20170601_trc-AV1451_img-I100003_pet", "sub-002S0413_ses-20180110_img-I100004_T1w"])
    assert table.loc[t1, ["subject", "session", "scanner", "diagnosis", "age", "sex"]].tolist() == ["941S1202", "20170510", "Siemens Prisma fit", "AD", "71", "F"]
    assert table.loc["sub-002S0413_ses-20180110_img-I100004_T1w", ["scanner", "diagnosis"]].tolist() == ["Siemens Prisma", "CN"]
    pet = table.loc["sub-941S1202_ses-20170601_trc-AV1451_img-I100003_pet"]
    assert (pet["tracer"], pet["tracer_name"], pet["reference"]) == ("tau", "AV1451", t1)
    assert nib.load(pet["path"]).shape == (6, 6, 3, 3)
    timing = json.loads(Path(pet["sidecar"]).read_text())
    assert timing["FrameDuration"] == [300, 300, 300] and timing["FrameReferenceTime"] == [150, 450, 750]
    reasons = {Path(e.path).name: e.reason for e in excluded}
    assert reasons["I100005"].startswith("unreadable DICOM: dcm2niix made no image")
    assert reasons["I100006"] == "series 'Axial T2 STAR' is not a T1, T2 or FLAIR structural image"
    assert reasons["I100008"] == "image ID I100008 is not in the collection CSV"
    assert reasons["I100009"].startswith("no diagnosis within 180 days of the scan (2019-03-01); the nearest visit (2017-01-10)")
    assert any(r.startswith("duplicate image ID sub-002S0413_ses-20180110_img-I100004_T1w") for r in reasons.values())
    no_t1 = [e for e in excluded if e.reason.startswith("no T1w for subject 003S4288")]
    assert len(no_t1) == 1 and nib.load(no_t1[0].path).shape == (6, 6, 6, 3)  # frames assembled into 4D
    assert len(excluded) == 6


def test_conversion_is_cached(adni: tuple[Path, Path]):
    root, converted = adni
    image = next(converted.glob("*I100001/I100001.nii.gz"))
    before = image.stat().st_mtime_ns
    convert_download(root, "ADNI", converted)
    assert image.stat().st_mtime_ns == before


def test_wider_window_and_dxsum(adni: tuple[Path, Path], tmp_path: Path):
    root, converted = adni
    rows, _ = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", visit_window_days=800)
    assert "sub-136S0300_ses-20190301_img-I100009_T1w" in {r.image for r in rows}
    dxsum = pd.DataFrame({"RID": ["1202", "413"], "VISCODE2": ["bl", "m144"], "EXAMDATE": ["2017-05-01", "2018-01-05"], "DIAGNOSIS": ["3.0", "1.0"]})
    dxsum.to_csv(tmp_path / "DXSUM_PDXCONV.csv", index=False)
    visits = read_diagnoses(tmp_path / "DXSUM_PDXCONV.csv", {"1": "CN", "3": "AD"})
    assert visits[1202][0][1] == "AD" and visits[413][0][1] == "CN"
    pd.DataFrame({"RID": [1], "VISDATE": ["2017-01-01"]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(InputError, match="expected ADNIMERGE"):
        read_diagnoses(tmp_path / "other.csv", {})


@pytest.mark.parametrize(("texts", "modality", "expected"), [
    (["Accelerated Sagittal IR-FSPGR"], "MRI", ("T1w", "n/a")),
    (["Axial T2-FLAIR"], "MRI", ("FLAIR", "n/a")),
    (["Axial T2 TSE"], "MRI", ("T2w", "n/a")),
    (["ADNI3-NAV4694 4x5min"], "PET", ("pet", "NAV4694")),
    (["Tau MK-6240"], "PET", ("pet", "MK6240")),
    (["PI-2620 Tau"], "PET", ("pet", "PI2620")),
    (["Florbetapir 4x5"], "PET", ("pet", "FLORBETAPIR")),
    (["Brain PET"], "PET", "PET tracer not recognised in 'Brain PET' or the header"),
])
def test_series_classification(texts, modality, expected):
    assert classify(texts, {}, modality) == expected
    assert classify(["Brain PET"], {"Modality": "PT", "TracerName": "Fluorodeoxyglucose"}, "") == ("pet", "FLUORODEOXYGLUCOSE")


def test_ppmi_nifti_download(tmp_path: Path):
    root = tmp_path / "dl"
    tree = root / "PPMI"
    nifti(tree / "3000" / "MPRAGE_GRAPPA" / "2011-03-15_13_30_41.0" / "I234567" / "PPMI_3000_MR_MPRAGE_GRAPPA_br_raw_20110315_S12345_I234567.nii")
    (tree / "3000" / "MPRAGE_GRAPPA" / "2011-03-15_13_30_41.0" / "I234567" / "PPMI_3000_MR_MPRAGE_GRAPPA_br_raw_20110315_S12345_I234567.json").write_text(
        json.dumps({"Manufacturer": "Siemens", "ManufacturersModelName": "TrioTim", "Modality": "MR"}))
    nifti(tree / "3001" / "DaTSCAN" / "2011-04-01_10_00_00.0" / "I234570" / "PPMI_3001_NM_DaTSCAN_I234570.nii")
    nifti(tree / "3001" / "SAG_3D_MPRAGE" / "2011-04-01_10_00_00.0" / "I234571" / "PPMI_3001_MR_I234571.nii")
    collection_csv(root / "PPMI_collection.csv", [
        {"Image Data ID": "I234567", "Subject": "3000", "Group": "Control", "Modality": "MRI", "Description": "MPRAGE GRAPPA", "Acq Date": "3/15/2011"},
        {"Image Data ID": "I234570", "Subject": "3001", "Group": "PD", "Modality": "SPECT", "Description": "DaTSCAN", "Acq Date": "4/01/2011"},
        {"Image Data ID": "I234571", "Subject": "3001", "Group": "", "Modality": "MRI", "Description": "SAG 3D MPRAGE", "Acq Date": "4/01/2011"},
    ])
    convert_download(root, "PPMI", tmp_path / "nifti")
    rows, excluded = read_ppmi(root, "ppmi", "PPMI_collection.csv", tmp_path / "nifti", {"Control": "HC"})
    assert [(r.subject, r.session, r.modality, r.scanner, r.diagnosis, r.image) for r in rows] == [
        ("3000", "20110315", "T1w", "Siemens TrioTim", "HC", "sub-3000_ses-20110315_img-I234567_T1w")]
    reasons = {Path(e.path).name: e.reason for e in excluded}
    assert reasons == {"I234570": "modality SPECT is not used by the pipeline (MRI, PET)",
                       "I234571": "no Group for this image in the collection CSV"}


def test_bad_collection_and_unconverted_download(tmp_path: Path):
    root = tmp_path / "dl"
    nifti(root / "PPMI" / "3000" / "T1" / "2011-03-15_13_30_41.0" / "I1" / "a.nii")
    collection_csv(root / "c.csv", [{"Image Data ID": "I1", "Subject": "3000", "Group": "PD", "Modality": "MRI", "Description": "T1", "Acq Date": "1/1/2011"}])
    with pytest.raises(InputError, match="convert the download first"):
        read_ppmi(root, "ppmi", "c.csv", tmp_path / "nifti")
    pd.DataFrame({"Image Data ID": ["I1"], "Subject": ["3000"]}).to_csv(root / "bad.csv", index=False)
    convert_download(root, "PPMI", tmp_path / "nifti")
    with pytest.raises(InputError, match="no column 'Group'"):
        read_ppmi(root, "ppmi", "bad.csv", tmp_path / "nifti")
