"""Downloads from the LONI Image and Data Archive (IDA), shared by the PPMI and ADNI adapters.

IDA unpacks a collection as ``<PROJECT>/<subject>/<series description>/<date>_<time>/<image id>/``
with DICOM files or NIfTI files inside, and exports the collection as a CSV with columns
Image Data ID, Subject, Group, Sex, Age, Visit, Modality, Description, Type, Acq Date, ...
Reading is two steps: :func:`convert_download` turns every image folder into one NIfTI +
sidecar (cached, its own Snakemake rule) and records the outcome in ``conversion.tsv``;
:func:`read_ida` then builds the manifest rows from that table and the collection CSV."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import nibabel as nib
import pandas as pd

from magicflow.datasets.bids import scanner_name
from magicflow.datasets.dicom import NIFTI, assemble_frames, convert_series
from magicflow.datasets.manifest import (
    MISSING, Exclusion, ImageRow, assign_references, check_subject_ids, drop_duplicate_images, file_stem,
    format_age, subject_id,
)
from magicflow.datasets.tables import column, read_table
from magicflow.datasets.tracers import normalise_tracer, tracer_family
from magicflow.errors import InputError
from magicflow.io import atomic_dir, atomic_path

COLLECTION_COLUMNS = ("Image Data ID", "Subject", "Group", "Sex", "Age", "Modality", "Description", "Acq Date")
CONVERSION_COLUMNS = ["key", "image_id", "folder", "format", "status", "nifti", "sidecar", "reason"]
#: series description -> modality; checked in this order (a 'T2 FLAIR' is FLAIR, a 'T2 STAR' is T2*)
NOT_STRUCTURAL = re.compile(r"(?i)(localizer|scout|calibration|field.?map|T2.?STAR|T2\*|\bSWI\b|DTI|DWI|fMRI|BOLD|\bASL\b|PERFUSION|HighResHippo)")
MRI_MODALITIES = (
    ("FLAIR", re.compile(r"(?i)FLAIR")),
    ("T2w", re.compile(r"(?i)(T2|TSE|SPACE)")),
    ("T1w", re.compile(r"(?i)(MP-?RAGE|MP_RAGE|IR-?F?SPGR|T1)")),
)


@dataclass(frozen=True)
class ImageFolder:
    """One downloaded image: the folder IDA put it in, and what the path says about it."""

    subject: str  # as IDA spells it: 941_S_1202, 3000
    description: str
    date: str  # YYYYMMDD from the '<date>_<time>' folder, MISSING if unparsable
    image_id: str  # I<digits>
    path: Path
    key: str  # the relative path as one file-name-safe stem: unique per folder


def project_tree(root: Path, project: str) -> Path:
    """The folder holding the subject folders: ``root/<PROJECT>`` or ``root`` itself."""
    return root / project if (root / project).is_dir() else root


def image_folders(root: Path, project: str) -> list[ImageFolder]:
    tree = project_tree(root, project)
    folders = []
    for path in sorted(p for p in tree.glob("*/*/*/*") if p.is_dir()):
        subject, description, when, image = path.relative_to(tree).parts
        match = re.match(r"^(\d{4})-(\d{2})-(\d{2})", when)
        image_id = image if re.fullmatch(r"I\d+", image) else _image_id_from_files(path) or image
        folders.append(ImageFolder(
            subject=subject, description=description, date="".join(match.groups()) if match else MISSING,
            image_id=image_id, path=path, key=file_stem(*path.relative_to(tree).parts),
        ))
    return folders


def _image_id_from_files(folder: Path) -> str | None:
    """Older downloads name the last folder by series (S<digits>); the files still end in _I<digits>."""
    for name in sorted(p.name for p in folder.iterdir()):
        match = re.search(r"_(I\d+)\.(dcm|nii)", name)
        if match:
            return match.group(1)
    return None


# ---------------------------------------------------------------- conversion (cached)

def convert_download(root: str | Path, project: str, nifti_dir: str | Path) -> Path:
    """Give every image folder one NIfTI + sidecar and write ``nifti_dir/conversion.tsv``.

    DICOM folders are converted by dcm2niix into ``nifti_dir/<key>/``; NIfTI folders with one
    file are used where they lie; several 3D files (one per PET frame) are stacked into 4D.
    A folder already converted in an earlier run is reused, never converted again."""
    root, nifti_dir = Path(root), Path(nifti_dir)
    if not root.is_dir():
        raise InputError(f"{project} root {str(root)!r} does not exist")
    records = []
    for folder in image_folders(root, project):
        record = {"key": folder.key, "image_id": folder.image_id, "folder": str(folder.path), "format": MISSING,
                  "status": "ok", "nifti": MISSING, "sidecar": MISSING, "reason": ""}
        files = sorted(p for p in folder.path.iterdir() if p.is_file() and not p.name.startswith("."))
        niftis = [p for p in files if NIFTI.search(p.name)]
        record["format"] = "nifti" if niftis else "dicom"
        try:
            if not files:
                raise InputError("empty image folder")
            if len(niftis) == 1:
                own = niftis[0].with_name(NIFTI.sub(".json", niftis[0].name))
                image, sidecar = niftis[0], own if own.exists() else None
            else:
                image, sidecar = _cached(folder, nifti_dir / folder.key, niftis)
            record.update(nifti=str(image), sidecar=str(sidecar) if sidecar else MISSING)
        except InputError as error:
            record.update(status="failed", reason=str(error))
        records.append(record)
    table = pd.DataFrame(records, columns=CONVERSION_COLUMNS)
    out = nifti_dir / "conversion.tsv"
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return out


def _cached(folder: ImageFolder, out: Path, niftis: list[Path]) -> tuple[Path, Path]:
    image, sidecar = out / f"{folder.image_id}.nii.gz", out / f"{folder.image_id}.json"
    if image.exists() and sidecar.exists():  # written atomically: present means complete
        return image, sidecar
    with atomic_dir(out) as tmp:
        if niftis:
            assemble_frames(niftis, tmp / image.name, tmp / sidecar.name)
        else:
            convert_series(folder.path, tmp, folder.image_id)
    return image, sidecar


def read_conversions(nifti_dir: Path) -> dict[str, dict[str, str]]:
    path = nifti_dir / "conversion.tsv"
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist: convert the download first (magicflow manifest --convert-only)")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return {record["key"]: record for record in table.to_dict("records")}


# ---------------------------------------------------------------- collection CSV

def image_data_id(value: str) -> str:
    """'I123456', '123456' and '123456.0' (spreadsheet round trips) are one image ID."""
    digits = re.sub(r"\.0$", "", value.strip()).lstrip("Ii")
    return f"I{digits}" if digits.isdigit() else value.strip()


def read_collection(path: str | Path) -> dict[str, dict[str, str]]:
    """Collection CSV rows by image ID, with the columns the adapters use under their IDA names."""
    table = read_table(path, "IDA collection CSV")
    names = {c: column(table, c, path, "IDA collection CSV") for c in COLLECTION_COLUMNS}
    out: dict[str, dict[str, str]] = {}
    for record in table.to_dict("records"):
        row = {c: record[names[c]] for c in COLLECTION_COLUMNS}
        image = image_data_id(row["Image Data ID"])
        if image in out and out[image] != row:
            raise InputError(f"IDA collection CSV {str(path)!r}: image ID {image} listed twice with different values")
        out[image] = row
    return out


def parse_date(value: str) -> date | None:
    """IDA writes M/D/YYYY; ADNIMERGE and DXSUM write YYYY-MM-DD; folders give YYYYMMDD."""
    for fmt in ("%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%m/%d/%y", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value.strip(), fmt).date()
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------- modality and tracer

def tracer_in(text: str) -> str | None:
    """A known tracer named in free text ('ADNI3-AV-1451 6x5min', 'FBB Brain', 'MK-6240'): each
    word and each pair of adjacent words is looked up."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    for i, word in enumerate(words):
        for candidate in (word + words[i + 1] if i + 1 < len(words) else None, word):
            if candidate and tracer_family(candidate):
                return normalise_tracer(candidate)
    return None


def classify(texts: list[str], sidecar: dict, collection_modality: str) -> tuple[str, str] | str:
    """(modality, tracer name) from the series descriptions and headers, or the reason the
    image is not used. PET when the collection or the header (Modality PT) says so."""
    header_modality = str(sidecar.get("Modality", "")).upper()
    kind = collection_modality.strip().upper()
    if kind == "PET" or header_modality == "PT":
        for text in texts + [str(sidecar.get("TracerName", "")), str(sidecar.get("Radiopharmaceutical", ""))]:
            tracer = tracer_in(text)
            if tracer:
                return "pet", tracer
        return f"PET tracer not recognised in {' / '.join(t for t in texts if t)!r} or the header"
    if kind not in ("MRI", "MR", "") and header_modality not in ("MR",):
        return f"modality {collection_modality} is not used by the pipeline (MRI, PET)"
    for text in texts:
        if NOT_STRUCTURAL.search(text):
            return f"series {text!r} is not a T1, T2 or FLAIR structural image"
    for text in texts:
        for modality, pattern in MRI_MODALITIES:
            if pattern.search(text):
                return modality, MISSING
    return f"series {' / '.join(t for t in texts if t)!r} is not recognised as T1, T2 or FLAIR"


# ---------------------------------------------------------------- manifest rows

#: (subject as in the download, collection row, scan date) -> (diagnosis, "") or (None, reason)
Diagnose = Callable[[str, dict[str, str], date | None], tuple[str | None, str]]


def read_ida(
    root: str | Path,
    dataset: str,
    project: str,
    collection: str | Path,
    nifti_dir: str | Path,
    diagnose: Diagnose,
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows and exclusions for an IDA download, after :func:`convert_download`."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset {dataset!r}: {project} root {str(root)!r} does not exist")
    folders = image_folders(root, project)
    if not folders:
        raise InputError(f"dataset {dataset!r}: no {project}/<subject>/<description>/<date>/<image id>/ folders under {root}")
    meta = read_collection(collection if Path(collection).is_absolute() else root / collection)
    conversions = read_conversions(Path(nifti_dir))

    rows: list[ImageRow] = []
    excluded: list[Exclusion] = []
    for folder in folders:
        subject = subject_id(folder.subject)
        row_or_reason = _image_row(folder, subject, dataset, meta.get(folder.image_id), conversions.get(folder.key), diagnose)
        if isinstance(row_or_reason, str):
            excluded.append(Exclusion(dataset, subject, folder.date, str(folder.path), row_or_reason))
        else:
            rows.append(row_or_reason)
    rows, duplicates = drop_duplicate_images(rows)
    check_subject_ids(sorted({r.subject for r in rows}), f"{project} dataset {root}")
    kept, no_t1 = assign_references(rows)
    return kept, excluded + duplicates + no_t1


def _image_row(folder: ImageFolder, subject: str, dataset: str, record: dict[str, str] | None,
               conversion: dict[str, str] | None, diagnose: Diagnose) -> ImageRow | str:
    if record is None:
        return f"image ID {folder.image_id} is not in the collection CSV"
    if conversion is None:
        return "not converted yet: conversion.tsv predates this folder (rerun the conversion)"
    if conversion["status"] != "ok":
        return conversion["reason"]
    if subject_id(record["Subject"]) != subject:
        return f"collection CSV gives subject {record['Subject']!r} for {folder.image_id}, the folder says {folder.subject!r}"
    sidecar: dict = {}
    if conversion["sidecar"] != MISSING:
        try:
            sidecar = json.loads(Path(conversion["sidecar"]).read_text())
        except (OSError, json.JSONDecodeError) as error:
            return f"unreadable sidecar {conversion['sidecar']}: {error}"
    texts = [record["Description"], folder.description.replace("_", " "), str(sidecar.get("SeriesDescription", ""))]
    kind = classify([t for t in texts if t], sidecar, record["Modality"])
    if isinstance(kind, str):
        return kind
    modality, tracer_name = kind
    try:
        shape = nib.load(conversion["nifti"]).shape
    except Exception as error:  # nibabel raises several types for broken headers
        return f"unreadable NIfTI header: {error}"
    if modality != "pet" and len(shape) == 4 and shape[3] > 1:
        return f"{modality} is 4D with {shape[3]} volumes (expected one 3D volume)"
    scan_date = parse_date(record["Acq Date"]) or parse_date(folder.date)
    diagnosis, reason = diagnose(folder.subject, record, scan_date)
    if diagnosis is None:
        return reason
    session = scan_date.strftime("%Y%m%d") if scan_date else MISSING
    suffix = "pet" if modality == "pet" else modality
    return ImageRow(
        dataset=dataset, subject=subject, session=session,
        image=file_stem(f"sub-{subject}", f"ses-{session}" if scan_date else "", f"trc-{tracer_name}" if modality == "pet" else "",
                        f"img-{folder.image_id}", suffix),
        modality=modality, tracer=tracer_family(tracer_name) if modality == "pet" else MISSING,
        tracer_name=tracer_name, scanner=scanner_name(sidecar), diagnosis=diagnosis,
        age=format_age(record["Age"]), sex=record["Sex"] or MISSING,
        reference=MISSING, path=conversion["nifti"], sidecar=conversion["sidecar"],
    )
