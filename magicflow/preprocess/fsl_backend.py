"""FSL backend through nipype: ``fsl_anat``'s registration chain, FLIRT coregistration, MCFLIRT.

T1, step for step as ``fsl_anat`` (FSL 6) with its defaults (``--weakbias`` settings, no lesion
mask) and ``--noseg --nosubcortseg`` (the tissue segmentation's bias refinement and FIRST are not
needed for slices; the bias field is then the one fsl_anat's first FAST pass estimates):

1. ``fslreorient2std``; ``robustfov`` crops the neck (brain size 170 mm), so a sagittal
   MPRAGE with the neck in view does not drag the 12-dof FLIRT;
2. bias: ``bet -m -f 0.1`` (a rough, over-inclusive brain), ``fast -l 20 --iter=10 --nopve
   --fixed=0`` on that brain, the field (image / restored) extrapolated from the eroded brain to
   the whole head with ``fslsmoothfill``, the head divided by it (``T1_biascorr``);
3. ``flirt -dof 12 -interp spline`` to FSL's own ``MNI152_T1_2mm``;
4. ``fnirt --config=T1_2_MNI152_2mm`` with the reference mask prepared as fsl_anat does
   (``MNI152_T1_2mm_brain_mask -fillh -dilF``);
5. ``applywarp --interp=spline`` onto the 1 mm grid (fsl_anat stops at 2 mm).

Secondary images: (PET: ``fslreorient2std`` and ``mcflirt`` of the frames to the middle one, then
their median) -> ``fslreorient2std`` -> (optional ``fast``, T2w and FLAIR only) -> ``flirt -dof 6 -cost normmi -searchcost normmi`` to
``T1_biascorr`` -> ``applywarp --premat`` with the T1's warp (one resampling).

Each step is a function returning its nipype interface, so the command lines are checked where
FSL is absent (tests/test_preprocess_fsl.py compares them with fsl_anat's). :func:`run` executes
the command line nipype built in a subprocess: nipype's own ``run`` checks for outputs that these
steps do not ask for (FAST's segmentation files with ``--nopve``) and would fail after FSL
succeeded."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from nipype.interfaces import fsl
from nipype.interfaces.base import CommandLine

from magicflow.preprocess.backend import bias_correction_applies, thread_environment
from magicflow.preprocess.template import fsl_standard_file

#: FAST image types of the images it bias-corrects (never PET: see backend.BIAS_CORRECTED)
FAST_TYPES = {"T1w": 1, "T2w": 2, "FLAIR": 2}
#: fsl_anat's defaults (its weak-bias settings): FAST bias smoothing (mm) and iterations, BET -f
BIAS_LOWPASS_MM = 20
BIAS_ITERATIONS = 10
BET_FRACTION = 0.1
#: FSL's standard-space files the T1 chain registers to, as fsl_anat names them
STANDARD_2MM = "MNI152_T1_2mm.nii.gz"
STANDARD_2MM_MASK = "MNI152_T1_2mm_brain_mask.nii.gz"

Step = Callable[[], CommandLine]

if TYPE_CHECKING:
    import nibabel as nib

    from magicflow.preprocess.pet import Realignment


def fsl_standard_dir() -> Path:
    """``$FSLDIR/data/standard``, where fsl_anat finds the MNI152 templates (checked to hold them)."""
    fsl_standard_file(STANDARD_2MM_MASK)
    return fsl_standard_file(STANDARD_2MM).parent


def _environ(threads: int) -> dict[str, str]:
    return {"FSLOUTPUTTYPE": "NIFTI_GZ", **thread_environment(threads)}


def _setup(interface: CommandLine, threads: int) -> CommandLine:
    """Compressed NIfTI outputs and the thread bounds, passed explicitly to the FSL process."""
    interface.inputs.environ = _environ(threads)
    if hasattr(interface, "_output_type"):
        interface._output_type = "NIFTI_GZ"
    return interface


def reorient(in_file: Path, out_file: Path, threads: int = 1) -> CommandLine:
    return _setup(fsl.Reorient2Std(in_file=str(in_file), out_file=str(out_file)), threads)


def crop_fov(in_file: Path, out_file: Path, roi_to_full: Path, threads: int = 1) -> CommandLine:
    """``robustfov``: the head's top 170 mm (neck cut), and the ROI-to-full-FOV matrix."""
    return _setup(fsl.RobustFOV(in_file=str(in_file), out_roi=str(out_file), out_transform=str(roi_to_full)), threads)


def rough_brain(in_file: Path, out_file: Path, threads: int = 1) -> CommandLine:
    """``bet -m -f 0.1``: fsl_anat's deliberately over-inclusive brain for the bias estimate."""
    return _setup(fsl.BET(in_file=str(in_file), out_file=str(out_file), mask=True, frac=BET_FRACTION), threads)


def bias_correct(in_file: Path, out_basename: Path, modality: str = "T1w", threads: int = 1) -> CommandLine:
    """FAST bias estimate with fsl_anat's settings (``-l 20 --iter=10 --nopve --fixed=0``);
    writes ``<basename>_restore`` and ``<basename>_bias``."""
    return _setup(
        fsl.FAST(
            in_files=str(in_file),
            out_basename=str(out_basename),
            img_type=FAST_TYPES[modality],
            bias_lowpass=BIAS_LOWPASS_MM,
            bias_iters=BIAS_ITERATIONS,
            no_pve=True,
            output_biascorrected=True,
            output_biasfield=True,
            verbose=True,
            args="--fixed=0",  # nipype's iters_afterbias refuses 0
        ),
        threads,
    )


def maths(in_file: Path, operations: str, out_file: Path, threads: int = 1) -> CommandLine:
    """``fslmaths <in> <operations> <out>``."""
    return _setup(fsl.ImageMaths(in_file=str(in_file), op_string=operations, out_file=str(out_file)), threads)


def smooth_fill(in_file: Path, mask: Path, out_file: Path, threads: int = 1) -> CommandLine:
    """``fslsmoothfill``: extrapolate the bias field from inside ``mask`` to the whole image
    (no nipype interface exists for it)."""
    return _setup(CommandLine("fslsmoothfill", args=f"-i {in_file} -m {mask} -o {out_file}"), threads)


def affine_to_template(in_file: Path, reference: Path, out_matrix: Path, out_file: Path, threads: int = 1) -> CommandLine:
    return _setup(
        fsl.FLIRT(
            in_file=str(in_file),
            reference=str(reference),
            dof=12,
            interp="spline",
            out_matrix_file=str(out_matrix),
            out_file=str(out_file),
        ),
        threads,
    )


def nonlinear_to_template(
    in_file: Path,
    reference: Path,
    ref_mask: Path,
    affine: Path,
    files: dict[str, Path],
    threads: int = 1,
) -> CommandLine:
    """FNIRT with fsl_anat's config and outputs (coefficients, field, Jacobian, image, log)."""
    return _setup(
        fsl.FNIRT(
            in_file=str(in_file),
            ref_file=str(reference),
            refmask_file=str(ref_mask),
            affine_file=str(affine),
            config_file="T1_2_MNI152_2mm",
            fieldcoeff_file=str(files["warp"]),
            field_file=str(files["field"]),
            jacobian_file=str(files["jacobian"]),
            warped_file=str(files["fnirt_image"]),
            log_file=str(files["fnirt_log"]),
        ),
        threads,
    )


def apply_warp(
    in_file: Path,
    reference: Path,
    warp: Path,
    out_file: Path,
    premat: Path | None = None,
    interp: str = "spline",
    threads: int = 1,
) -> CommandLine:
    kwargs = {"premat": str(premat)} if premat is not None else {}
    return _setup(
        fsl.ApplyWarp(
            in_file=str(in_file),
            ref_file=str(reference),
            field_file=str(warp),
            out_file=str(out_file),
            interp=interp,
            **kwargs,
        ),
        threads,
    )


def rigid_to_t1(in_file: Path, t1_native: Path, out_matrix: Path, out_file: Path, threads: int = 1) -> CommandLine:
    """FLIRT 6 dof with normalised mutual information for both the search and the final cost."""
    return _setup(
        fsl.FLIRT(
            in_file=str(in_file),
            reference=str(t1_native),
            dof=6,
            cost="normmi",
            cost_func="normmi",
            searchr_x=[-90, 90],
            searchr_y=[-90, 90],
            searchr_z=[-90, 90],
            out_matrix_file=str(out_matrix),
            out_file=str(out_file),
        ),
        threads,
    )


def realign(in_file: Path, out_file: Path, reference_frame: int, threads: int = 1) -> CommandLine:
    """``mcflirt`` rigid realignment of every frame to ``reference_frame``, keeping the matrices
    (``<out>.mat/MAT_nnnn``) and the motion parameters (``<out>.par``)."""
    return _setup(
        fsl.MCFLIRT(in_file=str(in_file), out_file=str(out_file), ref_vol=reference_frame, save_mats=True, save_plots=True),
        threads,
    )


def run(interface: CommandLine) -> None:
    """Run one FSL step (the command line nipype built) and raise with FSL's output on failure."""
    command = interface.cmdline
    print(f"[fsl] {command}", flush=True)
    result = subprocess.run(command, shell=True, env={**os.environ, **interface.inputs.environ}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"FSL step failed ({result.returncode}): {command}\n{result.stdout}{result.stderr}")


def t1_files(work: Path) -> dict[str, Path]:
    """fsl_anat's file names (``T1_*``) for the chain's files in ``work``."""
    names = {
        "fullfov": "T1_fullfov.nii.gz",
        "cropped": "T1.nii.gz",
        "roi_to_full": "T1_roi2nonroi.mat",
        "rough_brain": "T1_initfast2_brain.nii.gz",
        "rough_mask": "T1_initfast2_brain_mask.nii.gz",
        "fast_base": "T1_fast",
        "fast_restore": "T1_fast_restore.nii.gz",
        "totbias": "T1_fast_totbias.nii.gz",
        "fill_mask": "T1_initfast2_brain_mask2.nii.gz",
        "bias": "T1_fast_bias.nii.gz",
        "native": "T1_biascorr.nii.gz",
        "affine": "T1_to_MNI_lin.mat",
        "affine_image": "T1_to_MNI_lin.nii.gz",
        "ref_mask": "MNI152_T1_2mm_brain_mask_dil1.nii.gz",
        "warp": "T1_to_MNI_nonlin_coeff.nii.gz",
        "field": "T1_to_MNI_nonlin_field.nii.gz",
        "jacobian": "T1_to_MNI_nonlin_jac.nii.gz",
        "fnirt_image": "T1_to_MNI_nonlin.nii.gz",
        "fnirt_log": "T1_to_MNI_nonlin.txt",
        "mni": "T1_to_MNI.nii.gz",
    }
    return {key: work / name for key, name in names.items()}


def t1_steps(t1: Path, standard_dir: Path, grid_1mm: Path, work: Path, threads: int) -> dict[str, object]:
    """The T1 chain in order (see the module docstring), with the files it leaves in ``work``.

    ``standard_dir`` holds FSL's MNI152 files (:func:`fsl_standard_dir`); ``grid_1mm`` is the 1 mm
    template the MNI image is written on."""
    f = t1_files(work)
    ref = standard_dir / STANDARD_2MM
    steps: list[Step] = [
        lambda: reorient(t1, f["fullfov"], threads),
        lambda: crop_fov(f["fullfov"], f["cropped"], f["roi_to_full"], threads),
        lambda: rough_brain(f["cropped"], f["rough_brain"], threads),
        lambda: bias_correct(f["rough_brain"], f["fast_base"], "T1w", threads),
        lambda: maths(f["cropped"], f"-div {f['fast_restore']} -mas {f['rough_mask']}", f["totbias"], threads),
        lambda: maths(f["rough_mask"], "-ero -ero -ero -ero", f["fill_mask"], threads),
        lambda: maths(f["totbias"], "-sub 1", f["totbias"], threads),
        lambda: smooth_fill(f["totbias"], f["fill_mask"], f["bias"], threads),
        lambda: maths(f["bias"], "-add 1", f["bias"], threads),
        lambda: maths(f["cropped"], f"-div {f['bias']}", f["native"], threads),
        lambda: affine_to_template(f["native"], ref, f["affine"], f["affine_image"], threads),
        lambda: maths(standard_dir / STANDARD_2MM_MASK, "-fillh -dilF", f["ref_mask"], threads),
        lambda: nonlinear_to_template(f["native"], ref, f["ref_mask"], f["affine"], f, threads),
        lambda: apply_warp(f["native"], grid_1mm, f["warp"], f["mni"], threads=threads),
    ]
    return {"files": f, "steps": steps}


def secondary_steps(
    image: Path, t1_native: Path, t1_warp: Path, template_1mm_t1: Path, modality: str, bias: bool, work: Path, threads: int
) -> dict[str, object]:
    """Reorient, optional FAST (T2w and FLAIR only), FLIRT normmi 6 dof to the native T1, one
    applywarp to MNI. A PET arrives realigned and collapsed (:func:`realign_frames`)."""
    bias = bias_correction_applies(modality, bias)
    files = {
        "reoriented": work / "img_reorient.nii.gz",
        "fast_base": work / "img_fast",
        "rigid": work / "img_to_T1.mat",
        "rigid_image": work / "img_to_T1.nii.gz",
        "mni": work / "img_to_MNI.nii.gz",
    }
    source = work / "img_fast_restore.nii.gz" if bias else files["reoriented"]
    steps: list[Step] = [lambda: reorient(image, files["reoriented"], threads)]
    if bias:
        steps.append(lambda: bias_correct(files["reoriented"], files["fast_base"], modality, threads))
    steps += [
        lambda: rigid_to_t1(source, t1_native, files["rigid"], files["rigid_image"], threads),
        lambda: apply_warp(
            source, template_1mm_t1, t1_warp, files["mni"], premat=files["rigid"], interp="spline", threads=threads
        ),
    ]
    return {"files": files, "steps": steps}


def read_mcflirt_matrices(out_file: Path, frames: int) -> list[np.ndarray]:
    """MCFLIRT's per-frame matrices (``<out>.mat/MAT_nnnn``), FSL mm coordinates, frame -> reference."""
    folder = Path(str(out_file).removesuffix(".nii.gz") + ".mat")
    paths = [folder / f"MAT_{i:04d}" for i in range(frames)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"mcflirt left no matrix {missing[0]} for {out_file}")
    return [np.loadtxt(p) for p in paths]


def realign_frames(frames: nib.Nifti1Image, reference: int, work: Path, threads: int = 1) -> Realignment:
    """Reorient the 4D PET and realign its frames with ``mcflirt`` (see :func:`realign`)."""
    import nibabel as nib

    from magicflow.preprocess.pet import Realignment

    src, reoriented, out = work / "pet_frames.nii.gz", work / "pet_reorient.nii.gz", work / "pet_mcf.nii.gz"
    nib.save(frames, src)
    run(reorient(src, reoriented, threads))
    run(realign(reoriented, out, reference, threads))
    aligned = nib.load(out)
    count = aligned.shape[3]
    to_frame = tuple(np.linalg.inv(m) for m in read_mcflirt_matrices(out, count))  # MAT_ maps frame -> reference
    centre = (np.asarray(aligned.shape[:3]) - 1) / 2 * np.asarray(aligned.header.get_zooms()[:3])  # FSL mm coordinates
    image = nib.Nifti1Image(np.asarray(aligned.dataobj, dtype=np.float32), aligned.affine)
    return Realignment(image, reference, to_frame, centre, f"mcflirt -refvol {reference} (FSL)")
