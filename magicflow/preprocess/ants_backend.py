"""ANTs (antspyx) backend: the fsl_anat steps re-done with ANTs, and rigid coregistration.

T1: reorientation to RAS, a neck crop (as fsl_anat's robustfov), N4 bias correction, affine
(from a centre-of-mass start) then SyN to the template, resampling onto the 1 mm grid. The affine
is fitted inside the template's dilated brain mask; it then carries that mask into the native T1,
so SyN matches brain to brain (the nilearn template has no scalp, and a scalp pulled into the
brain ruins the warp). Transforms follow ANTs' convention: the forward list ``[warp, affine]``
maps template (fixed) physical points to native T1 points and resamples a native image into MNI.
ANTs physical space is LPS (x and y negated relative to NIfTI's RAS world)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from magicflow.preprocess.template import Template

if TYPE_CHECKING:
    from magicflow.preprocess.pet import Realignment

#: Seed for ANTs' random metric sampling, so reruns give the same transforms (up to
#: floating-point differences from multi-threaded reductions).
RANDOM_SEED = 20240501


@dataclass(frozen=True)
class Preset:
    """Registration settings. ``demo`` registers to the 2 mm template with short SyN schedules
    (seconds on 2 cores); ``full`` registers at 1 mm with the longer schedule of a real study."""

    name: str
    template_resolution: int
    syn_iterations: tuple[int, ...]
    n4_iterations: tuple[int, ...]
    rigid_iterations: tuple[int, ...]
    rigid_shrink: tuple[int, ...]
    rigid_smoothing: tuple[float, ...]
    n4_shrink: int
    #: PET frame realignment (iterations, shrink factors, smoothing sigmas) on the PET grid (2-3 mm
    #: voxels); frames of one scan share contrast, so a short schedule suffices
    frame_schedule: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] = ((100, 50, 20), (4, 2, 1), (2, 1, 0))
    #: the T1's 12-dof affine schedule (iterations, shrink factors, smoothing sigmas)
    affine_schedule: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] = (
        (2100, 1200, 1200, 10),
        (6, 4, 2, 1),
        (3, 2, 1, 0),
    )
    #: voxel size (mm) of the bias-corrected T1 as the registrations see it: resampled to it
    #: (Gaussian-smoothed first) for its affine and SyN to the template, and as the fixed image of
    #: the other series' rigid; None: its native grid. Outputs are resampled from native images.
    registration_mm: float | None = None


PRESETS: dict[str, Preset] = {
    # 2 mm template; SyN 60/40/5 iterations at 8/4/2 mm. N4 at shrink 6 is 3x faster than at 4 for
    # the same error; 10x10 iterations instead of 20x20x20 misregistered a strongly biased Philips
    # T1w. The T1 is registered as a 2 mm copy (registration_mm), the 1 mm outputs resampled from
    # the native T1: on demo subjects 1-4 (seed 0, one thread, CPU seconds) the T1 job's steps took
    # 81 CPU-s instead of 91 (affine 9.4 instead of 13.2, SyN 54.9 instead of 61.7) at 1.08/1.95/
    # 0.59/1.33 mm mean error against the planted mapping instead of 1.12/2.00/0.78/1.32. SyN
    # 60/40/2 would save another 16 CPU-s for 1.12/2.02/0.63/1.37 mm (100/80/2: no better).
    # The rigid to the 2 mm T1 stops at 4 mm (shrink 6/3/2, the same 3/2/1 mm smoothing): on the
    # T2w, FLAIR and PET of subjects 1-3, 100 CPU-s for the 9 jobs instead of 108 with the 1 mm T1
    # stopping at 3 mm, chain errors 0.77-2.06 mm instead of 0.77-2.08 (none worse by more than 0.01 mm).
    # PET frames are realigned at 10 and 5 mm only (no level at the PET's own 2.5 mm): 2.7-4.3 CPU-s
    # per 6-frame demo PET instead of 12.6-15.9 (subjects 1-4), each frame's transform within 0.1 mm
    # of the 3-level schedule's.
    "demo": Preset(
        "demo",
        2,
        (60, 40, 5),
        (20, 20, 20),
        (100, 50, 10),
        (6, 3, 2),
        (1.5, 1, 0.5),
        6,
        frame_schedule=((100, 50), (4, 2), (2, 1)),
        registration_mm=2.0,
    ),
    # 1 mm template. On a 1 mm demo T1 (1 thread beside other jobs) the old settings took 608
    # CPU-s: N4 at shrink 2 441, SyN 100/70/40/5 142, affine 23; mean error 1.03 mm. Now N4 runs
    # at shrink 4 (fMRIPrep's 4x50 iterations), the affine stops at 2 mm, and SyN's 1 mm level
    # only evaluates (100/70/40/0, as antsRegistrationSyNQuick.sh): 149 CPU-s (N4 53, SyN 81,
    # affine 11), 1.05 mm. The T2w/FLAIR/PET rigid stops at shrink 2 too: 0.30 mm from the truth
    # (0.13 at 1 mm) in 21 CPU-s instead of 40.
    "full": Preset(
        "full",
        1,
        (100, 70, 40, 0),
        (50, 50, 50, 50),
        (2100, 1200, 1200),
        (6, 4, 2),
        (3, 2, 1),
        4,
        ((2100, 1200, 1200), (6, 4, 2), (3, 2, 1)),
    ),
}

#: robustfov's (and so fsl_anat's) brain size: the T1 keeps this much below the top of the
#: head. A neck in the field of view pulls the centre-of-mass start and the affine down, and
#: costs N4 and the affine time for nothing.
HEAD_HEIGHT_MM = 170.0


def _ants():
    """Import antspyx lazily (so --threads can be exported first) and fix its random seed."""
    import ants

    ants.config._random_seed = RANDOM_SEED  # the package's own global seed, read by ants.registration
    return ants


def _read(img: nib.Nifti1Image, workdir: Path, name: str):
    """Hand a nibabel image to ANTs through a file (the only lossless bridge for any affine).

    Uncompressed: the file lives only in the job's temporary folder, and gzip was a tenth of a
    demo registration job."""
    path = workdir / f"{name}.nii"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), path)
    return _ants().image_read(str(path))


def _to_nibabel(image, affine: np.ndarray) -> nib.Nifti1Image:
    """ANTs image on a known grid back to nibabel, float32, with that grid's exact affine."""
    return nib.Nifti1Image(image.numpy().astype(np.float32), affine)


def _coarse(image, mm: float):
    """``image`` on a grid of ``mm`` voxels (same origin and direction), Gaussian-smoothed first
    (sigma 0.425 mm per mm of target voxel, as the 2 mm template is made) so it does not alias."""
    ants = _ants()
    smooth = ants.smooth_image(image, 0.425 * mm, sigma_in_physical_coordinates=True)
    return ants.resample_image(smooth, (mm, mm, mm), use_voxels=False, interp_type=0)


def reorient(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Closest-canonical (RAS) voxel order; the world coordinates of every voxel are unchanged."""
    return nib.as_closest_canonical(img)


def crop_neck(img: nib.Nifti1Image) -> tuple[nib.Nifti1Image, float]:
    """Keep :data:`HEAD_HEIGHT_MM` below the top of the head of a RAS-ordered image (as ``robustfov``).

    The top is the highest axial slice where the head covers at least 1 % of the largest slice
    area (a voxel is head above a tenth of the 99.5th percentile). Returns the cropped image
    (the same world coordinates) and the millimetres cut from the bottom."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    positive = data[data > 0]
    if positive.size == 0:
        return img, 0.0
    area = (data > 0.1 * np.percentile(positive, 99.5)).sum(axis=(0, 1))
    top = int(np.nonzero(area >= 0.01 * area.max())[0].max())
    step = float(np.linalg.norm(img.affine[:3, 2]))
    bottom = top + 1 - int(np.ceil(HEAD_HEIGHT_MM / step))
    if bottom <= 0:
        return img, 0.0
    return img.slicer[:, :, bottom:], round(bottom * step, 1)


def bias_correct(img: nib.Nifti1Image, preset: Preset, workdir: Path) -> nib.Nifti1Image:
    """N4 bias-field correction over the whole field of view (N4's default, no mask needed)."""
    ants = _ants()
    image = _read(img, workdir, "n4_in")
    corrected = ants.n4_bias_field_correction(
        image, shrink_factor=preset.n4_shrink, convergence={"iters": list(preset.n4_iterations), "tol": 1e-5}
    )
    return _to_nibabel(corrected, img.affine)


@dataclass(frozen=True)
class T1Result:
    native: nib.Nifti1Image
    mni: nib.Nifti1Image
    affine_file: Path
    warp_file: Path
    seconds: float
    neck_crop_mm: float = 0.0
    #: wall seconds per step, and the CPU seconds of all this process's threads (the figure
    #: that adds up when jobs share cores)
    step_seconds: dict[str, float] | None = None
    step_cpu_seconds: dict[str, float] | None = None


def register_t1(t1: nib.Nifti1Image, template_1mm: Template, template_reg: Template, preset: Preset, workdir: Path) -> T1Result:
    """Reorient, crop the neck, N4, affine+SyN to ``template_reg``; resample the T1 onto the 1 mm grid once.

    The affine starts from a centre-of-mass alignment (antspy's ``[fixed, moving, 1]``) of the
    cropped head and the template's brain, and is fitted inside the template's dilated brain mask."""
    ants = _ants()
    start, cpu_start = time.perf_counter(), time.process_time()
    steps: dict[str, float] = {}
    cpu_steps: dict[str, float] = {}

    def lap(name: str) -> None:
        steps[name] = round(time.perf_counter() - start - sum(steps.values()), 1)
        cpu_steps[name] = round(time.process_time() - cpu_start - sum(cpu_steps.values()), 1)

    cropped, cut_mm = crop_neck(reorient(t1))
    native = bias_correct(cropped, preset, workdir)
    lap("reorient_crop_n4")
    native_image = _read(native, workdir, "t1_native")
    moving = native_image if preset.registration_mm is None else _coarse(native_image, preset.registration_mm)
    fixed_mask = ants.image_read(str(template_reg.brain_mask_dilated))
    fixed = ants.image_read(str(template_reg.t1)) * fixed_mask
    iterations, shrink, smoothing = preset.affine_schedule
    linear = ants.registration(
        fixed=fixed,
        moving=moving,
        type_of_transform="Affine",
        mask=fixed_mask,
        aff_iterations=iterations,
        aff_shrink_factors=shrink,
        aff_smoothing_sigmas=smoothing,
        outprefix=str(workdir / "t1_affine_"),
    )
    lap("affine")
    affine_init = linear["fwdtransforms"][0]
    native_mask = ants.apply_transforms(
        fixed=moving,
        moving=fixed_mask,
        transformlist=[affine_init],
        whichtoinvert=[True],
        interpolator="nearestNeighbor",
    )
    reg = ants.registration(
        fixed=fixed,
        moving=moving * native_mask,
        type_of_transform="SyNOnly",
        initial_transform=affine_init,
        reg_iterations=preset.syn_iterations,
        outprefix=str(workdir / "t1_to_mni_"),
    )
    lap("syn")
    warp, affine = reg["fwdtransforms"]
    grid = ants.image_read(str(template_1mm.t1))
    mni = ants.apply_transforms(fixed=grid, moving=native_image, transformlist=[warp, affine], interpolator="linear")
    mni_img = _to_nibabel(mni, nib.load(template_1mm.t1).affine)
    lap("resample")
    return T1Result(native, mni_img, Path(affine), Path(warp), time.perf_counter() - start, cut_mm, steps, cpu_steps)


def _rigid(
    fixed, moving, iterations: tuple[int, ...], shrink: tuple[int, ...], smoothing: tuple[float, ...], prefix: Path
) -> Path:
    """Rigid (6 dof) Mattes mutual-information registration; the ``.mat`` maps fixed points to moving points."""
    reg = _ants().registration(
        fixed=fixed,
        moving=moving,
        type_of_transform="Rigid",
        aff_metric="mattes",
        aff_iterations=iterations,
        aff_shrink_factors=shrink,
        aff_smoothing_sigmas=smoothing,
        outprefix=str(prefix),
    )
    return Path(reg["fwdtransforms"][0])


def rigid_to_t1(moving_img: nib.Nifti1Image, t1_native: nib.Nifti1Image, preset: Preset, workdir: Path, name: str) -> Path:
    """Rigid registration of ``moving_img`` to the native T1.

    Returns the ANTs ``.mat`` that maps T1 physical points to ``moving_img`` points."""
    fixed = _read(t1_native, workdir, f"{name}_fixed")
    return _rigid(
        fixed if preset.registration_mm is None else _coarse(fixed, preset.registration_mm),
        _read(moving_img, workdir, f"{name}_moving"),
        preset.rigid_iterations,
        preset.rigid_shrink,
        preset.rigid_smoothing,
        workdir / f"{name}_to_t1_",
    )


_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_matrix(transform_file: Path) -> np.ndarray:
    """An ANTs affine ``.mat`` (LPS, fixed -> moving points) as a 4x4 RAS world matrix."""
    tx = _ants().read_transform(str(transform_file))
    params, centre = np.asarray(tx.parameters, dtype=float), np.asarray(tx.fixed_parameters, dtype=float)
    linear = params[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = linear, centre + params[9:12] - linear @ centre
    return _LPS @ lps @ _LPS


def realign_frames(frames: nib.Nifti1Image, reference: int, workdir: Path, schedule: tuple[tuple[int, ...], ...]) -> Realignment:
    """Rigidly realign every frame of a 4D PET to frame ``reference`` (resampled linearly on its grid)
    with a preset's ``frame_schedule``."""
    from magicflow.preprocess.pet import Realignment

    ants = _ants()
    data = np.asarray(frames.dataobj, dtype=np.float32)
    frame = [nib.Nifti1Image(data[..., i], frames.affine) for i in range(data.shape[3])]
    fixed = _read(frame[reference], workdir, "frame_ref")
    # levels whose shrunk grid keeps at least 8 voxels along every axis (a small or thin-slab PET)
    shrink = schedule[1]
    levels = [i for i, k in enumerate(shrink) if min(data.shape[:3]) / k >= 8] or [len(shrink) - 1]
    schedule = tuple(tuple(values[i] for i in levels) for values in schedule)
    aligned, matrices = data.copy(), []
    for i, img in enumerate(frame):
        if i == reference:
            matrices.append(np.eye(4))
            continue
        moving = _read(img, workdir, f"frame_{i}")
        mat = _rigid(fixed, moving, *schedule, workdir / f"frame_{i}_")
        aligned[..., i] = ants.apply_transforms(
            fixed=fixed, moving=moving, transformlist=[str(mat)], interpolator="linear"
        ).numpy()
        matrices.append(ras_matrix(mat))
    centre = frames.affine[:3, :3] @ ((np.asarray(data.shape[:3]) - 1) / 2) + frames.affine[:3, 3]
    return Realignment(
        nib.Nifti1Image(aligned, frames.affine),
        reference,
        tuple(matrices),
        centre,
        f"ANTs rigid (Mattes MI) to frame {reference}",
    )


def to_mni(
    moving_img: nib.Nifti1Image, transforms: list[Path], template_1mm: Template, workdir: Path, name: str
) -> nib.Nifti1Image:
    """Resample once through the whole chain (``[T1 warp, T1 affine, rigid]``) onto the 1 mm grid."""
    ants = _ants()
    grid = ants.image_read(str(template_1mm.t1))
    out = ants.apply_transforms(
        fixed=grid,
        moving=_read(moving_img, workdir, f"{name}_src"),
        transformlist=[str(t) for t in transforms],
        interpolator="linear",
    )
    return _to_nibabel(out, nib.load(template_1mm.t1).affine)


def mni_to_native_points(transforms: list[Path], grid: nib.Nifti1Image) -> np.ndarray:
    """Native RAS world coordinates (X,Y,Z,3) of each voxel centre of ``grid`` (an MNI-space grid).

    Follows the forward transforms point by point, in list order as ANTs does for a fixed point
    (``[warp, affine(, rigid)]``: the warp's displacement, then each ``.mat``); used to score a
    registration against a known mapping. Numpy, not ``apply_transforms(compose=...)``, which
    agrees to 1e-5 mm but writes and reads a gzipped field: 5x slower, seconds per demo image."""
    from scipy import ndimage

    ijk = np.indices(grid.shape[:3], dtype=np.float64).reshape(3, -1)
    points = grid.affine[:3, :3] @ ijk + grid.affine[:3, 3:4]  # RAS, (3, N)
    for transform in map(Path, transforms):
        if transform.name.endswith((".nii", ".nii.gz")):  # ANTs displacement field, LPS vectors on its own grid
            field = nib.load(transform)
            vectors = np.asarray(field.dataobj, dtype=np.float32).reshape(*field.shape[:3], 3)
            to_voxel = np.linalg.inv(field.affine)
            voxels = to_voxel[:3, :3] @ points + to_voxel[:3, 3:4]
            shift = [ndimage.map_coordinates(vectors[..., k], voxels, order=1, mode="constant") for k in range(3)]
            points = points + np.stack(shift) * _LPS[:3, :3].diagonal()[:, None]
        else:
            matrix = ras_matrix(transform)
            points = matrix[:3, :3] @ points + matrix[:3, 3:4]
    return points.T.reshape(*grid.shape[:3], 3)
