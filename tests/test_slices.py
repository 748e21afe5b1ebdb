"""Slice geometry, left-right convention, normalisation and the dataset slice table."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magicflow.errors import InputError
from magicflow.preprocess.naming import mni_image_path
from magicflow.preprocess.template import GRID_1MM_AFFINE, GRID_1MM_SHAPE
from magicflow.slices import (
    coronal_slice,
    extract_slices,
    mask_slice,
    normalise_volume,
    parse_offsets,
)
from magicflow.view import resize_mask, resize_slices, upsample_plane


def _world_to_index(x: float, y: float, z: float) -> tuple[int, int, int]:
    ijk = np.linalg.inv(GRID_1MM_AFFINE) @ np.array([x, y, z, 1.0])
    return tuple(int(round(v)) for v in ijk[:3])


def test_shape_and_central_index():
    volume = np.zeros(GRID_1MM_SHAPE, dtype=np.float32)
    volume[:, 109, :] = 1.0
    volume[:, 112, :] = 2.0
    assert coronal_slice(volume).shape == (1, 182, 182)
    assert np.all(coronal_slice(volume, 0) == 1.0)
    assert np.all(coronal_slice(volume, 3) == 2.0)
    assert np.all(coronal_slice(volume, -1) == 0.0)


def test_superior_at_top_and_subject_right_on_the_left():
    volume = np.zeros(GRID_1MM_SHAPE, dtype=np.float32)
    # a blob in the subject's LEFT hemisphere (x = -40 mm), high up (z = +50 mm), on the central plane
    i, j, k = _world_to_index(-40.0, -17.0, 50.0)
    assert j == 109
    volume[i - 3 : i + 4, j - 3 : j + 4, k - 3 : k + 4] = 1.0
    plane = coronal_slice(volume)[0]
    rows, cols = np.nonzero(plane)
    assert rows.mean() < 182 / 2  # superior half is the top of the array
    assert cols.mean() > 182 / 2  # subject's left lands on the right-hand columns (radiological)
    assert cols.mean() == pytest.approx(90 + 40, abs=1)  # column = 90 - x
    assert rows.mean() == pytest.approx(181 - (50 + 72), abs=1)  # row 0 is z = +109 mm


def test_offset_outside_volume():
    with pytest.raises(InputError, match="outside"):
        coronal_slice(np.zeros(GRID_1MM_SHAPE, dtype=np.float32), 200)
    with pytest.raises(InputError, match="MNI 1 mm grid"):
        coronal_slice(np.zeros((10, 10, 10), dtype=np.float32))


def test_normalisation_is_robust_to_hot_voxels():
    rng = np.random.default_rng(0)
    volume = rng.uniform(100, 200, GRID_1MM_SHAPE).astype(np.float32)
    mask = np.zeros(GRID_1MM_SHAPE, dtype=bool)
    mask[40:140, 40:180, 40:140] = True
    volume[50, 50, 50] = 1e6
    out = normalise_volume(volume, mask)
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < float(np.median(out[mask])) < 0.6  # one hot voxel does not squash the rest


def test_mask_slice_matches_image_slice():
    mask = np.zeros(GRID_1MM_SHAPE, dtype=np.uint8)
    mask[20:60, 100:120, 30:90] = 1
    m = mask_slice(mask, 5)
    assert m.shape == (1, 182, 182) and m.dtype == np.uint8
    np.testing.assert_array_equal(m, coronal_slice(mask.astype(np.float32), 5).astype(np.uint8))


def test_parse_offsets():
    assert parse_offsets("-5:5") == list(range(-5, 6))
    assert parse_offsets("0") == [0]
    assert parse_offsets("2,-2,0") == [-2, 0, 2]
    with pytest.raises(InputError):
        parse_offsets("a:b")


def _fake_template(root):
    from magicflow.preprocess.template import template_filenames

    import json

    root.mkdir()
    names = template_filenames("MNI152NLin2009aSym", 1)
    mask = np.zeros(GRID_1MM_SHAPE, dtype=np.uint8)
    mask[30:150, 30:190, 30:150] = 1
    for name in names.values():
        nib.save(nib.Nifti1Image(mask.astype(np.float32), GRID_1MM_AFFINE), root / name)
    (root / "template.json").write_text(json.dumps({"space": "MNI152NLin2009aSym", "resolutions": {"1": {"files": names}}}))


@pytest.mark.slow
def test_extract_slices_table_and_arrays(tmp_path):
    _fake_template(tmp_path / "tpl")
    rows = [
        {
            "subject": "01",
            "session": "01",
            "image": "sub-01_ses-01_T1w",
            "modality": "T1w",
            "tracer": "",
            "diagnosis": "AD",
            "scanner": "A",
            "path": "raw1",
        },
        {
            "subject": "02",
            "session": "01",
            "image": "sub-02_ses-01_trc-FDG_pet",
            "modality": "PET",
            "tracer": "FDG",
            "diagnosis": "CN",
            "scanner": "B",
            "path": "raw2",
        },
        {
            "subject": "03",
            "session": "01",
            "image": "sub-03_ses-01_T1w",
            "modality": "T1w",
            "tracer": "",
            "diagnosis": "CN",
            "scanner": "B",
            "path": "raw3",
            "exclusion_reason": "motion",
        },
    ]
    manifest = tmp_path / "manifest.tsv"
    pd.DataFrame(rows).fillna("").to_csv(manifest, sep="\t", index=False)
    rng = np.random.default_rng(1)
    for row in rows[:2]:
        path = mni_image_path(tmp_path / "preproc", row["image"], "MNI152NLin2009aSym")
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.random(GRID_1MM_SHAPE).astype(np.float32), GRID_1MM_AFFINE), path)
    table = extract_slices(manifest, tmp_path / "preproc", tmp_path / "tpl", [-1, 0, 1], tmp_path / "s.npz", tmp_path / "s.tsv")
    saved = pd.read_csv(tmp_path / "s.tsv", sep="\t", dtype=str)
    assert len(saved) == 6 and list(saved["offset"]) == ["-1", "0", "1"] * 2
    assert {"subject", "session", "modality", "tracer", "diagnosis", "scanner", "offset", "source", "index"} <= set(saved.columns)
    assert "path" not in saved.columns and "03" not in set(saved["subject"])
    with np.load(tmp_path / "s.npz") as arrays:
        assert arrays["slices"].shape == (6, 1, 182, 182) and arrays["slices"].dtype == np.float32
        assert 0.0 <= arrays["slices"].min() and arrays["slices"].max() <= 1.0
        assert arrays["mask_0"].shape == (1, 182, 182)
    assert list(table["index"]) == list(range(6))


def test_extract_slices_missing_image_is_an_error(tmp_path):
    _fake_template(tmp_path / "tpl")
    manifest = tmp_path / "manifest.tsv"
    pd.DataFrame([{"subject": "09", "session": "01", "image": "sub-09_ses-01_T2w", "modality": "T2w", "tracer": ""}]).to_csv(
        manifest, sep="\t", index=False
    )
    with pytest.raises(InputError, match="preprocessed image missing"):
        extract_slices(manifest, tmp_path / "preproc", tmp_path / "tpl", [0], tmp_path / "s.npz", tmp_path / "s.tsv")
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.tsv").exists()


def test_resize_averages_each_block_and_keeps_the_mean():
    image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    small = resize_slices(image, 2)
    assert small.shape == (1, 1, 2, 2)
    assert np.allclose(small[0, 0], [[2.5, 4.5], [10.5, 12.5]])  # means of the 2x2 blocks, worked by hand
    rng = np.random.default_rng(0)
    slices = rng.random((3, 1, 182, 182)).astype(np.float32)
    assert np.allclose(resize_slices(slices, 91).mean(axis=(1, 2, 3)), slices.mean(axis=(1, 2, 3)), atol=1e-6)
    assert np.allclose(resize_slices(np.full((1, 1, 182, 182), 0.3, np.float32), 64), 0.3)  # no ringing
    assert resize_slices(slices, 182) is not None and resize_slices(slices, 182).shape == slices.shape
    assert resize_slices(np.zeros((0, 1, 182, 182), np.float32), 64).shape == (0, 1, 64, 64)
    with pytest.raises(InputError, match="image_size 200"):
        resize_slices(slices, 200)


def test_resized_mask_keeps_pixels_at_least_half_inside():
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, :2, :2] = 1  # one full block
    mask[0, 2, 2] = mask[0, 2, 3] = 1  # half of another
    mask[0, 0, 3] = 1  # a quarter of a third
    assert resize_mask(mask, 2)[0].tolist() == [[1, 0], [0, 1]]


def test_upsampled_plane_lies_on_the_1mm_grid():
    plane = np.full((64, 64), 0.5, np.float32)
    assert upsample_plane(plane).shape == (182, 182) and np.allclose(upsample_plane(plane), 0.5)
