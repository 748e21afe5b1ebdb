"""Building blocks of the coupling networks (:mod:`magicflow.flow.nets`).

Two families. The authors' blocks, as their notebooks build them (luca2245/MAGIC-Flow,
``coupling_layer_gen.ipynb`` and ``coupling_layer_cls.ipynb``): :class:`CBAM` and
:class:`ResBlock` with their settings, :class:`ChannelGate`, :class:`PooledFusion`,
:class:`AuthorsASPP`, :class:`ResidualLabelEmbedding`, :class:`OneHotEmbedding`. This project's
variants, which the ``paper`` preset's ``refinements`` swap in one by one: :class:`CBAM` and
:class:`ResBlock` with their defaults, :class:`GlobalContext`, :class:`GlobalFusion`,
:class:`ASPPSE`, :class:`LabelEmbedding` (magicflow/flow/README.md lists each difference and
what it measured)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize


def norm_groups(channels: int, authors: bool = False) -> int:
    """GroupNorm's group count: the largest of (8, 4, 2, 1) dividing ``channels``, or the
    authors' rule, ``min(8, channels)`` lowered until it divides (the same for every width a
    preset uses: powers of two)."""
    if authors:
        groups = min(8, channels)
        while channels % groups:
            groups -= 1
        return groups
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class SpatialConv2d(nn.Conv2d):
    """A k x k convolution (k > 1) whose weight :meth:`magicflow.flow.MagicFlow.set_channels_last`
    may store channels-last.

    On CPU, oneDNN's channels-first backward for few channels at full resolution is the
    bottleneck of a training step (a 4 -> 4 channel 3x3 convolution with its GroupNorm over
    8 x 184 x 184: 41 ms forward and backward, 13 ms in channels-last). A convolution whose
    weight is channels-last computes and returns channels-last, and element-wise layers and
    GroupNorm keep that layout, so the network runs channels-last from its first convolution
    without a single conversion: the earlier copies into and out of channels-last around every
    convolution were 650 of a `small` step's operations, and the step is 10 % faster without
    them (magicflow/flow/README.md, "Operations per step"). Results agree to rounding."""


def store_channels_last(module: nn.Module, enabled: bool) -> None:
    """Store the weight of every :class:`SpatialConv2d` under ``module`` channels-last (or
    contiguous): a weight-normalised one keeps its direction ``v`` that way, so the weight
    computed from it each call is channels-last too."""
    layout = torch.channels_last if enabled else torch.contiguous_format
    for conv in module.modules():
        if isinstance(conv, SpatialConv2d):
            weight = conv.parametrizations.weight.original1 if parametrize.is_parametrized(conv, "weight") else conv.weight
            weight.data = weight.data.contiguous(memory_format=layout)


def head_conv(cin: int, cout: int, kernel: int = 3, zero: bool = True) -> nn.Conv2d:
    """A k x k output convolution, zero-initialised (its coupling starts as the identity) or with
    PyTorch's default initialisation (the authors' heads)."""
    conv = SpatialConv2d(cin, cout, kernel, padding=kernel // 2)
    if zero:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


def wn_conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    """Weight-normalised k x k convolution, as the authors' stage convolutions: the weight's
    direction and length are learned apart, which steadies the first steps of training."""
    conv = SpatialConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    return nn.utils.parametrizations.weight_norm(conv)


class Conditioning(NamedTuple):
    """What a coupling network derives from the labels alone: the label embedding ``(B, E)``
    and, per FiLM layer (by its ``slot``), its multiplier (``gamma``, or ``1 + gamma`` in the
    project's FiLM) and its shift ``beta``, each ``(B, C, 1, 1)``."""

    emb: torch.Tensor
    films: tuple[tuple[torch.Tensor, torch.Tensor], ...]


class FiLM(nn.Module):
    """Feature-wise affine modulation ``x * scale(e) + beta(e)`` from a label embedding: the
    authors' ``gamma(e) * x + beta(e)`` or the project's ``x * (1 + gamma(e)) + beta(e)``.

    The projection ``e -> (gamma, beta)`` of every FiLM layer of a network is one linear layer
    of the network (:meth:`magicflow.flow.nets.CouplingNet.condition`); this layer only applies
    its ``slot``'s pair."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.slot = -1  # set by the owning CouplingNet

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        scale, shift = cond.films[self.slot]
        return torch.addcmul(shift, x, scale)


class FlowBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d (the authors' generation residual blocks) that leaves its running statistics
    alone while activation checkpointing recomputes a forward pass (:func:`recomputing`): the
    recomputation normalises with the same batch statistics, and the running averages move
    once per real forward pass, as without checkpointing."""

    recomputing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and FlowBatchNorm.recomputing:  # update copies: the same saved tensors, the buffers unmoved
            mean, var = self.running_mean.clone(), self.running_var.clone()
            return F.batch_norm(x, mean, var, self.weight, self.bias, True, self.momentum, self.eps)
        return super().forward(x)


@contextlib.contextmanager
def recomputing() -> Iterator[None]:
    """Context of an activation-checkpointing recomputation (see :class:`FlowBatchNorm`)."""
    previous, FlowBatchNorm.recomputing = FlowBatchNorm.recomputing, True
    try:
        yield
    finally:
        FlowBatchNorm.recomputing = previous


def _pooled_mlp(channels: int, hidden: int, activation: str, bias: bool = True) -> nn.Sequential:
    """An MLP on pooled ``(N, C, 1, 1)`` features as two 1x1 convolutions: one operation each way,
    where a linear layer on ``(N, C)`` costs a transpose, a matrix product and views (a training
    step of ``small`` counted 1,100 more operations with linear layers here)."""
    act = nn.GELU() if activation == "gelu" else nn.ReLU()
    return nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=bias), act, nn.Conv2d(hidden, channels, 1, bias=bias))


class CBAM(nn.Module):
    """Channel attention (shared MLP on average and max pooling) then spatial attention.

    The project's defaults (reduction 4, GELU, biases) or the authors' (``reduction=16``,
    ``activation="relu"``, ``bias=False``). The shared MLP runs once on both pooled vectors
    stacked along the batch (one pass instead of two: the same values, half the operations)."""

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 7, activation: str = "gelu", bias: bool = True) -> None:
        super().__init__()
        self.mlp = _pooled_mlp(channels, max(channels // reduction, 1), activation, bias)
        self.spatial = SpatialConv2d(2, 1, kernel, padding=kernel // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)])
        avg, mx = self.mlp(pooled).chunk(2)
        x = x * torch.sigmoid(avg + mx)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class ChannelGate(nn.Module):
    """The authors' global context block, squeeze-and-excitation style: ``x * w + x`` with
    ``w = sigmoid(MLP(mean over positions))``, the MLP ``C -> C/16 -> C`` with ReLU and no biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = _pooled_mlp(channels, max(channels // reduction, 1), "relu", bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, x, torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True))))


class GlobalContext(nn.Module):
    """GCNet block: attention-pooled context, transformed and added at every position."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 2)  # LayerNorm over one feature would erase it
        self.key = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(nn.Linear(channels, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = torch.softmax(self.key(x).view(b, 1, h * w), dim=-1)
        context = torch.bmm(x.view(b, c, h * w), weights.transpose(1, 2)).view(b, c)
        return x + self.transform(context).view(b, c, 1, 1)


class PooledFusion(nn.Module):
    """The authors' global feature fusion: the image-wide mean feature through an MLP
    ``C -> 128 -> C`` (GELU), added at every position."""

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = _pooled_mlp(channels, hidden, "gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x.mean(dim=(2, 3), keepdim=True))


class GlobalFusion(nn.Module):
    """Global feature fusion: the image-wide mean feature, projected, is concatenated to every
    position and fused back by a 1x1 convolution (residual), so each position sees the whole map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels, channels, 1)
        self.fuse = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.gelu(self.project(F.adaptive_avg_pool2d(x, 1))).expand_as(x)
        return x + self.fuse(torch.cat([x, g], dim=1))


class SqueezeExcite(nn.Module):
    """Channel re-weighting ``x * sigmoid(MLP(mean over positions))``; the MLP
    ``C -> C/reduction -> C`` with biases, GELU (the project's) or ReLU (the authors')."""

    def __init__(self, channels: int, reduction: int = 4, activation: str = "gelu") -> None:
        super().__init__()
        mlp = _pooled_mlp(channels, max(channels // reduction, 1), activation)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), *mlp, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def centre_only(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; a dilated 3x3 convolution whose dilation reaches past the map in both
    directions sees only zero padding with its eight outer taps, so it is computed as the 1x1
    convolution of its centre tap: the same values (the outer taps added exact zeros) and the
    same gradients (theirs are exactly zero), at a ninth of the work. At 64x64 images this is
    every dilation-12 and -18 branch at the two coarsest scales."""
    dilation = conv.dilation[0]
    if conv.kernel_size != (3, 3) or conv.padding[0] != dilation or dilation < max(x.shape[2], x.shape[3]):
        return conv(x)
    return F.conv2d(x, conv.weight[:, :, 1:2, 1:2], conv.bias)


def _atrous(cin: int, branch: int, dilations: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList([nn.Conv2d(cin, branch, 1)] + [SpatialConv2d(cin, branch, 3, padding=d, dilation=d) for d in dilations])


class AuthorsASPP(nn.Module):
    """The authors' ASPP-SE: four full-width branches (1x1 and 3x3 at dilations 6/12/18),
    concatenated, re-weighted by squeeze-and-excitation on the ``4C`` channels (reduction 16,
    ReLU), then a 1x1 convolution back to ``C``; no normalisation, no activation."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (6, 12, 18), reduction: int = 16) -> None:
        super().__init__()
        self.branches = _atrous(channels, channels, dilations)
        total = channels * (len(dilations) + 1)
        self.se = SqueezeExcite(total, reduction, activation="relu")
        self.out = nn.Conv2d(total, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.se(torch.cat([centre_only(conv, x) for conv in self.branches], dim=1)))


class ASPPSE(nn.Module):
    """The project's ASPP-SE: atrous branches (1x1 and dilations 6/12/18) plus an image-pooling
    branch, fused by a 1x1 convolution with GroupNorm and GELU, then squeeze-and-excitation.

    ``branch`` channels per branch: a quarter of ``cout`` in the compact networks, ``cout``
    (full width) in :class:`magicflow.flow.nets.AuthorsGenerationNet`."""

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...] = (6, 12, 18), branch: int | None = None) -> None:
        super().__init__()
        branch = branch or max(cout // 4, 4)
        self.branches = _atrous(cin, branch, dilations)
        self.pool = nn.Conv2d(cin, branch, 1)
        total = branch * (len(dilations) + 2)
        self.fuse = nn.Sequential(nn.Conv2d(total, cout, 1), nn.GroupNorm(norm_groups(cout), cout), nn.GELU())
        self.se = SqueezeExcite(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [centre_only(conv, x) for conv in self.branches]
        feats.append(self.pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[2:]))
        return self.se(self.fuse(torch.cat(feats, dim=1)))


class ResBlock(nn.Module):
    """Two 3x3 convolutions, each normalised and (with ``embed_dim``) FiLM-modulated, and a skip
    (projected when the widths differ). The project's (``authors=None``): GroupNorm, default
    initialisation. The authors' (``authors`` their norm): ``"batch"`` in generation
    (:class:`FlowBatchNorm`), ``"group"`` (their group rule) in classification, and He-normal
    (fan-out) initialisation of both convolutions."""

    def __init__(self, cin: int, cout: int, embed_dim: int | None, authors: str | None = None) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return FlowBatchNorm(cout) if authors == "batch" else nn.GroupNorm(norm_groups(cout, authors is not None), cout)

        self.conv1 = SpatialConv2d(cin, cout, 3, padding=1)
        self.norm1 = norm()
        self.conv2 = SpatialConv2d(cout, cout, 3, padding=1)
        self.norm2 = norm()
        if authors is not None:
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.film1 = FiLM(cout) if embed_dim else None
        self.film2 = FiLM(cout) if embed_dim else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        h = self.norm1(self.conv1(x))
        h = F.gelu(self.film1(h, cond) if self.film1 else h)
        h = self.norm2(self.conv2(h))
        h = self.film2(h, cond) if self.film2 else h
        return F.gelu(h + self.skip(x))


def _one_hot_linear(linear: nn.Linear, y: torch.Tensor) -> torch.Tensor:
    """``linear(one_hot(y))`` as what it is, a column lookup plus bias (the same values;
    ``F.one_hot`` reads the labels' range on the host, a device wait on every call)."""
    return F.embedding(y, linear.weight.t()) + linear.bias


class OneHotEmbedding(nn.Module):
    """The authors' generation label embedding: ``GELU(Linear(one_hot(y)))``."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(num_classes, embed_dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.gelu(_one_hot_linear(self.linear, y))


class ResidualLabelEmbedding(nn.Module):
    """The authors' classification label embedding: one-hot ``K -> 16 -> 32 -> 64 -> E``, GELU
    after every layer, the middle two with learned residual projections (16 -> 32, 32 -> 64)."""

    def __init__(self, num_classes: int, embed_dim: int, hidden: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        h1, h2, h3 = hidden
        self.fc1, self.fc2, self.fc3, self.fc4 = (
            nn.Linear(num_classes, h1),
            nn.Linear(h1, h2),
            nn.Linear(h2, h3),
            nn.Linear(h3, embed_dim),
        )
        self.proj1, self.proj2 = nn.Linear(h1, h2), nn.Linear(h2, h3)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        o1 = F.gelu(_one_hot_linear(self.fc1, y))
        o2 = F.gelu(self.fc2(o1) + self.proj1(o1))
        o3 = F.gelu(self.fc3(o2) + self.proj2(o2))
        return F.gelu(self.fc4(o3))


class LabelEmbedding(nn.Module):
    """Embedding refined by a residual MLP, so label features can grow beyond a lookup."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(num_classes, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        e = self.table(y)
        return e + self.mlp(e)


class DenseHead(nn.Module):
    """The authors' dense head: flattened features -> 64, label embedding -> 64, concatenated
    -> one value per position of the ``(C, H, W)`` half. Its last layer holds almost all of the
    classification coupling's parameters (about 151.6 M over 24 steps at 182x182). ``zero``:
    the last layer starts at zero (the project's), else PyTorch's default (the authors')."""

    def __init__(self, features: int, embed_dim: int, out_shape: tuple[int, int, int], zero: bool = True) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.features = nn.Linear(features, 64)
        self.label = nn.Linear(embed_dim, 64)
        self.out = nn.Linear(128, out_shape[0] * out_shape[1] * out_shape[2])
        if zero:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        joint = F.gelu(torch.cat([self.features(h.flatten(1)), self.label(emb)], dim=1))
        return self.out(joint).view(-1, *self.out_shape)
