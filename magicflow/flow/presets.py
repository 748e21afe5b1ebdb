"""Model configurations. A config is a plain JSON-able dict, stored in every checkpoint.

``paper`` is the authors' model as their notebooks build it (luca2245/MAGIC-Flow): their
24-step layout, per-step widths and checkerboard phases, their coupling networks block for
block (``architecture: authors`` with no ``refinements``), one network per coupling, a 128-d
label embedding, the dense classification heads and first-batch ActNorm
(tests/test_authors_notebooks.py compares them with the notebooks' classes). ``refined`` is the
same model with the changes of this project's (:data:`magicflow.flow.nets.REFINEMENTS`) that
the ablation in magicflow/flow/README.md kept (:data:`REFINED`). ``lite`` keeps the layout
and widths with the compact networks (one CBAM, ASPP-SE and context block; 2.8x fewer FLOPs).
``small`` keeps the layout with narrow compact couplings so it trains on a laptop CPU."""

from __future__ import annotations

import copy
from typing import Any

from magicflow.errors import InputError
from magicflow.flow.nets import REFINEMENTS

#: mask kind per step: 1 application, 4 checkerboard, 2 x (3 channel, 3 checkerboard), 3 channel, 4 checkerboard
PAPER_MASKS: list[str] = (
    ["application"] + ["checkerboard"] * 4 + (["channel"] * 3 + ["checkerboard"] * 3) * 2 + ["channel"] * 3 + ["checkerboard"] * 4
)

#: the authors' generation-coupling filter counts per step (three per step)
PAPER_WIDTHS: list[list[int]] = (
    [[16, 16, 32]] * 2
    + [[16, 32, 32]] * 4
    + [[16, 32, 64]] * 4
    + [[16, 64, 64]]
    + [[32, 64, 64]] * 3
    + [[32, 64, 128]] * 3
    + [[64, 64, 128]] * 3
    + [[64, 128, 128]] * 2
    + [[128, 256, 256]] * 2
)

#: narrow widths for CPU training: full-resolution steps stay thin, deep ones widen a little.
#: The small preset also shares one network per coupling and uses lite networks (no
#: attention, context or ASPP branches) before the second squeeze, where maps are largest.
SMALL_WIDTHS: list[list[int]] = [[4, 4, 4]] * 5 + [[8, 8, 8]] * 6 + [[16, 16, 16]] * 6 + [[32, 32, 32]] * 7

_BASE: dict[str, Any] = {
    "in_channels": 1,
    "image_size": 182,
    "background": 0.0,
    "masks": PAPER_MASKS,
    "squeeze_before": [5, 11, 17],
    "split_after": [7, 13, 19],
    "embed_dim": 32,
    "scale_bound": 0.5,
    "shared_nets": False,
    "lite_steps": [],
    "dropout": 0.1,
    "actnorm_init_images": 64,
    "architecture": "compact",
    "head": "conv",
    "checker_phase": "same",  # "alternating" / "authors": checkerboard phase flips per channel (masks.py)
    "refinements": sorted(REFINEMENTS),  # the project's changes to the authors' blocks (nets.REFINEMENTS)
}

#: keys added after checkpoints were first written, with the value those checkpoints used
LEGACY_DEFAULTS: dict[str, Any] = {
    "architecture": "compact",
    "head": "conv",
    "checker_phase": "same",
    "refinements": sorted(REFINEMENTS),
}

#: the refinements the ablation kept (each lowered the validation bits per dimension of the tasks it
#: applies to, averaged over two seeds; magicflow/flow/README.md, "Refinements"; config/ablation.yaml)
REFINED: list[str] = ["cbam_wide", "film_identity", "label_mlp", "lu_1x1", "resblock_groupnorm"]

_PAPER: dict[str, Any] = {
    **_BASE,
    "widths": PAPER_WIDTHS,
    "architecture": "authors",
    "embed_dim": 128,
    "shared_nets": True,
    "dropout": 0.3,
    "checker_phase": "authors",
    "head": "dense",
    "refinements": [],
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    "refined": {**_PAPER, "refinements": REFINED},
    "lite": {**_BASE, "widths": PAPER_WIDTHS},
    "small": {**_BASE, "widths": SMALL_WIDTHS, "embed_dim": 16, "shared_nets": True, "lite_steps": list(range(11))},
}

COUPLINGS = ("generation", "classification")


def preset_config(name: str, num_classes: int, coupling: str = "generation", **overrides: Any) -> dict[str, Any]:
    """A full config for preset ``name``; ``overrides`` replace individual keys (e.g. image_size)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    if coupling not in COUPLINGS:
        raise InputError(f"unknown coupling {coupling!r}; expected one of {COUPLINGS}")
    config = copy.deepcopy(PRESETS[name])
    config.update(num_classes=num_classes, coupling=coupling)
    config.update(copy.deepcopy(overrides))
    return config
