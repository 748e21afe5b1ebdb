"""PPMI adapter: an IDA download (``PPMI/<subject>/<description>/<date>/<image id>/``, DICOM or
NIfTI) with its collection CSV. The diagnosis is the collection's Group (PD, Control,
Prodromal, SWEDD, ...), relabelled through config if wanted; scanner from the DICOM headers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from magicflow.datasets.ida import MAX_INTERPOLATED_SLICES, SeriesFilter, read_ida
from magicflow.datasets.manifest import Exclusion, ImageRow
from magicflow.datasets.tables import relabel

PROJECT = "PPMI"


def read_ppmi(
    root: str | Path,
    dataset: str,
    collection: str | Path,
    nifti_dir: str | Path,
    diagnosis_labels: dict[str, str] | None = None,
    mri_series_include: str | None = None,
    mri_series_exclude: str | None = None,
    max_interpolated_slices: int = MAX_INTERPOLATED_SLICES,
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows and exclusions for a PPMI download converted into ``nifti_dir``; MRI series
    whose description matches ``mri_series_exclude`` or misses ``mri_series_include`` are left out."""
    labels = diagnosis_labels or {}

    def diagnose(_subject: str, record: dict[str, str], _scan: date | None) -> tuple[str | None, str]:
        group = record["Group"]
        return (relabel(group, labels), "") if group else (None, "no Group for this image in the collection CSV")

    return read_ida(
        root,
        dataset,
        PROJECT,
        collection,
        nifti_dir,
        diagnose,
        series_filter=SeriesFilter.of(mri_series_include, mri_series_exclude),
        max_interpolated_slices=max_interpolated_slices,
    )
