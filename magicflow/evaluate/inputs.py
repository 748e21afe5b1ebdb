"""Everything one experiment's learning stages wrote, gathered for evaluation.

The files are the ones the ``evaluate`` rule declares, given one by one (``split.json`` and,
per fold, ``training.tsv``, the samples folder, ``predictions.tsv``, the attribution folder and
the training job's Snakemake benchmark): nothing here knows the results layout. A missing
file, or a fold that ``split.json`` runs but no file was given for, is an error that names
it: evaluation never silently reports on part of an experiment."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from magicflow.errors import InputError

#: what each fold contributes: name -> what the path given for it is
FOLD_FILES = {
    "training": "training.tsv",
    "samples": "samples folder (samples.npz)",
    "predictions": "predictions.tsv",
    "attribution": "attribution folder (maps.npz)",
    "train_benchmark": "Snakemake benchmark TSV of the fold's training job",
}
#: may be left out altogether (a run outside Snakemake has no benchmarks): the efficiency table then shows no peak RAM
OPTIONAL = ("train_benchmark",)


def _need(path: Path) -> Path:
    if not path.exists():
        raise InputError(
            f"{path}: missing; run the experiment's learning stages first (snakemake train sample classify attribution)"
        )
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


def read_benchmark(path: Path) -> dict[str, float]:
    """The last row of a Snakemake benchmark file (s, max_rss in MB, ...), numbers only."""
    row = pd.read_csv(_need(path), sep="\t").iloc[-1]
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float, np.number))}


def load_experiment(split_json: Path, files: dict[str, dict[str, Path]]) -> ExperimentOutputs:
    """Read every fold the experiment ran (``split.json``'s ``run_folds``): ``files`` maps each
    :data:`FOLD_FILES` name to ``{fold name: path}``."""
    split = json.loads(_need(Path(split_json)).read_text())
    folds = [f"fold-{k}" for k in range(split["run_folds"])]
    for name, what in FOLD_FILES.items():
        given = files.get(name, {})
        if sorted(given) != folds and not (name in OPTIONAL and not given):
            raise InputError(
                f"{split_json} runs {folds}, but the {what} was given for {sorted(given)} "
                f"(--{name.replace('_', '-')} FOLD=PATH, one per fold)"
            )
    return ExperimentOutputs(
        name=split["experiment"],
        classes=list(split["classes"]),
        split=split,
        folds=[
            FoldOutputs(
                name=fold,
                training=read_tsv(files["training"][fold]),
                predictions=read_predictions(files["predictions"][fold]),
                samples=read_npz(Path(files["samples"][fold]) / "samples.npz"),
                maps=read_npz(Path(files["attribution"][fold]) / "maps.npz"),
                benchmarks={"train": read_benchmark(files["train_benchmark"][fold])} if files.get("train_benchmark") else {},
            )
            for fold in folds
        ],
    )


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions.tsv (the flow's or a baseline's), identifiers kept as text."""
    return pd.read_csv(
        _need(Path(path)), sep="\t", dtype={"subject": str, "session": str, "image": str, "dataset": str}, keep_default_na=False
    )


def posterior_matrix(predictions: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true label indices (N,), posteriors (N, K)) from a predictions table."""
    columns = [f"posterior_{c}" for c in classes]
    missing = [c for c in columns if c not in predictions]
    if missing:
        raise InputError(f"predictions table lacks {missing}; rerun classify")
    lookup = {c: i for i, c in enumerate(classes)}
    true = np.array([lookup[t] for t in predictions["true"]], dtype=int)
    return true, predictions[columns].to_numpy(float)


def generation_sets(
    slices: pd.DataFrame,
    arrays: dict[str, np.ndarray],
    classes: list[str],
    folds_dir: Path,
    fold_names: list[str],
    offsets: dict,
) -> dict[str, dict]:
    """Per fold, the real slice sets generation is judged with (``SliceSet`` each):

    - ``train``: training subjects at the training offsets (and augment offsets): what the
      generator saw; the in-domain extractor trains on it and memorisation searches it.
    - ``reference``: the same training subjects at the evaluation offsets only: the real set the
      reference row compares with the test set (subject-disjoint from it, same offsets).
    - ``val``: validation subjects at the evaluation offsets: used for early stopping, so never a
      comparison set; the extractor's held-out accuracy is measured on it.
    - ``test``: test subjects at the evaluation offsets: what generated samples are judged against."""
    from magicflow.experiments.data import load_set, select_slices
    from magicflow.experiments.split import read_fold

    out = {}
    for name in fold_names:
        fold = read_fold(Path(folds_dir) / name)
        out[name] = {
            "train": load_set(select_slices(slices, fold["train"], offsets["train"], offsets.get("augment")), arrays, classes),
            "reference": load_set(select_slices(slices, fold["train"], offsets["eval"]), arrays, classes),
            "val": load_set(select_slices(slices, fold["val"], offsets["eval"]), arrays, classes),
            "test": load_set(select_slices(slices, fold["test"], offsets["eval"]), arrays, classes),
        }
    return out


def subject_groups(rows) -> np.ndarray:
    """dataset/subject key per slice of a ``SliceSet`` (its ``meta``); one key per slice where the
    meta has no subject (tests, plain tensors), i.e. every slice its own subject."""
    meta = getattr(rows, "meta", None)
    n = len(rows)
    if meta is None or not {"dataset", "subject"} <= set(meta.columns) or len(meta) != n:
        return np.array([f"row{i}" for i in range(n)])
    return (meta["dataset"].astype(str) + "/" + meta["subject"].astype(str)).to_numpy()
