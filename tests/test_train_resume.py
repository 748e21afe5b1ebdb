"""A training run interrupted twice, with ``best.pt`` deleted after each failed attempt as
Snakemake deletes a failed job's outputs, ends with the same best epoch and weights as an
uninterrupted run: the best checkpoint survives in the model folder, not only in the output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import magicflow.experiments.train as train
from magicflow.flow import load_checkpoint
from test_train import SETTINGS, model, toy

#: scripted validation NLL per epoch: epoch 2 is the best, every epoch after it worse
VAL_NLL = [5.0, 3.0, 4.0, 6.0, 7.0]


class Interrupted(Exception):
    """A time limit, as the job sees it."""


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, done: dict[str, int]) -> None:
    def evaluate(*args, **kwargs) -> dict[str, float]:
        value = VAL_NLL[done["epochs"]]
        return {"val_nll": value, "val_bpd": value}

    monkeypatch.setattr(train, "evaluate", evaluate)


def _attempt(out: Path, done: dict[str, int], stop_after: int | None) -> None:
    def on_epoch_end(epoch: int) -> None:
        done["epochs"] = epoch
        if epoch == stop_after:
            raise Interrupted

    settings = replace(SETTINGS, epochs=len(VAL_NLL))
    try:
        train.train_model(
            model(), toy(16, 0), toy(8, 1), out, settings, torch.device("cpu"), False, on_epoch_end=on_epoch_end, progress=False
        )
    except Interrupted:
        (out / "best.pt").unlink()  # what Snakemake does to a failed job's declared outputs


@pytest.mark.slow
def test_run_interrupted_twice_selects_the_uninterrupted_runs_best_epoch(tmp_path: Path, monkeypatch):
    done = {"epochs": 0}
    _scripted_validation(monkeypatch, done)
    _attempt(tmp_path / "straight", done, stop_after=None)

    done["epochs"] = 0
    _attempt(tmp_path / "resumed", done, stop_after=2)  # right after the best epoch
    assert not (tmp_path / "resumed" / "best.pt").exists()
    _attempt(tmp_path / "resumed", done, stop_after=3)  # the resumed attempt's first epoch is worse
    _attempt(tmp_path / "resumed", done, stop_after=None)

    straight, straight_extra = load_checkpoint(tmp_path / "straight" / "best.pt")
    resumed, resumed_extra = load_checkpoint(tmp_path / "resumed" / "best.pt")
    assert straight_extra["epoch"] == resumed_extra["epoch"] == 2
    assert straight_extra["score"] == resumed_extra["score"] == -3.0
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_fresh_run_forgets_an_earlier_runs_best(tmp_path: Path, monkeypatch):
    """Another run's twin in the folder (a different setting) must not stand for this run's best."""
    done = {"epochs": 0}
    _scripted_validation(monkeypatch, done)
    _attempt(tmp_path, done, stop_after=None)
    done["epochs"] = 0
    (tmp_path / "last.pt").unlink()  # a new run: nothing to resume
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: {"val_nll": 9.0, "val_bpd": 9.0})  # every epoch worse
    train.train_model(
        model(), toy(16, 0), toy(8, 1), tmp_path, replace(SETTINGS, epochs=1), torch.device("cpu"), False, progress=False
    )
    assert load_checkpoint(tmp_path / "best.pt")[1]["epoch"] == 1  # this run's only epoch, not the old epoch 2
