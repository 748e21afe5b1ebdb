"""Generation metrics on feature rows and images (paper Section 6.1, Tables 1 and 2).

FID, KID and PRDC work on feature rows (N, D) from whatever extractor the caller trusts
(RadImageNet, SwAV, Inception, loaded from a user-given path): the maths here must not care
which, and must not download anything. FID and KID come from torchmetrics and PRDC from the
``prdc`` package, so the numbers match what other groups report with the same tools; this
module only feeds them float64 rows, fixes the seeds and adds bootstrap intervals.
Per-class metrics are the same calls on the rows of one class."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from prdc import compute_prdc
from scipy import stats
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


def bootstrap_ci(
    real: np.ndarray,
    fake: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(real, fake)``: both sets' rows are resampled
    with replacement (each to its own size) ``n`` times, by ``scipy.stats.bootstrap``.

    SciPy resamples observations, so it resamples row indices here and the metric reads the
    rows. One resample per batch keeps SciPy's draws in this order: real then fake indices of
    replicate 1, then of replicate 2, ..., from ``default_rng(seed)`` (the same intervals as
    the loop this replaced).

    Caveat worth knowing when reading the interval: duplicated rows shrink the effective
    sample, so for biased estimators such as FID the replicates sit slightly above the
    full-data value; on small sets the interval can lie above the point estimate."""
    r, f = _pair(real, fake)
    if n < 1:
        raise InputError(f"bootstrap needs n >= 1 replicates, got {n}")
    if not 0.0 < level < 1.0:
        raise InputError(f"bootstrap level must be strictly between 0 and 1, got {level}")
    result = stats.bootstrap(
        (np.arange(len(r)), np.arange(len(f))),
        lambda i, j: metric(r[i], f[j]),
        n_resamples=n,
        batch=1,
        vectorized=False,
        paired=False,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def prdc_metrics(real: np.ndarray, fake: np.ndarray, nearest_k: int = 5) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020)
    from the ``prdc`` package, with its progress print silenced.

    ``prdc`` takes each set's k-th neighbour distance with ``argpartition(k + 1)``, which needs
    at least ``nearest_k + 2`` rows per set (the row itself plus k neighbours plus one)."""
    if nearest_k < 1:
        raise InputError(f"PRDC nearest_k must be >= 1, got {nearest_k}")
    r, f = _pair(real, fake)
    for name, rows in (("real", r), ("fake", f)):
        if len(rows) < nearest_k + 2:
            raise InputError(f"PRDC with nearest_k={nearest_k} needs at least {nearest_k + 2} {name} rows, got {len(rows)}")
    with contextlib.redirect_stdout(io.StringIO()):
        result = compute_prdc(real_features=r, fake_features=f, nearest_k=nearest_k)
    return {key: float(result[key]) for key in ("precision", "recall", "density", "coverage")}


def generation_metrics(
    real: np.ndarray,
    fake: np.ndarray,
    bootstrap: int = 200,
    seed: int = 0,
    nearest_k: int = 5,
) -> dict[str, Any]:
    """Everything Tables 1 and 2 report for one pair of feature sets: FID and KID with 95%
    bootstrap intervals, KID's subset std, and PRDC. ``bootstrap=0`` skips the intervals
    (reported as NaN). Call it once on all rows and once per class on that class's rows.

    Cost grows with the feature dimension: torchmetrics' FID takes a general eigen-
    decomposition of a D x D product (about 6 s for D = 2048 on one CPU thread), so 200
    bootstrap replicates of 2048-d features take minutes; lower ``bootstrap`` for quick looks."""
    r, f = _pair(real, fake, min_rows=2)
    kid, kid_std = kernel_inception_distance(r, f, seed=seed)
    if bootstrap > 0:
        fid_ci = bootstrap_ci(r, f, frechet_distance, n=bootstrap, seed=seed)
        kid_ci = bootstrap_ci(
            r,
            f,
            lambda a, b: kernel_inception_distance(a, b, subsets=BOOTSTRAP_KID_SUBSETS, seed=seed)[0],
            n=bootstrap,
            seed=seed,
        )
    else:
        fid_ci = kid_ci = (float("nan"), float("nan"))
    try:
        prdc, note = prdc_metrics(r, f, nearest_k=nearest_k), ""
    except InputError as error:  # a small class still gets FID and KID; PRDC says why it is missing
        prdc, note = dict.fromkeys(("precision", "recall", "density", "coverage"), float("nan")), str(error)
    return {
        "fid": frechet_distance(r, f),
        "fid_ci": list(fid_ci),
        "kid": kid,
        "kid_std": kid_std,
        "kid_ci": list(kid_ci),
        **prdc,
        "n_real": int(len(r)),
        "n_fake": int(len(f)),
        **({"note": note} if note else {}),
    }


def _intra_pairs(rng: np.random.Generator, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` ordered pairs of distinct images of the same class, uniform over all such
    pairs (a class is drawn with weight n_c (n_c - 1))."""
    classes, sizes = np.unique(labels, return_counts=True)
    weights = (sizes * (sizes - 1)).astype(float)
    if weights.sum() == 0:
        return np.empty(0, int), np.empty(0, int)
    drawn = rng.choice(len(classes), size=count, p=weights / weights.sum())
    first, second = np.empty(count, int), np.empty(count, int)
    for c in np.unique(drawn):
        where = np.flatnonzero(drawn == c)
        members = np.flatnonzero(labels == classes[c])
        a = rng.integers(0, len(members), len(where))
        b = rng.integers(0, len(members) - 1, len(where))
        b = b + (b >= a)  # skip a itself: distinct images
        first[where], second[where] = members[a], members[b]
    return first, second


def _inter_pairs(rng: np.random.Generator, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` ordered pairs of images from different classes, uniform over all such pairs
    (a class pair is drawn with weight n_a n_b)."""
    classes, sizes = np.unique(labels, return_counts=True)
    weights = np.outer(sizes, sizes).astype(float)
    np.fill_diagonal(weights, 0.0)
    if weights.sum() == 0:
        return np.empty(0, int), np.empty(0, int)
    drawn = rng.choice(weights.size, size=count, p=(weights / weights.sum()).ravel())
    first, second = np.empty(count, int), np.empty(count, int)
    for cell in np.unique(drawn):
        where = np.flatnonzero(drawn == cell)
        ca, cb = divmod(int(cell), len(classes))
        members_a = np.flatnonzero(labels == classes[ca])
        members_b = np.flatnonzero(labels == classes[cb])
        first[where] = members_a[rng.integers(0, len(members_a), len(where))]
        second[where] = members_b[rng.integers(0, len(members_b), len(where))]
    return first, second


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
    and std are NaN and the count 0."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"images: expected shape (N, 1, H, W), got {x.shape}")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"labels: expected shape ({len(x)},) to match the images, got {y.shape}")
    if pairs < 1:
        raise InputError(f"pairs must be >= 1, got {pairs}")
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
        first, second = draw(rng, y, pairs)
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


def memorisation(fake: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> dict[str, np.ndarray]:
    """For each generated row: Euclidean distance to the nearest training row and to the
    nearest held-out row, their ratio, and the index of that training row.

    A generator that generalises sits about as close to unseen real images as to its training
    images (ratio near 1); a ratio well below 1 points at copied training images, and
    ``nearest_train`` says which ones to look at. Inputs may be images (N, ...) or feature
    rows; they are flattened per row. The neighbour search is sklearn's brute force (chunked,
    memory-safe); the reported distances are then recomputed directly in float64, so an exact
    copy reads exactly 0. ratio = d_train / d_heldout: inf where only d_heldout is 0, NaN
    where both are."""
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
    query = sets["fake"]
    found = {}
    for name in ("train", "heldout"):
        search = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(sets[name])
        index = search.kneighbors(query, return_distance=False)[:, 0]
        distance = np.linalg.norm(query.astype(np.float64) - sets[name][index].astype(np.float64), axis=1)
        found[name] = (index, distance)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = found["train"][1] / found["heldout"][1]
    return {
        "d_train": found["train"][1],
        "d_heldout": found["heldout"][1],
        "ratio": ratio,
        "nearest_train": found["train"][0],
    }
