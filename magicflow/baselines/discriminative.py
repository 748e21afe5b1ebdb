"""Discriminative baselines (timm CNNs and ViTs) trained like the experiment's MAGIC-Flow model.

Per fold a baseline sees exactly the flow's data: the same split, training slices (augment
offsets included), validation and test slices (:func:`magicflow.experiments.commands.fold_sets`),
the same on-the-fly augmentation (:func:`magicflow.experiments.train.augment`, same seeds per
epoch), the same optimiser settings (Adam, gradient norm clipped at 1.0, warm-up then cosine
decay from ``training.lr``), seeds, device handling and model selection: ``best.pt`` is the
epoch with the highest validation balanced accuracy, ties broken by the lower validation loss;
``patience`` stops on the validation loss. The flow's own settings (dequantisation, ``loss``,
``ema``, ``precision``, ``compile``) do not apply.

The loss is cross-entropy with class weights (:func:`image_prior_weights`) that make each class
count as the flow's class priors count it: by images, not slices. The diagnosis task's augment
offsets give an AD image several training slices and a CN image one; unweighted, the network
would learn the slice frequencies as its prior and its argmax threshold would move towards CN
(perfect ranking, shifted threshold), while the flow decides with image-count priors
(:func:`magicflow.experiments.posterior.log_priors`). The weights and priors are kept in
best.pt's ``extra`` (``class_weights``, ``image_priors``, ``loss``).

``last.pt`` holds the whole training state after every epoch, so a killed run resumes from its
last epoch (a completed one, or another run's state, is never resumed), and ``training.tsv`` /
``training.png`` the curves.

Predictions use the flow's ``predictions.tsv`` columns, so evaluation scores both alike:
``loglik_<class>`` holds the network's log-softmax, log p(class | image) (a discriminative model
has no image likelihood), ``posterior_<class>`` the softmax of the logits over a temperature
fitted on the validation slices (as the flow's posteriors are; it changes confidence, never the
prediction), ``predicted`` the argmax of the logits.

Pretrained weights come only from a local file (:func:`load_weights`); nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.special import log_softmax
from torch import nn

from magicflow.baselines import DISCRIMINATIVE
from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet
from magicflow.experiments.infer import predictions_frame
from magicflow.experiments.memory import data_fits
from magicflow.experiments.posterior import fit_temperature, log_priors, posteriors
from magicflow.experiments.train import (
    TrainSettings,
    epoch_generator,
    to_device,
    augment,
    balanced_accuracy,
    learning_rate,
    make_scheduler,
    is_new_best,
    keep_best,
    restore_best,
    resume_state,
    resumed_progress,
    should_stop,
)
from magicflow.io import atomic_path, state_dict_in
from magicflow.plotting import pyplot

FORMAT = "magicflow.baseline/1"
STATE_FORMAT = "magicflow.baseline-train/1"
#: wrappers stripped from the names in a weights file (DataParallel, Lightning, ...)
_PREFIXES = ("module.", "model.")


# --------------------------------------------------------------------------- models
def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """The timm architecture of a baseline name, untrained, for 1-channel images of this size."""
    import timm

    arch = DISCRIMINATIVE.get(name)
    if arch is None:
        raise InputError(f"unknown baseline {name!r}; known baselines: {', '.join(DISCRIMINATIVE)}")
    if num_classes < 2:
        raise InputError(f"baseline {name}: needs at least 2 classes, got {num_classes}")
    kwargs = {"img_size": image_size} if arch.img_size else {}
    return timm.create_model(arch.timm_name, pretrained=False, in_chans=1, num_classes=num_classes, **kwargs)


def check_image_size(model: nn.Module, name: str, image_size: int) -> None:
    """One forward pass of a zero image: an architecture that cannot take this size fails here
    with the sizes that work, not in the middle of training."""
    arch = DISCRIMINATIVE[name]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size, device=next(model.parameters()).device))
    except RuntimeError as error:
        raise InputError(
            f"baseline {name} ({arch.timm_name}) does not run at image_size {image_size}: {error}; "
            f"sizes {arch.min_size}-182 work (magicflow/baselines/__init__.py)"
        ) from None
    finally:
        model.train(was_training)


def model_from_settings(settings: dict[str, Any], num_classes: int) -> nn.Module:
    """The baseline.json settings' model: built, and started from its weights file if it names one."""
    model = build_model(settings["name"], num_classes, settings["image_size"])
    if settings.get("weights"):
        for note in load_weights(model, settings["weights"]):
            print(note)
    return model


# --------------------------------------------------------------------------- weights
def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file: a state dict saved with torch.save (plain, or under
    ``state_dict`` / ``model``) or a safetensors file; wrappers' ``module.``/``model.`` prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"baseline weights not found: {path} is not a file (weights are never downloaded; give a local file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            payload: Any = load_file(str(path))
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, not a weights file, or pickled code
        raise InputError(
            f"{path} is not a readable weights file (torch.load weights_only=True, or safetensors for .safetensors): {error}"
        ) from None
    payload = state_dict_in(payload, path, "state dict")
    state = {}
    for key, value in payload.items():
        name = key
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        state[name] = value
    return state


def _layout(expected: dict[str, torch.Tensor], count: int = 6) -> str:
    shown = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(expected.items())[:count])
    return f"{len(expected)} tensors: {shown}, ..."


def _heads(model: nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", ())
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local weights file into a timm baseline strictly; returns notes on what was adapted.

    Adapted, and said in the notes: a 3-channel first convolution (an ImageNet/RadImageNet
    file) is summed over its input channels to the 1 channel the baselines take (as timm does
    for in_chans=1); timm's own checkpoint filter of the architecture runs (position
    embeddings and Swin's relative position tables resampled to this image size, older key
    names converted); a classifier head of another class count is left out, so the head
    starts untrained. Anything else missing, unexpected or of another shape is an InputError
    that names the file and the layout expected."""
    path = Path(path)
    state = read_weights(path)
    expected = model.state_dict()
    notes = []
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    first_key = f"{first}.weight" if first else None
    if first_key in state and first_key in expected:
        have, want = state[first_key], expected[first_key]
        if have.ndim == 4 and have.shape[1] == 3 and want.shape[1] == 1 and have.shape[0] == want.shape[0]:
            state[first_key] = have.sum(dim=1, keepdim=True)
            notes.append(f"{path}: {first_key} summed over its 3 input channels to the 1 channel of the slices")
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as error:
            raise InputError(
                f"{path}: timm cannot convert it for {type(model).__name__}: {type(error).__name__}: {error}"
            ) from None
    dropped = []
    for key in list(state):
        if (
            any(key.startswith(f"{head}.") for head in _heads(model))
            and key in expected
            and state[key].shape != expected[key].shape
        ):
            dropped.append(key)
            del state[key]
    if dropped:
        notes.append(f"{path}: classifier head {dropped} of another class count left out; it starts untrained")
    missing = [k for k in expected if k not in state and k not in dropped]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s) {missing[:5]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s) {unexpected[:5]}")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatch(es) {shapes[:5]}")
        raise InputError(
            f"{path} does not fit {type(model).__name__} ({'; '.join(problems)}). Expected a timm state dict of this "
            f"architecture with in_chans=1 (a 3-channel first convolution is summed), as torch.save(model.state_dict()) "
            f"writes it: {_layout(expected)}"
        )
    model.load_state_dict({**{k: expected[k] for k in dropped}, **state}, strict=True)
    return notes


# --------------------------------------------------------------------------- checkpoints
def save_baseline(path: Path, model: nn.Module, settings: dict[str, Any], num_classes: int, extra: dict[str, Any]) -> None:
    payload = {
        "format": FORMAT,
        "baseline": settings,
        "num_classes": num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_baseline(
    path: str | Path,
    device: torch.device | str = "cpu",
    build: Callable[[dict[str, Any], int], nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained baseline from its best.pt: (model on ``device`` in eval mode, the payload without
    weights). ``build(settings, num_classes)`` makes the untrained model (default: the timm one)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"baseline checkpoint not found: {path}") from None
    except Exception as error:
        raise InputError(f"{path} is not a readable baseline checkpoint: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a baseline checkpoint (expected format {FORMAT!r})")
    settings = payload["baseline"]
    if build is None:
        model = build_model(settings["name"], payload["num_classes"], settings["image_size"])
    else:
        model = build(settings, payload["num_classes"])
    model.load_state_dict(payload["state_dict"], strict=True)
    model.to(device).eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}


# --------------------------------------------------------------------------- training
def train_settings(training: dict[str, Any]) -> TrainSettings:
    """The flow's TrainSettings from a baseline's training section (its flow-only keys ignored)."""
    return TrainSettings(
        epochs=training["epochs"],
        patience=training.get("patience"),
        batch_size=training["batch_size"],
        lr=training["lr"],
        seed=training["seed"],
        **training.get("augment", {}),
    )


@torch.no_grad()
def logits_of(model: nn.Module, data: SliceSet, device: torch.device, batch: int = 32) -> torch.Tensor:
    """(N, K) logits on the CPU, in eval mode."""
    model.eval()
    out = [model(data.images[s : s + batch].to(device)).float().cpu() for s in range(0, len(data), batch)]
    return torch.cat(out) if out else torch.zeros(0, 0)


def _validate(model: nn.Module, data: SliceSet, device: torch.device, batch: int) -> dict[str, float]:
    logits = logits_of(model, data, device, batch)
    predicted = logits.argmax(1).numpy()
    labels = data.labels.numpy()
    return {
        "val_loss": float(F.cross_entropy(logits, data.labels)),
        "val_accuracy": float((predicted == labels).mean()),
        "val_balanced_accuracy": balanced_accuracy(labels, predicted),
    }


@dataclass(frozen=True)
class Objective:
    """What :func:`train_baseline` optimises and selects by. ``loss(model, x, y)`` is a batch's
    training loss; ``validate(model, val, device, batch)`` returns at least ``val_loss``;
    ``score(metrics)`` is maximised for best.pt (a list, compared in order)."""

    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    validate: Callable[[nn.Module, SliceSet, torch.device, int], dict[str, float]]
    score: Callable[[dict[str, float]], list[float]]
    selected_by: str
    loss_name: str = "cross-entropy"
    check_size: bool = True  # a timm architecture: one forward pass of a zero image first
    record: dict[str, Any] = field(default_factory=dict)  # what best.pt's extra says of the objective


def image_prior_weights(train: SliceSet, num_classes: int) -> torch.Tensor:
    """(K,) cross-entropy class weights prior_c / slice share_c, the prior being the flow's image
    prior (:func:`~magicflow.experiments.posterior.log_priors` of
    :meth:`~magicflow.experiments.data.SliceSet.image_labels`). A class's slices then weigh
    together what its images count in the prior, so an image weighs the same whatever number of
    augmentation slices it brings (AD 5 slices and CN 1 per image, images 1:1: weights 0.6 and
    3.0, 3.0 per image each). The mean weight over the training slices is 1 (sum of the priors)."""
    prior = np.exp(log_priors(train.image_labels().numpy(), num_classes))
    slices = np.bincount(train.labels.numpy(), minlength=num_classes).astype(float)
    share = np.maximum(slices, 1.0) / max(slices.sum(), 1.0)  # an absent class's weight is never used
    return torch.tensor(prior / share, dtype=torch.float32)


def classifier_objective(weights: torch.Tensor | None = None) -> Objective:
    """Cross-entropy (class-weighted with ``weights``, e.g. :func:`image_prior_weights`), best by
    validation balanced accuracy, then validation loss (unweighted: validation has no augment slices)."""
    if weights is None:
        loss = lambda model, x, y: F.cross_entropy(model(x), y)  # noqa: E731
        return Objective(loss, _classifier_validate, _classifier_score, "val_balanced_accuracy, then val_loss")
    w = weights.detach().float().cpu()

    def weighted(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits, y, weight=w.to(logits.device, logits.dtype))

    return Objective(
        weighted,
        _classifier_validate,
        _classifier_score,
        "val_balanced_accuracy, then val_loss",
        loss_name="cross-entropy (image-prior class weights)",
        record={"class_weights": [round(float(v), 6) for v in w]},
    )


def _classifier_validate(model: nn.Module, data: SliceSet, device: torch.device, batch: int) -> dict[str, float]:
    return _validate(model, data, device, batch)


def _classifier_score(metrics: dict[str, float]) -> list[float]:
    return [metrics["val_balanced_accuracy"], -metrics["val_loss"]]


#: unweighted cross-entropy on slice frequencies: the old, handicapped objective (comparisons only)
CLASSIFIER = classifier_objective(None)


def fingerprint(
    settings: dict[str, Any], train: TrainSettings, data: SliceSet, num_classes: int, record: dict[str, Any] | None = None
) -> str:
    """Identity of a training run; a last.pt of another run (or another loss) is never resumed."""
    text = json.dumps(
        {
            "baseline": settings,
            "train": asdict(train),
            "k": num_classes,
            "n": len(data),
            "labels": data.labels.tolist(),
            **({"objective": record} if record else {}),  # class weights: a last.pt of the unweighted loss is not resumed
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def set_stays_on_device(data_bytes: int, device: torch.device, free_bytes: int | None = None) -> bool:
    """Whether a baseline's training set may live on the device for the whole run: always off
    CUDA; on CUDA when it takes at most half of the usable free memory (``free_bytes``, else the
    device's), the other half left to the model's step, which nothing here estimates. Otherwise
    it stays in host memory and each batch moves (pinned) as the flow's training does."""
    if device.type != "cuda":
        return True
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return data_fits(0, 2 * data_bytes, free_bytes)


def train_baseline(
    model: nn.Module,
    train: SliceSet,
    val: SliceSet,
    out_dir: Path,
    settings: dict[str, Any],
    device: torch.device,
    num_classes: int,
    extra: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    objective: Objective | None = None,
    conditions: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Train with ``objective`` (default: cross-entropy weighted to the image priors,
    :func:`image_prior_weights` of ``train``), writing best.pt, last.pt (resumable
    state), training.tsv and training.png into ``out_dir``; returns the history. ``settings`` is
    the baseline.json content. ``conditions`` (one row per training slice, e.g. a translation's
    side information) reach ``objective.loss`` instead of the labels."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(train) < 2 or len(val) == 0:
        raise InputError(f"{out_dir}: too small a training ({len(train)}, at least 2) or validation ({len(val)}) set")
    ts = train_settings(settings["training"])
    if objective is None:
        objective = classifier_objective(image_prior_weights(train, num_classes))
        priors = np.exp(log_priors(train.image_labels().numpy(), num_classes))
        objective.record["image_priors"] = [round(float(v), 6) for v in priors]
        print(
            f"cross-entropy class weights {objective.record['class_weights']} (image priors {objective.record['image_priors']}: "
            "each class counts its images, not its augment slices)"
        )
    model.to(device)
    if objective.check_size:
        check_image_size(model, settings["name"], int(train.images.shape[-1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=ts.lr)
    # a last batch of one image would meet batch norm with one value per channel: it joins no step
    steps_per_epoch = len(train) // ts.batch_size if len(train) % ts.batch_size == 1 else math.ceil(len(train) / ts.batch_size)
    total_steps = steps_per_epoch * ts.epochs
    scheduler = make_scheduler(optimizer, total_steps, ts)
    run_id = fingerprint(settings, ts, train, num_classes, objective.record)
    history: list[dict[str, float]] = []
    best: list[float] = [-math.inf]
    start_epoch, step = 0, 0
    state_path = out_dir / "last.pt"
    state = resume_state(state_path, STATE_FORMAT, run_id, model, optimizer, scheduler, ts.epochs)
    restore_best(out_dir, resumed=state is not None)
    if state is not None:
        start_epoch, step, best, history = resumed_progress(state)
    if conditions is not None and len(conditions) != len(train):
        raise InputError(f"{out_dir}: {len(conditions)} condition rows for {len(train)} training slices")
    images, labels = train.images, train.labels if conditions is None else conditions
    if set_stays_on_device(images.nbytes + labels.nbytes, device):
        images, labels = images.to(device), labels.to(device)  # the set moves once, not per batch
    parameters = sum(p.numel() for p in model.parameters())  # for the report's Table 5
    images_per_epoch = min(len(train), steps_per_epoch * ts.batch_size)  # a last batch of one is left out
    for epoch in range(start_epoch, ts.epochs):
        torch.manual_seed(int(np.random.SeedSequence([ts.seed, epoch, 0]).generate_state(1)[0]))  # dropout, drop-path
        order = torch.randperm(len(train), generator=epoch_generator(ts.seed, epoch, 1)).to(images.device)
        noise = epoch_generator(ts.seed, epoch, 2, device)
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for b in range(steps_per_epoch):
            index = order[b * ts.batch_size : (b + 1) * ts.batch_size]
            x = augment(to_device(images[index], device), ts, noise)
            loss = objective.loss(model, x, to_device(labels[index], device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), ts.clip_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.detach()
        train_loss = float(loss_sum) / max(steps_per_epoch, 1)
        if not math.isfinite(train_loss):
            raise RuntimeError(f"non-finite training loss at epoch {epoch + 1}; lower the baseline's training.lr")
        train_seconds = time.perf_counter() - started
        metrics = objective.validate(model, val, device, ts.batch_size)
        row = {
            "epoch": epoch + 1,
            "lr": learning_rate(step - 1, total_steps, ts),
            "train_loss": train_loss,
            **metrics,
            "steps": steps_per_epoch,
            "images": images_per_epoch,
            "parameters": parameters,
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - started,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan"),
        }
        history.append(row)
        score = objective.score(metrics)
        if is_new_best(score, best, out_dir):
            best = max(best, score)
            save_baseline(
                out_dir / "best.pt",
                model,
                settings,
                num_classes,
                {
                    **(extra or {}),
                    "epoch": epoch + 1,
                    "score": score[0],
                    "selected_by": objective.selected_by,
                    "loss": objective.loss_name,
                    **objective.record,
                },
            )
            keep_best(out_dir)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        stop = should_stop(history, ts.patience, key="val_loss")
        if stop:
            print(f"stopping early after epoch {epoch + 1}: validation loss not better for {ts.patience} epochs", flush=True)
        columns = list(history[0])
        with atomic_path(state_path) as tmp:
            torch.save(
                {
                    "format": STATE_FORMAT,
                    "run_id": run_id,
                    "epoch": epoch,
                    "step": step,
                    "best": best,
                    "completed": stop or epoch + 1 == ts.epochs,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history_columns": columns,
                    "history": [[float(r[c]) for c in columns] for r in history],
                },
                tmp,
            )
        write_history(history, out_dir, settings.get("label", settings["name"]), objective.loss_name)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
        if stop:
            break
    return pd.DataFrame(history)


def write_history(history: list[dict], out_dir: Path, title: str, loss_name: str = "cross-entropy") -> None:
    """training.tsv and a PNG of the loss and (where there is one) validation accuracy curves."""
    plt = pyplot()
    table = pd.DataFrame(history)
    with atomic_path(out_dir / "training.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(table["epoch"], table["train_loss"], "o-", label="train")
    axes[0].plot(table["epoch"], table["val_loss"], "s-", label="validation")
    axes[0].set(xlabel="epoch", ylabel=loss_name, title=f"{title}: loss")
    axes[0].legend()
    if "val_balanced_accuracy" in table:
        axes[1].plot(table["epoch"], table["val_balanced_accuracy"], "s-", color="C2")
        axes[1].set(xlabel="epoch", ylabel="balanced accuracy", title="validation", ylim=(0, 1))
    else:
        axes[1].plot(table["epoch"], table["seconds"], "s-", color="C2")
        axes[1].set(xlabel="epoch", ylabel="seconds", title="time per epoch")
    fig.tight_layout()
    with atomic_path(out_dir / "training.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- predictions
def predictions_table(
    test: SliceSet, val: SliceSet, classes: list[str], test_logits: np.ndarray, val_logits: np.ndarray
) -> tuple[pd.DataFrame, float]:
    """The flow's predictions.tsv columns for a baseline (see the module docstring)."""
    k = len(classes)
    zero = np.zeros(k)
    temperature = fit_temperature(val_logits, zero, val.labels.numpy()) if len(val) else 1.0
    post = posteriors(test_logits, zero, temperature) if len(test) else np.zeros((0, k))
    log_p = log_softmax(test_logits, axis=1) if len(test) else np.zeros((0, k))
    predicted = np.asarray(test_logits).argmax(1) if len(test) else np.zeros(0, dtype=int)
    return predictions_frame(test, classes, log_p, post, predicted, temperature), temperature
