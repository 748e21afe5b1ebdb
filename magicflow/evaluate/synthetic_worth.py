"""``magicflow synthetic-worth``: what a generation experiment's synthetic slices are worth to a classifier.

On each fold whose model drew synthetic slices (``magicflow synthesise``), classifiers are trained
on the fold's real training slices only, on the synthetic slices only (train on synthetic, test
on real), on real plus synthetic at each ``ratio`` (synthetic slices added = ratio x real
training slices) and on real plus synthetic slices of the smallest class only (enough to match
the largest class: the paper's use, augmenting an underrepresented condition). Every one is
selected on the fold's real validation slices and tested on its real test subjects, whom the
generator never saw. Per fold, classifier and training set: balanced accuracy with a 95 %
interval (test subjects resampled), the smallest class's recall, and the paired difference from
real-only on the same test subjects (paired bootstrap). The unit is the image, as everywhere in
the pipeline: its slices' scores summed, the flow's prior (the real training images') added
once. The classifiers are the flow's classification model (the experiment's preset and
application mask) and ResNet-18, trained from scratch with the experiment's training settings."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet
from magicflow.io import write_json

CLASSIFIERS = ("flow", "resnet18")
REAL, SYNTHETIC, SMALLEST = "real", "synthetic", "real + synthetic smallest class"


def mixed(ratio: float) -> str:
    return f"real + synthetic x{ratio:g}"


def synthetic_set(samples: np.ndarray, labels: np.ndarray, classes: list[str], fold: str) -> SliceSet:
    """The fold's synthetic slices as a set of one-slice images (so priors count each once)."""
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise InputError(f"synthetic labels {unknown} are not the experiment's classes {classes}")
    meta = pd.DataFrame({"dataset": "synthetic", "image": [f"{fold}-synthetic-{i}" for i in range(len(labels))]})
    meta["subject"] = meta["image"]
    return SliceSet(torch.from_numpy(np.asarray(samples, np.float32)), torch.tensor([classes.index(c) for c in labels]), meta)


def smallest_class(real: SliceSet, num_classes: int) -> tuple[int, np.ndarray]:
    """The class with the fewest real training images (not slices: augment offsets add slices to
    one class only) and the image count of every class."""
    counts = np.bincount(real.image_labels().numpy(), minlength=num_classes)
    return int(counts.argmin()), counts


def training_sets(real: SliceSet, synthetic: SliceSet, ratios: list[float], num_classes: int, seed: int) -> dict[str, SliceSet]:
    """The training sets compared, by name; synthetic slices are taken in one seeded order. A
    ratio asking for more synthetic slices than there are takes them all (the rows record how
    many each set holds)."""
    order = np.random.default_rng(seed).permutation(len(synthetic))
    out = {REAL: real, SYNTHETIC: synthetic}
    for ratio in ratios:
        wanted = round(ratio * len(real))
        if wanted > len(order):
            print(f"ratio {ratio:g} asks for {wanted} synthetic slices; the fold has {len(order)}: all are used")
        out[mixed(ratio)] = real.joined(synthetic.take(order[:wanted]))
    smallest, counts = smallest_class(real, num_classes)
    chosen = [i for i in order if int(synthetic.labels[i]) == smallest][: int(counts.max() - counts[smallest])]
    out[SMALLEST] = real.joined(synthetic.take(np.asarray(chosen, dtype=int)))
    return out


def balanced_accuracy(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``true``."""
    recalls = [np.mean(predicted[true == k] == k) for k in range(num_classes) if (true == k).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def paired_bootstrap(
    true: np.ndarray, predicted: dict[str, np.ndarray], subjects: np.ndarray, num_classes: int, n: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per prediction set, balanced accuracy on ``n`` resamples of the test subjects (the same
    resamples for every set, so differences are paired)."""
    units = [np.flatnonzero(subjects == s) for s in np.unique(subjects)]
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([units[k] for k in rng.integers(0, len(units), len(units))]) for _ in range(n)]
    return {name: np.array([balanced_accuracy(true[d], p[d], num_classes) for d in draws]) for name, p in predicted.items()}


def interval(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    return [float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))] if len(finite) else [float("nan")] * 2


def fit_and_predict(
    classifier: str,
    train: SliceSet,
    val: SliceSet,
    test: SliceSet,
    classes: list[str],
    settings: dict[str, Any],
    device: torch.device,
    log_prior: np.ndarray,
    mask: torch.Tensor | None = None,
) -> np.ndarray:
    """Train ``classifier`` on ``train`` (selected on ``val``) and return its label per test image:
    the flow's log-likelihoods (ResNet-18's log-softmax) summed over the image's slices, the flow's
    ``log_prior`` (the real training images', whatever synthetic slices were added) added once."""
    from scipy.special import log_softmax

    from magicflow.experiments.infer import class_log_likelihoods
    from magicflow.experiments.posterior import image_index, sum_by_image

    training = settings["training"]
    size = int(test.images.shape[-1])
    torch.manual_seed(training["seed"])
    with tempfile.TemporaryDirectory() as work:
        if classifier == "flow":
            from magicflow.experiments.commands import train_settings_of
            from magicflow.experiments.train import train_model
            from magicflow.flow import MagicFlow, load_checkpoint

            model = MagicFlow.from_preset(
                settings["preset_base"],
                len(classes),
                coupling="classification",
                mask=mask,
                **{**settings["preset_overrides"], "image_size": size},
            )
            train_model(model, train, val, Path(work), train_settings_of(settings), device, classification=True, progress=False)
            model, _ = load_checkpoint(Path(work) / "best.pt", map_location=device)
            scores = sum_by_image(class_log_likelihoods(model, test, device), image_index(test.meta, len(test))) + log_prior
        elif classifier == "resnet18":
            from magicflow.baselines.discriminative import build_model, load_baseline, logits_of, train_baseline

            baseline = {"name": "resnet18", "label": "ResNet-18", "architecture": "resnet18", "image_size": size}
            baseline |= {"weights": None, "training": training}
            train_baseline(build_model("resnet18", len(classes), size), train, val, Path(work), baseline, device, len(classes))
            model, _ = load_baseline(Path(work) / "best.pt", device)
            logits = logits_of(model, test, device).numpy()
            scores = sum_by_image(log_softmax(logits, axis=1), image_index(test.meta, len(test)))
        else:
            raise InputError(f"unknown classifier {classifier!r}; known: {', '.join(CLASSIFIERS)}")
    return np.asarray(scores).argmax(1)


def fold_rows(
    fold: str,
    sets: dict[str, SliceSet],
    synthetic: SliceSet,
    classes: list[str],
    settings: dict[str, Any],
    classifiers: list[str],
    ratios: list[float],
    device: torch.device,
    bootstrap: int,
    mask: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """One row per classifier and training set of this fold, scored per test image."""
    from magicflow.experiments.posterior import image_index, labels_by_image, log_priors

    k = len(classes)
    train_sets = training_sets(sets["train"], synthetic, ratios, k, settings["seed"])
    prior = log_priors(sets["train"].image_labels().numpy(), k)
    test = sets["test"]
    true = labels_by_image(test.labels.numpy(), image_index(test.meta, len(test)), f"{fold} test slices")
    keys = [c for c in ("dataset", "image") if c in test.meta]
    first = test.meta.drop_duplicates(keys) if len(keys) == 2 else test.meta
    if {"dataset", "subject"} <= set(first.columns):
        subjects = (first["dataset"].astype(str) + "/" + first["subject"].astype(str)).to_numpy()
    else:
        subjects = np.arange(len(true))
    smallest, _ = smallest_class(sets["train"], k)
    rows = []
    for classifier in classifiers:
        predicted = {}
        for name, train in train_sets.items():
            print(f"{fold} {classifier}: training on {name} ({len(train)} slices)", flush=True)
            predicted[name] = fit_and_predict(classifier, train, sets["val"], test, classes, settings, device, prior, mask)
        resampled = paired_bootstrap(true, predicted, subjects, k, bootstrap, settings["seed"])
        for name, p in predicted.items():
            n_synthetic = int((train_sets[name].meta["dataset"] == "synthetic").sum())
            difference = resampled[name] - resampled[REAL]
            rows.append(
                {
                    "fold": fold,
                    "classifier": classifier,
                    "training_set": name,
                    "real_slices": len(train_sets[name]) - n_synthetic,
                    "synthetic_slices": n_synthetic,
                    "balanced_accuracy": balanced_accuracy(true, p, k),
                    "interval": interval(resampled[name]),
                    "smallest_class": classes[smallest],
                    "smallest_class_recall": float(np.mean(p[true == smallest] == smallest))
                    if (true == smallest).any()
                    else float("nan"),
                    "difference_vs_real": balanced_accuracy(true, p, k) - balanced_accuracy(true, predicted[REAL], k),
                    "difference_interval": interval(difference) if name != REAL else [0.0, 0.0],
                    "test_images": int(len(true)),
                    "test_subjects": int(len(np.unique(subjects))),
                }
            )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over folds per classifier and training set."""
    table = pd.DataFrame(rows)
    keep = ["balanced_accuracy", "smallest_class_recall", "difference_vs_real", "synthetic_slices"]
    grouped = table.groupby(["classifier", "training_set"], sort=False)[keep].mean().reset_index()
    grouped["folds"] = table.groupby(["classifier", "training_set"], sort=False).size().to_numpy()
    return grouped.to_dict(orient="records")


# --------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magicflow.experiments.commands import add_experiment_inputs

    add_experiment_inputs(parser)
    parser.add_argument("--folds", required=True, type=Path, help="results/<experiment>/splits/folds")
    parser.add_argument("--synthetic", required=True, type=Path, help="results/<experiment>/synthetic/synthetic.npz")
    parser.add_argument("--classifiers", default="flow,resnet18", help="comma-separated: flow, resnet18")
    parser.add_argument("--ratios", default="0.5,1", help="synthetic slices added per real training slice, comma-separated")
    parser.add_argument("--epochs", type=int, help="training epochs of every classifier (default: the experiment's)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="test-subject resamples for the intervals")
    parser.add_argument("--out", required=True, type=Path, help="synthetic_worth.json")


def run(args: argparse.Namespace) -> int:
    from magicflow.evaluate.experiment import to_json
    from magicflow.experiments.commands import application_mask, fold_sets, load_inputs
    from magicflow.experiments.train import resolve_device

    classifiers = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    unknown = sorted(set(classifiers) - set(CLASSIFIERS))
    if unknown or not classifiers:
        raise InputError(f"--classifiers {args.classifiers!r}: choose among {', '.join(CLASSIFIERS)}")
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        raise InputError(f"--ratios {args.ratios!r}: expected numbers such as 0.5,1") from None
    if any(r <= 0 for r in ratios):
        raise InputError(f"--ratios {args.ratios!r}: ratios must be positive")
    settings, slices, arrays, brain = load_inputs(args)
    if settings["model"] != "generation":
        raise InputError(f"{args.experiment}: synthetic-worth needs a generation experiment, not {settings['model']!r}")
    if args.epochs is not None:
        settings["training"] = {**settings["training"], "epochs": args.epochs}
    try:
        with np.load(args.synthetic) as archive:
            samples, labels, folds = archive["samples"], archive["labels"].astype(str), archive["folds"].astype(str)
    except Exception as error:  # missing, truncated, or without those arrays: name the file
        raise InputError(f"{args.synthetic}: not a synthetic.npz of magicflow synthesise ({error})") from None
    mask = application_mask(brain)
    device = resolve_device(settings["training"]["device"])
    rows = []
    for fold in sorted(set(folds)):
        args.fold_dir = args.folds / fold
        classes, sets = fold_sets(args, settings, slices, arrays)
        mine = folds == fold
        if samples.shape[-1] != sets["test"].images.shape[-1]:
            raise InputError(
                f"{args.synthetic}: samples of size {samples.shape[-1]}, the experiment's images are {sets['test'].images.shape[-1]}"
            )
        synthetic = synthetic_set(samples[mine], labels[mine], classes, fold)
        rows += fold_rows(fold, sets, synthetic, classes, settings, classifiers, ratios, device, args.bootstrap, mask)
    if not rows:
        raise InputError(f"{args.synthetic}: no synthetic slices to train on")
    result = {
        "experiment": settings["name"],
        "classifiers": classifiers,
        "ratios": ratios,
        "rows": rows,
        "summary": summary(rows),
    }
    write_json(args.out, to_json(result))
    for r in summary(rows):
        print(
            f"{r['classifier']:>9} {r['training_set']:<32} balanced accuracy {r['balanced_accuracy']:.3f} ({r['difference_vs_real']:+.3f})"
        )
    return 0
