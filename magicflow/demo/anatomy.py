"""Template-space anatomy the demo subjects are drawn from.

nilearn's bundled ICBM 2009a template is skull-stripped, so the head around the brain
(CSF rim, skull, scalp) is synthesised as shells at set distances from the brain mask:
registration then faces a real non-brain margin. Each modality is a contrast model over
the same tissue maps, computed once per cohort in the padded template grid."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: name of the template space the demo's anatomy and ground truth live in
TEMPLATE_SPACE = "MNI152NLin2009aSym"

PAD_VOXELS = 18  # room for the synthetic scalp around the template's tight field of view

# AD-specific tau uptake regions: ellipsoids in MNI mm (centre, radii), both hemispheres
AD_REGIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "temporal_left": ((-48.0, -22.0, -16.0), (16.0, 30.0, 16.0)),
    "temporal_right": ((48.0, -22.0, -16.0), (16.0, 30.0, 16.0)),
    "parietal_left": ((-36.0, -60.0, 40.0), (20.0, 20.0, 18.0)),
    "parietal_right": ((36.0, -60.0, 40.0), (20.0, 20.0, 18.0)),
}

# Off-target tau binding of a normal brain (flortaucipir binds in striatum and thalamus
# whatever the diagnosis): ellipsoids in MNI mm (centre, radii), both hemispheres. With
# white matter binding a little more than grey matter (as flortaucipir's does), these keep
# the AD regions from being the brightest place on a tau slice.
TAU_OFF_TARGET: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "thalamus_left": ((-11.0, -18.0, 6.0), (8.0, 11.0, 8.0)),
    "thalamus_right": ((11.0, -18.0, 6.0), (8.0, 11.0, 8.0)),
    "putamen_left": ((-25.0, 2.0, 0.0), (7.0, 16.0, 9.0)),
    "putamen_right": ((25.0, 2.0, 0.0), (7.0, 16.0, 9.0)),
}
#: normal tau uptake: grey matter, white matter, CSF, off-target regions (added)
TAU_BASE = {"gm": 0.20, "wm": 0.23, "csf": 0.03, "off_target": 0.12}

# tissue contrasts (relative intensities) for the shells outside the brain
_SHELLS_MM = {"csf_rim": (0.0, 2.5), "skull": (2.5, 7.0), "scalp": (7.0, 12.0)}
_MR_CONTRAST = {  # csf, gm, wm, csf_rim, skull, scalp
    "T2w": (0.95, 0.55, 0.35, 0.95, 0.04, 0.55),
    "FLAIR": (0.08, 0.70, 0.50, 0.08, 0.04, 0.60),
}
_T1_SHELLS = (0.15, 0.04, 0.85)  # csf_rim, skull, scalp (fat is bright on T1)


@dataclass(frozen=True)
class TemplateAnatomy:
    """Padded template-space maps, all float32 on one 1 mm grid with ``affine``."""

    affine: np.ndarray  # padded grid
    mr: dict[str, np.ndarray]  # modality -> contrast volume in [0, 1]
    pet_base: dict[str, np.ndarray]  # tracer family -> uptake of a cognitively normal subject
    grey_matter: np.ndarray
    ad_regions: dict[str, np.ndarray]  # region -> grey-matter-weighted soft region map
    brain_mask: np.ndarray
    unpadded_shape: tuple[int, int, int]
    unpadded_affine: np.ndarray


def _ellipsoid(shape: tuple[int, ...], affine: np.ndarray, centre, radii) -> np.ndarray:
    """Boolean ellipsoid on an axis-aligned grid, built from per-axis distances by broadcasting."""
    axes = [affine[a, a] * np.arange(shape[a], dtype=np.float32) + affine[a, 3] for a in range(3)]
    r2 = [((axes[a] - centre[a]) / radii[a]) ** 2 for a in range(3)]
    return (r2[0][:, None, None] + r2[1][None, :, None] + r2[2][None, None, :]) <= 1.0


def _smooth_in_box(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed copy of a compact mask, filtering only its bounding box (plus margin)."""
    out = np.zeros(mask.shape, dtype=np.float32)
    idx = np.nonzero(mask)
    margin = int(4 * sigma) + 1
    box = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in idx)
    out[box] = ndimage.gaussian_filter(mask[box].astype(np.float32), sigma)
    return out


@functools.lru_cache(maxsize=1)
def load_template_anatomy() -> TemplateAnatomy:
    """Build the demo's template anatomy from nilearn's bundled maps (no download)."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    unpadded_affine = t1_img.affine.copy()
    unpadded_shape = t1_img.shape

    def padded(img) -> np.ndarray:
        return np.pad(np.asarray(img.get_fdata(), dtype=np.float32), PAD_VOXELS)

    t1 = padded(t1_img)
    gm = padded(datasets.load_mni152_gm_template(resolution=1))
    wm = padded(datasets.load_mni152_wm_template(resolution=1))
    mask = padded(datasets.load_mni152_brain_mask(resolution=1)) > 0.5
    affine = unpadded_affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, PAD_VOXELS)

    gm *= mask
    wm *= mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0).astype(np.float32)
    distance = ndimage.distance_transform_edt(~mask).astype(np.float32)
    shells = {
        name: ndimage.gaussian_filter(((distance > lo) & (distance <= hi)).astype(np.float32), 0.7)
        for name, (lo, hi) in _SHELLS_MM.items()
    }

    mr = {"T1w": t1 * mask + sum(c * shells[s] for c, s in zip(_T1_SHELLS, _SHELLS_MM))}
    for modality, (c_csf, c_gm, c_wm, *c_shells) in _MR_CONTRAST.items():
        mr[modality] = c_csf * csf + c_gm * gm + c_wm * wm + sum(c * shells[s] for c, s in zip(c_shells, _SHELLS_MM))
    mr = {k: np.clip(v, 0.0, 1.0).astype(np.float32) for k, v in mr.items()}

    regions = {name: _smooth_in_box(_ellipsoid(t1.shape, affine, c, r), 3.0) * gm for name, (c, r) in AD_REGIONS.items()}
    scalp = 0.05 * shells["scalp"]
    off_target = sum(_smooth_in_box(_ellipsoid(t1.shape, affine, c, r), 2.0) for c, r in TAU_OFF_TARGET.values()) * mask
    pet_base = {
        "fdg": 1.0 * gm + 0.35 * wm + 0.05 * csf + scalp,
        "amyloid": 0.35 * gm + 0.85 * wm + 0.03 * csf + scalp,
        "tau": TAU_BASE["gm"] * gm + TAU_BASE["wm"] * wm + TAU_BASE["csf"] * csf + TAU_BASE["off_target"] * off_target + scalp,
    }
    return TemplateAnatomy(
        affine=affine,
        mr=mr,
        pet_base={k: v.astype(np.float32) for k, v in pet_base.items()},
        grey_matter=gm,
        ad_regions=regions,
        brain_mask=mask,
        unpadded_shape=unpadded_shape,
        unpadded_affine=unpadded_affine,
    )
