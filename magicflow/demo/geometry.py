"""Where each demo subject's head sits and how its anatomy differs from the template.

A subject is the template anatomy pushed through ``u -> u + d(u)`` (a smooth nonlinear
warp defined in template mm) and then placed in scanner space by a pose ``P`` (scaling,
rotation, translation). A native image voxel ``v`` with scanner-world position
``w = A v`` therefore shows the template point ``m = u + d(u)`` with ``u = P^-1 w``.
All coordinates are RAS millimetres."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

WARP_SPACING_MM = 4.0


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    """3x3 rotation from angles about x, y, z (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid(rng: np.random.Generator, max_deg: float, max_mm: float) -> np.ndarray:
    """Random 4x4 rigid transform (uniform angles and shifts within the bounds)."""
    out = np.eye(4)
    out[:3, :3] = rotation(rng.uniform(-max_deg, max_deg, 3))
    out[:3, 3] = rng.uniform(-max_mm, max_mm, 3)
    return out


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """Template mm -> scanner world mm: per-axis scaling, then a rigid placement."""
    scale = np.diag([*rng.uniform(0.92, 1.08, 3), 1.0])
    return rigid(rng, 8.0, 10.0) @ scale


@dataclass(frozen=True)
class Warp:
    """Smooth displacement field d(u) sampled every WARP_SPACING_MM over template space."""

    field: np.ndarray  # (3, X, Y, Z) mm
    affine: np.ndarray  # voxel -> template mm of the field's grid

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Displacement (3, N) at template points (3, N); zero outside the field."""
        ijk = _apply(np.linalg.inv(self.affine), points)
        return np.stack([ndimage.map_coordinates(c, ijk, order=1, prefilter=False) for c in self.field])


def random_warp(rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray, rms_mm: float) -> Warp:
    """A smooth random warp over the field of view of (shape, affine), RMS magnitude rms_mm."""
    extent = np.abs(affine[:3, :3]).diagonal() * np.array(shape)
    grid_shape = tuple(int(n) for n in np.ceil(extent / WARP_SPACING_MM) + 1)
    field = rng.standard_normal((3, *grid_shape))
    field = np.stack([ndimage.gaussian_filter(c, 12.0 / WARP_SPACING_MM, mode="nearest") for c in field])
    field *= rms_mm / np.sqrt((field**2).sum(axis=0).mean())
    grid_affine = np.diag([WARP_SPACING_MM] * 3 + [1.0])
    grid_affine[:3, 3] = np.minimum(affine[:3, 3], affine[:3, 3] + affine[:3, :3] @ (np.array(shape) - 1))
    return Warp(field.astype(np.float32), grid_affine)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    m = matrix.astype(np.float32)
    return m[:3, :3] @ points.astype(np.float32, copy=False) + m[:3, 3:4]


def grid_points(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (3, N) of every voxel of a grid, in C order."""
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return _apply(affine, ijk)


def native_grid(
    rng: np.random.Generator,
    pose: np.ndarray,
    voxel_mm: tuple[float, float, float],
    orientation: str,
    fov_mm: tuple[float, float, float],
    centre_mm: tuple[float, float, float] = (0.0, -18.0, 10.0),
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of a scanner grid around the head placed by ``pose``.

    The field of view is centred on the head (with a random shift of a few mm) and is
    larger than the head, leaving a non-brain margin; ``LAS`` stores x right-to-left."""
    voxel = np.asarray(voxel_mm, dtype=float)
    shape = tuple(int(n) for n in np.ceil(np.asarray(fov_mm) / voxel))
    centre = _apply(pose, np.asarray(centre_mm, dtype=np.float32)[:, None])[:, 0] + rng.uniform(-5, 5, 3)
    flip = np.array([-1.0 if orientation == "LAS" else 1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(voxel * flip)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return shape, affine


def template_coordinates(world: np.ndarray, pose: np.ndarray, warp: Warp) -> np.ndarray:
    """Template mm (3, N) shown at scanner-world points (3, N)."""
    u = _apply(np.linalg.inv(pose), world)
    return u + warp(u)


def sample(volume: np.ndarray, volume_affine: np.ndarray, template_mm: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear sample of a template-space volume at template mm points, reshaped to ``shape``."""
    ijk = _apply(np.linalg.inv(volume_affine), template_mm)
    return ndimage.map_coordinates(volume, ijk, order=1, prefilter=False, cval=0.0).reshape(shape)


def inverse_points(template_mm: np.ndarray, pose: np.ndarray, warp: Warp, iterations: int = 5) -> np.ndarray:
    """Scanner-world points (3, N) whose anatomy sits at the given template points.

    Solves ``u + d(u) = m`` by fixed-point iteration (a contraction: the warp is smooth
    with gradients far below 1), then places ``u`` with the pose."""
    u = template_mm.copy()
    for _ in range(iterations):
        u = template_mm - warp(u)
    return _apply(pose, u)
