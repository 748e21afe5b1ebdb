"""Discriminative baselines: every configured name builds as its timm architecture with one input
channel at the sizes the registry says, training lowers the loss and resumes, predictions have the
flow's columns, local weights load strictly (and wrong files fail naming the file), the config
rejects what cannot run, and the report's Table 3 lists every model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from magicflow.baselines import DISCRIMINATIVE
from magicflow.baselines.discriminative import (
    build_model,
    check_image_size,
    load_baseline,
    load_weights,
    logits_of,
    predictions_table,
    train_baseline,
)
from magicflow.config import REPO_ROOT, baseline_settings, validate_config
from magicflow.errors import InputError
from magicflow.evaluate.classification import classification_metrics, model_comparison
from magicflow.evaluate.inputs import posterior_matrix
from magicflow.experiments import infer
from magicflow.experiments.data import SliceSet

SHIPPED = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
CLASSES = ["AD", "CN"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def toy(n: int = 16, seed: int = 0, size: int = 16) -> SliceSet:
    """Two classes told apart by brightness, with the columns the slice tables carry."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (torch.rand(n, 1, size, size, generator=g) * 0.3 + labels[:, None, None, None] * 0.5).float()
    meta = pd.DataFrame(
        {
            "dataset": "demo",
            "subject": [f"s{seed}{i:02d}" for i in range(n)],
            "session": "01",
            "image": [f"sub-s{seed}{i:02d}_T1w" for i in range(n)],
            "offset": 0,
        }
    )
    return SliceSet(images, labels, meta)


def settings(name: str = "resnet18", size: int = 16, epochs: int = 3, **training) -> dict:
    return {
        "id": name,
        "name": name,
        "label": DISCRIMINATIVE[name].label,
        "architecture": DISCRIMINATIVE[name].timm_name,
        "image_size": size,
        "weights": None,
        "training": {
            "epochs": epochs,
            "patience": None,
            "batch_size": 4,
            "lr": 1e-3,
            "seed": 0,
            "device": "cpu",
            "augment": {"rotate_degrees": 3.0, "shift_pixels": 1.0, "noise_sigma": 0.01},
            **training,
        },
    }


# --------------------------------------------------------------------------- architectures
@pytest.mark.parametrize("name", list(DISCRIMINATIVE))
def test_each_name_builds_its_timm_architecture_with_one_channel_down_to_its_smallest_size(name: str):
    arch = DISCRIMINATIVE[name]
    model = build_model(name, 3, arch.min_size)
    assert model.pretrained_cfg["architecture"] == arch.timm_name
    first = dict(model.named_parameters())[f"{model.pretrained_cfg['first_conv']}.weight"]
    assert first.shape[1] == 1  # in_chans=1
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, arch.min_size, arch.min_size)).shape == (2, 3)
    if arch.min_size > 16:  # the registry's smallest size is the smallest that runs
        small = arch.min_size - 1
        with pytest.raises(InputError, match=rf"{name} .*image_size {small}.*sizes {arch.min_size}-182 work"):
            check_image_size(build_model(name, 3, small), name, small)


def test_unknown_architecture_is_an_input_error():
    with pytest.raises(InputError, match="unknown baseline 'resnet5'"):
        build_model("resnet5", 2, 32)


# --------------------------------------------------------------------------- training
def _train_mode_loss(model, data: SliceSet) -> float:
    model.train()  # batch statistics: the running ones of a few steps say little
    with torch.no_grad():
        return float(F.cross_entropy(model(data.images), data.labels))


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss_and_write_the_model_folder(tmp_path: Path):
    train, val = toy(16, 0), toy(8, 1)
    torch.manual_seed(0)
    model = build_model("resnet18", 2, 16)
    before = _train_mode_loss(model, train)
    history = train_baseline(model, train, val, tmp_path, settings(), torch.device("cpu"), 2, extra={"classes": CLASSES})
    assert _train_mode_loss(model, train) < before
    assert list(history["epoch"]) == [1, 2, 3] and (history["steps"] == 4).all()
    assert {"best.pt", "last.pt", "training.tsv", "training.png"} <= {p.name for p in tmp_path.iterdir()}
    curves = pd.read_csv(tmp_path / "training.tsv", sep="\t")
    assert {"train_loss", "val_loss", "val_balanced_accuracy", "lr"} <= set(curves.columns)
    best, payload = load_baseline(tmp_path / "best.pt")
    assert payload["extra"]["selected_by"] == "val_balanced_accuracy, then val_loss"
    assert payload["extra"]["classes"] == CLASSES and payload["baseline"]["name"] == "resnet18"


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path: Path):
    train, val = toy(12, 0), toy(6, 1)

    def fresh():
        torch.manual_seed(0)
        return build_model("resnet18", 2, 16)

    train_baseline(fresh(), train, val, tmp_path / "straight", settings(), torch.device("cpu"), 2)

    def kill_after_one(epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_baseline(fresh(), train, val, tmp_path / "resumed", settings(), torch.device("cpu"), 2, on_epoch_end=kill_after_one)
    history = train_baseline(fresh(), train, val, tmp_path / "resumed", settings(), torch.device("cpu"), 2)
    assert list(history["epoch"]) == [1, 2, 3]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_training_set_left_in_host_memory_moves_per_batch_and_trains_the_same_weights(tmp_path: Path, monkeypatch):
    """Issue 32: a baseline's training set stays on a CUDA device only where it takes at most half
    of the usable free memory; otherwise it stays in host memory and each batch moves. Both paths
    train the same weights (on the CPU here, where the host path is forced)."""
    from magicflow.baselines import discriminative
    from magicflow.experiments.memory import GIB

    cuda = torch.device("cuda")
    assert discriminative.set_stays_on_device(GIB, cuda, free_bytes=10 * GIB)
    assert not discriminative.set_stays_on_device(5 * GIB, cuda, free_bytes=10 * GIB)
    assert discriminative.set_stays_on_device(100 * GIB, torch.device("cpu"))
    train, val = toy(12, 0), toy(6, 1)

    def run(folder: str) -> dict:
        torch.manual_seed(0)
        model = build_model("resnet18", 2, 16)
        train_baseline(model, train, val, tmp_path / folder, settings(), torch.device("cpu"), 2)
        return model.state_dict()

    resident = run("resident")
    moved = []
    to_device = discriminative.to_device
    monkeypatch.setattr(discriminative, "set_stays_on_device", lambda *args, **kwargs: False)
    monkeypatch.setattr(discriminative, "to_device", lambda t, device: (moved.append(len(t)), to_device(t, device))[1])
    host = run("host")
    assert moved and max(moved) == 4  # batches, not the set
    assert resident.keys() == host.keys() and all(torch.equal(resident[k], host[k]) for k in resident)


def test_a_last_batch_of_one_image_takes_no_step(tmp_path: Path):
    history = train_baseline(
        build_model("resnet18", 2, 16), toy(9, 0), toy(4, 1), tmp_path, settings(epochs=1), torch.device("cpu"), 2
    )
    assert list(history["steps"]) == [2]  # 9 images, batches of 4: the 9th would meet batch norm alone


# --------------------------------------------------------------------------- predictions
def test_predictions_have_the_flows_columns_and_the_shared_metrics_apply():
    test, val = toy(6, 2), toy(6, 1)
    model = build_model("resnet18", 2, 16)
    test_logits = logits_of(model, test, torch.device("cpu")).double().numpy()
    val_logits = logits_of(model, val, torch.device("cpu")).double().numpy()
    table, temperature = predictions_table(test, val, CLASSES, test_logits, val_logits)
    flow, _ = infer.predictions_table(test, val, val, CLASSES, test_logits, val_logits)
    assert list(table.columns) == list(flow.columns)
    assert temperature > 0 and (table["temperature"] == temperature).all()
    assert list(table["predicted"]) == [CLASSES[i] for i in test_logits.argmax(1)]
    assert np.allclose(np.exp(table[[f"loglik_{c}" for c in CLASSES]].to_numpy()).sum(1), 1)
    true, proba = posterior_matrix(table, CLASSES)
    row = classification_metrics(true, proba, CLASSES)
    assert row["n"] == 6 and 0 <= row["balanced_accuracy"] <= 1


# --------------------------------------------------------------------------- weights
@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "densenet121", "vit_b32", "swin_tiny"])
def test_weights_saved_from_a_model_load_strictly_and_give_identical_outputs(tmp_path: Path, name: str):
    size = max(32, DISCRIMINATIVE[name].min_size)
    torch.manual_seed(1)
    source = build_model(name, 3, size).eval()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(2)
    target = build_model(name, 3, size)
    assert load_weights(target, tmp_path / "w.pt") == []
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        assert torch.equal(source(x), target.eval()(x))


def test_safetensors_wrappers_three_channels_and_another_head(tmp_path: Path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = build_model("resnet18", 3, 16).eval()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    target = build_model("resnet18", 3, 16)
    load_weights(target, tmp_path / "w.safetensors")
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(source(x), target.eval()(x))
    # an ImageNet-style file: 3 input channels, 1000 classes, under 'state_dict' with DataParallel's prefix
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.conv1.weight"] = source.conv1.weight.detach().repeat(1, 3, 1, 1) / 3
    state["module.fc.weight"], state["module.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save({"state_dict": state}, tmp_path / "imagenet.pth")
    target = build_model("resnet18", 3, 16)
    notes = load_weights(target, tmp_path / "imagenet.pth")
    assert any("summed over its 3 input channels" in n for n in notes) and any("classifier head" in n for n in notes)
    assert torch.allclose(target.conv1.weight, source.conv1.weight, atol=1e-6)
    assert torch.equal(target.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_a_wrong_weights_file_is_an_input_error_naming_the_file_and_the_layout(tmp_path: Path):
    model = build_model("resnet18", 2, 16)
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    wrong = {**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)}
    torch.save(wrong, tmp_path / "shape.pt")
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "unexpected.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    (tmp_path / "folder.pt").mkdir()
    cases = {
        "missing.pt": r"1 missing key\(s\) \['layer1.0.conv1.weight'\]",
        "shape.pt": r"shape mismatch.*layer1.0.conv1.weight: file \(64, 64, 5, 5\), model \(64, 64, 3, 3\)",
        "unexpected.pt": r"1 unexpected key\(s\) \['extra.weight'\]",
        "garbage.pt": "not a readable weights file",
        "folder.pt": "is not a file",
        "absent.pt": "is not a file",
    }
    for file, problem in cases.items():
        with pytest.raises(InputError, match=problem) as error:
            load_weights(build_model("resnet18", 2, 16), tmp_path / file)
        assert str(tmp_path / file) in str(error.value)
        if file in ("missing.pt", "shape.pt", "unexpected.pt"):
            assert "conv1.weight (64, 1, 7, 7)" in str(error.value)  # the layout expected


# --------------------------------------------------------------------------- config
def _config(**baselines_by_experiment) -> dict:
    config = copy.deepcopy(SHIPPED)
    for experiment in config["experiments"].values():  # the shipped demo's baselines left out
        experiment.pop("baselines", None)
    for name, baselines in baselines_by_experiment.items():
        config["experiments"][name]["baselines"] = baselines
    return config


def test_config_accepts_names_and_mappings_and_resolves_their_settings(tmp_path: Path):
    (tmp_path / "w.pt").touch()
    entries = [
        "resnet18",
        {"name": "resnet18", "id": "resnet18_pre", "weights": str(tmp_path / "w.pt"), "training": {"epochs": 2}},
    ]
    config = validate_config(_config(demo_diagnosis_classification=entries))
    found = baseline_settings(config, "demo_diagnosis_classification")
    assert list(found) == ["resnet18", "resnet18_pre"]
    assert found["resnet18_pre"]["weights"] == str(tmp_path / "w.pt") and found["resnet18_pre"]["training"]["epochs"] == 2
    assert found["resnet18"]["training"]["epochs"] == config["experiments"]["demo_diagnosis_classification"]["training"].get(
        "epochs", config["training"]["epochs"]
    )
    assert found["resnet18"]["architecture"] == "resnet18" and found["resnet18"]["image_size"] == 64
    assert baseline_settings(config, "demo_scanner_classification") == {}


@pytest.mark.parametrize(
    ("experiment", "entries", "message"),
    [
        (
            "demo_diagnosis_classification",
            ["resnet5"],
            r"unknown baseline 'resnet5' \(did you mean 'resnet50'\?\); known baselines: resnet18",
        ),
        ("demo_diagnosis_classification", [{"name": "resnet18", "wieghts": "x"}], "baselines.0"),
        ("demo_diagnosis_classification", ["inception_v3"], r"needs image_size >= 75, the experiment has 64; sizes 75-182 work"),
        ("demo_diagnosis_classification", ["resnet18", "resnet18"], "listed twice"),
        ("demo_diagnosis_classification", [{"name": "resnet18", "weights": "/no/such/file.pt"}], "does not exist"),
        ("demo_scanner_generation", ["resnet18"], "has model: generation"),
    ],
)
def test_config_rejects_what_cannot_run(experiment: str, entries: list, message: str):
    with pytest.raises(InputError, match=message) as error:
        validate_config(_config(**{experiment: entries}))
    assert f"experiments.{experiment}" in str(error.value)


# --------------------------------------------------------------------------- Table 3
def _fold_rows(values: list[float]) -> list[dict]:
    rows = []
    for i, v in enumerate(values):
        rows.append(
            {
                "fold": f"fold-{i}",
                "accuracy": v,
                "balanced_accuracy": v,
                "macro_auc": v,
                "macro_precision": v,
                "macro_recall": v,
                "macro_f1": v,
                "n": 4,
            }
        )
    return rows


def test_model_comparison_marks_the_best_and_tests_flow_against_each_baseline():
    flow = _fold_rows([0.9, 0.8, 0.85])
    table = model_comparison(
        [
            {"id": "magicflow", "model": "MAGIC-Flow", "per_fold": flow},
            {"id": "resnet18", "model": "ResNet-18", "per_fold": _fold_rows([0.7, 0.61, 0.64])},
            {"id": "same", "model": "Same", "per_fold": _fold_rows([0.9, 0.8, 0.85])},
        ]
    )
    assert [r["id"] for r in table["models"]] == ["magicflow", "resnet18", "same"]
    assert table["best"]["balanced_accuracy"] == ["magicflow", "same"]
    assert table["models"][0]["mean"]["accuracy"] == pytest.approx(0.85)
    resnet, same = table["tests"]
    assert resnet["folds"] == 3 and resnet["mean_difference"] == pytest.approx(0.2) and resnet["p_ttest"] < 0.05
    assert same["p_ttest"] == 1.0 and same["note"] == "identical on every fold"
    single = model_comparison(
        [{"id": "magicflow", "model": "MAGIC-Flow", "per_fold": flow[:1]}, {"id": "b", "model": "B", "per_fold": flow[:1]}]
    )
    assert single["tests"][0]["p_ttest"] is None and single["tests"][0]["note"].startswith("n/a")


def test_the_report_has_table_3_with_every_model_and_none_without_baselines(tmp_path: Path):
    from test_report import metrics_record

    from magicflow.report.experiment import build_report

    metrics = metrics_record()
    plain = build_report(copy.deepcopy(metrics), {}, tmp_path, {})
    assert 'id="table3"' not in plain
    models = [
        {"id": "magicflow", "model": "MAGIC-Flow", "per_fold": _fold_rows([0.9, 0.8])},
        {"id": "resnet50", "model": "ResNet-50", "weights": "/w/RadImageNet-ResNet50.pt", "per_fold": _fold_rows([0.7, 0.75])},
        {"id": "swin", "model": "Swin-ViT", "weights": None, "per_fold": _fold_rows([0.95, 0.9])},
    ]
    metrics["comparison"] = model_comparison(models)
    page = build_report(metrics, {}, tmp_path, {})
    section = page.split('id="table3"', 1)[1].split("</section>", 1)[0]
    rows = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("</tr>")
    assert [r.split("<td>", 2)[1].split("</td>")[0] for r in rows[:3]] == ["MAGIC-Flow", "ResNet-50", "Swin-ViT"]
    assert "RadImageNet-ResNet50.pt" in rows[1] and "from scratch" in rows[2]
    assert "<b>0.925 ± 0.035 ▲</b>" in rows[2] and "▲" not in rows[0]  # Swin-ViT has the best mean of every column
    assert "paired t-test" in section and "Wilcoxon" in section


# --------------------------------------------------------------------------- the commands, end to end
@pytest.mark.slow
def test_baseline_commands_train_and_classify_a_fold_of_the_flows_split(tmp_path: Path):
    from magicflow.cli import main
    from magicflow.config import experiment_settings
    from magicflow.evaluate.experiment import comparison_section
    from magicflow.evaluate.inputs import ExperimentOutputs, FoldOutputs

    rows, g = [], np.random.default_rng(0)
    images = []
    for s in range(9):
        dx = "AD" if s % 2 else "CN"
        rows.append({"subject": f"{s:02d}", "session": "01", "image": f"sub-{s:02d}_ses-01_T1w", "modality": "T1w"})
        rows[-1].update(tracer="n/a", diagnosis=dx, scanner="x", offset=0, index=len(images))
        images.append(g.random((1, 182, 182), dtype=np.float32) * 0.3 + (0.5 if dx == "AD" else 0.0))
    pd.DataFrame(rows).to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    np.savez(tmp_path / "slices.npz", slices=np.stack(images), mask_0=np.ones((1, 182, 182), np.float32))
    config = copy.deepcopy(SHIPPED)
    config["experiments"] = {
        "tiny": {
            "datasets": ["demo"],
            "label": "diagnosis",
            "modalities": ["T1w"],
            "offsets": {"train": [0], "eval": [0]},
            "model": "classification",
            "image_size": 32,
            "folds": 3,
            "run_folds": 1,
            "training": {"epochs": 2, "batch_size": 2, "device": "cpu"},
            "baselines": ["resnet18"],
        }
    }
    config = validate_config(config)
    (tmp_path / "experiment.json").write_text(json.dumps(experiment_settings(config, "tiny")))
    (tmp_path / "baseline.json").write_text(json.dumps(baseline_settings(config, "tiny")["resnet18"]))
    common = ["--experiment", str(tmp_path / "experiment.json"), "--slices", f"demo={tmp_path / 'slices.tsv'}"]
    folds = tmp_path / "splits" / "folds"
    assert main(["split", *common, "--out", str(folds), "--info", str(tmp_path / "split.json")]) == 0
    inputs = [*common, "--arrays", f"demo={tmp_path / 'slices.npz'}", "--baseline", str(tmp_path / "baseline.json")]
    inputs += ["--fold-dir", str(folds / "fold-0")]
    out = tmp_path / "baselines" / "resnet18"
    assert main(["baseline-train", *inputs, "--out", str(out / "models" / "fold-0")]) == 0
    assert len(pd.read_csv(out / "models" / "fold-0" / "training.tsv", sep="\t")) == 2
    predictions = out / "predictions" / "fold-0" / "predictions.tsv"
    assert (
        main(["baseline-classify", *inputs, "--model", str(out / "models" / "fold-0" / "best.pt"), "--out", str(predictions)])
        == 0
    )
    table = pd.read_csv(predictions, sep="\t", dtype={"subject": str})
    test = pd.read_csv(folds / "fold-0" / "test.tsv", sep="\t", dtype=str)
    assert sorted(table["image"]) == sorted(test["image"]) and set(table["true"]) <= {"AD", "CN"}
    # evaluation scores it beside the flow's predictions of the same slices (here: a copy)
    fold = FoldOutputs("fold-0", pd.DataFrame(), table, {}, {})
    outputs = ExperimentOutputs("tiny", ["AD", "CN"], {}, [fold])
    true, proba = posterior_matrix(table, ["AD", "CN"])
    flow = [{"fold": "fold-0", **classification_metrics(true, proba, ["AD", "CN"])}]
    settings = json.loads((tmp_path / "baseline.json").read_text())
    result = comparison_section(outputs, flow, {"resnet18": {"settings": settings, "predictions": {"fold-0": predictions}}})
    assert [m["model"] for m in result["models"]] == ["MAGIC-Flow", "ResNet-18"] and result["tests"][0]["p_ttest"] is None
    with pytest.raises(InputError, match="predictions were given for"):
        comparison_section(outputs, flow, {"resnet18": {"settings": settings, "predictions": {}}})


def test_the_workflow_plans_each_baseline_per_fold_and_evaluation_reads_its_predictions(tmp_path: Path):
    from test_profiles import by_rule, folds_run, plan

    def edit(config):
        config["training"]["device"] = "cuda"
        for experiment in config["experiments"].values():  # only this experiment's baselines, not the demo's
            experiment.pop("baselines", None)
        config["experiments"]["demo_diagnosis_classification"]["baselines"] = ["resnet18", {"name": "densenet121", "id": "dense"}]

    jobs = plan(tmp_path, edit)
    folds = folds_run(validate_config(_config())["experiments"]["demo_diagnosis_classification"])
    for rule in ("baseline_train", "baseline_classify"):
        planned = by_rule(jobs, rule)
        assert sorted((j.wildcards["baseline"], j.wildcards["fold"]) for j in planned) == sorted(
            (b, f"fold-{k}") for b in ("resnet18", "dense") for k in range(folds)
        )
        assert {j.wildcards["experiment"] for j in planned} == {"demo_diagnosis_classification"}
        assert all(j.resources["gpu"] == "1" for j in planned) and all("--baseline results/" in j.shell for j in planned)
    (evaluate,) = [
        j for j in by_rule(jobs, "evaluate_experiment") if j.wildcards["experiment"] == "demo_diagnosis_classification"
    ]
    assert evaluate.shell.count("--baseline-predictions ") == 2 * folds and "--baseline dense=" in evaluate.shell
    others = [j for j in by_rule(jobs, "evaluate_experiment") if j.wildcards["experiment"] != "demo_diagnosis_classification"]
    assert others and all("--baseline" not in j.shell for j in others)


# --------------------------------------------------------------------------- class weights (issue 30.6)
def augmented(images_per_class: int, ad_slices: int, seed: int, spread: float = 0.15) -> SliceSet:
    """AD (label 0) and CN (label 1) images, 1:1, whose brightness overlaps (means 0.6 and 0.4);
    each AD image brings ``ad_slices`` slices (its augment offsets: the image plus small
    perturbations), each CN image one, as the diagnosis task's AD-only offsets do."""
    rng = np.random.default_rng(seed)
    images, labels, names = [], [], []
    for label, mean, slices in ((0, 0.6, ad_slices), (1, 0.4, 1)):
        for i in range(images_per_class):
            level = mean + spread * rng.standard_normal()
            for _ in range(slices):
                images.append(np.full((1, 4, 4), level + 0.01 * rng.standard_normal(), dtype=np.float32))
                labels.append(label)
                names.append(f"sub-{label}{i:03d}")
    meta = pd.DataFrame({"dataset": "demo", "image": names, "offset": 0})
    return SliceSet(torch.from_numpy(np.stack(images)), torch.tensor(labels), meta)


class Brightness(torch.nn.Module):
    """Logits linear in an image's mean brightness: a one-feature logistic regression."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1).mean(1, keepdim=True) * 10 - 5)


def test_image_prior_weights_make_each_image_count_once_whatever_its_slices():
    from magicflow.baselines.discriminative import image_prior_weights

    data = augmented(4, 5, 0)  # 20 AD slices, 4 CN slices, 4 images each
    weights = image_prior_weights(data, 2)
    # image priors 0.5 / 0.5; slice shares 20/24 and 4/24: weights 0.5/(5/6) = 0.6 and 0.5/(1/6) = 3.0
    np.testing.assert_allclose(weights.numpy(), [0.6, 3.0], rtol=1e-6)
    per_image = [5 * 0.6, 1 * 3.0]  # an AD image's five slices, a CN image's one
    assert per_image[0] == pytest.approx(per_image[1])
    assert float((weights[data.labels]).mean()) == pytest.approx(1.0)  # the loss keeps its scale
    plain = toy(8)  # one slice per image, 1:1: no reweighting
    np.testing.assert_allclose(image_prior_weights(plain, 2).numpy(), [1.0, 1.0])


def _balanced_accuracy_of(model: torch.nn.Module, data: SliceSet) -> float:
    from magicflow.experiments.train import balanced_accuracy

    predicted = logits_of(model, data, torch.device("cpu")).argmax(1).numpy()
    return balanced_accuracy(data.labels.numpy(), predicted)


@pytest.mark.slow
def test_weighted_training_keeps_the_threshold_where_the_image_priors_put_it(tmp_path: Path):
    from dataclasses import replace

    from magicflow.baselines.discriminative import CLASSIFIER, classifier_objective, image_prior_weights

    train, val, test = augmented(60, 5, 0), augmented(20, 1, 1), augmented(400, 1, 2)
    given = settings("resnet18", size=4, epochs=25, batch_size=32, lr=0.05)
    given["training"]["augment"] = {"rotate_degrees": 0.0, "shift_pixels": 0.0, "noise_sigma": 0.0}
    scores = {}
    for name, objective in (
        ("unweighted", CLASSIFIER),
        ("weighted", classifier_objective(image_prior_weights(train, 2))),
    ):
        torch.manual_seed(0)
        model = Brightness()
        train_baseline(
            model, train, val, tmp_path / name, given, torch.device("cpu"), 2, objective=replace(objective, check_size=False)
        )
        scores[name] = _balanced_accuracy_of(model, test)
    # equal image priors put the threshold midway (0.5): balanced accuracy Phi(0.1 / 0.15) = 0.75;
    # 5:1 slices move it by log(5) 0.15^2 / 0.2 = 0.18 towards CN: (Phi(1.87) + Phi(-0.53)) / 2 = 0.63
    assert scores["weighted"] == pytest.approx(0.75, abs=0.05)
    assert scores["unweighted"] == pytest.approx(0.63, abs=0.05)
    assert scores["weighted"] > scores["unweighted"] + 0.06


def test_the_default_objective_is_weighted_and_best_pt_says_so(tmp_path: Path, monkeypatch):
    from magicflow.baselines import discriminative

    train, val = augmented(4, 5, 0), augmented(2, 1, 1)
    monkeypatch.setattr(discriminative, "check_image_size", lambda *a: None)  # the toy is no timm model
    train_baseline(
        Brightness(), train, val, tmp_path, settings("resnet18", size=4, epochs=1, batch_size=8), torch.device("cpu"), 2
    )
    extra = torch.load(tmp_path / "best.pt", weights_only=True)["extra"]
    assert extra["class_weights"] == pytest.approx([0.6, 3.0])
    assert extra["image_priors"] == pytest.approx([0.5, 0.5])
    assert extra["loss"] == "cross-entropy (image-prior class weights)"
