"""Memory known before training: the estimate of a training step's peak against the peak the
CPU allocator really reached; activation checkpointing gives the same loss and gradients for
less memory; the fit check names the settings to change; ``precision: auto`` and the data
placement follow the device."""

from __future__ import annotations

import pytest
import torch

from magicflow.errors import InputError
from magicflow.experiments.train import TrainSettings, resolve_precision
from magicflow.flow import MagicFlow, preset_config
from magicflow.experiments.memory import (
    GIB,
    MemoryEstimate,
    check_fits,
    data_fits,
    estimate_training_memory,
    measure_training_peak,
    usable_bytes,
)

#: six steps with both squeezes, a split and channel masks: every kind of layer in a few ops
SHORT = {
    "masks": ["checkerboard", "checkerboard", "channel", "checkerboard", "channel", "checkerboard"],
    "widths": [[8, 8, 16]] * 6,
    "squeeze_before": [2, 4],
    "split_after": [3],
    "lite_steps": [],
}


def short_model(architecture: str, coupling: str, size: int = 16) -> MagicFlow:
    """The authors' networks (``paper``: BatchNorm, dropout, weight norm) or the compact ones."""
    torch.manual_seed(0)
    preset = "paper" if architecture == "authors" else "small"
    return MagicFlow(preset_config(preset, 3, coupling, image_size=size, **SHORT))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("architecture", "coupling", "precision", "checkpointing"),
    [("compact", "generation", "fp32", False), ("authors", "classification", "bf16", True)],
)
def test_estimate_matches_the_measured_cpu_peak(architecture, coupling, precision, checkpointing):
    """The fake-tensor estimate against the peak of two real steps as the profiler saw PyTorch's
    CPU allocator allocate and free (the figures measured: magicflow/flow/README.md, Memory)."""
    model = short_model(architecture, coupling)
    estimate = estimate_training_memory(model, 4, precision, checkpointing)
    model.set_bf16(precision == "bf16")
    model.set_checkpointing(checkpointing)
    measured = measure_training_peak(model, 4, TrainSettings(batch_size=4))
    assert estimate.peak_bytes == pytest.approx(measured, rel=0.05), (estimate.peak_bytes, measured)


@pytest.mark.slow
def test_estimate_follows_batch_checkpointing_and_precision():
    """Activations grow with the batch and shrink with checkpointing and bf16; the state does not
    move. The model itself is left as it was."""
    model = short_model("authors", "generation", size=32)
    base = estimate_training_memory(model, 2)
    double = estimate_training_memory(model, 4)
    assert double.state_bytes == base.state_bytes
    assert double.activation_bytes == pytest.approx(2 * base.activation_bytes, rel=0.05)
    assert base.max_batch(double.peak_bytes) in (3, 4, 5)
    checkpointed = estimate_training_memory(model, 2, checkpointing=True)
    assert checkpointed.activation_bytes < 0.6 * base.activation_bytes
    assert estimate_training_memory(model, 2, "bf16").activation_bytes < base.activation_bytes
    params = sum(p.numel() for p in model.parameters()) * 4
    assert base.state_bytes >= 4 * params  # weights, gradients and Adam's two moments
    assert not any(step.coupling.checkpoint or step.coupling.bf16 for step in model.steps)
    assert all(p.device.type == "cpu" and not p.is_meta for p in model.parameters())


@pytest.mark.parametrize(
    ("architecture", "coupling"), [("authors", "generation"), ("authors", "classification"), ("compact", "generation")]
)
def test_checkpointing_gives_the_same_loss_gradients_and_statistics(architecture, coupling):
    """Recomputation in the backward pass changes nothing learned: loss and every gradient match
    to fp32 rounding, dropout draws the same masks, and the buffers (ActNorm's) end the same."""
    results = []
    for checkpointing in (False, True):
        model = short_model(architecture, coupling).train()
        model.set_checkpointing(checkpointing)
        x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        y = torch.tensor([0, 1, 2])
        torch.manual_seed(5)  # dropout
        loss = -model.log_prob(x, y).mean()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((loss.detach(), grads, [b.clone() for b in model.buffers()]))
    (loss0, grads0, buffers0), (loss1, grads1, buffers1) = results
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-5)
    assert len(grads0) == len(grads1)
    for g0, g1 in zip(grads0, grads1):
        torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    for b0, b1 in zip(buffers0, buffers1):
        torch.testing.assert_close(b1, b0, rtol=0, atol=0)


def test_checkpointing_is_off_without_gradients():
    """Sampling and scoring run no_grad: nothing to recompute, so the networks run plainly."""
    model = short_model("compact", "generation").eval()
    model.set_checkpointing(True)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        latents, _ = model(x, torch.tensor([0, 1]))
        back = model.inverse(latents, torch.tensor([0, 1]))
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)


def _estimate(peak_gib: float, state_gib: float = 1.0, batch: int = 8) -> MemoryEstimate:
    return MemoryEstimate(int(peak_gib * GIB), int(state_gib * GIB), batch, 182, "fp32", False)


def test_a_step_that_does_not_fit_stops_with_one_line_naming_the_settings():
    estimate = _estimate(30.0)  # 29 GiB of activations at batch 8: 3.6 GiB per image
    with pytest.raises(InputError) as error:
        check_fits(
            estimate,
            24 * GIB,
            "cuda:0",
            {"training.checkpointing: true": _estimate(10.0), "training.precision: bf16": _estimate(25.0)},
        )
    message = str(error.value)
    assert "\n" not in message and "30.0 GiB" in message and "24.0 GiB is free" in message
    assert "training.checkpointing: true (about 10.0 GiB)" in message  # fits: quoted
    assert "bf16" not in message  # 25 GiB would not fit either: not offered
    assert "training.batch_size: 5 or lower" in message  # 1 + 5 x 3.6 = 19.1 <= 24 x 0.9 - 0.5 = 21.1
    assert "image_size" in message and "preset" in message
    check_fits(_estimate(20.0), 24 * GIB, "cuda:0", {})  # fits: no error
    with pytest.raises(InputError, match="training.batch_size"):
        check_fits(_estimate(20.0), 22 * GIB, "cuda:0", {})


def test_training_set_stays_on_the_host_when_it_does_not_fit_beside_the_step():
    free = 24 * GIB
    assert usable_bytes(free) < free
    assert data_fits(10 * GIB, 5 * GIB, free)
    assert not data_fits(10 * GIB, 12 * GIB, free)


def test_auto_precision_is_bf16_only_on_a_gpu_that_has_it(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cuda) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) == "fp32"
    assert TrainSettings().precision == "auto"


def test_plan_on_cpu_skips_the_estimate_and_keeps_the_set_where_it_is(capsys):
    from magicflow.experiments.data import SliceSet
    from magicflow.experiments.memory import plan_memory

    model = short_model("compact", "classification")
    train = SliceSet(torch.rand(10, 1, 16, 16), torch.arange(10) % 3)
    settings = TrainSettings(batch_size=4, checkpointing=True)
    assert plan_memory(model, settings, torch.device("cpu"), train) is True
    line = capsys.readouterr().out.strip()
    assert line.startswith("memory: training on the CPU, not estimated")
    assert "training set 0.00 GiB" in line


def test_a_training_set_kept_on_the_host_trains_the_same_weights(tmp_path):
    """``data_on_device=False`` gathers batches in host memory and moves each one: the batches,
    and so the weights, are those of a set moved to the device once."""
    from magicflow.experiments.data import SliceSet
    from magicflow.experiments.train import train_model

    generator = torch.Generator().manual_seed(3)
    train = SliceSet(torch.rand(12, 1, 16, 16, generator=generator), torch.arange(12) % 3)
    val = SliceSet(torch.rand(4, 1, 16, 16, generator=generator), torch.arange(4) % 3)
    settings = TrainSettings(epochs=1, batch_size=4, lr=1e-3, seed=2)
    weights = []
    for on_device in (True, False):
        model = short_model("compact", "generation")
        history = train_model(
            model,
            train,
            val,
            tmp_path / str(on_device),
            settings,
            torch.device("cpu"),
            False,
            progress=False,
            data_on_device=on_device,
        )
        weights.append([p.detach().clone() for p in model.parameters()])
        assert history["steps"].iloc[0] == 3
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_on_a_gpu_a_step_that_does_not_fit_stops_before_training(monkeypatch):
    """The plan on a CUDA device, whose free memory is all this machine lacks: the device's
    answer is replaced, the estimates are real. Between the checkpointed and the plain step's
    needs, the plain step stops with one line offering checkpointing; checkpointed, it fits."""
    import magicflow.experiments.memory as memory
    from magicflow.experiments.data import SliceSet
    from magicflow.experiments.memory import plan_memory

    model = short_model("authors", "generation", size=32)
    plain, checkpointed = (estimate_training_memory(model, 4, checkpointing=c) for c in (False, True))
    free = int((plain.peak_bytes + checkpointed.peak_bytes) / 2 / (1 - memory.HEADROOM))
    monkeypatch.setattr(memory, "RESERVED_BYTES", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **k: (free, 2 * free))
    train = SliceSet(torch.rand(6, 1, 32, 32), torch.arange(6) % 3)
    cuda = torch.device("cuda")
    with pytest.raises(InputError) as error:
        plan_memory(model, TrainSettings(batch_size=4), cuda, train)
    message = str(error.value)
    assert "\n" not in message and "batch 4, fp32, checkpointing off" in message
    assert f"training.checkpointing: true (about {checkpointed.peak_bytes / GIB:.1f} GiB)" in message
    assert "training.precision: bf16" not in message  # this GPU has no bf16
    assert plan_memory(model, TrainSettings(batch_size=4, checkpointing=True), cuda, train) is True
