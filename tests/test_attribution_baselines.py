"""Attribution scores a reviewer would accept (issue 30, points 1 and 9): per-slice AUCs
averaged per subject beside maps that need no model, ROI F1 over subject-grouped nested
folds beside random regions of the same area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from magicflow.errors import InputError
from magicflow.evaluate import attribution as att
from magicflow.evaluate.experiment import attribution_section
from magicflow.evaluate.inputs import ExperimentOutputs

from attribution_fixtures import planted_outputs


def test_slice_aucs_per_slice_by_hand_and_subject_means():
    brain = np.ones((2, 2), bool)
    scores = np.array([[[0.1, 0.6], [0.5, 0.55]], [[0.0, 1.0], [0.0, 2.0]], [[0.3, 0.2], [0.1, 0.0]]])
    truth = np.array([[[0, 1], [1, 0]], [[0, 1], [0, 1]], [[0, 0], [0, 0]]], bool)
    # slice 0: lesion {0.6, 0.5} vs {0.1, 0.55}: 3 of 4 pairs ordered -> 0.75; slice 1: 1.0; slice 2: no lesion
    aucs = att.slice_aucs(scores, truth, brain)
    assert aucs[:2].tolist() == [0.75, 1.0] and np.isnan(aucs[2])
    # a slice's scale or offset cannot matter: slice 1 times 100 plus 7 scores the same
    shifted = scores.copy()
    shifted[1] = shifted[1] * 100 + 7
    assert att.slice_aucs(shifted, truth, brain)[1] == 1.0
    means = att.subject_means(aucs, np.array(["a", "a", "b"]))
    assert means.to_dict() == {"a": 0.875}  # b has no finite slice and is left out
    with pytest.raises(InputError, match=r"truth: shape"):
        att.slice_aucs(scores, truth[:2], brain)


def test_random_regions_have_the_asked_area_inside_the_brain_and_score_chance():
    brain = np.zeros((40, 40), bool)
    brain[4:36, 6:34] = True
    areas = np.arange(60)
    regions = att.random_regions(areas, brain, seed=3)
    assert regions[:, ~brain].sum() == 0
    assert regions.reshape(60, -1).sum(1).tolist() == areas.tolist()
    ranks = att.random_regions(areas, brain, seed=3, rank=True)
    assert ((ranks < areas[:, None, None]) == regions).all()  # the same field gives nested regions
    # against a fixed lesion, a random region of its area scores 0.5 on average over slices
    lesion = np.zeros((300, 40, 40), bool)
    lesion[:, 10:18, 12:22] = True
    control = att.random_regions(np.full(300, 80), brain, seed=4)
    assert abs(np.nanmean(att.slice_aucs(control.astype(float), lesion, brain)) - 0.5) < 0.03
    with pytest.raises(InputError, match="areas"):
        att.random_regions(np.array([brain.sum() + 1]), brain, seed=0)


def test_other_class_means_use_other_subjects_at_the_same_offset_first():
    images = np.stack([np.full((2, 2), v) for v in (1.0, 3.0, 5.0, 7.0, 9.0)])
    labels = np.array([0, 1, 1, 0, 1])
    subjects = np.array(["a", "b", "c", "d", "b"])
    offsets = np.array([0, 0, 1, 2, 2])
    ref = att.other_class_means(images, labels, subjects, offsets)[:, 0, 0]
    # a (offset 0): class 1 at offset 0 from others is b only -> 3
    # b (offset 0): class 0 at offset 0 from others is a -> 1;  c (offset 1): no class 0 there, all offsets -> (1+7)/2
    # d (offset 2): class 1 at offset 2 from others is b's second slice -> 9;  b at offset 2: class 0 there is d -> 7
    assert ref.tolist() == [3.0, 1.0, 4.0, 9.0, 7.0]
    alone = att.other_class_means(images[:2], labels[:2], np.array(["a", "a"]), offsets[:2])
    assert np.isnan(alone).all()  # the other class comes only from the same subject: no reference


def lesion_cohort(subjects: int, seed: int, model_finds_it: bool):
    """AD slices whose planted lesion is brighter than the rest (the image alone finds it) and
    a model map that either finds it exactly or is noise."""
    rng = np.random.default_rng(seed)
    n, size = subjects, 16
    truth = np.zeros((n, size, size), bool)
    truth[:, 4:8, 5:11] = True
    images = rng.uniform(0.2, 0.5, (n, size, size)) + 0.4 * truth
    evidence = truth + rng.normal(0, 0.1, truth.shape) if model_finds_it else rng.normal(0, 1, truth.shape)
    own = -evidence
    return own, evidence, images, truth


def test_an_image_that_finds_the_lesion_itself_outscores_a_map_that_does_not():
    own, evidence, images, truth = lesion_cohort(6, seed=5, model_finds_it=False)
    brain = np.ones(truth.shape[1:], bool)
    reference = np.full(images.shape, 0.35)  # the other class's mean: no lesion
    subjects = np.array([f"s{i}" for i in range(6)])
    summary, per_slice = att.groundtruth_scores(own, evidence, images, reference, truth, brain, subjects, seed=0)
    scores = summary["scores"]
    assert scores["intensity_high"]["mean"] == 1.0 and scores["intensity_low"]["mean"] == 0.0
    assert scores["intensity_high"]["sd"] == 0.0 and scores["intensity_high"]["n_subjects"] == 6
    assert scores["difference_from_other_class"]["mean"] == 1.0  # |image - 0.35| is highest on the lesion
    assert scores["evidence"]["mean"] < 0.8 and scores["evidence"]["best_trivial_mean"] == 1.0
    assert scores["evidence"]["beats_every_trivial_fraction"] == 0.0
    assert scores["low_likelihood"]["beats_every_trivial_fraction"] == 0.0
    assert scores["evidence"]["kind"] == "model" and scores["random_region"]["kind"] == "trivial"
    assert summary["n_subjects"] == 6 and len(per_slice) == 6
    assert [r["subject"] for r in summary["per_subject"]] == sorted(subjects)

    # a map that finds the lesion where the image does not: the model gets the credit
    own, evidence, images, truth = lesion_cohort(6, seed=6, model_finds_it=True)
    images = np.random.default_rng(7).uniform(0.2, 0.8, images.shape)  # lesion invisible in the image
    summary, _ = att.groundtruth_scores(own, evidence, images, np.full(images.shape, 0.5), truth, brain, subjects, seed=0)
    assert summary["scores"]["evidence"]["mean"] == 1.0 and summary["scores"]["low_likelihood"]["mean"] == 1.0
    assert summary["scores"]["evidence"]["beats_every_trivial_fraction"] == 1.0
    assert summary["scores"]["intensity_high"]["mean"] < 0.75


def test_nested_splits_never_put_a_subject_on_both_sides():
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i}" for i in range(14)], rng.integers(1, 5, 14))
    per_subject_label = {s: i % 2 for i, s in enumerate(np.unique(subjects))}
    labels = np.array([per_subject_label[s] for s in subjects])
    splits = att.grouped_nested_splits(labels, subjects, folds=4, seed=1)
    assert len(splits) == 4
    tested = np.concatenate([test for _, test, _ in splits])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # each slice tested once
    for train, test, inner in splits:
        assert not set(subjects[train]) & set(subjects[test])
        assert len(inner) >= 2
        for inner_train, inner_val in inner:
            assert set(inner_train) | set(inner_val) == set(train)  # inner folds split the outer training part only
            assert not set(subjects[inner_train]) & set(subjects[inner_val])
            assert not set(subjects[inner_train]) & set(subjects[test])
    with pytest.raises(InputError, match="rarest class has 2 subject"):
        att.grouped_nested_splits(np.array([0, 0, 1, 1, 1]), np.array(["a", "e", "b", "c", "d"]))


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    for _ in range(100):
        truth = rng.integers(0, 3, rng.integers(1, 12))
        predicted = rng.integers(0, 3, len(truth))
        assert att._macro_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0))


def region_slices(subjects: int, per_subject: int, seed: int):
    """32x32 slices, two per subject, class 1 brighter than class 0 only on an 8x8 region where
    every map is low; elsewhere both classes are the same noise."""
    rng = np.random.default_rng(seed)
    n = subjects * per_subject
    subject = np.repeat([f"s{i:02d}" for i in range(subjects)], per_subject)
    labels = np.repeat(np.arange(subjects) % 2, per_subject)
    images = rng.uniform(0.2, 0.8, (n, 32, 32))
    region = np.zeros((32, 32), bool)
    region[8:16, 12:20] = True
    images[:, region] = np.where(labels[:, None] == 1, 0.7, 0.3) + rng.normal(0, 0.05, (n, region.sum()))
    maps = rng.normal(0, 0.05, (n, 32, 32))
    maps[:, region] -= 3.0
    return maps, images, labels, subject, region


def test_roi_classification_reports_nested_and_fixed_f1_beside_random_regions():
    maps, images, labels, subjects, region = region_slices(12, 2, seed=17)
    thresholds = [0.5, 0.7, 0.99]
    result = att.roi_classification(maps, images, labels, subjects, None, thresholds=thresholds, folds=3)
    assert result["folds"] == 3 and result["n_subjects"] == 12 and result["n_maps"] == 24
    curve = result["curve"]
    assert curve["threshold"].tolist() == [0.5, 0.7, 0.8, 0.99]  # the fixed 0.8 joins the grid
    assert curve["retained_area"].iloc[0] == pytest.approx(region.mean())
    assert result["fixed"]["threshold"] == 0.8 and result["fixed"]["f1"] == 1.0  # at 0.8 the ROI is the region
    assert result["nested"]["f1"] == 1.0 and len(result["nested"]["chosen_thresholds"]) == 3
    assert set(result["nested"]["chosen_thresholds"]) <= set(curve["threshold"])
    # a random region of the region's area mostly misses it: the ROI's place, not its size, carries the signal
    assert result["control"]["fixed"]["f1"] < 0.8
    assert np.mean(result["fixed"]["per_fold"]) == pytest.approx(curve.loc[curve["threshold"] == 0.8, "f1"].item())
    with pytest.raises(InputError, match="subjects: expected shape"):
        att.roi_classification(maps, images, labels, subjects[:5], None)


def _outputs_with_lesions(tmp_path: Path, size: int = 26) -> tuple[ExperimentOutputs, np.ndarray, dict[str, Path]]:
    """Six AD and six CN subjects, one slice each at offset 0, images at ``size`` (182 / 7).
    The AD slices are brighter exactly on the planted block (rows 70-97 and columns 28-55 of the
    182 grid: rows 10-13, columns 4-7 at size 26), and the model's maps are noise: the image
    finds the block by itself, the model does not."""
    outputs, truth = planted_outputs(tmp_path, "demo_diagnosis_classification", size, (slice(10, 14), slice(4, 8)), seed=11)
    return outputs, np.ones((size, size)), truth


@pytest.mark.slow
def test_attribution_section_scores_the_model_beside_the_image(tmp_path: Path):
    outputs, brain, groundtruth = _outputs_with_lesions(tmp_path)
    section = attribution_section(outputs, brain, groundtruth, {"seed": 0}, tmp_path)
    gt = section["groundtruth"]
    assert gt["slices"] == 6 and gt["n_subjects"] == 6
    assert gt["uptake_fraction"] == pytest.approx(16 / 26**2)
    scores = gt["scores"]
    assert scores["intensity_high"]["mean"] == 1.0  # the image alone finds the block
    assert scores["difference_from_other_class"]["mean"] > 0.99  # the CN mean is noisy per pixel: nearly 1
    assert abs(scores["random_region"]["mean"] - 0.5) < 0.15
    assert scores["evidence"]["mean"] < 0.8 and scores["evidence"]["beats_every_trivial_fraction"] == 0.0
    assert gt["auc_evidence"] == scores["evidence"]["mean"]  # the headline is the per-subject mean now
    assert "pooled_auc_evidence" in gt and "per subject" in gt["unit"]
    roi = section["roi"]
    assert roi["n_subjects"] == 12 and roi["folds"] == 5
    assert roi["fixed"]["threshold"] == 0.8 and 0.0 <= roi["control"]["fixed"]["f1"] <= 1.0
    assert (tmp_path / "attribution_groundtruth.png").stat().st_size > 0
    assert (tmp_path / "attribution_thresholds.png").stat().st_size > 0

    # the report states the unit and the reference, and shows the control beside the ROI F1
    from magicflow.evaluate.experiment import to_json
    from magicflow.report.experiment import attribution as report_attribution

    html = report_attribution({"attribution": to_json(section), "folds_run": 0}, {"attribution": {}}, tmp_path)
    assert "per slice, averaged per subject; mean ± sd over 6 subjects" in html
    assert "image intensity, high (no model)" in html and "random region of the planted mask&#x27;s area" in html
    assert f"{scores['intensity_high']['mean']:.3f} ± {scores['intensity_high']['sd']:.3f}" in html
    assert "0.00 of subjects" in html  # neither model map beats the image anywhere
    assert "fixed in advance at 0.80" in html and "random region, same area" in html
    assert "grouped by subject (12 subjects, 12 maps)" in html

    # the overview cards carry each headline beside its control, not the curve's optimistic maximum
    from magicflow.report.experiment import _attribution_cards

    cards = dict(_attribution_cards(to_json(section)))
    assert cards["attribution ROI F1, held-out subjects / random region"] == (
        f"{roi['nested']['f1']:.3f} / {roi['control']['nested']['f1']:.3f}"
    )
    best_trivial = max(b["mean"] for b in scores.values() if b["kind"] == "trivial")
    assert cards["attribution vs planted uptake, AUC per subject: evidence map / best map without a model"] == (
        f"{scores['evidence']['mean']:.3f} / {best_trivial:.3f}"
    )
    assert not any("best ROI F1" in name for name in cards)


def test_report_still_reads_metrics_written_before_the_baselines(tmp_path: Path):
    from magicflow.report.experiment import attribution as report_attribution

    old = {
        "n_maps": 8,
        "thresholds": [{"threshold": 0.5, "f1": 0.6, "f1_std": 0.1, "retained_area": 0.02}],
        "best_threshold": 0.5,
        "best_f1": 0.6,
        "groundtruth": {"slices": 2, "auc_evidence": 0.81, "auc_low_likelihood": 0.6, "uptake_fraction": 0.05},
    }
    html = report_attribution({"attribution": old, "folds_run": 0}, {"attribution": {}}, tmp_path)
    assert "Best macro F1 0.600 at threshold 0.500" in html and "the threshold picked on the same folds" in html
    assert "0.810" in html and "no trivial map was scored beside them" in html
