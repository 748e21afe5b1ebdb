"""``magicflow preprocess-template``: write the MNI152 template directory."""

from __future__ import annotations

import argparse

from magicflow.errors import InputError
from magicflow.preprocess.backend import BACKENDS
from magicflow.preprocess.template import SPACE_FSL, build_template, space_for_backend, template_space


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", required=True, help="template directory to (re)create")
    parser.add_argument(
        "--source",
        choices=("auto", "fsl", "nilearn"),
        default="auto",
        help="auto: FSL's MNI152 when FSL is installed, else nilearn's ICBM 2009a",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="the template of this registration backend (fsl: FSL's MNI152, ants: nilearn's "
        "ICBM 2009a); run it where that backend runs. Overrides --source",
    )


def run(args: argparse.Namespace) -> int:
    if args.backend is not None:
        if args.source != "auto":
            raise InputError("--backend and --source choose the same thing; give one of them")
        use_fsl: bool | None = space_for_backend(args.backend) == SPACE_FSL
    else:
        use_fsl = None if args.source == "auto" else args.source == "fsl"
    out = build_template(args.out_dir, use_fsl)
    print(f"[preprocess-template] {template_space(use_fsl)} -> {out}")
    return 0
