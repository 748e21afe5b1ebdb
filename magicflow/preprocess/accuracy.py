"""Registration error against a known answer: the demo cohort's planted transforms.

The demo cohort writes, per subject, where each point of a 2 mm MNI grid sits in its T1w world
(``*_from-<space>_to-T1w_mode-points_xfm.nii.gz``) and the rigid move from the T1w world to each
other series' world (``*_from-T1w_to-<series>_mode-rigid_xfm.txt``). An image's error is the
distance, inside the template brain, between where its registration sends each MNI point and
where the truth puts it, in millimetres of the image's own world. ANTs transforms only: FSL's
warps are another format, and its template is another space than the cohort's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from magicflow.errors import InputError
from magicflow.preprocess.template import Template


@dataclass(frozen=True)
class GroundTruth:
    """One image's planted mapping: the subject's MNI -> T1w points and, for a T2w, FLAIR or
    PET, the rigid T1w -> series move (a 4x4 RAS matrix in a text file)."""

    points: Path
    rigid: Path | None = None


def _points_space(path: Path) -> str:
    match = re.search(r"_from-([A-Za-z0-9]+)_to-T1w_mode-points_xfm\.nii(\.gz)?$", path.name)
    if match is None:
        raise InputError(f"{path}: not a ground-truth points file (expected *_from-<space>_to-T1w_mode-points_xfm.nii.gz)")
    return match.group(1)


def _brain_on(grid: nib.Nifti1Image, template: Template) -> np.ndarray:
    """The template brain mask sampled (nearest) at the voxel centres of ``grid``."""
    mask = nib.load(template.brain_mask)
    ijk = np.indices(grid.shape[:3], dtype=np.float64).reshape(3, -1)
    to_mask = np.linalg.inv(mask.affine) @ grid.affine
    idx = np.rint(to_mask[:3, :3] @ ijk + to_mask[:3, 3:4]).astype(int)
    data = np.asarray(mask.dataobj) > 0
    inside = np.all((idx >= 0) & (idx < np.array(data.shape)[:, None]), axis=0)
    brain = np.zeros(idx.shape[1], bool)
    brain[inside] = data[tuple(idx[:, inside])]
    return brain.reshape(grid.shape[:3])


def _rigid_truth(path: Path) -> np.ndarray:
    try:
        move = np.loadtxt(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable ground-truth rigid move ({error})") from error
    if move.shape != (4, 4) or not np.allclose(move[3], [0, 0, 0, 1]):
        raise InputError(f"{path}: expected a 4x4 affine matrix, got shape {move.shape}")
    return move


def groundtruth_error(transforms: list[Path], truth: GroundTruth, template: Template) -> dict[str, float]:
    """Mean, 95th percentile and largest error (mm) of ANTs ``transforms`` (``[warp, affine]``
    for a T1w, ``[warp, affine, rigid]`` for another series) inside the template brain."""
    from magicflow.preprocess.ants_backend import mni_to_native_points

    space = _points_space(truth.points)
    if space != template.space:
        raise InputError(f"{truth.points}: ground truth in {space}, but the registration's template is {template.space}")
    try:
        points_img = nib.load(truth.points)
        expected = np.asarray(points_img.get_fdata(), dtype=np.float64)
    except Exception as error:  # nibabel raises several kinds for a damaged file
        raise InputError(f"{truth.points}: unreadable ground-truth points ({error})") from error
    if expected.ndim != 4 or expected.shape[3] != 3:
        raise InputError(f"{truth.points}: expected an (X,Y,Z,3) points image, got shape {expected.shape}")
    if truth.rigid is not None:
        move = _rigid_truth(truth.rigid)
        expected = expected @ move[:3, :3].T + move[:3, 3]
    grid = nib.Nifti1Image(np.zeros(expected.shape[:3], np.float32), points_img.affine)
    found = mni_to_native_points(transforms, grid)
    error = np.linalg.norm(found - expected, axis=-1)[_brain_on(grid, template)]
    return {
        "mean": round(float(error.mean()), 3),
        "p95": round(float(np.percentile(error, 95)), 3),
        "max": round(float(error.max()), 3),
    }


def demo_groundtruth(image: str | Path, space: str) -> GroundTruth | None:
    """The planted truth of one image of a ``magicflow demo-cohort`` dataset, from its path
    (``<root>/sub-X/ses-Y/<datatype>/sub-X_ses-Y_<series>.nii.gz``; the truth is under
    ``<root>/derivatives/groundtruth/sub-X``), or None when the cohort has no truth in ``space``
    (another backend's template)."""
    image = Path(image)
    subject, _session, series = image.name.removesuffix(".gz").removesuffix(".nii").split("_", 2)
    truth = image.parents[3] / "derivatives" / "groundtruth" / subject
    points = truth / f"{subject}_from-{space}_to-T1w_mode-points_xfm.nii.gz"
    if not points.is_file():
        return None
    return GroundTruth(points, None if series == "T1w" else truth / f"{subject}_from-T1w_to-{series}_mode-rigid_xfm.txt")
