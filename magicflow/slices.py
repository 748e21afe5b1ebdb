"""Coronal slices from MNI volumes: the model's input.

Geometry: volumes are on FSL's MNI152 1 mm grid (182x218x182, LAS storage: x index 0 is the
subject's right, x = +90 mm). A slice at offset ``k`` is the coronal plane at y index
``109 + k`` (109 = 218 // 2, y = -17 mm), returned as shape (1, 182, 182) with rows running
superior (row 0) to inferior and columns running from the subject's right (column 0) to left:
radiological convention, the way FSL's grid stores it.

Intensity: each volume is scaled to [0, 1] between its 0.5th and 99.5th percentiles inside the
template brain mask (robust to a few hot voxels and to the empty background), then clipped."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from magicflow.errors import InputError
from magicflow.io import atomic_path

CENTRAL_INDEX = 109
SLICE_SIDE = 182
SLICE_SHAPE = (1, SLICE_SIDE, SLICE_SIDE)
PERCENTILES = (0.5, 99.5)
GRID_SHAPE = (182, 218, 182)


def coronal_slice(volume: np.ndarray, offset: int = 0) -> np.ndarray:
    """The coronal plane at y index ``109 + offset`` as (1, 182, 182), superior at row 0,
    subject's right at column 0."""
    if volume.shape != GRID_SHAPE:
        raise InputError(f"volume shape {volume.shape}: expected the MNI 1 mm grid {GRID_SHAPE}")
    y = CENTRAL_INDEX + offset
    if not 0 <= y < volume.shape[1]:
        raise InputError(f"slice offset {offset}: y index {y} outside 0..{volume.shape[1] - 1}")
    plane = np.asarray(volume[:, y, :])  # (x, z)
    return np.ascontiguousarray(plane.T[::-1])[None].astype(np.float32)


def normalise_volume(volume: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Scale to [0, 1] between the given percentiles of the in-mask voxels, clipped."""
    inside = volume[mask > 0]
    if inside.size == 0:
        raise InputError("intensity normalisation: empty brain mask")
    lo, hi = np.percentile(inside, percentiles)
    if hi <= lo:
        raise InputError(
            f"intensity normalisation: no contrast inside the brain (p{percentiles[0]}={lo}, p{percentiles[1]}={hi})"
        )
    return np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def mask_slice(mask: np.ndarray, offset: int = 0) -> np.ndarray:
    """The brain mask's coronal slice matching :func:`coronal_slice` (the model's mask), as uint8."""
    return (coronal_slice(np.asarray(mask, dtype=np.float32), offset) > 0.5).astype(np.uint8)


def parse_offsets(text: str) -> list[int]:
    """``"-5:5"`` (inclusive range), ``"0"`` or ``"-2,0,2"`` -> sorted unique offsets."""
    text = text.strip()
    try:
        if ":" in text:
            lo, hi = (int(v) for v in text.split(":"))
            values = range(lo, hi + 1)
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError as error:
        raise InputError(f"offsets {text!r}: expected 'LO:HI' or comma-separated integers") from error
    out = sorted(set(values))
    if not out:
        raise InputError(f"offsets {text!r}: empty")
    return out


def _excluded(row: pd.Series) -> bool:
    for column in ("excluded", "exclude"):
        if column in row and str(row[column]).strip().lower() in {"1", "true", "yes"}:
            return True
    return bool("exclusion_reason" in row and str(row["exclusion_reason"]).strip() not in {"", "nan", "None"})


def extract_slices(
    manifest: str | os.PathLike[str],
    preproc_dir: str | os.PathLike[str],
    template_dir: str | os.PathLike[str],
    offsets: list[int],
    out_npz: str | os.PathLike[str],
    out_tsv: str | os.PathLike[str],
    exclude_images: set[str] | None = None,
) -> pd.DataFrame:
    """Slice every included manifest row's MNI image into one compressed array + ``slices.tsv``.

    ``slices.npz`` holds ``slices`` (N, 1, 182, 182) float32 in [0, 1], the normalisation's
    ``percentiles`` (so a trained model can refuse slices scaled otherwise) and ``mask``
    (1, 182, 182) per offset as ``mask_<offset>``; row ``index`` of the TSV is the position in ``slices``. All
    manifest columns except ``path`` are carried (labels such as diagnosis or scanner)."""
    from magicflow.preprocess.naming import mni_image_path
    from magicflow.preprocess.template import load_template

    table = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in ("subject", "session", "image", "modality") if c not in table.columns]
    if missing:
        raise InputError(f"{manifest}: missing column(s) {', '.join(missing)}")
    template = load_template(template_dir, 1)
    mask = np.asarray(nib.load(template.brain_mask).dataobj) > 0
    carried = [c for c in table.columns if c != "path"]
    arrays, rows = [], []
    exclude_images = exclude_images or set()
    included = [row for _, row in table.iterrows() if not _excluded(row) and row["image"] not in exclude_images]
    if exclude_images:
        print(f"[slices] {len(exclude_images & set(table['image']))} image(s) left out after failing QC", flush=True)
    for n, row in enumerate(included, 1):
        path = mni_image_path(preproc_dir, row["image"], template.space)
        if not path.is_file():
            raise InputError(f"{path}: preprocessed image missing for manifest row {row.to_dict()}")
        volume = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        normed = normalise_volume(volume, mask)
        for offset in offsets:
            rows.append({**{c: row[c] for c in carried}, "offset": offset, "source": str(path), "index": len(arrays)})
            arrays.append(coronal_slice(normed, offset))
        print(f"[slices] {n}/{len(included)} {path.name}", flush=True)
    if not arrays:
        raise InputError(f"{manifest}: no included images to slice")
    index = pd.DataFrame(rows)
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                slices=np.stack(arrays),
                offsets=np.array(offsets),
                percentiles=np.array(PERCENTILES),
                **{f"mask_{o}": mask_slice(mask, o) for o in offsets},
            )
    with atomic_path(out_tsv) as tmp:
        index.to_csv(tmp, sep="\t", index=False)
    return index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="dataset manifest.tsv (subject, session, modality, tracer, labels...)")
    parser.add_argument("--preproc-dir", required=True, help="results/<dataset>/preproc")
    parser.add_argument("--template-dir", required=True, help="directory written by preprocess-template")
    parser.add_argument("--offsets", default="0", help="slice offsets from y index 109: 'LO:HI' inclusive or 'a,b,c' (default 0)")
    parser.add_argument("--out-npz", required=True, help="compressed arrays: slices (N,1,182,182), mask_<offset>")
    parser.add_argument("--out-tsv", required=True, help="slices.tsv index, one row per slice")
    parser.add_argument("--exclude-flagged", default=None, help="QC table (qc.tsv): leave out the images it flags")


def run(args: argparse.Namespace) -> int:
    excluded = set()
    if args.exclude_flagged:
        qc = pd.read_csv(args.exclude_flagged, sep="\t", dtype=str, keep_default_na=False)
        excluded = set(qc.loc[qc["flagged"].str.lower() == "true", "label"])
    extract_slices(
        args.manifest,
        args.preproc_dir,
        args.template_dir,
        parse_offsets(args.offsets),
        Path(args.out_npz),
        Path(args.out_tsv),
        excluded,
    )
    return 0
