"""``magicflow preprocess-template``: write the MNI152 template directory."""

from __future__ import annotations

import argparse

from magicflow.preprocess.template import build_template, template_space


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", required=True, help="template directory to (re)create")
    parser.add_argument("--source", choices=("auto", "fsl", "nilearn"), default="auto",
                        help="auto: FSL's MNI152 when FSL is installed, else nilearn's ICBM 2009a")


def run(args: argparse.Namespace) -> int:
    use_fsl = None if args.source == "auto" else args.source == "fsl"
    out = build_template(args.out_dir, use_fsl)
    print(f"[preprocess-template] {template_space(use_fsl)} -> {out}")
    return 0
