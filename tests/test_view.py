"""An experiment's view of the slices: area resizing to ``image_size`` or a crop at native 1 mm.

Both modes at two sizes; the crop is the exact pixel block around a hand-computed centre, the
brain mask and the planted ground truth are cut the same way, the config refuses both keys, an
oversized crop and a box outside the slice, and a crop experiment runs train -> sample ->
classify -> attribution through the CLI with every output cut or placed by the same box."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magicflow.config import experiment_settings, validate_config
from magicflow.errors import InputError
from magicflow.experiments.commands import application_mask
from magicflow.view import View, describe, mm_to_pixel, pixel_to_mm, resolve_view
from magicflow.preprocess.template import GRID_1MM_AFFINE
from magicflow.slices import coronal_slice
from magicflow.view import resize_mask, resize_slices

from attribution_fixtures import planted_outputs

from test_baselines import SHIPPED

# A brain mask whose centre of mass is known by hand: rows 40-79 (mean 59.5), columns 100-139 (mean 119.5).
BRAIN = np.zeros((1, 182, 182), np.uint8)
BRAIN[0, 40:80, 100:140] = 1
#: (size, top, left) of the crop centred on it: top = floor(59.5 - (size - 1) / 2 + 0.5)
BOXES = [(32, 44, 104), (64, 28, 88)]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def crop_settings(size: int, centre="brain") -> dict:
    return {"name": "tiny", "image_size": size, "crop": {"size": size, "centre": centre}}


def test_mm_coordinates_follow_the_slice_geometry():
    # a voxel at MNI (x, y, z) = (30, -17, 20) mm lands on the slice at the pixel mm_to_pixel names
    volume = np.zeros((182, 218, 182), np.float32)
    i, j, k = np.rint(np.linalg.inv(GRID_1MM_AFFINE) @ [30, -17, 20, 1])[:3].astype(int)
    assert j == 109  # the central coronal plane
    volume[i, j, k] = 1
    rows, cols = np.nonzero(coronal_slice(volume)[0])
    assert (rows[0], cols[0]) == mm_to_pixel(30, 20) == (89, 60)
    assert pixel_to_mm(89, 60) == (30, 20)


@pytest.mark.parametrize("size, top, left", BOXES)
def test_a_brain_centred_crop_is_the_exact_block_around_the_mask_centre(size: int, top: int, left: int):
    view = resolve_view(crop_settings(size), BRAIN)
    assert (view.top, view.left, view.size) == (top, left, size)
    record = view.record()
    assert record["rows"] == [top, top + size - 1] and record["columns"] == [left, left + size - 1]
    assert record["centre_mm"] == list(pixel_to_mm(59.5, 119.5))  # the box's centre is the mask's, exactly
    x = np.random.default_rng(0).random((3, 1, 182, 182), dtype=np.float32)
    cut = view.images(x)
    assert cut.shape == (3, 1, size, size)
    assert np.array_equal(cut, x[:, :, top : top + size, left : left + size])
    # the mask is cut by the same box; the 40 x 40 brain block holds the 32 crop whole and sits inside the 64 one
    mask = view.mask(BRAIN)
    assert np.array_equal(mask, BRAIN[:, top : top + size, left : left + size])
    assert mask.sum() == min(size, 40) ** 2
    # a crop inside the brain cannot split the image: the flow's first coupling falls back to a checkerboard
    assert (application_mask(mask[0]) is None) == (size == 32)
    # NIfTI and overlays: the crop goes back to its box on the 1 mm grid, zeros around it
    grid = view.on_grid(cut[0, 0])
    assert np.array_equal(grid[top : top + size, left : left + size], cut[0, 0]) and grid.sum() == pytest.approx(cut[0, 0].sum())
    assert view.for_display(cut[0, 0]).shape == (size, size)
    assert View.from_record(json.loads(json.dumps(record))) == view
    assert f"{size} x {size} crop at native 1 mm (rows {top}-{top + size - 1}" in describe(record)


@pytest.mark.parametrize("size", [32, 64])
def test_resizing_is_the_area_average_of_the_whole_slice(size: int):
    view = resolve_view({"name": "tiny", "image_size": size, "crop": None}, BRAIN)
    assert not view.is_crop and view.record() == {"mode": "resize", "size": size}
    x = np.random.default_rng(1).random((2, 1, 182, 182), dtype=np.float32)
    assert np.array_equal(view.images(x), resize_slices(x, size)) and view.images(x).shape == (2, 1, size, size)
    assert np.array_equal(view.mask(BRAIN), resize_mask(BRAIN, size))
    stack = np.stack([BRAIN[0], np.zeros((182, 182), np.uint8)])  # (N, 182, 182): planted masks per slice
    assert np.array_equal(view.mask(stack), np.stack([resize_mask(BRAIN, size)[0], np.zeros((size, size), np.uint8)]))
    assert view.on_grid(np.full((size, size), 0.25)).shape == (182, 182)
    assert "area-averaged" in describe(view.record())


def test_an_mni_centred_crop_and_boxes_outside_the_slice():
    view = resolve_view(crop_settings(32, [0, 0]), BRAIN)  # MNI (0, 0) is row 109, column 90
    assert (view.top, view.left) == (109 - 15, 90 - 15)  # floor(109 - 15.5 + 0.5)
    with pytest.raises(InputError, match=r"crop.centre: a 64 x 64 crop centred at x = 80, z = 0 mm .*columns -21\.\.42"):
        resolve_view(crop_settings(64, [80, 0]), BRAIN)
    corner = np.zeros_like(BRAIN)
    corner[0, :10, :10] = 1
    with pytest.raises(InputError, match="centred on the brain of slices.npz.*outside the 182 x 182 slice"):
        resolve_view(crop_settings(32), corner, "slices.npz")
    with pytest.raises(InputError, match="empty brain mask"):
        resolve_view(crop_settings(32), np.zeros_like(BRAIN))


def _config(**experiment) -> dict:
    config = copy.deepcopy(SHIPPED)
    base = copy.deepcopy(config["experiments"]["demo_scanner_classification"])
    base.pop("image_size", None)
    base.pop("crop", None)
    base.pop("baselines", None)
    config["experiments"] = {"tiny": {**base, **experiment}}
    return config


def test_the_config_takes_a_crop_or_an_image_size_not_both():
    settings = experiment_settings(validate_config(_config(crop={"size": 64})), "tiny")
    assert settings["crop"] == {"size": 64, "centre": "brain"} and settings["image_size"] == 64
    settings = experiment_settings(validate_config(_config(crop={"size": 48, "centre": [-20, 10]})), "tiny")
    assert settings["crop"] == {"size": 48, "centre": [-20, 10]} and settings["image_size"] == 48
    settings = experiment_settings(validate_config(_config(image_size=64)), "tiny")
    assert "crop" not in settings and settings["image_size"] == 64  # resized experiments' settings are as before
    assert experiment_settings(validate_config(_config()), "tiny")["image_size"] == 182
    with pytest.raises(InputError, match=r"experiments.tiny': image_size \(64\) and crop are exclusive"):
        validate_config(_config(image_size=64, crop={"size": 64}))
    with pytest.raises(InputError, match=r"experiments.tiny.crop.size': 200 is greater than the maximum of 182"):
        validate_config(_config(crop={"size": 200}))
    with pytest.raises(InputError, match=r"experiments.tiny.crop.centre': a 64 x 64 crop centred at x = 0, z = 100 mm"):
        validate_config(_config(crop={"size": 64, "centre": [0, 100]}))
    with pytest.raises(InputError, match="experiments.tiny.crop"):
        validate_config(_config(crop={"size": 64, "centre": "middle"}))


def _lesion_outputs(tmp_path: Path, size: int = 32):
    """Six AD and six CN slices as a 32 crop sees them: the planted truth is rows 70-97, columns
    28-55 of the 182 grid, i.e. rows and columns 2-29 of the crop at (68, 26), and the AD images
    are brighter exactly there."""
    return planted_outputs(tmp_path, "crop_diagnosis", size, (slice(2, 30), slice(2, 30)), seed=5)


@pytest.mark.slow
def test_the_planted_ground_truth_is_cut_by_the_crop(tmp_path: Path):
    from magicflow.evaluate.experiment import attribution_section

    outputs, groundtruth = _lesion_outputs(tmp_path)
    view = resolve_view(crop_settings(32, list(pixel_to_mm(68 + 15.5, 26 + 15.5))), BRAIN)
    assert (view.top, view.left) == (68, 26)
    brain = np.ones((32, 32))
    gt = attribution_section(outputs, brain, groundtruth, {"seed": 0}, tmp_path, view)["groundtruth"]
    assert gt["uptake_fraction"] == pytest.approx(28 * 28 / 32**2)
    assert gt["scores"]["intensity_high"]["mean"] == 1.0  # the truth lies exactly on the brighter block
    # resized instead, the same truth covers another part of the image: the image no longer finds it exactly
    resized = attribution_section(outputs, brain, groundtruth, {"seed": 0}, tmp_path, View(32))["groundtruth"]
    assert resized["uptake_fraction"] != pytest.approx(gt["uptake_fraction"])
    assert resized["scores"]["intensity_high"]["mean"] < 1.0


@pytest.mark.slow
def test_a_crop_experiment_trains_samples_classifies_and_explains_on_its_box(tmp_path: Path):
    from magicflow.cli import main
    from magicflow.flow import load_checkpoint

    g = np.random.default_rng(0)
    rows, images = [], []
    for s in range(9):
        scanner = "A" if s % 2 else "B"
        rows.append({"subject": f"{s:02d}", "session": "01", "image": f"sub-{s:02d}_ses-01_T1w", "modality": "T1w"})
        rows[-1].update(tracer="n/a", diagnosis="CN", scanner=scanner, offset=0, index=len(images))
        images.append(g.random((1, 182, 182), dtype=np.float32) * 0.3 + (0.5 if scanner == "A" else 0.0))
    slices = np.stack(images)
    pd.DataFrame(rows).to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    # a brain whose centre of mass is (59.5, 119.5) and which the 16 crop straddles: the mask splits it
    brain = np.zeros((1, 182, 182), np.uint8)
    brain[0, 40:80, 100:140] = 1
    brain[0, 40:60, 100:120] = 0
    brain[0, 60:80, 120:140] = 0  # two opposite quarters: the centre of mass stays (59.5, 119.5)
    np.savez(tmp_path / "slices.npz", slices=slices, mask_0=brain)
    top, left = 52, 112  # floor(59.5 - 7.5 + 0.5), floor(119.5 - 7.5 + 0.5)
    config = _config(
        label="scanner",
        model="classification",
        crop={"size": 16},
        offsets={"train": [0], "eval": [0]},
        folds=3,
        run_folds=1,
        samples={"per_class": 2},
        attribution={"max_images": 2},
        training={"epochs": 1, "batch_size": 2, "device": "cpu"},
    )
    config["experiments"]["tiny"]["classes"] = ["A", "B"]
    settings = experiment_settings(validate_config(config), "tiny")
    (tmp_path / "experiment.json").write_text(json.dumps(settings))
    common = ["--experiment", str(tmp_path / "experiment.json"), "--slices", f"demo={tmp_path / 'slices.tsv'}"]
    inputs = [*common, "--arrays", f"demo={tmp_path / 'slices.npz'}"]
    folds, fold = tmp_path / "folds", ["--fold-dir", str(tmp_path / "folds" / "fold-0")]
    model = tmp_path / "models" / "fold-0"
    assert main(["split", *common, "--out", str(folds)]) == 0
    assert main(["train", *inputs, *fold, "--out", str(model)]) == 0
    flow, extra = load_checkpoint(model / "best.pt")
    assert flow.image_size == 16 and (extra["view"]["top"], extra["view"]["left"]) == (top, left)
    box = brain[0, top : top + 16, left : left + 16]
    assert np.array_equal(flow.application_mask[:16, :16].numpy(), box)  # the brain mask, cut by the box

    samples = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                "--experiment",
                str(tmp_path / "experiment.json"),
                "--model",
                str(model / "best.pt"),
                "--out",
                str(samples),
            ]
        )
        == 0
    )
    nifti = np.asarray(nib.load(next(samples.glob("sample_A_0.nii.gz"))).dataobj)[:, 0, :]  # (x, z)
    plane = nifti.T[::-1]  # back to rows superior-first, as coronal_slice cuts it
    inside = np.zeros((182, 182), bool)
    inside[top : top + 16, left : left + 16] = True
    with np.load(samples / "samples.npz") as archive:
        assert np.allclose(plane[inside].reshape(16, 16), archive["samples"][0, 0, 0])
    assert not plane[~inside].any()  # nothing outside the box

    predictions = tmp_path / "predictions.tsv"
    assert main(["classify", *inputs, *fold, "--model", str(model / "best.pt"), "--out", str(predictions)]) == 0
    attribution = tmp_path / "attribution"
    assert (
        main(
            [
                "attribution",
                *inputs,
                *fold,
                "--model",
                str(model / "best.pt"),
                "--predictions",
                str(predictions),
                "--out",
                str(attribution),
            ]
        )
        == 0
    )
    by_image = {r["image"]: r["index"] for r in rows}
    with np.load(attribution / "maps.npz") as maps:
        assert maps["class_maps"].shape == (2, 2, 16, 16)  # two test slices, a map per class, at the crop
        for i, name in enumerate(maps["image"]):  # the test slices the maps explain are the box of each slice
            assert np.array_equal(maps["images"][i], slices[by_image[name], :, top : top + 16, left : left + 16])
    assert len(list(attribution.glob("*.png"))) == 2


def test_the_report_says_how_the_images_were_cut_and_draws_the_box(tmp_path: Path):
    from magicflow.view import crop_png
    from magicflow.report.experiment import overview

    from test_report import metrics_record

    view = resolve_view(crop_settings(64), BRAIN)
    crop_png(view, BRAIN, tmp_path / "crop.png")
    assert tmp_path.joinpath("crop.png").stat().st_size > 0
    metrics = {**metrics_record(), "image_size": 64, "view": view.record()}
    html = overview(metrics, tmp_path)
    assert "images 64 x 64 crop at native 1 mm (rows 28-91, columns 88-151 of the 182 x 182 slice" in html
    assert "centre x = -29.5, z = 49.5 mm, the template brain&#x27;s centre of mass" in html
    assert html.count('src="data:image/png;base64,') == 1 and "crop&#x27;s box" in html
    # resized experiments (and metrics written before crops) show no box
    resized = overview({**metrics_record(), "image_size": 64}, tmp_path)
    assert "area-averaged" in resized and "data:image/png" not in resized
    with pytest.raises(InputError, match="no crop box"):
        crop_png(View(64), BRAIN, tmp_path / "none.png")
