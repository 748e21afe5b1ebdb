"""Config validation: the shipped config passes, every kind of mistake names its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from magicflow.config import REPO_ROOT, active_experiments, experiment_settings, load_config, validate_config
from magicflow.errors import InputError

SHIPPED = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())


def fresh() -> dict:
    return copy.deepcopy(SHIPPED)


def test_shipped_config_is_valid_and_gets_defaults():
    config = validate_config(fresh())
    assert config["registration"]["qc_threshold"] == 1.05  # default filled in from the schema
    assert config["datasets"]["demo"]["ad_fraction"] == 0.5
    assert config["experiments"]["demo_scanner_classification"]["offsets"]["augment"] == {}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["datasets"]["demo"].update(kind="demoo"), "'datasets.demo.kind': 'demoo' is not one of"),
        (lambda c: c["datasets"]["demo"].update(subjets=3), "unknown key 'subjets' (did you mean 'subjects'?)"),
        (lambda c: c.update(trainig={}), "unknown key 'trainig' (did you mean 'training'?)"),
        (lambda c: c.pop("training"), "'training' is a required property"),
        (lambda c: c["datasets"].update(ext={"kind": "bids"}), "'datasets.ext': 'root' is a required property"),
        (
            lambda c: c["datasets"].update(ext={"kind": "ixi", "root": "/no/such/folder"}),
            "'datasets.ext.root': folder '/no/such/folder' does not exist",
        ),
        (lambda c: c["training"].update(epochs="five"), "'training.epochs': 'five' is not of type 'integer'"),
        (
            lambda c: c["experiments"]["demo_scanner_generation"].update(preset="huge"),
            "'experiments.demo_scanner_generation.preset': 'huge'",
        ),
        (
            lambda c: c["experiments"]["demo_scanner_generation"].update(modalities=["T3w"]),
            "'experiments.demo_scanner_generation.modalities.0'",
        ),
        (lambda c: c["datasets"].update({"bad-name": {"kind": "demo"}}), "'datasets'"),
    ],
)
def test_bad_config_names_the_key(mutate, expected):
    config = fresh()
    mutate(config)
    with pytest.raises(InputError) as error:
        validate_config(config)
    assert expected in str(error.value)


def test_experiment_with_unconfigured_dataset_is_skipped_with_one_line():
    config = fresh()
    config["experiments"]["paper_task"] = {**config["experiments"]["demo_scanner_generation"], "datasets": ["ixi", "demo"]}
    active, skipped = active_experiments(validate_config(config))
    assert "paper_task" not in active and "demo_scanner_generation" in active
    assert "experiment 'paper_task' skipped: dataset(s) ixi not configured" in skipped
    assert "experiment 'diagnosis_classification' skipped: dataset(s) adni not configured" in skipped


def test_load_config_rejects_a_non_mapping(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="must be a mapping"):
        load_config(path)


def test_experiment_training_overrides_merge_augmentation_key_by_key():
    config = fresh()
    config["training"]["augment"] = {"rotate_degrees": 5.0}
    config["experiments"]["demo_scanner_generation"]["training"] = {"epochs": 7, "augment": {"noise_sigma": 0.0}}
    settings = experiment_settings(validate_config(config), "demo_scanner_generation")
    assert settings["training"]["epochs"] == 7 and settings["training"]["lr"] == config["training"]["lr"]
    assert settings["training"]["augment"] == {"rotate_degrees": 5.0, "shift_pixels": 2.0, "noise_sigma": 0.0}
    assert "evaluation" not in settings  # evaluation settings never rerun training


def test_evaluate_without_a_settings_file_uses_the_schema_defaults(tmp_path: Path):
    from magicflow.evaluate.commands import evaluation_settings

    config = load_config(REPO_ROOT / "config" / "config.yaml")
    expected = {**config["evaluation"], "ms_ssim_pairs": 500, "seed": 4}  # the shipped config lowers ms_ssim_pairs
    assert evaluation_settings(None, seed=4) == expected
    given = tmp_path / "evaluation.json"
    given.write_text('{"bootstrap": 50, "nearest_k": null}')
    assert evaluation_settings(given, seed=4) == {**expected, "bootstrap": 50}


def test_library_presets_are_the_flow_librarys():
    from magicflow.config import LIBRARY_PRESETS
    from magicflow.flow.presets import PRESETS

    assert LIBRARY_PRESETS == tuple(PRESETS)


def test_image_size_is_an_experiment_setting_not_a_preset_override():
    config = fresh()
    config["experiments"]["demo_scanner_generation"]["image_size"] = 64
    settings = experiment_settings(validate_config(config), "demo_scanner_generation")
    assert settings["image_size"] == 64
    assert experiment_settings(validate_config(fresh()), "scanner_classification")["image_size"] == 182
    config = fresh()
    config["model_presets"] = {"tiny": {"base": "small", "overrides": {"image_size": 64}}}
    config["experiments"]["demo_scanner_generation"]["preset"] = "tiny"
    with pytest.raises(InputError, match="experiments.demo_scanner_generation.image_size instead"):
        experiment_settings(validate_config(config), "demo_scanner_generation")
    config = fresh()
    config["experiments"]["demo_scanner_generation"]["image_size"] = 200
    with pytest.raises(InputError, match="image_size"):
        validate_config(config)


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({"kind": "in_domain", "weights": "/w.pt"}, "'evaluation.features': unknown key 'weights'"),
        ({"kind": "radimagenet_resnet50"}, "'evaluation.features': 'weights' is a required property"),
        (
            {"kind": "swav_resnet50", "weights": "/w.pt", "epochs": 3},
            "'evaluation.features': unknown key 'epochs'; allowed keys: kind, weights",
        ),
        ({"kind": "in_domain", "feature_dim": 20}, "'evaluation.features.feature_dim': 20 is not a multiple of 8"),
    ],
)
def test_feature_extractor_weights_go_with_the_pretrained_kinds(features, expected):
    config = fresh()
    config["evaluation"]["features"] = features
    with pytest.raises(InputError) as error:
        validate_config(config)
    assert expected in str(error.value)


def test_every_feature_extractor_option_is_a_config_key():
    """What the config accepts is what extractor_from_config takes, for both families of kinds,
    and a pretrained kind gets no in-domain default filled in (which the extractor would refuse)."""
    from magicflow.evaluate.features import _EXTERNAL_KEYS, _IN_DOMAIN_KEYS

    config = fresh()
    config["evaluation"]["features"] = {
        "kind": "in_domain",
        "epochs": 2,
        "feature_dim": 64,
        "input_size": 48,
        "batch_size": 16,
        "lr": 0.01,
    }
    assert set(validate_config(config)["evaluation"]["features"]) == _IN_DOMAIN_KEYS
    config = fresh()
    config["evaluation"]["features"] = {"kind": "radimagenet_resnet50", "weights": "/w.pt"}
    assert set(validate_config(config)["evaluation"]["features"]) == _EXTERNAL_KEYS
    config = fresh()
    config["evaluation"]["features"] = {"kind": "in_domain"}
    assert validate_config(config)["evaluation"]["features"] == {"kind": "in_domain", "epochs": 5}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["experiments"]["demo_scanner_generation"].update(label="scaner"),
            "'experiments.demo_scanner_generation.label': no dataset has a column 'scaner' (did you mean 'scanner'?)",
        ),
        (
            lambda c: c["experiments"]["demo_diagnosis_classification"].update(classes=["AD", "Alzheimer"]),
            "'experiments.demo_diagnosis_classification.classes': ['Alzheimer'] never occur as 'diagnosis' here",
        ),
        (
            lambda c: c["experiments"]["demo_diagnosis_classification"].update(folds=99),
            "'experiments.demo_diagnosis_classification.folds': 99 folds but the demo cohort has",
        ),
        (
            lambda c: c["datasets"]["demo"].update(tracers=["FDG"]),
            "cannot hold",
        ),
        (lambda c: c["datasets"].update(Demo={"kind": "demo"}), "config key 'datasets': 'demo' and 'Demo' differ only by case"),
        (
            lambda c: c["experiments"].update(Demo_scanner_generation=c["experiments"]["demo_scanner_generation"]),
            "differ only by case",
        ),
        (
            lambda c: c["datasets"].update(ext={"kind": "ixi", "root": str(REPO_ROOT / "README.md")}),
            "'datasets.ext.root': '" + str(REPO_ROOT / "README.md") + "' is a file, not a folder",
        ),
        (
            lambda c: c["datasets"].update(ext={"kind": "ixi", "root": str(REPO_ROOT), "max_voxel_mm": {"T1": 2}}),
            "'datasets.ext.max_voxel_mm'",
        ),
    ],
)
def test_configuration_mistakes_about_data_stop_at_parse_time(mutate, expected):
    """Each used to surface late (after registration) or never: a misspelt label, a class that
    cannot occur, more folds than subjects, a modality no dataset holds, case-clashing names,
    a root that is a file reported as missing."""
    config = fresh()
    mutate(config)
    with pytest.raises(InputError) as error:
        validate_config(config)
    assert expected in str(error.value)


def test_max_voxel_mm_defaults_match_the_manifest_code():
    """The schema's defaults and the manifest command's are one setting."""
    from magicflow.datasets.manifest import MAX_VOXEL_MM

    config = fresh()
    config["datasets"]["ext"] = {"kind": "ixi", "root": str(REPO_ROOT)}
    assert validate_config(config)["datasets"]["ext"]["max_voxel_mm"] == MAX_VOXEL_MM


def test_a_dataset_named_with_other_case_is_hinted_when_skipped():
    config = validate_config(fresh())
    config["experiments"]["demo_scanner_generation"]["datasets"] = ["DEMO"]
    _, skipped = active_experiments(config)
    assert "('DEMO': did you mean 'demo'?)" in " ".join(skipped)


def manifest(rows: list[tuple[str, str, str, str]]):
    """A manifest with (subject, modality, tracer, diagnosis) per image."""
    import pandas as pd

    return pd.DataFrame(
        [{"subject": s, "modality": m, "tracer": t, "diagnosis": d, "scanner": "GE Signa"} for s, m, t, d in rows]
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"classes": ["AD", "FTD"]}, "classes ['FTD'] never occur as 'diagnosis' among its ['T1w'] images in ['adni']"),
        ({"label": "site"}, "the manifest of dataset 'adni' has no column 'site'"),
        ({"folds": 4}, "4 folds but the manifests hold too few subjects per class (AD: 3, CN: 3)"),
        ({"modalities": ["pet-tau"]}, "no ['pet-tau'] images with a 'diagnosis' label"),
    ],
)
def test_experiment_data_is_checked_against_the_manifests(change, expected):
    from magicflow.config import check_experiment_manifests

    rows = [(f"{d}{i}", "T1w", "n/a", d) for d in ("AD", "CN") for i in range(3)] + [("AD0", "pet", "fdg", "AD")]
    experiment = {"datasets": ["adni"], "label": "diagnosis", "modalities": ["T1w"], "classes": None, "folds": 3, **change}
    with pytest.raises(InputError) as error:
        check_experiment_manifests({"name": "x", **experiment}, {"adni": manifest(rows)})
    assert expected in str(error.value)


def test_experiment_data_that_fits_passes():
    from magicflow.config import check_experiment_manifests

    rows = [(f"{d}{i}", "T1w", "n/a", d) for d in ("AD", "CN") for i in range(3)] + [("AD0", "pet", "fdg", "AD")]
    for label, classes in (("diagnosis", ["AD", "CN"]), ("modality", ["T1w"]), ("dataset_scanner", ["adni GE Signa"])):
        experiment = {"datasets": ["adni"], "label": label, "modalities": ["T1w"], "classes": classes, "folds": 3}
        counts = check_experiment_manifests(experiment, {"adni": manifest(rows)})
        if label == "diagnosis":  # the PET row is not a T1w image: 3 images of 3 subjects per class
            assert counts == {"AD": {"images": 3, "subjects": 3}, "CN": {"images": 3, "subjects": 3}}


def test_check_data_command_fails_on_the_manifest_and_writes_nothing(tmp_path):
    """`magicflow check-data`, as the workflow's check_data rule runs it right after the manifests."""
    import json

    from magicflow.cli import main

    rows = [(f"{d}{i}", "T1w", "n/a", d) for d in ("AD", "CN") for i in range(3)]
    manifest(rows).to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    settings = {"name": "x", "datasets": ["adni"], "label": "diagnosis", "modalities": ["T1w"], "classes": None, "folds": 3}
    (tmp_path / "experiment.json").write_text(json.dumps(settings))
    out = tmp_path / "data_check.json"
    args = ["check-data", "--experiment", str(tmp_path / "experiment.json"), "--manifest", f"adni={tmp_path / 'manifest.tsv'}"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["per_class"]["CN"] == {"images": 3, "subjects": 3}

    (tmp_path / "experiment.json").write_text(json.dumps({**settings, "folds": 4}))
    out.unlink()
    assert main([*args, "--out", str(out)]) != 0
    assert not out.exists()
    assert main([*args[:3], "--out", str(out)]) != 0  # no manifest for the experiment's dataset
