"""Coupling networks: ``(x_half, conditioning) -> (raw_scale, shift)``, each with the input's
channels.

Both kinds follow Section 4.1 / Appendix A.4 of the paper. Labels enter through a learned
embedding (equivalent to a linear map of the one-hot vector) that drives FiLM layers. The
last layer of every head is zero-initialised, so each coupling starts as the identity.

Everything a network derives from the labels alone (the embedding and every FiLM layer's
scale and shift) is computed by :meth:`CouplingNet.condition` in one matrix product, once per
coupling, and handed to ``forward``: a shared network runs twice per coupling on the same
labels, and one small linear layer per FiLM layer made the label path a third of a training
step's operations (magicflow/flow/README.md, "Operations per step")."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize


def _groups(channels: int) -> int:
    """Largest group count in (8, 4, 2, 1) dividing ``channels``, for GroupNorm."""
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


def _zero_conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    conv = SpatialConv2d(cin, cout, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Conditioning(NamedTuple):
    """What a coupling network derives from the labels alone: the label embedding ``(B, E)``
    and, per FiLM layer (by its ``slot``), the multiplier ``1 + gamma`` and the shift ``beta``,
    each ``(B, C, 1, 1)``."""

    emb: torch.Tensor
    films: tuple[tuple[torch.Tensor, torch.Tensor], ...]


class FiLM(nn.Module):
    """Feature-wise affine modulation ``x * (1 + gamma(e)) + beta(e)`` from a label embedding.

    The projection ``e -> (gamma, beta)`` of every FiLM layer of a network is one zero-initialised
    linear layer of the network (:meth:`CouplingNet.condition`), so the network starts
    label-agnostic and gradients still reach it; this layer only applies its ``slot``'s pair."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.slot = -1  # set by the owning CouplingNet

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        scale, shift = cond.films[self.slot]
        return torch.addcmul(shift, x, scale)


class CouplingNet(nn.Module):
    """Base of the coupling networks: ``forward(x, cond) -> (raw_scale, shift)`` with ``cond``
    from :meth:`condition`. A subclass builds its layers, sets ``embed_labels`` behaviour and
    calls :meth:`_init_films` last, which gives every FiLM layer below it a slot in one
    projection ``film_proj``: (E) -> (2 C_1 + 2 C_2 + ...), zero-initialised, laid out as
    ``gamma_1, beta_1, gamma_2, beta_2, ...``. Checkpoints written when each FiLM layer held its
    own ``proj`` load unchanged (the projections are concatenated on load)."""

    _film_names: list[str]
    _film_sizes: list[int]

    def _init_films(self, embed_dim: int) -> None:
        films = [(name, m) for name, m in self.named_modules() if isinstance(m, FiLM)]
        self._film_names = [name for name, _ in films]
        self._film_sizes = [size for _, m in films for size in (m.channels, m.channels)]
        for slot, (_, module) in enumerate(films):
            module.slot = slot
        self.film_proj = nn.Linear(embed_dim, sum(self._film_sizes)) if films else None
        # the "1 +" of each gamma (the first of each pair of sizes), added once per coupling
        offset = [torch.full((size,), float(i % 2 == 0)) for i, size in enumerate(self._film_sizes)]
        self.register_buffer("film_offset", torch.cat(offset) if offset else torch.zeros(0), persistent=False)
        if self.film_proj is not None:
            nn.init.zeros_(self.film_proj.weight)
            nn.init.zeros_(self.film_proj.bias)

    def embed_labels(self, y: torch.Tensor) -> torch.Tensor:
        return self.embed(y)

    def condition(self, y: torch.Tensor) -> Conditioning:
        """The label embedding and every FiLM layer's ``(1 + gamma, beta)``, in one matrix product."""
        emb = self.embed_labels(y)
        if self.film_proj is None:
            return Conditioning(emb, ())
        out = torch.addmm(self.film_proj.bias + self.film_offset, emb, self.film_proj.weight.t())
        parts = out.view(*out.shape, 1, 1).split(self._film_sizes, dim=1)
        return Conditioning(emb, tuple(zip(parts[0::2], parts[1::2])))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        legacy = [f"{prefix}{name}.proj." for name in self._film_names]
        if self._film_names and f"{prefix}film_proj.weight" not in state_dict and f"{legacy[0]}weight" in state_dict:
            for kind in ("weight", "bias"):
                state_dict[f"{prefix}film_proj.{kind}"] = torch.cat([state_dict.pop(f"{key}{kind}") for key in legacy])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CBAM(nn.Module):
    """Channel attention (shared MLP on average and max pooling) then spatial attention.

    The shared MLP runs once on both pooled vectors stacked along the batch (one pass instead of
    two: the same values, half the operations and no gradient accumulation between passes)."""

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = SpatialConv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)])
        avg, mx = self.mlp(pooled).chunk(2)
        x = x * torch.sigmoid(avg + mx)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


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


class SqueezeExcite(nn.Module):
    """Channel re-weighting from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def _centre_only(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; a dilated 3x3 convolution whose dilation reaches past the map in both
    directions sees only zero padding with its eight outer taps, so it is computed as the 1x1
    convolution of its centre tap: the same values (the outer taps added exact zeros) and the
    same gradients (theirs are exactly zero), at a ninth of the work. At 64x64 images this is
    every dilation-12 and -18 branch at the two coarsest scales."""
    dilation = conv.dilation[0]
    if conv.kernel_size != (3, 3) or conv.padding[0] != dilation or dilation < max(x.shape[2], x.shape[3]):
        return conv(x)
    return F.conv2d(x, conv.weight[:, :, 1:2, 1:2], conv.bias)


class ASPPSE(nn.Module):
    """Atrous spatial pyramid (1x1 and dilations 6/12/18, plus image pooling) with SE fusion.

    ``branch`` channels per branch: a quarter of ``cout`` in the compact networks, ``cout``
    (full width, as the authors built it) in :class:`AuthorsGenerationNet`."""

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...] = (6, 12, 18), branch: int | None = None) -> None:
        super().__init__()
        branch = branch or max(cout // 4, 4)
        self.branches = nn.ModuleList(
            [nn.Conv2d(cin, branch, 1)] + [SpatialConv2d(cin, branch, 3, padding=d, dilation=d) for d in dilations]
        )
        self.pool = nn.Conv2d(cin, branch, 1)
        total = branch * (len(dilations) + 2)
        self.fuse = nn.Sequential(nn.Conv2d(total, cout, 1), nn.GroupNorm(_groups(cout), cout), nn.GELU())
        self.se = SqueezeExcite(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [_centre_only(conv, x) for conv in self.branches]
        feats.append(self.pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[2:]))
        return self.se(self.fuse(torch.cat(feats, dim=1)))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm, optional FiLM after each, and a projected skip."""

    def __init__(self, cin: int, cout: int, embed_dim: int | None) -> None:
        super().__init__()
        self.conv1 = SpatialConv2d(cin, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = SpatialConv2d(cout, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.film1 = FiLM(cout) if embed_dim else None
        self.film2 = FiLM(cout) if embed_dim else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        h = self.norm1(self.conv1(x))
        h = F.gelu(self.film1(h, cond) if self.film1 else h)
        h = self.norm2(self.conv2(h))
        h = self.film2(h, cond) if self.film2 else h
        return F.gelu(h + self.skip(x))


class GenerationNet(CouplingNet):
    """Expressive conditioner for synthesis: FiLM at several depths, CBAM, FiLM residual
    blocks, a global-context block and ASPP-SE, widths ``(w1, w2, w3)`` growing with depth.

    ``lite`` keeps only stem, one FiLM residual block and head: on a CPU the attention and
    dilated branches at full resolution cost far more than they add to a small model."""

    def __init__(self, channels: int, widths: tuple[int, int, int], num_classes: int, embed_dim: int, lite: bool = False) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.stem = SpatialConv2d(channels, w1, 3, padding=1)
        self.stem_norm = nn.GroupNorm(_groups(w1), w1)
        self.stem_film = FiLM(w1)
        self.cbam = nn.Identity() if lite else CBAM(w1)
        self.block1 = ResBlock(w1, w3 if lite else w2, embed_dim)
        self.context = nn.Identity() if lite else GlobalContext(w2)
        self.block2 = None if lite else ResBlock(w2, w3, embed_dim)
        self.aspp = nn.Identity() if lite else ASPPSE(w3, w3)
        self.out_film = FiLM(w3)
        self.head = _zero_conv(w3, 2 * channels)
        self._init_films(embed_dim)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.gelu(self.stem_film(self.stem_norm(self.stem(x)), cond))
        h = self.context(self.block1(self.cbam(h), cond))
        if self.block2 is not None:
            h = self.block2(h, cond)
        h = self.aspp(h)
        h = F.gelu(self.out_film(h, cond))
        raw_scale, shift = self.head(h).chunk(2, dim=1)
        return raw_scale, shift


class LabelEmbedding(nn.Module):
    """Embedding refined by a residual MLP, so label features can grow beyond a lookup."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(num_classes, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        e = self.table(y)
        return e + self.mlp(e)


class ClassificationNet(CouplingNet):
    """Lean label-aware conditioner: residual label embedding, FiLM, CBAM, residual blocks,
    normalisation, dropout, fusion with the label embedding, then parallel convolutional heads
    for shift and (raw, later bounded) scale. Convolutional heads replace the authors' dense
    head (~134 M parameters) at a tiny fraction of the cost. ``lite`` drops CBAM and the
    second residual block (see :class:`GenerationNet`)."""

    def __init__(
        self,
        channels: int,
        widths: tuple[int, int, int],
        num_classes: int,
        embed_dim: int,
        dropout: float = 0.1,
        lite: bool = False,
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.embed = LabelEmbedding(num_classes, embed_dim)
        self.stem = SpatialConv2d(channels, w1, 3, padding=1)
        self.stem_film = FiLM(w1)
        self.cbam = nn.Identity() if lite else CBAM(w1)
        self.block1 = ResBlock(w1, w3 if lite else w2, None)
        self.block2 = nn.Identity() if lite else ResBlock(w2, w3, None)
        self.norm = nn.GroupNorm(_groups(w3), w3)
        self.dropout = nn.Dropout2d(dropout)
        self.fuse_label = nn.Linear(embed_dim, w3)
        self.fuse = nn.Conv2d(2 * w3, w3, 1)
        self.shift_head = _zero_conv(w3, channels)
        self.scale_head = _zero_conv(w3, channels)
        self._init_films(embed_dim)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.gelu(self.stem_film(self.stem(x), cond))
        h = self.block2(self.block1(self.cbam(h)))
        h = self.dropout(self.norm(h))
        label = self.fuse_label(cond.emb).view(cond.emb.shape[0], -1, 1, 1).expand_as(h)
        h = F.gelu(self.fuse(torch.cat([h, label], dim=1)))
        return self.scale_head(h), self.shift_head(h)


def _wn_conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    """Weight-normalised k x k convolution, as the authors' stage convolutions: the weight's
    direction and length are learned apart, which steadies the first steps of training."""
    conv = SpatialConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    return nn.utils.parametrizations.weight_norm(conv)


class OneHotEmbedding(nn.Module):
    """The authors' label embedding: ``GELU(Linear(one_hot(y)))``, computed as what it is, a
    column lookup plus bias (the same values; ``F.one_hot`` reads the labels' range on the host,
    a device wait on every call)."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(num_classes, embed_dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.gelu(F.embedding(y, self.linear.weight.t()) + self.linear.bias)


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


class _Stage(nn.Module):
    """conv (weight-normalised) -> GroupNorm -> FiLM -> GELU -> CBAM, then ``blocks``."""

    def __init__(self, cin: int, cout: int, kernel: int, embed_dim: int, stride: int = 1, cbam: bool = True) -> None:
        super().__init__()
        self.conv = _wn_conv(cin, cout, kernel, stride)
        self.norm = nn.GroupNorm(_groups(cout), cout)
        self.film = FiLM(cout)
        self.cbam = CBAM(cout) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.cbam(F.gelu(self.film(self.norm(self.conv(x)), cond)))


class AuthorsGenerationNet(CouplingNet):
    """The authors' generation conditioner, block by block (MODEL-FACTS): three stages at
    widths ``(f1, f2, f3)``. Stage 1: 5x5 stem, GroupNorm, FiLM, GELU, CBAM, global feature
    fusion, ASPP-SE. Stages 2 and 3: 3x3 conv, GroupNorm, FiLM, GELU, CBAM, FiLM residual
    block, global-context block, ASPP-SE. Heads: 3x3 conv for the raw scale (bounded by the
    coupling as ``0.5 tanh``), 1x1 conv for the shift, both zero-initialised."""

    def __init__(self, channels: int, widths: tuple[int, int, int], num_classes: int, embed_dim: int) -> None:
        super().__init__()
        f1, f2, f3 = widths
        self.embed = OneHotEmbedding(num_classes, embed_dim)
        self.stage1 = _Stage(channels, f1, 5, embed_dim)
        self.fusion = GlobalFusion(f1)
        self.aspp1 = ASPPSE(f1, f1, branch=f1)
        self.stage2 = _Stage(f1, f2, 3, embed_dim)
        self.res2 = ResBlock(f2, f2, embed_dim)
        self.context2 = GlobalContext(f2)
        self.aspp2 = ASPPSE(f2, f2, branch=f2)
        self.stage3 = _Stage(f2, f3, 3, embed_dim)
        self.res3 = ResBlock(f3, f3, embed_dim)
        self.context3 = GlobalContext(f3)
        self.aspp3 = ASPPSE(f3, f3, branch=f3)
        self.scale_head = _zero_conv(f3, channels, 3)
        self.shift_head = _zero_conv(f3, channels, 1)
        self._init_films(embed_dim)

    def embed_labels(self, y: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.embed(y))  # the authors apply GELU again before use

    def forward(self, x: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.aspp1(self.fusion(self.stage1(x, cond)))
        h = self.aspp2(self.context2(self.res2(self.stage2(h, cond), cond)))
        h = self.aspp3(self.context3(self.res3(self.stage3(h, cond), cond)))
        return self.scale_head(h), self.shift_head(h)


class DenseHead(nn.Module):
    """The authors' dense head: flattened features -> 64, label embedding -> 64, concatenated
    -> one value per position of the ``(C, H, W)`` half. Its last layer holds almost all of the
    classification coupling's parameters (about 151.6 M over 24 steps at 182x182)."""

    def __init__(self, features: int, embed_dim: int, out_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.features = nn.Linear(features, 64)
        self.label = nn.Linear(embed_dim, 64)
        self.out = nn.Linear(128, out_shape[0] * out_shape[1] * out_shape[2])
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        joint = F.gelu(torch.cat([self.features(h.flatten(1)), self.label(emb)], dim=1))
        return self.out(joint).view(-1, *self.out_shape)


class AuthorsClassificationNet(CouplingNet):
    """The authors' classification conditioner: residual label embedding; three stride-2
    stages (5x5 weight-normalised stem, then 3x3), each GroupNorm -> FiLM -> GELU, the last two
    with CBAM and a FiLM residual block, dropout after each; then heads for shift and scale.

    ``head="dense"`` is the authors' dense head (:class:`DenseHead`); ``head="conv"`` upsamples
    the features to the input size, fuses them with the label embedding and predicts both maps
    with zero-initialised 3x3 convolutions, at a small fraction of the parameters."""

    def __init__(
        self,
        channels: int,
        widths: tuple[int, int, int],
        num_classes: int,
        embed_dim: int,
        dropout: float,
        size: int,
        head: str = "conv",
    ) -> None:
        super().__init__()
        f1, f2, f3 = widths
        self.embed = LabelEmbedding(num_classes, embed_dim)
        self.stage1 = _Stage(channels, f1, 5, embed_dim, stride=2, cbam=False)
        self.stage2 = _Stage(f1, f2, 3, embed_dim, stride=2)
        self.res2 = ResBlock(f2, f2, embed_dim)
        self.stage3 = _Stage(f2, f3, 3, embed_dim, stride=2)
        self.res3 = ResBlock(f3, f3, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.size = size
        self.head = head
        if head == "dense":
            coarse = size
            for _ in range(3):
                coarse = (coarse - 1) // 2 + 1  # side after a stride-2 convolution with "same" padding
            shape = (channels, size, size)
            self.scale_head = DenseHead(f3 * coarse * coarse, embed_dim, shape)
            self.shift_head = DenseHead(f3 * coarse * coarse, embed_dim, shape)
        else:
            self.fuse_label = nn.Linear(embed_dim, f3)
            self.fuse = nn.Conv2d(2 * f3, f3, 1)
            self.scale_head = _zero_conv(f3, channels)
            self.shift_head = _zero_conv(f3, channels)
        self._init_films(embed_dim)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dropout(self.stage1(x, cond))
        h = self.dropout(self.res2(self.stage2(h, cond), cond))
        h = self.dropout(self.res3(self.stage3(h, cond), cond))
        if self.head == "dense":
            return self.scale_head(h, cond.emb), self.shift_head(h, cond.emb)
        h = F.interpolate(h, size=x.shape[2:], mode="bilinear", align_corners=False)
        label = self.fuse_label(cond.emb).view(cond.emb.shape[0], -1, 1, 1).expand_as(h)
        h = F.gelu(self.fuse(torch.cat([h, label], dim=1)))
        return self.scale_head(h), self.shift_head(h)


ARCHITECTURES = ("authors", "compact")
HEADS = ("conv", "dense")


def build_net(
    kind: str,
    channels: int,
    widths: tuple[int, int, int],
    num_classes: int,
    embed_dim: int,
    dropout: float,
    lite: bool = False,
    architecture: str = "compact",
    size: int = 0,
    head: str = "conv",
) -> CouplingNet:
    """Coupling network of ``kind`` ("generation" or "classification") and ``architecture``:
    "authors" (their block structure, :class:`AuthorsGenerationNet` /
    :class:`AuthorsClassificationNet`) or "compact" (lighter networks, optionally ``lite``).
    ``size`` is the step's spatial side, needed by the dense head."""
    if architecture == "authors":
        if kind == "generation":
            return AuthorsGenerationNet(channels, widths, num_classes, embed_dim)
        return AuthorsClassificationNet(channels, widths, num_classes, embed_dim, dropout, size, head)
    if kind == "generation":
        return GenerationNet(channels, widths, num_classes, embed_dim, lite)
    return ClassificationNet(channels, widths, num_classes, embed_dim, dropout, lite)
