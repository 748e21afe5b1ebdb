"""Training: a toy problem learns; a run killed after an epoch resumes to the same weights;
a completed run is not resumed; non-finite losses are skipped, then stop with a clear error."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from magicflow.experiments.train import SliceSet, TrainSettings, learning_rate, train_model
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


def test_toy_training_lowers_nll_and_beats_chance(tmp_path: Path):
    settings = replace(SETTINGS, epochs=12)  # 48 optimiser steps, as the flow library's own toy test
    history = train_model(model(), toy(32, 0), toy(16, 1), tmp_path, settings, torch.device("cpu"), classification=True, progress=False)
    assert history["val_nll"].iloc[-1] < history["val_nll"].iloc[0]
    assert history["val_balanced_accuracy"].max() > 0.5
    table = pd.read_csv(tmp_path / "training.tsv", sep="\t")
    assert list(table["epoch"]) == list(range(1, 13)) and (tmp_path / "training.png").stat().st_size > 5000
    best, extra = load_checkpoint(tmp_path / "best.pt")
    assert extra["selected_by"] == "val_balanced_accuracy" and 1 <= extra["epoch"] <= 12


def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path: Path):
    train_model(model(), toy(24, 0), toy(8, 1), tmp_path / "straight", SETTINGS, torch.device("cpu"), True, progress=False)

    def kill_after_two(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(model(), toy(24, 0), toy(8, 1), tmp_path / "resumed", SETTINGS, torch.device("cpu"), True, on_epoch_end=kill_after_two, progress=False)
    assert len(pd.read_csv(tmp_path / "resumed" / "training.tsv", sep="\t")) == 2
    history = train_model(model(), toy(24, 0), toy(8, 1), tmp_path / "resumed", SETTINGS, torch.device("cpu"), True, progress=False)
    assert list(history["epoch"]) == [1, 2, 3, 4]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_completed_run_is_retrained_not_resumed(tmp_path: Path):
    short = replace(SETTINGS, epochs=1)
    train_model(model(), toy(16, 0), toy(8, 1), tmp_path, short, torch.device("cpu"), True, progress=False)
    again = train_model(model(), toy(16, 0), toy(8, 1), tmp_path, short, torch.device("cpu"), True, progress=False)
    assert list(again["epoch"]) == [1]


def test_non_finite_losses_are_skipped_then_stop(tmp_path: Path):
    bad = toy(16, 0)
    bad.images[:] = float("nan")
    with pytest.raises(Exception, match="non-finite|finite"):
        train_model(model(), bad, toy(8, 1), tmp_path, replace(SETTINGS, max_bad_steps=2), torch.device("cpu"), True, progress=False)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    s = TrainSettings(lr=1e-3, min_lr=1e-5, warmup_fraction=0.1)
    lrs = [learning_rate(i, 100, s) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))
    assert learning_rate(100, 100, s) == pytest.approx(1e-5)
    assert not math.isnan(lrs[-1])
