"""``magicflow baseline-train``, ``baseline-classify`` and ``baseline-sample``: one baseline on one fold.

``baseline-train`` trains either kind (baseline.json's ``kind``: discriminative or generative);
``baseline-classify`` applies a discriminative one, ``baseline-sample`` draws a generative one's
samples into the flow's samples.npz layout.

Both read the experiment's ``experiment.json`` (slices, offsets, image size, device) and the
baseline's ``baseline.json`` (``results/<experiment>/baselines/<id>/``: architecture, weights
file, training settings), and load the fold's sets exactly as the flow's ``train`` and
``classify`` do."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from magicflow.errors import InputError
from magicflow.io import atomic_path


def _baseline(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read baseline settings {path}: {error}") from None


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    from magicflow.experiments.commands import add_experiment_inputs

    add_experiment_inputs(parser)
    parser.add_argument("--baseline", required=True, type=Path, help="results/<experiment>/baselines/<id>/baseline.json")
    parser.add_argument("--fold-dir", required=True, type=Path, help="results/<experiment>/splits/folds/fold-<k>")


def _load(args: argparse.Namespace):
    from magicflow.experiments.commands import fold_sets, load_inputs

    settings, slices, arrays, mask = load_inputs(args)
    baseline = _baseline(args.baseline)
    if baseline.get("image_size", settings.get("image_size")) != settings.get("image_size"):
        raise InputError(
            f"{args.baseline} is for image_size {baseline['image_size']}, {args.experiment} has {settings['image_size']}; "
            "rerun its baseline_settings job"
        )
    classes, sets = fold_sets(args, settings, slices, arrays)
    return settings, baseline, classes, sets, mask


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    _add_inputs(parser)
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/baselines/<id>/models/fold-<k>")


def run_train(args: argparse.Namespace) -> int:
    from magicflow.baselines.discriminative import model_from_settings, train_baseline
    from magicflow.experiments.train import resolve_device

    settings, baseline, classes, sets, _ = _load(args)
    device = resolve_device(baseline["training"]["device"])
    torch.manual_seed(baseline["training"]["seed"])
    generative = baseline.get("kind") == "generative"
    if baseline.get("kind") == "translation":
        from magicflow.baselines.translation import train_translation_baseline

        train_translation_baseline(settings, baseline, classes, sets, args.out, device, args.fold_dir.name)
        return 0
    if generative:
        from magicflow.baselines.generative import build_generative, objective

        model = build_generative(baseline, len(classes))
        extra_args = {"objective": objective(model)}
    else:
        model = model_from_settings(baseline, len(classes))
        extra_args = {}
    print(
        f"{settings['name']} {baseline['id']} ({baseline['architecture']}) {args.fold_dir.name}: {len(sets['train'])} training / "
        f"{len(sets['val'])} validation slices, {len(classes)} classes, {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, device {device}" + (f", from {baseline['weights']}" if baseline.get("weights") else ", from scratch")
    )
    train_baseline(
        model,
        sets["train"],
        sets["val"],
        args.out,
        baseline,
        device,
        len(classes),
        extra={"classes": classes, "experiment": settings["name"], "fold": args.fold_dir.name, "view": settings["view"]},
        **extra_args,
    )
    return 0


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    _add_inputs(parser)
    parser.add_argument("--model", required=True, type=Path, help="the baseline's best.pt of this fold")
    parser.add_argument("--out", required=True, type=Path, help="predictions.tsv")


def run_classify(args: argparse.Namespace) -> int:
    from magicflow.baselines.discriminative import load_baseline, logits_of, predictions_table
    from magicflow.experiments.infer import write_predictions
    from magicflow.experiments.train import resolve_device

    settings, baseline, classes, sets, _ = _load(args)
    device = resolve_device(baseline["training"]["device"])
    model, payload = load_baseline(args.model, device)
    if payload["extra"].get("classes", classes) != classes:
        raise InputError(
            f"{args.model} was trained on classes {payload['extra']['classes']}, the split has {classes}; retrain it"
        )
    test = logits_of(model, sets["test"], device).double().numpy()
    val = logits_of(model, sets["val"], device).double().numpy()
    table, temperature = predictions_table(sets["test"], sets["val"], classes, test, val)
    with atomic_path(args.out) as tmp:
        write_predictions(table, tmp)
    accuracy = float((table["true"] == table["predicted"]).mean()) if len(table) else float("nan")
    print(f"{baseline['id']}: {len(table)} test slices, accuracy {accuracy:.3f}, temperature {temperature:.3g} -> {args.out}")
    return 0


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, type=Path, help="results/<experiment>/experiment.json")
    parser.add_argument("--baseline", required=True, type=Path, help="results/<experiment>/baselines/<id>/baseline.json")
    parser.add_argument("--model", required=True, type=Path, help="the baseline's best.pt of this fold")
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/baselines/<id>/samples/fold-<k>")


def run_sample(args: argparse.Namespace) -> int:
    """``samples.per_class`` images per class, as the flow's ``sample`` writes them."""
    import time

    from magicflow.baselines.discriminative import load_baseline
    from magicflow.baselines.generative import build_generative, draw_samples
    from magicflow.experiments.commands import read_experiment_settings
    from magicflow.experiments.infer import write_samples
    from magicflow.experiments.train import resolve_device
    from magicflow.view import View

    settings = read_experiment_settings(args.experiment)
    baseline = _baseline(args.baseline)
    if baseline.get("kind") != "generative":
        raise InputError(f"{args.baseline}: {baseline.get('name')!r} is not a generative baseline; nothing to sample")
    device = resolve_device(baseline["training"]["device"])
    model, payload = load_baseline(args.model, device, build=build_generative)
    classes = payload["extra"]["classes"]
    s = settings["samples"]
    started = time.perf_counter()
    samples = draw_samples(model, classes, s["per_class"], s["temperature"], settings["seed"], device)
    seconds = time.perf_counter() - started
    view = View.from_record(payload["extra"].get("view"), int(samples.shape[-1]))
    write_samples(samples, classes, args.out, seconds=seconds, device=str(device), view=view)
    print(f"{baseline['id']}: {samples.shape[0] * samples.shape[1]} samples -> {args.out}")
    return 0


def add_translate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_inputs(parser)
    parser.add_argument("--model", required=True, type=Path, help="the baseline's best.pt of this fold")
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/baselines/<id>/translations/fold-<k>")


def run_translate(args: argparse.Namespace) -> int:
    """The fold's test sources through a translation baseline, into the flow's translations.npz layout."""
    from magicflow.baselines.translation import translate_with_baseline
    from magicflow.experiments.train import resolve_device

    settings, baseline, classes, sets, mask = _load(args)
    if baseline.get("kind") != "translation":
        raise InputError(f"{args.baseline}: {baseline.get('name')!r} is not a translation baseline")
    device = resolve_device(baseline["training"]["device"])
    translate_with_baseline(args.model, settings, baseline, classes, sets["test"], device, args.out, mask, sets["train"])
    return 0
