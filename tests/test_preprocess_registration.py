"""Real ANTs registration of one demo subject, checked against the cohort's ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from magicflow.preprocess.accuracy import GroundTruth
from magicflow.preprocess.coregister import SecondaryOutputs, preprocess_secondary
from magicflow.preprocess.t1 import T1Outputs, preprocess_t1
from magicflow.preprocess.template import build_template, load_template

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from magicflow.demo import write_demo_cohort

    root = tmp_path_factory.mktemp("reg")
    write_demo_cohort(root / "demo", subjects=2, seed=0, tracers=("FDG",), workers=2, progress=False)
    build_template(root / "tpl", use_fsl=False)
    sub = sorted(p.name for p in (root / "demo").glob("sub-*"))[0]
    out = root / "out"
    t1_out = T1Outputs(*(out / n for n in ("t1_mni.nii.gz", "mask.nii.gz", "native.nii.gz", "aff.mat", "warp.nii.gz", "t1.json")))
    truth = root / "demo" / "derivatives" / "groundtruth" / sub
    preprocess_t1(
        root / "demo" / sub / "ses-01" / "anat" / f"{sub}_ses-01_T1w.nii.gz",
        root / "tpl",
        t1_out,
        backend="ants",
        preset="demo",
        threads=2,
        groundtruth=GroundTruth(truth / f"{sub}_from-MNI152NLin2009aSym_to-T1w_mode-points_xfm.nii.gz"),
    )
    return {"root": root, "sub": sub, "t1": t1_out, "truth": truth}


def _ncc(path: Path, tpl_dir: Path) -> float:
    tpl = load_template(tpl_dir, 1)
    mask = nib.load(tpl.brain_mask).get_fdata() > 0
    return float(np.corrcoef(nib.load(path).get_fdata()[mask], nib.load(tpl.t1).get_fdata()[mask])[0, 1])


def test_t1_outputs_and_correlation(subject):
    out: T1Outputs = subject["t1"]
    img = nib.load(out.mni)
    assert img.shape == (182, 218, 182) and img.get_data_dtype() == np.float32
    record = json.loads(out.sidecar.read_text())
    assert record["Backend"] == "ants" and record["Preset"] == "demo" and record["Space"] == "MNI152NLin2009aSym"
    assert _ncc(out.mni, subject["root"] / "tpl") > 0.9


def test_t1_transform_recovers_groundtruth(subject):
    """The demo preset (2 mm affine and SyN) lands within 2 mm of the planted mapping, as the
    sidecar measures it."""
    error = json.loads(subject["t1"].sidecar.read_text())["GroundTruthErrorMM"]
    print(f"mean displacement error {error['mean']:.2f} mm (95th pct {error['p95']:.2f})")
    assert 0 < error["mean"] < 2.0 and error["mean"] <= error["p95"] <= error["max"]


def test_points_follow_ants_composition(subject, tmp_path):
    """The numpy point mapping that scores registrations agrees with ANTs' own composition of
    the same chain (warp, affine, and a rigid on top, as a secondary image has)."""
    import ants

    from magicflow.preprocess.ants_backend import _read, mni_to_native_points

    out = subject["t1"]
    truth = nib.load(next(subject["truth"].glob("*_mode-points_xfm.nii.gz")))
    grid = nib.Nifti1Image(np.zeros(truth.shape[:3], np.float32), truth.affine)
    rigid = tmp_path / "rigid.mat"
    from scipy.spatial.transform import Rotation

    # a rigid as antsRegistration writes one (an affine .mat), about a centre away from the origin
    tx = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=Rotation.from_euler("xyz", [0.05, -0.03, 0.08]).as_matrix(),
        translation=(4.0, -3.0, 2.5),
        center=(10.0, -20.0, 5.0),
    )
    ants.write_transform(tx, str(rigid))
    chain = [out.warp, out.affine, rigid]
    fixed = _read(grid, tmp_path, "grid")
    composed = ants.apply_transforms(
        fixed=fixed, moving=fixed, transformlist=[str(t) for t in chain], compose=str(tmp_path / "c_")
    )
    lps = (grid.affine[:3, :3] @ np.indices(grid.shape).reshape(3, -1) + grid.affine[:3, 3:4]).T.reshape(*grid.shape, 3)
    lps = lps * np.array([-1.0, -1.0, 1.0])
    expected = (lps + ants.image_read(composed).numpy()) * np.array([-1.0, -1.0, 1.0])
    found = mni_to_native_points(chain, grid)
    assert np.abs(found - expected).max() < 1e-3
    # the rigid matters: dropping it moves points by millimetres
    assert np.linalg.norm(mni_to_native_points(chain[:2], grid) - expected, axis=-1).mean() > 2.0


def test_t2w_rigid_recovers_groundtruth(subject):
    import ants

    root, sub, t1 = subject["root"], subject["sub"], subject["t1"]
    out = SecondaryOutputs(*(root / "out" / n for n in ("t2_mni.nii.gz", "t2_rigid.mat", "t2.json")))
    truth = GroundTruth(
        next(subject["truth"].glob("*_mode-points_xfm.nii.gz")), subject["truth"] / f"{sub}_from-T1w_to-T2w_mode-rigid_xfm.txt"
    )
    record = preprocess_secondary(
        root / "demo" / sub / "ses-01" / "anat" / f"{sub}_ses-01_T2w.nii.gz", "T2w", t1.sidecar, out, threads=2, groundtruth=truth
    )
    # the whole chain (T1's warp and affine, then the rigid) against the planted one
    t1_error = json.loads(t1.sidecar.read_text())["GroundTruthErrorMM"]["mean"]
    assert record["GroundTruthErrorMM"]["mean"] < t1_error + 1.0
    assert nib.load(out.mni).shape == (182, 218, 182)
    move = np.loadtxt(root / "demo" / "derivatives" / "groundtruth" / sub / f"{sub}_from-T1w_to-T2w_mode-rigid_xfm.txt")
    transform = ants.read_transform(str(out.rigid))
    rng = np.random.default_rng(0)
    ras = rng.uniform(-60, 60, (200, 3))  # points around the head centre, T1w world (RAS)
    flip = np.array([-1.0, -1.0, 1.0])
    found = np.array([np.asarray(transform.apply_to_point(tuple(p * flip))) * flip for p in ras])
    expected = (move[:3, :3] @ ras.T + move[:3, 3:4]).T
    assert np.linalg.norm(found - expected, axis=1).mean() < 2.0


def test_pet_median_and_coregistration(subject):
    root, sub, t1 = subject["root"], subject["sub"], subject["t1"]
    out = SecondaryOutputs(*(root / "out" / n for n in ("pet_mni.nii.gz", "pet_rigid.mat", "pet.json")))
    record = preprocess_secondary(
        root / "demo" / sub / "ses-01" / "pet" / f"{sub}_ses-01_trc-FDG_pet.nii.gz", "pet", t1.sidecar, out, threads=2
    )
    assert record["FrameCombination"] == "median" and record["Frames"] >= 4 and record["TracerName"] == "FDG"
    pet = nib.load(out.mni).get_fdata()
    tpl = load_template(root / "tpl", 1)
    gm = nib.load(tpl.gm).get_fdata() > 0.5
    wm = nib.load(tpl.wm).get_fdata() > 0.5
    assert pet[gm].mean() > 1.2 * pet[wm].mean()  # FDG: grey matter uptake lands on the template's grey matter


def test_qc_figure_and_table(subject, tmp_path):
    import pandas as pd

    from magicflow.preprocess.qc import gather_qc, image_qc

    tpl = load_template(subject["root"] / "tpl", 1)
    rec = image_qc(subject["t1"].mni, tpl, tmp_path / "t1.png", tmp_path / "t1.json", "sub-1_T1w")
    assert rec["ncc"] > 0.9 and rec["score"] > 1.2 and rec["alignment"] > 0 and rec["best_probe"] == ""
    assert rec["measure"] == "NMI with the template T1 (smoothed 3 mm)"
    assert (tmp_path / "t1.png").read_bytes()[:4] == b"\x89PNG"
    # scores: NMI, a T1w's with the template, another contrast's with its own T1w
    others = {"bad_T1w": 1.03, "sub-1_T2w": 1.06, "sub-1_trc-FDG_pet": 1.07, "lost_FLAIR": 1.005}
    for label, score in others.items():
        (tmp_path / f"{label}.json").write_text(json.dumps(dict(rec, label=label, ncc=score, score=score)))
    paths = [tmp_path / "t1.json", *(tmp_path / f"{label}.json" for label in others)]
    table = gather_qc(paths, tmp_path / "qc.tsv")
    saved = pd.read_csv(tmp_path / "qc.tsv", sep="\t").set_index("label")["flagged"].to_dict()
    # a T1w under the threshold, and another contrast with nothing in common with its T1w
    assert saved == {"bad_T1w": True, "lost_FLAIR": True, "sub-1_T1w": False, "sub-1_T2w": False, "sub-1_trc-FDG_pet": False}
    assert table["flagged"].sum() == 2


def test_threads_bound_itk():
    """With --threads 1, ITK must not use a second core: CPU time stays close to wall time."""
    code = textwrap.dedent("""
        import time
        from magicflow.preprocess.backend import set_threads
        set_threads(1)
        import ants
        from nilearn import datasets
        img = ants.from_numpy(datasets.load_mni152_template(resolution=2).get_fdata().astype('float32'))
        moving = ants.smooth_image(img, 1.5)
        wall, cpu = time.perf_counter(), time.process_time()
        ants.registration(img, moving, 'SyN', reg_iterations=(20, 10, 0))
        print((time.process_time() - cpu) / (time.perf_counter() - wall))
    """)
    ratio = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
        ).stdout.split()[-1]
    )
    assert ratio < 1.2


def test_pet_uptake_ratio_survives_preprocessing(subject, tmp_path):
    """A PET with twice the uptake in a 40 mm sphere keeps that ratio within 2 % in MNI, with
    --bias-correct asked for (it must not reach PET: N4 would flatten the sphere)."""
    from scipy import ndimage

    from magicflow.preprocess.ants_backend import mni_to_native_points

    root, t1 = subject["root"], subject["t1"]
    native = nib.load(t1.native)
    solid = ndimage.binary_fill_holes(native.get_fdata() > 0.15 * np.percentile(native.get_fdata(), 99))
    head = ndimage.gaussian_filter(solid.astype(np.float32), 1.0)
    centre = native.affine[:3, :3] @ ((np.array(native.shape) - 1) / 2) + native.affine[:3, 3]
    hot = centre + np.array([25.0, 0.0, 10.0])
    shape = (88, 88, 80)  # 2.5 mm PET grid around the head
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    affine[:3, 3] = centre - 2.5 * (np.array(shape) - 1) / 2
    world = affine[:3, :3] @ np.indices(shape).reshape(3, -1) + affine[:3, 3:4]
    to_t1 = np.linalg.inv(native.affine)
    in_head = ndimage.map_coordinates(head, to_t1[:3, :3] @ world + to_t1[:3, 3:4], order=1).reshape(shape)
    uptake = np.where(np.linalg.norm(world.T - hot, axis=1) < 40.0, 2.0, 1.0).reshape(shape)
    pet = ndimage.gaussian_filter(uptake * in_head, 1.0).astype(np.float32)
    rng = np.random.default_rng(3)
    frames = np.stack([pet * (1 + 0.01 * rng.standard_normal(shape).astype(np.float32)) for _ in range(3)], -1)
    path = tmp_path / "sub-x_trc-FDG_pet.nii.gz"
    nib.save(nib.Nifti1Image(frames, affine), path)
    (tmp_path / "sub-x_trc-FDG_pet.json").write_text(
        json.dumps({"TracerName": "FDG", "FrameTimesStart": [1800, 2100, 2400], "FrameDuration": [300, 300, 300]})
    )
    out = SecondaryOutputs(*(tmp_path / n for n in ("pet_mni.nii.gz", "pet.mat", "pet.json")))
    record = preprocess_secondary(path, "pet", t1.sidecar, out, bias_correct=True, threads=2)
    assert record["BiasCorrection"] is False
    # where each MNI voxel (2 mm grid) sits in the native T1: inside the sphere, or far from it
    truth = nib.load(
        root
        / "demo"
        / "derivatives"
        / "groundtruth"
        / subject["sub"]
        / f"{subject['sub']}_from-MNI152NLin2009aSym_to-T1w_mode-points_xfm.nii.gz"
    )
    grid = nib.Nifti1Image(np.zeros(truth.shape[:3], np.float32), truth.affine)
    points = mni_to_native_points([t1.warp, t1.affine], grid)
    distance = np.linalg.norm(points - hot, axis=-1)
    mni = nib.load(out.mni)
    ijk = np.linalg.inv(mni.affine) @ np.vstack(
        [(grid.affine[:3, :3] @ np.indices(grid.shape).reshape(3, -1) + grid.affine[:3, 3:4]), np.ones((1, distance.size))]
    )
    values = ndimage.map_coordinates(mni.get_fdata(), ijk[:3], order=1).reshape(grid.shape)
    tpl = load_template(root / "tpl", 1)
    brain = ndimage.map_coordinates(nib.load(tpl.brain_mask).get_fdata(), ijk[:3], order=0).reshape(grid.shape) > 0
    ratio = np.median(values[brain & (distance < 28)]) / np.median(values[brain & (distance > 52)])
    print(f"uptake ratio in MNI {ratio:.4f} (2 in the native PET)")
    assert ratio == pytest.approx(2.0, rel=0.02)
