"""MAGIC-Flow: a conditional multiscale flow for generation, classification and attribution.

Geometry (paper layout, 1x182x182 input): images are padded with the background value to the
next multiple of ``2**squeezes`` (184), then 24 steps run with squeezes before steps 5, 11, 17
and splits after steps 7, 13, 19. The latents are ``[2x92x92, 4x46x46, 8x23x23, 8x23x23]``
(33,856 values) under an element-wise standard normal.

Densities: ``log_prob`` is the continuous density of the padded image the flow sees. The
border is not free: held at the constant background in training, it added -68 to -75 nats
that varied with the label (measured in the review of issue 17). Training therefore
dequantises the border like the image (:meth:`MagicFlow.dequantise`), and
:meth:`MagicFlow.log_likelihood` reports log P of the image at its own size, quantised to
bins of width ``b``: summing over the border's values, ``log P(image) >= log P(image, border
in the background bin) >= E_u log p(x + u) + D log b`` (Jensen; Theis et al. 2016, with D the
padded dimensions). The border's cost is part of the image's code length, and bits per
dimension are over the image's dimensions (182x182), not the padded ones.

Step 0 with ``mask=None``: the application-specific mask falls back to a checkerboard of
the same parity, so the layout stays 24 steps and still alternates with step 1."""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from magicflow.errors import InputError
from magicflow.flow.blocks import store_channels_last
from magicflow.flow.coupling import DoubleAffineCoupling
from magicflow.flow.layers import (
    ActNorm,
    FirstBatchActNorm,
    FullInvConv1x1,
    InvConv1x1,
    crop_image,
    fold_border,
    merge,
    pad_amounts,
    pad_image,
    split,
    squeeze,
    unsqueeze,
)
from magicflow.flow.masks import CHECKER_PHASES, MASK_KINDS, build_mask, check_application_mask
from magicflow.flow.nets import ARCHITECTURES, COMPACT_REFINEMENTS, HEADS, REFINEMENTS, build_net
from magicflow.flow.presets import COUPLINGS, preset_config

_LOG_2PI = math.log(2 * math.pi)
_REQUIRED = {
    "num_classes": int,
    "coupling": str,
    "in_channels": int,
    "image_size": int,
    "background": float,
    "masks": list,
    "squeeze_before": list,
    "split_after": list,
    "widths": list,
    "embed_dim": int,
    "scale_bound": float,
    "shared_nets": bool,
    "lite_steps": list,
    "dropout": float,
    "actnorm_init_images": int,
    "architecture": str,
    "head": str,
    "checker_phase": str,
    "refinements": list,
}


def _normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(z; 0, 1)."""
    return -0.5 * (z * z + _LOG_2PI)


def validate_model_config(config: dict[str, Any]) -> None:
    """Raise InputError naming the first wrong key of a model config."""
    if not isinstance(config, dict):
        raise InputError(f"model config must be a dict, got {type(config).__name__}")
    missing = sorted(set(_REQUIRED) - set(config))
    unknown = sorted(set(config) - set(_REQUIRED))
    if missing or unknown:
        raise InputError(f"model config: missing keys {missing}, unknown keys {unknown}")
    for key, kind in _REQUIRED.items():
        value = config[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, kind)
        if kind is int and isinstance(value, bool):
            ok = False
        if not ok:
            raise InputError(f"model config {key!r} must be {kind.__name__}, got {value!r}")
    steps = len(config["masks"])
    if config["num_classes"] < 1:
        raise InputError(f"num_classes must be >= 1, got {config['num_classes']}")
    if config["architecture"] not in ARCHITECTURES or config["head"] not in HEADS:
        raise InputError(
            f"architecture must be one of {ARCHITECTURES} and head one of {HEADS}, "
            f"got {config['architecture']!r} and {config['head']!r}"
        )
    if config["head"] == "dense" and config["architecture"] != "authors":
        raise InputError("head 'dense' (the authors' classification heads) needs architecture 'authors'")
    if config["checker_phase"] not in CHECKER_PHASES:
        raise InputError(f"checker_phase must be one of {CHECKER_PHASES}, got {config['checker_phase']!r}")
    refinements = config["refinements"]
    if any(name not in REFINEMENTS for name in refinements) or len(set(refinements)) != len(refinements):
        raise InputError(f"refinements must be distinct names from {sorted(REFINEMENTS)}, got {refinements}")
    if config["architecture"] == "compact" and not COMPACT_REFINEMENTS <= set(refinements):
        raise InputError(
            f"compact networks are built from the project's blocks: refinements must include {sorted(COMPACT_REFINEMENTS)}, "
            f"missing {sorted(COMPACT_REFINEMENTS - set(refinements))}"
        )
    if config["coupling"] not in COUPLINGS:
        raise InputError(f"coupling must be one of {COUPLINGS}, got {config['coupling']!r}")
    if any(kind not in MASK_KINDS for kind in config["masks"]):
        raise InputError(f"masks must be from {MASK_KINDS}, got {config['masks']}")
    if len(config["widths"]) != steps or any(
        not isinstance(w, list) or len(w) != 3 or not all(isinstance(v, int) and v > 0 for v in w) for w in config["widths"]
    ):
        raise InputError(f"widths must be {steps} lists of three positive ints (one per step)")
    for key in ("squeeze_before", "split_after", "lite_steps"):
        idx = config[key]
        if idx != sorted(set(idx)) or any(not isinstance(i, int) or not 0 <= i < steps for i in idx):
            raise InputError(f"{key} must be increasing step indices in [0, {steps}), got {idx}")
    if config["image_size"] < 2 or config["in_channels"] < 1 or config["embed_dim"] < 1:
        raise InputError("image_size must be >= 2, in_channels and embed_dim >= 1")
    if not 0 <= config["dropout"] < 1 or config["scale_bound"] <= 0 or config["actnorm_init_images"] < 1:
        raise InputError("need 0 <= dropout < 1, scale_bound > 0 and actnorm_init_images >= 1")


#: Image-label pairs per forward pass when scoring every class on a CPU: full-resolution maps of
#: larger batches ran at half the speed per pair (small preset, 1 thread: 0.076 s per pair at 8,
#: 0.19 s at 32, where glibc hands every large buffer back to the system and faults it in again).
CPU_PAIRS_PER_PASS = 8
#: width of the uniform dequantisation noise training adds to every [0, 1] value (one 8-bit level)
BIN_WIDTH = 1.0 / 256.0


class FlowStep(nn.Module):
    """ActNorm -> invertible 1x1 convolution -> double affine coupling."""

    def __init__(
        self, actnorm: ActNorm | FirstBatchActNorm, conv: InvConv1x1 | FullInvConv1x1, coupling: DoubleAffineCoupling
    ) -> None:
        super().__init__()
        self.actnorm = actnorm
        self.conv = conv
        self.coupling = coupling

    def forward(self, x: torch.Tensor, y: torch.Tensor, per_position: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        x, ld_norm = self.actnorm(x, y, per_position)
        x, ld_conv = self.conv(x, y, per_position)
        x, ld_coupling = self.coupling(x, y, per_position)
        return x, ld_norm + ld_conv + ld_coupling

    def inverse(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.actnorm.inverse(self.conv.inverse(self.coupling.inverse(z, y), y), y)


class MagicFlow(nn.Module):
    """Conditional multiscale flow ``x <-> z`` given a class label ``y``.

    Inputs are ``(B, C, S, S)`` float images with ``S`` the configured image size (182) or its
    padded size (184); labels are integer tensors ``(B,)`` in ``[0, num_classes)``."""

    def __init__(self, config: dict[str, Any], mask: torch.Tensor | None = None) -> None:
        super().__init__()
        validate_model_config(config)
        self.config = copy.deepcopy(config)
        c = config
        self.num_classes = c["num_classes"]
        self.in_channels = c["in_channels"]
        self.image_size = c["image_size"]
        self.background = float(c["background"])
        self.squeeze_before = set(c["squeeze_before"])
        self.split_after = set(c["split_after"])
        multiple = 2 ** len(self.squeeze_before)
        self.pad_before, self.pad_after = pad_amounts(self.image_size, multiple)
        self.padded_size = self.image_size + self.pad_before + self.pad_after
        application = None
        if mask is not None:
            application = check_application_mask(mask, self.image_size, self.padded_size)
            if application.shape[0] == self.image_size:
                application = pad_image(application[None, None], self.pad_before, self.pad_after, 0.0)[0, 0]
        self.register_buffer("application_mask", application, persistent=False)

        channels, size, ops = self.in_channels, self.padded_size, []
        steps, shapes = [], []
        for i, kind in enumerate(c["masks"]):
            if i in self.squeeze_before:
                if size % 2:
                    raise InputError(f"padded size {size} is odd at the squeeze before step {i}")
                channels, size = channels * 4, size // 2
                ops.append("squeeze")
            if kind == "application" and application is None:
                kind = "checkerboard"  # documented fallback when no mask is given
            if kind == "channel" and channels < 2:
                raise InputError(f"step {i} has a channel-wise mask but only {channels} channel(s)")
            step_mask = build_mask(kind, (channels, size, size), i % 2, application, self.in_channels, ops, c["checker_phase"])
            net_args = (
                c["coupling"],
                channels,
                tuple(c["widths"][i]),
                self.num_classes,
                c["embed_dim"],
                c["dropout"],
                i in c["lite_steps"],
                c["architecture"],
                size,
                c["head"],
                c["refinements"],
            )
            net_b = build_net(*net_args)
            net_a = net_b if c["shared_nets"] else build_net(*net_args)
            coupling = DoubleAffineCoupling(step_mask, net_b, net_a, c["scale_bound"])
            actnorm = (
                ActNorm(channels, c["actnorm_init_images"]) if "actnorm_glow" in c["refinements"] else FirstBatchActNorm(channels)
            )
            conv = InvConv1x1(channels) if "lu_1x1" in c["refinements"] else FullInvConv1x1(channels)
            steps.append(FlowStep(actnorm, conv, coupling))
            if i in self.split_after:
                if channels < 2:
                    raise InputError(f"cannot split {channels} channel(s) after step {i}")
                shapes.append((channels - channels // 2, size, size))
                channels //= 2
                ops.append("split")
        shapes.append((channels, size, size))
        self.steps = nn.ModuleList(steps)
        self._latent_shapes = shapes
        self._weight_normed = any(parametrize.is_parametrized(m) for m in self.modules())
        self._compiled = False

    @classmethod
    def from_preset(
        cls,
        name: str,
        num_classes: int,
        coupling: str = "generation",
        mask: torch.Tensor | None = None,
        **overrides: Any,
    ) -> MagicFlow:
        """Build preset ``name`` (see :data:`magicflow.flow.presets.PRESETS`); ``overrides`` change config keys."""
        return cls(preset_config(name, num_classes, coupling, **overrides), mask=mask)

    # ----------------------------------------------------------------- input checks
    @property
    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Per-image shapes of the factored-out latents, finest first, then the final one."""
        return list(self._latent_shapes)

    @property
    def num_dims(self) -> int:
        """Dimensions of the padded image the density is defined on."""
        return self.in_channels * self.padded_size**2

    @property
    def image_dims(self) -> int:
        """Dimensions of the image itself (1 x 182 x 182): what bits per dimension divide by."""
        return self.in_channels * self.image_size**2

    def dequantise(
        self, x: torch.Tensor, bin_width: float, generator: torch.Generator | None = None, validate: bool = True
    ) -> torch.Tensor:
        """Pad ``x`` to the flow's size, then add uniform noise in ``[0, bin_width)`` to every
        value, border included, so no pixel is an exact constant the density can collapse on.
        Noise is drawn on the generator's device and moved to ``x``'s."""
        x = self.prepare(x, validate)
        device = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        return x + bin_width * noise.to(x.device)

    def bin_centre(self, x: torch.Tensor, bin_width: float = BIN_WIDTH) -> torch.Tensor:
        """``x`` padded, every value (border included) moved to the middle of the bin
        ``[v, v + bin_width)`` that :meth:`dequantise` fills in training: where classification,
        attribution and validation evaluate the density the model was trained on. At ``v``
        itself they would score the edge of its support (on the demo the centre gave the true
        class a slightly higher likelihood than the edge or the mean of 4 noise draws, and the
        same predictions; magicflow/flow/README.md). Shapes are checked here; values by the pass
        that scores the result (its :meth:`prepare`), so scoring waits on the device once."""
        return self.prepare(x, validate=False) + bin_width / 2

    def _dtype(self) -> torch.dtype:
        return self.steps[0].actnorm.bias.dtype

    def _device(self) -> torch.device:
        return self.steps[0].actnorm.bias.device

    def prepare(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Check images and pad them to the flow's size (InputError on bad input).

        Shape and dtype are always checked (no device work). ``validate=False`` skips the value
        check (finite intensities), which waits for the device: training checks its data once
        per set (:func:`magicflow.experiments.train.validate_set`) and then skips it per step."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"images must be a torch.Tensor, got {type(x).__name__}")
        sizes = (self.image_size, self.padded_size)
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] != x.shape[3] or x.shape[2] not in sizes:
            raise InputError(
                f"images must have shape (B, {self.in_channels}, S, S) with S in {sorted(set(sizes))}, got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise InputError("images: empty batch")
        if not x.is_floating_point():
            raise InputError(f"images must be floating point (intensities in [0, 1]), got {x.dtype}")
        x = x.to(device=self._device(), dtype=self._dtype())
        if validate and not bool(torch.isfinite(x).all()):
            raise InputError("images contain NaN or infinite values; expected finite intensities in [0, 1]")
        if x.shape[2] == self.image_size:
            x = pad_image(x, self.pad_before, self.pad_after, self.background)
        return x

    def check_labels(self, y: torch.Tensor, batch: int, validate: bool = True) -> torch.Tensor:
        """Check class indices ``(batch,)``; their range ``[0, num_classes)`` only if ``validate``
        (it waits for the device, see :meth:`prepare`)."""
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise InputError(
                f"labels must be an integer torch.Tensor of class indices, got {getattr(y, 'dtype', type(y).__name__)}"
            )
        if y.shape != (batch,):
            raise InputError(f"labels must have shape ({batch},) to match the batch, got {tuple(y.shape)}")
        y = y.to(device=self._device(), dtype=torch.long)
        if validate and bool(((y < 0) | (y >= self.num_classes)).any()):
            raise InputError(f"labels must be in [0, {self.num_classes - 1}], got values {y.unique().tolist()}")
        return y

    # ----------------------------------------------------------------- flow passes
    def _flow(
        self, x: torch.Tensor, y: torch.Tensor, per_position: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        """Padded images to latents; log-dets summed per image (one sum over the steps' terms)
        or kept per step as maps."""
        with self._weights_once():
            return self._steps(x, y, per_position)

    def _weights_once(self) -> contextlib.AbstractContextManager:
        """Weight-normalised convolutions (the authors' networks) compute their weight once per
        pass, not once per call of a shared network. Not with activation checkpointing, whose
        recomputation must save what the forward saved, nor in compiled networks."""
        uncached = self._compiled or any(step.coupling.checkpoint for step in self.steps)
        return contextlib.nullcontext() if uncached or not self._weight_normed else parametrize.cached()

    def _steps(
        self, x: torch.Tensor, y: torch.Tensor, per_position: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        latents: list[torch.Tensor] = []
        terms: list[torch.Tensor] = []
        h = x
        for i, step in enumerate(self.steps):
            if i in self.squeeze_before:
                h = squeeze(h)
            h, ld = step(h, y, per_position)
            terms.append(ld)
            if i in self.split_after:
                h, z = split(h)
                latents.append(z)
        latents.append(h)
        return latents, terms if per_position else torch.stack(terms).sum(0)

    def forward(self, x: torch.Tensor, y: torch.Tensor, validate: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Images ``(B, C, S, S)`` -> (latents as in :attr:`latent_shapes`, log|det J| per image).
        ``validate=False`` skips the value checks that wait for the device (see :meth:`prepare`)."""
        x = self.prepare(x, validate)
        y = self.check_labels(y, x.shape[0], validate)
        return self._flow(x, y, per_position=False)

    def inverse(self, latents: list[torch.Tensor], y: torch.Tensor, crop: bool = True) -> torch.Tensor:
        """Latents back to images, cropped to the image size unless ``crop`` is False."""
        shapes = self._latent_shapes
        if not isinstance(latents, (list, tuple)) or len(latents) != len(shapes):
            raise InputError(f"latents must be a list of {len(shapes)} tensors shaped {shapes} (per image)")
        batch = latents[0].shape[0] if isinstance(latents[0], torch.Tensor) else -1
        for z, shape in zip(latents, shapes):
            if not isinstance(z, torch.Tensor) or tuple(z.shape) != (batch, *shape):
                raise InputError(
                    f"latents must have shapes (B, *s) for s in {shapes}, got {[tuple(getattr(t, 'shape', ())) for t in latents]}"
                )
            if not bool(torch.isfinite(z).all()):
                raise InputError("latents contain NaN or infinite values")
        y = self.check_labels(y, batch)
        latents = [z.to(device=self._device(), dtype=self._dtype()) for z in latents]
        pending = list(latents[:-1])
        h = latents[-1]
        for i in reversed(range(len(self.steps))):
            if i in self.split_after:
                h = merge(h, pending.pop())
            h = self.steps[i].inverse(h, y)
            if i in self.squeeze_before:
                h = unsqueeze(h)
        return crop_image(h, self.pad_before, self.pad_after) if crop else h

    # ----------------------------------------------------------------- densities
    def log_prob(self, x: torch.Tensor, y: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """log p(x | y) in nats per image, shape (B,): the continuous density of the padded image."""
        latents, logdet = self.forward(x, y, validate)
        prior = sum(_normal_log_density(z).flatten(1).sum(1) for z in latents)
        return prior + logdet

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor, bin_width: float, validate: bool = True) -> torch.Tensor:
        """log P(x | y) in nats of the image quantised to bins of ``bin_width`` (a lower bound,
        see the module docstring): ``log_prob + num_dims * log(bin_width)``. Pass
        :meth:`dequantise` output for the standard single-sample estimate."""
        return self.log_prob(x, y, validate) + self.num_dims * math.log(bin_width)

    def bits_per_dim(self, x: torch.Tensor, y: torch.Tensor, bin_width: float) -> torch.Tensor:
        """``-log2 P(x | y)`` (:meth:`log_likelihood`) per image dimension (:attr:`image_dims`)."""
        return -self.log_likelihood(x, y, bin_width) / (self.image_dims * math.log(2))

    @torch.no_grad()
    def sample(self, y: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(B, C, image_size, image_size)`` drawn from p(x | y) at ``temperature``."""
        if not isinstance(y, torch.Tensor) or y.dim() != 1:
            raise InputError(f"labels must be a 1-D integer tensor, got {getattr(y, 'shape', type(y).__name__)}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise InputError(f"temperature must be a finite positive number, got {temperature}")
        batch = y.shape[0]
        latents = [
            temperature * torch.randn(batch, *s, generator=generator, device=self._device(), dtype=self._dtype())
            for s in self._latent_shapes
        ]
        return self.inverse(latents, y)

    def class_log_likelihoods(self, x: torch.Tensor, pairs_per_pass: int | None = None) -> torch.Tensor:
        """(B, K) log p(x | y=k) for every label: the B*K image-label pairs in batched passes of
        ``pairs_per_pass`` (default: all at once on a GPU, :data:`CPU_PAIRS_PER_PASS` on a CPU)."""
        x = self.prepare(x)
        batch, k = x.shape[0], self.num_classes
        images = x.repeat_interleave(k, dim=0)
        labels = torch.arange(k, device=x.device).repeat(batch)
        if pairs_per_pass is None:
            pairs_per_pass = CPU_PAIRS_PER_PASS if images.device.type == "cpu" else len(images)
        if pairs_per_pass < 1:
            raise InputError(f"pairs_per_pass must be at least 1, got {pairs_per_pass}")
        scores = []
        for start in range(0, len(images), pairs_per_pass):
            chunk = slice(start, start + pairs_per_pass)
            latents, logdet = self._flow(images[chunk], labels[chunk], per_position=False)
            scores.append(sum(_normal_log_density(z).flatten(1).sum(1) for z in latents) + logdet)
        return torch.cat(scores).view(batch, k)

    def predict_proba(self, x: torch.Tensor, log_prior: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Softmax over ``(log p(x|y) + log p(y)) / temperature``, shape (B, K)."""
        if not (math.isfinite(temperature) and temperature > 0):
            raise InputError(f"temperature must be a finite positive number, got {temperature}")
        scores = self.class_log_likelihoods(x)
        if log_prior is not None:
            if not isinstance(log_prior, torch.Tensor) or log_prior.shape != (self.num_classes,):
                raise InputError(f"log_prior must be a tensor of shape ({self.num_classes},)")
            if bool(torch.isnan(log_prior).any()) or bool(torch.isposinf(log_prior).any()):
                raise InputError("log_prior must not contain NaN or +inf")
            scores = scores + log_prior.to(scores)
        return torch.softmax(scores / temperature, dim=1)

    def _spread(self, m: torch.Tensor) -> torch.Tensor:
        """A per-position map of one scale onto the padded image grid: the total over channels
        at each position, shared evenly by the ``C x f x f`` input values that position came
        from (``f`` = the scale's downsampling). After a squeeze the 1x1 convolutions mix all
        channels of a position, so no single pixel owns a channel's term; placing channel
        ``4c + 2i + j`` on pixel ``(i, j)`` instead gave every map a fixed 8x8 pattern (from
        ActNorm's per-channel scales) and row stripes (from the split halves)."""
        factor = self.padded_size // m.shape[-1]
        total = m.sum(1, keepdim=True) / (self.in_channels * factor * factor)
        if factor > 1:
            total = total.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        return total.expand(-1, self.in_channels, -1, -1)

    def attribution(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Likelihood attribution map H(x, y), shaped like the (unpadded) input.

        Terms per position: coupling log-scales ``(1-M) s1 + M s2``, ActNorm log-scales, the
        1x1 convolution's log|det W| and the latents' Gaussian log-densities. Full-resolution
        terms stay on their pixel; each coarser scale's terms are spread over the block of
        pixels they came from (:meth:`_spread`), so a constant image gives a map without
        sub-block periodicity. The padded border is folded onto the nearest image pixel.
        ``H.sum()`` equals ``log_prob(x, y)`` per image. A 3-D ``x`` ``(C, S, S)`` with a
        1-element ``y`` gives a 3-D map."""
        single = isinstance(x, torch.Tensor) and x.dim() == 3
        if single:
            x = x[None]
        x = self.prepare(x)
        y = self.check_labels(y, x.shape[0])
        latents, maps = self._flow(x, y, per_position=True)
        h = sum(self._spread(m) for m in maps) + sum(self._spread(_normal_log_density(z)) for z in latents)
        h = fold_border(h, self.pad_before, self.pad_after)
        return h[0] if single else h

    # ----------------------------------------------------------------- speed settings
    def set_bf16(self, enabled: bool) -> None:
        """Run coupling networks under bfloat16 autocast; log-dets stay fp32."""
        for step in self.steps:
            step.coupling.bf16 = enabled

    def set_checkpointing(self, enabled: bool) -> None:
        """Recompute the coupling networks' activations in the backward pass instead of keeping
        them (``training.checkpointing``): the same gradients for less memory and one more forward
        pass of the networks."""
        for step in self.steps:
            step.coupling.checkpoint = enabled

    def set_channels_last(self, enabled: bool) -> None:
        """Run the coupling networks channels-last from their first spatial convolution (see
        :class:`magicflow.flow.nets.SpatialConv2d`): on CPU a `small` training step is about
        10 % faster; the training command turns it on for CPU runs."""
        store_channels_last(self, enabled)

    def compile_networks(self, **kwargs: Any) -> None:
        """``torch.compile`` each coupling network in place (``nn.Module.compile``: parameter
        names, and so checkpoints, stay as they are); flow bookkeeping stays eager.

        All networks of a kind share one ``forward``, and dynamo keeps at most
        ``recompile_limit`` (8) graphs per code object before falling back to eager: the limit
        is raised to cover every network's shape in training and in no-grad passes."""
        import torch._dynamo.config as dynamo_config

        self._compiled = True
        needed = 4 * len(self.steps) * 2  # two nets per step at most, train and no-grad, slack for eval
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, needed)
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4 * needed)
        for step in self.steps:
            coupling = step.coupling
            coupling.net_b.compile(**kwargs)
            if coupling.net_a is not None:
                coupling.net_a.compile(**kwargs)


def use_fast_cuda_kernels(tf32: bool = True) -> None:
    """TF32 matmuls and convolutions (10-bit mantissa inputs, fp32 accumulation) and cuDNN
    autotuning for fixed shapes: the GPU settings of training and ``magicflow bench``."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
