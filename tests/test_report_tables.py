"""The report's model tables beyond Table 3 / Tables 1-2 themselves: Table 5 (cost per model,
from training.tsv and the training jobs' Snakemake benchmarks, n/a where a file lacks a
figure), the evaluate command's options for it, and the paper's published values beside
each model where the experiment is one of the paper's tasks."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magicflow.errors import InputError
from magicflow.evaluate.experiment import cost_section, model_cost
from magicflow.evaluate.inputs import ExperimentOutputs, FoldOutputs


def _training(epochs: int, steps: int, seconds: float, parameters: int | None = 1000, images: int = 8) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "steps": [steps] * epochs,
            "images": [images] * epochs,
            "train_seconds": [seconds] * epochs,
            "seconds": [seconds + 1] * epochs,
            "peak_gpu_mb": [np.nan] * epochs,
        }
    )
    if parameters is not None:
        table["parameters"] = parameters
    return table


def _benchmark(path: Path, s: float, max_rss: float) -> Path:
    path.write_text(f"s\th:m:s\tmax_rss\tmax_vms\n{s}\t0:00:{int(s):02d}\t{max_rss}\t{max_rss * 2}\n")
    return path


def _outputs(benchmarks: list[dict]) -> ExperimentOutputs:
    folds = [
        FoldOutputs(f"fold-{k}", _training(2, 3, 1.5, parameters=36_000_000), pd.DataFrame(), {}, {}, {"train": b})
        for k, b in enumerate(benchmarks)
    ]
    return ExperimentOutputs("x", ["a", "b"], {}, folds)


def test_model_cost_sums_over_folds_takes_the_largest_peak_and_says_none_where_unknown():
    cost = model_cost(
        [_training(2, 3, 1.5), _training(1, 3, 3.0)], [{"s": 10.0, "max_rss": 500.0}, {"s": 12.0, "max_rss": 700.0}]
    )
    assert cost["parameters"] == 1000 and cost["epochs"] == 3 and cost["steps"] == 9
    assert cost["training_s"] == 6.0 and cost["wall_s"] == 22.0 and cost["peak_rss_mb"] == 700.0
    assert cost["ms_per_step"] == pytest.approx(1000 * 6.0 / 9) and cost["images_per_s"] == pytest.approx(24 / 6.0)
    assert cost["peak_gpu_mb"] is None  # CPU training: no GPU peak
    old = model_cost([_training(1, 3, 3.0, parameters=None).drop(columns="images")], [{}])
    assert old["parameters"] is None and old["images_per_s"] is None and old["wall_s"] is None and old["peak_rss_mb"] is None
    assert old["ms_per_step"] == 1000.0


def test_cost_section_has_the_flow_first_then_every_baseline_from_its_files(tmp_path: Path):
    outputs = _outputs([{"s": 20.0, "max_rss": 900.0}, {"s": 22.0, "max_rss": 950.0}])
    files = {}
    for k in range(2):
        _training(2, 2, 0.5, parameters=11_000_000).to_csv(tmp_path / f"t{k}.tsv", sep="\t", index=False)
        files[f"fold-{k}"] = (tmp_path / f"t{k}.tsv", _benchmark(tmp_path / f"b{k}.tsv", 5.0 + k, 400.0 + k))
    baselines = {
        "resnet18": {
            "settings": {"name": "resnet18", "label": "ResNet-18"},
            "training": {f: t for f, (t, _) in files.items()},
            "train_benchmark": {f: b for f, (_, b) in files.items()},
        },
        "small": {"settings": {"name": "cvae", "label": "CVAE"}, "training": {}, "train_benchmark": {}},
    }
    rows = cost_section(outputs, baselines)
    assert [r["model"] for r in rows] == ["MAGIC-Flow", "ResNet-18", "CVAE (small)"]
    flow, resnet, cvae = rows
    assert flow["parameters"] == 36_000_000 and flow["steps"] == 12 and flow["wall_s"] == 42.0 and flow["peak_rss_mb"] == 950.0
    assert resnet["parameters"] == 11_000_000 and resnet["steps"] == 8 and resnet["wall_s"] == 11.0
    assert resnet["peak_rss_mb"] == 401.0 and resnet["ms_per_step"] == 250.0
    assert cvae["folds"] == 2 and all(cvae[k] is None for k in ("parameters", "steps", "wall_s", "peak_rss_mb", "ms_per_step"))
    with pytest.raises(InputError, match="training files were given for"):
        cost_section(outputs, {"resnet18": {**baselines["resnet18"], "training": {"fold-0": files["fold-0"][0]}}})


def test_the_evaluate_options_give_each_baseline_its_training_files(tmp_path: Path):
    from magicflow.evaluate.commands import add_arguments, baseline_inputs

    (tmp_path / "r.json").write_text(json.dumps({"name": "resnet18", "kind": "discriminative"}))
    (tmp_path / "g.json").write_text(json.dumps({"name": "cvae", "kind": "generative"}))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--experiment", "e.json", "--split", "s.json", "--folds", "f", "--out-dir", "o", "--out-json", "m.json"]
    base += ["--out-tsv", "m.tsv", "--baseline", f"r={tmp_path / 'r.json'}", "--baseline", f"g={tmp_path / 'g.json'}"]
    base += ["--baseline-predictions", "r:fold-0=p.tsv", "--baseline-samples", "g:fold-0=samples"]
    args = parser.parse_args(
        [*base, "--baseline-training", "r:fold-0=rt.tsv", "--baseline-training", "g:fold-0=gt.tsv"]
        + ["--baseline-train-benchmark", "r:fold-0=rb.tsv"]
    )
    given = baseline_inputs(args)
    assert given["r"]["training"] == {"fold-0": Path("rt.tsv")} and given["r"]["train_benchmark"] == {"fold-0": Path("rb.tsv")}
    assert given["g"]["training"] == {"fold-0": Path("gt.tsv")} and given["g"]["train_benchmark"] == {}
    assert given["g"]["samples"] == {"fold-0": Path("samples")}
    with pytest.raises(InputError, match="no --baseline x=JSON"):
        baseline_inputs(parser.parse_args([*base, "--baseline-training", "x:fold-0=t.tsv"]))


def _metrics_with_cost(kind: str = "classification") -> dict:
    from test_baselines import _fold_rows
    from test_report import metrics_record

    from magicflow.evaluate.classification import model_comparison

    metrics = metrics_record()
    metrics["comparison"] = model_comparison(
        [
            {"id": "magicflow", "model": "MAGIC-Flow", "per_fold": _fold_rows([0.9, 0.8])},
            {"id": "resnet18", "model": "ResNet-18", "weights": None, "per_fold": _fold_rows([0.7, 0.75])},
        ]
    )
    metrics["comparison"]["cost"] = [
        {"id": "magicflow", "model": "MAGIC-Flow", "folds": 2, "parameters": 36_912_000, "steps": 120.0, "wall_s": 50.0,
         "peak_rss_mb": 900.0, "peak_gpu_mb": None, "ms_per_step": 810.0, "images_per_s": 9.9},
        {"id": "resnet18", "model": "ResNet-18", "folds": 2, "parameters": None, "steps": None, "wall_s": None,
         "peak_rss_mb": None, "peak_gpu_mb": None, "ms_per_step": None, "images_per_s": None},
    ]  # fmt: skip
    return metrics


def _section(page: str, anchor: str) -> str:
    return page.split(f'id="{anchor}"', 1)[1].split("</section>", 1)[0]


def _first_cells(section: str) -> list[str]:
    rows = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("</tr>")
    return [r.split("<td>", 2)[1].split("</td>")[0] for r in rows if "<td>" in r]


def test_the_report_has_table_5_with_every_model_and_n_a_for_what_is_unknown(tmp_path: Path):
    from magicflow.report.experiment import build_report

    metrics = _metrics_with_cost()
    plain = copy.deepcopy(metrics)
    plain["comparison"] = None
    assert 'id="table5"' not in build_report(plain, {}, tmp_path, {})
    section = _section(build_report(metrics, {}, tmp_path, {}), "table5")
    assert _first_cells(section) == ["MAGIC-Flow", "ResNet-18"]
    assert "36.91 M" in section and "120" in section and "810.000" in section
    resnet = section.split("ResNet-18", 1)[1].split("</tr>", 1)[0]
    assert resnet.count("n/a") == 7


def test_the_papers_values_are_keyed_by_the_shipped_task_names_and_this_pipelines_models():
    from magicflow.baselines import DISCRIMINATIVE, GENERATIVE
    from magicflow.evaluate.paper_counts import PAPER_SLICE_COUNTS
    from magicflow.evaluate.paper_results import PAPER_TABLE3, PAPER_TABLE5, PAPER_TABLES12

    assert set(PAPER_TABLE3) | set(PAPER_TABLES12) == set(PAPER_SLICE_COUNTS)
    for table in PAPER_TABLE3.values():
        assert set(table) - {"magicflow"} <= set(DISCRIMINATIVE) and len(table) == 8
    for table in [*PAPER_TABLES12.values(), PAPER_TABLE5]:
        assert set(table) - {"magicflow", "real"} <= set(GENERATIVE)
    assert PAPER_TABLE3["scanner_classification"]["magicflow"]["balanced_accuracy"] == (0.76, 0.02)
    assert PAPER_TABLE3["diagnosis_classification"]["swin"]["macro_f1"] == (0.80, 0.03)
    assert PAPER_TABLES12["scanner_generation"]["magicflow"]["kid_rad"] == 6.7e-4
    assert PAPER_TABLES12["modality_generation"]["real"]["ms_ssim_inter"] == 0.22


def test_a_paper_task_shows_the_published_values_beside_each_model_and_n_a_for_the_others(tmp_path: Path):
    from magicflow.evaluate.paper_results import paper_table3, paper_table5
    from magicflow.report.experiment import build_report

    metrics = _metrics_with_cost()
    page = build_report(copy.deepcopy(metrics), {}, tmp_path, {})
    assert "paper, Table" not in _section(page, "table3") and "paper, Table" not in _section(page, "table5")
    flow, resnet = metrics["comparison"]["models"]
    flow["paper"], resnet["paper"] = paper_table3("scanner_classification", "magicflow"), None
    cost = metrics["comparison"]["cost"]
    cost[0]["paper"], cost[1]["paper"] = paper_table5("scanner_generation", "magicflow"), None
    assert paper_table5("scanner_classification", "magicflow") is None  # Table 5 is of the generation models
    page = build_report(metrics, {}, tmp_path, {})
    table3 = _section(page, "table3")
    assert "paper, Table 3" in table3 and "bal. acc. 0.76 ± 0.02" in table3
    assert table3.split("ResNet-18", 1)[1].split("</tr>", 1)[0].endswith("<td>n/a</td>")
    table5 = _section(page, "table5")
    assert "paper, Table 5 (A100, batch 8)" in table5 and "74k steps, 21.9 h, 28 GB GPU, 1056 ms/step" in table5


def test_cost_rows_carry_the_papers_table_5_on_its_generation_tasks_only():
    for name, expected in (("scanner_generation", 1056), ("demo_scanner_generation", None)):
        outputs = _outputs([{}, {}])
        outputs.name = name
        (flow,) = cost_section(outputs, {})
        assert (flow["paper"] or {}).get("ms_per_step") == expected


def test_tables_1_2_show_the_papers_values_and_its_real_data_reference(tmp_path: Path):
    from test_report import metrics_record

    from magicflow.evaluate.paper_results import paper_tables12
    from magicflow.report.experiment import build_report

    row = {"fid": 10.0, "kid": 0.01, "precision": 0.5, "recall": 0.5, "density": 1.0, "coverage": 0.6}
    metrics = metrics_record()
    metrics["comparison"] = {
        "kind": "generation",
        "fold": "fold-0",
        "suffix": "ID",
        "n_heldout": 8,
        "reference": row,
        "paper_reference": paper_tables12("scanner_generation", "real"),
        "models": [
            {
                "id": i,
                "model": m,
                "metrics": row,
                "ms_ssim": {},
                "figure": "x.png",
                "paper": paper_tables12("scanner_generation", i),
            }
            for i, m in (("magicflow", "MAGIC-Flow"), ("cvae", "CVAE"), ("other", "Other"))
        ],
    }
    section = _section(build_report(metrics, {}, tmp_path, {}), "tables12")
    rows = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("</tr>")
    assert "FID_Rad 0.84, KID_Rad 0.00067, P/R/D/C 0.87/0.64/0.91/0.84, MS-SSIM intra/inter 0.60/0.49" in rows[0]
    assert "FID_Rad 16.7" in rows[1] and rows[2].endswith("<td>n/a</td>")
    assert rows[3].endswith("<td>MS-SSIM intra/inter 0.51/0.43</td>")  # the real-data reference row
