"""config/ablation.yaml: one model per refinement over the authors' model, valid over the shipped
config; and the table its results are read into (magicflow/evaluate/ablation.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from magicflow.config import REPO_ROOT, experiment_settings, load_config, validate_config
from magicflow.errors import InputError
from magicflow.evaluate import ablation
from magicflow.flow.nets import REFINEMENTS
from magicflow.flow.presets import PRESETS

CONFIG = REPO_ROOT / "config" / "ablation.yaml"


@pytest.fixture(scope="module")
def layered() -> dict:
    from snakemake.utils import update_config

    config = copy.deepcopy(load_config(REPO_ROOT / "config" / "config.yaml"))
    update_config(config, yaml.safe_load(CONFIG.read_text()))
    return validate_config(config)


def test_each_row_adds_one_refinement_to_the_authors_model(layered):
    for task in ("gen", "cls"):
        names = [n for n in ablation.experiments(CONFIG) if n.startswith(f"ablation_{task}_")]
        settings = {n: experiment_settings(layered, n) for n in names}
        base = settings[f"ablation_{task}_none"]
        assert base["preset_base"] == "paper" and base["preset_overrides"]["refinements"] == []
        for name, s in settings.items():
            row = name.split("_", 2)[2]
            refinements = s["preset_overrides"]["refinements"]
            if row in REFINEMENTS:
                assert refinements == [row], name
            elif row == "all":
                assert sorted(refinements) == sorted(REFINEMENTS), name
            elif row == "refined":  # the rows kept: the refined preset's
                assert refinements == PRESETS["refined"]["refinements"], name
            # every row trains on the same data with the same settings as the authors' row
            assert (s["offsets"], s["training"], s["modalities"]) == (base["offsets"], base["training"], base["modalities"])
    assert "demo_modality_generation" in layered["experiments"]  # layered over the demo, not replacing it


def test_targets_and_table_read_each_rows_curve_and_predictions(tmp_path: Path):
    config = tmp_path / "ablation.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "experiments": {
                    "ablation_gen_none": {"model": "generation"},
                    "ablation_gen_zero_heads": {"model": "generation"},
                    "ablation_cls_none": {"model": "classification"},
                }
            },
            sort_keys=False,
        )
    )
    assert ablation.targets(config, tmp_path) == [
        str(tmp_path / "ablation_gen_none/models/fold-0/training.tsv"),
        str(tmp_path / "ablation_gen_zero_heads/models/fold-0/training.tsv"),
        str(tmp_path / "ablation_cls_none/models/fold-0/training.tsv"),
        str(tmp_path / "ablation_cls_none/predictions/fold-0/predictions.tsv"),
    ]
    with pytest.raises(InputError, match="ablation_gen_none/models/fold-0/training.tsv: missing"):
        ablation.table(config, tmp_path)
    for name, bpd in (
        ("ablation_gen_none", [5.0, 4.5]),
        ("ablation_gen_zero_heads", [4.9, 4.25]),
        ("ablation_cls_none", [6.0, 5.5]),
    ):
        folder = tmp_path / name / "models" / "fold-0"
        folder.mkdir(parents=True)
        curve = {"val_bpd": bpd, "train_seconds": [1.0, 3.0], "steps": [10, 10], "parameters": [1234, 1234]}
        pd.DataFrame(curve).to_csv(folder / "training.tsv", sep="\t", index=False)
    predictions = tmp_path / "ablation_cls_none" / "predictions" / "fold-0"
    predictions.mkdir(parents=True)
    pd.DataFrame({"true": ["a", "a", "b", "b"], "predicted": ["a", "b", "b", "b"]}).to_csv(
        predictions / "predictions.tsv", sep="\t", index=False
    )
    lines = ablation.table(config, tmp_path).splitlines()
    assert lines[2] == "| generation | none | 1,234 | 4.500 | - | 200 |"
    assert lines[3] == "| generation | zero_heads | 1,234 | 4.250 (-0.250) | - | 200 |"
    assert lines[4] == "| classification | none | 1,234 | 5.500 | 0.75 | 200 |"
