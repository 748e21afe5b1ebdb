"""Translation experiments' data and config: pairs are one subject's source and target at one
offset, never another subject's; unpaired targets are left out with a line; config errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from magicflow.config import REPO_ROOT, baseline_settings, experiment_settings, validate_config
from magicflow.errors import InputError
from magicflow.experiments.data import experiment_images, experiment_slices, load_set, select_slices

EXPERIMENT = {"label": "diagnosis", "modalities": ["pet-tau"], "source": "T1w", "target": "pet-tau"}


def rows(subjects=(("01", "AD"), ("02", "CN"), ("03", "CN")), offsets=(-1, 0, 1)) -> list[dict]:
    """A slices.tsv as the slices stage writes it: T1w, FLAIR and tau PET of each subject, the
    PET's reference the subject's T1w (as the manifest records it)."""
    out = []
    for s, dx in subjects:
        t1 = f"sub-{s}_ses-01_T1w"
        for modality, tracer, image in (
            ("T1w", "n/a", t1),
            ("FLAIR", "n/a", f"sub-{s}_ses-01_FLAIR"),
            ("pet", "tau", f"sub-{s}_ses-01_trc-AV1451_pet"),
        ):
            for offset in offsets:
                out.append(
                    {
                        "subject": s,
                        "session": "01",
                        "image": image,
                        "modality": modality,
                        "tracer": tracer,
                        "diagnosis": dx,
                        "age": "70",
                        "reference": t1,
                        "offset": offset,
                        "index": len(out),
                    }
                )
    return out


def write(tmp_path: Path, table: list[dict]) -> Path:
    path = tmp_path / "slices.tsv"
    pd.DataFrame(table).to_csv(path, sep="\t", index=False)
    return path


def test_each_pet_slice_pairs_with_its_own_t1_at_the_same_offset(tmp_path: Path):
    table = rows()
    slices = experiment_slices({"d": write(tmp_path, table)}, EXPERIMENT)
    assert set(slices["kind"]) == {"pet-tau"} and len(slices) == 9
    by_index = {r["index"]: r for r in table}
    for _, row in slices.iterrows():
        source = by_index[int(row["source_index"])]
        assert (source["subject"], source["modality"], source["offset"]) == (row["subject"], "T1w", row["offset"])
        assert source["image"] == row["source_image"] == row["reference"]
    # the split sees one row per PET image, stratified by the label
    images = experiment_images(slices)
    assert list(images["image"]) == [f"sub-0{i}_ses-01_trc-AV1451_pet" for i in (1, 2, 3)]


def test_pairs_load_as_two_channels_source_first(tmp_path: Path):
    table = rows()
    slices = experiment_slices({"d": write(tmp_path, table)}, EXPERIMENT)
    arrays = {"d": np.arange(len(table) * 4, dtype=np.float32).reshape(len(table), 1, 2, 2)}
    test = select_slices(slices, experiment_images(slices), [0])
    data = load_set(test, arrays, ["AD", "CN"])
    assert tuple(data.images.shape) == (3, 2, 2, 2)
    for i, (_, row) in enumerate(test.iterrows()):
        assert np.array_equal(data.images[i, 0].numpy(), arrays["d"][int(row["source_index"]), 0])
        assert np.array_equal(data.images[i, 1].numpy(), arrays["d"][int(row["index"]), 0])
    empty = load_set(test.iloc[:0], arrays, ["AD", "CN"])
    assert tuple(empty.images.shape) == (0, 2, 2, 2)


def test_a_pet_referencing_another_subjects_t1_is_an_error(tmp_path: Path):
    table = rows()
    for r in table:
        if r["subject"] == "02" and r["modality"] == "pet":
            r["reference"] = "sub-01_ses-01_T1w"
    with pytest.raises(
        InputError, match=r"sub-02_ses-01_trc-AV1451_pet \(subject 02\) pairs with sub-01_ses-01_T1w of subject 01"
    ):
        experiment_slices({"d": write(tmp_path, table)}, EXPERIMENT)


def test_a_target_without_its_source_slice_is_left_out_with_a_line(tmp_path: Path, capsys):
    table = [r for r in rows() if not (r["subject"] == "03" and r["modality"] == "T1w")]
    slices = experiment_slices({"d": write(tmp_path, table)}, EXPERIMENT)
    assert sorted(slices["subject"].unique()) == ["01", "02"]
    assert "sub-03_ses-01_trc-AV1451_pet left out: no T1w slice" in capsys.readouterr().err


def test_another_source_kind_pairs_by_subject_and_session(tmp_path: Path):
    table = rows()
    slices = experiment_slices({"d": write(tmp_path, table)}, {**EXPERIMENT, "source": "FLAIR"})
    assert set(slices["source_image"].str.endswith("_FLAIR")) == {True} and len(slices) == 9
    assert (slices["source_image"].str[:6] == slices["image"].str[:6]).all()
    doubled = table + [
        {**r, "image": r["image"].replace("FLAIR", "acq-2_FLAIR"), "index": len(table) + i}
        for i, r in enumerate(table)
        if r["modality"] == "FLAIR"
    ]
    with pytest.raises(InputError, match="more than one FLAIR image"):
        experiment_slices({"d": write(tmp_path, doubled)}, {**EXPERIMENT, "source": "FLAIR"})


# --------------------------------------------------------------------------- config
SHIPPED = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
TRANSLATION = {
    "datasets": ["demo"],
    "label": "diagnosis",
    "model": "translation",
    "source": "T1w",
    "target": "pet-tau",
    "offsets": {"train": [0], "eval": [0]},
    "image_size": 32,
    "folds": 3,
}


def config_with(experiment: dict) -> dict:
    config = copy.deepcopy(SHIPPED)
    config["experiments"] = {"t": copy.deepcopy(experiment)}
    return config


def test_translation_experiment_resolves_its_modalities_folds_and_defaults():
    config = validate_config(config_with({**TRANSLATION, "baselines": ["unet", "mean"]}))
    settings = experiment_settings(config, "t")
    assert settings["modalities"] == ["pet-tau"] and (settings["source"], settings["target"]) == ("T1w", "pet-tau")
    assert settings["run_folds"] == 3  # every fold, as for classification
    assert settings["translation"] == {
        "side": "none",
        "discriminators": False,
        "source_weight": 0.001,
        "relation_width": 32,
        "samples": 8,
        "temperature": 0.7,
        "triptychs": 4,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"target": "T1w"}, "is also the source"),
        ({"modalities": ["pet-tau"]}, "uses source and target instead"),
        ({"source": None}, "'source' is a required property|None is not one of"),
        ({"baselines": ["resnet18"]}, "is a classification baseline"),
        ({"baselines": ["unet", {"name": "unet"}]}, "listed twice"),
        ({"baselines": [{"name": "unet", "weights": "/x.pt"}]}, "train from scratch"),
    ],
)
def test_bad_translation_configs_name_the_key(change, message):
    experiment = {**TRANSLATION, **change}
    experiment = {k: v for k, v in experiment.items() if v is not None}
    with pytest.raises(InputError, match=message):
        validate_config(config_with(experiment))


def test_source_and_target_belong_to_translation_experiments_only():
    experiment = copy.deepcopy(SHIPPED["experiments"]["demo_diagnosis_classification"])
    experiment["source"] = "T1w"
    with pytest.raises(InputError, match="experiments.t.source': only for model: translation"):
        validate_config(config_with(experiment))


def test_the_demo_translation_overlay_validates_over_the_shipped_config():
    """config/demo-translation.yaml as Snakemake layers it (--configfile config.yaml demo-translation.yaml)."""
    from snakemake.utils import update_config

    config = copy.deepcopy(SHIPPED)
    update_config(config, yaml.safe_load((REPO_ROOT / "config" / "demo-translation.yaml").read_text()))
    config = validate_config(config)
    settings = experiment_settings(config, "demo_mri_to_tau")
    # side information that does not leak the test diagnosis (issue 30.7), and the class-mean floor
    assert (settings["source"], settings["target"], settings["translation"]["side"]) == ("T1w", "pet-tau", "predicted")
    assert [b["name"] for b in baseline_settings(config, "demo_mri_to_tau").values()] == ["unet", "mean", "class_mean"]
    assert "demo_diagnosis_classification" in config["experiments"]  # layered over, not replacing
    assert settings["training"]["augment"]["noise_sigma"] == 0


def test_a_class_mean_floor_without_classes_is_refused_at_parse_time():
    from snakemake.utils import update_config

    config = copy.deepcopy(SHIPPED)
    update_config(config, yaml.safe_load((REPO_ROOT / "config" / "demo-translation.yaml").read_text()))
    config["experiments"]["demo_mri_to_tau"]["translation"]["side"] = "age"
    with pytest.raises(
        InputError, match=r"baselines.2': class_mean predicts each class's mean image, but translation.side is age"
    ):
        baseline_settings(validate_config(config), "demo_mri_to_tau")


def test_side_information_is_the_label_one_hot_or_the_age_on_the_training_scale(tmp_path: Path):
    import torch

    from magicflow.experiments.translation import age_scale, side_table

    table = rows()
    for r in table:
        r["age"] = str(60 + 10 * int(r["subject"]))  # 70, 80, 90
    slices = experiment_slices({"d": write(tmp_path, table)}, EXPERIMENT)
    arrays = {"d": np.zeros((len(table), 1, 2, 2), np.float32)}
    data = load_set(select_slices(slices, experiment_images(slices), [0]), arrays, ["AD", "CN"])
    assert side_table(data, "none", ["AD", "CN"], None).shape == (3, 0)
    assert torch.equal(side_table(data, "label", ["AD", "CN"], None), torch.tensor([[1.0, 0], [0, 1], [0, 1]]))
    # predicted: training and validation subjects' diagnoses are known, so their side is the label
    assert torch.equal(side_table(data, "predicted", ["AD", "CN"], None), torch.tensor([[1.0, 0], [0, 1], [0, 1]]))
    mean, std = age_scale(data)
    assert mean == 80 and np.isclose(std, np.std([70, 80, 90]))
    assert torch.allclose(side_table(data, "age", ["AD", "CN"], (80.0, 10.0))[:, 0], torch.tensor([-1.0, 0.0, 1.0]))
    data.meta.loc[1, "age"] = "n/a"
    with pytest.raises(InputError, match="1 image\\(s\\) have none \\(e.g. sub-02_ses-01_trc-AV1451_pet\\)"):
        side_table(data, "age", ["AD", "CN"], (80.0, 10.0))
