"""Every supported source, laid out as it ships, through Snakemake from the raw tree to
``slices.tsv`` with real registration (ANTs, demo preset) and real dcm2niix conversion; bad images
are left out with their reasons while the rest of each dataset goes on; then IXI and SALD through a
tiny experiment to its report, and the paper's four experiments planned from these raw trees."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from download_trees import EXPECTED, write_downloads
from magicflow.config import REPO_ROOT
from magicflow.datasets.manifest import read_manifest
from test_workflow import snakemake, workdir_with

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def downloads_run(tmp_path_factory: pytest.TempPathFactory, demo_bids: Path) -> dict:
    base = tmp_path_factory.mktemp("downloads")
    datasets = write_downloads(base / "raw", demo_bids)

    def edit(config: dict) -> None:
        config["datasets"] = datasets
        config["experiments"] = {}
        config["training"].update(epochs=1, batch_size=4, device="cpu")

    work = workdir_with(base / "work", edit)
    start = time.perf_counter()
    result = snakemake(work, "--cores", "2", "--keep-going", *(f"results/{d}/slices/slices.tsv" for d in datasets))
    seconds = time.perf_counter() - start
    print(f"raw trees -> slices for {sorted(datasets)}: {seconds:.0f} s")
    return {"work": work, "result": result, "datasets": datasets}


def test_every_kind_reaches_slices(downloads_run: dict):
    result, work = downloads_run["result"], downloads_run["work"]
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    for dataset, (sliced, left_out) in EXPECTED.items():
        results = work / "results" / dataset
        slices = read_manifest(results / "slices" / "slices.tsv")
        assert set(slices["image"]) == sliced, dataset
        assert (slices.groupby("image").size() == 1).all()  # one offset (0): no experiment asks for more
        qc = read_manifest(results / "qc.tsv")
        assert set(qc["label"]) == sliced, dataset
        excluded = read_manifest(results / "manifest_excluded.tsv")
        reasons = {Path(path).name: reason for path, reason in zip(excluded["path"], excluded["reason"])}
        for name, reason in left_out.items():
            assert reasons.get(name, "").startswith(reason), (dataset, name, reasons.get(name))


def test_dicom_pet_takes_its_tracer_and_timing_from_the_download(downloads_run: dict):
    work = downloads_run["work"]
    manifest = read_manifest(work / "results" / "adni" / "manifest.tsv").set_index("image")
    pet = manifest.loc["sub-941S1202_ses-20170601_trc-AV1451_img-I100003_pet"]
    assert (pet["tracer"], pet["reference"], pet["reference_gap_days"]) == (
        "tau",
        "sub-941S1202_ses-20170510_img-I100001_T1w",
        "22",
    )
    (coreg,) = (work / "results" / "adni" / "preproc").glob(f"space-*/{pet.name}/{pet.name}_coreg.json")  # the template's space
    record = json.loads(coreg.read_text())
    assert record["Frames"] == 6 and record["FrameCombination"] == "median"
    assert manifest.loc["sub-941S1202_ses-20170510_img-I100001_T1w", "scanner"] == "Siemens Prisma fit"  # DICOM header


def test_nifti_downloads_take_their_scanner_from_idas_xml(downloads_run: dict):
    work = downloads_run["work"]
    scanners = {}
    for dataset in ("ppmi", "adni"):
        table = read_manifest(work / "results" / dataset / "slices" / "slices.tsv")
        scanners.update(zip(table["image"], table["scanner"]))
    assert scanners["sub-3000_ses-20110315_img-I234567_T1w"] == "Siemens TrioTim"
    assert scanners["sub-002S0413_ses-20180110_img-I100004_T1w"] == "GE SIGNA Premier"


def test_a_tiny_experiment_on_ixi_and_sald_reaches_its_report(downloads_run: dict):
    work = downloads_run["work"]
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    config["experiments"] = {
        "sites": {
            "datasets": ["ixi", "sald"],
            "label": "dataset",
            "modalities": ["T1w"],
            "offsets": {"train": [0], "eval": [0]},
            "model": "classification",
            "preset": "small",
            "folds": 3,
            "samples": {"per_class": 2},
            "attribution": {"max_images": 2},
        }
    }
    config["evaluation"] = {"features": {"kind": "in_domain", "epochs": 1}, "bootstrap": 20, "ms_ssim_pairs": 20}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "--cores", "2", "results/sites/report.html")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    page = (work / "results" / "sites" / "report.html").read_text()
    assert 'id="dataset-ixi"' in page and 'id="dataset-sald"' in page
    assert "1000 NaN or infinite voxels" in page  # the report lists what was left out and why


def test_the_papers_experiments_plan_from_the_raw_trees(downloads_run: dict):
    work = downloads_run["work"]
    shipped = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    config["experiments"] = {
        name: shipped["experiments"][name]
        for name in ("scanner_generation", "scanner_classification", "modality_generation", "diagnosis_classification")
    }
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake(work, "-n", "--cores", "2")
    jobs = plan.stdout + plan.stderr
    assert plan.returncode == 0, jobs[-4000:]
    for name in config["experiments"]:
        assert f"results/{name}/report.html" in jobs, name


def test_paths_with_home_and_spaces(tmp_path: Path, demo_bids: Path):
    """A dataset root given with ``~`` and holding a space, and an interpreter whose path has a
    space (a venv under "My Projects"): the manifest rule still runs."""
    import os
    import shutil
    import subprocess
    import sys

    from download_trees import clinica_bids_tree
    from test_workflow import SNAKEMAKE

    home = tmp_path / "home"
    clinica_bids_tree(home / "raw data" / "bids", demo_bids)
    venv = tmp_path / "My Projects" / "venv"  # this environment, seen from a path with a space
    (venv / "bin").mkdir(parents=True)
    (venv / "lib").symlink_to(Path(sys.prefix) / "lib")
    shutil.copyfile(Path(sys.prefix) / "pyvenv.cfg", venv / "pyvenv.cfg")
    interpreter = venv / "bin" / "python"
    interpreter.symlink_to(sys.executable)
    work = workdir_with(
        tmp_path / "work", lambda c: c.update(datasets={"mine": {"kind": "bids", "root": "~/raw data/bids"}}, experiments={})
    )
    result = subprocess.run(
        [str(interpreter), *SNAKEMAKE[1:], "--directory", str(work), "--cores", "1", "results/mine/manifest.tsv"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(home)},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # the rule runs "$MAGICFLOW_PYTHON" (quoted), which is this interpreter: the path with the space
    assert '"$MAGICFLOW_PYTHON" -m magicflow manifest' in result.stdout + result.stderr
    table = read_manifest(work / "results" / "mine" / "manifest.tsv")
    assert set(table["image"]) == {"sub-ADNI941S1202_ses-M000_T1w", "sub-ADNI941S1202_ses-M000_trc-18FAV1451_pet"}
    assert table["path"].str.startswith(str(home / "raw data" / "bids")).all()
