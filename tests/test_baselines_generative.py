"""Generative baselines (Glow, CVAE): each trains a few steps on a tiny set and lowers its loss,
writes the discriminative baselines' model folder, samples into the flow's samples.npz schema and
shape, the config rejects a baseline under the wrong kind of experiment, and the report's
Tables 1-2 list every configured model, MAGIC-Flow first."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from magicflow.baselines import GENERATIVE
from magicflow.baselines.commands import run_sample
from magicflow.baselines.discriminative import train_baseline
from magicflow.baselines.generative import build_generative, objective
from magicflow.config import baseline_settings, validate_config
from magicflow.errors import InputError
from magicflow.experiments import infer

from test_baselines import CLASSES, SHIPPED, _config, toy  # one toy set and one config builder for both files


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def settings(name: str, size: int = 16, epochs: int = 3) -> dict:
    return {
        "id": name,
        "name": name,
        "kind": "generative",
        "label": GENERATIVE[name].label,
        "architecture": GENERATIVE[name].architecture,
        "image_size": size,
        "weights": None,
        "preset": "small",
        "training": {
            "epochs": epochs,
            "patience": None,
            "batch_size": 4,
            "lr": 1e-3,
            "seed": 0,
            "device": "cpu",
            "augment": {"rotate_degrees": 3.0, "shift_pixels": 1.0, "noise_sigma": 0.01},
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GENERATIVE))
def test_each_baseline_trains_lowers_its_loss_and_samples_in_the_flows_layout(tmp_path: Path, name: str):
    if name == "ddpm":
        pytest.importorskip("einops", reason="MONAI's diffusion U-Net needs einops (a dependency; absent here)")
    torch.manual_seed(0)
    given = settings(name)
    model = build_generative(given, len(CLASSES))
    out = tmp_path / "models" / "fold-0"
    history = train_baseline(
        model,
        toy(16),
        toy(4, seed=1),
        out,
        given,
        torch.device("cpu"),
        len(CLASSES),
        {"classes": CLASSES},
        objective=objective(model),
    )
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert {"best.pt", "last.pt", "training.tsv", "training.png"} <= {p.name for p in out.iterdir()}
    assert "val_loss" in pd.read_csv(out / "training.tsv", sep="\t")

    (tmp_path / "experiment.json").write_text(json.dumps({"samples": {"per_class": 3, "temperature": 0.8}, "seed": 0}))
    (tmp_path / "baseline.json").write_text(json.dumps(given))
    samples_dir = tmp_path / "samples" / "fold-0"
    args = argparse.Namespace(
        experiment=tmp_path / "experiment.json", baseline=tmp_path / "baseline.json", model=out / "best.pt", out=samples_dir
    )
    assert run_sample(args) == 0
    flow_dir = tmp_path / "flow"
    infer.write_samples(np.zeros((2, 3, 1, 16, 16), np.float32), CLASSES, flow_dir)
    with np.load(samples_dir / "samples.npz") as ours, np.load(flow_dir / "samples.npz") as flows:
        assert sorted(ours.files) == sorted(flows.files)
        assert {k: ours[k].dtype.kind for k in ours.files} == {k: flows[k].dtype.kind for k in flows.files}
        assert ours["samples"].shape == (2, 3, 1, 16, 16)
        assert list(ours["classes"]) == CLASSES
        assert 0 <= ours["samples"].min() and ours["samples"].max() <= 1
    assert sorted(p.name for p in samples_dir.glob("*.png")) == sorted(p.name for p in flow_dir.glob("*.png"))


def test_config_resolves_generative_baselines_of_a_generation_experiment():
    config = validate_config(_config(demo_scanner_generation=["glow", {"name": "cvae", "training": {"epochs": 2}}]))
    found = baseline_settings(config, "demo_scanner_generation")
    assert list(found) == ["glow", "cvae"]
    assert {s["kind"] for s in found.values()} == {"generative"}
    assert found["cvae"]["training"]["epochs"] == 2 and found["glow"]["preset"]
    assert found["glow"]["samples"] == config["experiments"]["demo_scanner_generation"]["samples"]


@pytest.mark.parametrize(
    ("experiment", "entries", "message"),
    [
        (
            "demo_diagnosis_classification",
            ["glow"],
            "'glow' is a generation baseline, but experiment 'demo_diagnosis_classification' has model: classification",
        ),
        ("demo_diagnosis_classification", ["resnet18", "cvae"], "'cvae' is a generation baseline"),
        (
            "demo_scanner_generation",
            ["resnet18"],
            "'resnet18' is a classification baseline, but experiment 'demo_scanner_generation' has model: generation",
        ),
        ("demo_scanner_generation", ["glw"], r"unknown baseline 'glw' \(did you mean 'glow'\?\)"),
    ],
)
def test_config_rejects_a_baseline_under_the_other_kind_of_experiment(experiment: str, entries: list, message: str):
    with pytest.raises(InputError, match=message) as error:
        validate_config(_config(**{experiment: entries}))
    assert "\n" not in str(error.value) and f"experiments.{experiment}" in str(error.value)


def test_the_report_has_tables_1_2_with_every_generative_model(tmp_path: Path):
    from test_report import metrics_record

    from magicflow.report.experiment import build_report

    metrics = metrics_record()
    plain = build_report(copy.deepcopy(metrics), {}, tmp_path, {})
    assert 'id="tables12"' not in plain
    row = {"fid": 10.0, "fid_ci": [9.0, 11.0], "kid": 0.01, "precision": 0.5, "recall": 0.5, "density": 1.0, "coverage": 0.6}
    models = [("magicflow", "MAGIC-Flow"), ("glow", "Glow"), ("cvae", "CVAE")]
    metrics["comparison"] = {
        "kind": "generation",
        "fold": "fold-0",
        "suffix": "ID",
        "n_heldout": 8,
        "reference": row,
        "models": [
            {"id": i, "model": m, "metrics": row, "ms_ssim": {"intra": 0.3, "inter": 0.2}, "figure": f"{i}.png"}
            for i, m in models
        ],
    }
    for i, _ in models:
        infer.pyplot().imsave(tmp_path / f"{i}.png", np.zeros((4, 4)))
    page = build_report(metrics, {}, tmp_path, {})
    section = page.split('id="tables12"', 1)[1].split("</section>", 1)[0]
    assert "Tables 1-2" in page
    rows = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("</tr>")
    assert [r.split("<td>", 2)[1].split("</td>")[0] for r in rows[:4]] == [
        "MAGIC-Flow",
        "Glow",
        "CVAE",
        "real training slices (reference)",
    ]
    assert section.count("<img") == 3 and "figure missing" not in section


class _PixelMeans:
    """A stand-in feature extractor: per-image means of a 4x4 grid (16 features)."""

    def features(self, images) -> np.ndarray:
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()


def test_evaluation_scores_each_baselines_samples_like_the_flows(tmp_path: Path):
    from magicflow.evaluate.experiment import generative_comparison_section
    from magicflow.evaluate.inputs import ExperimentOutputs, FoldOutputs

    heldout = toy(24, seed=2, size=32)
    rng = np.random.default_rng(0)
    flow = {
        "suffix": "ID",
        "n_generated": 24,
        "overall": {"generated": {"fid": 1.0}, "real": {"fid": 0.5}},
        "ms_ssim": {"generated": {"intra": 0.4}},
    }
    fold = FoldOutputs("fold-0", pd.DataFrame(), pd.DataFrame(), {}, {})
    outputs = ExperimentOutputs("demo", CLASSES, {}, [fold])
    given = {}
    for name in sorted(GENERATIVE):
        folder = tmp_path / name / "fold-0"
        infer.write_samples(rng.random((2, 12, 1, 32, 32)).astype(np.float32), CLASSES, folder, nifti_per_class=0)
        given[name] = {"settings": settings(name, size=32), "samples": {"fold-0": folder}}
    evaluation = {"bootstrap": 10, "seed": 0, "nearest_k": 3, "ms_ssim_pairs": 5}
    section = generative_comparison_section(outputs, flow, heldout, _PixelMeans(), given, evaluation, tmp_path)
    assert [m["model"] for m in section["models"]] == ["MAGIC-Flow", "CVAE", "DDPM", "Glow"]
    for model in section["models"][1:]:
        assert {"fid", "fid_ci", "kid", "kid_ci", "precision", "recall", "density", "coverage"} <= set(model["metrics"])
        assert "intra" in model["ms_ssim"] and model["n_generated"] == 24
        assert (tmp_path / model["figure"]).is_file()
    with pytest.raises(InputError, match="samples were given for"):
        generative_comparison_section(
            outputs, flow, heldout, _PixelMeans(), {"glow": {**given["glow"], "samples": {}}}, evaluation, tmp_path
        )


def test_the_workflow_plans_training_and_sampling_per_fold_and_evaluation_reads_the_samples(tmp_path: Path):
    from test_profiles import by_rule, folds_run, plan

    def edit(config):
        config["training"]["device"] = "cuda"
        for experiment in config["experiments"].values():  # only this experiment's baselines, not the demo's
            experiment.pop("baselines", None)
        config["experiments"]["demo_scanner_generation"]["baselines"] = ["glow", "cvae"]

    jobs = plan(tmp_path, edit)
    folds = folds_run(validate_config(_config())["experiments"]["demo_scanner_generation"])
    for rule in ("baseline_train", "baseline_sample"):
        planned = by_rule(jobs, rule)
        assert sorted((j.wildcards["baseline"], j.wildcards["fold"]) for j in planned) == sorted(
            (b, f"fold-{k}") for b in ("glow", "cvae") for k in range(folds)
        )
        assert {j.wildcards["experiment"] for j in planned} == {"demo_scanner_generation"}
        assert all(j.resources["gpu"] == "1" for j in planned) and all("--baseline results/" in j.shell for j in planned)
    assert not by_rule(jobs, "baseline_classify")
    (evaluate,) = [j for j in by_rule(jobs, "evaluate_experiment") if j.wildcards["experiment"] == "demo_scanner_generation"]
    assert evaluate.shell.count("--baseline-samples ") == 2 * folds and "--baseline-predictions" not in evaluate.shell


def test_baseline_commands_train_and_sample_a_fold_of_the_flows_split(tmp_path: Path):
    from magicflow.cli import main
    from magicflow.config import experiment_settings

    rows, g = [], np.random.default_rng(0)
    images = []
    for s in range(9):
        scanner = "A" if s % 2 else "B"
        rows.append({"subject": f"{s:02d}", "session": "01", "image": f"sub-{s:02d}_ses-01_T1w", "modality": "T1w"})
        rows[-1].update(tracer="n/a", diagnosis="CN", scanner=scanner, offset=0, index=len(images))
        images.append(g.random((1, 182, 182), dtype=np.float32) * 0.3 + (0.5 if scanner == "A" else 0.0))
    pd.DataFrame(rows).to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    np.savez(tmp_path / "slices.npz", slices=np.stack(images), mask_0=np.ones((1, 182, 182), np.float32))
    config = copy.deepcopy(SHIPPED)
    config["experiments"] = {
        "tiny": {
            "datasets": ["demo"],
            "label": "scanner",
            "modalities": ["T1w"],
            "offsets": {"train": [0], "eval": [0]},
            "model": "generation",
            "image_size": 16,
            "folds": 3,
            "run_folds": 1,
            "samples": {"per_class": 2},
            "training": {"epochs": 2, "batch_size": 2, "device": "cpu"},
            "baselines": ["cvae"],
        }
    }
    config = validate_config(config)
    (tmp_path / "experiment.json").write_text(json.dumps(experiment_settings(config, "tiny")))
    (tmp_path / "baseline.json").write_text(json.dumps(baseline_settings(config, "tiny")["cvae"]))
    common = ["--experiment", str(tmp_path / "experiment.json"), "--slices", f"demo={tmp_path / 'slices.tsv'}"]
    folds = tmp_path / "splits" / "folds"
    assert main(["split", *common, "--out", str(folds), "--info", str(tmp_path / "split.json")]) == 0
    inputs = [*common, "--arrays", f"demo={tmp_path / 'slices.npz'}", "--baseline", str(tmp_path / "baseline.json")]
    out = tmp_path / "baselines" / "cvae"
    model = out / "models" / "fold-0"
    assert main(["baseline-train", *inputs, "--fold-dir", str(folds / "fold-0"), "--out", str(model)]) == 0
    assert len(pd.read_csv(model / "training.tsv", sep="\t")) == 2
    samples = out / "samples" / "fold-0"
    base = ["--experiment", str(tmp_path / "experiment.json"), "--baseline", str(tmp_path / "baseline.json")]
    assert main(["baseline-sample", *base, "--model", str(model / "best.pt"), "--out", str(samples)]) == 0
    with np.load(samples / "samples.npz") as archive:
        assert archive["samples"].shape == (2, 2, 1, 16, 16) and sorted(archive["classes"]) == ["A", "B"]
