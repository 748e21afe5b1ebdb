"""BIDS-derivative names of preprocessed images, shared by the preprocessing rules and ``slices``."""

from __future__ import annotations

import os
from pathlib import Path

from magicflow.errors import InputError

MRI = {"T1W": "T1w", "T1": "T1w", "T2W": "T2w", "T2": "T2w", "FLAIR": "FLAIR"}


def _strip(value: object, prefix: str) -> str:
    text = str(value).strip()
    return text[len(prefix):] if text.startswith(prefix) else text


def modality_suffix(modality: str) -> str:
    """Canonical BIDS suffix: T1w, T2w, FLAIR or pet."""
    key = str(modality).strip().upper()
    if key in MRI:
        return MRI[key]
    if key == "PET":
        return "pet"
    raise InputError(f"modality {modality!r}: expected T1w, T2w, FLAIR or PET")


def mni_image_path(
    preproc_dir: str | os.PathLike[str], subject: str, session: str, modality: str, tracer: str | None, space: str
) -> Path:
    """``<dir>/sub-S/ses-X/<anat|pet>/sub-S_ses-X[_trc-T]_space-<space>_desc-preproc_<suffix>.nii.gz``."""
    suffix = modality_suffix(modality)
    sub, ses = _strip(subject, "sub-"), _strip(session, "ses-")
    folder = "pet" if suffix == "pet" else "anat"
    if suffix == "pet" and not tracer:
        raise InputError(f"sub-{sub} ses-{ses}: PET row without a tracer")
    trc = f"_trc-{tracer}" if suffix == "pet" else ""
    return Path(preproc_dir) / f"sub-{sub}" / f"ses-{ses}" / folder / f"sub-{sub}_ses-{ses}{trc}_space-{space}_desc-preproc_{suffix}.nii.gz"
