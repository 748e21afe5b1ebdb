"""Training a MAGIC-Flow model on one fold (``magicflow train``).

Resumable and deterministic: every epoch reseeds the global RNG and draws its batch order,
augmentation and dequantisation noise from seeds derived from (seed, epoch), and the full
training state is saved after every epoch. A run killed at any point and restarted resumes
from the last completed epoch and ends with the same weights as an uninterrupted run
(on CPU; GPU kernels may add non-determinism). A completed run is never resumed: rerunning
it (``--forcerun train_fold``) trains afresh. The best checkpoint survives a failed attempt too
(:func:`keep_best`): after any number of interruptions ``best.pt`` is the best epoch of the whole run.

A training step never waits for the device: data are validated once per set
(:func:`validate_set`), losses and the non-finite bookkeeping stay on the device and are read
every ``log_every`` steps and at the end of an epoch, and a step whose loss is not finite is
skipped inside the (fused) Adam update through its ``found_inf`` input, as AMP's GradScaler
does. :func:`train_step` is that step; a test counts its host synchronisations."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet
from magicflow.flow import MagicFlow, save_checkpoint
from magicflow.flow.model import BIN_WIDTH, use_fast_cuda_kernels
from magicflow.io import atomic_path
from magicflow.plotting import pyplot

STATE_FORMAT = "magicflow.train/2"  # 2: the learning-rate scheduler's state saved too
LOSSES = ("dimension", "image")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (MODEL-FACTS: Adam, clip 1.0, warm-up then cosine decay to 1e-5)."""

    epochs: int = 5  # the most epochs; fewer when ``patience`` stops the run
    patience: int | None = None  # epochs without a better validation NLL before stopping; None: never stop early
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    warmup_fraction: float = 0.05
    min_lr: float = 1e-5
    clip_norm: float = 1.0
    dequantize: float = BIN_WIDTH  # uniform noise width added to [0, 1] intensities
    rotate_degrees: float = 3.0
    shift_pixels: float = 2.0
    noise_sigma: float = 0.01
    probability: float = 1.0  # share of images augmented (the authors: rotation/shift 0.8, noise 0.6, apart)
    clamp: bool = False  # clamp augmented images to [0, 1] (the authors clamp to their intensity range)
    max_bad_steps: int = 20  # consecutive non-finite losses before giving up
    loss: str = "dimension"  # "dimension": NLL per image dimension; "image": per-image NLL (the authors')
    log_every: int = 50  # steps between reads of the loss from the device
    ema: float = 0.0  # > 0: validate and keep an exponential moving average of the weights with this decay
    precision: str = "auto"  # "bf16": networks under bf16 autocast, log-dets fp32; "auto": bf16 on GPUs with it
    compile: bool = False  # torch.compile each coupling network
    checkpointing: bool = False  # recompute the coupling networks' activations in the backward pass (less memory)

    def __post_init__(self) -> None:
        if (
            self.loss not in LOSSES
            or self.precision not in PRECISIONS
            or self.log_every < 1
            or not 0 <= self.probability <= 1
            or (self.patience is not None and self.patience < 1)
            or not 0 <= self.ema < 1
        ):
            raise InputError(
                f"training: loss must be one of {LOSSES}, precision one of {PRECISIONS}, log_every >= 1, "
                f"augment probability in [0, 1], patience >= 1 or null, ema in [0, 1); got {self.loss!r}, "
                f"{self.precision!r}, {self.log_every}, {self.probability}, {self.patience}, {self.ema}"
            )


def validate_set(model: MagicFlow, data: SliceSet, batch: int = 256) -> None:
    """Check a whole set once (shapes, finite intensities, label range) in chunks, so training
    steps can skip those checks: each of them waits for the device."""
    for start in range(0, len(data), batch):
        chunk = data.images[start : start + batch]
        model.prepare(chunk)
        model.check_labels(data.labels[start : start + batch], chunk.shape[0])


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when visible, else cpu; asking for cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("training.device is 'cuda' but no GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA device with bfloat16 support (Ampere and later), fp32 elsewhere:
    on CPU bf16 autocast is slower than fp32 and would change the demo's results."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def learning_rate(step: int, total: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr: the rate of optimiser step ``step``
    (:func:`make_scheduler` applies it)."""
    warmup = max(1, int(settings.warmup_fraction * total))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return settings.min_lr + 0.5 * (settings.lr - settings.min_lr) * (1.0 + math.cos(math.pi * progress))


def augment(x: torch.Tensor, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    """Small random affine (rotation, shift) and Gaussian noise, as the authors trained, on a
    ``probability`` share of the images, optionally clamped to [0, 1]. Runs on ``x``'s device;
    random numbers come from ``generator`` on that device (the per-image draw only when
    ``probability`` < 1, so the default stream is unchanged)."""
    b, _, h, w = x.shape
    dev = generator.device
    angle = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * math.radians(settings.rotate_degrees)
    unit = torch.rand(b, 2, generator=generator, device=dev) * 2 - 1  # shifts in [-1, 1] x shift_pixels
    shift_x, shift_y = unit[:, 0] * (settings.shift_pixels * 2.0 / w), unit[:, 1] * (settings.shift_pixels * 2.0 / h)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = moved + settings.noise_sigma * torch.randn(x.shape, generator=generator, device=dev).to(x)
    if settings.probability < 1:
        chosen = torch.rand(b, generator=generator, device=dev) < settings.probability
        out = torch.where(chosen.to(x.device)[:, None, None, None], out, x)
    return out.clamp(0.0, 1.0) if settings.clamp else out


def epoch_generator(seed: int, epoch: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The random stream ``stream`` of ``epoch`` (order, augmentation, noise), derived from the
    seed alone, so an interrupted run resumed at an epoch draws what it would have drawn."""
    state = int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)


def balanced_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's balanced accuracy: the mean recall over the classes present in ``true``.
    A class predicted but absent from the validation set adds no term (scikit-learn drops it);
    its warnings about absent or single classes are silenced, since a few validation images
    often miss a class. NaN for an empty set."""
    if len(true) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        return float(balanced_accuracy_score(true, pred))


@torch.no_grad()
def evaluate(
    model: MagicFlow, data: SliceSet, settings: TrainSettings, device: torch.device, log_prior: torch.Tensor | None
) -> dict[str, float]:
    """Validation NLL (nats per image) and bits/dim measured as in training: the image
    dequantised (border included) with noise fixed by the seed, so epochs compare like with
    like, and :meth:`MagicFlow.log_likelihood` of the image at its own size. For classifiers
    also the balanced accuracy per image, as evaluation scores it: argmax of the image's
    log p(x|y) summed over its slices, plus log p(y) once."""
    model.eval()
    noise = epoch_generator(settings.seed, 0, 3, device)  # stream 3: validation only, the same every epoch
    nll, scores = [], []
    for start in range(0, len(data), settings.batch_size):
        x = data.images[start : start + settings.batch_size].to(device)
        y = data.labels[start : start + settings.batch_size].to(device)
        nll.append(-model.log_likelihood(model.dequantise(x, settings.dequantize, noise), y, settings.dequantize))
        if log_prior is not None:
            scores.append(model.class_log_likelihoods(model.bin_centre(x, settings.dequantize)))
    nll_t = torch.cat(nll).cpu()  # one read from the device per evaluation
    out = {"val_nll": float(nll_t.mean()), "val_bpd": float(nll_t.mean() / (model.image_dims * math.log(2)))}
    if log_prior is not None:
        images = data.image_ids()
        per_image = np.zeros((images.max() + 1, log_prior.numel()))
        np.add.at(per_image, images, torch.cat(scores).double().cpu().numpy())
        labels = np.zeros(len(per_image), dtype=np.int64)
        labels[images] = data.labels.numpy()
        predicted = (per_image + log_prior.double().cpu().numpy()).argmax(1)
        out["val_balanced_accuracy"] = balanced_accuracy(labels, predicted)
    return out


def train_step(
    model: MagicFlow, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step that never waits for the device. ``x`` is dequantised and padded
    (:meth:`MagicFlow.dequantise`) and ``y`` checked, both on the model's device. Returns the
    per-image NLL (0-d) and whether it was finite (0-d bool), both still on the device.

    A non-finite loss is not stepped: ``optimizer`` must be a fused Adam, which reads the
    ``found_inf`` flag on the device and leaves weights, moments and step counts untouched.
    The gradient norm is clipped at ``clip_norm``; with ``loss="image"`` (the authors') it
    is the per-image NLL that is clipped, so clipping acts on almost every step."""
    nll = -model.log_likelihood(x, y, settings.dequantize, validate=False).mean()
    loss = nll if settings.loss == "image" else nll / model.image_dims
    finite = torch.isfinite(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm, foreach=True)
    optimizer.found_inf = (~finite).to(torch.float32)
    optimizer.step()
    return nll.detach(), finite


def make_optimizer(model: MagicFlow, settings: TrainSettings) -> torch.optim.Optimizer:
    """Fused Adam: one kernel for all parameters, and a device-side skip of non-finite steps."""
    return torch.optim.Adam(model.parameters(), lr=settings.lr, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, settings: TrainSettings) -> LambdaLR:
    """The warm-up + cosine schedule as torch's LambdaLR, stepped after every optimiser step
    (and saved with the training state, so a resumed run continues it). LambdaLR multiplies a
    base rate by the lambda's value: with the base rate set to 1 the value is the rate itself,
    so every step gets :func:`learning_rate` bit for bit (rate / lr multiplied back by lr would
    round differently and change the weights)."""
    for group in optimizer.param_groups:
        group["initial_lr"] = 1.0
    return LambdaLR(optimizer, lambda step: learning_rate(step, total_steps, settings))


def configure_speed(model: MagicFlow, settings: TrainSettings, device: torch.device) -> None:
    """Speed settings that do not change what is learned beyond rounding: channels-last
    convolutions on CPU (measured faster there), TF32 and cuDNN autotuning on CUDA, bf16
    autocast inside the coupling networks (:func:`resolve_precision`), activation
    checkpointing and ``torch.compile`` when asked."""
    model.set_channels_last(device.type == "cpu")
    if device.type == "cuda":
        use_fast_cuda_kernels(tf32=True)
    model.set_bf16(resolve_precision(settings.precision, device) == "bf16")
    model.set_checkpointing(settings.checkpointing)
    if settings.compile:
        model.compile_networks()


def fingerprint(model: MagicFlow, settings: TrainSettings, train: SliceSet) -> str:
    """Identifies a training run: a saved state from another run is never resumed."""
    text = json.dumps(
        {"model": model.config, "settings": asdict(settings), "n": len(train), "labels": train.labels.tolist()}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_model(
    model: MagicFlow,
    train: SliceSet,
    val: SliceSet,
    out_dir: Path,
    settings: TrainSettings,
    device: torch.device,
    classification: bool,
    extra: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    progress: bool = True,
    data_on_device: bool = True,
) -> pd.DataFrame:
    """Train, writing ``last.pt`` (full state, every epoch), ``best.pt`` (flow checkpoint),
    ``training.tsv`` and ``training.png`` into ``out_dir``. Returns the history.

    With ``data_on_device`` (:func:`magicflow.experiments.memory.plan_memory` decides) the
    training set moves to the device once (a fold's slices are 132 kB each, 1.3 GB for
    10,000), so batches are gathered, augmented and dequantised there: no DataLoader or workers
    are needed. Otherwise it stays in
    host memory and each batch is gathered there and copied through pinned memory without
    waiting; the batches, and so the weights, are the same. ``settings.precision`` "auto" is
    resolved for ``device`` first (:func:`resolve_precision`), so the run's fingerprint names
    the precision it trained in. ``train_nll``/``val_nll`` are nats per image and
    ``*_bpd`` bits per image dimension, both of :meth:`MagicFlow.log_likelihood` (182x182,
    dequantised)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = replace(settings, precision=resolve_precision(settings.precision, device))
    if len(train) == 0 or len(val) == 0:
        raise InputError(f"{out_dir}: empty training ({len(train)}) or validation ({len(val)}) set")
    model.to(device)
    validate_set(model, train)
    validate_set(model, val)
    configure_speed(model, settings, device)
    optimizer = make_optimizer(model, settings)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = make_scheduler(
        optimizer, total_steps, settings
    )  # before the optimiser's state is loaded, which it would overwrite
    counts = torch.bincount(train.image_labels(), minlength=model.num_classes).float()
    log_prior = torch.log(counts.clamp(min=1) / counts.sum()) if classification else None
    run_id = fingerprint(model, settings, train)
    history: list[dict[str, float]] = []
    best: list[float] = [-math.inf]  # selection score, compared as a tuple
    start_epoch, step = 0, 0
    saved_average: list[torch.Tensor] | None = None

    state = resume_state(out_dir / "last.pt", STATE_FORMAT, run_id, model, optimizer, scheduler, settings.epochs)
    restore_best(out_dir, resumed=state is not None)
    if state is not None:
        start_epoch, step, best, history = resumed_progress(state)
        saved_average = state.get("average")
    if data_on_device:
        images, labels = train.images.to(device), train.labels.to(device)  # the set moves once, not per batch
    else:
        images, labels = train.images, train.labels
    parameters = sum(p.numel() for p in model.parameters())  # for the report's Table 5
    average = WeightAverage(model, settings.ema, saved_average) if settings.ema else None

    for epoch in range(start_epoch, settings.epochs):
        torch.manual_seed(int(np.random.SeedSequence([settings.seed, epoch, 0]).generate_state(1)[0]))  # dropout
        order = torch.randperm(len(train), generator=epoch_generator(settings.seed, epoch, 1)).to(images.device)
        noise = epoch_generator(settings.seed, epoch, 2, device)
        model.train()
        started = time.perf_counter()
        zero = torch.zeros((), device=device)
        nll_sum, finite_steps, skipped, bad_run, worst_run = zero.clone(), zero.clone(), zero.clone(), zero.clone(), zero.clone()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{settings.epochs}", disable=not progress, leave=False)
        for b in bar:
            index = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            x, y = to_device(images[index], device), to_device(labels[index], device)
            x = model.dequantise(augment(x, settings, noise), settings.dequantize, noise, validate=False)
            nll, finite = train_step(model, optimizer, x, y, settings)
            scheduler.step()
            step += 1
            if average is not None:
                average.update(step)
            nll_sum += torch.where(finite, nll, 0.0)
            finite_steps += finite
            skipped += ~finite
            bad_run = torch.where(finite, 0.0, bad_run + 1)
            worst_run = torch.maximum(worst_run, bad_run)
            if (b + 1) % settings.log_every == 0 or b + 1 == steps_per_epoch:  # the only reads from the device
                _stop_if_diverged(worst_run, settings, epoch)
                bar.set_postfix(nll=f"{float(nll_sum / finite_steps.clamp(min=1)):.1f}", skipped=int(skipped))
        bar.close()
        train_seconds = time.perf_counter() - started
        if average is not None:
            average.swap()  # validation and best.pt see the averaged weights
        metrics = evaluate(model, val, settings, device, log_prior)
        n_finite, n_skipped = int(finite_steps), int(skipped)
        if n_skipped:
            print(f"epoch {epoch + 1}: {n_skipped} step(s) with a non-finite loss skipped")
        train_nll = float(nll_sum) / n_finite if n_finite else float("nan")
        row = {
            "epoch": epoch + 1,
            "lr": learning_rate(step - 1, total_steps, settings),
            "train_nll": train_nll,
            "train_bpd": train_nll / (model.image_dims * math.log(2)),
            **metrics,
            "skipped_steps": n_skipped,
            "steps": n_finite + n_skipped,
            "images": len(train),  # training images seen this epoch (Table 5's images/s)
            "parameters": parameters,
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - started,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan"),
        }
        history.append(row)
        score = selection_score(metrics, classification)
        if is_new_best(score, best, out_dir):
            best = max(best, score)
            save_checkpoint(
                out_dir / "best.pt",
                model,
                {
                    **(extra or {}),
                    "epoch": epoch + 1,
                    "score": score[0],
                    "selected_by": "val_balanced_accuracy, then val_nll" if classification else "val_nll",
                },
            )
            keep_best(out_dir)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        stop = should_stop(history, settings.patience)
        if stop:
            print(f"stopping early after epoch {epoch + 1}: validation NLL not better for {settings.patience} epochs", flush=True)
        if average is not None:
            average.swap()  # back to the optimiser's weights, which training goes on from
        _save_state(
            out_dir / "last.pt",
            model,
            optimizer,
            scheduler,
            run_id,
            epoch,
            step,
            best,
            history,
            completed=stop or epoch + 1 == settings.epochs,
            average=average,
        )
        write_history(history, out_dir)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
        if stop:
            break
    return pd.DataFrame(history)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch to a CUDA device through pinned memory, so the host does not wait for the
    copy; a no-op where ``t`` is there already."""
    if device.type == "cuda" and not t.is_cuda:
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def resume_state(
    path: Path,
    state_format: str,
    run_id: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    epochs: int,
) -> dict[str, Any] | None:
    """The saved state of this very run (same format and fingerprint, not completed), loaded into
    ``model``, ``optimizer`` and ``scheduler``; None (start afresh) for no file or another run's.
    Shared by the flow's and the baselines' training loops, which save states of their own format."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != state_format or state["run_id"] != run_id or state["completed"]:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    print(f"resuming from {path} after epoch {state['epoch'] + 1} of {epochs}")
    return state


#: a second name for the best checkpoint in the model folder: Snakemake deletes ``best.pt``, a
#: declared output, when a job fails (a time limit, say), and this undeclared twin brings it back
BEST_KEPT = ".best.pt.kept"


def _link_over(source: Path, target: Path) -> None:
    """Make ``target`` a hard link to ``source`` (a copy where links are refused), atomically."""
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def keep_best(out_dir: Path) -> None:
    """Call right after writing a new ``best.pt``: its twin survives a failed attempt."""
    _link_over(out_dir / "best.pt", out_dir / BEST_KEPT)


def restore_best(out_dir: Path, resumed: bool) -> None:
    """Before a run's first epoch: a resumed run gets back the ``best.pt`` of its earlier attempts
    (the remembered best score in ``last.pt`` belongs to it); a fresh run forgets any earlier twin."""
    kept, best = out_dir / BEST_KEPT, out_dir / "best.pt"
    if not resumed:
        kept.unlink(missing_ok=True)
    elif kept.exists() and not best.exists():
        _link_over(kept, best)
        print(f"restored {best} from the best epoch of the earlier attempt(s)")


def is_new_best(score: list[float], best: list[float], out_dir: Path) -> bool:
    """Whether this epoch's selection ``score`` makes the new ``best.pt``: it beats every earlier
    epoch of the run, resumed attempts included, or the run has no best checkpoint yet."""
    return score > best or not (out_dir / BEST_KEPT).exists()


def resumed_progress(state: dict[str, Any]) -> tuple[int, int, list[float], list[dict[str, float]]]:
    """Where a resumed run goes on from: first epoch, optimiser step, best score, history rows."""
    history = [dict(zip(state["history_columns"], row)) for row in state["history"]]
    return state["epoch"] + 1, state["step"], list(state["best"]), history


def selection_score(metrics: dict[str, float], classification: bool) -> list[float]:
    """What the best model maximises, compared as a tuple: a classifier's validation balanced
    accuracy, ties (frequent on a few validation images) broken by the lower validation NLL;
    a generator's validation NLL."""
    return [metrics["val_balanced_accuracy"], -metrics["val_nll"]] if classification else [-metrics["val_nll"]]


def should_stop(history: list[dict[str, float]], patience: int | None, key: str = "val_nll") -> bool:
    """True once the last ``patience`` epochs brought no validation NLL (or other loss ``key``)
    below the best before them."""
    if patience is None or len(history) <= patience:
        return False
    nll = [row[key] for row in history]
    return min(nll[-patience:]) >= min(nll[:-patience])


def _stop_if_diverged(worst_run: torch.Tensor, settings: TrainSettings, epoch: int) -> None:
    """Raise once ``max_bad_steps`` consecutive losses were non-finite (read at log points)."""
    if int(worst_run) >= settings.max_bad_steps:
        raise RuntimeError(
            f"{settings.max_bad_steps} consecutive non-finite losses at epoch {epoch + 1}; "
            "lower training.lr or check the input slices"
        )


class WeightAverage:
    """An exponential moving average of the model's parameters (Polyak averaging, as Glow and
    diffusion models are usually evaluated): a few hundred noisy small-batch steps leave the
    weights jumping from epoch to epoch, the average does not. The decay warms up as
    ``min(decay, (1 + step) / (10 + step))`` so early averages are not dominated by the
    initial weights. Updates are one fused lerp on the device, with no host synchronisation."""

    def __init__(self, model: MagicFlow, decay: float, saved: list[torch.Tensor] | None = None) -> None:
        self.decay = decay
        self.params = [p for p in model.parameters()]
        source = saved if saved is not None else [p.detach() for p in self.params]
        self.average = [a.detach().clone().to(p.device) for a, p in zip(source, self.params)]

    @torch.no_grad()
    def update(self, step: int) -> None:
        weight = 1.0 - min(self.decay, (1.0 + step) / (10.0 + step))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], weight)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live and the averaged weights (call twice to undo)."""
        for p, a in zip(self.params, self.average):
            live = p.detach().clone()
            p.copy_(a)
            a.copy_(live)


def _save_state(
    path: Path,
    model: MagicFlow,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    run_id: str,
    epoch: int,
    step: int,
    best: list[float],
    history: list[dict],
    completed: bool,
    average: WeightAverage | None = None,
) -> None:
    columns = list(history[0]) if history else []
    state = {
        "format": STATE_FORMAT,
        "run_id": run_id,
        "epoch": epoch,
        "step": step,
        "best": best,
        "completed": completed,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history_columns": columns,
        "history": [[float(r[c]) for c in columns] for r in history],
        "average": [a.detach().cpu() for a in average.average] if average is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_history(history: list[dict], out_dir: Path) -> None:
    """training.tsv and a PNG of the curves."""
    plt = pyplot()

    table = pd.DataFrame(history)
    with atomic_path(out_dir / "training.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    panels = 2 if "val_balanced_accuracy" in table else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    axes[0, 0].plot(table["epoch"], table["train_bpd"], "o-", label="train")
    axes[0, 0].plot(table["epoch"], table["val_bpd"], "s-", label="validation")
    axes[0, 0].set(xlabel="epoch", ylabel="bits per dimension", title="negative log-likelihood")
    axes[0, 0].legend()
    if panels == 2:
        axes[0, 1].plot(table["epoch"], table["val_balanced_accuracy"], "s-", color="C2")
        axes[0, 1].set(xlabel="epoch", ylabel="balanced accuracy", title="validation", ylim=(0, 1))
    fig.tight_layout()
    with atomic_path(out_dir / "training.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
