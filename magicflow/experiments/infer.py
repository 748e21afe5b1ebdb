"""What a trained model is used for: sampling, classification and attribution maps.

Figures are written next to the arrays: a sample grid per class, and attribution maps
overlaid on the slice (diverging colours, low likelihood blue, high red, as in the paper's
Figure 2). Samples are also written as NIfTI slabs placed back on the MNI grid, so viewers
show them over the template."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from magicflow.experiments.data import SliceSet
from magicflow.experiments.posterior import (
    fit_temperature,
    image_index,
    labels_by_image,
    log_priors,
    posteriors,
    sum_by_image,
)
from magicflow.view import View
from magicflow.flow import MagicFlow
from magicflow.io import atomic_path
from magicflow.plotting import pyplot
from magicflow.preprocess.template import GRID_1MM_AFFINE
from magicflow.slices import CENTRAL_INDEX


def slice_to_nifti(plane: np.ndarray, offset: int = 0, view: View | None = None) -> nib.Nifti1Image:
    """A coronal plane (superior at row 0, subject's right at column 0) as a one-slice NIfTI
    on FSL's MNI 1 mm grid at y index 109 + offset: the inverse of slicing. The plane is put
    back on the 182 x 182 slice by its ``view`` (a crop at its box, zeros around it; a resized
    plane enlarged; None: resized), so viewers show it over the template."""
    view = view or View(int(np.shape(plane)[-1]))
    slab = np.ascontiguousarray(view.on_grid(plane)[::-1].T[:, None, :], dtype=np.float32)
    affine = GRID_1MM_AFFINE.copy()
    affine[:3, 3] += GRID_1MM_AFFINE[:3, 1] * (CENTRAL_INDEX + offset)
    return nib.Nifti1Image(slab, affine)


@torch.no_grad()
def draw_samples(
    model: MagicFlow, classes: list[str], per_class: int, temperature: float, seed: int, device: torch.device, batch: int = 16
) -> np.ndarray:
    """(K, per_class, 1, S, S) samples at the model's image size, clipped to [0, 1]; deterministic given the seed."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for k in range(len(classes)):
        images = []
        for start in range(0, per_class, batch):
            n = min(batch, per_class - start)
            y = torch.full((n,), k, dtype=torch.long, device=device)
            images.append(model.sample(y, temperature=temperature, generator=generator).cpu())
        out.append(torch.cat(images).clamp(0, 1).numpy())
    return np.stack(out)


def write_samples(
    samples: np.ndarray,
    classes: list[str],
    out_dir: Path,
    nifti_per_class: int = 2,
    seconds: float = float("nan"),
    device: str = "",
    view: View | None = None,
) -> None:
    """samples.npz (with the sampling time, for the efficiency table), a grid PNG per class
    and a few NIfTI files per class, placed on the MNI grid by ``view`` (None: resized)."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "samples.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                samples=samples.astype(np.float32),
                classes=np.array(classes),
                seconds=np.float64(seconds),
                device=np.array(device),
            )
    for k, name in enumerate(classes):
        safe = "".join(ch if ch.isalnum() else "-" for ch in name)
        n = samples.shape[1]
        cols = min(n, 8)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.4), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for i in range(n):
            axes.flat[i].imshow(samples[k, i, 0], cmap="gray", vmin=0, vmax=1)
        fig.suptitle(f"samples of class {name}")
        with atomic_path(out_dir / f"samples_{safe}.png") as tmp:
            fig.savefig(tmp, dpi=90)
        plt.close(fig)
        for i in range(min(nifti_per_class, n)):
            with atomic_path(out_dir / f"sample_{safe}_{i}.nii.gz") as tmp:
                nib.save(slice_to_nifti(samples[k, i, 0], view=view), tmp)


@torch.no_grad()
def class_log_likelihoods(model: MagicFlow, data: SliceSet, device: torch.device, batch: int = 8) -> np.ndarray:
    """(N, K) log p(x | y=k) in nats at the centre of each value's dequantisation bin
    (:meth:`MagicFlow.bin_centre`), all labels in one batched pass per chunk."""
    model.eval()
    out = [
        model.class_log_likelihoods(model.bin_centre(data.images[s : s + batch].to(device))).cpu()
        for s in range(0, len(data), batch)
    ]
    return torch.cat(out).double().numpy() if out else np.zeros((0, model.num_classes))


def predictions_table(
    test: SliceSet, val: SliceSet, train: SliceSet, classes: list[str], test_ll: np.ndarray, val_ll: np.ndarray
) -> tuple[pd.DataFrame, float]:
    """Per test slice: log-likelihood, log prior and posterior per class, predicted and true label.

    Priors count one row per training image (:meth:`SliceSet.image_labels`), as in training's
    model selection. The temperature is fitted on the validation images, each image's
    log-likelihoods summed over its evaluation slices with the prior added once (the unit
    evaluation scores), by the smoothed fit of :func:`fit_temperature`: the validation set
    also selected the checkpoint, and a plain fit to a set it separates gives T -> 0."""
    prior = log_priors(train.image_labels().numpy(), len(classes))
    temperature = 1.0
    if len(val):
        index = image_index(val.meta, len(val))
        labels = labels_by_image(val.labels.numpy(), index, "validation slices")
        temperature = fit_temperature(sum_by_image(val_ll, index), prior, labels)
    post = posteriors(test_ll, prior, temperature)
    table = predictions_frame(test, classes, test_ll, post, (test_ll + prior).argmax(1), temperature, log_prior=prior)
    return table, temperature


def predictions_frame(
    test: SliceSet,
    classes: list[str],
    scores: np.ndarray,
    post: np.ndarray,
    predicted: np.ndarray,
    temperature: float,
    log_prior: np.ndarray | None = None,
) -> pd.DataFrame:
    """The predictions.tsv columns every classifier writes (the flow and the baselines), so one
    evaluation reads them all: the slice's identity, ``loglik_<class>`` (``scores``: the
    flow's log p(x|y), a baseline's log-softmax), ``logprior_<class>`` (``log_prior``, added
    once per image; 0 for a baseline, whose log-softmax holds its prior), this slice's own
    ``posterior_<class>`` and ``predicted`` label, the true label and the fitted temperature.
    Evaluation scores images from the loglik and logprior columns alone
    (:func:`magicflow.evaluate.inputs.image_scores`); the posterior and predicted columns are
    the per-slice view (attribution maps the slice's predicted label). The flow's temperature
    is fitted on images, so with several evaluation slices per image a slice's posterior is
    flatter than its image's."""
    table = test.meta[["dataset", "subject", "session", "image", "offset"]].copy()
    prior = np.zeros(len(classes)) if log_prior is None else np.asarray(log_prior, dtype=np.float64)
    for k, name in enumerate(classes):
        table[f"loglik_{name}"] = scores[:, k]
    for k, name in enumerate(classes):
        table[f"logprior_{name}"] = prior[k]
    for k, name in enumerate(classes):
        table[f"posterior_{name}"] = post[:, k]
    table["true"] = [classes[i] for i in test.labels.tolist()]
    table["predicted"] = [classes[i] for i in predicted]
    table["temperature"] = temperature
    return table


def write_predictions(table: pd.DataFrame, path: Path) -> None:
    """predictions.tsv at full precision: pandas writes each float as its shortest exact repr,
    so log-likelihoods thousands of nats large keep their decimals and posteriors near 1 are
    not rounded to 1 (``%.6g`` did both, and evaluation ranked the rounded values)."""
    table.to_csv(path, sep="\t", index=False)


def attribution_maps(model: MagicFlow, data: SliceSet, labels: torch.Tensor, device: torch.device, batch: int = 8) -> np.ndarray:
    """(N, 1, S, S) likelihood attribution maps H(x, y) at the model's image size; each sums to
    log p(x | y) at the same point :func:`class_log_likelihoods` scores (the bins' centres)."""
    model.eval()
    maps = []
    with torch.no_grad():
        for s in range(0, len(data), batch):
            x = model.bin_centre(data.images[s : s + batch].to(device))
            maps.append(model.attribution(x, labels[s : s + batch].to(device)).cpu())
    return torch.cat(maps).numpy() if maps else np.zeros((0, 1, model.image_size, model.image_size), np.float32)


def overlay_png(
    path: Path, image: np.ndarray, maps: dict[str, np.ndarray], mask: np.ndarray, title: str, view: View | None = None
) -> None:
    """The slice, then each attribution map over it: blue = low likelihood, red = high.

    Colours are centred on the map's median inside the brain and clipped at its 2nd/98th
    percentiles, so one extreme pixel does not wash out the rest."""
    plt = pyplot()
    from matplotlib.colors import TwoSlopeNorm

    # resized experiments are shown enlarged to the 1 mm grid, so every report looks alike; crops are at 1 mm already
    view = view or View(int(np.shape(image)[-1]))
    image, mask = view.for_display(image), view.for_display(mask) >= 0.5
    maps = {name: view.for_display(h) for name, h in maps.items()}

    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(3.2 * (1 + len(maps)), 3.6))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image", fontsize=9)
    inside = mask > 0
    for ax, (name, h) in zip(axes[1:], maps.items()):
        values = h[inside] if inside.any() else h.ravel()
        lo, mid, hi = np.percentile(values, [2, 50, 98])
        norm = TwoSlopeNorm(vmin=min(lo, mid - 1e-6), vcenter=mid, vmax=max(hi, mid + 1e-6))
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        shown = ax.imshow(np.ma.masked_where(~inside, h), cmap="RdBu_r", norm=norm, alpha=0.75)
        ax.set_title(name, fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="nats per pixel")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
