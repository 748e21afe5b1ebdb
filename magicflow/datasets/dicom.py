"""DICOM -> NIfTI with dcm2niix (the PyPI build), JSON sidecars kept, and dynamic PET frames
as one 4D image with its frame timing.

dcm2niix stacks the frames of a dynamic PET series itself (FrameDuration, FrameReferenceTime
in the sidecar). When a PET series still comes out as several 3D files (frames saved as separate
images, or a NIfTI download with one file per frame) :func:`assemble_frames` stacks them in
acquisition order. Several files of an MR series are never frames (echoes, corrected copies,
overlays): :func:`main_image` picks the one image. Every image folder yields exactly one NIfTI
or a reason why not."""

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


#: dcm2niix name post-fixes of extra files for one MR series (FILENAMING.md) -> why they are set
#: aside; echoes and the uncorrected twin of a corrected copy are handled in :func:`main_image`
DERIVED_POSTFIXES = {
    "ROI": "an overlay (region of interest) stored with the series, not an image",
    "ADC": "a copy with the scanner's derived ADC/trace volume appended",
    "Crop": "a cropped copy",
    "ph": "the phase image of the series",
    "phMag": "phase and magnitude stored together",
    "real": "the real part of a complex image",
    "imaginary": "the imaginary part of a complex image",
    "fieldmaphz": "a field map in Hz",
    "Raw": "Philips raw data storage",
    "PS": "a presentation state, not an image",
}
#: geometry-corrected copies dcm2niix writes beside the uncorrected image: the corrected one is
#: the image with the true geometry, so it is kept
CORRECTED_POSTFIXES = {"Tilt": "gantry tilt", "Eq": "unequal slice spacing"}
POSTFIX = re.compile(r"_(e\d+(?:\.\d+)?|ROI\d+|ADC|Crop|phMag|ph|real|imaginary|fieldmaphz|Raw|PS|Tilt|Eq)(?=_|$)")


def postfixes(name: str) -> list[str]:
    """dcm2niix's disambiguation post-fixes in an output file name ('3_e2_ROI1.nii.gz' -> ['e2', 'ROI1'])."""
    return POSTFIX.findall(NIFTI.sub("", name))


def main_image(images: list[Path]) -> tuple[Path, list[tuple[Path, str]]]:
    """The one image of an MR series that dcm2niix wrote as several files, and the others with
    the reason each is set aside: derived files (ROI overlays, ADC, phase, ...) go, of a
    multi-echo series echo 1 stays, of a tilt- or spacing-corrected pair the corrected copy
    stays (the uncorrected file's geometry is wrong in NIfTI). Anything else is ambiguous."""
    reasons: dict[Path, str] = {}
    for image in images:
        derived = [p for p in postfixes(image.name) if re.sub(r"\d+$", "", p) in DERIVED_POSTFIXES]
        if derived:
            reasons[image] = DERIVED_POSTFIXES[re.sub(r"\d+$", "", derived[0])]
    left = [p for p in images if p not in reasons]
    echoes = {p: next((float(x[1:]) for x in postfixes(p.name) if x.startswith("e")), None) for p in left}
    if any(e is not None for e in echoes.values()):
        first = min(e for e in echoes.values() if e is not None)
        for p, echo in echoes.items():
            if echo is not None and echo != first:
                reasons[p] = f"echo {echo:g} of a multi-echo series (echo {first:g} is the one used)"
        left = [p for p in left if p not in reasons]
    corrected = [p for p in left if set(postfixes(p.name)) & set(CORRECTED_POSTFIXES)]
    if corrected:
        best = max(corrected, key=lambda p: len(set(postfixes(p.name)) & set(CORRECTED_POSTFIXES)))
        fixed = ", ".join(CORRECTED_POSTFIXES[x] for x in postfixes(best.name) if x in CORRECTED_POSTFIXES)
        for p in left:
            if p != best:
                reasons[p] = f"uncorrected for {fixed} (dcm2niix also wrote the corrected copy, which is used)"
        left = [best]
    if len(left) != 1:
        names = ", ".join(p.name for p in images)
        raise InputError(
            f"{len(images)} images for one MR series and none is the main one (frames are stacked for PET only): {names}"
        )
    return left[0], sorted(reasons.items())


def convert_series(folder: Path, out: Path, stem: str) -> tuple[Path, Path, list[tuple[Path, Path, str]]]:
    """Convert the DICOM files in ``folder`` into ``out/<stem>.nii.gz`` + ``.json``.

    Several output files of a PET series are its frames, stacked by :func:`assemble_frames`;
    several of an MR series are echoes, corrected copies or derived files: the main image is
    kept and the others are moved to ``out/<stem>_<dcm2niix name>.nii.gz`` and returned as
    (image, sidecar, reason), so they can be listed as excluded rather than stacked as frames.
    Raises InputError with dcm2niix's own words when nothing usable comes out (unreadable
    DICOM, no image data)."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "dcm2niix"
    work.mkdir()
    # -b y: sidecar; -z y: gzip; -d 0: this folder only; -w 1: overwrite, never rename silently;
    # -f %s: the series number, so dcm2niix adds its own post-fixes (_e2, _Eq, _ROI1, ...)
    command = [dcm2niix_binary(), "-b", "y", "-z", "y", "-d", "0", "-w", "1", "-f", "%s", "-o", str(work), str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    images = sorted(p for p in work.iterdir() if NIFTI.search(p.name))
    if not images:
        said = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        detail = not_dicom(folder) or (said[-1] if said else f"exit status {result.returncode}")
        raise InputError(f"unreadable DICOM: dcm2niix made no image from {folder} ({detail})")
    image, sidecar = out / f"{stem}.nii.gz", out / f"{stem}.json"
    set_aside: list[tuple[Path, Path, str]] = []
    if len(images) > 1 and {_sidecar_of(p).get("Modality") for p in images} - {None} == {"MR"}:
        kept, others = main_image(images)
        _move(kept, image, sidecar, twin=_twin(kept, images))
        for other, reason in others:
            name = f"{stem}_{NIFTI.sub('', other.name)}"  # keeps dcm2niix's name: unique, post-fixes and all
            moved = (out / f"{name}.nii.gz", out / f"{name}.json")
            _move(other, *moved)
            set_aside.append((*moved, f"{reason}; kept {image.name}"))
    elif len(images) == 1:
        _move(images[0], image, sidecar)
    else:
        assemble_frames(images, image, sidecar)
    shutil.rmtree(work)
    return image, sidecar, set_aside


def not_dicom(folder: Path) -> str:
    """Why no file of ``folder`` is DICOM ('' when one may be): none has the 'DICM' marker at
    byte 128 and none starts like a DICOM data set. Said instead of dcm2niix's last line, which
    for a web page saved as .dcm (a failed or expired download link) is its version banner."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        return "the folder holds no files"
    for path in files:
        with path.open("rb") as handle:
            head = handle.read(132)
        # a preamble-less (old ACR-NEMA style) file starts with a group 0008 or 0002 tag
        if head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x02\x00"):
            return ""
    first = files[0]
    with first.open("rb") as handle:
        start = handle.read(200)
    text = start.decode("utf-8", "replace").lstrip().lower()
    what = "an HTML page (a failed or expired download?)" if text.startswith(("<!doctype html", "<html")) else "not DICOM"
    return f"no file is DICOM; {first.name} is {what}: download the series again"


def _sidecar_of(image: Path) -> dict:
    path = image.with_name(NIFTI.sub(".json", image.name))
    return json.loads(path.read_text()) if path.exists() else {}


def _twin(kept: Path, images: list[Path]) -> Path | None:
    """The uncorrected image a _Tilt/_Eq copy was made from (dcm2niix writes no sidecar for the
    copy, e.g. '3_Eq_1.nii.gz' beside '3.nii.gz' + '3.json')."""
    base = re.sub(r"_(Tilt|Eq)(_\d+)?(?=_|$)", "", NIFTI.sub("", kept.name))
    return next((p for p in images if p != kept and NIFTI.sub("", p.name) == base), None)


def _move(source: Path, image: Path, sidecar: Path, twin: Path | None = None) -> None:
    """A dcm2niix output and its sidecar to their final names; without a sidecar of its own, a
    copy of its twin's (the same series' headers), else an empty one."""
    source_json = source.with_name(NIFTI.sub(".json", source.name))
    twin_json = twin.with_name(NIFTI.sub(".json", twin.name)) if twin is not None else None
    source.rename(image)
    if source_json.exists():
        source_json.rename(sidecar)
    elif twin_json is not None and twin_json.exists():
        shutil.copyfile(twin_json, sidecar)
    else:
        sidecar.write_text("{}\n")


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
            raise InputError(
                f"cannot assemble frames: {frames[i].name} has shape {img.shape}, {frames[order[0]].name} has {first.shape}"
            )
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
