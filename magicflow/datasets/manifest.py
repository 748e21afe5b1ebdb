"""The manifest every adapter writes: ``results/<dataset>/manifest.tsv`` (one row per usable
image) and ``manifest_excluded.tsv`` (one row per image left out, with the reason).

Rows are validated against ``magicflow/schemas/manifest.schema.yaml`` before anything is
written, so downstream stages can trust the columns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import yaml

from magicflow.config import SCHEMA_DIR
from magicflow.datasets.clock import parse_date
from magicflow.errors import InputError
from magicflow.io import atomic_path

SCHEMA_PATH = SCHEMA_DIR / "manifest.schema.yaml"
MISSING = "n/a"  # BIDS's spelling of a missing value
SUBJECT_ID = re.compile(r"^[A-Za-z0-9]+$")
#: what every image stem looks like: BIDS-like `_`-separated parts, the last one the modality
#: suffix. The preprocessing rules constrain their `image` wildcard with exactly this pattern and
#: pick the T1w rule or the coregistration rule by the suffix; the manifest schema holds the same.
IMAGE_STEM = r"[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*"
SUFFIXES = ("T1w", "T2w", "FLAIR", "pet")
#: default of the datasets' max_reference_gap_days setting: a PET a year from its T1w is still
#: placed by it (brain shape changes little in a year); farther ones are left out
MAX_REFERENCE_GAP_DAYS = 365


@dataclass(frozen=True)
class ImageRow:
    dataset: str
    subject: str
    session: str  # MISSING when the dataset has no sessions
    image: str  # unique stem ending in the modality: sub-01_ses-01_trc-FDG_pet (see image_stem)
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
    reference_gap_days: str = MISSING  # days between this image and its reference T1w (0 for a T1w; n/a when undated)


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


def data_problem(path: str | Path, modality: str) -> str:
    """Why an image's data cannot be registered ('' when they can): unreadable or truncated
    file, NaN/infinite, all-zero or constant voxels, or the wrong number of dimensions (3D for
    MRI, 3D or 4D for PET). Reads the whole file once, so a bad download is left out when the
    manifest is built instead of failing a registration job and blocking its dataset."""
    from magicflow.preprocess.volumes import check_values, load_nifti

    try:
        img = load_nifti(path)
        data = np.asarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        allowed = (3, 4) if modality == "pet" else (3,)
        if data.ndim not in allowed:
            raise InputError(f"{path}: {modality} has shape {data.shape} (expected {' or '.join(f'{n}D' for n in allowed)})")
        check_values(path, data)
    except InputError as error:
        return str(error).removeprefix(f"{path}: ")
    return ""


def screen_images(rows: list[ImageRow], workers: int = 2) -> tuple[list[ImageRow], list[Exclusion]]:
    """Leave out the images the rules cannot take (a file name with whitespace) or whose data are
    broken (:func:`data_problem`), each with its reason; the others go on."""
    from concurrent.futures import ThreadPoolExecutor

    def problem(row: ImageRow) -> str:
        if re.search(r"\s", Path(row.path).name):
            return "the file name has whitespace, which the workflow's rules cannot pass safely: rename the file"
        return data_problem(row.path, row.modality)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # zlib and numpy release the GIL
        problems = list(pool.map(problem, rows))
    kept = [row for row, why in zip(rows, problems) if not why]
    return kept, [exclusion_of(row, why) for row, why in zip(rows, problems) if why]


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


def image_stem(subject: str, modality: str, session: str = MISSING, tracer: str = MISSING, image_id: str = MISSING) -> str:
    """The stem every adapter writes, ``sub-<id>[_ses-<s>][_trc-<tracer>][_img-<id>]_<modality>``:
    what the preprocessing rules take (see :data:`IMAGE_STEM`)."""
    if modality not in SUFFIXES:
        raise InputError(f"modality {modality!r}: expected one of {', '.join(SUFFIXES)}")
    given = [
        (key, value)
        for key, value in (("sub", subject), ("ses", session), ("trc", tracer), ("img", image_id))
        if value not in ("", MISSING)
    ]
    return file_stem(*(f"{key}-{value}" for key, value in given), modality)


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
        first = kept.get(row.image)
        if first is None:
            kept[row.image] = row
        elif Path(first.path).name == Path(row.path).name:
            gone.append(exclusion_of(row, f"duplicate image ID {row.image} (kept {first.path}): the same image twice"))
        else:
            gone.append(
                exclusion_of(
                    row,
                    f"duplicate image ID {row.image} (kept {first.path}): a second {row.modality} "
                    f"of subject {row.subject}{'' if row.session == MISSING else ' session ' + row.session}, not merged",
                )
            )
    return list(kept.values()), gone


def session_date(session: str) -> date | None:
    """The date a session label names (``20170510``, ``2017-05-10`` or ``ses-20170510``), else None."""
    return parse_date(session.removeprefix("ses-"))


def assign_references(rows: list[ImageRow], max_gap_days: int | None = None) -> tuple[list[ImageRow], list[Exclusion]]:
    """Give every non-T1w image the T1w of the same subject to coregister to: the same session
    when there is one, else the nearest dated session (sessions that are dates are compared as
    dates, others by label order). ``reference_gap_days`` records the distance in days (n/a
    when a session is undated). Images of subjects with no T1w, or whose nearest T1w lies more
    than ``max_gap_days`` away, are excluded with that reason."""
    t1: dict[str, list[ImageRow]] = {}
    for row in rows:
        if row.modality == "T1w":
            t1.setdefault(row.subject, []).append(row)
    kept, excluded = [], []
    for row in rows:
        if row.modality == "T1w":
            kept.append(_replace(row, reference=row.image, reference_gap_days="0"))
            continue
        candidates = sorted(t1.get(row.subject, []), key=lambda r: (_session_distance(r.session, row.session), r.image))
        if not candidates:
            excluded.append(exclusion_of(row, f"no T1w for subject {row.subject}: {row.modality} cannot be registered to MNI"))
            continue
        best = candidates[0]
        gap = _gap_days(best.session, row.session)
        if gap is not None and max_gap_days is not None and gap > max_gap_days:
            excluded.append(
                exclusion_of(
                    row,
                    f"nearest T1w of subject {row.subject} ({best.image}) is {gap} days away, "
                    f"more than max_reference_gap_days ({max_gap_days})",
                )
            )
            continue
        kept.append(_replace(row, reference=best.image, reference_gap_days=MISSING if gap is None else str(gap)))
    return kept, excluded


def _gap_days(a: str, b: str) -> int | None:
    if a == b:
        return 0
    da, db = session_date(a), session_date(b)
    return abs((da - db).days) if da and db else None


def _session_distance(a: str, b: str) -> tuple[int, float]:
    """Sort key: the same session, then dated sessions by days apart, then labels by the
    difference of their last numbers (ses-M012 vs ses-M000), then anything else."""
    if a == b:
        return (0, 0.0)
    gap = _gap_days(a, b)
    if gap is not None:
        return (1, float(gap))
    na, nb = re.findall(r"\d+", a), re.findall(r"\d+", b)
    return (2, float(abs(int(na[-1]) - int(nb[-1])))) if na and nb else (3, 0.0)


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
            raise InputError(
                f"{source}: manifest row for {record['path']}: column '{'.'.join(map(str, error.absolute_path))}': {error.message}"
            )
    # one line per reason: library messages may hold newlines, which logs and reports would break on
    gone = pd.DataFrame(
        [{**asdict(e), "reason": " ".join(e.reason.split())} for e in excluded], columns=EXCLUDED_COLUMNS
    ).sort_values(["subject", "path"])
    with atomic_path(manifest) as tmp_manifest, atomic_path(excluded_path) as tmp_excluded:
        table.to_csv(tmp_manifest, sep="\t", index=False)
        gone.to_csv(tmp_excluded, sep="\t", index=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest with every column as text (IDs like 001 must stay 001)."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
