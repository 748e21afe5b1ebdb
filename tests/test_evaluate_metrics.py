"""Evaluation maths against values worked out by hand on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicflow.errors import InputError
from magicflow.evaluate import generation as gen

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def exact_gaussian_sample(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows whose sample mean and (n-1) covariance are exactly ``mean`` and ``cov``."""
    raw = np.random.default_rng(seed).normal(size=(n, len(mean)))
    raw -= raw.mean(axis=0)
    whitened = raw @ np.linalg.inv(np.linalg.cholesky(np.cov(raw, rowvar=False))).T
    return whitened @ np.linalg.cholesky(cov).T + mean


# --- FID ---------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    rows = np.random.default_rng(0).normal(size=(50, 6)) * 3 + 100
    assert gen.frechet_distance(rows, rows) == pytest.approx(0.0, abs=1e-8)


def test_fid_matches_closed_form_for_commuting_covariances():
    # diag covariances: FID = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    #                       = (1 + 4) + (1 - 2)^2 + (2 - 1)^2 = 7
    a = exact_gaussian_sample(np.array([0.0, 0.0]), np.diag([1.0, 4.0]), 40, seed=1)
    b = exact_gaussian_sample(np.array([1.0, 2.0]), np.diag([4.0, 1.0]), 60, seed=2)
    assert gen.frechet_distance(a, b) == pytest.approx(7.0, rel=1e-9)


def test_fid_matches_closed_form_for_non_commuting_covariances():
    # S1 = [[2,1],[1,2]], S2 = diag(1,4): S1 S2 = [[2,4],[1,8]], trace 10, det 12.
    # For a 2x2 matrix with positive eigenvalues tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    # FID = |(1,0)|^2 + tr S1 + tr S2 - 2 sqrt(10 + 2 sqrt 12) = 1 + 4 + 5 - 2 * 4.114390 = 1.771220
    expected = 1.0 + 4.0 + 5.0 - 2.0 * np.sqrt(10.0 + 2.0 * np.sqrt(12.0))
    a = exact_gaussian_sample(np.array([0.0, 0.0]), np.array([[2.0, 1.0], [1.0, 2.0]]), 30, seed=3)
    b = exact_gaussian_sample(np.array([1.0, 0.0]), np.diag([1.0, 4.0]), 30, seed=4)
    assert expected == pytest.approx(1.771220, abs=1e-6)
    assert gen.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fid_agrees_with_the_torchmetrics_metric_class():
    """Guards the private ``_compute_fid`` import against torchmetrics changing under us."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 3

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) * 2 + 1
    metric = FrechetInceptionDistance(feature=Identity())
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    assert gen.frechet_distance(a, b) == pytest.approx(float(metric.compute()), rel=1e-8)


# --- KID ---------------------------------------------------------------------------------


def unbiased_poly_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """The KID formula written out: k(a, b) = (a.b / d + 1)^3,
    MMD_u = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_ij k(x_i,y_j)/m^2."""
    m, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2.0 * xy / m**2


def test_kid_on_a_two_point_case_worked_by_hand():
    # X = {(2,0), (0,2)}, Y = {(2,0), (2,2)}, d = 2, k(a,b) = (a.b/2 + 1)^3.
    # k(x1,x2) = (0+1)^3 = 1            -> XX term 2*1/2 = 1
    # k(y1,y2) = (4/2+1)^3 = 27         -> YY term 2*27/2 = 27
    # XY: x1.y1 = 4, x1.y2 = 4, x2.y1 = 0, x2.y2 = 4 -> 27+27+1+27 = 82 -> 2*82/4 = 41
    # MMD_u = 1 + 27 - 41 = -13 (the unbiased estimate may be negative)
    x = np.array([[2.0, 0.0], [0.0, 2.0]])
    y = np.array([[2.0, 0.0], [2.0, 2.0]])
    mean, std = gen.kernel_inception_distance(x, y, subset_size=2)
    assert mean == pytest.approx(-13.0)
    assert std == 0.0


def test_kid_matches_the_unbiased_polynomial_mmd_on_4x2_arrays():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)) + 0.7
    mean, std = gen.kernel_inception_distance(x, y, subset_size=4)
    assert mean == pytest.approx(unbiased_poly_mmd(x, y), rel=1e-12)
    assert std == 0.0


def test_kid_subsets_are_seeded_and_average_subset_mmds():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(9, 3))
    first = gen.kernel_inception_distance(x, y, subset_size=5, subsets=7, seed=3)
    assert first == gen.kernel_inception_distance(x, y, subset_size=5, subsets=7, seed=3)
    # replay the subsets the function draws and average the hand formula
    draw = np.random.default_rng(3)
    values = []
    for _ in range(7):
        i, j = draw.permutation(12)[:5], draw.permutation(9)[:5]
        values.append(unbiased_poly_mmd(x[i], y[j]))
    assert first[0] == pytest.approx(np.mean(values), rel=1e-10)
    assert first[1] == pytest.approx(np.std(values), rel=1e-8)


def test_kid_default_subset_size_is_the_smaller_set():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    assert gen.kernel_inception_distance(x, y)[0] == pytest.approx(unbiased_poly_mmd(x, y), rel=1e-12)
    with pytest.raises(InputError, match="subset_size"):
        gen.kernel_inception_distance(x, y, subset_size=7)


# --- PRDC, bootstrap, summary ------------------------------------------------------------


def test_prdc_of_a_set_against_itself_is_perfect():
    rows = np.random.default_rng(9).normal(size=(30, 4))
    result = gen.prdc_metrics(rows, rows, nearest_k=3)
    assert result["precision"] == result["recall"] == result["coverage"] == 1.0


def test_prdc_refuses_too_few_rows_with_the_number_needed(capsys):
    rows = np.random.default_rng(10).normal(size=(6, 2))
    with pytest.raises(InputError, match="at least 7 fake rows"):
        gen.prdc_metrics(np.vstack([rows, rows]), rows, nearest_k=5)
    gen.prdc_metrics(rows, rows, nearest_k=4)
    assert capsys.readouterr().out == ""  # prdc's progress print is silenced


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(11)
    real, fake = rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) + 1.0
    point = gen.frechet_distance(real, fake)
    low, high = gen.bootstrap_ci(real, fake, gen.frechet_distance, n=100, seed=0)
    assert low < point < high
    assert (low, high) == gen.bootstrap_ci(real, fake, gen.frechet_distance, n=100, seed=0)


def test_generation_metrics_keys_and_types():
    rng = np.random.default_rng(12)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.5
    result = gen.generation_metrics(real, fake, bootstrap=20, nearest_k=3)
    assert set(result) == {"fid", "fid_ci", "kid", "kid_std", "kid_ci", "precision", "recall", "density", "coverage", "n_real", "n_fake"}
    assert (result["n_real"], result["n_fake"]) == (40, 30)
    assert len(result["fid_ci"]) == len(result["kid_ci"]) == 2
    assert result["fid_ci"][0] <= result["fid_ci"][1]


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (np.zeros(5), np.zeros((5, 2)), r"real: expected feature rows of shape \(N, D\)"),
        (np.zeros((5, 2)), np.zeros((5, 3)), "differ in dimension: 2 vs 3"),
        (np.zeros((1, 2)), np.zeros((5, 2)), "real: needs at least 2 rows"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), "real: contains NaN"),
    ],
)
def test_bad_feature_rows_are_named(real, fake, message):
    with pytest.raises(InputError, match=message):
        gen.frechet_distance(real, fake)


# --- MS-SSIM -----------------------------------------------------------------------------


def two_class_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright disc with mild noise; class 1: vertical stripes with mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:182, :182]
    disc = ((yy - 91) ** 2 + (xx - 91) ** 2 < 60**2).astype(float) * 0.8
    stripes = 0.4 + 0.4 * np.sin(xx / 4.0)
    images = [np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1) for base in [disc] * per_class + [stripes] * per_class]
    return np.stack(images)[:, None].astype(np.float32), np.repeat([0, 1], per_class)


def test_ms_ssim_identical_images_score_one_and_different_images_less():
    images, _ = two_class_images(1, seed=13)
    same = gen.ms_ssim_pairs(np.stack([images[0], images[0]]), np.array([0, 0]), pairs=2)
    assert same["intra"] == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(same["inter"]) and same["inter_pairs"] == 0
    other = gen.ms_ssim_pairs(images, np.array([0, 1]), pairs=2)
    assert other["inter"] < 0.5
    assert np.isnan(other["intra"]) and other["intra_pairs"] == 0


def test_ms_ssim_intra_class_exceeds_inter_class_for_distinct_classes():
    images, labels = two_class_images(3, seed=14)
    result = gen.ms_ssim_pairs(images, labels, pairs=6, seed=0)
    assert result["intra_pairs"] == result["inter_pairs"] == 6
    assert result["intra"] > result["inter"] + 0.3


def test_ms_ssim_pair_sampling_respects_classes():
    labels = np.array([0, 0, 0, 1, 1, 2])
    rng = np.random.default_rng(0)
    a, b = gen._intra_pairs(rng, labels, 200)
    assert (labels[a] == labels[b]).all() and (a != b).all() and not (labels[a] == 2).any()
    a, b = gen._inter_pairs(rng, labels, 200)
    assert (labels[a] != labels[b]).all()


def test_ms_ssim_refuses_images_too_small_for_five_scales():
    with pytest.raises(InputError, match="at least 176 x 176"):
        gen.ms_ssim_pairs(np.zeros((2, 1, 160, 160)), np.array([0, 0]))
    with pytest.raises(InputError, match=r"images: expected shape \(N, 1, H, W\)"):
        gen.ms_ssim_pairs(np.zeros((2, 182, 182)), np.array([0, 0]))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        gen.ms_ssim_pairs(np.full((2, 1, 182, 182), 2.0), np.array([0, 0]))


# --- memorisation ------------------------------------------------------------------------


def test_memorisation_flags_exact_copies_of_training_rows():
    rng = np.random.default_rng(15)
    train, heldout = rng.random((20, 1, 8, 8)), rng.random((10, 1, 8, 8))
    novel = rng.random((2, 1, 8, 8))
    fake = np.concatenate([train[[3, 17]], novel])
    result = gen.memorisation(fake, train, heldout)
    assert result["ratio"][:2].tolist() == [0.0, 0.0]
    assert result["nearest_train"][:2].tolist() == [3, 17]
    assert (result["ratio"][2:] > 0.5).all()
    d = np.linalg.norm(novel.reshape(2, -1)[:, None] - heldout.reshape(10, -1)[None], axis=2).min(axis=1)
    assert result["d_heldout"][2:] == pytest.approx(d)
    with pytest.raises(InputError, match="differ in size"):
        gen.memorisation(fake, train[:, :, :4], heldout)
