"""Registration QC: correlation with the template inside its brain mask, and an overlay figure.

The overlay draws the template's edges (Canny, on the template T1) over the registered image
in three orthogonal planes through the grid centre; a misregistration shows as edges that do
not follow the image's boundaries. Coronal and axial views are radiological (subject's right on
the viewer's left), like the slices."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from skimage import feature

from magicflow.errors import InputError
from magicflow.io import atomic_path, write_json
from magicflow.plotting import pyplot
from magicflow.preprocess.template import Template
from magicflow.preprocess.volumes import load_3d

DEFAULT_THRESHOLD = 0.8


def masked_correlation(image: np.ndarray, template: np.ndarray, mask: np.ndarray) -> float:
    """Pearson (normalised cross-) correlation of two volumes over the mask voxels."""
    if image.shape != template.shape or image.shape != mask.shape:
        raise InputError(f"QC: image shape {image.shape} differs from the template {template.shape}")
    a, b = image[mask].astype(np.float64), template[mask].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _views(volume: np.ndarray) -> list[np.ndarray]:
    """Sagittal, coronal, axial planes through the centre, superior/anterior up. Arrays are on
    FSL's LAS grid, so in coronal and axial views the subject's right is on the viewer's left
    (radiological, as in the slices)."""
    cx, cy, cz = (s // 2 for s in volume.shape)
    sagittal = volume[cx, :, :].T[::-1]  # superior up, anterior on the right
    coronal = volume[:, cy, :].T[::-1]  # superior up, x index 0 (subject's right) on the left
    axial = volume[:, :, cz].T[::-1]  # anterior up
    return [sagittal, coronal, axial]


def qc_figure(image: np.ndarray, template: np.ndarray, title: str, out_png: str | os.PathLike[str]) -> None:
    """Write the three-plane overlay PNG (atomically)."""
    vmax = np.percentile(image[image > 0], 99.5) if np.any(image > 0) else 1.0
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), dpi=100)
    for ax, img_view, tpl_view, name in zip(axes, _views(image), _views(template), ("sagittal", "coronal", "axial")):
        ax.imshow(img_view, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        edges = feature.canny(tpl_view.astype(float), sigma=2.0)
        overlay = np.zeros((*edges.shape, 4))
        overlay[edges] = (1.0, 0.2, 0.2, 0.9)
        ax.imshow(overlay, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def image_qc(
    image_path: str | os.PathLike[str], template: Template, out_png: str | os.PathLike[str],
    out_json: str | os.PathLike[str], label: str | None = None,
) -> dict[str, object]:
    """Correlation + overlay for one MNI image; the JSON feeds :func:`gather_qc`."""
    image = np.asarray(load_3d(image_path, "MNI image").dataobj, dtype=np.float32)
    tpl = np.asarray(nib.load(template.t1).dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(template.brain_mask).dataobj) > 0
    ncc = masked_correlation(image, tpl, mask)
    name = label or Path(image_path).name
    qc_figure(image, tpl, f"{name}  NCC={ncc:.3f}", out_png)
    record = {"image": str(Path(image_path)), "label": name, "ncc": round(ncc, 5), "png": str(Path(out_png)),
              "space": template.space}
    write_json(out_json, record)
    return record


#: T2w, FLAIR and PET do not share the T1 template's contrast (T2w correlates negatively,
#: PET weakly), so for them only a near-zero |NCC| -- no structure in common -- is a failure.
OTHER_CONTRAST_MIN_ABS_NCC = 0.1


def gather_qc(json_paths: list[str | os.PathLike[str]], out_tsv: str | os.PathLike[str],
              threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Collect per-image QC JSONs into one TSV. ``flagged`` marks a T1w (label ending in
    ``T1w``) with NCC below ``threshold``, or another contrast with |NCC| below
    :data:`OTHER_CONTRAST_MIN_ABS_NCC`."""
    rows = []
    for path in json_paths:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: unreadable QC record ({error})") from error
    table = pd.DataFrame(rows, columns=["label", "image", "space", "ncc", "png"])
    is_t1 = table["label"].astype(str).str.endswith("T1w")
    table["threshold"] = np.where(is_t1, threshold, OTHER_CONTRAST_MIN_ABS_NCC)
    table["flagged"] = np.where(is_t1, table["ncc"] < threshold, table["ncc"].abs() < OTHER_CONTRAST_MIN_ABS_NCC)
    table = table.sort_values("label", kind="stable").reset_index(drop=True)
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
