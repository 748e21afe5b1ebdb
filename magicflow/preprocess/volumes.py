"""Checked NIfTI loading: every bad input becomes an InputError naming the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from magicflow.errors import InputError


def load_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Load a NIfTI and read its data once, so truncated files fail here and not mid-registration."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises several types for corrupt or truncated files
        raise InputError(f"{path}: unreadable or truncated NIfTI ({type(error).__name__}: {error})") from error
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image ({type(img).__name__})")
    return nib.Nifti1Image(data, img.affine, img.header)


def check_values(path: str | os.PathLike[str], data: np.ndarray) -> None:
    """Reject images with NaN/inf voxels or no signal: registration would silently produce garbage."""
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"{path}: {bad} NaN or infinite voxels")
    if not np.any(data):
        raise InputError(f"{path}: image is all zero")
    if float(data.max()) == float(data.min()):
        raise InputError(f"{path}: image is constant ({float(data.max())})")


def load_3d(path: str | os.PathLike[str], what: str = "image") -> nib.Nifti1Image:
    """Load a 3D image (a trailing axis of length 1 is dropped) and check its values."""
    img = load_nifti(path)
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: {what} must be 3D, got shape {tuple(data.shape)}")
    check_values(path, data)
    return nib.Nifti1Image(data.astype(np.float32), img.affine)


def save_float32(img: nib.Nifti1Image, path: str | os.PathLike[str]) -> None:
    """Save as float32 with sform and qform set to the image affine (scanner code kept 1)."""
    out = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    out.set_sform(img.affine, code=1)
    out.set_qform(img.affine, code=1)
    nib.save(out, path)
