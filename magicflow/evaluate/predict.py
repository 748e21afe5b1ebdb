"""``magicflow predict``: a trained model (an exported folder) applied to new scans.

The new dataset is prepared the usual way (manifest, registration, ``slices``); its slices are
cut as the model's view cuts them (the training crop box or image size). Per image, every
fold's model scores log p(x | y) summed over the evaluation offsets, adds its log priors and
divides by its fitted temperature: the fold's calibrated posterior, exactly as its
``classify`` stage computed it on the experiment's test images. The ensemble posterior is the
mean of the folds'. Written into ``--out``:

- ``predictions.tsv``: per image the ensemble posterior, predicted class, its confidence, the
  accuracy-rejection position ``reject_at`` (the rejection rate, least confident first, at
  which the image is set aside), each fold's posterior, the bits per dimension of its marginal
  density and ``out_of_distribution`` (above the 99th percentile of the bits per dimension of
  the fold's held-out images, scored the same way, in more than half of the folds);
- ``refused.tsv``: images left out and why (another modality, a known label that is not a
  trained class, missing slices);
- ``metrics.json``: with the label present, the experiment report's metrics of the ensemble and
  of each fold, and the accuracy-rejection curve; without it, says so;
- ``attribution/``: per predicted image, the likelihood attribution map of its predicted class
  (mean over folds; it sums to the mean log-likelihood the folds score) as a PNG overlay and a
  NIfTI slice on the MNI grid, listed with each map's sum in ``maps.tsv``;
- ``report.html``: all of the above, self-contained.

Slices normalised or sampled otherwise than the training slices (another grid, other
percentiles) are refused as a whole: the model has never seen such images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from magicflow.datasets.tables import MISSING
from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet, image_kind
from magicflow.experiments.portable import PortableModel, image_bits_per_dim
from magicflow.experiments.posterior import posteriors, sum_by_image
from magicflow.io import atomic_dir, write_json
from magicflow.view import SIDE, View

IMAGE_COLUMNS = ["dataset", "subject", "session", "image"]


def label_column(label: str) -> str:
    """The slices.tsv column holding the experiment's label (modality classes are image kinds)."""
    return "kind" if label == "modality" else label


def select_images(
    tables: dict[str, pd.DataFrame], info: dict[str, Any], use_labels: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(slices to score, refused images): the rows of the model's modalities at its evaluation
    offsets, one reason per refused image. A known label that is not a trained class refuses
    its image; no label (column absent or empty) leaves the image unlabelled."""
    classes, offsets = list(info["classes"]), [int(o) for o in info["offsets"]]
    kept, refused = [], []
    for dataset, table in tables.items():
        table = table.copy()
        table["dataset"] = dataset
        table["kind"] = image_kind(table)
        if info["label"] == "dataset_scanner" and "scanner" in table:
            table["dataset_scanner"] = dataset + " " + table["scanner"]
        column = label_column(info["label"])
        table["label"] = table[column].replace("", MISSING) if use_labels and column in table else MISSING
        table["offset"] = table["offset"].astype(int)
        for _, rows in table.groupby(["dataset", "image"], sort=False):
            first = rows.iloc[0]
            reason = ""
            if first["kind"] not in info["modalities"]:
                reason = f"modality {first['kind']}: the model was trained on {', '.join(info['modalities'])}"
            elif first["label"] != MISSING and first["label"] not in classes:
                reason = f"{info['label']} {first['label']!r} is not a class the model was trained on ({', '.join(classes)})"
            else:
                missing = sorted(set(offsets) - set(rows["offset"]))
                if missing:
                    reason = f"no slice at offset(s) {missing}: the model scores offsets {offsets} (rerun slices with them)"
            if reason:
                refused.append({**{c: first.get(c, "") for c in IMAGE_COLUMNS}, "reason": reason})
            else:
                chosen = rows[rows["offset"].isin(offsets)].drop_duplicates("offset").sort_values("offset")
                kept.append(chosen)
    slices = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=[*IMAGE_COLUMNS, "offset", "index", "label"])
    slices["index"] = slices["index"].astype(int)
    return slices, pd.DataFrame(refused, columns=[*IMAGE_COLUMNS, "reason"])


def load_arrays(paths: dict[str, Path], info: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each dataset's slices.npz, refused whole where its slices are not the training slices' kind."""
    expected = [float(p) for p in info["intensity"]["percentiles"]]
    out = {}
    for name, path in paths.items():
        try:
            archive = np.load(path)
            files = archive.files
            slices = archive["slices"] if "slices" in files else None
            percentiles = archive["percentiles"] if "percentiles" in files else None
        except Exception as error:  # missing, truncated or not an npz: name the file
            raise InputError(f"{path}: unreadable slices archive: {error}") from None
        with archive:
            if slices is None:
                raise InputError(f"{path}: no 'slices' array; write it with magicflow slices")
            if slices.ndim != 4 or slices.shape[1:] != (1, SIDE, SIDE):
                raise InputError(
                    f"{path}: slices of shape {slices.shape[1:]}, the model was trained on (1, {SIDE}, {SIDE}) "
                    "coronal slices of FSL's MNI 1 mm grid"
                )
            if percentiles is None:
                print(f"{path}: no record of its intensity percentiles (written before they were recorded); taken as {expected}")
            elif not np.allclose(percentiles, expected):
                raise InputError(
                    f"{path}: intensities scaled between the {percentiles.tolist()} percentiles; the model was trained on {expected}"
                )
            out[name] = slices
    return out


def reject_at(confidence: np.ndarray) -> np.ndarray:
    """Per image, the fraction of images rejected (least confident first, ties together) once
    it is: 1/N for the least confident, 1 for the most confident."""
    c = np.asarray(confidence, np.float64)
    return np.searchsorted(np.sort(c), c, side="right") / max(len(c), 1)


def score_folds(
    model_dir: PortableModel, data: SliceSet, index: np.ndarray, device: torch.device
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per fold: calibrated posteriors (images, K), bits per dimension per image, and whether
    each image lies above the fold's 99th training percentile."""
    from magicflow.experiments.infer import class_log_likelihoods

    post, bpd, above = [], [], []
    for fold in model_dir.info["folds"]:
        model = model_dir.load(fold, device)
        ll = class_log_likelihoods(model, data, device)
        prior = np.asarray(fold["log_prior"], np.float64)
        post.append(posteriors(sum_by_image(ll, index), prior, fold["temperature"]))
        per_image = image_bits_per_dim(ll, prior, model.image_dims, index)
        bpd.append(per_image)
        above.append(per_image > fold["bpd_quantiles"]["0.99"])
    return post, bpd, above


def attribution(
    model_dir: PortableModel, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch: int = 8
) -> np.ndarray:
    """(N, S, S) mean over folds of H(x, y): each sums to the folds' mean log p(x | y)."""
    total = None
    for fold in model_dir.info["folds"]:
        model = model_dir.load(fold, device)
        maps = []
        with torch.no_grad():
            for s in range(0, len(images), batch):
                x = model.bin_centre(images[s : s + batch].to(device))
                maps.append(model.attribution(x, labels[s : s + batch].to(device)).cpu()[:, 0].double())
        stacked = torch.cat(maps) if maps else torch.zeros((0, *images.shape[-2:]), dtype=torch.float64)
        total = stacked if total is None else total + stacked
    return (total / len(model_dir.info["folds"])).numpy()


def predict(
    model_dir: PortableModel,
    tables: dict[str, pd.DataFrame],
    arrays: dict[str, np.ndarray],
    device: torch.device,
    use_labels: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], SliceSet, np.ndarray]:
    """(predictions per image, refused images, per-fold posteriors by key, the scored slices,
    each slice's image number)."""
    info, classes = model_dir.info, model_dir.classes
    slices, refused = select_images(tables, info, use_labels)
    if slices.empty:
        raise InputError(
            f"no image to predict: all {len(refused)} refused ({'; '.join(sorted(set(refused['reason'])))})"
            if len(refused)
            else "no slices given"
        )
    view = View.from_record(info["view"])
    images = np.concatenate(
        [view.images(arrays[d][slices.loc[slices["dataset"] == d, "index"].to_numpy()]) for d in slices["dataset"].unique()]
    )
    order = np.concatenate([np.flatnonzero(slices["dataset"].to_numpy() == d) for d in slices["dataset"].unique()])
    slices = slices.iloc[order].reset_index(drop=True)
    data = SliceSet(torch.from_numpy(images), torch.zeros(len(slices), dtype=torch.long), slices)
    index = data.image_ids()
    post, bpd, above = score_folds(model_dir, data, index, device)
    ensemble = np.mean(post, axis=0)
    first = slices.drop_duplicates(["dataset", "image"])
    table = first[IMAGE_COLUMNS].reset_index(drop=True)
    for k, name in enumerate(classes):
        table[f"posterior_{name}"] = ensemble[:, k]
    table["predicted"] = [classes[i] for i in ensemble.argmax(1)]
    table["confidence"] = ensemble.max(1)
    table["reject_at"] = reject_at(table["confidence"].to_numpy())
    table["bits_per_dim"] = np.mean(bpd, axis=0)
    table["out_of_distribution"] = np.sum(above, axis=0) > len(above) / 2
    table["true"] = first["label"].to_numpy()
    for fold, p in zip(info["folds"], post):
        for k, name in enumerate(classes):
            table[f"{fold['fold']}_posterior_{name}"] = p[:, k]
    return table, refused, {f["fold"]: p for f, p in zip(info["folds"], post)}, data, index


def labelled_metrics(table: pd.DataFrame, per_fold: dict[str, np.ndarray], classes: list[str], label: str) -> dict[str, Any]:
    """The experiment report's classification metrics on the labelled images, or why there are none."""
    from magicflow.evaluate.classification import classification_metrics, rejection_curve

    known = table["true"].isin(classes).to_numpy()
    if not known.any():
        return {
            "labelled": False,
            "note": f"no image carries a {label!r} label (column absent or empty, or --ignore-labels): predictions only, no metrics",
        }
    true = np.array([classes.index(c) for c in table.loc[known, "true"]])
    proba = table.loc[known, [f"posterior_{c}" for c in classes]].to_numpy()
    return {
        "labelled": True,
        "images": int(known.sum()),
        "unlabelled_images": int((~known).sum()),
        "ensemble": classification_metrics(true, proba, classes),
        "per_fold": {fold: classification_metrics(true, p[known], classes) for fold, p in per_fold.items()},
        "rejection": rejection_curve(true, proba).to_dict(orient="records"),
    }


def write_attribution(
    out: Path,
    model_dir: PortableModel,
    table: pd.DataFrame,
    data: SliceSet,
    index: np.ndarray,
    mask: np.ndarray,
    device: torch.device,
    limit: int,
) -> list[dict[str, Any]]:
    """Per predicted image (the first ``limit``), its predicted class's map at the central
    evaluation offset: a PNG overlay and a NIfTI slice in MNI space. Returns what was written."""
    from magicflow.experiments.infer import overlay_png, slice_to_nifti

    info, classes = model_dir.info, model_dir.classes
    offsets = [int(o) for o in info["offsets"]]
    centre = 0 if 0 in offsets else offsets[len(offsets) // 2]
    view = View.from_record(info["view"])
    rows = [
        int(np.flatnonzero((index == i) & (data.meta["offset"].to_numpy() == centre))[0]) for i in range(min(limit, len(table)))
    ]
    if not rows:
        return []
    labels = torch.tensor([classes.index(p) for p in table["predicted"].iloc[: len(rows)]], dtype=torch.long)
    maps = attribution(model_dir, data.images[rows], labels, device)
    (out / "attribution").mkdir()
    written = []
    for i, (row, h) in enumerate(zip(rows, maps)):
        name, predicted = table["image"].iloc[i], table["predicted"].iloc[i]
        stem = out / "attribution" / f"{table['dataset'].iloc[i]}_{name}_offset{centre}"
        overlay_png(
            stem.with_suffix(".png"),
            data.images[row, 0].numpy(),
            {f"H(x, predicted={predicted})": h},
            mask,
            f"{name}: predicted {predicted} ({table['confidence'].iloc[i]:.2f})",
            view,
        )
        nib.save(slice_to_nifti(h, centre, view), f"{stem}.nii.gz")
        written.append(
            {"dataset": table["dataset"].iloc[i], "image": name, "offset": centre, "predicted": predicted}
            | {"png": f"{stem.name}.png", "nifti": f"{stem.name}.nii.gz", "sum": float(h.sum())}
        )
    return written


def report_html(
    info: dict[str, Any],
    table: pd.DataFrame,
    refused: pd.DataFrame,
    metrics: dict[str, Any],
    out: Path,
    maps: list[dict[str, Any]],
) -> str:
    from magicflow.report import html

    classes = info["classes"]
    head = [
        ("images predicted", len(table)),
        ("refused", len(refused)),
        ("flagged out of distribution", int(table["out_of_distribution"].sum())),
    ]
    if metrics["labelled"]:
        e = metrics["ensemble"]
        head += [("balanced accuracy (ensemble)", e["balanced_accuracy"]), ("macro AUC", e["macro_auc"])]
        rows = [
            {
                "model": "ensemble (mean posterior)",
                **{k: e[k] for k in ("balanced_accuracy", "accuracy", "macro_auc", "macro_f1")},
            }
        ]
        rows += [
            {"model": fold, **{k: m[k] for k in ("balanced_accuracy", "accuracy", "macro_auc", "macro_f1")}}
            for fold, m in metrics["per_fold"].items()
        ]
        recall = [{"class": c, "recall": e["per_class_recall"][c]} for c in classes]
        body = (
            html.table(rows)
            + "<h3>Recall per class (ensemble)</h3>"
            + html.table(recall)
            + "<h3>Accuracy-rejection curve</h3>"
            + html.table(metrics["rejection"])
        )
    else:
        body = f'<p class="note">{html.esc(metrics["note"])}.</p>'
    shown = ["dataset", "image", "predicted", "confidence", "reject_at", "bits_per_dim", "out_of_distribution", "true"]
    sections = [
        (
            "summary",
            "Summary",
            html.cards(head) + f'<p class="note">Model {html.esc(info["experiment"])} ({len(info["folds"])} '
            f"fold models, classes {html.esc(', '.join(classes))}); out of distribution: bits per dimension above the 99th "
            "percentile of a fold's held-out images in more than half of the folds.</p>",
        ),
        ("metrics", "Metrics", body),
        ("predictions", "Predictions", html.table(table[shown + [f"posterior_{c}" for c in classes]].to_dict(orient="records"))),
        ("refused", "Refused images", html.table(refused.to_dict(orient="records"))),
        (
            "attribution",
            "Attribution maps",
            "".join(html.image(out / "attribution" / m["png"], f"{m['image']} (map sums to {m['sum']:.1f} nats)") for m in maps)
            or '<p class="note">none</p>',
        ),
    ]
    return html.page(f"Predictions of {info['experiment']}", f"{len(table)} images", sections)


# --------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="an exported model folder (magicflow export-model)")
    parser.add_argument("--slices", action="append", default=[], metavar="DATASET=TSV", help="a dataset's slices.tsv (repeat)")
    parser.add_argument("--arrays", action="append", default=[], metavar="DATASET=NPZ", help="the same dataset's slices.npz")
    parser.add_argument(
        "--ignore-labels", action="store_true", help="treat the data as unlabelled even where a label column exists"
    )
    parser.add_argument("--attribution-max", type=int, default=32, help="attribution maps for at most this many images")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", required=True, type=Path, help="output folder (replaced only when complete)")


def run(args: argparse.Namespace) -> int:
    from magicflow.evaluate.experiment import to_json
    from magicflow.experiments.commands import parse_pairs
    from magicflow.experiments.train import resolve_device
    from magicflow.view import read_mask

    model_dir = PortableModel.read(args.model)
    tsvs, npzs = parse_pairs(args.slices, "slices"), parse_pairs(args.arrays, "arrays")
    if not tsvs or set(tsvs) != set(npzs):
        raise InputError(f"--slices and --arrays must name the same datasets; got {sorted(tsvs)} and {sorted(npzs)}")
    tables = {name: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False) for name, path in tsvs.items()}
    arrays = load_arrays(npzs, model_dir.info)
    device = resolve_device(args.device)
    table, refused, per_fold, data, index = predict(model_dir, tables, arrays, device, not args.ignore_labels)
    metrics = labelled_metrics(table, per_fold, model_dir.classes, model_dir.info["label"])
    mask = View.from_record(model_dir.info["view"]).mask(read_mask(next(iter(npzs.values()))))[0]
    with atomic_dir(args.out) as tmp:
        maps = write_attribution(tmp, model_dir, table, data, index, mask, device, args.attribution_max)
        if maps:
            pd.DataFrame(maps).to_csv(tmp / "attribution" / "maps.tsv", sep="\t", index=False)
        table.to_csv(tmp / "predictions.tsv", sep="\t", index=False)
        refused.to_csv(tmp / "refused.tsv", sep="\t", index=False)
        write_json(
            tmp / "metrics.json", to_json({"experiment": model_dir.info["experiment"], "refused": len(refused), **metrics})
        )
        (tmp / "report.html").write_text(report_html(model_dir.info, table, refused, metrics, tmp, maps))
    summary = f", balanced accuracy {metrics['ensemble']['balanced_accuracy']:.3f}" if metrics["labelled"] else " (unlabelled)"
    print(
        f"{len(table)} images predicted{summary}, {len(refused)} refused, "
        f"{int(table['out_of_distribution'].sum())} flagged out of distribution -> {args.out}"
    )
    return 0
