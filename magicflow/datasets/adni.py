"""ADNI3/4 adapter: an IDA download (``ADNI/<PTID>/<description>/<date>/<image id>/``, DICOM or
NIfTI) with its collection CSV, and the diagnosis from ADNIMERGE (column DX: CN, MCI,
Dementia) or DXSUM (column DIAGNOSIS: 1, 2, 3) at the visit nearest the scan date.

A scan with no diagnosed visit within the window is excluded: the diagnosis of a visit years
away would be a label the scan does not support. Tables are matched on RID, which is the
number after ``_S_`` in the PTID (941_S_1202 -> 1202)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from magicflow.datasets.clock import parse_date
from magicflow.datasets.ida import MAX_INTERPOLATED_SLICES, SeriesFilter, read_ida
from magicflow.datasets.manifest import Exclusion, ImageRow
from magicflow.datasets.tables import read_table, relabel
from magicflow.errors import InputError

PROJECT = "ADNI"
DIAGNOSIS_LABELS = {"CN": "CN", "MCI": "MCI", "Dementia": "AD", "1": "CN", "2": "MCI", "3": "AD"}
DIAGNOSIS_COLUMNS = ("DX", "DIAGNOSIS")  # ADNIMERGE, DXSUM (ADNI3/4)


def rid(ptid: str) -> int | None:
    match = re.fullmatch(r"\d+_S_(\d+)", ptid.strip())
    return int(match.group(1)) if match else None


def read_diagnoses(path: Path, labels: dict[str, str]) -> dict[int, list[tuple[date, str]]]:
    """Diagnosed visits per RID, by exam date; visits without a diagnosis are left out."""
    table = read_table(path, "ADNI diagnosis table")
    dx = next((c for c in DIAGNOSIS_COLUMNS if c in table.columns), None)
    if dx is None or "EXAMDATE" not in table.columns or not {"RID", "PTID"} & set(table.columns):
        raise InputError(
            f"ADNI diagnosis table {str(path)!r}: expected ADNIMERGE (RID/PTID, EXAMDATE, DX) or DXSUM "
            f"(RID/PTID, EXAMDATE, DIAGNOSIS); columns are {list(table.columns)[:20]}"
        )
    visits: dict[int, list[tuple[date, str]]] = {}
    for record in table.to_dict("records"):
        key = int(record["RID"]) if record.get("RID", "").isdigit() else rid(record.get("PTID", ""))
        when = parse_date(record["EXAMDATE"])
        value = re.sub(r"\.0$", "", record[dx])
        if key is None or when is None or value in ("", "-4", "-1"):  # ADNI codes -4/-1: missing
            continue
        visits.setdefault(key, []).append((when, relabel(value, labels)))
    return visits


def read_adni(
    root: str | Path,
    dataset: str,
    collection: str | Path,
    nifti_dir: str | Path,
    diagnosis_table: str | Path,
    visit_window_days: int = 180,
    diagnosis_labels: dict[str, str] | None = None,
    processing_level: str = "raw",
    mri_series_include: str | None = None,
    mri_series_exclude: str | None = None,
    max_interpolated_slices: int = MAX_INTERPOLATED_SLICES,
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows and exclusions for an ADNI download converted into ``nifti_dir``; table
    paths are relative to ``root`` unless absolute. ``processing_level`` picks which of a PET
    scan's raw series and ADNI's processed steps is used (raw by default: the pipeline
    coregisters frames and takes their median itself)."""
    root = Path(root)
    table_path = Path(diagnosis_table) if Path(diagnosis_table).is_absolute() else root / diagnosis_table
    visits = read_diagnoses(table_path, {**DIAGNOSIS_LABELS, **(diagnosis_labels or {})})

    def diagnose(ptid: str, _record: dict[str, str], scan: date | None) -> tuple[str | None, str]:
        if scan is None:
            return None, "no scan date (Acq Date or date folder) to match a diagnosis to"
        key = rid(ptid)
        if key is None:
            return None, f"subject {ptid!r} is not an ADNI PTID (<site>_S_<RID>)"
        if key not in visits:
            return None, f"no diagnosis for {ptid} (RID {key}) in {table_path.name}"
        gap, when, label = min((abs((when - scan).days), when, label) for when, label in visits[key])
        if gap > visit_window_days:
            return (
                None,
                f"no diagnosis within {visit_window_days} days of the scan ({scan}); the nearest visit ({when}) is {gap} days away",
            )
        return label, ""

    return read_ida(
        root,
        dataset,
        PROJECT,
        collection,
        nifti_dir,
        diagnose,
        processing_level=processing_level,
        series_filter=SeriesFilter.of(mri_series_include, mri_series_exclude),
        max_interpolated_slices=max_interpolated_slices,
    )
