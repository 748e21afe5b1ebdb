"""Do the attribution maps point at the disease? (paper Sections 6.3 and 7.3, Figure 3.)

Each likelihood attribution map is thresholded into a region of interest (ROI); intensity
features of the image inside the ROI feed a cross-validated logistic regression for the
diagnosis. If the maps single out pathology, a modest ROI already classifies well; the
paper's Figure 3 shows F1 = 0.71 at threshold 0.5 (~2% of the area), a peak of 0.88 at 0.8
(~40%) and 0.87 at 0.99 (72%).

Which side of the map is kept: the low-likelihood side (``keep="low"``). The paper reads
low-likelihood (blue) regions as atypical patterns that, for AD vs CN on tau PET, coincide
with tau aggregates (Section 7.2, Figure 2), and calls the ROIs the most salient locations.
Figure 3 also fixes the direction of the threshold: the retained area grows with it, so the
ROI is the set of pixels whose normalised value is at or below the threshold. Both fit
together only one way round: maps are min-max normalised per image so that 0 is the lowest
log-likelihood and 1 the highest, and the ROI at threshold t keeps values <= t. Log-likelihood
maps have a long lower tail (few very unlikely pixels), which is also why t = 0.5 keeps only
about 2% of the brain while t = 0.99 keeps most of it."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from magicflow.errors import InputError

DEFAULT_THRESHOLDS = np.round(np.arange(0.50, 1.0, 0.01), 2)
"""0.50, 0.51, ..., 0.99: the range of the paper's Figure 3."""

PERCENTILES = (10, 25, 50, 75, 90)
HISTOGRAM_BINS = 32
FEATURE_NAMES = ["mean", "std", "skewness", "kurtosis", *[f"p{q}" for q in PERCENTILES], "entropy"]
"""Order of :func:`roi_features`' output: first-order (gray-level distribution) statistics."""


def _stack(name: str, x: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """(N, H, W) float64; a singleton channel axis (N, 1, H, W) is dropped."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise InputError(f"{name}: expected shape (N, H, W) or (N, 1, H, W), got {np.shape(x)}")
    if shape is not None and array.shape != shape:
        raise InputError(f"{name}: shape {array.shape} does not match the maps' {shape}")
    return array


def _mask(mask: np.ndarray | None, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """(H, W) bool with at least one pixel; None means the whole image."""
    if mask is None:
        return np.ones(shape, bool)
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != shape:
        raise InputError(f"{name}: shape {m.shape} does not match the maps' (H, W) = {shape}")
    m = m.astype(bool)
    if not m.any():
        raise InputError(f"{name}: is empty")
    return m


def normalise_maps(maps: np.ndarray, mask: np.ndarray | None = None, keep: Literal["low", "high"] = "low") -> np.ndarray:
    """Per-map min-max scaling inside the mask, oriented so that 0 is the most salient pixel.

    keep="low" (the paper's choice, see the module docstring): (m - min) / (max - min), so the
    lowest log-likelihood is 0. keep="high": (max - m) / (max - min), for maps where high
    values mark the evidence. Either way the ROI at threshold t is ``normalised <= t`` and it
    grows with t. Pixels outside the mask are NaN (never in an ROI); a map that is constant
    inside the mask becomes all 0 there (everything equally salient)."""
    if keep not in ("low", "high"):
        raise InputError(f"keep must be 'low' or 'high', got {keep!r}")
    m = _stack("maps", maps)
    inside = _mask(mask, m.shape[1:])
    values = m[:, inside]
    if not np.isfinite(values).all():
        raise InputError("maps: NaN or infinite values inside the mask")
    low, high = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = (values - low) / span if keep == "low" else (high - values) / span
    out = np.full(m.shape, np.nan)
    out[:, inside] = scaled
    return out


def roi_features(
    image: np.ndarray,
    roi: np.ndarray,
    bins: int = HISTOGRAM_BINS,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Gray-level distribution of the image inside the ROI, in :data:`FEATURE_NAMES` order:
    mean, std, skewness, (Fisher) kurtosis, percentiles 10/25/50/75/90 and the entropy (bits)
    of a histogram with ``bins`` fixed bins over ``value_range`` (slices are in [0, 1]; values
    outside are counted in the end bins). Fixed bins make entropies comparable across ROIs
    of different size and contrast. An empty ROI gives all zeros, and a constant one zero
    skewness and kurtosis, so every image yields a finite row for the classifier."""
    img = np.asarray(image, dtype=np.float64)
    region = np.asarray(roi)
    if img.ndim != 2:
        raise InputError(f"image: expected shape (H, W), got {img.shape}")
    if region.shape != img.shape:
        raise InputError(f"roi: shape {region.shape} does not match the image's {img.shape}")
    values = img[region.astype(bool)]
    features = np.zeros(len(FEATURE_NAMES))
    if values.size == 0:
        return features
    mean = values.mean()
    centred = values - mean
    m2 = float(np.mean(centred**2))
    features[0], features[1] = mean, np.sqrt(m2)
    if np.sqrt(m2) > 1e-12 * max(1.0, abs(mean)):
        # moment ratios as scipy.stats.skew / kurtosis (bias=True, Fisher), without their
        # per-call overhead: this runs for every image at every threshold
        features[2] = np.mean(centred**3) / m2**1.5
        features[3] = np.mean(centred**4) / m2**2 - 3.0
    features[4 : 4 + len(PERCENTILES)] = np.percentile(values, PERCENTILES)
    counts, _ = np.histogram(np.clip(values, *value_range), bins=bins, range=value_range)
    p = counts[counts > 0] / values.size
    features[-1] = float(-(p * np.log2(p)).sum())
    return features


def threshold_analysis(
    maps: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None,
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
    folds: int = 5,
    seed: int = 0,
    keep: Literal["low", "high"] = "low",
) -> pd.DataFrame:
    """Figure 3: for each threshold, ROI = normalised map <= threshold (see
    :func:`normalise_maps`), :func:`roi_features` per image, and the macro F1 of a
    standardised logistic regression under stratified k-fold cross-validation (mean and
    population std over folds; the same folds at every threshold so the curve compares like
    with like). ``retained_area`` is the mean fraction of in-mask pixels in the ROI.

    ``folds`` is lowered to the smallest class count when a class is rarer than that (at
    least 2 are needed); the number used is in ``result.attrs["folds"]``. Pass maps computed
    without the true label (e.g. for the predicted class, or one fixed class): a map
    conditioned on the true label could leak it through the ROI's shape."""
    m = _stack("maps", maps)
    img = _stack("images", images, m.shape)
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(m):
        raise InputError(f"labels: expected shape ({len(m)},) to match the maps, got {y.shape}")
    inside = _mask(mask, m.shape[1:])
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise InputError("labels: threshold analysis needs at least two classes")
    used = min(int(folds), int(counts.min()))
    if used < 2:
        raise InputError(f"labels: the rarest class has {counts.min()} sample(s); cross-validation needs at least 2 per class")
    levels = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if levels.size == 0:
        raise InputError("thresholds: none given")
    normalised = normalise_maps(m, inside, keep)
    splitter = StratifiedKFold(n_splits=used, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    rows = []
    for t in levels:
        rois = normalised <= t  # NaN outside the mask compares False
        features = np.stack([roi_features(img[i], rois[i]) for i in range(len(img))])
        scores = cross_val_score(model, features, y, cv=splitter, scoring="f1_macro")
        area = rois[:, inside].mean(axis=1).mean()
        rows.append(
            {"threshold": float(t), "f1": float(scores.mean()), "f1_std": float(scores.std()), "retained_area": float(area)}
        )
    result = pd.DataFrame(rows, columns=["threshold", "f1", "f1_std", "retained_area"])
    result.attrs["folds"] = used
    return result


def mask_auc(maps: np.ndarray, truth: np.ndarray, brain: np.ndarray | None = None, low_is_positive: bool = True) -> float:
    """Pixel-level ROC AUC of the maps against a ground-truth lesion mask (the demo cohort's AD
    tau regions, or a segmentation), pooled over all in-brain pixels of all images.

    With ``low_is_positive`` the map is negated, so low likelihood predicts the lesion (the
    paper's reading). AUC is rank-based, and pooling ranks pixels across images: pass
    :func:`normalise_maps` output (still low = salient with keep="low") when raw map scales
    differ between images."""
    m = _stack("maps", maps)
    t = np.asarray(truth)
    if t.shape != m.shape:
        raise InputError(f"truth: shape {t.shape} does not match the maps' {m.shape}")
    inside = _mask(brain, m.shape[1:], "brain")
    scores, positives = m[:, inside].ravel(), t[:, inside].astype(bool).ravel()
    if not np.isfinite(scores).all():
        raise InputError("maps: NaN or infinite values inside the brain mask")
    if positives.all() or not positives.any():
        raise InputError("truth: needs both lesion and non-lesion pixels inside the brain for an AUC")
    return float(roc_auc_score(positives, -scores if low_is_positive else scores))
