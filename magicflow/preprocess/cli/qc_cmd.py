"""``magicflow preprocess-qc``: overlay PNG and misregistration check for one MNI image.

The workflow does not call it: ``preprocess-t1`` and ``preprocess-coregister`` write the same QC
files with ``--qc-png/--qc-json`` (one job per image instead of two: on the 2-core demo the
separate QC jobs cost 56 Python start-ups). It stays for checking an image from elsewhere."""

from __future__ import annotations

import argparse
import os

from magicflow.errors import InputError
from magicflow.preprocess.qc import image_qc
from magicflow.preprocess.template import load_template


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="image in MNI (output of preprocess-t1/-coregister)")
    parser.add_argument("--template-dir", required=True)
    parser.add_argument("--label", default=None, help="name shown in the figure and the table (default: file name)")
    parser.add_argument(
        "--t1w", default=None, help="a T2w/FLAIR/PET's own T1w in MNI (preprocess-t1's --out-t1): scored by NMI with it"
    )
    parser.add_argument("--out-png", required=True)
    parser.add_argument("--out-json", required=True)


def add_qc_arguments(parser: argparse.ArgumentParser) -> None:
    """The QC outputs of the registration commands (both or neither)."""
    group = parser.add_argument_group("QC of the MNI image (as preprocess-qc)")
    group.add_argument("--qc-png", help="overlay figure of the image in MNI with the template's edges")
    group.add_argument("--qc-json", help="misregistration check and its measure (for preprocess-qc-table)")
    group.add_argument("--qc-label", default=None, help="name in the figure and the table (default: file name)")


def qc_requested(args: argparse.Namespace) -> bool:
    """Whether the QC files were asked for; only one of them is an error, raised before any work."""
    if (args.qc_png is None) != (args.qc_json is None):
        raise InputError("--qc-png and --qc-json go together")
    return args.qc_png is not None


def write_qc(
    image: str | os.PathLike[str],
    template_dir: str | os.PathLike[str],
    png: str,
    json_path: str,
    label: str | None,
    stage: str,
    motion: dict[str, float | None] | None = None,
    t1w: str | os.PathLike[str] | None = None,
) -> None:
    """Write the QC figure and JSON of a registered image (with a PET's frame motion; a
    secondary image is scored against its own ``t1w`` in MNI) and log the check."""
    record = image_qc(image, load_template(template_dir, 1), png, json_path, label, motion, t1w)
    probe = f", fits better moved {record['best_probe']}" if record["best_probe"] else ""
    print(
        f"[{stage}] QC {record['label']}: {record['measure']} {record['score']:.3f}, alignment {record['alignment']:+.4f}{probe}",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    write_qc(args.image, args.template_dir, args.out_png, args.out_json, args.label, "preprocess-qc", t1w=args.t1w)
    return 0
