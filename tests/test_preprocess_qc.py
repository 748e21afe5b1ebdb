"""The misregistration check: it flags moved images and passes noisy or differently contrasted
ones that are in place (no registration run: the template itself, moved or degraded)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from magicflow.preprocess.qc import alignment_check, gather_qc, masked_correlation


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
    }


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
    table = gather_qc(paths, tmp_path / "qc.tsv", threshold=0.6).set_index("label")
    assert table.loc["noisy_T1w", "ncc"] < 0.6  # the raw correlation alone would have flagged it
    assert table["flagged"].to_dict() == truth
    assert "misregistered" in table.loc["rotated6deg_T1w", "flag_reason"]
    saved = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert {"ncc_smooth", "alignment", "best_probe", "motion_mm", "flag_reason"} <= set(saved.columns)


def test_pet_motion_and_other_contrasts(tmp_path):
    rows = {
        "sub-1_trc-FDG_pet": {"ncc": 0.3, "motion_mm": 6.5, "rotation_deg": 1.0},
        "sub-2_trc-FDG_pet": {"ncc": 0.3, "motion_mm": 1.0, "rotation_deg": 0.5},
        "sub-1_T2w": {"ncc": -0.5},
        "lost_FLAIR": {"ncc": 0.05},
        "old_T1w": {"ncc": 0.7},
    }  # a record from before the check: raw NCC against the threshold
    for label, fields in rows.items():
        (tmp_path / f"{label}.json").write_text(json.dumps({"label": label, "image": "x", "space": "s", "png": "", **fields}))
    table = gather_qc(sorted(tmp_path.glob("*.json")), tmp_path / "qc.tsv", threshold=0.8).set_index("label")
    assert table["flagged"].to_dict() == {
        "lost_FLAIR": True,
        "old_T1w": True,
        "sub-1_T2w": False,
        "sub-1_trc-FDG_pet": True,
        "sub-2_trc-FDG_pet": False,
    }
    assert "frame motion 6.5 mm" in table.loc["sub-1_trc-FDG_pet", "flag_reason"]


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
