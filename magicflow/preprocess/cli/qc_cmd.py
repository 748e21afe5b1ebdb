"""``magicflow preprocess-qc``: overlay PNG and template correlation for one MNI image."""

from __future__ import annotations

import argparse

from magicflow.preprocess.qc import image_qc
from magicflow.preprocess.template import load_template


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="image in MNI (output of preprocess-t1/-coregister)")
    parser.add_argument("--template-dir", required=True)
    parser.add_argument("--label", default=None, help="name shown in the figure and the table (default: file name)")
    parser.add_argument("--out-png", required=True)
    parser.add_argument("--out-json", required=True)


def run(args: argparse.Namespace) -> int:
    record = image_qc(args.image, load_template(args.template_dir, 1), args.out_png, args.out_json, args.label)
    print(f"[preprocess-qc] {record['label']}: NCC {record['ncc']:.3f}")
    return 0
