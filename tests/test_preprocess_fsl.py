"""The FSL backend's command lines against fsl_anat's (FSL is absent here) and, where FSL exists, a real run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from magicflow.errors import InputError
from magicflow.preprocess import fsl_backend
from magicflow.preprocess.backend import fsl_available
from magicflow.preprocess.template import GRIDS, SPACE_FSL, SPACE_NILEARN

#: fsl_anat's T1 commands (FSL 6.0's script, its default --weakbias settings: smooth=20, niter=10,
#: betfparam=0.1; no lesion mask; run with --noseg --nosubcortseg), with $FSLDIR/bin/ dropped and
#: ${T1}=T1. Left out, because without a lesion mask they change nothing: the all-ones
#: ``-mas lesionmaskinv`` maskings (so T1_initfast2_maskedrestore is T1_initfast2_brain), and the
#: copies kept only for the user (T1_orig, T1_fast_totbias -add 1, the orig2std/roi matrices).
FSL_ANAT_T1 = """
fslreorient2std T1 T1_fullfov
robustfov -i T1_fullfov -r T1 -m T1_roi2nonroi.mat
bet T1 T1_initfast2_brain -m -f 0.1
fast -o T1_fast -l 20 -b -B -t 1 --iter=10 --nopve --fixed=0 -v T1_initfast2_brain
fslmaths T1 -div T1_fast_restore -mas T1_initfast2_brain_mask T1_fast_totbias
fslmaths T1_initfast2_brain_mask -ero -ero -ero -ero T1_initfast2_brain_mask2
fslmaths T1_fast_totbias -sub 1 T1_fast_totbias
fslsmoothfill -i T1_fast_totbias -m T1_initfast2_brain_mask2 -o T1_fast_bias
fslmaths T1_fast_bias -add 1 T1_fast_bias
fslmaths T1 -div T1_fast_bias T1_biascorr
flirt -interp spline -dof 12 -in T1_biascorr -ref $STD/MNI152_T1_2mm -dof 12 -omat T1_to_MNI_lin.mat -out T1_to_MNI_lin
fslmaths $STD/MNI152_T1_2mm_brain_mask -fillh -dilF MNI152_T1_2mm_brain_mask_dil1
fnirt --in=T1_biascorr --ref=$STD/MNI152_T1_2mm --fout=T1_to_MNI_nonlin_field --jout=T1_to_MNI_nonlin_jac --iout=T1_to_MNI_nonlin --logout=T1_to_MNI_nonlin.txt --cout=T1_to_MNI_nonlin_coeff --config=$FSLDIR/etc/flirtsch/T1_2_MNI152_2mm.cnf --aff=T1_to_MNI_lin.mat --refmask=MNI152_T1_2mm_brain_mask_dil1
"""
#: beyond fsl_anat (it stops at FNIRT's 2 mm image): one spline resampling onto the 1 mm grid
ONTO_1MM = "applywarp -i T1_biascorr -w T1_to_MNI_nonlin_coeff -r grid1mm -o T1_to_MNI --interp=spline"

#: options that take no value, and long/short spellings of one option
FLAGS = {"-m", "-b", "-B", "-v", "--nopve", "-mats", "-plots"}
ALIASES = {"--iter": "-I", "--fixed": "-O", "-i": "--in", "-w": "--warp", "-r": "--ref", "-o": "--out"}
DEFAULTS = {("fast", "-S", "1")}  # nipype writes FAST's default channel count


def _token(text: str) -> str:
    """A path as its file stem (no folder, no .nii.gz/.mat/.txt/.cnf), a number as a float."""
    name = text.rsplit("/", 1)[-1]
    for ext in (".nii.gz", ".cnf"):
        name = name.removesuffix(ext)
    try:
        return repr(float(name))
    except ValueError:
        return name


def canonical(command: str) -> tuple:
    """A command line as (program, positional arguments, {option: value}); fslmaths keeps its order."""
    tokens = shlex.split(command)
    program = tokens[0].rsplit("/", 1)[-1]
    if program == "fslmaths":
        return program, tuple(_token(t) for t in tokens[1:]), {}
    positional, options, i = [], {}, 1
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-") and "=" in tok:
            key, value = tok.split("=", 1)
        elif tok in FLAGS:
            key, value = tok, None
        elif tok.startswith("-"):
            key, value, i = tok, tokens[i + 1], i + 1
        else:
            positional.append(_token(tok))
            i += 1
            continue
        key = ALIASES.get(key, key)
        value = None if value is None else _token(value)
        if (program, key, value if value is None else value.removesuffix(".0")) not in DEFAULTS:
            options[key] = value
        i += 1
    return program, tuple(positional), options


@pytest.fixture()
def chain(tmp_path: Path) -> dict:
    """The T1 chain built with placeholder files (nipype checks that inputs exist)."""
    std = tmp_path / "standard"
    std.mkdir()
    for name in (fsl_backend.STANDARD_2MM, fsl_backend.STANDARD_2MM_MASK):
        (std / name).write_bytes(b"")
    t1, grid = tmp_path / "T1_raw.nii.gz", tmp_path / "grid1mm.nii.gz"
    t1.write_bytes(b"")
    grid.write_bytes(b"")
    work = tmp_path / "work"
    work.mkdir()
    for path in fsl_backend.t1_files(work).values():
        path.write_bytes(b"")
    result = fsl_backend.t1_steps(t1, std, grid, work, threads=2)
    result["commands"] = [step().cmdline for step in result["steps"]]
    return result


def test_t1_chain_is_fsl_anats(chain):
    expected = [line for line in FSL_ANAT_T1.strip().splitlines()] + [ONTO_1MM]
    ours = chain["commands"]
    assert len(ours) == len(expected)
    for mine, theirs in zip(ours, expected):
        # our first step reads the raw input, fsl_anat's its copy of it named T1
        theirs = theirs.replace("fslreorient2std T1 ", "fslreorient2std T1_raw ")
        assert canonical(mine) == canonical(theirs), f"\nours:     {mine}\nfsl_anat: {theirs}"


def test_t1_chain_registers_to_fsls_own_2mm_template(chain):
    flirt = next(c for c in chain["commands"] if c.startswith("flirt"))
    fnirt = next(c for c in chain["commands"] if c.startswith("fnirt"))
    assert "/standard/MNI152_T1_2mm.nii.gz" in flirt and "--ref=" in fnirt and "/standard/MNI152_T1_2mm.nii.gz" in fnirt
    assert chain["files"]["native"].name == "T1_biascorr.nii.gz"  # what T2w/FLAIR/PET are coregistered to


def test_fsl_standard_files_are_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("FSLDIR", raising=False)
    with pytest.raises(InputError, match=r"\$FSLDIR is not set"):
        fsl_backend.fsl_standard_dir()
    monkeypatch.setenv("FSLDIR", str(tmp_path))
    with pytest.raises(InputError, match="MNI152_T1_2mm_brain_mask.nii.gz: FSL standard-space file missing"):
        fsl_backend.fsl_standard_dir()


def test_threads_reach_fsl_environment(tmp_path):
    (tmp_path / "t1.nii.gz").write_bytes(b"")
    interface = fsl_backend.reorient(tmp_path / "t1.nii.gz", tmp_path / "r.nii.gz", threads=3)
    assert interface.inputs.environ["OMP_NUM_THREADS"] == "3"
    assert interface.inputs.environ["FSLOUTPUTTYPE"] == "NIFTI_GZ"


def _secondary(tmp_path: Path, modality: str, bias: bool) -> list[str]:
    for name in (
        "in.nii.gz",
        "t1.nii.gz",
        "w.nii.gz",
        "tpl.nii.gz",
        "img_reorient.nii.gz",
        "img_fast_restore.nii.gz",
        "img_to_T1.mat",
    ):
        (tmp_path / name).write_bytes(b"")
    steps = fsl_backend.secondary_steps(
        tmp_path / "in.nii.gz",
        tmp_path / "t1.nii.gz",
        tmp_path / "w.nii.gz",
        tmp_path / "tpl.nii.gz",
        modality,
        bias,
        tmp_path,
        1,
    )["steps"]
    return [step().cmdline for step in steps]


def test_coregistration_is_6_dof_normmi_for_search_and_cost(tmp_path):
    commands = _secondary(tmp_path, "T2w", bias=True)
    assert [c.split()[0] for c in commands] == ["fslreorient2std", "fast", "flirt", "applywarp"]
    _, _, flirt = canonical(commands[2])
    assert (flirt["-dof"], flirt["-cost"], flirt["-searchcost"]) == ("6.0", "normmi", "normmi")
    assert canonical(commands[1])[2]["-t"] == "2.0"  # FAST told it is a T2-type image
    _, _, warp = canonical(commands[3])
    assert warp["--premat"] == "img_to_T1.mat" and warp["--warp"] == "w"
    assert [c.split()[0] for c in _secondary(tmp_path, "pet", bias=True)] == ["fslreorient2std", "flirt", "applywarp"]


def test_mcflirt_realigns_to_the_given_frame(tmp_path):
    (tmp_path / "pet.nii.gz").write_bytes(b"")
    _, _, options = canonical(fsl_backend.realign(tmp_path / "pet.nii.gz", tmp_path / "mcf.nii.gz", 3).cmdline)
    assert options == {"-in": "pet", "-out": "mcf", "-refvol": "3.0", "-mats": None, "-plots": None}


def test_mcflirt_matrices_become_motion(tmp_path):
    """MCFLIRT's MAT_ files map frame -> reference; a 5 mm shift of frame 1 is 5 mm of motion."""
    from magicflow.preprocess.pet import frame_motion

    folder = tmp_path / "mcf.mat"
    folder.mkdir()
    shift = np.eye(4)
    shift[0, 3] = -5.0
    np.savetxt(folder / "MAT_0000", np.eye(4))
    np.savetxt(folder / "MAT_0001", shift)
    mats = fsl_backend.read_mcflirt_matrices(tmp_path / "mcf.nii.gz", 2)
    motion = [frame_motion(np.linalg.inv(m), np.array([50.0, 60.0, 40.0])) for m in mats]
    assert [m.displacement_mm for m in motion] == pytest.approx([0.0, 5.0])
    with pytest.raises(RuntimeError, match="MAT_0002"):
        fsl_backend.read_mcflirt_matrices(tmp_path / "mcf.nii.gz", 3)


def test_fsl_backend_refuses_a_nilearn_template(tmp_path, monkeypatch):
    """FSL registers to $FSLDIR's MNI152: a 2009a template dir would mislabel its outputs."""
    from magicflow.preprocess import t1 as t1_module
    from magicflow.preprocess.t1 import T1Outputs, preprocess_t1
    from magicflow.preprocess.template import template_filenames

    names = template_filenames(SPACE_NILEARN, 1)
    for name in names.values():
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "template.json").write_text(json.dumps({"space": SPACE_NILEARN, "resolutions": {"1": {"files": names}}}))
    monkeypatch.setattr(t1_module, "resolve_backend", lambda name: "fsl")
    out = T1Outputs(*(tmp_path / n for n in ("m.nii.gz", "k.nii.gz", "n.nii.gz", "a.mat", "w.nii.gz", "t1.json")))
    with pytest.raises(InputError, match="MNI152NLin2009aSym template, but the FSL backend"):
        preprocess_t1(tmp_path / "t1.nii.gz", tmp_path, out, backend="fsl")


@pytest.mark.slow
def test_fsl_template_uses_fsls_own_2mm_files(tmp_path, monkeypatch):
    """Where FSL runs, the template is FSL's MNI152 at both resolutions (2 mm not resampled)."""
    from magicflow.preprocess.template import build_template, load_template, space_for_backend

    std = tmp_path / "fsl" / "data" / "standard"
    std.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for res in (1, 2):
        shape, affine = GRIDS[res]
        mask = np.zeros(shape, np.uint8)
        mask[tuple(slice(s // 4, 3 * s // 4) for s in shape)] = 1
        nib.save(nib.Nifti1Image(rng.random(shape, dtype=np.float32), affine), std / f"MNI152_T1_{res}mm.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), std / f"MNI152_T1_{res}mm_brain_mask.nii.gz")
    monkeypatch.setenv("FSLDIR", str(tmp_path / "fsl"))
    build_template(tmp_path / "tpl", use_fsl=True)
    tpl2 = load_template(tmp_path / "tpl", 2)
    assert tpl2.space == SPACE_FSL
    np.testing.assert_array_equal(nib.load(tpl2.t1).get_fdata(), nib.load(std / "MNI152_T1_2mm.nii.gz").get_fdata())
    dilated = nib.load(tpl2.brain_mask_dilated).get_fdata() > 0
    inner = nib.load(std / "MNI152_T1_2mm_brain_mask.nii.gz").get_fdata() > 0
    assert dilated[inner].all() and dilated.sum() > inner.sum()  # -fillh -dilF: one voxel wider
    assert space_for_backend("ants") == SPACE_NILEARN


@pytest.mark.slow
@pytest.mark.skipif(
    not fsl_available(),
    reason="FSL not installed ($FSLDIR unset or flirt not on PATH): "
    "the chain's command lines are checked against fsl_anat's above",
)
def test_fsl_end_to_end(tmp_path):
    from magicflow.demo import write_demo_cohort
    from magicflow.preprocess.coregister import SecondaryOutputs, preprocess_secondary
    from magicflow.preprocess.t1 import T1Outputs, preprocess_t1
    from magicflow.preprocess.template import build_template, load_template

    write_demo_cohort(tmp_path / "demo", subjects=2, seed=0, tracers=("FDG",), progress=False)
    build_template(tmp_path / "tpl", use_fsl=True)
    sub = sorted(p.name for p in (tmp_path / "demo").glob("sub-*"))[0]
    anat = tmp_path / "demo" / sub / "ses-01" / "anat"
    out = T1Outputs(
        *(tmp_path / "o" / n for n in ("mni.nii.gz", "mask.nii.gz", "native.nii.gz", "aff.mat", "warp.nii.gz", "t1.json"))
    )
    record = preprocess_t1(anat / f"{sub}_ses-01_T1w.nii.gz", tmp_path / "tpl", out, backend="fsl", threads=2)
    assert record["Backend"] == "fsl" and record["Space"] == SPACE_FSL
    mni = nib.load(out.mni)
    assert mni.shape == (182, 218, 182)
    tpl = load_template(tmp_path / "tpl")
    mask = nib.load(tpl.brain_mask).get_fdata() > 0
    assert np.corrcoef(mni.get_fdata()[mask], nib.load(tpl.t1).get_fdata()[mask])[0, 1] > 0.8
    pet = SecondaryOutputs(*(tmp_path / "o" / n for n in ("pet.nii.gz", "pet.mat", "pet.json")))
    rec = preprocess_secondary(
        tmp_path / "demo" / sub / "ses-01" / "pet" / f"{sub}_ses-01_trc-FDG_pet.nii.gz", "pet", out.sidecar, pet, threads=2
    )
    assert rec["FrameAlignment"].startswith("mcflirt") and len(rec["FrameMotion"]) == rec["Frames"]


def test_template_command_takes_the_backend(tmp_path, monkeypatch):
    """``preprocess-template --backend`` builds that backend's template (the rule runs it where the backend runs)."""
    from magicflow import cli
    from magicflow.preprocess.cli import template_cmd

    built = []
    monkeypatch.setattr(template_cmd, "build_template", lambda out, use_fsl: built.append(use_fsl) or out)
    assert cli.main(["preprocess-template", "--out-dir", str(tmp_path / "t"), "--backend", "ants"]) == 0
    assert built == [False]
    with pytest.raises(InputError, match="--backend and --source"):
        template_cmd.run(template_cmd.argparse.Namespace(out_dir=str(tmp_path), source="fsl", backend="ants"))
