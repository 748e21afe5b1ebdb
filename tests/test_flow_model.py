"""MagicFlow on the paper's 24-step layout at reduced width and image size."""

from __future__ import annotations

import math

import pytest
import torch

from magicflow.errors import InputError
from magicflow.flow import MagicFlow
from magicflow.flow.model import _normal_log_density

TINY_WIDTHS = [[4, 4, 4]] * 11 + [[8, 8, 8]] * 13

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(kind: str = "generation", size: int = 32, classes: int = 3, mask: torch.Tensor | None = None, **kw) -> MagicFlow:
    """Paper layout, narrow couplings, every parameter moved off its identity start."""
    torch.manual_seed(0)
    model = MagicFlow.from_preset("small", classes, kind, mask=mask, image_size=size, widths=TINY_WIDTHS,
                                  actnorm_init_images=4, **kw)
    model.train()
    with torch.no_grad():
        model.log_prob(torch.rand(4, 1, size, size), torch.arange(4) % classes)  # ActNorm data init
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def blob_mask(size: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    return (((rows - c) / (0.4 * size)) ** 2 + ((cols - c) / (0.35 * size)) ** 2 <= 1).float()


def test_paper_geometry_latent_size():
    model = MagicFlow.from_preset("small", 2)
    assert model.padded_size == 184
    assert model.latent_shapes == [(2, 92, 92), (4, 46, 46), (8, 23, 23), (8, 23, 23)]
    assert sum(math.prod(s) for s in model.latent_shapes) == 33_856
    masks = model.config["masks"]
    assert masks[0] == "application" and masks[1:5] == ["checkerboard"] * 4 and masks[20:] == ["checkerboard"] * 4
    assert [i for i, m in enumerate(masks) if m == "channel"] == [5, 6, 7, 11, 12, 13, 17, 18, 19]


def test_mask_none_falls_back_to_checkerboard_and_mask_is_used():
    plain = tiny(size=16)
    assert torch.equal(plain.steps[0].coupling.mask[0, 0, :2, :2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    mask = blob_mask(14)
    masked = tiny(size=14, mask=mask)
    assert torch.equal(masked.steps[0].coupling.mask[0, 0, 1:-1, 1:-1], mask)  # padded like the images
    assert masked.steps[0].coupling.mask[0, 0, 0].eq(0).all()


@pytest.mark.parametrize("kind", ["generation", "classification"])
def test_round_trip(kind: str):
    model = tiny(kind, mask=blob_mask(32) if kind == "generation" else None)
    x = torch.rand(3, 1, 32, 32)
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        latents, logdet = model(x, y)
        assert [tuple(z.shape[1:]) for z in latents] == model.latent_shapes
        assert logdet.abs().min() > 1.0  # a non-trivial map
        back = model.inverse(latents, y)
    assert (back - x).abs().max() < 1e-4


@pytest.mark.parametrize("kind", ["generation", "classification"])
def test_channels_last_convolutions_change_layout_not_results(kind: str):
    """The CPU speed switch: same log-likelihood and gradients, weights really in channels-last."""
    from magicflow.flow.nets import SpatialConv2d

    x, y = torch.rand(2, 1, 32, 32), torch.tensor([0, 2])
    results = []
    for enabled in (False, True):
        model = tiny(kind)
        model.set_channels_last(enabled)
        convs = [m for m in model.modules() if isinstance(m, SpatialConv2d) and m.weight.shape[1] > 1]
        assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) == enabled for m in convs)
        log_prob = model.log_prob(x, y)
        log_prob.sum().backward()
        results.append((log_prob.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (lp0, g0), (lp1, g1) = results
    assert torch.allclose(lp0, lp1, rtol=1e-5, atol=1e-2)
    flat0, flat1 = torch.cat([g.flatten() for g in g0]), torch.cat([g.flatten() for g in g1])
    # biases in front of a GroupNorm have a true gradient of 0: compare on the gradients' own scale
    assert torch.allclose(flat0, flat1, rtol=1e-3, atol=1e-4 * float(flat0.abs().max()))


@pytest.mark.parametrize("kind", ["generation", "classification"])
def test_whole_model_logdet_matches_jacobian(kind: str):
    # two images: the Jacobian is block-diagonal and its log|det| is the sum of both log-dets
    model = tiny(kind, size=8).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([1, 2])

    def to_latent(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.flatten(1) for z in model(v.view(2, 1, 8, 8), y)[0]], dim=1).flatten()

    jac = torch.autograd.functional.jacobian(to_latent, x.flatten())
    expected = torch.linalg.slogdet(jac)[1]
    assert abs(float(expected)) > 1.0
    torch.testing.assert_close(model(x, y)[1].sum(), expected, rtol=1e-6, atol=0)


def test_attribution_sums_to_log_prob_with_padding():
    model = tiny("generation", size=30)  # padded to 32: the border is folded back
    x = torch.rand(2, 1, 30, 30)
    y = torch.tensor([2, 0])
    with torch.no_grad():
        maps = model.attribution(x, y)
        log_prob = model.log_prob(x, y)
        single = model.attribution(x[0], y[:1])
    assert maps.shape == (2, 1, 30, 30) and single.shape == (1, 30, 30)
    torch.testing.assert_close(maps.flatten(1).sum(1), log_prob, rtol=1e-5, atol=0)
    torch.testing.assert_close(single, maps[0], rtol=1e-5, atol=1e-5)
    assert maps.std() > 0.1  # spatially varying, not a constant spread


def test_log_prob_is_latent_density_plus_logdet_and_bits_per_dim():
    model = tiny(size=16)
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    with torch.no_grad():
        latents, logdet = model(x, y)
        manual = sum(_normal_log_density(z).flatten(1).sum(1) for z in latents) + logdet
        torch.testing.assert_close(model.log_prob(x, y), manual)
        torch.testing.assert_close(model.bits_per_dim(x, y), -manual / (256 * math.log(2)))


def test_class_likelihoods_match_per_label_loop_and_probabilities():
    model = tiny("classification", size=16, classes=3)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        looped = torch.stack([model.log_prob(x, torch.full((3,), k)) for k in range(3)], dim=1)
        # 9 image-label pairs: the CPU default (8 per pass), one pass, and uneven chunks of 4
        for pairs in (None, 9, 4):
            torch.testing.assert_close(model.class_log_likelihoods(x, pairs_per_pass=pairs), looped, rtol=1e-5, atol=1e-4)
        with pytest.raises(InputError, match="pairs_per_pass"):
            model.class_log_likelihoods(x, pairs_per_pass=0)
        prior = torch.log(torch.tensor([0.5, 0.3, 0.2]))
        proba = model.predict_proba(x, prior, temperature=2.0)
    torch.testing.assert_close(proba, torch.softmax((looped + prior) / 2.0, dim=1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(proba.sum(1), torch.ones(3))


def test_sample_shape_and_temperature():
    model = tiny(size=14)
    y = torch.tensor([0, 1, 2, 0])
    gen = torch.Generator().manual_seed(5)
    cold = model.sample(y, temperature=0.0001, generator=gen)
    warm = model.sample(y, temperature=1.0, generator=torch.Generator().manual_seed(5))
    assert cold.shape == warm.shape == (4, 1, 14, 14)
    assert torch.isfinite(warm).all()
    assert cold.std() < warm.std()


def test_bad_inputs_raise_input_error():
    model = tiny(size=16, classes=3)
    good_x, good_y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    nan_x = good_x.clone()
    nan_x[0, 0, 3, 3] = float("nan")
    inf_x = good_x.clone()
    inf_x[1, 0, 0, 0] = float("inf")
    cases = [
        (lambda: model.log_prob(torch.rand(2, 1, 15, 15), good_y), "shape"),
        (lambda: model.log_prob(torch.rand(2, 2, 16, 16), good_y), "shape"),
        (lambda: model.log_prob(torch.rand(1, 16, 16), good_y[:1]), "shape"),
        (lambda: model.log_prob(nan_x, good_y), "NaN"),
        (lambda: model.log_prob(inf_x, good_y), "NaN or infinite"),
        (lambda: model.log_prob(good_x, torch.tensor([0, 3])), "labels must be in"),
        (lambda: model.log_prob(good_x, torch.tensor([-1, 0])), "labels must be in"),
        (lambda: model.log_prob(good_x, torch.tensor([0.0, 1.0])), "integer"),
        (lambda: model.log_prob(good_x, torch.tensor([0, 1, 2])), "shape (2,)"),
        (lambda: model.log_prob(good_x.long(), good_y), "floating point"),
        (lambda: model.attribution(nan_x, good_y), "NaN"),
        (lambda: model.class_log_likelihoods(torch.rand(2, 1, 20, 20)), "shape"),
        (lambda: model.predict_proba(good_x, torch.zeros(2)), "log_prior"),
        (lambda: model.predict_proba(good_x, temperature=0.0), "temperature"),
        (lambda: model.sample(torch.tensor([5])), "labels must be in"),
        (lambda: model.inverse([torch.zeros(1, 2, 8, 8)], torch.tensor([0])), "latents"),
        (lambda: MagicFlow.from_preset("nope", 2), "unknown preset"),
        (lambda: MagicFlow.from_preset("small", 2, "other"), "unknown coupling"),
        (lambda: MagicFlow.from_preset("small", 2, widths=[[4, 4, 4]] * 3), "widths"),
        (lambda: MagicFlow.from_preset("small", 2, mask=torch.rand(182, 182)), "only 0 and 1"),
        (lambda: MagicFlow.from_preset("small", 2, mask=torch.ones(100, 100)), "2-D of shape"),
    ]
    for call, words in cases:
        with pytest.raises(InputError, match=None) as info:
            call()
        assert words in str(info.value), (words, str(info.value))
