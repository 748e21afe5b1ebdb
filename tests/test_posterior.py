"""Posteriors: priors from frequencies, argmax unchanged by temperature, fitted T hand-checked."""

from __future__ import annotations

import numpy as np
import pytest

from magicflow.experiments.posterior import fit_temperature, log_priors, posteriors


def test_log_priors_from_frequencies():
    assert np.allclose(np.exp(log_priors(np.array([0, 0, 0, 1]), 3)), [3 / 5, 1 / 5, 1 / 5])


def test_posteriors_match_a_hand_computed_softmax():
    ll = np.array([[-1000.0, -1010.0]])
    p = posteriors(ll, np.log([0.5, 0.5]), temperature=10.0)
    assert p[0, 0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert p.sum() == pytest.approx(1.0)


def test_fitted_temperature_recovers_the_generating_one():
    rng = np.random.default_rng(0)
    true_t = 40.0
    logits = rng.normal(0, 2, size=(4000, 3))
    labels = np.array([rng.choice(3, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    t = fit_temperature(logits * true_t, np.zeros(3), labels)
    assert t == pytest.approx(true_t, rel=0.1)
    p = posteriors(logits * true_t, np.zeros(3), t)
    assert (p.argmax(1) == logits.argmax(1)).all()  # temperature never changes the decision


def test_predictions_use_one_prior_row_per_training_image():
    """The diagnosis task's layout: AD images bring 9 neighbour slices each, CN images 1. At
    one AD image in seven, slice counts would give p(AD) = 9/15 = 0.60; images give 1/7."""
    import pandas as pd
    import torch

    from magicflow.experiments.infer import predictions_table
    from magicflow.experiments.data import SliceSet

    meta = pd.DataFrame({"dataset": "d", "image": ["ad"] * 9 + [f"cn{i}" for i in range(6)]})
    train = SliceSet(torch.zeros(15, 1, 2, 2), torch.tensor([1] * 9 + [0] * 6), meta)
    test_meta = pd.DataFrame({"dataset": ["d"], "subject": ["s"], "session": ["1"], "image": ["t"], "offset": [0]})
    test = SliceSet(torch.zeros(1, 1, 2, 2), torch.tensor([0]), test_meta)
    # equal likelihoods: the prior alone decides, and the posterior is the prior
    table, _ = predictions_table(
        test,
        SliceSet(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long)),
        train,
        ["CN", "AD"],
        np.zeros((1, 2)),
        np.zeros((0, 2)),
    )
    assert table["posterior_AD"].iloc[0] == pytest.approx(1 / 7)
    assert table["predicted"].iloc[0] == "CN"
