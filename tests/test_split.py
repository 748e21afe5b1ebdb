"""Subject-level splits: no leakage, stratification, determinism, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from magicflow.errors import InputError
from magicflow.experiments.split import SETS, check_no_leakage, make_splits, read_fold, subject_keys, write_splits


def images(n_subjects=20, per_subject=3, classes=("A", "B")) -> pd.DataFrame:
    rows = []
    for s in range(n_subjects):
        for i in range(per_subject):
            rows.append(
                {
                    "dataset": "d1" if s % 2 else "d2",
                    "subject": f"s{s // 2}",
                    "session": "01",
                    "image": f"sub-s{s}_img{i}",
                    "label": classes[s % len(classes)],
                }
            )
    return pd.DataFrame(rows)


def test_five_folds_partition_subjects_without_leakage():
    table = images()
    splits = make_splits(table, folds=5, run_folds=5, seed=0)
    tests = [set(subject_keys(s["test"])) for s in splits]
    assert set().union(*tests) == set(subject_keys(table))  # every subject tested once
    assert sum(len(t) for t in tests) == subject_keys(table).nunique()
    for sets in splits:
        keys = [set(subject_keys(sets[n])) for n in SETS]
        assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
        assert sum(len(sets[n]) for n in SETS) == len(table)
        assert set(sets["test"]["label"]) == {"A", "B"}  # stratified: both classes in every test fold


def test_same_subject_id_in_two_datasets_is_two_subjects():
    table = images()
    assert subject_keys(table).nunique() == 20 and table["subject"].nunique() == 10


def test_deterministic_given_seed_and_different_otherwise():
    a = make_splits(images(), 5, 1, seed=3)[0]["test"]
    b = make_splits(images(), 5, 1, seed=3)[0]["test"]
    c = make_splits(images(), 5, 1, seed=4)[0]["test"]
    assert a.equals(b)
    assert not a.equals(c)


def test_written_splits_read_back_and_leakage_is_caught(tmp_path: Path):
    splits = make_splits(images(), 5, 2, seed=0)
    write_splits(splits, tmp_path, {"experiment": "x"})
    sets = read_fold(tmp_path / "fold-1")
    assert sorted(sets["test"]["image"]) == sorted(splits[1]["test"]["image"])
    leaked = sets["train"].iloc[:1].copy()
    leaked_table = pd.concat([sets["test"], leaked])
    leaked_table.to_csv(tmp_path / "fold-1" / "test.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="is in both train and test"):
        read_fold(tmp_path / "fold-1")


def test_too_few_subjects_or_folds():
    with pytest.raises(InputError, match="4 subjects cannot fill 5 folds"):
        make_splits(images(n_subjects=4), 5, 1, 0)
    with pytest.raises(InputError, match="at least 3"):
        make_splits(images(), 2, 1, 0)
    with pytest.raises(InputError, match=r"every class has fewer images than the 5 folds \(A: 3, B: 3\)"):
        make_splits(images(n_subjects=6, per_subject=1), 5, 1, 0)
    with pytest.raises(InputError, match="run_folds"):
        make_splits(images(), 5, 6, 0)


def test_check_no_leakage_accepts_clean_sets():
    splits = make_splits(images(), 5, 1, 0)[0]
    check_no_leakage(splits, "fold-0")
