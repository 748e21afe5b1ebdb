"""Binary coupling masks. ``1`` marks the half ``x_A`` that conditions the first update.

Parity ``p`` selects the mask (``p = 0``) or its complement (``p = 1``); the model alternates
parity from step to step so every position is on both sides of a coupling.

The application-specific mask is a 2-D image-space mask. When it is used after squeezes and
splits it is carried exactly like the data: repeated over the input channels, squeezed with
the same space-to-channel reshaping, and cut to the channels a split keeps. Position
``(c, h, w)`` of the carried mask therefore marks the same image pixel that position
``(c, h, w)`` of the data came from (before the 1x1 convolutions mix the channels)."""

from __future__ import annotations

import torch

from magicflow.errors import InputError
from magicflow.flow.layers import split, squeeze

MASK_KINDS = ("application", "checkerboard", "channel")


def _with_parity(mask: torch.Tensor, parity: int) -> torch.Tensor:
    return 1.0 - mask if parity % 2 else mask


#: checkerboard phases: ``same`` (1 where h + w + step is even, in every channel),
#: ``alternating`` (1 where h + w + c + step is even) and ``authors`` (their notebooks' masks: 1
#: where h + w + c + step is odd, the complement of ``alternating``)
CHECKER_PHASES = ("same", "alternating", "authors")


def checkerboard(channels: int, height: int, width: int, parity: int, phase: str = "same") -> torch.Tensor:
    """(C, H, W) mask alternating over pixels; identical in every channel (``same``), or with its
    phase flipped from channel to channel (``alternating``, ``authors``), so that after a squeeze
    each position has channels on both sides of the coupling (:data:`CHECKER_PHASES`)."""
    if phase not in CHECKER_PHASES:
        raise InputError(f"checkerboard phase must be one of {CHECKER_PHASES}, got {phase!r}")
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    chans = torch.arange(channels).view(-1, 1, 1) if phase != "same" else torch.zeros(channels, 1, 1, dtype=torch.long)
    board = ((rows + cols + chans) % 2 == int(phase == "authors")).float()
    return _with_parity(board, parity)


def channelwise(channels: int, height: int, width: int, parity: int) -> torch.Tensor:
    """(C, H, W) mask selecting the first half of the channels."""
    if channels < 2:
        raise InputError(f"a channel-wise mask needs at least 2 channels, got {channels}")
    mask = torch.zeros(channels, height, width)
    mask[: channels // 2] = 1.0
    return _with_parity(mask, parity)


def check_application_mask(mask: torch.Tensor, size: int, padded: int) -> torch.Tensor:
    """Validate a 2-D binary mask of the image or padded size and return it as float."""
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"application mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() != 2 or tuple(mask.shape) not in {(size, size), (padded, padded)}:
        raise InputError(
            f"application mask must be 2-D of shape ({size}, {size}) or ({padded}, {padded}), got {tuple(mask.shape)}"
        )
    mask = mask.detach().float().cpu()
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError("application mask must contain only 0 and 1")
    if bool((mask == 0).all()) or bool((mask == 1).all()):
        raise InputError("application mask must contain both 0 and 1 (it splits the image in two)")
    return mask


def carry_application_mask(mask: torch.Tensor, channels: int, ops: list[str], parity: int) -> torch.Tensor:
    """Carry a padded (H, W) mask through ``ops`` ("squeeze"/"split") to a step's geometry."""
    carried = mask.expand(1, channels, *mask.shape).clone()
    for op in ops:
        carried = squeeze(carried) if op == "squeeze" else split(carried)[0]
    return _with_parity(carried[0], parity)


def build_mask(
    kind: str,
    shape: tuple[int, int, int],
    parity: int,
    application: torch.Tensor | None = None,
    in_channels: int = 1,
    ops: list[str] | None = None,
    phase: str = "same",
) -> torch.Tensor:
    """Mask of ``kind`` for a step whose input has ``shape``; ``ops`` is the reshaping so far;
    ``phase`` is the checkerboard's (see :func:`checkerboard`)."""
    channels, height, width = shape
    if kind == "checkerboard":
        return checkerboard(channels, height, width, parity, phase)
    if kind == "channel":
        return channelwise(channels, height, width, parity)
    if kind == "application":
        if application is None:
            raise InputError("an 'application' mask step needs a 2-D mask")
        return carry_application_mask(application, in_channels, ops or [], parity)
    raise InputError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
