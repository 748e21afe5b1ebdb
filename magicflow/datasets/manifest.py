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
from magicflow.datasets.tables import MISSING
from magicflow.errors import InputError
from magicflow.io import atomic_path

SCHEMA_PATH = SCHEMA_DIR / "manifest.schema.yaml"
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


#: fewest voxels along a spatial axis: a one- or two-slice file is a localiser or a damaged
#: export, never a brain volume (the test fixtures' smallest PET has 3 slices)
MIN_SIDE_VOXELS = 3
#: largest image the manifest accepts: a header claiming more is damaged (a 1 mm brain is ~30 MB as float32)
MAX_IMAGE_BYTES = 8 * 1024**3
#: voxel edges below this are not a real acquisition (a 0 or 1e-6 mm pixdim from a broken export)
MIN_VOXEL_MM = 0.1
#: default largest voxel edge per modality (the datasets' max_voxel_mm setting, same defaults in
#: the config schema): thicker slices cannot be resampled to the 1 mm template without inventing
#: detail, e.g. a 2D T1 with 4.8 mm slices. PET is coarser by nature (ADNI1's GE Advance: 4.25 mm)
MAX_VOXEL_MM = {"T1w": 2.0, "T2w": 6.0, "FLAIR": 6.0, "pet": 5.0}


def header_problem(path: str | Path, modality: str, max_voxel_mm: dict[str, float] | None = None) -> str:
    """Why an image's header rules it out ('' when it does not): no NIfTI, complex or RGB
    voxels, too few voxels on a side, an implausible size, a singular or non-finite affine,
    zero or absurd voxel sizes, slices thicker than ``max_voxel_mm[modality]``. Reads the
    header only, so it runs before the data are loaded and a header claiming terabytes is
    reported as such instead of as a MemoryError."""
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as error:  # nibabel raises several types for broken headers
        return f"unreadable NIfTI header ({type(error).__name__}: {error})"
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return f"not a NIfTI image ({type(img).__name__}): convert it to NIfTI"
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None:
        return f"RGB or other multi-channel voxels (data type {dtype}): the pipeline needs one grey value per voxel"
    if dtype.kind == "c":
        return f"complex-valued voxels ({dtype}): the imaginary part would be dropped; export the magnitude image"
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        return f"{modality} has shape {shape} (expected one 3D volume)"
    if min(shape[:3]) < MIN_SIDE_VOXELS:
        return f"{modality} has shape {shape}: fewer than {MIN_SIDE_VOXELS} voxels on a side is not a brain volume"
    size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if size > MAX_IMAGE_BYTES:
        return f"header claims dimensions {shape} ({size / 1024**3:.0f} GiB of voxels): a damaged header"
    affine = img.affine
    if not np.all(np.isfinite(affine)):
        return "the affine (sform/qform) has NaN or infinite values: voxel positions unknown"
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    sizes = "x".join(f"{z:.3g}" for z in zooms)
    if zooms.min() < MIN_VOXEL_MM:
        return f"voxel size {sizes} mm: an edge under {MIN_VOXEL_MM} mm is not a real acquisition (broken header)"
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(zooms)):
        return "the affine (sform/qform) is singular (its axes are parallel): voxel positions unknown, the image cannot be registered"
    limit = (MAX_VOXEL_MM if max_voxel_mm is None else {**MAX_VOXEL_MM, **max_voxel_mm}).get(modality)
    if limit is not None and zooms.max() > limit:
        return (
            f"voxel size {sizes} mm: edges over max_voxel_mm.{modality} ({limit:g} mm) are too coarse for "
            "registration to the 1 mm template (thick slices); raise the dataset's max_voxel_mm to keep it"
        )
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


def timing_problem(row: ImageRow) -> str:
    """Why a PET's sidecar timing contradicts the image ('' when it does not): the check the
    registration job makes (:func:`magicflow.datasets.pet_timing.read_timing`), made here so that a
    frame count or a wrongly typed FrameDuration is an exclusion, not a failed job hours later."""
    import warnings

    import nibabel as nib

    from magicflow.datasets.pet_timing import read_timing

    if row.modality != "pet" or row.sidecar == MISSING:
        return ""
    shape = nib.load(row.path).shape
    frames = shape[3] if len(shape) == 4 else 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_timing(row.path, frames, row.sidecar, row.tracer_name)
    except InputError as error:
        return f"PET frame timing: {error}"
    return ""


def screen_images(
    rows: list[ImageRow], workers: int = 2, max_voxel_mm: dict[str, float] | None = None
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Leave out the images the rules cannot take (a file name with whitespace), whose headers
    rule them out (:func:`header_problem`, :func:`timing_problem`) or whose data are broken
    (:func:`data_problem`), each with its reason; the others go on."""
    from concurrent.futures import ThreadPoolExecutor

    def problem(row: ImageRow) -> str:
        if re.search(r"\s", Path(row.path).name):
            return "the file name has whitespace, which the workflow's rules cannot pass safely: rename the file"
        return header_problem(row.path, row.modality, max_voxel_mm) or timing_problem(row) or data_problem(row.path, row.modality)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # zlib and numpy release the GIL
        problems = list(pool.map(problem, rows))
    kept = [row for row, why in zip(rows, problems) if not why]
    return kept, [exclusion_of(row, why) for row, why in zip(rows, problems) if why]


def subject_problems(subjects: Iterable[str]) -> dict[str, str]:
    """Per subject label, why it cannot be used (labels absent are fine): characters other than
    ASCII letters and digits (a hyphen, an accent), or a clash with another label differing only
    by case (they collide on case-insensitive file systems, so neither is kept)."""
    problems: dict[str, str] = {}
    by_key: dict[str, list[str]] = {}
    for subject in subjects:
        if not SUBJECT_ID.match(subject) or not subject.isascii():
            problems[subject] = (
                f"subject label {subject!r} has characters other than ASCII letters and digits; labels end up "
                "in file names and shell commands, so rename the subject's folder and files"
            )
        else:
            by_key.setdefault(subject.lower(), []).append(subject)
    for clash in (group for group in by_key.values() if len(set(group)) > 1):
        for subject in clash:
            others = ", ".join(repr(o) for o in sorted(set(clash) - {subject}))
            problems[subject] = f"subject label {subject!r} differs only by case from {others}: rename one (neither is kept)"
    return problems


def exclude_bad_subjects(rows: list[ImageRow]) -> tuple[list[ImageRow], list[Exclusion]]:
    """The rows of subjects :func:`subject_problems` finds fault with, as exclusions: one
    subject's label never stops its dataset."""
    problems = subject_problems(sorted({r.subject for r in rows}))
    return [r for r in rows if r.subject not in problems], [
        exclusion_of(r, problems[r.subject]) for r in rows if r.subject in problems
    ]


def scanner_key(name: str) -> str:
    """What two spellings of one scanner share: case, spaces, '_' and '-' ignored."""
    return re.sub(r"[\s_-]+", "", name).casefold()


def unify_scanners(rows: list[ImageRow]) -> list[ImageRow]:
    """One spelling per scanner across the dataset: names that differ only by case or
    separators (software versions write 'Prisma fit' and 'Prisma_Fit') take the most common
    spelling, so one scanner is one class."""
    from collections import Counter

    counts = Counter(r.scanner for r in rows)
    best: dict[str, str] = {}
    for name in sorted(counts, key=lambda n: (-counts[n], n)):
        best.setdefault(scanner_key(name), name)
    return [r if best[scanner_key(r.scanner)] == r.scanner else _replace(r, scanner=best[scanner_key(r.scanner)]) for r in rows]


def near_duplicates(values: Iterable[str], cutoff: float = 0.85) -> list[tuple[str, str]]:
    """Pairs of label values that look like one value spelled two ways (for a warning: they
    stay separate classes)."""
    import difflib

    names = sorted(set(values) - {MISSING})
    return [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if difflib.SequenceMatcher(None, scanner_key(a), scanner_key(b)).ratio() >= cutoff
    ]


def exclusion_summary(excluded: list[Exclusion]) -> list[str]:
    """One line per kind of reason with its count, most frequent first: the reasons name files,
    so they are grouped by their text up to the first file-specific part (digits and quoted
    names masked)."""
    from collections import Counter

    def kind(reason: str) -> str:
        text = re.sub(r"\b\d[\d.]*(x\d[\d.]*)+\b", "N", reason)
        text = re.sub(r"'[^']*'|\"[^\"]*\"|(?<![\w*])/\S+|\S+\.(nii|gz|json|hdr|img|tsv|csv)\b\S*", "…", text)
        return re.sub(r"\b\d+(\.\d+)?\b", "N", text)[:160]

    counts = Counter(kind(e.reason) for e in excluded)
    return [f"{n:5d} x {text}" for text, n in counts.most_common()]


def subject_id(raw: str) -> str:
    """A source's subject ID as letters and digits only, by dropping every other character
    (ADNI 941_S_1202 -> 941S1202, PPMI 3000 -> 3000). Deterministic, so reruns agree; a
    collision this creates is excluded by :func:`exclude_bad_subjects`."""
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


def check_root(root: Path, what: str) -> None:
    """Stop when a dataset root is not a folder, saying whether it is missing or a file
    (a root naming a file used to be reported as missing)."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{what} {str(root)!r} is a file, not a folder: give the folder the download was unpacked into")
    if not root.is_dir():
        raise InputError(f"{what} {str(root)!r} does not exist")


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
