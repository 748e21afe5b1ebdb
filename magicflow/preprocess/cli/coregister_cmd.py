"""``magicflow preprocess-coregister``: a T2w, FLAIR or PET to its subject's T1, then to MNI."""

from __future__ import annotations

import argparse
from pathlib import Path

from magicflow.errors import InputError
from magicflow.preprocess.accuracy import GroundTruth
from magicflow.preprocess.cli.qc_cmd import add_qc_arguments, qc_requested, write_qc
from magicflow.preprocess.coregister import MODALITIES, SecondaryOutputs, preprocess_secondary, read_t1_record
from magicflow.preprocess.pet import motion_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="raw T2w/FLAIR NIfTI, or PET (3D or 4D, with a BIDS sidecar)")
    parser.add_argument("--modality", required=True, choices=MODALITIES)
    parser.add_argument("--t1-json", required=True, help="sidecar written by preprocess-t1 for the same subject")
    parser.add_argument(
        "--sidecar",
        default=None,
        help="PET: the JSON sidecar to read (the manifest's sidecar column, possibly inherited higher "
        "in a BIDS tree); absent or n/a: the file beside the image",
    )
    parser.add_argument(
        "--tracer", default=None, help="PET: tracer name used when the sidecar has no TracerName (the manifest's tracer_name)"
    )
    parser.add_argument(
        "--bias-correct", action="store_true", help="N4 (ANTs) / FAST (FSL) before coregistration; T2w and FLAIR only, never PET"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-image", required=True, help="image in MNI, 182x218x182 float32")
    parser.add_argument("--out-rigid", required=True, help="rigid transform to the native T1 (.mat)")
    parser.add_argument("--out-json", required=True, help="sidecar: backend, frames, tracer, timing warning")
    parser.add_argument(
        "--groundtruth-points", default=None, help="a demo subject's planted MNI -> T1w points (derivatives/groundtruth)"
    )
    parser.add_argument(
        "--groundtruth-rigid",
        default=None,
        help="its planted T1w -> this series rigid move; with --groundtruth-points the sidecar gets the chain's error",
    )
    add_qc_arguments(parser)
    parser.add_argument(
        "--qc-t1w", default=None, help="the subject's T1w in MNI (preprocess-t1's --out-t1): the QC scores the image against it"
    )


def run(args: argparse.Namespace) -> int:
    outputs = SecondaryOutputs(Path(args.out_image), Path(args.out_rigid), Path(args.out_json))
    qc = qc_requested(args)
    if bool(args.groundtruth_points) != bool(args.groundtruth_rigid):
        raise InputError("--groundtruth-points and --groundtruth-rigid go together (an image's error needs both)")
    truth = GroundTruth(Path(args.groundtruth_points), Path(args.groundtruth_rigid)) if args.groundtruth_points else None
    if qc and args.qc_t1w is None:
        raise InputError("--qc-png/--qc-json need --qc-t1w: a T2w, FLAIR or PET is scored against its own T1w in MNI")
    record = preprocess_secondary(
        args.image,
        args.modality,
        args.t1_json,
        outputs,
        args.bias_correct,
        args.threads,
        sidecar=args.sidecar,
        tracer=args.tracer,
        groundtruth=truth,
    )
    if qc:
        template_dir = read_t1_record(args.t1_json)["TemplateDir"]
        write_qc(
            args.out_image,
            template_dir,
            args.qc_png,
            args.qc_json,
            args.qc_label,
            f"preprocess-{args.modality}",
            motion_summary(record),
            args.qc_t1w,
        )
    return 0
