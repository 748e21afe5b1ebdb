"""``magicflow manifest``: write a dataset's manifest and exclusions from its download."""

from __future__ import annotations

import argparse
from pathlib import Path

from magicflow.datasets.bids import LABEL_COLUMNS, read_bids
from magicflow.datasets.manifest import write_manifest
from magicflow.errors import InputError

READERS = {"bids": read_bids}


def _column_mapping(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in LABEL_COLUMNS or not value:
            raise InputError(f"--participant-column {pair!r}: expected NAME=COLUMN with NAME one of {list(LABEL_COLUMNS)}")
        mapping[key] = value
    return mapping


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (as in config)")
    parser.add_argument("--kind", required=True, choices=sorted(READERS), help="adapter to use")
    parser.add_argument("--root", required=True, type=Path, help="dataset folder as downloaded")
    parser.add_argument("--out", required=True, type=Path, help="manifest.tsv to write")
    parser.add_argument("--excluded", required=True, type=Path, help="manifest_excluded.tsv to write")
    parser.add_argument("--participant-column", action="append", default=[], metavar="NAME=COLUMN",
                        help="take manifest column NAME (diagnosis, age, sex) from participants.tsv column COLUMN")


def run(args: argparse.Namespace) -> int:
    rows, excluded = READERS[args.kind](args.root, args.dataset, _column_mapping(args.participant_column))
    write_manifest(rows, excluded, args.out, args.excluded, f"dataset {args.dataset!r} ({args.root})")
    print(f"{args.dataset}: {len(rows)} images in {args.out}, {len(excluded)} excluded (see {args.excluded})")
    for item in excluded:
        print(f"  excluded {item.path}: {item.reason}")
    return 0
