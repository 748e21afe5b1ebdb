"""From class log-likelihoods to calibrated posteriors, per image.

y_hat = argmax_y log p(x|y) + log p(y), with log priors from the training frequencies of
images (one row per image, not per augmented neighbour slice: see
:meth:`magicflow.experiments.data.SliceSet.image_labels`).

The unit classified is the image (one scan): with several evaluation offsets its slices'
log-likelihoods are summed per class (:func:`image_index`, :func:`sum_by_image`) and the prior
is added once, so an image with 11 slices is one decision, not 11 correlated ones.

Log-likelihood differences between classes are in the hundreds of nats for 33k-dimensional
images, so a plain softmax is a hard 0/1; the posterior is softmax((ll + log prior) / T).
The authors fixed T = 600; here T is fitted on the validation images (:func:`fit_temperature`),
which changes confidence, never the argmax. Those images also chose the checkpoint, and a
validation set the selected model separates perfectly drives a plain NLL fit to T -> 0
(posteriors of exactly 0 and 1); the fit is therefore regularised (see :func:`fit_temperature`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from magicflow.errors import InputError

#: the columns that name one image (the classification unit) in slice tables and predictions.tsv
IMAGE_KEYS = ("dataset", "image")


def log_priors(train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """log p(y) from training frequencies, one label per image; an absent class gets the
    weight of one example."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(float)
    counts = np.maximum(counts, 1.0)
    return np.log(counts / counts.sum())


def posteriors(log_likelihoods: np.ndarray, log_prior: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    """softmax((ll + log prior) / T) row-wise, computed stably in float64; ``temperature`` may be
    one value or one per row."""
    t = np.asarray(temperature, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    return np.exp(log_softmax((np.asarray(log_likelihoods, np.float64) + log_prior) / t, axis=1))


def image_index(meta: pd.DataFrame | None, n: int) -> np.ndarray:
    """Per row, the 0-based number of its image in order of first appearance. Rows without
    image identity (plain tensors in tests) are one image each."""
    if meta is None or not set(IMAGE_KEYS) <= set(meta.columns):
        return np.arange(n)
    keys = meta["dataset"].astype(str) + "\x00" + meta["image"].astype(str)
    codes, _ = pd.factorize(keys, sort=False)
    return np.asarray(codes, dtype=int)


def sum_by_image(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(images, K): the rows of ``values`` (slices, K) summed per image of ``index``."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros((int(index.max()) + 1 if len(index) else 0, values.shape[1]))
    np.add.at(out, index, values)
    return out


def labels_by_image(labels: np.ndarray, index: np.ndarray, where: str = "slices") -> np.ndarray:
    """One label per image; an image whose slices disagree is a broken table, named by ``where``."""
    labels = np.asarray(labels)
    out = np.full(int(index.max()) + 1 if len(index) else 0, -1, dtype=int)
    out[index] = labels
    if len(labels) and (out[index] != labels).any():
        bad = int(index[np.flatnonzero(out[index] != labels)[0]])
        raise InputError(f"{where}: image number {bad} has slices with different true labels")
    return out


def smoothed_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot labels with one pseudo-count per class spread over n units (add-one, Laplace):
    the true class gets (n + 1) / (n + K), every other class 1 / (n + K)."""
    n = len(labels)
    targets = np.full((n, num_classes), 1.0 / (n + num_classes))
    targets[np.arange(n), labels] = (n + 1.0) / (n + num_classes)
    return targets


def fit_temperature(log_likelihoods: np.ndarray, log_prior: np.ndarray, labels: np.ndarray, smoothing: bool = True) -> float:
    """T > 0 minimising the cross-entropy of softmax((ll + log prior) / T) on validation units.

    The targets are the true labels with add-one smoothing (:func:`smoothed_targets`): n
    validation units cannot show an error rate below about 1 / (n + K), so the fit may not
    promise more. Without it (``smoothing=False``, the plain NLL) a validation set the
    selected model separates, which model selection favours, gives T -> 0 and posteriors of
    exactly 0 and 1; with it, n correct binary units of equal margin m give
    T = m / log(n + 1), posteriors (n + 1) / (n + 2). Where the units are not separable the
    smoothing moves confidence by at most K / (n + K)."""
    scores = np.asarray(log_likelihoods, np.float64) + log_prior
    labels = np.asarray(labels, dtype=int)
    k = scores.shape[1]
    targets = smoothed_targets(labels, k) if smoothing else np.eye(k)[labels]

    def loss(log_t: float) -> float:
        return float(-(targets * log_softmax(scores / np.exp(log_t), axis=1)).sum(1).mean())

    spread = float(np.ptp(scores, axis=1).max()) if len(scores) else 1.0
    upper = np.log(max(spread, 1.0) * 100.0)
    result = minimize_scalar(loss, bounds=(np.log(1e-3), upper), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(result.x))
