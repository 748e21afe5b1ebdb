"""The FSL backend's command lines (FSL is absent here) and, where FSL exists, a real run."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicflow.preprocess import fsl_backend
from magicflow.preprocess.template import fsl_available


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    for name in ("t1.nii.gz", "tpl1.nii.gz", "tpl2.nii.gz", "mask.nii.gz", "aff.mat", "coef.nii.gz", "t2.nii.gz", "rigid.mat"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_reorient_cmdline(files):
    cmd = fsl_backend.reorient(files / "t1.nii.gz", files / "r.nii.gz").cmdline
    assert cmd == f"fslreorient2std {files}/t1.nii.gz {files}/r.nii.gz"


def test_fast_cmdline(files):
    cmd = fsl_backend.bias_correct(files / "t1.nii.gz", files / "fast", "T1w").cmdline
    assert cmd == f"fast -I 10 -l 20 -t 1 --nopve -o {files}/fast -B -b -S 1 {files}/t1.nii.gz"
    assert " -t 2 " in fsl_backend.bias_correct(files / "t2.nii.gz", files / "fast", "FLAIR").cmdline


def test_flirt_affine_cmdline(files):
    cmd = fsl_backend.affine_to_template(files / "t1.nii.gz", files / "tpl2.nii.gz", files / "lin.mat", files / "lin.nii.gz").cmdline
    assert cmd == (f"flirt -in {files}/t1.nii.gz -ref {files}/tpl2.nii.gz -out {files}/lin.nii.gz "
                   f"-omat {files}/lin.mat -dof 12 -interp spline")


def test_fnirt_cmdline(files):
    cmd = fsl_backend.nonlinear_to_template(
        files / "t1.nii.gz", files / "tpl2.nii.gz", files / "mask.nii.gz", files / "aff.mat",
        files / "out_coef.nii.gz", files / "nl.nii.gz", files / "fnirt.log",
    ).cmdline
    assert cmd == (f"fnirt --aff={files}/aff.mat --config=T1_2_MNI152_2mm --cout={files}/out_coef.nii.gz "
                   f"--in={files}/t1.nii.gz --logout={files}/fnirt.log --ref={files}/tpl2.nii.gz "
                   f"--refmask={files}/mask.nii.gz --iout={files}/nl.nii.gz")


def test_applywarp_cmdline(files):
    cmd = fsl_backend.apply_warp(files / "t1.nii.gz", files / "tpl1.nii.gz", files / "coef.nii.gz", files / "o.nii.gz").cmdline
    assert cmd == (f"applywarp --in={files}/t1.nii.gz --ref={files}/tpl1.nii.gz --out={files}/o.nii.gz "
                   f"--warp={files}/coef.nii.gz --interp=spline")
    cmd = fsl_backend.apply_warp(files / "t2.nii.gz", files / "tpl1.nii.gz", files / "coef.nii.gz", files / "o.nii.gz",
                                 premat=files / "rigid.mat").cmdline
    assert f"--premat={files}/rigid.mat" in cmd


def test_coregistration_cmdline(files):
    cmd = fsl_backend.rigid_to_t1(files / "t2.nii.gz", files / "t1.nii.gz", files / "r.mat", files / "r.nii.gz").cmdline
    assert cmd == (f"flirt -in {files}/t2.nii.gz -ref {files}/t1.nii.gz -out {files}/r.nii.gz -omat {files}/r.mat "
                   "-cost normmi -dof 6 -searchrx -90 90 -searchry -90 90 -searchrz -90 90")


def test_threads_reach_fsl_environment(files):
    interface = fsl_backend.reorient(files / "t1.nii.gz", files / "r.nii.gz", threads=3)
    assert interface.inputs.environ["OMP_NUM_THREADS"] == "3"
    assert interface.inputs.environ["FSLOUTPUTTYPE"] == "NIFTI_GZ"


def test_t1_chain_order(files):
    chain = fsl_backend.t1_steps(files / "t1.nii.gz", files / "tpl1.nii.gz", files / "tpl2.nii.gz", files / "mask.nii.gz", files, 2)
    assert len(chain["steps"]) == 5  # the later steps need the earlier outputs, so only count them here


@pytest.mark.slow
@pytest.mark.skipif(not fsl_available(), reason="FSL not installed ($FSLDIR/flirt missing)")
def test_fsl_end_to_end(tmp_path):
    import nibabel as nib
    import numpy as np

    from magicflow.demo import write_demo_cohort
    from magicflow.preprocess.t1 import T1Outputs, preprocess_t1
    from magicflow.preprocess.template import build_template, load_template

    write_demo_cohort(tmp_path / "demo", subjects=2, seed=0, tracers=("FDG",), progress=False)
    build_template(tmp_path / "tpl")
    t1 = next((tmp_path / "demo").glob("sub-*/ses-01/anat/*_T1w.nii.gz"))
    out = T1Outputs(*(tmp_path / "o" / n for n in ("mni.nii.gz", "mask.nii.gz", "native.nii.gz", "aff.mat", "warp.nii.gz", "t1.json")))
    record = preprocess_t1(t1, tmp_path / "tpl", out, backend="fsl", threads=2)
    assert record["Backend"] == "fsl"
    mni = nib.load(out.mni)
    assert mni.shape == (182, 218, 182)
    tpl = load_template(tmp_path / "tpl")
    mask = nib.load(tpl.brain_mask).get_fdata() > 0
    assert np.corrcoef(mni.get_fdata()[mask], nib.load(tpl.t1).get_fdata()[mask])[0, 1] > 0.8
