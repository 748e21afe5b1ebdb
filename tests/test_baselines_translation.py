"""MRI-to-PET translation baselines (magicflow.baselines.translation): the U-Net's shape, range and
side channels, a few steps of the shared training loop lowering its L1 loss, and the mean predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from magicflow.baselines.discriminative import load_baseline, train_baseline
from magicflow.baselines.translation import (
    MeanPredictor,
    UNetTranslator,
    build_translator,
    objective,
    predict,
    side_tensor,
)
from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def pairs(n: int = 16, size: int = 32, seed: int = 0) -> SliceSet:
    """2-channel slices: a smooth random T1 (channel 0) and its PET (channel 1), a fixed function of it."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 8, size // 8, generator=g)
    source = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    target = 1.0 - source**2
    return SliceSet(torch.cat([source, target], 1).float(), torch.arange(n) % 2)


def settings(name: str = "unet", size: int = 32, epochs: int = 3) -> dict:
    return {
        "id": name,
        "name": name,
        "kind": "translation",
        "label": "U-Net",
        "image_size": size,
        "side_dim": 0,
        "weights": None,
        "training": {
            "epochs": epochs,
            "patience": None,
            "batch_size": 4,
            "lr": 3e-3,
            "seed": 0,
            "device": "cpu",
            "augment": {"rotate_degrees": 3.0, "shift_pixels": 1.0, "noise_sigma": 0.0},
        },
    }


@pytest.mark.parametrize("size", [32, 36])
def test_unet_output_shape_and_range_with_and_without_padding(size: int):
    torch.manual_seed(0)
    model = UNetTranslator().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, size, size))
    assert out.shape == (2, 1, size, size)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_side_channels_change_the_output_and_are_checked():
    torch.manual_seed(0)
    model = UNetTranslator(side_dim=2).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a = model(x, side_tensor(torch.tensor([0, 0]), 2))
        b = model(x, side_tensor(torch.tensor([1, 1]), 2))
    assert not torch.allclose(a, b)
    np.testing.assert_allclose(predict(model, x.numpy(), [[0.0, 1.0], [0.0, 1.0]], "cpu"), b.numpy(), rtol=1e-6, atol=1e-7)
    assert torch.equal(side_tensor(torch.tensor([1, 0]), 2), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert side_tensor(torch.tensor([1]), 0) is None
    with pytest.raises(InputError, match=r"\(2, 2\)"):
        model(x)
    with pytest.raises(InputError, match="no side information"):
        UNetTranslator()(x, torch.zeros(2, 2))


def test_unet_trains_in_the_shared_loop_lowering_its_l1(tmp_path: Path):
    torch.manual_seed(0)
    given = settings()
    model = build_translator(given, 2)
    out = tmp_path / "fold-0"
    history = train_baseline(model, pairs(16), pairs(4, seed=1), out, given, torch.device("cpu"), 2, objective=objective(model))
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    assert {"best.pt", "last.pt", "training.tsv", "training.png"} <= {p.name for p in out.iterdir()}
    table = pd.read_csv(out / "training.tsv", sep="\t")
    assert {"val_loss", "val_mae"} <= set(table.columns) and len(table) == 3

    trained, payload = load_baseline(out / "best.pt", build=build_translator)
    assert payload["extra"]["selected_by"] == "val_loss"
    val = pairs(4, seed=1)
    predicted = predict(trained, val.images[:, :1].numpy(), None, "cpu", batch=3)
    assert predicted.shape == (4, 1, 32, 32) and predicted.dtype == np.float32
    best = int(table["val_loss"].idxmin())
    l1 = float(np.abs(predicted - val.images[:, 1:].numpy()).mean())
    assert l1 == pytest.approx(table["val_loss"].iloc[best], rel=1e-3)


def test_mean_predictor_returns_the_training_mean_exactly():
    data = pairs(5)
    model = MeanPredictor(32).fit(data.images)  # 2-channel pairs: channel 1 is the target
    expected = data.images[:, 1:].double().mean(0, keepdim=True).float()
    out = predict(model, torch.rand(3, 1, 32, 32), None, "cpu")
    assert out.shape == (3, 1, 32, 32)
    np.testing.assert_array_equal(out, expected.expand(3, -1, -1, -1).numpy())
    np.testing.assert_array_equal(MeanPredictor(32).fit(data.images[:, 1:].numpy()).mean, expected)
    state = model.state_dict()
    again = MeanPredictor(32)
    again.load_state_dict(state)
    assert torch.equal(again(torch.zeros(1, 1, 32, 32)), expected)


def test_mean_predictor_errors_on_an_empty_fit_and_before_fitting():
    with pytest.raises(InputError, match="empty set"):
        MeanPredictor(32).fit(torch.zeros(0, 1, 32, 32))
    with pytest.raises(InputError, match="not fitted"):
        MeanPredictor(32)(torch.zeros(1, 1, 32, 32))
    with pytest.raises(InputError, match=r"\(3, 1, 16, 16\)"):
        MeanPredictor(32).fit(torch.zeros(3, 1, 16, 16))


def test_validation_l1_covers_the_image_and_val_mae_the_foreground():
    images = torch.zeros(2, 2, 8, 8)
    images[:, :, 2:6, 2:6] = 0.5  # 16 foreground pixels of 64
    images[1, 1, 2:6, 2:6] = 0.7
    model = MeanPredictor(8)
    model.mean.zero_()
    model.fitted.fill_(True)  # predicts 0 everywhere: the error is the target
    metrics = objective(model).validate(model, SliceSet(images, torch.zeros(2, dtype=torch.long)), torch.device("cpu"), 1)
    assert metrics["val_loss"] == pytest.approx((0.5 + 0.7) / 2 * 16 / 64)
    assert metrics["val_mae"] == pytest.approx((0.5 + 0.7) / 2)


# --------------------------------------------------------------------------- class means and non-leaking side (issue 30.7)
def test_the_class_mean_predictor_returns_each_classs_hand_computed_mean():
    from magicflow.baselines.translation import ClassMeanPredictor

    targets = torch.zeros(5, 1, 2, 2)
    targets[:, 0, 0, 0] = torch.tensor([0.1, 0.3, 0.8, 0.2, 0.6])
    labels = torch.tensor([0, 0, 1, 0, 1])
    model = ClassMeanPredictor(2, side_dim=2).fit(torch.cat([torch.zeros_like(targets), targets], 1), labels)
    # class 0: (0.1 + 0.3 + 0.2) / 3 = 0.2; class 1: (0.8 + 0.6) / 2 = 0.7
    assert model.means[:, 0, 0, 0].tolist() == pytest.approx([0.2, 0.7])
    side = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    out = model(torch.rand(2, 1, 2, 2), side)
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.7, 0.2]) and float(out[:, 0, 1:].abs().sum()) == 0
    # side: none is one class: the training mean, (0.1 + 0.3 + 0.8 + 0.2 + 0.6) / 5 = 0.4
    pooled = ClassMeanPredictor(2).fit(targets, labels)
    assert pooled(torch.rand(3, 1, 2, 2))[:, 0, 0, 0].tolist() == pytest.approx([0.4] * 3)
    with pytest.raises(InputError, match="no training target of class\\(es\\) \\[1\\]"):
        ClassMeanPredictor(2, side_dim=2).fit(targets, torch.zeros(5, dtype=torch.long))
    with pytest.raises(InputError, match="not fitted"):
        ClassMeanPredictor(2, side_dim=2)(torch.zeros(1, 1, 2, 2), side[:1])
    with pytest.raises(InputError, match="not age"):
        build_translator({"name": "class_mean", "image_size": 2, "side_dim": 1, "side": "age"}, 2)


def separable_pairs(n: int, seed: int, size: int = 8) -> SliceSet:
    """Pairs whose source brightness tells the class (label 0 dark, 1 bright); the target is the label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    source = torch.rand(n, 1, size, size, generator=g) * 0.2 + 0.6 * labels[:, None, None, None]
    target = labels[:, None, None, None].float().expand(-1, 1, size, size)
    meta = pd.DataFrame({"dataset": "demo", "image": [f"sub-{seed}{i:02d}" for i in range(n)], "offset": 0})
    return SliceSet(torch.cat([source, target], 1).float(), labels, meta)


def test_predicted_side_information_never_reads_the_test_labels():
    from magicflow.baselines.translation import ClassMeanPredictor
    from magicflow.experiments.translation import held_out_conditions

    train, test = separable_pairs(20, 0), separable_pairs(10, 1)
    conditions, record = held_out_conditions("predicted", ["AD", "CN"], train, test, None)
    assert str(record["side"]) == "predicted"
    assert list(record["side_predicted"]) == [["AD", "CN"][i] for i in test.labels.tolist()]  # the source tells them apart
    shuffled = SliceSet(test.images, test.labels[torch.randperm(10, generator=torch.Generator().manual_seed(3))], test.meta)
    garbage = SliceSet(test.images, torch.full((10,), 7), test.meta.assign(label="n/a"))
    for other in (shuffled, garbage):
        again, _ = held_out_conditions("predicted", ["AD", "CN"], train, other, None)
        assert torch.equal(again, conditions)
    model = ClassMeanPredictor(8, side_dim=2).fit(train.images, train.labels)
    first = predict(model, test.images[:, :1], conditions, "cpu")
    second = predict(
        model, shuffled.images[:, :1], held_out_conditions("predicted", ["AD", "CN"], train, shuffled, None)[0], "cpu"
    )
    np.testing.assert_array_equal(first, second)  # identical translations whatever the test labels say
    label_side, record = held_out_conditions("label", ["AD", "CN"], train, shuffled, None)
    assert str(record["side"]) == "label" and torch.equal(label_side.argmax(1), shuffled.labels)  # label does read them


def test_baseline_translate_with_predicted_side_gives_identical_translations_whatever_the_test_labels(tmp_path: Path):
    from magicflow.baselines.translation import train_translation_baseline, translate_with_baseline

    def with_meta(data: SliceSet, labels: torch.Tensor) -> SliceSet:
        meta = data.meta.assign(
            subject=data.meta["image"], label=[["AD", "CN"][i] for i in labels.tolist()], source_image=data.meta["image"]
        )
        return SliceSet(data.images, labels, meta)

    train, val, test = separable_pairs(20, 0), separable_pairs(6, 1), separable_pairs(8, 2)
    sets = {"train": with_meta(train, train.labels), "val": with_meta(val, val.labels), "test": with_meta(test, test.labels)}
    experiment = {"name": "t", "translation": {"side": "predicted", "triptychs": 1}}
    baseline = {**settings("class_mean", size=8), "label": "Class mean", "architecture": "per-class mean", "side": "predicted"}
    train_translation_baseline(experiment, baseline, ["AD", "CN"], sets, tmp_path / "model", "cpu", "fold-0")
    outputs = []
    flipped = with_meta(test, 1 - test.labels)  # every test label wrong
    for name, given in (("true", sets["test"]), ("flipped", flipped)):
        translate_with_baseline(
            tmp_path / "model" / "best.pt",
            experiment,
            baseline,
            ["AD", "CN"],
            given,
            "cpu",
            tmp_path / name,
            np.ones((8, 8)),
            sets["train"],
        )
        with np.load(tmp_path / name / "translations.npz") as archive:
            outputs.append({k: archive[k] for k in ("mode", "side", "side_predicted")})
    np.testing.assert_array_equal(outputs[0]["mode"], outputs[1]["mode"])
    assert str(outputs[0]["side"]) == "predicted"
    assert list(outputs[0]["side_predicted"]) == list(outputs[1]["side_predicted"]) == ["AD", "CN"] * 4
    # the class mean of the predicted class: the separable targets are the label itself, 0 or 1
    assert outputs[0]["mode"][:, 0, 0, 0].tolist() == [0.0, 1.0] * 4
    with pytest.raises(InputError, match="needs the fold's training set"):
        translate_with_baseline(
            tmp_path / "model" / "best.pt", experiment, baseline, ["AD", "CN"], given, "cpu", tmp_path / "x", np.ones((8, 8))
        )
