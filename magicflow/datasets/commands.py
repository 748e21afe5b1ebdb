"""``magicflow manifest``: write a dataset's manifest and exclusions from its download.

Every kind goes the same way (:func:`build_manifest`): the adapter reads the download, then the
images whose data cannot be registered are left out with their reasons, and every other image
gets the T1w it registers through. IDA downloads (ppmi, adni) are read in two steps, each its
own Snakemake rule: ``--convert-only`` turns the image folders into NIfTI (cached in
``--nifti-dir``), then the manifest is built."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from magicflow.datasets.adni import read_adni
from magicflow.datasets.bids import LABEL_COLUMNS, read_bids
from magicflow.datasets.ida import MAX_INTERPOLATED_SLICES, convert_download
from magicflow.datasets.series import PROCESSING_LEVELS
from magicflow.datasets.ixi import read_ixi
from magicflow.datasets.manifest import (
    MAX_REFERENCE_GAP_DAYS,
    MAX_VOXEL_MM,
    Exclusion,
    ImageRow,
    assign_references,
    exclusion_summary,
    near_duplicates,
    screen_images,
    unify_scanners,
    write_manifest,
)
from magicflow.datasets.ppmi import read_ppmi
from magicflow.datasets.sald import DEMOGRAPHIC_COLUMNS, read_sald
from magicflow.errors import InputError

READERS = {"bids": read_bids, "ixi": read_ixi, "sald": read_sald, "ppmi": read_ppmi, "adni": read_adni}
IDA_PROJECTS = {"ppmi": "PPMI", "adni": "ADNI"}
#: option (argparse dest) -> reader keyword, per kind; an option given for another kind is an error
KIND_OPTIONS: dict[str, dict[str, str]] = {
    "bids": {"participant_column": "participant_columns"},
    "ixi": {"demographics": "demographics", "site": "sites", "diagnosis": "diagnosis", "sex_label": "sex_labels"},
    "sald": {
        "demographics": "demographics",
        "participant_column": "demographic_columns",
        "sex_label": "sex_labels",
        "scanner": "scanner",
        "diagnosis": "diagnosis",
        "t1_pattern": "t1_pattern",
    },
    "ppmi": {
        "collection": "collection",
        "nifti_dir": "nifti_dir",
        "diagnosis_label": "diagnosis_labels",
        "mri_series_include": "mri_series_include",
        "mri_series_exclude": "mri_series_exclude",
        "max_interpolated_slices": "max_interpolated_slices",
    },
    "adni": {
        "collection": "collection",
        "nifti_dir": "nifti_dir",
        "diagnosis_table": "diagnosis_table",
        "visit_window_days": "visit_window_days",
        "diagnosis_label": "diagnosis_labels",
        "processing_level": "processing_level",
        "mri_series_include": "mri_series_include",
        "mri_series_exclude": "mri_series_exclude",
        "max_interpolated_slices": "max_interpolated_slices",
    },
}
COLUMN_NAMES = {"bids": LABEL_COLUMNS, "sald": tuple(DEMOGRAPHIC_COLUMNS)}
PAIR_OPTIONS = ("participant_column", "site", "sex_label", "diagnosis_label")


def _pairs(option: str, pairs: list[str], names: tuple[str, ...] | None = None) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value or (names is not None and key not in names):
            allowed = f" with KEY one of {list(names)}" if names else ""
            raise InputError(f"--{option.replace('_', '-')} {pair!r}: expected KEY=VALUE{allowed}")
        mapping[key] = value
    return mapping


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (as in config)")
    parser.add_argument("--kind", required=True, choices=sorted(READERS), help="adapter to use")
    parser.add_argument("--root", required=True, type=Path, help="dataset folder as downloaded")
    parser.add_argument("--out", type=Path, help="manifest.tsv to write")
    parser.add_argument("--excluded", type=Path, help="manifest_excluded.tsv to write")
    parser.add_argument(
        "--participant-column",
        action="append",
        default=[],
        metavar="NAME=COLUMN",
        help="bids: manifest column NAME (diagnosis, age, sex) from participants.tsv column COLUMN; "
        "sald: NAME (subject, age, sex) from the demographics sheet's COLUMN",
    )
    parser.add_argument("--demographics", type=Path, help="ixi, sald: demographics sheet (relative to --root unless absolute)")
    parser.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="CODE=SCANNER",
        help="ixi: scanner of a site code (given at all, these replace the built-in Guys/HH/IOP)",
    )
    parser.add_argument("--sex-label", action="append", default=[], metavar="CODE=LABEL", help="ixi, sald: relabel sex codes")
    parser.add_argument("--diagnosis", help="ixi, sald: the diagnosis label of every subject (healthy cohorts)")
    parser.add_argument("--scanner", help="sald: the scanner of every image")
    parser.add_argument("--t1-pattern", help="sald: regular expression a T1 path matches")
    parser.add_argument("--collection", type=Path, help="ppmi, adni: IDA collection CSV (relative to --root unless absolute)")
    parser.add_argument("--nifti-dir", type=Path, help="ppmi, adni: folder of converted images and conversion.tsv")
    parser.add_argument(
        "--convert-only", action="store_true", help="ppmi, adni: convert DICOM to NIfTI into --nifti-dir and stop"
    )
    parser.add_argument(
        "--diagnosis-table", type=Path, help="adni: ADNIMERGE or DXSUM table (relative to --root unless absolute)"
    )
    parser.add_argument("--visit-window-days", type=int, help="adni: largest gap between scan and diagnosed visit")
    parser.add_argument(
        "--diagnosis-label",
        action="append",
        default=[],
        metavar="VALUE=LABEL",
        help="ppmi, adni: relabel diagnosis values (e.g. Dementia=AD)",
    )
    parser.add_argument(
        "--max-reference-gap-days",
        type=int,
        default=MAX_REFERENCE_GAP_DAYS,
        help=f"largest gap in days between an image and the T1w it registers through (default {MAX_REFERENCE_GAP_DAYS})",
    )
    parser.add_argument(
        "--max-interpolated-slices",
        type=int,
        help="ppmi, adni: most slices dcm2niix may fill into a series' gaps by interpolation before "
        f"the series is excluded (default {MAX_INTERPOLATED_SLICES})",
    )
    parser.add_argument(
        "--max-voxel-mm",
        action="append",
        default=[],
        metavar="MODALITY=MM",
        help=f"largest voxel edge kept per modality (default {' '.join(f'{k}={v:g}' for k, v in MAX_VOXEL_MM.items())})",
    )
    parser.add_argument("--workers", type=int, default=2, help="threads reading images for the data checks (default 2)")
    parser.add_argument(
        "--processing-level",
        choices=PROCESSING_LEVELS,
        help="adni: which of a PET scan's raw series and ADNI's processed steps is used (default raw)",
    )
    parser.add_argument("--mri-series-include", metavar="REGEX", help="ppmi, adni: use only MRI series whose description matches")
    parser.add_argument(
        "--mri-series-exclude", metavar="REGEX", help="ppmi, adni: leave out MRI series whose description matches"
    )


def reader_options(args: argparse.Namespace) -> dict[str, object]:
    """The reader keywords of the options given, refusing options that belong to another kind."""
    allowed = KIND_OPTIONS[args.kind]
    options: dict[str, object] = {}
    for dest in sorted({d for opts in KIND_OPTIONS.values() for d in opts}):
        value = getattr(args, dest)
        if value in (None, []):
            continue
        if dest not in allowed:
            raise InputError(f"--{dest.replace('_', '-')} does not apply to --kind {args.kind}")
        options[allowed[dest]] = (
            _pairs(dest, value, COLUMN_NAMES.get(args.kind) if dest == "participant_column" else None)
            if dest in PAIR_OPTIONS
            else value
        )
    return options


def voxel_limits(pairs: list[str]) -> dict[str, float]:
    """--max-voxel-mm MODALITY=MM options as a mapping, each a positive number."""
    limits = {}
    for key, value in _pairs("max_voxel_mm", pairs, tuple(MAX_VOXEL_MM)).items():
        try:
            limits[key] = float(value)
        except ValueError:
            limits[key] = -1.0
        if not limits[key] > 0:
            raise InputError(f"--max-voxel-mm {key}={value}: expected a positive number of millimetres")
    return limits


def build_manifest(
    kind: str,
    root: Path,
    dataset: str,
    options: dict[str, object],
    max_reference_gap_days: int | None = MAX_REFERENCE_GAP_DAYS,
    workers: int = 2,
    max_voxel_mm: dict[str, float] | None = None,
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Rows and exclusions of one dataset: the adapter's, minus images whose headers or data
    rule them out, each other image paired with its T1w (after the checks, so a broken T1w is
    never a reference); scanner names spelled two ways become one."""
    reader = READERS[kind]
    needed = [name for name, p in list(inspect.signature(reader).parameters.items())[2:] if p.default is inspect.Parameter.empty]
    missing = [n for n in needed if n not in options]
    if missing:
        raise InputError(f"--kind {kind} needs {', '.join('--' + n.replace('_', '-') for n in missing)}")
    rows, excluded = reader(root, dataset, **options)
    rows, broken = screen_images(rows, workers, max_voxel_mm)
    rows, unpaired = assign_references(unify_scanners(rows), max_reference_gap_days)
    return rows, excluded + broken + unpaired


def run(args: argparse.Namespace) -> int:
    args.root = args.root.expanduser()
    for dest in ("demographics", "collection", "nifti_dir", "diagnosis_table"):
        if getattr(args, dest) is not None:
            setattr(args, dest, getattr(args, dest).expanduser())
    options = reader_options(args)
    if args.kind in IDA_PROJECTS and "nifti_dir" not in options:
        raise InputError(f"--kind {args.kind} needs --nifti-dir (where DICOM series are converted)")
    if args.convert_only:
        if args.kind not in IDA_PROJECTS:
            raise InputError(f"--convert-only applies to {sorted(IDA_PROJECTS)}, not --kind {args.kind}")
        table = convert_download(args.root, IDA_PROJECTS[args.kind], options["nifti_dir"])
        print(f"{args.dataset}: image folders converted, see {table}")
        return 0
    if args.out is None or args.excluded is None:
        raise InputError("--out and --excluded are required (unless --convert-only)")
    limits = voxel_limits(args.max_voxel_mm)
    rows, excluded = build_manifest(
        args.kind, args.root, args.dataset, options, args.max_reference_gap_days, args.workers, limits
    )
    write_manifest(rows, excluded, args.out, args.excluded, f"dataset {args.dataset!r} ({args.root})")
    print(f"{args.dataset}: {len(rows)} images in {args.out}, {len(excluded)} excluded (see {args.excluded})")
    for line in exclusion_summary(excluded):
        print(f"  {line}")
    for item in excluded:
        print(f"  excluded {item.path}: {item.reason}")
    for column in ("scanner", "diagnosis", "sex"):  # the labels experiments classify by
        for a, b in near_duplicates(getattr(r, column) for r in rows):
            print(f"  warning: {column} values {a!r} and {b!r} look alike; if they are one, they are still two classes")
    return 0
