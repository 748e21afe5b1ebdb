"""``magicflow preprocess-qc-table``: gather QC JSONs into a TSV and flag low correlations."""

from __future__ import annotations

import argparse

from magicflow.preprocess.qc import DEFAULT_THRESHOLD, gather_qc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", nargs="+", required=True, help="QC JSON files from preprocess-qc")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="flag a T1w whose smoothed (3 mm) correlation with the template is below this; "
        "misregistration and PET motion are flagged whatever it is",
    )
    parser.add_argument("--out-tsv", required=True)


def run(args: argparse.Namespace) -> int:
    table = gather_qc(args.inputs, args.out_tsv, args.threshold)
    print(f"[preprocess-qc-table] {int(table['flagged'].sum())}/{len(table)} flagged")
    return 0
