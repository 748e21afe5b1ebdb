"""A DUAL-GLOW style dual conditional flow for MRI-to-PET translation (Sun et al. 2019, section 3).

Two unconditional :class:`~magicflow.flow.MagicFlow` instances map the source image (MRI)
to latents ``z`` and the target image (PET) to latents ``w``, level by level (finest first,
as :attr:`MagicFlow.latent_shapes` orders them). A small CNN per level (the relation network)
maps ``z_l`` to the mean and log standard deviation of ``w_l``, so

``log p(x_tgt | x_src) = sum_l log N(w_l; mu_l(z_l), sigma_l(z_l)) + log|det dw/dx_tgt|``:

the source's Jacobian cancels because the joint Jacobian is block diagonal (the paper's
eqs. 8-11). Training maximises that plus ``lambda log p(x_src)`` (eq. 12, lambda = 0.001), a
regulariser that keeps the source latents near N(0, I).

Side information ``c`` (a one-hot class or a standardised age) enters only the top level's
relation network (eqs. 16-17), since a subject-level attribute acts on the coarsest scale.
Optional discriminators on the spatially averaged latents push ``c`` out of the source's
lower levels through gradient reversal and keep it in both flows' top latents.

Densities are continuous densities of the padded images, exactly as :meth:`MagicFlow.log_prob`
defines them; ``objective`` expects images already dequantised and padded
(:meth:`DualFlow.dequantise`)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from magicflow.errors import InputError
from magicflow.flow.model import _LOG_2PI, MagicFlow, _normal_log_density, validate_model_config
from magicflow.flow.blocks import SpatialConv2d, head_conv, store_channels_last

#: |log sigma| of the conditional stays below this (soft, ``bound * tanh(raw / bound)``): sigma in
#: [e^-5, e^5] = [0.0067, 148]. A paired target that is a deterministic function of the source
#: would otherwise drive sigma to 0 and the likelihood to +inf; the bound caps each latent's
#: density at 5 - 0.92 nats while keeping the gradient 1 near the zero start.
LOG_SIGMA_BOUND = 5.0
SIDE_KINDS = ("categorical", "continuous")
FORMAT = "magicflow.flow.dual/1"
_CONFIG_KEYS = ("source", "target", "side_dim", "side_kind", "relation_width", "discriminators", "reversal_scale")


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale`` (Ganin & Lempitsky
    2015): a discriminator behind it learns to predict the side information while the layers
    before it are pushed to make that prediction fail."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, with its gradient negated and scaled by ``scale`` on the way back."""
    return GradientReversal.apply(x, scale)


class RelationNet(nn.Module):
    """Source latent ``(B, Cs, H, W)`` (plus ``side_dim`` broadcast side maps) -> ``(mu,
    log_sigma)``, each ``(B, Ct, H, W)``. The last convolution starts at zero, so the untrained
    conditional is exactly N(0, I) and the target flow starts as its own unconditional model."""

    def __init__(self, in_channels: int, out_channels: int, width: int, side_dim: int = 0) -> None:
        super().__init__()
        self.side_dim = side_dim
        self.body = nn.Sequential(
            SpatialConv2d(in_channels + side_dim, width, 3, padding=1),
            nn.GELU(),
            SpatialConv2d(width, width, 3, padding=1),
            nn.GELU(),
            head_conv(width, 2 * out_channels),
        )

    def forward(self, z: torch.Tensor, side: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.side_dim:
            z = torch.cat([z, side[:, :, None, None].expand(-1, -1, *z.shape[2:])], dim=1)
        mu, raw = self.body(z).chunk(2, dim=1)
        return mu, LOG_SIGMA_BOUND * torch.tanh(raw / LOG_SIGMA_BOUND)


def _head(channels: int, width: int, out: int) -> nn.Module:
    """Discriminator on a spatially averaged latent ``(B, C)`` -> side logits or values."""
    return nn.Sequential(nn.Linear(channels, width), nn.GELU(), nn.Linear(width, out))


def _gaussian_log_density(w: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(w; mu, exp(log_sigma)^2)."""
    u = (w - mu) * torch.exp(-log_sigma)
    return -0.5 * (u * u + _LOG_2PI) - log_sigma


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if temperature < 0:
        raise InputError(f"temperature must be >= 0, got {temperature}")
    return float(temperature)


class DualFlow(nn.Module):
    """Conditional flow p(x_tgt | x_src, side) from two unconditional MagicFlows and per-level
    relation networks (see the module docstring).

    ``source_config``/``target_config`` are MagicFlow configs with ``num_classes == 1``; their
    latents must have the same levels and spatial sizes (channels may differ). ``side_dim > 0``
    makes ``side`` (a float ``(B, side_dim)`` tensor: one-hot rows for ``side_kind
    "categorical"``, standardised values for ``"continuous"``) a required input of the top
    relation network. ``discriminators`` (needs ``side_dim > 0``) adds the side heads of
    :meth:`side_loss`, the lower source ones behind a gradient reversal of ``reversal_scale``.
    ``mask`` is the application (brain) mask, given to both flows.

    Modules: ``source``/``target`` (the flows), ``relation_nets`` (one per level, finest first),
    ``source_heads`` (one per source level, the last on the top latent without reversal) and
    ``target_head`` (the target's top latent), both None without discriminators."""

    def __init__(
        self,
        source_config: dict[str, Any],
        target_config: dict[str, Any],
        side_dim: int = 0,
        side_kind: str = "categorical",
        relation_width: int = 32,
        discriminators: bool = False,
        mask: torch.Tensor | None = None,
        reversal_scale: float = 1.0,
    ) -> None:
        super().__init__()
        for name, cfg in (("source", source_config), ("target", target_config)):
            try:
                validate_model_config(cfg)
            except InputError as error:
                raise InputError(f"{name} config: {error}") from None
            if cfg["num_classes"] != 1:
                raise InputError(
                    f"{name} config: num_classes must be 1 (the dual flow's flows are unconditional), got {cfg['num_classes']}"
                )
        if isinstance(side_dim, bool) or not isinstance(side_dim, int) or side_dim < 0:
            raise InputError(f"side_dim must be an int >= 0, got {side_dim!r}")
        if side_kind not in SIDE_KINDS:
            raise InputError(f"side_kind must be one of {SIDE_KINDS}, got {side_kind!r}")
        if isinstance(relation_width, bool) or not isinstance(relation_width, int) or relation_width < 1:
            raise InputError(f"relation_width must be an int >= 1, got {relation_width!r}")
        if not isinstance(discriminators, bool):
            raise InputError(f"discriminators must be a bool, got {discriminators!r}")
        if discriminators and side_dim == 0:
            raise InputError("discriminators need side information (side_dim > 0)")
        if (
            isinstance(reversal_scale, bool)
            or not isinstance(reversal_scale, (int, float))
            or not math.isfinite(reversal_scale)
            or reversal_scale < 0
        ):
            raise InputError(f"reversal_scale must be a finite number >= 0, got {reversal_scale!r}")
        self.source = MagicFlow(source_config, mask=mask)
        self.target = MagicFlow(target_config, mask=mask)
        self._mask = None if mask is None else mask.detach().float().cpu().clone()  # as given, for checkpoints
        src, tgt = self.source.latent_shapes, self.target.latent_shapes
        if len(src) != len(tgt) or any(s[1:] != t[1:] for s, t in zip(src, tgt)):
            raise InputError(
                f"source and target latents must have the same levels and spatial sizes (channels may differ): "
                f"source {src}, target {tgt}"
            )
        self.side_dim = side_dim
        self.side_kind = side_kind
        self.relation_width = relation_width
        self.reversal_scale = float(reversal_scale)
        top = len(src) - 1
        self.relation_nets = nn.ModuleList(
            RelationNet(s[0], t[0], relation_width, side_dim if level == top else 0) for level, (s, t) in enumerate(zip(src, tgt))
        )
        if discriminators:
            self.source_heads: nn.ModuleList | None = nn.ModuleList(_head(s[0], relation_width, side_dim) for s in src)
            self.target_head: nn.Module | None = _head(tgt[-1][0], relation_width, side_dim)
        else:
            self.source_heads = self.target_head = None

    # ----------------------------------------------------------------- configuration
    @property
    def config(self) -> dict[str, Any]:
        """Everything :meth:`from_config` needs to rebuild the model (the mask aside), JSON-able."""
        return {
            "source": copy.deepcopy(self.source.config),
            "target": copy.deepcopy(self.target.config),
            "side_dim": self.side_dim,
            "side_kind": self.side_kind,
            "relation_width": self.relation_width,
            "discriminators": self.source_heads is not None,
            "reversal_scale": self.reversal_scale,
        }

    def to_config(self) -> dict[str, Any]:
        return self.config

    @classmethod
    def from_config(cls, cfg: dict[str, Any], mask: torch.Tensor | None = None) -> DualFlow:
        if not isinstance(cfg, dict) or set(cfg) != set(_CONFIG_KEYS):
            got = sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__
            raise InputError(f"dual flow config must be a dict with keys {sorted(_CONFIG_KEYS)}, got {got}")
        return cls(
            cfg["source"],
            cfg["target"],
            cfg["side_dim"],
            cfg["side_kind"],
            cfg["relation_width"],
            cfg["discriminators"],
            mask,
            cfg["reversal_scale"],
        )

    @property
    def num_dims(self) -> int:
        """The target's padded dimensions (its density's support)."""
        return self.target.num_dims

    @property
    def image_dims(self) -> int:
        """The target image's own dimensions: what per-dimension losses divide by."""
        return self.target.image_dims

    def set_channels_last(self, enabled: bool) -> None:
        """Channels-last spatial convolutions (:meth:`MagicFlow.set_channels_last`) in both flows
        and the relation networks."""
        self.source.set_channels_last(enabled)
        self.target.set_channels_last(enabled)
        store_channels_last(self.relation_nets, enabled)

    # ----------------------------------------------------------------- input checks
    def check_side(self, side: torch.Tensor | None, batch: int, validate: bool = True) -> torch.Tensor | None:
        """Side information ``(batch, side_dim)`` on the model's device and dtype, or None when
        ``side_dim == 0``. Values (finite; one-hot rows when categorical) only if ``validate``."""
        if self.side_dim == 0:
            if side is not None:
                raise InputError("this dual flow takes no side information (side_dim=0), but side was given")
            return None
        expected = f"a float tensor of shape ({batch}, {self.side_dim})" + (
            " with one-hot rows" if self.side_kind == "categorical" else " of standardised values"
        )
        if side is None:
            raise InputError(f"side information is required (side_dim={self.side_dim}): {expected}")
        if not isinstance(side, torch.Tensor) or not side.is_floating_point() or tuple(side.shape) != (batch, self.side_dim):
            got = f"{side.dtype} {tuple(side.shape)}" if isinstance(side, torch.Tensor) else type(side).__name__
            raise InputError(f"side must be {expected}, got {got}")
        side = side.to(device=self.source._device(), dtype=self.source._dtype())
        if validate:
            if not bool(torch.isfinite(side).all()):
                raise InputError("side contains NaN or infinite values")
            if self.side_kind == "categorical" and not bool((((side == 0) | (side == 1)).all(1) & (side.sum(1) == 1)).all()):
                raise InputError("categorical side must have one-hot rows (a single 1, the rest 0)")
        return side

    def _labels(self, flow: MagicFlow, batch: int, validate: bool) -> torch.Tensor:
        return flow.check_labels(torch.zeros(batch, dtype=torch.long, device=flow._device()), batch, validate)

    def _source_latents(
        self, x_src: torch.Tensor, side: torch.Tensor | None, validate: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        x = self.source.prepare(x_src, validate)
        side = self.check_side(side, x.shape[0], validate)
        latents, logdet = self.source._flow(x, self._labels(self.source, x.shape[0], validate), per_position=False)
        return latents, logdet, side

    def _encode(self, x_src: torch.Tensor, x_tgt: torch.Tensor, side: torch.Tensor | None, validate: bool) -> tuple:
        """Both flows' latents and log-dets, with the checked side."""
        x_t = self.target.prepare(x_tgt, validate)
        zs, ld_s, side = self._source_latents(x_src, side, validate)
        if x_t.shape[0] != zs[0].shape[0]:
            raise InputError(f"source and target batches differ: {zs[0].shape[0]} and {x_t.shape[0]} images")
        ws, ld_t = self.target._flow(x_t, self._labels(self.target, x_t.shape[0], validate), per_position=False)
        return zs, ld_s, ws, ld_t, side

    # ----------------------------------------------------------------- densities
    def relation(self, latents: list[torch.Tensor], side: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level ``(mu_l, log_sigma_l)`` of the target latents given source ``latents``
        (as the source flow returns them); ``side`` reaches the top level only."""
        shapes = self.source.latent_shapes
        if not isinstance(latents, (list, tuple)) or len(latents) != len(shapes):
            raise InputError(f"source latents must be a list of {len(shapes)} tensors shaped (B, *s) for s in {shapes}")
        batch = latents[0].shape[0] if isinstance(latents[0], torch.Tensor) else -1
        if any(not isinstance(z, torch.Tensor) or tuple(z.shape) != (batch, *s) for z, s in zip(latents, shapes)):
            got = [tuple(getattr(z, "shape", ())) for z in latents]
            raise InputError(f"source latents must have shapes (B, *s) for s in {shapes}, got {got}")
        side = self.check_side(side, batch)
        return self._relation(latents, side)

    def _relation(self, latents: list[torch.Tensor], side: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        top = len(latents) - 1
        return [net(z, side if level == top else None) for level, (net, z) in enumerate(zip(self.relation_nets, latents))]

    def _log_probs(self, zs: list, ld_s: torch.Tensor, ws: list, ld_t: torch.Tensor, side: torch.Tensor | None) -> tuple:
        cond = ld_t + sum(
            _gaussian_log_density(w, mu, log_sigma).flatten(1).sum(1) for w, (mu, log_sigma) in zip(ws, self._relation(zs, side))
        )
        source = ld_s + sum(_normal_log_density(z).flatten(1).sum(1) for z in zs)
        return cond, source

    def log_prob(
        self, x_src: torch.Tensor, x_tgt: torch.Tensor, side: torch.Tensor | None = None, validate: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x_tgt | x_src, side), log p(x_src))`` in nats per image pair, each ``(B,)``:
        continuous densities of the padded images (:meth:`MagicFlow.log_prob`). ``validate=False``
        skips the value checks that wait for the device (see :meth:`MagicFlow.prepare`)."""
        zs, ld_s, ws, ld_t, side = self._encode(x_src, x_tgt, side, validate)
        return self._log_probs(zs, ld_s, ws, ld_t, side)

    def _side_loss(self, zs: list[torch.Tensor], ws: list[torch.Tensor], side: torch.Tensor | None) -> torch.Tensor:
        """Summed loss of the side heads on spatially averaged latents (0 without heads)."""
        if self.source_heads is None:
            return zs[0].new_zeros(())
        pooled = [z.mean(dim=(2, 3)) for z in zs]
        outputs = [head(reverse_gradient(p, self.reversal_scale)) for head, p in zip(self.source_heads[:-1], pooled[:-1])]
        outputs += [self.source_heads[-1](pooled[-1]), self.target_head(ws[-1].mean(dim=(2, 3)))]
        if self.side_kind == "categorical":
            classes = side.argmax(dim=1)
            return sum(F.cross_entropy(out, classes) for out in outputs)
        return sum(F.mse_loss(out, side) for out in outputs)

    def side_loss(
        self, x_src: torch.Tensor, x_tgt: torch.Tensor, side: torch.Tensor | None = None, validate: bool = True
    ) -> torch.Tensor:
        """Summed cross-entropy (categorical) or MSE (continuous) of the discriminators, a scalar:
        the heads on the source's lower levels sit behind gradient reversal (side information
        is pushed out of them), those on both flows' top latents do not (it is kept there).
        0 when the model has no discriminators."""
        zs, _, ws, _, side = self._encode(x_src, x_tgt, side, validate)
        return self._side_loss(zs, ws, side)

    def objective(
        self,
        x_src: torch.Tensor,
        x_tgt: torch.Tensor,
        side: torch.Tensor | None = None,
        source_weight: float = 0.001,
        side_weight: float = 0.01,
        validate: bool = True,
    ) -> dict[str, torch.Tensor]:
        """What training minimises, batch means per target image dimension (:attr:`image_dims`):
        ``loss = cond_nll + source_weight * source_nll + side_weight * side_loss`` with
        DUAL-GLOW's lambda (0.001) and classification weight (0.01) as defaults. Inputs are
        dequantised and padded already (:meth:`dequantise`); one pass through each flow."""
        zs, ld_s, ws, ld_t, side = self._encode(x_src, x_tgt, side, validate)
        cond, source = self._log_probs(zs, ld_s, ws, ld_t, side)
        cond_nll = -cond.mean() / self.image_dims
        source_nll = -source.mean() / self.image_dims
        side_loss = self._side_loss(zs, ws, side)
        loss = cond_nll + source_weight * source_nll + side_weight * side_loss
        return {"loss": loss, "cond_nll": cond_nll, "source_nll": source_nll, "side_loss": side_loss}

    def dequantise(
        self,
        x_src: torch.Tensor,
        x_tgt: torch.Tensor,
        bin_width: float,
        generator: torch.Generator | None = None,
        validate: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both images padded and dequantised (:meth:`MagicFlow.dequantise`), source noise first."""
        if (
            isinstance(bin_width, bool)
            or not isinstance(bin_width, (int, float))
            or not (math.isfinite(bin_width) and bin_width > 0)
        ):
            raise InputError(f"bin_width must be a finite positive number, got {bin_width!r}")
        return (
            self.source.dequantise(x_src, bin_width, generator, validate),
            self.target.dequantise(x_tgt, bin_width, generator, validate),
        )

    # ----------------------------------------------------------------- generation
    def _draw(
        self, params: list[tuple[torch.Tensor, torch.Tensor]], temperature: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Target images from latents ``mu + temperature sigma eps``; no RNG at temperature 0."""
        if temperature == 0:
            latents = [mu for mu, _ in params]
        else:
            latents = []
            for mu, log_sigma in params:
                device = generator.device if generator is not None else mu.device
                eps = torch.randn(mu.shape, generator=generator, device=device, dtype=mu.dtype).to(mu.device)
                latents.append(mu + temperature * torch.exp(log_sigma) * eps)
        return self.target.inverse(latents, self._labels(self.target, params[0][0].shape[0], True))

    @torch.no_grad()
    def translate(
        self,
        x_src: torch.Tensor,
        side: torch.Tensor | None = None,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Target images ``(B, C, image_size, image_size)`` for source images: temperature 0
        inverts the conditional mean (the mode in latent space), deterministically. Call
        ``.eval()`` first (ActNorm initialisation and dropout act in train mode)."""
        temperature = _check_temperature(temperature)
        zs, _, side = self._source_latents(x_src, side, True)
        return self._draw(self._relation(zs, side), temperature, generator)

    @torch.no_grad()
    def sample(
        self,
        x_src: torch.Tensor,
        n: int,
        side: torch.Tensor | None = None,
        temperature: float = 0.7,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` draws of the target per source image, ``(B, n, C, S, S)``; the source pass and
        relation networks run once, the target inverse once per draw (memory of one batch)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n (samples per image) must be an int >= 1, got {n!r}")
        temperature = _check_temperature(temperature)
        zs, _, side = self._source_latents(x_src, side, True)
        params = self._relation(zs, side)
        return torch.stack([self._draw(params, temperature, generator) for _ in range(n)], dim=1)

    @staticmethod
    def uncertainty(samples: torch.Tensor) -> torch.Tensor:
        """Voxel-wise standard deviation over the draws of :meth:`sample` (``(B, n, C, S, S)``,
        n >= 2) -> ``(B, C, S, S)``; the sample estimate (divides by n - 1)."""
        if not isinstance(samples, torch.Tensor) or samples.dim() != 5 or not samples.is_floating_point():
            raise InputError(
                f"samples must be a float tensor (B, n, C, S, S), got {getattr(samples, 'shape', type(samples).__name__)}"
            )
        if samples.shape[1] < 2:
            raise InputError(f"a standard deviation needs at least 2 samples per image, got {samples.shape[1]}")
        return samples.std(dim=1, correction=1)
