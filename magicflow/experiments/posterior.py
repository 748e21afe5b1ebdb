"""From class log-likelihoods to calibrated posteriors.

y_hat = argmax_y log p(x|y) + log p(y), with log priors from the training frequencies of
images (one row per image, not per augmented neighbour slice: see
:meth:`magicflow.experiments.data.SliceSet.image_labels`).
Log-likelihood differences between classes are in the hundreds of nats for 33k-dimensional
images, so a plain softmax is a hard 0/1; the posterior is softmax((ll + log prior) / T).
The authors fixed T = 600; here T is fitted on the validation fold by minimising the
negative log-likelihood of the true labels, which changes confidence, never the argmax."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


def log_priors(train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """log p(y) from training frequencies, one label per image; an absent class gets the
    weight of one example."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(float)
    counts = np.maximum(counts, 1.0)
    return np.log(counts / counts.sum())


def posteriors(log_likelihoods: np.ndarray, log_prior: np.ndarray, temperature: float) -> np.ndarray:
    """softmax((ll + log prior) / T) row-wise, computed stably."""
    return np.exp(log_softmax((log_likelihoods + log_prior) / temperature, axis=1))


def fit_temperature(log_likelihoods: np.ndarray, log_prior: np.ndarray, labels: np.ndarray) -> float:
    """T > 0 minimising the validation negative log-likelihood of the true labels."""
    scores = log_likelihoods + log_prior

    def nll(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean())

    spread = float(np.ptp(scores, axis=1).max()) if len(scores) else 1.0
    upper = np.log(max(spread, 1.0) * 100.0)
    result = minimize_scalar(nll, bounds=(np.log(1e-3), upper), method="bounded")
    return float(np.exp(result.x))
