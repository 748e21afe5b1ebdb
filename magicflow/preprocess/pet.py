"""PET frames: realign a 4D acquisition, collapse it to one static image and check its timing.

The paper keeps the voxel-wise median across the plateau frames: unlike the mean it is not
dragged by one frame with outlying intensities. A median does not undo head motion between
frames (it blurs them), so the frames are first rigidly realigned to the middle frame (by the
backend: mcflirt or ANTs) and their motion is recorded for QC. Plateau windows (minutes after injection) follow
the ADNI acquisition protocols quoted in the MAGIC-Flow paper (Appendix B.1): FDG 30-60,
florbetapir (AV45) 50-70, NAV-4694 50-70, florbetaben 90-110, MK-6240 90-110, flortaucipir
(AV1451) 75-105, PI-2620 45-75. PiB 50-70 is not in the paper; it is the usual static window of
PiB studies (an assumption, stated here). Tracers not listed get a warning, not an error.

Frame timing comes from the image's sidecar (the one the manifest names, else the one beside
the image), read as BIDS and as dcm2niix write it:

* starts: ``FrameTimesStart``; where it is absent (dcm2niix writes it only when the DICOM has a
  Series Time) or its frames overlap (dcm2niix writes [0, 0, 0] for a series crossing
  midnight), ``FrameReferenceTime - FrameDuration / 2``: DICOM's Frame Reference Time is an
  offset from the Series Time, at mid-frame for a long-lived isotope (PS3.3 C.8.9.4.1.5;
  where that would start the first frame before the series, the references are frame starts,
  as some vendors write them);
* what they count from: BIDS counts from ``TimeZero`` and gives the injection as
  ``InjectionStart`` on the same clock; a clock ``RadiopharmaceuticalStartTime`` (DICOM
  0018,1072) with ``TimeZero``/``SeriesTime`` gives it too, across midnight. Without either,
  times of a sidecar that says they count from the scan (``ScanStart``, ``TimeZero``,
  ``SeriesTime``, derived from Frame Reference Time, frames stacked by
  :func:`magicflow.datasets.dicom.assemble_frames`) are not post-injection times, and the
  plateau is recorded as not checked rather than reported as missed. dcm2niix (v1.0.20260724)
  never writes the injection time: since v1.0.20260416 it omits InjectionStart on purpose, as
  Siemens store the dose-measurement time in Radiopharmaceutical Start Time. A bare
  ``FrameTimesStart`` with none of these keys (no converter writes one; hand-made sidecars
  do) is read as post-injection, as this module always has: an assumption, recorded in the
  sidecar of the coregistration.
* tracer: the sidecar's ``TracerName``, else the manifest's ``tracer_name`` (dcm2niix writes
  none when the DICOM Radiopharmaceutical is empty)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from magicflow.datasets.clock import clock_seconds, signed_seconds
from magicflow.datasets.manifest import MISSING
from magicflow.datasets.tracers import canonical_tracer
from magicflow.errors import InputError
from magicflow.preprocess.volumes import check_values, load_nifti

#: canonical tracer (magicflow.datasets.tracers) -> (start, end) of the plateau window in minutes post-injection
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
#: frames may start or end this many minutes outside the window before a warning
TOLERANCE_MINUTES = 2.5
#: seconds two frames may overlap before their start times are taken as wrong
OVERLAP_S = 1.0
#: sidecar keys saying that the frame times count from the scan, not from the injection
SCAN_CLOCK_KEYS = ("ScanStart", "TimeZero", "SeriesTime", "AssembledFromFrames")
INJECTION, SCAN, UNKNOWN = "injection", "scan start", "unknown"


class TimingWarning(UserWarning):
    """PET timing that is unusual but does not stop processing."""


@dataclass(frozen=True)
class FrameTiming:
    """Frame starts and durations in seconds. ``origin`` is what the starts count from:
    'injection' (comparable with the plateau windows), 'scan start' (injection time unknown)
    or 'unknown' (no start times at all); ``source`` says how the starts were found."""

    tracer: str
    starts_s: tuple[float, ...]
    durations_s: tuple[float, ...]
    origin: str = INJECTION
    source: str = "FrameTimesStart"
    tracer_source: str = "sidecar TracerName"
    sidecar: str = ""


def sidecar_path(pet_path: str | os.PathLike[str]) -> Path:
    """BIDS sidecar next to the image (``x_pet.nii.gz`` -> ``x_pet.json``)."""
    path = Path(pet_path)
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def _given(value: str | os.PathLike[str] | None) -> str | None:
    """A command-line value, None when absent or the manifest's 'n/a'."""
    text = None if value is None else str(value).strip()
    return None if not text or text == MISSING else text


def _numbers(meta: dict, key: str, side: Path) -> list[float] | None:
    value = meta.get(key)
    if value is None:
        return None
    try:
        return [float(v) for v in np.atleast_1d(np.asarray(value, dtype=float))]
    except (TypeError, ValueError):
        raise InputError(f"{side}: {key} must be a number or a list of numbers, got {value!r}") from None


def _overlap(starts: list[float], durations: list[float]) -> bool:
    return len(starts) == len(durations) and any(
        later < start + duration - OVERLAP_S for start, duration, later in zip(starts, durations, starts[1:])
    )


def frame_starts(meta: dict, side: Path, durations: list[float]) -> tuple[list[float] | None, str, float | None]:
    """(frame starts in seconds, how they were found, the clock time they count from or None)."""
    starts = _numbers(meta, "FrameTimesStart", side)
    references = _numbers(meta, "FrameReferenceTime", side)
    bids_zero = clock_seconds(meta.get("TimeZero"))
    series = clock_seconds(meta.get("SeriesTime"))
    overlapping = starts is not None and _overlap(starts, durations)
    if starts is not None and not overlapping or references is None or len(references) != len(durations):
        return starts, "FrameTimesStart", bids_zero if bids_zero is not None else series
    middles = [r - d / 2 for r, d in zip(references, durations)]
    if min(middles) >= 0:
        derived, how = middles, "FrameReferenceTime - FrameDuration/2 (mid-frame references)"
    else:  # a mid-frame reading would start the first frame before the series: references are starts
        derived, how = references, "FrameReferenceTime (frame-start references)"
    if overlapping:
        how += f"; FrameTimesStart {starts} ignored, its frames overlap (a series crossing midnight?)"
    return derived, how, series if series is not None else bids_zero


def injection_offset(meta: dict, zero: float | None) -> float | None:
    """Seconds from the injection to the clock time ``zero`` the frame times count from, when
    the sidecar gives the injection time (BIDS InjectionStart, or a clock RadiopharmaceuticalStartTime)."""
    start = meta.get("InjectionStart")
    if isinstance(start, (int, float)) and not isinstance(start, bool):
        bids_zero = clock_seconds(meta.get("TimeZero"))
        shift = signed_seconds(zero, bids_zero) if zero is not None and bids_zero is not None else 0.0
        return shift - float(start)
    injected = clock_seconds(meta.get("RadiopharmaceuticalStartTime"))
    if injected is not None and zero is not None:
        return signed_seconds(zero, injected)  # a dynamic scan may start just before the injection
    return None


def read_timing(
    pet_path: str | os.PathLike[str], frames: int, sidecar: str | os.PathLike[str] | None = None, tracer: str | None = None
) -> FrameTiming | None:
    """Frame timing and tracer from the sidecar (``sidecar``, else the one beside the image).

    A missing sidecar beside the image is a warning (the image is usable, only the timing
    cannot be checked); a named sidecar that is missing, or one that contradicts the image, is
    an error. ``tracer`` (the manifest's tracer_name) stands in for a missing TracerName."""
    named = _given(sidecar)
    side = Path(named) if named else sidecar_path(pet_path)
    if not side.is_file():
        if named:
            raise InputError(f"{pet_path}: its sidecar {side} (named by the manifest) does not exist")
        warnings.warn(
            f"{pet_path}: no BIDS sidecar ({side.name}); frame timing and tracer not checked", TimingWarning, stacklevel=2
        )
        return None
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{side}: not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise InputError(f"{side}: a sidecar must be a JSON object, got {type(meta).__name__}")
    tracer_name, tracer_source = str(meta.get("TracerName") or "").strip(), "sidecar TracerName"
    if not tracer_name and _given(tracer):
        tracer_name, tracer_source = str(_given(tracer)), "manifest tracer_name"
    durations = _numbers(meta, "FrameDuration", side)
    starts, source, zero = frame_starts(meta, side, durations or [])
    missing = [name for name, value in (("TracerName", tracer_name), ("FrameDuration", durations)) if not value]
    if starts is None and (frames > 1 and "AssembledFromFrames" not in meta):
        missing.insert(1, "FrameTimesStart (and FrameReferenceTime to derive it from)")
    if missing:
        hint = " (no --tracer given either: the manifest's tracer_name)" if not tracer_name else ""
        raise InputError(f"{side}: missing {', '.join(missing)}{hint}")
    if len(durations) != frames or starts is not None and len(starts) != frames:
        count = "no" if starts is None else len(starts)
        raise InputError(
            f"{side}: {count} FrameTimesStart / {len(durations)} FrameDuration values for {frames} frames in the image"
        )
    if starts is None:
        return FrameTiming(tracer_name, (), tuple(durations), UNKNOWN, "none in the sidecar", tracer_source, str(side))
    offset = injection_offset(meta, zero)
    if offset is not None:
        starts, origin = [s + offset for s in starts], INJECTION
        source += f", counted from the injection ({offset:+g} s)"
    elif source != "FrameTimesStart" or any(key in meta for key in SCAN_CLOCK_KEYS):
        origin = SCAN
    else:
        origin = INJECTION
        source += " (no InjectionStart, TimeZero, ScanStart or SeriesTime: taken as post-injection)"
    return FrameTiming(tracer_name, tuple(starts), tuple(durations), origin, source, tracer_source, str(side))


def check_plateau(timing: FrameTiming, source: str | os.PathLike[str]) -> tuple[str, str | None]:
    """('inside' | 'outside' | 'not checked: <why>', the warning text or None). Frames outside
    the tracer's plateau window and tracers without a window are warned; frame times that do
    not count from the injection cannot be compared with the window, which is recorded only."""
    window = PLATEAU_MINUTES.get(canonical_tracer(timing.tracer) or "")
    if window is None:
        message = f"{source}: tracer {timing.tracer!r} has no known plateau window; timing not checked"
        warnings.warn(message, TimingWarning, stacklevel=2)
        return f"not checked: tracer {timing.tracer!r} has no known plateau window", message
    if timing.origin == UNKNOWN:
        return "not checked: the sidecar gives no frame start times", None
    if timing.origin == SCAN:
        return "not checked: frame times count from the scan start and the injection time is not in the sidecar", None
    start = min(timing.starts_s) / 60.0
    end = max(s + d for s, d in zip(timing.starts_s, timing.durations_s)) / 60.0
    lo, hi = window
    if start >= lo - TOLERANCE_MINUTES and end <= hi + TOLERANCE_MINUTES:
        return "inside", None
    message = (
        f"{source}: frames span {start:g}-{end:g} min, outside the {timing.tracer} plateau "
        f"{lo:g}-{hi:g} min (+/-{TOLERANCE_MINUTES:g})"
    )
    warnings.warn(message, TimingWarning, stacklevel=2)
    return "outside", message


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
