"""Evaluation glue: the paper's counts match the shipped config's classes, ground-truth masks
land on the right slice, metrics flatten to TSV rows, the data and efficiency sections
count what they should."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

from magicflow.config import REPO_ROOT
from magicflow.evaluate.experiment import data_section, efficiency_section, flatten, to_json
from magicflow.evaluate.groundtruth import slice_masks
from magicflow.evaluate.inputs import ExperimentOutputs, FoldOutputs
from magicflow.evaluate.paper_counts import PAPER_SLICE_COUNTS
from magicflow.preprocess.template import GRID_1MM_AFFINE


def test_paper_counts_use_the_shipped_config_class_names():
    experiments = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["experiments"]
    for name, counts in PAPER_SLICE_COUNTS.items():
        classes = experiments[name].get("classes") or experiments[name]["modalities"]
        assert sorted(counts) == sorted(classes), name
    assert sum(PAPER_SLICE_COUNTS["modality_generation"].values()) == 3144  # the paper's stated total


def test_groundtruth_mask_lands_on_the_slice_it_was_drawn_in(tmp_path):
    # a mask voxel block on FSL's grid at y index 109 + 3 (offset 3), x index 20 (subject's right), z index 150
    volume = np.zeros((182, 218, 182), np.uint8)
    volume[18:23, 112, 148:153] = 1
    sub = tmp_path / "sub-01"
    sub.mkdir()
    nib.save(nib.Nifti1Image(volume, GRID_1MM_AFFINE), sub / "sub-01_space-MNI152NLin2009aSym_desc-ADtau_mask.nii.gz")
    masks = slice_masks(tmp_path, ["01", "sub-01", "02"], [3, 0, 3])
    assert masks.shape == (3, 182, 182)
    rows, cols = np.nonzero(masks[0])
    # slices run superior (row 0) to inferior: z index 150 is row 181 - 150 = 31; columns are x indices
    assert set(rows) == set(range(181 - 152, 181 - 147)) and set(cols) == set(range(18, 23))
    assert not masks[1].any()  # another slice of the same subject
    assert not masks[2].any()  # no ground truth for sub-02 (a CN subject): all False


def test_flatten_keeps_scalars_and_fold_rows():
    metrics = to_json(
        {"a": {"b": 1.5, "c": float("nan"), "d": "text"}, "per_fold": [{"fold": "fold-0", "x": 2}], "n": np.int64(3)}
    )
    rows = dict(flatten(metrics))
    assert rows == {"a.b": 1.5, "a.c": None, "per_fold.fold-0.x": 2, "n": 3}


def test_data_section_counts_augmented_training_slices():
    images = pd.DataFrame(
        {
            "dataset": ["demo"] * 5,
            "subject": ["1", "2", "3", "4", "5"],
            "image": list("abcde"),
            "label": ["AD", "AD", "CN", "CN", "CN"],
        }
    )
    experiment = {"name": "diagnosis_classification", "offsets": {"train": [0], "eval": [0], "augment": {"AD": [-1, 1]}}}
    qc = {
        "demo": pd.DataFrame(
            {"label": ["a", "z"], "image": ["a.nii.gz", "z.nii.gz"], "ncc": ["0.2", "0.1"], "flagged": ["True", "True"]}
        )
    }
    section = data_section(pd.DataFrame(index=range(7)), images, experiment, qc)
    counts = {r["class"]: r for r in section["counts"]}
    assert counts["AD"]["slices"] == 2 * 3 and counts["CN"]["slices"] == 3
    assert section["paper_counts"] == {"AD": 530, "CN": 631}
    assert [f["label"] for f in section["qc_flags"]] == ["a"]  # only images the experiment uses


def test_efficiency_from_training_log_and_samples():
    training = pd.DataFrame({"epoch": [1, 2], "steps": [3, 3], "train_seconds": [3.0, 3.0], "seconds": [4.0, 4.0]})
    fold = FoldOutputs(
        "fold-0",
        training,
        pd.DataFrame(),
        {"samples": np.zeros((2, 4, 1, 2, 2)), "seconds": np.float64(2.0)},
        {},
        {"train": {"max_rss": 900.0}},
    )
    (row,) = efficiency_section(ExperimentOutputs("x", ["a", "b"], {}, [fold]))
    assert row["steps"] == 6 and row["ms_per_step"] == 1000.0 and row["generated_per_s"] == 4.0 and row["peak_rss_mb"] == 900.0


def test_evaluation_reads_the_files_it_is_given_and_names_a_missing_fold(tmp_path):
    """No results layout is assumed: each fold's files come from the command line (the rule's
    declared inputs), wherever they lie; a fold of split.json without its file is named."""
    import json

    import pytest

    from magicflow.errors import InputError
    from magicflow.evaluate.inputs import load_experiment

    split = tmp_path / "anywhere" / "split.json"
    split.parent.mkdir()
    split.write_text(json.dumps({"experiment": "x", "classes": ["a", "b"], "run_folds": 2}))
    files: dict[str, dict] = {name: {} for name in ("training", "samples", "predictions", "attribution", "train_benchmark")}
    for k in range(2):
        fold, where = f"fold-{k}", tmp_path / f"elsewhere{k}"
        (where / "s").mkdir(parents=True)
        (where / "m").mkdir()
        pd.DataFrame({"epoch": [1], "seconds": [1.0]}).to_csv(where / "t.tsv", sep="\t", index=False)
        pd.DataFrame({"image": ["i"], "true": ["a"], "posterior_a": [1.0], "posterior_b": [0.0]}).to_csv(
            where / "p.tsv", sep="\t", index=False
        )
        np.savez(where / "s" / "samples.npz", samples=np.zeros((2, 1, 1, 2, 2)))
        np.savez(where / "m" / "maps.npz", class_maps=np.zeros((1, 2, 2, 2)))
        pd.DataFrame({"s": [5.0], "max_rss": [100.0 + k], "h:m:s": ["0:00:05"]}).to_csv(where / "b.tsv", sep="\t", index=False)
        for name, path in (
            ("training", "t.tsv"),
            ("samples", "s"),
            ("predictions", "p.tsv"),
            ("attribution", "m"),
            ("train_benchmark", "b.tsv"),
        ):
            files[name][fold] = where / path
    outputs = load_experiment(split, files)
    assert outputs.name == "x" and [f.name for f in outputs.folds] == ["fold-0", "fold-1"]
    assert [f.benchmarks["train"]["max_rss"] for f in outputs.folds] == [100.0, 101.0]
    assert "class_maps" in outputs.folds[1].maps and outputs.folds[0].samples["samples"].shape == (2, 1, 1, 2, 2)
    # benchmarks may be left out altogether (a run outside Snakemake), not for one fold only
    assert load_experiment(split, {**files, "train_benchmark": {}}).folds[0].benchmarks == {}
    with pytest.raises(InputError, match=r"runs \['fold-0', 'fold-1'\], but the Snakemake benchmark .* for \['fold-0'\]"):
        load_experiment(split, {**files, "train_benchmark": {"fold-0": files["train_benchmark"]["fold-0"]}})
    with pytest.raises(InputError, match=r"predictions.tsv was given for \['fold-1'\]"):
        load_experiment(split, {**files, "predictions": {"fold-1": files["predictions"]["fold-1"]}})
