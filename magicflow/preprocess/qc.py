"""Registration QC: a misregistration check that noise and contrast do not fool
(:func:`alignment_check`), PET frame motion, and an overlay figure.

Each image is scored by normalised mutual information, which asks only that intensities co-vary
consistently: a T1w with the template T1, a T2w, FLAIR or PET with its own subject's T1w
registered to the template (a correlation with a T1 template says little about another
contrast: issue 33's FDG PET lying exactly on its T1 read NCC -0.12 and fitted the template
better moved 4 mm). A correlation does not suit a T1w either where its contrast is not the
template's: a contrast-enhanced T1w's bright vessels and dura took a correctly registered demo
T1w from NCC 0.95-0.99 to 0.67-0.77 and made a 4 mm probe fit better in 7 of 20, where its NMI
stays above every probe's. ``qc.tsv`` names the measure of each row (records written before
T1w were scored by NMI keep their NCC and are judged by it).

The overlay draws the edges of what the image was scored against (Canny: the template T1, or
the subject's T1w) over the registered image in three orthogonal planes through the grid
centre; a misregistration shows as edges that do not follow the image's boundaries. Coronal and axial views are radiological (subject's right on
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

#: floor of a T1w's NMI with the template T1 (``--threshold``, config registration.qc_threshold):
#: the 20 registered demo T1w score 1.22-1.54 however noisy, with a planted contrast enhancement
#: 1.10-1.27, shifted 20 mm 1.026-1.028, pure noise 1.01; misregistrations of a few mm are the
#: probes' to find, so this only has to catch "nothing in common"
DEFAULT_THRESHOLD = 1.05
#: the floor of T1w records that still carry the smoothed correlation (written before NMI)
NCC_THRESHOLD = 0.6


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
#: an image covering less of the template's brain than this is flagged (a partial field of view:
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


#: bins per image of the joint histogram behind :func:`normalised_mutual_information`
NMI_BINS = 32
#: what each measure of :func:`alignment_check` is, as ``qc.tsv`` names it
MEASURES = {"ncc": "NCC", "nmi": "NMI"}


def normalised_mutual_information(
    a: np.ndarray, b: np.ndarray, a_range: tuple[float, float], b_range: tuple[float, float]
) -> float:
    """Studholme's NMI, (H(a) + H(b)) / H(a, b), of paired samples (values clipped to the
    ranges, :data:`NMI_BINS` bins each): 1 for independent images, 2 when one determines the
    other. It asks only that intensities co-vary consistently, not linearly, so it scores a
    PET or T2w against a T1w: it is what their rigid coregistration maximises."""
    joint, _, _ = np.histogram2d(np.clip(a, *a_range), np.clip(b, *b_range), bins=NMI_BINS, range=(a_range, b_range))
    p = joint / max(joint.sum(), 1.0)

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    joint_entropy = entropy(p)
    return (entropy(p.sum(axis=1)) + entropy(p.sum(axis=0))) / joint_entropy if joint_entropy > 0 else 1.0


def alignment_check(
    image: np.ndarray, reference: np.ndarray, mask: np.ndarray, measure: str = "nmi", reference_name: str = "the template T1"
) -> dict[str, object]:
    """Tell a misregistration from a noisy or differently contrasted scan.

    ``measure`` scores the image against ``reference`` (called ``reference_name`` in the
    measure's name): ``nmi`` (normalised mutual information, what the pipeline uses) or ``ncc``
    (correlation, for images of the reference's own contrast). A raw score mixes misregistration with noise and contrast:
    here both images are smoothed (noise averages out), and the image is probed with small
    shifts and rotations: a well-registered image, however noisy or contrasted, scores best
    where it is, while a misregistered one scores better after some probe. Returns the
    ``measure`` (named), its ``score`` unmoved, ``alignment`` (the score's excess over the best
    probe's: negative when a probe fits better), that probe ``best_probe`` and the fraction of
    the template brain inside the scan's field of view ``coverage``. A correlation keeps its
    sign (a T2w correlates negatively with a T1); probes are scored with the same sign."""
    from scipy import ndimage

    if measure not in MEASURES:
        raise ValueError(f"measure {measure!r}: expected one of {', '.join(MEASURES)}")
    img, ref = _block_mean(image), _block_mean(reference)
    brain = _block_mean(mask.astype(np.float32)) > 0.5
    # the scan's field of view in MNI (outside it the resampled image is exactly 0; holes of
    # dark tissue filled): a partial field of view is judged where it has data, and reported
    seen = ndimage.binary_fill_holes(_block_mean((image != 0).astype(np.float32)) > 0)
    coverage = float((brain & seen).sum() / max(int(brain.sum()), 1))
    inside = brain & ndimage.binary_erosion(seen, iterations=PROBE_ERODE)  # probes stay inside the scan
    inside &= ndimage.binary_fill_holes(ref != 0)  # and the reference has data there (a subject's T1w may not)
    named = f"{MEASURES[measure]} with {reference_name} (smoothed {SMOOTH_MM:g} mm)"
    result: dict[str, object] = {"measure": named, "coverage": round(coverage, 3)}
    if inside.sum() < 100:
        return {**result, "score": 0.0, "alignment": float("nan"), "best_probe": ""}
    sigma = SMOOTH_MM / 2.0
    img, ref = ndimage.gaussian_filter(img, sigma), ndimage.gaussian_filter(ref, sigma)
    points = np.argwhere(inside).T.astype(np.float32)  # only the brain's voxels are compared
    target = ref[inside]
    if measure == "ncc":
        sign = 1.0 if masked_correlation(img, ref, inside) >= 0 else -1.0

        def similarity(values: np.ndarray) -> float:
            return sign * masked_correlation(values, target, np.ones(values.shape, bool))
    else:
        sign = 1.0
        image_range = tuple(float(v) for v in np.percentile(img[inside], (0.5, 99.5)))
        target_range = tuple(float(v) for v in np.percentile(target, (0.5, 99.5)))

        def similarity(values: np.ndarray) -> float:
            return normalised_mutual_information(values, target, image_range, target_range)

    score = similarity(img[inside])
    probes = {
        name: similarity(ndimage.map_coordinates(img, m[:3, :3] @ points + m[:3, 3:4], order=1))
        for name, m in _probes(points.mean(axis=1)).items()
    }
    best = max(probes, key=probes.get)
    alignment = score - probes[best]
    return {
        **result,
        "score": round(sign * score, 5),
        "alignment": round(alignment, 5),
        "best_probe": best if alignment < 0 else "",
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


def qc_figure(
    image: np.ndarray, reference: np.ndarray, title: str, out_png: str | os.PathLike[str], where: np.ndarray | None = None
) -> None:
    """Write the three-plane overlay PNG (atomically): the reference's edges over the image,
    only ``where`` (the template's dilated brain: a subject's T1w has noise edges around the head)."""
    vmax = np.percentile(image[image > 0], 99.5) if np.any(image > 0) else 1.0
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), dpi=100)
    inside = _views(np.ones(image.shape, bool) if where is None else where)
    for ax, img_view, ref_view, in_view, name in zip(
        axes, _views(image), _views(reference), inside, ("sagittal", "coronal", "axial")
    ):
        ax.imshow(img_view, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        edges = feature.canny(ref_view.astype(float), sigma=2.0) & in_view
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
    t1w: str | os.PathLike[str] | None = None,
) -> dict[str, object]:
    """Misregistration check and overlay for one MNI image; the JSON feeds :func:`gather_qc`.

    Without ``t1w`` the image is a T1w, scored by NMI with the template T1 (and its raw
    correlation ``ncc`` recorded: a negative one is a contrast unlike a T1's); with ``t1w`` (the
    subject's T1w registered to the same grid) it is a T2w, FLAIR or PET, scored by NMI with that
    T1w, which shares its anatomy if not its contrast. ``motion`` is a PET's largest frame motion (``motion_mm``, ``rotation_deg``) and
    every frame's (``frame_motion``, see :func:`magicflow.preprocess.pet.motion_summary`)."""
    image = np.asarray(load_3d(image_path, "MNI image").dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(template.brain_mask).dataobj) > 0
    reference_path = Path(template.t1 if t1w is None else t1w)
    reference = np.asarray(load_3d(reference_path, "T1w in MNI").dataobj, dtype=np.float32)
    if reference.shape != image.shape:
        raise InputError(f"{reference_path}: shape {reference.shape} differs from the image {image_path} ({image.shape})")
    ncc = None if t1w is not None else round(masked_correlation(image, reference, mask), 5)
    check = alignment_check(image, reference, mask, "nmi", "the template T1" if t1w is None else "its own T1w")
    name = label or Path(image_path).name
    short = "NMI with the template" if t1w is None else "NMI with its T1w"
    edges = "the template" if t1w is None else "its T1w"
    where = np.asarray(nib.load(template.brain_mask_dilated).dataobj) > 0
    qc_figure(image, reference, f"{name}  {short} {check['score']:.3f} (smoothed); edges of {edges}", out_png, where)
    record = {
        "image": str(Path(image_path)),
        "label": name,
        "reference": str(reference_path),
        **check,
        "ncc": ncc,
        **{key: (motion or {}).get(key) for key in MOTION_COLUMNS},
        "png": str(Path(out_png)),
        "space": template.space,
    }
    write_json(out_json, record)
    return record


#: floor of a T2w's, FLAIR's or PET's NMI with its own T1w (1 means independent images):
#: below it the image shares no structure with its T1w (a wrong or empty image)
MIN_NMI = 1.02
#: a PET's largest frame motion, from its coregistration sidecar (see magicflow.preprocess.pet)
MOTION_COLUMNS = ("motion_mm", "rotation_deg", "frame_motion")
COLUMNS = [
    "label",
    "image",
    "space",
    "measure",
    "reference",
    "score",
    "alignment",
    "best_probe",
    "coverage",
    "ncc",
    *MOTION_COLUMNS,
    "png",
]


def _flag_reason(row: pd.Series) -> str:
    """Why one QC row is flagged ('' when it is not), its score held to the row's ``threshold``
    (:func:`gather_qc` decides it per measure)."""
    from magicflow.preprocess.pet import MOTION_LIMIT_DEG, MOTION_LIMIT_MM

    reasons = []
    score, floor = row["score"], row["threshold"]
    if str(row["label"]).endswith("T1w"):
        if pd.isna(score):  # a record from before the check: the raw correlation alone
            if row["ncc"] < floor:
                reasons.append(f"NCC {row['ncc']:.3f} < {floor:g}")
        elif score < floor:
            if str(row["measure"]).startswith("NCC"):  # a record from before NMI
                reasons.append(f"smoothed NCC {score:.3f} < {floor:g}")
            else:
                reasons.append(f"NMI with the template {score:.3f} < {floor:g}: nothing in common")
        if not pd.isna(row["ncc"]) and row["ncc"] < 0:
            reasons.append(f"contrast unlike a T1: correlates negatively with the template T1 (NCC {row['ncc']:.2f})")
        if not pd.isna(row["alignment"]) and row["alignment"] < 0:
            reasons.append(f"misregistered: moved {row['best_probe']} it fits the template better")
    else:
        if not pd.isna(score) and score < floor:
            reasons.append(f"NMI with its T1w {score:.3f} < {floor:g}: nothing in common")
        if not pd.isna(row["alignment"]) and row["alignment"] < 0:
            reasons.append(f"misregistered: moved {row['best_probe']} it fits its T1w better")
    if not pd.isna(row["coverage"]) and row["coverage"] < MIN_COVERAGE:
        reasons.append(f"partial field of view: {100 * row['coverage']:.0f} % of the template brain")
    if not pd.isna(row["motion_mm"]) and row["motion_mm"] > MOTION_LIMIT_MM:
        reasons.append(f"frame motion {row['motion_mm']:.1f} mm > {MOTION_LIMIT_MM:g}")
    if not pd.isna(row["rotation_deg"]) and row["rotation_deg"] > MOTION_LIMIT_DEG:
        reasons.append(f"frame rotation {row['rotation_deg']:.1f} deg > {MOTION_LIMIT_DEG:g}")
    return "; ".join(reasons)


def gather_qc(
    json_paths: list[str | os.PathLike[str]], out_tsv: str | os.PathLike[str], threshold: float = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """Collect per-image QC JSONs into one TSV, each row's ``measure`` named. ``flagged`` (with
    ``flag_reason``) marks a T1w (label ending in ``T1w``) whose NMI with the template is below
    ``threshold`` or that correlates negatively with it (not a T1 contrast); another contrast
    whose NMI with its T1w is below :data:`MIN_NMI`; any image that a probe of
    :func:`alignment_check` fits better (misregistered) or that covers less than
    :data:`MIN_COVERAGE` of the template brain; and a PET whose frames moved more than :data:`magicflow.preprocess.pet.MOTION_LIMIT_MM` / ``MOTION_LIMIT_DEG``."""
    rows = []
    for path in json_paths:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: unreadable QC record ({error})") from error
    table = pd.DataFrame(rows, columns=COLUMNS)
    is_t1 = table["label"].astype(str).str.endswith("T1w")
    # the floor per row: a T1w's NMI, or the correlation of a T1w record written before NMI; another contrast's NMI
    legacy = table["measure"].astype(str).str.startswith("NCC") | table["score"].isna()
    table["threshold"] = np.where(is_t1, np.where(legacy, NCC_THRESHOLD, threshold), MIN_NMI)
    table["flag_reason"] = [_flag_reason(row) for _, row in table.iterrows()] if len(table) else []
    table["flagged"] = table["flag_reason"] != ""
    table = table.sort_values("label", kind="stable").reset_index(drop=True)
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
