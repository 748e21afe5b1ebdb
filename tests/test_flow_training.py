"""Short training on a toy problem and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch

from magicflow.errors import InputError
from magicflow.flow import MagicFlow, load_checkpoint, save_checkpoint

WIDTHS = [[4, 4, 4]] * 11 + [[8, 8, 8]] * 13


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 16x16 images in [0, 1]: a bright upper or lower half, plus noise."""
    y = torch.randint(0, 2, (n,), generator=generator)
    x = 0.2 + 0.05 * torch.rand(n, 1, 16, 16, generator=generator)
    rows = torch.arange(16).view(1, 16, 1)
    bright = torch.where(y.view(n, 1, 1) == 0, rows < 8, rows >= 8)
    x[:, 0] += 0.6 * bright.float()
    return x, y


@pytest.mark.slow
def test_training_lowers_nll_and_classifies():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = MagicFlow.from_preset("small", 2, "classification", image_size=16, widths=WIDTHS, actnorm_init_images=16)
    test_x, test_y = toy_batch(64, gen)
    model.eval()
    with torch.no_grad():
        nll_before = -model.log_prob(test_x, test_y).mean()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(50):
        x, y = toy_batch(16, gen)
        loss = -model.log_prob(x, y).mean() / x[0].numel()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        nll_after = -model.log_prob(test_x, test_y).mean()
        accuracy = (model.class_log_likelihoods(test_x).argmax(1) == test_y).float().mean()
    assert nll_after < nll_before - 100  # nats per 256-pixel image
    assert accuracy >= 0.8, float(accuracy)


def test_checkpoint_round_trip_keeps_outputs_and_actnorm(tmp_path):
    torch.manual_seed(0)
    mask = torch.zeros(16, 16)
    mask[4:12, 3:13] = 1
    model = MagicFlow.from_preset("small", 3, "generation", mask=mask, image_size=16, widths=WIDTHS, actnorm_init_images=4)
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 1])
    model.train()
    model.log_prob(x, y)  # initialises every ActNorm
    model.eval()
    with torch.no_grad():
        expected = model.log_prob(x, y)
        expected_map = model.attribution(x, y)
    path = tmp_path / "ckpt" / "flow.pt"
    save_checkpoint(path, model, extra={"epoch": 3, "history": [1.5, 1.2]})
    payload = torch.load(path, weights_only=True)  # no pickled code needed
    assert payload["config"]["widths"] == WIDTHS

    loaded, extra = load_checkpoint(path)
    assert extra == {"epoch": 3, "history": [1.5, 1.2]}
    assert loaded.config == model.config
    assert torch.equal(loaded.steps[0].coupling.mask, model.steps[0].coupling.mask)
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x, y), expected)
        assert torch.equal(loaded.attribution(x, y), expected_map)
    # training mode on new data must not re-initialise ActNorm
    scales = [s.actnorm.log_scale.detach().clone() for s in loaded.steps]
    loaded.train()
    with torch.no_grad():
        loaded.log_prob(5 * torch.rand(4, 1, 16, 16), y)
    assert all(torch.equal(s.actnorm.log_scale, b) for s, b in zip(loaded.steps, scales))


def test_checkpoint_errors(tmp_path):
    model = MagicFlow.from_preset("small", 2, image_size=16, widths=WIDTHS)
    with pytest.raises(InputError, match="JSON"):
        save_checkpoint(tmp_path / "a.pt", model, extra={"bad": object()})
    assert not (tmp_path / "a.pt").exists()
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a MAGIC-Flow checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_written_before_the_new_config_keys_still_loads(tmp_path):
    """Checkpoints from before architecture / head / checker_phase existed were compact nets
    with conv heads and same-phase checkerboards: they load as exactly that."""
    from magicflow.flow.presets import LEGACY_DEFAULTS

    torch.manual_seed(0)
    model = MagicFlow.from_preset("small", 2, image_size=16, widths=WIDTHS)
    path = tmp_path / "old.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    for key in LEGACY_DEFAULTS:
        del payload["config"][key]
    torch.save(payload, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.config == model.config
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(loaded.eval().log_prob(x, y), model.eval().log_prob(x, y))
