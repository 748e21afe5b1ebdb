"""``magicflow preprocess-t1``: one T1 to MNI152 (1 mm), keeping its transforms."""

from __future__ import annotations

import argparse
from pathlib import Path

from magicflow.preprocess.accuracy import GroundTruth
from magicflow.preprocess.backend import BACKENDS
from magicflow.preprocess.cli.qc_cmd import add_qc_arguments, qc_requested, write_qc
from magicflow.preprocess.t1 import T1Outputs, preprocess_t1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t1", required=True, help="raw T1w NIfTI")
    parser.add_argument("--template-dir", required=True, help="directory written by preprocess-template")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: FSL if installed, else ANTs")
    parser.add_argument("--preset", choices=("demo", "full"), default="full", help="ANTs preset (ignored by FSL)")
    parser.add_argument("--threads", type=int, default=1, help="threads for ANTs/FSL")
    parser.add_argument("--out-t1", required=True, help="T1 in MNI, 182x218x182 float32")
    parser.add_argument("--out-mask", required=True, help="brain mask in MNI")
    parser.add_argument("--out-native", required=True, help="reoriented, bias-corrected native T1 (coregistration target)")
    parser.add_argument("--out-affine", required=True, help="affine to MNI (.mat: ANTs or FLIRT format)")
    parser.add_argument("--out-warp", required=True, help="warp to MNI (.nii.gz: ANTs field or FNIRT coefficients)")
    parser.add_argument("--out-json", required=True, help="sidecar: backend, preset, space, transforms, seconds")
    parser.add_argument(
        "--groundtruth-points",
        default=None,
        help="a demo subject's planted MNI -> T1w points (derivatives/groundtruth); the sidecar gets the error against them",
    )
    add_qc_arguments(parser)


def run(args: argparse.Namespace) -> int:
    outputs = T1Outputs(
        Path(args.out_t1),
        Path(args.out_mask),
        Path(args.out_native),
        Path(args.out_affine),
        Path(args.out_warp),
        Path(args.out_json),
    )
    qc = qc_requested(args)
    truth = GroundTruth(Path(args.groundtruth_points)) if args.groundtruth_points else None
    preprocess_t1(args.t1, args.template_dir, outputs, args.backend, args.preset, args.threads, truth)
    if qc:
        write_qc(args.out_t1, args.template_dir, args.qc_png, args.qc_json, args.qc_label, "preprocess-t1")
    return 0
