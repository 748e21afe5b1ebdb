"""The MNI152 target: FSL's 1 mm grid (182x218x182) and a coarse 2 mm grid for fast presets.

One template per backend, built where the backend runs (:func:`space_for_backend`): the FSL
backend registers to FSL's own MNI152 (space ``MNI152NLin6Asym``, its 1 and 2 mm files as
``fsl_anat`` uses them); ANTs registers to the ICBM 2009a symmetric template that nilearn ships
(space ``MNI152NLin2009aSym``), resampled onto the same grid, so every output has FSL's geometry
whichever template it came from; the file names and records carry the true space name."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from magicflow.errors import InputError
from magicflow.io import atomic_dir
from magicflow.preprocess.backend import fsl_available, resolve_backend

#: FSL's MNI152 1 mm grid: LAS storage (x index grows towards the subject's left).
GRID_1MM_SHAPE = (182, 218, 182)
GRID_1MM_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])
#: FSL's MNI152 2 mm grid, same field of view.
GRID_2MM_SHAPE = (91, 109, 91)
GRID_2MM_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
GRIDS = {1: (GRID_1MM_SHAPE, GRID_1MM_AFFINE), 2: (GRID_2MM_SHAPE, GRID_2MM_AFFINE)}

SPACE_FSL = "MNI152NLin6Asym"
SPACE_NILEARN = "MNI152NLin2009aSym"
METADATA = "template.json"


@dataclass(frozen=True)
class Template:
    """Paths of one resolution of a template directory written by :func:`build_template`."""

    space: str
    resolution: int
    t1: Path
    brain_mask: Path
    brain_mask_dilated: Path
    gm: Path
    wm: Path


def template_space(use_fsl: bool | None = None) -> str:
    """Space name the template directory will carry (FSL's when FSL is installed)."""
    return SPACE_FSL if (fsl_available() if use_fsl is None else use_fsl) else SPACE_NILEARN


def template_filenames(space: str, resolution: int) -> dict[str, str]:
    """BIDS-like template file names (``tpl-<space>_res-<r>_...``)."""
    stem = f"tpl-{space}_res-{resolution}"
    return {
        "t1": f"{stem}_T1w.nii.gz",
        "brain_mask": f"{stem}_desc-brain_mask.nii.gz",
        "brain_mask_dilated": f"{stem}_desc-braindil_mask.nii.gz",
        "gm": f"{stem}_label-GM_probseg.nii.gz",
        "wm": f"{stem}_label-WM_probseg.nii.gz",
    }


def _resample(img: nib.Nifti1Image, resolution: int, *, nearest: bool) -> np.ndarray:
    """Sample ``img`` on FSL's grid (trilinear, or nearest for masks); outside is 0.

    Going to 2 mm the data are smoothed first (Gaussian, sigma 0.85 mm) so the coarse
    template is not aliased."""
    shape, affine = GRIDS[resolution]
    data = np.asarray(img.dataobj, dtype=np.float32)
    if resolution > 1 and not nearest:
        vox = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
        data = ndimage.gaussian_filter(data, sigma=0.85 * resolution / vox / 2.0)
    src_from_dst = np.linalg.inv(img.affine) @ affine
    coords = np.indices(shape, dtype=np.float32).reshape(3, -1)
    src = src_from_dst[:3, :3] @ coords + src_from_dst[:3, 3:4]
    out = ndimage.map_coordinates(data, src, order=0 if nearest else 1, mode="constant", cval=0.0)
    return out.reshape(shape).astype(np.float32)


def space_for_backend(backend: str) -> str:
    """The template space a backend registers to: FSL's MNI152 for FSL (fsl_anat registers to
    ``$FSLDIR/data/standard``), nilearn's ICBM 2009a for ANTs (``auto`` resolved as the backend is)."""
    return SPACE_FSL if resolve_backend(backend) == "fsl" else SPACE_NILEARN


def fsl_standard_file(name: str) -> Path:
    """A file of ``$FSLDIR/data/standard``, with an error naming it when it is missing."""
    fsldir = os.environ.get("FSLDIR")
    if not fsldir:
        raise InputError("FSL's MNI152 template asked for, but $FSLDIR is not set")
    path = Path(fsldir) / "data" / "standard" / name
    if not path.is_file():
        raise InputError(f"{path}: FSL standard-space file missing")
    return path


def _on_grid(path: Path, resolution: int) -> np.ndarray:
    """The data of a file already on FSL's grid at ``resolution`` (checked, not resampled)."""
    img = nib.load(path)
    shape, affine = GRIDS[resolution]
    if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):
        raise InputError(
            f"{path}: expected FSL's {resolution} mm grid {shape}, got {img.shape} with affine {img.affine.tolist()}"
        )
    return np.asarray(img.dataobj, dtype=np.float32)


def _sources(use_fsl: bool) -> tuple[str, dict[str, nib.Nifti1Image], str]:
    """Load the source template images: FSL's files or nilearn's bundled ICBM 2009a."""
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    if use_fsl:
        t1 = nib.load(fsl_standard_file("MNI152_T1_1mm.nii.gz"))
        mask = nib.load(fsl_standard_file("MNI152_T1_1mm_brain_mask.nii.gz"))
        source = (
            f"FSL {fsl_standard_file('MNI152_T1_1mm.nii.gz').parent}: MNI152_T1_1mm/_2mm and their brain masks "
            "(the 2 mm files FSL's own, its dilated mask as fsl_anat makes it: -fillh -dilF); GM/WM maps are "
            "nilearn's ICBM 2009a maps resampled (close to, not identical with, the FSL template)"
        )
        return SPACE_FSL, {"t1": t1, "brain_mask": mask, "gm": gm, "wm": wm}, source
    t1 = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    source = (
        "nilearn bundled ICBM 2009a nonlinear symmetric MNI152 template (T1, brain mask, GM/WM), "
        "resampled onto FSL's MNI152 1 mm grid"
    )
    return SPACE_NILEARN, {"t1": t1, "brain_mask": mask, "gm": gm, "wm": wm}, source


def build_template(out_dir: str | os.PathLike[str], use_fsl: bool | None = None) -> Path:
    """Write the template (T1, brain mask, dilated mask, GM, WM) at 1 and 2 mm plus ``template.json``.

    The dilated 2 mm mask mirrors the ``MNI152_T1_2mm_brain_mask_dil`` that FNIRT uses as
    reference mask. Written atomically: the directory appears complete or not at all."""
    use_fsl = fsl_available() if use_fsl is None else use_fsl
    space, images, source = _sources(use_fsl)
    out = Path(out_dir)
    meta: dict[str, object] = {"space": space, "source": source, "resolutions": {}}
    with atomic_dir(out) as tmp:
        for res, (shape, affine) in GRIDS.items():
            names = template_filenames(space, res)
            if use_fsl and res == 2:  # FSL's own 2 mm files, as fsl_anat registers to them (not a resample)
                t1 = _on_grid(fsl_standard_file("MNI152_T1_2mm.nii.gz"), res)
                mask = _on_grid(fsl_standard_file("MNI152_T1_2mm_brain_mask.nii.gz"), res) > 0.5
                dil = ndimage.binary_dilation(ndimage.binary_fill_holes(mask), np.ones((3, 3, 3), bool))  # -fillh -dilF
            else:
                t1 = _resample(images["t1"], res, nearest=False)
                mask = _resample(images["brain_mask"], res, nearest=True) > 0.5
                dil = ndimage.binary_dilation(mask, iterations=max(1, 6 // res))
            arrays = {
                "t1": t1,
                "brain_mask": mask.astype(np.uint8),
                "brain_mask_dilated": dil.astype(np.uint8),
                "gm": np.clip(_resample(images["gm"], res, nearest=False), 0, 1),
                "wm": np.clip(_resample(images["wm"], res, nearest=False), 0, 1),
            }
            for key, data in arrays.items():
                img = nib.Nifti1Image(data, affine)
                img.set_qform(affine, code=4)
                img.set_sform(affine, code=4)
                nib.save(img, tmp / names[key])
            meta["resolutions"][str(res)] = {"shape": list(shape), "affine": affine.tolist(), "files": names}  # type: ignore[index]
        (tmp / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def load_template(template_dir: str | os.PathLike[str], resolution: int = 1) -> Template:
    """Read a template directory written by :func:`build_template`."""
    root = Path(template_dir)
    meta_path = root / METADATA
    if not meta_path.is_file():
        raise InputError(f"{meta_path}: template metadata missing; run `magicflow preprocess-template` first")
    meta = json.loads(meta_path.read_text())
    entry = meta["resolutions"].get(str(resolution))
    if entry is None:
        raise InputError(f"{meta_path}: no {resolution} mm template (have {sorted(meta['resolutions'])})")
    files = {key: root / name for key, name in entry["files"].items()}
    for path in files.values():
        if not path.is_file():
            raise InputError(f"{path}: template file missing")
    return Template(space=meta["space"], resolution=resolution, **files)
