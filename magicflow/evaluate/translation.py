"""MRI-to-PET translation metrics and figures (DUAL-GLOW, Tables 1-2).

Images are 2-D slices in [0, 1], arrays (N, 1, S, S) (or (N, S, S)); a brain mask is (S, S) or
(1, S, S), 0/1. Every metric is computed inside the mask only:

- ``mae``: mean |generated - real| over the mask's pixels;
- ``correlation``: Pearson's r over the mask's pixels; NaN where either image is constant inside
  the mask (r is undefined there);
- ``psnr``: 10 log10(1 / MSE) in dB (data range 1), the MSE over the mask's pixels; ``inf`` for
  identical images (MSE 0);
- ``ssim``: scikit-image's ``structural_similarity`` (data_range 1, Gaussian weights, sigma 1.5,
  ``use_sample_covariance=False``, the 11 x 11 window of Wang et al. 2004) as a full SSIM map,
  averaged over the mask's pixels that lie at least half a window from the image edge. Those
  border pixels are left out exactly as scikit-image's own mean SSIM leaves them out (their
  windows reach past the image), so with an all-ones mask the value is scikit-image's. Images
  smaller than 11 pixels a side get the largest odd window that fits (at least 3) and the sigma
  whose truncated Gaussian is that wide, ``(window - 1) / 7`` (scikit-image truncates at 3.5 sigma).

:func:`summarise` reduces the per-image values to mean, std and n, leaving NaN and inf out (and
counting them). :func:`adcn_check` is Table 2's question (does generated PET carry the disease
signal?) asked of an RBF SVM trained on real PET. Figures go through
:func:`magicflow.plotting.pyplot` and are written atomically.

Slices are shown as magicflow.slices makes them (superior at row 0). numpy, pandas, scikit-image and
scikit-learn only: no torch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magicflow.errors import InputError
from magicflow.io import atomic_path
from magicflow.plotting import pyplot

METRICS = ("mae", "correlation", "psnr", "ssim")
#: scikit-image's Gaussian SSIM window: sigma 1.5 truncated at 3.5 sigma is 11 pixels wide
SSIM_SIGMA, SSIM_WINDOW, SSIM_TRUNCATE = 1.5, 11, 3.5


# --------------------------------------------------------------------------- inputs
def _images(name: str, x: Any) -> np.ndarray:
    """(N, S, S) float64 from (N, 1, S, S) or (N, S, S)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise InputError(f"{name} must be images (N, 1, S, S) or (N, S, S), got shape {np.shape(x)}")
    return a


def _mask(x: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """A boolean (S, S) mask from (S, S) or (1, S, S) that fits images of ``shape`` (H, W)."""
    m = np.asarray(x)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(shape):
        raise InputError(f"{name} has shape {np.shape(x)}, the images are {tuple(shape)} (expected (S, S) or (1, S, S))")
    m = m > 0.5 if m.dtype.kind == "f" else m.astype(bool)
    if not m.any():
        raise InputError(f"{name} is empty (no pixel set in its {tuple(shape)} pixels)")
    return m


def _pair(real: Any, generated: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g = _images("real", real), _images("generated", generated)
    if r.shape != g.shape:
        raise InputError(f"real and generated images differ in shape: real {np.shape(real)}, generated {np.shape(generated)}")
    return r, g, _mask(mask, r.shape[1:])


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """(window, sigma) for SSIM on an image of this size: 11 and 1.5, or for an image smaller than
    11 pixels a side the largest odd window that fits and sigma ``(window - 1) / 7``."""
    side = min(height, width)
    if side >= SSIM_WINDOW:
        return SSIM_WINDOW, SSIM_SIGMA
    if side < 3:
        raise InputError(f"SSIM needs images of at least 3 x 3 pixels, got {height} x {width}")
    window = side if side % 2 else side - 1
    return window, (window - 1) / (2 * SSIM_TRUNCATE)


# --------------------------------------------------------------------------- metrics
def image_metrics(real: Any, generated: Any, mask: Any) -> dict[str, np.ndarray]:
    """Per-image ``mae``, ``correlation``, ``psnr`` and ``ssim`` (each an (N,) float64 array),
    inside ``mask`` (see the module docstring). ``correlation`` is NaN for an image that is
    constant inside the mask; ``psnr`` is inf for identical images. Shapes that do not match or an
    empty mask are an InputError naming the shapes."""
    from skimage.metrics import structural_similarity

    r, g, m = _pair(real, generated, mask)
    n, h, w = r.shape
    window, sigma = ssim_window(h, w) if n else (SSIM_WINDOW, SSIM_SIGMA)
    pad = (window - 1) // 2
    inner = np.zeros_like(m)
    inner[pad : h - pad, pad : w - pad] = True
    ssim_pixels = m & inner
    if n and not ssim_pixels.any():
        raise InputError(
            f"the mask has no pixel at least {pad} pixels from the edge of the {h} x {w} images: SSIM's window "
            f"({window} x {window}) does not fit inside the image anywhere in the mask"
        )
    rv, gv = r[:, m], g[:, m]  # (N, P) pixels inside the mask
    diff = gv - rv
    mae = np.abs(diff).mean(1)
    mse = (diff**2).mean(1)
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10 * np.log10(1.0 / np.where(mse > 0, mse, 1.0)), np.inf)
    rc, gc = rv - rv.mean(1, keepdims=True), gv - gv.mean(1, keepdims=True)
    denominator = np.sqrt((rc**2).sum(1) * (gc**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.where(denominator > 0, (rc * gc).sum(1) / np.where(denominator > 0, denominator, 1.0), np.nan)
    correlation = np.clip(correlation, -1.0, 1.0)
    ssim = np.empty(n)
    for i in range(n):
        _, full = structural_similarity(
            r[i],
            g[i],
            win_size=window,
            data_range=1.0,
            gaussian_weights=True,
            sigma=sigma,
            use_sample_covariance=False,
            full=True,
        )
        ssim[i] = full[ssim_pixels].mean()
    return {"mae": mae, "correlation": correlation, "psnr": psnr, "ssim": ssim}


def summarise(per_image: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per metric: ``mean``, ``std`` (sample std, ddof=1; NaN for fewer than two values), ``n`` (values
    used) and ``left_out`` (NaN or inf values not used: a constant image's correlation, identical
    images' PSNR)."""
    out = {}
    for name, values in per_image.items():
        v = np.asarray(values, dtype=np.float64).ravel()
        finite = v[np.isfinite(v)]
        out[name] = {
            "mean": float(finite.mean()) if len(finite) else float("nan"),
            "std": float(finite.std(ddof=1)) if len(finite) > 1 else float("nan"),
            "n": int(len(finite)),
            "left_out": int(len(v) - len(finite)),
        }
    return out


def regional_uptake(images: Any, regions: dict[str, Any]) -> pd.DataFrame:
    """Mean intensity of every image in every region mask: columns ``image`` (index into
    ``images``), ``region``, ``uptake``; images in order, regions in the dict's order. A region
    mask of another shape than the images, or an empty one, is an InputError naming the region."""
    x = _images("images", images)
    rows = []
    for name, region in regions.items():
        m = _mask(region, x.shape[1:], name=f"region {name!r}")
        values = x[:, m].mean(1)
        rows.append(pd.DataFrame({"image": np.arange(len(x)), "region": name, "uptake": values}))
    if not rows:
        return pd.DataFrame({"image": pd.Series(dtype=int), "region": pd.Series(dtype=str), "uptake": pd.Series(dtype=float)})
    return pd.concat(rows, ignore_index=True).sort_values(["image"], kind="stable").reset_index(drop=True)


def paired_uptake(real: Any, generated: Any, regions: dict[str, Any]) -> pd.DataFrame:
    """:func:`regional_uptake` of real and generated images side by side: columns ``image``,
    ``region``, ``real``, ``generated`` (what :func:`uptake_scatter_png` draws)."""
    r, g = _images("real", real), _images("generated", generated)
    if r.shape != g.shape:
        raise InputError(f"real and generated images differ in shape: real {np.shape(real)}, generated {np.shape(generated)}")
    table = regional_uptake(r, regions).rename(columns={"uptake": "real"})
    table["generated"] = regional_uptake(g, regions)["uptake"].to_numpy()
    return table


# --------------------------------------------------------------------------- AD/CN check
def _rates(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """accuracy, balanced accuracy (mean recall of the classes present), false negative rate
    (positives called negative / positives; NaN without positives), false positive rate
    (negatives called positive / negatives; NaN without negatives), n."""
    positives, negatives = true, ~true
    fnr = float((~predicted & positives).sum() / positives.sum()) if positives.any() else float("nan")
    fpr = float((predicted & negatives).sum() / negatives.sum()) if negatives.any() else float("nan")
    recalls = [1 - rate for rate in (fnr, fpr) if not math.isnan(rate)]
    return {
        "accuracy": float((true == predicted).mean()) if len(true) else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "false_negative_rate": fnr,
        "false_positive_rate": fpr,
        "n": int(len(true)),
    }


def adcn_check(
    train_real: Any,
    train_labels: Any,
    test_real: Any,
    test_generated: Any,
    test_labels: Any,
    mask: Any,
    positive: Any = "AD",
    seed: int = 0,
) -> dict:
    """DUAL-GLOW Table 2: is the disease signal of real PET still in the generated PET?

    An RBF SVM (``StandardScaler`` then ``SVC(kernel="rbf", gamma="scale", class_weight="balanced")``)
    is trained on the real training PET, a label ``== positive`` against all others, with the
    mask's pixels for features; it is then tested on the real and on the generated PET of the same
    test subjects. Returns ``{"real": ..., "generated": ...}``, each with ``accuracy``,
    ``balanced_accuracy``, ``false_negative_rate``, ``false_positive_rate`` (positive = ``positive``)
    and ``n``, plus ``agreement`` (share of test images the two get the same prediction),
    ``positive``, ``n_train`` and ``features``. Rates without a class to compute them on are NaN.

    (DUAL-GLOW's features are the mean intensities of the 116 AAL regions of 3-D volumes; on 2-D
    slices the mask's pixels stand in for them.)

    Training labels of fewer than two classes (all ``positive`` or none) cannot train it: the
    result is ``{"skipped": reason, "positive": ..., "n_train": ...}`` instead of an error."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x_train = _images("train_real", train_real)
    m = _mask(mask, x_train.shape[1:])
    real, generated, _ = _pair(test_real, test_generated, mask)
    if real.shape[1:] != x_train.shape[1:]:
        raise InputError(f"test images {np.shape(test_real)} and training images {np.shape(train_real)} differ in size")
    y_train = np.asarray(train_labels).ravel() == positive
    y_test = np.asarray(test_labels).ravel() == positive
    if len(y_train) != len(x_train):
        raise InputError(f"{len(x_train)} training images {np.shape(train_real)} but {len(y_train)} training labels")
    if len(y_test) != len(real):
        raise InputError(f"{len(real)} test images {np.shape(test_real)} but {len(y_test)} test labels")
    base = {"positive": positive, "n_train": int(len(y_train))}
    if len(np.unique(y_train)) < 2:
        reason = f"training labels hold {'only' if y_train.any() else 'no'} {positive!r} images: one class, nothing to separate"
        return {"skipped": reason, **base}
    model = Pipeline(
        [("scale", StandardScaler()), ("svm", SVC(kernel="rbf", gamma="scale", class_weight="balanced", random_state=seed))]
    )
    model.fit(x_train[:, m], y_train)
    on_real = model.predict(real[:, m]).astype(bool) if len(real) else np.zeros(0, bool)
    on_generated = model.predict(generated[:, m]).astype(bool) if len(real) else np.zeros(0, bool)
    return {
        "real": _rates(y_test, on_real),
        "generated": _rates(y_test, on_generated),
        "agreement": float((on_real == on_generated).mean()) if len(real) else float("nan"),
        "features": int(m.sum()),
        **base,
    }


# --------------------------------------------------------------------------- figures
def _slice(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise InputError(f"{name} must be one image (S, S) or (1, S, S), got shape {np.shape(x)}")
    return a


def _save(fig, path: str | Path, dpi: int = 100) -> Path:
    plt = pyplot()
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _metric_text(metrics: dict | None) -> str:
    if not metrics:
        return ""
    parts = []
    for key, value in metrics.items():
        parts.append(f"{key} {value:.4g}" if isinstance(value, (float, int, np.floating, np.integer)) else f"{key} {value}")
    return " | ".join(parts)


def triptych_png(
    path: str | Path, source: Any, real: Any, generated: Any, uncertainty: Any, title: str, metrics: dict | None = None
) -> Path:
    """Four panels: the T1 source, the real PET, the generated PET (all on [0, 1]) and the
    uncertainty (the std map over samples, with its own colour bar; ``None``: an empty panel).
    ``metrics`` (name -> value) are written under the title."""
    plt = pyplot()
    panels = [("T1 (source)", _slice("source", source)), ("real PET", _slice("real", real))]
    panels.append(("generated PET", _slice("generated", generated)))
    shapes = {p.shape for _, p in panels}
    std = None if uncertainty is None else _slice("uncertainty", uncertainty)
    if std is not None:
        shapes.add(std.shape)
    if len(shapes) != 1:
        raise InputError(f"triptych panels differ in shape: {sorted(shapes)}")
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (label, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray" if label.startswith("T1") else "hot", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
    if std is None:
        axes[3].text(0.5, 0.5, "no uncertainty", ha="center", va="center", transform=axes[3].transAxes)
    else:
        shown = axes[3].imshow(std, cmap="viridis", vmin=0)
        fig.colorbar(shown, ax=axes[3], fraction=0.046, pad=0.04, label="std")
    axes[3].set_title("uncertainty (std)", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    text = _metric_text(metrics)
    fig.suptitle(f"{title}\n{text}" if text else title, fontsize=10)
    return _save(fig, path)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def uptake_scatter_png(path: str | Path, table: pd.DataFrame, title: str) -> Path:
    """Generated against real regional uptake (``table`` columns ``region``, ``real``,
    ``generated``, as :func:`paired_uptake` gives), one colour per region, the identity line, and
    Pearson's r per region in the legend ("n/a" for fewer than two points or a constant region)."""
    missing = {"region", "real", "generated"} - set(table.columns)
    if missing:
        raise InputError(f"uptake table lacks column(s) {sorted(missing)}; it has {list(table.columns)}")
    plt = pyplot()
    regions = list(dict.fromkeys(table["region"]))
    fig, ax = plt.subplots(figsize=(5.5 + 1.6 * math.ceil(len(regions) / 20), 5))
    colours = plt.get_cmap("tab20" if len(regions) > 10 else "tab10")
    for i, region in enumerate(regions):
        rows = table[table["region"] == region]
        r = _pearson(rows["real"].to_numpy(float), rows["generated"].to_numpy(float))
        label = f"{region} (r = {r:.2f})" if math.isfinite(r) else f"{region} (r = n/a)"
        ax.scatter(rows["real"], rows["generated"], s=14, alpha=0.8, color=colours(i % colours.N), label=label)
    values = table[["real", "generated"]].to_numpy(float)
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    margin = 0.05 * (high - low or 1.0)
    ax.plot([low - margin, high + margin], [low - margin, high + margin], "k--", lw=1, label="identity")
    ax.set(xlabel="real uptake", ylabel="generated uptake", title=title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=max(1, math.ceil(len(regions) / 20)))
    return _save(fig, path)


def age_sweep_png(path: str | Path, ages: Any, images: Any, uptake: pd.DataFrame | None, title: str) -> Path:
    """A row of generated images, one per age, and (when ``uptake`` is given) the regional uptake
    against age: ``uptake`` has columns ``region``, ``uptake`` and ``age``, or ``image`` (an index
    into ``ages``, as :func:`regional_uptake` of the same images gives) instead of ``age``."""
    plt = pyplot()
    age = np.asarray(ages, dtype=np.float64).ravel()
    x = _images("images", images)
    if len(age) != len(x) or not len(x):
        raise InputError(f"age sweep needs one image per age: {len(age)} ages, images of shape {np.shape(images)}")
    rows = 2 if uptake is not None else 1
    fig = plt.figure(figsize=(max(1.7 * len(x), 5.0), 2.2 + 3.0 * (rows - 1)))
    grid = fig.add_gridspec(rows, len(x), height_ratios=[1.0, 1.6][:rows])
    for i in range(len(x)):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(x[i], cmap="hot", vmin=0, vmax=1)
        ax.set_title(f"age {age[i]:g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if uptake is not None:
        table = uptake.copy()
        if "age" not in table.columns:
            if "image" not in table.columns:
                raise InputError(f"age-sweep uptake needs an 'age' or 'image' column; it has {list(table.columns)}")
            index = table["image"].to_numpy(int)
            if index.min(initial=0) < 0 or index.max(initial=0) >= len(age):
                raise InputError(f"age-sweep uptake's image index runs outside the {len(age)} ages")
            table["age"] = age[index]
        missing = {"region", "uptake"} - set(table.columns)
        if missing:
            raise InputError(f"age-sweep uptake lacks column(s) {sorted(missing)}; it has {list(table.columns)}")
        ax = fig.add_subplot(grid[1, :])
        for region in dict.fromkeys(table["region"]):
            part = table[table["region"] == region].sort_values("age")
            ax.plot(part["age"], part["uptake"], "o-", ms=3, label=str(region))
        ax.set(xlabel="age (years)", ylabel="mean uptake")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
