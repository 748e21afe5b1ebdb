"""The synthetic demo cohort: real NIfTI in differing native spaces, PET frames that drift (one
restless subject moving far), complete sidecars, balanced labels, ground truth that matches the images, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magicflow.demo import write_demo_cohort
from magicflow.demo.anatomy import TEMPLATE_SPACE, load_template_anatomy
from magicflow.demo.cohort import plan_cohort
from magicflow.demo.scanners import MRI_SCANNERS, TRACERS
from magicflow.errors import InputError


def images(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(f"sub-*/ses-01/*/{pattern}"))


@pytest.mark.slow
def test_every_image_opens_and_subjects_live_in_different_native_spaces(demo_bids: Path):
    t1s = images(demo_bids, "*_T1w.nii.gz")
    assert len(t1s) == 4
    headers = [nib.load(p).header for p in t1s]
    zooms = {tuple(np.round(h.get_zooms(), 2)) for h in headers}
    orientations = {nib.aff2axcodes(nib.load(p).affine) for p in t1s}
    assert len(zooms) == 4  # one scanner each, each with its own voxel size
    assert {("R", "A", "S"), ("L", "A", "S")} <= orientations
    assert len({tuple(np.round(nib.load(p).affine[:3, 3], 1)) for p in t1s}) == 4
    for path in images(demo_bids, "*.nii.gz"):
        data = np.asanyarray(nib.load(path).dataobj)
        assert np.isfinite(data).all() and data.max() > 0, path


@pytest.mark.slow
def test_thick_slice_series_and_intensity_contrasts(demo_bids: Path):
    t2 = nib.load(images(demo_bids, "*_T2w.nii.gz")[0])
    flair = nib.load(images(demo_bids, "*_FLAIR.nii.gz")[0])
    assert t2.header.get_zooms()[2] == pytest.approx(2.4)
    assert flair.header.get_zooms()[2] == pytest.approx(3.0)


@pytest.mark.slow
def test_pet_frames_drift_and_only_the_restless_subject_moves_far(demo_bids: Path):
    """Frames drift by about a millimetre (under the QC's motion limits), as in real plateau
    scans; only the restless subject has a frame moved far, which the median rejects."""
    from magicflow.demo.cohort import RESTLESS_SUBJECT
    from magicflow.preprocess.pet import MOTION_LIMIT_DEG, MOTION_LIMIT_MM

    truth_dir = demo_bids / "derivatives" / "groundtruth"
    restless = f"sub-demo{RESTLESS_SUBJECT + 1:02d}"
    for path in images(demo_bids, "*_pet.nii.gz"):
        subject = path.name.split("_")[0]
        tracer = path.name.split("trc-")[1].split("_")[0]
        data = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
        assert data.ndim == 4 and data.shape[3] == TRACERS[tracer].frames
        truth = json.loads((truth_dir / subject / f"{subject}_groundtruth.json").read_text())
        assert truth["restless"] is (subject == restless)
        corrupted = truth["corrupted_pet_frame"][tracer]
        motion = truth["pet_frame_motion"][tracer]
        assert len(motion) == data.shape[3] and min(m["displacement_mm"] for m in motion) == 0.0  # the reference
        still = [m for f, m in enumerate(motion) if f != corrupted]
        assert max(m["displacement_mm"] for m in still) < 2.0 and max(m["rotation_deg"] for m in still) < 1.0, motion
        assert max(m["displacement_mm"] for m in still) > 0.1  # the head does drift
        if subject != restless:
            assert corrupted is None
            continue
        assert motion[corrupted]["displacement_mm"] > MOTION_LIMIT_MM and motion[corrupted]["rotation_deg"] > MOTION_LIMIT_DEG
        median = np.median(data, axis=3)
        deviation = [np.abs(data[..., f] - median).mean() for f in range(data.shape[3])]
        others = [d for f, d in enumerate(deviation) if f != corrupted]
        assert deviation[corrupted] > 2.0 * max(others), (path, deviation)
        assert not np.allclose(median, data.mean(axis=3), rtol=0.05)


@pytest.mark.slow
def test_frame_realignment_finds_the_planted_motion_and_qc_flags_only_the_restless_subject(demo_bids: Path, tmp_path: Path):
    """Issue 31: the real realignment (ANTs) of every subject's AV45 frames recovers the planted
    motion, and the QC table flags the restless subject's PET alone (every PET was flagged when
    every scan had a frame moved up to 8 mm and 6 degrees per axis)."""
    from magicflow.preprocess.coregister import frame_realigner
    from magicflow.preprocess.pet import motion_summary, pet_record, static_pet
    from magicflow.preprocess.qc import gather_qc

    records = []
    for path in images(demo_bids, "*_trc-AV45_pet.nii.gz"):
        subject = path.name.split("_")[0]
        planted = json.loads((demo_bids / "derivatives" / "groundtruth" / subject / f"{subject}_groundtruth.json").read_text())
        static = static_pet(path, realign=frame_realigner("ants", tmp_path, 1, "demo"))
        found = pet_record(static)["FrameMotion"]
        print(subject, "planted", planted["pet_frame_motion"]["AV45"], "found", found)
        for truth, estimate in zip(planted["pet_frame_motion"]["AV45"], found, strict=True):
            assert estimate["displacement_mm"] == pytest.approx(truth["displacement_mm"], abs=0.5)
            assert estimate["rotation_deg"] == pytest.approx(truth["rotation_deg"], abs=0.5)
        label = path.name.removesuffix(".nii.gz")
        record = {"label": label, "image": str(path), "space": "native", "png": "", **motion_summary(pet_record(static))}
        (tmp_path / f"{label}.json").write_text(json.dumps(record))
        records.append(tmp_path / f"{label}.json")
    table = gather_qc(records, tmp_path / "qc.tsv")
    assert len(table) == 4
    assert table.loc[table["flagged"], "label"].tolist() == ["sub-demo01_ses-01_trc-AV45_pet"]
    assert "frame motion" in table.loc[table["flagged"], "flag_reason"].iloc[0]


@pytest.mark.slow
def test_sidecars_carry_their_fields(demo_bids: Path):
    for path in images(demo_bids, "*.json"):
        sidecar = json.loads(path.read_text())
        assert sidecar["Manufacturer"] and sidecar["ManufacturersModelName"]
        if path.name.endswith("_pet.json"):
            tracer = TRACERS[sidecar["TracerName"]]
            assert sidecar["FrameTimesStart"] == tracer.frame_starts_s
            assert sidecar["FrameDuration"] == [300.0] * tracer.frames
    scanners = {json.loads(p.read_text())["ManufacturersModelName"] for p in images(demo_bids, "*_T1w.json")}
    assert scanners == {s.model for s in MRI_SCANNERS}
    participants = pd.read_csv(demo_bids / "participants.tsv", sep="\t", dtype=str)
    assert list(participants.columns) == ["participant_id", "diagnosis", "age", "sex"]
    assert sorted(participants["diagnosis"]) == ["AD", "AD", "CN", "CN"]


@pytest.mark.parametrize(("subjects", "fraction", "n_ad"), [(16, 0.5, 8), (16, 0.25, 4), (6, 0.5, 3)])
def test_labels_balanced_as_asked_and_not_confounded_with_scanner(subjects, fraction, n_ad):
    plans = plan_cohort(subjects, seed=3, ad_fraction=fraction)
    assert sum(p.diagnosis == "AD" for p in plans) == n_ad
    assert len({p.subject for p in plans}) == subjects
    if subjects >= 8 and fraction == 0.5:
        for scanner in range(len(MRI_SCANNERS)):
            assert {p.diagnosis for p in plans if p.scanner == scanner} == {"AD", "CN"}


@pytest.mark.slow
def test_t1w_only_volunteers_follow_and_leave_the_full_cohort_unchanged(tmp_path: Path):
    full = plan_cohort(12, seed=0)
    plans = plan_cohort(12, seed=0, t1w_only=8)
    assert plans[:12] == full
    extra = plans[12:]
    assert [p.subject for p in extra] == [f"demo{i:02d}" for i in range(13, 21)]
    assert all(p.t1w_only and p.diagnosis == "CN" and p.severity == 0.0 for p in extra)
    per_scanner = pd.Series([p.scanner for p in plans]).value_counts()
    assert sorted(per_scanner) == [5, 5, 5, 5]
    with pytest.raises(InputError, match="t1w-only"):
        plan_cohort(4, seed=0, t1w_only=-1)

    write_demo_cohort(tmp_path / "c", subjects=2, seed=0, tracers=("FDG",), workers=1, progress=False, t1w_only=1)
    files = sorted(str(p.relative_to(tmp_path / "c" / "sub-demo03")) for p in (tmp_path / "c" / "sub-demo03").rglob("*.nii.gz"))
    assert files == ["ses-01/anat/sub-demo03_ses-01_T1w.nii.gz"]
    truth = json.loads(
        (tmp_path / "c" / "derivatives" / "groundtruth" / "sub-demo03" / "sub-demo03_groundtruth.json").read_text()
    )
    assert truth["t1w_only"] is True and truth["pet_scanner"] is None and truth["corrupted_pet_frame"] == {}
    assert (tmp_path / "c" / "sub-demo01" / "ses-01" / "pet").is_dir()
    participants = pd.read_csv(tmp_path / "c" / "participants.tsv", sep="\t", dtype=str)
    assert participants["participant_id"].tolist() == ["sub-demo01", "sub-demo02", "sub-demo03"]


@pytest.mark.slow
def test_ground_truth_points_land_on_the_same_anatomy(demo_bids: Path):
    """Sampling a subject's T1w at the saved MNI -> T1w points must reproduce the template."""
    anatomy = load_template_anatomy()
    truth = demo_bids / "derivatives" / "groundtruth" / "sub-demo01"
    points_img = nib.load(truth / f"sub-demo01_from-{TEMPLATE_SPACE}_to-T1w_mode-points_xfm.nii.gz")
    points = points_img.get_fdata().reshape(-1, 3).T
    t1 = nib.load(images(demo_bids, "sub-demo01_*_T1w.nii.gz")[0])
    from scipy import ndimage

    native = ndimage.map_coordinates(
        t1.get_fdata(), np.linalg.inv(t1.affine)[:3] @ np.vstack([points, np.ones(points.shape[1])]), order=1
    )
    mni_mm = points_img.affine[:3] @ np.vstack([np.indices(points_img.shape[:3]).reshape(3, -1), np.ones(points.shape[1])])
    ijk = np.linalg.inv(anatomy.affine)[:3] @ np.vstack([mni_mm, np.ones(mni_mm.shape[1])])
    template = ndimage.map_coordinates(anatomy.mr["T1w"], ijk, order=1)
    brain = ndimage.map_coordinates(anatomy.brain_mask.astype(np.float32), ijk, order=0) > 0
    r = np.corrcoef(native[brain], template[brain])[0, 1]
    assert r > 0.75  # noise, bias field and contrast curve keep it below 1
    # a wrong transform (shifted by 6 mm) must score clearly worse
    shifted = ndimage.map_coordinates(
        t1.get_fdata(), np.linalg.inv(t1.affine)[:3] @ np.vstack([points + [[6], [0], [0]], np.ones(points.shape[1])]), order=1
    )
    assert np.corrcoef(shifted[brain], template[brain])[0, 1] < r - 0.2


@pytest.mark.slow
def test_ad_mask_only_for_ad_subjects(demo_bids: Path):
    participants = pd.read_csv(demo_bids / "participants.tsv", sep="\t", dtype=str)
    for _, row in participants.iterrows():
        sub = row["participant_id"]
        mask = nib.load(
            demo_bids / "derivatives" / "groundtruth" / sub / f"{sub}_space-{TEMPLATE_SPACE}_desc-ADtau_mask.nii.gz"
        ).get_fdata()
        if row["diagnosis"] == "AD":
            assert 2_000 < mask.sum() < 200_000
        else:
            assert mask.sum() == 0


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_demo_cohort(tmp_path / name, subjects=2, seed=seed, tracers=("FDG",), workers=1, progress=False)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a["sub-demo01/ses-01/anat/sub-demo01_ses-01_T1w.nii.gz"] != c["sub-demo01/ses-01/anat/sub-demo01_ses-01_T1w.nii.gz"]


def test_bad_arguments_raise_and_leave_nothing(tmp_path: Path):
    with pytest.raises(InputError, match="unknown tracer"):
        write_demo_cohort(tmp_path / "x", subjects=2, tracers=("PIB",))
    with pytest.raises(InputError, match="ad-fraction"):
        write_demo_cohort(tmp_path / "x", subjects=4, ad_fraction=1.0)
    assert list(tmp_path.iterdir()) == []


def _tau_plane(plan, weights: np.ndarray, y_mm: float, variation: bool = True):
    """Noise-free tau uptake, its added AD part and the brain on the template's coronal plane at y_mm."""
    from magicflow.demo import geometry as geo
    from magicflow.demo.cohort import _unpad, pet_uptake, tau_variation

    anatomy = load_template_anatomy()
    affine = anatomy.unpadded_affine
    j = int(round((y_mm - affine[1, 3]) / affine[1, 1]))
    brain = _unpad(anatomy.brain_mask.astype(np.float32), anatomy)[:, j] > 0.5
    relative = None
    if variation:
        field, field_affine = tau_variation(anatomy, 0, plan.index)
        i, k = np.meshgrid(np.arange(brain.shape[0]), np.arange(brain.shape[1]), indexing="ij")
        points = affine[:3] @ np.stack([i.ravel(), np.full(i.size, j), k.ravel(), np.ones(i.size)])
        relative = geo.sample(field, field_affine, points, brain.shape)

    def at(volume: np.ndarray) -> np.ndarray:
        return _unpad(volume, anatomy)[:, j]

    uptake = pet_uptake(at, anatomy, "tau", plan.severity, weights, relative)
    return uptake, uptake - pet_uptake(at, anatomy, "tau", 0.0, weights, relative), brain


def test_planted_tau_is_modest_and_the_image_alone_does_not_find_it():
    """Issue 30: the AD tau is a modest increase (about a quarter of the grey-matter level)
    over a normal uptake that varies across the brain and between subjects, so the tau
    image's intensity alone ranks the planted mask only somewhat above the rest of the brain
    (it was 0.99 when the AD uptake doubled grey matter); AD vs CN stays systematic: the
    increase is always in the same regions."""
    from sklearn.metrics import roc_auc_score

    from magicflow.demo.anatomy import TAU_BASE
    from magicflow.demo.cohort import TAU_MASK_THRESHOLD

    aucs, flat_aucs = [], []
    for plan in [p for p in plan_cohort(12, seed=0) if p.diagnosis == "AD"]:  # the demo's own AD subjects
        weights = np.full(4, 0.8)  # the middle of the drawn 0.6-1.0
        uptake, extra, brain = _tau_plane(plan, weights, -17.0)  # FSL y index 109: the demo's offset 0
        mask = extra > TAU_MASK_THRESHOLD
        assert 0.01 < mask[brain].mean() < 0.2
        assert extra.max() < 0.5 * TAU_BASE["gm"] and extra[mask].mean() < 0.3 * TAU_BASE["gm"]  # modest
        aucs.append(roc_auc_score(mask[brain], uptake[brain]))
        flat, _, _ = _tau_plane(plan, weights, -17.0, variation=False)
        flat_aucs.append(roc_auc_score(mask[brain], flat[brain]))
    assert len(aucs) == 6
    assert np.mean(aucs) < 0.8 and max(aucs) < 0.95, aucs  # measured on the rendered demo PET: mean 0.74
    # the subject's nonspecific binding is what hides it: without it the same increase is found easily
    assert np.mean(flat_aucs) > np.mean(aucs) + 0.1


@pytest.mark.slow
def test_groundtruth_mask_is_the_added_tau_above_the_documented_threshold(demo_bids: Path):
    from magicflow.demo.cohort import TAU_MASK_THRESHOLD, _unpad, pet_uptake

    anatomy = load_template_anatomy()
    truth_dir = demo_bids / "derivatives" / "groundtruth"
    checked = 0
    for record_path in sorted(truth_dir.glob("sub-*/sub-*_groundtruth.json")):
        record = json.loads(record_path.read_text())
        if record["diagnosis"] != "AD":
            continue
        sub = record_path.parent.name
        assert record["tau_mask_threshold"] == TAU_MASK_THRESHOLD
        weights = np.array([record["region_weights"][r] for r in anatomy.ad_regions])
        extra = pet_uptake(lambda v: _unpad(v, anatomy), anatomy, "tau", record["severity"], weights) - _unpad(
            anatomy.pet_base["tau"], anatomy
        )
        mask = nib.load(truth_dir / sub / f"{sub}_space-{TEMPLATE_SPACE}_desc-ADtau_mask.nii.gz").get_fdata() > 0
        # weights are stored rounded to 6 decimals: allow the voxels right at the threshold to differ
        disagree = mask != (extra > TAU_MASK_THRESHOLD)
        assert disagree.sum() <= 1e-4 * mask.sum() and np.abs(extra[disagree] - TAU_MASK_THRESHOLD).max(initial=0) < 1e-5
        checked += 1
    assert checked == 2
