"""Smoke test: the benchmark runs on CPU at a tiny size and prints the documented JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from magicflow.errors import InputError
from magicflow.experiments import bench


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.slow
def test_bench_tiny_cpu_json(capsys):
    args = parse(
        [
            "--device",
            "cpu",
            "--preset",
            "small",
            "--size",
            "16",
            "--batch",
            "2",
            "--steps",
            "1",
            "--sample-batch",
            "2",
            "--classes",
            "3",
            "--bf16",
            "--flops-size",
            "16",
        ]
    )
    assert bench.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"].startswith("cpu")
    assert set(report["capacity"]) == {"generation", "classification_conv"}  # no dense head in compact nets
    assert report["capacity"]["generation"]["parameters"] == report["magicflow"]["generation"]["parameters"]
    keys = {
        "parameters",
        "operations_per_step",
        "operations_most_common",
        "train_step_ms",
        "peak_gpu_memory_mib",
        "images_per_s",
        "classify_ms_per_image",
        "reconstruction_max_error",
        "bf16_predictions_equal_fp32",
    }
    for kind in ("generation", "classification"):
        figures = report["magicflow"][kind]
        assert keys <= set(figures)
        assert figures["parameters"] > 0 and figures["train_step_ms"] > 0 and figures["images_per_s"] > 0
        assert figures["peak_gpu_memory_mib"] is None  # CPU run
        assert figures["operations_per_step"] >= sum(figures["operations_most_common"].values()) > 0
        assert figures["reconstruction_max_error"] < 1e-3
    peer = report["peer"]
    if peer["available"]:
        assert {"parameters", "train_step_ms", "images_per_s", "classify_ms_per_image"} <= set(peer)
        assert set(report["ratio_to_peer"]) == {"generation", "classification"}
    else:
        assert peer["reason"]


def test_bench_rejects_bad_options():
    with pytest.raises(InputError, match="size"):
        bench.run(parse(["--device", "cpu", "--size", "4"]))


@pytest.mark.slow
def test_paper_capacity_matches_the_authors_within_tolerance():
    """The issue's bar: parameters within 10 % of the authors' at 7 classes (generation 36.2 M,
    classification with dense heads 151.6 M at 182x182) and forward FLOPs within 15 % of their
    27 GFLOP per 64x64 image. Built and counted on the meta device: no arithmetic runs."""
    import torch

    from magicflow.flow import MagicFlow, preset_config

    def parameters(coupling: str, head: str = "conv") -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in MagicFlow.from_preset("paper", 7, coupling, head=head).parameters())

    generation = parameters("generation")
    assert abs(generation / bench.AUTHORS["generation"]["parameters"] - 1) < 0.10
    dense = parameters("classification", "dense")
    assert abs(dense / bench.AUTHORS["classification_dense"]["parameters"] - 1) < 0.10
    assert parameters("classification") < dense / 5  # the conv head: a fraction of the dense one
    gflop = bench.forward_gflop(preset_config("paper", 7, image_size=64), 64)
    assert abs(gflop / bench.AUTHORS["generation"]["forward_gflop_per_image"] - 1) < 0.15


def test_forward_flops_of_one_conv_by_hand():
    """FlopCounterMode counts 2 per multiply-add: check the helper's convention on a toy."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(3, 5, 3, padding=1).to("meta")
    with FlopCounterMode(display=False) as counter:
        conv(torch.zeros(1, 3, 8, 8, device="meta"))
    assert counter.get_total_flops() == 2 * 3 * 5 * 9 * 64


@pytest.mark.slow  # seven processes, each importing torch: about a minute of CPU
def test_gpu_check_script_reports_every_variant_on_its_own_line():
    """The prepared GPU check, as shipped, on CPU at a tiny size: one JSON line per variant as it
    finishes; the compiled variants get a 1 s limit here, so they time out and say so on their own
    lines while every other variant still reports its figures."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "workflow" / "scripts" / "gpu_check.sh"
    tiny = ["--device", "cpu", "--preset", "small", "--size", "8", "--flops-size", "8", "--batch", "2"]
    tiny += ["--sample-batch", "2", "--steps", "1", "--classes", "2", "--no-peer"]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_CHECK_COMPILE_S": "1"}
    done = subprocess.run(["bash", str(script), *tiny], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["variant"] for line in lines] == [
        "fp32_generation",
        "bf16_generation",
        "bf16_compile_generation",
        "fp32_classification",
        "bf16_classification",
        "bf16_compile_classification",
        "capacity_and_peer",
    ]
    by_name = {line["variant"]: line for line in lines}
    for kind in ("generation", "classification"):
        for name in (f"fp32_{kind}", f"bf16_{kind}"):
            figures = by_name[name]["magicflow"][kind]
            assert set(by_name[name]["magicflow"]) == {kind}  # one coupling per process
            assert figures["train_step_ms"] > 0 and figures["first_step_s"] > 0
            assert figures["reconstruction_max_error"] < 0.05
            assert figures["targets_met"]["peak_gpu_memory_mib"] is None  # no GPU memory on CPU
        assert by_name[f"bf16_{kind}"]["settings"]["bf16"] and not by_name[f"fp32_{kind}"]["settings"]["bf16"]
        assert by_name[f"bf16_compile_{kind}"]["error"] == "timed out after 1 s"
    last = by_name["capacity_and_peer"]
    assert last["magicflow"] == {} and "generation" in last["capacity"] and last["targets"]["train_step_ms"] == 250.0


@pytest.mark.slow
def test_bench_compiled_variant_reports_its_first_step_apart(capsys):
    """--compile (eager backend on CPU): the first, compiling step is reported apart from the step time."""
    args = parse(
        ["--device", "cpu", "--preset", "small", "--size", "8", "--batch", "2", "--steps", "1", "--sample-batch", "2"]
        + ["--classes", "2", "--coupling", "generation", "--compile", "--compile-backend", "eager", "--no-peer"]
        + ["--no-capacity", "--jsonl", "--label", "tiny"]
    )
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one line
    report = json.loads(out)
    assert report["variant"] == "tiny" and report["settings"]["compile"] and "capacity" not in report
    assert set(report["magicflow"]) == {"generation"} and report["magicflow"]["generation"]["first_step_s"] > 0


@pytest.mark.slow
def test_bench_memory_estimates_each_kind_with_and_without_checkpointing(capsys):
    """``--memory`` estimates without running a step (``--coupling none``): checkpointing keeps
    less, the weights and Adam state are the same either way."""
    args = parse(
        ["--device", "cpu", "--preset", "small", "--size", "16", "--batch", "2", "--coupling", "none", "--memory"]
        + ["--no-peer", "--no-capacity", "--classes", "3"]
    )
    assert bench.run(args) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert memory["precision"] == "fp32"
    for kind in ("generation", "classification"):
        figures = memory[kind]
        assert 0 < figures["state_mib"] < figures["peak_mib_checkpointing"] < figures["peak_mib_plain"]
