"""Download trees laid out exactly as each source ships them, filled with real head images (the
demo cohort's, which register like scans), for end-to-end runs from the raw tree to slices:

- IXI: the unpacked per-modality archives (``IXI-T1/IXI002-Guys-0828-T1.nii.gz``) and IXI.xls;
- SALD: the range archives unpacked (``sub-031274_sub-031323/sub-031274/anat/sub-031274_T1w.nii.gz``)
  and sub_information.xlsx;
- PPMI: an IDA NIfTI download (``PPMI/<subject>/<description>/<date>_<time>/<image id>/PPMI_..._I<id>.nii``)
  with its collection CSV;
- ADNI: an IDA download mixing DICOM series (MR, and a dynamic PET whose radiopharmaceutical tag is
  empty, as many are) converted by the real dcm2niix, and a NIfTI image, with the collection CSV
  and ADNIMERGE;
- BIDS as Clinica's ADNI converter writes it (``ses-M000``, ``trc-18FAV1451``, a sidecar inherited
  from the dataset root with ``TracerName: "[18F]AV-1451"``).

Each tree also holds the bad inputs real downloads have (NaN voxels, a truncated file, an empty
volume, the wrong dimensions, modalities the pipeline does not use); :data:`EXPECTED` says what each
dataset's run must slice, and why the rest is left out."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from adapter_fixtures import COLLECTION, collection_csv, dicom_file, ida_xml, series_uids

#: dataset -> (image stems that reach slices.tsv, {excluded file name: start of its reason})
EXPECTED: dict[str, tuple[set[str], dict[str, str]]] = {
    "ixi": (
        {"sub-IXI002_T1w", "sub-IXI002_T2w", "sub-IXI012_T1w", "sub-IXI025_T1w"},
        {
            "IXI013-HH-1212-T1.nii.gz": "1000 NaN or infinite voxels",
            "IXI014-IOP-0001-T1.nii.gz": "unreadable or truncated NIfTI",
            "IXI015-IOP-0002-T1.nii.gz": "image is all zero",
            "IXI016-IOP-0003-T1.nii.gz": "T1 is 4D with 2 volumes",
            "IXI012-HH-1211-PD.nii.gz": "modality PD is not used",
        },
    ),
    "sald": (
        {"sub-031274_T1w", "sub-031323_T1w", "sub-031350_T1w"},
        {
            "sub-031274_task-rest_bold.nii.gz": "not a T1 image",
            "sub-031300_T1w.nii.gz": "unreadable or truncated NIfTI",
            "sub-031323_run-2_T1w.nii.gz": "duplicate image ID sub-031323_T1w",
        },
    ),
    "ppmi": (
        {"sub-3000_ses-20110315_img-I234567_T1w"},
        {
            "I234570": "modality SPECT is not used",
            "PPMI_3002_MR_MPRAGE_GRAPPA_br_raw_20110402_S3_I234571.nii": "image is all zero",
        },
    ),
    "adni": (
        {
            "sub-941S1202_ses-20170510_img-I100001_T1w",
            "sub-941S1202_ses-20170510_img-I100002_FLAIR",
            "sub-941S1202_ses-20170601_trc-AV1451_img-I100003_pet",
            "sub-002S0413_ses-20180110_img-I100004_T1w",
        },
        {"I100005": "unreadable DICOM"},
    ),
    "bids": (
        {"sub-ADNI941S1202_ses-M000_T1w", "sub-ADNI941S1202_ses-M000_trc-18FAV1451_pet"},
        {"sub-ADNI002S0413_ses-M000_T1w.nii.gz": "1 NaN or infinite voxels"},
    ),
}


def demo_images(demo_bids: Path, subject: int) -> dict[str, Path]:
    """One demo subject's images by kind: T1w, T2w, FLAIR, and pet-<tracer>."""
    folder = demo_bids / f"sub-demo{subject:02d}" / "ses-01"
    images = {p.name.split("_")[-1].removesuffix(".nii.gz"): p for p in (folder / "anat").glob("*.nii.gz")}
    images |= {f"pet-{p.name.split('trc-')[1].split('_')[0]}": p for p in (folder / "pet").glob("*.nii.gz")}
    return images


def _write(img: nib.Nifti1Image, path: Path, data: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = img if data is None else nib.Nifti1Image(data, img.affine, img.header)
    if data is not None:
        out.header.set_data_dtype(data.dtype)
    nib.save(out, path)
    return path


def _copy(source: Path, path: Path) -> Path:
    """A demo image under a source's own file name (uncompressed where the name says .nii)."""
    if path.name.endswith(".nii.gz"):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return path
    return _write(nib.load(source), path)


def _broken(source: Path, path: Path, how: str) -> Path:
    """A copy of ``source`` broken the way real downloads break."""
    img = nib.load(source)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if how == "nan":
        data[:10, :10, :10] = np.nan
        return _write(img, path, data)
    if how == "nan1":
        data[0, 0, 0] = np.nan
        return _write(img, path, data)
    if how == "zero":
        return _write(img, path, np.zeros_like(data))
    if how == "4d":
        return _write(img, path, np.stack([data, data], axis=-1))
    if how == "truncated":
        _copy(source, path)
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[: len(raw) // 3]))
        return path
    raise ValueError(how)


# ---------------------------------------------------------------- IXI, SALD


def ixi_tree(root: Path, demo_bids: Path) -> Path:
    a, b, c = demo_images(demo_bids, 1), demo_images(demo_bids, 2), demo_images(demo_bids, 3)
    _copy(a["T1w"], root / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz")
    _copy(demo_images(demo_bids, 4)["T1w"], root / "IXI-T1" / "IXI025-IOP-0890-T1.nii.gz")
    _copy(a["T2w"], root / "IXI-T2" / "IXI002-Guys-0828-T2.nii.gz")
    _copy(b["T1w"], root / "IXI-T1" / "IXI012-HH-1211-T1.nii.gz")
    _copy(b["T2w"], root / "IXI-PD" / "IXI012-HH-1211-PD.nii.gz")
    _broken(c["T1w"], root / "IXI-T1" / "IXI013-HH-1212-T1.nii.gz", "nan")
    _broken(c["T1w"], root / "IXI-T1" / "IXI014-IOP-0001-T1.nii.gz", "truncated")
    _broken(c["T1w"], root / "IXI-T1" / "IXI015-IOP-0002-T1.nii.gz", "zero")
    _broken(c["T1w"], root / "IXI-T1" / "IXI016-IOP-0003-T1.nii.gz", "4d")
    from test_adapters_ixi import ixi_xls

    ixi_xls(
        root / "IXI.xls",
        [(2, 1, 35.8), (12, 2, 38.78), (13, 1, 50.0), (14, 2, 60.0), (15, 1, 61.0), (16, 2, 62.0), (25, 1, 58.65)],
    )
    return root


def sald_tree(root: Path, demo_bids: Path) -> Path:
    first, second = "sub-031274_sub-031323", "sub-031324_sub-031373"  # two range archives, unpacked
    a, b = demo_images(demo_bids, 3), demo_images(demo_bids, 4)
    _copy(a["T1w"], root / first / "sub-031274" / "anat" / "sub-031274_T1w.nii.gz")
    _write(
        nib.load(a["T1w"]),
        root / first / "sub-031274" / "func" / "sub-031274_task-rest_bold.nii.gz",
        np.zeros((8, 8, 8, 3), np.float32),
    )
    _copy(b["T1w"], root / first / "sub-031323" / "anat" / "sub-031323_T1w.nii.gz")
    _copy(a["T1w"], root / first / "sub-031323" / "anat" / "sub-031323_run-2_T1w.nii.gz")
    _broken(a["T1w"], root / first / "sub-031300" / "anat" / "sub-031300_T1w.nii.gz", "truncated")
    _copy(demo_images(demo_bids, 1)["T1w"], root / second / "sub-031350" / "anat" / "sub-031350_T1w.nii.gz")
    pd.DataFrame({"Sub_ID": [31274, 31300, 31323, 31350], "Sex": [1, 2, 2, 1], "Age": [19, 45, 80, 33]}).to_excel(
        root / "sub_information.xlsx", index=False
    )
    return root


# ---------------------------------------------------------------- DICOM (for dcm2niix)


def _clock(when: datetime) -> str:
    return when.strftime("%H%M%S.%f")


def dicom_from_volume(
    img: nib.Nifti1Image,
    folder: Path,
    modality: str = "MR",
    description: str = "MPRAGE",
    model: str = "Prisma_fit",
    manufacturer: str = "SIEMENS",
    date: str = "20170510",
    series_start: datetime | None = None,
    frame_seconds: float = 300.0,
    injection: datetime | None = None,
    tracer: str = "",
) -> Path:
    """Write a 3D (MR) or 4D (dynamic PET) NIfTI as the DICOM series a scanner writes: one file
    per slice and frame, geometry in LPS, frame timing for PET (AcquisitionTime per frame,
    ActualFrameDuration, FrameReferenceTime from the series start, the injection time in the
    radiopharmaceutical sequence, whose name ``tracer`` may be empty)."""
    from pydicom.dataset import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    data = np.asarray(img.dataobj, dtype=np.float32)
    frames = data.shape[3] if data.ndim == 4 else 1
    data = data.reshape(data.shape[:3] + (frames,))
    slope = max(float(data.max()), 1e-6) / 32000.0
    stored = np.clip(np.round(data / slope), 0, 65535).astype(np.uint16)
    affine = img.affine
    lps = np.diag([-1.0, -1.0, 1.0])
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = lps @ affine[:3, 0] / zooms[0], lps @ affine[:3, 1] / zooms[1]
    start = series_start or datetime(2017, 5, 10, 10, 0, 0)
    uids = series_uids()
    slices = data.shape[2]
    number = 0
    for frame in range(frames):
        for k in range(slices):
            number += 1
            ds = dicom_file(modality, description, model, uids, number, date, manufacturer)
            ds.StudyTime = ds.SeriesTime = _clock(start)
            ds.AcquisitionTime = _clock(start + timedelta(seconds=frame * frame_seconds))
            ds.ImagePositionPatient = [float(v) for v in lps @ (affine @ [0, 0, k, 1])[:3]]
            ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
            ds.PixelSpacing, ds.SliceThickness = [float(zooms[1]), float(zooms[0])], float(zooms[2])
            ds.Rows, ds.Columns = data.shape[1], data.shape[0]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleSlope, ds.RescaleIntercept = slope, 0
            if modality == "PT":
                ds.NumberOfSlices, ds.NumberOfTimeSlices, ds.ImageIndex = slices, frames, number
                ds.ActualFrameDuration = int(frame_seconds * 1000)
                ds.FrameReferenceTime = (frame + 0.5) * frame_seconds * 1000.0
                ds.Units, ds.SeriesType, ds.DecayCorrection = "BQML", ["DYNAMIC", "IMAGE"], "START"
                drug = Dataset()
                drug.Radiopharmaceutical = tracer
                drug.RadionuclideHalfLife = 6586.2
                if injection is not None:
                    drug.RadiopharmaceuticalStartTime = _clock(injection)
                ds.RadiopharmaceuticalInformationSequence = [drug]
            else:
                ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 3, 3, 2300
            ds.PixelData = np.ascontiguousarray(stored[:, :, k, frame].T).tobytes()
            ds.save_as(folder / f"{number:05d}.dcm", enforce_file_format=True)
    return folder


# ---------------------------------------------------------------- IDA (PPMI, ADNI)


def ppmi_tree(root: Path, demo_bids: Path) -> Path:
    tree = root / "PPMI"
    _copy(
        demo_images(demo_bids, 1)["T1w"],
        tree
        / "3000"
        / "MPRAGE_GRAPPA"
        / "2011-03-15_13_30_41.0"
        / "I234567"
        / "PPMI_3000_MR_MPRAGE_GRAPPA_br_raw_20110315133041_S1_I234567.nii",
    )
    _copy(
        demo_images(demo_bids, 1)["T1w"],
        tree / "3001" / "DaTSCAN" / "2011-04-01_10_00_00.0" / "I234570" / "PPMI_3001_NM_DaTSCAN_br_raw_20110401_S2_I234570.nii",
    )
    _broken(
        demo_images(demo_bids, 2)["T1w"],
        tree
        / "3002"
        / "MPRAGE_GRAPPA"
        / "2011-04-02_10_00_00.0"
        / "I234571"
        / "PPMI_3002_MR_MPRAGE_GRAPPA_br_raw_20110402_S3_I234571.nii",
        "zero",
    )
    # IDA's per-image metadata beside the NIfTI download: the only place that names the scanner
    ida_xml(
        root / "PPMI_3000_MPRAGE_GRAPPA_S1_I234567.xml",
        "3000",
        "I234567",
        "MPRAGE GRAPPA",
        manufacturer="SIEMENS",
        model="TrioTim",
    )
    collection_csv(
        root / "PPMI_collection.csv",
        [
            {
                "Image Data ID": "I234567",
                "Subject": "3000",
                "Group": "PD",
                "Modality": "MRI",
                "Description": "MPRAGE GRAPPA",
                "Acq Date": "3/15/2011",
                "Format": "NiFTI",
            },
            {
                "Image Data ID": "I234570",
                "Subject": "3001",
                "Group": "PD",
                "Modality": "SPECT",
                "Description": "DaTSCAN",
                "Acq Date": "4/01/2011",
                "Format": "NiFTI",
            },
            {
                "Image Data ID": "I234571",
                "Subject": "3002",
                "Group": "Control",
                "Modality": "MRI",
                "Description": "MPRAGE GRAPPA",
                "Acq Date": "4/02/2011",
                "Format": "NiFTI",
            },
        ],
    )
    return root


def adni_tree(root: Path, demo_bids: Path) -> Path:
    tree = root / "ADNI"
    a = demo_images(demo_bids, 2)
    dicom_from_volume(
        nib.load(a["T1w"]),
        tree / "941_S_1202" / "Accelerated_Sagittal_MPRAGE" / "2017-05-10_13_45_12.0" / "I100001",
        description="Accelerated Sagittal MPRAGE",
    )
    dicom_from_volume(
        nib.load(a["FLAIR"]),
        tree / "941_S_1202" / "Sagittal_3D_FLAIR" / "2017-05-10_13_45_12.0" / "I100002",
        description="Sagittal 3D FLAIR",
    )
    # tau PET 75-105 min after injection, six 5-minute frames; the tracer tag is empty
    dicom_from_volume(
        nib.load(a["pet-AV1451"]),
        tree / "941_S_1202" / "AV1451_Tau_6x5min" / "2017-06-01_10_00_00.0" / "I100003",
        modality="PT",
        description="AV1451 Tau 6x5min",
        model="Biograph64",
        date="20170601",
        series_start=datetime(2017, 6, 1, 10, 15),
        injection=datetime(2017, 6, 1, 9, 0),
        tracer="",
    )
    _copy(
        demo_images(demo_bids, 3)["T1w"],
        tree
        / "002_S_0413"
        / "MPRAGE"
        / "2018-01-10_09_00_00.0"
        / "I100004"
        / "ADNI_002_S_0413_MR_MPRAGE_br_raw_20180110090000_S4_I100004.nii",
    )
    ida_xml(
        root / "ADNI_002_S_0413_MPRAGE_S4_I100004.xml",
        "002_S_0413",
        "I100004",
        "MPRAGE",
        manufacturer="GE MEDICAL SYSTEMS",
        model="SIGNA Premier",
    )
    broken = tree / "002_S_0413" / "ADNI_Brain_PET__Raw_FDG" / "2018-01-12_09_00_00.0" / "I100005"
    broken.mkdir(parents=True)
    (broken / "00001.dcm").write_bytes(b"\x00" * 300)
    collection_csv(
        root / "ADNI_collection.csv",
        # the adapter tests' first five rows; the MPRAGE was downloaded as NIfTI
        [{**row, "Format": "NiFTI"} if row["Image Data ID"] == "I100004" else row for row in COLLECTION[:5]],
    )
    pd.DataFrame(
        {
            "RID": [1202, 413],
            "PTID": ["941_S_1202", "002_S_0413"],
            "VISCODE": ["bl", "m144"],
            "EXAMDATE": ["2017-05-01", "2018-01-05"],
            "DX": ["Dementia", "CN"],
        }
    ).to_csv(root / "ADNIMERGE.csv", index=False)
    return root


# ---------------------------------------------------------------- BIDS as Clinica writes it


def clinica_bids_tree(root: Path, demo_bids: Path) -> Path:
    a, b = demo_images(demo_bids, 4), demo_images(demo_bids, 1)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "ADNI (Clinica)", "BIDSVersion": "1.7.0"}))
    subject = root / "sub-ADNI941S1202" / "ses-M000"
    _copy(a["T1w"], subject / "anat" / "sub-ADNI941S1202_ses-M000_T1w.nii.gz")
    _copy(a["pet-AV1451"], subject / "pet" / "sub-ADNI941S1202_ses-M000_trc-18FAV1451_pet.nii.gz")
    timing = json.loads(a["pet-AV1451"].with_name(a["pet-AV1451"].name.replace(".nii.gz", ".json")).read_text())
    # inherited by every tau PET of the dataset (BIDS inheritance), tracer named with its isotope
    (root / "trc-18FAV1451_pet.json").write_text(json.dumps({**timing, "TracerName": "[18F]AV-1451"}))
    _broken(b["T1w"], root / "sub-ADNI002S0413" / "ses-M000" / "anat" / "sub-ADNI002S0413_ses-M000_T1w.nii.gz", "nan1")
    pd.DataFrame(
        {"participant_id": ["sub-ADNI941S1202", "sub-ADNI002S0413"], "sex": ["F", "M"], "diagnosis": ["AD", "CN"]}
    ).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


TREES = {"ixi": ixi_tree, "sald": sald_tree, "ppmi": ppmi_tree, "adni": adni_tree, "bids": clinica_bids_tree}
CONFIG = {
    "ixi": {"kind": "ixi"},
    "sald": {"kind": "sald", "demographics": "sub_information.xlsx"},
    "ppmi": {"kind": "ppmi", "collection": "PPMI_collection.csv"},
    "adni": {"kind": "adni", "collection": "ADNI_collection.csv", "diagnosis_table": "ADNIMERGE.csv"},
    "bids": {"kind": "bids"},
}


def write_downloads(base: Path, demo_bids: Path) -> dict[str, dict]:
    """Every tree under ``base`` and the config entries that read them."""
    return {name: {**CONFIG[name], "root": str(TREES[name](base / name, demo_bids))} for name in TREES}
