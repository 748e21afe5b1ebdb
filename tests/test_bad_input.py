"""Issue 33: bad input never crashes the run, never slips through to fail hours later, and
never stops its whole dataset.

One BIDS dataset holds good subjects beside one subject (or file) per kind of damage; each
kind must end up in the exclusions with a reason naming it, and every good image must be kept.
Faults of the whole dataset stop it with one line naming the file. Unit tests of each check
follow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magicflow.datasets.commands import build_manifest, voxel_limits
from magicflow.datasets.manifest import (
    MISSING,
    Exclusion,
    ImageRow,
    exclusion_summary,
    header_problem,
    near_duplicates,
    read_manifest,
    subject_problems,
    unify_scanners,
    write_manifest,
)
from magicflow.errors import InputError

SHAPE = (8, 8, 8)


def nifti(path: Path, shape=SHAPE, data=None, affine=None) -> Path:
    """A small image with varying values (the data checks refuse constant ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1 if data is None else data
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def sidecar(image: Path, content: object) -> Path:
    path = image.with_name(image.name.split(".")[0] + ".json")
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def pet_timing(frames: int) -> dict:
    return {"FrameTimesStart": [1800.0 + 300 * i for i in range(frames)], "FrameDuration": [300.0] * frames}


def t1(root: Path, subject: str, session: str | None = None, **kwargs) -> Path:
    folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    name = f"sub-{subject}" + (f"_ses-{session}" if session else "") + "_T1w.nii.gz"
    return nifti(folder / name, **kwargs)


def pet(root: Path, subject: str, meta: dict | None = None, frames: int = 3, tracer: str = "FDG") -> Path:
    path = nifti(root / f"sub-{subject}" / "pet" / f"sub-{subject}_trc-{tracer}_pet.nii.gz", shape=(*SHAPE, frames))
    sidecar(path, {"TracerName": tracer, **pet_timing(frames)} if meta is None else meta)
    return path


def scaled(*zooms: float) -> np.ndarray:
    return np.diag([*zooms, 1.0])


def enormous_header(path: Path) -> Path:
    """An uncompressed NIfTI whose header claims 3000^3 float32 voxels over a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path


def raw_affine(path: Path, affine: np.ndarray) -> Path:
    """An uncompressed NIfTI whose sform is ``affine`` as given (nibabel refuses to build an image
    from a NaN or zero-scaled affine, a broken export writes one all the same)."""
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    header["sform_code"], header["qform_code"] = 1, 0
    header["srow_x"], header["srow_y"], header["srow_z"] = affine[0], affine[1], affine[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.binaryblock + b"\0" * 4 + (np.arange(512, dtype="<f4") + 1).tobytes())
    return path


@dataclass(frozen=True)
class Damage:
    """One kind of damage: where it is made and what its exclusion must say."""

    name: str
    path: str  # relative to the root; the exclusion names this file or folder
    reason: str  # a fragment the reason holds


GOOD_SUBJECTS = ("good01", "good02", "good03", "good04")


def damaged_dataset(root: Path) -> list[Damage]:
    """A BIDS dataset of four good subjects and one subject (or file) per kind of damage."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "damaged", "BIDSVersion": "1.9.0"}')
    for subject in GOOD_SUBJECTS:
        t1(root, subject)
    # one scanner written two ways by two software versions: one class in the manifest
    sidecar(
        root / "sub-good01/anat/sub-good01_T1w.nii.gz",
        {"Manufacturer": "Siemens", "ManufacturersModelName": "MAGNETOM_Prisma_Fit"},
    )
    sidecar(root / "sub-good02/anat/sub-good02_T1w.nii.gz", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma_fit"})
    sidecar(root / "sub-good03/anat/sub-good03_T1w.nii.gz", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma_fit"})
    pet(root, "good01")
    nifti(root / "sub-good02/anat/sub-good02_T2w.nii.gz", affine=scaled(1, 1, 3))
    t1(root, "good04", affine=scaled(0.9, 0.9, 1.2))

    damage: list[Damage] = []

    def add(name: str, subject: str, path: str, reason: str, with_t1: bool = True) -> None:
        if with_t1:
            t1(root, subject)
        damage.append(Damage(name, path, reason))

    # 1. crashes: a sidecar that is JSON but not an object
    t1(root, "listsidecar")
    sidecar(root / "sub-listsidecar/anat/sub-listsidecar_T1w.nii.gz", ["not", "an", "object"])
    add(
        "sidecar is a JSON list",
        "listsidecar",
        "sub-listsidecar/anat/sub-listsidecar_T1w.nii.gz",
        "sidecar " + str(root / "sub-listsidecar/anat/sub-listsidecar_T1w.json") + " is a JSON list",
        with_t1=False,
    )
    t1(root, "badjson")
    sidecar(root / "sub-badjson/anat/sub-badjson_T1w.nii.gz", "{not json")
    add("sidecar is not JSON", "badjson", "sub-badjson/anat/sub-badjson_T1w.nii.gz", "unreadable sidecar", with_t1=False)
    t1(root, "latin1json")
    (root / "sub-latin1json/anat/sub-latin1json_T1w.json").write_bytes(b'{"Manufacturer": "Sch\xe9"}')
    add("sidecar not UTF-8", "latin1json", "sub-latin1json/anat/sub-latin1json_T1w.nii.gz", "unreadable sidecar", with_t1=False)

    # 2. kept, then bound to fail later
    t1(root, "singular", affine=np.array([[1.0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    add("singular affine", "singular", "sub-singular/anat/sub-singular_T1w.nii.gz", "is singular", with_t1=False)
    raw_affine(root / "sub-nanaffine/anat/sub-nanaffine_T1w.nii", np.where(np.eye(4) == 1, np.nan, 0.0))
    add("affine with NaN", "nanaffine", "sub-nanaffine/anat/sub-nanaffine_T1w.nii", "NaN or infinite", with_t1=False)
    raw_affine(root / "sub-zerovoxel/anat/sub-zerovoxel_T1w.nii", scaled(1, 1, 0))
    add("0 mm voxels", "zerovoxel", "sub-zerovoxel/anat/sub-zerovoxel_T1w.nii", "voxel size 1x1x0 mm", with_t1=False)
    t1(root, "hugevoxel", affine=scaled(100, 100, 100))
    add("100 mm voxels", "hugevoxel", "sub-hugevoxel/anat/sub-hugevoxel_T1w.nii.gz", "max_voxel_mm.T1w (2 mm)", with_t1=False)
    t1(root, "thick", affine=scaled(1, 1, 4.8))
    add("2D T1 with 4.8 mm slices", "thick", "sub-thick/anat/sub-thick_T1w.nii.gz", "voxel size 1x1x4.8 mm", with_t1=False)
    t1(root, "oneslice", shape=(8, 8, 1))
    add("one slice", "oneslice", "sub-oneslice/anat/sub-oneslice_T1w.nii.gz", "fewer than 3 voxels on a side", with_t1=False)
    t1(root, "tiny", shape=(2, 2, 2))
    add("2 voxels a side", "tiny", "sub-tiny/anat/sub-tiny_T1w.nii.gz", "fewer than 3 voxels on a side", with_t1=False)
    t1(root, "complex", data=(np.arange(512).reshape(SHAPE) * (1 + 1j)).astype(np.complex64))
    add("complex voxels", "complex", "sub-complex/anat/sub-complex_T1w.nii.gz", "complex-valued voxels", with_t1=False)
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.arange(512).reshape(SHAPE) % 255
    t1(root, "rgb", data=rgb)
    add("RGB voxels", "rgb", "sub-rgb/anat/sub-rgb_T1w.nii.gz", "RGB or other multi-channel voxels", with_t1=False)
    enormous_header(root / "sub-enormous/anat/sub-enormous_T1w.nii")
    add(
        "header claims 3000^3 voxels",
        "enormous",
        "sub-enormous/anat/sub-enormous_T1w.nii",
        "header claims dimensions (3000, 3000, 3000)",
        with_t1=False,
    )
    pet(root, "frames", {"TracerName": "FDG", **pet_timing(2)}, frames=3)
    add(
        "PET timing for 2 frames, image has 3",
        "frames",
        "sub-frames/pet/sub-frames_trc-FDG_pet.nii.gz",
        "for 3 frames in the image",
    )
    pet(root, "timetype", {"TracerName": "FDG", "FrameTimesStart": [0, 300, 600], "FrameDuration": "five minutes"})
    add(
        "FrameDuration of the wrong type",
        "timetype",
        "sub-timetype/pet/sub-timetype_trc-FDG_pet.nii.gz",
        "FrameDuration must be a number",
    )
    pet(root, "tracerlist", {"TracerName": ["FDG"], **pet_timing(3)})
    add(
        "TracerName a list",
        "tracerlist",
        "sub-tracerlist/pet/sub-tracerlist_trc-FDG_pet.nii.gz",
        'TracerName is a JSON list (["FDG"])',
    )
    t1(root, "makerint")
    sidecar(root / "sub-makerint/anat/sub-makerint_T1w.nii.gz", {"Manufacturer": 3, "ManufacturersModelName": "Prisma"})
    add(
        "Manufacturer a number",
        "makerint",
        "sub-makerint/anat/sub-makerint_T1w.nii.gz",
        "Manufacturer is a JSON int",
        with_t1=False,
    )
    nifti(root / "sub-sesmix/ses-01/anat/sub-sesmix_ses-02_T1w.nii.gz")
    add(
        "ses- folder disagrees with the name",
        "sesmix",
        "sub-sesmix/ses-01/anat/sub-sesmix_ses-02_T1w.nii.gz",
        "file name says session '02' but the file lies in folder ses-01",
        with_t1=False,
    )
    nifti(root / "sub-nosesname/ses-01/anat/sub-nosesname_T1w.nii.gz")
    add(
        "file in a ses- folder without ses- in its name",
        "nosesname",
        "sub-nosesname/ses-01/anat/sub-nosesname_T1w.nii.gz",
        "file name says no session",
        with_t1=False,
    )
    t1(
        root,
        "nanvox",
        data=np.where(np.arange(512).reshape(SHAPE) == 7, np.nan, 1.0 + np.arange(512).reshape(SHAPE)).astype(np.float32),
    )
    add("NaN voxels", "nanvox", "sub-nanvox/anat/sub-nanvox_T1w.nii.gz", "NaN or infinite voxels", with_t1=False)
    t1(root, "zeros", data=np.zeros(SHAPE, np.float32))
    add("all-zero data", "zeros", "sub-zeros/anat/sub-zeros_T1w.nii.gz", "all zero", with_t1=False)
    whole = t1(root, "cut").read_bytes()
    (root / "sub-cut/anat/sub-cut_T1w.nii.gz").write_bytes(whole[: len(whole) // 2])
    add("truncated file", "cut", "sub-cut/anat/sub-cut_T1w.nii.gz", "truncated", with_t1=False)
    t1(root, "fourd", shape=(*SHAPE, 3))
    add("4D T1w", "fourd", "sub-fourd/anat/sub-fourd_T1w.nii.gz", "4D with 3 volumes", with_t1=False)
    pet(root, "notracer", {"TracerName": "XYZ", **pet_timing(3)}, tracer="XYZ")
    add("unknown tracer", "notracer", "sub-notracer/pet/sub-notracer_trc-XYZ_pet.nii.gz", "unknown PET tracer 'XYZ'")
    path = nifti(root / "sub-nopetjson/pet/sub-nopetjson_trc-FDG_pet.nii.gz", shape=(*SHAPE, 3))
    add("PET without sidecar", "nopetjson", str(path.relative_to(root)), "PET without a JSON sidecar")

    # 3. one subject's fault: that subject only
    t1(root, "Zo\u00eb")
    add(
        "non-ASCII subject label",
        "Zo\u00eb",
        "sub-Zo\u00eb/anat/sub-Zo\u00eb_T1w.nii.gz",
        "other than ASCII letters and digits",
        with_t1=False,
    )
    nifti(root / "sub-accent/anat/sub-accent_acq-caf\u00e9_T1w.nii.gz")
    add(
        "non-ASCII file name",
        "accent",
        "sub-accent/anat/sub-accent_acq-caf\u00e9_T1w.nii.gz",
        "file name has characters other than ASCII",
    )
    t1(root, "CASE01")
    t1(root, "case01")
    add(
        "labels differing only by case",
        "CASE01",
        "sub-CASE01/anat/sub-CASE01_T1w.nii.gz",
        "differs only by case from 'case01'",
        with_t1=False,
    )
    add(
        "labels differing only by case (other)",
        "case01",
        "sub-case01/anat/sub-case01_T1w.nii.gz",
        "differs only by case from 'CASE01'",
        with_t1=False,
    )
    t1(root, "a-b")
    add("hyphen in subject label", "a-b", "sub-a-b/anat/sub-a-b_T1w.nii.gz", "subject label 'a-b' has characters", with_t1=False)
    t1(root, "twicerow")
    add(
        "participant listed twice",
        "twicerow",
        "sub-twicerow/anat/sub-twicerow_T1w.nii.gz",
        "lists sub-twicerow 2 times",
        with_t1=False,
    )
    nifti(root / "sub-other/anat/sub-good01_T2w.nii.gz")
    add("file named for another subject", "other", "sub-other/anat/sub-good01_T2w.nii.gz", "file name is for subject 'good01'")
    nifti(root / "sub-twin/anat/sub-twin_T1w.nii")
    nifti(root / "sub-twin/anat/sub-twin_T1w.nii.gz")
    add(".nii beside .nii.gz", "twin", "sub-twin/anat/sub-twin_T1w.nii", "are one image stored twice", with_t1=False)
    add(".nii.gz beside .nii", "twin", "sub-twin/anat/sub-twin_T1w.nii.gz", "are one image stored twice", with_t1=False)
    nifti(root / "sub-space/anat/sub-space copy_T1w.nii.gz")
    add("whitespace in a file name", "space", "sub-space/anat/sub-space copy_T1w.nii.gz", "whitespace")
    nifti(root / "sub-noentity/anat/T1w.nii.gz")
    add("file name without sub-", "noentity", "sub-noentity/anat/T1w.nii.gz", "no sub-<label> part")

    # 4. silently ignored before
    upper = nifti(root / "sub-upper/anat/sub-upper_T2w.nii.gz")
    upper.rename(upper.with_name("sub-upper_T2w.NII.GZ"))
    add("capitalised extension", "upper", "sub-upper/anat/sub-upper_T2w.NII.GZ", "extension '.NII.GZ' is not lower case")
    analyze = nib.AnalyzeImage(np.arange(512, dtype=np.float32).reshape(SHAPE), np.eye(4))
    (root / "sub-analyze/anat").mkdir(parents=True)
    nib.save(analyze, root / "sub-analyze/anat/sub-analyze_T2w.img")
    add("Analyze header", "analyze", "sub-analyze/anat/sub-analyze_T2w.hdr", "Analyze 7.5 header")
    add("Analyze data", "analyze", "sub-analyze/anat/sub-analyze_T2w.img", "Analyze 7.5 pair", with_t1=False)
    t1(root, "badses")
    (root / "sub-badses/ses-02").write_text("a file where a session folder should be")
    add("unreadable session folder", "badses", "sub-badses/ses-02", "not a folder", with_t1=False)
    (root / "sub-empty/anat").mkdir(parents=True)
    add("subject folder without images", "empty", "sub-empty", "subject folder without NIfTI images", with_t1=False)

    participants = [f"sub-{s}" for s in GOOD_SUBJECTS] + ["sub-twicerow", "sub-twicerow", "sub-badses"]
    pd.DataFrame({"participant_id": participants, "diagnosis": "CN"}).to_csv(root / "participants.tsv", sep="\t", index=False)
    return damage


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[Path, list[Damage], list[ImageRow], list[Exclusion]]:
    root = tmp_path_factory.mktemp("bad") / "bids"
    damage = damaged_dataset(root)
    rows, excluded = build_manifest("bids", root, "damaged", {})
    return root, damage, rows, excluded


def test_the_damaged_dataset_has_at_least_30_kinds(damaged):
    _, damage, _, _ = damaged
    assert len({d.name for d in damage}) >= 30


def test_every_kind_of_damage_is_excluded_naming_its_file(damaged):
    root, damage, _, excluded = damaged
    by_path = {e.path: e.reason for e in excluded}
    missing = [d.name for d in damage if str(root / d.path) not in by_path]
    assert missing == []
    wrong = {d.name: by_path[str(root / d.path)] for d in damage if d.reason not in by_path[str(root / d.path)]}
    assert wrong == {}


def test_every_good_image_is_kept_and_nothing_damaged_slips_through(damaged):
    root, damage, rows, _ = damaged
    kept = {r.image for r in rows}
    good = {f"sub-{s}_T1w" for s in GOOD_SUBJECTS} | {"sub-good01_trc-FDG_pet", "sub-good02_T2w"}
    assert good <= kept
    # the damaged subjects' own good T1w go on; nothing else of theirs is kept
    assert kept - good <= {f"sub-{d.path.split('/')[0].removeprefix('sub-')}_T1w" for d in damage}
    assert {r.scanner for r in rows if r.image in ("sub-good01_T1w", "sub-good02_T1w", "sub-good03_T1w")} == {
        "Siemens Prisma fit"
    }


def test_the_manifest_is_written_with_every_exclusion_on_one_line(damaged, tmp_path: Path):
    _, _, rows, excluded = damaged
    write_manifest(rows, excluded, tmp_path / "manifest.tsv", tmp_path / "excluded.tsv", "damaged")
    table = read_manifest(tmp_path / "excluded.tsv")
    assert len(table) == len(excluded) and not table["reason"].str.contains("\n").any()
    assert len(read_manifest(tmp_path / "manifest.tsv")) == len(rows)


def test_the_log_summarises_exclusions_by_reason(damaged):
    _, _, _, excluded = damaged
    lines = exclusion_summary(excluded)
    assert sum(int(line.split(" x ")[0]) for line in lines) == len(excluded)
    assert len(lines) < len(excluded)  # grouped: the two case-clashing subjects share a line


# ------------------------------------------------------------------ dataset-level faults: one line


def small_bids(root: Path) -> Path:
    for subject in ("01", "02"):
        t1(root, subject)
    return root


@pytest.mark.parametrize(
    ("setup", "options", "message"),
    [
        (lambda r: (r / "participants.tsv").mkdir(), {}, "participants.tsv: cannot be read (IsADirectoryError"),
        (
            lambda r: (r / "participants.tsv").write_bytes(b"participant_id\tdx\nsub-01\t\xff\xfe\x00bad\n"),
            {},
            "participants.tsv: cannot be read (UnicodeDecodeError",
        ),
        (
            lambda r: (r / "participants.tsv").write_text("subject\tdx\nsub-01\tCN\n"),
            {},
            "participants.tsv: no participant_id column; columns are ['subject', 'dx']",
        ),
        (
            lambda r: (r / "participants.tsv").write_text("participant_id\tdx\nsub-01\tCN\n"),
            {"participant_columns": {"diagnosis": "group"}},
            "participants.tsv: no column 'group' (named by participant_columns); columns are ['participant_id', 'dx']",
        ),
        (
            lambda r: None,
            {"participant_columns": {"diagnosis": "dx"}},
            "participants.tsv: does not exist, yet participant_columns",
        ),
    ],
)
def test_dataset_level_faults_stop_in_one_line_naming_the_file(tmp_path: Path, setup, options, message):
    root = small_bids(tmp_path / "b")
    setup(root)
    with pytest.raises(InputError) as error:
        build_manifest("bids", root, "b", options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_no_usable_t1w_at_all_stops_the_dataset(tmp_path: Path):
    root = tmp_path / "b"
    t1(root, "01", affine=scaled(1, 1, 5))
    rows, excluded = build_manifest("bids", root, "b", {})
    with pytest.raises(InputError, match="no usable T1w image found"):
        write_manifest(rows, excluded, tmp_path / "m.tsv", tmp_path / "e.tsv", "dataset 'b'")


# ------------------------------------------------------------------ unit tests per check


@pytest.mark.parametrize(
    ("make", "modality", "expected"),
    [
        (lambda p: nifti(p), "T1w", ""),
        (lambda p: nifti(p, affine=scaled(1, 1, 4.8)), "T1w", "max_voxel_mm.T1w (2 mm)"),
        (lambda p: nifti(p, affine=scaled(1, 1, 4.8)), "FLAIR", ""),  # within FLAIR's 6 mm
        (lambda p: nifti(p, affine=scaled(2, 2, 4.25)), "pet", ""),  # ADNI1's GE Advance PET
        (lambda p: nifti(p, affine=scaled(0.01, 1, 1)), "T1w", "not a real acquisition"),
        (lambda p: raw_affine(p, scaled(1, 0, 1)), "T1w", "voxel size 1x0x1 mm"),
        (lambda p: nifti(p, shape=(64, 64, 1)), "T1w", "shape (64, 64, 1)"),
        (lambda p: nifti(p, data=np.ones(SHAPE, np.complex64)), "T1w", "complex-valued voxels"),
        (enormous_header, "T1w", "GiB of voxels): a damaged header"),
    ],
)
def test_header_problem(tmp_path: Path, make, modality, expected):
    path = tmp_path / "x.nii"
    problem = header_problem(make(path), modality)
    assert (expected in problem) if expected else problem == ""


def test_max_voxel_mm_is_configurable(tmp_path: Path):
    path = nifti(tmp_path / "x.nii.gz", affine=scaled(1, 1, 4.8))
    assert header_problem(path, "T1w", {"T1w": 5.0}) == ""
    assert voxel_limits(["T1w=5", "pet=3.5"]) == {"T1w": 5.0, "pet": 3.5}
    for bad in (["T1w=0"], ["T1w=thick"], ["PD=3"]):
        with pytest.raises(InputError, match="--max-voxel-mm"):
            voxel_limits(bad)


def test_subject_problems():
    problems = subject_problems(["01", "Ab", "aB", "a-b", "Zo\u00eb", "02"])
    assert set(problems) == {"Ab", "aB", "a-b", "Zo\u00eb"}
    assert "differs only by case from 'aB'" in problems["Ab"]


def row(scanner: str, image: str = "sub-01_T1w") -> ImageRow:
    return ImageRow("d", "01", MISSING, image, "T1w", MISSING, MISSING, scanner, "CN", "70", "F", MISSING, "x", MISSING)


def test_scanner_spellings_become_one_and_look_alikes_are_warned():
    rows = [row("Siemens Prisma fit", "a_T1w"), row("Siemens Prisma fit", "b_T1w"), row("Siemens Prisma Fit", "c_T1w")]
    assert {r.scanner for r in unify_scanners(rows)} == {"Siemens Prisma fit"}
    assert near_duplicates(["Siemens Prisma", "Siemens Prisma fit", "GE Discovery MR750"]) == [
        ("Siemens Prisma", "Siemens Prisma fit")
    ]
    assert near_duplicates(["Siemens TrioTim", "GE Signa HDxt"]) == []


# ------------------------------------------------------------------ IDA downloads: clearer reasons


def test_a_collection_saying_pet_for_an_mr_series_says_so():
    from magicflow.datasets.series import classify

    reason = classify(["MPRAGE"], {"Modality": "MR"}, "PET")
    assert reason.startswith("the collection CSV says PET but the image header says MR")  # was 'PET tracer not recognised'


def test_an_html_page_saved_as_dcm_is_named_not_dcm2niix_banner(tmp_path: Path):
    from magicflow.datasets.dicom import convert_series, not_dicom

    folder = tmp_path / "I1"
    folder.mkdir()
    (folder / "ADNI_0001.dcm").write_text("<!DOCTYPE html><html><body>Session expired</body></html>")
    assert not_dicom(folder) == (
        "no file is DICOM; ADNI_0001.dcm is an HTML page (a failed or expired download?): download the series again"
    )
    with pytest.raises(InputError) as error:
        convert_series(folder, tmp_path / "out", "I1")
    assert "ADNI_0001.dcm is an HTML page" in str(error.value) and "version" not in str(error.value).lower()


def test_the_manifest_command_logs_counts_by_reason_and_look_alike_scanners(tmp_path: Path, capsys):
    import argparse

    from magicflow.datasets.commands import add_arguments, run

    root = small_bids(tmp_path / "b")
    sidecar(root / "sub-01/anat/sub-01_T1w.nii.gz", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma"})
    sidecar(root / "sub-02/anat/sub-02_T1w.nii.gz", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma_fit"})
    t1(root, "03", affine=scaled(1, 1, 4.8))
    t1(root, "04", affine=scaled(1, 1, 4.8))
    (root / "participants.tsv").write_text("participant_id\tdiagnosis\nsub-01\tAD\nsub-02\tad\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = ["--out", str(tmp_path / "m.tsv"), "--excluded", str(tmp_path / "e.tsv")]
    args = parser.parse_args(["--dataset", "b", "--kind", "bids", "--root", str(root), *out])
    assert run(args) == 0
    log = capsys.readouterr().out
    assert "b: 2 images" in log and "2 excluded" in log
    assert "    2 x voxel size N mm: edges over max_voxel_mm.T1w (N mm)" in log
    assert "warning: scanner values 'Siemens Prisma' and 'Siemens Prisma fit' look alike" in log
    assert "warning: diagnosis values 'AD' and 'ad' look alike" in log
    args = parser.parse_args(["--dataset", "b", "--kind", "bids", "--root", str(root), "--max-voxel-mm", "T1w=5", *out])
    run(args)
    assert len(read_manifest(tmp_path / "m.tsv")) == 4


@pytest.mark.parametrize("kind", ["bids", "ixi"])
def test_every_adapter_calls_a_root_that_is_a_file_a_file(tmp_path: Path, kind: str):
    (tmp_path / "root").write_text("not a folder")
    with pytest.raises(InputError, match="is a file, not a folder"):
        build_manifest(kind, tmp_path / "root", "d", {})
