"""The ``magicflow`` command line: one subcommand per pipeline stage.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so
``magicflow --help`` stays fast and a stage that does not need torch never imports it."""

from __future__ import annotations

import argparse
import importlib
import sys

from magicflow import __version__
from magicflow.errors import InputError

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-cohort": ("magicflow.demo.cohort", "write the synthetic demo BIDS cohort"),
    "manifest": ("magicflow.datasets.commands", "write a dataset's manifest.tsv and manifest_excluded.tsv"),
}


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magicflow",
        description="MAGIC-Flow pipeline stages. Snakemake rules call these; each also runs on its own.",
    )
    parser.add_argument("--version", action="version", version=f"magicflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(selected).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except InputError as error:
        print(f"magicflow {args.command}: error: {error}", file=sys.stderr)
        return 2
