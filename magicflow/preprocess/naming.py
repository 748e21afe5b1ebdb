"""BIDS-derivative names of preprocessed images, shared by the preprocessing rules and ``slices``."""

from __future__ import annotations

import os
from pathlib import Path

from magicflow.errors import InputError

MRI = {"T1W": "T1w", "T1": "T1w", "T2W": "T2w", "T2": "T2w", "FLAIR": "FLAIR"}


def _strip(value: object, prefix: str) -> str:
    text = str(value).strip()
    return text[len(prefix) :] if text.startswith(prefix) else text


def modality_suffix(modality: str) -> str:
    """Canonical BIDS suffix: T1w, T2w, FLAIR or pet."""
    key = str(modality).strip().upper()
    if key in MRI:
        return MRI[key]
    if key == "PET":
        return "pet"
    raise InputError(f"modality {modality!r}: expected T1w, T2w, FLAIR or PET")


def image_dir(preproc_dir: str | os.PathLike[str], image: str) -> Path:
    """Folder of one image's derivatives: ``<preproc_dir>/<image stem>/``.

    Keyed on the manifest's unique ``image`` stem (not subject/session/modality), so two
    series of one kind in one session, or datasets without sessions, never collide."""
    return Path(preproc_dir) / image


def mni_image_path(preproc_dir: str | os.PathLike[str], image: str, space: str) -> Path:
    """``<preproc_dir>/<image>/<image>_space-<space>.nii.gz``: the image on the MNI 1 mm grid."""
    return image_dir(preproc_dir, image) / f"{image}_space-{space}.nii.gz"
