"""SALD adapter (Southwest University Adult Lifespan Dataset, FCP/INDI): one folder per subject
holding the T1 (and a resting-state run the pipeline does not use), plus the demographics sheet.

Every scan comes from one Siemens TrioTim 3T, so the scanner is a setting, not a header. The
subject number is the digits after 'sub' in the path (``sub-031274``, ``sub031274``); the sheet
may have lost the leading zeros (Excel), so IDs are matched as numbers."""

from __future__ import annotations

import re
from pathlib import Path

from magicflow.datasets.manifest import (
    MISSING, Exclusion, ImageRow, assign_references, check_subject_ids, file_stem, format_age, volume_problem,
)
from magicflow.datasets.tables import column, read_table, relabel
from magicflow.errors import InputError

SUBJECT = re.compile(r"(?i)(?:^|/)sub[-_]?(\d+)")
T1_PATTERN = r"(?i)(anat|t1|mprage)"
DEMOGRAPHIC_COLUMNS = {"subject": "Sub_ID", "age": "Age", "sex": "Sex"}


def read_demographics(path: Path, columns: dict[str, str], sex_labels: dict[str, str]) -> dict[int, dict[str, str]]:
    """Age and sex per subject number."""
    table = read_table(path, "SALD demographics")
    names = {key: column(table, columns.get(key, default), path, "SALD demographics") for key, default in DEMOGRAPHIC_COLUMNS.items()}
    out: dict[int, dict[str, str]] = {}
    for record in table.to_dict("records"):
        digits = re.sub(r"\D", "", re.sub(r"\.0$", "", record[names["subject"]]))
        if not digits:
            continue
        number = int(digits)
        if number in out:
            raise InputError(f"SALD demographics {str(path)!r}: subject {record[names['subject']]!r} listed twice")
        out[number] = {"age": format_age(record[names["age"]]), "sex": relabel(record[names["sex"]], sex_labels) or MISSING}
    return out


def read_sald(
    root: str | Path,
    dataset: str,
    demographics: str | Path,
    demographic_columns: dict[str, str] | None = None,
    sex_labels: dict[str, str] | None = None,
    scanner: str = "Siemens TrioTim",
    diagnosis: str = "CN",
    t1_pattern: str = T1_PATTERN,
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows and exclusions for a SALD download; ``demographics`` is relative to ``root``
    unless absolute. NIfTI files whose path does not match ``t1_pattern`` are excluded."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset {dataset!r}: SALD root {str(root)!r} does not exist")
    labels = read_demographics(root / demographics, demographic_columns or {}, sex_labels or {})
    images = sorted(p for p in root.rglob("*.nii*") if p.is_file() and re.search(r"\.nii(\.gz)?$", p.name))
    if not images:
        raise InputError(f"dataset {dataset!r}: no NIfTI files under {root}")
    is_t1 = re.compile(t1_pattern)

    rows: list[ImageRow] = []
    excluded: list[Exclusion] = []
    for image in images:
        relative = image.relative_to(root).as_posix()
        match = SUBJECT.search(relative)
        if match is None:
            excluded.append(Exclusion(dataset, MISSING, MISSING, str(image), "no subject number (sub<digits>) in the path"))
            continue
        subject = match.group(1)
        reason = ""
        if not is_t1.search(relative):
            reason = f"not a T1 image (path does not match t1_pattern {t1_pattern!r})"
        elif int(subject) not in labels:
            reason = f"subject {subject} is not in the demographics sheet"
        else:
            reason = volume_problem(image, "T1")
        if reason:
            excluded.append(Exclusion(dataset, subject, MISSING, str(image), reason))
            continue
        rows.append(ImageRow(
            dataset=dataset, subject=subject, session=MISSING,
            image=file_stem(*re.sub(r"\.nii(\.gz)?$", "", relative).split("/")),  # unique: the path
            modality="T1w", tracer=MISSING, tracer_name=MISSING, scanner=scanner, diagnosis=diagnosis,
            age=labels[int(subject)]["age"], sex=labels[int(subject)]["sex"],
            reference=MISSING, path=str(image), sidecar=_sidecar(image),
        ))
    check_subject_ids(sorted({r.subject for r in rows}), f"SALD dataset {root}")
    kept, no_t1 = assign_references(rows)
    return kept, excluded + no_t1


def _sidecar(image: Path) -> str:
    json_path = image.with_name(re.sub(r"\.nii(\.gz)?$", ".json", image.name))
    return str(json_path) if json_path.exists() else MISSING
