"""BIDS adapter: any BIDS dataset (the demo cohort is one) -> manifest rows.

Reads ``sub-*/[ses-*/]anat/*_{T1w,T2w,FLAIR}.nii[.gz]`` and ``sub-*/[ses-*/]pet/*_pet.nii[.gz]``
with their JSON sidecars (same stem, or inherited from a higher level as BIDS allows) and
the labels in ``participants.tsv``. Only headers are read here: a file whose data are broken
is caught by the stage that reads the data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import pandas as pd

from magicflow.datasets.manifest import MISSING, Exclusion, ImageRow, check_subject_ids, volume_problem
from magicflow.datasets.tracers import tracer_family
from magicflow.errors import InputError

ANAT_SUFFIXES = ("T1w", "T2w", "FLAIR")
LABEL_COLUMNS = ("diagnosis", "age", "sex")


def _entities(name: str) -> dict[str, str]:
    stem = re.sub(r"\.nii(\.gz)?$", "", name)
    parts = stem.split("_")
    out = {"suffix": parts[-1]}
    for part in parts[:-1]:
        key, _, value = part.partition("-")
        out[key] = value
    return out


def _sidecar(image: Path, root: Path) -> Path | None:
    """The JSON sidecar of an image: same stem, else the closest inherited one up to the root."""
    stem = re.sub(r"\.nii(\.gz)?$", "", image.name)
    own = image.with_name(stem + ".json")
    if own.exists():
        return own
    entities = _entities(image.name)
    folder = image.parent
    while True:
        for candidate in sorted(folder.glob(f"*{entities['suffix']}.json")):
            keys = _entities(candidate.name.replace(".json", ""))
            if all(entities.get(k) == v for k, v in keys.items() if k != "suffix"):
                return candidate
        if folder == root:
            return None
        folder = folder.parent


def _read_participants(root: Path, columns: dict[str, str]) -> dict[str, dict[str, str]]:
    path = root / "participants.tsv"
    if not path.exists():
        return {}
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in table:
        raise InputError(f"{path}: no participant_id column")
    ids = [p.removeprefix("sub-") for p in table["participant_id"]]
    check_subject_ids(ids, str(path))
    labels = {}
    for subject, (_, record) in zip(ids, table.iterrows()):
        labels[subject] = {c: (record.get(columns.get(c, c), "") or MISSING) for c in LABEL_COLUMNS}
    return labels


def scanner_name(sidecar: dict) -> str:
    """'Manufacturer Model' from a sidecar. dcm2niix writes spaces in the model as '_'
    ('Prisma_fit'); they become spaces again, and 'Prisma' and 'Prisma fit' stay apart."""
    parts = [str(sidecar.get(k, "")).replace("_", " ").strip() for k in ("Manufacturer", "ManufacturersModelName")]
    name = " ".join(p for p in parts if p)
    return re.sub(r"\s+", " ", name) or MISSING


def read_bids(
    root: str | Path, dataset: str, participant_columns: dict[str, str] | None = None
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows (references not yet assigned) and exclusions for a BIDS dataset."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset {dataset!r}: BIDS root {str(root)!r} does not exist")
    subject_dirs = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subject_dirs:
        raise InputError(f"dataset {dataset!r}: no sub-* folders under {root}; is this a BIDS dataset?")
    check_subject_ids([p.name.removeprefix("sub-") for p in subject_dirs], f"BIDS dataset {root}")
    labels = _read_participants(root, participant_columns or {})

    rows: list[ImageRow] = []
    excluded: list[Exclusion] = []
    for subject_dir in subject_dirs:
        subject = subject_dir.name.removeprefix("sub-")
        images = sorted(subject_dir.glob("anat/*.nii*")) + sorted(subject_dir.glob("ses-*/anat/*.nii*"))
        images += sorted(subject_dir.glob("pet/*.nii*")) + sorted(subject_dir.glob("ses-*/pet/*.nii*"))
        for image in images:
            row, reason = _image_row(image, root, dataset, subject, labels.get(subject, {}))
            if row is not None:
                rows.append(row)
            else:
                entities = _entities(image.name)
                excluded.append(Exclusion(dataset, subject, entities.get("ses", MISSING), str(image), reason))
    return rows, excluded


def _image_row(image: Path, root: Path, dataset: str, subject: str, labels: dict[str, str]) -> tuple[ImageRow | None, str]:
    entities = _entities(image.name)
    suffix = entities["suffix"]
    if suffix not in ANAT_SUFFIXES and suffix != "pet":
        return None, f"modality {suffix} is not used by the pipeline (T1w, T2w, FLAIR, pet)"
    try:
        shape = nib.load(image).shape
    except Exception as error:  # nibabel raises several types for broken headers
        return None, f"unreadable NIfTI header: {error}"
    sidecar_path = _sidecar(image, root)
    sidecar: dict = {}
    if sidecar_path is not None:
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            return None, f"unreadable sidecar {sidecar_path}: {error}"
    tracer, tracer_name = MISSING, MISSING
    if suffix == "pet":
        if sidecar_path is None:
            return None, "PET without a JSON sidecar: tracer and frame timing unknown"
        # the trc- label first (Clinica writes 18FAV45, 11CPIB), then the sidecar's TracerName
        names = list(dict.fromkeys(n for n in (entities.get("trc", ""), str(sidecar.get("TracerName") or "").strip()) if n))
        tracer_name = next((n for n in names if tracer_family(n)), "")
        if not tracer_name:
            return None, f"unknown PET tracer {' or '.join(repr(n) for n in names) or repr('(none given)')}"
        tracer = tracer_family(tracer_name)
        if len(shape) not in (3, 4):
            return None, f"PET has {len(shape)} dimensions (expected 3 or 4)"
    elif problem := volume_problem(image, suffix):
        return None, problem
    return ImageRow(
        dataset=dataset,
        subject=subject,
        session=entities.get("ses", MISSING),
        image=re.sub(r"\.nii(\.gz)?$", "", image.name),
        modality=suffix,
        tracer=tracer,
        tracer_name=tracer_name,
        scanner=scanner_name(sidecar),
        diagnosis=labels.get("diagnosis", MISSING),
        age=labels.get("age", MISSING),
        sex=labels.get("sex", MISSING),
        reference=MISSING,
        path=str(image),
        sidecar=str(sidecar_path) if sidecar_path else MISSING,
    ), ""
