"""IXI adapter: the per-modality archives (IXI-T1.tar, IXI-T2.tar, ...) unpacked under one root,
plus the IXI.xls demographics sheet.

Files are named ``IXI<id>-<site>-<number>-<modality>.nii.gz`` (``-DTI-<nn>`` for diffusion).
The scanner is known only through the site, so an unknown site code excludes the image
rather than guessing. IXI subjects are healthy volunteers: one diagnosis label for all. Image
stems follow the pipeline's contract (``sub-IXI002_T1w``); IXI has no sessions."""

from __future__ import annotations

import re
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
    subject_id,
    volume_problem,
)
from magicflow.datasets.tables import column, read_table, relabel
from magicflow.errors import InputError

FILE_NAME = re.compile(r"^(IXI\d+)-([A-Za-z]+)-(\d+)-([A-Za-z0-9]+)(?:-\d+)?\.nii(?:\.gz)?$")
#: IXI modality -> manifest modality; PD, MRA and DTI are not used by the pipeline
MODALITIES = {"T1": "T1w", "T2": "T2w"}
#: site code -> scanner, from the IXI project's description of its three hospitals
SITE_SCANNERS = {
    "Guys": "Philips Gyroscan Intera 1.5T",
    "HH": "Philips Intera 3T",
    "IOP": "GE 1.5T",
}
SEX_LABELS = {"1": "M", "2": "F"}  # IXI.xls: 'SEX_ID (1=m, 2=f)'


def read_demographics(path: Path, sex_labels: dict[str, str]) -> dict[str, dict[str, str]]:
    """Age and sex per IXI ID (as 'IXI002'). IXI.xls lists a few IDs more than once; their rows
    are merged, the first non-empty value of each column winning."""
    table = read_table(path, "IXI demographics")
    id_col, sex_col, age_col = (column(table, name, path, "IXI demographics") for name in ("IXI_ID", "SEX_ID", "AGE"))
    out: dict[str, dict[str, str]] = {}
    for record in table.to_dict("records"):
        digits = re.sub(r"\.0$", "", record[id_col])
        if not digits.isdigit():
            continue  # blank trailing rows
        labels = out.setdefault(f"IXI{int(digits):03d}", {"age": MISSING, "sex": MISSING})
        if labels["age"] == MISSING:
            labels["age"] = format_age(record[age_col])
        if labels["sex"] == MISSING and record[sex_col]:
            labels["sex"] = relabel(record[sex_col], sex_labels)
    return out


def read_ixi(
    root: str | Path,
    dataset: str,
    demographics: str | Path = "IXI.xls",
    sites: dict[str, str] | None = None,
    diagnosis: str = "CN",
    sex_labels: dict[str, str] | None = None,
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows (references not yet assigned) and exclusions for an unpacked IXI download;
    ``demographics`` is relative to ``root`` unless absolute."""
    root = Path(root)
    check_root(root, f"dataset {dataset!r}: IXI root")
    sites = SITE_SCANNERS if sites is None else sites
    labels = read_demographics(root / demographics, SEX_LABELS if sex_labels is None else sex_labels)
    images = sorted(p for p in root.rglob("IXI*.nii*") if p.is_file())
    if not images:
        raise InputError(f"dataset {dataset!r}: no IXI*.nii.gz files under {root}; unpack the IXI-T1.tar archive there")

    rows: list[ImageRow] = []
    excluded: list[Exclusion] = []
    for image in images:
        match = FILE_NAME.match(image.name)
        if match is None:
            excluded.append(
                Exclusion(
                    dataset, MISSING, MISSING, str(image), "file name does not follow IXI<id>-<site>-<number>-<modality>.nii.gz"
                )
            )
            continue
        ixi_id, site, _, modality = match.groups()
        subject = subject_id(ixi_id)
        reason = ""
        if modality not in MODALITIES:
            reason = f"modality {modality} is not used by the pipeline (T1, T2)"
        elif site not in sites:
            reason = f"unknown site code {site!r} (known: {', '.join(sorted(sites))}); the scanner cannot be named"
        else:
            reason = volume_problem(image, modality)
        if reason:
            excluded.append(Exclusion(dataset, subject, MISSING, str(image), reason))
            continue
        person = labels.get(ixi_id, {})
        rows.append(
            ImageRow(
                dataset=dataset,
                subject=subject,
                session=MISSING,
                image=image_stem(subject, MODALITIES[modality]),
                modality=MODALITIES[modality],
                tracer=MISSING,
                tracer_name=MISSING,
                scanner=sites[site],
                diagnosis=diagnosis,
                age=person.get("age", MISSING),
                sex=person.get("sex", MISSING),
                reference=MISSING,
                path=str(image),
                sidecar=MISSING,
            )
        )
    rows, duplicates = drop_duplicate_images(rows)
    rows, bad_labels = exclude_bad_subjects(rows)
    return rows, excluded + duplicates + bad_labels
