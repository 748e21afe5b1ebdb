"""Double affine coupling (Section 3): both halves are updated within one step.

With mask ``M`` (1 on ``x_A``):
``u_B = x_B exp(s1(x_A, y)) + t1(x_A, y)``, then ``x'_A = x_A exp(s2(u_B, y)) + t2(u_B, y)``;
log-det ``sum (1 - M) s1 + sum M s2``. Scales are bounded as ``bound * tanh(raw)``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from magicflow.flow.blocks import Conditioning, recomputing
from magicflow.flow.nets import CouplingNet


def _recompute_contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """Activation checkpointing's (forward, recomputation) contexts."""
    return contextlib.nullcontext(), recomputing()


class DoubleAffineCoupling(nn.Module):
    """Double affine coupling around one or two conditioner networks.

    ``net_b`` gives (s1, t1) from ``x_A``; ``net_a`` gives (s2, t2) from ``u_B``. Passing the
    same module for both reuses one network (the authors' choice); two modules follow the
    paper's notation. With ``bf16`` set, the networks run under bfloat16 autocast while the
    affine update and log-dets stay in the input precision (fp32). With ``checkpoint`` set, a
    network's activations are not kept for the backward pass but recomputed there (activation
    checkpointing): the same loss and gradients (dropout replays its masks; BatchNorm normalises
    with the same batch statistics and leaves its running ones alone while recomputing) for one
    more forward pass of the networks, and the networks' activations, most of a step's memory,
    are gone."""

    def __init__(self, mask: torch.Tensor, net_b: CouplingNet, net_a: CouplingNet, scale_bound: float) -> None:
        super().__init__()
        self.register_buffer("mask", mask[None].clone())
        self.scale_bound = scale_bound
        self._derive_sides()
        self.register_load_state_dict_post_hook(lambda module, _: module._derive_sides())
        self.net_b = net_b
        self.net_a = net_a if net_a is not net_b else None
        self.bf16 = False
        self.checkpoint = False

    def _derive_sides(self) -> None:
        """Per-call constants made once from ``mask`` (and again when a state loads another):
        the B side, and each side times the scale bound."""
        self.register_buffer("mask_b", 1 - self.mask, persistent=False)
        self.register_buffer("bound_a", self.scale_bound * self.mask, persistent=False)
        self.register_buffer("bound_b", self.scale_bound * self.mask_b, persistent=False)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def _conditions(self, y: torch.Tensor, device: torch.device) -> tuple[Conditioning, Conditioning]:
        """Each network's label conditioning, computed once per pass (once for a shared network)."""
        net_b, net_a = self._nets()
        with self._autocast(device):
            cond_b = net_b.condition(y)
            return cond_b, cond_b if net_a is net_b else net_a.condition(y)

    def _params(
        self, net: CouplingNet, h: torch.Tensor, cond: Conditioning, side: torch.Tensor, bound: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounded scale and shift from ``net``, zeroed outside ``side`` (the half they act on;
        ``bound`` is ``side`` times the scale bound)."""
        if self.checkpoint and torch.is_grad_enabled():
            raw, shift = checkpoint(self._run, net, h, cond, use_reentrant=False, context_fn=_recompute_contexts)
        else:
            raw, shift = self._run(net, h, cond)
        return torch.tanh(raw.to(h.dtype)) * bound, shift.to(h.dtype) * side

    def _run(self, net: CouplingNet, h: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast(h.device):
            return net(h, cond)

    def _nets(self) -> tuple[CouplingNet, CouplingNet]:
        return self.net_b, self.net_a if self.net_a is not None else self.net_b

    def forward(self, x: torch.Tensor, y: torch.Tensor, per_position: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        net_b, net_a = self._nets()
        cond_b, cond_a = self._conditions(y, x.device)
        s1, t1 = self._params(net_b, x * self.mask, cond_b, self.mask_b, self.bound_b)
        u = torch.addcmul(t1, x, torch.exp(s1))  # only the B half changes
        s2, t2 = self._params(net_a, u * self.mask_b, cond_a, self.mask, self.bound_a)
        out = torch.addcmul(t2, u, torch.exp(s2))  # only the A half changes
        logdet = s1 + s2
        return out, logdet if per_position else logdet.sum(dim=(1, 2, 3))

    def inverse(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net_b, net_a = self._nets()
        cond_b, cond_a = self._conditions(y, z.device)
        s2, t2 = self._params(net_a, z * self.mask_b, cond_a, self.mask, self.bound_a)
        u = (z - t2) * torch.exp(-s2)
        s1, t1 = self._params(net_b, u * self.mask, cond_b, self.mask_b, self.bound_b)
        return (u - t1) * torch.exp(-s1)
