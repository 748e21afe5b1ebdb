"""Issue 30, points 5 and 10: classification per image (slices' log-likelihoods summed), the
chance test permuting subjects, rankings from log-likelihood margins, never from rounded
posteriors or file order. Every expected value is worked by hand in the comments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magicflow.evaluate import classification as cls
from magicflow.evaluate.inputs import ExperimentOutputs, FoldOutputs, image_scores, read_predictions, slice_scores

CLASSES = ["CN", "AD"]


def _table(rows: list[tuple[str, str, list[float]]], temperature: float = 2.0, prior=(0.0, 0.0)) -> pd.DataFrame:
    """predictions.tsv rows: (subject, true label, per-class log-likelihoods of one slice);
    one image per subject, offsets counted per image."""
    records, seen = [], {}
    for subject, true, ll in rows:
        seen[subject] = seen.get(subject, -1) + 1
        records.append(
            {
                "dataset": "d",
                "subject": subject,
                "session": "1",
                "image": f"sub-{subject}_T1w",
                "offset": seen[subject],
                **{f"loglik_{c}": v for c, v in zip(CLASSES, ll)},
                **{f"logprior_{c}": p for c, p in zip(CLASSES, prior)},
                "true": true,
                "temperature": temperature,
            }
        )
    return pd.DataFrame(records)


# Two subjects x three slices where the per-slice majority and the summed log-likelihood
# disagree: s1 (CN) slices say AD, AD, CN, but the sums are CN -2, AD -10 -> CN; s2 (AD)
# slices say CN, CN, AD, sums CN -10, AD -2 -> AD. Per image 2/2 right, per slice 2/6.
DISAGREE = [
    ("s1", "CN", [-1.0, 0.0]),
    ("s1", "CN", [-1.0, 0.0]),
    ("s1", "CN", [0.0, -10.0]),
    ("s2", "AD", [0.0, -1.0]),
    ("s2", "AD", [0.0, -1.0]),
    ("s2", "AD", [-10.0, 0.0]),
]


def test_images_sum_their_slices_and_the_prior_once():
    units = image_scores(_table(DISAGREE, prior=(np.log(0.25), np.log(0.75))), CLASSES)
    assert units.true.tolist() == [0, 1]
    assert units.images["slices"].tolist() == [3, 3] and units.images["subject"].tolist() == ["s1", "s2"]
    expected = [-2 + np.log(0.25), -10 + np.log(0.75), -10 + np.log(0.25), -2 + np.log(0.75)]
    assert units.scores.ravel().tolist() == pytest.approx(expected)
    # posterior of s1's CN at T = 2: 1 / (1 + exp((-10 + ln .75 + 2 - ln .25) / 2)) = 1 / (1 + exp(-4) sqrt(3))
    assert units.posteriors()[0, 0] == pytest.approx(1 / (1 + np.exp(-4) * np.sqrt(3)))


def test_per_image_metrics_differ_from_per_slice_where_they_should():
    table = _table(DISAGREE)
    units = image_scores(table, CLASSES)
    image = cls.classification_metrics(units.true, None, CLASSES, scores=units.scores)
    assert image["accuracy"] == 1.0 and image["n"] == 2 and image["macro_auc"] == 1.0
    true, scores = slice_scores(table, CLASSES)
    per_slice = cls.classification_metrics(true, None, CLASSES, scores=scores)
    assert per_slice["accuracy"] == pytest.approx(2 / 6) and per_slice["n"] == 6


def test_margins_and_the_three_class_auc_from_them():
    assert cls.margins(np.array([[3.0, 1.0, 0.0], [1.0, 1.0, 0.0]])).tolist() == [[2, -2, -3], [0, 0, -1]]
    scores = np.array([[0, -300, -600], [-200, 0, -900], [-100, 0, -400], [-700, -500, 0]], float)
    # margins (positives | negatives): class 0: 300, -200 | -100, -700 -> (1 + 1 + 0 + 1) / 4;
    # class 1: 100 | -300, 200, -500 -> 2/3; class 2: 500 | -600, -900, -400 -> 1
    result = cls.classification_metrics(np.array([0, 0, 1, 2]), None, ["A", "B", "C"], scores=scores)
    assert result["macro_auc"] == pytest.approx((0.75 + 2 / 3 + 1) / 3)
    assert result["accuracy"] == pytest.approx(3 / 4)


def test_posteriors_that_round_to_one_are_still_ordered_by_their_margin(tmp_path: Path):
    """Image B (wrong, margin 20) comes first in the file, image A (right, margin 25) second.
    Both posteriors are 1 at %.6g, so the old curve kept B by file order at 50% rejection
    (accuracy 0); the margins keep A (accuracy 1)."""
    from magicflow.experiments.infer import write_predictions

    table = _table([("b", "AD", [0.0, -20.0]), ("a", "CN", [0.0, -25.0])], temperature=1.0)
    write_predictions(table, tmp_path / "predictions.tsv")
    units = image_scores(read_predictions(tmp_path / "predictions.tsv"), CLASSES)
    rounded = np.array([[float(f"{v:.6g}") for v in row] for row in units.posteriors()])
    assert (rounded.max(1) == 1.0).all()
    curve = cls.rejection_curve(units.true, None, steps=3, scores=units.scores)
    assert curve["retained"].tolist() == [2, 1, 1] and curve["accuracy"].tolist() == [0.5, 1.0, 1.0]
    # on the rounded posteriors the two are tied: the kept half shares the tie (0.5), whatever the file order
    tied = cls.rejection_curve(units.true, rounded, steps=3)
    assert tied["accuracy"].tolist() == [0.5, 0.5, 0.5]
    assert cls.rejection_curve(units.true[::-1], rounded[::-1], steps=3)["accuracy"].tolist() == [0.5, 0.5, 0.5]


def test_a_tie_cut_in_the_middle_counts_its_share():
    # confidences 0.9 (right), then a tie of three at 0.7 (right, wrong, wrong), then 0.6 (wrong):
    # keeping 3 takes 0.9 and two thirds of the tie: (1 + 2 * 1/3) / 3 = 5/9
    confidence = np.array([0.7, 0.9, 0.7, 0.6, 0.7])
    proba = np.stack([confidence, 1 - confidence], axis=1)
    true = np.array([0, 0, 1, 1, 1])
    curve = cls.rejection_curve(true, proba, steps=6)  # retained 5, 4, 3, 2, 1, 1
    assert curve["accuracy"].tolist() == pytest.approx([2 / 5, (1 + 1) / 4, 5 / 9, (1 + 1 / 3) / 2, 1, 1])


def test_the_chance_test_permutes_subjects_not_images():
    true, pred = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    # four independent images: 4 of the 4! label orders score 1 -> p = 1/6
    assert cls.chance_test(true, pred, 2)["p_value"] == pytest.approx(1 / 6)
    # two subjects of two images each: 2 orders, one scores 1 -> p = 1/2
    grouped = cls.chance_test(true, pred, 2, groups=np.array(["a", "a", "b", "b"]))
    assert grouped["p_value"] == pytest.approx(1 / 2) and grouped["units"] == 2 and grouped["n"] == 4
    # a subject whose sessions carry two labels is one unit per label
    assert cls.chance_test(true, pred, 2, groups=np.array(["a", "a", "a", "a"]))["units"] == 2


def _outputs(*tables: pd.DataFrame) -> ExperimentOutputs:
    folds = [FoldOutputs(f"fold-{k}", pd.DataFrame(), t, {}, {}) for k, t in enumerate(tables)]
    return ExperimentOutputs("tiny", CLASSES, {}, folds)


def test_the_classification_section_is_per_image_and_says_so(tmp_path: Path):
    from magicflow.evaluate.experiment import classification_section
    from magicflow.report.experiment import classification

    section = classification_section(_outputs(_table(DISAGREE)), {"calibration_bins": 10, "seed": 0}, tmp_path)
    assert section["per_fold"][0]["accuracy"] == 1.0 and section["per_fold"][0]["n"] == 2
    assert section["per_slice"]["accuracy"] == pytest.approx(1 / 3) and section["per_slice"]["n"] == 6
    assert section["confusion"].tolist() == [[1, 0], [0, 1]]
    unit = section["unit"]
    assert (unit["images"], unit["subjects"], unit["slices_min"], unit["slices_max"]) == (2, 2, 3, 3)
    assert unit["temperature"] == {"fold-0": 2.0} and "smoothed" in unit["temperature_origin"]
    assert section["chance"]["p_value"] == pytest.approx(1 / 2) and section["chance"]["units"] == 2
    # both images right with confidence 1 / (1 + e^-4) at T = 2 (margin 8): ECE = e^-4 / (1 + e^-4)
    assert section["calibration"]["ece"] == pytest.approx(np.exp(-4) / (1 + np.exp(-4)))
    page = classification({"classification": section}, tmp_path)
    assert "Per image (2 test images of 2 subjects, log-likelihoods summed over 3 slices each" in page
    assert "labels permuted across subjects (2 units)" in page and "fold-0 2" in page
    assert "Per slice, for comparison only" in page


def test_baselines_are_scored_on_the_same_images(tmp_path: Path):
    """The baseline's slices of s1 (CN) say CN .9, CN .9, AD .99: summed log-softmax
    CN 2 ln .9 + ln .01 = -4.816 < AD 2 ln .1 + ln .99 = -4.615 -> AD, wrong although two
    slices of three are right; s2 (AD) is AD on every slice. Per image 1/2, per slice 5/6."""
    from magicflow.evaluate.experiment import comparison_section
    from magicflow.experiments.infer import write_predictions

    flow = _table(DISAGREE)
    p = np.log
    baseline = _table(
        [
            ("s1", "CN", [p(0.9), p(0.1)]),
            ("s1", "CN", [p(0.9), p(0.1)]),
            ("s1", "CN", [p(0.01), p(0.99)]),
            *[("s2", "AD", [p(0.2), p(0.8)])] * 3,
        ],
        temperature=1.0,
    )
    write_predictions(baseline, tmp_path / "b.tsv")
    units = image_scores(flow, CLASSES)
    flow_rows = [{"fold": "fold-0", **cls.classification_metrics(units.true, None, CLASSES, scores=units.scores)}]
    result = comparison_section(
        _outputs(flow), flow_rows, {"b": {"settings": {"name": "b", "label": "B"}, "predictions": {"fold-0": tmp_path / "b.tsv"}}}
    )
    row = result["models"][1]
    assert row["per_fold"][0]["accuracy"] == 0.5 and row["mean"]["balanced_accuracy"] == 0.5
    assert "summed over the image's evaluation slices" in result["unit"]
    from magicflow.report.experiment import comparison

    assert "Unit: per test image" in comparison({"comparison": result})


def test_a_predictions_table_without_log_priors_is_refused():
    from magicflow.errors import InputError

    with pytest.raises(InputError, match=r"old.tsv lacks \['logprior_CN', 'logprior_AD'\]; rerun classify"):
        image_scores(_table(DISAGREE).drop(columns=["logprior_CN", "logprior_AD"]), CLASSES, "old.tsv")


def test_bad_scores_are_named():
    from magicflow.errors import InputError

    with pytest.raises(InputError, match="scores: log-scores must be finite"):
        cls.classification_metrics(np.array([0, 1]), None, CLASSES, scores=np.array([[0.0, -np.inf], [0.0, 1.0]]))
    with pytest.raises(InputError, match="true has 3 labels but scores has 2 rows"):
        cls.rejection_curve(np.array([0, 1, 1]), None, scores=np.zeros((2, 2)))


def test_a_report_of_older_metrics_says_the_unit_was_not_recorded(tmp_path: Path):
    from test_report import metrics_record

    from magicflow.report.experiment import classification

    assert "Unit not recorded (metrics from an older evaluation): per slice." in classification(metrics_record(), tmp_path)
