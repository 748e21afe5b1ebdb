"""SALD adapter (Southwest University Adult Lifespan Dataset, FCP/INDI), as released: archives
named for a subject range (``sub-031274_sub-031323.tar.gz``) that unpack to
``sub-031274_sub-031323/sub-031323/anat/sub-031323_T1w.nii.gz`` (plus resting-state runs the
pipeline does not use), and the demographics sheet ``sub_information.xlsx`` (Sub_ID, Sex, Age).

The subject is the innermost ``sub-<digits>`` of the path (the file name's when it has one),
never the range folder. Every scan comes from one Siemens TrioTim 3T, so the scanner is a
setting, not a header. The sheet may have lost the leading zeros (Excel), so IDs are matched as
numbers. Sex is coded 1/2 in the sheet; see :data:`SEX_LABELS`."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from magicflow.datasets.manifest import (
    check_root,
    MISSING,
    Exclusion,
    ImageRow,
    exclude_bad_subjects,
    drop_duplicate_images,
    format_age,
    image_stem,
    volume_problem,
)
from magicflow.datasets.tables import column, read_table, relabel
from magicflow.errors import InputError

SUBJECT = re.compile(r"(?i)^sub[-_]?(\d+)")
T1_PATTERN = r"(?i)(anat|t1|mprage)"
DEMOGRAPHIC_COLUMNS = {"subject": "Sub_ID", "age": "Age", "sex": "Sex"}
#: The sheet's sex codes. An assumption (the sheet's legend could not be read here): 1 = female,
#: 2 = male. The data descriptor (Wei et al. 2018, Sci Data 5:180134) reports 187 males among
#: 494 subjects, so on the full sheet the code mapped to M should be the rarer one: the adapter
#: prints the count per code and warns when the mapping makes males the majority.
SEX_LABELS = {"1": "F", "2": "M"}
PUBLISHED_MALE_SHARE = 187 / 494


def read_demographics(path: Path, columns: dict[str, str], sex_labels: dict[str, str]) -> dict[int, dict[str, str]]:
    """Age and sex per subject number."""
    table = read_table(path, "SALD demographics")
    names = {
        key: column(table, columns.get(key, default), path, "SALD demographics") for key, default in DEMOGRAPHIC_COLUMNS.items()
    }
    out: dict[int, dict[str, str]] = {}
    for record in table.to_dict("records"):
        digits = re.sub(r"\D", "", re.sub(r"\.0$", "", record[names["subject"]]))
        if not digits:
            continue
        number = int(digits)
        if number in out:
            raise InputError(f"SALD demographics {str(path)!r}: subject {record[names['subject']]!r} listed twice")
        out[number] = {"age": format_age(record[names["age"]]), "sex": relabel(record[names["sex"]], sex_labels) or MISSING}
    _report_sex_codes(path, table[names["sex"]].tolist(), sex_labels)
    return out


def _report_sex_codes(path: Path, codes: list[str], labels: dict[str, str]) -> None:
    counts = Counter(re.sub(r"\.0$", "", c) for c in codes if c)
    print(
        f"SALD demographics {path.name}: sex codes "
        + ", ".join(f"{c} -> {labels.get(c, c)}: {n}" for c, n in sorted(counts.items()))
    )
    males = sum(n for c, n in counts.items() if labels.get(c, c) == "M")
    total = sum(counts.values())
    if total >= 100 and males / total > 0.5:
        print(
            f"warning: {males} of {total} subjects come out male, but the SALD descriptor reports "
            f"{PUBLISHED_MALE_SHARE:.0%}; check sex_labels",
            file=sys.stderr,
        )


def subject_of(relative: str) -> str | None:
    """The innermost ``sub-<digits>`` of a relative path (file name first), digits as written."""
    for part in reversed(relative.split("/")):
        match = SUBJECT.match(part)
        if match:
            return match.group(1)
    return None


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
    """Manifest rows (references not yet assigned) and exclusions for an unpacked SALD release;
    ``demographics`` is relative to ``root`` unless absolute. NIfTI files whose path does not
    match ``t1_pattern`` are excluded; a second T1 of a subject is excluded, not merged."""
    root = Path(root)
    check_root(root, f"dataset {dataset!r}: SALD root")
    labels = read_demographics(root / demographics, demographic_columns or {}, SEX_LABELS if sex_labels is None else sex_labels)
    images = sorted(p for p in root.rglob("*.nii*") if p.is_file() and re.search(r"\.nii(\.gz)?$", p.name))
    if not images:
        archives = sorted(p.name for p in root.glob("sub-*.tar.gz"))
        hint = f"; unpack the release's archives ({archives[0]}, ...) there first" if archives else ""
        raise InputError(f"dataset {dataset!r}: no NIfTI files under {root}{hint}")
    is_t1 = re.compile(t1_pattern)

    rows: list[ImageRow] = []
    excluded: list[Exclusion] = []
    for image in images:
        relative = image.relative_to(root).as_posix()
        subject = subject_of(relative)
        if subject is None:
            excluded.append(Exclusion(dataset, MISSING, MISSING, str(image), "no subject number (sub-<digits>) in the path"))
            continue
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
        rows.append(
            ImageRow(
                dataset=dataset,
                subject=subject,
                session=MISSING,
                image=image_stem(subject, "T1w"),
                modality="T1w",
                tracer=MISSING,
                tracer_name=MISSING,
                scanner=scanner,
                diagnosis=diagnosis,
                age=labels[int(subject)]["age"],
                sex=labels[int(subject)]["sex"],
                reference=MISSING,
                path=str(image),
                sidecar=_sidecar(image),
            )
        )
    rows, duplicates = drop_duplicate_images(rows)
    rows, bad_labels = exclude_bad_subjects(rows)
    return rows, excluded + duplicates + bad_labels


def _sidecar(image: Path) -> str:
    json_path = image.with_name(re.sub(r"\.nii(\.gz)?$", ".json", image.name))
    return str(json_path) if json_path.exists() else MISSING
