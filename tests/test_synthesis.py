"""``magicflow synthesise``: a labelled synthetic dataset from a generation experiment.

A one-epoch generation model of a tiny two-class set draws the slices; checked: the counts per
class and fold, each sample's distance to its nearest training slice recomputed by hand from the
written array, the withholding rule (a sample is withheld exactly when it lies nearer to a
training slice than the threshold, which is the quantile of real held-out slices' nearest
distances), the NIfTI files of kept samples only, the BIDS derivative description, and the
refusal of a classification experiment."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magicflow.cli import main
from magicflow.config import experiment_settings, validate_config
from magicflow.errors import InputError
from magicflow.evaluate.synthesis import shares, withhold_threshold
from magicflow.view import View

from test_baselines import SHIPPED

SIDE = 182


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("generation")
    rng = np.random.default_rng(0)
    rows, images = [], []
    for s in range(9):
        scanner = "A" if s % 2 else "B"
        rows.append({"subject": f"{s:02d}", "session": "01", "image": f"sub-{s:02d}_ses-01_T1w", "modality": "T1w"})
        rows[-1].update(tracer="n/a", scanner=scanner, offset=0, index=len(images))
        images.append(rng.random((1, SIDE, SIDE), dtype=np.float32) * 0.3 + (0.5 if scanner == "A" else 0.0))
    slices = np.stack(images)
    mask = np.zeros((1, SIDE, SIDE), np.uint8)
    mask[0, 40:140, 40:140] = 1
    pd.DataFrame(rows).to_csv(root / "slices.tsv", sep="\t", index=False)
    np.savez(root / "slices.npz", slices=slices, mask_0=mask)
    config = copy.deepcopy(SHIPPED)
    config["experiments"] = {
        "gen": {
            "datasets": ["demo"],
            "label": "scanner",
            "classes": ["A", "B"],
            "modalities": ["T1w"],
            "model": "generation",
            "preset": "small",
            "image_size": 16,
            "offsets": {"train": [0], "eval": [0]},
            "folds": 3,
            "run_folds": 2,
            "training": {"epochs": 1, "batch_size": 2, "device": "cpu"},
        }
    }
    (root / "experiment.json").write_text(json.dumps(experiment_settings(validate_config(config), "gen")))
    inputs = ["--experiment", str(root / "experiment.json"), "--slices", f"demo={root / 'slices.tsv'}"]
    inputs += ["--arrays", f"demo={root / 'slices.npz'}"]
    assert main(["split", *inputs[:4], "--out", str(root / "folds")]) == 0
    models = []
    for fold in ("fold-0", "fold-1"):
        out = root / "models" / fold
        assert main(["train", *inputs, "--fold-dir", str(root / "folds" / fold), "--out", str(out)]) == 0
        models += ["--model", f"{fold}={out / 'best.pt'}"]
    return {"root": root, "inputs": inputs, "models": models, "slices": slices}


def _synthesise(experiment: dict, out: Path, *extra: str) -> int:
    return main(
        ["synthesise", *experiment["inputs"], "--folds", str(experiment["root"] / "folds"), *experiment["models"]]
        + [
            "--out",
            str(out),
            *extra,
        ]
    )


def test_every_sample_is_listed_measured_and_withheld_by_the_rule(experiment, tmp_path: Path):
    out = tmp_path / "synthetic"
    assert _synthesise(experiment, out, "--per-class", "5", "--temperature", "0.8") == 0
    table = pd.read_csv(out / "synthetic.tsv", sep="\t")
    # 5 per class over two folds' models: 3 from fold-0, 2 from fold-1
    assert table.groupby(["fold", "class"]).size().to_dict() == {
        ("fold-0", "A"): 3,
        ("fold-0", "B"): 3,
        ("fold-1", "A"): 2,
        ("fold-1", "B"): 2,
    }
    assert (table["withheld"] == (table["d_train"] < table["threshold"])).all()
    with np.load(out / "synthetic.npz") as archive:
        kept, labels, folds = archive["samples"], archive["labels"], archive["folds"]
        assert list(archive["classes"]) == ["A", "B"]
    assert len(kept) == (~table["withheld"]).sum() and kept.shape[1:] == (1, 16, 16)
    assert list(labels) == list(table.loc[~table["withheld"], "class"])
    # the distance recomputed by hand: the first kept sample of fold-0 against that fold's training slices
    train = pd.read_csv(experiment["root"] / "folds" / "fold-0" / "train.tsv", sep="\t", dtype=str)
    index = pd.read_csv(experiment["root"] / "slices.tsv", sep="\t", dtype=str).set_index("image")["index"].astype(int)
    real = View(16).images(experiment["slices"][index[train["image"]].to_numpy()])
    first = int(np.flatnonzero(folds == "fold-0")[0])
    row = table.loc[~table["withheld"]].iloc[first]
    distances = np.linalg.norm((real - kept[first]).reshape(len(real), -1).astype(np.float64), axis=1)
    assert (
        row["d_train"] == pytest.approx(distances.min()) and row["nearest_train_image"] == train["image"].iloc[distances.argmin()]
    )
    files = sorted((out / "slices").glob("*.nii.gz"))
    assert len(files) == len(kept) and files[0].name.endswith("_desc-synthetic.nii.gz")
    assert nib.load(files[0]).shape == (SIDE, 1, SIDE)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "magicflow"


def test_withheld_samples_are_listed_and_never_written(experiment, tmp_path: Path, monkeypatch):
    import magicflow.evaluate.synthesis as synthesis

    monkeypatch.setattr(synthesis, "withhold_threshold", lambda train, heldout, quantile: float("inf"))  # every sample too near
    out = tmp_path / "synthetic"
    assert _synthesise(experiment, out, "--per-class", "2") == 0
    table = pd.read_csv(out / "synthetic.tsv", sep="\t")
    assert len(table) == 4 and table["withheld"].all()
    assert not list((out / "slices").glob("*.nii.gz"))
    with np.load(out / "synthetic.npz") as archive:
        assert len(archive["samples"]) == 0 and len(archive["labels"]) == 0


def test_the_threshold_is_the_held_out_quantile_by_hand():
    train = np.array([[0.0], [10.0]])
    heldout = np.array([[1.0], [2.0], [7.0]])  # nearest distances 1, 2, 3
    assert withhold_threshold(train, heldout, 0.5) == pytest.approx(2.0)
    assert withhold_threshold(train, heldout, 0.0) == pytest.approx(1.0)
    assert shares(5, 2) == [3, 2] and shares(1, 3) == [1, 0, 0]
    with pytest.raises(InputError, match="no held-out slices"):
        withhold_threshold(train, np.zeros((0, 1)), 0.5)


def test_a_classification_experiment_is_refused(experiment, tmp_path: Path, capsys):
    settings = json.loads((experiment["root"] / "experiment.json").read_text())
    settings["model"] = "classification"
    (tmp_path / "experiment.json").write_text(json.dumps(settings))
    inputs = ["--experiment", str(tmp_path / "experiment.json"), *experiment["inputs"][2:]]
    code = main(
        ["synthesise", *inputs, "--folds", str(experiment["root"] / "folds"), *experiment["models"], "--out", str(tmp_path / "s")]
    )
    assert code == 2 and "synthesise needs a generation experiment, not 'classification'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_synthetic_worth_trains_on_each_set_and_tests_on_real_subjects(experiment, tmp_path: Path):
    from magicflow.report.experiment import synthetic_worth

    synthetic = tmp_path / "synthetic"
    assert _synthesise(experiment, synthetic, "--per-class", "4", "--withhold-quantile", "0") == 0
    out = tmp_path / "worth.json"
    worth = ["synthetic-worth", *experiment["inputs"], "--folds", str(experiment["root"] / "folds")]
    worth += ["--synthetic", str(synthetic / "synthetic.npz"), "--epochs", "1", "--bootstrap", "100", "--out", str(out)]
    assert main(worth) == 0
    result = json.loads(out.read_text())
    rows = pd.DataFrame(result["rows"])
    names = ["real", "synthetic", "real + synthetic x0.5", "real + synthetic x1", "real + synthetic smallest class"]
    assert list(rows["training_set"].iloc[:5]) == names and list(rows["classifier"].unique()) == ["flow", "resnet18"]
    fold0 = rows[(rows["fold"] == "fold-0") & (rows["classifier"] == "flow")].set_index("training_set")
    real = fold0.loc["real", "real_slices"]
    assert fold0.loc["synthetic", ["real_slices", "synthetic_slices"]].tolist() == [0, 4]  # fold-0 drew 2 per class
    assert fold0.loc["real + synthetic x0.5", "synthetic_slices"] == min(4, round(0.5 * real))
    assert fold0.loc["real", "difference_vs_real"] == 0 and (rows["test_images"] == rows["test_images"].iloc[0]).all()
    for _, r in rows.iterrows():
        low, high = r["interval"]
        assert 0 <= low <= high <= 1 and 0 <= r["balanced_accuracy"] <= 1
    page = synthetic_worth(result)
    assert "Augmenting the smallest class" in page and page.count("<tr>") == (len(rows) + 1) + (
        2 * 2 * 2 + 1
    )  # every row; then real and smallest-class rows


def test_balanced_accuracy_and_paired_resamples_by_hand():
    from magicflow.evaluate.synthetic_worth import balanced_accuracy, paired_bootstrap

    true = np.array([0, 0, 0, 1, 1, 1])
    worse = np.array([0, 0, 1, 1, 1, 0])  # one error per class
    assert balanced_accuracy(true, worse, 2) == pytest.approx(2 / 3)
    subjects = np.array(["s1", "s2", "s3", "s4", "s5", "s6"])
    resampled = paired_bootstrap(true, {"perfect": true, "worse": worse}, subjects, 2, n=200)
    # the same resamples for both sets: the perfect one never scores below the other on any resample
    # (independent resamples would let a lucky draw of "worse" beat an unlucky one of "perfect")
    assert (resampled["perfect"] >= resampled["worse"]).all() and (resampled["perfect"] > resampled["worse"]).any()
