"""MRI-to-PET translation metrics (magicflow.evaluate.translation) against values worked out by hand
on tiny arrays, the AD/CN check on a separable toy, and each figure written as a readable PNG."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import structural_similarity

from magicflow.errors import InputError
from magicflow.evaluate import translation as tr


def images(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, size=(n, 1, size, size)).astype(np.float32)


def centre_mask(size: int = 16, border: int = 4) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    mask[border : size - border, border : size - border] = 1
    return mask


# --- per-image metrics -------------------------------------------------------------------


def test_mae_and_psnr_by_hand_inside_the_mask_only():
    real = np.zeros((2, 1, 4, 4), np.float32)
    generated = real.copy()
    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, :2, :2] = 1  # 4 pixels
    generated[0, 0, :2, :2] = [[0.1, 0.1], [0.3, 0.3]]  # |d| mean 0.2, d^2 mean (0.01 + 0.09) / 2 = 0.05
    generated[0, 0, 3, 3] = 1.0  # outside the mask: ignored
    generated[1, 0, :2, :2] = 0.5  # mae 0.5, mse 0.25
    m = tr.image_metrics(real, generated, mask)
    np.testing.assert_allclose(m["mae"], [0.2, 0.5], rtol=1e-6)
    np.testing.assert_allclose(m["psnr"], [10 * math.log10(1 / 0.05), 10 * math.log10(1 / 0.25)], rtol=1e-6)


def test_identical_images_give_infinite_psnr_zero_mae_and_unit_ssim_and_correlation():
    real = images(2)
    m = tr.image_metrics(real, real.copy(), centre_mask())
    assert np.all(np.isinf(m["psnr"])) and np.all(m["psnr"] > 0)
    np.testing.assert_array_equal(m["mae"], 0.0)
    np.testing.assert_allclose(m["ssim"], 1.0, atol=1e-12)
    np.testing.assert_allclose(m["correlation"], 1.0, atol=1e-12)


def test_correlation_is_pearson_over_the_mask_pixels_and_nan_for_a_constant_image():
    real, generated = images(2, seed=1), images(2, seed=2)
    generated[1] = 0.4  # constant: r undefined
    mask = centre_mask(border=3)
    m = tr.image_metrics(real, generated, mask)
    inside = mask > 0
    expected = np.corrcoef(real[0, 0][inside], generated[0, 0][inside])[0, 1]
    assert m["correlation"][0] == pytest.approx(expected, rel=1e-9)
    assert math.isnan(m["correlation"][1])


def test_ssim_with_an_all_ones_mask_is_scikit_images_own_value():
    real, generated = images(2, size=24, seed=3), images(2, size=24, seed=4)
    generated[1] = np.clip(real[1] + 0.05 * generated[1], 0, 1)  # a close pair too
    m = tr.image_metrics(real, generated, np.ones((24, 24)))
    for i in range(2):
        expected = structural_similarity(
            real[i, 0].astype(np.float64),
            generated[i, 0].astype(np.float64),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert m["ssim"][i] == pytest.approx(expected, rel=1e-9)
    assert m["ssim"][1] > m["ssim"][0]


def test_masked_ssim_ignores_pixels_outside_the_mask():
    # pixels further than the window's radius (5) from the mask change no SSIM value inside it
    real, generated = images(1, size=32, seed=5), images(1, size=32, seed=6)
    mask = np.zeros((32, 32))
    mask[8:14, 8:14] = 1
    before = tr.image_metrics(real, generated, mask)
    changed_real, changed_generated = real.copy(), generated.copy()
    changed_real[0, 0, 22:, :] = 0.0
    changed_generated[0, 0, :, 22:] = 1.0
    after = tr.image_metrics(changed_real, changed_generated, mask)
    for name in tr.METRICS:
        assert after[name][0] == pytest.approx(before[name][0], rel=1e-12)


def test_small_images_get_a_smaller_ssim_window():
    assert tr.ssim_window(16, 16) == (11, 1.5)
    window, sigma = tr.ssim_window(8, 9)
    assert window == 7 and sigma == pytest.approx(6 / 7)
    assert int(3.5 * sigma + 0.5) == 3  # scikit-image's filter radius equals the window's
    real = images(1, size=8)
    m = tr.image_metrics(real, real, np.ones((8, 8)))
    assert m["ssim"][0] == pytest.approx(1.0)
    with pytest.raises(InputError, match="at least 3 x 3"):
        tr.image_metrics(images(1, size=2), images(1, size=2), np.ones((2, 2)))


def test_shape_mismatch_and_empty_mask_errors_name_the_shapes():
    with pytest.raises(InputError, match=r"real \(2, 1, 16, 16\), generated \(2, 1, 12, 12\)"):
        tr.image_metrics(images(2), images(2, size=12), centre_mask())
    with pytest.raises(InputError, match=r"mask has shape \(12, 12\), the images are \(16, 16\)"):
        tr.image_metrics(images(2), images(2), centre_mask(12))
    with pytest.raises(InputError, match="mask is empty"):
        tr.image_metrics(images(2), images(2), np.zeros((16, 16)))
    with pytest.raises(InputError, match=r"\(2, 3, 16, 16\)"):
        tr.image_metrics(np.zeros((2, 3, 16, 16)), np.zeros((2, 3, 16, 16)), centre_mask())


def test_summarise_leaves_out_nan_and_inf_and_counts_them():
    summary = tr.summarise({"psnr": np.array([20.0, 30.0, np.inf]), "correlation": np.array([np.nan, 0.5]), "mae": np.array([])})
    assert summary["psnr"] == {"mean": 25.0, "std": pytest.approx(np.std([20, 30], ddof=1)), "n": 2, "left_out": 1}
    assert summary["correlation"]["mean"] == 0.5 and math.isnan(summary["correlation"]["std"])
    assert summary["correlation"]["n"] == 1 and summary["correlation"]["left_out"] == 1
    assert math.isnan(summary["mae"]["mean"]) and summary["mae"]["n"] == 0


# --- regional uptake ---------------------------------------------------------------------


def test_regional_uptake_by_hand():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4) / 32
    left, top = np.zeros((4, 4)), np.zeros((1, 4, 4))
    left[:, 0] = 1  # column 0: values 0, 4, 8, 12 (+16 for image 1)
    top[0, 0, :2] = 1  # 0 and 1
    table = tr.regional_uptake(x, {"left": left, "top": top})
    assert list(table.columns) == ["image", "region", "uptake"]
    assert table[["image", "region"]].values.tolist() == [[0, "left"], [0, "top"], [1, "left"], [1, "top"]]
    np.testing.assert_allclose(table["uptake"], [6 / 32, 0.5 / 32, 22 / 32, 16.5 / 32], rtol=1e-6)
    paired = tr.paired_uptake(x, 1 - x, {"left": left})
    np.testing.assert_allclose(paired["generated"], 1 - paired["real"], rtol=1e-6)


def test_regional_uptake_errors_name_the_region():
    with pytest.raises(InputError, match="region 'hippocampus' has shape"):
        tr.regional_uptake(images(1), {"hippocampus": np.ones((8, 8))})
    with pytest.raises(InputError, match="region 'precuneus' is empty"):
        tr.regional_uptake(images(1), {"precuneus": np.zeros((16, 16))})


# --- AD/CN check -------------------------------------------------------------------------


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """AD images darker in the mask's upper half than CN ones, noise around each."""
    rng = np.random.default_rng(seed)
    labels = np.array(["AD", "CN"] * (n // 2))
    x = rng.normal(0.5, 0.03, size=(n, 1, 8, 8))
    x[labels == "AD", :, :4] -= 0.3
    return x.clip(0, 1).astype(np.float32), labels


def test_adcn_check_on_a_separable_toy():
    mask = np.ones((8, 8))
    x_train, y_train = separable(20, 0)
    x_test, y_test = separable(10, 1)
    result = tr.adcn_check(x_train, y_train, x_test, x_test.copy(), y_test, mask)
    assert result["real"] == {
        "accuracy": 1.0,
        "balanced_accuracy": 1.0,
        "false_negative_rate": 0.0,
        "false_positive_rate": 0.0,
        "n": 10,
    }
    assert result["generated"] == result["real"]
    assert result["agreement"] == 1.0 and result["n_train"] == 20 and result["features"] == 64

    cn_like = np.repeat(x_test[y_test == "CN"][:1], len(x_test), axis=0)  # every generated image looks CN
    result = tr.adcn_check(x_train, y_train, x_test, cn_like, y_test, mask)
    assert result["generated"]["false_negative_rate"] == 1.0
    assert result["generated"]["false_positive_rate"] == 0.0
    assert result["generated"]["accuracy"] == 0.5 and result["generated"]["balanced_accuracy"] == 0.5
    assert result["real"]["accuracy"] == 1.0


def test_adcn_check_skips_a_single_class_training_set():
    x_train, _ = separable(6, 0)
    x_test, y_test = separable(4, 1)
    result = tr.adcn_check(x_train, ["CN"] * 6, x_test, x_test, y_test, np.ones((8, 8)))
    assert "skipped" in result and "no 'AD'" in result["skipped"] and "real" not in result
    with pytest.raises(InputError, match="6 training images .* but 5 training labels"):
        tr.adcn_check(x_train, ["CN"] * 5, x_test, x_test, y_test, np.ones((8, 8)))


def test_table2_marks_label_side_translations_circular_and_sets_predicted_side_beside_them():
    from magicflow.evaluate.translation_experiment import table2_models

    x_train, y_train = separable(20, 0)
    x_test, y_test = separable(10, 1)  # AD, CN, AD, CN, ...
    cn_like = np.repeat(x_test[y_test == "CN"][:1], len(x_test), axis=0)
    # the source classifier got the first two AD subjects wrong: predicted CN, CN, AD, CN, AD, CN, ...
    side_predicted = np.where(np.arange(10) < 3, "CN", y_test)
    base = {"real": x_test, "label": y_test, "image": np.arange(10).astype(str)}
    models = {
        "dual-glow": {"label": "DUAL-GLOW", "folds": {"fold-0": {**base, "mode": x_test.copy(), "side": np.array("label")}}},
        "unet": {
            "label": "U-Net",
            "folds": {"fold-0": {**base, "mode": cn_like, "side": np.array("predicted"), "side_predicted": side_predicted}},
        },
        "mean": {"label": "Training mean", "folds": {"fold-0": {**base, "mode": cn_like}}},  # no side recorded: the default
    }
    result = table2_models({"fold-0": (x_train, y_train)}, models, np.ones((8, 8)), "AD", "none")
    by_id = {e["id"]: e for e in result["models"]}
    assert [e["id"] for e in result["models"]] == ["dual-glow", "unet", "mean"]
    assert by_id["dual-glow"]["circular"] is True and result["circular"] is True and result["side"] == "label"
    assert by_id["unet"]["circular"] is False and by_id["unet"]["side"] == "predicted"
    assert by_id["mean"]["side"] == "none" and by_id["mean"]["circular"] is False
    assert result["real"]["accuracy"] == 1.0 and result["generated"] == by_id["dual-glow"]["generated"]
    assert by_id["unet"]["generated"]["false_negative_rate"] == 1.0 and by_id["unet"]["agreement"] == 0.5
    # the source classifier by hand: 5 AD, 2 called CN -> FNR 0.4; 5 CN, none called AD -> FPR 0; accuracy 8/10
    assert result["side_predicted"] == {
        "accuracy": 0.8,
        "balanced_accuracy": pytest.approx(0.8),
        "false_negative_rate": 0.4,
        "false_positive_rate": 0.0,
        "n": 10,
    }


def test_the_report_labels_a_check_on_label_side_translations_circular():
    from magicflow.evaluate.translation_experiment import table2_models
    from magicflow.report.translation import table2

    x_train, y_train = separable(20, 0)
    x_test, y_test = separable(10, 1)
    fold = {"real": x_test, "label": y_test, "mode": x_test.copy()}
    for side, circular in (("label", True), ("predicted", False), ("none", False)):
        extra = {"side_predicted": y_test} if side == "predicted" else {}
        models = {"dual-glow": {"label": "DUAL-GLOW", "folds": {"fold-0": {**fold, "side": np.array(side), **extra}}}}
        block = table2_models({"fold-0": (x_train, y_train)}, models, np.ones((8, 8)), "AD", "none")
        page = table2({"side": side, "table2": block})
        assert ("Circular check" in page) is circular and ("<b>circular</b>" in page) is circular
        assert ("source-only classifier" in page) is (side == "predicted")
    old = {"side": "label", "table2": {"positive": "AD", "real": block["real"], "generated": block["generated"]}}
    assert "Circular check" in table2(old)  # a metrics.json of before per-model checks


# --- figures -----------------------------------------------------------------------------


def read_png(path) -> np.ndarray:
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] > 50 and image.shape[1] > 50
    return image


def test_triptych_writes_a_png(tmp_path):
    x = images(4)
    path = tr.triptych_png(
        tmp_path / "fig" / "triptych.png", x[0], x[1], x[2], x[3] * 0.1, "subject 1", {"mae": 0.03, "ssim": 0.9}
    )
    shape = read_png(path).shape
    assert shape[1] > shape[0]  # a row of panels
    tr.triptych_png(tmp_path / "none.png", x[0], x[1], x[2], None, "no samples", None)
    read_png(tmp_path / "none.png")
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind
    with pytest.raises(InputError, match="differ in shape"):
        tr.triptych_png(tmp_path / "bad.png", x[0], x[1], images(1, size=8)[0], None, "bad", None)


def test_uptake_scatter_writes_a_png(tmp_path):
    x = images(5)
    regions = {"left": centre_mask(border=3), "right": centre_mask(border=6), "flat": centre_mask(border=7)}
    table = tr.paired_uptake(x, np.clip(x + 0.05, 0, 1), regions)
    read_png(tr.uptake_scatter_png(tmp_path / "scatter.png", table, "regional uptake"))
    with pytest.raises(InputError, match="lacks column"):
        tr.uptake_scatter_png(tmp_path / "bad.png", table.drop(columns="real"), "bad")


def test_age_sweep_writes_a_png_with_and_without_uptake(tmp_path):
    ages = [60, 70, 80]
    x = images(3)
    uptake = tr.regional_uptake(x, {"a": centre_mask(), "b": centre_mask(border=6)})
    read_png(tr.age_sweep_png(tmp_path / "sweep.png", ages, x, uptake, "age sweep"))
    read_png(tr.age_sweep_png(tmp_path / "images.png", ages, x, None, "age sweep"))
    with_age = pd.DataFrame({"age": [60, 80], "region": "a", "uptake": [0.5, 0.4]})
    read_png(tr.age_sweep_png(tmp_path / "age.png", ages, x, with_age, "age sweep"))
    with pytest.raises(InputError, match="one image per age"):
        tr.age_sweep_png(tmp_path / "bad.png", ages[:2], x, None, "bad")
