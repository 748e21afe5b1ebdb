"""Subject-level stratified k-fold splits, written once and checked everywhere.

Every image of a subject lands in the same set: slices of one brain in both training and test
is the classic leakage in this field and inflates accuracy. Splits are made on images (one row
per image, not per slice), before any augmentation; neighbour-slice augmentation is added
later and only for training subjects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from magicflow.errors import InputError
from magicflow.io import atomic_path

SETS = ("train", "val", "test")
SPLIT_COLUMNS = ["dataset", "subject", "session", "image", "label"]


def subject_keys(table: pd.DataFrame) -> pd.Series:
    """Subjects are unique within a dataset only: the key is dataset/subject."""
    return table["dataset"] + "/" + table["subject"]


def assign_folds(images: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Fold index of each image: groups are subjects, strata the label."""
    groups = subject_keys(images)
    n_subjects = groups.nunique()
    if n_subjects < folds:
        raise InputError(f"{n_subjects} subjects cannot fill {folds} folds; lower the number of folds or add data")
    per_class = images.groupby("label")["subject"].count()
    if (per_class < folds).all():
        counts = ", ".join(f"{k}: {v}" for k, v in per_class.items())
        raise InputError(f"every class has fewer images than the {folds} folds ({counts}); lower folds or add data")
    from sklearn.model_selection import StratifiedGroupKFold  # here: sklearn costs every train/infer job 0.8 s to import

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment = np.full(len(images), -1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")  # small classes are reported in split.json
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(images)), images["label"], groups)):
            assignment[test] = fold
    return assignment


def make_splits(images: pd.DataFrame, folds: int, run_folds: int, seed: int) -> list[dict[str, pd.DataFrame]]:
    """For each run fold k: test = partition k, validation = partition k+1, training = the rest."""
    if not 1 <= run_folds <= folds:
        raise InputError(f"run_folds must be between 1 and folds={folds}, got {run_folds}")
    if folds < 3:
        raise InputError(f"folds must be at least 3 (train, validation and test partitions), got {folds}")
    images = images.reset_index(drop=True)
    assignment = assign_folds(images, folds, seed)
    out = []
    for k in range(run_folds):
        test, val = assignment == k, assignment == (k + 1) % folds
        out.append({"train": images[~test & ~val], "val": images[val], "test": images[test]})
    return out


def check_no_leakage(sets: dict[str, pd.DataFrame], where: str) -> None:
    """No subject in two sets of one fold (raises, naming the subject and the sets)."""
    seen: dict[str, str] = {}
    for name in SETS:
        for key in subject_keys(sets[name]).unique():
            if key in seen and seen[key] != name:
                raise InputError(f"{where}: subject {key} is in both {seen[key]} and {name}: subject-level split violated")
            seen[key] = name


def write_splits(splits: list[dict[str, pd.DataFrame]], out_dir: Path, info: dict) -> None:
    """fold-<k>/{train,val,test}.tsv and split.json, every fold checked before writing."""
    classes = sorted(pd.concat([s["train"] for s in splits])["label"].unique())
    counts = {}
    for k, sets in enumerate(splits):
        check_no_leakage(sets, f"fold-{k}")
        counts[f"fold-{k}"] = {name: sets[name]["label"].value_counts().sort_index().to_dict() for name in SETS}
        for name in SETS:
            with atomic_path(out_dir / f"fold-{k}" / f"{name}.tsv") as tmp:
                sets[name][SPLIT_COLUMNS].sort_values(SPLIT_COLUMNS[:4]).to_csv(tmp, sep="\t", index=False)
    with atomic_path(out_dir / "split.json") as tmp:
        tmp.write_text(json.dumps({**info, "classes": classes, "counts": counts}, indent=2, sort_keys=True) + "\n")


def read_fold(fold_dir: Path) -> dict[str, pd.DataFrame]:
    """The three sets of one fold, checked for leakage (every consumer calls this)."""
    sets = {name: pd.read_csv(fold_dir / f"{name}.tsv", sep="\t", dtype=str, keep_default_na=False) for name in SETS}
    check_no_leakage(sets, str(fold_dir))
    return sets
