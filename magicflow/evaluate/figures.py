"""Evaluation figures as PNG files (the report embeds them; people look at these first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from magicflow.io import atomic_path
from magicflow.plotting import pyplot


def _save(fig, path: Path, dpi: int = 90) -> Path:
    plt = pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def confusion_figure(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    """Counts with row-normalised shading: the diagonal reads as per-class recall."""
    plt = pyplot()
    k = len(classes)
    size = 2.2 + 0.7 * k
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    rows = matrix.sum(1, keepdims=True)
    shade = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    shown = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="white" if shade[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(k), classes, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test folds pooled)")
    fig.colorbar(shown, ax=ax, fraction=0.046, label="fraction of true class")
    return _save(fig, path)


def reliability_figure(bins: pd.DataFrame, ece: float, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    filled = bins[bins["count"] > 0]
    centres = (bins["lower"] + bins["upper"]) / 2
    ax.bar(
        centres[bins["count"] > 0],
        filled["accuracy"],
        width=(bins["upper"] - bins["lower"]).iloc[0] * 0.9,
        color="C0",
        alpha=0.7,
        label="accuracy in bin",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot(filled["confidence"], filled["accuracy"], "o", color="C3", ms=4, label="mean confidence")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max posterior)", ylabel="accuracy", title=f"reliability, ECE {ece:.3f}")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def rejection_figure(curve: pd.DataFrame, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot(curve["rejected_fraction"], curve["accuracy"], "o-", ms=3)
    ax.set(
        xlabel="fraction rejected (least confident first)",
        ylabel="accuracy of the rest",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="accuracy-rejection curve",
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def threshold_figure(table: pd.DataFrame, path: Path) -> Path:
    """F1 of the ROI-feature classifier and the retained area against the threshold (paper's
    Figure 3), beside random regions of the same area when the table has ``control_f1``.
    A curve, not a selection: its maximum is chosen on the folds it is scored on."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    ax.errorbar(
        table["threshold"],
        table["f1"],
        yerr=table.get("f1_std"),
        fmt="o-",
        ms=3,
        capsize=2,
        color="C0",
        label="macro F1, map ROI (subject-grouped CV)" if "control_f1" in table else "macro F1 (CV)",
    )
    if "control_f1" in table:
        ax.plot(table["threshold"], table["control_f1"], "^:", ms=3, color="0.4", label="random region, same area")
    ax.set(xlabel="threshold on normalised map", ylabel="macro F1", ylim=(0, 1.02))
    twin = ax.twinx()
    twin.plot(table["threshold"], table["retained_area"], "s--", ms=3, color="C1", label="retained area")
    twin.set(ylabel="fraction of brain retained", ylim=(0, 1.02))
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="lower right")
    ax.set_title(
        "attribution ROIs: F1 on held-out subjects"
        if "control_f1" in table
        else "attribution ROIs: classification from ROI intensity features"
    )
    return _save(fig, path)


def real_vs_generated_figure(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], path: Path, per_side: int = 4) -> Path:
    """A row per class: real held-out slices on the left, generated ones on the right."""
    plt = pyplot()
    classes = list(fake)
    fig, axes = plt.subplots(len(classes), 2 * per_side, figsize=(1.5 * 2 * per_side, 1.6 * len(classes) + 0.5), squeeze=False)
    for row, name in enumerate(classes):
        for col in range(2 * per_side):
            ax = axes[row, col]
            ax.axis("off")
            source = real.get(name, np.zeros((0, 1, 1, 1))) if col < per_side else fake[name]
            i = col % per_side
            if i < len(source):
                ax.imshow(source[i, 0], cmap="gray", vmin=0, vmax=1)
            if col == 0:
                ax.set_title(f"{name}: real", fontsize=7, loc="left")
            if col == per_side:
                ax.set_title("generated", fontsize=7, loc="left")
    return _save(fig, path)


def memorisation_figure(
    ratios: np.ndarray,
    pairs: list[tuple[np.ndarray, np.ndarray, float]],
    path: Path,
    null_ratios: np.ndarray | None = None,
) -> Path:
    """Histogram of d(nearest training) / d(nearest held-out) and the closest generated-training
    pairs; with ``null_ratios`` the same ratio of real held-out slices (the no-copying reference)
    overlaid, and its 5th percentile marked, instead of reading the ratio against 1 alone."""
    plt = pyplot()
    n = len(pairs)
    fig = plt.figure(figsize=(4 + 1.6 * max(n, 1), 3.6))
    grid = fig.add_gridspec(2, 1 + max(n, 1), width_ratios=[2.4] + [1] * max(n, 1))
    ax = fig.add_subplot(grid[:, 0])
    finite = [np.asarray(v, float)[np.isfinite(v)] for v in (ratios, null_ratios) if v is not None]
    edges = np.histogram_bin_edges(np.concatenate(finite) if finite else np.zeros(1), bins=20)
    ax.hist(np.asarray(ratios, float)[np.isfinite(ratios)], bins=edges, color="C0", alpha=0.7, density=True, label="generated")
    if null_ratios is not None and np.isfinite(null_ratios).any():
        null = np.asarray(null_ratios, float)[np.isfinite(null_ratios)]
        ax.hist(null, bins=edges, color="C1", alpha=0.5, density=True, label="real held-out (null)")
        ax.axvline(float(np.quantile(null, 0.05)), color="C1", ls="--", lw=1, label="null 5th percentile")
        ax.legend(fontsize=7)
    ax.axvline(1.0, color="k", ls=":", lw=1)
    ax.set(xlabel="d(nearest train) / d(nearest held-out)", ylabel="density", title="memorisation check")
    for j, (fake, train, ratio) in enumerate(pairs):
        for r, (image, label) in enumerate(((fake, f"generated ({ratio:.2f})"), (train, "nearest training"))):
            sub = fig.add_subplot(grid[r, 1 + j])
            sub.imshow(image, cmap="gray", vmin=0, vmax=1)
            sub.set_title(label, fontsize=7)
            sub.axis("off")
    return _save(fig, path)


def groundtruth_figure(
    image: np.ndarray,
    evidence: np.ndarray,
    truth: np.ndarray,
    brain: np.ndarray,
    title: str,
    path: Path,
    difference: np.ndarray | None = None,
) -> Path:
    """One slice: the image, the evidence map with the true uptake region outlined and, when
    given, |image - the other class's mean image|, the model-free map the evidence must beat."""
    plt = pyplot()
    panels = 3 if difference is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image", fontsize=8)
    values = evidence[brain > 0] if brain.any() else evidence.ravel()
    bound = float(np.percentile(np.abs(values - np.median(values)), 98)) or 1.0
    axes[1].imshow(image, cmap="gray", vmin=0, vmax=1)
    shown = axes[1].imshow(
        np.ma.masked_where(brain == 0, evidence - np.median(values)), cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=0.75
    )
    axes[1].set_title("evidence for the true class; green: true uptake", fontsize=8)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="nats per pixel")
    if difference is not None:
        finite = np.nan_to_num(difference, nan=0.0)
        top = float(np.percentile(finite[brain > 0], 98)) if brain.any() else float(finite.max())
        trivial = axes[2].imshow(np.ma.masked_where(brain == 0, finite), cmap="magma", vmin=0, vmax=top or 1.0)
        axes[2].set_title("|image - other class mean| (no model)", fontsize=8)
        fig.colorbar(trivial, ax=axes[2], fraction=0.046, label="intensity")
    for ax in axes[1:]:
        if truth.any():
            ax.contour(truth.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
