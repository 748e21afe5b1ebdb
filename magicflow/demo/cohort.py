"""Write the synthetic demo cohort as a BIDS dataset (``magicflow demo-cohort``).

Every subject lives in its own native space (pose, scaling, smooth warp, scanner voxel
size and orientation, bias field, non-brain margin) and is imaged by one of four MRI
scanners (T1w, T2w, FLAIR) and one of three PET scanners (FDG, amyloid and tau, 4-6
frames). The head drifts about a millimetre between PET frames, as in real plateau scans
(under the QC's motion limits); one restless subject (:data:`RESTLESS_SUBJECT`) moves far
in one frame of each of its PET scans, so that the QC flags exactly its PET images.
Optional extra subjects are healthy volunteers with a T1w scan only, as in IXI and SALD:
they feed the scanner experiments without the cost of registering series no experiment of theirs uses. AD subjects carry
a modest extra tau uptake in temporal and parietal cortex, hypometabolism there on FDG and
cortical amyloid. Normal tau uptake is not flat: white matter and deep grey matter bind the
tracer off target, and each subject's nonspecific binding varies smoothly across the brain,
so the tau image's intensity alone does not single out the AD regions (pixel AUC about 0.73
on the demo's slices, against 0.99 when the AD uptake doubled the grey-matter level), while
the increase, always in the same regions, keeps AD and CN apart for a model of both. The truth the pipeline should recover is written under ``derivatives/groundtruth/``:
each subject's MNI -> T1w mapping, the rigid moves between its series, the AD tau mask.

The data are synthetic: they exercise every stage and let registration and attribution
be scored against a known answer; they say nothing about real anatomy or disease."""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from collections.abc import Callable

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

from magicflow import __version__
from magicflow.demo import geometry as geo
from magicflow.demo.anatomy import TEMPLATE_SPACE, TemplateAnatomy, load_template_anatomy
from magicflow.demo.scanners import MRI_SCANNERS, PET_SCANNERS, THICK_SLICE_MM, TRACERS, MRIScanner, PETScanner, Tracer
from magicflow.errors import InputError
from magicflow.io import atomic_dir

SESSION = "01"
MR_FOV_MM = (184.0, 220.0, 196.0)
PET_FOV_MM = (200.0, 210.0, 180.0)
GROUNDTRUTH_SPACING_MM = 2.0
#: extra tau uptake above which a voxel is in the AD mask: 0.03, about 15% of the normal
#: grey-matter level of 0.20 (see ``anatomy.TAU_BASE``); the AD effect is additive, so the
#: mask does not depend on the subject's normal-uptake variation
TAU_MASK_THRESHOLD = 0.03
#: extra tau uptake per unit severity in the AD regions (fully grey-matter voxels, region
#: weight 1): severities 0.7-1.2 and weights 0.6-1.0 put the mask's mean added uptake at
#: about 20% of the grey-matter level, twice the normal variation below
TAU_AD_GAIN = 0.1
#: sd of each subject's smooth multiplicative variation of normal tau uptake (nonspecific
#: binding), and the Gaussian width (mm) that makes it smooth
TAU_VARIATION_SD = 0.10
TAU_VARIATION_MM = 12.0
_TAU_VARIATION_SPACING_MM = 4.0
_TAU_VARIATION_STREAM = 2**21  # its own random stream: every other series keeps its bytes
#: head drift between PET frames: a random walk about the head centre whose steps shift up to
#: PET_DRIFT_MM along and rotate up to PET_DRIFT_DEG about each axis. Frames then lie within
#: about 1 mm of the middle (reference) frame (at most 2.7 mm, 60 mm from the centre where the
#: QC measures), well under its 4 mm / 3 degree flag, as in a cooperative subject's plateau scan
PET_DRIFT_MM = 0.3
PET_DRIFT_DEG = 0.2
_PET_DRIFT_STREAM = 2**22  # its own random stream: the draws of the other series keep their values
#: the restless subject (index into the cohort: sub-demo01, in every cohort): in one frame of
#: each of its PET scans the head moves RESTLESS_MM and rotates RESTLESS_DEG (directions drawn
#: per scan), over the QC's 4 mm / 3 degree limits, so that exactly its PETs are flagged
RESTLESS_SUBJECT = 0
RESTLESS_MM = 6.0
RESTLESS_DEG = 5.0
_MR_TIMING = {  # RepetitionTime, EchoTime, InversionTime (s)
    "T1w": (2.3, 0.00298, 0.9),
    "T2w": (3.2, 0.409, None),
    "FLAIR": (9.0, 0.125, 2.5),
}


@dataclass(frozen=True)
class SubjectPlan:
    index: int
    subject: str
    diagnosis: str
    age: float
    sex: str
    scanner: int  # index into MRI_SCANNERS
    pet_scanner: int  # index into PET_SCANNERS
    severity: float  # 0 for CN
    t1w_only: bool = False  # a healthy volunteer with a T1w scan only (IXI/SALD-like)
    restless: bool = False  # moves far in one frame of each PET (see RESTLESS_SUBJECT)


def plan_cohort(subjects: int, seed: int, ad_fraction: float = 0.5, t1w_only: int = 0) -> list[SubjectPlan]:
    """Who is who: scanners balanced round-robin, diagnosis stratified within scanner so
    that scanner and diagnosis are not confounded. The ``t1w_only`` volunteers come after
    the full-protocol subjects (whose plans they leave unchanged), scanners continuing
    round-robin."""
    if subjects < 2:
        raise InputError(f"--subjects must be at least 2 (one AD and one CN), got {subjects}")
    if not 0.0 < ad_fraction < 1.0:
        raise InputError(f"--ad-fraction must be strictly between 0 and 1, got {ad_fraction}")
    if t1w_only < 0:
        raise InputError(f"--t1w-only must be 0 or more, got {t1w_only}")
    rng = np.random.default_rng([seed, 2**20])
    scanners = np.arange(subjects) % len(MRI_SCANNERS)
    n_ad = min(subjects - 1, max(1, round(subjects * ad_fraction)))
    # alternate AD/CN within each scanner group so every scanner sees both diagnoses
    order = np.lexsort((rng.random(subjects), scanners))
    is_ad = np.zeros(subjects, dtype=bool)
    is_ad[order[np.linspace(0, subjects - 1, n_ad).round().astype(int)]] = True
    plans = []
    for i in range(subjects):
        ad = bool(is_ad[i])
        plans.append(
            SubjectPlan(
                index=i,
                subject=f"demo{i + 1:02d}",
                diagnosis="AD" if ad else "CN",
                age=round(float(np.clip(rng.normal(74 if ad else 70, 6), 55, 90)), 1),
                sex=str(rng.choice(["F", "M"])),
                scanner=int(scanners[i]),
                pet_scanner=int(rng.integers(len(PET_SCANNERS))),
                severity=round(float(rng.uniform(0.7, 1.2)), 3) if ad else 0.0,
                restless=i == RESTLESS_SUBJECT,
            )
        )
    for i in range(subjects, subjects + t1w_only):
        plans.append(
            SubjectPlan(
                index=i,
                subject=f"demo{i + 1:02d}",
                diagnosis="CN",
                age=round(float(np.clip(rng.normal(70, 6), 55, 90)), 1),
                sex=str(rng.choice(["F", "M"])),
                scanner=i % len(MRI_SCANNERS),
                pet_scanner=0,
                severity=0.0,
                t1w_only=True,
            )
        )
    return plans


def bias_field(rng: np.random.Generator, world: np.ndarray, strength: float, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth multiplicative field exp(strength * f), f a random quadratic of position, std 1 over the FOV."""
    centred = (world - world.mean(axis=1, keepdims=True)) / 100.0
    x, y, z = centred
    terms = (x, y, z, x * y, x * z, y * z, x * x, y * y, z * z)
    f = sum(c * t for c, t in zip(rng.standard_normal(len(terms)), terms))
    f = (f - f.mean()) / (f.std() + 1e-6)
    return np.exp(strength * f).astype(np.float32).reshape(shape)


def tau_variation(anatomy: TemplateAnatomy, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A subject's relative variation of normal tau uptake over template space: smoothed
    white noise with sd :data:`TAU_VARIATION_SD`, on a coarse grid (returned with its affine,
    template mm) covering the padded template. Drawn from its own stream of (seed, subject),
    so the subject's other series are unchanged by it."""
    rng = np.random.default_rng([seed, index, _TAU_VARIATION_STREAM])
    step = _TAU_VARIATION_SPACING_MM
    extent = np.asarray(anatomy.pet_base["tau"].shape) * np.abs(np.diag(anatomy.affine)[:3])
    shape = tuple(int(n) for n in np.ceil(extent / step) + 3)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), TAU_VARIATION_MM / step, mode="wrap")
    field = (field - field.mean()) / field.std() * TAU_VARIATION_SD
    corner = anatomy.affine[:3, :3] @ np.full(3, -1.0) + anatomy.affine[:3, 3]  # one voxel before the template grid
    affine = np.eye(4)
    affine[:3, :3] = np.diag(np.sign(np.diag(anatomy.affine)[:3]) * step)
    affine[:3, 3] = corner - np.sign(np.diag(anatomy.affine)[:3]) * step
    return field.astype(np.float32), affine


def render_mr(
    anatomy: TemplateAnatomy,
    modality: str,
    scanner: MRIScanner,
    voxel_mm: tuple[float, float, float],
    pose: np.ndarray,
    warp: geo.Warp,
    rng: np.random.Generator,
) -> nib.Nifti1Image:
    """One MR series on its scanner grid: anatomy, blur, contrast curve, bias, noise, integer storage."""
    shape, affine = geo.native_grid(rng, pose, voxel_mm, scanner.orientation, MR_FOV_MM)
    world = geo.grid_points(shape, affine)
    image = geo.sample(anatomy.mr[modality], anatomy.affine, geo.template_coordinates(world, pose, warp), shape)
    if scanner.blur_mm > 0:
        image = ndimage.gaussian_filter(image, scanner.blur_mm / np.asarray(voxel_mm))
    image = np.power(np.clip(image, 0.0, None), scanner.gamma) * bias_field(rng, world, scanner.bias_strength, shape)
    noise = rng.standard_normal((2, *shape), dtype=np.float32) * scanner.noise_sigma
    if scanner.noise == "rician":
        image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
    else:
        image = np.clip(image + noise[0], 0.0, None)
    data = np.round(image * rng.uniform(900, 1100)).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


def _about(centre: np.ndarray, rotation: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """4x4 world move: ``rotation`` about ``centre``, then ``shift`` (mm)."""
    move = np.eye(4)
    move[:3, :3], move[:3, 3] = rotation, centre - rotation @ centre + shift
    return move


def pet_head_motion(
    rng: np.random.Generator, drift_rng: np.random.Generator, frames: int, restless: bool, centre: np.ndarray
) -> tuple[list[np.ndarray], int | None]:
    """Where the head is in each PET frame, as 4x4 world moves from its place in frame 0 (the
    anatomy at ``w`` in frame 0 is at ``move @ w``), and the frame a restless subject moved in
    (None for the others).

    Every frame drifts from the last by a small step from ``drift_rng`` (:data:`PET_DRIFT_MM`,
    :data:`PET_DRIFT_DEG`); a restless subject's moved frame also jumps :data:`RESTLESS_MM` and
    :data:`RESTLESS_DEG`, away and back. The moved frame and the jump's directions are drawn
    from ``rng`` for every subject, as many draws as the one moved frame every scan had before
    the drift: the series drawn after them keep their values."""
    moved = int(rng.integers(1, frames))
    axis, direction = rng.uniform(-1.0, 1.0, 3), rng.uniform(-1.0, 1.0, 3)
    moves = [np.eye(4)]
    for _ in range(1, frames):
        step = _about(
            centre,
            geo.rotation(drift_rng.uniform(-PET_DRIFT_DEG, PET_DRIFT_DEG, 3)),
            drift_rng.uniform(-PET_DRIFT_MM, PET_DRIFT_MM, 3),
        )
        moves.append(step @ moves[-1])
    if not restless:
        return moves, None
    from scipy.spatial.transform import Rotation

    turn = Rotation.from_rotvec(np.radians(RESTLESS_DEG) * axis / np.linalg.norm(axis)).as_matrix()
    moves[moved] = _about(centre, turn, RESTLESS_MM * direction / np.linalg.norm(direction)) @ moves[moved]
    return moves, moved


def _moved(coefficients: np.ndarray, affine: np.ndarray, move: np.ndarray) -> np.ndarray:
    """A volume (cubic-spline ``coefficients`` on the grid ``affine``) after the head moved by
    ``move`` (world mm): moved(w) = volume(move^-1 w)."""
    m = np.linalg.inv(affine) @ np.linalg.inv(move) @ affine
    return ndimage.affine_transform(coefficients, m[:3, :3], m[:3, 3], order=3, mode="nearest", prefilter=False)


def render_pet(
    anatomy: TemplateAnatomy,
    tracer: Tracer,
    scanner: PETScanner,
    severity: float,
    region_weights: np.ndarray,
    pose: np.ndarray,
    warp: geo.Warp,
    rng: np.random.Generator,
    drift_rng: np.random.Generator,
    restless: bool = False,
    variation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[nib.Nifti1Image, int | None, list[dict[str, float]]]:
    """A 4D PET on its scanner grid, the head drifting between frames (see
    :func:`pet_head_motion`). Returns (image, the frame a restless subject moved in or None,
    each frame's motion from the reference frame as the QC measures it). ``variation``: :func:`tau_variation`'s (field, affine), tau only."""
    from magicflow.preprocess.pet import frame_motion, reference_frame

    shape, affine = geo.native_grid(rng, pose, scanner.voxel_mm, "RAS", PET_FOV_MM)
    sigma = scanner.fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / np.asarray(scanner.voxel_mm)
    world = geo.grid_points(shape, affine)
    template_mm = geo.template_coordinates(world, pose, warp)
    relative = None
    if variation is not None and tracer.family == "tau":
        relative = geo.sample(variation[0], variation[1], template_mm, shape)
    uptake = pet_uptake(
        lambda v: geo.sample(v, anatomy.affine, template_mm, shape), anatomy, tracer.family, severity, region_weights, relative
    )
    still = ndimage.gaussian_filter(uptake, sigma)  # the head as in frame 0
    centre = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + affine[:3, 3]  # as the realignment's
    moves, moved = pet_head_motion(rng, drift_rng, tracer.frames, restless, centre)
    coefficients = ndimage.spline_filter(still, order=3, mode="nearest")
    reference = moves[reference_frame(tracer.frames)]
    truth = [asdict(frame_motion(m @ np.linalg.inv(reference), centre)) for m in moves]
    scale = rng.uniform(6000, 12000)  # Bq/mL at unit uptake
    trend = 0.02 if tracer.family == "fdg" else -0.01
    frames = []
    for f, move in enumerate(moves):
        clean = (still if np.allclose(move, np.eye(4)) else _moved(coefficients, affine, move)) * (1.0 + trend * f)
        noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.8) * 2.0
        frames.append(np.clip(clean + 0.05 * np.sqrt(np.clip(clean, 0, None) + 0.02) * noise, 0, None) * scale)
    img = nib.Nifti1Image(np.stack(frames, axis=-1).astype(np.float32), affine)
    img.set_data_dtype(np.int16)  # nibabel stores the scaling in scl_slope/scl_inter
    img.header.set_xyzt_units("mm", "sec")
    return img, moved, truth


def pet_uptake(
    at: Callable[[np.ndarray], np.ndarray],
    anatomy: TemplateAnatomy,
    family: str,
    severity: float,
    region_weights: np.ndarray,
    variation: np.ndarray | None = None,
) -> np.ndarray:
    """Uptake of one subject: normal pattern plus the AD effect of its severity.

    ``at`` evaluates a template-space map where it is needed (sampling is linear, so the
    maps are combined after sampling, never at full template resolution). ``variation``,
    already evaluated at the same points, scales the normal pattern by (1 + variation): the
    subject's nonspecific binding. The AD effect is added on top, so it stays what the
    ground-truth mask says whatever the variation."""
    uptake = at(anatomy.pet_base[family])
    if variation is not None:
        uptake = uptake * np.clip(1.0 + variation, 0.0, None)
    if severity == 0.0:
        return uptake
    if family == "amyloid":
        return uptake + severity * 0.55 * at(anatomy.grey_matter)  # diffuse cortical amyloid
    regional = sum(w * at(r) for w, r in zip(region_weights, anatomy.ad_regions.values()))
    effect = {"fdg": -0.35, "tau": TAU_AD_GAIN}[family]  # temporo-parietal hypometabolism / tau
    return uptake + severity * effect * regional


def _unpad(volume: np.ndarray, anatomy: TemplateAnatomy) -> np.ndarray:
    pad = (volume.shape[0] - anatomy.unpadded_shape[0]) // 2
    return volume[pad:-pad, pad:-pad, pad:-pad]


def _save(img: nib.Nifti1Image, path: Path, sidecar: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


def _mr_sidecar(scanner: MRIScanner, modality: str) -> dict:
    tr, te, ti = _MR_TIMING[modality]
    sidecar = {
        "Manufacturer": scanner.manufacturer,
        "ManufacturersModelName": scanner.model,
        "MagneticFieldStrength": scanner.field_strength,
        "Modality": "MR",
        "SeriesDescription": {"T1w": "MPRAGE", "T2w": "T2 TSE", "FLAIR": "FLAIR"}[modality],
        "RepetitionTime": tr,
        "EchoTime": te,
    }
    if ti is not None:
        sidecar["InversionTime"] = ti
    return sidecar


def _pet_sidecar(scanner: PETScanner, tracer: Tracer) -> dict:
    return {
        "Manufacturer": scanner.manufacturer,
        "ManufacturersModelName": scanner.model,
        "Modality": "PT",
        "Units": "Bq/mL",
        "TracerName": tracer.name,
        "TracerRadionuclide": "F18",
        "ModeOfAdministration": "bolus",
        "InjectedRadioactivity": 370.0,
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": "n/a",
        "InjectedMassUnits": "n/a",
        "SpecificRadioactivity": "n/a",
        "SpecificRadioactivityUnits": "n/a",
        "TimeZero": "10:00:00",
        "InjectionStart": 0,
        "ScanStart": tracer.frame_starts_s[0],
        "FrameTimesStart": tracer.frame_starts_s,
        "FrameDuration": tracer.frame_durations_s,
        "AcquisitionMode": "list mode",
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0,
        "AttenuationCorrection": "CT-based",
        "ReconMethodName": "OSEM",
        "ReconFilterType": "Gaussian",
        "ReconFilterSize": scanner.fwhm_mm,
    }


def write_subject(plan: SubjectPlan, out: Path, seed: int, tracers: tuple[str, ...]) -> None:
    """Render and write every series of one subject plus its ground truth."""
    anatomy = load_template_anatomy()
    rng = np.random.default_rng([seed, plan.index])
    scanner, pet_scanner = MRI_SCANNERS[plan.scanner], PET_SCANNERS[plan.pet_scanner]
    pose = geo.random_pose(rng)
    warp = geo.random_warp(rng, anatomy.mr["T1w"].shape, anatomy.affine, rms_mm=float(rng.uniform(1.5, 2.5)))
    sub = f"sub-{plan.subject}"
    stem = f"{sub}_ses-{SESSION}"
    anat, pet, truth = (
        out / sub / f"ses-{SESSION}" / "anat",
        out / sub / f"ses-{SESSION}" / "pet",
        out / "derivatives" / "groundtruth" / sub,
    )
    truth.mkdir(parents=True, exist_ok=True)
    moves: dict[str, np.ndarray] = {"T1w": np.eye(4)}

    _save(
        render_mr(anatomy, "T1w", scanner, scanner.voxel_mm, pose, warp, rng),
        anat / f"{stem}_T1w.nii.gz",
        _mr_sidecar(scanner, "T1w"),
    )
    for modality in () if plan.t1w_only else ("T2w", "FLAIR"):
        moves[modality] = geo.rigid(rng, 3.0, 4.0)  # head motion between series: T1w world -> this series' world
        voxel = (scanner.voxel_mm[0], scanner.voxel_mm[1], THICK_SLICE_MM[modality])
        img = render_mr(anatomy, modality, scanner, voxel, moves[modality] @ pose, warp, rng)
        _save(img, anat / f"{stem}_{modality}.nii.gz", _mr_sidecar(scanner, modality))

    weights = rng.uniform(0.6, 1.0, len(anatomy.ad_regions))
    variation = tau_variation(anatomy, seed, plan.index)
    drift_rng = np.random.default_rng([seed, plan.index, _PET_DRIFT_STREAM])
    corrupted_frames, frame_motion = {}, {}
    for name in () if plan.t1w_only else tracers:
        tracer = TRACERS[name]
        key = f"trc-{name}_pet"
        moves[key] = geo.rigid(rng, 8.0, 10.0)  # a separate visit on another scanner
        img, corrupted_frames[name], frame_motion[name] = render_pet(
            anatomy,
            tracer,
            pet_scanner,
            plan.severity,
            weights,
            moves[key] @ pose,
            warp,
            rng,
            drift_rng,
            plan.restless,
            variation,
        )
        _save(img, pet / f"{stem}_trc-{name}_pet.nii.gz", _pet_sidecar(pet_scanner, tracer))

    # ground truth: where each MNI point of the template sits in this subject's T1w world
    spacing = GROUNDTRUTH_SPACING_MM
    gt_shape = tuple(int(np.ceil(n / spacing)) for n in anatomy.unpadded_shape)
    gt_affine = anatomy.unpadded_affine @ np.diag([spacing, spacing, spacing, 1.0])
    points = geo.inverse_points(geo.grid_points(gt_shape, gt_affine), pose, warp)
    # stored as int16 in 1/64 mm steps (scl_slope): compact, and far finer than any registration error
    points_img = nib.Nifti1Image(np.round(points.T.reshape(*gt_shape, 3) * 64.0).astype(np.int16), gt_affine)
    points_img.header.set_slope_inter(1.0 / 64.0, 0.0)
    _save(points_img, truth / f"{sub}_from-{TEMPLATE_SPACE}_to-T1w_mode-points_xfm.nii.gz")
    for key, move in moves.items():
        if key != "T1w":
            np.savetxt(truth / f"{sub}_from-T1w_to-{key}_mode-rigid_xfm.txt", move, fmt="%.8f")
    mask = np.zeros(anatomy.unpadded_shape, dtype=np.uint8)
    if plan.severity > 0:
        extra_tau = pet_uptake(lambda v: _unpad(v, anatomy), anatomy, "tau", plan.severity, weights) - _unpad(
            anatomy.pet_base["tau"], anatomy
        )
        mask[extra_tau > TAU_MASK_THRESHOLD] = 1
    _save(nib.Nifti1Image(mask, anatomy.unpadded_affine), truth / f"{sub}_space-{TEMPLATE_SPACE}_desc-ADtau_mask.nii.gz")
    record = {
        **asdict(plan),
        "mri_scanner": asdict(scanner),
        "pet_scanner": None if plan.t1w_only else asdict(pet_scanner),  # volunteers had no PET
        "pose_template_to_T1w": pose.round(8).tolist(),
        "region_weights": dict(zip(anatomy.ad_regions, weights.round(6).tolist())),
        "tau_mask_threshold": TAU_MASK_THRESHOLD,  # the mask: voxels whose added tau uptake exceeds this
        "tau_ad_gain": TAU_AD_GAIN,
        "tau_normal_variation_sd": TAU_VARIATION_SD,
        "corrupted_pet_frame": corrupted_frames,  # the restless subject's moved frame per tracer, else null
        # each frame's head motion from the reference (middle) frame, measured as the QC does
        # (magicflow.preprocess.pet.frame_motion): what the frame realignment should find
        "pet_frame_motion": frame_motion,
    }
    (truth / f"{sub}_groundtruth.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _dataset_files(out: Path, plans: list[SubjectPlan], seed: int, tracers: tuple[str, ...]) -> None:
    n_t1w_only = sum(p.t1w_only for p in plans)
    description = {
        "Name": "MAGIC-Flow synthetic demo cohort",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["magicflow"],
        "GeneratedBy": [
            {
                "Name": "magicflow demo-cohort",
                "Version": __version__,
                "Description": f"seed={seed}, subjects={len(plans) - n_t1w_only}, t1w_only={n_t1w_only}, tracers={','.join(tracers)}",
            }
        ],
        "HowToAcknowledge": "Synthetic data derived from the ICBM 2009a MNI152 template bundled with nilearn.",
    }
    (out / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{p.subject}" for p in plans],
            "diagnosis": [p.diagnosis for p in plans],
            "age": [p.age for p in plans],
            "sex": [p.sex for p in plans],
        }
    )
    table.to_csv(out / "participants.tsv", sep="\t", index=False)
    columns = {
        "diagnosis": {
            "Description": "Simulated diagnosis",
            "Levels": {"AD": "Alzheimer's disease pattern", "CN": "cognitively normal"},
        },
        "age": {"Description": "Age at scan", "Units": "year"},
        "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    }
    (out / "participants.json").write_text(json.dumps(columns, indent=2) + "\n")
    (out / "README").write_text(
        "Synthetic demo cohort written by `magicflow demo-cohort`. Not real subjects: images are the\n"
        "ICBM 2009a template warped into per-subject native spaces, imaged by simulated scanners.\n"
        "derivatives/groundtruth holds the transforms and AD uptake masks the pipeline should recover.\n"
    )


def write_demo_cohort(
    out: str | os.PathLike[str],
    subjects: int = 12,
    seed: int = 0,
    ad_fraction: float = 0.5,
    tracers: tuple[str, ...] = tuple(TRACERS),
    workers: int | None = None,
    progress: bool = True,
    t1w_only: int = 0,
) -> list[SubjectPlan]:
    """Write the demo BIDS dataset to ``out`` (replacing it only once complete): ``subjects``
    with every series, then ``t1w_only`` volunteers with a T1w scan only.

    Deterministic: the same arguments give byte-identical files."""
    unknown = sorted(set(tracers) - set(TRACERS))
    if unknown:
        raise InputError(f"unknown tracer(s) {unknown}; expected some of {sorted(TRACERS)}")
    plans = plan_cohort(subjects, seed, ad_fraction, t1w_only)
    load_template_anatomy()  # built once here; forked workers share it
    workers = max(1, min(workers or os.cpu_count() or 1, len(plans)))
    with atomic_dir(out) as tmp:
        _dataset_files(tmp, plans, seed, tuple(tracers))
        bar = tqdm(total=len(plans), desc="demo cohort", unit="subject", disable=not progress)
        if workers == 1:
            for plan in plans:
                write_subject(plan, tmp, seed, tuple(tracers))
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
                for future in [pool.submit(write_subject, p, tmp, seed, tuple(tracers)) for p in plans]:
                    future.result()
                    bar.update()
        bar.close()
    return plans


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output BIDS folder (replaced once complete)")
    parser.add_argument("--subjects", type=int, default=12, help="number of subjects with every series (default 12)")
    parser.add_argument("--t1w-only", type=int, default=0, help="extra healthy volunteers with a T1w scan only (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--ad-fraction", type=float, default=0.5, help="fraction of AD subjects (default 0.5)")
    parser.add_argument(
        "--tracers", nargs="*", default=list(TRACERS), help=f"PET tracers, none for MRI only (default: {' '.join(TRACERS)})"
    )
    parser.add_argument("--workers", type=int, default=None, help="parallel worker processes (default: CPU count)")


def run(args: argparse.Namespace) -> int:
    write_demo_cohort(
        args.out, args.subjects, args.seed, args.ad_fraction, tuple(args.tracers), args.workers, t1w_only=args.t1w_only
    )
    return 0
