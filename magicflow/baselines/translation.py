"""MRI-to-PET translation baselines, trained like the experiment's other baselines.

- :class:`UNetTranslator`: MONAI's ``UNet`` (2-D, channels 16/32/64/128, strides 2/2/2, one
  residual unit per block, MONAI's default instance norm and PReLU) from the T1 slice (plus side
  information as constant extra channels) to the PET slice, through a sigmoid so its output is in
  [0, 1]. Slices whose side 8 does not divide are zero-padded (the T1 background) to the next
  multiple of 8, as :func:`magicflow.flow.layers.pad_image` pads them for the generative
  baselines, and the output is cropped back.
- :class:`MeanPredictor`: the training set's mean PET slice, whatever the input: the floor any
  translator must beat. It is fitted (:meth:`MeanPredictor.fit`), not trained.
- :class:`ClassMeanPredictor`: the training set's mean PET slice of the class the side
  information names (one-hot label or predicted label; with ``side: none`` one class, the
  training mean): the floor for a translator given that same side information, which the
  training mean ignores. Fitted, not trained.

Both read their batches from :func:`magicflow.baselines.discriminative.train_baseline` as 2-channel
images (N, 2, S, S): channel 0 the source (T1), channel 1 the target (PET), so the loop's
augmentation moves the pair together (one rotation and shift per image; its Gaussian noise is
drawn per channel, so it also perturbs the target: set ``noise_sigma`` 0 to train on clean
targets). The integer labels the loop passes become one-hot side information
(:func:`side_tensor`) for a model with ``side_dim`` > 0 and are ignored otherwise.

The U-Net's loss (:func:`objective`) is the L1 distance between prediction and target, averaged
over every pixel of the image (the padding is cropped off first, so it never counts); best.pt is
the epoch with the lowest validation L1 (``val_loss``); ``val_mae`` is the per-image MAE inside
the foreground (pixels where the source or the target is non-zero), averaged over the images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magicflow.baselines.discriminative import Objective
from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet
from magicflow.flow.layers import crop_image, pad_amounts, pad_image

#: MONAI UNet's layout; three stride-2 levels: image sides are padded to a multiple of 8
CHANNELS, STRIDES = (16, 32, 64, 128), (2, 2, 2)
MULTIPLE = 8


def side_tensor(y: torch.Tensor | None, side_dim: int) -> torch.Tensor | None:
    """Float side information (B, side_dim): one-hot from integer labels (B,), or float side
    vectors (B, side_dim) as they are (a standardised age); None for side_dim 0."""
    if side_dim == 0 or y is None:
        return None
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point and y.dim() == 2 and y.shape[1] == side_dim:
        return y
    if y.dtype.is_floating_point or y.dim() != 1:
        raise InputError(f"side labels must be integers (B,), got {y.dtype} of shape {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= side_dim):
        raise InputError(f"side labels must lie in 0..{side_dim - 1} (side_dim {side_dim}), got {int(y.min())}..{int(y.max())}")
    return F.one_hot(y.long(), side_dim).float()


def _check_side(side: torch.Tensor | None, side_dim: int, batch: int) -> None:
    if side_dim == 0:
        if side is not None:
            raise InputError(f"this translator takes no side information (side_dim 0), got shape {tuple(side.shape)}")
        return
    if side is None or tuple(side.shape) != (batch, side_dim):
        got = None if side is None else tuple(side.shape)
        raise InputError(f"side information must be ({batch}, {side_dim}) for this batch, got {got}")


class UNetTranslator(nn.Module):
    """T1 slice (B, 1, S, S) (+ side (B, side_dim)) -> PET slice (B, 1, S, S) in [0, 1]."""

    loss_name = "L1"

    def __init__(self, side_dim: int = 0):
        super().__init__()
        from monai.networks.nets import UNet

        if side_dim < 0:
            raise InputError(f"side_dim must be 0 or more, got {side_dim}")
        self.side_dim = int(side_dim)
        self.unet = UNet(
            spatial_dims=2,
            in_channels=1 + self.side_dim,
            out_channels=1,
            channels=CHANNELS,
            strides=STRIDES,
            num_res_units=1,
        )

    def forward(self, x_src: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        if x_src.dim() != 4 or x_src.shape[1] != 1 or x_src.shape[2] != x_src.shape[3]:
            raise InputError(f"source images must be square slices (B, 1, S, S), got shape {tuple(x_src.shape)}")
        _check_side(side, self.side_dim, len(x_src))
        pad = pad_amounts(int(x_src.shape[-1]), MULTIPLE)
        x = pad_image(x_src, *pad, value=0.0)
        if side is not None:
            planes = side.to(x)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, planes], 1)
        return crop_image(torch.sigmoid(self.unet(x)), *pad)


class MeanPredictor(nn.Module):
    """The training set's mean target image (a buffer) for every input (see the module docstring)."""

    loss_name = "L1"

    def __init__(self, image_size: int, side_dim: int = 0):
        super().__init__()
        self.side_dim = int(side_dim)  # accepted and ignored, so it stands in wherever a translator goes
        self.register_buffer("mean", torch.zeros(1, 1, image_size, image_size))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, targets: Any) -> MeanPredictor:
        """Set the mean from target images (N, 1, S, S), or from the training loop's 2-channel
        pairs (N, 2, S, S), whose channel 1 is the target; the mean is taken in float64."""
        t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
        if t.dim() == 4 and t.shape[1] == 2:
            t = t[:, 1:]
        if t.dim() != 4 or t.shape[1] != 1 or tuple(t.shape[-2:]) != tuple(self.mean.shape[-2:]):
            raise InputError(
                f"targets must be (N, 1, {self.mean.shape[-1]}, {self.mean.shape[-1]}) (or (N, 2, ...) pairs), got {tuple(t.shape)}"
            )
        if len(t) == 0:
            raise InputError(f"cannot fit the mean predictor on an empty set (targets of shape {tuple(t.shape)})")
        self.mean.copy_(t.double().mean(0, keepdim=True).to(self.mean))
        self.fitted.fill_(True)
        return self

    def forward(self, x_src: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        if not bool(self.fitted):
            raise InputError("the mean predictor is not fitted: call fit(targets) first")
        if tuple(x_src.shape[-2:]) != tuple(self.mean.shape[-2:]):
            raise InputError(f"source images {tuple(x_src.shape)} differ in size from the mean image {tuple(self.mean.shape)}")
        return self.mean.expand(len(x_src), -1, -1, -1)


class ClassMeanPredictor(nn.Module):
    """Per class the training set's mean target image (buffer (K, 1, S, S), K = ``side_dim`` or 1),
    returned for the class the one-hot side information names (see the module docstring)."""

    loss_name = "L1"

    def __init__(self, image_size: int, side_dim: int = 0):
        super().__init__()
        self.side_dim = int(side_dim)
        self.register_buffer("means", torch.zeros(max(self.side_dim, 1), 1, image_size, image_size))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, targets: Any, labels: Any) -> ClassMeanPredictor:
        """Each class's mean of target images (N, 1, S, S) (or 2-channel pairs, channel 1 the
        target) with integer ``labels`` (N,), in float64; with side_dim 0 every image is one class."""
        t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
        if t.dim() == 4 and t.shape[1] == 2:
            t = t[:, 1:]
        size = tuple(self.means.shape[-2:])
        if t.dim() != 4 or t.shape[1] != 1 or tuple(t.shape[-2:]) != size:
            raise InputError(f"targets must be (N, 1, {size[0]}, {size[1]}) (or (N, 2, ...) pairs), got {tuple(t.shape)}")
        y = torch.as_tensor(labels).long().reshape(-1)
        if len(y) != len(t):
            raise InputError(f"{len(t)} target images but {len(y)} labels")
        if self.side_dim == 0:
            y = torch.zeros_like(y)
        absent = [k for k in range(len(self.means)) if not bool((y == k).any())]
        if absent:
            raise InputError(f"the class-mean predictor has no training target of class(es) {absent}; each class needs one")
        for k in range(len(self.means)):
            self.means[k] = t[y == k].double().mean(0).to(self.means)
        self.fitted.fill_(True)
        return self

    def forward(self, x_src: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        if not bool(self.fitted):
            raise InputError("the class-mean predictor is not fitted: call fit(targets, labels) first")
        if tuple(x_src.shape[-2:]) != tuple(self.means.shape[-2:]):
            raise InputError(f"source images {tuple(x_src.shape)} differ in size from the mean images {tuple(self.means.shape)}")
        if self.side_dim == 0:
            _check_side(side, 0, len(x_src))
            return self.means[:1].expand(len(x_src), -1, -1, -1)
        _check_side(side, self.side_dim, len(x_src))
        return torch.einsum("bk,kchw->bchw", side.to(self.means), self.means)


def build_translator(settings: dict[str, Any], num_classes: int) -> nn.Module:
    """The untrained model of a translation baseline.json (``name``: ``unet``, ``mean`` or
    ``class_mean``; ``side_dim``, default 0; ``image_size``), e.g. as ``build`` for
    :func:`magicflow.baselines.discriminative.load_baseline`."""
    name = settings["name"]
    side_dim = int(settings.get("side_dim", 0))
    if name == "unet":
        return UNetTranslator(side_dim)
    if name == "mean":
        return MeanPredictor(settings["image_size"], side_dim)
    if name == "class_mean":
        if settings.get("side") == "age":
            raise InputError(
                "baseline class_mean needs class side information (translation.side none, label or predicted), not age"
            )
        return ClassMeanPredictor(settings["image_size"], side_dim)
    raise InputError(f"unknown translation baseline {name!r}; known: unet, mean, class_mean")


# --------------------------------------------------------------------------- training
def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 4 or x.shape[1] != 2:
        raise InputError(f"translation batches must be (B, 2, S, S) pairs (channel 0 T1, channel 1 PET), got {tuple(x.shape)}")
    return x[:, :1], x[:, 1:]


def l1_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean |prediction - target| over every pixel of the (cropped) image of a (B, 2, S, S) batch."""
    source, target = _split(x)
    return F.l1_loss(model(source, side_tensor(y, model.side_dim)), target)


@torch.no_grad()
def _validate(
    model: nn.Module, data: SliceSet, device: torch.device, batch: int, side_of: Callable[[SliceSet], torch.Tensor] | None = None
) -> dict[str, float]:
    model.eval()
    total, maes = 0.0, []
    sides = data.labels if side_of is None else side_of(data)
    for s in range(0, len(data), batch):
        source, target = _split(data.images[s : s + batch].to(device))
        y = sides[s : s + batch].to(device)
        error = (model(source, side_tensor(y, model.side_dim)) - target).abs().flatten(1).float()
        total += float(error.sum())
        foreground = ((source != 0) | (target != 0)).flatten(1)
        counted = foreground.sum(1)
        inside = torch.where(counted > 0, (error * foreground).sum(1) / counted.clamp(min=1), error.mean(1))
        maes.append(inside.cpu())
    pixels = max(len(data), 1) * int(np.prod(data.images.shape[2:]))
    return {"val_loss": total / pixels, "val_mae": float(torch.cat(maes).mean()) if maes else float("nan")}


def objective(model: nn.Module, side_of: Callable[[SliceSet], torch.Tensor] | None = None) -> Objective:
    """The U-Net's :class:`~magicflow.baselines.discriminative.Objective` (see the module docstring):
    L1 training loss, ``val_loss`` and ``val_mae`` on validation, best.pt by the lowest ``val_loss``.
    ``side_of(set)`` gives a validation set's side vectors (default: its labels, one-hot)."""
    return Objective(
        loss=l1_loss,
        validate=lambda m, data, device, batch: _validate(m, data, device, batch, side_of),
        score=lambda metrics: [-metrics["val_loss"]],
        selected_by="val_loss",
        loss_name=getattr(model, "loss_name", "L1"),
        check_size=False,
    )


# --------------------------------------------------------------------------- prediction
def _floats(a: Any) -> torch.Tensor:
    return (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a, dtype=np.float32))).float()


@torch.no_grad()
def predict(model: nn.Module, sources: Any, side: Any, device: torch.device | str, batch: int = 16) -> np.ndarray:
    """Predicted PET (N, 1, S, S) float32 for T1 ``sources`` (N, 1, S, S) and ``side`` ((N, side_dim)
    floats, or None), in eval mode without gradients; the model's training mode is restored after."""
    x = _floats(sources)
    s = None if side is None else _floats(side)
    if s is not None and len(s) != len(x):
        raise InputError(f"{len(x)} source images {tuple(x.shape)} but side information of shape {tuple(s.shape)}")
    was_training = model.training
    model.eval()
    try:
        out = [
            model(x[i : i + batch].to(device), None if s is None else s[i : i + batch].to(device)).float().cpu()
            for i in range(0, len(x), batch)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, *x.shape[1:]), np.float32)


# --------------------------------------------------------------------------- commands (baseline-train, baseline-translate)
def train_translation_baseline(
    settings: dict[str, Any],
    baseline: dict[str, Any],
    classes: list[str],
    sets: dict[str, SliceSet],
    out: Path,
    device,
    fold: str,
) -> None:
    """``magicflow baseline-train`` for a translation baseline: the U-Net through the shared
    loop (on the flow's pairs, side information and augmentation), the mean predictor fitted
    on the training targets and written in the same files (best.pt, training.tsv/.png)."""
    import time

    from magicflow.baselines.discriminative import save_baseline, train_baseline, write_history
    from magicflow.experiments.translation import age_scale, side_dim, side_table

    side = settings["translation"]["side"]
    scale = age_scale(sets["train"]) if side == "age" else None
    baseline = {**baseline, "side_dim": side_dim(settings, classes)}
    model = build_translator(baseline, len(classes))
    extra = {"classes": classes, "experiment": settings["name"], "fold": fold, "age_scale": list(scale) if scale else None}
    print(
        f"{settings['name']} {baseline['id']} ({baseline['architecture']}) {fold}: {len(sets['train'])} training / "
        f"{len(sets['val'])} validation pairs, side {side}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )
    side_of = (lambda data: side_table(data, side, classes, scale)) if side != "none" else None
    if isinstance(model, (MeanPredictor, ClassMeanPredictor)):
        started = time.perf_counter()
        if isinstance(model, ClassMeanPredictor):
            model.fit(sets["train"].images, sets["train"].labels)
        else:
            model.fit(sets["train"].images)
        metrics = _validate(model, sets["val"], torch.device("cpu"), 16, side_of)
        out.mkdir(parents=True, exist_ok=True)
        save_baseline(out / "best.pt", model, baseline, len(classes), {**extra, "epoch": 1, "selected_by": "fitted"})
        seconds = time.perf_counter() - started
        row = {
            "epoch": 1,
            "lr": 0.0,
            "train_loss": float("nan"),
            **metrics,
            "steps": 0,
            "images": len(sets["train"]),
            "parameters": 0,
            "train_seconds": seconds,
            "seconds": seconds,
            "peak_gpu_mb": float("nan"),
        }
        write_history([row], out, baseline.get("label", baseline["name"]), "L1")
        what = "per-class training means" if isinstance(model, ClassMeanPredictor) else "training mean"
        print(f"fitted the {what} of {len(sets['train'])} targets: validation L1 {metrics['val_loss']:.4f}")
        return
    conditions = side_table(sets["train"], side, classes, scale) if side != "none" else None
    train_baseline(
        model,
        sets["train"],
        sets["val"],
        out,
        baseline,
        device,
        len(classes),
        extra=extra,
        objective=objective(model, side_of),
        conditions=conditions,
    )


def translate_with_baseline(
    model_path: Path,
    settings: dict[str, Any],
    baseline: dict[str, Any],
    classes: list[str],
    test: SliceSet,
    device,
    out: Path,
    mask: np.ndarray,
    train: SliceSet | None = None,
) -> None:
    """``magicflow baseline-translate``: the fold's test sources through a trained translation
    baseline, written by the flow's :func:`~magicflow.experiments.translation.write_translations`.
    Side information as the flow's (:func:`~magicflow.experiments.translation.held_out_conditions`;
    ``predicted`` needs the fold's ``train`` set for its source classifier)."""
    import time

    from magicflow.baselines.discriminative import load_baseline
    from magicflow.experiments.translation import held_out_conditions, side_dim, write_translations
    from magicflow.view import View

    model, payload = load_baseline(
        model_path, device, build=lambda s, k: build_translator({**s, "side_dim": side_dim(settings, classes)}, k)
    )
    extra = payload["extra"]
    if extra.get("classes", classes) != classes:
        raise InputError(f"{model_path} was trained on classes {extra['classes']}, the split has {classes}; retrain it")
    side = settings["translation"]["side"]
    scale = tuple(extra["age_scale"]) if extra.get("age_scale") else None
    if side == "predicted" and train is None:
        raise InputError(f"{model_path}: side information 'predicted' needs the fold's training set for its source classifier")
    conditions, recorded = held_out_conditions(side, classes, train if train is not None else test, test, scale)
    started = time.perf_counter()
    mode = predict(model, test.images[:, :1], conditions if side != "none" else None, device)
    seconds = time.perf_counter() - started
    write_translations(
        out,
        test,
        mode,
        None,
        seconds,
        recorded,
        View.from_record(settings.get("view"), int(mask.shape[-1])),
    )
    mae = float(np.abs(mode - test.images[:, 1:].numpy()).mean()) if len(test) else float("nan")
    print(f"{baseline['id']}: {len(test)} test slices translated (mean absolute error {mae:.4f}) -> {out}")
