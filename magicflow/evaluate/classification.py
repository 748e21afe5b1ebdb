"""Classification metrics of paper Table 3, plus calibration and accuracy-rejection.

Table 3 reports accuracy, balanced accuracy, AUC and macro precision, recall and F1 as mean
+/- std over five folds; :func:`classification_metrics` gives one fold's row and
:func:`fold_summary` the table. Calibration (ECE and a reliability table) and the
accuracy-rejection curve (MedSymmFlow, Section 5.2: drop the least confident predictions and
watch accuracy) check whether the posterior confidences of
:mod:`magicflow.experiments.posterior` can be trusted, which a likelihood classifier with a
fitted temperature must show rather than assume. :func:`chance_test` says how likely the
pooled balanced accuracy is under shuffled labels, for the small test sets of a demo.

Given log-scores (``scores``: log-likelihood plus log prior per class, any constant per row),
the prediction is their argmax and every ranking (AUC, rejection order) comes from
:func:`margins` between them rather than from posteriors: a posterior near 1 rounds or
saturates to exactly 1, and images tied at 1 would be ordered by chance or by file order.
Evaluation passes one row per image (:func:`magicflow.evaluate.inputs.image_scores`)."""

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


def _labels_and_scores(true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked (labels, log-scores): scores is (N, K) with K >= 2, finite, one row per label."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise InputError(f"scores: expected log-scores of shape (N, K) with K >= 2, got shape {s.shape}")
    if len(s) == 0:
        raise InputError("scores: no predictions to evaluate")
    if not np.isfinite(s).all():
        raise InputError("scores: log-scores must be finite")
    labels = _labels(true, s.shape[1])
    if len(labels) != len(s):
        raise InputError(f"true has {len(labels)} labels but scores has {len(s)} rows")
    return labels, s


def margins(scores: np.ndarray) -> np.ndarray:
    """(N, K): each class's log-score minus the best other class's. Positive only for the
    predicted class, where it is the lead over the runner-up (the confidence that orders
    rejection); class k's column ranks images for its one-vs-rest AUC. Temperature-free: the
    order of the tempered log-odds as T -> 0, and for K = 2 the same order at every T."""
    s = np.asarray(scores, dtype=np.float64)
    top2 = np.sort(s, axis=1)[:, -2:]
    best_other = np.where(s >= top2[:, [1]], top2[:, [0]], top2[:, [1]])
    return s - best_other


def _macro_auc_from_margins(labels: np.ndarray, scores: np.ndarray) -> float:
    """Unweighted mean over classes of the one-vs-rest AUC of the class's margin (rank-based,
    ties count one half); for K = 2 the binary AUC of the second class's margin."""
    m = margins(scores)
    if scores.shape[1] == 2:
        return float(roc_auc_score(labels == 1, m[:, 1]))
    return float(np.mean([roc_auc_score(labels == c, m[:, c]) for c in range(scores.shape[1])]))


def classification_metrics(
    true: np.ndarray, proba: np.ndarray | None, classes: list[str], scores: np.ndarray | None = None
) -> dict[str, Any]:
    """One fold's Table 3 row from true class indices and posteriors or, when ``scores`` (log
    scores, (N, K)) are given, from those alone: prediction = argmax, AUC from :func:`margins`.

    - balanced accuracy: mean recall over the classes present in ``true`` (sklearn).
    - macro AUC: one-vs-rest, unweighted mean over classes; for K = 2 the plain binary AUC of
      the second class's posterior. Undefined when a class is absent from ``true`` (no
      positives for its one-vs-rest curve): NaN, with the reason in ``notes``.
    - macro precision/recall/F1: over the classes that occur in ``true`` or in the predictions
      (sklearn's default), with 0 for a class never predicted (zero_division=0); a class absent
      from both would otherwise pull the mean down by a meaningless 0.
    - per-class recall for every class, NaN where the class is absent from ``true``."""
    if scores is not None:
        labels, p = _labels_and_scores(true, scores)
    else:
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
    elif scores is not None:
        auc = _macro_auc_from_margins(labels, p)
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


def chance_test(
    true: np.ndarray, pred: np.ndarray, k: int, resamples: int = 10_000, seed: int = 0, groups: np.ndarray | None = None
) -> dict[str, Any]:
    """Is the balanced accuracy above chance? One-sided label-permutation test (scipy).

    The true labels are shuffled against the predictions; the p-value is the share of
    shufflings that score at least the observed balanced accuracy (exact when there are fewer
    distinct shufflings than ``resamples``). Unlike a binomial test against 1/K it needs no
    assumption about class balance or the classifier's label frequencies.

    ``groups`` (one id per prediction, e.g. the subject) makes the group the exchangeable
    unit: each group's label moves as one (a group whose predictions carry several true
    labels, a subject who converted between sessions, is one unit per label), so several
    images of one subject do not count as independent evidence. Without it every prediction
    is its own unit."""
    from scipy.stats import permutation_test

    labels = _labels(true, k)
    predicted = _labels(pred, k, "pred")
    if len(labels) != len(predicted) or len(labels) < 2:
        raise InputError(
            f"chance_test: needs at least 2 predictions with one true label each, got {len(predicted)} and {len(labels)}"
        )
    if groups is None:
        unit = np.arange(len(labels))
    else:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise InputError(f"chance_test: {len(groups)} group ids for {len(labels)} predictions")
        unit = pd.factorize(pd.Series(groups.astype(str)) + "\x00" + pd.Series(labels.astype(str)))[0]
    unit_labels = np.zeros(unit.max() + 1, dtype=int)
    unit_labels[unit] = labels
    present = np.unique(labels)

    def balanced(shuffled_units: np.ndarray, axis: int = -1) -> np.ndarray:
        shuffled = np.moveaxis(shuffled_units, axis, -1)[..., unit]  # each prediction gets its unit's label
        hits = np.stack([((shuffled == c) & (predicted == c)).sum(-1) for c in present], axis=-1)
        support = np.stack([(shuffled == c).sum(-1) for c in present], axis=-1)
        return (hits / np.maximum(support, 1)).mean(-1)

    result = permutation_test(
        (unit_labels,),
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
        "units": int(len(unit_labels)),
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


def rejection_curve(
    true: np.ndarray, proba: np.ndarray | None, steps: int = 21, scores: np.ndarray | None = None
) -> pd.DataFrame:
    """Accuracy-rejection curve: reject the least confident predictions first and report the
    accuracy of the rest. Confidence is the predicted class's lead over the runner-up in
    ``scores`` (:func:`margins`, never saturated) when they are given, else the max posterior.

    ``steps`` target fractions run evenly from 0 to 1; each keeps N - round(fraction N)
    predictions but never fewer than one, so the last point is the single most confident
    prediction and ``rejected_fraction`` is the fraction actually rejected. Predictions tied
    in confidence are taken together: where a cut falls inside a tie, the kept part of it
    counts its share of the tie's correct predictions (the mean over orders of the tie), so
    the curve depends neither on file order nor on a tie-break. A model whose confidence
    means something gives a curve that rises with rejection."""
    if steps < 2:
        raise InputError(f"rejection_curve: steps must be >= 2, got {steps}")
    if scores is not None:
        labels, s = _labels_and_scores(true, scores)
        confidence, pred = margins(s).max(axis=1), s.argmax(axis=1)
    else:
        labels, p = _labels_and_proba(true, proba)
        confidence, pred = p.max(axis=1), p.argmax(axis=1)
    n = len(labels)
    order = np.argsort(-confidence, kind="stable")  # most confident first
    key = -confidence[order]
    hits = np.concatenate([[0.0], np.cumsum((pred == labels)[order])])
    retained = np.maximum(n - np.round(np.linspace(0.0, 1.0, steps) * n).astype(int), 1)
    start = np.searchsorted(key, key[retained - 1], side="left")  # the tie holding the last kept prediction
    end = np.searchsorted(key, key[retained - 1], side="right")
    kept = hits[start] + (retained - start) * (hits[end] - hits[start]) / (end - start)
    return pd.DataFrame({"rejected_fraction": 1.0 - retained / n, "retained": retained, "accuracy": kept / retained})


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
