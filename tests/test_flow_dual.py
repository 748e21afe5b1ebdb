"""DualFlow (DUAL-GLOW style MRI-to-PET flow) on 8x8 images with 6-step flows of 3 levels."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.nn import functional as F

from magicflow.errors import InputError
from magicflow.flow import DualFlow, MagicFlow, preset_config, save_checkpoint
from magicflow.flow.dual import LOG_SIGMA_BOUND, reverse_gradient

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 8
#: 1x8x8 -> squeeze -> 4x4x4 -> split (2x4x4 out) -> squeeze -> 8x2x2 -> split (4x2x2 out) -> 4x2x2
MASKS = ["checkerboard", "checkerboard", "channel", "checkerboard", "channel", "checkerboard"]
SHAPES = [(2, 4, 4), (4, 2, 2), (4, 2, 2)]


def tiny_config(**overrides) -> dict:
    cfg = {
        "image_size": SIZE,
        "masks": MASKS,
        "widths": [[4, 4, 4]] * len(MASKS),
        "squeeze_before": [1, 3],
        "split_after": [2, 4],
        "lite_steps": list(range(len(MASKS))),
        "actnorm_init_images": 4,
        "embed_dim": 4,
        "dropout": 0.0,
    }
    cfg.update(overrides)
    return preset_config("small", 1, "generation", **cfg)


def one_hot(classes: list[int], k: int = 3) -> torch.Tensor:
    return F.one_hot(torch.tensor(classes), k).double()


def make(side_dim: int = 0, relation: bool = True, dtype: torch.dtype = torch.float64, mask=None, **kw) -> DualFlow:
    """ActNorm initialised on data, flow weights moved off their identity start, and (with
    ``relation``) relation networks randomised so the conditional is not N(0, I)."""
    torch.manual_seed(0)
    cfg = tiny_config(masks=["application", *MASKS[1:]]) if mask is not None else tiny_config()
    model = DualFlow(cfg, cfg, side_dim=side_dim, relation_width=8, mask=mask, **kw)
    side = one_hot([i % side_dim for i in range(4)], side_dim).float() if side_dim else None
    model.train()
    with torch.no_grad():
        model.log_prob(torch.rand(4, 1, SIZE, SIZE), torch.rand(4, 1, SIZE, SIZE), side)  # ActNorm data init
        for p in [*model.source.parameters(), *model.target.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
        if relation:
            for p in model.relation_nets.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return model.eval().to(dtype)


def images(batch: int = 2, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def zeros(batch: int) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long)


def test_conditional_log_prob_matches_brute_force_jacobian():
    model = make()
    assert model.source.latent_shapes == SHAPES
    x_src, x_tgt = images(2, 1), images(2, 2)
    with torch.no_grad():
        cond, source = model.log_prob(x_src, x_tgt)
        params = model.relation(model.source(x_src, zeros(2))[0])
        targets = model.target(x_tgt, zeros(2))[0]
    assert all(log_sigma.abs().max() > 0.05 for _, log_sigma in params)  # a non-trivial conditional
    assert all(log_sigma.abs().max() < LOG_SIGMA_BOUND for _, log_sigma in params)
    for i in range(2):
        gauss = sum(
            (-0.5 * ((w[i] - mu[i]) / log_sigma[i].exp()) ** 2 - log_sigma[i] - 0.5 * math.log(2 * math.pi)).sum()
            for w, (mu, log_sigma) in zip(targets, params)
        )

        def to_latents(flat: torch.Tensor) -> torch.Tensor:
            return torch.cat([w.flatten() for w in model.target(flat.view(1, 1, SIZE, SIZE), zeros(1))[0]])

        jac = jacobian(to_latents, x_tgt[i].flatten())
        assert jac.shape == (SIZE * SIZE, SIZE * SIZE)
        assert abs(float(cond[i]) - float(gauss + torch.linalg.slogdet(jac)[1])) < 1e-6
    assert torch.allclose(source, model.source.log_prob(x_src, zeros(2)), rtol=0, atol=1e-10)


def test_untrained_relation_gives_the_target_flows_own_density():
    model = make(relation=False)
    x_src, x_tgt = images(3, 1), images(3, 2)
    cond, _ = model.log_prob(x_src, x_tgt)
    assert torch.allclose(cond, model.target.log_prob(x_tgt, zeros(3)), rtol=0, atol=1e-10)
    for mu, log_sigma in model.relation(model.source(x_src, zeros(3))[0]):
        assert mu.abs().max() == 0 and log_sigma.abs().max() == 0


def test_round_trip_and_deterministic_translation():
    model = make()
    x_src, x_tgt = images(2, 1), images(2, 2)
    with torch.no_grad():
        back = model.target.inverse(model.target(x_tgt, zeros(2))[0], zeros(2))
        assert (back - x_tgt).abs().max() < 1e-5
        mode = model.target.inverse([mu for mu, _ in model.relation(model.source(x_src, zeros(2))[0])], zeros(2))
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = model.translate(x_src)
    assert torch.equal(torch.get_rng_state(), state)  # temperature 0 draws nothing
    torch.manual_seed(2)
    second = model.translate(x_src, temperature=0)
    assert first.shape == (2, 1, SIZE, SIZE) and not first.requires_grad
    assert torch.equal(first, second) and torch.equal(first, mode)
    for bad in (-0.1, float("nan"), float("inf"), True):
        with pytest.raises(InputError, match="temperature"):
            model.translate(x_src, temperature=bad)


def test_samples_vary_and_their_spread():
    model = make()
    x_src = images(2, 1)
    samples = model.sample(x_src, 3, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 1, SIZE, SIZE)
    assert (samples[:, 0] - samples[:, 1]).abs().max() > 1e-3
    again = model.sample(x_src, 3, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)
    spread = DualFlow.uncertainty(samples)
    assert spread.shape == (2, 1, SIZE, SIZE) and spread.min() > 0
    still = model.sample(x_src, 2, temperature=0.0)
    assert torch.equal(DualFlow.uncertainty(still), torch.zeros(2, 1, SIZE, SIZE, dtype=torch.float64))
    assert torch.equal(still[:, 0], model.translate(x_src))
    with pytest.raises(InputError, match="at least 2"):
        DualFlow.uncertainty(samples[:, :1])
    with pytest.raises(InputError, match="n "):
        model.sample(x_src, 0)


def test_side_information_reaches_the_top_level_only():
    model = make(side_dim=3)
    x_src, x_tgt = images(2, 1), images(2, 2)
    with torch.no_grad():
        zs = model.source(x_src, zeros(2))[0]
        a = model.relation(zs, one_hot([0, 1]))
        b = model.relation(zs, one_hot([2, 0]))
    for level in range(len(SHAPES) - 1):
        assert torch.equal(a[level][0], b[level][0]) and torch.equal(a[level][1], b[level][1])
    assert (a[-1][0] - b[-1][0]).abs().max() > 1e-4
    assert not torch.equal(model.translate(x_src, one_hot([0, 1])), model.translate(x_src, one_hot([2, 0])))

    for side, message in [
        (None, "required"),
        (one_hot([0, 1], 2), "shape"),
        (one_hot([0]), "shape"),
        (torch.tensor([[1, 0, 0], [0, 1, 0]]), "float"),
        (torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64), "one-hot"),
        (torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64), "one-hot"),
    ]:
        with pytest.raises(InputError, match=message):
            model.log_prob(x_src, x_tgt, side)
    with pytest.raises(InputError, match="no side information"):
        make().log_prob(x_src, x_tgt, one_hot([0, 1]))
    ages = torch.tensor([[-0.3], [1.2]], dtype=torch.float64)
    continuous = make(side_dim=1, side_kind="continuous")
    assert continuous.log_prob(x_src, x_tgt, ages)[0].isfinite().all()
    with pytest.raises(InputError, match="finite"):
        continuous.log_prob(x_src, x_tgt, torch.tensor([[float("nan")], [0.0]], dtype=torch.float64))


def test_gradient_reversal_negates_the_gradient_to_the_lower_source_levels():
    x = torch.randn(5, requires_grad=True)
    w = torch.randn(5)
    out = reverse_gradient(x, 0.5)
    assert torch.equal(out, x)
    (out * w).sum().backward()
    assert torch.equal(x.grad, -0.5 * w)

    model = make(side_dim=3, discriminators=True, reversal_scale=0.5)
    x_src, x_tgt, side = images(2, 1), images(2, 2), one_hot([0, 2])
    with torch.no_grad():
        zs = [z.requires_grad_() for z in model.source(x_src, zeros(2))[0]]
        ws = [w.requires_grad_() for w in model.target(x_tgt, zeros(2))[0]]
    model._side_loss(zs, ws, side).backward()
    heads = [*model.source_heads, model.target_head]
    for level, (head, z) in enumerate(zip(heads, [*zs, ws[-1]])):
        plain = z.detach().requires_grad_()
        F.cross_entropy(head(plain.mean(dim=(2, 3))), side.argmax(1)).backward()
        sign = -0.5 if level < len(SHAPES) - 1 else 1.0  # reversed below the source's top, kept at the tops
        assert plain.grad.abs().max() > 0
        assert torch.allclose(z.grad, sign * plain.grad, rtol=0, atol=1e-12)
    assert ws[0].grad is None  # the target's lower levels feed no head
    continuous = make(side_dim=1, side_kind="continuous", discriminators=True)
    with torch.no_grad():
        assert float(model.side_loss(x_src, x_tgt, side)) > 0
        assert float(make(side_dim=3).side_loss(x_src, x_tgt, side)) == 0
        assert float(continuous.side_loss(x_src, x_tgt, torch.tensor([[0.1], [-1.0]], dtype=torch.float64))) > 0


def test_config_errors():
    cfg = tiny_config()
    fewer_levels = tiny_config(split_after=[2])
    with pytest.raises(
        InputError, match=r"source \[\(2, 4, 4\), \(4, 2, 2\), \(4, 2, 2\)\], target \[\(2, 4, 4\), \(8, 2, 2\)\]"
    ):
        DualFlow(cfg, fewer_levels)
    coarse_spatial = tiny_config(squeeze_before=[1])  # same 3 levels, all 4x4
    with pytest.raises(InputError, match="spatial sizes"):
        DualFlow(coarse_spatial, cfg)
    with pytest.raises(InputError, match="source config: num_classes must be 1"):
        DualFlow({**cfg, "num_classes": 2}, cfg)
    with pytest.raises(InputError, match="target config"):
        DualFlow(cfg, {**cfg, "bogus": 1})
    with pytest.raises(InputError, match="side_dim > 0"):
        DualFlow(cfg, cfg, discriminators=True)
    with pytest.raises(InputError, match="side_kind"):
        DualFlow(cfg, cfg, side_dim=2, side_kind="ordinal")
    with pytest.raises(InputError, match="batches differ"):
        make().log_prob(images(2), images(3))


def test_checkpoint_round_trip(tmp_path):
    """Through the pipeline's checkpoint (the shared training loop's best.pt, rebuilt from the
    config it holds): identical translations, the mask restored, clear errors."""
    from magicflow.baselines.discriminative import save_baseline
    from magicflow.experiments.translation import load_dual_model

    mask = torch.zeros(SIZE, SIZE)
    mask[2:6, 1:7] = 1
    model = make(side_dim=2, discriminators=True, dtype=torch.float32, mask=mask)
    json.dumps(model.config)
    path = tmp_path / "best.pt"
    save_baseline(path, model, {"name": "dual-glow", "model": model.to_config()}, 2, {"epoch": 3})
    loaded, payload = load_dual_model(path, mask.numpy(), torch.device("cpu"))
    assert payload["extra"] == {"epoch": 3} and loaded.config == model.config
    assert torch.equal(loaded.source.application_mask, model.source.application_mask)
    x_src, side = images(2, 1, torch.float32), one_hot([0, 1], 2).float()
    assert torch.equal(loaded.translate(x_src, side), model.eval().translate(x_src, side))

    with pytest.raises(InputError, match="not found.*missing.pt"):
        load_dual_model(tmp_path / "missing.pt", mask.numpy(), torch.device("cpu"))
    single = tmp_path / "single.pt"
    save_checkpoint(single, MagicFlow(tiny_config()))
    with pytest.raises(InputError, match=f"{single} is not a baseline checkpoint"):
        load_dual_model(single, mask.numpy(), torch.device("cpu"))
    other = tmp_path / "other.pt"
    save_baseline(other, model, {"name": "unet"}, 2, {})
    with pytest.raises(InputError, match=f"{other} is not a translation checkpoint"):
        load_dual_model(other, mask.numpy(), torch.device("cpu"))


def test_objective_training_lowers_the_loss():
    model = make(relation=False, dtype=torch.float32)
    model.set_channels_last(True)  # as training does on a CPU
    gen = torch.Generator().manual_seed(0)
    x_src = 0.1 + 0.8 * torch.rand(8, 1, SIZE, SIZE, generator=gen)
    x_src, x_tgt = model.dequantise(x_src, 1.0 - x_src, 1 / 256, gen)

    with torch.no_grad():
        terms = model.objective(x_src, x_tgt)
        cond, _ = model.log_prob(x_src, x_tgt)
    assert set(terms) == {"loss", "cond_nll", "source_nll", "side_loss"}
    assert torch.allclose(terms["cond_nll"], -cond.mean() / model.image_dims)
    assert torch.allclose(terms["loss"], terms["cond_nll"] + 0.001 * terms["source_nll"])
    before = float(terms["loss"])

    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        optimiser.zero_grad()
        model.objective(x_src, x_tgt, validate=False)["loss"].backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        after = float(model.objective(x_src, x_tgt)["loss"])
    assert after < before - 0.05, (before, after)
    with pytest.raises(InputError, match="bin_width"):
        model.dequantise(x_src, x_tgt, 0.0)
