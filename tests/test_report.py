"""The HTML report: every section present, figures embedded, numbers shown, and a real
headless Chromium loading it with all its images decoded."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magicflow.evaluate.paper_counts import PAPER_SLICE_COUNTS
from magicflow.plotting import pyplot
from magicflow.report.experiment import build_report
from magicflow.report.html import fmt, table


def _png(path: Path, value: float = 0.5) -> None:
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.full((8, 8), value), cmap="gray", vmin=0, vmax=1)


def _gen(fid: float) -> dict:
    return {
        "fid": fid,
        "fid_ci": [fid - 1, fid + 1],
        "kid": 0.01,
        "kid_std": 0.002,
        "kid_ci": [0.005, 0.02],
        "precision": 0.8,
        "recall": 0.7,
        "density": 0.9,
        "coverage": 0.6,
        "n_real": 10,
        "n_fake": 16,
    }


def metrics_record() -> dict:
    """A metrics.json as ``magicflow evaluate`` writes it, for two datasets and two classes."""
    fold_metrics = {
        "accuracy": 0.75,
        "balanced_accuracy": 0.7,
        "macro_auc": 0.8,
        "macro_precision": 0.7,
        "macro_recall": 0.7,
        "macro_f1": 0.69,
        "n": 8,
        "per_class_recall": {"AD": 0.6, "CN": 0.8},
    }
    return {
        "experiment": "diagnosis_classification",
        "model": "classification",
        "label": "diagnosis",
        "classes": ["AD", "CN"],
        "datasets": ["adni", "demo"],
        "image_size": 64,
        "folds_run": 2,
        "folds": 5,
        "feature_extractor": {
            "kind": "in_domain",
            "name": "in-domain ResNet",
            "feature_dim": 64,
            "checksum": "ab" * 32,
            "suffix": "ID",
        },
        "data": {
            "counts": [
                {"dataset": "adni", "class": "AD", "subjects": 3, "images": 3, "slices": 27},
                {"dataset": "demo", "class": "CN", "subjects": 4, "images": 4, "slices": 4},
            ],
            "paper_counts": PAPER_SLICE_COUNTS["diagnosis_classification"],
            "qc_flags": [
                {
                    "dataset": "demo",
                    "label": "sub-demo03_ses-01_T1w",
                    "measure": "NCC with the template T1 (smoothed 3 mm)",
                    "score": "0.41",
                    "threshold": "0.8",
                }
            ],
        },
        "generation": {
            "fold": "fold-0",
            "suffix": "ID",
            "n_generated": 16,
            "n_train": 20,
            "n_heldout": 10,
            "overall": {"generated": _gen(42.5), "real": _gen(3.25)},
            "per_class": {
                "AD": {
                    "generated": {**_gen(50.0), "note": "PRDC needs more rows"},
                    "real": {"skipped": "too few held-out slices"},
                }
            },
            "ms_ssim": {"generated": {"intra": 0.4, "inter": 0.3}, "real": {"intra": 0.35, "inter": 0.3}},
            "memorisation": {"median_ratio": 1.1, "fraction_below_0.5": 0.0, "fraction_below_1": 0.3},
        },
        "classification": {
            "per_fold": [{"fold": "fold-0", **fold_metrics}, {"fold": "fold-1", **fold_metrics}],
            "summary": [
                {"fold": "fold-0", **fold_metrics},
                {"fold": "fold-1", **fold_metrics},
                {"fold": "mean", **fold_metrics},
                {"fold": "std", "balanced_accuracy": 0.0},
            ],
            "pooled": fold_metrics,
            "per_dataset": {"adni": fold_metrics},
            "confusion": [[3, 1], [1, 3]],
            "calibration": {"ece": 0.12, "bins": []},
            "rejection": [],
            "chance": {"balanced_accuracy": 0.75, "chance_level": 0.5, "p_value": 0.0123, "resamples": 10000, "n": 8},
        },
        "attribution": {
            "n_maps": 8,
            "thresholds": [{"threshold": 0.5, "f1": 0.6, "f1_std": 0.1, "retained_area": 0.02}],
            "best_threshold": 0.5,
            "best_f1": 0.6,
            "groundtruth": {"slices": 2, "auc_evidence": 0.81, "auc_low_likelihood": 0.6, "uptake_fraction": 0.05},
        },
        "efficiency": [{"fold": "fold-0", "epochs": 2, "steps": 6, "training_s": 12.0, "ms_per_step": 2000.0, "device": "cpu"}],
        "figures": {},
    }


@pytest.fixture()
def report_files(tmp_path: Path) -> tuple[Path, dict, Path]:
    results, evaluation = tmp_path / "exp", tmp_path / "exp" / "evaluation"
    for name in (
        "real_vs_generated",
        "memorisation",
        "confusion",
        "reliability",
        "rejection",
        "attribution_thresholds",
        "attribution_groundtruth",
    ):
        _png(evaluation / f"{name}.png")
    _png(results / "samples" / "fold-0" / "samples_AD.png")
    _png(results / "samples" / "fold-1" / "samples_AD.png")  # only the fold the generation metrics used is shown
    for fold in ("fold-0", "fold-1"):
        _png(results / "models" / fold / "training.png")
        _png(results / "attribution" / fold / "sub-1_offset0.png", 0.2)
    folds = {
        "curves": {f: results / "models" / f / "training.png" for f in ("fold-0", "fold-1")},
        "samples": {f: results / "samples" / f for f in ("fold-0", "fold-1")},
        "attribution": {f: results / "attribution" / f for f in ("fold-0", "fold-1")},
    }
    page = build_report(
        metrics_record(),
        folds,
        evaluation,
        {"demo": pd.DataFrame({"image": ["x"], "reason": ["unreadable"]})},
        "MNI152NLin2009aSym",
    )
    out = tmp_path / "report.html"
    out.write_text(page, encoding="utf-8")
    return out, folds, evaluation


def test_report_has_every_section_and_embeds_its_figures(report_files):
    out, _, _ = report_files
    page = out.read_text()
    for anchor in (
        "overview",
        "data",
        "generation",
        "classification",
        "attribution",
        "efficiency",
        "dataset-adni",
        "dataset-demo",
    ):
        assert f'id="{anchor}"' in page, anchor
    # 7 evaluation figures + 1 sample grid + 2 training curves + 2 overlays, all inline
    assert page.count('src="data:image/png;base64,') == 12
    assert "figure missing" not in page and 'src="file:' not in page
    # numbers reach the page: FID of generated vs the real reference, the paper's Table 4 count, a QC flag, an exclusion reason
    assert "42.500" in page and "3.250" in page and ">530<" in page
    assert "sub-demo03_ses-01_T1w" in page and "unreadable" in page
    assert "NCC with the template T1 (smoothed 3 mm)" in page  # the QC flag names its measure
    assert "0.750 (p = 0.012, n = 8)" in page  # pooled balanced accuracy against label shuffles
    assert "FID_ID" in page and "too few held-out slices" in page and "PRDC needs more rows" in page
    assert "images 64 x 64 (area-averaged from the 182 x 182 slices)" in page


def test_missing_figure_is_shown_not_hidden(report_files):
    _, folds, evaluation = report_files
    (evaluation / "confusion.png").unlink()
    page = build_report(metrics_record(), folds, evaluation, {}, "")
    assert "figure missing" in page and "confusion.png" in page
    # a fold's training curves not given: a visible note, never a look-up in a folder layout
    page = build_report(metrics_record(), {**folds, "curves": {"fold-0": folds["curves"]["fold-0"]}}, evaluation, {}, "")
    assert "figure missing: fold-1 training.png (not given)" in page


def test_table_and_number_formatting():
    assert fmt(None) == "&ndash;" and fmt(float("nan")) == "&ndash;"
    assert fmt(0.12345) == "0.123" and fmt(1234) == "1,234" and fmt([0.1, 0.25]) == "[0.100, 0.250]"
    html = table([{"a": "<b>", "b": 1.0}])
    assert "&lt;b&gt;" in html and "<td>1.000</td>" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_loads_in_headless_chromium_with_all_images(report_files, tmp_path: Path):
    out, _, _ = report_files
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        out.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = re.search(r'data-images="(\d+)/(\d+)"', result.stdout)
    assert loaded, "the page's load handler did not run"
    assert loaded.group(1) == loaded.group(2) == "12"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*command[:-2], f"--screenshot={shot}", "--window-size=1280,1600", out.as_uri()], capture_output=True, timeout=120
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] == 1600 and pixels.std() > 0.05  # a rendered page, not a blank one
