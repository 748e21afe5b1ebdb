"""A trained experiment as one folder that travels: ``magicflow export-model``.

The folder holds everything ``magicflow predict`` needs on another machine, without the
training results tree:

- ``fold-<k>.pt``: each fold's selected checkpoint (weights, model configuration, classes, view);
- ``model.json``: the experiment's label, classes, modalities, evaluation offsets, view (image
  size or crop box), intensity normalisation and slice grid, and per fold its calibration
  temperature and log priors (as its ``classify`` stage fitted them) and the bits-per-dimension
  quantiles of its held-out images (validation and test subjects, at the evaluation offsets,
  averaged per image exactly as ``predict`` scores a new one: the reference it flags against);
- ``MODEL_CARD.md``: data counts per class, metrics with intervals, intended use and limits.

Nothing is recomputed that the experiment already fixed: temperatures and priors are read
from the fold's ``predictions.tsv``, so a prediction with the exported model of a fold's test
image gives that fold's posterior exactly."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from magicflow import __version__
from magicflow.errors import InputError
from magicflow.io import atomic_dir
from magicflow.slices import PERCENTILES

MODEL_JSON = "model.json"
MODEL_CARD = "MODEL_CARD.md"
FORMAT = "magicflow-portable-model-1"
#: quantiles of the held-out images' bits per dimension kept as the out-of-distribution reference
BPD_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)


@dataclass(frozen=True)
class PortableModel:
    """An exported model folder, read and checked: ``info`` is its model.json."""

    root: Path
    info: dict[str, Any]

    @classmethod
    def read(cls, root: str | Path) -> PortableModel:
        root = Path(root)
        path = root / MODEL_JSON
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(
                f"{root}: not an exported model folder (no {MODEL_JSON}; write one with magicflow export-model)"
            ) from None
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: unreadable: {error}") from None
        if info.get("format") != FORMAT:
            raise InputError(f"{path}: format {info.get('format')!r}, expected {FORMAT!r}")
        for fold in info["folds"]:
            if not (root / fold["weights"]).is_file():
                raise InputError(f"{root}: {fold['weights']} named by {MODEL_JSON} is missing")
        return cls(root, info)

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    def load(self, fold: dict[str, Any], device: torch.device) -> Any:
        """The fold's MagicFlow, in eval mode on ``device``."""
        from magicflow.flow import load_checkpoint

        model, _ = load_checkpoint(self.root / fold["weights"], map_location=device)
        return model.eval()


def fold_calibration(predictions: pd.DataFrame, classes: list[str], where: str) -> tuple[float, list[float]]:
    """(temperature, log priors) that a fold's classify stage fitted, from its predictions.tsv."""
    columns = [f"logprior_{c}" for c in classes]
    missing = [c for c in ["temperature", *columns] if c not in predictions.columns]
    if missing or predictions.empty:
        raise InputError(f"{where}: no {missing or 'rows'} to read the fold's calibration from; rerun classify")
    row = predictions.iloc[0]
    return float(row["temperature"]), [float(row[c]) for c in columns]


def bits_per_dim(class_ll: np.ndarray, log_prior: np.ndarray, dims: int) -> np.ndarray:
    """Per slice, -log2 p(x) / dims with p(x) = sum_y p(x | y) p(y): the marginal density the
    out-of-distribution flag reads (an image of no trained class has no label to condition on)."""
    from scipy.special import logsumexp

    return -logsumexp(np.asarray(class_ll, np.float64) + np.asarray(log_prior), axis=1) / (dims * math.log(2))


def image_bits_per_dim(class_ll: np.ndarray, log_prior: np.ndarray, dims: int, index: np.ndarray) -> np.ndarray:
    """Per image (``index``: each slice's image number), the mean of its slices' bits per
    dimension: the one scale the reference and ``predict`` share, whatever the offsets."""
    per_slice = bits_per_dim(class_ll, log_prior, dims)
    return np.bincount(index, weights=per_slice) / np.bincount(index)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read {what} {path}: {error}") from None


def t_interval(values: list[float], level: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """Student-t interval of the mean over folds, clipped to the metric's ``bounds``; NaN with
    fewer than two finite values."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(max(v.mean() - half, bounds[0])), float(min(v.mean() + half, bounds[1]))


def model_card(info: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """MODEL_CARD.md from model.json and, where given, the experiment's metrics.json."""
    classes = info["classes"]
    lines = [
        f"# Model card: {info['experiment']}",
        "",
        f"Exported by magicflow {info['magicflow_version']} on {info['exported']}. Load it with "
        f'`magicflow predict --model <this folder> ...` (README, "Use a trained model").',
        "",
        "## Model",
        "",
        f"- MAGIC-Flow, {info['model']} coupling, preset `{info['preset']}`, "
        f"{info['parameters']:,} parameters per fold, {len(info['folds'])} fold model(s) averaged by `predict`.",
        f"- Classes ({info['label']}): {', '.join(f'`{c}`' for c in classes)}; prediction = argmax of "
        "log p(x | y) + log p(y), posteriors calibrated by each fold's validation temperature.",
        f"- Input: {', '.join(info['modalities'])} coronal slices at offsets {info['offsets']} from FSL's MNI152 "
        f"1 mm y index 109, {info['view_text']}; each volume registered to MNI152 by this pipeline and scaled to "
        f"[0, 1] between its brain's {info['intensity']['percentiles'][0]}th and {info['intensity']['percentiles'][1]}th percentiles.",
        "",
        "## Training data",
        "",
        f"Datasets: {', '.join(info['datasets'])}. Images per class and fold (train / validation / test):",
        "",
        "| class | " + " | ".join(f["fold"] for f in info["folds"]) + " |",
        "| --- |" + " --- |" * len(info["folds"]),
    ]
    for c in classes:
        cells = []
        for fold in info["folds"]:
            n = fold["counts"]
            cells.append(" / ".join(str(n.get(part, {}).get(c, 0)) for part in ("train", "val", "test")))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "## Performance", ""]
    summary = ((metrics or {}).get("classification") or {}).get("summary")
    if summary:
        per_fold = [r for r in summary if str(r.get("fold", "")).startswith("fold-")]
        lines += [
            "On each fold's held-out test subjects (the experiment's metrics.json); interval: 95 % Student-t "
            "over folds, clipped to [0, 1] (NaN with one fold).",
            "",
            "| metric | mean | sd | 95 % interval |",
            "| --- | --- | --- | --- |",
        ]
        for key in ("balanced_accuracy", "accuracy", "macro_auc", "macro_f1"):
            values = [float(r[key]) for r in per_fold if r.get(key) is not None]
            if not values:
                continue
            low, high = t_interval(values)
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            lines.append(f"| {key} | {np.mean(values):.3f} | {sd:.3f} | [{low:.3f}, {high:.3f}] |")
        chance = (metrics or {}).get("classification", {}).get("chance") or {}
        if chance:
            lines += [
                "",
                f"Pooled over folds: balanced accuracy {chance['balanced_accuracy']:.3f} on {chance['n']} images "
                f"(permutation p = {chance['p_value']:.3g} against chance {chance['chance_level']:.3f}).",
            ]
    else:
        lines.append("No metrics.json was given at export: see the experiment's report.")
    reference = info["folds"][0]["bpd_quantiles"]
    lines += [
        "",
        "## Intended use",
        "",
        f"Research: classifying and explaining {', '.join(info['modalities'])} scans of the classes above, preprocessed "
        "by this pipeline, and studying where the likelihood attributes the decision. Not a medical device; "
        "not for diagnosis of individual patients.",
        "",
        "## Limits",
        "",
        "- An image of a class not listed above cannot be classified correctly: `predict` refuses images whose "
        "known label is not a trained class, and images of other modalities.",
        f"- Scans unlike the training data (other scanners, protocols, populations) get unreliable posteriors. "
        f"`predict` flags an image whose bits per dimension exceed the 99th percentile of a fold's held-out images "
        f"({info['folds'][0]['fold']}: {reference['0.99']:.3f}; median {reference['0.5']:.3f}) in most folds.",
        f"- Trained on {sum(sum(f['counts'].get('train', {}).values()) for f in info['folds'][:1])} images per fold: "
        "intervals are wide on small cohorts; the folds share training subjects, so the spread over folds "
        "understates the spread over new training sets.",
    ]
    if "demo" in info.get("dataset_kinds", []):
        lines.append("- Trained on the synthetic demo cohort: it demonstrates the pipeline and has no clinical meaning.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magicflow.experiments.commands import add_experiment_inputs

    add_experiment_inputs(parser)
    parser.add_argument("--split", required=True, type=Path, help="results/<experiment>/splits/split.json")
    parser.add_argument("--folds", required=True, type=Path, help="results/<experiment>/splits/folds")
    parser.add_argument("--model", action="append", default=[], metavar="FOLD=PT", help="a fold's best.pt (repeat per fold)")
    parser.add_argument(
        "--predictions", action="append", default=[], metavar="FOLD=TSV", help="the same fold's predictions.tsv (repeat per fold)"
    )
    parser.add_argument("--metrics", type=Path, help="results/<experiment>/metrics.json, for the model card (optional)")
    parser.add_argument("--dataset-kind", action="append", default=[], metavar="KIND", help="kinds of the training datasets")
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/model (replaced only when complete)")


def run(args: argparse.Namespace) -> int:
    from magicflow.experiments.commands import fold_sets, load_inputs, parse_pairs
    from magicflow.experiments.infer import class_log_likelihoods
    from magicflow.experiments.train import resolve_device
    from magicflow.flow import load_checkpoint
    from magicflow.view import describe

    settings, slices, arrays, _ = load_inputs(args)
    models = parse_pairs(args.model, "model")
    tables = parse_pairs(args.predictions, "predictions")
    if not models or set(models) != set(tables):
        raise InputError(f"--model and --predictions must name the same folds; got {sorted(models)} and {sorted(tables)}")
    split = read_json(args.split, "split")
    device = resolve_device(settings["training"]["device"])
    folds, parameters = [], 0
    for fold in sorted(models):
        model, extra = load_checkpoint(models[fold], map_location=device)
        classes = list(extra["classes"])
        if classes != list(split["classes"]):
            raise InputError(f"{models[fold]}: classes {classes} differ from {args.split}'s {split['classes']}")
        try:
            predictions = pd.read_csv(tables[fold], sep="\t", keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise InputError(f"cannot read predictions {tables[fold]}: {error}") from None
        temperature, log_prior = fold_calibration(predictions, classes, str(tables[fold]))
        args.fold_dir = args.folds / fold
        _, sets = fold_sets(args, settings, slices, arrays)
        held_out = sets["val"].joined(sets["test"])
        if len(held_out) == 0:
            raise InputError(f"{args.folds / fold}: no validation or test images for the bits/dim reference")
        ll = class_log_likelihoods(model, held_out, device)
        bpd = image_bits_per_dim(ll, np.asarray(log_prior), model.image_dims, held_out.image_ids())
        parameters = sum(p.numel() for p in model.parameters())
        folds.append(
            {
                "fold": fold,
                "weights": f"{fold}.pt",
                "temperature": temperature,
                "log_prior": log_prior,
                "bpd_quantiles": {str(q): float(np.quantile(bpd, q)) for q in BPD_QUANTILES},
                "reference_images": int(len(bpd)),
                "counts": split.get("counts", {}).get(fold, {}),
            }
        )
        print(f"{fold}: temperature {temperature:.3g}, held-out bits/dim median {np.median(bpd):.3f} on {len(bpd)} images")
    view = settings["view"]
    info = {
        "format": FORMAT,
        "magicflow_version": __version__,
        "exported": datetime.date.today().isoformat(),
        "experiment": settings["name"],
        "model": settings["model"],
        "preset": settings["preset"],
        "parameters": int(parameters),
        "label": settings["label"],
        "classes": list(split["classes"]),
        "datasets": list(settings["datasets"]),
        "dataset_kinds": sorted(set(args.dataset_kind)),
        "modalities": list(settings["modalities"]),
        "offsets": [int(o) for o in settings["offsets"]["eval"]],
        "view": view,
        "view_text": describe(view),
        "intensity": {"percentiles": [float(p) for p in PERCENTILES], "grid": "FSL MNI152 1 mm, 182 x 218 x 182"},
        "folds": folds,
    }
    metrics = read_json(args.metrics, "metrics") if args.metrics else None
    with atomic_dir(args.out) as tmp:
        for fold in folds:
            shutil.copyfile(models[fold["fold"]], tmp / fold["weights"])
        (tmp / MODEL_JSON).write_text(json.dumps(info, indent=2) + "\n")
        (tmp / MODEL_CARD).write_text(model_card(info, metrics))
    print(f"{settings['name']}: {len(folds)} fold model(s), model.json and {MODEL_CARD} -> {args.out}")
    return 0
