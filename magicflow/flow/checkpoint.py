"""Self-describing checkpoints: config, application mask, weights and training state.

The file holds only tensors and plain containers, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs on load). ActNorm's persistent
``initialized`` buffer is part of the weights, so a loaded model is not re-initialised."""

from __future__ import annotations

import json
import os

import torch

from magicflow.errors import InputError
from magicflow.flow.model import MagicFlow
from magicflow.flow.presets import LEGACY_DEFAULTS
from magicflow.io import atomic_path

FORMAT = "magicflow.flow/1"


def save_checkpoint(path: str | os.PathLike[str], model: MagicFlow, extra: dict | None = None) -> None:
    """Write ``model`` (config + weights) and JSON-able ``extra`` atomically to ``path``."""
    extra = {} if extra is None else extra
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as error:
        raise InputError(f"checkpoint extra must be JSON-serialisable (numbers, strings, lists, dicts): {error}") from None
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    mask = model.application_mask
    payload = {
        "format": FORMAT,
        "config": model.config,
        "application_mask": None if mask is None else mask.detach().cpu(),
        "state_dict": state,
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> tuple[MagicFlow, dict]:
    """Rebuild the model saved at ``path``; returns ``(model, extra)``."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"checkpoint not found: {path}") from None
    except Exception as error:  # corrupt file or foreign pickle: say what was expected
        raise InputError(f"{path} is not a readable MAGIC-Flow checkpoint: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a MAGIC-Flow checkpoint (expected format {FORMAT!r})")
    config = {**LEGACY_DEFAULTS, **payload["config"]}  # checkpoints written before those keys existed
    model = MagicFlow(config, mask=payload["application_mask"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location)
    return model, payload["extra"]
