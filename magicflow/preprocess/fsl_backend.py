"""FSL backend through nipype: the ``fsl_anat`` registration steps, and FLIRT coregistration.

T1: ``fslreorient2std`` -> ``fast`` bias correction (fsl_anat's settings: -t 1 -l 20 -I 10,
no partial volumes) -> ``flirt`` 12 dof to the 2 mm template -> ``fnirt`` with FSL's
T1_2_MNI152_2mm config and the dilated 2 mm brain mask -> ``applywarp`` onto the 1 mm grid.
Secondary images: ``fslreorient2std`` -> (optional ``fast``, T2w and FLAIR only) -> ``flirt -dof 6 -cost normmi``
to the bias-corrected native T1 -> ``applywarp --premat`` with the T1's warp (one resampling).

Each step is built by a function returning the nipype interface, so the command lines can be
checked where FSL is absent; :func:`run` executes them where it is installed."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import fsl
from nipype.interfaces.base import CommandLine

from magicflow.preprocess.backend import bias_correction_applies, thread_environment

#: FAST image types of the images it bias-corrects (never PET: see backend.BIAS_CORRECTED)
FAST_TYPES = {"T1w": 1, "T2w": 2, "FLAIR": 2}


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


def bias_correct(in_file: Path, out_basename: Path, modality: str = "T1w", threads: int = 1) -> CommandLine:
    """FAST restore (``<basename>_restore.nii.gz``) with fsl_anat's bias settings."""
    return _setup(
        fsl.FAST(
            in_files=str(in_file), out_basename=str(out_basename), img_type=FAST_TYPES[modality],
            bias_lowpass=20, bias_iters=10, no_pve=True, output_biascorrected=True, output_biasfield=True,
        ),
        threads,
    )


def affine_to_template(in_file: Path, reference: Path, out_matrix: Path, out_file: Path, threads: int = 1) -> CommandLine:
    return _setup(
        fsl.FLIRT(
            in_file=str(in_file), reference=str(reference), dof=12, interp="spline",
            out_matrix_file=str(out_matrix), out_file=str(out_file),
        ),
        threads,
    )


def nonlinear_to_template(
    in_file: Path, reference: Path, ref_mask: Path, affine: Path, coeff_file: Path, warped_file: Path,
    log_file: Path, threads: int = 1,
) -> CommandLine:
    return _setup(
        fsl.FNIRT(
            in_file=str(in_file), ref_file=str(reference), refmask_file=str(ref_mask), affine_file=str(affine),
            config_file="T1_2_MNI152_2mm", fieldcoeff_file=str(coeff_file), warped_file=str(warped_file),
            log_file=str(log_file),
        ),
        threads,
    )


def apply_warp(
    in_file: Path, reference: Path, warp: Path, out_file: Path, premat: Path | None = None,
    interp: str = "spline", threads: int = 1,
) -> CommandLine:
    kwargs = {"premat": str(premat)} if premat is not None else {}
    return _setup(
        fsl.ApplyWarp(
            in_file=str(in_file), ref_file=str(reference), field_file=str(warp), out_file=str(out_file),
            interp=interp, **kwargs,
        ),
        threads,
    )


def rigid_to_t1(in_file: Path, t1_native: Path, out_matrix: Path, out_file: Path, threads: int = 1) -> CommandLine:
    """FLIRT 6 dof with normalised mutual information for both the search and the final cost."""
    return _setup(
        fsl.FLIRT(
            in_file=str(in_file), reference=str(t1_native), dof=6, cost="normmi", searchr_x=[-90, 90],
            searchr_y=[-90, 90], searchr_z=[-90, 90], out_matrix_file=str(out_matrix), out_file=str(out_file),
        ),
        threads,
    )


def run(interface: CommandLine) -> None:
    """Run one FSL step; nipype raises with FSL's stderr when it fails."""
    print(f"[fsl] {interface.cmdline}", flush=True)
    interface.run()


def t1_steps(t1: Path, template_1mm_t1: Path, template_2mm_t1: Path, template_2mm_mask_dil: Path,
             work: Path, threads: int) -> dict[str, object]:
    """The T1 chain in order, with the files it leaves in ``work`` (see the module docstring)."""
    files = {
        "reoriented": work / "T1_reorient.nii.gz",
        "fast_base": work / "T1_fast",
        "native": work / "T1_fast_restore.nii.gz",
        "affine": work / "T1_to_MNI_lin.mat",
        "affine_image": work / "T1_to_MNI_lin.nii.gz",
        "warp": work / "T1_to_MNI_nonlin_coeff.nii.gz",
        "fnirt_image": work / "T1_to_MNI_nonlin.nii.gz",
        "fnirt_log": work / "T1_to_MNI_nonlin.log",
        "mni": work / "T1_to_MNI.nii.gz",
    }
    steps = [
        lambda: reorient(t1, files["reoriented"], threads),
        lambda: bias_correct(files["reoriented"], files["fast_base"], "T1w", threads),
        lambda: affine_to_template(files["native"], template_2mm_t1, files["affine"], files["affine_image"], threads),
        lambda: nonlinear_to_template(files["native"], template_2mm_t1, template_2mm_mask_dil, files["affine"],
                                      files["warp"], files["fnirt_image"], files["fnirt_log"], threads),
        lambda: apply_warp(files["native"], template_1mm_t1, files["warp"], files["mni"], threads=threads),
    ]
    return {"files": files, "steps": steps}


def secondary_steps(image: Path, t1_native: Path, t1_warp: Path, template_1mm_t1: Path, modality: str,
                    bias: bool, work: Path, threads: int) -> dict[str, object]:
    """Reorient, optional FAST (T2w and FLAIR only), FLIRT normmi 6 dof to the native T1, one
    applywarp to MNI."""
    bias = bias_correction_applies(modality, bias)
    files = {
        "reoriented": work / "img_reorient.nii.gz",
        "fast_base": work / "img_fast",
        "rigid": work / "img_to_T1.mat",
        "rigid_image": work / "img_to_T1.nii.gz",
        "mni": work / "img_to_MNI.nii.gz",
    }
    source = work / "img_fast_restore.nii.gz" if bias else files["reoriented"]
    steps = [lambda: reorient(image, files["reoriented"], threads)]
    if bias:
        steps.append(lambda: bias_correct(files["reoriented"], files["fast_base"], modality, threads))
    steps += [
        lambda: rigid_to_t1(source, t1_native, files["rigid"], files["rigid_image"], threads),
        lambda: apply_warp(source, template_1mm_t1, t1_warp, files["mni"], premat=files["rigid"],
                           interp="spline", threads=threads),
    ]
    return {"files": files, "steps": steps}
