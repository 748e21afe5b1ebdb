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

from magicflow.datasets.manifest import IMAGE_STEM, MISSING, Exclusion, ImageRow, check_root, subject_problems, volume_problem
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


def _read_participants(root: Path, columns: dict[str, str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Labels per subject from participants.tsv, and per subject why its rows cannot be used
    (listed twice). A table that cannot be read, has no participant_id column or lacks a column
    ``columns`` names is a dataset-level error: every subject's labels would be wrong."""
    path = root / "participants.tsv"
    if not path.exists():
        if columns:
            raise InputError(
                f"{path}: does not exist, yet participant_columns names {sorted(set(columns.values()))}; "
                "add the table or remove the setting"
            )
        return {}, {}
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as error:  # OSError, UnicodeDecodeError, pandas' ParserError and EmptyDataError
        raise InputError(
            f"{path}: cannot be read ({type(error).__name__}: {' '.join(str(error).split())}); "
            "it must be a UTF-8 tab-separated table"
        ) from None
    if "participant_id" not in table:
        raise InputError(f"{path}: no participant_id column; columns are {list(table.columns)}")
    wanted = {c: columns.get(c, c) for c in LABEL_COLUMNS}
    absent = sorted(column for key, column in wanted.items() if key in columns and column not in table)
    if absent:
        raise InputError(
            f"{path}: no column {', '.join(repr(a) for a in absent)} (named by participant_columns); "
            f"columns are {list(table.columns)}"
        )
    ids = [str(p).strip().removeprefix("sub-") for p in table["participant_id"]]
    counts = pd.Series(ids).value_counts()
    problems = {s: f"participants.tsv ({path}) lists sub-{s} {n} times: keep one row" for s, n in counts.items() if n > 1}
    labels = {}
    for subject, (_, record) in zip(ids, table.iterrows()):
        labels[subject] = {c: (str(record.get(wanted[c], "")).strip() or MISSING) for c in LABEL_COLUMNS}
    return labels, problems


def _bad_type(sidecar: dict, path: Path) -> str:
    """Why a sidecar's text fields are unusable ('' when they are not): TracerName,
    Manufacturer or ManufacturersModelName that is a list, number or object would be written
    into the manifest as "['FDG']"."""
    for key in ("TracerName", "Manufacturer", "ManufacturersModelName"):
        value = sidecar.get(key)
        if value is not None and not isinstance(value, str):
            return f"sidecar {path}: {key} is a JSON {type(value).__name__} ({json.dumps(value)[:60]}), expected a string"
    return ""


#: image-like files the adapter cannot read, and why (matched on the lower-cased name)
UNREADABLE_FORMATS = {
    ".hdr": "an Analyze 7.5 header (.hdr/.img pair): convert it to NIfTI (.nii.gz)",
    ".img": "the data half of an Analyze 7.5 pair (.hdr/.img): convert it to NIfTI (.nii.gz)",
    ".mgz": "a FreeSurfer .mgz volume: convert it to NIfTI (.nii.gz)",
    ".mgh": "a FreeSurfer .mgh volume: convert it to NIfTI (.nii.gz)",
    ".mnc": "a MINC volume: convert it to NIfTI (.nii.gz)",
    ".nrrd": "a NRRD volume: convert it to NIfTI (.nii.gz)",
    ".dcm": "a DICOM file inside a BIDS folder: convert it to NIfTI (.nii.gz)",
}
NIFTI_NAME = re.compile(r"\.nii(\.gz)?$")
NIFTI_ANY_CASE = re.compile(r"(?i)\.nii(\.gz)?$")


def _image_folders(subject_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The anat/ and pet/ folders of a subject (with sessions or without) and the session
    entries that cannot be read, with why."""
    folders, broken = [], []
    for kind in ("anat", "pet"):
        folders.append(subject_dir / kind)
    for session in sorted(subject_dir.glob("ses-*")):
        if not session.is_dir():
            broken.append((session, "a ses-* entry that is not a folder (a file or a broken link): its images cannot be read"))
            continue
        try:
            next(session.iterdir(), None)
        except OSError as error:
            broken.append((session, f"session folder cannot be read ({type(error).__name__}: {error.strerror or error})"))
            continue
        folders += [session / "anat", session / "pet"]
    return [f for f in folders if f.is_dir()], broken


def _files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """NIfTI images in a folder, and the files that look like images but are left out, with why."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        return [], [(folder, f"folder cannot be read ({type(error).__name__}: {error.strerror or error})")]
    images, skipped = [], []
    for entry in entries:
        name = entry.name
        if NIFTI_NAME.search(name):
            images.append(entry)
        elif NIFTI_ANY_CASE.search(name):
            ext = NIFTI_ANY_CASE.search(name).group(0)
            skipped.append(
                (entry, f"extension {ext!r} is not lower case, which BIDS and the pipeline require: rename to {ext.lower()!r}")
            )
        else:
            suffix = entry.suffix.lower()
            if suffix in UNREADABLE_FORMATS or name.lower().endswith((".img.gz", ".hdr.gz")):
                skipped.append((entry, UNREADABLE_FORMATS.get(suffix, UNREADABLE_FORMATS[".img"])))
    return images, skipped


def scanner_name(sidecar: dict) -> str:
    """'Manufacturer Model' from a sidecar. dcm2niix writes spaces in the model as '_'
    ('Prisma_fit'); they become spaces again, and 'Prisma' and 'Prisma fit' stay apart. The
    brand 'MAGNETOM' some Siemens software versions put before the model is dropped, so one
    scanner is one class (:func:`magicflow.datasets.manifest.unify_scanners` merges case)."""
    parts = [str(sidecar.get(k, "")).replace("_", " ").strip() for k in ("Manufacturer", "ManufacturersModelName")]
    parts[1:] = [re.sub(r"(?i)^magnetom\s+", "", p) for p in parts[1:]]
    name = " ".join(p for p in parts if p)
    return re.sub(r"\s+", " ", name) or MISSING


def read_bids(
    root: str | Path, dataset: str, participant_columns: dict[str, str] | None = None
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows (references not yet assigned) and exclusions for a BIDS dataset. A fault of
    one subject or file excludes it with the reason; only faults of the whole dataset (no root,
    no sub-* folders, an unusable participants.tsv) stop it."""
    root = Path(root)
    check_root(root, f"dataset {dataset!r}: BIDS root")
    subject_dirs = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subject_dirs:
        raise InputError(f"dataset {dataset!r}: no sub-* folders under {root}; is this a BIDS dataset?")
    labels, table_problems = _read_participants(root, participant_columns or {})
    problems = {**table_problems, **subject_problems(p.name.removeprefix("sub-") for p in subject_dirs)}

    rows: list[ImageRow] = []
    excluded: list[Exclusion] = []
    for subject_dir in subject_dirs:
        subject = subject_dir.name.removeprefix("sub-")
        folders, broken = _image_folders(subject_dir)
        found: list[Path] = []
        skipped: list[tuple[Path, str]] = []
        for folder in folders:
            images, left = _files(folder)
            found += images
            skipped += left
        skipped += broken
        if subject in problems:
            excluded += [Exclusion(dataset, _safe(subject), _session_of(p), str(p), problems[subject]) for p in found]
            if not found:
                excluded.append(Exclusion(dataset, _safe(subject), MISSING, str(subject_dir), problems[subject]))
            continue
        excluded += [Exclusion(dataset, subject, _session_of(p), str(p), why) for p, why in skipped]
        if not found and not skipped:
            excluded.append(
                Exclusion(
                    dataset,
                    subject,
                    MISSING,
                    str(subject_dir),
                    "subject folder without NIfTI images in anat/ or pet/ (or ses-*/anat/, ses-*/pet/)",
                )
            )
        stems: dict[str, list[Path]] = {}
        for image in found:
            stems.setdefault(NIFTI_NAME.sub("", image.name), []).append(image)
        for image in found:
            twins = stems[NIFTI_NAME.sub("", image.name)]
            if len(twins) > 1:
                reason = f"{' and '.join(t.name for t in twins)} are one image stored twice: remove one"
                excluded.append(Exclusion(dataset, subject, _session_of(image), str(image), reason))
                continue
            row, reason = _image_row(image, root, dataset, subject, labels.get(subject, {}))
            if row is not None:
                rows.append(row)
            else:
                excluded.append(Exclusion(dataset, subject, _session_of(image), str(image), reason))
    return rows, excluded


def _safe(subject: str) -> str:
    """A subject label as the exclusions table shows it (it may hold any character)."""
    return subject if subject.isprintable() else subject.encode("unicode_escape").decode()


def _session_of(path: Path) -> str:
    """The session of a file from its folder (sub-<label>/ses-<label>/...), MISSING outside a session."""
    parts = path.parts
    at = max((i for i, p in enumerate(parts[:-1]) if p.startswith("sub-")), default=None)
    if at is None or at + 1 >= len(parts) or not parts[at + 1].startswith("ses-"):
        return MISSING
    return parts[at + 1].removeprefix("ses-")


def _place_problem(image: Path, subject: str, entities: dict[str, str]) -> str:
    """Why a file's name disagrees with the folders it lies in ('' when it agrees)."""
    stem = NIFTI_NAME.sub("", image.name)
    if re.search(r"\s", stem):
        return "the file name has whitespace, which the workflow's rules cannot pass safely: rename the file"
    if not re.fullmatch(IMAGE_STEM, stem) or not stem.isascii():
        return (
            "file name has characters other than ASCII letters, digits, '-' and '_', which end up in "
            "file names and shell commands: rename the file"
        )
    named = entities.get("sub")
    if named is None:
        return "file name has no sub-<label> part: name it sub-<label>[_ses-<label>]_..._<suffix>.nii.gz"
    if named != subject:
        return f"file name is for subject {named!r} but lies in the folder of sub-{subject}: move or rename it"
    folder_session = _session_of(image)
    folder_session = None if folder_session == MISSING else folder_session
    if folder_session != entities.get("ses"):
        said = f"session {entities['ses']!r}" if "ses" in entities else "no session"
        where = f"folder ses-{folder_session}" if folder_session is not None else "no ses-* folder"
        return f"file name says {said} but the file lies in {where}: move or rename it"
    return ""


def _image_row(image: Path, root: Path, dataset: str, subject: str, labels: dict[str, str]) -> tuple[ImageRow | None, str]:
    entities = _entities(image.name)
    suffix = entities["suffix"]
    if suffix not in ANAT_SUFFIXES and suffix != "pet":
        return None, f"modality {suffix} is not used by the pipeline (T1w, T2w, FLAIR, pet)"
    if problem := _place_problem(image, subject, entities):
        return None, problem
    try:
        shape = nib.load(image).shape
    except Exception as error:  # nibabel raises several types for broken headers
        return None, f"unreadable NIfTI header ({type(error).__name__}: {error})"
    sidecar_path = _sidecar(image, root)
    sidecar: dict = {}
    if sidecar_path is not None:
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return None, f"unreadable sidecar {sidecar_path}: {error}"
        if not isinstance(sidecar, dict):
            return None, f"sidecar {sidecar_path} is a JSON {type(sidecar).__name__}, not an object of key: value pairs"
        if problem := _bad_type(sidecar, sidecar_path):
            return None, problem
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
