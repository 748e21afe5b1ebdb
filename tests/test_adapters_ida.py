"""PPMI and ADNI adapters on IDA download trees: DICOM series converted by the real dcm2niix
(a dynamic PET becomes one 4D image with frame timing, a dual echo gives _e1/_e2 files of which
one is used), NIfTI downloads with IDA's XML metadata, the collection CSV with raw series and
ADNI's processed steps, MRI series a neuroimager would refuse, and ADNI diagnoses from
ADNIMERGE or DXSUM within the visit window."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
import yaml

from adapter_fixtures import ADNIMERGE, adni_download, collection_csv, dicom_series, ida_xml, nifti
from magicflow.datasets.commands import build_manifest
from magicflow.datasets.adni import read_adni, read_diagnoses
from magicflow.datasets.dicom import main_image
from magicflow.config import SCHEMA_PATH
from magicflow.datasets.ida import convert_download
from magicflow.datasets.series import PROCESSING_LEVELS, classify, processing_step
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
    rows, excluded = build_manifest(
        "adni",
        root,
        "adni",
        {
            "collection": "ADNI_collection.csv",
            "nifti_dir": converted,
            "diagnosis_table": "ADNIMERGE.csv",
            "visit_window_days": 180,
        },
    )
    write_manifest(rows, excluded, tmp_path / "m.tsv", tmp_path / "e.tsv", "adni")
    table = read_manifest(tmp_path / "m.tsv").set_index("image")
    t1 = "sub-941S1202_ses-20170510_img-I100001_T1w"
    assert sorted(table.index) == sorted(
        [
            t1,
            "sub-941S1202_ses-20170510_img-I100002_FLAIR",
            "sub-941S1202_ses-20170601_trc-AV1451_img-I100003_pet",
            "sub-002S0413_ses-20180110_img-I100004_T1w",
        ]
    )
    assert table.loc[t1, ["subject", "session", "scanner", "diagnosis", "age", "sex"]].tolist() == [
        "941S1202",
        "20170510",
        "Siemens Prisma fit",
        "AD",
        "71",
        "F",
    ]
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
    # frames assembled into 4D; their files gave no FrameDuration, which the registration job
    # needs, so the PET is excluded when the manifest is built (before: only for lack of a T1w)
    no_t1 = [e for e in excluded if e.subject == "003S4288" and "I100007" in e.path]
    assert len(no_t1) == 1 and nib.load(no_t1[0].path).shape == (6, 6, 6, 3)
    assert no_t1[0].reason.startswith("PET frame timing") and "missing FrameDuration" in no_t1[0].reason
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
    dxsum = pd.DataFrame(
        {
            "RID": ["1202", "413"],
            "VISCODE2": ["bl", "m144"],
            "EXAMDATE": ["2017-05-01", "2018-01-05"],
            "DIAGNOSIS": ["3.0", "1.0"],
        }
    )
    dxsum.to_csv(tmp_path / "DXSUM_PDXCONV.csv", index=False)
    visits = read_diagnoses(tmp_path / "DXSUM_PDXCONV.csv", {"1": "CN", "3": "AD"})
    assert visits[1202][0][1] == "AD" and visits[413][0][1] == "CN"
    pd.DataFrame({"RID": [1], "VISDATE": ["2017-01-01"]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(InputError, match="expected ADNIMERGE"):
        read_diagnoses(tmp_path / "other.csv", {})


@pytest.mark.parametrize(
    ("texts", "modality", "expected"),
    [
        (["Accelerated Sagittal IR-FSPGR"], "MRI", ("T1w", "n/a")),
        (["Axial T2-FLAIR"], "MRI", ("FLAIR", "n/a")),
        (["Axial T2 TSE"], "MRI", ("T2w", "n/a")),
        (["ADNI3-NAV4694 4x5min"], "PET", ("pet", "NAV4694")),
        (["Tau MK-6240"], "PET", ("pet", "MK6240")),
        (["PI-2620 Tau"], "PET", ("pet", "PI2620")),
        (["Florbetapir 4x5"], "PET", ("pet", "FLORBETAPIR")),
        (["Brain PET"], "PET", "PET tracer not recognised in 'Brain PET' or the header"),
    ],
)
def test_series_classification(texts, modality, expected):
    assert classify(texts, {}, modality) == expected
    assert classify(["Brain PET"], {"Modality": "PT", "TracerName": "Fluorodeoxyglucose"}, "") == ("pet", "FLUORODEOXYGLUCOSE")


def test_ppmi_nifti_download(tmp_path: Path):
    root = tmp_path / "dl"
    tree = root / "PPMI"
    nifti(
        tree
        / "3000"
        / "MPRAGE_GRAPPA"
        / "2011-03-15_13_30_41.0"
        / "I234567"
        / "PPMI_3000_MR_MPRAGE_GRAPPA_br_raw_20110315_S12345_I234567.nii"
    )
    (
        tree
        / "3000"
        / "MPRAGE_GRAPPA"
        / "2011-03-15_13_30_41.0"
        / "I234567"
        / "PPMI_3000_MR_MPRAGE_GRAPPA_br_raw_20110315_S12345_I234567.json"
    ).write_text(json.dumps({"Manufacturer": "Siemens", "ManufacturersModelName": "TrioTim", "Modality": "MR"}))
    nifti(tree / "3001" / "DaTSCAN" / "2011-04-01_10_00_00.0" / "I234570" / "PPMI_3001_NM_DaTSCAN_I234570.nii")
    nifti(tree / "3001" / "SAG_3D_MPRAGE" / "2011-04-01_10_00_00.0" / "I234571" / "PPMI_3001_MR_I234571.nii")
    collection_csv(
        root / "PPMI_collection.csv",
        [
            {
                "Image Data ID": "I234567",
                "Subject": "3000",
                "Group": "Control",
                "Modality": "MRI",
                "Description": "MPRAGE GRAPPA",
                "Acq Date": "3/15/2011",
            },
            {
                "Image Data ID": "I234570",
                "Subject": "3001",
                "Group": "PD",
                "Modality": "SPECT",
                "Description": "DaTSCAN",
                "Acq Date": "4/01/2011",
            },
            {
                "Image Data ID": "I234571",
                "Subject": "3001",
                "Group": "",
                "Modality": "MRI",
                "Description": "SAG 3D MPRAGE",
                "Acq Date": "4/01/2011",
            },
        ],
    )
    convert_download(root, "PPMI", tmp_path / "nifti")
    rows, excluded = read_ppmi(root, "ppmi", "PPMI_collection.csv", tmp_path / "nifti", {"Control": "HC"})
    assert [(r.subject, r.session, r.modality, r.scanner, r.diagnosis, r.image) for r in rows] == [
        ("3000", "20110315", "T1w", "Siemens TrioTim", "HC", "sub-3000_ses-20110315_img-I234567_T1w")
    ]
    reasons = {Path(e.path).name: e.reason for e in excluded}
    assert reasons == {
        "I234570": "modality SPECT is not used by the pipeline (MRI, PET)",
        "I234571": "no Group for this image in the collection CSV",
    }


def test_bad_collection_and_unconverted_download(tmp_path: Path):
    root = tmp_path / "dl"
    nifti(root / "PPMI" / "3000" / "T1" / "2011-03-15_13_30_41.0" / "I1" / "a.nii")
    collection_csv(
        root / "c.csv",
        [
            {
                "Image Data ID": "I1",
                "Subject": "3000",
                "Group": "PD",
                "Modality": "MRI",
                "Description": "T1",
                "Acq Date": "1/1/2011",
            }
        ],
    )
    with pytest.raises(InputError, match="convert the download first"):
        read_ppmi(root, "ppmi", "c.csv", tmp_path / "nifti")
    pd.DataFrame({"Image Data ID": ["I1"], "Subject": ["3000"]}).to_csv(root / "bad.csv", index=False)
    convert_download(root, "PPMI", tmp_path / "nifti")
    with pytest.raises(InputError, match="no column 'Group'"):
        read_ppmi(root, "ppmi", "bad.csv", tmp_path / "nifti")


# ---------------------------------------------------------------- MRI series a neuroimager would take

MRI_SERIES = [  # (image id, description, echo times, (ScanningSequence, SequenceName))
    ("I200001", "Accelerated Sagittal MPRAGE", (3.0,), ("GR\\IR", "*tfl3d1_16ns")),
    ("I200002", "Axial PD-T2 TSE", (11.0, 101.0), ("SE", "*tse2d2_7")),  # ADNI1's dual echo, named
    ("I200003", "Axial T2 TSE", (11.0, 101.0), ("SE", "*tse2d2_7")),  # a dual echo the name does not tell
    ("I200004", "Sagittal T1", (12.0,), ("SE", "*se2d1")),  # a T1 spin echo
    ("I200005", "Axial T2", (20.0,), ("GR", "*fl2d1")),  # a T2* FLASH
    ("I200006", "Sagittal 3D FLAIR", (390.0,), ("SE\\IR", "*spcir_278ns")),
    ("I200007", "Axial T2 FLAIR", (90.0,), ("SE\\IR", "*tir2d1_11")),  # a slice missing: dcm2niix adds an _Eq copy
]


@pytest.fixture(scope="module")
def mri_choices(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("mri")
    root, tree = base / "download", base / "download" / "ADNI" / "941_S_1202"
    for image, description, echoes, sequence in MRI_SERIES:
        dicom_series(
            tree / description.replace(" ", "_") / "2017-05-10_13_45_12.0" / image,
            description=description,
            echo_times=echoes,
            sequence=sequence,
            slices=4 if image == "I200007" else 3,
            gap_after=1 if image == "I200007" else None,
        )
    collection_csv(
        root / "ADNI_collection.csv",
        [
            {
                "Image Data ID": image,
                "Subject": "941_S_1202",
                "Group": "AD",
                "Modality": "MRI",
                "Description": description,
                "Acq Date": "5/10/2017",
            }
            for image, description, _, _ in MRI_SERIES
        ],
    )
    ADNIMERGE.to_csv(root / "ADNIMERGE.csv", index=False)
    convert_download(root, "ADNI", base / "nifti")
    return root, base / "nifti"


def test_mri_series_choice(mri_choices: tuple[Path, Path]):
    root, converted = mri_choices
    conversion = pd.read_csv(converted / "conversion.tsv", sep="\t", dtype=str, keep_default_na=False)
    aside = conversion[conversion["status"] == "set aside"]
    # dcm2niix's own names kept after the image ID: 3_e1/3_e2 for the dual echoes, 3 beside 3_Eq_1
    assert sorted(Path(p).name for p in aside["nifti"]) == ["I200002_3_e2.nii.gz", "I200003_3_e2.nii.gz", "I200007_3.nii.gz"]
    ok = conversion[conversion["status"] == "ok"].set_index("image_id")
    assert all(nib.load(p).shape[3:] in ((), (1,)) for p in ok["nifti"])  # never stacked
    assert nib.load(ok.loc["I200007", "nifti"]).shape[2] == 5  # resliced to equal spacing: the gap filled
    assert (
        json.loads(Path(ok.loc["I200007", "sidecar"]).read_text())["SeriesDescription"] == "Axial T2 FLAIR"
    )  # its twin's headers
    rows, excluded = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv")
    assert sorted(r.image for r in rows) == [
        "sub-941S1202_ses-20170510_img-I200001_T1w",
        "sub-941S1202_ses-20170510_img-I200006_FLAIR",
    ]
    reasons = {Path(e.path).name: e.reason for e in excluded}
    # the series with a missing slice: excluded by default (max_interpolated_slices 0), saying so
    assert reasons["I200007.nii.gz"].startswith(
        "1 slice(s) missing from the series: dcm2niix filled the gap by interpolation (its _Eq copy), "
        "more than max_interpolated_slices (0)"
    )
    allowed, _ = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", max_interpolated_slices=1)
    assert "sub-941S1202_ses-20170510_img-I200007_FLAIR" in {r.image for r in allowed}
    assert reasons["I200002_3_e2.nii.gz"] == "echo 2 of a multi-echo series (echo 1 is the one used); kept I200002.nii.gz"
    assert reasons["I200007_3.nii.gz"] == (
        "uncorrected for unequal slice spacing (dcm2niix also wrote the corrected copy, which is used); kept I200007.nii.gz"
    )
    assert reasons["I200002"] == "series 'Axial PD-T2 TSE' is a proton-density or PD/T2 dual-echo image"
    assert (
        reasons["I200003"]
        == "series 'Axial T2 TSE' is echo 1 of a multi-echo series (a PD/T2 dual echo or multi-echo image), not a single-echo T2w"
    )
    assert reasons["I200004"] == "series 'Sagittal T1' is a T1 spin echo (ScanningSequence SE), not a 3D T1 gradient echo"
    assert reasons["I200005"] == "series 'Axial T2' is a T2* gradient echo (ScanningSequence GR), not a T2w spin echo"
    assert len(excluded) == 8
    convert_download(root, "ADNI", converted)  # reused conversions list their set-aside files again
    assert pd.read_csv(converted / "conversion.tsv", sep="\t", dtype=str, keep_default_na=False).equals(conversion)


def test_mri_series_regexes(mri_choices: tuple[Path, Path]):
    root, converted = mri_choices
    rows, excluded = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", mri_series_exclude="(?i)flair")
    assert [r.modality for r in rows] == ["T1w"]
    assert {Path(e.path).name: e.reason for e in excluded}[
        "I200006"
    ] == "series 'Sagittal 3D FLAIR' matches mri_series_exclude '(?i)flair'"
    rows, excluded = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", mri_series_include="MPRAGE")
    assert [r.modality for r in rows] == ["T1w"]
    assert {Path(e.path).name: e.reason for e in excluded}[
        "I200006"
    ] == "series 'Sagittal 3D FLAIR' does not match mri_series_include 'MPRAGE'"
    with pytest.raises(InputError, match=r"mri_series_include '\(' is not a regular expression"):
        read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", mri_series_include="(")


@pytest.mark.parametrize(
    ("names", "kept", "reasons"),
    [
        (
            ["3_e1.nii.gz", "3_e2.nii.gz"],
            "3_e1.nii.gz",
            {"3_e2.nii.gz": "echo 2 of a multi-echo series (echo 1 is the one used)"},
        ),
        (
            ["3.nii.gz", "3_Eq.nii.gz"],
            "3_Eq.nii.gz",
            {"3.nii.gz": "uncorrected for unequal slice spacing (dcm2niix also wrote the corrected copy, which is used)"},
        ),
        (
            ["3.nii.gz", "3_Tilt.nii.gz", "3_Tilt_Eq.nii.gz"],
            "3_Tilt_Eq.nii.gz",
            {
                "3.nii.gz": "uncorrected for gantry tilt, unequal slice spacing (dcm2niix also wrote the corrected copy, which is used)",
                "3_Tilt.nii.gz": "uncorrected for gantry tilt, unequal slice spacing (dcm2niix also wrote the corrected copy, which is used)",
            },
        ),
        (
            ["3.nii.gz", "3_ROI1.nii.gz"],
            "3.nii.gz",
            {"3_ROI1.nii.gz": "an overlay (region of interest) stored with the series, not an image"},
        ),
    ],
)
def test_main_image_of_an_mr_series(names, kept, reasons):
    main, others = main_image([Path(n) for n in names])
    assert main.name == kept and {p.name: r for p, r in others} == reasons


def test_main_image_refuses_to_guess():
    with pytest.raises(
        InputError,
        match=r"2 images for one MR series and none is the main one \(frames are stacked for PET only\): 3_i00001.nii.gz, 3_i00002.nii.gz",
    ):
        main_image([Path("3_i00001.nii.gz"), Path("3_i00002.nii.gz")])


def test_mr_nifti_download_is_never_stacked(tmp_path: Path):
    folder = tmp_path / "dl" / "ADNI" / "941_S_1202" / "Axial_PD-T2_TSE" / "2017-05-10_13_45_12.0" / "I400001"
    for echo in (1, 2):  # IDA's NIfTI file names say MR (or PT) after the subject
        nifti(folder / f"ADNI_941_S_1202_MR_Axial_PD-T2_TSE_br_raw_20170510134512_{echo}_S600001_I400001.nii")
    conversion = pd.read_csv(
        convert_download(tmp_path / "dl", "ADNI", tmp_path / "nifti"), sep="\t", dtype=str, keep_default_na=False
    )
    assert conversion["status"].tolist() == ["failed"]
    assert conversion["reason"][0].startswith(
        "2 images for one MR series and none is the main one (frames are stacked for PET only): ADNI_941_S_1202_MR_"
    )
    (folder / "ADNI_941_S_1202_MR_Axial_PD-T2_TSE_br_raw_20170510134512_2_S600001_I400001.nii").rename(folder / "3_e2.nii")
    (folder / "ADNI_941_S_1202_MR_Axial_PD-T2_TSE_br_raw_20170510134512_1_S600001_I400001.nii").rename(folder / "3_e1.nii")
    for name in ("3_e1.json", "3_e2.json"):  # a folder converted by dcm2niix elsewhere: its sidecars say MR
        (folder / name).write_text(json.dumps({"Modality": "MR", "EchoNumber": int(name[3])}))
    conversion = pd.read_csv(
        convert_download(tmp_path / "dl", "ADNI", tmp_path / "nifti"), sep="\t", dtype=str, keep_default_na=False
    )
    assert [(s, Path(n).name, r) for s, n, r in conversion[["status", "nifti", "reason"]].itertuples(index=False)] == [
        ("ok", "3_e1.nii", ""),
        ("set aside", "3_e2.nii", "echo 2 of a multi-echo series (echo 1 is the one used); kept 3_e1.nii"),
    ]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["Sag T1 SE"], "series 'Sag T1 SE' is a T1 spin echo, not a 3D T1 gradient echo (MPRAGE, IR-SPGR)"),
        (["AX T1_TSE"], "series 'AX T1_TSE' is a T1 spin echo, not a 3D T1 gradient echo (MPRAGE, IR-SPGR)"),
        (["AX T2 GRE"], "series 'AX T2 GRE' is a T2* gradient echo, not a T2w spin echo"),
        (["AXIAL PD/T2 FSE"], "series 'AXIAL PD/T2 FSE' is a proton-density or PD/T2 dual-echo image"),
        (["Axial T2-FLAIR"], ("FLAIR", "n/a")),
        (["Sagittal 3D T1 MPRAGE SENSE"], ("T1w", "n/a")),
    ],
)
def test_mri_names_a_neuroimager_would_refuse(texts, expected):
    assert classify(texts, {}, "MRI") == expected


# ---------------------------------------------------------------- ADNI processing levels, IDA XML metadata


@pytest.mark.parametrize(
    ("description", "image_type", "step"),
    [
        ("ADNI Brain PET: Raw FDG", "Original", "raw"),
        ("Co-registered Dynamic", "Pre-processed", "coregistered_dynamic"),
        ("Co-registered, Averaged", "Pre-processed", "coregistered_averaged"),
        ("AV45 Co-registered, Averaged", "Pre-processed", "coregistered_averaged"),
        ("Coreg, Avg, Standardized Image and Voxel Size", "Pre-processed", "standardized"),
        ("Coreg, Avg, Std Img and Vox Siz, Uniform Resolution", "Pre-processed", "uniform_resolution"),
        ("AV1451 Coreg, Avg, Std Img and Vox Siz, Uniform Resolution", "Pre-processed", "uniform_resolution"),
        ("Coreg, Avg, Std Img and Vox Siz, Uniform 6mm Res", "Pre-processed", "uniform_6mm"),
        ("MPR; GradWarp; B1 Correction; N3", "Pre-processed", "processed"),
        ("MT1; N3m", "Pre-processed", "processed"),
        ("FreeSurfer Cross-Sectional Processing brainmask", "Post-processed", "processed"),
        ("MPRAGE", "", "raw"),
    ],
)
def test_processing_step(description, image_type, step):
    assert processing_step(description, image_type) == step


def test_processing_levels_match_the_config_schema():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    adni = next(
        b["then"]["properties"] for b in schema["$defs"]["dataset"]["allOf"] if b["if"]["properties"]["kind"]["const"] == "adni"
    )
    assert tuple(adni["processing_level"]["enum"]) == PROCESSING_LEVELS and adni["processing_level"]["default"] == "raw"


FDG_STEPS = [  # (image id, description, collection Type) of one FDG scan, as the ADNI PET core uploads it
    ("I300010", "ADNI Brain PET: Raw FDG", "Original"),
    ("I300011", "Co-registered Dynamic", "Pre-processed"),
    ("I300012", "Co-registered, Averaged", "Pre-processed"),
    ("I300013", "Coreg, Avg, Std Img and Vox Siz, Uniform Resolution", "Pre-processed"),
]


@pytest.fixture(scope="module")
def adni_processed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A NIfTI download mixing raw series and processed steps, with IDA's XML beside ADNI/."""
    base = tmp_path_factory.mktemp("levels")
    root, tree = base / "download", base / "download" / "ADNI" / "941_S_1202"
    folder = lambda description: description.replace(": ", "__").replace("; ", "__").replace(", ", "__").replace(" ", "_")  # noqa: E731
    rows = []
    for image, description, kind, modality, when, shape in [
        ("I300001", "Accelerated Sagittal MPRAGE", "Original", "MRI", "2017-05-10", (6, 6, 6)),
        ("I300002", "MPR; GradWarp; B1 Correction; N3", "Pre-processed", "MRI", "2017-05-10", (6, 6, 6)),
        *[(i, d, t, "PET", "2017-06-01", (6, 6, 6, 3) if "Dynamic" in d or "Raw" in d else (6, 6, 6)) for i, d, t in FDG_STEPS],
        ("I300020", "ADNI Brain PET: Raw AV45", "Original", "PET", "2017-07-01", (6, 6, 6, 4)),
        ("I300021", "AV45 Co-registered, Averaged", "Pre-processed", "PET", "2017-07-01", (6, 6, 6)),
    ]:
        kind_code = "MR" if modality == "MRI" else "PT"
        nifti(
            tree
            / folder(description)
            / f"{when}_10_00_00.0"
            / image
            / f"ADNI_941_S_1202_{kind_code}_{folder(description)}_br_raw_{when.replace('-', '')}100000000_1_S5{image[2:]}_{image}.nii",
            shape,
        )
        rows.append(
            {
                "Image Data ID": image,
                "Subject": "941_S_1202",
                "Group": "AD",
                "Modality": modality,
                "Description": description,
                "Type": kind,
                "Acq Date": "/".join(str(int(x)) for x in (when[5:7], when[8:], when[:4])),
                "Format": "NiFTI",
            }
        )
    ida_xml(
        root / "ADNI_941_S_1202_Accelerated_Sagittal_MPRAGE_S5300001_I300001.xml",
        "941_S_1202",
        "I300001",
        "Accelerated Sagittal MPRAGE",
    )
    ida_xml(
        root / "ADNI_941_S_1202_Co-registered__Averaged_S5300012_I300012.xml",
        "941_S_1202",
        "I300012",
        "Co-registered, Averaged",
        modality="PET",
        model="Biograph64",
        processed="Co-registered, Averaged",
        original_description="ADNI Brain PET: Raw FDG",
    )
    collection_csv(root / "ADNI_collection.csv", rows)
    ADNIMERGE.to_csv(root / "ADNIMERGE.csv", index=False)
    convert_download(root, "ADNI", base / "nifti")
    return root, base / "nifti"


def test_adni_raw_level_and_xml_scanner(adni_processed: tuple[Path, Path]):
    root, converted = adni_processed
    rows, excluded = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv")
    by_image = {r.image: r for r in rows}
    assert sorted(by_image) == [
        "sub-941S1202_ses-20170510_img-I300001_T1w",
        "sub-941S1202_ses-20170601_trc-FDG_img-I300010_pet",
        "sub-941S1202_ses-20170701_trc-AV45_img-I300020_pet",
    ]
    assert by_image["sub-941S1202_ses-20170510_img-I300001_T1w"].scanner == "Siemens Prisma fit"  # from the XML: no sidecar
    assert by_image["sub-941S1202_ses-20170601_trc-FDG_img-I300010_pet"].scanner == "n/a"
    reasons = {re.findall(r"I\d+", e.path)[-1]: e.reason for e in excluded}
    assert (
        reasons["I300002"]
        == "processed MRI ('MPR; GradWarp; B1 Correction; N3'): the pipeline registers the original series itself"
    )
    raw_fdg = by_image["sub-941S1202_ses-20170601_trc-FDG_img-I300010_pet"].path
    assert reasons["I300013"] == (
        "ADNI processing step uniform_resolution ('Coreg, Avg, Std Img and Vox Siz, Uniform Resolution'), "
        f"not processing_level raw: one image per subject, date and tracer, kept I300010 ({raw_fdg})"
    )
    assert reasons["I300021"].startswith(
        "ADNI processing step coregistered_averaged ('AV45 Co-registered, Averaged'), not processing_level raw: "
        "one image per subject, date and tracer, kept I300020"
    )
    assert len(excluded) == 5


def test_adni_processed_level(adni_processed: tuple[Path, Path]):
    root, converted = adni_processed
    rows, excluded = read_adni(
        root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", processing_level="uniform_resolution"
    )
    pet = [r for r in rows if r.modality == "pet"]
    assert [(r.image, r.tracer) for r in pet] == [
        ("sub-941S1202_ses-20170601_trc-FDG_img-I300013_pet", "fdg")
    ]  # no tracer in its name
    reasons = {re.findall(r"I\d+", e.path)[-1]: e.reason for e in excluded}
    assert (
        reasons["I300020"]
        == reasons["I300021"]
        == (
            "no uniform_resolution image of this PET scan (processing_level uniform_resolution); "
            "the download has I300020 raw, I300021 coregistered_averaged"
        )
    )
    rows, _ = read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", processing_level="coregistered_averaged")
    averaged = {r.image: r for r in rows if r.modality == "pet"}
    assert (
        averaged["sub-941S1202_ses-20170601_trc-FDG_img-I300012_pet"].scanner == "Siemens Biograph64"
    )  # the original's, from the XML
    assert "sub-941S1202_ses-20170701_trc-AV45_img-I300021_pet" in averaged
    with pytest.raises(InputError, match="processing_level 'averaged' is not one of"):
        read_adni(root, "adni", "ADNI_collection.csv", converted, "ADNIMERGE.csv", processing_level="averaged")
