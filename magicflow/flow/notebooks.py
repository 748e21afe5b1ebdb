"""The authors' model, built from their public notebooks (luca2245/MAGIC-Flow) at run time.

Nothing of theirs is stored in this repository: given a checkout or a bare git copy of their
repository (``MAGICFLOW_AUTHORS_NOTEBOOKS``), :func:`authors_namespace` executes the notebook cells
that define their classes (the coupling networks, ActNorm, the 1x1 convolution, the flow) into a
fresh namespace, so tests/test_authors_notebooks.py can compare the ``paper`` preset with them
block for block and ``magicflow bench`` can time them beside ours. The cells are located by their
ids at the commit read (:data:`AUTHORS_COMMIT`), and a missing cell is an error that says which."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from magicflow.errors import InputError

#: the commit of luca2245/MAGIC-Flow the cells below were read at (its code is the first commit's)
AUTHORS_COMMIT = "4646c769d9b58366ffb840ccf57676092f80930e"
#: environment variable naming a checkout or a bare git copy of their repository
NOTEBOOKS_ENV = "MAGICFLOW_AUTHORS_NOTEBOOKS"

#: per task: (notebook, ids of the cells defining the coupling network and its blocks), then the
#: model notebook and the id of its cell defining ActNorm, the 1x1 convolution and the flow
_CELLS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "generation": (
        "generation/coupling_layer_gen.ipynb",
        ("bb1c188d", "0d3cf0d7", "48879c9d"),
        "generation/magic_flow_model.ipynb",
        "8a02ed5a",
    ),
    "classification": (
        "classification/coupling_layer_cls.ipynb",
        ("2a3a97d1", "517202e9", "9f2a33b9"),
        "classification/magic_flow_model.ipynb",
        "58a84761",
    ),
}


def notebooks_root() -> Path | None:
    """The checkout or git directory named by :data:`NOTEBOOKS_ENV`, if it exists."""
    value = os.environ.get(NOTEBOOKS_ENV)
    return Path(value) if value and Path(value).exists() else None


def _read(root: Path, path: str) -> dict[str, Any]:
    """A notebook from a checkout (its file) or a bare git copy (``git show`` at the commit read)."""
    if (root / path).is_file():
        return json.loads((root / path).read_text(encoding="utf-8"))
    try:
        text = subprocess.run(
            ["git", "--git-dir", str(root), "show", f"{AUTHORS_COMMIT}:{path}"], check=True, capture_output=True, text=True
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise InputError(
            f"{root}: neither a checkout with {path} nor a git copy holding it at {AUTHORS_COMMIT}: {detail.strip()}"
        ) from err
    return json.loads(text)


def _cell(notebook: dict[str, Any], cell_id: str, path: str) -> str:
    for cell in notebook["cells"]:
        if cell.get("id") == cell_id and cell["cell_type"] == "code":
            return "".join(cell["source"])
    raise InputError(f"{path}: no code cell with id {cell_id!r} (their notebooks changed since {AUTHORS_COMMIT[:7]}?)")


def authors_namespace(root: Path, task: str) -> dict[str, Any]:
    """Execute the cells defining the authors' ``task`` model ("generation" or
    "classification") and return their namespace: ``Coupling``, ``CondMSRealNVP``,
    ``ActNormLayer``, ``Invertible1x1Conv`` and the blocks. The model notebook's import cell (an
    ``ipynb`` package import) is replaced by the two imports it stands for."""
    if task not in _CELLS:
        raise InputError(f"unknown task {task!r}; expected one of {sorted(_CELLS)}")
    coupling_path, coupling_cells, model_path, model_cell = _CELLS[task]
    coupling = _read(root, coupling_path)
    namespace: dict[str, Any] = {"__name__": f"magicflow_authors_{task}"}
    source = "\n\n".join(_cell(coupling, cell_id, coupling_path) for cell_id in coupling_cells)
    source += "\n\nimport torch.distributions as dist\n\n" + _cell(_read(root, model_path), model_cell, model_path)
    exec(compile(source, f"<{coupling_path} + {model_path}>", "exec"), namespace)  # noqa: S102 - their published code, on request
    return namespace
