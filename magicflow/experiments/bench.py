"""``magicflow bench``: capacity, speed and memory of MAGIC-Flow against a plain conditional Glow.

Prints one JSON object. ``capacity``: parameters (at ``--size``) and forward GFLOP per image
(at ``--flops-size``, 64 as the authors quoted it) of the generation coupling and of the
classification coupling with both heads, beside the authors' figures and their ratios. Then
for each coupling kind of the chosen preset, parameters, the ATen operations of one training
step (forward, backward, clipping, Adam; counted below autograd, so the same on every device,
not counted when compiled), training step time and peak GPU memory at ``--batch``, generated images per second at
``--sample-batch``, classification time per image over ``--classes`` labels and the
reconstruction error; then the same figures for a conditional Glow of equal depth (24
steps) from ``normflows``, and our figures as ratios to it. With ``--memory``, ``memory``:
the estimated peak of a training step per coupling kind at ``--size`` and ``--batch``, with
and without activation checkpointing (:mod:`magicflow.experiments.memory`; no step runs, so the
``paper`` preset at 182x182 is estimated on a CPU), and each timed kind's estimate beside its
measured peak. Runs on CPU at tiny sizes as a smoke test (``--size 32 --batch 2 --steps 2``)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from magicflow.errors import InputError
from magicflow.flow.layers import pad_amounts
from magicflow.experiments.memory import estimate_training_memory
from magicflow.flow.model import MagicFlow, use_fast_cuda_kernels
from magicflow.flow.nets import HEADS
from magicflow.flow.presets import COUPLINGS, PRESETS

#: the authors' model (MODEL-FACTS, from their notebooks) at 7 classes; the dense head's
#: parameters depend on the image side, quoted at 182x182
AUTHORS = {
    "generation": {"parameters": 36.2e6, "forward_gflop_per_image": 27.0},
    "classification_dense": {"parameters": 151.6e6, "forward_gflop_per_image": None},
}
AUTHORS_SIZE = {"classification_dense": 182}


def forward_gflop(config: dict[str, Any], size: int) -> float:
    """Forward FLOPs of one ``size`` x ``size`` image through a model of ``config``, counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add) on the meta device,
    so no arithmetic runs and any size is instant."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        probe = MagicFlow({**config, "image_size": size}).train()  # a dense head follows the size; train: no caches
    x = torch.zeros(1, config["in_channels"], probe.padded_size, probe.padded_size, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe._flow(x, y, per_position=False)
    return counter.get_total_flops() / 1e9


def capacity(preset: str, classes: int, size: int, flops_size: int) -> dict[str, dict[str, Any]]:
    """Parameters and forward GFLOP of the generation and both classification couplings,
    with the authors' figures and ratios where they are known (the ``paper`` preset)."""
    out: dict[str, dict[str, Any]] = {}
    for name, coupling, head in (
        ("generation", "generation", "conv"),
        ("classification_conv", "classification", "conv"),
        ("classification_dense", "classification", "dense"),
    ):
        if head == "dense" and PRESETS[preset]["architecture"] != "authors":
            continue
        with torch.device("meta"):  # shapes only: a 152 M-parameter model builds in a second
            model = MagicFlow.from_preset(preset, classes, coupling, image_size=size, head=head)
        figures: dict[str, Any] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "forward_gflop_per_image": forward_gflop(model.config, flops_size),
        }
        reference = AUTHORS.get(name) if preset == "paper" and AUTHORS_SIZE.get(name, size) == size else None
        if reference:
            figures["authors"] = reference
            figures["ratio_to_authors"] = {k: figures[k] / v for k, v in reference.items() if v}
        out[name] = figures
        del model
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--size", type=int, default=182, help="image side (182 for the MNI slice)")
    parser.add_argument("--batch", type=int, default=8, help="training and classification batch")
    parser.add_argument("--sample-batch", type=int, default=64, help="batch for the generation figure")
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per figure")
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument(
        "--head", choices=HEADS, default=None, help="head of the timed classification coupling (default: the preset's)"
    )
    parser.add_argument(
        "--flops-size", type=int, default=64, help="image side of the FLOP count (the authors quote 27 GFLOP at 64x64)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the coupling networks"
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="bfloat16 autocast inside coupling networks (log-dets stay fp32)",
    )
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True, help="allow TF32 matmul/conv on CUDA")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="spatial convolutions of the coupling networks in channels-last layout (faster on CPU)",
    )
    parser.add_argument(
        "--peer", action=argparse.BooleanOptionalAction, default=True, help="also measure the normflows conditional Glow"
    )
    parser.add_argument(
        "--coupling",
        choices=(*COUPLINGS, "all", "none"),
        default="all",
        help="which coupling kinds to time (none: capacity and peer only); the GPU check runs one per process",
    )
    parser.add_argument("--label", default=None, help="a name for this run, echoed as the JSON's 'variant'")
    parser.add_argument(
        "--capacity", action=argparse.BooleanOptionalAction, default=True, help="count parameters and FLOPs (a few seconds)"
    )
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="estimate a training step's peak memory, with and without checkpointing (seconds per estimate)",
    )
    parser.add_argument(
        "--checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="activation checkpointing of the coupling networks in the timed training step",
    )
    parser.add_argument("--jsonl", action="store_true", help="print the JSON on one line (the GPU check appends lines)")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (aot_eager traces without a C++ toolchain, for CPU smoke tests)",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _first_call_s(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn``: the warm-up, where ``torch.compile`` compiles."""
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _timed_ms(fn: Callable[[], Any], repeats: int, device: torch.device, warm_up: bool = True) -> float:
    """Median wall time of ``fn`` in ms (after one warm-up call unless ``warm_up`` is False)."""
    if warm_up:
        fn()
        _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _peak_memory(device: torch.device, fn: Callable[[], Any]) -> float | None:
    """Peak GPU memory in MiB while ``fn`` runs; ``None`` on CPU."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


class OperationLog(TorchDispatchMode):
    """The names of the ATen operations that reach the dispatcher below autograd, in order: each
    is a kernel launch or a tensor's metadata change, the work a GPU pays for per operation
    whatever its size."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def count_operations(fn: Callable[[], Any]) -> Counter[str]:
    """ATen operations per name over one call of ``fn`` (deterministic for a given model, batch
    and torch version: nothing here depends on timing or on the device)."""
    with OperationLog() as log:
        fn()
    return Counter(log.ops)


def _train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def _head(args: argparse.Namespace, coupling: str) -> dict[str, str]:
    """The ``--head`` override of a classification coupling (none: the preset's own head)."""
    return {"head": args.head} if args.head and coupling == "classification" else {}


def _measure_ours(args: argparse.Namespace, coupling: str, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = MagicFlow.from_preset(args.preset, args.classes, coupling, image_size=args.size, **_head(args, coupling))
    precision = "bf16" if args.bf16 else "fp32"
    estimate = estimate_training_memory(model, args.batch, precision, args.checkpointing) if args.memory else None
    model = model.to(device)
    model.set_channels_last(args.channels_last)
    model.set_checkpointing(args.checkpointing)
    x = torch.rand(args.batch, 1, args.size, args.size, device=device)
    y = torch.arange(args.batch, device=device) % args.classes
    model.train()
    with torch.no_grad():  # ActNorm data initialisation before any count or timing
        for _ in range(math.ceil(model.config["actnorm_init_images"] / args.batch)):
            model.log_prob(x, y)
    if args.compile:
        model.compile_networks(backend=args.compile_backend)
    model.set_bf16(args.bf16)
    from magicflow.experiments.train import TrainSettings, make_optimizer, train_step  # training's own step

    settings = TrainSettings(batch_size=args.batch)
    optimizer = make_optimizer(model, settings)
    dequantised = model.dequantise(x, settings.dequantize)

    def step() -> None:
        train_step(model, optimizer, dequantised, y, settings)

    first_step_s = _first_call_s(step, device)  # compilation, where compiled, lands here
    operations = Counter() if args.compile else count_operations(step)  # compiled kernels bypass the dispatcher
    result: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "operations_per_step": sum(operations.values()) or None,
        "operations_most_common": dict(operations.most_common(8)),
        "first_step_s": first_step_s,
        "train_step_ms": _timed_ms(step, args.steps, device, warm_up=False),
        "peak_gpu_memory_mib": _peak_memory(device, step),
    }
    if estimate is not None:
        result["estimated_peak_memory_mib"] = estimate.peak_bytes / 2**20
    model.eval()
    labels = torch.arange(args.sample_batch, device=device) % args.classes
    with torch.no_grad():
        sample_ms = _timed_ms(lambda: model.sample(labels), args.steps, device)
        result["images_per_s"] = args.sample_batch / (sample_ms / 1000)
        result["classify_ms_per_image"] = _timed_ms(lambda: model.class_log_likelihoods(x), args.steps, device) / args.batch
        latents, _ = model(x, y)
        result["reconstruction_max_error"] = float((model.inverse(latents, y) - x).abs().max())
        if args.bf16:
            predicted = model.class_log_likelihoods(x).argmax(1)
            model.set_bf16(False)
            reference = model.class_log_likelihoods(x).argmax(1)
            result["bf16_predictions_equal_fp32"] = bool(torch.equal(predicted, reference))
    result["targets_met"] = _meets(result)
    return result


def memory_estimates(args: argparse.Namespace, kinds: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Estimated peak MiB (and the batch-independent state's) of one training step per coupling
    kind, with and without activation checkpointing, in ``--bf16``'s precision."""
    precision = "bf16" if args.bf16 else "fp32"
    out: dict[str, dict[str, float]] = {}
    for kind in kinds:
        torch.manual_seed(args.seed)
        model = MagicFlow.from_preset(args.preset, args.classes, kind, image_size=args.size, **_head(args, kind))
        figures: dict[str, float] = {}
        for checkpointing in (False, True):
            estimate = estimate_training_memory(model, args.batch, precision, checkpointing)
            suffix = "checkpointing" if checkpointing else "plain"
            figures[f"peak_mib_{suffix}"] = estimate.peak_bytes / 2**20
            figures["state_mib"] = estimate.state_bytes / 2**20
        out[kind] = figures
    return out


def glow_peer_widths(preset: str) -> list[int]:
    """Hidden width per peer level, coarsest first: the median widest coupling layer of our
    steps at that resolution (after 3, 2 and 1 squeezes)."""
    config = PRESETS[preset]
    bounds = [*config["squeeze_before"], len(config["widths"])]
    per_scale = [config["widths"][a:b] for a, b in zip(bounds, bounds[1:])]
    return [int(statistics.median(w[2] for w in steps)) for steps in reversed(per_scale)]


def build_glow_peer(num_classes: int, side: int, hidden: list[int]) -> torch.nn.Module:
    """normflows' multiscale Glow: 3 levels x 8 Glow blocks = 24 steps, class-conditional base.

    As in normflows' own Glow example, level 0 is the coarsest and every level starts with a
    squeeze, so unlike MAGIC-Flow it has no full-resolution steps."""
    import normflows as nf

    levels, blocks = 3, 8
    flows, merges, bases = [], [], []
    for i in range(levels):
        level = [nf.flows.GlowBlock(2 ** (levels + 1 - i), hidden[i], split_mode="channel", scale=True) for _ in range(blocks)]
        flows.append(level + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            shape = (2 ** (levels - i), side // 2 ** (levels - i), side // 2 ** (levels - i))
        else:
            shape = (2 ** (levels + 1), side // 2**levels, side // 2**levels)
        bases.append(nf.distributions.ClassCondDiagGaussian(shape, num_classes))
    return nf.MultiscaleFlow(bases, flows, merges, class_cond=True)


def _measure_peer(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    try:
        import normflows  # noqa: F401
    except Exception as error:  # not installed or incompatible with this torch
        return {"available": False, "reason": f"normflows not importable: {error}"}
    torch.manual_seed(args.seed)
    side = args.size + sum(pad_amounts(args.size, 8))
    hidden = glow_peer_widths(args.preset)
    with warnings.catch_warnings():  # normflows' LU init calls a deprecated torch.lu
        warnings.simplefilter("ignore", UserWarning)
        model = build_glow_peer(args.classes, side, hidden).to(device)
    x = torch.rand(args.batch, 1, side, side, device=device)
    y = torch.arange(args.batch, device=device) % args.classes
    model.train()
    step = _train_step(model, lambda: -model.log_prob(x, y).mean())
    result: dict[str, Any] = {
        "available": True,
        "library": f"normflows {normflows.__version__}",
        "hidden_channels": hidden,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_step_ms": _timed_ms(step, args.steps, device),
        "peak_gpu_memory_mib": _peak_memory(device, step),
    }
    model.eval()
    labels = torch.arange(args.sample_batch, device=device) % args.classes
    with torch.no_grad():
        sample_ms = _timed_ms(lambda: model.sample(args.sample_batch, labels), args.steps, device)
        result["images_per_s"] = args.sample_batch / (sample_ms / 1000)

        def classify() -> torch.Tensor:  # the peer has no batched-label pass: one pass per label
            return torch.stack([model.log_prob(x, torch.full_like(y, k)) for k in range(args.classes)], 1)

        result["classify_ms_per_image"] = _timed_ms(classify, args.steps, device) / args.batch
        z, _ = model.inverse_and_log_det(x)
        back, _ = model.forward_and_log_det(z)
        result["reconstruction_max_error"] = float((back - x).abs().max())
    return result


_RATIO_KEYS = ("parameters", "train_step_ms", "peak_gpu_memory_mib", "images_per_s", "classify_ms_per_image")


def _ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    return {key: (ours[key] / peer[key] if ours.get(key) is not None and peer.get(key) else None) for key in _RATIO_KEYS}


#: the issue's GPU targets for the paper preset on one H100/H200 (issue 17, item 8)
GPU_TARGETS = {"train_step_ms": 250.0, "peak_gpu_memory_mib": 12 * 1024.0, "images_per_s": 400.0, "classify_ms_per_image": 2.0}


def _meets(figures: dict[str, Any]) -> dict[str, bool | None]:
    """Per target: met, missed, or None where the figure does not exist (CPU memory)."""
    out: dict[str, bool | None] = {}
    for key, bound in GPU_TARGETS.items():
        value = figures.get(key)
        out[key] = None if value is None else (value >= bound if key == "images_per_s" else value <= bound)
    return out


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    if args.flops_size < 8 or args.size < 8 or args.batch < 1 or args.steps < 1 or args.sample_batch < 1 or args.classes < 1:
        raise InputError("need --size and --flops-size >= 8 and positive --batch, --sample-batch, --steps, --classes")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if use_cuda:
        use_fast_cuda_kernels(args.tf32)
    report: dict[str, Any] = {
        **({"variant": args.label} if args.label else {}),
        "device": torch.cuda.get_device_name(device) if use_cuda else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "preset": args.preset,
        "image_size": args.size,
        "batch": args.batch,
        "sample_batch": args.sample_batch,
        "classes": args.classes,
        "settings": {
            "compile": args.compile,
            "bf16": args.bf16,
            "tf32": args.tf32 and use_cuda,
            "channels_last": args.channels_last,
            "classification_head": args.head or PRESETS[args.preset]["head"],
            "checkpointing": args.checkpointing,
        },
        "flops_size": args.flops_size,
        "targets": GPU_TARGETS,
    }
    if args.capacity:
        report["capacity"] = capacity(args.preset, args.classes, args.size, args.flops_size)
    kinds = COUPLINGS if args.coupling == "all" else () if args.coupling == "none" else (args.coupling,)
    if args.memory:
        report["memory"] = {"precision": "bf16" if args.bf16 else "fp32", **memory_estimates(args, kinds or COUPLINGS)}
    report["magicflow"] = {kind: _measure_ours(args, kind, device) for kind in kinds}
    if args.peer:
        peer = _measure_peer(args, device)
        report["peer"] = peer
        if peer.get("available"):
            report["ratio_to_peer"] = {kind: _ratios(report["magicflow"][kind], peer) for kind in kinds}
    print(json.dumps(report, indent=None if args.jsonl else 2), flush=True)
    return 0
