"""DICOM -> NIfTI with dcm2niix (the PyPI build), JSON sidecars kept, and dynamic PET frames
as one 4D image with its frame timing.

dcm2niix stacks the frames of a dynamic PET series itself (FrameDuration, FrameReferenceTime
in the sidecar). When a series still comes out as several 3D files (frames saved as separate
images, or a NIfTI download with one file per frame) :func:`assemble_frames` stacks them in
acquisition order, so every image folder yields exactly one NIfTI or a reason why not."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np

from magicflow.datasets.clock import DAY_S, clock_seconds, series_offsets, signed_seconds
from magicflow.errors import InputError
from magicflow.io import atomic_path

NIFTI = re.compile(r"\.nii(\.gz)?$")


def dcm2niix_binary() -> str:
    """The dcm2niix of the PyPI package, else one on PATH."""
    try:
        import dcm2niix

        return str(dcm2niix.bin)
    except ImportError:
        found = shutil.which("dcm2niix")
        if found is None:
            raise InputError("dcm2niix is not installed: `pip install dcm2niix` (needed for DICOM downloads)") from None
        return found


def convert_series(folder: Path, out: Path, stem: str) -> tuple[Path, Path]:
    """Convert the DICOM files in ``folder`` into ``out/<stem>.nii.gz`` + ``.json``.

    Raises InputError with dcm2niix's own words when nothing usable comes out (unreadable
    DICOM, no image data)."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "dcm2niix"
    work.mkdir()
    # -b y: sidecar; -z y: gzip; -d 0: this folder only; -w 1: overwrite, never rename silently
    command = [dcm2niix_binary(), "-b", "y", "-z", "y", "-d", "0", "-w", "1", "-f", "%s_%e", "-o", str(work), str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    images = sorted(p for p in work.iterdir() if NIFTI.search(p.name))
    if not images:
        said = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        detail = said[-1] if said else f"exit status {result.returncode}"
        raise InputError(f"unreadable DICOM: dcm2niix made no image from {folder} ({detail})")
    image, sidecar = out / f"{stem}.nii.gz", out / f"{stem}.json"
    if len(images) == 1:
        images[0].rename(image)
        source_json = images[0].with_name(NIFTI.sub(".json", images[0].name))
        if source_json.exists():
            source_json.rename(sidecar)
        else:
            sidecar.write_text("{}\n")
    else:
        assemble_frames(images, image, sidecar)
    shutil.rmtree(work)
    return image, sidecar


def _acquisition_seconds(meta: dict) -> float | None:
    """A frame's AcquisitionTime (its start, DICOM PS3.3 C.8.9.4.1.6) in seconds after
    midnight; None when absent or unparsable."""
    return clock_seconds(meta.get("AcquisitionTime"))


def _frame_offsets(metas: list[dict]) -> list[float] | None:
    """Each frame's start in seconds after the first frame's, or None when a frame has no time.
    Full AcquisitionDateTime values (dcm2niix writes them when not anonymising) are compared as
    they are; clock times alone go through
    :func:`series_offsets`, so a series crossing midnight keeps positive, ordered times."""
    try:
        stamps = [datetime.fromisoformat(str(m["AcquisitionDateTime"])) for m in metas]
    except (KeyError, ValueError):
        stamps = None
    if stamps is not None:
        return [(s - min(stamps)).total_seconds() for s in stamps]
    clocks = [_acquisition_seconds(m) for m in metas]
    if any(c is None for c in clocks):
        return None
    return series_offsets([c for c in clocks if c is not None])


def _clock_text(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{seconds - whole // 60 * 60:09.6f}"


def assemble_frames(frames: list[Path], image: Path, sidecar: Path) -> None:
    """Stack 3D frames of one acquisition into a 4D image, in acquisition order (sidecar
    AcquisitionDateTime or AcquisitionTime, else file name), and write their timing where the
    frames' sidecars give it, as BIDS counts it: FrameTimesStart in seconds from the first
    frame's start, with ``ScanStart`` 0 and ``TimeZero`` that start's clock time. These are not
    post-injection times; an injection time in the first frame's sidecar (InjectionStart with
    its TimeZero, or a clock RadiopharmaceuticalStartTime) is kept on the new clock."""
    metas = []
    for frame in frames:
        meta_path = frame.with_name(NIFTI.sub(".json", frame.name))
        metas.append(json.loads(meta_path.read_text()) if meta_path.exists() else {})
    offsets = _frame_offsets(metas)
    order = sorted(range(len(frames)), key=lambda i: (offsets[i] if offsets else 0.0, frames[i].name))
    loaded = [nib.load(frames[i]) for i in order]
    first = loaded[0]
    for i, img in zip(order, loaded):
        if img.shape[:3] != first.shape[:3] or len(img.shape) > 3 and img.shape[3] != 1:
            raise InputError(f"cannot assemble frames: {frames[i].name} has shape {img.shape}, {frames[order[0]].name} has {first.shape}")
        if not np.allclose(img.affine, first.affine, atol=1e-3):
            raise InputError(f"cannot assemble frames: {frames[i].name} is not on the grid of {frames[order[0]].name}")
    data = np.stack([np.asarray(img.dataobj, dtype=np.float32).reshape(first.shape[:3]) for img in loaded], axis=-1)
    meta = dict(metas[order[0]])
    # the first frame's own single-frame timing does not describe the stack
    for key in ("FrameTimesStart", "FrameDuration", "FrameReferenceTime", "ScanStart", "TimeZero", "InjectionStart"):
        meta.pop(key, None)
    if offsets is not None:
        meta["FrameTimesStart"] = [offsets[i] for i in order]
        meta["ScanStart"] = 0
        zero = _acquisition_seconds(metas[order[0]])
        if zero is not None:
            meta["TimeZero"] = _clock_text(zero)
            injection = _injection_clock(metas[order[0]])
            if injection is not None:
                meta["InjectionStart"] = signed_seconds(injection, zero)
    durations = [metas[i].get("FrameDuration") for i in order]
    if all(isinstance(d, (int, float)) or (isinstance(d, list) and len(d) == 1) for d in durations):
        meta["FrameDuration"] = [float(d[0] if isinstance(d, list) else d) for d in durations]
    meta["AssembledFromFrames"] = [frames[i].name for i in order]
    header = first.header.copy()
    header.set_data_dtype(np.float32)
    with atomic_path(image) as tmp:
        nib.save(nib.Nifti1Image(data, first.affine, header), tmp)
    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _injection_clock(meta: dict) -> float | None:
    """Clock time of the injection in one frame's sidecar: BIDS InjectionStart on its TimeZero,
    or a clock RadiopharmaceuticalStartTime."""
    start, zero = meta.get("InjectionStart"), clock_seconds(meta.get("TimeZero"))
    if isinstance(start, (int, float)) and not isinstance(start, bool) and zero is not None:
        return (zero + float(start)) % DAY_S
    return clock_seconds(meta.get("RadiopharmaceuticalStartTime"))
