"""Classification metrics of paper Table 3, plus calibration and accuracy-rejection.

Table 3 reports accuracy, balanced accuracy, AUC and macro precision, recall and F1 as mean
+/- std over five folds; :func:`classification_metrics` gives one fold's row and
:func:`fold_summary` the table. Calibration (ECE and a reliability table) and the
accuracy-rejection curve (MedSymmFlow, Section 5.2: drop the least confident predictions and
watch accuracy) check whether the posterior confidences of
:mod:`magicflow.experiments.posterior` can be trusted, which a likelihood classifier with a
fitted temperature must show rather than assume. :func:`chance_test` says how likely the
pooled balanced accuracy is under shuffled labels, for the small test sets of a demo."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from magicflow.errors import InputError

PROBA_TOLERANCE = 1e-4
"""How far a posterior row may sum from 1 (float32 softmax output) before it is refused."""


def _labels(true: Any, k: int, name: str = "true") -> np.ndarray:
    """Integer class indices in [0, k) as a 1-D array."""
    labels = np.asarray(true)
    if labels.ndim != 1:
        raise InputError(f"{name}: expected class indices of shape (N,), got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise InputError(f"{name}: expected integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(int)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise InputError(f"{name}: class indices must lie in [0, {k}), got range [{labels.min()}, {labels.max()}]")
    return labels


def _labels_and_proba(true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked (labels, posteriors): proba is (N, K) with K >= 2, rows of probabilities."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InputError(f"proba: expected posteriors of shape (N, K) with K >= 2, got shape {p.shape}")
    if len(p) == 0:
        raise InputError("proba: no predictions to evaluate")
    if not np.isfinite(p).all() or p.min() < 0:
        raise InputError("proba: posteriors must be finite and non-negative")
    worst = float(np.abs(p.sum(axis=1) - 1.0).max())
    if worst > PROBA_TOLERANCE:
        raise InputError(f"proba: rows must sum to 1 (posteriors, not log-likelihoods); worst row is off by {worst:.3g}")
    labels = _labels(true, p.shape[1])
    if len(labels) != len(p):
        raise InputError(f"true has {len(labels)} labels but proba has {len(p)} rows")
    return labels, p


def classification_metrics(true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """One fold's Table 3 row from true class indices and posteriors (prediction = argmax).

    - balanced accuracy: mean recall over the classes present in ``true`` (sklearn).
    - macro AUC: one-vs-rest, unweighted mean over classes; for K = 2 the plain binary AUC of
      the second class's posterior. Undefined when a class is absent from ``true`` (no
      positives for its one-vs-rest curve): NaN, with the reason in ``notes``.
    - macro precision/recall/F1: over the classes that occur in ``true`` or in the predictions
      (sklearn's default), with 0 for a class never predicted (zero_division=0); a class absent
      from both would otherwise pull the mean down by a meaningless 0.
    - per-class recall for every class, NaN where the class is absent from ``true``."""
    labels, p = _labels_and_proba(true, proba)
    k = p.shape[1]
    if len(classes) != k:
        raise InputError(f"classes: {len(classes)} names given for {k} posterior columns")
    pred = p.argmax(axis=1)
    notes: list[str] = []
    absent = [classes[c] for c in range(k) if not (labels == c).any()]
    if absent:
        auc = float("nan")
        notes.append(
            f"macro_auc undefined: class(es) {absent} absent from the true labels, so their one-vs-rest curves have no positives"
        )
    elif k == 2:
        auc = float(roc_auc_score(labels, p[:, 1]))
    else:
        auc = float(roc_auc_score(labels, p, multi_class="ovr", average="macro", labels=list(range(k))))
    precision, recall, f1, _ = precision_recall_fscore_support(labels, pred, average="macro", zero_division=0)
    counts = confusion(labels, pred, k)
    support = counts.sum(axis=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(labels, pred))
    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "balanced_accuracy": balanced,
        "macro_auc": auc,
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "per_class_recall": {
            name: float(counts[c, c] / support[c]) if support[c] else float("nan") for c, name in enumerate(classes)
        },
        "n": int(len(labels)),
        "notes": notes,
    }


def chance_test(true: np.ndarray, pred: np.ndarray, k: int, resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Is the balanced accuracy above chance? One-sided label-permutation test (scipy).

    The predictions are shuffled against the true labels; the p-value is the share of shufflings
    that score at least the observed balanced accuracy (exact when there are fewer distinct
    shufflings than ``resamples``). Unlike a binomial test against 1/K it needs no assumption
    about class balance or the classifier's label frequencies. Slices are treated as independent:
    with several slices per subject the p-value is optimistic."""
    from scipy.stats import permutation_test

    labels = _labels(true, k)
    predicted = _labels(pred, k, "pred")
    if len(labels) != len(predicted) or len(labels) < 2:
        raise InputError(
            f"chance_test: needs at least 2 predictions with one true label each, got {len(predicted)} and {len(labels)}"
        )
    present = np.unique(labels)
    support = np.array([(labels == c).sum() for c in present])

    def balanced(shuffled: np.ndarray, axis: int = -1) -> np.ndarray:
        shuffled = np.moveaxis(shuffled, axis, -1)
        hits = np.stack([((shuffled == c) & (labels == c)).sum(-1) for c in present], axis=-1)
        return (hits / support).mean(-1)

    result = permutation_test(
        (predicted,),
        balanced,
        permutation_type="pairings",
        n_resamples=resamples,
        alternative="greater",
        random_state=seed,
        vectorized=True,
    )
    return {
        "balanced_accuracy": float(result.statistic),
        "chance_level": 1.0 / len(present),
        "p_value": float(result.pvalue),
        "resamples": resamples,
        "n": int(len(labels)),
    }


def fold_summary(per_fold: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 3 layout: one row per fold (``fold-<k>``, k from the dict's ``fold`` key or its
    position), then ``mean`` and ``std`` (sample std, ddof=1, NaN for one fold) for every
    scalar metric; nested values (per-class recall, notes) are left out. NaN folds are
    skipped by the mean and std, so say in the report how many folds a value rests on."""
    if not per_fold:
        raise InputError("fold_summary: no folds given")
    columns = [
        key
        for key, value in per_fold[0].items()
        if key != "fold" and isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    ]
    names = [str(row.get("fold", i)) for i, row in enumerate(per_fold)]
    index = [name if name.startswith("fold-") else f"fold-{name}" for name in names]
    table = pd.DataFrame([{key: row.get(key, np.nan) for key in columns} for row in per_fold], index=index, dtype=float)
    summary = pd.concat([table, table.mean().to_frame("mean").T, table.std(ddof=1).to_frame("std").T])
    summary.index.name = "fold"
    return summary


def confusion(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """k x k counts, rows = true class, columns = predicted class, every class present even
    when a fold never sees it (so folds can be summed)."""
    if k < 1:
        raise InputError(f"confusion: k must be >= 1, got {k}")
    t, p = _labels(true, k, "true"), _labels(pred, k, "pred")
    if len(t) != len(p):
        raise InputError(f"confusion: {len(t)} true labels but {len(p)} predictions")
    return confusion_matrix(t, p, labels=list(range(k)))


def calibration(true: np.ndarray, proba: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error of the top-class confidence and its reliability table.

    Confidences (max posterior) fall into ``bins`` equal-width bins [lower, upper), the last
    one closed so that a confidence of exactly 1 counts in it; ECE = sum over bins of
    (count / N) |accuracy - mean confidence|. This equals torchmetrics'
    ``multiclass_calibration_error(norm="l1")`` except that torchmetrics gives confidences of
    exactly 1.0 a bin of their own, which matters here: tempered softmaxes of
    log-likelihoods hundreds of nats apart do reach 1.0. Empty bins have count 0 and NaN
    confidence and accuracy."""
    if bins < 1:
        raise InputError(f"calibration: bins must be >= 1, got {bins}")
    labels, p = _labels_and_proba(true, proba)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    gaps = np.where(count > 0, np.abs(accuracy - mean_confidence), 0.0)
    table = pd.DataFrame(
        {"lower": edges[:-1], "upper": edges[1:], "confidence": mean_confidence, "accuracy": accuracy, "count": count}
    )
    return {"ece": float((count / len(labels) * gaps).sum()), "bins": table}


def rejection_curve(true: np.ndarray, proba: np.ndarray, steps: int = 21) -> pd.DataFrame:
    """Accuracy-rejection curve: reject the least confident predictions (lowest max
    posterior) first and report the accuracy of the rest.

    ``steps`` target fractions run evenly from 0 to 1; each keeps N - round(fraction N)
    predictions but never fewer than one, so the last point is the single most confident
    prediction and ``rejected_fraction`` is the fraction actually rejected. Ties in
    confidence keep their input order (stable sort), so the curve is reproducible. A model
    whose confidence means something gives a curve that rises with rejection."""
    if steps < 2:
        raise InputError(f"rejection_curve: steps must be >= 2, got {steps}")
    labels, p = _labels_and_proba(true, proba)
    n = len(labels)
    order = np.argsort(-p.max(axis=1), kind="stable")  # most confident first
    correct = (p.argmax(axis=1) == labels)[order].astype(float)
    hits = np.cumsum(correct)
    retained = np.maximum(n - np.round(np.linspace(0.0, 1.0, steps) * n).astype(int), 1)
    return pd.DataFrame(
        {"rejected_fraction": 1.0 - retained / n, "retained": retained, "accuracy": hits[retained - 1] / retained}
    )


#: the paper's Table 3 columns, in its order
TABLE3_METRICS = ("accuracy", "balanced_accuracy", "macro_auc", "macro_precision", "macro_recall", "macro_f1")
PAIRED_TEST = (
    "paired t-test (scipy.stats.ttest_rel, two-sided) of MAGIC-Flow against each baseline on the per-fold balanced "
    "accuracy. Not Wilcoxon's signed-rank test: with 5 folds its exact two-sided p-value cannot fall below 0.0625, "
    "so it could never show a difference at 0.05 (its p-value is given beside). The folds share training subjects, "
    "so both p-values are optimistic; n/a with fewer than 2 folds."
)


def paired_fold_test(flow: list[float], baseline: list[float]) -> dict[str, Any]:
    """MAGIC-Flow against one baseline over the folds both ran (values in fold order)."""
    from scipy.stats import ttest_rel, wilcoxon

    a, b = np.asarray(flow, float), np.asarray(baseline, float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out: dict[str, Any] = {"folds": int(len(a)), "mean_difference": float((a - b).mean()) if len(a) else float("nan")}
    if len(a) < 2:
        return {**out, "t": None, "p_ttest": None, "p_wilcoxon": None, "note": "n/a: fewer than 2 folds"}
    if np.allclose(a - b, 0):
        return {**out, "t": 0.0, "p_ttest": 1.0, "p_wilcoxon": 1.0, "note": "identical on every fold"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = ttest_rel(a, b)
        try:
            w = float(wilcoxon(a, b).pvalue)
        except ValueError:
            w = float("nan")
    return {**out, "t": float(t.statistic), "p_ttest": float(t.pvalue), "p_wilcoxon": w, "note": ""}


def model_comparison(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's Table 3 with every model side by side: ``models`` in row order, MAGIC-Flow
    first, each ``{"id", "model", "per_fold": [classification_metrics rows with "fold"], ...}``.

    Per model the mean and sample std (ddof=1) over folds of each :data:`TABLE3_METRICS`
    column (:func:`fold_summary`); ``best`` names the model(s) with the highest mean per column;
    ``tests`` pairs MAGIC-Flow with each baseline on the folds both ran (:func:`paired_fold_test`)."""
    if not models:
        raise InputError("model_comparison: no models given")
    rows = []
    for model in models:
        summary = fold_summary(model["per_fold"])
        mean, std = summary.loc["mean"], summary.loc["std"]
        rows.append(
            {
                **{k: v for k, v in model.items() if k != "per_fold"},
                "folds": len(model["per_fold"]),
                "mean": {m: float(mean.get(m, np.nan)) for m in TABLE3_METRICS},
                "std": {m: float(std.get(m, np.nan)) for m in TABLE3_METRICS},
                "per_fold": [{"fold": r["fold"], **{m: r.get(m) for m in TABLE3_METRICS}} for r in model["per_fold"]],
            }
        )
    best = {}
    for metric in TABLE3_METRICS:
        values = np.array([r["mean"][metric] for r in rows], float)
        best[metric] = [rows[i]["id"] for i in np.flatnonzero(values == np.nanmax(values))] if np.isfinite(values).any() else []
    flow = {r["fold"]: r["balanced_accuracy"] for r in rows[0]["per_fold"]}
    tests = []
    for row in rows[1:]:
        other = {r["fold"]: r["balanced_accuracy"] for r in row["per_fold"]}
        folds = [f for f in flow if f in other]
        tests.append({"baseline": row["id"], **paired_fold_test([flow[f] for f in folds], [other[f] for f in folds])})
    return {"metrics": list(TABLE3_METRICS), "models": rows, "best": best, "tests": tests, "test": PAIRED_TEST}
