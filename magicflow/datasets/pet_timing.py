"""PET frame timing from the sidecar and the plateau check: dataset metadata, read when the
manifest screens its images and again by the registration job.

Plateau windows (minutes after injection) follow the ADNI acquisition protocols quoted in the
MAGIC-Flow paper (Appendix B.1): FDG 30-60, florbetapir (AV45) 50-70, NAV-4694 50-70,
florbetaben 90-110, MK-6240 90-110, flortaucipir (AV1451) 75-105, PI-2620 45-75. PiB 50-70 is not in the paper; it is the usual static window of
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magicflow.datasets.clock import clock_seconds, signed_seconds
from magicflow.datasets.tables import MISSING
from magicflow.datasets.tracers import canonical_tracer
from magicflow.errors import InputError

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
