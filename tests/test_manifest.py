"""Manifests from BIDS: the demo's rows, and every bad input either stops with a message
naming the culprit or is excluded with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magicflow.datasets.commands import build_manifest
from magicflow.datasets.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest
from magicflow.errors import InputError


def read_bids(root: Path, name: str, participant_columns: dict[str, str] | None = None, **settings):
    """What `magicflow manifest --kind bids` builds: the adapter, data checks, T1w pairing."""
    options = {"participant_columns": participant_columns} if participant_columns else {}
    return build_manifest("bids", root, name, options, **settings)


def test_manifest_of_the_demo(demo_bids: Path, tmp_path: Path):
    rows, excluded = read_bids(demo_bids, "demo")
    write_manifest(rows, excluded, tmp_path / "manifest.tsv", tmp_path / "excluded.tsv", "demo")
    table = read_manifest(tmp_path / "manifest.tsv")
    assert list(table.columns) == MANIFEST_COLUMNS
    assert len(table) == 4 * 6 and excluded == []
    assert table["modality"].value_counts().to_dict() == {"pet": 12, "T1w": 4, "T2w": 4, "FLAIR": 4}
    assert sorted(table.loc[table.modality == "pet", "tracer"].unique()) == ["amyloid", "fdg", "tau"]
    assert table.loc[table.modality == "T1w", "scanner"].nunique() == 4
    assert (table["reference"] == "sub-" + table["subject"] + "_ses-01_T1w").all()
    assert table["subject"].iloc[0] == "demo01"  # read as text, never as a number
    assert set(table["diagnosis"]) == {"AD", "CN"}
    assert read_manifest(tmp_path / "excluded.tsv").empty


def nifti(path: Path, shape=(8, 8, 8), data=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) if data is None else data
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def bids(root: Path, subjects=("01", "02"), participants=True) -> Path:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    for s in subjects:
        nifti(root / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz")
    if participants:
        pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "dx": ["AD", "CN"][: len(subjects)]}).to_csv(
            root / "participants.tsv", sep="\t", index=False
        )
    return root


def pet_sidecar(tracer: str, frames: int = 3) -> str:
    """A PET sidecar whose frame timing matches ``frames`` 5-minute frames from 30 min on."""
    starts = [1800.0 + 300 * i for i in range(frames)]
    return json.dumps({"TracerName": tracer, "FrameTimesStart": starts, "FrameDuration": [300.0] * frames})


def pet(root: Path, subject: str, tracer="FDG", sidecar=True, frames=3) -> Path:
    path = nifti(root / f"sub-{subject}" / "pet" / f"sub-{subject}_trc-{tracer}_pet.nii.gz", shape=(8, 8, 8, frames))
    if sidecar:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(pet_sidecar(tracer, frames))
    return path


def test_no_session_dataset_with_label_column_mapping(tmp_path: Path):
    root = bids(tmp_path / "b")
    pet(root, "01")
    rows, excluded = read_bids(root, "b", {"diagnosis": "dx"})
    assert excluded == []
    by_image = {r.image: r for r in rows}
    assert by_image["sub-01_trc-FDG_pet"].reference == "sub-01_T1w"
    assert by_image["sub-01_T1w"].session == "n/a"
    assert by_image["sub-02_T1w"].diagnosis == "CN"


def test_unusable_images_are_excluded_with_reasons(tmp_path: Path):
    root = bids(tmp_path / "b")
    pet(root, "01", sidecar=False)
    pet(root, "02", tracer="XYZ")
    nifti(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz", shape=(8, 8, 8, 3))  # T2w is 4D
    (root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz").write_bytes(b"not a nifti")
    nifti(root / "sub-02" / "anat" / "sub-02_PD.nii.gz")
    rows, excluded = read_bids(root, "b")
    reasons = {Path(e.path).name: e.reason for e in excluded}
    assert reasons["sub-01_trc-FDG_pet.nii.gz"].startswith("PET without a JSON sidecar")
    assert reasons["sub-02_trc-XYZ_pet.nii.gz"] == "unknown PET tracer 'XYZ'"
    assert reasons["sub-01_T2w.nii.gz"] == "T2w is 4D with 3 volumes (expected one 3D volume)"
    assert reasons["sub-02_FLAIR.nii.gz"].startswith("unreadable NIfTI header")
    assert reasons["sub-02_PD.nii.gz"].startswith("modality PD is not used")
    assert {r.image for r in rows} == {"sub-01_T1w", "sub-02_T1w"}


def test_clinica_tracer_labels_and_sidecar_fallback(tmp_path: Path):
    root = bids(tmp_path / "b")
    pet(root, "01", tracer="18FFBB")  # Clinica's isotope-prefixed label
    tau = pet(root, "02", tracer="tau")  # not a tracer: the sidecar's TracerName decides
    tau.with_name(tau.name.replace(".nii.gz", ".json")).write_text(pet_sidecar("[18F]AV-1451"))
    rows, excluded = read_bids(root, "b")
    tracers = {r.image: (r.tracer, r.tracer_name) for r in rows if r.modality == "pet"}
    assert tracers == {"sub-01_trc-18FFBB_pet": ("amyloid", "18FFBB"), "sub-02_trc-tau_pet": ("tau", "[18F]AV-1451")}
    assert excluded == []


def test_pet_without_any_t1_is_excluded(tmp_path: Path):
    root = bids(tmp_path / "b", subjects=("01",))
    (tmp_path / "b" / "sub-01" / "anat" / "sub-01_T1w.nii.gz").rename(tmp_path / "b" / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    bids(tmp_path / "b", subjects=("02",), participants=False)
    pet(root, "01")
    rows, excluded = read_bids(root, "b")
    assert {Path(e.path).name for e in excluded} == {"sub-01_T2w.nii.gz", "sub-01_trc-FDG_pet.nii.gz"}
    assert all(e.reason.startswith("no T1w for subject 01") for e in excluded)


def test_nearest_session_t1_is_the_reference(tmp_path: Path):
    root = tmp_path / "b"
    for ses in ("01", "04"):
        nifti(root / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_T1w.nii.gz")
    p = nifti(root / "sub-01" / "ses-03" / "pet" / "sub-01_ses-03_trc-AV1451_pet.nii.gz", shape=(8, 8, 8, 2))
    (root / "sub-01" / "ses-03" / "pet" / "sub-01_ses-03_trc-AV1451_pet.json").write_text(pet_sidecar("AV1451", 2))
    rows, _ = read_bids(root, "b")
    row = {r.image: r for r in rows}[p.name.removesuffix(".nii.gz")]
    assert (row.reference, row.reference_gap_days) == ("sub-01_ses-04_T1w", "n/a")  # labels, not dates


def test_dated_sessions_pair_by_days_within_the_gap(tmp_path: Path):
    root = tmp_path / "b"
    for ses in ("20170515", "20180102"):
        nifti(root / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_T1w.nii.gz")
    for ses in ("20171229", "20190601"):
        pet_dir = root / "sub-01" / f"ses-{ses}" / "pet"
        nifti(pet_dir / f"sub-01_ses-{ses}_trc-FDG_pet.nii.gz", shape=(8, 8, 8, 3))
        (pet_dir / f"sub-01_ses-{ses}_trc-FDG_pet.json").write_text(pet_sidecar("FDG"))
    rows, excluded = read_bids(root, "b", max_reference_gap_days=365)
    row = {r.image: r for r in rows}["sub-01_ses-20171229_trc-FDG_pet"]
    # 2017-12-29 is 4 days from 2018-01-02 and 228 days from 2017-05-15 (20171229 - 20170515 = 714 as integers)
    assert (row.reference, row.reference_gap_days) == ("sub-01_ses-20180102_T1w", "4")
    assert {r.image: r.reference_gap_days for r in rows}["sub-01_ses-20170515_T1w"] == "0"
    assert [e.reason for e in excluded] == [
        "nearest T1w of subject 01 (sub-01_ses-20180102_T1w) is 515 days away, more than max_reference_gap_days (365)"
    ]
    rows, excluded = read_bids(root, "b", max_reference_gap_days=600)
    assert excluded == [] and {r.image: r.reference_gap_days for r in rows}["sub-01_ses-20190601_trc-FDG_pet"] == "515"


def test_broken_image_data_are_excluded_and_the_rest_goes_on(tmp_path: Path):
    root = bids(tmp_path / "b", subjects=("01", "02", "03", "04", "05"), participants=False)
    shape = (8, 8, 8)
    nan = np.arange(512, dtype=np.float32).reshape(shape)
    nan[2, 2, 2] = np.nan
    nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", data=nan)
    nifti(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")  # its T1w is broken: nothing to register it to
    nifti(root / "sub-02" / "anat" / "sub-02_T1w.nii.gz", data=np.zeros(shape, np.float32))
    whole = (root / "sub-03" / "anat" / "sub-03_T1w.nii.gz").read_bytes()
    (root / "sub-03" / "anat" / "sub-03_T1w.nii.gz").write_bytes(whole[: len(whole) // 2])  # header intact, data cut
    nifti(root / "sub-04" / "anat" / "sub-04_T1w.nii.gz", shape=(8, 8))
    nifti(root / "sub-05" / "anat" / "sub-05 copy_T1w.nii.gz")
    rows, excluded = read_bids(root, "b")
    reasons = {Path(e.path).name: e.reason for e in excluded}
    assert reasons["sub-01_T1w.nii.gz"] == "1 NaN or infinite voxels"
    assert reasons["sub-01_T2w.nii.gz"].startswith("no T1w for subject 01")
    assert reasons["sub-02_T1w.nii.gz"] == "image is all zero"
    assert reasons["sub-03_T1w.nii.gz"].startswith("unreadable or truncated NIfTI")
    assert reasons["sub-04_T1w.nii.gz"] == "T1w has shape (8, 8) (expected one 3D volume)"
    assert reasons["sub-05 copy_T1w.nii.gz"].startswith("the file name has whitespace")
    assert {r.image for r in rows} == {"sub-05_T1w"}
    write_manifest(rows, excluded, tmp_path / "m.tsv", tmp_path / "e.tsv", "b")
    assert len(read_manifest(tmp_path / "e.tsv")) == 6


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda r: nifti(r / "sub-0x1" / "anat" / "sub-0x1_T1w.nii.gz").parent.parent.rename(r / "sub-0_1"),
            "subject label '0_1' has characters other than ASCII letters and digits",
        ),
        (
            lambda r: pd.DataFrame({"participant_id": ["sub-01", "sub-01", "sub-02"]}).to_csv(
                r / "participants.tsv", sep="\t", index=False
            ),
            "lists sub-01 2 times",
        ),
        (
            lambda r: nifti(r / "sub-A1" / "anat" / "sub-A1_T1w.nii.gz") and nifti(r / "sub-a1" / "anat" / "sub-a1_T1w.nii.gz"),
            "differs only by case",
        ),
    ],
)
def test_bad_subject_ids_exclude_that_subject_only(tmp_path: Path, setup, message):
    """A bad label used to stop the whole dataset; now that subject is excluded and the others go on."""
    root = bids(tmp_path / "b")
    setup(root)
    rows, excluded = read_bids(root, "b")
    assert excluded and all(message in e.reason for e in excluded)
    assert "sub-02_T1w" in {r.image for r in rows}


def test_no_t1w_at_all_stops(tmp_path: Path):
    root = tmp_path / "b"
    nifti(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    rows, excluded = read_bids(root, "b")
    with pytest.raises(InputError, match="no usable T1w image found"):
        write_manifest(rows, excluded, tmp_path / "m.tsv", tmp_path / "e.tsv", f"dataset 'b' ({root})")
    assert not (tmp_path / "m.tsv").exists()


def test_missing_root_and_empty_root(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        read_bids(tmp_path / "nope", "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no sub-\\* folders"):
        read_bids(tmp_path / "empty", "b")
