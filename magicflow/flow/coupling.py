"""Double affine coupling (Section 3): both halves are updated within one step.

With mask ``M`` (1 on ``x_A``):
``u_B = x_B exp(s1(x_A, y)) + t1(x_A, y)``, then ``x'_A = x_A exp(s2(u_B, y)) + t2(u_B, y)``;
log-det ``sum (1 - M) s1 + sum M s2``. Scales are bounded as ``bound * tanh(raw)``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class DoubleAffineCoupling(nn.Module):
    """Double affine coupling around one or two conditioner networks.

    ``net_b`` gives (s1, t1) from ``x_A``; ``net_a`` gives (s2, t2) from ``u_B``. Passing the
    same module for both reuses one network (the authors' choice); two modules follow the
    paper's notation. With ``bf16`` set, the networks run under bfloat16 autocast while the
    affine update and log-dets stay in the input precision (fp32). With ``checkpoint`` set, a
    network's activations are not kept for the backward pass but recomputed there (activation
    checkpointing): the same loss and gradients (dropout replays its masks; the networks keep no
    running statistics to move twice) for one more forward pass of the networks, and the
    networks' activations, most of a step's memory, are gone."""

    def __init__(self, mask: torch.Tensor, net_b: nn.Module, net_a: nn.Module, scale_bound: float) -> None:
        super().__init__()
        self.register_buffer("mask", mask[None].clone())
        self.net_b = net_b
        self.net_a = net_a if net_a is not net_b else None
        self.scale_bound = scale_bound
        self.bf16 = False
        self.checkpoint = False

    def _params(self, net: nn.Module, h: torch.Tensor, y: torch.Tensor, side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounded scale and shift from ``net``, zeroed outside ``side`` (the half they act on)."""
        if self.checkpoint and torch.is_grad_enabled():
            raw, shift = checkpoint(self._run, net, h, y, use_reentrant=False)
        else:
            raw, shift = self._run(net, h, y)
        raw = raw.to(h.dtype).contiguous()
        shift = shift.to(h.dtype).contiguous()
        return self.scale_bound * torch.tanh(raw) * side, shift * side

    def _run(self, net: nn.Module, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = torch.autocast(h.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            return net(h, y)

    def _nets(self) -> tuple[nn.Module, nn.Module]:
        return self.net_b, self.net_a if self.net_a is not None else self.net_b

    def forward(self, x: torch.Tensor, y: torch.Tensor, per_position: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        net_b, net_a = self._nets()
        m = self.mask
        s1, t1 = self._params(net_b, x * m, y, 1 - m)
        u = x * torch.exp(s1) + t1  # only the B half changes
        s2, t2 = self._params(net_a, u * (1 - m), y, m)
        out = u * torch.exp(s2) + t2  # only the A half changes
        logdet = s1 + s2
        return out, logdet if per_position else logdet.sum(dim=(1, 2, 3))

    def inverse(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net_b, net_a = self._nets()
        m = self.mask
        s2, t2 = self._params(net_a, z * (1 - m), y, m)
        u = (z - t2) * torch.exp(-s2)
        s1, t1 = self._params(net_b, u * m, y, 1 - m)
        return (u - t1) * torch.exp(-s1)
