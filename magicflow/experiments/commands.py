"""Stage commands of an experiment: ``split``, ``train``, ``sample``, ``classify``, ``attribution``.

Each reads ``results/<experiment>/experiment.json`` (the experiment's resolved settings,
written by the workflow from the config) plus the files it is given, and writes only into
its output folder, atomically."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from magicflow.errors import InputError
from magicflow.experiments import data as exp_data
from magicflow.experiments.split import make_splits, read_fold, write_splits
from magicflow.io import atomic_dir, atomic_path


def parse_pairs(values: list[str], what: str) -> dict[str, Path]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--{what} {value!r}: expected DATASET=PATH")
        out[name] = Path(path)
    return out


def read_experiment_settings(path: Path) -> dict:
    """An experiment's settings file (``experiment.json``), with an error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read experiment settings {path}: {error}") from None


def add_experiment_inputs(parser: argparse.ArgumentParser, arrays: bool = True) -> None:
    parser.add_argument("--experiment", required=True, type=Path, help="results/<experiment>/experiment.json")
    parser.add_argument(
        "--slices", action="append", default=[], metavar="DATASET=TSV", help="a dataset's slices.tsv (repeat per dataset)"
    )
    if arrays:
        parser.add_argument(
            "--arrays", action="append", default=[], metavar="DATASET=NPZ", help="a dataset's slices.npz (repeat per dataset)"
        )


def load_inputs(args: argparse.Namespace) -> tuple[dict, pd.DataFrame, dict[str, np.ndarray], np.ndarray]:
    """Settings, the experiment's slice rows, each dataset's slice array and the brain mask,
    all as the experiment's :class:`~magicflow.view.View` sees them (area-resized
    to ``image_size`` or cropped, here after slicing, so one ``slices.npz`` serves every view).
    ``settings["view"]`` records the resolved view (a crop's box) for the stage's outputs."""
    from magicflow.view import read_mask, resolve_view

    settings = read_experiment_settings(args.experiment)
    slices = exp_data.experiment_slices(parse_pairs(args.slices, "slices"), settings)
    paths = parse_pairs(args.arrays, "arrays")
    if not paths:
        raise InputError("no --arrays DATASET=NPZ given")
    first = next(iter(paths.values()))
    view = resolve_view(settings, read_mask(first), str(first))
    arrays = {}
    for name, path in paths.items():
        with np.load(path) as archive:
            arrays[name] = view.images(archive["slices"])
    settings["view"] = view.record()
    return settings, slices, arrays, view.mask(read_mask(first))[0]


# --------------------------------------------------------------------------- check-data
def add_check_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment", required=True, type=Path, help="results/<experiment>/splits/settings.json (or experiment.json)"
    )
    parser.add_argument(
        "--manifest", action="append", default=[], metavar="DATASET=TSV", help="a dataset's manifest.tsv (repeat per dataset)"
    )
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/data_check.json")


def run_check_data(args: argparse.Namespace) -> int:
    """The experiment against its datasets' manifests, right after they are written: a label,
    class or fold count the data cannot give fails here, before registration and slicing."""
    from magicflow.config import check_experiment_manifests
    from magicflow.datasets.manifest import read_manifest

    settings = read_experiment_settings(args.experiment)
    manifests = {name: read_manifest(path) for name, path in parse_pairs(args.manifest, "manifest").items()}
    missing = sorted(set(settings["datasets"]) - set(manifests))
    if missing:
        raise InputError(f"--manifest: no manifest given for the experiment's datasets {missing}")
    counts = check_experiment_manifests(settings, manifests)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps({"experiment": settings["name"], "per_class": counts}, indent=2) + "\n")
    summary = ", ".join(f"{c}: {v['images']} images of {v['subjects']} subjects" for c, v in counts.items())
    print(f"{settings['name']}: the manifests hold {summary} for {settings['folds']} folds -> {args.out}")
    return 0


# --------------------------------------------------------------------------- split
def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_inputs(parser, arrays=False)  # --experiment: splits/settings.json, the part of experiment.json it reads
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/splits/folds (replaced only when complete)")
    parser.add_argument("--info", type=Path, help="also write split.json here (results/<experiment>/splits/split.json)")


def run_split(args: argparse.Namespace) -> int:
    settings = read_experiment_settings(args.experiment)
    slices = exp_data.experiment_slices(parse_pairs(args.slices, "slices"), settings)
    images = exp_data.experiment_images(slices)
    splits = make_splits(images, settings["folds"], settings["run_folds"], settings["seed"])
    with atomic_dir(args.out) as tmp:
        write_splits(
            splits,
            tmp,
            {
                "experiment": settings["name"],
                "label": settings["label"],
                "folds": settings["folds"],
                "run_folds": settings["run_folds"],
                "seed": settings["seed"],
                "images": len(images),
            },
        )
        if args.info is not None:
            with atomic_path(args.info) as info:
                shutil.copyfile(tmp / "split.json", info)
    print(
        f"{settings['name']}: {len(images)} images of {images['subject'].nunique()} subjects in {settings['run_folds']} fold(s) -> {args.out}"
    )
    return 0


def fold_sets(args, settings, slices, arrays):
    """The fold's classes (split.json) and its train/val/test SliceSets: training slices at the
    training offsets plus each class's augment offsets, validation and test at the evaluation
    offsets (shared by the flow's stages and the baselines, so both see the same slices)."""
    from magicflow.experiments.data import load_set, select_slices

    classes = json.loads((args.fold_dir.parent / "split.json").read_text())["classes"]
    sets = read_fold(args.fold_dir)
    offsets = settings["offsets"]
    rows = {
        "train": select_slices(slices, sets["train"], offsets["train"], offsets.get("augment")),
        "val": select_slices(slices, sets["val"], offsets["eval"]),
        "test": select_slices(slices, sets["test"], offsets["eval"]),
    }
    return classes, {name: load_set(r, arrays, classes) for name, r in rows.items()}


# --------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_inputs(parser)
    parser.add_argument("--fold-dir", required=True, type=Path, help="results/<experiment>/splits/fold-<k>")
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/models/fold-<k>")


def application_mask(mask: np.ndarray) -> torch.Tensor | None:
    """The brain mask as the flow's application-specific coupling mask, or None (the flow's
    checkerboard) where it does not split the image: a crop lying wholly inside the brain."""
    if mask.min() == mask.max():
        print("the brain mask is uniform in this view (a crop inside the brain): the first coupling uses a checkerboard")
        return None
    return torch.from_numpy(mask.astype(np.float32))


def train_settings_of(settings: dict):
    """The flow's TrainSettings from an experiment's resolved ``training`` section."""
    from magicflow.experiments.train import TrainSettings

    t = settings["training"]
    return TrainSettings(
        epochs=t["epochs"],
        patience=t.get("patience"),
        batch_size=t["batch_size"],
        lr=t["lr"],
        seed=t["seed"],
        loss=t.get("loss", "dimension"),
        precision=t.get("precision", "auto"),
        ema=t.get("ema", 0.0),
        compile=t.get("compile", False),
        checkpointing=t.get("checkpointing", False),
        **t.get("augment", {}),
    )


def run_train(args: argparse.Namespace) -> int:
    from magicflow.experiments.memory import plan_memory
    from magicflow.experiments.train import resolve_device, train_model
    from magicflow.flow import MagicFlow

    settings, slices, arrays, mask = load_inputs(args)
    classes, sets = fold_sets(args, settings, slices, arrays)
    t = settings["training"]
    train_settings = train_settings_of(settings)
    torch.manual_seed(t["seed"])
    model = MagicFlow.from_preset(
        settings["preset_base"],
        len(classes),
        coupling=settings["model"],
        mask=application_mask(mask),
        **{**settings["preset_overrides"], "image_size": int(mask.shape[-1])},
    )
    device = resolve_device(t["device"])
    print(
        f"{settings['name']} {args.fold_dir.name}: {len(sets['train'])} training / {len(sets['val'])} validation slices, "
        f"{len(classes)} classes, {sum(p.numel() for p in model.parameters()):,} parameters, device {device}"
    )
    data_on_device = plan_memory(model, train_settings, device, sets["train"])  # stops here when a step will not fit
    train_model(
        model,
        sets["train"],
        sets["val"],
        args.out,
        train_settings,
        device,
        classification=settings["model"] == "classification",
        extra={"classes": classes, "experiment": settings["name"], "fold": args.fold_dir.name, "view": settings["view"]},
        data_on_device=data_on_device,
    )
    return 0


def _model(path: Path, device: str):
    from magicflow.experiments.train import resolve_device
    from magicflow.flow import load_checkpoint

    dev = resolve_device(device)
    model, extra = load_checkpoint(path, map_location=dev)
    return model, extra, dev


# --------------------------------------------------------------------------- sample
def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path, help="best.pt")
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/samples/fold-<k>")


def run_sample(args: argparse.Namespace) -> int:
    from magicflow.experiments.infer import draw_samples, write_samples
    from magicflow.view import View

    settings = read_experiment_settings(args.experiment)
    model, extra, device = _model(args.model, settings["training"]["device"])
    s = settings["samples"]
    started = time.perf_counter()
    samples = draw_samples(model, extra["classes"], s["per_class"], s["temperature"], settings["seed"], device)
    seconds = time.perf_counter() - started
    view = View.from_record(extra.get("view"), model.image_size)
    write_samples(samples, extra["classes"], args.out, seconds=seconds, device=str(device), view=view)
    print(f"{samples.shape[0] * samples.shape[1]} samples at temperature {s['temperature']} -> {args.out}")
    return 0


# --------------------------------------------------------------------------- classify
def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_inputs(parser)
    parser.add_argument("--fold-dir", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path, help="best.pt")
    parser.add_argument("--out", required=True, type=Path, help="predictions.tsv")


def run_classify(args: argparse.Namespace) -> int:
    from magicflow.experiments.infer import class_log_likelihoods, predictions_table, write_predictions

    settings, slices, arrays, _ = load_inputs(args)
    classes, sets = fold_sets(args, settings, slices, arrays)
    model, _, device = _model(args.model, settings["training"]["device"])
    test_ll = class_log_likelihoods(model, sets["test"], device)
    val_ll = class_log_likelihoods(model, sets["val"], device)
    table, temperature = predictions_table(sets["test"], sets["val"], sets["train"], classes, test_ll, val_ll)
    with atomic_path(args.out) as tmp:
        write_predictions(table, tmp)
    accuracy = float((table["true"] == table["predicted"]).mean()) if len(table) else float("nan")
    print(f"{len(table)} test slices, accuracy {accuracy:.3f}, temperature {temperature:.3g} -> {args.out}")
    return 0


# --------------------------------------------------------------------------- attribution
def add_attribution_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_inputs(parser)
    parser.add_argument("--fold-dir", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path, help="best.pt")
    parser.add_argument("--predictions", required=True, type=Path, help="predictions.tsv of the same fold")
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/attribution/fold-<k>")


def run_attribution(args: argparse.Namespace) -> int:
    from magicflow.experiments.infer import attribution_maps, overlay_png
    from magicflow.view import View

    settings, slices, arrays, mask = load_inputs(args)
    view = View.from_record(settings["view"])
    classes, sets = fold_sets(args, settings, slices, arrays)
    test = sets["test"]
    limit = min(len(test), settings["attribution"]["max_images"])
    predictions = pd.read_csv(args.predictions, sep="\t", dtype=str, keep_default_na=False).iloc[:limit]
    if list(predictions["image"]) != list(test.meta["image"].iloc[:limit]):
        raise InputError(f"{args.predictions} does not list this fold's test slices in order; rerun classify")
    model, _, device = _model(args.model, settings["training"]["device"])
    subset = type(test)(test.images[:limit], test.labels[:limit], test.meta.iloc[:limit])
    lookup = {c: i for i, c in enumerate(classes)}
    predicted = torch.tensor([lookup[p] for p in predictions["predicted"]], dtype=torch.long)
    # one map per class (K passes): true- and predicted-label maps are rows of it, and the
    # per-pixel log-likelihood ratio between classes is what evaluation scores against truth
    class_maps = np.stack(
        [attribution_maps(model, subset, torch.full((limit,), k, dtype=torch.long), device)[:, 0] for k in range(len(classes))],
        axis=1,
    )
    rows = np.arange(limit)
    true_maps = class_maps[rows, subset.labels.numpy()][:, None]
    pred_maps = class_maps[rows, predicted.numpy()][:, None]
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "maps.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                true_label=true_maps,
                predicted_label=pred_maps,
                class_maps=class_maps,
                classes=np.array(classes, dtype=str),
                images=subset.images.numpy(),
                image=subset.meta["image"].to_numpy(str),
                dataset=subset.meta["dataset"].to_numpy(str),
                subject=subset.meta["subject"].to_numpy(str),
                offset=subset.meta["offset"].to_numpy(int),
                true=predictions["true"].to_numpy(str),
                predicted=predictions["predicted"].to_numpy(str),
            )
    for i in range(limit):
        name = subset.meta["image"].iloc[i]
        t, p = predictions["true"].iloc[i], predictions["predicted"].iloc[i]
        overlay_png(
            args.out / f"{name}_offset{subset.meta['offset'].iloc[i]}.png",
            subset.images[i, 0].numpy(),
            {f"H(x, true={t})": true_maps[i, 0], f"H(x, predicted={p})": pred_maps[i, 0]},
            mask,
            f"{name}: true {t}, predicted {p}",
            view,
        )
    print(f"attribution maps for {limit} test slices -> {args.out}")
    return 0
