"""PET frames: collapse a 4D acquisition to one static image and check its timing.

The paper keeps the voxel-wise median across the plateau frames: unlike the mean it is not
dragged by one frame spoiled by head motion. Plateau windows (minutes after injection) follow
the ADNI acquisition protocols quoted in the MAGIC-Flow paper (Appendix B.1): FDG 30-60,
florbetapir (AV45) 50-70, NAV-4694 50-70, florbetaben 90-110, MK-6240 90-110, flortaucipir
(AV1451) 75-105, PI-2620 45-75. PiB 50-70 is not in the paper; it is the usual static window of
PiB studies (an assumption, stated here). Tracers not listed get a warning, not an error."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from magicflow.errors import InputError
from magicflow.preprocess.volumes import check_values, load_nifti

#: tracer -> (start, end) of the plateau window in minutes post-injection
PLATEAU_MINUTES: dict[str, tuple[float, float]] = {
    "FDG": (30, 60),
    "FLORBETAPIR": (50, 70),
    "NAV4694": (50, 70),
    "FLORBETABEN": (90, 110),
    "MK6240": (90, 110),
    "FLORTAUCIPIR": (75, 105),
    "PI2620": (45, 75),
    "PIB": (50, 70),
}
ALIASES = {"AV45": "FLORBETAPIR", "AMYVID": "FLORBETAPIR", "AV1451": "FLORTAUCIPIR", "T807": "FLORTAUCIPIR",
           "TAUVID": "FLORTAUCIPIR", "FBB": "FLORBETABEN", "NEURACEQ": "FLORBETABEN", "FLUTAFURANOL": "NAV4694",
           "18FFDG": "FDG", "FLUORODEOXYGLUCOSE": "FDG", "11CPIB": "PIB"}
#: frames may start or end this many minutes outside the window before a warning
TOLERANCE_MINUTES = 2.5


class TimingWarning(UserWarning):
    """PET timing that is unusual but does not stop processing."""


@dataclass(frozen=True)
class FrameTiming:
    tracer: str
    starts_s: tuple[float, ...]
    durations_s: tuple[float, ...]


def canonical_tracer(name: str) -> str:
    """Upper-case, punctuation-free tracer name with brand/code aliases resolved (AV45 -> FLORBETAPIR)."""
    key = "".join(ch for ch in name.upper() if ch.isalnum())
    return ALIASES.get(key, key)


def sidecar_path(pet_path: str | os.PathLike[str]) -> Path:
    """BIDS sidecar next to the image (``x_pet.nii.gz`` -> ``x_pet.json``)."""
    path = Path(pet_path)
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def read_timing(pet_path: str | os.PathLike[str], frames: int) -> FrameTiming | None:
    """Frame timing from the BIDS sidecar. A missing sidecar is a warning (the image is usable,
    only the timing cannot be checked); a sidecar that contradicts the image is an error."""
    side = sidecar_path(pet_path)
    if not side.is_file():
        warnings.warn(f"{pet_path}: no BIDS sidecar ({side.name}); frame timing and tracer not checked", TimingWarning, stacklevel=2)
        return None
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{side}: not valid JSON ({error})") from error
    missing = [k for k in ("TracerName", "FrameTimesStart", "FrameDuration") if k not in meta]
    if missing:
        raise InputError(f"{side}: missing {', '.join(missing)}")
    starts = tuple(float(v) for v in np.atleast_1d(meta["FrameTimesStart"]))
    durations = tuple(float(v) for v in np.atleast_1d(meta["FrameDuration"]))
    if len(starts) != frames or len(durations) != frames:
        raise InputError(
            f"{side}: {len(starts)} FrameTimesStart / {len(durations)} FrameDuration values for {frames} frames in the image"
        )
    return FrameTiming(str(meta["TracerName"]), starts, durations)


def check_plateau(timing: FrameTiming, source: str | os.PathLike[str]) -> str | None:
    """Warn when frames fall outside the tracer's plateau window; return the warning text (or None)."""
    window = PLATEAU_MINUTES.get(canonical_tracer(timing.tracer))
    if window is None:
        message = f"{source}: tracer {timing.tracer!r} has no known plateau window; timing not checked"
    else:
        start = min(timing.starts_s) / 60.0
        end = max(s + d for s, d in zip(timing.starts_s, timing.durations_s)) / 60.0
        lo, hi = window
        if start >= lo - TOLERANCE_MINUTES and end <= hi + TOLERANCE_MINUTES:
            return None
        message = (f"{source}: frames span {start:g}-{end:g} min, outside the {timing.tracer} plateau "
                   f"{lo:g}-{hi:g} min (+/-{TOLERANCE_MINUTES:g})")
    warnings.warn(message, TimingWarning, stacklevel=2)
    return message


def median_frames(data: np.ndarray) -> np.ndarray:
    """Voxel-wise median over the last (frame) axis, float32."""
    return np.median(np.asarray(data, dtype=np.float32), axis=-1).astype(np.float32)


@dataclass(frozen=True)
class StaticPET:
    image: nib.Nifti1Image
    frames: int
    timing: FrameTiming | None
    warning: str | None


def static_pet(pet_path: str | os.PathLike[str]) -> StaticPET:
    """Load a PET and return one static 3D image.

    4D with at least 2 frames -> median; 3D (or 4D with one frame: a static reconstruction) passes
    through with a warning if the sidecar lists several frames. A 4D file holding exactly one
    frame among several declared ones is caught by the sidecar check; two frames give a median
    that is just their mean, so 4D PET needs 3 or more frames to be robust (2 warn)."""
    img = load_nifti(pet_path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (3, 4):
        raise InputError(f"{pet_path}: PET must be 3D or 4D, got shape {data.shape}")
    frames = 1 if data.ndim == 3 else data.shape[3]
    check_values(pet_path, data)
    timing = read_timing(pet_path, frames)
    note = check_plateau(timing, pet_path) if timing is not None else None
    if frames == 2:
        note = f"{pet_path}: only 2 frames; their median is their mean, not robust to a bad frame"
        warnings.warn(note, TimingWarning, stacklevel=2)
    static = median_frames(data) if frames > 1 else data
    check_values(pet_path, static)
    return StaticPET(nib.Nifti1Image(static, img.affine), frames, timing, note)
