"""``magicflow synthesise``: a labelled synthetic dataset from a trained generation experiment.

Each run fold's model draws its share of ``per_class`` slices per class at ``temperature``. Every
sample is checked for memorisation against the training slices of the model that drew it: its
pixel distance to the nearest one. A sample nearer to a training slice than the
``withhold_quantile`` quantile of the same distance for real held-out slices (the fold's test
subjects, whom the model never saw) is closer than unseen real anatomy usually comes: it is
withheld, counted and listed, never written. Output, a BIDS-like derivative:

- ``dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy`` magicflow);
- ``synthetic.tsv``: per sample its class, generating fold, temperature, distance to the nearest
  training slice (and which), the fold's threshold and whether it was withheld;
- ``slices/``: one NIfTI per kept sample, placed on FSL's MNI 1 mm grid at the central coronal
  slice (``sample-<n>_class-<class>_fold-<k>_desc-synthetic.nii.gz``);
- ``synthetic.npz``: the kept samples at the model's size with their labels, for training on them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from magicflow import __version__
from magicflow.errors import InputError
from magicflow.io import atomic_dir

SYNTHETIC_TSV = "synthetic.tsv"
SYNTHETIC_NPZ = "synthetic.npz"


def shares(total: int, parts: int) -> list[int]:
    """``total`` split over ``parts`` as evenly as whole numbers allow, the first ones larger."""
    return [total // parts + (k < total % parts) for k in range(parts)]


def withhold_threshold(train: np.ndarray, heldout: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of real held-out slices' distances to their nearest training slice."""
    from magicflow.evaluate.generation import nearest_rows

    if len(heldout) == 0:
        raise InputError("no held-out slices to set the memorisation threshold with")
    _, distance = nearest_rows(heldout.reshape(len(heldout), -1), train.reshape(len(train), -1))
    return float(np.quantile(distance, quantile))


def dataset_description(experiment: str) -> dict:
    return {
        "Name": f"MAGIC-Flow synthetic slices of {experiment}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "magicflow", "Version": __version__, "Description": "magicflow synthesise"}],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magicflow.experiments.commands import add_experiment_inputs

    add_experiment_inputs(parser)
    parser.add_argument("--folds", required=True, type=Path, help="results/<experiment>/splits/folds")
    parser.add_argument("--model", action="append", default=[], metavar="FOLD=PT", help="a fold's best.pt (repeat per fold)")
    parser.add_argument("--per-class", type=int, default=32, help="slices per class, over all folds' models")
    parser.add_argument("--temperature", type=float, default=0.7, help="latent temperature")
    parser.add_argument(
        "--withhold-quantile",
        type=float,
        default=0.05,
        help="withhold samples nearer a training slice than this quantile of real held-out ones",
    )
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/synthetic (replaced only when complete)")


def run(args: argparse.Namespace) -> int:
    from magicflow.evaluate.generation import nearest_rows
    from magicflow.experiments.commands import fold_sets, load_inputs, parse_pairs
    from magicflow.experiments.infer import draw_samples, slice_to_nifti
    from magicflow.experiments.train import resolve_device
    from magicflow.flow import load_checkpoint
    from magicflow.view import View

    if args.per_class < 1 or args.temperature <= 0 or not 0 <= args.withhold_quantile <= 1:
        raise InputError("need --per-class >= 1, --temperature > 0 and --withhold-quantile in [0, 1]")
    settings, slices, arrays, _ = load_inputs(args)
    if settings["model"] != "generation":
        raise InputError(f"{args.experiment}: synthesise needs a generation experiment, not {settings['model']!r}")
    models = parse_pairs(args.model, "model")
    if not models:
        raise InputError("no --model FOLD=PT given")
    device = resolve_device(settings["training"]["device"])
    rows, kept, classes = [], [], []
    for fold, count in zip(sorted(models), shares(args.per_class, len(models))):
        if count == 0:
            continue
        model, extra = load_checkpoint(models[fold], map_location=device)
        args.fold_dir = args.folds / fold
        classes, sets = fold_sets(args, settings, slices, arrays)
        train, test = sets["train"].images.numpy(), sets["test"].images.numpy()
        threshold = withhold_threshold(train, test, args.withhold_quantile)
        seed = settings["seed"] + int(fold.rpartition("-")[2])
        drawn = draw_samples(model, classes, count, args.temperature, seed, device)  # (K, count, 1, S, S)
        flat = drawn.reshape(-1, *drawn.shape[2:])
        nearest, distance = nearest_rows(flat.reshape(len(flat), -1), train.reshape(len(train), -1))
        view = View.from_record(extra.get("view"), model.image_size)
        for i, image in enumerate(flat):
            k = i // count
            withheld = bool(distance[i] < threshold)
            rows.append(
                {
                    "sample": len(rows) + 1,
                    "class": classes[k],
                    "fold": fold,
                    "temperature": args.temperature,
                    "d_train": float(distance[i]),
                    "nearest_train_image": sets["train"].meta["image"].iloc[nearest[i]],
                    "threshold": threshold,
                    "withheld": withheld,
                }
            )
            if not withheld:
                kept.append((rows[-1], image, view))
        print(
            f"{fold}: {len(flat)} samples, threshold {threshold:.3f}, {sum(r['withheld'] for r in rows[-len(flat) :])} withheld"
        )
    table = pd.DataFrame(rows)
    with atomic_dir(args.out) as tmp:
        (tmp / "slices").mkdir()
        (tmp / "dataset_description.json").write_text(json.dumps(dataset_description(settings["name"]), indent=2) + "\n")
        table.to_csv(tmp / SYNTHETIC_TSV, sep="\t", index=False)
        for row, image, view in kept:
            safe = "".join(ch if ch.isalnum() else "" for ch in row["class"])
            name = f"sample-{row['sample']:04d}_class-{safe}_{row['fold']}_desc-synthetic.nii.gz"
            nib.save(slice_to_nifti(image[0], view=view), tmp / "slices" / name)
        with open(tmp / SYNTHETIC_NPZ, "wb") as handle:
            np.savez_compressed(
                handle,
                samples=np.stack([image for _, image, _ in kept]).astype(np.float32)
                if kept
                else np.zeros((0, 1, 1, 1), np.float32),
                labels=np.array([row["class"] for row, _, _ in kept], dtype=str),
                folds=np.array([row["fold"] for row, _, _ in kept], dtype=str),
                classes=np.array(classes, dtype=str),
            )
    print(
        f"{settings['name']}: {len(kept)} of {len(table)} synthetic slices kept ({int(table['withheld'].sum())} withheld) -> {args.out}"
    )
    return 0
