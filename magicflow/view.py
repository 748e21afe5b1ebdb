"""How an experiment sees the (1, 182, 182) slices: area-resized to ``image_size``, or a crop.

Resizing keeps the whole slice but averages away the native 1 mm texture (noise, blur) that
tells scanners apart; a crop keeps that texture over part of the slice (ClinicaDL's ROI mode).
Every stage that touches pixels (training and evaluation data, the brain mask, the attribution
ground truth, NIfTI outputs, overlays) goes through one :class:`View`, so they cannot disagree.

A crop box is fixed per experiment: centred either on the brain mask's centre of mass in the
slice plane (``centre: brain``; the template mask at offset 0, so the same box for every image)
or on an MNI coordinate ``[x, z]`` in mm on the coronal plane. Slice geometry
(:mod:`magicflow.slices`): row ``r`` is z = 109 - r mm, column ``c`` is x = 90 - c mm.
The box of side ``s`` starts at ``floor(centre - (s - 1) / 2 + 0.5)`` in rows and columns, so an
even side centred on a pixel edge is exact and a tie rounds up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from magicflow.errors import InputError

SIDE = 182  # magicflow.slices.SLICE_SIDE (not imported: the view sits below the slices)
#: pixel of MNI (x, z) = (0, 0) mm on the coronal slice: FSL's 1 mm grid, rows superior first
ORIGIN_ROW, ORIGIN_COL = 109, 90


def mm_to_pixel(x_mm: float, z_mm: float) -> tuple[float, float]:
    """(row, column) on the (182, 182) coronal slice of MNI (x, z) in mm."""
    return ORIGIN_ROW - z_mm, ORIGIN_COL - x_mm


def pixel_to_mm(row: float, col: float) -> tuple[float, float]:
    """MNI (x, z) in mm of a (row, column) on the coronal slice."""
    return ORIGIN_COL - col, ORIGIN_ROW - row


def crop_box(size: int, centre: tuple[float, float], what: str) -> tuple[int, int]:
    """(top, left) of the ``size`` box centred on (row, column) ``centre``; a box reaching
    outside the slice is refused naming ``what`` (the config key or the centre's origin)."""
    if not 1 <= size <= SIDE:
        raise InputError(f"{what}: crop size {size} must lie between 1 and the slice's side {SIDE}")
    top, left = (math.floor(c - (size - 1) / 2 + 0.5) for c in centre)
    if top < 0 or left < 0 or top + size > SIDE or left + size > SIDE:
        x, z = pixel_to_mm(*centre)
        raise InputError(
            f"{what}: a {size} x {size} crop centred at x = {x:g}, z = {z:g} mm (row {centre[0]:g}, column {centre[1]:g}) "
            f"covers rows {top}..{top + size - 1}, columns {left}..{left + size - 1}, outside the {SIDE} x {SIDE} slice; "
            "move the centre or shrink the crop"
        )
    return top, left


def resize_slices(images: np.ndarray, size: int) -> np.ndarray:
    """(N, C, 182, 182) slices area-averaged to (N, C, size, size): each output pixel is the mean
    of the input pixels it covers, so shrinking never aliases and mean intensity is kept.
    Larger sizes are refused: the slices hold no detail beyond the 1 mm grid."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"slices: expected (N, C, H, W), got shape {x.shape}")
    if size == x.shape[-1] and size == x.shape[-2]:
        return x
    if not 1 <= size <= min(x.shape[-2:]):
        raise InputError(f"image_size {size}: must lie between 1 and the slices' side {min(x.shape[-2:])}")
    if len(x) == 0:
        return np.zeros((0, x.shape[1], size, size), np.float32)
    return F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(size, size), mode="area").numpy()


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A (C, H, W) 0/1 mask at ``size``: a pixel is inside when at least half the area it covers is."""
    coverage = resize_slices(np.asarray(mask, dtype=np.float32)[None], size)[0]
    return (coverage >= 0.5).astype(np.uint8)


def upsample_plane(plane: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A (h, w) plane bilinearly enlarged to (side, side), for display on the 1 mm grid."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(plane, dtype=np.float32)
    if x.shape == (side, side):
        return x
    return F.interpolate(
        torch.from_numpy(np.ascontiguousarray(x))[None, None], size=(side, side), mode="bilinear", align_corners=False
    )[0, 0].numpy()


@dataclass(frozen=True)
class View:
    """The experiment's image geometry: ``size`` (the side the model sees) and, for a crop, the
    box's ``top``/``left`` pixel on the 182 x 182 slice and the ``centre`` as configured."""

    size: int
    top: int | None = None
    left: int | None = None
    centre: str | list[float] | None = None

    @property
    def is_crop(self) -> bool:
        return self.top is not None

    def images(self, x: np.ndarray) -> np.ndarray:
        """(N, C, 182, 182) slices as the model sees them: (N, C, size, size) float32."""

        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[-2:] != (SIDE, SIDE):
            raise InputError(f"slices: expected (N, C, {SIDE}, {SIDE}), got shape {x.shape}")
        if not self.is_crop:
            return resize_slices(x, self.size)
        return np.ascontiguousarray(x[..., self.top : self.top + self.size, self.left : self.left + self.size])

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """A (..., 182, 182) 0/1 mask (brain, planted truth, tissue) at the view, as uint8: the
        same pixels for a crop; for resizing, a pixel is inside when half its area is."""
        m = np.asarray(mask)
        flat = m.reshape(-1, 1, SIDE, SIDE).astype(np.float32)
        if self.is_crop:
            out = self.images(flat) >= 0.5
        else:
            out = np.stack([resize_mask(plane, self.size) for plane in flat]) if len(flat) else self.images(flat) > 0
        return out.reshape(*m.shape[:-2], self.size, self.size).astype(np.uint8)

    def on_grid(self, plane: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """A (size, size) plane put back on the (182, 182) slice, for NIfTI files on the MNI grid:
        a crop at its box (``fill`` elsewhere), a resized plane enlarged bilinearly."""

        p = np.asarray(plane, dtype=np.float32)
        if not self.is_crop:
            return upsample_plane(p)
        out = np.full((SIDE, SIDE), fill, np.float32)
        out[self.top : self.top + self.size, self.left : self.left + self.size] = p
        return out

    def for_display(self, plane: np.ndarray) -> np.ndarray:
        """A plane as overlays show it: resized planes enlarged to the 1 mm grid so every report
        looks alike; a crop is already at 1 mm and is shown as it is."""

        return np.asarray(plane, dtype=np.float32) if self.is_crop else upsample_plane(plane)

    def record(self) -> dict[str, Any]:
        """JSON for experiment outputs (checkpoints, metrics.json): enough to rebuild the view."""
        if not self.is_crop:
            return {"mode": "resize", "size": self.size}
        x, z = pixel_to_mm(self.top + (self.size - 1) / 2, self.left + (self.size - 1) / 2)
        return {
            "mode": "crop",
            "size": self.size,
            "top": self.top,
            "left": self.left,
            "rows": [self.top, self.top + self.size - 1],
            "columns": [self.left, self.left + self.size - 1],
            "centre": self.centre,
            "centre_mm": [x, z],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any] | None, size: int = SIDE) -> View:
        """The view of :meth:`record`; None (outputs written before crops existed) is resizing to ``size``."""
        if not record or record.get("mode", "resize") == "resize":
            return cls(int(record["size"]) if record else int(size))
        return cls(int(record["size"]), int(record["top"]), int(record["left"]), record.get("centre"))


def crop_setting(experiment: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The experiment's ``crop`` checked against ``image_size`` and the slice, as far as the
    config alone can (a ``brain`` centre needs the template mask: :func:`resolve_view`)."""
    crop = experiment.get("crop")
    if crop is None:
        return None
    if "image_size" in experiment:
        raise InputError(
            f"{key}': image_size ({experiment['image_size']}) and crop are exclusive: the model sees either the "
            "area-resized slice or a crop at 1 mm; remove one"
        )
    centre = crop.get("centre", "brain")
    if centre != "brain":
        crop_box(int(crop["size"]), mm_to_pixel(*centre), f"{key}.crop.centre'")
    return {"size": int(crop["size"]), "centre": centre}


def resolve_view(settings: dict[str, Any], brain: np.ndarray, source: str = "brain mask") -> View:
    """The view of resolved experiment settings (``image_size``, ``crop``) on the (1, 182, 182)
    template brain mask ``brain`` (named ``source`` in errors), whose centre of mass places a
    ``centre: brain`` crop."""
    crop = settings.get("crop")
    if not crop:
        return View(int(settings.get("image_size", SIDE)))
    size, centre = int(crop["size"]), crop.get("centre", "brain")
    what = f"experiment {settings.get('name', '?')!r} crop"
    if centre == "brain":
        rows, cols = np.nonzero(np.asarray(brain).reshape(-1, SIDE, SIDE).max(axis=0) > 0)
        if not len(rows):
            raise InputError(f"{source}: empty brain mask, no centre of mass to centre the crop on")
        top, left = crop_box(size, (float(rows.mean()), float(cols.mean())), f"{what} (centred on the brain of {source})")
    else:
        top, left = crop_box(size, mm_to_pixel(*centre), f"{what}.centre")
    return View(size, top, left, centre)


def read_mask(path: Path) -> np.ndarray:
    """The (1, 182, 182) template brain mask stored in a dataset's slices.npz (offset 0's, else the first)."""
    with np.load(path) as archive:
        keys = [k for k in archive.files if k.startswith("mask_")]
        if not keys:
            raise InputError(f"{path}: no mask_<offset> array; rerun the slices stage")
        return archive["mask_0" if "mask_0" in keys else keys[0]]


def crop_png(view: View, brain: np.ndarray, path: Path) -> None:
    """The crop's box drawn on the (1, 182, 182) template brain mask slice, for the report."""
    from matplotlib.patches import Rectangle

    from magicflow.io import atomic_path
    from magicflow.plotting import pyplot

    if not view.is_crop:
        raise InputError("crop_png: the experiment resizes its slices; there is no crop box to draw")
    plt = pyplot()
    record = view.record()
    fig, ax = plt.subplots(figsize=(3.6, 3.8))
    ax.imshow(np.asarray(brain).reshape(-1, SIDE, SIDE)[0], cmap="gray", vmin=0, vmax=1.6)
    # pixel centres are integers, so a box of pixels top..top+size-1 spans top-0.5..top+size-0.5
    ax.add_patch(Rectangle((view.left - 0.5, view.top - 0.5), view.size, view.size, fill=False, edgecolor="C3", linewidth=1.5))
    x, z = record["centre_mm"]
    ax.set_title(f"{view.size} x {view.size} crop at 1 mm\ncentre x = {x:g}, z = {z:g} mm", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def describe(record: dict[str, Any] | None, size: int = SIDE) -> str:
    """One phrase for reports: the images' size and how they were cut from the 182 x 182 slices."""
    view = View.from_record(record, size)
    if not view.is_crop:
        return f"{view.size} x {view.size}" + (f" (area-averaged from the {SIDE} x {SIDE} slices)" if view.size != SIDE else "")
    r = view.record()
    where = "the template brain's centre of mass" if view.centre == "brain" else "the configured MNI point"
    return (
        f"{view.size} x {view.size} crop at native 1 mm (rows {r['rows'][0]}-{r['rows'][1]}, columns "
        f"{r['columns'][0]}-{r['columns'][1]} of the {SIDE} x {SIDE} slice; centre x = {r['centre_mm'][0]:g}, "
        f"z = {r['centre_mm'][1]:g} mm, {where})"
    )
