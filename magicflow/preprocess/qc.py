"""Registration QC: correlation with the template inside its brain mask, a misregistration
check that noise and contrast do not fool (:func:`alignment_check`), PET frame motion, and an
overlay figure.

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

#: floor of a T1w's smoothed correlation with the template (``--threshold``): well-registered demo
#: T1s score 0.86-0.99 however noisy (raw NCC 0.29-0.93: sub-demo10 0.53 raw, 0.86 smoothed), the
#: real-head test cases 0.99, a 10 mm shift 0.49-0.55; misregistrations of a few mm are the
#: probes' to find, so this only has to catch "nothing in common"
DEFAULT_THRESHOLD = 0.6


def masked_correlation(image: np.ndarray, template: np.ndarray, mask: np.ndarray) -> float:
    """Pearson (normalised cross-) correlation of two volumes over the mask voxels."""
    if image.shape != template.shape or image.shape != mask.shape:
        raise InputError(f"QC: image shape {image.shape} differs from the template {template.shape}")
    a, b = image[mask].astype(np.float64), template[mask].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


#: the misregistration check (see :func:`alignment_check`) works on 2 mm block averages,
#: smoothed with this Gaussian sigma (mm): white noise averages out, anatomy does not
SMOOTH_MM = 3.0
#: probes of the check: the image shifted by PROBE_MM along each axis and rotated by PROBE_DEG
#: about each axis through the brain centre; a well-registered image correlates best unmoved
PROBE_MM = 4.0
PROBE_DEG = 4.0
#: 2 mm voxels the field of view is eroded by, so that probes (up to ~4 mm at the cortex) stay in it
PROBE_ERODE = 3
#: a T1w covering less of the template's brain than this is flagged (a partial field of view:
#: the coronal slices would be cut); the check itself is then made where the scan has data
MIN_COVERAGE = 0.9


def _block_mean(volume: np.ndarray) -> np.ndarray:
    """2x2x2 block means (the 1 mm grid's even dimensions: 182x218x182 -> 91x109x91)."""
    x, y, z = (s // 2 * 2 for s in volume.shape)
    v = np.asarray(volume, dtype=np.float32)
    return sum(v[i:x:2, j:y:2, k:z:2] for i in (0, 1) for j in (0, 1) for k in (0, 1)) / 8.0


def _probes(centre: np.ndarray) -> dict[str, np.ndarray]:
    """Voxel-space (2 mm) 4x4 maps of the probe moves: name -> matrix."""
    probes = {}
    step = PROBE_MM / 2.0
    for axis, name in enumerate("xyz"):
        for sign in (1, -1):
            m = np.eye(4)
            m[axis, 3] = sign * step
            probes[f"{'+' if sign > 0 else '-'}{PROBE_MM:g} mm {name}"] = m
            a = np.radians(sign * PROBE_DEG)
            i, j = [k for k in range(3) if k != axis]
            r = np.eye(3)
            r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
            m = np.eye(4)
            m[:3, :3], m[:3, 3] = r, centre - r @ centre
            probes[f"{'+' if sign > 0 else '-'}{PROBE_DEG:g} deg about {name}"] = m
    return probes


def alignment_check(image: np.ndarray, template: np.ndarray, mask: np.ndarray) -> dict[str, object]:
    """Tell a misregistration from a noisy or differently contrasted scan.

    A raw correlation with the template mixes the two: noise and contrast lower it as much as
    a shift does. Here both images are smoothed (noise averages out), and the image is probed
    with small shifts and rotations: a well-registered image, however noisy or contrasted,
    correlates best where it is (its correlation peaks at no move), while a misregistered one
    correlates better after some probe. Returns the smoothed correlation ``ncc_smooth``,
    ``alignment`` (its excess over the best probe: negative when a probe fits better), that
    probe ``best_probe`` and the fraction of the template brain inside the scan's field of view
    ``coverage``. The sign of the correlation is kept (T2w correlates negatively)."""
    from scipy import ndimage

    img, tpl = _block_mean(image), _block_mean(template)
    brain = _block_mean(mask.astype(np.float32)) > 0.5
    # the scan's field of view in MNI (outside it the resampled image is exactly 0; holes of
    # dark tissue filled): a partial field of view is judged where it has data, and reported
    seen = ndimage.binary_fill_holes(_block_mean((image != 0).astype(np.float32)) > 0)
    coverage = float((brain & seen).sum() / max(int(brain.sum()), 1))
    inside = brain & ndimage.binary_erosion(seen, iterations=PROBE_ERODE)  # probes stay inside the scan
    if inside.sum() < 100:
        return {"ncc_smooth": 0.0, "alignment": float("nan"), "best_probe": "", "coverage": round(coverage, 3)}
    sigma = SMOOTH_MM / 2.0
    img, tpl = ndimage.gaussian_filter(img, sigma), ndimage.gaussian_filter(tpl, sigma)
    points = np.argwhere(inside).T.astype(np.float32)  # only the brain's voxels are compared
    ncc = masked_correlation(img, tpl, inside)
    sign = 1.0 if ncc >= 0 else -1.0
    target = tpl[inside]

    def score(m: np.ndarray) -> float:
        moved = ndimage.map_coordinates(img, m[:3, :3] @ points + m[:3, 3:4], order=1)
        return sign * masked_correlation(moved, target, np.ones(moved.shape, bool))

    scores = {name: score(m) for name, m in _probes(points.mean(axis=1)).items()}
    best = max(scores, key=scores.get)
    alignment = sign * ncc - scores[best]
    return {
        "ncc_smooth": round(ncc, 5),
        "alignment": round(alignment, 5),
        "best_probe": best if alignment < 0 else "",
        "coverage": round(coverage, 3),
    }


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
    image_path: str | os.PathLike[str],
    template: Template,
    out_png: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    label: str | None = None,
    motion: dict[str, float | None] | None = None,
) -> dict[str, object]:
    """Correlation, misregistration check and overlay for one MNI image; the JSON feeds
    :func:`gather_qc`. ``motion`` is a PET's largest frame motion (``motion_mm``, ``rotation_deg``)
    and every frame's (``frame_motion``, see :func:`magicflow.preprocess.pet.motion_summary`)."""
    image = np.asarray(load_3d(image_path, "MNI image").dataobj, dtype=np.float32)
    tpl = np.asarray(nib.load(template.t1).dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(template.brain_mask).dataobj) > 0
    ncc = masked_correlation(image, tpl, mask)
    check = alignment_check(image, tpl, mask)
    name = label or Path(image_path).name
    qc_figure(image, tpl, f"{name}  NCC={ncc:.3f} smoothed {check['ncc_smooth']:.3f}", out_png)
    record = {
        "image": str(Path(image_path)),
        "label": name,
        "ncc": round(ncc, 5),
        **check,
        **{key: (motion or {}).get(key) for key in MOTION_COLUMNS},
        "png": str(Path(out_png)),
        "space": template.space,
    }
    write_json(out_json, record)
    return record


#: T2w, FLAIR and PET do not share the T1 template's contrast (T2w correlates negatively,
#: PET weakly), so for them only a near-zero |NCC| -- no structure in common -- is a failure.
OTHER_CONTRAST_MIN_ABS_NCC = 0.1
#: a PET's largest frame motion, from its coregistration sidecar (see magicflow.preprocess.pet)
MOTION_COLUMNS = ("motion_mm", "rotation_deg", "frame_motion")
COLUMNS = ["label", "image", "space", "ncc", "ncc_smooth", "alignment", "best_probe", "coverage", *MOTION_COLUMNS, "png"]


def _flag_reason(row: pd.Series, threshold: float) -> str:
    """Why one QC row is flagged ('' when it is not)."""
    from magicflow.preprocess.pet import MOTION_LIMIT_DEG, MOTION_LIMIT_MM

    reasons = []
    if str(row["label"]).endswith("T1w"):
        smooth = row["ncc_smooth"]
        if pd.isna(smooth):  # a record from before the check: the raw correlation alone
            if row["ncc"] < threshold:
                reasons.append(f"NCC {row['ncc']:.3f} < {threshold:g}")
        elif smooth < threshold:
            reasons.append(f"smoothed NCC {smooth:.3f} < {threshold:g}")
        if not pd.isna(row["alignment"]) and row["alignment"] < 0:
            reasons.append(f"misregistered: moved {row['best_probe']} it fits the template better")
        if not pd.isna(row["coverage"]) and row["coverage"] < MIN_COVERAGE:
            reasons.append(f"partial field of view: {100 * row['coverage']:.0f} % of the template brain")
    elif abs(row["ncc"]) < OTHER_CONTRAST_MIN_ABS_NCC:
        reasons.append(f"|NCC| {abs(row['ncc']):.3f} < {OTHER_CONTRAST_MIN_ABS_NCC:g}")
    if not pd.isna(row["motion_mm"]) and row["motion_mm"] > MOTION_LIMIT_MM:
        reasons.append(f"frame motion {row['motion_mm']:.1f} mm > {MOTION_LIMIT_MM:g}")
    if not pd.isna(row["rotation_deg"]) and row["rotation_deg"] > MOTION_LIMIT_DEG:
        reasons.append(f"frame rotation {row['rotation_deg']:.1f} deg > {MOTION_LIMIT_DEG:g}")
    return "; ".join(reasons)


def gather_qc(
    json_paths: list[str | os.PathLike[str]], out_tsv: str | os.PathLike[str], threshold: float = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """Collect per-image QC JSONs into one TSV. ``flagged`` (with ``flag_reason``) marks a T1w
    (label ending in ``T1w``) whose smoothed NCC is below ``threshold``, that a probe of
    :func:`alignment_check` fits better (misregistered) or that covers less than
    :data:`MIN_COVERAGE` of the template brain, another contrast with |NCC| below
    :data:`OTHER_CONTRAST_MIN_ABS_NCC`, and a PET whose frames moved more than
    :data:`magicflow.preprocess.pet.MOTION_LIMIT_MM` / ``MOTION_LIMIT_DEG``."""
    rows = []
    for path in json_paths:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: unreadable QC record ({error})") from error
    table = pd.DataFrame(rows, columns=COLUMNS)
    is_t1 = table["label"].astype(str).str.endswith("T1w")
    table["threshold"] = np.where(is_t1, threshold, OTHER_CONTRAST_MIN_ABS_NCC)
    table["flag_reason"] = [_flag_reason(row, threshold) for _, row in table.iterrows()] if len(table) else []
    table["flagged"] = table["flag_reason"] != ""
    table = table.sort_values("label", kind="stable").reset_index(drop=True)
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
