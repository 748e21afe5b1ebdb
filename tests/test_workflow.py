"""Snakemake runs of the real workflow: a dry run of the shipped config, a bad config, and a
real run of the manifest target on a tiny demo cohort in a scratch working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from magicflow.config import REPO_ROOT
from magicflow.datasets.manifest import read_manifest

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile")]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, timeout=900)


def workdir_with(tmp_path: Path, edit=None) -> Path:
    """A scratch working directory with config/config.yaml = the shipped config, edited."""
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    if edit:
        edit(config)
    (tmp_path / "config").mkdir(parents=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_dry_run_of_the_shipped_config():
    # --forceall: plan every job even where this checkout's results/ already holds the demo's outputs
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--forceall", "--cores", "2"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "demo_cohort" in result.stdout and "dataset_manifest" in result.stdout


def test_bad_config_stops_before_any_job(tmp_path: Path):
    work = workdir_with(tmp_path, lambda c: c["datasets"]["demo"].update(kind="demoo"))
    result = snakemake(work, "-n", "--cores", "1")
    assert result.returncode != 0
    assert "invalid configuration: config key 'datasets.demo.kind': 'demoo' is not one of" in result.stdout + result.stderr


@pytest.mark.slow
def test_manifest_target_runs_on_a_tiny_demo(tmp_path: Path):
    def tiny(config: dict) -> None:
        config["datasets"]["demo"].update(subjects=2, t1w_only=0, tracers=["FDG"])
        # the shipped experiments would be refused at parse time (tau PET, 5 folds): manifests need none
        config["experiments"] = {}

    work = workdir_with(tmp_path, tiny)
    result = snakemake(work, "--cores", "2", "manifest")
    assert result.returncode == 0, result.stderr[-3000:]
    table = read_manifest(work / "results" / "demo" / "manifest.tsv")
    assert len(table) == 2 * 4
    assert (work / "results" / "logs" / "demo_cohort" / "demo.log").exists()
    assert (work / "results" / "benchmarks" / "manifest" / "demo.tsv").exists()
    # nothing left to do: a second run is a no-op
    again = snakemake(work, "-n", "--cores", "2", "manifest")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    shutil.rmtree(work / "results")


@pytest.mark.slow
def test_demo_registration_jobs_score_against_the_planted_truth(tmp_path: Path):
    """A demo T1w and T2w registered by their rules: the cohort's ground truth arrives as declared
    inputs and each sidecar carries the image's error against it, under 2 mm for the demo preset."""

    def tiny(config: dict) -> None:
        config["datasets"]["demo"].update(subjects=2, t1w_only=0, tracers=["FDG"])
        config["experiments"] = {}
        config["registration"].update(backend="ants", preset="demo")

    work = workdir_with(tmp_path, tiny)
    folder = work / "results" / "demo" / "preproc" / "space-MNI152NLin2009aSym"
    stems = ["sub-demo01_ses-01_T1w", "sub-demo01_ses-01_T2w"]
    sidecars = [folder / stems[0] / f"{stems[0]}_t1.json", folder / stems[1] / f"{stems[1]}_coreg.json"]
    result = snakemake(work, "--cores", "2", *(str(p.relative_to(work)) for p in sidecars))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    errors = [json.loads(p.read_text())["GroundTruthErrorMM"] for p in sidecars]
    assert all(0 < e["mean"] < 2.0 for e in errors), errors
    # the truth files are the jobs' declared inputs, passed to their commands
    summary = snakemake(work, "--detailed-summary", *(str(p.relative_to(work)) for p in sidecars))
    assert summary.returncode == 0, summary.stderr[-2000:]
    truth = "results/demo/bids/derivatives/groundtruth/sub-demo01/sub-demo01_"
    rows = {line.split("\t")[0]: line for line in summary.stdout.splitlines()}
    t1_row, t2_row = (rows[str(p.relative_to(work))] for p in sidecars)
    assert f"{truth}from-MNI152NLin2009aSym_to-T1w_mode-points_xfm.nii.gz" in t1_row and "--groundtruth-points" in t1_row
    assert f"{truth}from-T1w_to-T2w_mode-rigid_xfm.txt" in t2_row and "--groundtruth-rigid" in t2_row
    shutil.rmtree(work / "results")


def tiny_experiment(config: dict) -> None:
    """6 demo subjects (3 AD, 3 CN), MRI only, one classification experiment over 3 folds at 48 x 48
    (the download-tree workflow test runs its experiment at the full 182 x 182) with a ResNet-18
    baseline, a generation experiment on the same slices (one fold) with a CVAE baseline, and a
    T1w -> T2w translation (one fold, 32 x 32, diagnosis as side information) with both
    translation baselines."""
    config["datasets"]["demo"].update(subjects=6, t1w_only=0, tracers=[])
    config["training"].update(epochs=1, batch_size=4, device="cpu")
    config["experiments"] = {
        "tiny": {
            "datasets": ["demo"],
            "label": "diagnosis",
            "modalities": ["T1w"],
            "offsets": {"train": [-1, 0], "eval": [0]},
            "model": "classification",
            "preset": "small",
            "folds": 3,
            "image_size": 48,
            "samples": {"per_class": 2},
            "attribution": {"max_images": 2},
            "baselines": ["resnet18"],
        },
        "tiny_gen": {
            "datasets": ["demo"],
            "label": "diagnosis",
            "modalities": ["T1w"],
            "offsets": {"train": [0], "eval": [0]},
            "model": "generation",
            "preset": "small",
            "folds": 3,
            "image_size": 32,
            "samples": {"per_class": 2},
            "attribution": {"max_images": 2},
            "baselines": ["cvae"],
        },
        "tiny_trans": {
            "datasets": ["demo"],
            "label": "diagnosis",
            "model": "translation",
            "source": "T1w",
            "target": "T2w",
            "offsets": {"train": [-1, 0], "eval": [0]},
            "preset": "small",
            "folds": 3,
            "run_folds": 1,
            "image_size": 32,
            "translation": {"side": "label", "samples": 2, "triptychs": 1},
            "baselines": ["unet", "mean"],
        },
    }
    config["evaluation"] = {"features": {"kind": "in_domain", "epochs": 1}, "bootstrap": 20, "ms_ssim_pairs": 20}
    # the trained classifier exported and applied to a dataset (here its own, labelled) as a user would a new one
    config["predict"] = {"tiny_on_demo": {"experiment": "tiny", "dataset": "demo", "attribution_max": 2}}
    # tiny_gen's report shows what its synthetic slices are worth (synthetic_worth defaults to true)
    config["synthesis"] = {"per_class": 4, "worth": {"epochs": 1, "bootstrap": 100}}


@pytest.mark.slow
def test_one_tiny_experiment_through_every_stage(tmp_path: Path):
    work = workdir_with(tmp_path, tiny_experiment)
    result = snakemake(work, "--cores", "2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 9 // 10 // 2**20)
    assert f"Provided resources: mem_mb={memory}" in result.stdout + result.stderr  # jobs at once fit this machine
    results = work / "results"
    for fold in ("fold-0", "fold-1", "fold-2"):
        assert (results / "tiny" / "models" / fold / "best.pt").exists()
        predictions = read_manifest(results / "tiny" / "predictions" / fold / "predictions.tsv")
        assert set(predictions["true"]) <= {"AD", "CN"} and len(predictions) >= 1
        assert (results / "tiny" / "attribution" / fold / "maps.npz").exists()
        assert list((results / "tiny" / "samples" / fold).glob("samples_*.png"))
    metrics = json.loads((results / "tiny" / "metrics.json").read_text())
    assert [r["fold"] for r in metrics["classification"]["per_fold"]] == ["fold-0", "fold-1", "fold-2"]
    assert 0 <= metrics["classification"]["pooled"]["balanced_accuracy"] <= 1
    assert metrics["generation"]["n_generated"] == 4 and metrics["feature_extractor"]["suffix"] == "ID"
    assert len(metrics["efficiency"]) == 3 and metrics["efficiency"][0]["steps"] > 0
    page = (results / "tiny" / "report.html").read_text()
    assert all(
        f'id="{a}"' in page
        for a in ("overview", "data", "generation", "classification", "attribution", "efficiency", "dataset-demo")
    )
    assert "figure missing" not in page
    # every configured model in the comparison tables: Table 3 and Table 5 here, Tables 1-2 and Table 5 for generation
    for experiment, table, models in (
        ("tiny", "table3", ["MAGIC-Flow", "ResNet-18"]),
        ("tiny_gen", "tables12", ["MAGIC-Flow", "CVAE"]),
    ):
        page = (results / experiment / "report.html").read_text()
        for anchor in (table, "table5"):
            section = page.split(f'id="{anchor}"', 1)[1].split("</section>", 1)[0]
            rows = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("</tr>")
            assert [r.split("<td>", 2)[1].split("</td>")[0] for r in rows[: len(models)]] == models, (experiment, anchor)
        cost = json.loads((results / experiment / "metrics.json").read_text())["comparison"]["cost"]
        assert [r["model"] for r in cost] == models
        assert all(r["parameters"] > 0 and r["steps"] > 0 and r["wall_s"] > 0 and r["peak_rss_mb"] > 0 for r in cost), cost
    # the translation experiment: translations of the fold's test pairs, Table 1 with every model, its report
    translated = results / "tiny_trans" / "translation" / "outputs" / "fold-0"
    with np.load(translated / "translations.npz") as archive:
        assert archive["mode"].shape == archive["real"].shape == archive["std"].shape and archive["mode"].shape[1:] == (1, 32, 32)
        assert all(str(a).endswith("_T2w") for a in archive["image"]) and all(
            str(a).endswith("_T1w") for a in archive["source_image"]
        )
    assert list(translated.glob("*_desc-translated.nii.gz"))
    assert len(list((results / "tiny_trans" / "evaluation").glob("triptych_fold-0_*_offset0.png"))) == 1  # triptychs: 1
    trans = json.loads((results / "tiny_trans" / "metrics.json").read_text())
    assert [m["id"] for m in trans["models"]] == ["dual-glow", "unet", "mean"]
    assert all(0 <= m["metrics"]["ssim"]["mean"] <= 1 and m["metrics"]["mae"]["n"] >= 1 for m in trans["models"])
    page = (results / "tiny_trans" / "report.html").read_text()
    table1 = page.split('id="table1"', 1)[1].split("</section>", 1)[0]
    assert all(label in table1 for label in ("DUAL-GLOW", "U-Net (L1)", "Training mean")) and "figure missing" not in page
    assert "no triptychs" not in page
    # the exported model folder and its predictions on the dataset, with metrics (the label is there)
    exported = json.loads((results / "tiny" / "model" / "model.json").read_text())
    assert [f["weights"] for f in exported["folds"]] == ["fold-0.pt", "fold-1.pt", "fold-2.pt"]
    assert "## Performance" in (results / "tiny" / "model" / "MODEL_CARD.md").read_text()
    predicted = read_manifest(results / "predictions" / "tiny_on_demo" / "predictions.tsv")
    assert len(predicted) == 6 and set(predicted["predicted"]) <= {"AD", "CN"}  # the 6 T1w images; the T2w, FLAIR refused
    assert json.loads((results / "predictions" / "tiny_on_demo" / "metrics.json").read_text())["labelled"]
    assert len(list((results / "predictions" / "tiny_on_demo" / "attribution").glob("*.nii.gz"))) == 2
    synthetic = read_manifest(results / "tiny_gen" / "synthetic" / "synthetic.tsv")
    assert len(synthetic) == 8 and set(synthetic["class"]) == {"AD", "CN"}
    worth = json.loads((results / "tiny_gen" / "synthetic_worth.json").read_text())
    assert {r["classifier"] for r in worth["rows"]} == {"flow", "resnet18"} and len(worth["rows"]) == 10
    assert 'id="synthetic-worth"' in (results / "tiny_gen" / "report.html").read_text()
    assert 'id="synthetic-worth"' not in (results / "tiny" / "report.html").read_text()
    # Snakemake's own report gathers the experiment report, evaluation figures and training curves
    snapshot = snakemake(work, "--report", "results/snakemake-report.html")
    assert snapshot.returncode == 0, snapshot.stderr[-2000:]
    assert (results / "snakemake-report.html").stat().st_size > 100_000
    qc = read_manifest(results / "demo" / "qc.tsv")
    # well-registered demo T1w images score 0.82-0.95 (the scanners' contrast curves keep some below
    # 0.85), a failed registration about 0.3: none may fall under the QC threshold
    assert len(qc) == 18 and (qc.loc[qc["label"].str.endswith("T1w"), "ncc"].astype(float) > 0.8).all()

    # --forcerun train_fold (the training stage's rule) retrains every fold and redoes what follows
    plan = snakemake(work, "-n", "--cores", "2", "--forcerun", "train_fold")
    jobs = plan.stdout + plan.stderr
    assert plan.returncode == 0 and jobs.count("rule train_fold:") == 3 + 1, jobs[-3000:]  # tiny's 3 folds, tiny_gen's 1
    downstream_rules = ("sample_fold", "classify_fold", "attribution_fold", "evaluate_experiment", "report_experiment")
    for downstream in (*downstream_rules, "export_model", "predict_dataset"):
        assert f"rule {downstream}:" in jobs, downstream
    for upstream in ("preprocess_t1", "preprocess_coregister", "dataset_slices", "demo_cohort", "split"):
        assert f"rule {upstream}:" not in jobs and f"localrule {upstream}:" not in jobs, upstream

    # a changed training setting reruns training and what follows, never registration or slicing
    edited = yaml.safe_load((work / "config" / "config.yaml").read_text())
    edited["training"]["lr"] = 0.0005
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(edited))
    plan = snakemake(work, "-n", "--cores", "2")
    jobs = plan.stdout + plan.stderr
    assert "train_fold" in jobs and "attribution_fold" in jobs and "report_experiment" in jobs
    for upstream in ("preprocess_t1", "preprocess_coregister", "dataset_slices", "demo_cohort", "check_data", "split"):
        assert f"rule {upstream}:" not in jobs and f"localrule {upstream}:" not in jobs, upstream

    # a changed evaluation setting redoes evaluation and the report only
    edited["training"]["lr"] = 0.001
    edited["evaluation"]["bootstrap"] = 30
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(edited))
    plan = snakemake(work, "-n", "--cores", "2")
    jobs = plan.stdout + plan.stderr
    assert "rule evaluate_experiment:" in jobs and "rule report_experiment:" in jobs
    assert "rule train_fold:" not in jobs and "rule classify_fold:" not in jobs

    # a classify job that fails (its model file corrupt) quotes the end of its log in Snakemake's
    # error output, and its log stays readable beside it after any later run
    edited["evaluation"]["bootstrap"] = 20
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(edited))
    model = results / "tiny" / "models" / "fold-0" / "best.pt"
    good = model.read_bytes()
    model.write_bytes(b"not a checkpoint")
    failed = snakemake(work, "--cores", "1", "results/tiny/predictions/fold-0/predictions.tsv")
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "---- exit status 2; the last lines of results/logs/classify/tiny_fold-0.log" in said, said[-3000:]
    assert f"magicflow classify: error: {model.relative_to(work)} is not a readable MAGIC-Flow checkpoint" in said
    kept = list((results / "logs" / "classify").glob("tiny_fold-0.log.failed-*"))
    assert len(kept) == 1 and "is not a readable MAGIC-Flow checkpoint" in kept[0].read_text()
    model.write_bytes(good)


LOGGED = REPO_ROOT / "workflow" / "scripts" / "logged.sh"


@pytest.mark.parametrize(
    ("command", "status", "said"),
    [
        ("echo working; echo broken >&2; exit 3", 3, "exit status 3"),
        ("echo working; kill -9 $$", 137, "killed by signal 9 (SIGKILL: often the out-of-memory killer"),
    ],
)
def test_a_failed_command_keeps_its_log_and_quotes_its_end(tmp_path: Path, command: str, status: int, said: str):
    log = tmp_path / "logs" / "classify" / "x_fold-0.log"
    result = subprocess.run(
        ["bash", str(LOGGED), str(log), "OMP_NUM_THREADS=1", "sh", "-c", command], capture_output=True, text=True
    )
    assert result.returncode == status
    assert said in result.stderr and "working" in result.stderr  # the log's last lines, on stderr
    kept = list(log.parent.glob("x_fold-0.log.failed-*"))
    assert len(kept) == 1 and "working" in kept[0].read_text() and kept[0].read_text() == log.read_text()
    # a rerun that succeeds rewrites the log but never the kept copy
    assert subprocess.run(["bash", str(LOGGED), str(log), "sh", "-c", "echo fine"]).returncode == 0
    assert log.read_text() == "fine\n" and "working" in kept[0].read_text()


def test_a_command_that_succeeds_says_nothing_extra(tmp_path: Path):
    log = tmp_path / "a.log"
    result = subprocess.run(
        ["bash", str(LOGGED), str(log), "OMP_NUM_THREADS=1", "sh", "-c", "echo $OMP_NUM_THREADS"], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout, result.stderr, log.read_text()) == (0, "", "", "1\n")
    assert list(tmp_path.glob("a.log.failed-*")) == []
