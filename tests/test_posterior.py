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
    labels = np.array([rng.choice(3, p=np.exp(l) / np.exp(l).sum()) for l in logits])
    t = fit_temperature(logits * true_t, np.zeros(3), labels)
    assert t == pytest.approx(true_t, rel=0.1)
    p = posteriors(logits * true_t, np.zeros(3), t)
    assert (p.argmax(1) == logits.argmax(1)).all()  # temperature never changes the decision
