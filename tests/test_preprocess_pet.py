"""PET frame collapse and timing checks on small real NIfTI files."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from magicflow.errors import InputError
from magicflow.datasets.tracers import canonical_tracer
from magicflow.preprocess.pet import TimingWarning, median_frames, static_pet


def _write_pet(tmp_path, data, tracer="FDG", starts=None, durations=None, sidecar=True):
    path = tmp_path / "sub-01_ses-01_trc-FDG_pet.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    frames = 1 if np.ndim(data) == 3 else np.shape(data)[3]
    if sidecar:
        starts = starts if starts is not None else [1800 + 300 * i for i in range(frames)]
        durations = durations if durations is not None else [300] * frames
        (tmp_path / "sub-01_ses-01_trc-FDG_pet.json").write_text(
            json.dumps({"TracerName": tracer, "FrameTimesStart": starts, "FrameDuration": durations}))
    return path


def test_median_ignores_one_outlier_frame(tmp_path):
    # frames at one voxel: 10, 12, 11, 500 (motion), 13 -> sorted 10, 11, 12, 13, 500 -> median 12
    values = np.array([10.0, 12.0, 11.0, 500.0, 13.0])
    data = np.ones((4, 4, 4, 5), dtype=np.float32) * values
    data[0, 0, 0] = [1.0, 2.0, 3.0, 4.0, 100.0]  # -> 3
    path = _write_pet(tmp_path, data)
    result = static_pet(path)
    out = np.asarray(result.image.dataobj)
    assert out.shape == (4, 4, 4)
    assert out[1, 1, 1] == pytest.approx(12.0)
    assert out[0, 0, 0] == pytest.approx(3.0)
    assert np.mean(values) != pytest.approx(12.0)  # the mean would have been pulled to 109.2
    assert result.frames == 5 and result.warning is None


def test_median_frames_even_count():
    data = np.array([1.0, 3.0, 100.0, 5.0]).reshape(1, 1, 1, 4)
    assert median_frames(data)[0, 0, 0] == pytest.approx(4.0)


def test_3d_pet_passes_through(tmp_path):
    data = np.arange(64, dtype=np.float32).reshape(4, 4, 4) + 1
    path = _write_pet(tmp_path, data)
    result = static_pet(path)
    np.testing.assert_array_equal(np.asarray(result.image.dataobj), data)
    assert result.frames == 1


def test_single_frame_4d_with_multiframe_sidecar_is_an_error(tmp_path):
    data = np.random.default_rng(3).random((4, 4, 4, 1)).astype(np.float32) + 1
    path = _write_pet(tmp_path, data, starts=[1800, 2100, 2400], durations=[300, 300, 300])
    with pytest.raises(InputError, match=r"3 FrameTimesStart .* 1 frames"):
        static_pet(path)


def test_missing_sidecar_warns(tmp_path):
    path = _write_pet(tmp_path, np.random.default_rng(0).random((4, 4, 4, 3)) + 1, sidecar=False)
    with pytest.warns(TimingWarning, match="no BIDS sidecar"):
        static_pet(path)


def test_sidecar_missing_keys_is_an_error(tmp_path):
    path = _write_pet(tmp_path, np.random.default_rng(4).random((4, 4, 4, 3)) + 1, sidecar=False)
    (tmp_path / "sub-01_ses-01_trc-FDG_pet.json").write_text(json.dumps({"TracerName": "FDG"}))
    with pytest.raises(InputError, match="FrameTimesStart"):
        static_pet(path)


@pytest.mark.parametrize(
    ("tracer", "start_min", "ok"),
    [("FDG", 30, True), ("FDG", 5, False), ("AV45", 50, True), ("florbetapir", 90, False),
     ("AV1451", 75, True), ("AV1451", 30, False), ("PiB", 50, True), ("MK-6240", 90, True)],
)
def test_plateau_window(tmp_path, tracer, start_min, ok):
    data = np.random.default_rng(1).random((4, 4, 4, 4)) + 1
    path = _write_pet(tmp_path, data, tracer=tracer, starts=[60 * start_min + 300 * i for i in range(4)], durations=[300] * 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = static_pet(path)
    timing_warnings = [w for w in caught if issubclass(w.category, TimingWarning)]
    assert (not timing_warnings) == ok
    assert (result.warning is None) == ok


def test_unknown_tracer_warns(tmp_path):
    path = _write_pet(tmp_path, np.random.default_rng(2).random((4, 4, 4, 3)) + 1, tracer="XYZ-123")
    with pytest.warns(TimingWarning, match="no known plateau"):
        static_pet(path)


def test_tracer_aliases():
    assert canonical_tracer("AV45") == canonical_tracer("Florbetapir") == "FLORBETAPIR"
    assert canonical_tracer("av-1451") == "FLORTAUCIPIR"
    assert canonical_tracer("[18F]FDG") == "FDG"
