"""Peak memory of a training step, known before training rather than found by crashing.

:func:`estimate_training_memory` runs the training step itself
(:func:`magicflow.experiments.train.train_step`: forward, backward, clipping, fused Adam) once
on a copy of the model made of fake tensors (``FakeTensorMode``: shapes, dtypes and devices,
no data and no arithmetic) and adds up the bytes of the tensor storages alive after every
operation; the step before it is replayed as state (weights, buffers, last step's gradients,
Adam's two moments). Autocast, activation checkpointing and the batch all act in that pass,
so the figure follows ``precision``, ``checkpointing``, ``batch_size``, ``image_size`` and the
preset without a formula per layer. It costs seconds of CPU, never device memory.

:func:`measure_training_peak` is the real figure the estimate is checked against: on CPU the
allocations and frees that the profiler records from PyTorch's CPU allocator, on CUDA
``torch.cuda.max_memory_allocated``. Both count the model, its optimiser state, one batch
and the step, not the CUDA context or the caching allocator's slack, which
:func:`check_fits` leaves room for."""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from magicflow.errors import InputError
from magicflow.experiments.train import TrainSettings, make_optimizer, resolve_precision, train_step

if TYPE_CHECKING:
    from magicflow.experiments.data import SliceSet
    from magicflow.flow.model import MagicFlow

#: share of the free device memory kept back for what the estimate does not count: the caching
#: allocator's block rounding and fragmentation, cuDNN workspaces, the batch's augmentation
HEADROOM = 0.10
#: fixed bytes kept back on top (cuBLAS/cuDNN handles and their workspaces)
RESERVED_BYTES = 512 * 2**20
GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one training step and the part of it that does not grow with the batch."""

    peak_bytes: int  # weights, buffers, gradients, Adam moments, the batch and the step's activations
    state_bytes: int  # weights, buffers, gradients and Adam moments: independent of the batch
    batch: int
    image_size: int
    precision: str
    checkpointing: bool

    @property
    def activation_bytes(self) -> int:
        """What grows with the batch (its images and the activations of the step)."""
        return self.peak_bytes - self.state_bytes

    def max_batch(self, budget: int) -> int:
        """The largest batch whose peak stays within ``budget`` bytes: activations grow linearly
        with the batch (every layer acts per image); 0 when even the state does not fit."""
        per_image = self.activation_bytes / self.batch
        return max(0, math.floor((budget - self.state_bytes) / per_image)) if per_image > 0 else 0

    def describe(self) -> str:
        return (
            f"{self.peak_bytes / GIB:.2f} GiB ({self.state_bytes / GIB:.2f} GiB weights, gradients and Adam state) "
            f"at {self.image_size}x{self.image_size}, batch {self.batch}, {self.precision}, "
            f"checkpointing {'on' if self.checkpointing else 'off'}"
        )


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, and their peak, as operations create and free them.
    A storage counts once however many views share it; it stops counting when it is freed."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def add(self, tensors: Iterable[Any]) -> None:
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if storage in self._seen:
                continue
            nbytes = storage.nbytes()
            self._seen[storage] = nbytes
            weakref.finalize(storage, self._free, nbytes)
            self.live += nbytes
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (torch's protocol)
        out = func(*args, **(kwargs or {}))
        self.add(tree_flatten(out)[0])
        return out


def _state_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    params = list(model.parameters())
    moments = [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return params + [p.grad for p in params if p.grad is not None] + list(model.buffers()) + moments


def estimate_training_memory(
    model: MagicFlow, batch: int, precision: str = "fp32", checkpointing: bool = False, settings: TrainSettings | None = None
) -> MemoryEstimate:
    """Peak bytes of a steady-state training step of ``model`` at ``batch`` (see the module
    docstring). ``model`` is copied, never changed, and may be on any device (a CPU model's bf16
    autocast stands in for the GPU's); ``precision`` is "fp32" or "bf16"."""
    from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

    settings = settings or TrainSettings(batch_size=batch)
    mode = FakeTensorMode()
    with FakeCopyMode(mode):
        fake = copy.deepcopy(model)  # on the model's device: a CPU model's autocast stands in for the GPU's
    device = fake._device()
    with mode:
        fake.train()
        fake.set_bf16(precision == "bf16")
        fake.set_checkpointing(checkpointing)
        x = torch.rand(batch, fake.in_channels, fake.padded_size, fake.padded_size, device=device)
        y = torch.arange(batch, device=device) % fake.num_classes
        optimizer = make_optimizer(fake, settings)
        for p in fake.parameters():  # the previous step's gradients, alive until train_step zeroes them
            p.grad = torch.zeros_like(p)
        optimizer.step()  # creates Adam's moments
        counter = _LiveBytes()
        counter.add(_state_tensors(fake, optimizer))
        state = counter.live
        counter.add([x, y])
        with counter:
            train_step(fake, optimizer, x, y, settings)
    return MemoryEstimate(counter.peak, state, batch, model.image_size, precision, checkpointing)


def measure_training_peak(model: MagicFlow, batch: int, settings: TrainSettings, steps: int = 2) -> int:
    """Real peak bytes of ``steps`` training steps of ``model`` (changed by them) on its device
    at ``batch``, counted as :func:`estimate_training_memory` counts: the model and its state,
    one batch and the step. CPU: the profiler's record of PyTorch's allocator; CUDA: the peak
    of the caching allocator's allocated bytes."""
    from torch.profiler import ProfilerActivity, profile

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(0)
    x = model.dequantise(
        torch.rand(batch, model.in_channels, model.image_size, model.image_size, device=device), settings.dequantize, generator
    )
    y = torch.arange(batch, device=device) % model.num_classes
    model.train()
    before = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers(), x, y]}
    base = sum(before.values())

    def run() -> None:
        optimizer = make_optimizer(model, settings)
        for _ in range(steps):
            train_step(model, optimizer, x, y, settings)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        allocated = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - allocated + base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted(
        ((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e[0]
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return base + peak


def check_fits(estimate: MemoryEstimate, free_bytes: int, where: str, alternatives: dict[str, MemoryEstimate]) -> None:
    """Raise one line naming the settings to change when ``estimate`` (plus :data:`HEADROOM`
    and :data:`RESERVED_BYTES`) exceeds ``free_bytes``; ``alternatives`` maps a setting
    (``training.checkpointing: true``) to its estimate, quoted when it would fit."""
    budget = usable_bytes(free_bytes)
    if estimate.peak_bytes <= budget:
        return
    fixes = [f"{name} (about {alt.peak_bytes / GIB:.1f} GiB)" for name, alt in alternatives.items() if alt.peak_bytes <= budget]
    largest = estimate.max_batch(budget)
    if 0 < largest < estimate.batch:
        fixes.append(f"training.batch_size: {largest} or lower")
    fixes.append("a smaller image_size or preset")
    raise InputError(
        f"training needs about {estimate.peak_bytes / GIB:.1f} GiB on {where} but {free_bytes / GIB:.1f} GiB is free "
        f"({estimate.image_size}x{estimate.image_size}, batch {estimate.batch}, {estimate.precision}, "
        f"checkpointing {'on' if estimate.checkpointing else 'off'}): set " + ", or ".join(fixes)
    )


def usable_bytes(free_bytes: int) -> int:
    """What of the device's free memory a training step may plan to use."""
    return int(free_bytes * (1 - HEADROOM)) - RESERVED_BYTES


def plan_memory(model: MagicFlow, settings: TrainSettings, device: torch.device, train: SliceSet) -> bool:
    """Before training: estimate a training step's peak memory
    (:func:`estimate_training_memory`, on ``model`` before it moves).
    On CUDA, stop with one line naming the setting to change when the step will not fit in the
    device's free memory. On the CPU nothing is estimated: host memory is what the job's
    ``mem_mb`` reserves, and the estimate's fake-tensor pass costs seconds per job that CPU runs
    (the demo's) cannot spare; ``magicflow bench --memory`` gives it. Returns whether the
    training set fits on the device beside the step (:func:`magicflow.experiments.train.train_model`'s ``data_on_device``);
    where it does not, it stays in host memory and moves per batch."""
    data_bytes = train.images.nbytes + train.labels.nbytes
    if device.type != "cuda":
        print(f"memory: training on the CPU, not estimated (magicflow bench --memory); training set {data_bytes / GIB:.2f} GiB")
        return True
    precision = resolve_precision(settings.precision, device)
    estimate = estimate_training_memory(model, settings.batch_size, precision, settings.checkpointing, settings)
    free, _ = torch.cuda.mem_get_info(device)
    alternatives = {}
    if estimate.peak_bytes > usable_bytes(free):
        if not settings.checkpointing:
            alternatives["training.checkpointing: true"] = estimate_training_memory(
                model, settings.batch_size, precision, True, settings
            )
        if precision == "fp32" and torch.cuda.is_bf16_supported():
            alternatives["training.precision: bf16"] = estimate_training_memory(
                model, settings.batch_size, "bf16", settings.checkpointing, settings
            )
    check_fits(estimate, free, str(device), alternatives)
    on_device = data_fits(estimate.peak_bytes, data_bytes, free)
    print(
        f"memory: a training step needs about {estimate.describe()}; {free / GIB:.1f} GiB free on {device}; "
        f"training set {data_bytes / GIB:.2f} GiB {'on the device' if on_device else 'in host memory, moved per batch'}"
    )
    return on_device


def data_fits(step_bytes: int, data_bytes: int, free_bytes: int) -> bool:
    """Whether the training set can live on the device beside a step of ``step_bytes``."""
    return step_bytes + data_bytes <= usable_bytes(free_bytes)
