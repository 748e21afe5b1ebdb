"""Everything one experiment's learning stages wrote, gathered for evaluation.

Layout read (``results/<experiment>/``): ``splits/split.json`` and ``splits/folds/fold-<k>/``,
``models/fold-<k>/training.tsv``, ``samples/fold-<k>/samples.npz``,
``predictions/fold-<k>/predictions.tsv``, ``attribution/fold-<k>/maps.npz``; and the
workflow's ``results/benchmarks/<stage>/<experiment>_fold-<k>.tsv``. A missing file is an
error that names it: evaluation never silently reports on part of an experiment."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from magicflow.errors import InputError


def _need(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"{path}: missing; run the experiment's learning stages first (snakemake train sample classify attribution)")
    return path


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(_need(path), sep="\t")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(_need(path), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@dataclass
class FoldOutputs:
    """One fold's outputs; ``benchmarks`` maps stage -> the Snakemake benchmark row (may be empty)."""

    name: str
    training: pd.DataFrame
    predictions: pd.DataFrame
    samples: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]
    benchmarks: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ExperimentOutputs:
    name: str
    classes: list[str]
    split: dict
    folds: list[FoldOutputs]


def _benchmark(path: Path) -> dict[str, float]:
    """Snakemake's benchmark row (s, max_rss in MB, ...); empty when the stage was not benchmarked."""
    if not path.exists():
        return {}
    row = pd.read_csv(path, sep="\t").iloc[-1]
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float, np.number))}


def load_experiment(results: Path, benchmarks: Path | None = None) -> ExperimentOutputs:
    """Read every fold the experiment ran (``split.json``'s ``run_folds``)."""
    results = Path(results)
    split = json.loads(_need(results / "splits" / "split.json").read_text())
    name = split["experiment"]
    folds = []
    for k in range(split["run_folds"]):
        fold = f"fold-{k}"
        marks = {}
        if benchmarks is not None:
            marks = {"train": _benchmark(Path(benchmarks) / "train" / f"{name}_{fold}.tsv")}  # peak RAM of training
        folds.append(FoldOutputs(
            name=fold,
            training=read_tsv(results / "models" / fold / "training.tsv"),
            predictions=pd.read_csv(_need(results / "predictions" / fold / "predictions.tsv"), sep="\t",
                                    dtype={"subject": str, "session": str, "image": str, "dataset": str}, keep_default_na=False),
            samples=read_npz(results / "samples" / fold / "samples.npz"),
            maps=read_npz(results / "attribution" / fold / "maps.npz"),
            benchmarks=marks,
        ))
    return ExperimentOutputs(name=name, classes=list(split["classes"]), split=split, folds=folds)


def posterior_matrix(predictions: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true label indices (N,), posteriors (N, K)) from a predictions table."""
    columns = [f"posterior_{c}" for c in classes]
    missing = [c for c in columns if c not in predictions]
    if missing:
        raise InputError(f"predictions table lacks {missing}; rerun classify")
    lookup = {c: i for i, c in enumerate(classes)}
    true = np.array([lookup[t] for t in predictions["true"]], dtype=int)
    return true, predictions[columns].to_numpy(float)
