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
about 2% of the brain while t = 0.99 keeps most of it.

What a score is measured on and against (issue 30): the ROI F1 that is reported comes from
:func:`roi_classification`, cross-validated over subjects with the threshold chosen on inner
folds or fixed in advance at 0.8, beside random regions of the same area; the maximum of
:func:`threshold_analysis`'s curve is picked on the folds it is scored on and is optimistic.
Against a known lesion mask, :func:`groundtruth_scores` scores the maps per slice, averages per
subject and puts maps that need no model beside them (the image itself, its difference from
the other class's mean image, a random region): the model is credited only for beating those."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from scipy import ndimage
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from magicflow.errors import InputError

DEFAULT_THRESHOLDS = np.round(np.arange(0.50, 1.0, 0.01), 2)
"""0.50, 0.51, ..., 0.99: the range of the paper's Figure 3."""

FIXED_THRESHOLD = 0.8
"""Pre-registered ROI threshold: the paper's Figure 3 peak, fixed before seeing our maps."""

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

    Folds split slices, not subjects, and the curve's maximum is selected on the folds it is
    scored on: a description of the maps, not a score to report (:func:`roi_classification`
    gives that). ``folds`` is lowered to the smallest class count when a class is rarer than
    that (at least 2 are needed); the number used is in ``result.attrs["folds"]``. Pass maps computed
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


# --------------------------------------------------------------------------- per-slice scores
def slice_aucs(scores: np.ndarray, truth: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """ROC AUC of each slice's scores (high = lesion) against that slice's own truth mask,
    inside the brain; NaN for a slice without both lesion and non-lesion pixels there.

    Per slice, so no map's offset or scale is ranked against another's (and per-slice min-max
    scaling, being monotone, changes nothing); average the result per subject with
    :func:`subject_means`, since slices of one subject are not independent."""
    s = _stack("scores", scores)
    t = np.asarray(truth)
    if t.shape != s.shape:
        raise InputError(f"truth: shape {t.shape} does not match the scores' {s.shape}")
    inside = _mask(brain, s.shape[1:], "brain")
    values, positives = s[:, inside], t[:, inside].astype(bool)
    if not np.isfinite(values).all():
        raise InputError("scores: NaN or infinite values inside the brain mask")
    out = np.full(len(s), np.nan)
    for i in range(len(s)):
        if positives[i].any() and not positives[i].all():
            out[i] = roc_auc_score(positives[i], values[i])
    return out


def subject_means(values: np.ndarray, subjects: np.ndarray) -> pd.Series:
    """Mean of the finite per-slice values of each subject (index: subject, sorted); subjects
    with no finite value are left out. The subject, not the slice, is the unit of replication."""
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(subjects).astype(str)
    if v.shape != g.shape or v.ndim != 1:
        raise InputError(f"subjects: expected shape {v.shape} to match the values, got {g.shape}")
    keep = np.isfinite(v)
    return pd.Series(v[keep]).groupby(g[keep]).mean().sort_index()


def random_regions(areas: np.ndarray, brain: np.ndarray, seed: int, sigma: float | None = None, rank: bool = False) -> np.ndarray:
    """(N, H, W) bool: for slice i a region of exactly ``areas[i]`` in-brain pixels placed
    without looking at any image: the top pixels of a smoothed white-noise field, so it comes
    in blobs like a lesion or an ROI does. The control every localisation score must beat:
    its expected pixel AUC against any mask is 0.5, and its ROI features carry only what a
    region of that size carries anywhere. ``sigma`` (pixels) defaults to 1/20 of the width.

    ``rank=True`` returns instead each in-brain pixel's rank in its slice's field (0 = first
    taken; outside the brain: the brain's pixel count), so ``ranks < n`` is the region of
    area n from the same field for any n."""
    inside = np.asarray(brain).astype(bool)
    if inside.ndim != 2 or not inside.any():
        raise InputError(f"brain: expected a non-empty (H, W) mask, got shape {inside.shape}")
    k = np.asarray(areas, dtype=np.int64)
    if k.ndim != 1 or (k < 0).any() or (k > inside.sum()).any():
        raise InputError(f"areas: expected pixel counts between 0 and the brain's {int(inside.sum())}, got {k}")
    rng = np.random.default_rng(seed)
    width = sigma if sigma is not None else max(1.0, inside.shape[1] / 20)
    total = int(inside.sum())
    ranks = np.full((len(k), *inside.shape), total, np.int64)
    for i in range(len(k)):
        field = ndimage.gaussian_filter(rng.standard_normal(inside.shape), width)[inside]
        order = np.empty(total, np.int64)
        order[np.argsort(-field, kind="stable")] = np.arange(total)
        ranks[i][inside] = order
    return ranks if rank else ranks < k[:, None, None]


# --------------------------------------------------------------------------- subject-grouped ROI F1
def _class_subject_counts(y: np.ndarray, groups: np.ndarray) -> int:
    """The fewest subjects any class has: the most folds a subject-grouped, stratified split can use."""
    return int(min(len(np.unique(groups[y == c])) for c in np.unique(y)))


def grouped_nested_splits(
    labels: np.ndarray, subjects: np.ndarray, folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
    """Outer and inner subject-grouped, stratified folds: [(outer_train, outer_test,
    [(inner_train, inner_val), ...]), ...], all index arrays into the samples. Inner folds
    split only the outer training part (indices are global), so a subject's slices are never
    on both sides of any split, and the outer test subjects never inform a choice.

    Folds are lowered to what the rarest class's subjects allow: the outer split needs 2
    subjects per class, the inner one 2 more per class within each outer training part."""
    y, g = np.asarray(labels), np.asarray(subjects).astype(str)
    if y.shape != g.shape or y.ndim != 1:
        raise InputError(f"subjects: expected shape {y.shape} to match the labels, got {g.shape}")
    if len(np.unique(y)) < 2:
        raise InputError("labels: ROI classification needs at least two classes")
    per_class = _class_subject_counts(y, g)
    outer = min(int(folds), per_class)
    if outer < 2 or per_class < 3:
        raise InputError(
            f"subjects: the rarest class has {per_class} subject(s); subject-grouped nested cross-validation needs at least 3"
        )
    splits = []
    for train, test in StratifiedGroupKFold(n_splits=outer, shuffle=True, random_state=seed).split(y, y, g):
        inner_n = min(int(folds), _class_subject_counts(y[train], g[train]))
        if inner_n < 2:
            raise InputError(
                "subjects: an outer training part has a class with a single subject; too few subjects for nested selection"
            )
        inner = StratifiedGroupKFold(n_splits=inner_n, shuffle=True, random_state=seed + 1)
        splits.append((train, test, [(train[a], train[b]) for a, b in inner.split(y[train], y[train], g[train])]))
    return splits


def _roi_feature_stack(images: np.ndarray, rois: np.ndarray) -> np.ndarray:
    return np.stack([roi_features(images[i], rois[i]) for i in range(len(images))])


def _macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """sklearn's f1_score(average="macro") over the labels present in either array (0 for a
    label never predicted nor true), without its per-call validation: this runs thousands of times."""
    scores = []
    for c in np.union1d(truth, predicted):
        tp = np.sum((truth == c) & (predicted == c))
        wrong = np.sum(truth != predicted) - np.sum((truth != c) & (predicted != c) & (truth != predicted))
        scores.append(2 * tp / (2 * tp + wrong) if 2 * tp + wrong else 0.0)
    return float(np.mean(scores))


def _split_f1(model, features: np.ndarray, y: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(thresholds, pairs): macro F1 of ``model`` fitted on each pair's first part and scored on
    its second, at every threshold's features (thresholds, N, F). Single-threaded BLAS: tiny
    fits, where thread start-up costs more than the fit on a shared machine."""
    out = np.empty((len(features), len(pairs)))
    with threadpool_limits(1):
        for t, x in enumerate(features):
            for j, (train, test) in enumerate(pairs):
                fitted = clone(model).fit(x[train], y[train])
                out[t, j] = _macro_f1(y[test], fitted.predict(x[test]))
    return out


def _nested_f1(features: np.ndarray, y: np.ndarray, splits: list, model) -> tuple[list[int], list[float], np.ndarray]:
    """Per outer fold, the threshold index chosen on its inner folds (the first of ties: the
    smallest ROI that does best) and the outer F1 there; plus the outer F1 at every threshold
    (thresholds, outer folds), the descriptive curve."""
    outer = _split_f1(model, features, y, [(train, test) for train, test, _ in splits])
    chosen, nested = [], []
    for k, (_, _, inner) in enumerate(splits):
        best = int(np.argmax(_split_f1(model, features, y, inner).mean(axis=1)))
        chosen.append(best)
        nested.append(float(outer[best, k]))
    return chosen, nested, outer


def roi_classification(
    maps: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    subjects: np.ndarray,
    mask: np.ndarray | None,
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
    fixed_threshold: float = FIXED_THRESHOLD,
    folds: int = 5,
    seed: int = 0,
    keep: Literal["low", "high"] = "low",
) -> dict:
    """Figure 3 with an honest score: macro F1 of ROI features (:func:`threshold_analysis`'s
    pipeline), cross-validated over subjects (StratifiedGroupKFold), for

    - ``nested``: the threshold chosen on inner subject-grouped folds of each outer training
      part, F1 on that outer fold's held-out subjects (mean and population sd over outer
      folds); the thresholds chosen are listed;
    - ``fixed``: the pre-registered threshold (default 0.8, the paper's peak), same outer folds;
    - ``control``: the same two numbers when each slice's ROI is replaced by a
      :func:`random_regions` region of the same area, i.e. what the ROI's size alone gives;
    - ``curve``: F1 at every threshold on the outer folds, model and control. The curve's
      maximum is selected on the data it is reported on; it is kept for the figure only.

    ``maps`` should be computed without the true label (e.g. for the predicted class)."""
    m = _stack("maps", maps)
    img = _stack("images", images, m.shape)
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(m):
        raise InputError(f"labels: expected shape ({len(m)},) to match the maps, got {y.shape}")
    g = np.asarray(subjects).astype(str)
    if g.shape != y.shape:
        raise InputError(f"subjects: expected shape {y.shape} to match the labels, got {g.shape}")
    inside = _mask(mask, m.shape[1:])
    levels = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if levels.size == 0:
        raise InputError("thresholds: none given")
    levels = np.union1d(levels, [float(fixed_threshold)])
    fixed_index = int(np.flatnonzero(np.isclose(levels, fixed_threshold))[0])
    splits = grouped_nested_splits(y, g, folds, seed)

    normalised = normalise_maps(m, inside, keep)
    # one noise field per slice: a larger area takes more of the top of the same field, so
    # the control's regions grow with the threshold as the ROIs do
    fields = random_regions(np.full(len(m), inside.sum()), inside, seed, rank=True)
    model_features, control_features, areas = [], [], []
    for t in levels:
        rois = normalised <= t  # NaN outside the mask compares False
        counts = rois[:, inside].sum(axis=1)
        model_features.append(_roi_feature_stack(img, rois))
        control_features.append(_roi_feature_stack(img, (fields < counts[:, None, None]) & inside))
        areas.append(float(counts.mean() / inside.sum()))
    model_features, control_features = np.stack(model_features), np.stack(control_features)

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    chosen, nested, per_level = _nested_f1(model_features, y, splits, model)
    c_chosen, c_nested, per_level_control = _nested_f1(control_features, y, splits, model)
    fixed, c_fixed = per_level[fixed_index].tolist(), per_level_control[fixed_index].tolist()
    curve = pd.DataFrame(
        {
            "threshold": levels,
            "f1": per_level.mean(1),
            "f1_std": per_level.std(1),
            "retained_area": areas,
            "control_f1": per_level_control.mean(1),
            "control_f1_std": per_level_control.std(1),
        }
    )

    def summary(scores: list[float]) -> dict:
        return {"f1": float(np.mean(scores)), "f1_std": float(np.std(scores)), "per_fold": [float(s) for s in scores]}

    return {
        "unit": "macro F1 on held-out subjects, mean and sd over outer subject-grouped folds",
        "folds": len(splits),
        "n_subjects": int(len(np.unique(g))),
        "n_maps": int(len(y)),
        "nested": {**summary(nested), "chosen_thresholds": [float(levels[i]) for i in chosen]},
        "fixed": {"threshold": float(fixed_threshold), **summary(fixed)},
        "control": {
            "nested": {**summary(c_nested), "chosen_thresholds": [float(levels[i]) for i in c_chosen]},
            "fixed": summary(c_fixed),
        },
        "curve": curve,
    }


# --------------------------------------------------------------------------- model maps beside trivial maps
#: attribution maps of the model, scored against the planted mask (high score = lesion)
MODEL_MAPS = ("evidence", "low_likelihood")
#: maps that need no model: what the image gives by itself, and chance
TRIVIAL_MAPS = ("intensity_high", "intensity_low", "difference_from_other_class", "random_region")


def other_class_means(images: np.ndarray, labels: np.ndarray, subjects: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For each slice, the mean over the other classes of each class's mean image, taken from
    other subjects' mapped slices at the same offset (any offset where that class has none
    there); NaN where another class has no slice from another subject at all. The reference a
    radiologist would subtract: what the other diagnosis looks like here, never this subject."""
    out = np.full(images.shape, np.nan)
    for i in range(len(images)):
        means = []
        for k in np.unique(labels):
            if k == labels[i]:
                continue
            pool = (labels == k) & (subjects != subjects[i])
            here = pool & (offsets == offsets[i])
            pick = here if here.any() else pool
            if not pick.any():
                break
            means.append(images[pick].mean(axis=0))
        else:
            if means:
                out[i] = np.mean(means, axis=0)
    return out


def groundtruth_scores(
    own: np.ndarray,
    evidence: np.ndarray,
    images: np.ndarray,
    reference: np.ndarray,
    truth: np.ndarray,
    brain: np.ndarray,
    subjects: np.ndarray,
    seed: int,
) -> tuple[dict, pd.DataFrame]:
    """Pixel AUC of each model map and each trivial map against the planted mask: per slice
    (:func:`slice_aucs`), averaged per subject, then mean and sd over subjects. A model
    map "beats" a subject when its AUC there exceeds every trivial map's; the fraction of
    subjects where it does is what says the model finds something the image does not show
    by itself. All inputs (n, H, W) for the scored slices; ``reference`` may be NaN where no
    other-class mean exists (that slice is left out of that map only). Returns the summary
    (JSON-ready) and the per-slice AUCs (one column per map, rows in input order)."""
    inside = brain > 0
    random = random_regions(truth[:, inside].sum(axis=1), inside, seed)
    difference = np.abs(images - reference)
    has_reference = np.isfinite(difference[:, inside]).all(axis=1)
    difference_auc = np.full(len(images), np.nan)
    if has_reference.any():
        difference_auc[has_reference] = slice_aucs(difference[has_reference], truth[has_reference], inside)
    per_slice = {
        "evidence": slice_aucs(evidence, truth, inside),
        "low_likelihood": slice_aucs(-own, truth, inside),
        "intensity_high": slice_aucs(images, truth, inside),
        "intensity_low": slice_aucs(-images, truth, inside),
        "difference_from_other_class": difference_auc,
        "random_region": slice_aucs(random.astype(float), truth, inside),
    }
    per_subject = pd.DataFrame({name: subject_means(v, subjects) for name, v in per_slice.items()})
    trivial = [name for name in TRIVIAL_MAPS if per_subject[name].notna().any()]
    scores: dict[str, dict] = {}
    for name in per_slice:
        column = per_subject[name].dropna()
        scores[name] = {
            "kind": "model" if name in MODEL_MAPS else "trivial",
            "mean": float(column.mean()) if len(column) else None,
            "sd": float(column.std(ddof=1)) if len(column) > 1 else None,
            "n_subjects": int(len(column)),
        }
        if name in MODEL_MAPS:
            rivals = per_subject[trivial].max(axis=1)
            compared = per_subject[name].notna() & rivals.notna()
            scores[name]["beats_every_trivial_fraction"] = (
                float((per_subject[name][compared] > rivals[compared]).mean()) if compared.any() else None
            )
            scores[name]["best_trivial_mean"] = float(per_subject[trivial].mean().max()) if trivial else None
    summary = {
        "unit": "pixel ROC AUC against the planted mask inside the brain, per slice, averaged per subject; mean and sd over subjects",
        "n_subjects": int(len(per_subject)),
        "scores": scores,
        "per_subject": per_subject.reset_index(names="subject").to_dict(orient="records"),
    }
    return summary, pd.DataFrame(per_slice)
