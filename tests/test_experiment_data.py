"""Experiment data: kinds, labels, augmentation only where asked, label lookups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magicflow.errors import InputError
from magicflow.experiments.data import experiment_images, experiment_slices, load_set, select_slices


def slice_table(tmp_path: Path) -> Path:
    rows = []
    for s, dx in (("01", "AD"), ("02", "CN")):
        for modality, tracer in (("T1w", "n/a"), ("pet", "tau"), ("pet", "fdg")):
            for offset in (-1, 0, 1):
                image = f"sub-{s}_{modality}_{tracer}"
                rows.append(
                    {
                        "subject": s,
                        "session": "01",
                        "image": image,
                        "modality": modality,
                        "tracer": tracer,
                        "diagnosis": dx,
                        "offset": offset,
                        "index": len(rows),
                    }
                )
    path = tmp_path / "slices.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_kinds_labels_and_training_only_augmentation(tmp_path: Path):
    path = slice_table(tmp_path)
    exp = {"label": "diagnosis", "modalities": ["pet-tau"]}
    slices = experiment_slices({"d": path}, exp)
    assert set(slices["kind"]) == {"pet-tau"} and len(slices) == 6
    images = experiment_images(slices)
    assert list(images["image"]) == ["sub-01_pet_tau", "sub-02_pet_tau"]
    train = select_slices(slices, images, [0], {"AD": [-1, 1]})
    assert sorted(zip(train["label"], train["offset"])) == [("AD", -1), ("AD", 0), ("AD", 1), ("CN", 0)]
    test = select_slices(slices, images, [0])
    assert list(test["offset"]) == [0, 0]
    arrays = {"d": np.arange(18 * 4, dtype=np.float32).reshape(18, 1, 2, 2)}
    data = load_set(test, arrays, ["AD", "CN"])
    assert data.labels.tolist() == [0, 1]
    assert np.array_equal(data.images[1].numpy(), arrays["d"][int(test["index"].iloc[1])])


def test_modality_label_separates_tracers(tmp_path: Path):
    slices = experiment_slices({"d": slice_table(tmp_path)}, {"label": "modality", "modalities": ["T1w", "pet-tau", "pet-fdg"]})
    assert sorted(slices["label"].unique()) == ["T1w", "pet-fdg", "pet-tau"]


def test_missing_offsets_and_unknown_labels_are_errors(tmp_path: Path):
    slices = experiment_slices({"d": slice_table(tmp_path)}, {"label": "diagnosis", "modalities": ["T1w"]})
    images = experiment_images(slices)
    with pytest.raises(InputError, match=r"offsets \[5\] were not extracted"):
        select_slices(slices, images, [0, 5])
    with pytest.raises(InputError, match="not among the experiment's classes"):
        load_set(select_slices(slices, images, [0]), {"d": np.zeros((18, 1, 2, 2), np.float32)}, ["AD"])
    with pytest.raises(InputError, match="no column 'site'"):
        experiment_slices({"d": slice_table(tmp_path)}, {"label": "site", "modalities": ["T1w"]})


def test_dataset_scanner_label_and_class_filter(tmp_path: Path):
    path = slice_table(tmp_path)
    table = pd.read_csv(path, sep="\t", dtype=str)
    table["scanner"] = ["Siemens TrioTim" if s == "01" else "GE 1.5T" for s in table["subject"]]
    table.to_csv(path, sep="\t", index=False)
    exp = {"label": "dataset_scanner", "modalities": ["T1w"], "classes": ["site1 Siemens TrioTim"]}
    slices = experiment_slices({"site1": path}, exp)
    assert set(slices["label"]) == {"site1 Siemens TrioTim"} and set(slices["subject"]) == {"01"}
    with pytest.raises(InputError, match=r"classes \['site1 Prisma'\] have no slices"):
        experiment_slices({"site1": path}, {**exp, "classes": ["site1 Prisma"]})
