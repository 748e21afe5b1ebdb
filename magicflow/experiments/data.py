"""Assemble an experiment's images from the per-dataset slices.

An experiment names datasets, a label column, image kinds (``T1w``, ``T2w``, ``FLAIR``,
``pet-<tracer family>``) and slice offsets. Splits are made on images; slices are attached
after the split, with the extra ``augment`` offsets for training subjects only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from magicflow.datasets.tables import MISSING
from magicflow.errors import InputError


@dataclass
class SliceSet:
    """Images (N, 1, H, W) in [0, 1] and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise InputError(
                f"slice set needs images (N,1,H,W) and N labels, got {tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: np.ndarray) -> SliceSet:
        """The slices at ``rows``, in that order (identity rows renumbered)."""
        rows = np.asarray(rows, dtype=int)
        return SliceSet(self.images[rows], self.labels[rows], self.meta.iloc[rows].reset_index(drop=True))

    def joined(self, other: SliceSet) -> SliceSet:
        """This set's slices, then ``other``'s."""
        return SliceSet(
            torch.cat([self.images, other.images]),
            torch.cat([self.labels, other.labels]),
            pd.concat([self.meta, other.meta], ignore_index=True),
        )

    def image_labels(self) -> torch.Tensor:
        """One label per image, however many neighbour slices it contributes: what class priors
        count. With the diagnosis task's +/-4 offsets for AD only, an AD image gives 9 training
        slices and a CN image 1, so slice counts would put an AD share of 0.14 at 0.60."""
        if not {"dataset", "image"} <= set(self.meta.columns):
            return self.labels  # no image identity (tests, plain tensors): one slice per image
        first = ~self.meta.duplicated(["dataset", "image"]).to_numpy()
        return self.labels[torch.from_numpy(first)]

    def image_ids(self) -> np.ndarray:
        """Each slice's image as an integer 0..n_images-1 in order of first appearance (every
        slice its own image where the set has no image identity): the unit classification is
        scored on, each image's log-likelihoods summed over its slices."""
        if not {"dataset", "image"} <= set(self.meta.columns):
            return np.arange(len(self))
        keys = self.meta["dataset"].astype(str) + "\0" + self.meta["image"].astype(str)
        return pd.factorize(keys)[0]


def image_kind(table: pd.DataFrame) -> pd.Series:
    """T1w | T2w | FLAIR | pet-<family>: the unit experiments select and modality labels use."""
    pet = table["modality"] == "pet"
    return table["modality"].where(~pet, "pet-" + table["tracer"])


def experiment_slices(slice_tables: dict[str, Path], experiment: dict) -> pd.DataFrame:
    """All slices of the experiment's datasets and image kinds, with a ``label`` column.

    ``label: modality`` means the image kind (so PET tracers are separate classes);
    ``label: dataset_scanner`` is "<dataset> <scanner>", keeping one scanner model at two
    sites apart. With ``classes`` given, only those label values are kept."""
    parts = []
    for dataset, path in slice_tables.items():
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        table["dataset"] = dataset
        table["kind"] = image_kind(table)
        table["dataset_scanner"] = dataset + " " + table["scanner"] if "scanner" in table else MISSING
        column = "kind" if experiment["label"] == "modality" else experiment["label"]
        if column not in table:
            raise InputError(f"{path}: no column {experiment['label']!r} to use as the label")
        table["label"] = table[column]
        if experiment.get("source"):
            table = pair_with_source(table, experiment["source"], experiment["target"], path)
        parts.append(table[table["kind"].isin(experiment["modalities"])])
    table = pd.concat(parts, ignore_index=True)
    table = table[table["label"] != MISSING]
    if experiment.get("classes"):
        absent = sorted(set(experiment["classes"]) - set(table["label"]))
        if absent:
            raise InputError(f"classes {absent} have no slices; labels present: {sorted(table['label'].unique())}")
        table = table[table["label"].isin(experiment["classes"])]
    if table.empty:
        raise InputError(
            f"no slices of kinds {experiment['modalities']} with a {experiment['label']!r} label in {sorted(slice_tables)}"
        )
    table["offset"] = table["offset"].astype(int)
    table["index"] = table["index"].astype(int)
    if "source_index" in table:
        table["source_index"] = table["source_index"].astype(int)
    return table


def pair_with_source(table: pd.DataFrame, source: str, target: str, path: Path) -> pd.DataFrame:
    """The ``target`` slices of one dataset, each with its own subject's ``source`` slice at the
    same offset (columns ``source_image``, ``source_index``): what a translation experiment
    learns from. A T1w source is the image the target was coregistered to (the manifest's
    ``reference``); any other source is the subject's one image of that kind in the same
    session. Targets without a source slice are left out, one line each on stderr; a source
    of another subject is an InputError (it would teach the model someone else's anatomy)."""
    import sys

    kind = table["kind"]
    targets, sources = table[kind == target], table[kind == source]
    by_reference = source == "T1w" and "reference" in table
    if by_reference:
        keys = targets["reference"]
        source_keys = sources["image"]
    else:
        keys = targets["subject"] + "/" + targets["session"]
        source_keys = sources["subject"] + "/" + sources["session"]
        per_session = sources.drop_duplicates("image").assign(key=source_keys).groupby("key")["image"].nunique()
        ambiguous = sorted(per_session[per_session > 1].index)
        if ambiguous:
            raise InputError(
                f"{path}: more than one {source} image in session(s) {ambiguous[:3]}; cannot pair them with {target}"
            )
    lookup = pd.DataFrame(
        {
            "key": source_keys,
            "offset": sources["offset"],
            "source_image": sources["image"],
            "source_subject": sources["subject"],
            "source_index": sources["index"],
        }
    )
    paired = targets.assign(key=keys.to_numpy()).merge(lookup, on=["key", "offset"], how="left")
    foreign = paired[paired["source_subject"].notna() & (paired["source_subject"] != paired["subject"])]
    if not foreign.empty:
        row = foreign.iloc[0]
        raise InputError(
            f"{path}: {target} image {row['image']} (subject {row['subject']}) pairs with {row['source_image']} of subject "
            f"{row['source_subject']}; a translation pair must be one subject's"
        )
    missing = paired[paired["source_index"].isna()]
    for image in sorted(missing["image"].unique()):
        print(f"{path}: {target} image {image} left out: no {source} slice of its subject to translate from", file=sys.stderr)
    paired = paired[paired["source_index"].notna()].drop(columns=["key", "source_subject"])
    return paired.astype({"source_index": str})


def experiment_images(slices: pd.DataFrame) -> pd.DataFrame:
    """One row per image (what splits are made of)."""
    return slices.drop_duplicates(["dataset", "image"])[["dataset", "subject", "session", "image", "label"]].reset_index(
        drop=True
    )


def select_slices(
    slices: pd.DataFrame, images: pd.DataFrame, offsets: list[int], augment: dict[str, list[int]] | None = None
) -> pd.DataFrame:
    """Slices of these images at these offsets, plus each class's augment offsets (training only)."""
    chosen = slices.merge(images[["dataset", "image"]], on=["dataset", "image"])
    wanted = chosen["offset"].isin(offsets)
    for label, extra in (augment or {}).items():
        wanted |= (chosen["label"] == label) & chosen["offset"].isin(extra)
    out = chosen[wanted]
    missing = set(offsets) - set(out["offset"])
    if missing and not out.empty:
        raise InputError(f"offsets {sorted(missing)} were not extracted; add them to the slices stage")
    return out.sort_values(["dataset", "image", "offset"]).reset_index(drop=True)


def load_set(rows: pd.DataFrame, arrays: dict[str, np.ndarray], classes: list[str]) -> SliceSet:
    """Images and label indices for the selected slice rows."""
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(rows["label"]) - set(lookup))
    if unknown:
        raise InputError(f"labels {unknown} not among the experiment's classes {classes}")
    if len(rows) and "source_index" in rows:  # a translation pair: channel 0 the source, channel 1 the target
        images = np.stack(
            [
                np.concatenate([arrays[d][s], arrays[d][i]])
                for d, s, i in zip(rows["dataset"], rows["source_index"], rows["index"])
            ]
        )
    elif len(rows):
        images = np.stack([arrays[d][i] for d, i in zip(rows["dataset"], rows["index"])])
    else:
        channels = 2 if "source_index" in rows else 1
        images = np.zeros((0, channels, *next(iter(arrays.values())).shape[2:]), np.float32)
    labels = torch.tensor([lookup[v] for v in rows["label"]], dtype=torch.long)
    return SliceSet(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), labels, rows.reset_index(drop=True))
