"""Small download trees with each source's real file naming and table columns, shared by the
adapter tests: tiny NIfTI volumes, and DICOM series written with pydicom for dcm2niix."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

COLLECTION_COLUMNS = [
    "Image Data ID",
    "Subject",
    "Group",
    "Sex",
    "Age",
    "Visit",
    "Modality",
    "Description",
    "Type",
    "Acq Date",
    "Format",
    "Downloaded",
]


def nifti(path: Path, shape=(6, 6, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), np.eye(4)), path)
    return path


def series_uids() -> tuple[str, str, str]:
    """Study, series and frame-of-reference UIDs shared by every file of one series."""
    from pydicom.uid import generate_uid

    return generate_uid(), generate_uid(), generate_uid()


def dicom_file(
    modality: str,
    description: str,
    model: str,
    uids: tuple[str, str, str],
    number: int,
    date: str = "20170510",
    manufacturer: str = "SIEMENS",
):
    """One DICOM file's identity (file meta, SOP class, series UIDs, instance number, dates):
    what every slice of a series shares apart from its geometry, timing and pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.128" if modality == "PT" else "1.2.840.10008.5.1.4.1.1.4"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = modality, manufacturer, model
    ds.SeriesDescription = ds.ProtocolName = description
    ds.PatientID = "anonymous"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.SeriesNumber, ds.InstanceNumber = 3, number
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = date
    return ds


def dicom_series(
    folder: Path,
    modality: str = "MR",
    description: str = "Accelerated Sagittal MPRAGE",
    model: str = "Prisma_fit",
    frames: int = 1,
    slices: int = 3,
    tracer: str | None = None,
    echo_times: tuple[float, ...] = (3.0,),
    sequence: tuple[str, str] = ("GR\\IR", "*tfl3d1_16ns"),
    gap_after: int | None = None,
) -> Path:
    """A DICOM series as a scanner writes it (one file per slice; a dynamic PET repeats the
    slice positions once per frame, with frame timing; a multi-echo MR repeats them once per
    echo, with EchoNumbers), for the real dcm2niix to convert. ``sequence`` is the MR
    (ScanningSequence, SequenceName): MPRAGE by default, ('SE', '*se2d1') a spin echo,
    ('GR', '*fl2d1') a FLASH gradient echo, ('SE', '*tse2d2_7') a dual-echo TSE. ``gap_after``:
    the slices after that one lie a slice further on (a missing slice: unequal spacing)."""
    from pydicom.dataset import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    uids = series_uids()
    number = 0
    for frame, echo in [(f, e) for f in range(frames) for e in range(len(echo_times))]:
        for s in range(slices):
            number += 1
            ds = dicom_file(modality, description, model, uids, number)
            ds.AcquisitionTime = f"10{frame * 5:02d}00.000000"
            ds.ImagePositionPatient, ds.ImageOrientationPatient = (
                [0.0, 0.0, 2.0 * (s + (gap_after is not None and s > gap_after))],
                [1, 0, 0, 0, 1, 0],
            )
            ds.PixelSpacing, ds.SliceThickness = [2.0, 2.0], 2.0
            ds.Rows = ds.Columns = 6
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1  # signed, as MR scanners write
            ds.RescaleSlope, ds.RescaleIntercept = 1, 0
            if modality == "PT":
                ds.NumberOfSlices, ds.NumberOfTimeSlices, ds.ImageIndex = slices, frames, number
                ds.ActualFrameDuration, ds.FrameReferenceTime = 300000, frame * 300000.0 + 150000
                ds.Units, ds.SeriesType = "BQML", ["DYNAMIC", "IMAGE"]
                drug = Dataset()
                drug.Radiopharmaceutical = tracer or ""
                ds.RadiopharmaceuticalInformationSequence = [drug]
            else:
                ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 3, echo_times[echo], 2300
                ds.EchoNumbers = echo + 1
                ds.ScanningSequence, ds.SequenceName = sequence
            ds.PixelData = (np.arange(36, dtype=np.int16).reshape(6, 6) + number).tobytes()
            ds.save_as(folder / f"ADNI_{number:04d}.dcm", enforce_file_format=True)
    return folder


def ida_xml(
    path: Path,
    subject: str,
    image_id: str,
    description: str,
    modality: str = "MRI",
    manufacturer: str = "SIEMENS",
    model: str = "Prisma_fit",
    processed: str | None = None,
    original_description: str | None = None,
    radiopharmaceutical: str | None = None,
) -> Path:
    """IDA's per-image metadata XML (the idaxs layout Clinica's adni-to-bids parses): an original
    image has imagingProtocol/protocolTerm; a processed one (``processed`` = its
    processedDataLabel) has the original's protocol under seriesLevelMeta/relatedImageDetail."""
    terms = [("Manufacturer", manufacturer), ("Mfg Model", model)] + (
        [("Radiopharmaceutical", radiopharmaceutical)] if radiopharmaceutical else []
    )
    protocol = "".join(f'<protocol term="{t}">{v}</protocol>' for t, v in terms)
    if processed is None:
        image = f"<imagingProtocol><imageUID>{image_id[1:]}</imageUID><description>{description}</description><protocolTerm>{protocol}</protocolTerm></imagingProtocol>"
        series_meta = ""
    else:
        image = ""
        series_meta = (
            f"<seriesLevelMeta><annotation><text>ADNI PET Core</text></annotation><derivedProduct><imageUID>{image_id[1:]}</imageUID>"
            f"<processedDataLabel>{processed}</processedDataLabel><imageType>image volume</imageType><creationDate>0000-00-00</creationDate></derivedProduct>"
            f"<relatedImageDetail><originalRelatedImage><imageUID>1</imageUID><description>{original_description or description}</description>"
            f"<protocolTerm>{protocol}</protocolTerm></originalRelatedImage></relatedImageDetail></seriesLevelMeta>"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<idaxs xmlns="http://ida.loni.usc.edu" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="/xsds/idaxs_2_0.xsd">\n<project xmlns=""><projectIdentifier>ADNI</projectIdentifier>'
        "<projectDescription>Alzheimer&#039;s Disease Neuroimaging Initiative</projectDescription><siteKey>941</siteKey>"
        f"<subject><subjectIdentifier>{subject}</subjectIdentifier><researchGroup>AD</researchGroup><subjectSex>F</subjectSex>"
        "<visit><visitIdentifier>ADNI3 Initial Visit-Cont Pt</visitIdentifier></visit>"
        "<study><studyIdentifier>1</studyIdentifier><subjectAge>71.2</subjectAge><ageQualifier>Y</ageQualifier><weightKg>60</weightKg><postMortem>F</postMortem>"
        f"<series><seriesIdentifier>2</seriesIdentifier><modality>{modality}</modality><dateAcquired>2017-05-10</dateAcquired>{series_meta}</series>"
        f"{image}</study></subject></project>\n</idaxs>\n"
    )
    return path


def collection_csv(path: Path, rows: list[dict]) -> Path:
    """An IDA collection CSV; rows give Image Data ID, Subject, Group, Modality, Description, Acq Date."""
    defaults = {"Sex": "F", "Age": "71", "Visit": "sc", "Type": "Original", "Format": "DCM", "Downloaded": "6/01/2024"}
    pd.DataFrame([{**defaults, **r} for r in rows], columns=COLLECTION_COLUMNS).to_csv(path, index=False)
    return path


COLLECTION = [
    {
        "Image Data ID": "I100001",
        "Subject": "941_S_1202",
        "Group": "AD",
        "Modality": "MRI",
        "Description": "Accelerated Sagittal MPRAGE",
        "Acq Date": "5/10/2017",
    },
    {
        "Image Data ID": "I100002",
        "Subject": "941_S_1202",
        "Group": "AD",
        "Modality": "MRI",
        "Description": "Sagittal 3D FLAIR",
        "Acq Date": "5/10/2017",
    },
    {
        "Image Data ID": "I100003",
        "Subject": "941_S_1202",
        "Group": "AD",
        "Modality": "PET",
        "Description": "AV1451 Tau 6x5min",
        "Acq Date": "6/01/2017",
    },
    {
        "Image Data ID": "I100004",
        "Subject": "002_S_0413",
        "Group": "CN",
        "Modality": "MRI",
        "Description": "MPRAGE",
        "Acq Date": "1/10/2018",
    },
    {
        "Image Data ID": "I100005",
        "Subject": "002_S_0413",
        "Group": "CN",
        "Modality": "PET",
        "Description": "ADNI Brain PET: Raw FDG",
        "Acq Date": "1/12/2018",
    },
    {
        "Image Data ID": "I100006",
        "Subject": "003_S_4288",
        "Group": "MCI",
        "Modality": "MRI",
        "Description": "Axial T2 STAR",
        "Acq Date": "12/01/2017",
    },
    {
        "Image Data ID": "I100007",
        "Subject": "003_S_4288",
        "Group": "MCI",
        "Modality": "PET",
        "Description": "FBB Brain 4x5min",
        "Acq Date": "12/02/2017",
    },
    {
        "Image Data ID": "I100009",
        "Subject": "136_S_0300",
        "Group": "MCI",
        "Modality": "MRI",
        "Description": "MPRAGE",
        "Acq Date": "3/01/2019",
    },
]
ADNIMERGE = pd.DataFrame(
    {
        "RID": [1202, 1202, 413, 4288, 300],
        "PTID": ["941_S_1202", "941_S_1202", "002_S_0413", "003_S_4288", "136_S_0300"],
        "VISCODE": ["bl", "m12", "m144", "bl", "m120"],
        "EXAMDATE": ["2017-05-01", "2018-05-01", "2018-01-05", "2017-12-01", "2017-01-10"],
        "DX": ["Dementia", "", "CN", "MCI", "MCI"],
    }
)


def adni_download(root: Path) -> Path:
    """ADNI/<PTID>/<description>/<date>_<time>/<image id>/ as IDA unpacks it."""
    tree = root / "ADNI"
    dicom_series(tree / "941_S_1202" / "Accelerated_Sagittal_MPRAGE" / "2017-05-10_13_45_12.0" / "I100001")
    dicom_series(tree / "941_S_1202" / "Sagittal_3D_FLAIR" / "2017-05-10_13_45_12.0" / "I100002", description="Sagittal 3D FLAIR")
    dicom_series(
        tree / "941_S_1202" / "AV1451_Tau_6x5min" / "2017-06-01_10_00_00.0" / "I100003",
        modality="PT",
        description="AV1451 Tau 6x5min",
        model="Biograph64",
        frames=3,
    )
    dicom_series(tree / "002_S_0413" / "MPRAGE" / "2018-01-10_09_00_00.0" / "I100004", description="MPRAGE", model="Prisma")
    broken = tree / "002_S_0413" / "ADNI_Brain_PET__Raw_FDG" / "2018-01-12_09_00_00.0" / "I100005"
    broken.mkdir(parents=True)
    (broken / "ADNI_0001.dcm").write_bytes(b"\x00" * 300)
    nifti(
        tree
        / "003_S_4288"
        / "Axial_T2_STAR"
        / "2017-12-01_10_00_00.0"
        / "I100006"
        / "ADNI_003_S_4288_MR_Axial_T2_STAR_I100006.nii"
    )
    for frame in range(3):  # a NIfTI download of a dynamic PET, one file per frame
        nifti(
            tree
            / "003_S_4288"
            / "FBB_Brain_4x5min"
            / "2017-12-02_10_00_00.0"
            / "I100007"
            / f"ADNI_003_S_4288_PT_FBB_I100007_frame{frame}.nii"
        )
    nifti(
        tree
        / "941_S_1202"
        / "Accelerated_Sagittal_MPRAGE"
        / "2017-05-10_13_45_12.0"
        / "I100008"
        / "ADNI_941_S_1202_MR_I100008.nii"
    )
    nifti(tree / "136_S_0300" / "MPRAGE" / "2019-03-01_10_00_00.0" / "I100009" / "ADNI_136_S_0300_MR_MPRAGE_I100009.nii")
    # an older download of I100004, its folder named by series ID (S...): a duplicate image
    nifti(
        tree
        / "002_S_0413"
        / "MPRAGE"
        / "2018-01-10_09_00_00.0"
        / "S200004"
        / "ADNI_002_S_0413_MR_MPRAGE_br_raw_20180110_S200004_I100004.nii"
    )
    collection_csv(root / "ADNI_collection.csv", COLLECTION)
    ADNIMERGE.to_csv(root / "ADNIMERGE.csv", index=False)
    return root
