"""The demo cohort's ground truth on the model's slices: where AD tau uptake was put.

The demo writes, per AD subject, a mask of the extra tau uptake in the template space its
anatomy was drawn in (``derivatives/groundtruth/<sub>/<sub>_space-<space>_desc-ADtau_mask``).
Resampled onto the MNI 1 mm grid the slices come from and cut at the same offset, it says
which pixels of a slice carry the disease signal, so attribution maps can be scored against
it, which the paper could not do on ADNI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.image import resample_img

from magicflow.errors import InputError
from magicflow.preprocess.template import GRID_1MM_AFFINE, GRID_1MM_SHAPE
from magicflow.slices import coronal_slice


def subject_mask_volume(groundtruth_dir: Path, subject: str) -> np.ndarray | None:
    """The subject's AD tau mask on the MNI 1 mm grid (bool), or None if the demo wrote none."""
    sub = subject if subject.startswith("sub-") else f"sub-{subject}"
    found = sorted((Path(groundtruth_dir) / sub).glob(f"{sub}_space-*_desc-ADtau_mask.nii.gz"))
    if not found:
        return None
    try:
        img = nib.load(found[0])
        on_grid = resample_img(
            img,
            target_affine=GRID_1MM_AFFINE,
            target_shape=GRID_1MM_SHAPE,
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        )
    except (OSError, ValueError) as error:
        raise InputError(f"{found[0]}: cannot read the ground-truth mask: {error}") from None
    return np.asarray(on_grid.dataobj) > 0


def slice_masks(groundtruth_dir: Path, subjects: list[str], offsets: list[int]) -> np.ndarray:
    """(N, 182, 182) bool: each (subject, offset) slice's ground-truth uptake mask; all False
    for subjects without extra uptake (CN) or without a ground-truth file."""
    cache: dict[str, np.ndarray | None] = {}
    out = np.zeros((len(subjects), 182, 182), dtype=bool)
    for i, (subject, offset) in enumerate(zip(subjects, offsets)):
        if subject not in cache:
            cache[subject] = subject_mask_volume(groundtruth_dir, subject)
        volume = cache[subject]
        if volume is not None:
            out[i] = coronal_slice(volume.astype(np.float32), int(offset))[0] > 0.5
    return out
