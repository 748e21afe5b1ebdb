"""Generation metrics on feature rows and images (paper Section 6.1, Tables 1 and 2).

FID, KID and PRDC work on feature rows (N, D) from whatever extractor the caller trusts
(RadImageNet, SwAV, Inception, loaded from a user-given path): the maths here must not care
which, and must not download anything. FID and KID come from torchmetrics and PRDC from the
``prdc`` package, so the numbers match what other groups report with the same tools; this
module only feeds them float64 rows, fixes the seeds and adds bootstrap intervals.
Per-class metrics are the same calls on the rows of one class.

Real slices come in clusters: one subject gives several neighbouring slices, which are nearly
copies of each other. Every function that resamples, pairs or takes neighbourhoods therefore
takes optional ``groups`` (one subject key per row; generated rows are each their own group):
intervals resample subjects, PRDC radii and MS-SSIM pairs skip same-subject rows, and the
memorisation null removes the query's own subject. Below the sizes in :data:`MIN_SIZES` a metric
is not computed and the reason is recorded instead of a number that means nothing."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from prdc import compute_prdc
from scipy import stats
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd

from magicflow.errors import InputError

KID_MAX_SUBSET = 1000
"""Subset size cap of the KID reference implementation (Binkowski et al.)."""

BOOTSTRAP_KID_SUBSETS = 10
"""KID subsets per bootstrap replicate: each replicate is already a random resample, so the
subset average only smooths subset noise; 10 instead of 100 makes the interval 10x cheaper.
(With both sets no larger than 1000 rows every subset is the whole set and this is moot.)"""

MS_SSIM_SCALES = 5
"""torchmetrics' default MS-SSIM weights (Wang et al. 2003) have five scales."""

PRDC_ROWS_PER_K = 5
"""PRDC needs at least this many times ``nearest_k`` rows (or subjects' worth of rows) per set:
with n close to k each real radius covers most of the set, so two samples of one distribution
score 1.00 on all four (k = 5 and 8 rows do). 5k keeps a radius to a fifth of the set."""

KID_MIN_ROWS = 10
"""KID is unbiased from 2 rows, but below 10 rows per set its spread over subsets and resamples
is as large as the differences it is meant to show; a floor we chose, not a derived bound."""

BOOTSTRAP_MIN_UNITS = 10
"""Intervals need at least this many resampling units (subjects for real sets, rows for generated
ones) in each set: with fewer, a resample repeats most units and the percentiles describe the
handful of units, not the population."""

MIN_SIZES = {
    "fid": "each set needs more rows than feature dimensions (n > D): below that the D x D covariance has rank <= n - 1 and the distance is dominated by the missing directions",
    "kid": f"each set needs at least {KID_MIN_ROWS} rows",
    "prdc": f"each set needs at least {PRDC_ROWS_PER_K} x nearest_k rows, and every real row nearest_k rows from other subjects",
    "intervals": f"each set needs at least {BOOTSTRAP_MIN_UNITS} resampling units (subjects; generated rows count one each)",
}
"""The minimum-size rules, as written into metrics.json and the report."""


def _rows(name: str, x: Any, min_rows: int = 1) -> np.ndarray:
    """Feature rows as finite float64 (N, D); say which argument is wrong otherwise."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise InputError(f"{name}: expected feature rows of shape (N, D), got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise InputError(f"{name}: needs at least {min_rows} rows, got {array.shape[0]}")
    if array.shape[1] < 1:
        raise InputError(f"{name}: feature rows have no columns (shape {array.shape})")
    if not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return array


def _pair(real: Any, fake: Any, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets, checked to share the feature dimension."""
    r = _rows("real", real, min_rows)
    f = _rows("fake", fake, min_rows)
    if r.shape[1] != f.shape[1]:
        raise InputError(f"real and fake features differ in dimension: {r.shape[1]} vs {f.shape[1]}")
    return r, f


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature rows (FID when the
    rows are Inception features).

    Means and unbiased covariances are computed here in float64 from centred data (the
    torchmetrics metric class accumulates raw second moments, which loses digits when
    features have large means); the distance itself is torchmetrics' ``_compute_fid``.
    Tiny negative results from rounding are reported as 0."""
    r, f = _pair(real, fake, min_rows=2)
    mu_r, mu_f = r.mean(axis=0), f.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(r, rowvar=False))
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))
    value = _compute_fid(torch.from_numpy(mu_r), torch.from_numpy(cov_r), torch.from_numpy(mu_f), torch.from_numpy(cov_f))
    return max(float(value), 0.0)


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    subset_size: int | None = None,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased squared MMD with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3,
    averaged over random equal-size subsets; returns (mean, population std over subsets).

    The kernel and MMD are torchmetrics' ``poly_mmd``; subsets are drawn here from a seeded
    numpy generator instead of torch's global one so results are reproducible without side
    effects. ``subset_size`` defaults to min(1000, n_real, n_fake). When the subset size equals
    both set sizes every subset is the whole set (MMD ignores order), so it is computed once
    and the std is 0."""
    r, f = _pair(real, fake, min_rows=2)
    size = min(KID_MAX_SUBSET, len(r), len(f)) if subset_size is None else int(subset_size)
    if not 2 <= size <= min(len(r), len(f)):
        raise InputError(f"KID subset_size must be between 2 and min(n_real, n_fake) = {min(len(r), len(f))}, got {size}")
    if subsets < 1:
        raise InputError(f"KID needs at least one subset, got subsets={subsets}")
    tr, tf = torch.from_numpy(r), torch.from_numpy(f)
    if size == len(r) == len(f):
        value = float(poly_mmd(tr, tf))
        return value, 0.0
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(subsets):
        ir = torch.from_numpy(rng.permutation(len(r))[:size])
        jf = torch.from_numpy(rng.permutation(len(f))[:size])
        scores.append(float(poly_mmd(tr[ir], tf[jf])))
    values = np.asarray(scores)
    return float(values.mean()), float(values.std())


def _groups(name: str, groups: Any, n: int) -> np.ndarray:
    """One group key per row (subject); None makes every row its own group (generated rows)."""
    if groups is None:
        return np.arange(n)
    array = np.asarray(groups)
    if array.shape != (n,):
        raise InputError(f"{name}: expected one group (subject) key per row, shape ({n},), got {array.shape}")
    return array


def _resampling_units(groups: np.ndarray) -> list[np.ndarray]:
    """Row indices of each group, in the order of the sorted group keys."""
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def bootstrap_interval(
    real: np.ndarray,
    fake: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n: int = 200,
    seed: int = 0,
    level: float = 0.95,
    real_groups: Any = None,
    fake_groups: Any = None,
) -> dict[str, Any]:
    """Bootstrap interval of ``metric(real, fake)`` that resamples whole groups (subjects).

    Each replicate draws, with replacement, as many groups as each set has (real first, then
    fake, from ``default_rng(seed)``) and keeps all rows of every drawn group, so a subject's
    neighbouring slices stay together instead of counting as independent observations.

    Interval: bias-corrected percentile (Efron 1987). FID's plug-in estimate is biased upwards
    and resamples with repeated rows are more so, so plain percentiles can lie wholly above
    the estimate (5.82 with [5.99, 8.36] was seen). The correction moves the percentiles by
    z0 = Phi^-1(share of replicates below the estimate); where nearly all replicates lie on
    one side even that leaves the estimate outside, and the interval is then extended to it
    (``extended`` true) rather than printed as if it contained it. ``bias`` is the mean
    replicate minus the estimate: the reader's gauge of how far resampling shifts the metric.
    Below :data:`BOOTSTRAP_MIN_UNITS` groups in either set nothing is resampled and
    ``not_computed`` says why. The interval describes resampling spread around the plug-in
    estimate; it does not remove FID's own bias, so it covers the population FID less often
    than its level says (68 of 100 simulated 40-row, 4-d Gaussian pairs; plain percentiles 59)."""
    r, f = _pair(real, fake)
    if n < 1:
        raise InputError(f"bootstrap needs n >= 1 replicates, got {n}")
    if not 0.0 < level < 1.0:
        raise InputError(f"bootstrap level must be strictly between 0 and 1, got {level}")
    units_r = _resampling_units(_groups("real groups", real_groups, len(r)))
    units_f = _resampling_units(_groups("fake groups", fake_groups, len(f)))
    out: dict[str, Any] = {"low": float("nan"), "high": float("nan"), "units": [len(units_r), len(units_f)]}
    if min(len(units_r), len(units_f)) < BOOTSTRAP_MIN_UNITS:
        out["not_computed"] = (
            f"n < {BOOTSTRAP_MIN_UNITS}: {len(units_r)} real and {len(units_f)} generated resampling units "
            "(subjects; generated rows count one each)"
        )
        return out
    estimate = float(metric(r, f))
    rng = np.random.default_rng(seed)
    replicates = []
    for _ in range(n):
        i = np.concatenate([units_r[k] for k in rng.integers(0, len(units_r), len(units_r))])
        j = np.concatenate([units_f[k] for k in rng.integers(0, len(units_f), len(units_f))])
        replicates.append(float(metric(r[i], f[j])))
    values = np.asarray(replicates)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        out["not_computed"] = "every bootstrap replicate was undefined"
        return out
    share = (np.sum(values < estimate) + 0.5 * np.sum(values == estimate)) / len(values)
    share = float(np.clip(share, 0.5 / len(values), 1 - 0.5 / len(values)))
    z0 = stats.norm.ppf(share)
    tail = stats.norm.ppf((1 - level) / 2)
    quantiles = stats.norm.cdf([2 * z0 + tail, 2 * z0 - tail])
    low, high = (float(q) for q in np.quantile(values, quantiles))
    out.update(
        low=min(low, estimate),
        high=max(high, estimate),
        extended=bool(low > estimate or high < estimate),
        estimate=estimate,
        bias=float(values.mean() - estimate),
        replicates=int(len(values)),
        method="bias-corrected percentile, subjects resampled",
    )
    return out


def bootstrap_ci(
    real: np.ndarray,
    fake: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n: int = 200,
    seed: int = 0,
    level: float = 0.95,
    real_groups: Any = None,
    fake_groups: Any = None,
) -> tuple[float, float]:
    """(low, high) of :func:`bootstrap_interval`; NaN where it was not computed."""
    result = bootstrap_interval(real, fake, metric, n, seed, level, real_groups, fake_groups)
    return result["low"], result["high"]


def _kth_other_group(distances: np.ndarray, row_groups: np.ndarray, col_groups: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k-th smallest distance to columns of another group (self included in ``same``)."""
    masked = np.where(row_groups[:, None] == col_groups[None, :], np.inf, distances)
    return np.partition(masked, k - 1, axis=1)[:, k - 1]


def prdc_metrics(
    real: np.ndarray, fake: np.ndarray, nearest_k: int = 5, real_groups: Any = None, fake_groups: Any = None
) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020),
    by the definitions and strict ``<`` comparisons of the ``prdc`` package, with one change:
    a row's neighbourhood radius is the distance to its k-th nearest row *from another group*.
    In the slice data a real slice's nearest rows are its own subject's neighbouring slices, so
    ``prdc``'s radius would measure slice spacing, not the spread of subjects. Without groups
    (every row its own) the numbers equal ``prdc.compute_prdc``'s.

    Refused (InputError) below :data:`PRDC_ROWS_PER_K` x ``nearest_k`` rows in either set, or
    where a row has fewer than ``nearest_k`` rows from other groups."""
    if nearest_k < 1:
        raise InputError(f"PRDC nearest_k must be >= 1, got {nearest_k}")
    r, f = _pair(real, fake)
    gr = _groups("real groups", real_groups, len(r))
    gf = _groups("fake groups", fake_groups, len(f))
    need = PRDC_ROWS_PER_K * nearest_k
    radii = {}
    for name, rows, groups in (("real", r, gr), ("fake", f, gf)):
        if len(rows) < need:
            raise InputError(f"n < {need} ({PRDC_ROWS_PER_K} x nearest_k={nearest_k}): {len(rows)} {name} rows")
        others = len(rows) - np.unique(groups, return_counts=True)[1].max()
        if others < nearest_k:
            raise InputError(f"a {name} row has only {others} rows from other subjects, fewer than nearest_k={nearest_k}")
        radii[name] = _kth_other_group(pairwise_distances(rows), groups, groups, nearest_k)
    cross = pairwise_distances(r, f)  # (n_real, n_fake)
    inside_real = cross < radii["real"][:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((cross < radii["fake"][None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / nearest_k),
        "coverage": float((cross.min(axis=1) < radii["real"]).mean()),
    }


def compute_prdc_reference(real: np.ndarray, fake: np.ndarray, nearest_k: int) -> dict[str, float]:
    """``prdc.compute_prdc`` itself (progress print silenced): the reference the tests hold
    :func:`prdc_metrics` to when no groups are given."""
    with contextlib.redirect_stdout(io.StringIO()):
        result = compute_prdc(real_features=real, fake_features=fake, nearest_k=nearest_k)
    return {key: float(result[key]) for key in ("precision", "recall", "density", "coverage")}


def generation_metrics(
    real: np.ndarray,
    fake: np.ndarray,
    bootstrap: int = 200,
    seed: int = 0,
    nearest_k: int = 5,
    real_groups: Any = None,
    fake_groups: Any = None,
) -> dict[str, Any]:
    """Everything Tables 1 and 2 report for one pair of feature sets: FID and KID with 95%
    subject-resampled bootstrap intervals (:func:`bootstrap_interval`), KID's subset std, and
    subject-aware PRDC. Call it once on all rows and once per class on that class's rows.

    A metric whose size rule (:data:`MIN_SIZES`) fails is None, and ``not_computed`` maps its
    name to the reason (``fid``, ``kid``, ``prdc``, ``fid_ci``, ``kid_ci``); ``note`` joins
    them for old readers. ``bootstrap=0`` skips the intervals (None, with that reason).

    Cost grows with the feature dimension: torchmetrics' FID takes a general eigen-
    decomposition of a D x D product (about 6 s for D = 2048 on one CPU thread), so 200
    bootstrap replicates of 2048-d features take minutes; lower ``bootstrap`` for quick looks."""
    r, f = _pair(real, fake)
    gr = _groups("real groups", real_groups, len(r))
    gf = _groups("fake groups", fake_groups, len(f))
    n, dim = min(len(r), len(f)), r.shape[1]
    skipped: dict[str, str] = {}
    out: dict[str, Any] = {"fid": None, "fid_ci": [None, None], "kid": None, "kid_std": None, "kid_ci": [None, None]}
    if n > dim:
        out["fid"] = frechet_distance(r, f)
    else:
        skipped["fid"] = f"n <= D: {len(r)} real and {len(f)} generated rows for {dim} feature dimensions"
    if n >= KID_MIN_ROWS:
        out["kid"], out["kid_std"] = kernel_inception_distance(r, f, seed=seed)
    else:
        skipped["kid"] = f"n < {KID_MIN_ROWS}: {len(r)} real and {len(f)} generated rows"
    kid_once = lambda a, b: kernel_inception_distance(a, b, subsets=BOOTSTRAP_KID_SUBSETS, seed=seed)[0]  # noqa: E731
    for name, metric in (("fid", frechet_distance), ("kid", kid_once)):
        if name in skipped:
            skipped[f"{name}_ci"] = f"{name.upper()} not computed"
        elif bootstrap <= 0:
            skipped[f"{name}_ci"] = "bootstrap = 0"
        else:
            interval = bootstrap_interval(r, f, metric, n=bootstrap, seed=seed, real_groups=gr, fake_groups=gf)
            if "not_computed" in interval:
                skipped[f"{name}_ci"] = interval["not_computed"]
            else:
                out[f"{name}_ci"] = [interval["low"], interval["high"]]
                out[f"{name}_ci_extended"] = interval["extended"]
                out[f"{name}_bootstrap_bias"] = interval["bias"]
            out["ci_units"] = interval["units"]
    try:
        out.update(prdc_metrics(r, f, nearest_k=nearest_k, real_groups=gr, fake_groups=gf))
    except InputError as error:
        out.update(dict.fromkeys(("precision", "recall", "density", "coverage")))
        skipped["prdc"] = str(error)
    out.update(
        n_real=int(len(r)),
        n_fake=int(len(f)),
        n_real_subjects=int(len(np.unique(gr))),
        ci_method="bias-corrected percentile bootstrap over subjects (95%)",
        not_computed=skipped,
    )
    if skipped:
        out["note"] = "; ".join(f"{k} not computed: {v}" for k, v in skipped.items())
    return out


def _draw_pairs(
    rng: np.random.Generator, labels: np.ndarray, count: int, same_class: bool, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` ordered pairs of images of the same class (``same_class``) or of different
    classes, never two images of one group (subject), uniform over all such pairs: the first
    image is drawn with weight equal to its number of allowed partners, the second uniformly
    among them. Same-subject slices are neighbours in one brain, so they would make a real
    set's intra-class MS-SSIM look like mode collapse."""
    y = np.asarray(labels)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    allowed = ((y[:, None] == y[None, :]) == same_class) & (g[:, None] != g[None, :])
    weights = allowed.sum(axis=1).astype(float)
    if weights.sum() == 0:
        return np.empty(0, int), np.empty(0, int)
    first = rng.choice(len(y), size=count, p=weights / weights.sum())
    second = np.array([rng.choice(np.flatnonzero(allowed[a])) for a in first], dtype=int)
    return first.astype(int), second


def _intra_pairs(rng: np.random.Generator, labels: np.ndarray, count: int, groups: np.ndarray | None = None):
    """Pairs of distinct-subject images of one class (see :func:`_draw_pairs`)."""
    return _draw_pairs(rng, labels, count, True, groups)


def _inter_pairs(rng: np.random.Generator, labels: np.ndarray, count: int, groups: np.ndarray | None = None):
    """Pairs of distinct-subject images of different classes (see :func:`_draw_pairs`)."""
    return _draw_pairs(rng, labels, count, False, groups)


def _ms_ssim(images: torch.Tensor, first: np.ndarray, second: np.ndarray, kernel_size: int, batch: int) -> np.ndarray:
    """Per-pair MS-SSIM, a batch of pairs at a time to bound memory."""
    values = []
    for start in range(0, len(first), batch):
        a = images[torch.from_numpy(first[start : start + batch])]
        b = images[torch.from_numpy(second[start : start + batch])]
        # torchmetrics sizes its Gaussian window from sigma (11 px at the default 1.5), not from
        # kernel_size: scaling sigma with the window gives a Gaussian of exactly kernel_size px
        score = multiscale_structural_similarity_index_measure(
            a, b, data_range=1.0, kernel_size=kernel_size, sigma=1.5 * kernel_size / 11, reduction="none"
        )
        values.append(score.reshape(-1).double().numpy())
    return np.concatenate(values) if values else np.empty(0)


def ms_ssim_pairs(
    images: np.ndarray,
    labels: np.ndarray,
    pairs: int = 500,
    seed: int = 0,
    kernel_size: int | None = None,
    batch: int = 32,
    groups: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Mean and std MS-SSIM over ``pairs`` random intra-class pairs and ``pairs`` random
    inter-class pairs of distinct images (Odena et al. 2017; paper Appendix B.3.2: 500 pairs).
    High intra-class values signal mode collapse; high inter-class values, classes the
    generator fails to tell apart.

    Settings: torchmetrics' MS-SSIM with its defaults, i.e. Gaussian window of size 11 and
    sigma 1.5 (a smaller window scales sigma with it: 0.41 for 3 px), k1 = 0.01, k2 = 0.03, the five Wang et al. scale weights, ``normalize="relu"``
    (negative contrast terms are clipped to 0 instead of giving NaN under fractional powers),
    ``data_range=1`` for images in [0, 1], computed in float32 (float64 is ~15x slower on CPU
    for no visible gain). Five scales halve the image four times; torchmetrics requires
    ``side // 16 > kernel_size - 1``, i.e. sides of at least 176 px with the 11 px window, so
    182 x 182 slices fit as they are (their coarsest scale is 11 x 11). Smaller images need a
    smaller window: ``kernel_size=None`` takes :func:`ms_ssim_kernel` of the side (3 px at
    64 x 64), recorded as ``kernel_size``; a given window that does not fit is refused. Pairs are drawn with replacement, so
    a pair may repeat; where no pair is possible (one class, or singleton classes) the mean
    and std are NaN and the count 0. ``groups`` (subject per image) excludes same-subject pairs;
    generated images need none."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"images: expected shape (N, 1, H, W), got {x.shape}")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"labels: expected shape ({len(x)},) to match the images, got {y.shape}")
    if pairs < 1:
        raise InputError(f"pairs must be >= 1, got {pairs}")
    g = None if groups is None else _groups("groups", groups, len(x))
    if kernel_size is None:
        kernel_size = ms_ssim_kernel(min(x.shape[2:]))
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"kernel_size must be a positive odd number, got {kernel_size}")
    min_side = _ms_ssim_min_side(kernel_size)
    if min(x.shape[2:]) < min_side:
        raise InputError(
            f"MS-SSIM with {MS_SSIM_SCALES} scales and a {kernel_size} px window needs images of at least"
            f" {min_side} x {min_side}, got {x.shape[2]} x {x.shape[3]}"
        )
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise InputError(f"images: MS-SSIM here assumes finite values in [0, 1], got range [{np.nanmin(x)}, {np.nanmax(x)}]")
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    rng = np.random.default_rng(seed)
    result: dict[str, float | int] = {"kernel_size": int(kernel_size)}
    for name, draw in (("intra", _intra_pairs), ("inter", _inter_pairs)):
        first, second = draw(rng, y, pairs, g)
        scores = _ms_ssim(tensor, first, second, kernel_size, batch)
        result[name] = float(scores.mean()) if len(scores) else float("nan")
        result[f"{name}_std"] = float(scores.std()) if len(scores) else float("nan")
        result[f"{name}_pairs"] = int(len(scores))
    return result


def _ms_ssim_min_side(kernel_size: int) -> int:
    """The smallest side torchmetrics' five-scale MS-SSIM accepts with this window (its size check
    divides by (scales - 1) ** 2), and never under 2 ** scales."""
    scale_div = (MS_SSIM_SCALES - 1) ** 2
    return max(2**MS_SSIM_SCALES, (kernel_size - 1) * scale_div + scale_div)


def ms_ssim_kernel(side: int, largest: int = 11) -> int:
    """The widest odd Gaussian window (at most ``largest``, torchmetrics' default) that
    five-scale MS-SSIM accepts on ``side`` x ``side`` images: 11 from 176 px, 5 at 96, 3 at 64."""
    fits = [k for k in range(1, largest + 1, 2) if side >= _ms_ssim_min_side(k)]
    if not fits:
        raise InputError(f"MS-SSIM with {MS_SSIM_SCALES} scales needs images of at least {2**MS_SSIM_SCALES} px, got {side}")
    return fits[-1]


def nearest_rows(query: np.ndarray, rows: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of and float64 distance to each query's nearest row; ``exclude`` (n_query, n_rows)
    marks rows a query may not use. The search is sklearn's; the distances are recomputed
    directly, so an exact copy reads exactly 0."""
    if exclude is None:
        index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(rows).kneighbors(query, return_distance=False)[:, 0]
    else:
        distances = np.where(exclude, np.inf, pairwise_distances(query, rows))
        index = distances.argmin(axis=1)
    distance = np.linalg.norm(query.astype(np.float64) - rows[index].astype(np.float64), axis=1)
    return index, distance


def memorisation(
    fake: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    heldout_groups: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """For each generated row: Euclidean distance to the nearest training row and to the
    nearest held-out row, their ratio, and the index of that training row; with
    ``heldout_groups`` also the same ratio for real held-out rows (the null).

    A ratio well below 1 points at copied training images and ``nearest_train`` says which to
    look at; but nearest-neighbour distances shrink as a set grows, and the training set holds
    more subjects and more offsets than the held-out one, so even an unseen real slice has a
    ratio below 1. The null measures that: each held-out row (a subject the generator never
    saw) is scored against the same training rows and against the held-out rows of the *other*
    subjects. For a like-for-like comparison each generated row's held-out set also leaves out
    one subject, drawn in proportion to the subjects' row counts (so the left-out sizes follow
    the null's). A generator that copies has ratios below the null's low percentiles.

    Inputs may be images (N, ...) or feature rows; they are flattened per row. ratio =
    d_train / d_heldout: inf where only d_heldout is 0, NaN where both are."""
    sets = {}
    for name, value in (("fake", fake), ("train", train), ("heldout", heldout)):
        array = np.asarray(value)
        if array.ndim < 2 or len(array) == 0:
            raise InputError(f"{name}: expected rows (N, ...) with N >= 1, got shape {array.shape}")
        sets[name] = array.reshape(len(array), -1)
        if not np.isfinite(sets[name]).all():
            raise InputError(f"{name}: contains NaN or infinite values")
    widths = {name: rows.shape[1] for name, rows in sets.items()}
    if len(set(widths.values())) != 1:
        raise InputError(f"fake, train and heldout rows differ in size: {widths}")
    query, held = sets["fake"], sets["heldout"]
    nearest_train, d_train = nearest_rows(query, sets["train"])
    exclude = None
    if heldout_groups is not None:
        groups = _groups("heldout groups", heldout_groups, len(held))
        if len(np.unique(groups)) < 2:
            raise InputError("memorisation null needs held-out rows of at least 2 subjects")
        rng = np.random.default_rng(seed)
        left_out = groups[rng.integers(0, len(held), len(query))]
        exclude = left_out[:, None] == groups[None, :]
    _, d_held = nearest_rows(query, held, exclude)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = {"d_train": d_train, "d_heldout": d_held, "ratio": d_train / d_held, "nearest_train": nearest_train}
        if heldout_groups is not None:
            _, null_train = nearest_rows(held, sets["train"])
            _, null_held = nearest_rows(held, held, groups[:, None] == groups[None, :])
            result["null_ratio"] = null_train / null_held
    return result


def memorisation_summary(ratio: np.ndarray, null_ratio: np.ndarray | None = None) -> dict[str, Any]:
    """Generated ratios beside the null's: medians, the null's 5th percentile and the share of
    generated rows below it (about 0.05 when samples are no closer to training data than unseen
    real slices are; much more means copying). Without a null only the generated side."""
    r = np.asarray(ratio, float)
    out: dict[str, Any] = {
        "median_ratio": float(np.median(r)) if len(r) else float("nan"),
        "fraction_below_1": float((r < 1.0).mean()) if len(r) else float("nan"),
        "n_generated": int(len(r)),
    }
    if null_ratio is not None and len(null_ratio):
        null = np.asarray(null_ratio, float)
        p05 = float(np.quantile(null[np.isfinite(null)], 0.05)) if np.isfinite(null).any() else float("nan")
        out.update(
            null_median_ratio=float(np.median(null)),
            null_p05=p05,
            fraction_below_null_p05=float((r < p05).mean()) if len(r) else float("nan"),
            null_fraction_below_1=float((null < 1.0).mean()),
            n_null=int(len(null)),
        )
    return out


def matched_counts(reference: np.ndarray, *available: np.ndarray) -> np.ndarray:
    """Rows per class to draw from each candidate set so that all of them have the class mix of
    ``reference`` (the real test set's counts per class) at one common size: the reference
    counts scaled by the largest factor every candidate can supply, rounded down. A class the
    reference lacks gets 0 rows; a class a candidate lacks makes every count 0."""
    ref = np.asarray(reference, float)
    if ref.sum() <= 0:
        return np.zeros(len(ref), int)
    present = ref > 0
    factor = min(float(np.min(np.asarray(a, float)[present] / ref[present])) for a in available) if available else 1.0
    return np.floor(ref * factor + 1e-9).astype(int)


def spread_subsample(labels: np.ndarray, groups: np.ndarray | None, counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``counts[c]`` rows of each class c, spread over as many groups
    (subjects) as possible: rows are taken round-robin over the class's subjects in a seeded
    random order, so a subsample of a real set is not a few subjects' slice stacks."""
    y = np.asarray(labels)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, want in enumerate(np.asarray(counts, int)):
        members = np.flatnonzero(y == c)
        if want > len(members):
            raise InputError(f"class {c}: {want} rows wanted, only {len(members)} available")
        members = members[rng.permutation(len(members))]
        _, group_index = np.unique(g[members], return_inverse=True)
        rank = np.zeros(len(members), int)  # position of each row within its subject
        for k in np.unique(group_index):
            where = np.flatnonzero(group_index == k)
            rank[where] = np.arange(len(where))
        order = np.lexsort((rng.random(len(members)), rank))
        chosen.append(members[order[:want]])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, int)
