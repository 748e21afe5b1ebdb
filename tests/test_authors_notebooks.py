"""The ``paper`` preset is the authors' model block for block, checked against their notebooks.

The authors' classes are built from their notebook cells at test time
(:func:`magicflow.flow.notebooks.authors_namespace`; nothing of theirs is in this repository), so
these tests run where ``MAGICFLOW_AUTHORS_NOTEBOOKS`` names a checkout or a git copy of
luca2245/MAGIC-Flow (tests/run.sh sets it where the library's ``fetch`` left one) and are skipped
elsewhere. For every step of both tasks they compare parameter counts per block type, then copy
the authors' weights into ours and compare what each deterministic part computes: every
coupling network (generation in training mode, where BatchNorm uses the batch; classification
in evaluation mode, without dropout), the whole flow's latents and log-determinant, its inverse
and the log-density, first-batch ActNorm initialisation included."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch
from torch import nn

from magicflow.flow import MagicFlow
from magicflow.flow.notebooks import authors_namespace, notebooks_root
from magicflow.flow.presets import PAPER_MASKS, PAPER_WIDTHS

ROOT = notebooks_root()
pytestmark = [
    pytest.mark.skipif(ROOT is None, reason="the authors' notebooks are absent (set MAGICFLOW_AUTHORS_NOTEBOOKS)"),
    pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning"),  # their weight norm
]

SIZE = 32  # divisible by 8, so neither model pads; their dense base distribution stays 1024-d
CLASSES = 3
TASKS = ("generation", "classification")


@pytest.fixture(scope="module", params=TASKS)
def task(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def theirs_ns(task) -> dict:
    return authors_namespace(ROOT, task)


def their_flow(ns: dict, mask: torch.Tensor) -> nn.Module:
    kinds = ["custom" if kind == "application" else kind for kind in PAPER_MASKS]
    model = ns["CondMSRealNVP"](
        24,
        CLASSES,
        input_shape=(1, SIZE, SIZE),
        squeeze_layers=[5, 11, 17],
        split_layers=[7, 13, 19],
        device=torch.device("cpu"),
        layer_filters=[tuple(w) for w in PAPER_WIDTHS],
        mask_types=kinds,
    )
    model.custom_mask_tensor = mask
    return model


def brain_mask() -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return (((rows - 15.5) / 13) ** 2 + ((cols - 15.5) / 11) ** 2 <= 1).float()


# ----------------------------------------------------------------------------- block types
def their_kind(name: str) -> str:
    first = name.split(".")[0]
    if ".film" in name or first.startswith("film"):
        return "FiLM"
    table = [
        (r"label_embedding", "label embedding"),
        (r"conv\d$", "stage convolution"),
        (r"bn\d$", "stage norm"),
        (r"cbam\d$", "CBAM"),
        (r"global1$", "global fusion"),
        (r"global[23]$", "global context"),
        (r"resblock\d$", "residual block"),
        (r"aspp", "ASPP-SE"),
        (r"(conv_[st]|[ts]_fc\d)$", "heads"),
    ]
    return next(kind for pattern, kind in table if re.match(pattern, first))


def our_kind(name: str) -> str:
    first, second = (name.split(".") + [""])[:2]
    if first == "film_proj":
        return "FiLM"
    if first.startswith("stage"):
        return {"conv": "stage convolution", "norm": "stage norm", "cbam": "CBAM"}[second]
    table = {"embed": "label embedding", "fusion": "global fusion", "context": "global context", "res": "residual block"}
    table.update({"aspp": "ASPP-SE", "scale_head": "heads", "shift_head": "heads"})
    return next(kind for prefix, kind in table.items() if first.startswith(prefix))


def counts(module: nn.Module, kind) -> Counter:
    out: Counter = Counter()
    for name, p in module.named_parameters():
        out[kind(name)] += p.numel()
    return out


def test_every_steps_parameters_per_block_type_equal_the_notebooks(task, theirs_ns):
    ours = MagicFlow.from_preset("paper", CLASSES, task, image_size=SIZE)
    theirs = their_flow(theirs_ns, brain_mask())
    for i, step in enumerate(ours.steps):
        assert counts(step.coupling.net_b, our_kind) == counts(theirs.coupling_layers[i], their_kind), f"step {i}"
        assert step.actnorm.scale.numel() + step.actnorm.bias.numel() == sum(p.numel() for p in theirs.actnorms[i].parameters())
        assert step.conv.weight.shape == theirs.inv_convs[i].weight.shape
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_the_full_size_models_have_the_notebooks_parameter_counts(task):
    """At their 182x182 (padded to 184) with 7 classes: 36,216,481 and 151,636,727 parameters
    (counted from the notebooks' classes by the same rule in the test above)."""
    expected = {"generation": 36_216_481, "classification": 151_636_727}[task]
    assert sum(p.numel() for p in MagicFlow.from_preset("paper", 7, task).parameters()) == expected


# ----------------------------------------------------------------------------- shared weights
def _film_rows(ours_net: nn.Module, theirs_state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Our one FiLM projection from their per-layer ``gamma`` / ``beta`` linear layers."""
    weights, biases = [], []
    for name in ours_net._film_names:
        parts = name.split(".")
        if parts[0].startswith("stage"):
            prefix = f"film{parts[0][-1]}"
        else:  # res2 / res3 -> resblock1 / resblock2
            prefix = f"resblock{int(parts[0][-1]) - 1}.{parts[1]}"
        for kind in ("gamma", "beta"):
            weights.append(theirs_state[f"{prefix}.{kind}.weight"])
            biases.append(theirs_state[f"{prefix}.{kind}.bias"])
    return torch.cat(weights), torch.cat(biases)


def _rename(key: str) -> str:
    """Their coupling-network parameter or buffer name -> ours."""
    rules = [
        (r"^label_embedding\.0\.", "embed.linear."),
        (r"^label_embedding\.", "embed."),
        (r"^conv(\d)\.weight_g$", r"stage\1.conv.parametrizations.weight.original0"),
        (r"^conv(\d)\.weight_v$", r"stage\1.conv.parametrizations.weight.original1"),
        (r"^conv(\d)\.bias$", r"stage\1.conv.bias"),
        (r"^bn(\d)\.", r"stage\1.norm."),
        (r"^cbam(\d)\.channel_attention\.shared_mlp\.", r"stage\1.cbam.mlp."),
        (r"^cbam(\d)\.spatial_attention\.conv\.", r"stage\1.cbam.spatial."),
        (r"^global1\.", "fusion."),
        (r"^global([23])\.mlp\.(\d)\.", r"context\1.mlp.\2."),
        (r"^resblock(\d)\.bn(\d)\.", r"res{\1}.norm\2."),
        (r"^resblock(\d)\.conv(\d)\.", r"res{\1}.conv\2."),
        (r"^aspp_early\.", "aspp1."),
        (r"^aspp_mid\.", "aspp2."),
        (r"^aspp\.", "aspp3."),
        (r"\.atrous_block1\.", ".branches.0."),
        (r"\.atrous_block6\.", ".branches.1."),
        (r"\.atrous_block12\.", ".branches.2."),
        (r"\.atrous_block18\.", ".branches.3."),
        (r"\.se\.1\.", ".se.gate.1."),
        (r"\.se\.3\.", ".se.gate.3."),
        (r"\.output\.", ".out."),
        (r"^conv_s\.0\.", "scale_head."),
        (r"^conv_t\.", "shift_head."),
        (r"^t_fc1\.", "shift_head.features."),
        (r"^t_fc2\.", "shift_head.label."),
        (r"^t_fc3\.", "shift_head.out."),
        (r"^s_fc1\.", "scale_head.features."),
        (r"^s_fc2\.", "scale_head.label."),
        (r"^s_fc3\.", "scale_head.out."),
    ]
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return re.sub(r"res\{(\d)\}", lambda m: f"res{int(m.group(1)) + 1}", key)


def load_their_net(ours_net: nn.Module, theirs_net: nn.Module) -> None:
    state = theirs_net.state_dict()
    mapped = {_rename(k): v for k, v in state.items() if ".film" not in k and not k.startswith("film")}
    mapped["film_proj.weight"], mapped["film_proj.bias"] = _film_rows(ours_net, state)
    expected = ours_net.state_dict()
    for key, value in list(mapped.items()):
        if key in expected and expected[key].dim() != value.dim():
            mapped[key] = value.reshape(expected[key].shape)  # their linear layers on pooled features: our 1x1 convolutions
    ours_net.load_state_dict(mapped, strict=True)


def load_their_flow(ours: MagicFlow, theirs: nn.Module) -> None:
    for i, step in enumerate(ours.steps):
        load_their_net(step.coupling.net_b, theirs.coupling_layers[i])
        step.actnorm.load_state_dict(theirs.actnorms[i].state_dict())
        step.conv.load_state_dict(theirs.inv_convs[i].state_dict())


@pytest.fixture(scope="module")
def pair(task, theirs_ns):
    torch.manual_seed(0)
    theirs = their_flow(theirs_ns, brain_mask()).double()
    ours = MagicFlow.from_preset("paper", CLASSES, task, image_size=SIZE, mask=brain_mask()).double()
    load_their_flow(ours, theirs)
    return ours, theirs


def test_the_masks_are_the_notebooks_masks(task, pair):
    ours, theirs = pair
    for i, step in enumerate(ours.steps):
        c, h, w = step.coupling.mask.shape[1:]
        probe = torch.zeros(1, c, h, w, dtype=torch.double)
        assert torch.equal(step.coupling.mask[0].double(), theirs.create_mask(i, probe)[0]), f"step {i} ({PAPER_MASKS[i]})"


def test_every_coupling_network_computes_the_notebooks_scale_and_shift(task, pair):
    ours, theirs = pair
    mode = task == "generation"  # their generation BatchNorm in training mode; classification without dropout
    generator = torch.Generator().manual_seed(1)
    y = torch.tensor([0, 2, 1, 2])
    one_hot = nn.functional.one_hot(y, CLASSES).double()
    for i, step in enumerate(ours.steps):
        c, h, w = step.coupling.mask.shape[1:]
        x = torch.randn(4, c, h, w, generator=generator, dtype=torch.double) * step.coupling.mask
        net_ours, net_theirs = step.coupling.net_b.train(mode), theirs.coupling_layers[i].train(mode)
        with torch.no_grad():
            raw, shift = net_ours(x, net_ours.condition(y))
            s, t = net_theirs(x, one_hot)
        assert torch.allclose(0.5 * torch.tanh(raw), s, atol=1e-10), f"step {i}: scale"
        assert torch.allclose(shift, t, atol=1e-10), f"step {i}: shift"


def pack(latents: list[torch.Tensor]) -> torch.Tensor:
    """Our latents [z7, z13, z19, final] in their flat order [final, z7, z13, z19]."""
    return torch.cat([latents[-1].flatten(1)] + [z.flatten(1) for z in latents[:-1]], dim=1)


def test_the_flow_its_inverse_and_density_equal_the_notebooks_first_batch_actnorm_included(task, theirs_ns):
    torch.manual_seed(2)
    theirs = their_flow(theirs_ns, brain_mask()).double()
    ours = MagicFlow.from_preset("paper", CLASSES, task, image_size=SIZE, mask=brain_mask()).double()
    load_their_flow(ours, theirs)  # ActNorms not yet initialised in either
    assert not any(bool(s.actnorm.initialized) for s in ours.steps)
    mode = task == "generation"
    ours.train(mode), theirs.train(mode)
    x = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3), dtype=torch.double)
    y = torch.tensor([1, 0, 2, 1])
    one_hot = nn.functional.one_hot(y, CLASSES).double()
    with torch.no_grad():
        latents, logdet = ours(x, y)  # the first batch initialises every ActNorm, in both
        z, their_logdet = theirs(x, one_hot)
        assert all(bool(s.actnorm.initialized) for s in ours.steps)
        for mine, their in zip(ours.steps, theirs.actnorms):
            assert torch.allclose(mine.actnorm.scale, their.scale) and torch.allclose(mine.actnorm.bias, their.bias)
        assert torch.allclose(pack(latents), z, atol=1e-8)
        assert torch.allclose(logdet, their_logdet, atol=1e-6)
        # their predict(): their base distribution's log-density of z plus the log-determinant
        their_density = -0.5 * (z * z + math.log(2 * math.pi)).sum(1) + their_logdet
        assert torch.allclose(ours.log_prob(x, y), their_density, atol=1e-6)
        theirs(x, one_hot)  # as many training-mode passes as ours: BatchNorm's running statistics move alike
        ours.eval(), theirs.eval()  # BatchNorm on the running statistics both have gathered
        latents, _ = ours(x, y)
        z, _ = theirs(x, one_hot)
        assert torch.allclose(pack(latents), z, atol=1e-8)
        back = ours.inverse(latents, y)
        assert torch.allclose(back, theirs(z, one_hot, reverse=True), atol=1e-8)
        assert torch.allclose(back, x, atol=1e-8)
