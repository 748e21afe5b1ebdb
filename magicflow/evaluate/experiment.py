"""Evaluate one experiment: generation, classification, attribution and efficiency.

Choices that matter when reading the numbers:
- Generation is scored on fold 0: its model's samples against that fold's held-out real
  slices (validation + test subjects, evaluation offsets). The "real" reference row compares
  the fold's real training slices with the same held-out slices, so it shows what a perfect
  generator would score with these sample sizes.
- Features come from the configured extractor; the default in-domain CNN is trained on fold
  0's real training slices only, so FID_ID/KID_ID/PRDC_ID are comparable within this
  pipeline, not with the paper's FID_Rad.
- Classification metrics are per fold, then mean +/- std (the paper's Table 3); confusion,
  calibration and the accuracy-rejection curve pool the test folds.
- Attribution ROIs come from the predicted label's map, so the ROI never sees the true label
  it is then used to predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from magicflow.errors import InputError
from magicflow.evaluate import attribution as attr
from magicflow.evaluate import classification as cls
from magicflow.evaluate import figures
from magicflow.evaluate import generation as gen
from magicflow.evaluate.inputs import ExperimentOutputs, posterior_matrix

#: figure file names inside the evaluation folder, in the order the report shows them
FIGURES = {
    "real_vs_generated": "real_vs_generated.png",
    "memorisation": "memorisation.png",
    "confusion": "confusion.png",
    "reliability": "reliability.png",
    "rejection": "rejection.png",
    "thresholds": "attribution_thresholds.png",
    "groundtruth": "attribution_groundtruth.png",
}


def _check_baseline_folds(baseline_id: str, paths: dict, folds: list[str], what: str) -> None:
    """A baseline's files must cover exactly the folds the experiment ran (``what``: predictions | samples)."""
    if sorted(paths) != folds:
        raise InputError(
            f"baseline {baseline_id}: the experiment ran {folds}, but {what} were given for {sorted(paths)} "
            f"(--baseline-{what} {baseline_id}:FOLD=PATH, one per fold)"
        )


def _finite(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------- generation
def generation_section(outputs: ExperimentOutputs, train, heldout, extractor, settings: dict, fig_dir: Path) -> dict:
    """Metrics of fold 0's samples against held-out real slices, overall and per class."""
    classes = outputs.classes
    fold = outputs.folds[0]
    samples = fold.samples["samples"]  # (K, n, 1, H, W)
    fake_labels = np.repeat(np.arange(samples.shape[0]), samples.shape[1])
    fake = samples.reshape(-1, *samples.shape[2:])
    f_fake = extractor.features(fake)
    f_train = extractor.features(train.images)
    f_held = extractor.features(heldout.images)
    held_labels, train_labels = heldout.labels.numpy(), train.labels.numpy()
    boot, seed = settings["bootstrap"], settings["seed"]

    def both(mask_fake, mask_train, mask_held) -> dict:
        row = {}
        for name, candidate in (("generated", f_fake[mask_fake]), ("real", f_train[mask_train])):
            try:
                row[name] = gen.generation_metrics(
                    f_held[mask_held], candidate, bootstrap=boot, seed=seed, nearest_k=settings["nearest_k"]
                )
            except InputError as error:
                row[name] = {"skipped": str(error)}
        return row

    all_fake, all_train, all_held = (np.ones(len(a), bool) for a in (f_fake, f_train, f_held))
    per_class = {c: both(fake_labels == k, train_labels == k, held_labels == k) for k, c in enumerate(classes)}
    ms_ssim = {
        "generated": gen.ms_ssim_pairs(fake, fake_labels, pairs=settings["ms_ssim_pairs"], seed=seed),
        "real": gen.ms_ssim_pairs(heldout.images.numpy(), held_labels, pairs=settings["ms_ssim_pairs"], seed=seed),
    }
    flat = lambda images: np.asarray(images, dtype=np.float32).reshape(len(images), -1)  # noqa: E731
    memo = gen.memorisation(flat(fake), flat(train.images.numpy()), flat(heldout.images.numpy()))
    ratios = np.asarray(memo["ratio"], float)
    closest = np.argsort(ratios)[:4]
    figures.memorisation_figure(
        ratios,
        [(fake[i, 0], train.images[int(memo["nearest_train"][i]), 0].numpy(), float(ratios[i])) for i in closest],
        fig_dir / FIGURES["memorisation"],
    )
    real_by_class = {c: heldout.images.numpy()[held_labels == k] for k, c in enumerate(classes)}
    figures.real_vs_generated_figure(
        real_by_class, {c: samples[k] for k, c in enumerate(classes)}, fig_dir / FIGURES["real_vs_generated"]
    )
    return {
        "fold": fold.name,
        "suffix": extractor.metric_suffix,
        "n_generated": int(len(fake)),
        "n_train": int(len(train)),
        "n_heldout": int(len(heldout)),
        "overall": both(all_fake, all_train, all_held),
        "per_class": per_class,
        "ms_ssim": ms_ssim,
        "memorisation": {
            "space": "pixels",
            "median_ratio": float(np.median(ratios)) if len(ratios) else float("nan"),
            "fraction_below_0.5": float((ratios < 0.5).mean()) if len(ratios) else float("nan"),
            "fraction_below_1": float((ratios < 1.0).mean()) if len(ratios) else float("nan"),
        },
    }


# --------------------------------------------------------------------------- classification
def classification_section(outputs: ExperimentOutputs, settings: dict, fig_dir: Path) -> dict:
    classes = outputs.classes
    per_fold, pooled = [], []
    for fold in outputs.folds:
        true, proba = posterior_matrix(fold.predictions, classes)
        per_fold.append({"fold": fold.name, **cls.classification_metrics(true, proba, classes)})
        pooled.append(fold.predictions)
    table = pd.concat(pooled, ignore_index=True)
    true, proba = posterior_matrix(table, classes)
    matrix = cls.confusion(true, proba.argmax(1), len(classes))
    calibration = cls.calibration(true, proba, bins=settings["calibration_bins"])
    rejection = cls.rejection_curve(true, proba)
    figures.confusion_figure(matrix, classes, fig_dir / FIGURES["confusion"])
    figures.reliability_figure(calibration["bins"], calibration["ece"], fig_dir / FIGURES["reliability"])
    figures.rejection_figure(rejection, fig_dir / FIGURES["rejection"])
    summary = cls.fold_summary(per_fold)
    per_dataset = {}
    for dataset, rows in table.groupby("dataset"):
        t, p = posterior_matrix(rows, classes)
        per_dataset[str(dataset)] = cls.classification_metrics(t, p, classes)
    return {
        "per_fold": per_fold,
        "summary": summary.reset_index().to_dict(orient="records"),
        "pooled": cls.classification_metrics(true, proba, classes),
        "chance": cls.chance_test(true, proba.argmax(1), len(classes), seed=settings["seed"]),
        "per_dataset": per_dataset,
        "confusion": matrix,
        "calibration": {"ece": calibration["ece"], "bins": calibration["bins"].to_dict(orient="records")},
        "rejection": rejection.to_dict(orient="records"),
    }


# --------------------------------------------------------------------------- attribution
def _pooled_maps(outputs: ExperimentOutputs) -> dict[str, np.ndarray]:
    keys = ("class_maps", "predicted_label", "images", "true", "predicted", "dataset", "subject", "offset")
    missing = [k for k in keys if k not in outputs.folds[0].maps]
    if missing:
        raise InputError(f"attribution maps of {outputs.name} lack {missing}; rerun the attribution stage")
    return {k: np.concatenate([f.maps[k] for f in outputs.folds]) for k in keys}


def attribution_section(
    outputs: ExperimentOutputs, brain: np.ndarray, groundtruth: dict[str, Path], settings: dict, fig_dir: Path
) -> dict:
    """Do the maps point at the disease? ROI F1 (Figure 3) over subject-grouped folds, the
    threshold chosen on inner folds or fixed in advance at 0.8, each beside random regions of
    equal area (:func:`attr.roi_classification`); on the demo, the maps' AUC against the
    planted uptake per slice, averaged per subject, beside maps that need no model (the
    image, its difference from the other class's mean image, a random region;
    :func:`attr.groundtruth_scores`): the model is credited only for what those do not find."""
    from magicflow.evaluate.groundtruth import slice_masks
    from magicflow.slices import resize_mask

    maps = _pooled_maps(outputs)
    lookup = {c: i for i, c in enumerate(outputs.classes)}
    labels = np.array([lookup[t] for t in maps["true"]])
    subjects = np.array([f"{d}/{s}" for d, s in zip(maps["dataset"], maps["subject"])])
    out: dict[str, Any] = {"n_maps": int(len(labels)), "map": "predicted label"}
    try:
        roi = attr.roi_classification(
            maps["predicted_label"][:, 0], maps["images"][:, 0], labels, subjects, brain > 0, seed=settings["seed"]
        )
        table = roi.pop("curve")
        figures.threshold_figure(table, fig_dir / FIGURES["thresholds"])
        best = table.loc[table["f1"].idxmax()]
        out.update(
            roi=roi,
            thresholds=table.to_dict(orient="records"),
            # the curve's maximum, selected on the folds it is scored on: optimistic, kept for the figure
            best_threshold=float(best["threshold"]),
            best_f1=float(best["f1"]),
        )
    except InputError as error:
        out["thresholds_skipped"] = str(error)

    # Demo datasets know where the disease signal was put: score the maps against it.
    rows = np.flatnonzero(np.isin(maps["dataset"], list(groundtruth)))
    if len(rows):
        truth = np.zeros((len(labels), *brain.shape), bool)
        for dataset, directory in groundtruth.items():
            pick = rows[maps["dataset"][rows] == dataset]
            full = slice_masks(directory, list(maps["subject"][pick]), list(maps["offset"][pick]))
            truth[pick] = resize_mask(full, brain.shape[-1]) > 0 if len(pick) else full  # at the experiment's image size
        scored = np.flatnonzero(truth.reshape(len(truth), -1).any(1))
        if len(scored):
            cm = maps["class_maps"][scored]  # (n, K, H, W)
            own = cm[np.arange(len(scored)), labels[scored]]
            others = (cm.sum(1) - own) / max(cm.shape[1] - 1, 1)
            evidence = own - others  # per-pixel log-likelihood ratio: true class vs the rest
            images = maps["images"][:, 0].astype(np.float64)
            reference = attr.other_class_means(images, labels, subjects, maps["offset"])[scored]
            section, per_slice = attr.groundtruth_scores(
                own, evidence, images[scored], reference, truth[scored], brain, subjects[scored], settings["seed"]
            )
            inside = brain > 0
            out["groundtruth"] = {
                "slices": int(len(scored)),
                **section,
                "auc_evidence": section["scores"]["evidence"]["mean"],  # per-subject means, as in scores
                "auc_low_likelihood": section["scores"]["low_likelihood"]["mean"],
                # pooled over every scored pixel after per-slice min-max scaling: the earlier headline, kept labelled
                "pooled_auc_evidence": attr.mask_auc(
                    attr.normalise_maps(evidence, inside), truth[scored], inside, low_is_positive=False
                ),
                "pooled_auc_low_likelihood": attr.mask_auc(
                    attr.normalise_maps(own, inside), truth[scored], inside, low_is_positive=True
                ),
                "uptake_fraction": float(truth[scored][:, inside].mean()),
            }
            i = scored[0]
            figures.groundtruth_figure(
                maps["images"][i, 0],
                evidence[0],
                truth[i],
                brain,
                f"{maps['subject'][i]} offset {maps['offset'][i]}: slice AUC evidence {per_slice['evidence'].iloc[0]:.2f}, "
                f"image intensity {per_slice['intensity_high'].iloc[0]:.2f}, "
                f"|image - other class mean| {per_slice['difference_from_other_class'].iloc[0]:.2f}",
                fig_dir / FIGURES["groundtruth"],
                difference=np.abs(images[i] - reference[0]),
            )
        else:
            out["groundtruth"] = {
                "slices": 0,
                "note": "no test slice with ground-truth uptake (no AD subject among the mapped slices)",
            }
    return out


# --------------------------------------------------------------------------- efficiency
def efficiency_section(outputs: ExperimentOutputs) -> list[dict]:
    """The paper's Table 5 columns per fold, from training.tsv, samples.npz and Snakemake's benchmarks."""
    rows = []
    for fold in outputs.folds:
        t = fold.training
        steps = float(t["steps"].sum()) if "steps" in t else float("nan")
        train_s = float(t["train_seconds"].sum()) if "train_seconds" in t else float(t["seconds"].sum())
        n_images = int(np.prod(fold.samples["samples"].shape[:2]))
        sample_s = float(fold.samples.get("seconds", np.nan))
        rows.append(
            {
                "fold": fold.name,
                "epochs": int(len(t)),
                "steps": steps,
                "training_s": train_s,
                "epoch_s_with_validation": float(t["seconds"].mean()),
                "ms_per_step": 1000 * train_s / steps if steps else float("nan"),
                "peak_rss_mb": fold.benchmarks.get("train", {}).get("max_rss", float("nan")),
                "peak_gpu_mb": float(t["peak_gpu_mb"].max()) if "peak_gpu_mb" in t else float("nan"),
                "generated_per_s": n_images / sample_s if sample_s > 0 else float("nan"),
                "device": str(fold.samples.get("device", "")),
            }
        )
    return rows


# --------------------------------------------------------------------------- data
def data_section(slices: pd.DataFrame, images: pd.DataFrame, experiment: dict, qc: dict[str, pd.DataFrame]) -> dict:
    """Images and slices per class and dataset (training offsets, augmentation included), the
    paper's Table 4 counts where the experiment is one of its tasks, and QC flags."""
    from magicflow.evaluate.paper_counts import paper_counts

    offsets = experiment["offsets"]
    counts = []
    for (dataset, label), group in images.groupby(["dataset", "label"]):
        n_slices = len(group) * len(offsets["train"]) + len(group) * len(offsets.get("augment", {}).get(label, []))
        counts.append(
            {
                "dataset": dataset,
                "class": label,
                "subjects": int(group["subject"].nunique()),
                "images": int(len(group)),
                "slices": int(n_slices),
            }
        )
    flags = []
    for dataset, table in qc.items():
        used = set(images.loc[images["dataset"] == dataset, "image"])
        if "flagged" in table:
            # qc.tsv's ``label`` is the image stem (its ``image`` column is the registered file's path)
            bad = table[(table["flagged"].astype(str).str.lower().isin(["true", "1", "yes"])) & table["label"].isin(used)]
            flags += [{"dataset": dataset, **{k: str(v) for k, v in r.items()}} for r in bad.to_dict(orient="records")]
    return {
        "counts": counts,
        "paper_counts": paper_counts(experiment["name"]),
        "qc_flags": flags,
        "slices_available": int(len(slices)),
    }


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def to_json(metrics: dict) -> dict:
    return _finite(metrics)


def flatten(metrics: dict, prefix: str = "") -> list[tuple[str, float]]:
    """Scalar leaves as (dotted key, value) rows for metrics.tsv; lists of records are skipped
    except per-fold rows, which become ``<section>.<fold>.<metric>``."""
    rows: list[tuple[str, float]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, name + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict) and "fold" in value[0]:
            for record in value:
                rows += flatten({k: v for k, v in record.items() if k != "fold"}, f"{name}.{record['fold']}.")
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool) or value is None:
            rows.append((name, value))
    return rows


# --------------------------------------------------------------------------- baselines (Table 3)
def _slice_keys(table: pd.DataFrame) -> list[tuple]:
    return list(zip(table["dataset"].astype(str), table["image"].astype(str), table["offset"].astype(int)))


def comparison_section(
    outputs: ExperimentOutputs, flow_per_fold: list[dict], baselines: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """MAGIC-Flow and each baseline side by side (the paper's Table 3), scored by the same
    :func:`classification.classification_metrics` per fold. ``baselines`` maps id ->
    ``{"settings": baseline.json, "predictions": {fold: predictions.tsv path}}``; every fold the
    experiment ran must be given, and each must list the flow's test slices. None without baselines."""
    if not baselines:
        return None
    from magicflow.evaluate.inputs import read_predictions

    folds = [f.name for f in outputs.folds]
    from magicflow.evaluate.paper_results import paper_table3

    models = [
        {
            "id": "magicflow",
            "model": "MAGIC-Flow",
            "architecture": "MAGIC-Flow",
            "weights": None,
            "paper": paper_table3(outputs.name, "magicflow"),
            "per_fold": flow_per_fold,
        }
    ]
    for baseline_id, given in baselines.items():
        settings, paths = given["settings"], given["predictions"]
        _check_baseline_folds(baseline_id, paths, folds, "predictions")
        per_fold = []
        for fold in outputs.folds:
            table = read_predictions(paths[fold.name])
            if _slice_keys(table) != _slice_keys(fold.predictions):
                raise InputError(
                    f"{paths[fold.name]}: not the test slices of MAGIC-Flow's {fold.name} predictions; rerun baseline_classify"
                )
            true, proba = posterior_matrix(table, outputs.classes)
            per_fold.append({"fold": fold.name, **cls.classification_metrics(true, proba, outputs.classes)})
        models.append(
            {
                "id": baseline_id,
                "model": settings.get("label", baseline_id)
                + ("" if baseline_id == settings.get("name", baseline_id) else f" ({baseline_id})"),
                "architecture": settings.get("architecture"),
                "weights": settings.get("weights"),
                "paper": paper_table3(outputs.name, settings.get("name", baseline_id)),  # the paper's Table 3 row, if any
                "per_fold": per_fold,
            }
        )
    return cls.model_comparison(models)


# --------------------------------------------------------------------------- generative baselines (Tables 1-2)
def generative_comparison_section(
    outputs: ExperimentOutputs,
    flow_generation: dict,
    heldout,
    extractor,
    baselines: dict[str, dict[str, Any]],
    settings: dict,
    fig_dir: Path,
) -> dict[str, Any]:
    """MAGIC-Flow's and each generative baseline's fold-0 samples against the same held-out real
    slices, by the same functions as :func:`generation_section` (FID/KID with bootstrap intervals,
    PRDC, MS-SSIM), plus a real-vs-generated grid per baseline. ``baselines`` maps id ->
    ``{"settings": baseline.json, "samples": {fold: samples folder}}``."""
    from magicflow.evaluate.inputs import read_npz
    from magicflow.evaluate.paper_results import paper_tables12

    fold = outputs.folds[0]
    folds = [f.name for f in outputs.folds]
    held_labels = heldout.labels.numpy()
    f_held = extractor.features(heldout.images)
    boot, seed = settings["bootstrap"], settings["seed"]
    real_by_class = {c: heldout.images.numpy()[held_labels == k] for k, c in enumerate(outputs.classes)}
    models = [
        {
            "id": "magicflow",
            "model": "MAGIC-Flow",
            "architecture": "MAGIC-Flow",
            "metrics": flow_generation["overall"]["generated"],
            "ms_ssim": flow_generation["ms_ssim"]["generated"],
            "n_generated": flow_generation["n_generated"],
            "figure": FIGURES["real_vs_generated"],
            "paper": paper_tables12(outputs.name, "magicflow"),
        }
    ]
    for baseline_id, given in baselines.items():
        baseline, paths = given["settings"], given["samples"]
        _check_baseline_folds(baseline_id, paths, folds, "samples")
        path = Path(paths[fold.name]) / "samples.npz"
        archive = read_npz(path)
        samples = archive["samples"]
        if [str(c) for c in archive["classes"]] != list(outputs.classes) or samples.shape[-2:] != heldout.images.shape[-2:]:
            raise InputError(
                f"{path}: classes {list(archive['classes'])} and image shape {samples.shape[-2:]} do not match the experiment's "
                f"{outputs.classes} and {tuple(heldout.images.shape[-2:])}; rerun baseline_sample"
            )
        labels = np.repeat(np.arange(samples.shape[0]), samples.shape[1])
        fake = samples.reshape(-1, *samples.shape[2:])
        try:
            scores = gen.generation_metrics(
                f_held, extractor.features(fake), bootstrap=boot, seed=seed, nearest_k=settings["nearest_k"]
            )
        except InputError as error:
            scores = {"skipped": str(error)}
        figure = f"real_vs_generated_{baseline_id}.png"
        figures.real_vs_generated_figure(real_by_class, {c: samples[k] for k, c in enumerate(outputs.classes)}, fig_dir / figure)
        models.append(
            {
                "id": baseline_id,
                "model": baseline.get("label", baseline_id)
                + ("" if baseline_id == baseline.get("name", baseline_id) else f" ({baseline_id})"),
                "architecture": baseline.get("architecture"),
                "metrics": scores,
                "ms_ssim": gen.ms_ssim_pairs(fake, labels, pairs=settings["ms_ssim_pairs"], seed=seed),
                "n_generated": int(len(fake)),
                "figure": figure,
                "paper": paper_tables12(outputs.name, baseline.get("name", baseline_id)),  # Tables 1-2, if any
            }
        )
    return {
        "kind": "generation",
        "fold": fold.name,
        "suffix": flow_generation["suffix"],
        "n_heldout": int(len(heldout)),
        "reference": flow_generation["overall"]["real"],
        "paper_reference": paper_tables12(outputs.name, "real"),
        "models": models,
    }


# --------------------------------------------------------------------------- cost per model (Table 5)
def _nan_to_none(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def model_cost(trainings: list[pd.DataFrame], benchmarks: list[dict[str, float]]) -> dict[str, Any]:
    """One model's Table 5 figures over its folds: ``trainings`` its training.tsv per fold,
    ``benchmarks`` the Snakemake benchmark row of each fold's training job (empty where none
    was given). Sums over folds (optimiser steps, training seconds, wall seconds), maxima over
    folds (peak RAM and GPU memory); a figure a file does not hold is None (the report's n/a):
    training.tsv written before the ``parameters``/``images`` columns existed has no parameter
    count or images/s, a run outside Snakemake no wall time or peak RAM."""

    def column(name: str) -> list[pd.Series] | None:
        return [t[name] for t in trainings] if trainings and all(name in t for t in trainings) else None

    steps = column("steps")
    seconds = column("train_seconds") or column("seconds")
    images = column("images")
    parameters = column("parameters")
    gpu = column("peak_gpu_mb")
    n_steps = float(sum(s.sum() for s in steps)) if steps else np.nan
    train_s = float(sum(s.sum() for s in seconds)) if seconds else np.nan
    walls = [b.get("s", np.nan) for b in benchmarks]
    rss = [b.get("max_rss", np.nan) for b in benchmarks if b]
    return {
        "folds": len(trainings),
        "parameters": int(parameters[0].iloc[-1]) if parameters and len(parameters[0]) else None,
        "epochs": int(sum(len(t) for t in trainings)),
        "steps": _nan_to_none(n_steps),
        "training_s": _nan_to_none(train_s),
        "wall_s": _nan_to_none(float(sum(walls))) if walls and len(walls) == len(trainings) else None,
        "peak_rss_mb": _nan_to_none(float(np.nanmax(rss))) if rss and np.isfinite(rss).any() else None,
        "peak_gpu_mb": _nan_to_none(float(np.nanmax([g.max() for g in gpu])))
        if gpu and any(g.notna().any() for g in gpu)
        else None,
        "ms_per_step": _nan_to_none(1000 * train_s / n_steps) if n_steps else None,
        "images_per_s": _nan_to_none(float(sum(i.sum() for i in images)) / train_s) if images and train_s else None,
    }


def cost_section(outputs: ExperimentOutputs, baselines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 5: one row per model, MAGIC-Flow first, then each baseline in the order given.
    ``baselines`` maps id -> ``{"settings": baseline.json, "training": {fold: training.tsv},
    "train_benchmark": {fold: benchmark TSV}}``; either file set may be absent (figures n/a)."""
    from magicflow.evaluate.inputs import read_benchmark, read_tsv
    from magicflow.evaluate.paper_results import paper_table5

    rows = [
        {
            "id": "magicflow",
            "model": "MAGIC-Flow",
            **model_cost([f.training for f in outputs.folds], [f.benchmarks.get("train", {}) for f in outputs.folds]),
            "paper": paper_table5(outputs.name, "magicflow"),
        }
    ]
    folds = [f.name for f in outputs.folds]
    for baseline_id, given in baselines.items():
        settings = given["settings"]
        files = {}
        for what in ("training", "train_benchmark"):
            paths = given.get(what) or {}
            if paths and sorted(paths) != folds:
                raise InputError(
                    f"baseline {baseline_id}: the experiment ran {folds}, but its {what.replace('_', ' ')} files were given "
                    f"for {sorted(paths)} (--baseline-{what.replace('_', '-')} {baseline_id}:FOLD=PATH, one per fold)"
                )
            files[what] = paths
        trainings = [read_tsv(files["training"][f]) for f in folds] if files["training"] else []
        benchmarks = [read_benchmark(files["train_benchmark"][f]) for f in folds] if files["train_benchmark"] else []
        cost = model_cost(trainings, benchmarks)
        cost["folds"] = len(folds)
        rows.append(
            {
                "id": baseline_id,
                "model": settings.get("label", baseline_id)
                + ("" if baseline_id == settings.get("name", baseline_id) else f" ({baseline_id})"),
                **cost,
                "paper": paper_table5(outputs.name, settings.get("name", baseline_id)),  # Table 5 (A100), if any
            }
        )
    return rows
