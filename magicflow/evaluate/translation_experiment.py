"""``magicflow translation-evaluate``: one translation experiment's metrics and figures.

Per model (the dual flow, then each translation baseline in config order), over every fold's
test slices: DUAL-GLOW's Table 1 metrics inside the brain mask (MAE, correlation, PSNR, SSIM;
mean +/- std over test images, an image's slices averaged first), a paired Wilcoxon test of
the flow against each baseline over the same images, the mean uptake per region (template grey
and white matter; for the demo the planted AD tau regions, by diagnosis), and DUAL-GLOW's
Table 2 check: an RBF SVM trained per fold on the real training targets, tested on the real and
on every model's translated test targets; a model whose translations were given the true test
diagnosis (``side: label``) is marked circular, and with ``side: predicted`` the source-only
classifier's own rates stand beside them. Table 5's cost figures come from the training logs and
benchmarks as for every other experiment. The dual flow's first test slices of each fold are drawn
as triptychs (source, real, generated, uncertainty) with their metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magicflow.errors import InputError
from magicflow.view import View
from magicflow.io import atomic_dir, atomic_path, write_json

METRICS = ("mae", "correlation", "psnr", "ssim")
FLOW_ID = "dual-glow"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magicflow.experiments.commands import add_experiment_inputs

    add_experiment_inputs(parser)
    parser.add_argument("--folds", required=True, type=Path, help="results/<experiment>/splits/folds")
    for name, what in (
        ("translations", "the dual flow's translations folder"),
        ("training", "the dual flow's training.tsv"),
        ("train-benchmark", "the Snakemake benchmark TSV of the dual flow's training job (optional)"),
    ):
        parser.add_argument(f"--{name}", action="append", default=[], metavar="FOLD=PATH", help=f"{what} of one fold")
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="ID=JSON", help="a translation baseline's baseline.json"
    )
    for name in ("translations", "training", "train-benchmark"):
        parser.add_argument(
            f"--baseline-{name}", action="append", default=[], metavar="ID:FOLD=PATH", help=f"a baseline's {name} of one fold"
        )
    parser.add_argument(
        "--groundtruth", action="append", default=[], metavar="DATASET=DIR", help="a demo dataset's derivatives/groundtruth"
    )
    parser.add_argument("--template", required=True, type=Path, help="the template folder (grey and white matter maps)")
    parser.add_argument("--out-dir", required=True, type=Path, help="results/<experiment>/evaluation (figures)")
    parser.add_argument("--out-json", required=True, type=Path, help="results/<experiment>/metrics.json")
    parser.add_argument("--out-tsv", required=True, type=Path, help="results/<experiment>/metrics.tsv")


# --------------------------------------------------------------------------- reading
def read_translations(folder: Path) -> dict[str, np.ndarray]:
    path = Path(folder) / "translations.npz"
    if not path.is_file():
        raise InputError(f"{path}: translations missing; rerun the fold's translate job")
    with np.load(path, allow_pickle=False) as archive:
        data = {k: archive[k] for k in archive.files}
    for key in ("source", "real", "mode", "image", "offset", "label"):
        if key not in data:
            raise InputError(f"{path}: no {key!r} array; it was not written by magicflow translate")
    return data


def _fold_paths(values: list[str], option: str) -> dict[str, Path]:
    from magicflow.experiments.commands import parse_pairs

    return parse_pairs(values, option)


def region_masks(template_dir: Path, offsets: list[int], view: View, brain: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """offset -> {"grey matter", "white matter"}: the template's tissue maps (probability >= 0.5)
    on that slice, inside the brain mask, as the experiment's ``view`` sees it."""
    import nibabel as nib

    from magicflow.preprocess.template import load_template
    from magicflow.slices import coronal_slice

    template = load_template(template_dir, 1)
    maps = {"grey matter": template.gm, "white matter": template.wm}
    volumes = {name: np.asarray(nib.load(path).dataobj, dtype=np.float32) for name, path in maps.items()}
    out = {}
    for offset in sorted(set(offsets)):
        out[offset] = {
            name: view.mask(coronal_slice(volume, offset) >= 0.5)[0] * brain.astype(np.uint8) for name, volume in volumes.items()
        }
    return out


def planted_masks(groundtruth: dict[str, Path], data: dict[str, np.ndarray], view: View) -> np.ndarray | None:
    """(N, S, S) the demo's AD tau mask of each test slice's subject (empty for CN) as the
    experiment's ``view`` sees it, or None without a demo."""
    from magicflow.evaluate.groundtruth import slice_masks

    if not groundtruth:
        return None
    out = np.zeros((len(data["image"]), view.size, view.size), dtype=np.uint8)
    for dataset, folder in groundtruth.items():
        rows = np.flatnonzero(data["dataset"] == dataset)
        if len(rows):
            masks = slice_masks(folder, list(data["subject"][rows]), list(data["offset"][rows].astype(int)))
            out[rows] = view.mask(masks)
    return out


# --------------------------------------------------------------------------- metrics
def per_image(frame: pd.DataFrame) -> pd.DataFrame:
    """Slices' metrics averaged per (dataset, image): what mean +/- std are taken over."""
    return frame.groupby(["dataset", "image"], sort=True)[list(METRICS)].mean().reset_index()


def model_metrics(folds: dict[str, dict[str, np.ndarray]], brain: np.ndarray) -> pd.DataFrame:
    """One row per test slice of every fold: identity and the four Table 1 metrics."""
    from magicflow.evaluate.translation import image_metrics

    frames = []
    for fold, data in folds.items():
        values = image_metrics(data["real"], data["mode"], brain)
        frames.append(
            pd.DataFrame(
                {
                    "fold": fold,
                    "dataset": data["dataset"],
                    "image": data["image"],
                    "subject": data["subject"],
                    "label": data["label"],
                    "offset": data["offset"].astype(int),
                    **{m: values[m] for m in METRICS},
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def paired_tests(flow: pd.DataFrame, baseline: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per metric: the flow's mean minus the baseline's over the same test images, and the
    two-sided Wilcoxon signed-rank p (None with fewer than two differing images)."""
    from scipy.stats import wilcoxon

    merged = per_image(flow).merge(per_image(baseline), on=["dataset", "image"], suffixes=("", "_b"))
    out = {}
    for m in METRICS:
        a, b = merged[m].to_numpy(float), merged[f"{m}_b"].to_numpy(float)
        ok = np.isfinite(a) & np.isfinite(b)
        differ = ok & (a != b)
        p = float(wilcoxon(a[ok], b[ok]).pvalue) if differ.sum() >= 2 else None
        out[m] = {"difference": float(np.mean(a[ok] - b[ok])) if ok.any() else None, "p_wilcoxon": p, "n": int(ok.sum())}
    return out


def uptake_table(
    folds: dict[str, dict[str, np.ndarray]], regions: dict[int, dict[str, np.ndarray]], planted: dict[str, np.ndarray | None]
) -> pd.DataFrame:
    """Long table: fold, image, label, region, real and generated mean uptake per test slice."""
    from magicflow.evaluate.translation import paired_uptake

    parts = []
    for fold, data in folds.items():
        for i in range(len(data["image"])):  # the masks differ per slice: its offset, its subject's planted regions
            masks = dict(regions[int(data["offset"][i])])
            if planted.get(fold) is not None and planted[fold][i].any():
                masks["AD tau regions (planted)"] = planted[fold][i]
            table = paired_uptake(data["real"][i : i + 1], data["mode"][i : i + 1], masks).drop(columns="image")
            parts.append(table.assign(fold=fold, image=str(data["image"][i]), label=str(data["label"][i])))
    columns = ["fold", "image", "label", "region", "real", "generated"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def uptake_summary(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per region and label: mean real and generated uptake, and the Pearson r over slices."""
    out = []
    for (region, label), rows in table.groupby(["region", "label"], sort=True):
        r = np.corrcoef(rows["real"], rows["generated"])[0, 1] if len(rows) > 2 and rows["real"].std() > 0 else np.nan
        out.append(
            {
                "region": region,
                "label": label,
                "n": len(rows),
                "real": float(rows["real"].mean()),
                "generated": float(rows["generated"].mean()),
                "abs_difference": float((rows["real"] - rows["generated"]).abs().mean()),
                "pearson_r": float(r) if np.isfinite(r) else None,
            }
        )
    return out


#: side information under which a diagnosis read off the translations only repeats the label given
CIRCULAR_SIDES = ("label",)


def translation_side(data: dict[str, np.ndarray], default: str) -> str:
    """The side information a model's translations were made with (translations.npz's ``side``;
    files written before it was recorded: the experiment's setting)."""
    return str(data["side"]) if "side" in data else default


def _pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates of several folds pooled, each weighted by its test slices."""
    n = sum(r["n"] for r in results)
    keys = ("accuracy", "balanced_accuracy", "false_negative_rate", "false_positive_rate")
    return {key: float(sum(r[key] * r["n"] for r in results) / n) if n else None for key in keys} | {"n": n}


def table2_check(
    settings: dict, slices: pd.DataFrame, arrays: dict, folds_dir: Path, models: dict[str, dict], brain: np.ndarray
) -> dict:
    """DUAL-GLOW Table 2 (:func:`table2_models`) with each fold's real training (and validation)
    targets as the SVM's training set. ``models``: id -> {"label", "folds": fold -> translations},
    the dual flow first."""
    from magicflow.experiments.data import load_set, select_slices
    from magicflow.experiments.split import read_fold

    classes = json.loads((folds_dir / "split.json").read_text())["classes"]
    if len(classes) != 2:
        return {"skipped": f"needs two label classes, the experiment has {len(classes)} ({', '.join(classes)})"}
    trainings = {}
    for fold in next(iter(models.values()))["folds"]:
        sets = read_fold(folds_dir / fold)
        rows = select_slices(slices, pd.concat([sets["train"], sets["val"]]), settings["offsets"]["eval"])
        train = load_set(rows, arrays, classes)
        trainings[fold] = (train.images[:, 1:].numpy(), np.array([classes[i] for i in train.labels.tolist()]))
    positive = "AD" if "AD" in classes else classes[-1]
    return table2_models(trainings, models, brain, positive, settings["translation"]["side"], settings["seed"])


def table2_models(
    trainings: dict[str, tuple[np.ndarray, np.ndarray]],
    models: dict[str, dict],
    brain: np.ndarray,
    positive: str,
    default_side: str,
    seed: int = 0,
) -> dict:
    """Per fold an SVM trained on ``trainings[fold]`` (real targets, label names), tested on the
    real test targets and on each model's translations of them; rates pooled over folds.

    Per model ``circular`` is true when its translations were given the true test label as side
    information (``side: label``): an SVM finding AD in them then measures obedience to that
    label, not disease signal the translator found. With ``side: predicted`` the source-only
    classifier's own rates (``side_predicted``) are what the generated images' rates are to be
    read against: a translator that adds nothing to its side information repeats them."""
    from magicflow.evaluate.translation import _rates, adcn_check

    flow_id = next(iter(models))
    real: list[dict] = []
    generated: dict[str, list[dict]] = {m: [] for m in models}
    agreement: dict[str, list[tuple[float, int]]] = {m: [] for m in models}
    predicted: list[dict] = []
    for fold, data in models[flow_id]["folds"].items():
        targets, labels = trainings[fold]
        for model_id, model in models.items():
            result = adcn_check(
                targets, labels, data["real"], model["folds"][fold]["mode"], data["label"], brain, positive=positive, seed=seed
            )
            if "skipped" in result:
                return {"skipped": f"{fold}: {result['skipped']}"}
            if model_id == flow_id:
                real.append(result["real"])
            generated[model_id].append(result["generated"])
            agreement[model_id].append((result["agreement"], result["generated"]["n"]))
        given = [m["folds"][fold]["side_predicted"] for m in models.values() if "side_predicted" in m["folds"][fold]]
        if given:  # one source classifier per fold, whichever model recorded its labels
            truth = np.asarray(data["label"]) == positive
            predicted.append(_rates(truth, np.asarray(given[0]) == positive))
    entries = []
    for model_id, model in models.items():
        side = translation_side(next(iter(model["folds"].values())), default_side)
        n = sum(k for _, k in agreement[model_id])
        entries.append(
            {
                "id": model_id,
                "model": model["label"],
                "side": side,
                "circular": side in CIRCULAR_SIDES,
                "generated": _pooled(generated[model_id]),
                "agreement": float(sum(a * k for a, k in agreement[model_id]) / n) if n else None,
            }
        )
    return {
        "positive": positive,
        "folds": len(real),
        "side": entries[0]["side"],
        "circular": entries[0]["circular"],
        "real": _pooled(real),
        "generated": entries[0]["generated"],
        "models": entries,
        "side_predicted": _pooled(predicted) if predicted else None,
    }


def draw_triptychs(
    out: Path, flow: dict[str, dict[str, np.ndarray]], folds: list[str], brain: np.ndarray, per_fold: int
) -> list[dict[str, Any]]:
    """The dual flow's first ``per_fold`` test slices of each fold as source / real / generated /
    uncertainty panels, each captioned with its metrics inside the brain (as Table 1 scores them)."""
    from magicflow.evaluate.translation import image_metrics, triptych_png

    written = []
    for fold in folds:
        data = flow[fold]
        for i in range(min(per_fold, len(data["mode"]))):
            values = image_metrics(data["real"][i : i + 1], data["mode"][i : i + 1], brain)
            image, offset = str(data["image"][i]), int(data["offset"][i])
            name = f"triptych_{fold}_{image}_offset{offset}.png"
            triptych_png(
                out / name,
                data["source"][i, 0],
                data["real"][i, 0],
                data["mode"][i, 0],
                data["std"][i, 0] if "std" in data else None,
                f"DUAL-GLOW: {image} (offset {offset}, {data['label'][i]})",
                {k: float(v[0]) for k, v in values.items()},
            )
            written.append({"fold": fold, "file": name, "image": image, "offset": offset})
    return written


def summary(frame: pd.DataFrame) -> dict[str, dict]:
    from magicflow.evaluate.translation import summarise

    images = per_image(frame)
    return summarise({m: images[m].to_numpy(float) for m in METRICS})


# --------------------------------------------------------------------------- command
def run(args: argparse.Namespace) -> int:
    from magicflow.evaluate.commands import baseline_inputs
    from magicflow.evaluate.experiment import flatten, model_cost, to_json
    from magicflow.evaluate.inputs import read_benchmark, read_tsv
    from magicflow.evaluate.translation import uptake_scatter_png, age_sweep_png
    from magicflow.experiments.commands import load_inputs

    baselines = baseline_inputs(args)
    settings, slices, arrays, brain = load_inputs(args)
    if settings["model"] != "translation":
        raise InputError(f"{args.experiment}: model is {settings['model']!r}; use magicflow evaluate")
    flow_dirs = _fold_paths(args.translations, "translations")
    folds = sorted(flow_dirs)
    if not folds:
        raise InputError("no --translations FOLD=DIR given")
    models: dict[str, dict[str, Any]] = {
        FLOW_ID: {"label": "DUAL-GLOW", "folds": {f: read_translations(flow_dirs[f]) for f in folds}}
    }
    for baseline_id, given in baselines.items():
        paths = given["translations"]
        if sorted(paths) != folds:
            raise InputError(f"baseline {baseline_id}: translations for {sorted(paths)}, the flow's folds are {folds}")
        models[baseline_id] = {
            "label": given["settings"].get("label", baseline_id),
            "folds": {f: read_translations(paths[f]) for f in folds},
        }
    for model_id, model in models.items():  # every model must translate the same test slices
        for f in folds:
            if list(model["folds"][f]["image"]) != list(models[FLOW_ID]["folds"][f]["image"]):
                raise InputError(f"{model_id} {f}: its test slices differ from the dual flow's; rerun its translate job")

    size = int(settings["image_size"])
    first = models[FLOW_ID]["folds"]
    offsets = [int(o) for f in folds for o in first[f]["offset"]]
    view = View.from_record(settings["view"])
    regions = region_masks(args.template, offsets, view, brain)
    groundtruth = _fold_paths(args.groundtruth, "groundtruth")
    planted = {f: planted_masks(groundtruth, first[f], view) for f in folds}

    frames = {model_id: model_metrics(model["folds"], brain) for model_id, model in models.items()}
    uptakes = {model_id: uptake_table(model["folds"], regions, planted) for model_id, model in models.items()}
    entries = []
    for model_id, model in models.items():
        frame = frames[model_id]
        entries.append(
            {
                "id": model_id,
                "model": model["label"],
                "metrics": summary(frame),
                "per_fold": [{"fold": f, **{m: float(rows[m].mean()) for m in METRICS}} for f, rows in frame.groupby("fold")],
                "uptake": uptake_summary(uptakes[model_id]),
                "comparison": None if model_id == FLOW_ID else paired_tests(frames[FLOW_ID], frame),
            }
        )

    trainings, benchmarks = _fold_paths(args.training, "training"), _fold_paths(args.train_benchmark, "train-benchmark")
    flow_cost = model_cost(
        [read_tsv(trainings[f]) for f in folds] if trainings else [],
        [read_benchmark(benchmarks[f]) for f in folds] if benchmarks else [],
    )
    cost = [{"id": FLOW_ID, "model": "DUAL-GLOW", **flow_cost}]
    for baseline_id, given in baselines.items():
        trainings = [read_tsv(given["training"][f]) for f in folds] if given.get("training") else []
        benchmarks = [read_benchmark(given["train_benchmark"][f]) for f in folds] if given.get("train_benchmark") else []
        cost.append({"id": baseline_id, "model": models[baseline_id]["label"], **model_cost(trainings, benchmarks)})

    metrics = {
        "experiment": settings["name"],
        "model": "translation",
        "source": settings["source"],
        "target": settings["target"],
        "label": settings["label"],
        "side": settings["translation"]["side"],
        "image_size": size,
        "view": settings["view"],
        "folds": folds,
        "test_images": int(per_image(frames[FLOW_ID]).shape[0]),
        "test_slices": int(len(frames[FLOW_ID])),
        "models": entries,
        "table2": table2_check(settings, slices, arrays, args.folds, models, brain),
        "cost": cost,
    }
    with atomic_dir(args.out_dir) as tmp:
        metrics["triptychs"] = draw_triptychs(tmp, first, folds, brain, int(settings["translation"]["triptychs"]))
        for model_id, table in uptakes.items():
            if not table.empty:
                uptake_scatter_png(
                    tmp / f"uptake_{model_id}.png", table, f"{models[model_id]['label']}: regional uptake, generated vs real"
                )
            table.to_csv(tmp / f"uptake_{model_id}.tsv", sep="\t", index=False, float_format="%.6g")
            frames[model_id].to_csv(tmp / f"slices_{model_id}.tsv", sep="\t", index=False, float_format="%.6g")
        sweep = first[folds[0]]
        if "sweep" in sweep:
            sweep_regions = {**regions[int(sweep["offset"][0])]}
            from magicflow.evaluate.translation import regional_uptake

            trend = regional_uptake(sweep["sweep"], sweep_regions).assign(
                age=lambda t: sweep["sweep_ages"][t["image"].to_numpy(int)]
            )
            age_sweep_png(
                tmp / "age_sweep.png",
                sweep["sweep_ages"],
                sweep["sweep"],
                trend,
                f"{sweep['sweep_image']}: translation across age",
            )
            metrics["age_sweep"] = {
                "image": str(sweep["sweep_image"]),
                "ages": [float(a) for a in sweep["sweep_ages"]],
                "uptake": trend.to_dict("records"),
            }
    write_json(args.out_json, to_json(metrics))
    with atomic_path(args.out_tsv) as tmp:
        pd.DataFrame(flatten({e["id"]: e["metrics"] for e in entries}), columns=["metric", "value"]).to_csv(
            tmp, sep="\t", index=False
        )
    flow_summary = entries[0]["metrics"]
    print(
        f"{settings['name']}: {metrics['test_images']} test images; DUAL-GLOW MAE {flow_summary['mae']['mean']:.4f}, "
        f"SSIM {flow_summary['ssim']['mean']:.3f} -> {args.out_json}"
    )
    return 0
