"""MagicFlow on the paper's 24-step layout at reduced width and image size."""

from __future__ import annotations

import math

import pytest
import torch

from magicflow.errors import InputError
from magicflow.flow import MagicFlow
from magicflow.flow.model import _normal_log_density
from magicflow.flow.nets import REFINEMENTS

TINY_WIDTHS = [[4, 4, 4]] * 11 + [[8, 8, 8]] * 13

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(
    kind: str = "generation", size: int = 32, classes: int = 3, mask: torch.Tensor | None = None, preset: str = "small", **kw
) -> MagicFlow:
    """Paper layout, narrow couplings, every parameter moved off its identity start."""
    torch.manual_seed(0)
    kw.setdefault("embed_dim", 8)
    model = MagicFlow.from_preset(
        preset, classes, kind, mask=mask, image_size=size, widths=TINY_WIDTHS, actnorm_init_images=4, **kw
    )
    model.train()
    with torch.no_grad():
        model.log_prob(torch.rand(4, 1, size, size), torch.arange(4) % classes)  # ActNorm data init
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


#: the authors' networks as theirs (paper: dense classification heads) and refined (with both
#: heads), next to the compact ones
ARCHITECTURES = [
    ("generation", {}),
    ("classification", {}),
    ("generation", {"preset": "paper"}),
    ("classification", {"preset": "paper"}),
    ("generation", {"preset": "refined"}),
    ("classification", {"preset": "refined"}),
    ("classification", {"preset": "refined", "head": "conv"}),
]
#: the models whose couplings start as the identity: the compact ones (zero-initialised heads, the
#: project's FiLM) and the refined ones given every refinement
IDENTITY_AT_START = [(kind, kw) for kind, kw in ARCHITECTURES if "preset" not in kw] + [
    ("generation", {"preset": "refined", "refinements": sorted(REFINEMENTS)}),
    ("classification", {"preset": "refined", "refinements": sorted(REFINEMENTS), "head": "conv"}),
]


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


@pytest.mark.parametrize(("kind", "kw"), ARCHITECTURES)
def test_round_trip(kind: str, kw: dict):
    model = tiny(kind, mask=blob_mask(32) if kind == "generation" else None, **kw)
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
    from magicflow.flow.blocks import SpatialConv2d

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_whole_model_jacobian_with_application_mask_padding_and_separate_nets():
    """Padded 6 -> 8 with an application mask at step 0 and two networks per coupling: the
    log-det of the padded map the flow computes equals the brute-force Jacobian's."""
    mask = blob_mask(6)
    model = tiny("generation", size=6, mask=mask, shared_nets=False).double()
    assert model.steps[0].coupling.net_a is not None and model.padded_size == 8
    x = model.prepare(torch.rand(2, 1, 6, 6, dtype=torch.float64))  # padded with the background
    y = torch.tensor([1, 0])  # two images: GroupNorm needs more than one value at the 1x1 scale

    def to_latent(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.flatten(1) for z in model._flow(v.view(2, 1, 8, 8), y, False)[0]], 1).flatten()

    jac = torch.autograd.functional.jacobian(to_latent, x.flatten())
    expected = torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(model._flow(x, y, False)[1].sum(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("kind", "kw"), [("generation", {}), ("classification", {}), ("classification", {"head": "dense"})])
def test_authors_coupling_logdet_matches_jacobian(kind: str, kw: dict):
    """One coupling of the authors' networks (attention, global pooling, dense heads see only
    their own half): log-det equal to the brute-force Jacobian, on checkerboard and channel masks."""
    model = tiny(kind, size=8, preset="paper", **kw).double()
    y = torch.tensor([2, 0])  # two images: GroupNorm needs more than one value at 1x1
    for index in (1, 6, 8):  # checkerboard on 1x8x8, channel-wise on 4x4x4, alternating checkerboard on 2x4x4
        coupling = model.steps[index].coupling
        shape = coupling.mask.shape[1:]
        h = torch.randn(2, *shape, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: coupling(v.view(2, *shape), y)[0].flatten(), h.flatten())  # noqa: B023 (called here)
        assert abs(float(torch.linalg.slogdet(jac)[1])) > 0.01
        torch.testing.assert_close(coupling(h, y)[1].sum(), torch.linalg.slogdet(jac)[1], rtol=1e-8, atol=1e-10)


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
    """bits/dim by hand: the padded 16x16 density of a 14x14 image, plus every padded value's
    bin (log 1/256 each: 256 values), per image dimension (196), in bits."""
    model = tiny(size=14)
    x, y = torch.rand(2, 1, 14, 14), torch.tensor([0, 1])
    with torch.no_grad():
        latents, logdet = model(x, y)
        manual = sum(_normal_log_density(z).flatten(1).sum(1) for z in latents) + logdet
        torch.testing.assert_close(model.log_prob(x, y), manual)
        assert model.image_dims == 196 and model.num_dims == 256
        expected = -(manual - 256 * math.log(256)) / (196 * math.log(2))
        torch.testing.assert_close(model.bits_per_dim(x, y, 1 / 256), expected)


def test_dequantise_pads_then_fills_every_value_including_the_border():
    model = tiny(size=14)
    x = torch.full((2, 1, 14, 14), 0.5)
    out = model.dequantise(x, 0.01, torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 16, 16)
    border = torch.ones(16, 16, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    noise = out - model.prepare(x)
    assert (noise >= 0).all() and (noise < 0.01).all() and noise[..., border].std() > 0.001  # no constant border


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


@pytest.mark.parametrize(("kind", "kw"), IDENTITY_AT_START)
def test_every_step_starts_as_the_identity(kind: str, kw: dict):
    """Zero-initialised heads: before training each coupling leaves its input unchanged."""
    torch.manual_seed(0)
    model = MagicFlow.from_preset(
        kw.get("preset", "small"),
        3,
        kind,
        image_size=16,
        widths=TINY_WIDTHS,
        embed_dim=8,
        **{k: v for k, v in kw.items() if k != "preset"},
    )
    x, y = torch.randn(2, 1, 16, 16), torch.tensor([0, 2])
    for step in model.steps:
        h = torch.randn(2, *step.coupling.mask.shape[1:])
        out, logdet = step.coupling(h, y)
        assert torch.equal(out, h) and torch.equal(logdet, torch.zeros(2))
    # a whole pass: only ActNorm (identity before its data init in eval) and the 1x1 convolutions act
    model.eval()
    with torch.no_grad():
        logdet = model(x, y)[1]
    conv = sum(float(s.conv.log_s.detach().sum()) * s.coupling.mask[0, 0].numel() for s in model.steps)
    torch.testing.assert_close(logdet, torch.full((2,), conv), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("kind", ["generation", "classification"])
def test_the_authors_couplings_do_not_start_as_the_identity(kind: str):
    """The paper preset keeps the authors' default initialisation of heads and FiLM layers
    (magicflow/flow/README.md: the refinements ``zero_heads`` and ``film_identity`` change it)."""
    torch.manual_seed(0)
    model = MagicFlow.from_preset("paper", 3, kind, image_size=16, widths=TINY_WIDTHS)
    step = model.steps[1]
    h = torch.randn(2, *step.coupling.mask.shape[1:])
    out, logdet = step.coupling(h, torch.tensor([0, 2]))
    assert not torch.allclose(out, h) and bool((logdet.abs() > 1e-3).all())


def test_authors_block_structure_and_capacity():
    """The paper preset is the authors' networks: three stages with CBAM each, global feature
    fusion then context blocks, full-width ASPP-SE per stage, FiLM residual blocks with
    BatchNorm, a 5x5 weight-normalised stem, a 128-d embedding, one network per coupling, dense
    classification heads; ``refined`` swaps in the project's blocks (every refinement named)."""
    from magicflow.flow.blocks import (
        ASPPSE,
        CBAM,
        AuthorsASPP,
        ChannelGate,
        FlowBatchNorm,
        GlobalContext,
        GlobalFusion,
        PooledFusion,
        ResBlock,
    )
    from magicflow.flow.nets import AuthorsGenerationNet
    from magicflow.flow.presets import REFINED

    config = MagicFlow.from_preset("paper", 7, image_size=16).config
    assert config["architecture"] == "authors" and config["embed_dim"] == 128 and config["shared_nets"]
    assert config["refinements"] == [] and config["head"] == "dense" and config["checker_phase"] == "authors"
    refined = MagicFlow.from_preset("refined", 7, image_size=16).config
    assert refined["refinements"] == REFINED and set(REFINED) < set(REFINEMENTS) and refined["head"] == "dense"
    for refinements, (aspp, fusion, context) in [
        ((), (AuthorsASPP, PooledFusion, ChannelGate)),
        (REFINEMENTS, (ASPPSE, GlobalFusion, GlobalContext)),
    ]:
        net = AuthorsGenerationNet(4, (16, 32, 64), 7, 128, refinements)
        kinds = [type(m) for m in net.modules()]
        assert kinds.count(CBAM) == 3 and kinds.count(aspp) == 3 and kinds.count(ResBlock) == 2
        assert kinds.count(fusion) == 1 and kinds.count(context) == 2
        assert (kinds.count(FlowBatchNorm) == 4) == (not refinements)  # BatchNorm in the authors' residual blocks
        assert net.stage1.conv.kernel_size == (5, 5) and hasattr(net.stage1.conv.parametrizations, "weight")
        assert net.embed.linear.in_features == 7 and net.embed.linear.out_features == 128
        # full-width ASPP branches: 1x1 + three dilated 3x3 of cin -> cout
        assert [b.out_channels for b in net.aspp3.branches] == [64] * 4 and net.aspp3.branches[3].dilation == (18, 18)
        # the authors' heads: 3x3 scale, 1x1 shift
        assert net.scale_head.kernel_size == (3, 3) and net.shift_head.kernel_size == (1, 1)


def test_lite_preset_is_the_former_paper_preset():
    from magicflow.flow.presets import PAPER_WIDTHS, PRESETS

    lite = PRESETS["lite"]
    assert lite["widths"] == PAPER_WIDTHS and lite["architecture"] == "compact" and not lite["shared_nets"]
    assert PRESETS["small"]["architecture"] == "compact" and PRESETS["small"]["embed_dim"] == 16


@pytest.mark.parametrize("kind", ["generation", "classification"])
def test_bf16_keeps_predictions_and_round_trip(kind: str):
    """bf16 inside the coupling networks only: class scores move by under 2 % (1.5 % measured on
    this random tiny model; bf16 keeps 8 mantissa bits) and the
    decision is the same wherever the fp32 margin exceeds that movement; the round trip is
    within 0.05 (inverse inputs differ from forward ones by fp32 rounding, which a bf16
    rounding step can amplify to 2**-8 relative; fp32 stays below 1e-4)."""
    model = tiny(kind, size=16)
    x = torch.rand(4, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        reference = model.class_log_likelihoods(x)
        model.set_bf16(True)
        scores = model.class_log_likelihoods(x)
        latents, _ = model(x, y)
        back = model.inverse(latents, y)
    assert (back - x).abs().max() < 0.05
    moved = float((scores - reference).abs().max())
    assert moved < 0.02 * float(reference.abs().min()) and scores.dtype == torch.float32
    top = reference.topk(2, dim=1).values
    decided = (top[:, 0] - top[:, 1]) > 2 * moved
    assert torch.equal(scores.argmax(1)[decided], reference.argmax(1)[decided])


@pytest.mark.slow
def test_compiled_networks_keep_outputs_and_checkpoint_names(tmp_path):
    """torch.compile in place: outputs as eager, parameter names (and so checkpoints) unchanged.
    The aot_eager backend traces the networks like inductor without a C++ toolchain."""
    from magicflow.flow import load_checkpoint, save_checkpoint

    torch.manual_seed(0)  # six steps, two scales: tracing 24 networks would take most of a minute
    model = MagicFlow.from_preset(
        "small",
        2,
        "classification",
        image_size=8,
        embed_dim=8,
        widths=[[4, 4, 4]] * 6,
        masks=["checkerboard"] * 2 + ["channel"] * 2 + ["checkerboard"] * 2,
        squeeze_before=[2],
        split_after=[3],
        lite_steps=[],
        actnorm_init_images=2,
    ).eval()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    names = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        reference = model.log_prob(x, y)
        model.compile_networks(backend="aot_eager")
        compiled = model.log_prob(x, y)
    assert [n for n, _ in model.named_parameters()] == names
    torch.testing.assert_close(compiled, reference, rtol=1e-6, atol=1e-4)
    save_checkpoint(tmp_path / "c.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "c.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().log_prob(x, y), reference, rtol=1e-6, atol=1e-4)


def _scaled_identity(config_overrides: dict, size: int, log_scale: float, scaled_steps: int) -> MagicFlow:
    """Fresh couplings (zero heads: identity), 1x1 convolutions set to the identity and the
    first ``scaled_steps`` ActNorms scaling by exp(log_scale), the others the identity: the
    flow is z = exp(scaled_steps * log_scale) x, rearranged."""
    model = MagicFlow.from_preset("small", 2, image_size=size, widths=TINY_WIDTHS, embed_dim=8, **config_overrides)
    with torch.no_grad():
        for i, step in enumerate(model.steps):
            step.actnorm.log_scale.fill_(log_scale if i < scaled_steps else 0.0)
            step.actnorm.initialized.fill_(True)
            conv = step.conv
            conv.perm.copy_(torch.eye(conv.perm.shape[0]))
            conv.sign_s.fill_(1.0)
            for p in (conv.lower, conv.upper, conv.log_s):
                p.zero_()
    return model.eval()


@pytest.mark.parametrize("layout", ["single_scale", "multiscale"])
def test_attribution_of_a_scaled_identity_is_the_analytic_map(layout: str):
    """log p(x) = sum_p [log N(a x_p) + log a]: each pixel's term must land on that pixel.
    Single scale (24 scaled steps): any image. Multiscale: the 5 full-resolution steps scale
    (every pixel passes them; later ones would scale pixels split off early less), and coarse
    terms are shared within the 8x8 block they came from, so the image is constant within
    blocks and varies across them."""
    single = layout == "single_scale"
    overrides = {"squeeze_before": [], "split_after": [], "masks": ["checkerboard"] * 24} if single else {}
    scaled = 24 if single else 5
    model = _scaled_identity(overrides, 16, 0.02, scaled)
    x = torch.rand(2, 1, 16, 16) if single else torch.rand(2, 1, 2, 2).repeat_interleave(8, 2).repeat_interleave(8, 3)
    a = math.exp(scaled * 0.02)
    expected = _normal_log_density(a * x) + math.log(a)
    with torch.no_grad():
        maps = model.attribution(x, torch.tensor([0, 1]))
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-5)


def _block_pattern(h: torch.Tensor, period: int) -> float:
    """Std of the period x period pattern left after averaging the interior over blocks."""
    inner = h[0, 0, 16:48, 16:48]
    n = 32 // period
    blocks = inner.reshape(n, period, n, period).mean(dim=(0, 2))
    return float((blocks - blocks.mean()).std())


@pytest.mark.parametrize("kind", ["generation", "classification"])
def test_attribution_of_a_constant_image_has_no_block_pattern(kind: str):
    """Placing channel 4c+2i+j on pixel (i, j) gave constant images a fixed 8x8 pattern of
    5.5 nats per pixel (generation) / 0.31 (classification) on this model; spread over the
    pixels each term came from, what is left is a few hundredths of a nat, and the sum is exact."""
    model = tiny(kind, size=64)
    x = torch.full((1, 1, 64, 64), 0.4)
    with torch.no_grad():
        maps = model.attribution(x, torch.tensor([1]))
        log_prob = model.log_prob(x, torch.tensor([1]))
    torch.testing.assert_close(maps.sum(), log_prob.sum(), rtol=1e-5, atol=0)
    assert _block_pattern(maps, 8) < 0.05 and _block_pattern(maps, 4) < 0.05


def test_a_side_divisible_by_eight_has_no_border_and_its_own_likelihood():
    """At the demo's kind of size (a multiple of 2**squeezes) nothing is padded: the density is
    that of the image itself, and bits/dim divide by the
    dimensions the density is over."""
    model = tiny(size=16)
    assert model.padded_size == model.image_size == 16 and model.num_dims == model.image_dims == 256
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    with torch.no_grad():
        assert model.dequantise(x, 0.01, torch.Generator().manual_seed(0)).shape == x.shape
        bits = model.bits_per_dim(x, y, 1 / 256)
        torch.testing.assert_close(bits, -(model.log_prob(x, y) - 256 * math.log(256)) / (256 * math.log(2)))


def test_classification_and_attribution_score_the_centre_of_each_dequantisation_bin():
    """Issue 34: training fills [v, v + 1/256) with noise, so scoring evaluates the density at
    v + 1/(2*256) (border included), not on the bin's edge; every class's attribution map sums to
    exactly the log-likelihood classification uses for that class."""
    from magicflow.experiments.data import SliceSet
    from magicflow.experiments.infer import attribution_maps, class_log_likelihoods
    from magicflow.flow.model import BIN_WIDTH

    model = tiny("classification", size=30, classes=3).eval()  # padded to 32: the border is scored too
    images = torch.floor(torch.rand(4, 1, 30, 30) * 256) / 256
    data = SliceSet(images, torch.tensor([0, 1, 2, 0]))
    scores = torch.from_numpy(class_log_likelihoods(model, data, torch.device("cpu"), batch=3))
    with torch.no_grad():
        centre = model.prepare(images) + BIN_WIDTH / 2  # padded with the background, then centred
        expected = torch.stack([model.log_prob(centre, torch.full((4,), k)) for k in range(3)], 1).double()
        edge = torch.stack([model.log_prob(images, torch.full((4,), k)) for k in range(3)], 1).double()
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-3)
    assert (scores - edge).abs().max() > 1e-2  # the centre is not the edge the images lie on
    for k in range(3):
        maps = attribution_maps(model, data, torch.full((4,), k), torch.device("cpu"), batch=3)
        torch.testing.assert_close(torch.from_numpy(maps).flatten(1).sum(1).double(), scores[:, k], rtol=1e-5, atol=1e-2)


def _legacy_state(model: MagicFlow) -> dict[str, torch.Tensor]:
    """The model's state as checkpoints stored it when every FiLM layer had its own ``proj``."""
    from magicflow.flow.nets import CouplingNet

    state = dict(model.state_dict())
    for prefix, net in model.named_modules():
        if not isinstance(net, CouplingNet) or net.film_proj is None or f"{prefix}.film_proj.weight" not in state:
            continue
        pairs = [sum(net._film_sizes[i : i + 2]) for i in range(0, len(net._film_sizes), 2)]
        for kind in ("weight", "bias"):
            parts = state.pop(f"{prefix}.film_proj.{kind}").split(pairs)
            for name, part in zip(net._film_names, parts, strict=True):
                state[f"{prefix}.{name}.proj.{kind}"] = part
    return state


@pytest.mark.slow
@pytest.mark.parametrize("kind,kw", ARCHITECTURES)
def test_checkpoints_with_a_projection_per_film_layer_load_unchanged(kind: str, kw: dict):
    """Every FiLM projection of a network is now one linear layer; a state written with one
    ``proj`` per FiLM layer loads into it and gives the same likelihoods."""
    model = tiny(kind, size=16, **kw)
    legacy = _legacy_state(model)
    assert any(key.endswith("film.proj.weight") for key in legacy) and not any("film_proj" in key for key in legacy)
    fresh = MagicFlow(model.config)
    fresh.load_state_dict(legacy)
    fresh.eval()
    x, y = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 2])
    assert torch.equal(fresh.log_prob(x, y), model.log_prob(x, y))


@pytest.mark.parametrize("shared", [True, False])
def test_label_path_runs_once_per_network_and_pass(shared: bool):
    """A coupling derives its networks' label conditioning once per pass: one embedding lookup
    and one projection for all FiLM layers per network, however often a shared network runs."""
    from magicflow.experiments.bench import count_operations

    model = tiny(size=16, shared_nets=shared)
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 2])
    counts = count_operations(lambda: model.log_prob(x, y))
    networks = len(model.steps) * (1 if shared else 2)
    assert counts["embedding"] == networks


def test_channels_last_runs_without_layout_copies_around_convolutions():
    """Channels-last comes from the weights' layout, so the network converts nothing: the
    copies into and out of channels-last around every spatial convolution (two per
    convolution, hundreds per pass) are gone; a few reshapes of the flow's state remain."""
    from magicflow.experiments.bench import count_operations

    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 2])
    copies = []
    for enabled in (False, True):
        model = tiny(size=16)
        model.set_channels_last(enabled)
        counts = count_operations(lambda model=model: model.log_prob(x, y))
        copies.append(counts["clone"] + counts["copy_"] + counts["_to_copy"])
    assert copies[1] - copies[0] <= len(model.squeeze_before) + 1


def test_a_dilated_branch_that_sees_only_padding_is_its_centre_tap():
    """ASPP's dilated 3x3 convolutions reaching past the map are computed from the centre tap
    alone (a ninth of the multiply-adds): the same output and gradients as the full convolution,
    which a map one pixel larger than the dilation still gets."""
    from torch.utils.flop_counter import FlopCounterMode

    from magicflow.flow.blocks import SpatialConv2d, centre_only

    torch.manual_seed(0)
    conv = SpatialConv2d(3, 2, 3, padding=6, dilation=6)
    for side, shortcut in ((6, True), (7, False)):
        x = torch.randn(2, 3, side, side, requires_grad=True)
        flops = []
        for fn in (centre_only, lambda c, v: c(v)):
            with FlopCounterMode(display=False) as counter:
                out = fn(conv, x)
            flops.append(counter.get_total_flops())
            grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
            if len(flops) == 1:
                fast, fast_grads = out, grads
        assert torch.allclose(fast, out, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fast_grads, grads, strict=True))
        assert flops[0] * (9 if shortcut else 1) == flops[1]
