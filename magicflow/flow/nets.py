"""Coupling networks: ``(x_half, conditioning) -> (raw_scale, shift)``, each with the input's
channels, built from :mod:`magicflow.flow.blocks`.

Two architectures. ``authors``: the authors' coupling networks block for block
(:class:`AuthorsGenerationNet`, :class:`AuthorsClassificationNet`; luca2245/MAGIC-Flow, checked
against their notebooks by tests/test_authors_notebooks.py), into which a config's
``refinements`` swap this project's blocks one by one (:data:`REFINEMENTS`). ``compact``:
lighter networks of the project's blocks for CPU training (:class:`GenerationNet`,
:class:`ClassificationNet`), whose heads start at zero so each coupling starts as the identity.

Everything a network derives from the labels alone (the embedding and every FiLM layer's
scale and shift) is computed by :meth:`CouplingNet.condition` in one matrix product, once per
coupling, and handed to ``forward``: a shared network runs twice per coupling on the same
labels, and one small linear layer per FiLM layer made the label path a third of a training
step's operations (magicflow/flow/README.md, "Operations per step")."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from magicflow.flow.blocks import (
    ASPPSE,
    CBAM,
    AuthorsASPP,
    ChannelGate,
    Conditioning,
    DenseHead,
    FiLM,
    GlobalContext,
    GlobalFusion,
    LabelEmbedding,
    OneHotEmbedding,
    PooledFusion,
    ResBlock,
    ResidualLabelEmbedding,
    SpatialConv2d,
    head_conv,
    norm_groups,
    wn_conv,
)

#: this project's changes to the authors' networks, each swapped in by name (config key
#: ``refinements``; magicflow/flow/README.md measures each)
REFINEMENTS: dict[str, str] = {
    "film_identity": "FiLM as x(1 + gamma) + beta from a zero-initialised projection (starts as the identity), not gamma x + beta",
    "zero_heads": "scale and shift heads start at zero, so every coupling starts as the identity",
    "cbam_wide": "CBAM with reduction 4, GELU and biases, not reduction 16, ReLU and no biases",
    "resblock_groupnorm": "residual blocks with GroupNorm and default initialisation, not BatchNorm (generation) and He init",
    "gcnet_context": "GCNet attention-pooled context block, not the squeeze-and-excitation gate x w + x",
    "concat_fusion": "global fusion by concatenation and a 1x1 convolution, not a pooled MLP C -> 128 -> C added",
    "aspp_pool": "ASPP with an image-pool branch, GroupNorm and GELU fusion, SE after it, not SE on the 4C branches",
    "label_mlp": "classification label embedding as a table plus a residual 128-128-128 MLP, not one-hot 16-32-64-128",
    "actnorm_glow": "ActNorm (x + b) exp(s) initialised on actnorm_init_images images, not s x + b on the first batch",
    "lu_1x1": "invertible 1x1 convolution in Glow's LU form (log-det without slogdet, inverse by triangular solves), not a full matrix",
}
#: the refinements a compact network is built with (all but the flow step's own: ActNorm, 1x1)
COMPACT_REFINEMENTS = frozenset(REFINEMENTS) - {"actnorm_glow", "lu_1x1"}


class CouplingNet(nn.Module):
    """Base of the coupling networks: ``forward(x, cond) -> (raw_scale, shift)`` with ``cond``
    from :meth:`condition`. A subclass builds its layers, sets ``embed_labels`` behaviour and
    calls :meth:`_init_films` last, which gives every FiLM layer below it a slot in one
    projection ``film_proj``: (E) -> (2 C_1 + 2 C_2 + ...), laid out as
    ``gamma_1, beta_1, gamma_2, beta_2, ...``. Checkpoints written when each FiLM layer held its
    own ``proj`` load unchanged (the projections are concatenated on load)."""

    _film_names: list[str]
    _film_sizes: list[int]

    def _init_films(self, embed_dim: int, identity: bool = True) -> None:
        """``identity``: the project's FiLM, ``x (1 + gamma) + beta`` with the projection at zero
        (every FiLM layer starts as the identity); else the authors', ``gamma x + beta`` with
        PyTorch's default initialisation, which is what one default-initialised linear layer per
        gamma and per beta gives (the same fan-in, so the same distribution)."""
        films = [(name, m) for name, m in self.named_modules() if isinstance(m, FiLM)]
        self._film_names = [name for name, _ in films]
        self._film_sizes = [size for _, m in films for size in (m.channels, m.channels)]
        for slot, (_, module) in enumerate(films):
            module.slot = slot
        self.film_proj = nn.Linear(embed_dim, sum(self._film_sizes)) if films else None
        # the "1 +" of each gamma (the first of each pair of sizes), added once per coupling
        offset = [torch.full((size,), float(identity and i % 2 == 0)) for i, size in enumerate(self._film_sizes)]
        self.register_buffer("film_offset", torch.cat(offset) if offset else torch.zeros(0), persistent=False)
        if self.film_proj is not None and identity:
            nn.init.zeros_(self.film_proj.weight)
            nn.init.zeros_(self.film_proj.bias)

    def embed_labels(self, y: torch.Tensor) -> torch.Tensor:
        return self.embed(y)

    def condition(self, y: torch.Tensor) -> Conditioning:
        """The label embedding and every FiLM layer's (multiplier, shift), in one matrix product."""
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
        self.stem_norm = nn.GroupNorm(norm_groups(w1), w1)
        self.stem_film = FiLM(w1)
        self.cbam = nn.Identity() if lite else CBAM(w1)
        self.block1 = ResBlock(w1, w3 if lite else w2, embed_dim)
        self.context = nn.Identity() if lite else GlobalContext(w2)
        self.block2 = None if lite else ResBlock(w2, w3, embed_dim)
        self.aspp = nn.Identity() if lite else ASPPSE(w3, w3)
        self.out_film = FiLM(w3)
        self.head = head_conv(w3, 2 * channels)
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
        self.norm = nn.GroupNorm(norm_groups(w3), w3)
        self.dropout = nn.Dropout2d(dropout)
        self.fuse_label = nn.Linear(embed_dim, w3)
        self.fuse = nn.Conv2d(2 * w3, w3, 1)
        self.shift_head = head_conv(w3, channels)
        self.scale_head = head_conv(w3, channels)
        self._init_films(embed_dim)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.gelu(self.stem_film(self.stem(x), cond))
        h = self.block2(self.block1(self.cbam(h)))
        h = self.dropout(self.norm(h))
        label = self.fuse_label(cond.emb).view(cond.emb.shape[0], -1, 1, 1).expand_as(h)
        h = F.gelu(self.fuse(torch.cat([h, label], dim=1)))
        return self.scale_head(h), self.shift_head(h)


class _Stage(nn.Module):
    """conv (weight-normalised) -> GroupNorm -> FiLM -> GELU -> CBAM (optional)."""

    def __init__(self, cin: int, cout: int, kernel: int, cbam: CBAM | None, stride: int = 1) -> None:
        super().__init__()
        self.conv = wn_conv(cin, cout, kernel, stride)
        self.norm = nn.GroupNorm(norm_groups(cout, authors=True), cout)
        self.film = FiLM(cout)
        self.cbam = cbam if cbam is not None else nn.Identity()

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.cbam(F.gelu(self.film(self.norm(self.conv(x)), cond)))


def _cbam(channels: int, refinements: Collection[str]) -> CBAM:
    return CBAM(channels) if "cbam_wide" in refinements else CBAM(channels, reduction=16, activation="relu", bias=False)


def _resblock(channels: int, embed_dim: int, refinements: Collection[str], authors_norm: str) -> ResBlock:
    if "resblock_groupnorm" in refinements:
        return ResBlock(channels, channels, embed_dim)
    return ResBlock(channels, channels, embed_dim, authors=authors_norm)


class AuthorsGenerationNet(CouplingNet):
    """The authors' generation conditioner, block by block: three stages at widths
    ``(f1, f2, f3)``, full resolution. Stage 1: weight-normalised 5x5 stem, GroupNorm, FiLM, GELU,
    CBAM, global feature fusion, ASPP-SE. Stages 2 and 3: 3x3 conv, GroupNorm, FiLM, GELU, CBAM,
    FiLM residual block (BatchNorm), global context, ASPP-SE. Heads: 3x3 conv for the raw scale
    (bounded by the coupling as ``0.5 tanh``), 1x1 conv for the shift. ``refinements`` swap in
    this project's blocks (:data:`REFINEMENTS`)."""

    def __init__(
        self, channels: int, widths: tuple[int, int, int], num_classes: int, embed_dim: int, refinements: Collection[str] = ()
    ) -> None:
        super().__init__()
        f1, f2, f3 = widths
        r = refinements
        self.embed = OneHotEmbedding(num_classes, embed_dim)
        self.stage1 = _Stage(channels, f1, 5, _cbam(f1, r))
        self.fusion = GlobalFusion(f1) if "concat_fusion" in r else PooledFusion(f1)
        self.aspp1 = ASPPSE(f1, f1, branch=f1) if "aspp_pool" in r else AuthorsASPP(f1)
        self.stage2 = _Stage(f1, f2, 3, _cbam(f2, r))
        self.res2 = _resblock(f2, embed_dim, r, "batch")
        self.context2 = GlobalContext(f2) if "gcnet_context" in r else ChannelGate(f2)
        self.aspp2 = ASPPSE(f2, f2, branch=f2) if "aspp_pool" in r else AuthorsASPP(f2)
        self.stage3 = _Stage(f2, f3, 3, _cbam(f3, r))
        self.res3 = _resblock(f3, embed_dim, r, "batch")
        self.context3 = GlobalContext(f3) if "gcnet_context" in r else ChannelGate(f3)
        self.aspp3 = ASPPSE(f3, f3, branch=f3) if "aspp_pool" in r else AuthorsASPP(f3)
        self.scale_head = head_conv(f3, channels, 3, zero="zero_heads" in r)
        self.shift_head = head_conv(f3, channels, 1, zero="zero_heads" in r)
        self._init_films(embed_dim, identity="film_identity" in r)

    def embed_labels(self, y: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.embed(y))  # the authors apply GELU again before use

    def forward(self, x: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.aspp1(self.fusion(self.stage1(x, cond)))
        h = self.aspp2(self.context2(self.res2(self.stage2(h, cond), cond)))
        h = self.aspp3(self.context3(self.res3(self.stage3(h, cond), cond)))
        return self.scale_head(h), self.shift_head(h)


class AuthorsClassificationNet(CouplingNet):
    """The authors' classification conditioner: residual label embedding; three stride-2
    stages (5x5 weight-normalised stem, then 3x3), each GroupNorm -> FiLM -> GELU, the last two
    with CBAM and a FiLM residual block, dropout after each; then heads for shift and scale.

    ``head="dense"`` is the authors' dense head (:class:`DenseHead`); ``head="conv"`` upsamples
    the features to the input size, fuses them with the label embedding and predicts both maps
    with zero-initialised 3x3 convolutions, at a small fraction of the parameters.
    ``refinements`` swap in this project's blocks (:data:`REFINEMENTS`)."""

    def __init__(
        self,
        channels: int,
        widths: tuple[int, int, int],
        num_classes: int,
        embed_dim: int,
        dropout: float,
        size: int,
        head: str = "conv",
        refinements: Collection[str] = (),
    ) -> None:
        super().__init__()
        f1, f2, f3 = widths
        r = refinements
        self.embed = (
            LabelEmbedding(num_classes, embed_dim) if "label_mlp" in r else ResidualLabelEmbedding(num_classes, embed_dim)
        )
        self.stage1 = _Stage(channels, f1, 5, None, stride=2)
        self.stage2 = _Stage(f1, f2, 3, _cbam(f2, r), stride=2)
        self.res2 = _resblock(f2, embed_dim, r, "group")
        self.stage3 = _Stage(f2, f3, 3, _cbam(f3, r), stride=2)
        self.res3 = _resblock(f3, embed_dim, r, "group")
        self.dropout = nn.Dropout(dropout)
        self.size = size
        self.head = head
        if head == "dense":
            coarse = size
            for _ in range(3):
                coarse = (coarse - 1) // 2 + 1  # side after a stride-2 convolution with "same" padding
            shape = (channels, size, size)
            zero = "zero_heads" in r
            self.scale_head = DenseHead(f3 * coarse * coarse, embed_dim, shape, zero)
            self.shift_head = DenseHead(f3 * coarse * coarse, embed_dim, shape, zero)
        else:
            self.fuse_label = nn.Linear(embed_dim, f3)
            self.fuse = nn.Conv2d(2 * f3, f3, 1)
            self.scale_head = head_conv(f3, channels)
            self.shift_head = head_conv(f3, channels)
        self._init_films(embed_dim, identity="film_identity" in r)

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
    refinements: Collection[str] = COMPACT_REFINEMENTS,
) -> CouplingNet:
    """Coupling network of ``kind`` ("generation" or "classification") and ``architecture``:
    "authors" (their networks with the named ``refinements``) or "compact" (lighter networks of
    the project's blocks, optionally ``lite``). ``size`` is the step's spatial side, needed by
    the dense head."""
    if architecture == "authors":
        if kind == "generation":
            return AuthorsGenerationNet(channels, widths, num_classes, embed_dim, refinements)
        return AuthorsClassificationNet(channels, widths, num_classes, embed_dim, dropout, size, head, refinements)
    if kind == "generation":
        return GenerationNet(channels, widths, num_classes, embed_dim, lite)
    return ClassificationNet(channels, widths, num_classes, embed_dim, dropout, lite)
