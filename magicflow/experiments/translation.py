"""Translation experiments (``model: translation``): DUAL-GLOW's dual flow from each subject's
source slice (T1w) to its target slice (a PET), per fold (``magicflow translate-train``,
``magicflow translate``).

A fold's slices are pairs (:func:`magicflow.experiments.data.pair_with_source`): channel 0 the
source, channel 1 the target, so the shared training loop
(:func:`magicflow.baselines.discriminative.train_baseline`) augments both with one affine and
the splits, resuming, checkpoints and curves are those of every other model. Side information
(``translation.side``) is per slice: the label one-hot, the age standardised with the
training set's mean and spread (kept in the checkpoint, so translation uses the same scale),
or (``predicted``) the label one-hot for training and validation subjects, whose diagnoses are
known, and for test subjects the label a classifier of the source images alone predicts
(:func:`source_label_predictions`, fitted on the fold's training slices). ``label`` hands the
translator each test subject's true diagnosis, so a diagnosis read off its output
(DUAL-GLOW's Table 2) measures obedience to that label: evaluation flags it as circular.
:func:`held_out_conditions` is the one place test side information is made.

Outputs of a fold (``translations.npz``, the one layout the flow and the translation baselines
write and evaluation reads): ``source``, ``real``, ``mode`` (the translation at temperature 0)
and, for the flow, ``std`` (the voxel-wise standard deviation of ``samples`` translations at
``temperature``), all (N, 1, S, S) in [0, 1]; the test slices' identity columns; ``seconds``.
Beside it: a NIfTI of each test image's translated slices on the MNI 1 mm grid (evaluation
draws the triptychs)."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from magicflow.errors import InputError
from magicflow.experiments.commands import application_mask
from magicflow.experiments.data import SliceSet
from magicflow.view import View
from magicflow.experiments.train import TrainSettings
from magicflow.io import atomic_path

#: identity columns of the test slices kept in translations.npz
META_COLUMNS = ("dataset", "subject", "session", "image", "source_image", "label", "offset", "age")
#: ages of the age sweep (side: age), in years
SWEEP_AGES = (55.0, 62.0, 69.0, 76.0, 83.0, 90.0)
#: dequantisation noise width, the flow's training default (one 8-bit level of the [0, 1] slices)
DEQUANTIZE = TrainSettings.dequantize


# --------------------------------------------------------------------------- side information
def side_dim(settings: dict[str, Any], classes: list[str]) -> int:
    """Width of the side vector: 0 (none), the class count (label, predicted) or 1 (age)."""
    return {"none": 0, "label": len(classes), "predicted": len(classes), "age": 1}[settings["translation"]["side"]]


def _ages(data: SliceSet) -> np.ndarray:
    if "age" not in data.meta:
        raise InputError("translation.side is age, but the slices have no age column (the manifest's age)")
    ages = pd.to_numeric(data.meta["age"], errors="coerce").to_numpy(float)
    unknown = data.meta["image"][np.isnan(ages)].unique()
    if len(unknown):
        raise InputError(f"translation.side is age, but {len(unknown)} image(s) have none (e.g. {unknown[0]}); set side: none")
    return ages


def age_scale(train: SliceSet) -> tuple[float, float]:
    """Mean and standard deviation of the training slices' ages (std 1 when all are equal)."""
    ages = _ages(train)
    spread = float(ages.std())
    return float(ages.mean()), spread if spread > 0 else 1.0


def side_table(data: SliceSet, side: str, classes: list[str], scale: tuple[float, float] | None) -> torch.Tensor:
    """(N, D) float side vectors of a training or validation set (D = :func:`side_dim`; (N, 0) for
    none). For ``predicted`` these are the subjects' known labels: test sets go through
    :func:`held_out_conditions` instead, which never reads their labels."""
    if side == "none":
        return torch.zeros(len(data), 0)
    if side in ("label", "predicted"):
        return F.one_hot(data.labels, len(classes)).float()
    mean, std = scale if scale is not None else age_scale(data)
    return torch.from_numpy((_ages(data) - mean) / std).float()[:, None]


def _source_features(data: SliceSet) -> np.ndarray:
    """(N, S*S) float64 pixels of the source channel: all a source-only classifier may see."""
    return data.images[:, 0].reshape(len(data), -1).double().numpy()


def source_label_predictions(train: SliceSet, images: torch.Tensor, classes: list[str]) -> np.ndarray:
    """Integer labels (N,) that a classifier of the source images alone predicts for ``images``
    (N, 2, S, S) pairs (only channel 0 is read, and no label of theirs: the argument is the
    images, not a set). L2-regularised logistic regression (C 1) on standardised source pixels,
    fitted on ``train``'s slices with the baselines' image-prior class weights
    (:func:`magicflow.baselines.discriminative.image_prior_weights`), so augment slices do not tilt
    it; deterministic (lbfgs). A training set of one class predicts that class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from magicflow.baselines.discriminative import image_prior_weights

    if images.dim() != 4 or images.shape[1] != 2 or tuple(images.shape[2:]) != tuple(train.images.shape[2:]):
        raise InputError(f"source-only prediction needs (N, 2, S, S) pairs like the training set's, got {tuple(images.shape)}")
    present = np.unique(train.labels.numpy())
    if len(present) < 2:
        return np.full(len(images), int(present[0]) if len(present) else 0, dtype=np.int64)
    weights = image_prior_weights(train, len(classes)).numpy()[train.labels.numpy()]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(_source_features(train), train.labels.numpy(), logisticregression__sample_weight=weights)
    blind = SliceSet(images, torch.zeros(len(images), dtype=torch.long))
    return model.predict(_source_features(blind)).astype(np.int64) if len(images) else np.zeros(0, np.int64)


def held_out_conditions(
    side: str, classes: list[str], train: SliceSet, test: SliceSet, scale: tuple[float, float] | None
) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """The test set's side vectors and what translations.npz records of them: ``side`` (the kind
    given, so evaluation can tell a circular check) and, for ``predicted``, ``side_predicted``
    (the source classifier's label names). ``predicted`` reads the test images only."""
    record: dict[str, np.ndarray] = {"side": np.array(side)}
    if side != "predicted":
        return side_table(test, side, classes, scale), record
    predicted = source_label_predictions(train, test.images, classes)
    record["side_predicted"] = np.array([classes[i] for i in predicted], dtype=str)
    return F.one_hot(torch.from_numpy(predicted), len(classes)).float(), record


def _side(conditions: torch.Tensor) -> torch.Tensor | None:
    return conditions if conditions.shape[-1] else None


# --------------------------------------------------------------------------- the dual flow
def flow_settings(settings: dict[str, Any], classes: list[str], model_config: dict[str, Any]) -> dict[str, Any]:
    """What train_baseline needs of the dual flow (as a baseline.json holds for a baseline),
    with the model's config, from which a checkpoint is rebuilt."""
    return {
        "id": "dual-glow",
        "name": "dual-glow",
        "label": "DUAL-GLOW",
        "kind": "translation",
        "image_size": settings["image_size"],
        "training": settings["training"],
        "side": settings["translation"]["side"],
        "side_dim": side_dim(settings, classes),
        "model": model_config,
    }


def build_dual(settings: dict[str, Any], side_width: int, mask: np.ndarray | torch.Tensor | None):
    """The experiment's dual flow: source and target flows of its preset at its image size."""
    from magicflow.flow.dual import DualFlow
    from magicflow.flow.presets import preset_config

    size = int(settings["image_size"])
    flow = preset_config(settings["preset_base"], 1, "generation", **{**settings["preset_overrides"], "image_size": size})
    t = settings["translation"]
    if mask is not None and not isinstance(mask, torch.Tensor):
        mask = application_mask(np.asarray(mask))
    return DualFlow(
        flow,
        flow,
        side_dim=side_width,
        side_kind="continuous" if t["side"] == "age" else "categorical",
        relation_width=t["relation_width"],
        discriminators=t["discriminators"] and side_width > 0,
        mask=mask,
    )


def dual_objective(settings: dict[str, Any], classes: list[str], scale: tuple[float, float] | None):
    """The dual flow's Objective for the shared loop: DUAL-GLOW's loss (conditional NLL plus
    ``source_weight`` x the source's NLL, per dimension, on dequantised pairs), selected by the
    validation loss; validation also reports the mode's MAE against the real target."""
    from magicflow.baselines.discriminative import Objective

    t = settings["translation"]

    def loss(model, x, conditions):
        src, tgt = model.dequantise(x[:, :1], x[:, 1:], DEQUANTIZE)
        return model.objective(src, tgt, side=_side(conditions), source_weight=t["source_weight"])["loss"]

    @torch.no_grad()
    def validate(model, data: SliceSet, device: torch.device, batch: int) -> dict[str, float]:
        model.eval()
        conditions = side_table(data, t["side"], classes, scale)
        noise = torch.Generator(device=device).manual_seed(settings["seed"])  # the same noise every epoch
        losses, errors = [], []
        for start in range(0, len(data), batch):
            x = data.images[start : start + batch].to(device)
            side = _side(conditions[start : start + batch].to(device))
            src, tgt = model.dequantise(x[:, :1], x[:, 1:], DEQUANTIZE, noise)
            losses.append(model.objective(src, tgt, side=side, source_weight=t["source_weight"])["loss"] * len(x))
            errors.append((model.translate(x[:, :1], side=side).clamp(0, 1) - x[:, 1:]).abs().flatten(1).mean(1))
        return {"val_loss": float(sum(losses) / len(data)), "val_mae": float(torch.cat(errors).mean())}

    return Objective(
        loss=loss,
        validate=validate,
        score=lambda m: [-m["val_loss"]],
        selected_by="val_loss",
        loss_name="conditional NLL per dimension",
        check_size=False,
    )


# --------------------------------------------------------------------------- outputs
def test_meta(test: SliceSet) -> dict[str, np.ndarray]:
    meta = test.meta
    return {c: meta[c].to_numpy(str) if c in meta else np.full(len(test), "n/a") for c in META_COLUMNS}


def write_translations(
    out_dir: Path,
    test: SliceSet,
    mode: np.ndarray,
    std: np.ndarray | None,
    seconds: float,
    extra: dict[str, np.ndarray] | None = None,
    view: View | None = None,
) -> None:
    """translations.npz and a NIfTI per test image, placed on the MNI grid by the experiment's
    ``view`` (None: resized). The triptychs are drawn by evaluation, which scores them."""
    from magicflow.experiments.infer import slice_to_nifti

    out_dir.mkdir(parents=True, exist_ok=True)
    source, real = test.images[:, :1].numpy(), test.images[:, 1:].numpy()
    arrays = {"source": source, "real": real, "mode": mode.astype(np.float32)}
    if std is not None:
        arrays["std"] = std.astype(np.float32)
    with atomic_path(out_dir / "translations.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays, **test_meta(test), seconds=np.float64(seconds), **(extra or {}))
    meta = test.meta.reset_index(drop=True)
    for image, rows in meta.groupby("image", sort=True):
        rows = rows.sort_values("offset")
        offsets = rows["offset"].astype(int).to_numpy()
        first = slice_to_nifti(mode[rows.index[0], 0], int(offsets[0]), view)
        if len(rows) > 1 and np.array_equal(offsets, np.arange(offsets[0], offsets[0] + len(rows))):
            slab = np.concatenate([np.asarray(slice_to_nifti(mode[i, 0], view=view).dataobj) for i in rows.index], axis=1)
            first = nib.Nifti1Image(slab, first.affine)
        with atomic_path(out_dir / f"{image}_desc-translated.nii.gz") as tmp:
            nib.save(first, tmp)


# --------------------------------------------------------------------------- commands
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from magicflow.experiments.commands import add_experiment_inputs

    add_experiment_inputs(parser)
    parser.add_argument("--fold-dir", required=True, type=Path, help="results/<experiment>/splits/folds/fold-<k>")
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/translation/models/fold-<k>")


def _inputs(args: argparse.Namespace):
    from magicflow.experiments.commands import fold_sets, load_inputs

    settings, slices, arrays, mask = load_inputs(args)
    if settings["model"] != "translation":
        raise InputError(f"{args.experiment}: model is {settings['model']!r}, not translation")
    classes, sets = fold_sets(args, settings, slices, arrays)
    return settings, classes, sets, mask


def run_train(args: argparse.Namespace) -> int:
    from magicflow.baselines.discriminative import train_baseline
    from magicflow.experiments.train import resolve_device

    settings, classes, sets, mask = _inputs(args)
    side = settings["translation"]["side"]
    scale = age_scale(sets["train"]) if side == "age" else None
    device = resolve_device(settings["training"]["device"])
    torch.manual_seed(settings["seed"])
    width = side_dim(settings, classes)
    model = build_dual(settings, width, mask)
    if device.type == "cpu":
        model.set_channels_last(True)
    print(
        f"{settings['name']} {args.fold_dir.name}: {len(sets['train'])} training / {len(sets['val'])} validation pairs "
        f"({settings['source']} -> {settings['target']}), side {side}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, device {device}"
    )
    train_baseline(
        model,
        sets["train"],
        sets["val"],
        args.out,
        flow_settings(settings, classes, model.to_config()),
        device,
        len(classes),
        extra={
            "classes": classes,
            "experiment": settings["name"],
            "fold": args.fold_dir.name,
            "age_scale": list(scale) if scale else None,
        },
        objective=dual_objective(settings, classes, scale),
        conditions=side_table(sets["train"], side, classes, scale),
    )
    return 0


def load_dual_model(path: Path, mask: np.ndarray, device: torch.device):
    """The trained dual flow of a fold and its checkpoint payload (classes, age scale)."""
    from magicflow.baselines.discriminative import load_baseline
    from magicflow.flow.dual import DualFlow

    tensor_mask = application_mask(np.asarray(mask))

    def build(settings: dict[str, Any], num_classes: int):
        if "model" not in settings:
            raise InputError(f"{path} is not a translation checkpoint (written by magicflow translate-train)")
        return DualFlow.from_config(settings["model"], mask=tensor_mask)

    return load_baseline(path, device, build=build)


@torch.no_grad()
def translate_set(
    model,
    data: SliceSet,
    conditions: torch.Tensor,
    device: torch.device,
    samples: int,
    temperature: float,
    seed: int,
    batch: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """(mode, std), each (N, 1, S, S): the temperature-0 translation and the voxel-wise spread
    of ``samples`` translations at ``temperature`` (deterministic given the seed)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    modes, stds = [], []
    for start in range(0, len(data), batch):
        x = data.images[start : start + batch, :1].to(device)
        side = _side(conditions[start : start + batch].to(device))
        modes.append(model.translate(x, side=side).clamp(0, 1).cpu())
        drawn = model.sample(x, samples, side=side, temperature=temperature, generator=generator).clamp(0, 1)
        stds.append(model.uncertainty(drawn).cpu())
    return torch.cat(modes).numpy(), torch.cat(stds).numpy()


def add_translate_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--model", required=True, type=Path, help="the fold's best.pt (translate-train)")


def run_translate(args: argparse.Namespace) -> int:
    from magicflow.experiments.train import resolve_device

    settings, classes, sets, mask = _inputs(args)
    device = resolve_device(settings["training"]["device"])
    model, payload = load_dual_model(args.model, mask, device)
    extra = payload["extra"]
    if extra.get("classes", classes) != classes:
        raise InputError(f"{args.model} was trained on classes {extra['classes']}, the split has {classes}; retrain it")
    t = settings["translation"]
    scale = tuple(extra["age_scale"]) if extra.get("age_scale") else None
    test = sets["test"]
    conditions, recorded = held_out_conditions(t["side"], classes, sets["train"], test, scale)
    started = time.perf_counter()
    mode, std = translate_set(model, test, conditions, device, t["samples"], t["temperature"], settings["seed"])
    seconds = time.perf_counter() - started
    sweep = {}
    if t["side"] == "age" and len(test):
        ages = torch.tensor(SWEEP_AGES)
        side = ((ages - scale[0]) / scale[1]).float()[:, None].to(device)
        source = test.images[:1, :1].expand(len(ages), -1, -1, -1).to(device)
        with torch.no_grad():
            images = model.translate(source, side=side).clamp(0, 1).cpu().numpy()
        sweep = {"sweep_ages": ages.numpy(), "sweep": images, "sweep_image": np.array(test.meta["image"].iloc[0])}
    write_translations(
        args.out,
        test,
        mode,
        std,
        seconds,
        {**sweep, **recorded},
        View.from_record(settings["view"]),
    )
    mae = float(np.abs(mode - test.images[:, 1:].numpy()).mean()) if len(test) else math.nan
    print(f"{len(test)} test slices translated in {seconds:.1f} s (mean absolute error {mae:.4f}) -> {args.out}")
    return 0
