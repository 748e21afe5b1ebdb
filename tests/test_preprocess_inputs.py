"""Bad inputs fail with an InputError naming the file, and leave no output behind."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from magicflow.errors import InputError
from magicflow.preprocess.backend import fsl_available, resolve_backend, thread_environment
from magicflow.preprocess.coregister import SecondaryOutputs, preprocess_secondary, read_t1_record
from magicflow.preprocess.t1 import T1Outputs, preprocess_t1
from magicflow.preprocess.template import GRID_1MM_AFFINE, GRID_1MM_SHAPE, template_space
from magicflow.preprocess.volumes import load_3d


def _save(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), path)
    return path


def _outputs(root):
    return T1Outputs(*(root / n for n in ("mni.nii.gz", "mask.nii.gz", "native.nii.gz", "aff.mat", "warp.nii.gz", "t1.json")))


def test_unreadable_file(tmp_path):
    path = tmp_path / "t1.nii.gz"
    path.write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match=r"t1\.nii\.gz: unreadable"):
        load_3d(path)


def test_truncated_file(tmp_path):
    path = _save(tmp_path / "full.nii.gz", np.random.default_rng(0).random((20, 20, 20)))
    raw = gzip.decompress(path.read_bytes())
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match=r"cut\.nii\.gz: unreadable or truncated"):
        load_3d(cut)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_3d(tmp_path / "nope.nii.gz")


def test_4d_t1(tmp_path):
    path = _save(tmp_path / "t1.nii.gz", np.random.default_rng(0).random((8, 8, 8, 3)))
    with pytest.raises(InputError, match=r"t1\.nii\.gz: T1 must be 3D"):
        load_3d(path, "T1")


@pytest.mark.parametrize(("fill", "message"), [(0.0, "all zero"), (np.nan, "NaN")])
def test_zero_or_nan_t1_writes_nothing(tmp_path, fill, message):
    data = np.random.default_rng(0).random((8, 8, 8))
    data[...] = fill if fill == 0.0 else data
    if np.isnan(fill):
        data[2, 2, 2] = np.nan
    path = _save(tmp_path / "t1.nii.gz", data)
    tpl = tmp_path / "tpl"
    _minimal_template(tpl)
    out = _outputs(tmp_path / "out")
    with pytest.raises(InputError, match=message):
        preprocess_t1(path, tpl, out, backend="ants", preset="demo")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _minimal_template(root):
    from magicflow.preprocess.template import template_filenames

    root.mkdir()
    meta = {"space": "MNI152NLin2009aSym", "resolutions": {}}
    for res in (1, 2):
        names = template_filenames("MNI152NLin2009aSym", res)
        for name in names.values():
            _save(root / name, np.ones((2, 2, 2)))
        meta["resolutions"][str(res)] = {"files": names}
    (root / "template.json").write_text(json.dumps(meta))


def test_pet_without_t1(tmp_path):
    pet = _save(tmp_path / "pet.nii.gz", np.random.default_rng(0).random((8, 8, 8, 4)) + 1)
    out = SecondaryOutputs(tmp_path / "o" / "pet.nii.gz", tmp_path / "o" / "r.mat", tmp_path / "o" / "pet.json")
    with pytest.raises(InputError, match=r"T1 sidecar not found; this subject has no preprocessed T1"):
        preprocess_secondary(pet, "pet", tmp_path / "sub-01_T1w.json", out)
    assert not (tmp_path / "o").exists()


def test_t1_record_with_missing_transform(tmp_path):
    record = tmp_path / "t1.json"
    record.write_text(json.dumps({"Transforms": {"warp": str(tmp_path / "gone.nii.gz")}}))
    with pytest.raises(InputError, match="warp file .*gone"):
        read_t1_record(record)


def test_backend_selection():
    assert resolve_backend("ants") == "ants"
    assert resolve_backend("auto") == ("fsl" if fsl_available() else "ants")
    assert template_space() == ("MNI152NLin6Asym" if fsl_available() else "MNI152NLin2009aSym")
    if not fsl_available():
        with pytest.raises(InputError, match="FSL not found"):
            resolve_backend("fsl")
    with pytest.raises(InputError):
        resolve_backend("spm")
    with pytest.raises(InputError):
        thread_environment(0)
    assert thread_environment(4)["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "4"


@pytest.mark.slow
def test_template_grid(tmp_path):
    from magicflow.preprocess.template import build_template, load_template

    build_template(tmp_path / "tpl", use_fsl=False)
    tpl = load_template(tmp_path / "tpl", 1)
    img = nib.load(tpl.t1)
    assert img.shape == GRID_1MM_SHAPE and img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.affine, GRID_1MM_AFFINE)
    assert tpl.space == "MNI152NLin2009aSym" and "MNI152NLin2009aSym" in tpl.t1.name
    coarse = nib.load(load_template(tmp_path / "tpl", 2).t1)
    assert coarse.shape == (91, 109, 91) and coarse.affine[0, 0] == -2
    # the anterior commissure region (0, 0, 0) mm is inside the brain mask
    mask = nib.load(tpl.brain_mask).get_fdata()
    assert mask[90, 126, 72] == 1
