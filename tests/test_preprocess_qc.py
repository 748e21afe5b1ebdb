"""The misregistration check: it flags moved images and passes noisy or differently contrasted
ones that are in place (no registration run: the template itself, moved or degraded)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from magicflow.preprocess.qc import MIN_NMI, alignment_check, gather_qc, image_qc, masked_correlation


@pytest.fixture(scope="module")
def template() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's 2 mm template and brain mask, used as if on the 1 mm grid (the check only sees voxels)."""
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template(resolution=2).dataobj, dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    return t1, mask


def _rotated(volume: np.ndarray, mask: np.ndarray, degrees: float) -> np.ndarray:
    c, a = np.argwhere(mask).mean(0), np.radians(degrees)
    r = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return ndimage.affine_transform(volume, r, c - r @ c, order=1)


def _cases(t1: np.ndarray, mask: np.ndarray) -> dict[str, tuple[np.ndarray, bool]]:
    """name -> (image, misregistered?); shifts in voxels of the 1 mm grid the check assumes."""
    rng = np.random.default_rng(0)
    sd = float(t1[mask].std())
    return {
        "noisy_T1w": (t1 + 1.5 * sd * rng.standard_normal(t1.shape).astype(np.float32), False),
        "contrast_T1w": (np.clip(t1, 0, None) ** 2.5, False),
        "shifted3mm_T1w": (ndimage.shift(t1, (0, 3, 0), order=1), True),
        "shifted6mm_noisy_T1w": (
            ndimage.shift(t1, (6, 0, 0), order=1) + sd * rng.standard_normal(t1.shape).astype(np.float32),
            True,
        ),
        "rotated6deg_T1w": (_rotated(t1, mask, 6.0), True),
        "enhanced_T1w": (_enhanced(t1, mask), False),
        "enhanced_shifted6mm_T1w": (ndimage.shift(_enhanced(t1, mask), (0, 6, 0), order=1), True),
        "inverted_T1w": (np.where(mask, t1.max() - t1, 0), True),  # a T2-like contrast labelled T1w
    }


def _enhanced(t1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A contrast-enhanced T1w in place: dura along the brain's surface, a midline sinus and
    short vessels inside, brighter than white matter (1.5-1.7x its 90th percentile)."""
    rng = np.random.default_rng(1)
    bright = float(np.percentile(t1[mask], 90))
    out = t1.copy()
    out[ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=1)] = 1.5 * bright
    x = mask.shape[0] // 2
    for y in range(mask.shape[1]):
        top = np.nonzero(mask[x, y])[0]
        if top.size:
            out[x - 1 : x + 2, y, top.max() : top.max() + 3] = 1.7 * bright
    inside = np.argwhere(ndimage.binary_erosion(mask, iterations=4))
    for _ in range(30):
        start, step = inside[rng.integers(len(inside))], rng.normal(size=3)
        for k in range(12):
            i, j, m = np.round(start + k * step / np.linalg.norm(step)).astype(int)
            out[i : i + 2, j : j + 2, m : m + 2] = 1.7 * bright
    return out


def test_check_tells_misregistration_from_noise_and_contrast(template, tmp_path):
    t1, mask = template
    paths, truth = [], {}
    for name, (image, moved) in _cases(t1, mask).items():
        record = {
            "label": name,
            "image": f"{name}.nii.gz",
            "space": "test",
            "png": "",
            "ncc": masked_correlation(image, t1, mask),
            **alignment_check(image, t1, mask),
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
        paths.append(tmp_path / f"{name}.json")
        truth[name] = moved
    table = gather_qc(paths, tmp_path / "qc.tsv").set_index("label")
    assert table.loc["noisy_T1w", "ncc"] < 0.6  # the raw correlation alone would have flagged it
    assert table["flagged"].to_dict() == truth
    assert "misregistered" in table.loc["rotated6deg_T1w", "flag_reason"]
    assert "contrast unlike a T1" in table.loc["inverted_T1w", "flag_reason"]
    # issue 33: by correlation the enhanced T1w in place fits the template better moved (a false
    # flag, as the old NCC score gave); by NMI it fits best where it is
    assert alignment_check(_enhanced(t1, mask), t1, mask, "ncc")["alignment"] < 0 < table.loc["enhanced_T1w", "alignment"]
    saved = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert {"measure", "score", "alignment", "best_probe", "motion_mm", "flag_reason"} <= set(saved.columns)
    assert set(saved["measure"]) == {"NMI with the template T1 (smoothed 3 mm)"}
    assert (saved["threshold"] == 1.05).all()


def test_pet_motion_and_other_contrasts(tmp_path):
    rows = {
        "sub-1_trc-FDG_pet": {"score": 1.07, "alignment": 0.01, "motion_mm": 6.5, "rotation_deg": 1.0},
        "sub-2_trc-FDG_pet": {"score": 1.07, "alignment": 0.01, "motion_mm": 1.0, "rotation_deg": 0.5},
        "sub-1_T2w": {"score": 1.04, "alignment": 0.003},
        "lost_FLAIR": {"score": 1.005, "alignment": 0.001},
        "moved_FLAIR": {"score": 1.04, "alignment": -0.02, "best_probe": "+4 mm y"},
        "partial_FLAIR": {"score": 1.2, "alignment": 0.01, "coverage": 0.6},
        "sub-1_T1w": {"measure": "NMI with the template T1 (smoothed 3 mm)", "score": 1.03, "alignment": 0.01, "ncc": 0.3},
        "sub-2_T1w": {"measure": "NMI with the template T1 (smoothed 3 mm)", "score": 1.3, "alignment": 0.1, "ncc": 0.5},
        "sub-3_T1w": {"measure": "NCC with the template T1 (smoothed 3 mm)", "score": 0.7, "alignment": 0.01, "ncc": 0.5},
        "old_T1w": {"ncc": 0.5},
    }  # sub-3 and old: records from before NMI and before the check, judged by their correlation
    for label, fields in rows.items():
        (tmp_path / f"{label}.json").write_text(json.dumps({"label": label, "image": "x", "space": "s", "png": "", **fields}))
    table = gather_qc(sorted(tmp_path.glob("*.json")), tmp_path / "qc.tsv", threshold=1.1).set_index("label")
    assert table["flagged"].to_dict() == {
        "lost_FLAIR": True,
        "moved_FLAIR": True,
        "old_T1w": True,
        "partial_FLAIR": True,
        "sub-1_T1w": True,
        "sub-2_T1w": False,
        "sub-3_T1w": False,
        "sub-1_T2w": False,
        "sub-1_trc-FDG_pet": True,
        "sub-2_trc-FDG_pet": False,
    }
    assert "frame motion 6.5 mm" in table.loc["sub-1_trc-FDG_pet", "flag_reason"]
    assert "nothing in common" in table.loc["lost_FLAIR", "flag_reason"]
    assert table.loc["moved_FLAIR", "flag_reason"] == "misregistered: moved +4 mm y it fits its T1w better"
    assert table.loc["partial_FLAIR", "flag_reason"] == "partial field of view: 60 % of the template brain"
    assert table.loc["sub-1_T1w", "flag_reason"] == "NMI with the template 1.030 < 1.1: nothing in common"
    assert table.loc["old_T1w", "flag_reason"] == "NCC 0.500 < 0.6"
    thresholds = table["threshold"].to_dict()
    assert thresholds["sub-1_T2w"] == MIN_NMI and thresholds["sub-1_T1w"] == 1.1
    assert thresholds["sub-3_T1w"] == thresholds["old_T1w"] == 0.6


def _write(volume: np.ndarray, path) -> str:
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), path)
    return str(path)


@pytest.mark.slow
def test_secondary_images_are_scored_against_their_own_t1w(tmp_path):
    """Issue 33: a T2w, FLAIR or PET in place on its subject's T1w passes, the same image moved
    5 mm or rotated 5 degrees is flagged, and qc.tsv names the measure. The images are the demo
    anatomy's in template space, every other voxel, used as the check's 1 mm grid (shifts in its
    voxels), the PET blurred and noisy; no registration is run. Against the template T1 by correlation,
    as before, the FDG PET in place fits better moved 4 mm (its NCC has nothing to hold on to)."""
    from magicflow.demo.anatomy import load_template_anatomy
    from magicflow.preprocess.template import Template

    anatomy = load_template_anatomy()
    rng = np.random.default_rng(1)

    def half(volume: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(volume[::2, ::2, ::2], dtype=np.float32)

    def noisy(volume: np.ndarray, sd: float) -> np.ndarray:
        return volume + sd * float(volume.max()) * rng.standard_normal(volume.shape).astype(np.float32)

    mask = half(anatomy.brain_mask) > 0.5
    t1w = noisy(half(anatomy.mr["T1w"]), 0.03)
    pet = noisy(ndimage.gaussian_filter(half(anatomy.pet_base["fdg"]), 1.5), 0.05)  # 7 mm FWHM at 2 mm
    images = {"T2w": noisy(half(anatomy.mr["T2w"]), 0.05), "FLAIR": noisy(half(anatomy.mr["FLAIR"]), 0.05), "pet": pet}
    template = Template(
        "test",
        1,
        Path(_write(half(anatomy.mr["T1w"]), tmp_path / "tpl.nii.gz")),
        Path(_write(mask, tmp_path / "mask.nii.gz")),
        Path(_write(mask, tmp_path / "mask.nii.gz")),  # the overlay's edges are drawn inside it
        Path(),
        Path(),
    )
    t1_path = _write(t1w, tmp_path / "sub-1_T1w.nii.gz")
    assert alignment_check(pet, np.asarray(nib.load(template.t1).dataobj), mask, "ncc")["alignment"] < 0  # the old measure
    paths, truth = [], {}
    for modality, image in images.items():
        cases = {
            "": (image, False),
            "shift5mm": (ndimage.shift(image, (0, 5, 0), order=1), True),
            "rot5deg": (_rotated(image, mask, 5.0), True),
        }
        for case, (volume, moved) in cases.items():
            label = f"sub-1{case and '_' + case}_{modality}"
            record = image_qc(
                _write(volume, tmp_path / f"{label}.nii.gz"),
                template,
                tmp_path / f"{label}.png",
                tmp_path / f"{label}.json",
                label,
                t1w=t1_path,
            )
            print(label, record["score"], record["alignment"], record["best_probe"])
            paths.append(tmp_path / f"{label}.json")
            truth[label] = moved
    table = gather_qc(paths, tmp_path / "qc.tsv").set_index("label")
    assert table["flagged"].to_dict() == truth
    assert (table["score"] > MIN_NMI).all()  # a few mm off still shares the anatomy: the probes find it
    assert table.loc["sub-1_rot5deg_pet", "flag_reason"].startswith("misregistered: moved")
    saved = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert set(saved["measure"]) == {"NMI with its own T1w (smoothed 3 mm)"} and set(saved["reference"]) == {t1_path}
    assert saved["ncc"].isna().all()  # no correlation with the template for another contrast


def test_partial_field_of_view_is_judged_where_it_has_data(template, tmp_path):
    """An axial slab in place is not 'misregistered' (the check looks inside the slab), but it is
    flagged for its coverage; the same slab moved 5 mm is misregistered."""
    t1, mask = template
    slab = t1.copy()
    slab[:, :, : t1.shape[2] * 2 // 5] = 0
    slab[:, :, t1.shape[2] * 7 // 10 :] = 0
    in_place = alignment_check(slab, t1, mask)
    moved = alignment_check(ndimage.shift(slab, (0, 5, 0), order=1), t1, mask)
    assert in_place["alignment"] > 0 and in_place["coverage"] < 0.9 and moved["alignment"] < 0
    (tmp_path / "slab.json").write_text(
        json.dumps(
            {"label": "slab_T1w", "image": "x", "space": "s", "png": "", "ncc": masked_correlation(slab, t1, mask), **in_place}
        )
    )
    reason = gather_qc([tmp_path / "slab.json"], tmp_path / "qc.tsv")["flag_reason"].iloc[0]
    assert reason.startswith("partial field of view") and "misregistered" not in reason
