"""Invertible layers, masks and coupling: exact inverses and log-dets against brute force."""

from __future__ import annotations

import pytest
import torch

from magicflow.errors import InputError
from magicflow.experiments.bench import OperationLog
from magicflow.flow.coupling import DoubleAffineCoupling
from magicflow.flow.layers import (
    ActNorm,
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
from magicflow.flow.masks import carry_application_mask, channelwise, checkerboard
from magicflow.flow.nets import build_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def brute_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det| of the autograd Jacobian of ``fn`` at a single image ``x`` (1, C, H, W)."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).reshape(-1), x.reshape(-1))
    return torch.linalg.slogdet(jac)[1]


def randomise(module: torch.nn.Module, std: float = 0.2) -> None:
    """Move every parameter off its (often identity) initial value."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))


def test_squeeze_split_pad_are_exact_inverses():
    x = torch.randn(2, 3, 8, 8)
    s = squeeze(x)
    assert s.shape == (2, 12, 4, 4)
    assert s[0, 4 * 1 + 2 * 1 + 0, 2, 3] == x[0, 1, 5, 6]  # channel 4c+2i+j holds pixel (2h+i, 2w+j)
    assert torch.equal(unsqueeze(s), x)
    kept, out = split(s)
    assert torch.equal(merge(kept, out), s)
    assert pad_amounts(182, 8) == (1, 1) and pad_amounts(32, 8) == (0, 0)
    padded = pad_image(x, 1, 2, value=0.25)
    assert padded.shape == (2, 3, 11, 11) and padded[0, 0, 0, 0] == 0.25
    assert torch.equal(crop_image(padded, 1, 2), x)


def test_fold_border_keeps_sum_and_interior():
    m = torch.randn(2, 3, 10, 10)
    f = fold_border(m, 1, 1)
    assert f.shape == (2, 3, 8, 8)
    torch.testing.assert_close(f.sum(dim=(2, 3)), m.sum(dim=(2, 3)))
    assert torch.equal(f[..., 1:-1, 1:-1], m[..., 2:-2, 2:-2])
    torch.testing.assert_close(f[0, 0, 0, 0], m[0, 0, :2, :2].sum())


def test_masks_alternate_and_carry_application_mask():
    board = checkerboard(2, 4, 4, 0)
    assert torch.equal(board + checkerboard(2, 4, 4, 1), torch.ones(2, 4, 4))
    alternating = checkerboard(3, 2, 2, 0, phase="alternating")  # the phase flips per channel
    assert torch.equal(alternating[0], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(alternating[1], 1 - alternating[0]) and torch.equal(alternating[2], alternating[0])
    # the authors' masks (their create_mask): 1 where h + w + c + step is odd, the complement
    for parity in (0, 1):
        authors = checkerboard(3, 2, 2, parity, phase="authors")
        assert torch.equal(authors, 1 - checkerboard(3, 2, 2, parity, phase="alternating"))
    assert torch.equal(checkerboard(3, 2, 2, 0, phase="authors")[0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(InputError, match="phase"):
        checkerboard(2, 2, 2, 0, phase="odd")
    assert board[0, 0, 0] == 1 and board[0, 0, 1] == 0
    chan = channelwise(4, 2, 2, 0)
    assert chan[:2].eq(1).all() and chan[2:].eq(0).all()
    app = (torch.rand(8, 8) > 0.5).float()
    carried = carry_application_mask(app, 1, ["squeeze", "split", "squeeze"], 0)
    assert carried.shape == (8, 2, 2)
    # the carried mask is the data geometry: unsqueezing it recovers the image-space pixels
    full = carry_application_mask(app, 1, ["squeeze"], 0)
    assert torch.equal(unsqueeze(full[None])[0, 0], app)
    assert torch.equal(carry_application_mask(app, 1, [], 1)[0], 1 - app)


def test_actnorm_initialises_over_n_images_then_freezes():
    torch.manual_seed(0)
    layer = ActNorm(3, init_images=6)
    first, second = 2 + 3 * torch.randn(4, 3, 5, 5), 2 + 3 * torch.randn(4, 3, 5, 5)
    layer.train()
    layer(first)
    assert not bool(layer.initialized)
    layer(second)
    assert bool(layer.initialized)
    seen = torch.cat([first, second[:2]])  # exactly the first six images count
    out, _ = layer(seen)  # a third call must not change the parameters
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    before = layer.log_scale.detach().clone()
    layer(100 + torch.randn(4, 3, 5, 5))
    assert torch.equal(layer.log_scale.detach(), before)
    state = layer.state_dict()
    assert bool(state["initialized"])
    fresh = ActNorm(3, init_images=6)
    fresh.load_state_dict(state)
    fresh.train()
    fresh(torch.randn(4, 3, 5, 5))
    assert torch.equal(fresh.log_scale.detach(), before)


def test_actnorm_and_conv_logdet_match_jacobian():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    norm = ActNorm(4, init_images=1).double()
    norm.train()
    norm(x * 2 + 1)
    norm.eval()
    conv = InvConv1x1(4).double()
    randomise(conv)
    for layer in (norm, conv):
        layer.eval()
        out, ld = layer(x)
        expected = brute_logdet(lambda v: layer(v)[0], x)  # noqa: B023 (called in this iteration)
        torch.testing.assert_close(ld[0], expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(layer(x, per_position=True)[1].sum(), expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(layer.inverse(out), x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fused", [False, True], ids=["sgd", "fused-adam"])
def test_lu_conv_inverse_cache_refreshes_after_update(fused: bool):
    """Training's fused Adam updates the weights without bumping their version counters: the
    cache must still not outlive a train/eval round trip."""
    torch.manual_seed(2)
    conv = InvConv1x1(4)
    conv.eval()
    with torch.no_grad():
        _, inv_a = conv.weights()
        assert conv.weights()[1] is inv_a  # reused while weights are unchanged
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.01, fused=True) if fused else torch.optim.SGD(conv.parameters(), lr=0.01)
    conv.train()
    x = torch.randn(2, 4, 3, 3)
    (conv(x)[0] ** 2).sum().backward()
    optimizer.step()
    conv.eval()
    with torch.no_grad():
        weight, inv_b = conv.weights()
        assert not torch.allclose(inv_a, inv_b)
        torch.testing.assert_close(weight @ inv_b, torch.eye(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(conv.inverse(conv(x)[0]), x, atol=1e-5, rtol=0)


def test_a_loaded_mask_moves_the_sides_made_from_it():
    """The coupling's per-call constants (the B side, the sides times the scale bound) follow a
    state whose mask differs from the one it was built with (a step-0 application mask)."""
    net = build_net("generation", 2, (4, 4, 4), 3, 4, 0.0)
    built = DoubleAffineCoupling(checkerboard(2, 4, 4, 0), net, net, scale_bound=0.5)
    other = DoubleAffineCoupling(checkerboard(2, 4, 4, 1), net, net, scale_bound=0.5)
    built.load_state_dict(other.state_dict())
    assert torch.equal(built.mask, other.mask)
    for name in ("mask_b", "bound_a", "bound_b"):
        assert torch.equal(getattr(built, name), getattr(other, name)), name


@pytest.mark.parametrize("kind", ["generation", "classification"])
@pytest.mark.parametrize("shared", [False, True])
def test_double_coupling_logdet_matches_jacobian(kind: str, shared: bool):
    torch.manual_seed(3)
    mask = checkerboard(2, 4, 4, 1)
    net_b = build_net(kind, 2, (4, 4, 4), 3, 4, 0.0)
    net_a = net_b if shared else build_net(kind, 2, (4, 4, 4), 3, 4, 0.0)
    coupling = DoubleAffineCoupling(mask, net_b, net_a, scale_bound=0.5).double()
    randomise(coupling, 0.3)
    coupling.eval()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    y = torch.tensor([2])
    out, ld = coupling(x, y)
    assert not torch.allclose(out, x)  # the step is not the identity
    expected = brute_logdet(lambda v: coupling(v, y)[0], x)
    assert abs(float(expected)) > 1e-3
    torch.testing.assert_close(ld[0], expected, rtol=1e-6, atol=0)
    assert (coupling(x, y, per_position=True)[1].abs() <= 1.0).all()  # |s1| + |s2| <= 2 * 0.5
    torch.testing.assert_close(coupling.inverse(out, y), x, rtol=0, atol=1e-10)


def test_actnorm_stops_accumulating_once_initialised_and_after_a_load():
    norm = ActNorm(3, init_images=4).train()
    x = torch.randn(2, 3, 5, 5)
    with OperationLog() as first:
        norm(x)
    norm(x)  # 4 images seen: initialised
    with OperationLog() as later:
        norm(x)
    assert "einsum" in first.ops or "bmm" in first.ops or "mm" in first.ops
    assert len(later.ops) < len(first.ops) / 2 and "copy_" not in later.ops  # only the affine map
    loaded = ActNorm(3, init_images=4)
    loaded.load_state_dict(norm.state_dict())
    loaded.train()
    with OperationLog() as after_load:
        loaded(x)
    assert "copy_" not in after_load.ops and "_local_scalar_dense" in after_load.ops  # one read, then frozen
    with OperationLog() as next_call:
        loaded(x)
    assert next_call.ops == later.ops


def test_lu_conv_training_forward_never_computes_the_inverse():
    conv = InvConv1x1(4).train()
    with OperationLog() as counter:
        conv(torch.randn(2, 4, 3, 3))
    assert "linalg_solve_triangular" not in counter.ops
    conv.eval()
    with torch.no_grad(), OperationLog() as counter:
        conv.inverse(torch.randn(2, 4, 3, 3))
    assert "linalg_solve_triangular" in counter.ops
