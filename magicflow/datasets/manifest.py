"""The manifest every adapter writes: ``results/<dataset>/manifest.tsv`` (one row per usable
image) and ``manifest_excluded.tsv`` (one row per image left out, with the reason).

Rows are validated against ``workflow/schemas/manifest.schema.yaml`` before anything is
written, so downstream stages can trust the columns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from magicflow.config import REPO_ROOT
from magicflow.errors import InputError
from magicflow.io import atomic_path

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "manifest.schema.yaml"
MISSING = "n/a"  # BIDS's spelling of a missing value
SUBJECT_ID = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class ImageRow:
    dataset: str
    subject: str
    session: str  # MISSING when the dataset has no sessions
    image: str  # unique, file-name-safe stem, e.g. sub-01_ses-01_trc-FDG_pet
    modality: str  # T1w | T2w | FLAIR | pet
    tracer: str  # fdg | amyloid | tau for PET, else MISSING
    tracer_name: str
    scanner: str  # "Manufacturer Model"
    diagnosis: str
    age: str
    sex: str
    reference: str  # image stem of the T1w this image is coregistered to (itself for a T1w)
    path: str
    sidecar: str


@dataclass(frozen=True)
class Exclusion:
    dataset: str
    subject: str
    session: str
    path: str
    reason: str


MANIFEST_COLUMNS = [f.name for f in fields(ImageRow)]
EXCLUDED_COLUMNS = [f.name for f in fields(Exclusion)]


def volume_problem(path: str | Path, what: str) -> str:
    """Why a NIfTI cannot be used as one 3D anatomical volume ('' when it can). Header only."""
    import nibabel as nib

    try:
        shape = nib.load(path).shape
    except Exception as error:  # nibabel raises several types for broken headers
        return f"unreadable NIfTI header: {error}"
    if len(shape) == 4 and shape[3] > 1:
        return f"{what} is 4D with {shape[3]} volumes (expected one 3D volume)"
    if len(shape) not in (3, 4):
        return f"{what} has shape {shape} (expected one 3D volume)"
    return ""


def check_subject_ids(subjects: Iterable[str], source: str) -> None:
    """Subject IDs reach file names and shell commands: letters and digits only, no duplicates
    (also none that differ only by case, which collide on case-insensitive file systems)."""
    seen: dict[str, str] = {}
    for subject in subjects:
        if not SUBJECT_ID.match(subject):
            raise InputError(
                f"{source}: subject ID {subject!r} has characters other than letters and digits; "
                "IDs end up in file names and shell commands, so rename it"
            )
        key = subject.lower()
        if key in seen:
            what = "appears twice" if seen[key] == subject else f"collides with {seen[key]!r} (IDs differ only by case)"
            raise InputError(f"{source}: duplicate subject ID {subject!r}: it {what}")
        seen[key] = subject


def subject_id(raw: str) -> str:
    """A source's subject ID as letters and digits only, by dropping every other character
    (ADNI 941_S_1202 -> 941S1202, PPMI 3000 -> 3000). Deterministic, so reruns agree; a
    collision this creates is caught by :func:`check_subject_ids`."""
    return re.sub(r"[^A-Za-z0-9]", "", str(raw).strip())


def file_stem(*parts: str) -> str:
    """An image stem from BIDS-like parts: characters other than letters, digits, '-' and '_'
    become '-' so the stem is safe in file names and shell commands."""
    return "_".join(re.sub(r"[^A-Za-z0-9-]+", "-", p).strip("-") for p in parts if p)


def format_age(value: object) -> str:
    """Age in years as text (two decimals at most), MISSING when absent or not a number."""
    try:
        age = float(str(value).strip())
    except ValueError:
        return MISSING
    if age != age or age < 0:  # NaN or negative
        return MISSING
    return f"{age:.2f}".rstrip("0").rstrip(".")


def exclusion_of(row: ImageRow, reason: str) -> Exclusion:
    """The exclusion of an image that was read but cannot be used."""
    return Exclusion(row.dataset, row.subject, row.session, row.path, reason)


def drop_duplicate_images(rows: list[ImageRow]) -> tuple[list[ImageRow], list[Exclusion]]:
    """One row per image ID: the same image downloaded or unpacked twice is kept once (a copy
    with a sidecar first, since it carries the headers; then the first by path) and every
    other copy is excluded, naming the copy that was kept."""
    kept: dict[str, ImageRow] = {}
    gone = []
    for row in sorted(rows, key=lambda r: (r.sidecar == MISSING, r.path)):
        if row.image in kept:
            gone.append(exclusion_of(row, f"duplicate image ID {row.image} (kept {kept[row.image].path})"))
        else:
            kept[row.image] = row
    return list(kept.values()), gone


def assign_references(rows: list[ImageRow]) -> tuple[list[ImageRow], list[Exclusion]]:
    """Give every non-T1w image the T1w of the same subject to coregister to: the same session
    when there is one, else the nearest session (by label order). Images of subjects with no
    T1w at all are excluded."""
    t1 = {}
    for row in rows:
        if row.modality == "T1w":
            t1.setdefault(row.subject, []).append(row)
    kept, excluded = [], []
    for row in rows:
        if row.modality == "T1w":
            kept.append(_replace(row, reference=row.image))
            continue
        candidates = sorted(t1.get(row.subject, []), key=lambda r: (r.session != row.session, _session_distance(r.session, row.session), r.image))
        if not candidates:
            excluded.append(Exclusion(row.dataset, row.subject, row.session, row.path, f"no T1w for subject {row.subject}: {row.modality} cannot be registered to MNI"))
        else:
            kept.append(_replace(row, reference=candidates[0].image))
    return kept, excluded


def _session_distance(a: str, b: str) -> float:
    da, db = re.findall(r"\d+", a), re.findall(r"\d+", b)
    return abs(int(da[-1]) - int(db[-1])) if da and db else 0.0


def _replace(row: ImageRow, **changes: str) -> ImageRow:
    return ImageRow(**{**asdict(row), **changes})


def write_manifest(rows: list[ImageRow], excluded: list[Exclusion], manifest: Path, excluded_path: Path, source: str) -> None:
    """Validate and write both tables atomically. No T1w at all is an error, not an empty manifest."""
    if not any(r.modality == "T1w" for r in rows):
        raise InputError(f"{source}: no usable T1w image found; every other modality is registered through a T1w")
    table = pd.DataFrame([asdict(r) for r in rows], columns=MANIFEST_COLUMNS).sort_values(["subject", "session", "image"])
    if table["image"].duplicated().any():
        dup = table.loc[table["image"].duplicated(), "image"].iloc[0]
        raise InputError(f"{source}: image {dup!r} listed twice")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for record in table.to_dict("records"):
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            raise InputError(f"{source}: manifest row for {record['path']}: column '{'.'.join(map(str, error.absolute_path))}': {error.message}")
    gone = pd.DataFrame([asdict(e) for e in excluded], columns=EXCLUDED_COLUMNS).sort_values(["subject", "path"])
    with atomic_path(manifest) as tmp_manifest, atomic_path(excluded_path) as tmp_excluded:
        table.to_csv(tmp_manifest, sep="\t", index=False)
        gone.to_csv(tmp_excluded, sep="\t", index=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest with every column as text (IDs like 001 must stay 001)."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
