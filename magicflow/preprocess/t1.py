"""T1 to MNI152: run the chosen backend and write every output atomically with a JSON sidecar."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from magicflow.errors import InputError
from magicflow.io import atomic_path, write_json
from magicflow.preprocess.accuracy import GroundTruth, groundtruth_error
from magicflow.preprocess.backend import resolve_backend, set_threads
from magicflow.preprocess.template import SPACE_FSL, load_template
from magicflow.preprocess.volumes import load_3d, save_float32


@dataclass(frozen=True)
class T1Outputs:
    """Where :func:`preprocess_t1` writes. ``native`` is the reoriented, bias-corrected T1 that
    T2w/FLAIR/PET are coregistered to; ``affine`` and ``warp`` map it to MNI."""

    mni: Path
    mask: Path
    native: Path
    affine: Path
    warp: Path
    sidecar: Path


def _mni_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    return img


def preprocess_t1(
    t1_path: str | os.PathLike[str],
    template_dir: str | os.PathLike[str],
    out: T1Outputs,
    backend: str = "auto",
    preset: str = "demo",
    threads: int = 1,
    groundtruth: GroundTruth | None = None,
) -> dict[str, object]:
    """Register one T1 to the template; returns (and writes) the sidecar record.

    The MNI brain mask written is the template's: after nonlinear registration the subject's
    brain occupies the template brain, and one mask keeps every image of a dataset comparable.
    With ``groundtruth`` (a demo subject's planted mapping) the record carries the registration's
    error against it (``GroundTruthErrorMM``), so every demo image is scored, not a test's one."""
    from magicflow.preprocess.ants_backend import PRESETS

    set_threads(threads)
    chosen = resolve_backend(backend)
    tpl1 = load_template(template_dir, 1)
    if chosen == "fsl" and tpl1.space != SPACE_FSL:
        raise InputError(
            f"{template_dir}: a {tpl1.space} template, but the FSL backend registers to FSL's own "
            f"MNI152 ({SPACE_FSL}); rebuild it with `magicflow preprocess-template --backend fsl`"
        )
    if groundtruth is not None and chosen != "ants":
        raise InputError(f"{groundtruth.points}: the ground-truth error reads ANTs transforms; backend is {chosen}")
    t1 = load_3d(t1_path, "T1")  # validate before any heavy work
    print(f"[preprocess-t1] {t1_path}: backend={chosen} preset={preset} threads={threads}", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="magicflow-t1-") as tmp:
        work = Path(tmp)
        if chosen == "ants":
            from magicflow.preprocess import ants_backend

            settings = PRESETS[preset]
            result = ants_backend.register_t1(t1, tpl1, load_template(template_dir, settings.template_resolution), settings, work)
            native, mni, affine_file, warp_file = result.native, result.mni, result.affine_file, result.warp_file
            fmt, details = (
                "ants",
                {
                    "NeckCropMM": result.neck_crop_mm,
                    "StepSeconds": result.step_seconds,
                    "StepCPUSeconds": result.step_cpu_seconds,
                },
            )
            if groundtruth is not None:
                details["GroundTruthErrorMM"] = groundtruth_error([warp_file, affine_file], groundtruth, tpl1)
        else:
            from magicflow.preprocess import fsl_backend

            chain = fsl_backend.t1_steps(Path(t1_path), fsl_backend.fsl_standard_dir(), tpl1.t1, work, threads)
            for step in chain["steps"]:
                fsl_backend.run(step())
            files = chain["files"]
            native, mni = nib.load(files["native"]), nib.load(files["mni"])
            affine_file, warp_file, fmt, details = (
                files["affine"],
                files["warp"],
                "fsl",
                {"Chain": "fsl_anat --noseg --nosubcortseg"},
            )
        grid = nib.load(tpl1.t1)
        record: dict[str, object] = {
            "Backend": chosen,
            "Preset": preset if chosen == "ants" else "fsl_anat",
            "Threads": threads,
            "Space": tpl1.space,
            "TemplateDir": str(Path(template_dir)),
            "Source": str(Path(t1_path)),
            "TransformFormat": fmt,
            "Transforms": {"native": str(out.native), "affine": str(out.affine), "warp": str(out.warp)},
            "RegistrationSeconds": round(time.perf_counter() - start, 1),
            **details,
        }
        with ExitStack() as stack:
            tmp_paths = {
                k: stack.enter_context(atomic_path(getattr(out, k))) for k in ("mni", "mask", "native", "affine", "warp")
            }
            nib.save(_mni_image(mni.get_fdata(), grid.affine), tmp_paths["mni"])
            shutil.copyfile(tpl1.brain_mask, tmp_paths["mask"])
            save_float32(native, tmp_paths["native"])
            shutil.copyfile(affine_file, tmp_paths["affine"])
            shutil.copyfile(warp_file, tmp_paths["warp"])
            write_json(out.sidecar, record)
    print(f"[preprocess-t1] done in {record['RegistrationSeconds']} s -> {out.mni}", flush=True)
    return record
