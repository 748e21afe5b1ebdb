"""torchvision without its compiled operators, where its wheel was built for another torch.

timm (the discriminative baselines) requires torchvision, and pip installs PyPI's torchvision,
which is linked against the CUDA build of torch. Beside a CPU-only torch (this project's pip
route: ``torch==2.13.0+cpu`` from local wheels) its ``_C`` extension cannot load, and torchvision
then fails to import at all: its ``_meta_registrations`` registers a fake kernel for
``torchvision::nms``, an operator that only ``_C`` defines ("operator torchvision::nms does not
exist"). Every library that imports torchvision (timm, torchmetrics, MONAI) would fail with it.

:func:`install` (called when ``magicflow`` is imported; it imports nothing itself) puts a finder
first on ``sys.meta_path`` that acts once, when torchvision is first imported: it tries to load
the extension, and only if that fails declares the schemas of the two operators torchvision
registers fake kernels for, so that the import succeeds. torchvision's Python code (transforms,
``FrozenBatchNorm2d``, model definitions) then works; its compiled detection operators (NMS,
RoIAlign) raise torchvision's own "not compiled" error, and nothing here uses them. Where the
extension loads (a matching torchvision, the conda environment) nothing is changed."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

#: operators torchvision registers fake (meta) kernels for with torch.library.register_fake,
#: which fails when the operator is undefined; schemas as torchvision's csrc/ops declares them
_FAKE_REGISTERED = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # the torch.library fragment holding those schemas (kept alive: dropping it removes them)
#: why the extension did not load, when it did not (None: it loaded, or torchvision is absent)
extension_error: str | None = None


def _prepare() -> None:
    global _library, extension_error
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    extensions = sorted(Path(spec.origin).parent.glob("_C*.so")) + sorted(Path(spec.origin).parent.glob("_C*.pyd"))
    if not extensions:
        return
    import torch

    try:
        torch.ops.load_library(str(extensions[0]))
        return
    except OSError as error:  # e.g. libc10_cuda.so: the wheel is CUDA-linked, this torch is not
        extension_error = str(error)
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _FAKE_REGISTERED:
        try:
            _library.define(schema)
        except RuntimeError:  # defined already: nothing to add
            pass


class _Finder(importlib.abc.MetaPathFinder):
    """Runs :func:`_prepare` before torchvision's first import, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
            _prepare()
        return None  # the import itself goes on as usual


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
