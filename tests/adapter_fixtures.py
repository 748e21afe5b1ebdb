"""Small download trees with each source's real file naming and table columns, shared by the
adapter tests: tiny NIfTI volumes, and DICOM series written with pydicom for dcm2niix."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

COLLECTION_COLUMNS = ["Image Data ID", "Subject", "Group", "Sex", "Age", "Visit", "Modality", "Description", "Type", "Acq Date", "Format", "Downloaded"]


def nifti(path: Path, shape=(6, 6, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), np.eye(4)), path)
    return path


def dicom_series(folder: Path, modality: str = "MR", description: str = "Accelerated Sagittal MPRAGE",
                 model: str = "Prisma_fit", frames: int = 1, slices: int = 3, tracer: str | None = None) -> Path:
    """A DICOM series as a scanner writes it (one file per slice; a dynamic PET repeats the
    slice positions once per frame, with frame timing), for the real dcm2niix to convert."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    sop_class = "1.2.840.10008.5.1.4.1.1.128" if modality == "PT" else "1.2.840.10008.5.1.4.1.1.4"
    number = 0
    for frame in range(frames):
        for s in range(slices):
            number += 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = modality, "SIEMENS", model
            ds.SeriesDescription = ds.ProtocolName = description
            ds.PatientID = "anonymous"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
            ds.SeriesNumber, ds.InstanceNumber = 3, number
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20170510"
            ds.AcquisitionTime = f"10{frame * 5:02d}00.000000"
            ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.0 * s], [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing, ds.SliceThickness = [2.0, 2.0], 2.0
            ds.Rows = ds.Columns = 6
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleSlope, ds.RescaleIntercept = 1, 0
            if modality == "PT":
                ds.NumberOfSlices, ds.NumberOfTimeSlices, ds.ImageIndex = slices, frames, number
                ds.ActualFrameDuration, ds.FrameReferenceTime = 300000, frame * 300000.0 + 150000
                ds.Units, ds.SeriesType = "BQML", ["DYNAMIC", "IMAGE"]
                drug = Dataset()
                drug.Radiopharmaceutical = tracer or ""
                ds.RadiopharmaceuticalInformationSequence = [drug]
            else:
                ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 3, 3, 2300
            ds.PixelData = (np.arange(36, dtype=np.uint16).reshape(6, 6) + number).tobytes()
            ds.save_as(folder / f"ADNI_{number:04d}.dcm", enforce_file_format=True)
    return folder


def collection_csv(path: Path, rows: list[dict]) -> Path:
    """An IDA collection CSV; rows give Image Data ID, Subject, Group, Modality, Description, Acq Date."""
    defaults = {"Sex": "F", "Age": "71", "Visit": "sc", "Type": "Original", "Format": "DCM", "Downloaded": "6/01/2024"}
    pd.DataFrame([{**defaults, **r} for r in rows], columns=COLLECTION_COLUMNS).to_csv(path, index=False)
    return path
