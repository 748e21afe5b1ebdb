"""The ``magicflow`` command line: one subcommand per pipeline stage.

Every command is registered here, in :data:`COMMANDS`, by the two functions that make it:
``add`` fills its argument parser and ``run(args) -> int`` runs it, each named in full as
``"module:function"``. Modules are imported only when their command runs, so ``magicflow --help``
stays fast and a stage that does not need torch never imports it."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from magicflow import __version__
from magicflow.errors import InputError


@dataclass(frozen=True)
class Command:
    help: str
    add: str  # "module:function" filling the command's argument parser
    run: str  # "module:function" running it: args -> exit status


def _stage(module: str, help_text: str) -> Command:
    """A command whose module holds only it, as ``add_arguments`` and ``run``."""
    return Command(help_text, f"{module}:add_arguments", f"{module}:run")


_EXPERIMENTS = "magicflow.experiments.commands"
COMMANDS: dict[str, Command] = {
    "demo-cohort": _stage("magicflow.demo.cohort", "write the synthetic demo BIDS cohort"),
    "manifest": _stage("magicflow.datasets.commands", "write a dataset's manifest.tsv and manifest_excluded.tsv"),
    "preprocess-template": _stage(
        "magicflow.preprocess.cli.template_cmd", "write the MNI152 1 mm template (FSL's grid) and its masks"
    ),
    "preprocess-t1": _stage("magicflow.preprocess.cli.t1_cmd", "register a T1w to MNI152 (FSL or ANTs): image, mask, transforms"),
    "preprocess-coregister": _stage(
        "magicflow.preprocess.cli.coregister_cmd", "T2w/FLAIR/PET: median frame, rigid to the T1w, then to MNI"
    ),
    "preprocess-qc": _stage("magicflow.preprocess.cli.qc_cmd", "QC figure and correlation with the template of one MNI image"),
    "preprocess-qc-table": _stage("magicflow.preprocess.cli.qc_table_cmd", "gather QC values into a table and flag low ones"),
    "slices": _stage("magicflow.slices", "coronal slices of every MNI image of a dataset"),
    "check-data": Command(
        "check an experiment's label, classes and folds against its datasets' manifests",
        f"{_EXPERIMENTS}:add_check_data_arguments",
        f"{_EXPERIMENTS}:run_check_data",
    ),
    "split": Command(
        "subject-level stratified k-fold splits of an experiment",
        f"{_EXPERIMENTS}:add_split_arguments",
        f"{_EXPERIMENTS}:run_split",
    ),
    "train": Command(
        "train a MAGIC-Flow model on one fold (resumable)", f"{_EXPERIMENTS}:add_train_arguments", f"{_EXPERIMENTS}:run_train"
    ),
    "sample": Command(
        "draw class-conditional samples from a trained model",
        f"{_EXPERIMENTS}:add_sample_arguments",
        f"{_EXPERIMENTS}:run_sample",
    ),
    "classify": Command(
        "classify a fold's test slices by maximum likelihood",
        f"{_EXPERIMENTS}:add_classify_arguments",
        f"{_EXPERIMENTS}:run_classify",
    ),
    "attribution": Command(
        "likelihood attribution maps of test slices",
        f"{_EXPERIMENTS}:add_attribution_arguments",
        f"{_EXPERIMENTS}:run_attribution",
    ),
    "baseline-train": Command(
        "train a baseline (timm classifier, or Glow/CVAE generator) on one fold, on the flow's slices and splits (resumable)",
        "magicflow.baselines.commands:add_train_arguments",
        "magicflow.baselines.commands:run_train",
    ),
    "baseline-classify": Command(
        "classify a fold's test slices with a trained baseline (the flow's predictions.tsv columns)",
        "magicflow.baselines.commands:add_classify_arguments",
        "magicflow.baselines.commands:run_classify",
    ),
    "baseline-sample": Command(
        "draw a generative baseline's class-conditional samples (the flow's samples.npz layout)",
        "magicflow.baselines.commands:add_sample_arguments",
        "magicflow.baselines.commands:run_sample",
    ),
    "baseline-translate": Command(
        "translate a fold's test sources with a translation baseline (U-Net, training mean) into translations.npz",
        "magicflow.baselines.commands:add_translate_arguments",
        "magicflow.baselines.commands:run_translate",
    ),
    "translate-train": Command(
        "train the DUAL-GLOW dual flow of a translation experiment on one fold (resumable)",
        "magicflow.experiments.translation:add_train_arguments",
        "magicflow.experiments.translation:run_train",
    ),
    "translate": Command(
        "translate a fold's test sources (mode, samples, uncertainty) with its trained dual flow",
        "magicflow.experiments.translation:add_translate_arguments",
        "magicflow.experiments.translation:run_translate",
    ),
    "export-model": _stage(
        "magicflow.experiments.portable",
        "one folder that travels: every fold's weights, calibration, the training data's bits/dim and a model card",
    ),
    "synthesise": _stage(
        "magicflow.evaluate.synthesis",
        "a labelled synthetic dataset from a generation experiment, samples near a training slice withheld",
    ),
    "synthetic-worth": _stage(
        "magicflow.evaluate.synthetic_worth",
        "classifiers trained on real, synthetic and mixed slices, tested on real test subjects",
    ),
    "predict": _stage(
        "magicflow.evaluate.predict",
        "apply an exported model to new scans: posteriors per fold and ensemble, attribution maps, refusals, report",
    ),
    "evaluate": _stage("magicflow.evaluate.commands", "metrics (JSON, TSV) and figures of one experiment"),
    "translation-evaluate": _stage(
        "magicflow.evaluate.translation_experiment", "metrics (JSON, TSV) and figures of one translation experiment"
    ),
    "report": _stage("magicflow.report.experiment", "the self-contained HTML report of one experiment"),
    "translation-report": _stage("magicflow.report.translation", "the self-contained HTML report of one translation experiment"),
    "bench": _stage("magicflow.experiments.bench", "benchmark the flow (and a normflows Glow peer) on CPU or GPU"),
    "gpu-slot": Command(
        "run a command on a GPU of its own (a local run's GPU jobs; see magicflow/gpu_slots.py)",
        "magicflow.gpu_slots:add_arguments",
        "magicflow.gpu_slots:run_command",
    ),
}


def load(target: str) -> Callable:
    """The function a ``"module:function"`` entry names (importing its module now)."""
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magicflow",
        description="MAGIC-Flow pipeline stages. Snakemake rules call these; each also runs on its own.",
    )
    parser.add_argument("--version", action="version", version=f"magicflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help)
        if name == selected:
            load(command.add)(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(selected).parse_args(argv)
    run = load(COMMANDS[args.command].run)
    try:
        return int(run(args) or 0)
    except InputError as error:  # bad input, foreseen where it is raised: the message names the file and the problem
        sys.stdout.flush()
        print(f"magicflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (
        Exception
    ) as error:  # anything else: one line naming the inputs first (what a log's reader looks for), then the traceback
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
