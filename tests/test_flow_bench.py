"""Smoke test: the benchmark runs on CPU at a tiny size and prints the documented JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from magicflow.errors import InputError
from magicflow.flow import bench


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def test_bench_tiny_cpu_json(capsys):
    args = parse(["--device", "cpu", "--preset", "small", "--size", "16", "--batch", "2", "--steps", "1",
                  "--sample-batch", "2", "--classes", "3", "--bf16"])
    assert bench.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"].startswith("cpu")
    keys = {"parameters", "train_step_ms", "peak_gpu_memory_mib", "images_per_s", "classify_ms_per_image",
            "reconstruction_max_error", "bf16_predictions_equal_fp32"}
    for kind in ("generation", "classification"):
        figures = report["magicflow"][kind]
        assert keys <= set(figures)
        assert figures["parameters"] > 0 and figures["train_step_ms"] > 0 and figures["images_per_s"] > 0
        assert figures["peak_gpu_memory_mib"] is None  # CPU run
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
