"""Training: a toy problem learns; a run killed after an epoch resumes to the same weights and
optimizer state; a completed run is not resumed; non-finite losses are skipped, then stop with
a clear error; a training step never waits for the device; priors count images, not slices."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet
from magicflow.experiments.train import (
    TrainSettings,
    WeightAverage,
    learning_rate,
    selection_score,
    should_stop,
    train_model,
)
from magicflow.flow import MagicFlow, load_checkpoint

SIZE = 16


def toy(n: int, seed: int) -> SliceSet:
    """Class 0: a bright disk; class 1: a dim ring. Intensities in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    r = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2).sqrt()
    labels = torch.arange(n) % 2
    base = torch.stack([(r < 5).float() * 0.8 if k == 0 else ((r > 3) & (r < 6)).float() * 0.4 for k in labels.tolist()])
    images = (base + 0.03 * torch.randn(n, SIZE, SIZE, generator=g)).clamp(0, 1)[:, None]
    return SliceSet(images, labels)


def model() -> MagicFlow:
    torch.manual_seed(0)
    return MagicFlow.from_preset("small", 2, coupling="classification", image_size=SIZE, actnorm_init_images=8)


SETTINGS = TrainSettings(epochs=4, batch_size=8, lr=2e-3, seed=1)


@pytest.mark.slow
def test_toy_training_lowers_nll_and_beats_chance(tmp_path: Path):
    settings = replace(SETTINGS, epochs=12)  # 48 optimiser steps, as the flow library's own toy test
    history = train_model(
        model(), toy(32, 0), toy(16, 1), tmp_path, settings, torch.device("cpu"), classification=True, progress=False
    )
    assert history["val_nll"].iloc[-1] < history["val_nll"].iloc[0]
    assert history["val_balanced_accuracy"].max() > 0.5
    table = pd.read_csv(tmp_path / "training.tsv", sep="\t")
    assert list(table["epoch"]) == list(range(1, 13)) and (tmp_path / "training.png").stat().st_size > 5000
    best, extra = load_checkpoint(tmp_path / "best.pt")
    assert extra["selected_by"] == "val_balanced_accuracy, then val_nll" and 1 <= extra["epoch"] <= 12


@pytest.mark.slow
@pytest.mark.parametrize("settings", [SETTINGS, replace(SETTINGS, ema=0.9)], ids=["plain", "weight-average"])
def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path: Path, settings: TrainSettings):
    train_model(model(), toy(24, 0), toy(8, 1), tmp_path / "straight", settings, torch.device("cpu"), True, progress=False)

    def kill_after_two(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(
            model(),
            toy(24, 0),
            toy(8, 1),
            tmp_path / "resumed",
            settings,
            torch.device("cpu"),
            True,
            on_epoch_end=kill_after_two,
            progress=False,
        )
    assert len(pd.read_csv(tmp_path / "resumed" / "training.tsv", sep="\t")) == 2
    history = train_model(
        model(), toy(24, 0), toy(8, 1), tmp_path / "resumed", settings, torch.device("cpu"), True, progress=False
    )
    assert list(history["epoch"]) == [1, 2, 3, 4]
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    a, b = straight["model"], resumed["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if settings.ema:  # the weight average resumes too, and it is not the live weights
        assert all(torch.equal(x, y) for x, y in zip(straight["average"], resumed["average"]))
        live = model()
        live.load_state_dict(straight["model"])
        assert any(not torch.equal(x, p.detach()) for x, p in zip(straight["average"], live.parameters()))
    # and Adam's moments and step counts, which a resume restores from the saved state
    a, b = straight["optimizer"], resumed["optimizer"]
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(a["state"][key][name], b["state"][key][name]), (key, name)


@pytest.mark.slow
def test_completed_run_is_retrained_not_resumed(tmp_path: Path):
    short = replace(SETTINGS, epochs=1)
    train_model(model(), toy(16, 0), toy(8, 1), tmp_path, short, torch.device("cpu"), True, progress=False)
    again = train_model(model(), toy(16, 0), toy(8, 1), tmp_path, short, torch.device("cpu"), True, progress=False)
    assert list(again["epoch"]) == [1]


class NaNAfter:
    """Wraps ``model.log_likelihood`` in training mode: calls listed in ``bad`` return NaN, as
    a diverging step would (finite inputs pass validation, so the step itself must cope)."""

    def __init__(self, model: MagicFlow, bad: set[int] | None = None, from_call: int | None = None) -> None:
        self.inner, self.bad, self.from_call, self.calls = model.log_likelihood, bad or set(), from_call, 0
        model.log_likelihood = self

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if not torch.is_grad_enabled():
            return out  # validation: leave it alone
        self.calls += 1
        if self.calls in self.bad or (self.from_call is not None and self.calls >= self.from_call):
            return out * float("nan")
        return out


@pytest.mark.slow
def test_non_finite_losses_are_skipped_not_stepped(tmp_path: Path):
    """Two bad steps out of 8: training goes on, they are counted, and Adam never saw them
    (its step count is the number of finite steps; the weights stay finite)."""
    m = model()
    NaNAfter(m, bad={3, 4})
    settings = replace(SETTINGS, epochs=2, max_bad_steps=3, log_every=1)
    history = train_model(m, toy(32, 0), toy(8, 1), tmp_path, settings, torch.device("cpu"), True, progress=False)
    assert list(history["skipped_steps"]) == [2, 0] and list(history["steps"]) == [4, 4]
    state = torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]["state"]
    assert {float(v["step"]) for v in state.values()} == {6.0}
    assert all(torch.isfinite(p).all() for p in m.parameters())


@pytest.mark.slow
def test_consecutive_non_finite_losses_stop_with_a_clear_error(tmp_path: Path):
    """NaN from the second step on, 4 steps per epoch, the loss read every 2 steps: epoch 1 ends
    with 3 bad steps in a row (below the limit of 4), epoch 2 reaches 4 and stops at its read."""
    m = model()
    NaNAfter(m, from_call=2)
    settings = replace(SETTINGS, max_bad_steps=4, log_every=2)
    with pytest.raises(RuntimeError, match="4 consecutive non-finite losses at epoch 2"):
        train_model(m, toy(32, 0), toy(8, 1), tmp_path, settings, torch.device("cpu"), True, progress=False)
    assert len(pd.read_csv(tmp_path / "training.tsv", sep="\t")) == 1


def test_nan_images_are_rejected_once_before_training(tmp_path: Path):
    bad = toy(16, 0)
    bad.images[3, 0, 2, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        train_model(model(), bad, toy(8, 1), tmp_path, SETTINGS, torch.device("cpu"), True, progress=False)
    assert not (tmp_path / "last.pt").exists()


class SyncCounter(TorchDispatchMode):
    """Counts operators that make the host wait for the device's result: reading a scalar
    (``item``, ``bool(tensor)``, ``int(tensor)``), comparing whole tensors, and ops whose output
    shape depends on values (nonzero, masked_select, unique)."""

    SYNCING = {
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "equal",
        "allclose",
        "nonzero",
        "masked_select",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
    }

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ in self.SYNCING:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["classification", "generation"])
def test_training_step_has_no_host_synchronisation(kind: str):
    """The whole step (dequantise, augment, forward, backward, clip, fused Adam with its
    non-finite skip) as train_model runs it, counted after ActNorm is initialised and on the
    first step (initialisation must not sync either)."""
    from magicflow.experiments.train import augment, make_optimizer, train_step

    torch.manual_seed(0)
    m = MagicFlow.from_preset("small", 2, coupling=kind, image_size=SIZE, actnorm_init_images=8)
    data = toy(8, 0)
    optimizer = make_optimizer(m, SETTINGS)
    noise = torch.Generator().manual_seed(0)
    m.train()
    counts = []
    for _ in range(2):
        with SyncCounter() as counter:
            x = m.dequantise(augment(data.images, SETTINGS, noise), SETTINGS.dequantize, noise, validate=False)
            nll, finite = train_step(m, optimizer, x, data.labels, SETTINGS)
        counts.append(counter.seen)
    assert counts == [[], []], counts
    assert bool(finite) and torch.isfinite(nll)


def test_priors_count_one_row_per_training_image():
    """An AD image with 9 neighbour slices and a CN image with 1 weigh the same."""
    meta = pd.DataFrame({"dataset": ["d"] * 11, "image": ["ad1"] * 9 + ["cn1", "cn2"]})
    data = SliceSet(torch.zeros(11, 1, 4, 4), torch.tensor([1] * 9 + [0, 0]), meta)
    assert data.image_labels().tolist() == [1, 0, 0]
    assert SliceSet(torch.zeros(3, 1, 4, 4), torch.tensor([1, 1, 0])).image_labels().tolist() == [1, 1, 0]


def formula_rate(step: int, total: int, s: TrainSettings) -> float:
    """The warm-up + cosine rate as train_model computed it by hand before the schedule became a LambdaLR."""
    warmup = max(1, int(s.warmup_fraction * total))
    if step < warmup:
        return s.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1.0 + math.cos(math.pi * progress))


@pytest.mark.slow
def test_every_step_trains_at_the_formula_rate_resume_included(tmp_path: Path, monkeypatch):
    """The scheduler gives each optimiser step exactly (==, not approx) the rate of the formula,
    through a kill after epoch 2 and the resume: 3 steps per epoch, 12 in all, warm-up 3."""
    import magicflow.experiments.train as train_module

    rates: list[float] = []
    step = train_module.train_step

    def recording(model, optimizer, x, y, settings):
        rates.append(optimizer.param_groups[0]["lr"])
        return step(model, optimizer, x, y, settings)

    def kill_after_two(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_step", recording)
    settings = replace(SETTINGS, warmup_fraction=0.25)
    with pytest.raises(KeyboardInterrupt):
        train_model(
            model(),
            toy(24, 0),
            toy(8, 1),
            tmp_path,
            settings,
            torch.device("cpu"),
            True,
            on_epoch_end=kill_after_two,
            progress=False,
        )
    assert len(rates) == 6
    history = train_model(model(), toy(24, 0), toy(8, 1), tmp_path, settings, torch.device("cpu"), True, progress=False)
    assert rates == [formula_rate(k, 12, settings) for k in range(12)]
    assert list(history["lr"]) == [formula_rate(k, 12, settings) for k in (2, 5, 8, 11)]  # each epoch's last rate


def test_balanced_accuracy_counts_only_classes_in_the_validation_set():
    """scikit-learn's score equals the hand-written mean recall it replaced, bit for bit, also when
    a predicted class is absent from the validation labels (it adds no term, and no warning)."""
    import warnings

    from magicflow.experiments.train import balanced_accuracy

    def by_hand(true, pred, num_classes):
        recalls = [float((pred[true == k] == k).mean()) for k in range(num_classes) if (true == k).any()]
        return float(np.mean(recalls)) if recalls else float("nan")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert balanced_accuracy(np.array([0, 0, 1, 1, 1]), np.array([0, 2, 1, 1, 0])) == (1 / 2 + 2 / 3) / 2
        rng = np.random.default_rng(0)
        for _ in range(200):
            n = int(rng.integers(1, 12))
            true, pred = rng.integers(0, 4, n), rng.integers(0, 4, n)
            assert balanced_accuracy(true, pred) == by_hand(true, pred, 4), (true, pred)
    assert math.isnan(balanced_accuracy(np.array([], int), np.array([], int)))


def test_train_settings_defaults_are_the_config_schema_defaults():
    """The schema documents the training defaults users see; TrainSettings must train with them."""
    import yaml

    from magicflow.config import SCHEMA_PATH

    training = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["training"]["properties"]
    augment = training["augment"]["properties"]
    defaults = TrainSettings()
    for key in ("epochs", "patience", "batch_size", "lr", "seed", "loss", "precision", "compile", "checkpointing"):
        assert getattr(defaults, key) == training[key]["default"], key
    for key in ("rotate_degrees", "shift_pixels", "noise_sigma"):
        assert getattr(defaults, key) == augment[key]["default"], key
    # no schema default; the descriptions say what absent means
    assert "default" not in augment["probability"] and "absent means 1" in augment["probability"]["description"]
    assert "default" not in augment["clamp"] and "absent means false" in augment["clamp"]["description"]
    assert defaults.probability == 1.0 and defaults.clamp is False


def test_learning_rate_warms_up_then_decays_to_the_floor():
    s = TrainSettings(lr=1e-3, min_lr=1e-5, warmup_fraction=0.1)
    lrs = [learning_rate(i, 100, s) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))
    assert learning_rate(100, 100, s) == pytest.approx(1e-5)
    assert not math.isnan(lrs[-1])


def test_precision_is_a_training_setting(tmp_path: Path):
    m = model()
    history = train_model(
        m,
        toy(16, 0),
        toy(8, 1),
        tmp_path,
        replace(SETTINGS, epochs=1, precision="bf16"),
        torch.device("cpu"),
        True,
        progress=False,
    )
    assert all(step.coupling.bf16 for step in m.steps) and math.isfinite(history["val_nll"].iloc[0])
    with pytest.raises(InputError, match="precision"):
        TrainSettings(precision="fp16")
    with pytest.raises(InputError, match="loss"):
        TrainSettings(loss="pixel")


def test_augmentation_probability_and_clamp():
    """probability 0 leaves every image as it was; 1 moves them all; clamp keeps [0, 1]."""
    from magicflow.experiments.train import augment

    x = torch.rand(6, 1, 8, 8)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(augment(x, TrainSettings(probability=0.0), g()), x)
    moved = augment(x, TrainSettings(noise_sigma=0.5), g())
    assert not torch.isclose(moved, x).flatten(1).all(1).any()
    assert moved.min() < 0 and moved.max() > 1
    clamped = augment(x, TrainSettings(noise_sigma=0.5, clamp=True), g())
    assert clamped.min() >= 0 and clamped.max() <= 1
    half = augment(x, TrainSettings(noise_sigma=0.5, probability=0.5), g())
    untouched = torch.isclose(half, x).flatten(1).all(1)
    assert 0 < int(untouched.sum()) < 6


def test_patience_stops_once_validation_nll_stops_improving():
    rows = [{"val_nll": v} for v in (10.0, 8.0, 9.0, 8.5)]
    assert not should_stop(rows[:3], 2) and should_stop(rows, 2)  # epochs 3-4 did not beat epoch 2's 8.0
    assert not should_stop(rows, None) and not should_stop(rows, 4)
    assert not should_stop(rows + [{"val_nll": 7.9}], 2)


@pytest.mark.slow
def test_early_stopped_run_is_complete_and_keeps_its_best_model(tmp_path: Path):
    # lr at the floor: validation NLL barely moves, so patience 1 stops the run long before 30 epochs
    settings = replace(SETTINGS, epochs=30, patience=1, lr=1e-9, min_lr=1e-9)
    history = train_model(model(), toy(16, 0), toy(8, 1), tmp_path, settings, torch.device("cpu"), True, progress=False)
    assert 2 <= len(history) < 30
    assert list(pd.read_csv(tmp_path / "training.tsv", sep="\t")["epoch"]) == list(range(1, len(history) + 1))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["completed"] and state["epoch"] + 1 == len(history)
    _, extra = load_checkpoint(tmp_path / "best.pt")
    best = history.iloc[extra["epoch"] - 1]
    assert best["val_balanced_accuracy"] == history["val_balanced_accuracy"].max()


def test_classifier_selection_breaks_accuracy_ties_by_validation_nll():
    tied = [selection_score({"val_balanced_accuracy": 1.0, "val_nll": nll}, True) for nll in (50.0, 40.0)]
    assert tied[1] > tied[0]
    assert selection_score({"val_balanced_accuracy": 0.5, "val_nll": 1.0}, True) < tied[0]
    assert selection_score({"val_nll": 40.0}, False) > selection_score({"val_nll": 50.0}, False)


def test_weight_average_follows_the_warmed_up_decay_and_swaps_back():
    m = model()
    first = next(m.parameters())
    start = first.detach().clone()
    average = WeightAverage(m, 0.9)
    with torch.no_grad():
        first.add_(1.0)
    average.update(step=1)  # decay min(0.9, 2/11): the average moves 9/11 of the way
    torch.testing.assert_close(average.average[0], start + 9 / 11)
    live = first.detach().clone()
    average.swap()
    torch.testing.assert_close(first.detach(), start + 9 / 11)
    average.swap()
    torch.testing.assert_close(first.detach(), live)
    with SyncCounter() as counter:
        average.update(step=2)
    assert counter.seen == []


class _ScriptedScores:
    """The model's evaluation interface with class log-likelihoods given per slice."""

    image_dims = 4

    def __init__(self, scores: torch.Tensor) -> None:
        self.scores, self.done = scores, 0

    def eval(self) -> None:
        pass

    def dequantise(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x

    def bin_centre(self, x: torch.Tensor, *args) -> torch.Tensor:
        return x

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor, *args) -> torch.Tensor:
        return torch.zeros(len(x))

    def class_log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scores[self.done : self.done + len(x)]
        self.done += len(x)
        return out


def test_validation_accuracy_is_per_image_as_evaluation_scores_it():
    """Two images of three slices: slice by slice 2 of 6 are right (balanced accuracy 1/3), but each
    image's log-likelihoods summed over its slices pick its class (1.0), the unit model selection
    must share with the report."""
    from magicflow.experiments.train import evaluate

    scores = torch.tensor([[0.0, 1], [0, 1], [10, 0], [1, 0], [1, 0], [0, 10]])
    meta = pd.DataFrame({"dataset": ["d"] * 6, "image": ["a"] * 3 + ["b"] * 3})
    data = SliceSet(torch.zeros(6, 1, 2, 2), torch.tensor([0, 0, 0, 1, 1, 1]), meta)
    prior = torch.log(torch.tensor([0.5, 0.5]))
    out = evaluate(_ScriptedScores(scores), data, replace(SETTINGS, batch_size=4), torch.device("cpu"), prior)
    assert out["val_balanced_accuracy"] == 1.0
    plain = SliceSet(data.images, data.labels)  # no image identity: every slice its own image
    out = evaluate(_ScriptedScores(scores), plain, replace(SETTINGS, batch_size=4), torch.device("cpu"), prior)
    assert out["val_balanced_accuracy"] == pytest.approx(1 / 3)
