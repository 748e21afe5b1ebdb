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
    """A predictions.tsv (the flow's or a baseline's), identifiers kept as text. pandas 3
    parses floats exactly (round trip), so the log-likelihoods are the ones classify wrote."""
    return pd.read_csv(
        _need(Path(path)), sep="\t", dtype={"subject": str, "session": str, "image": str, "dataset": str}, keep_default_na=False
    )


@dataclass
class ImageScores:
    """One fold's (or a pooled set of folds') classification units: one row per test image.

    ``scores`` are log p(x|y) summed over the image's evaluation slices plus log p(y) once
    (a baseline: its log-softmax summed, prior 0): the argmax is the prediction, and margins
    between them rank images for AUC and rejection without the rounding of posteriors.
    ``temperature`` is the fold's fitted T per image, for the calibrated posteriors."""

    images: pd.DataFrame  # dataset, subject, image, slices
    true: np.ndarray
    scores: np.ndarray
    temperature: np.ndarray

    def posteriors(self) -> np.ndarray:
        """softmax(scores / T) per image in float64."""
        from magicflow.experiments.posterior import posteriors

        return posteriors(self.scores, 0.0, self.temperature)

    @staticmethod
    def concat(parts: list[ImageScores]) -> ImageScores:
        return ImageScores(
            pd.concat([p.images for p in parts], ignore_index=True),
            np.concatenate([p.true for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.temperature for p in parts]),
        )

    def subset(self, rows: np.ndarray) -> ImageScores:
        return ImageScores(
            self.images.iloc[rows].reset_index(drop=True), self.true[rows], self.scores[rows], self.temperature[rows]
        )


def _columns(predictions: pd.DataFrame, prefix: str, classes: list[str], where: str) -> list[str]:
    columns = [f"{prefix}_{c}" for c in classes]
    missing = [c for c in columns if c not in predictions]
    if missing:
        raise InputError(f"{where} lacks {missing}; rerun classify (or baseline_classify)")
    return columns


def _true(predictions: pd.DataFrame, classes: list[str], where: str) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(predictions["true"]) - set(lookup))
    if unknown:
        raise InputError(f"{where}: true labels {unknown} are not among the classes {classes}")
    return np.array([lookup[t] for t in predictions["true"]], dtype=int)


def slice_scores(
    predictions: pd.DataFrame, classes: list[str], where: str = "predictions table"
) -> tuple[np.ndarray, np.ndarray]:
    """(true (N,), scores (N, K)) per slice: log-likelihood plus log prior, no aggregation
    (the secondary per-slice view). ``where`` names the table in errors."""
    ll = predictions[_columns(predictions, "loglik", classes, where)].to_numpy(np.float64)
    prior = predictions[_columns(predictions, "logprior", classes, where)].to_numpy(np.float64)
    return _true(predictions, classes, where), ll + prior


def image_scores(predictions: pd.DataFrame, classes: list[str], where: str = "predictions table") -> ImageScores:
    """The classification units of a predictions table: per image (``dataset``, ``image``), the
    log-likelihoods summed over its slices, the log prior added once (every slice carries the
    same one), the fold's temperature; images in order of first appearance. ``where`` names
    the table (its file) in errors."""
    from magicflow.experiments.posterior import image_index, labels_by_image, sum_by_image

    if "temperature" not in predictions:
        raise InputError(f"{where} lacks the temperature column; rerun classify")
    ll = predictions[_columns(predictions, "loglik", classes, where)].to_numpy(np.float64)
    prior = predictions[_columns(predictions, "logprior", classes, where)].to_numpy(np.float64)
    index = image_index(predictions, len(predictions))
    true = labels_by_image(_true(predictions, classes, where), index, where)
    first = np.unique(index, return_index=True)[1]
    keys = [c for c in ("dataset", "subject", "image") if c in predictions]
    images = predictions.iloc[first][keys].reset_index(drop=True).astype(str)
    images["slices"] = np.bincount(index, minlength=len(first))
    temperature = predictions["temperature"].to_numpy(np.float64)[first]
    if not (np.isfinite(temperature).all() and (temperature > 0).all()):
        raise InputError(f"{where}: temperatures must be finite and > 0, got {sorted(set(temperature.tolist()))[:3]}")
    return ImageScores(images, true, sum_by_image(ll, index) + prior[first], temperature)


def posterior_matrix(
    predictions: pd.DataFrame, classes: list[str], where: str = "predictions table"
) -> tuple[np.ndarray, np.ndarray]:
    """(true label indices, posteriors (N, K)) per image (:func:`image_scores`), in float64
    from the log-likelihoods, so nothing saturates to the 0 and 1 a rounded column would hold."""
    units = image_scores(predictions, classes, where)
    return units.true, units.posteriors()


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
