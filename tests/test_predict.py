"""Using a trained model: ``export-model`` writes one folder that travels, ``predict`` applies it
to new slices.

A two-fold experiment is trained, classified and exported through the CLI; the folder is moved
away from the training tree and used from there. Checked: each fold's posterior of its own test
images is the one its classify stage wrote (the exported calibration is that fold's), the
ensemble is the folds' mean, the rejection position orders by confidence, every attribution map
sums to the folds' mean log-likelihood of the predicted class and lies on the MNI grid, and the
refusals (another modality, an untrained class, a missing offset, slices scaled or sampled
otherwise, a folder missing a fold) each say why."""

from __future__ import annotations

import copy
import html
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from magicflow.cli import main
from magicflow.config import experiment_settings, validate_config
from magicflow.errors import InputError
from magicflow.evaluate.predict import reject_at
from magicflow.experiments.portable import MODEL_CARD, PortableModel, t_interval
from magicflow.preprocess.template import GRID_1MM_AFFINE
from magicflow.slices import CENTRAL_INDEX
from magicflow.view import View

from test_baselines import SHIPPED

SIDE = 182


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _slices(rng: np.random.Generator, rows: list[dict], subjects: list[tuple[str, str, str]], offsets=(0, 1)) -> np.ndarray:
    """Append one row per subject and offset; scanner A images are brighter than B's."""
    images = []
    for subject, scanner, modality in subjects:
        image = f"sub-{subject}_ses-01_{modality}"
        for offset in offsets:
            rows.append(
                {"subject": subject, "session": "01", "image": image, "modality": modality, "tracer": "n/a"}
                | {"scanner": scanner, "offset": offset, "index": len(images)}
            )
            base = {"A": 0.5, "B": 0.0}.get(scanner, 0.25)
            images.append(rng.random((1, SIDE, SIDE), dtype=np.float32) * 0.3 + base)
    return np.stack(images)


def _shipped_with(experiments: dict) -> dict:
    """The shipped config with these experiments instead of its own."""
    config = copy.deepcopy(SHIPPED)
    config["experiments"] = experiments
    return config


def _mask() -> np.ndarray:
    brain = np.zeros((1, SIDE, SIDE), np.uint8)
    brain[0, 50:130, 50:130] = 1
    return brain


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A 2-fold scanner experiment at 16 x 16, trained, classified and exported; the model folder
    then moved out of the (deleted) training tree."""
    root = tmp_path_factory.mktemp("experiment")
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    slices = _slices(rng, rows, [(f"{s:02d}", "A" if s % 2 else "B", "T1w") for s in range(12)])
    pd.DataFrame(rows).to_csv(root / "slices.tsv", sep="\t", index=False)
    np.savez(root / "slices.npz", slices=slices, mask_0=_mask(), mask_1=_mask(), percentiles=np.array([0.5, 99.5]))
    config = _shipped_with(
        {
            "tiny": {
                "datasets": ["demo"],
                "label": "scanner",
                "classes": ["A", "B"],
                "modalities": ["T1w"],
                "model": "classification",
                "preset": "small",
                "image_size": 16,
                "offsets": {"train": [0, 1], "eval": [0, 1]},
                "folds": 3,
                "run_folds": 2,
                "training": {"epochs": 1, "batch_size": 4, "device": "cpu"},
            }
        }
    )
    settings = experiment_settings(validate_config(config), "tiny")
    (root / "experiment.json").write_text(json.dumps(settings))
    common = ["--experiment", str(root / "experiment.json"), "--slices", f"demo={root / 'slices.tsv'}"]
    inputs = [*common, "--arrays", f"demo={root / 'slices.npz'}"]
    assert main(["split", *common, "--out", str(root / "folds"), "--info", str(root / "split.json")]) == 0
    export = ["export-model", *inputs, "--split", str(root / "split.json"), "--folds", str(root / "folds")]
    for fold in ("fold-0", "fold-1"):
        where = ["--fold-dir", str(root / "folds" / fold)]
        assert main(["train", *inputs, *where, "--out", str(root / "models" / fold)]) == 0
        out = root / f"predictions_{fold}.tsv"
        assert main(["classify", *inputs, *where, "--model", str(root / "models" / fold / "best.pt"), "--out", str(out)]) == 0
        export += ["--model", f"{fold}={root / 'models' / fold / 'best.pt'}", "--predictions", f"{fold}={out}"]
    assert main([*export, "--dataset-kind", "demo", "--out", str(root / "model")]) == 0
    travelled = tmp_path_factory.mktemp("elsewhere") / "model"
    shutil.copytree(root / "model", travelled)
    tables = {fold: pd.read_csv(root / f"predictions_{fold}.tsv", sep="\t") for fold in ("fold-0", "fold-1")}
    kept = {name: root / name for name in ("slices.tsv", "slices.npz")}
    data = tmp_path_factory.mktemp("data")
    for name, path in kept.items():
        shutil.copy(path, data / name)
    shutil.rmtree(root / "models")  # predict needs the folder only
    return {"model": travelled, "tables": tables, "data": data, "slices": slices}


def _predict(model: Path, data: Path, out: Path, *extra: str) -> int:
    return main(
        ["predict", "--model", str(model), "--slices", f"new={data / 'slices.tsv'}", "--arrays", f"new={data / 'slices.npz'}"]
        + ["--device", "cpu", "--out", str(out), *extra]
    )


@pytest.mark.slow
def test_the_exported_folder_holds_weights_calibration_reference_and_card(trained):
    model = PortableModel.read(trained["model"])
    info = model.info
    assert sorted(p.name for p in trained["model"].iterdir()) == [MODEL_CARD, "fold-0.pt", "fold-1.pt", "model.json"]
    assert info["classes"] == ["A", "B"] and info["offsets"] == [0, 1] and info["view"] == {"mode": "resize", "size": 16}
    for fold in info["folds"]:
        table = trained["tables"][fold["fold"]]
        assert fold["temperature"] == pytest.approx(float(table["temperature"].iloc[0]), rel=1e-12)
        assert fold["log_prior"] == pytest.approx([float(table[f"logprior_{c}"].iloc[0]) for c in ("A", "B")])
        q = fold["bpd_quantiles"]
        assert q["0.01"] <= q["0.5"] <= q["0.99"] and fold["reference_images"] == 8  # 4 validation + 4 test images
        assert sum(fold["counts"]["train"].values()) > 0
    card = (trained["model"] / MODEL_CARD).read_text()
    assert "| A | " in card and "No metrics.json was given" in card and "synthetic demo cohort" in card


@pytest.mark.slow
def test_each_fold_gives_its_classify_posterior_and_the_ensemble_is_their_mean(trained, tmp_path: Path):
    out = tmp_path / "out"
    assert _predict(trained["model"], trained["data"], out) == 0
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert len(table) == 12 and (pd.read_csv(out / "refused.tsv", sep="\t").empty)
    for fold, expected in trained["tables"].items():
        # classify writes one row per test slice (2 offsets per image), each with its image's fitted temperature
        per_image = expected.drop_duplicates("image").set_index("image")
        got = table.set_index("image").loc[per_image.index]
        # the slice-level posterior of classify is softmax(slice ll + prior)/T; the image's sums both offsets
        ll = expected.groupby("image")[["loglik_A", "loglik_B"]].sum().loc[per_image.index].to_numpy()
        prior = per_image[["logprior_A", "logprior_B"]].to_numpy()
        z = (ll + prior) / per_image["temperature"].to_numpy()[:, None]
        want = np.exp(z - z.max(1, keepdims=True))
        want /= want.sum(1, keepdims=True)
        assert np.allclose(got[[f"{fold}_posterior_A", f"{fold}_posterior_B"]].to_numpy(), want, atol=1e-5)
    folds = np.stack([table[[f"fold-{k}_posterior_A", f"fold-{k}_posterior_B"]].to_numpy() for k in (0, 1)])
    assert np.allclose(table[["posterior_A", "posterior_B"]].to_numpy(), folds.mean(0))
    assert (table["predicted"] == np.where(table["posterior_A"] >= table["posterior_B"], "A", "B")).all()
    order = np.argsort(table["confidence"].to_numpy(), kind="stable")
    assert np.all(np.diff(table["reject_at"].to_numpy()[order]) >= 0) and table["reject_at"].max() == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labelled"] and metrics["images"] == 12 and set(metrics["per_fold"]) == {"fold-0", "fold-1"}
    truth = table["true"] == table["predicted"]
    assert metrics["ensemble"]["accuracy"] == pytest.approx(truth.mean())
    page = (out / "report.html").read_text()
    assert 'id="metrics"' in page and "figure missing" not in page and page.count("<img") == 12


@pytest.mark.slow
def test_attribution_sums_to_the_folds_mean_log_likelihood_on_the_mni_grid(trained, tmp_path: Path):
    out = tmp_path / "out"
    assert _predict(trained["model"], trained["data"], out, "--attribution-max", "3") == 0
    maps = pd.read_csv(out / "attribution" / "maps.tsv", sep="\t")
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(maps["image"]) == list(table["image"].iloc[:3]) and list(maps["predicted"]) == list(table["predicted"].iloc[:3])
    model = PortableModel.read(trained["model"])
    flows = [model.load(fold, torch.device("cpu")) for fold in model.info["folds"]]
    for i, row in maps.iterrows():
        volume = nib.load(out / "attribution" / row["nifti"])
        assert volume.shape == (SIDE, 1, SIDE) and (out / "attribution" / row["png"]).exists()
        assert np.allclose(volume.affine[:3, 3], GRID_1MM_AFFINE[:3, 3] + GRID_1MM_AFFINE[:3, 1] * CENTRAL_INDEX)
        # the map's sum is the mean over folds of log p(x | predicted) of the image's offset-0 slice
        x = torch.from_numpy(View(16).images(trained["slices"][[2 * i]]))  # offsets 0 and 1 per subject, in order
        k = model.classes.index(row["predicted"])
        with torch.no_grad():
            lls = [float(flow.class_log_likelihoods(flow.bin_centre(x))[0, k]) for flow in flows]
        assert row["sum"] == pytest.approx(np.mean(lls), rel=1e-5)


@pytest.mark.slow
def test_new_data_refused_image_by_image_with_reasons(trained, tmp_path: Path):
    rng = np.random.default_rng(1)
    rows: list[dict] = []
    subjects = [("50", "A", "T1w"), ("51", "", "T1w"), ("52", "C", "T1w"), ("53", "A", "FLAIR")]
    slices = _slices(rng, rows, subjects)
    rows.append({**rows[0], "subject": "54", "image": "sub-54_ses-01_T1w", "offset": 0, "index": 0})  # offset 1 missing
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(rows).to_csv(data / "slices.tsv", sep="\t", index=False)
    np.savez(data / "slices.npz", slices=slices, mask_0=_mask(), percentiles=np.array([0.5, 99.5]))
    out = tmp_path / "out"
    assert _predict(trained["model"], data, out) == 0
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    assert list(table["subject"].astype(str)) == ["50", "51"] and list(table["true"]) == ["A", "n/a"]
    refused = pd.read_csv(out / "refused.tsv", sep="\t", dtype=str).set_index("subject")["reason"]
    assert "scanner 'C' is not a class the model was trained on (A, B)" == refused["52"]
    assert refused["53"].startswith("modality FLAIR: the model was trained on T1w")
    assert refused["54"].startswith("no slice at offset(s) [1]")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 1 and metrics["unlabelled_images"] == 1

    unlabelled = tmp_path / "unlabelled"
    assert _predict(trained["model"], data, unlabelled, "--ignore-labels") == 0
    metrics = json.loads((unlabelled / "metrics.json").read_text())
    assert metrics == {"experiment": "tiny", "refused": 2, "labelled": False, "note": metrics["note"]}
    assert "carries a 'scanner' label (column absent or empty, or --ignore-labels): predictions only" in html.unescape(
        (unlabelled / "report.html").read_text()
    )


@pytest.mark.slow
def test_an_image_unlike_the_training_data_is_flagged(trained, tmp_path: Path):
    rng = np.random.default_rng(2)
    rows: list[dict] = []
    slices = _slices(rng, rows, [("60", "A", "T1w"), ("61", "B", "T1w"), ("62", "A", "T1w")])
    # 0/1 squares of 23 pixels (about two of the model's 16 x 16 pixels): nothing like a training slice
    slices[4:6] = (np.indices((SIDE, SIDE)) // 23).sum(0)[None] % 2
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(rows).to_csv(data / "slices.tsv", sep="\t", index=False)
    np.savez(data / "slices.npz", slices=slices, mask_0=_mask())
    out = tmp_path / "out"
    assert _predict(trained["model"], data, out) == 0
    table = pd.read_csv(out / "predictions.tsv", sep="\t").set_index("subject")
    assert bool(table.loc[62, "out_of_distribution"]) and not table.loc[[60, 61], "out_of_distribution"].any()
    assert table.loc[62, "bits_per_dim"] > table.loc[[60, 61], "bits_per_dim"].max()


@pytest.mark.slow
def test_whole_inputs_unlike_the_training_slices_are_refused(trained, tmp_path: Path, capsys):
    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    with np.load(data / "slices.npz") as archive:
        arrays = dict(archive)
    np.savez(data / "slices.npz", **{**arrays, "percentiles": np.array([1.0, 99.0])})
    assert _predict(trained["model"], data, tmp_path / "a") == 2
    assert (
        "intensities scaled between the [1.0, 99.0] percentiles; the model was trained on [0.5, 99.5]" in capsys.readouterr().err
    )
    np.savez(data / "slices.npz", **{**arrays, "slices": arrays["slices"][:, :, :91, :91]})
    assert _predict(trained["model"], data, tmp_path / "b") == 2
    assert "slices of shape (1, 91, 91), the model was trained on (1, 182, 182)" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(trained["model"], broken)
    (broken / "fold-1.pt").unlink()
    assert _predict(broken, trained["data"], tmp_path / "c") == 2
    assert "fold-1.pt named by model.json is missing" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")  # refused before anything is written


def test_rejection_positions_and_fold_intervals_by_hand():
    assert reject_at(np.array([0.9, 0.6, 0.6, 0.99])).tolist() == [0.75, 0.5, 0.5, 1.0]
    low, high = t_interval([0.5, 0.7])  # mean 0.6, sd 0.1414, t(0.975, 1) = 12.706
    assert (low, high) == (0.0, 1.0)  # 0.6 -/+ 1.27, clipped to the metric's range
    low, high = t_interval([0.8, 0.9, 0.85])  # mean 0.85, sd 0.05, t(0.975, 2) = 4.303
    assert low == pytest.approx(0.85 - 4.3027 * 0.05 / np.sqrt(3), abs=1e-4) and high == pytest.approx(0.85 + 0.1242, abs=1e-4)


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"experiment": "tiny", "model": "/x", "dataset": "demo"}, "give exactly one of experiment"),
        ({"dataset": "demo"}, "give exactly one of experiment"),
        ({"experiment": "tiny", "dataset": "other"}, "'other' is not a configured dataset"),
        ({"experiment": "nope", "dataset": "demo"}, "'nope' is not a configured experiment"),
    ],
)
def test_predict_entries_are_checked_in_the_config(entry: dict, said: str):
    config = _shipped_with({"tiny": copy.deepcopy(SHIPPED["experiments"]["demo_diagnosis_classification"])})
    config["predict"] = {"p": entry}
    with pytest.raises(InputError, match=said):
        validate_config(config)
