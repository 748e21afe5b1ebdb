"""Attribution maps of twelve subjects whose AD images are brighter on a known block, with the
planted-uptake ground truth the demo cohort writes: shared by the attribution and crop tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from magicflow.evaluate.inputs import ExperimentOutputs, FoldOutputs
from magicflow.preprocess.template import GRID_1MM_AFFINE


def planted_outputs(
    tmp_path: Path, name: str, size: int, block: tuple[slice, slice], seed: int
) -> tuple[ExperimentOutputs, dict[str, Path]]:
    """Six AD and six CN subjects (demo01-demo12 alternating), one slice each at offset 0 and
    ``size``, the AD images 0.4 brighter on ``block``, noise for the model's maps. Each AD
    subject's truth is rows 70-97, columns 28-55 of the 182 slice (voxels x 126-153, z 28-55 of
    the 1 mm grid at coronal y 109), written as the cohort's desc-ADtau masks."""
    rng = np.random.default_rng(seed)
    subjects = [f"demo{i:02d}" for i in range(1, 13)]
    true = np.array(["AD", "CN"] * 6)
    images = rng.uniform(0.2, 0.5, (12, 1, size, size)).astype(np.float32)
    images[true == "AD", 0, block[0], block[1]] += 0.4
    class_maps = rng.normal(0, 1, (12, 2, size, size)).astype(np.float32)
    maps = {
        "class_maps": class_maps,
        "predicted_label": class_maps[:, :1],
        "images": images,
        "true": true,
        "predicted": true,
        "dataset": np.array(["demo"] * 12),
        "subject": np.array(subjects),
        "offset": np.zeros(12, int),
    }
    truth_dir = tmp_path / "groundtruth"
    for subject, label in zip(subjects, true):
        volume = np.zeros((182, 218, 182), np.uint8)
        if label == "AD":
            volume[28:56, 109, 181 - 97 : 181 - 69] = 1
        folder = truth_dir / f"sub-{subject}"
        folder.mkdir(parents=True)
        nib.save(
            nib.Nifti1Image(volume, GRID_1MM_AFFINE), folder / f"sub-{subject}_space-MNI152NLin2009aSym_desc-ADtau_mask.nii.gz"
        )
    fold = FoldOutputs("fold-0", pd.DataFrame(), pd.DataFrame(), {}, maps)
    return ExperimentOutputs(name, ["AD", "CN"], {}, [fold]), {"demo": truth_dir}
