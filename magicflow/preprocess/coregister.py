"""T2w, FLAIR and PET to MNI: rigid (6 dof, mutual information) to the subject's native T1, then
the T1's affine and warp, all composed into a single resampling onto the 1 mm grid."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from magicflow.errors import InputError
from magicflow.io import atomic_path, write_json
from magicflow.preprocess.accuracy import GroundTruth, groundtruth_error
from magicflow.preprocess.backend import bias_correction_applies, set_threads
from magicflow.preprocess.template import load_template
from magicflow.preprocess.volumes import load_3d

if TYPE_CHECKING:
    from magicflow.preprocess.pet import Realigner

MODALITIES = ("T2w", "FLAIR", "pet")


@dataclass(frozen=True)
class SecondaryOutputs:
    mni: Path
    rigid: Path
    sidecar: Path


def read_t1_record(t1_sidecar: str | os.PathLike[str]) -> dict:
    """The T1 sidecar written by ``preprocess-t1``; its transforms must exist (a PET or T2w
    without its subject's T1 cannot be placed in MNI)."""
    path = Path(t1_sidecar)
    if not path.is_file():
        raise InputError(f"{path}: T1 sidecar not found; this subject has no preprocessed T1 to register to")
    record = json.loads(path.read_text())
    for key, value in record["Transforms"].items():
        if not Path(value).is_file():
            raise InputError(f"{path}: T1 {key} file {value} is missing")
    return record


def frame_realigner(backend: str, work: Path, threads: int, preset: str) -> Realigner:
    """The backend's PET frame realignment (mcflirt on FSL, ANTs rigid with ``preset``'s schedule otherwise)."""
    if backend == "fsl":
        from magicflow.preprocess import fsl_backend

        return lambda frames, reference: fsl_backend.realign_frames(frames, reference, work, threads)
    from magicflow.preprocess import ants_backend

    schedule = ants_backend.PRESETS[preset].frame_schedule
    return lambda frames, reference: ants_backend.realign_frames(frames, reference, work, schedule)


def preprocess_secondary(
    image_path: str | os.PathLike[str],
    modality: str,
    t1_sidecar: str | os.PathLike[str],
    out: SecondaryOutputs,
    bias_correct: bool = False,
    threads: int = 1,
    sidecar: str | os.PathLike[str] | None = None,
    tracer: str | None = None,
    groundtruth: GroundTruth | None = None,
) -> dict[str, object]:
    """Coregister one T2w/FLAIR/PET to its T1 and resample it into MNI (backend follows the T1's).

    ``bias_correct`` applies to T2w and FLAIR only (see :func:`bias_correction_applies`).
    ``sidecar`` and ``tracer`` are the manifest's for a PET (its sidecar may be inherited from
    higher in a BIDS tree; its tracer_name stands in for a missing TracerName).
    ``groundtruth`` (a demo image's planted points and rigid move) adds the whole chain's error
    against it to the record (``GroundTruthErrorMM``)."""
    if modality not in MODALITIES:
        raise InputError(f"modality {modality!r}: expected one of {', '.join(MODALITIES)}")
    set_threads(threads)
    t1 = read_t1_record(t1_sidecar)
    if groundtruth is not None and (t1["Backend"] != "ants" or groundtruth.rigid is None):
        raise InputError(
            f"{groundtruth.points}: the ground-truth error needs the ANTs backend (the T1's is {t1['Backend']})"
            " and the series' rigid move"
        )
    bias_correct = bias_correction_applies(modality, bias_correct)
    tpl1 = load_template(t1["TemplateDir"], 1)
    transforms = t1["Transforms"]
    print(f"[preprocess-{modality}] {image_path}: backend={t1['Backend']}", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="magicflow-coreg-") as tmp:
        work = Path(tmp)
        pet_info: dict[str, object] = {}
        accuracy: dict[str, object] = {}
        if modality == "pet":
            from magicflow.preprocess.pet import pet_record, static_pet

            static = static_pet(image_path, sidecar, tracer, realign=frame_realigner(t1["Backend"], work, threads, t1["Preset"]))
            moving = static.image
            pet_info = pet_record(static)
        else:
            moving = load_3d(image_path, modality)
        if t1["Backend"] == "ants":
            from magicflow.preprocess import ants_backend

            preset = ants_backend.PRESETS[t1["Preset"]]
            moving = ants_backend.reorient(moving)
            if bias_correct:
                moving = ants_backend.bias_correct(moving, preset, work)
            native = nib.load(transforms["native"])
            rigid = ants_backend.rigid_to_t1(moving, native, preset, work, modality)
            chain = [Path(transforms["warp"]), Path(transforms["affine"]), rigid]
            mni = ants_backend.to_mni(moving, chain, tpl1, work, modality)
            if groundtruth is not None:
                accuracy["GroundTruthErrorMM"] = groundtruth_error(chain, groundtruth, tpl1)
        else:
            from magicflow.preprocess import fsl_backend

            src = work / "input.nii.gz"
            nib.save(moving, src)
            steps = fsl_backend.secondary_steps(
                src, Path(transforms["native"]), Path(transforms["warp"]), tpl1.t1, modality, bias_correct, work, threads
            )
            for step in steps["steps"]:
                fsl_backend.run(step())
            rigid, mni = steps["files"]["rigid"], nib.load(steps["files"]["mni"])
        grid = nib.load(tpl1.t1).affine
        record = {
            "Backend": t1["Backend"],
            "Space": t1["Space"],
            "Modality": modality,
            "Source": str(Path(image_path)),
            "T1Sidecar": str(Path(t1_sidecar)),
            "BiasCorrection": bias_correct,
            "Coregistration": "FLIRT 6 dof, -cost normmi -searchcost normmi"
            if t1["Backend"] == "fsl"
            else "ANTs Rigid, Mattes MI",
            "RigidTransform": str(out.rigid),
            "Seconds": round(time.perf_counter() - start, 1),
            **pet_info,
            **accuracy,
        }
        with ExitStack() as stack:
            tmp_mni = stack.enter_context(atomic_path(out.mni))
            tmp_rigid = stack.enter_context(atomic_path(out.rigid))
            img = nib.Nifti1Image(np.asarray(mni.dataobj, dtype=np.float32), grid)
            img.set_sform(grid, code=4)
            img.set_qform(grid, code=4)
            nib.save(img, tmp_mni)
            shutil.copyfile(rigid, tmp_rigid)
            write_json(out.sidecar, record)
    print(f"[preprocess-{modality}] done in {record['Seconds']} s -> {out.mni}", flush=True)
    return record
