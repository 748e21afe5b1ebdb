"""PET frame collapse and timing checks on small real NIfTI files."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from magicflow.errors import InputError
from magicflow.datasets.tracers import canonical_tracer
from magicflow.datasets.pet_timing import TimingWarning
from magicflow.preprocess.pet import Realignment, median_frames, static_pet


def _write_pet(tmp_path, data, tracer="FDG", starts=None, durations=None, sidecar=True):
    path = tmp_path / "sub-01_ses-01_trc-FDG_pet.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    frames = 1 if np.ndim(data) == 3 else np.shape(data)[3]
    if sidecar:
        starts = starts if starts is not None else [1800 + 300 * i for i in range(frames)]
        durations = durations if durations is not None else [300] * frames
        (tmp_path / "sub-01_ses-01_trc-FDG_pet.json").write_text(
            json.dumps({"TracerName": tracer, "FrameTimesStart": starts, "FrameDuration": durations})
        )
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
    [
        ("FDG", 30, True),
        ("FDG", 5, False),
        ("AV45", 50, True),
        ("florbetapir", 90, False),
        ("AV1451", 75, True),
        ("AV1451", 30, False),
        ("PiB", 50, True),
        ("MK-6240", 90, True),
    ],
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


# ---------------------------------------------------------------- DICOM-converted PET (real dcm2niix)


def _converted(tmp_path, edit=None, tracer=None):
    """A 3-frame dynamic PET written with pydicom (frames start 10:00, 10:05, 10:10; 300 s each;
    Frame Reference Time 150, 450, 750 s), optionally edited, converted by the real dcm2niix."""
    import pydicom
    from adapter_fixtures import dicom_series

    from magicflow.datasets.dicom import convert_series

    folder = dicom_series(tmp_path / "dicom", modality="PT", description="FDG Brain", frames=3, tracer=tracer)
    if edit is not None:
        for path in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            edit(ds, (int(ds.InstanceNumber) - 1) // 3)
            ds.save_as(path, enforce_file_format=True)
    image, sidecar, _ = convert_series(folder, tmp_path / "nifti", "I1")
    return image, json.loads(sidecar.read_text())


def _quiet(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, TimingWarning)]


def test_dcm2niix_pet_with_empty_radiopharmaceutical_takes_the_manifest_tracer(tmp_path):
    image, meta = _converted(tmp_path)
    # what dcm2niix writes without a Series Time and with an empty Radiopharmaceutical
    assert "TracerName" not in meta and "FrameTimesStart" not in meta
    assert meta["FrameReferenceTime"] == [150, 450, 750] and meta["FrameDuration"] == [300, 300, 300]
    assert meta["ScanStart"] == 0
    with pytest.raises(InputError, match=r"I1\.json: missing TracerName .*--tracer"):
        static_pet(image)
    result, said = _quiet(lambda: static_pet(image, tracer="18FFDG"))
    assert result.frames == 3 and result.image.shape == (6, 6, 3)
    # 150 - 300/2, 450 - 300/2, 750 - 300/2: from the series start, the injection time unknown
    assert result.timing.starts_s == (0.0, 300.0, 600.0)
    assert result.timing.origin == "scan start" and result.timing.tracer == "18FFDG"
    assert result.timing.tracer_source == "manifest tracer_name"
    assert result.plateau.startswith("not checked: frame times count from the scan start")
    assert said == [] and result.warning is None  # 0-15 min is not "outside the FDG plateau"


def test_dcm2niix_tracer_name_wins_over_the_manifest(tmp_path):
    image, meta = _converted(tmp_path, tracer="Fluorodeoxyglucose F^18^")
    assert meta["TracerName"] == "Fluorodeoxyglucose F^18^"
    result, _ = _quiet(lambda: static_pet(image, tracer="AV45"))
    assert result.timing.tracer == "Fluorodeoxyglucose F^18^" and result.timing.tracer_source == "sidecar TracerName"


def test_dcm2niix_series_crossing_midnight_keeps_positive_times(tmp_path):
    def midnight(ds, frame):
        ds.SeriesTime = "235500.000000"
        ds.AcquisitionTime = ["235500.000000", "000000.000000", "000500.000000"][frame]

    image, meta = _converted(tmp_path, midnight)
    assert meta["FrameTimesStart"] == [0, 0, 0]  # dcm2niix's AcquisitionTime - SeriesTime, clipped at midnight
    result, said = _quiet(lambda: static_pet(image, tracer="FDG"))
    assert result.timing.starts_s == (0.0, 300.0, 600.0)  # from FrameReferenceTime instead
    assert "FrameTimesStart [0.0, 0.0, 0.0] ignored" in result.timing.source
    assert said == []


def test_dcm2niix_series_time_gives_starts_from_the_series(tmp_path):
    def series(ds, frame):
        ds.SeriesTime = "095000.000000"  # 10 min before the first frame

    image, meta = _converted(tmp_path, series)
    assert meta["FrameTimesStart"] == [600, 900, 1200] and meta["SeriesTime"] == "09:50:00"
    result, said = _quiet(lambda: static_pet(image, tracer="FDG"))
    assert result.timing.starts_s == (600.0, 900.0, 1200.0) and result.timing.origin == "scan start"
    assert said == []


def _sidecar(tmp_path, frames=3, **meta):
    path = tmp_path / "sub-01_trc-18FAV1451_pet.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(5).random((4, 4, 4, frames)).astype(np.float32) + 1, np.eye(4)), path)
    (tmp_path / "sub-01_trc-18FAV1451_pet.json").write_text(json.dumps(meta))
    return path


def test_bids_injection_start_counts_from_the_injection(tmp_path):
    # scan starts 30 min after the injection: frames 30-35, 35-40, 40-45 min, inside FDG's 30-60
    path = _sidecar(
        tmp_path,
        TracerName="FDG",
        TimeZero="10:00:00",
        ScanStart=0,
        InjectionStart=-1800,
        FrameTimesStart=[0, 300, 600],
        FrameDuration=[300, 300, 300],
    )
    result, said = _quiet(lambda: static_pet(path))
    assert result.timing.starts_s == (1800.0, 2100.0, 2400.0) and result.timing.origin == "injection"
    assert result.plateau == "inside" and said == []
    # the same frames 1 min after the injection are outside it, and said so
    path = _sidecar(
        tmp_path,
        TracerName="FDG",
        TimeZero="10:00:00",
        ScanStart=0,
        InjectionStart=-60,
        FrameTimesStart=[0, 300, 600],
        FrameDuration=[300, 300, 300],
    )
    result, said = _quiet(lambda: static_pet(path))
    assert result.plateau == "outside" and len(said) == 1 and "frames span 1-16 min" in said[0]


def test_injection_clock_time_across_midnight(tmp_path):
    # injected 22:55, series 00:10: 75 min later; frames 75-80, 80-85, 85-90 min, inside AV1451's 75-105
    path = _sidecar(
        tmp_path,
        TracerName="[18F]AV-1451",
        SeriesTime="00:10:00",
        RadiopharmaceuticalStartTime="225500.00",
        FrameReferenceTime=[150, 450, 750],
        FrameDuration=[300, 300, 300],
    )
    result, said = _quiet(lambda: static_pet(path))
    assert result.timing.starts_s == (4500.0, 4800.0, 5100.0) and result.timing.origin == "injection"
    assert result.plateau == "inside" and said == []


def test_named_sidecar_must_exist(tmp_path):
    path = _sidecar(tmp_path, TracerName="FDG", FrameTimesStart=[1800, 2100, 2400], FrameDuration=[300] * 3)
    with pytest.raises(InputError, match=r"sidecar .*nope\.json \(named by the manifest\) does not exist"):
        static_pet(path, sidecar=tmp_path / "nope.json")
    assert static_pet(path, sidecar="n/a").timing.starts_s == (1800.0, 2100.0, 2400.0)  # n/a: the one beside it


def test_inherited_bids_sidecar_is_read_through_the_manifest(tmp_path):
    from magicflow.datasets.bids import read_bids

    root = tmp_path / "bids"
    for sub in ("01",):
        anat, pet_dir = root / f"sub-{sub}" / "anat", root / f"sub-{sub}" / "pet"
        anat.mkdir(parents=True), pet_dir.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), dtype=np.float32), np.eye(4)), anat / f"sub-{sub}_T1w.nii.gz")
        nib.save(
            nib.Nifti1Image(np.random.default_rng(6).random((4, 4, 4, 3)).astype(np.float32) + 1, np.eye(4)),
            pet_dir / f"sub-{sub}_trc-18FAV1451_pet.nii.gz",
        )
    # one sidecar at the top of the tree, inherited by every tau PET (BIDS inheritance principle)
    (root / "trc-18FAV1451_pet.json").write_text(
        json.dumps(
            {
                "TracerName": "[18F]AV-1451",
                "TimeZero": "10:00:00",
                "InjectionStart": -4500,
                "ScanStart": 0,
                "FrameTimesStart": [0, 300, 600],
                "FrameDuration": [300, 300, 300],
            }
        )
    )
    rows, excluded = read_bids(root, "b")
    pet_row = next(r for r in rows if r.modality == "pet")
    assert (pet_row.tracer, pet_row.tracer_name, pet_row.sidecar) == ("tau", "18FAV1451", str(root / "trc-18FAV1451_pet.json"))
    with pytest.warns(TimingWarning, match="no BIDS sidecar"):  # nothing beside the image
        static_pet(pet_row.path)
    result, said = _quiet(lambda: static_pet(pet_row.path, sidecar=pet_row.sidecar, tracer=pet_row.tracer_name))
    assert result.timing.starts_s == (4500.0, 4800.0, 5100.0) and result.plateau == "inside" and said == []


def test_frames_stacked_from_files_across_midnight(tmp_path):
    from magicflow.datasets.dicom import assemble_frames

    # file names sort 00:00, 00:05, 23:55; the acquisition runs 23:55 -> 00:10, injected 23:10
    clocks = {"frame_a": "00:00:00.000000", "frame_b": "00:05:00.000000", "frame_c": "23:55:00.000000"}
    paths = []
    for value, (name, clock) in enumerate(clocks.items()):
        path = tmp_path / "frames" / f"{name}.nii"
        path.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4) + 10.0 * value, np.eye(4)), path)
        meta = {"AcquisitionTime": clock, "FrameDuration": [300], "FrameTimesStart": [0]}
        if name == "frame_c":
            meta["RadiopharmaceuticalStartTime"] = "23:10:00"
        path.with_suffix(".json").write_text(json.dumps(meta))
        paths.append(path)
    image, side = tmp_path / "pet.nii.gz", tmp_path / "pet.json"
    assemble_frames(paths, image, side)
    meta = json.loads(side.read_text())
    assert meta["AssembledFromFrames"] == ["frame_c.nii", "frame_a.nii", "frame_b.nii"]
    assert np.asarray(nib.load(image).dataobj)[0, 0, 0].tolist() == [20.0, 0.0, 10.0]
    assert (meta["FrameTimesStart"], meta["FrameDuration"]) == ([0, 300, 600], [300, 300, 300])
    assert (meta["ScanStart"], meta["TimeZero"], meta["InjectionStart"]) == (0, "23:55:00.000000", -2700)
    # post-injection 45-60 min: inside FDG's 30-60
    result, said = _quiet(lambda: static_pet(image, side, tracer="FDG"))
    assert result.timing.starts_s == (2700.0, 3000.0, 3300.0) and result.plateau == "inside" and said == []


def test_stacked_frames_without_injection_time_are_not_plateau_times(tmp_path):
    from magicflow.datasets.dicom import assemble_frames

    paths = []
    for i in range(3):
        path = tmp_path / f"f{i}.nii"
        nib.save(nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4) + i, np.eye(4)), path)
        path.with_suffix(".json").write_text(json.dumps({"AcquisitionTime": f"10:{5 * i:02d}:00", "FrameDuration": 300}))
        paths.append(path)
    assemble_frames(paths, tmp_path / "pet.nii.gz", tmp_path / "pet.json")
    result, said = _quiet(lambda: static_pet(tmp_path / "pet.nii.gz", tracer="FDG"))
    assert result.timing.starts_s == (0.0, 300.0, 600.0) and result.timing.origin == "scan start"
    assert result.plateau.startswith("not checked") and said == []


# ---------------------------------------------------------------- one tracer parser


@pytest.mark.parametrize(
    ("name", "canonical", "family"),
    [
        ("18FFDG", "FDG", "fdg"),
        ("18FAV45", "FLORBETAPIR", "amyloid"),
        ("18FAV1451", "FLORTAUCIPIR", "tau"),
        ("18FFBB", "FLORBETABEN", "amyloid"),
        ("11CPIB", "PIB", "amyloid"),
        ("[18F]AV-1451", "FLORTAUCIPIR", "tau"),
        ("Fluorodeoxyglucose F^18^", "FDG", "fdg"),
        ("MK-6240", "MK6240", "tau"),
        ("18F", None, None),
        ("XYZ-123", None, None),
    ],
)
def test_clinica_and_sidecar_tracer_names(name, canonical, family):
    from magicflow.datasets.tracers import tracer_family

    assert canonical_tracer(name) == canonical and tracer_family(name) == family


@pytest.mark.parametrize(
    ("tracer", "start_min", "ok"), [("18FAV1451", 75, True), ("[18F]AV-1451", 30, False), ("11CPIB", 50, True)]
)
def test_plateau_windows_through_the_one_parser(tmp_path, tracer, start_min, ok):
    path = _write_pet(
        tmp_path,
        np.random.default_rng(7).random((4, 4, 4, 3)) + 1,
        tracer=tracer,
        starts=[60 * start_min + 300 * i for i in range(3)],
        durations=[300] * 3,
    )
    result, said = _quiet(lambda: static_pet(path))
    assert (result.plateau == "inside") == ok and (said == []) == ok


# ---------------------------------------------------------------- bias correction


def test_pet_is_never_bias_corrected_t2w_is(tmp_path, monkeypatch):
    from magicflow.preprocess import ants_backend, coregister
    from magicflow.preprocess.coregister import SecondaryOutputs, preprocess_secondary
    from magicflow.preprocess.template import Template

    grid = tmp_path / "grid.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.float32), np.eye(4)), grid)
    for name in ("affine.mat", "warp.nii.gz", "rigid.mat"):
        (tmp_path / name).write_bytes(b"x")
    t1 = tmp_path / "t1.json"
    t1.write_text(
        json.dumps(
            {
                "Backend": "ants",
                "Preset": "demo",
                "Space": "MNI",
                "TemplateDir": str(tmp_path),
                "Transforms": {
                    "native": str(grid),
                    "affine": str(tmp_path / "affine.mat"),
                    "warp": str(tmp_path / "warp.nii.gz"),
                },
            }
        )
    )
    corrected = []
    monkeypatch.setattr(coregister, "load_template", lambda d, r: Template("MNI", 1, grid, grid, grid, grid, grid))
    monkeypatch.setattr(ants_backend, "bias_correct", lambda img, preset, work: corrected.append(img.shape) or img)
    monkeypatch.setattr(ants_backend, "rigid_to_t1", lambda *a: tmp_path / "rigid.mat")
    monkeypatch.setattr(
        ants_backend,
        "realign_frames",
        lambda img, ref, work, schedule: Realignment(
            img, ref, tuple(np.eye(4) for _ in range(img.shape[3])), np.zeros(3), "identity (test)"
        ),
    )
    monkeypatch.setattr(ants_backend, "to_mni", lambda img, *a: nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)))
    pet_path = _write_pet(tmp_path, np.random.default_rng(8).random((4, 4, 4, 3)) + 1)
    t2 = tmp_path / "t2.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(9).random((4, 4, 4)).astype(np.float32) + 1, np.eye(4)), t2)
    records = {}
    for modality, image in (("pet", pet_path), ("T2w", t2)):
        out = SecondaryOutputs(tmp_path / f"{modality}_mni.nii.gz", tmp_path / f"{modality}.mat", tmp_path / f"{modality}.json")
        records[modality] = preprocess_secondary(image, modality, t1, out, bias_correct=True)
        assert len(corrected) == (0 if modality == "pet" else 1)
    assert (records["pet"]["BiasCorrection"], records["T2w"]["BiasCorrection"]) == (False, True)
    assert records["pet"]["Plateau"] == "inside" and records["pet"]["FrameTimesStart"] == [1800.0, 2100.0, 2400.0]


def test_fsl_secondary_chain_has_no_fast_for_pet(tmp_path):
    from magicflow.preprocess import fsl_backend

    steps = {
        m: fsl_backend.secondary_steps(
            tmp_path / "in.nii.gz", tmp_path / "t1.nii.gz", tmp_path / "w.nii.gz", tmp_path / "tpl.nii.gz", m, True, tmp_path, 1
        )["steps"]
        for m in ("pet", "T2w", "FLAIR")
    }
    assert (len(steps["pet"]), len(steps["T2w"]), len(steps["FLAIR"])) == (3, 4, 4)  # reorient, [fast], flirt, applywarp


def test_coregister_command_passes_sidecar_and_tracer(tmp_path, monkeypatch):
    from magicflow import cli
    from magicflow.preprocess.cli import coregister_cmd

    seen = []
    monkeypatch.setattr(coregister_cmd, "preprocess_secondary", lambda *a, **k: seen.append((a[4], k)))
    base = [
        "preprocess-coregister",
        "--image",
        "p.nii.gz",
        "--modality",
        "pet",
        "--t1-json",
        "t1.json",
        "--out-image",
        "o.nii.gz",
        "--out-rigid",
        "o.mat",
        "--out-json",
        "o.json",
        "--bias-correct",
    ]
    assert cli.main(base + ["--sidecar", "bids/trc-18FAV1451_pet.json", "--tracer", "18FAV1451"]) == 0
    assert cli.main(base) == 0
    assert seen == [
        (True, {"sidecar": "bids/trc-18FAV1451_pet.json", "tracer": "18FAV1451", "groundtruth": None}),
        (True, {"sidecar": None, "tracer": None, "groundtruth": None}),
    ]


def test_frame_reference_times_at_frame_starts(tmp_path):
    # mid-frame references would put the first frame at -150 s: these references are the starts
    path = _sidecar(tmp_path, TracerName="FDG", FrameReferenceTime=[0, 300, 600], FrameDuration=[300, 300, 300])
    result, said = _quiet(lambda: static_pet(path))
    assert result.timing.starts_s == (0.0, 300.0, 600.0) and "frame-start references" in result.timing.source
    assert result.timing.origin == "scan start" and said == []


def test_dynamic_scan_started_before_the_injection(tmp_path):
    # series 09:59:50, injection 10:00:00: the first frame starts 10 s before it, not 23 h 59 min after
    path = _sidecar(
        tmp_path,
        TracerName="FDG",
        SeriesTime="09:59:50",
        RadiopharmaceuticalStartTime="100000",
        FrameTimesStart=[0, 300, 600],
        FrameDuration=[300, 300, 300],
    )
    result, said = _quiet(lambda: static_pet(path))
    assert result.timing.starts_s == (-10.0, 290.0, 590.0) and result.plateau == "outside" and len(said) == 1


# ---------------------------------------------------------------- frame realignment


def _moved(volume: np.ndarray, affine: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """``volume`` after the head moved by ``motion`` (4x4, world mm): frame(w) = volume(motion^-1 w)."""
    from scipy import ndimage

    m = np.linalg.inv(affine) @ np.linalg.inv(motion) @ affine
    return ndimage.affine_transform(volume, m[:3, :3], m[:3, 3], order=1)


def _rotation_x(deg: float, centre: np.ndarray, shift: tuple[float, float, float]) -> np.ndarray:
    a = np.radians(deg)
    r = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = r, centre - r @ centre + np.asarray(shift)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["demo", "full"])
def test_frames_are_realigned_before_the_median(preset, tmp_path):
    """The head drifts during five frames (up to 6 mm and 5 degrees from the middle frame; a
    median of such frames is blurred, not protected): the realigned median is closer to the
    motion-free median than the median of the frames as acquired, and the motion is recorded,
    by either preset's schedule (the demo's stops at twice the PET voxel)."""
    from nilearn import datasets
    from scipy import ndimage

    from magicflow.preprocess import ants_backend
    from magicflow.preprocess.pet import motion_summary, pet_record

    tpl = datasets.load_mni152_template(resolution=2)
    brain = ndimage.zoom(np.asarray(tpl.dataobj, dtype=np.float32), 2 / 3, order=1)  # ~3 mm, a PET-sized grid
    uptake = ndimage.gaussian_filter(brain, 1.2) + 0.05
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -1.5 * (np.array(brain.shape) - 1)  # head centre at the world origin
    centre = np.zeros(3)
    motions = [_rotation_x(2.5 * (k - 2), centre, (0, 3.0 * (k - 2), 1.0 * (k - 2))) for k in range(5)]
    rng = np.random.default_rng(5)
    noise = [0.01 * uptake.max() * rng.standard_normal(uptake.shape).astype(np.float32) for _ in motions]
    still = np.stack([uptake + n for n in noise], -1)
    moving = np.stack([_moved(uptake, affine, m) + n for m, n in zip(motions, noise)], -1)
    still_median = median_frames(still)
    path = _write_pet(tmp_path, moving)
    nib.save(nib.Nifti1Image(moving.astype(np.float32), affine), path)  # the world geometry above
    plain = static_pet(path)
    schedule = ants_backend.PRESETS[preset].frame_schedule
    aligned = static_pet(path, realign=lambda frames, ref: ants_backend.realign_frames(frames, ref, tmp_path, schedule))
    head = uptake > 0.2 * uptake.max()

    def error(result) -> float:
        return float(np.sqrt(np.mean((np.asarray(result.image.dataobj)[head] - still_median[head]) ** 2)))

    print(f"RMS error to the motion-free median: as acquired {error(plain):.2f}, realigned {error(aligned):.2f}")
    assert error(aligned) < 0.5 * error(plain)
    record = pet_record(aligned)
    assert record["FrameAlignment"].startswith("ANTs rigid") and "frame 2" in record["FrameAlignment"]
    truth = [np.linalg.inv(motions[2]) @ m for m in motions]  # reference frame 2 -> each frame
    from magicflow.preprocess.pet import frame_motion

    for found, expected in zip(record["FrameMotion"], truth):
        assert found["displacement_mm"] == pytest.approx(frame_motion(expected, centre).displacement_mm, abs=1.0)
        assert found["rotation_deg"] == pytest.approx(frame_motion(expected, centre).rotation_deg, abs=1.0)
    assert record["LargeMotion"] and record["MaxFrameRotationDeg"] > 4
    summary = motion_summary(record)
    assert summary["motion_mm"] == record["MaxFrameDisplacementMM"] and summary["frame_motion"].count(" | ") == 4
    assert pet_record(plain)["FrameAlignment"] == "none" and not pet_record(plain)["LargeMotion"]
