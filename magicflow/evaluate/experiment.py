"""Evaluate one experiment: generation, classification, attribution and efficiency.

Choices that matter when reading the numbers:
- Generation is scored on every fold: its model's samples against that fold's TEST subjects
  (evaluation offsets; validation subjects steer early stopping and are never a comparison
  set). The "real" reference row compares the fold's training subjects at the same offsets,
  subsampled to the generated set's size and class mix, with the same test set: what a
  generator indistinguishable from real subjects would score at these sizes. Folds are
  summarised as mean and sd (see :data:`GENERATION_UNITS`).
- Features come from the configured extractor; the default in-domain CNN is trained per fold
  on that fold's training slices only (never its test subjects) and its accuracy on the
  validation subjects is reported, so FID_ID/KID_ID/PRDC_ID are comparable within this
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
from magicflow.evaluate.inputs import ExperimentOutputs, ImageScores, image_scores, slice_scores
from magicflow.view import View

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
#: what each generation number is measured on, written into metrics.json and shown in the report
GENERATION_UNITS = {
    "unit": "2-D slice; intervals and PRDC/MS-SSIM neighbourhoods treat a subject's slices as one unit",
    "judged_against": "each fold's TEST subjects at the evaluation offsets (validation subjects, used for early stopping, never)",
    "generated": "each fold's samples, subsampled to the test set's class mix",
    "reference": "the fold's TRAINING subjects at the evaluation offsets, subsampled to the same size and class mix as the generated set",
    "folds": "Every fold with samples is scored with its own test set (and, for in_domain features, its own extractor); "
    "summaries are mean and sd over folds; per-fold intervals are bias-corrected percentile bootstraps over subjects",
    "intervals": "FID's plug-in estimate is biased upwards at these sizes and its interval shows resampling spread "
    "around it, not that bias: on simulated 40-row, 4-dimensional Gaussian sets the interval held the true FID 68 times "
    "in 100 (plain percentiles: 59)",
    "memorisation": "pixel distance to the nearest training slice (training offsets) / to the nearest test slice of another "
    "subject; null: the same ratio for real test slices",
}


def _leaves(block: dict) -> dict:
    return {k: v for k, v in block.items() if not isinstance(v, (dict, list))}


def summarise_folds(blocks: list[dict]) -> dict:
    """Mean and sd over folds of every numeric leaf, recursing into sub-dicts. A single fold is
    returned as it is (its intervals included); with several, ``<key>`` is the mean over the
    folds where it was computed, ``<key>_sd`` their sd (ddof 1, None below 2) and
    ``<key>_folds`` their number, and ``not_computed`` keeps, per metric, the folds' reasons
    where no fold computed it."""
    blocks = [b for b in blocks if isinstance(b, dict)]
    if not blocks:
        return {}
    if len(blocks) == 1:
        return {**blocks[0], "n_folds": 1}
    out: dict[str, Any] = {"n_folds": len(blocks)}
    for key in dict.fromkeys(k for b in blocks for k in b):  # every fold's keys: a skipped fold has fewer
        values = [b.get(key) for b in blocks]
        if key == "not_computed":
            continue
        if any(isinstance(v, dict) for v in values):
            out[key] = summarise_folds([v for v in values if isinstance(v, dict)])
            continue
        if all(v is None for v in values):
            out[key] = None
            continue
        if all(isinstance(v, str) for v in values) and len(set(values)) == 1:
            out[key] = values[0]  # a label the folds share (e.g. the memorisation space)
            continue
        numeric = [v for v in values if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)]
        if len(numeric) != len([v for v in values if v is not None]):
            continue  # text, lists (intervals are per fold) and flags
        finite = [float(v) for v in numeric if np.isfinite(v)]
        mean = float(np.mean(finite)) if finite else None
        counts = all(isinstance(v, (int, np.integer)) for v in numeric)  # sizes stay whole where the folds agree
        out[key] = int(mean) if counts and mean is not None and mean.is_integer() else mean
        out[f"{key}_sd"] = float(np.std(finite, ddof=1)) if len(finite) >= 2 else None
        out[f"{key}_folds"] = len(finite)
    reasons = {}
    for block in blocks:
        for metric, reason in (block.get("not_computed") or {}).items():
            reasons.setdefault(metric, []).append(reason)
    if reasons:
        out["not_computed"] = {m: "; ".join(dict.fromkeys(r)) for m, r in reasons.items()}
        out["note"] = "; ".join(f"{m} not computed in {len(r)} of {len(blocks)} folds: {r[0]}" for m, r in reasons.items())
    return out


def _generated(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images (K n, 1, H, W) and class labels of a (K, n, 1, H, W) samples array."""
    return samples.reshape(-1, *samples.shape[2:]), np.repeat(np.arange(samples.shape[0]), samples.shape[1])


def _counts(labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, int), minlength=k)[:k]


def _score_fold(
    fake: np.ndarray,
    fake_labels: np.ndarray,
    test,
    extractor,
    settings: dict,
    classes: list[str],
    reference=None,
    score_reference: bool = True,
) -> dict:
    """One fold's generated set (and the reference set, if given) against its test set: both
    subsampled to the test set's class mix at one common size, overall and per class. With
    ``score_reference`` false the reference only caps that size, so a baseline is compared at
    the flow's size without scoring the reference again."""
    from magicflow.evaluate.inputs import subject_groups

    seed, boot, k = settings["seed"], settings["bootstrap"], settings["nearest_k"]
    test_labels, test_groups = test.labels.numpy(), subject_groups(test)
    available = [_counts(fake_labels, len(classes))]
    if reference is not None:
        ref_labels, ref_groups = reference.labels.numpy(), subject_groups(reference)
        available.append(_counts(ref_labels, len(classes)))
    counts = gen.matched_counts(_counts(test_labels, len(classes)), *available)
    pick_fake = gen.spread_subsample(fake_labels, None, counts, seed)
    f_test = extractor.features(test.images)
    f_fake, y_fake = extractor.features(fake[pick_fake]), fake_labels[pick_fake]
    candidates = {"generated": (f_fake, y_fake, None)}
    if reference is not None and score_reference:
        pick_ref = gen.spread_subsample(ref_labels, ref_groups, counts, seed)
        candidates["real"] = (
            extractor.features(reference.images[torch.from_numpy(pick_ref)]),
            ref_labels[pick_ref],
            ref_groups[pick_ref],
        )

    def score(mask_test: np.ndarray, which: str, mask: np.ndarray) -> dict:
        rows, _, groups = candidates[which]
        try:
            return gen.generation_metrics(
                f_test[mask_test],
                rows[mask],
                bootstrap=boot,
                seed=seed,
                nearest_k=k,
                real_groups=test_groups[mask_test],
                fake_groups=None if groups is None else groups[mask],
            )
        except InputError as error:
            return {"skipped": str(error), "not_computed": {"all": str(error)}}

    overall = {w: score(np.ones(len(f_test), bool), w, np.ones(len(c[0]), bool)) for w, c in candidates.items()}
    per_class = {
        name: {w: score(test_labels == c, w, cand[1] == c) for w, cand in candidates.items()} for c, name in enumerate(classes)
    }
    return {
        "n_test": int(len(test)),
        "n_test_subjects": int(len(np.unique(test_groups))),
        "n_compared": int(counts.sum()),
        "compared_per_class": {name: int(counts[c]) for c, name in enumerate(classes)},
        "overall": overall,
        "per_class": per_class,
        "picked": pick_fake,
    }


def generation_section(
    outputs: ExperimentOutputs, sets: dict[str, dict], extractors: dict[str, Any], settings: dict, fig_dir: Path
) -> dict:
    """Every fold's samples against that fold's test subjects, beside a subject-disjoint real
    reference of the same size and class mix (see :data:`GENERATION_UNITS`), then mean and sd
    over folds. ``sets`` is :func:`inputs.generation_sets`'s; ``extractors`` maps fold -> the
    feature extractor used on it. The figures show the first fold."""
    from magicflow.evaluate.inputs import subject_groups

    classes, seed = outputs.classes, settings["seed"]
    per_fold = []
    for fold in outputs.folds:
        if fold.name not in sets or "samples" not in fold.samples:
            continue
        test, train = sets[fold.name]["test"], sets[fold.name]["train"]
        fake, fake_labels = _generated(fold.samples["samples"])
        scored = _score_fold(fake, fake_labels, test, extractors[fold.name], settings, classes, sets[fold.name]["reference"])
        test_groups = subject_groups(test)
        ms_ssim = {
            "generated": gen.ms_ssim_pairs(fake, fake_labels, pairs=settings["ms_ssim_pairs"], seed=seed),
            "real": gen.ms_ssim_pairs(
                test.images.numpy(), test.labels.numpy(), pairs=settings["ms_ssim_pairs"], seed=seed, groups=test_groups
            ),
        }
        flat = lambda images: np.asarray(images, dtype=np.float32).reshape(len(images), -1)  # noqa: E731
        try:
            memo = gen.memorisation(flat(fake), flat(train.images.numpy()), flat(test.images.numpy()), test_groups, seed=seed)
            memo_summary = {"space": "pixels", **gen.memorisation_summary(memo["ratio"], memo["null_ratio"])}
        except InputError as error:
            memo, memo_summary = None, {"space": "pixels", "not_computed": {"null": str(error)}}
        if not per_fold:  # figures: the first scored fold
            if memo is not None:
                ratios = np.asarray(memo["ratio"], float)
                closest = np.argsort(ratios)[:4]
                figures.memorisation_figure(
                    ratios,
                    [(fake[i, 0], train.images[int(memo["nearest_train"][i]), 0].numpy(), float(ratios[i])) for i in closest],
                    fig_dir / FIGURES["memorisation"],
                    null_ratios=memo["null_ratio"],
                )
            labels = test.labels.numpy()
            figures.real_vs_generated_figure(
                {c: test.images.numpy()[labels == k] for k, c in enumerate(classes)},
                {c: fold.samples["samples"][k] for k, c in enumerate(classes)},
                fig_dir / FIGURES["real_vs_generated"],
            )
        scored.pop("picked")
        per_fold.append(
            {
                "fold": fold.name,
                "n_generated": int(len(fake)),
                "n_reference_available": int(len(sets[fold.name]["reference"])),
                "n_train": int(len(train)),
                "extractor": extractors[fold.name].describe().get("training", {"kind": extractors[fold.name].kind}),
                **scored,
                "ms_ssim": ms_ssim,
                "memorisation": memo_summary,
            }
        )
    if not per_fold:
        raise InputError(f"{outputs.name}: no fold has samples to score generation on")
    pick = lambda *path: [_dig(f, path) for f in per_fold]  # noqa: E731
    return {
        "fold": per_fold[0]["fold"],
        "folds_scored": [f["fold"] for f in per_fold],
        "suffix": extractors[per_fold[0]["fold"]].metric_suffix,
        "definitions": GENERATION_UNITS,
        "min_sizes": gen.MIN_SIZES,
        # per fold, as before (every fold samples the same number); the totals are beside it
        "n_generated": int(per_fold[0]["n_generated"]),
        "n_generated_total": int(sum(f["n_generated"] for f in per_fold)),
        "n_compared": int(sum(f["n_compared"] for f in per_fold)),
        "n_heldout": int(sum(f["n_test"] for f in per_fold)),
        "n_test_subjects": int(sum(f["n_test_subjects"] for f in per_fold)),
        "overall": {w: summarise_folds(pick("overall", w)) for w in ("generated", "real")},
        "per_class": {c: {w: summarise_folds(pick("per_class", c, w)) for w in ("generated", "real")} for c in classes},
        "ms_ssim": {w: summarise_folds(pick("ms_ssim", w)) for w in ("generated", "real")},
        "memorisation": summarise_folds(pick("memorisation")),
        "extractor": summarise_folds([_leaves(f["extractor"]) for f in per_fold]),
        "per_fold": per_fold,
    }


def _dig(block: dict, path: tuple) -> Any:
    for key in path:
        block = block.get(key, {}) if isinstance(block, dict) else {}
    return block


# --------------------------------------------------------------------------- classification
TEMPERATURE_ORIGIN = (
    "fitted per fold on that fold's validation images (the set that also selected the checkpoint), each image's "
    "log-likelihoods summed over its evaluation slices, by minimising the cross-entropy against add-one-smoothed "
    "labels (the true class (n + 1) / (n + K) over n validation images): a validation set the selected model "
    "separates cannot drive T to 0 and the posteriors to exactly 0 and 1; applied unchanged to the test images"
)


def _unit(units: ImageScores, temperatures: dict[str, float]) -> dict[str, Any]:
    """What the classification metrics count: images, the slices summed per image, the
    permutation unit and the temperatures."""
    slices = units.images["slices"].to_numpy()
    return {
        "name": "image",
        "images": int(len(units.true)),
        "subjects": int(units.images.get("subject", units.images["image"]).nunique()),
        "slices_min": int(slices.min()),
        "slices_max": int(slices.max()),
        "slices": int(slices.sum()),
        "aggregation": "per class, log-likelihoods summed over the image's evaluation slices, log prior added once",
        "permutation_unit": "subject",
        "temperature": temperatures,
        "temperature_origin": TEMPERATURE_ORIGIN,
    }


def _subjects(units: ImageScores) -> np.ndarray:
    """One id per image: its subject (within its dataset), the chance test's exchangeable unit."""
    table = units.images
    subject = table["subject"] if "subject" in table else table["image"]
    dataset = table["dataset"] if "dataset" in table else ""
    return (dataset + "\x00" + subject).to_numpy(str)


def classification_section(outputs: ExperimentOutputs, settings: dict, fig_dir: Path) -> dict:
    """Classification per image (one scan): each test image's log-likelihoods summed over its
    evaluation slices (:func:`magicflow.evaluate.inputs.image_scores`), then the Table 3 row per
    fold, confusion, calibration (posteriors at the fold's temperature, float64) and rejection
    (ordered by log-likelihood margins) over the pooled folds, and the chance test permuting
    labels across subjects. ``per_slice`` is the same pooled row per slice, for comparison only."""
    classes = outputs.classes
    per_fold, parts, temperatures = [], [], {}
    for fold in outputs.folds:
        units = image_scores(fold.predictions, classes, f"{fold.name} predictions.tsv")
        per_fold.append({"fold": fold.name, **cls.classification_metrics(units.true, None, classes, scores=units.scores)})
        parts.append(units)
        temperatures[fold.name] = float(units.temperature[0]) if len(units.temperature) else float("nan")
    units = ImageScores.concat(parts)
    true, scores, proba = units.true, units.scores, units.posteriors()
    matrix = cls.confusion(true, scores.argmax(1), len(classes))
    calibration = cls.calibration(true, proba, bins=settings["calibration_bins"])
    rejection = cls.rejection_curve(true, None, scores=scores)
    figures.confusion_figure(matrix, classes, fig_dir / FIGURES["confusion"])
    figures.reliability_figure(calibration["bins"], calibration["ece"], fig_dir / FIGURES["reliability"])
    figures.rejection_figure(rejection, fig_dir / FIGURES["rejection"])
    summary = cls.fold_summary(per_fold)
    per_dataset = {}
    for dataset in sorted(pd.unique(units.images["dataset"])):
        rows = units.subset(np.flatnonzero(units.images["dataset"].to_numpy() == dataset))
        per_dataset[str(dataset)] = cls.classification_metrics(rows.true, None, classes, scores=rows.scores)
    slice_true, slice_scores_ = zip(*(slice_scores(f.predictions, classes, f"{f.name} predictions.tsv") for f in outputs.folds))
    return {
        "unit": _unit(units, temperatures),
        "per_fold": per_fold,
        "summary": summary.reset_index().to_dict(orient="records"),
        "pooled": cls.classification_metrics(true, None, classes, scores=scores),
        "per_slice": cls.classification_metrics(np.concatenate(slice_true), None, classes, scores=np.concatenate(slice_scores_)),
        "chance": cls.chance_test(true, scores.argmax(1), len(classes), seed=settings["seed"], groups=_subjects(units)),
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
    outputs: ExperimentOutputs,
    brain: np.ndarray,
    groundtruth: dict[str, Path],
    settings: dict,
    fig_dir: Path,
    view: View | None = None,
) -> dict:
    """Do the maps point at the disease? ROI F1 (Figure 3) over subject-grouped folds, the
    threshold chosen on inner folds or fixed in advance at 0.8, each beside random regions of
    equal area (:func:`attr.roi_classification`); on the demo, the maps' AUC against the
    planted uptake per slice, averaged per subject, beside maps that need no model (the
    image, its difference from the other class's mean image, a random region;
    :func:`attr.groundtruth_scores`): the model is credited only for what those do not find.
    The planted masks are cut by the experiment's ``view`` like the images (None: resized to the brain's size)."""
    from magicflow.evaluate.groundtruth import slice_masks

    view = view or View(int(brain.shape[-1]))

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
            truth[pick] = view.mask(full) > 0  # as the experiment sees the slices
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


COMPARISON_UNIT = (
    "per test image: the flow's log-likelihoods and each baseline's log-softmax outputs summed over the image's "
    "evaluation slices, prediction = argmax, AUC from the margins between the summed scores (no temperature)"
)


def comparison_section(
    outputs: ExperimentOutputs, flow_per_fold: list[dict], baselines: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """MAGIC-Flow and each baseline side by side (the paper's Table 3), scored by the same
    :func:`classification.classification_metrics` per fold on the same unit, the image: a
    baseline's log-softmax outputs are summed over the image's slices as the flow's
    log-likelihoods are (:data:`COMPARISON_UNIT`). ``baselines`` maps id ->
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
            units = image_scores(table, outputs.classes, str(paths[fold.name]))
            per_fold.append(
                {"fold": fold.name, **cls.classification_metrics(units.true, None, outputs.classes, scores=units.scores)}
            )
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
    return {**cls.model_comparison(models), "unit": COMPARISON_UNIT}


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
    """MAGIC-Flow's and each generative baseline's samples, fold by fold, against the same test
    subjects, by the same functions as :func:`generation_section` (the same class-mix matching,
    subject-resampled intervals, subject-aware PRDC, minimum sizes), then mean and sd over
    folds, plus a real-vs-generated grid per baseline (first fold). ``heldout`` is
    :func:`inputs.generation_sets`'s fold -> sets (a bare ``SliceSet`` is read as the first
    fold's test set); ``extractor`` a fold -> extractor dict (or one extractor for all).
    ``baselines`` maps id -> ``{"settings": baseline.json, "samples": {fold: samples folder}}``."""
    from magicflow.evaluate.inputs import read_npz
    from magicflow.evaluate.paper_results import paper_tables12

    folds = [f.name for f in outputs.folds]
    sets = heldout if isinstance(heldout, dict) else {folds[0]: {"test": heldout}}
    extractors = extractor if isinstance(extractor, dict) else {name: extractor for name in sets}
    scored = [name for name in folds if name in sets]
    first_test = sets[scored[0]]["test"]
    seed = settings["seed"]
    settings = {"bootstrap": 200, "nearest_k": 5, "ms_ssim_pairs": 500, **settings}
    first_labels = first_test.labels.numpy()
    real_by_class = {c: first_test.images.numpy()[first_labels == k] for k, c in enumerate(outputs.classes)}
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
        per_fold, ms_ssim, n_generated = [], [], 0
        for name in scored:
            test = sets[name]["test"]
            path = Path(paths[name]) / "samples.npz"
            archive = read_npz(path)
            samples = archive["samples"]
            if [str(c) for c in archive["classes"]] != list(outputs.classes) or samples.shape[-2:] != test.images.shape[-2:]:
                raise InputError(
                    f"{path}: classes {list(archive['classes'])} and image shape {samples.shape[-2:]} do not match the "
                    f"experiment's {outputs.classes} and {tuple(test.images.shape[-2:])}; rerun baseline_sample"
                )
            fake, labels = _generated(samples)
            n_generated += len(fake)
            reference = sets[name].get("reference")  # caps the size as for the flow; not scored again
            result = _score_fold(fake, labels, test, extractors[name], settings, outputs.classes, reference, False)
            per_fold.append({"fold": name, **result["overall"]["generated"]})
            ms_ssim.append(gen.ms_ssim_pairs(fake, labels, pairs=settings["ms_ssim_pairs"], seed=seed))
            if name == scored[0]:
                figure = f"real_vs_generated_{baseline_id}.png"
                figures.real_vs_generated_figure(
                    real_by_class, {c: samples[k] for k, c in enumerate(outputs.classes)}, fig_dir / figure
                )
        models.append(
            {
                "id": baseline_id,
                "model": baseline.get("label", baseline_id)
                + ("" if baseline_id == baseline.get("name", baseline_id) else f" ({baseline_id})"),
                "architecture": baseline.get("architecture"),
                "metrics": summarise_folds([{k: v for k, v in f.items() if k != "fold"} for f in per_fold]),
                "per_fold": per_fold,
                "ms_ssim": summarise_folds(ms_ssim),
                "n_generated": int(n_generated),
                "figure": figure,
                "paper": paper_tables12(outputs.name, baseline.get("name", baseline_id)),  # Tables 1-2, if any
            }
        )
    return {
        "kind": "generation",
        "fold": scored[0],
        "folds_scored": scored,
        "suffix": flow_generation["suffix"],
        "n_heldout": int(sum(len(sets[name]["test"]) for name in scored)),
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
