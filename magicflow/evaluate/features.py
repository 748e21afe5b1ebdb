"""Feature extractors for the distribution metrics (FID, KID, PRDC).

The paper computes its metrics in the feature space of networks pretrained on RadImageNet
(FID_Rad, KID_Rad, PRDC), SwAV (FID_SwAV) and ImageNet Inception (plain FID). Those weights
cannot be downloaded here, so they are loaded from a user-given file (:func:`load_external`)
and never fetched from a hub. The default instead is an *in-domain* extractor
(:func:`train_in_domain`): a small CNN trained on one experiment's real training slices to
predict its class labels, then frozen. Its features know brain slices and the experiment's
classes, train in seconds on a CPU, and depend on nothing outside the pipeline.

Every extractor maps grey slices ``(N, 1, H, W)`` in [0, 1] to float64 features ``(N, D)``
in eval mode, so real and generated images pass through exactly the same preprocessing, and
carries a checksum of its weights so a report can say which features its numbers used."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from magicflow.errors import InputError
from magicflow.io import atomic_path, state_dict_in

FORMAT = "magicflow.features/1"

#: label used in metric names (FID_ID, FID_Rad, ...) per extractor kind
METRIC_SUFFIX: dict[str, str] = {
    "in_domain": "ID",
    "radimagenet_resnet50": "Rad",
    "radimagenet_densenet121": "Rad",
    "radimagenet_inceptionv3": "Rad",
    "swav_resnet50": "SwAV",
    "inception_fid": "Inception",
}

#: RadImageNet was trained in Keras with ``rescale=1/255`` after ``preprocess_input`` (caffe
#: mode: BGR order, ImageNet channel means subtracted, no division by a std). On [0, 1]
#: inputs that is a subtraction of these means in B, G, R order; grey slices have equal
#: channels, so the order of the channels themselves does not matter.
RADIMAGENET_MEAN = (0.406, 0.456, 0.485)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RADIMAGENET_224 = {"size": 224, "channels": 3, "mean": list(RADIMAGENET_MEAN), "std": [1.0, 1.0, 1.0], "resize": "bilinear"}
_IMAGENET_224 = {"size": 224, "channels": 3, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "resize": "bilinear"}
#: torch-fidelity's Inception resizes (to 299, TensorFlow-style) and scales internally
_FIDELITY_INPUT = {"size": None, "channels": 3, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "resize": "none"}

#: architecture and input convention per external kind
EXTERNAL_KINDS: dict[str, dict[str, Any]] = {
    "radimagenet_resnet50": {"net": "resnet50", "input": _RADIMAGENET_224},
    "radimagenet_densenet121": {"net": "densenet121", "input": _RADIMAGENET_224},
    "radimagenet_inceptionv3": {"net": "fidelity_inception", "input": _FIDELITY_INPUT},
    "swav_resnet50": {"net": "resnet50", "input": _IMAGENET_224},
    "inception_fid": {"net": "fidelity_inception", "input": _FIDELITY_INPUT},
}

#: wrappers that training frameworks put around a model's parameter names
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")
#: classifier / projection heads: not part of the feature network
_HEADS: dict[str, tuple[str, ...]] = {
    "resnet50": ("fc.", "projection_head.", "prototypes."),
    "densenet121": ("classifier.", "class_layers.out."),
    "fidelity_inception": (),
}
#: torchvision ResNet saved as ``nn.Sequential(*children[:-2])`` (an index per child)
_SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
#: torchvision DenseNet layer names (``norm1`` or the old ``norm.1``) -> MONAI's ``layers.norm1``
_TV_DENSE = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.(norm|relu|conv)\.?([12])\.(.+)$")


# --------------------------------------------------------------------------- networks


class _Extractor(nn.Module):
    """Preprocessing + backbone (+ optional classifier head): grey slices -> features.

    Preprocessing is part of the module so that every image, real or generated, goes
    through the same resize and normalisation; mean/std are non-persistent buffers, so
    the state dict (and its checksum) holds only learned weights."""

    def __init__(self, backbone: nn.Module, input_spec: dict[str, Any], head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.size = input_spec["size"]
        self.channels = int(input_spec["channels"])
        self.resize = input_spec["resize"]
        self.register_buffer("mean", torch.tensor(input_spec["mean"], dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(input_spec["std"], dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) in [0, 1] -> the network's input size, channel count and scaling."""
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            if self.resize == "area":  # averaging: no aliasing when shrinking 182 -> 96
                x = F.interpolate(x, size=(self.size, self.size), mode="area")
            else:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.channels != x.shape[1]:
            x = x.expand(-1, self.channels, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the in-domain classifier for already prepared inputs."""
        if self.head is None:
            raise InputError("this feature extractor has no classifier head")
        return self.head(self.backbone(x))


def _small_resnet(width: int) -> nn.Module:
    """A 4-stage MONAI ResNet with one basic block per stage, widths width/8 .. width.

    On a 96x96 input the stem (7x7, stride 2, max pool) leaves 24x24 maps, the stages
    24 -> 12 -> 6 -> 3, and global average pooling gives ``width`` features."""
    from monai.networks.nets import ResNet

    if width < 16 or width % 8:
        raise InputError(f"in-domain feature_dim must be a multiple of 8 and at least 16, got {width}")
    planes = [width // 8, width // 4, width // 2, width]
    return ResNet(
        "basic", [1, 1, 1, 1], planes, spatial_dims=2, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, feed_forward=False
    )


def _resnet50(layout: str) -> nn.Module:
    """MONAI ResNet-50 (2-D, 3 input channels, pooled 2048 features, no fc).

    ``torchvision`` layout (v1.5: stride on the 3x3 conv, bias-free convs, downsample
    without bias) has exactly torchvision's parameter names. ``keras`` layout is the Keras
    ResNet50 that RadImageNet was trained as and that its PyTorch conversions keep: v1
    stride on the first 1x1 conv of each stage, a bias on every conv, BatchNorm eps 1.001e-5."""
    from monai.networks.nets import ResNet
    from monai.networks.nets.resnet import get_inplanes

    net = ResNet(
        "bottleneck",
        [3, 4, 6, 3],
        get_inplanes(),
        spatial_dims=2,
        n_input_channels=3,
        conv1_t_size=7,
        conv1_t_stride=2,
        bias_downsample=False,
        feed_forward=False,
    )
    if layout == "keras":
        for module in net.modules():
            if isinstance(module, nn.Conv2d) and module.bias is None:
                module.bias = nn.Parameter(torch.zeros(module.out_channels))
            elif isinstance(module, nn.BatchNorm2d):
                module.eps = 1.001e-5
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            first = stage[0]
            first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
    elif layout != "torchvision":
        raise InputError(f"unknown ResNet-50 layout {layout!r}; expected 'torchvision' or 'keras'")
    return net


def _densenet121() -> nn.Module:
    """MONAI DenseNet-121 (2-D, 3 input channels); the classifier is replaced by identity,
    so the output is the ReLU + global-average-pooled 1024 features, as in torchvision."""
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=1)
    net.class_layers.out = nn.Identity()
    return net


class _FidelityInception(nn.Module):
    """torch-fidelity's InceptionV3 (the TF FID graph, pool3 2048 features) behind a float
    interface: it takes uint8 RGB and resizes to 299 and scales to [-1, 1] itself."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(pixels)[0]


def _fidelity_inception(state: dict[str, torch.Tensor], source: str, kind: str) -> nn.Module:
    """Build torch-fidelity's InceptionV3 from ``state``. Its constructor only takes a file
    (and downloads when given none), so the state goes through a temporary file."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise InputError(
            f"feature extractor {kind!r} needs the torch-fidelity package (its FeatureExtractorInceptionV3), "
            f"which is not installed; install torch-fidelity or use another kind ({source})"
        ) from None
    fd, tmp = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, tmp)
        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=tmp)
        except RuntimeError as error:  # load_state_dict: missing/unexpected keys, wrong shapes
            first = str(error).splitlines()[:4]
            raise InputError(
                f"{source} does not fit the {kind} network (torch-fidelity InceptionV3): {' '.join(first)}"
            ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _FidelityInception(net)


def _build(arch: dict[str, Any], state: dict[str, torch.Tensor] | None = None, source: str = "", kind: str = "") -> _Extractor:
    """The network described by the JSON-able ``arch`` (stored in every saved extractor)."""
    net = arch["net"]
    head = None
    if net == "small_resnet":
        backbone = _small_resnet(int(arch["width"]))
        head = nn.Linear(int(arch["width"]), int(arch["num_classes"]))
    elif net == "resnet50":
        backbone = _resnet50(arch.get("layout", "torchvision"))
    elif net == "densenet121":
        backbone = _densenet121()
    elif net == "fidelity_inception":
        if state is None:
            raise InputError("torch-fidelity's InceptionV3 is built from its weights; pass them")
        # the wrapper's keys carry a "backbone.net." prefix in saved extractors
        inner = {k.removeprefix("backbone.net."): v for k, v in state.items()}
        return _Extractor(_fidelity_inception(inner, source, kind), arch["input"])
    else:
        raise InputError(f"unknown feature network {net!r}")
    return _Extractor(backbone, arch["input"], head)


# --------------------------------------------------------------------------- extractor


def state_checksum(module: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes) in sorted name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def as_image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, 1, H, W) float32 from a tensor or array; (N, H, W) gains the channel axis."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise InputError(f"feature extraction needs grey images (N, 1, H, W), got shape {tuple(x.shape)}")
    x = x.detach().float()
    if not torch.isfinite(x).all():
        raise InputError("feature extraction got non-finite pixel values (NaN or inf)")
    return x


class FeatureExtractor:
    """A frozen network and what identifies it: kind, name, feature dimension, checksum.

    ``arch`` is the JSON-able architecture description that :meth:`load` rebuilds from;
    ``info`` holds JSON-able provenance (weights file, training summary) for reports."""

    def __init__(
        self, module: _Extractor, kind: str, name: str, arch: dict[str, Any], info: dict[str, Any] | None = None
    ) -> None:
        if kind not in METRIC_SUFFIX:
            raise InputError(f"unknown feature extractor kind {kind!r}; expected one of {sorted(METRIC_SUFFIX)}")
        self.module = module.eval().requires_grad_(False)
        self.kind = kind
        self.name = name
        self.arch = arch
        self.info = {} if info is None else info
        self.feature_dim = int(arch["feature_dim"])
        self.checksum = state_checksum(self.module)

    @property
    def metric_suffix(self) -> str:
        """ID, Rad, SwAV or Inception: the subscript of metric names (FID_Rad, KID_ID)."""
        return METRIC_SUFFIX[self.kind]

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> FeatureExtractor:
        self.module.to(device)
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor | np.ndarray, batch: int = 64) -> np.ndarray:
        """Features (N, D) float64 of grey images (N, 1, H, W) in [0, 1], in eval mode."""
        if batch < 1:
            raise InputError(f"feature batch size must be at least 1, got {batch}")
        x = as_image_batch(images)
        self.module.eval()
        out = [self.module(x[i : i + batch].to(self.device)).double().cpu() for i in range(0, x.shape[0], batch)]
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float64)
        feats = torch.cat(out).numpy()
        if feats.shape[1] != self.feature_dim:
            raise InputError(f"{self.name} gave {feats.shape[1]} features, its description says {self.feature_dim}")
        return feats

    def describe(self) -> dict[str, Any]:
        """JSON-able identity for metric files and reports."""
        return {
            "kind": self.kind,
            "name": self.name,
            "feature_dim": self.feature_dim,
            "checksum": self.checksum,
            "metric_suffix": self.metric_suffix,
            **self.info,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Weights (CPU tensors) + description, atomically; loads with ``weights_only=True``."""
        payload = {
            "format": FORMAT,
            "kind": self.kind,
            "name": self.name,
            "arch": self.arch,
            "info": self.info,
            "checksum": self.checksum,
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> FeatureExtractor:
        """Rebuild a saved extractor; the weights must reproduce the recorded checksum."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise InputError(f"feature extractor not found: {path}") from None
        except Exception as error:  # corrupt file or foreign pickle
            raise InputError(f"{path} is not a readable feature extractor file: {error}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(f"{path} is not a saved feature extractor (expected format {FORMAT!r})")
        module = _build(payload["arch"], payload["state_dict"], str(path), payload["kind"])
        _load_strict(module, payload["state_dict"], str(path), payload["kind"])
        extractor = cls(module, payload["kind"], payload["name"], payload["arch"], payload["info"])
        if extractor.checksum != payload["checksum"]:
            raise InputError(f"{path}: weights do not match the recorded checksum (file damaged or edited)")
        return extractor.to(device)


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, kind: str) -> None:
    """load_state_dict(strict) with an InputError that names the file, kind and keys."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise InputError(
            f"{source} does not fit the {kind} network: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:  # same names, wrong shapes
        sizes = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
        raise InputError(f"{source} does not fit the {kind} network: {' '.join(sizes[:3]) or error}") from None


# --------------------------------------------------------------------------- in-domain


def _recalibrate_batchnorm(module: _Extractor, x: torch.Tensor, batch: int) -> None:
    """Replace BatchNorm running statistics by exact averages over the training images.

    A few dozen optimiser steps leave exponential running averages that lag the final
    weights; eval-mode features would then be computed with stale statistics."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            if x[i : i + batch].shape[0] > 1:
                module.backbone(x[i : i + batch])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    module.eval()


IN_DOMAIN_MIN_STEPS = 100
"""Optimiser steps the in-domain extractor takes at least, whatever ``epochs`` says: 5 epochs of
a demo's 24 slices at batch 32 are 5 steps, which leave the network near its initialisation.
100 steps cost about 47 s on one shared CPU thread at 96 px (0.47 s per step, measured)."""


def _accuracy(module: _Extractor, prepared: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present) of the classifier head."""
    with torch.no_grad():
        predicted = torch.cat([module.logits(prepared[i : i + 256]).argmax(1) for i in range(0, prepared.shape[0], 256)])
    right = predicted == labels
    recalls = [float(right[labels == c].float().mean()) for c in range(num_classes) if (labels == c).any()]
    return {"accuracy": round(float(right.float().mean()), 6), "balanced_accuracy": round(float(np.mean(recalls)), 6)}


def train_in_domain(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    *,
    feature_dim: int = 128,
    input_size: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    min_steps: int = IN_DOMAIN_MIN_STEPS,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
) -> FeatureExtractor:
    """Train the in-domain extractor on an experiment's REAL TRAINING slices, then freeze it.

    A small MONAI ResNet (see :func:`_small_resnet`) learns the experiment's labels with
    class-weighted cross-entropy (so a rare diagnosis still shapes the features) and Adam.
    Slices are area-downsampled to ``input_size`` (None: 96, or the image side where that is
    smaller, since upsampling adds cost and no information; 182x182 slices cost 3.6x more than
    96 and the metrics need coarse anatomy, not fine texture). Initialisation and batch order come
    from ``seed`` alone and the caller's global RNG is left untouched, so on CPU the same
    data, seed and torch thread count give the same weights and checksum (another thread
    count changes floating-point summation order, hence the last bits of the weights). After training, BatchNorm statistics
    are recomputed over the training set; features are the pooled ``feature_dim`` vector
    before the classifier.

    Training runs ``epochs`` epochs or until ``min_steps`` optimiser steps, whichever is more.
    ``val_images``/``val_labels`` (slices of subjects the extractor never trained on, e.g. the
    validation subjects) give the held-out accuracy recorded in ``info["training"]``: a reader
    can then see whether the features separate the classes at all before trusting FID_ID."""
    x = as_image_batch(images)
    y = torch.as_tensor(labels).long().reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise InputError(f"in-domain training needs one label per image: {x.shape[0]} images, {y.shape[0]} labels")
    if num_classes < 2:
        raise InputError(f"in-domain training needs at least 2 classes, got num_classes={num_classes}")
    if x.shape[0] < 2 or y.min() < 0 or y.max() >= num_classes:
        raise InputError(
            f"in-domain training needs >= 2 images with labels in [0, {num_classes - 1}], "
            f"got {x.shape[0]} images, labels {sorted(set(y.tolist()))[:10]}"
        )
    if epochs < 1 or batch_size < 2:
        raise InputError(f"in-domain training needs epochs >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    device = torch.device(device)
    if input_size is None:
        input_size = min(96, max(x.shape[-2:]))
    arch = {
        "net": "small_resnet",
        "width": feature_dim,
        "num_classes": num_classes,
        "feature_dim": feature_dim,
        "input": {"size": input_size, "channels": 1, "mean": [0.0], "std": [1.0], "resize": "area"},
    }
    with torch.random.fork_rng(devices=[]):  # MONAI initialises from the global RNG
        torch.manual_seed(seed)
        module = _build(arch)
    module.to(device)
    prepared = module.prepare(x.to(device))  # resize once, not every epoch
    y = y.to(device)
    counts = torch.bincount(y, minlength=num_classes).float()
    weight = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.ones_like(counts))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    per_epoch = sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) >= 2)
    epochs = max(epochs, -(-max(min_steps, 0) // max(per_epoch, 1)))
    loss_value = float("nan")
    steps = 0
    bar = tqdm(range(epochs), desc="in-domain features", disable=not progress, leave=False)
    for _ in bar:
        module.train()
        permutation = torch.randperm(n, generator=order).to(device)
        total, seen = 0.0, 0
        for i in range(0, n, batch_size):
            index = permutation[i : i + batch_size]
            if index.shape[0] < 2:  # BatchNorm cannot train on a single image
                continue
            loss = F.cross_entropy(module.logits(prepared[index]), y[index], weight=weight.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            total += float(loss.detach()) * index.shape[0]
            seen += index.shape[0]
        loss_value = total / max(seen, 1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
    _recalibrate_batchnorm(module, prepared, batch_size)
    info: dict[str, Any] = {
        "training": {
            "images": n,
            "epochs": epochs,
            "steps": steps,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "final_loss": round(loss_value, 6),
            "train_accuracy": _accuracy(module, prepared, y, num_classes)["accuracy"],
        }
    }
    if val_images is not None and val_labels is not None and len(val_labels):
        vx = module.prepare(as_image_batch(val_images).to(device))
        vy = torch.as_tensor(val_labels).long().reshape(-1).to(device)
        if vy.shape[0] != vx.shape[0]:
            raise InputError(f"in-domain validation needs one label per image: {vx.shape[0]} images, {vy.shape[0]} labels")
        held = _accuracy(module, vx, vy, num_classes)
        info["training"].update(
            heldout_images=int(vy.shape[0]),
            heldout_accuracy=held["accuracy"],
            heldout_balanced_accuracy=held["balanced_accuracy"],
            chance_balanced_accuracy=round(1 / len(torch.unique(vy)), 6),
        )
    else:
        info["training"]["heldout_accuracy"] = None
        info["training"]["heldout_note"] = "no held-out slices given"
    name = f"in_domain_resnet{feature_dim}_{input_size}px"
    return FeatureExtractor(module, "in_domain", name, arch, info)


# --------------------------------------------------------------------------- external


def _read_state(path: Path, kind: str) -> dict[str, torch.Tensor]:
    """The raw tensor dict inside a weights file (plain, or under state_dict / model)."""
    if not path.is_file():
        raise InputError(f"{kind} weights not found: {path} (weights are never downloaded; give a local file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, not a torch file, or pickled code
        raise InputError(f"{path} is not a readable {kind} weights file (torch.load weights_only=True): {error}") from None
    return dict(state_dict_in(payload, path, f"{kind} state dict"))


def _strip_prefixes(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def _rename(state: dict[str, torch.Tensor], net: str) -> dict[str, torch.Tensor]:
    """Map known wrappers and layouts onto MONAI names and drop classifier heads.

    ResNet: torchvision names are MONAI's names; a torchvision ``nn.Sequential`` of the
    children gets them back from its indices. DenseNet: torchvision's ``denselayerK.norm1``
    becomes MONAI's ``denselayerK.layers.norm1``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _strip_prefixes(key)
        if net == "resnet50":
            first, _, rest = name.partition(".")
            if first in _SEQUENTIAL_RESNET and rest:
                name = f"{_SEQUENTIAL_RESNET[first]}.{rest}"
        elif net == "densenet121":
            match = _TV_DENSE.match(name)
            if match:
                name = f"{match[1]}.layers.{match[2]}{match[3]}.{match[4]}"
        if any(name.startswith(h) for h in _HEADS[net]):
            continue
        if name in out:
            raise InputError(f"two weights map to the same name {name!r} (from {key!r})")
        out[name] = value
    return out


def load_external(kind: str, path: str | os.PathLike[str]) -> FeatureExtractor:
    """A pretrained extractor from a local weights file; nothing is ever downloaded.

    Kinds and what they assume:

    - ``radimagenet_resnet50``: MONAI ResNet-50, 2048 features. The file is a torchvision
      ResNet-50 state dict, or a conversion of the Keras RadImageNet model (recognised by
      conv biases, e.g. ``conv1.bias``) which is run with Keras' layout. Input: 224x224,
      grey repeated to 3 channels, RadImageNet's caffe-style mean subtraction.
    - ``radimagenet_densenet121``: MONAI DenseNet-121 from torchvision-style names, 1024
      features; same input as above.
    - ``swav_resnet50``: SwAV ResNet-50 (facebookresearch checkpoint or torch.hub state
      dict; projection head and prototypes dropped), 2048 features, 224x224 with ImageNet
      mean/std.
    - ``inception_fid``: torch-fidelity's FID InceptionV3 (pool3, 2048) from its weights file.
    - ``radimagenet_inceptionv3``: RadImageNet InceptionV3 weights renamed to torch-fidelity's
      InceptionV3 names; its fc is not needed. Approximation: that network is the TF FID
      graph (max pool in the last block's pool branch) fed [-1, 1] inputs, not exactly the
      Keras InceptionV3 RadImageNet trained with caffe-style inputs.

    Prefixes ``module.``, ``backbone.``, ``model.``, ``encoder.`` are removed and heads
    dropped; everything else must match exactly (strict), or an InputError names the file,
    the kind and the first missing/unexpected keys."""
    if kind not in EXTERNAL_KINDS:
        raise InputError(f"unknown external feature extractor kind {kind!r}; expected one of {sorted(EXTERNAL_KINDS)}")
    path = Path(path)
    spec = EXTERNAL_KINDS[kind]
    state = _rename(_read_state(path, kind), spec["net"])
    arch: dict[str, Any] = {"net": spec["net"], "input": spec["input"]}
    if spec["net"] == "resnet50":
        arch["layout"] = "keras" if "conv1.bias" in state else "torchvision"
        arch["feature_dim"] = 2048
    elif spec["net"] == "densenet121":
        arch["feature_dim"] = 1024
    else:
        arch["feature_dim"] = 2048
        if not any(k.startswith("fc.") for k in state):  # a headless (notop) file: torch-fidelity loads fc strictly
            state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    module = _build(arch, state, str(path), kind)
    if spec["net"] != "fidelity_inception":  # torch-fidelity loaded (strictly) already
        _load_strict(module.backbone, state, str(path), kind)
    info = {"weights": str(path.resolve()), "input_size": spec["input"]["size"] or 299}
    if "layout" in arch:
        info["layout"] = arch["layout"]
    return FeatureExtractor(module, kind, f"{kind}:{path.name}", arch, info)


# --------------------------------------------------------------------------- config

_IN_DOMAIN_KEYS = {"kind", "epochs", "feature_dim", "input_size", "batch_size", "lr"}
_EXTERNAL_KEYS = {"kind", "weights"}


def extractor_from_config(
    settings: dict[str, Any],
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    seed: int,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    min_steps: int = IN_DOMAIN_MIN_STEPS,
) -> FeatureExtractor:
    """The extractor an experiment's evaluation settings ask for.

    ``{"kind": "in_domain", "epochs": 5}`` trains on ``train_images``/``train_labels`` (the
    experiment's real training slices, never validation or test ones) for at least
    :data:`IN_DOMAIN_MIN_STEPS` steps and scores it on ``val_images``/``val_labels``;
    ``{"kind": "radimagenet_resnet50", "weights": "/path/file.pt"}`` loads a local file."""
    settings = dict(settings or {})
    kind = settings.get("kind", "in_domain")
    allowed = _IN_DOMAIN_KEYS if kind == "in_domain" else _EXTERNAL_KEYS
    unknown = sorted(set(settings) - allowed)
    if kind != "in_domain" and kind not in EXTERNAL_KINDS:
        raise InputError(f"unknown feature extractor kind {kind!r}; expected one of {sorted(METRIC_SUFFIX)}")
    if unknown:
        raise InputError(f"feature extractor {kind!r} does not take {unknown}; allowed: {sorted(allowed)}")
    if kind == "in_domain":
        options: dict[str, Callable[[Any], Any]] = {"feature_dim": int, "input_size": int, "batch_size": int, "lr": float}
        extra = {k: cast(settings[k]) for k, cast in options.items() if k in settings}
        return train_in_domain(
            train_images,
            train_labels,
            num_classes,
            epochs=int(settings.get("epochs", 5)),
            seed=seed,
            device=device,
            progress=progress,
            val_images=val_images,
            val_labels=val_labels,
            min_steps=min_steps,
            **extra,
        )
    if not settings.get("weights"):
        raise InputError(f"feature extractor {kind!r} needs 'weights': a local file (weights are never downloaded)")
    return load_external(kind, Path(os.path.expanduser(str(settings["weights"])))).to(device)
