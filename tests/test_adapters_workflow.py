"""`snakemake results/<dataset>/manifest.tsv` on an ADNI download: the DICOM conversion runs as
its own job, the manifest follows, and a rerun has nothing to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter_fixtures import adni_download
from magicflow.datasets.manifest import read_manifest
from test_workflow import snakemake, workdir_with


@pytest.mark.slow
def test_adni_manifest_through_snakemake(tmp_path: Path):
    root = adni_download(tmp_path / "download")
    work = workdir_with(
        tmp_path / "work",
        lambda c: c["datasets"].update(
            adni={
                "kind": "adni",
                "root": str(root),
                "collection": "ADNI_collection.csv",
                "diagnosis_table": "ADNIMERGE.csv",
                "visit_window_days": 180,
                "diagnosis_labels": {"Dementia": "AD"},
            }
        ),
    )
    result = snakemake(work, "--cores", "1", "results/adni/manifest.tsv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dicom_to_nifti" in result.stderr
    table = read_manifest(work / "results" / "adni" / "manifest.tsv")
    assert sorted(table["modality"]) == ["FLAIR", "T1w", "T1w", "pet"]
    excluded = read_manifest(work / "results" / "adni" / "manifest_excluded.tsv")
    assert len(excluded) == 6 and excluded["reason"].str.len().gt(0).all()
    assert (work / "results" / "logs" / "dicom_to_nifti" / "adni.log").exists()
    again = snakemake(work, "-n", "--cores", "1", "results/adni/manifest.tsv")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
