"""File writing that never leaves half-written outputs behind.

Every stage writes through :func:`atomic_path` or :func:`atomic_dir`: the work goes to a
temporary sibling and is renamed into place only once it is complete, so a crash or a bad
input leaves either the previous complete result or nothing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.tsv``) so libraries that
    infer the format from the name write the right thing."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes it private (0600); results should read like any file
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the result should read like any folder
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically, keys sorted so reruns give identical bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def state_dict_in(payload: Any, path: Path, what: str) -> dict:
    """The name -> tensor dict inside a loaded weights file: plain, or nested under ``state_dict``
    / ``model`` (as training scripts save it). ``what`` names the dict in the error (e.g.
    "state dict", "RadImageNet state dict"); anything else is an InputError naming ``path``."""
    import torch

    from magicflow.errors import InputError

    while isinstance(payload, dict):
        inner = next((payload[k] for k in ("state_dict", "model") if isinstance(payload.get(k), dict)), None)
        if inner is None:
            break
        payload = inner
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise InputError(f"{path} holds no {what} (expected name -> tensor, plain or under 'state_dict' / 'model')")
    return payload
