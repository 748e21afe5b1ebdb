"""``magicflow evaluate``: one experiment's metrics (JSON and TSV) and figures.

Reads exactly the files it is given (the ``evaluate`` rule's inputs): the experiment's settings,
its split, and each fold's learning outputs (see :mod:`magicflow.evaluate.inputs`); writes
``evaluation/`` (figures, the frozen feature extractor) atomically, then ``metrics.json`` and
``metrics.tsv``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from magicflow.errors import InputError
from magicflow.io import atomic_dir, atomic_path, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magicflow.experiments.commands import add_experiment_inputs

    from magicflow.evaluate.inputs import FOLD_FILES, OPTIONAL

    add_experiment_inputs(parser)
    parser.add_argument(
        "--evaluation", type=Path, help="evaluation settings JSON (config section 'evaluation'); defaults if absent"
    )
    parser.add_argument("--split", required=True, type=Path, help="results/<experiment>/splits/split.json (folds run, classes)")
    parser.add_argument("--folds", required=True, type=Path, help="results/<experiment>/splits/folds (the first fold's sets)")
    for name, what in FOLD_FILES.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            action="append",
            default=[],
            metavar="FOLD=PATH",
            help=f"a fold's {what}, one per fold run" + (" (optional)" if name in OPTIONAL else ""),
        )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="ID=JSON",
        help="a baseline's baseline.json (repeat per baseline); its predictions come with --baseline-predictions",
    )
    parser.add_argument(
        "--baseline-predictions",
        action="append",
        default=[],
        metavar="ID:FOLD=PATH",
        help="a baseline's predictions.tsv of one fold, one per baseline and fold run (Table 3)",
    )
    parser.add_argument(
        "--baseline-samples",
        action="append",
        default=[],
        metavar="ID:FOLD=PATH",
        help="a generative baseline's samples folder (samples.npz) of one fold, one per baseline and fold run (Tables 1-2)",
    )
    parser.add_argument(
        "--baseline-training",
        action="append",
        default=[],
        metavar="ID:FOLD=PATH",
        help="a baseline's training.tsv of one fold (Table 5: parameters, steps, time); optional, per baseline all folds or none",
    )
    parser.add_argument(
        "--baseline-train-benchmark",
        action="append",
        default=[],
        metavar="ID:FOLD=PATH",
        help="the Snakemake benchmark TSV of a baseline's training job of one fold (Table 5: wall time, peak RAM); optional",
    )
    parser.add_argument(
        "--groundtruth", action="append", default=[], metavar="DATASET=DIR", help="a demo dataset's derivatives/groundtruth"
    )
    parser.add_argument(
        "--qc", action="append", default=[], metavar="DATASET=TSV", help="a dataset's qc.tsv (flags shown in the report)"
    )
    parser.add_argument(
        "--out-dir", required=True, type=Path, help="results/<experiment>/evaluation (figures, feature extractor)"
    )
    parser.add_argument("--out-json", required=True, type=Path, help="results/<experiment>/metrics.json")
    parser.add_argument("--out-tsv", required=True, type=Path, help="results/<experiment>/metrics.tsv")


def evaluation_settings(path: Path | None, seed: int) -> dict:
    """The schema's evaluation defaults, overridden by the settings file when given."""
    from magicflow.config import schema_defaults

    settings = {**schema_defaults("evaluation"), "seed": seed}
    if path is not None:
        try:
            given = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read evaluation settings {path}: {error}") from None
        settings.update({k: v for k, v in given.items() if v is not None})
    return settings


#: what each kind of baseline gives evaluation per fold (its --baseline-<what> option)
KIND_OUTPUT = {"discriminative": "predictions", "generative": "samples", "translation": "translations"}


def baseline_inputs(args: argparse.Namespace) -> dict[str, dict]:
    """id -> {"settings": its baseline.json, its kind's output (:data:`KIND_OUTPUT`): {fold: path},
    and where given "training" and "train_benchmark": {fold: path}} from --baseline,
    --baseline-predictions / -samples / -translations, --baseline-training and
    --baseline-train-benchmark (the Table 5 files are optional)."""
    from magicflow.experiments.commands import parse_pairs

    settings = {}
    for baseline_id, path in parse_pairs(args.baseline, "baseline").items():
        try:
            settings[baseline_id] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read baseline settings {path}: {error}") from None
    given: dict[str, dict[str, dict[str, Path]]] = {what: {} for what in KIND_OUTPUT.values()}
    extra: dict[str, dict[str, dict[str, Path]]] = {"training": {}, "train_benchmark": {}}
    for what, values in (
        ("predictions", getattr(args, "baseline_predictions", [])),
        ("samples", getattr(args, "baseline_samples", [])),
        ("translations", getattr(args, "baseline_translations", [])),
        ("training", getattr(args, "baseline_training", [])),
        ("train_benchmark", getattr(args, "baseline_train_benchmark", [])),
    ):
        for value in values:
            key, sep, path = value.partition("=")
            baseline_id, colon, fold = key.partition(":")
            option = what.replace("_", "-")
            if not (sep and colon and baseline_id and fold and path):
                raise InputError(f"--baseline-{option} {value!r}: expected ID:FOLD=PATH")
            if what in extra and baseline_id not in settings:
                raise InputError(f"--baseline-{option} {value!r}: no --baseline {baseline_id}=JSON was given")
            (given if what in given else extra)[what].setdefault(baseline_id, {})[fold] = Path(path)
    wanted = {b: KIND_OUTPUT[s.get("kind", "discriminative")] for b, s in settings.items()}
    for kind, what in KIND_OUTPUT.items():
        ids = {b for b, w in wanted.items() if w == what}
        if ids != set(given[what]):
            raise InputError(
                f"baselines with settings {sorted(ids)} but {what} for {sorted(given[what])}: give both for each {kind} baseline"
            )
    return {
        b: {"settings": settings[b], wanted[b]: given[wanted[b]][b], **{w: extra[w].get(b, {}) for w in extra}} for b in settings
    }


def fold_extractors(settings: dict, sets: dict[str, dict], num_classes: int, out_dir: Path) -> dict:
    """fold -> feature extractor. The in-domain one is trained per fold on that fold's training
    slices (a single one trained on fold 0 would have seen the other folds' test subjects) and
    scored on its validation subjects; a pretrained one is loaded once and shared. Fold 0's is
    saved as ``feature_extractor.pt``, the others as ``feature_extractor_<fold>.pt``."""
    from magicflow.evaluate.features import extractor_from_config

    extractors: dict = {}
    shared = settings["features"].get("kind", "in_domain") != "in_domain"
    for k, (name, fold_sets) in enumerate(sets.items()):
        train, val = fold_sets["train"], fold_sets["val"]
        if shared and extractors:
            extractors[name] = next(iter(extractors.values()))
            continue
        print(
            f"{name}: feature extractor ({settings['features'].get('kind', 'in_domain')}) on {len(train)} training slices",
            flush=True,
        )
        extractors[name] = extractor_from_config(
            settings["features"],
            train.images,
            train.labels,
            num_classes,
            settings["seed"],
            val_images=val.images,
            val_labels=val.labels,
        )
        extractors[name].save(out_dir / ("feature_extractor.pt" if k == 0 else f"feature_extractor_{name}.pt"))
    return extractors


def run(args: argparse.Namespace) -> int:
    from magicflow.evaluate import experiment as ev
    from magicflow.evaluate.inputs import FOLD_FILES, generation_sets, load_experiment
    from magicflow.experiments.commands import load_inputs, parse_pairs
    from magicflow.experiments.data import experiment_images
    from magicflow.view import View, crop_png, read_mask

    started = time.perf_counter()
    baselines = baseline_inputs(args)  # read first: a wrong option fails before minutes of work
    experiment, slices, arrays, brain = load_inputs(args)
    settings = evaluation_settings(args.evaluation, experiment["seed"])
    ev.seed_everything(settings["seed"])
    outputs = load_experiment(args.split, {name: parse_pairs(getattr(args, name), name.replace("_", "-")) for name in FOLD_FILES})
    classes = outputs.classes
    # generation is judged per fold against its test subjects; validation subjects only score the extractor
    sets = generation_sets(slices, arrays, classes, args.folds, [f.name for f in outputs.folds], experiment["offsets"])
    qc = {
        name: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False) for name, path in parse_pairs(args.qc, "qc").items()
    }

    with atomic_dir(args.out_dir) as fig_dir:
        extractors = fold_extractors(settings, sets, len(classes), fig_dir)
        extractor = extractors[outputs.folds[0].name]
        metrics = {
            "experiment": outputs.name,
            "model": experiment["model"],
            "label": experiment["label"],
            "classes": classes,
            "datasets": experiment["datasets"],
            "image_size": int(brain.shape[-1]),
            "view": experiment["view"],
            "folds_run": len(outputs.folds),
            "folds": experiment["folds"],
            "settings": settings,
            "feature_extractor": {
                "kind": extractor.kind,
                "name": extractor.name,
                "feature_dim": extractor.feature_dim,
                "checksum": extractor.checksum,
                "suffix": extractor.metric_suffix,
                "per_fold": {name: e.describe().get("training", {}) for name, e in extractors.items()},
                "trained_per_fold": settings["features"].get("kind", "in_domain") == "in_domain",
            },
            "data": ev.data_section(slices, experiment_images(slices), experiment, qc),
        }
        print("generation metrics", flush=True)
        metrics["generation"] = ev.generation_section(outputs, sets, extractors, settings, fig_dir)
        print("classification metrics", flush=True)
        metrics["classification"] = ev.classification_section(outputs, settings, fig_dir)
        print("attribution analysis", flush=True)
        # the demo's planted truth is AD tau uptake: it scores diagnosis maps on tau PET, nothing else
        scores_truth = experiment["label"] == "diagnosis" and "pet-tau" in experiment["modalities"]
        groundtruth = parse_pairs(args.groundtruth, "groundtruth") if scores_truth else {}
        view = View.from_record(experiment["view"])
        if view.is_crop:  # where the box sits on the slice, for the report
            crop_png(view, read_mask(next(iter(parse_pairs(args.arrays, "arrays").values()))), fig_dir / "crop.png")
        metrics["attribution"] = ev.attribution_section(outputs, brain, groundtruth, settings, fig_dir, view)
        generative = {b: given for b, given in baselines.items() if "samples" in given}
        discriminative = {b: given for b, given in baselines.items() if "samples" not in given}
        metrics["comparison"] = ev.comparison_section(outputs, metrics["classification"]["per_fold"], discriminative)
        if generative:
            print("generative baselines", flush=True)
            metrics["comparison"] = ev.generative_comparison_section(
                outputs, metrics["generation"], sets, extractors, generative, settings, fig_dir
            )
        metrics["efficiency"] = ev.efficiency_section(outputs)
        if metrics["comparison"]:
            metrics["comparison"]["cost"] = ev.cost_section(outputs, baselines)  # Table 5
        metrics["figures"] = {k: v for k, v in ev.FIGURES.items() if (fig_dir / v).exists()}
        metrics = ev.to_json(metrics)
    write_json(args.out_json, metrics)
    with atomic_path(args.out_tsv) as tmp:
        pd.DataFrame(ev.flatten(metrics), columns=["metric", "value"]).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    summary = metrics["classification"]["pooled"]
    print(
        f"{outputs.name}: balanced accuracy {summary.get('balanced_accuracy')}, "
        f"FID_{extractor.metric_suffix} {metrics['generation']['overall']['generated'].get('fid')} "
        f"in {time.perf_counter() - started:.1f} s -> {args.out_json}"
    )
    return 0
