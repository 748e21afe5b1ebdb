"""Registration error against planted transforms, on transforms whose answer is known exactly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from magicflow.errors import InputError
from magicflow.preprocess.accuracy import GroundTruth, groundtruth_error
from magicflow.preprocess.template import SPACE_NILEARN, Template

SHAPE = (12, 14, 10)
AFFINE = np.array([[2.0, 0, 0, -12], [0, 2.0, 0, -14], [0, 0, 2.0, -10], [0, 0, 0, 1]])
LPS = np.array([-1.0, -1.0, 1.0])


def _grid_points() -> np.ndarray:
    ijk = np.indices(SHAPE, dtype=np.float64).reshape(3, -1)
    return (AFFINE[:3, :3] @ ijk + AFFINE[:3, 3:4]).T.reshape(*SHAPE, 3)


@pytest.fixture
def template(tmp_path: Path) -> Template:
    """A template whose brain is a box inside the ground-truth grid (only its mask is read)."""
    mask = np.zeros((30, 34, 26), np.uint8)
    mask[8:22, 9:25, 7:19] = 1
    affine = np.array([[1.0, 0, 0, -15], [0, 1.0, 0, -17], [0, 0, 1.0, -13], [0, 0, 0, 1]])
    path = tmp_path / "brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, affine), path)
    return Template(SPACE_NILEARN, 1, path, path, path, path, path)


def _truth(tmp_path: Path, shift_ras: tuple[float, float, float], space: str = SPACE_NILEARN) -> Path:
    path = tmp_path / f"sub-x_from-{space}_to-T1w_mode-points_xfm.nii.gz"
    nib.save(nib.Nifti1Image((_grid_points() + np.array(shift_ras)).astype(np.float32), AFFINE), path)
    return path


def _translation_mat(tmp_path: Path, shift_ras: tuple[float, float, float], name: str = "affine.mat") -> Path:
    """An ANTs affine .mat mapping fixed to moving points by ``shift_ras`` (written in LPS)."""
    import ants

    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, translation=tuple(np.array(shift_ras) * LPS))
    path = tmp_path / name
    ants.write_transform(tx, str(path))
    return path


def _field(tmp_path: Path, vector_lps: tuple[float, float, float]) -> Path:
    """A constant ANTs displacement field (5D NIfTI, LPS vectors) covering the grid."""
    data = np.broadcast_to(np.array(vector_lps, np.float32), (*SHAPE, 1, 3)).copy()
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_intent("vector")
    path = tmp_path / "warp.nii.gz"
    nib.save(img, path)
    return path


def test_exact_chain_scores_zero_and_a_missing_step_its_size(tmp_path, template):
    truth = GroundTruth(_truth(tmp_path, (4.0, 0.0, -1.0)))
    # the field's vectors are LPS: (-1, 0, -1) there is (1, 0, -1) RAS; then the affine's (3, 0, 0)
    chain = [_field(tmp_path, (-1.0, 0.0, -1.0)), _translation_mat(tmp_path, (3.0, 0.0, 0.0))]
    error = groundtruth_error(chain, truth, template)
    assert error["max"] < 1e-4
    chain[0] = _field(tmp_path, (-1.0, 0.0, 0.0))
    assert groundtruth_error(chain, truth, template)["mean"] == pytest.approx(1.0, abs=1e-4)
    assert groundtruth_error(chain[1:], truth, template)["mean"] == pytest.approx(np.sqrt(2.0), abs=1e-3)


def test_rigid_move_of_a_secondary_series_counts(tmp_path, template):
    move = np.eye(4)
    move[:3, 3] = (0.0, 2.0, 0.0)  # T1w world -> series world
    (tmp_path / "move.txt").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in move) + "\n")
    truth = GroundTruth(_truth(tmp_path, (3.0, 0.0, 0.0)), tmp_path / "move.txt")
    t1_chain = [_translation_mat(tmp_path, (3.0, 0.0, 0.0))]
    assert groundtruth_error(t1_chain, truth, template)["mean"] == pytest.approx(2.0, abs=1e-4)
    rigid = _translation_mat(tmp_path, (0.0, 2.0, 0.0), "rigid.mat")
    assert groundtruth_error([*t1_chain, rigid], truth, template)["max"] < 1e-4


def test_bad_ground_truth_is_refused_naming_the_file(tmp_path, template):
    chain = [_translation_mat(tmp_path, (0.0, 0.0, 0.0))]
    other = _truth(tmp_path, (0.0, 0.0, 0.0), space="MNI152NLin6Asym")
    with pytest.raises(InputError, match=f"{other}.*MNI152NLin6Asym"):
        groundtruth_error(chain, GroundTruth(other), template)
    renamed = tmp_path / "points.nii.gz"
    other.rename(renamed)
    with pytest.raises(InputError, match=str(renamed)):
        groundtruth_error(chain, GroundTruth(renamed), template)
    bad_move = tmp_path / "move.txt"
    bad_move.write_text("1 0 0\n0 1 0\n")
    with pytest.raises(InputError, match=f"{bad_move}.*4x4"):
        groundtruth_error(chain, GroundTruth(_truth(tmp_path, (0.0, 0.0, 0.0)), bad_move), template)


def test_coregistration_command_refuses_half_a_ground_truth(tmp_path, capsys):
    """Points without the series' rigid move cannot score a coregistration: refused before any work."""
    from magicflow.cli import main

    points = _truth(tmp_path, (0.0, 0.0, 0.0))
    outputs = [f"--out-{k}={tmp_path / k}" for k in ("image", "rigid", "json")]
    args = ["preprocess-coregister", "--image", str(tmp_path / "t2.nii.gz"), "--modality", "T2w"]
    code = main([*args, "--t1-json", str(tmp_path / "t1.json"), *outputs, "--groundtruth-points", str(points)])
    assert code == 2 and "--groundtruth-rigid" in capsys.readouterr().err
