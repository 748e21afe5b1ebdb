"""The ``magicflow`` command line: one subcommand per pipeline stage.

Each subcommand lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
an entry ``"module:name"`` instead uses that module's ``add_<name>_arguments`` and ``run_<name>``
(several stages of one family in one module). Modules are imported only when their command runs, so
``magicflow --help`` stays fast and a stage that does not need torch never imports it."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from magicflow import __version__
from magicflow.errors import InputError

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-cohort": ("magicflow.demo.cohort", "write the synthetic demo BIDS cohort"),
    "manifest": ("magicflow.datasets.commands", "write a dataset's manifest.tsv and manifest_excluded.tsv"),
    "preprocess-template": ("magicflow.preprocess.cli.template_cmd", "write the MNI152 1 mm template (FSL's grid) and its masks"),
    "preprocess-t1": ("magicflow.preprocess.cli.t1_cmd", "register a T1w to MNI152 (FSL or ANTs): image, mask, transforms"),
    "preprocess-coregister": ("magicflow.preprocess.cli.coregister_cmd", "T2w/FLAIR/PET: median frame, rigid to the T1w, then to MNI"),
    "preprocess-qc": ("magicflow.preprocess.cli.qc_cmd", "QC figure and correlation with the template of one MNI image"),
    "preprocess-qc-table": ("magicflow.preprocess.cli.qc_table_cmd", "gather QC values into a table and flag low ones"),
    "slices": ("magicflow.slices", "coronal slices of every MNI image of a dataset"),
    "split": ("magicflow.experiments.commands:split", "subject-level stratified k-fold splits of an experiment"),
    "train": ("magicflow.experiments.commands:train", "train a MAGIC-Flow model on one fold (resumable)"),
    "sample": ("magicflow.experiments.commands:sample", "draw class-conditional samples from a trained model"),
    "classify": ("magicflow.experiments.commands:classify", "classify a fold's test slices by maximum likelihood"),
    "attribution": ("magicflow.experiments.commands:attribution", "likelihood attribution maps of test slices"),
    "evaluate": ("magicflow.evaluate.commands", "metrics (JSON, TSV) and figures of one experiment"),
    "report": ("magicflow.report.experiment", "the self-contained HTML report of one experiment"),
    "bench": ("magicflow.flow.bench", "benchmark the flow (and a normflows Glow peer) on CPU or GPU"),
}


def _entry(target: str):
    """(add_arguments, run) of a command target."""
    module_name, _, name = target.partition(":")
    module = importlib.import_module(module_name)
    if name:
        return getattr(module, f"add_{name}_arguments"), getattr(module, f"run_{name}")
    return module.add_arguments, module.run


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
            _entry(module)[0](command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(selected).parse_args(argv)
    run = _entry(COMMANDS[args.command][0])[1]
    try:
        return int(run(args) or 0)
    except InputError as error:  # bad input, foreseen where it is raised: the message names the file and the problem
        sys.stdout.flush()
        print(f"magicflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # anything else: one line naming the inputs first (what a log's reader looks for), then the traceback
        sys.stdout.flush()
        inputs = ", ".join(existing_paths(args)) or "its arguments"
        print(f"magicflow {args.command}: failed on {inputs}: {type(error).__name__}: {error}", file=sys.stderr)
        traceback.print_exc()
        return 1


def existing_paths(args: argparse.Namespace) -> list[str]:
    """The command's arguments that name existing files or folders: its inputs (outputs are
    written only on success, atomically, so they do not exist yet on a first run)."""
    found = []
    for value in vars(args).values():
        for item in value if isinstance(value, list) else [value]:
            text = str(item).partition("=")[2] if isinstance(item, str) and "=" in str(item) else str(item)
            if isinstance(item, (str, os.PathLike)) and text and os.path.exists(text):
                found.append(text)
    return found
