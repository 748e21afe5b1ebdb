"""generation_section and its report: per-fold scoring against test subjects only, a reference of
matched size and class mix, minimum sizes, the memorisation null, and the report's wording."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from magicflow.evaluate import experiment as ev
from magicflow.evaluate.inputs import ExperimentOutputs, FoldOutputs, subject_groups
from magicflow.experiments.data import SliceSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["A", "B"]
SETTINGS = {"seed": 0, "bootstrap": 20, "nearest_k": 1, "ms_ssim_pairs": 10}


class PixelMeans:
    """Stand-in extractor: 4 x 4 block means (16 features), no training."""

    kind, metric_suffix = "in_domain", "ID"

    def features(self, images) -> np.ndarray:
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()

    def describe(self) -> dict:
        return {
            "kind": "in_domain",
            "training": {"steps": 100, "heldout_balanced_accuracy": 0.9, "chance_balanced_accuracy": 0.5},
        }


def slice_set(labels: list[int], subjects: list[str], seed: int, brightness: float = 0.0) -> SliceSet:
    """Slices of 64 x 64 in [0, 1]: class sets the mean, each subject a pattern, slices jitter."""
    rng = np.random.default_rng(seed)
    patterns = {s: rng.random((64, 64)) * 0.3 for s in dict.fromkeys(subjects)}
    images = np.stack([0.2 + 0.4 * y + brightness + patterns[s] + 0.02 * rng.random((64, 64)) for y, s in zip(labels, subjects)])
    meta = pd.DataFrame({"dataset": "demo", "subject": subjects, "offset": 0})
    return SliceSet(torch.from_numpy(np.clip(images, 0, 1)[:, None].astype(np.float32)), torch.tensor(labels), meta)


def fold_sets(fold: int) -> dict:
    """Test: 6 class-A and 3 class-B subjects, one slice each... class mix 2:1. Reference: 8 + 8
    training subjects at 2 offsets each. Validation: a distinct brightness nothing may read."""
    test_subjects = [f"t{fold}{i}" for i in range(9)]
    train_subjects = [f"r{fold}{i}" for i in range(16) for _ in range(2)]
    train_labels = [int(s[-1]) % 2 for s in train_subjects]
    return {
        "test": slice_set([0] * 6 + [1] * 3, test_subjects, seed=10 + fold),
        "reference": slice_set(train_labels, train_subjects, seed=20 + fold),
        "train": slice_set(train_labels * 2, train_subjects * 2, seed=30 + fold),
        "val": slice_set([0, 1], [f"v{fold}0", f"v{fold}1"], seed=40 + fold, brightness=0.5),
    }


def outputs(n_folds: int = 2) -> ExperimentOutputs:
    rng = np.random.default_rng(0)
    folds = []
    for k in range(n_folds):
        samples = np.stack([np.clip(0.2 + 0.4 * c + 0.3 * rng.random((10, 1, 64, 64)), 0, 1) for c in range(2)]).astype(
            np.float32
        )
        folds.append(FoldOutputs(f"fold-{k}", pd.DataFrame(), pd.DataFrame(), {"samples": samples}, {}))
    return ExperimentOutputs("demo", CLASSES, {}, folds)


@pytest.fixture(scope="module")
def section(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("evaluation")
    sets = {f"fold-{k}": fold_sets(k) for k in range(2)}
    extractors = {name: PixelMeans() for name in sets}
    return {"metrics": ev.generation_section(outputs(), sets, extractors, SETTINGS, out), "dir": out, "sets": sets}


def test_every_fold_is_scored_against_its_test_subjects_with_matched_class_mix(section):
    g = section["metrics"]
    assert g["folds_scored"] == ["fold-0", "fold-1"] and len(g["per_fold"]) == 2
    for fold in g["per_fold"]:
        # test mix 6:3, 10 samples per class, 16 reference rows per class: factor min(10/3, 16/3, 10/6, 16/6) = 5/3 -> 10:5
        assert fold["n_test"] == 9 and fold["n_test_subjects"] == 9
        assert fold["compared_per_class"] == {"A": 10, "B": 5} and fold["n_compared"] == 15
        assert fold["overall"]["generated"]["n_fake"] == fold["overall"]["real"]["n_fake"] == 15
        assert fold["overall"]["generated"]["n_real"] == 9  # the test set alone: no validation slices
    assert g["overall"]["generated"]["n_fake"] == 15 and isinstance(g["overall"]["generated"]["n_fake"], int)
    assert g["n_heldout"] == 18 and g["n_generated"] == 20 and g["n_generated_total"] == 40  # n_generated: per fold


def test_small_sets_are_reported_as_not_computed_with_the_reason(section):
    fold = section["metrics"]["per_fold"][0]
    generated = fold["overall"]["generated"]
    assert generated["fid"] is None and "n <= D: 9 real and 15 generated rows for 16" in generated["not_computed"]["fid"]
    assert generated["kid"] is None and generated["not_computed"]["kid"].startswith("n < 10")
    assert generated["precision"] is not None and "prdc" not in generated["not_computed"]  # 9 and 15 rows >= 5 x k
    per_class = fold["per_class"]["B"]["real"]  # 3 test slices
    assert per_class["coverage"] is None and per_class["not_computed"]["prdc"] == "n < 5 (5 x nearest_k=1): 3 real rows"
    assert per_class["kid"] is None and "kid not computed" in per_class["note"]


def test_summary_is_mean_and_sd_over_folds():
    blocks = [{"fid": 2.0, "kid": None, "fid_ci": [1, 3], "not_computed": {"kid": "n < 10: 9 real"}}, {"fid": 4.0, "kid": None}]
    summary = ev.summarise_folds(blocks)
    assert summary["fid"] == 3.0 and summary["fid_sd"] == pytest.approx(np.sqrt(2.0)) and summary["fid_folds"] == 2
    assert summary["kid"] is None and summary["not_computed"] == {"kid": "n < 10: 9 real"} and "fid_ci" not in summary
    assert ev.summarise_folds(blocks[:1]) == {**blocks[0], "n_folds": 1}
    skipped_first = ev.summarise_folds([{"skipped": "no rows", "not_computed": {"all": "no rows"}}, {"fid": 5.0}])
    assert skipped_first["fid"] == 5.0 and skipped_first["fid_folds"] == 1
    assert skipped_first["note"] == "all not computed in 1 of 2 folds: no rows"


def test_memorisation_reports_generated_beside_the_null(section):
    memo = section["metrics"]["memorisation"]
    assert memo["n_folds"] == 2 and memo["n_null"] == 9 and memo["n_generated"] == 20 and memo["space"] == "pixels"
    assert {"null_median_ratio", "null_p05", "fraction_below_null_p05"} <= set(memo) and "fraction_below_0.5" not in memo
    assert (section["dir"] / "memorisation.png").is_file() and (section["dir"] / "real_vs_generated.png").is_file()


def test_extractor_accuracy_and_definitions_are_recorded(section):
    g = section["metrics"]
    assert g["extractor"]["heldout_balanced_accuracy"] == 0.9 and g["extractor"]["steps"] == 100
    assert "TEST subjects" in g["definitions"]["judged_against"] and "n > D" in g["min_sizes"]["fid"]


def test_subject_groups_fall_back_to_one_per_slice():
    assert subject_groups(fold_sets(0)["reference"])[:3].tolist() == ["demo/r00", "demo/r00", "demo/r01"]
    plain = SliceSet(torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long))
    assert len(set(subject_groups(plain))) == 3


def test_the_report_says_what_each_number_is_measured_on(section, tmp_path: Path):
    from test_report import metrics_record

    from magicflow.report.experiment import build_report

    old = metrics_record()
    page_old = build_report(copy.deepcopy(old), {}, tmp_path, {})  # metrics.json from before still reads
    assert "42.500" in page_old and "without a null" in page_old
    metrics = copy.deepcopy(old)
    metrics["feature_extractor"]["trained_per_fold"] = True
    metrics["generation"] = ev.to_json(section["metrics"])
    page = build_report(metrics, {}, tmp_path, {})
    part = page.split('id="generation"', 1)[1].split("</section>", 1)[0]
    assert "test subjects" in part and "18 test slices of 18 subjects over 2 fold(s)" in part
    assert "balanced accuracy on the validation subjects is 0.900 (chance 0.500" in part
    assert "Per fold" in part and "FID sd over folds" in part and "n &lt;= D" in part
    assert "fraction below the null" in part and "real test slices (null)" in part


def test_generation_sets_keep_validation_out_of_every_comparison_set(tmp_path: Path):
    from magicflow.evaluate.inputs import generation_sets

    rows, split = [], {}
    for name, subjects in (("train", ["a", "b"]), ("val", ["c"]), ("test", ["d"])):
        split[name] = pd.DataFrame(
            {"dataset": "demo", "subject": subjects, "session": "01", "image": [f"sub-{s}_T1w" for s in subjects], "label": "A"}
        )
        for s in subjects:
            rows += [{"dataset": "demo", "image": f"sub-{s}_T1w", "subject": s, "offset": o, "label": "A"} for o in (-1, 0, 1)]
    slices = pd.DataFrame(rows).assign(index=lambda t: np.arange(len(t)))
    (tmp_path / "fold-0").mkdir()
    for name, table in split.items():
        table.to_csv(tmp_path / "fold-0" / f"{name}.tsv", sep="\t", index=False)
    arrays = {"demo": np.arange(len(slices), dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 4, 4), np.float32)}
    sets = generation_sets(slices, arrays, ["A"], tmp_path, ["fold-0"], {"train": [-1, 0, 1], "eval": [0]})["fold-0"]
    subjects = {name: sorted(set(s.meta["subject"])) for name, s in sets.items()}
    assert subjects == {"train": ["a", "b"], "reference": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert len(sets["train"]) == 6 and len(sets["reference"]) == 2 and set(sets["test"].meta["offset"]) == {0}


def test_baselines_are_scored_fold_by_fold_like_the_flow(section, tmp_path: Path):
    from magicflow.experiments import infer

    out = outputs()
    given = {}
    rng = np.random.default_rng(1)
    for k in range(2):
        folder = tmp_path / "glow" / f"fold-{k}"
        infer.write_samples(rng.random((2, 10, 1, 64, 64)).astype(np.float32), CLASSES, folder, nifti_per_class=0)
        given.setdefault("glow", {"settings": {"name": "glow", "label": "Glow"}, "samples": {}})["samples"][f"fold-{k}"] = folder
    extractors = {name: PixelMeans() for name in section["sets"]}
    result = ev.generative_comparison_section(out, section["metrics"], section["sets"], extractors, given, SETTINGS, tmp_path)
    glow = result["models"][1]
    assert result["folds_scored"] == ["fold-0", "fold-1"] and result["n_heldout"] == 18
    assert [f["fold"] for f in glow["per_fold"]] == ["fold-0", "fold-1"] and glow["metrics"]["n_folds"] == 2
    assert all(f["n_fake"] == 15 and f["n_real"] == 9 for f in glow["per_fold"])  # the flow's matched sizes
    assert result["reference"] is section["metrics"]["overall"]["real"] and glow["n_generated"] == 40
    # the former call, one held-out set and one extractor, still scores the first fold
    single = ev.generative_comparison_section(
        ExperimentOutputs("demo", CLASSES, {}, out.folds[:1]),
        section["metrics"],
        section["sets"]["fold-0"]["test"],
        PixelMeans(),
        {"glow": {**given["glow"], "samples": {"fold-0": given["glow"]["samples"]["fold-0"]}}},
        SETTINGS,
        tmp_path,
    )
    assert single["folds_scored"] == ["fold-0"] and single["models"][1]["per_fold"][0]["n_fake"] == 15


def test_in_domain_extractors_are_trained_per_fold_and_scored_on_validation(tmp_path: Path):
    from magicflow.evaluate.commands import fold_extractors

    sets = {f"fold-{k}": fold_sets(k) for k in range(2)}
    settings = {"seed": 0, "features": {"kind": "in_domain", "epochs": 1, "feature_dim": 16, "input_size": 16}}
    extractors = fold_extractors(settings, sets, 2, tmp_path)
    assert extractors["fold-0"] is not extractors["fold-1"]
    assert extractors["fold-0"].checksum != extractors["fold-1"].checksum  # different training subjects
    training = extractors["fold-1"].info["training"]
    # 64 training slices at batch 32: 2 steps per epoch, so the 100-step floor takes 50 epochs
    assert (training["steps"], training["epochs"], training["heldout_images"]) == (100, 50, 2)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["feature_extractor.pt", "feature_extractor_fold-1.pt"]
