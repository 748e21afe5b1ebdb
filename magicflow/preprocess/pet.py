"""PET frames: realign a 4D acquisition and collapse it to one static image.

The paper keeps the voxel-wise median across the plateau frames: unlike the mean it is not
dragged by one frame with outlying intensities. A median does not undo head motion between
frames (it blurs them), so the frames are first rigidly realigned to the middle frame (by the
backend: mcflirt or ANTs) and their motion is recorded for QC.

Frame timing and the plateau check: :mod:`magicflow.datasets.pet_timing`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from magicflow.datasets.pet_timing import FrameTiming, TimingWarning, check_plateau, read_timing
from magicflow.errors import InputError
from magicflow.preprocess.volumes import check_values, load_nifti


def median_frames(data: np.ndarray) -> np.ndarray:
    """Voxel-wise median over the last (frame) axis, float32."""
    return np.median(np.asarray(data, dtype=np.float32), axis=-1).astype(np.float32)


#: radius (mm) of the sphere around the head centre on which frame motion is measured: about
#: the brain's half-width, so rotations count as the displacement they cause at the cortex
MOTION_RADIUS_MM = 60.0
#: frame displacement (mm, at MOTION_RADIUS_MM) or rotation (degrees) relative to the reference
#: frame above which the QC table flags a PET: half the ~8 mm resolution of a brain PET; frames
#: are realigned, but motion this large also corrupts the attenuation correction of the frame
MOTION_LIMIT_MM = 4.0
MOTION_LIMIT_DEG = 3.0


def reference_frame(frames: int) -> int:
    """The frame the others are realigned to: the middle one (as mcflirt's default)."""
    return frames // 2


@dataclass(frozen=True)
class Realignment:
    """Frames rigidly realigned to ``reference``: ``image`` (4D, on the reference frame's grid),
    ``matrices`` (4x4 per frame, reference mm -> frame mm, in any mm coordinates in which
    ``centre_mm`` is the head centre) and how it was done."""

    image: nib.Nifti1Image
    reference: int
    matrices: tuple[np.ndarray, ...]
    centre_mm: np.ndarray
    method: str


#: a backend's frame realignment: (4D image, reference frame) -> Realignment
Realigner = Callable[[nib.Nifti1Image, int], Realignment]


@dataclass(frozen=True)
class FrameMotion:
    displacement_mm: float  # largest displacement of a point MOTION_RADIUS_MM from the head centre
    rotation_deg: float


def frame_motion(matrix: np.ndarray, centre_mm: np.ndarray, radius: float = MOTION_RADIUS_MM) -> FrameMotion:
    """Displacement and rotation of one rigid frame transform, measured on a sphere around the centre."""
    k = np.arange(200) + 0.5  # Fibonacci sphere: near-uniform directions
    polar, azimuth = np.arccos(1 - 2 * k / len(k)), np.pi * (1 + 5**0.5) * k
    directions = np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], 1)
    points = np.vstack([np.zeros(3), radius * directions]) + np.asarray(centre_mm, dtype=float)
    moved = points @ matrix[:3, :3].T + matrix[:3, 3]
    cosine = np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1.0, 1.0)
    return FrameMotion(
        round(float(np.linalg.norm(moved - points, axis=1).max()), 3), round(float(np.degrees(np.arccos(cosine))), 3)
    )


@dataclass(frozen=True)
class StaticPET:
    image: nib.Nifti1Image
    frames: int
    timing: FrameTiming | None
    warning: str | None
    plateau: str = "not checked: no sidecar"
    alignment: str = "none"
    motion: tuple[FrameMotion, ...] = ()

    @property
    def large_motion(self) -> bool:
        return any(m.displacement_mm > MOTION_LIMIT_MM or m.rotation_deg > MOTION_LIMIT_DEG for m in self.motion)


def static_pet(
    pet_path: str | os.PathLike[str],
    sidecar: str | os.PathLike[str] | None = None,
    tracer: str | None = None,
    realign: Realigner | None = None,
) -> StaticPET:
    """Load a PET and return one static 3D image, with the timing of its sidecar (``sidecar``,
    else the file beside the image) and ``tracer`` where the sidecar names none.

    4D with at least 2 frames -> frames realigned by ``realign`` (the backend's; the pipeline always
    passes one: a median rejects intensity outliers, not head motion between frames) -> median;
    3D (or 4D with one frame: a static reconstruction) passes through with a warning if the
    sidecar lists several frames. A 4D file holding exactly one frame among several declared
    ones is caught by the sidecar check; two frames give a median that is just their mean, so 4D
    PET needs 3 or more frames to be robust (2 warn)."""
    img = load_nifti(pet_path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (3, 4):
        raise InputError(f"{pet_path}: PET must be 3D or 4D, got shape {data.shape}")
    frames = 1 if data.ndim == 3 else data.shape[3]
    check_values(pet_path, data)
    timing = read_timing(pet_path, frames, sidecar, tracer)
    plateau, note = check_plateau(timing, pet_path) if timing is not None else ("not checked: no sidecar", None)
    if frames == 2:
        note = f"{pet_path}: only 2 frames; their median is their mean, not robust to a bad frame"
        warnings.warn(note, TimingWarning, stacklevel=2)
    affine, alignment, motion = img.affine, "none", ()
    if frames > 1 and realign is not None:
        realigned = realign(nib.Nifti1Image(data, img.affine), reference_frame(frames))
        data, affine = np.asarray(realigned.image.dataobj, dtype=np.float32), realigned.image.affine
        alignment = realigned.method
        motion = tuple(frame_motion(m, realigned.centre_mm) for m in realigned.matrices)
    static = median_frames(data) if frames > 1 else data
    check_values(pet_path, static)
    return StaticPET(nib.Nifti1Image(static, affine), frames, timing, note, plateau, alignment, motion)


def motion_summary(record: dict) -> dict[str, object]:
    """The QC table's motion fields from a coregistration record: the largest displacement and
    rotation, and every frame's as ``"0.0 mm 0.0 deg | 1.2 mm 0.8 deg | ..."``."""
    frames = record.get("FrameMotion") or []
    return {
        "motion_mm": record.get("MaxFrameDisplacementMM"),
        "rotation_deg": record.get("MaxFrameRotationDeg"),
        "frame_motion": " | ".join(f"{m['displacement_mm']:.1f} mm {m['rotation_deg']:.1f} deg" for m in frames) or None,
    }


def pet_record(static: StaticPET) -> dict[str, object]:
    """The PET fields of the coregistration sidecar: frames, tracer and where it came from,
    frame times and what they count from, and the plateau check's outcome."""
    timing = static.timing
    return {
        "Sidecar": timing.sidecar if timing else None,
        "Frames": static.frames,
        "FrameCombination": "median" if static.frames > 1 else "none (static)",
        "TracerName": timing.tracer if timing else None,
        "TracerSource": timing.tracer_source if timing else None,
        "FrameTimesStart": list(timing.starts_s) if timing else None,
        "FrameDuration": list(timing.durations_s) if timing else None,
        "FrameTimesFrom": timing.origin if timing else None,
        "FrameTimesSource": timing.source if timing else None,
        "Plateau": static.plateau,
        "TimingWarning": static.warning,
        "FrameAlignment": static.alignment,
        "FrameMotion": [{"displacement_mm": m.displacement_mm, "rotation_deg": m.rotation_deg} for m in static.motion],
        "MaxFrameDisplacementMM": max((m.displacement_mm for m in static.motion), default=None),
        "MaxFrameRotationDeg": max((m.rotation_deg for m in static.motion), default=None),
        "LargeMotion": static.large_motion,
    }
