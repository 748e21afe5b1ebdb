"""Invertible building blocks of a flow step and the reshaping between scales.

Every invertible layer maps ``(x, y) -> (out, logdet)``. With ``per_position=True`` the
log-determinant comes back as a map shaped like ``x`` (one value per position) instead of a
per-image sum; the attribution map is assembled from those maps, so each layer decides here
how its Jacobian term is spread over positions."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class ActNorm(nn.Module):
    """Per-channel affine map ``(x + bias) * exp(log_scale)`` with data-dependent initialisation.

    The first ``init_images`` images seen in training mode set ``bias``/``log_scale`` so the
    output has zero mean and unit variance per channel. Statistics are accumulated in buffers
    and the parameters are selected with ``torch.where``: no ``.item()`` and no Python branch
    on tensor values, so forward never waits for the device. A Python count of the images
    seen mirrors the buffer, so once initialised forward stops accumulating altogether; after
    ``load_state_dict`` the first training forward reads the buffer once to re-learn it. The
    persistent ``initialized`` buffer travels with checkpoints, so a loaded model is never
    re-initialised."""

    def __init__(self, num_channels: int, init_images: int = 64, eps: float = 1e-6) -> None:
        super().__init__()
        if init_images < 1:
            raise ValueError(f"init_images must be >= 1, got {init_images}")
        self.init_images = init_images
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("images_seen", torch.zeros(()))
        self.register_buffer("stat_sum", torch.zeros(num_channels))
        self.register_buffer("stat_sumsq", torch.zeros(num_channels))
        self._seen: int | None = 0  # Python mirror of images_seen; None: unknown (after a load)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._seen = None

    def _still_initialising(self, batch: int) -> bool:
        """Whether this batch still contributes to the statistics (no device wait once known)."""
        if self._seen is None:  # one read of the buffer after a load
            self._seen = self.init_images if bool(self.initialized) else int(self.images_seen)
        still = self._seen < self.init_images
        self._seen = min(self.init_images, self._seen + batch)
        return still

    @torch.no_grad()
    def _accumulate(self, x: torch.Tensor) -> None:
        """Add the images of ``x`` still needed for initialisation; refresh the parameters."""
        batch = x.shape[0]
        index = torch.arange(batch, device=x.device, dtype=self.images_seen.dtype) + self.images_seen
        weight = (index < self.init_images).to(x.dtype)  # which images of this batch still count
        xd = x.detach()
        self.stat_sum += torch.einsum("b,bc->c", weight, xd.sum(dim=(2, 3)))
        self.stat_sumsq += torch.einsum("b,bc->c", weight, (xd * xd).sum(dim=(2, 3)))
        self.images_seen += weight.sum()
        count = self.images_seen.clamp_min(1.0) * (x.shape[2] * x.shape[3])
        mean = self.stat_sum / count
        var = (self.stat_sumsq / count - mean * mean).clamp_min(0.0)
        keep = self.initialized
        self.bias.copy_(torch.where(keep, self.bias, -mean.view_as(self.bias)))
        self.log_scale.copy_(torch.where(keep, self.log_scale, -0.5 * torch.log(var + self.eps).view_as(self.log_scale)))
        self.initialized.copy_(self.images_seen >= self.init_images)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, per_position: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and self._still_initialising(x.shape[0]):
            self._accumulate(x)
        out = (x + self.bias) * torch.exp(self.log_scale)
        if per_position:
            return out, self.log_scale.expand_as(x)
        return out, (self.log_scale.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    def inverse(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return z * torch.exp(-self.log_scale) - self.bias


class FirstBatchActNorm(nn.Module):
    """The authors' ActNorm: ``scale * x + bias``, initialised from the first batch it ever sees
    (in either direction and any mode) to ``scale = 1 / (std + 1e-6)``, ``bias = -mean`` with the
    unbiased per-channel std. Unlike :class:`ActNorm` its output then has unit variance but not
    zero mean (mean ``mean / std - mean``). The check runs on the host (a Python mirror of the
    persistent ``initialized`` buffer, read once after a load), so only the first call waits."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(1, num_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._ready: bool | None = False  # mirror of ``initialized``; None: unknown (after a load)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = None

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        if self._ready is None:
            self._ready = bool(self.initialized)
        if self._ready:
            return
        self.bias.copy_(-x.mean(dim=(0, 2, 3), keepdim=True))
        self.scale.copy_(1.0 / (x.std(dim=(0, 2, 3), keepdim=True) + self.eps))
        self.initialized.fill_(True)
        self._ready = True

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, per_position: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._ready:
            self._initialise(x)
        out = torch.addcmul(self.bias, x, self.scale)
        log_scale = torch.log(self.scale.abs())
        if per_position:
            return out, log_scale.expand_as(x)
        return out, (log_scale.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    def inverse(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not self._ready:
            self._initialise(z)
        return (z - self.bias) / self.scale


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution with the LU parameterisation of Glow.

    ``W = P L (U + diag(sign * exp(log_s)))``: the log-determinant is ``H W sum(log_s)`` with no
    ``slogdet``, and the inverse comes from two triangular solves. In eval mode the weight and
    its inverse are cached and recomputed when a parameter's version counter changes
    (``load_state_dict`` and in-place edits bump it) and whenever the module switches between
    train and eval mode: a fused Adam step updates the weights without bumping their version
    counters, so the version alone would leave validation on the weights of the first epoch.
    A training forward computes only ``W``: the inverse is never needed there."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(num_channels, num_channels))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(num_channels, num_channels), -1))
        self.register_buffer("upper_mask", self.lower_mask.T.clone(), persistent=False)
        self.register_buffer("eye", torch.eye(num_channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(diag.abs()))
        self._cache_key: tuple | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def train(self, mode: bool = True) -> InvConv1x1:
        self._cache = None  # weights may have changed without a version bump (fused optimisers)
        return super().train(mode)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.upper_mask + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def _compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self._factors()
        weight = self._weight()
        # W^-1 = U^-1 L^-1 P^T, by triangular solves rather than a general inverse
        l_inv_pt = torch.linalg.solve_triangular(lower, self.perm.T, upper=False, unitriangular=True)
        weight_inv = torch.linalg.solve_triangular(upper, l_inv_pt, upper=True)
        return weight, weight_inv

    def _weight(self) -> torch.Tensor:
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, W^-1)``; cached in eval mode when no gradient to the weights is needed."""
        needs_grad = torch.is_grad_enabled() and self.lower.requires_grad
        if self.training or needs_grad:
            self._cache = None
            return self._compute()
        params = (self.lower, self.upper, self.log_s, self.perm, self.sign_s)
        key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in params)
        if self._cache is None or key != self._cache_key:
            with torch.no_grad():
                self._cache = self._compute()
            self._cache_key = key
        return self._cache

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, per_position: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training or (torch.is_grad_enabled() and self.lower.requires_grad):
            weight = self._weight()  # training never needs the inverse
        else:
            weight = self.weights()[0]
        channels = x.shape[1]
        out = F.conv2d(x, weight.view(channels, channels, 1, 1))
        if per_position:
            # log|det W| per position, spread evenly over the channels at each pixel
            return out, (self.log_s.sum() / channels).expand_as(x)
        return out, (self.log_s.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    def inverse(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _, weight_inv = self.weights()
        channels = z.shape[1]
        return F.conv2d(z, weight_inv.view(channels, channels, 1, 1))


class FullInvConv1x1(nn.Module):
    """The authors' invertible 1x1 convolution: a full ``C x C`` weight (a random rotation at
    first), its log-determinant from ``slogdet`` and its inverse from ``torch.linalg.inv`` on
    every call (at most 16 x 16 in the flows here). :class:`InvConv1x1` is Glow's LU form of
    the same map."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(num_channels, num_channels))
        self.weight = nn.Parameter(q)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, per_position: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        channels = x.shape[1]
        out = F.conv2d(x, self.weight.view(channels, channels, 1, 1))
        log_det = torch.linalg.slogdet(self.weight)[1]
        if per_position:
            return out, (log_det / channels).expand_as(x)
        return out, (log_det * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    def inverse(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        channels = z.shape[1]
        return F.conv2d(z, torch.linalg.inv(self.weight).view(channels, channels, 1, 1))


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); channel ``4c + 2i + j`` holds pixel (2h+i, 2w+j) of c."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel halves ``(kept, factored_out)``: the first half continues through the flow."""
    half = x.shape[1] // 2
    return x[:, :half], x[:, half:]


def merge(kept: torch.Tensor, factored: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split`."""
    return torch.cat([kept, factored], dim=1)


def pad_amounts(size: int, multiple: int) -> tuple[int, int]:
    """Rows added before/after so ``size`` becomes the next multiple (182 -> 184 is 1 and 1)."""
    total = -size % multiple
    return total // 2, total - total // 2


def pad_image(x: torch.Tensor, before: int, after: int, value: float) -> torch.Tensor:
    """Pad the two spatial sides with the background ``value``."""
    if before == after == 0:
        return x
    return F.pad(x, (before, after, before, after), mode="constant", value=value)


def crop_image(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Remove the padding added by :func:`pad_image`."""
    h, w = x.shape[-2:]
    return x[..., before : h - after, before : w - after]


def fold_border(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Crop a per-position map and add every border value onto its nearest kept pixel.

    Border rows/columns of the padded grid carry part of the log-likelihood (the model sees
    the padded image); folding them onto the adjacent edge pixels keeps the map's sum equal to
    the full sum while returning it at the image size."""
    if before == after == 0:
        return x
    h, w = x.shape[-2:]
    out_h, out_w = h - before - after, w - before - after
    rows = (torch.arange(h, device=x.device) - before).clamp(0, out_h - 1)
    cols = (torch.arange(w, device=x.device) - before).clamp(0, out_w - 1)
    folded = x.new_zeros(*x.shape[:-2], out_h, w).index_add_(x.dim() - 2, rows, x)
    return x.new_zeros(*x.shape[:-2], out_h, out_w).index_add_(x.dim() - 1, cols, folded)
