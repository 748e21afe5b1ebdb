"""The refinement ablation of config/ablation.yaml: its Snakemake targets, and its table.

``python -m magicflow.evaluate.ablation targets`` prints the files to ask Snakemake for (each
ablation experiment's first fold: its training curve, and for classification its predictions);
``python -m magicflow.evaluate.ablation table`` prints the markdown table of
magicflow/flow/README.md ("Refinements"): per row, the best validation bits per dimension, the
test balanced accuracy (classification) and the training step time, with each row's difference
from the authors' model (the ``none`` row)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml
from sklearn.metrics import balanced_accuracy_score

from magicflow.errors import InputError

CONFIG = Path("config/ablation.yaml")
RESULTS = Path("results")
FOLD = "fold-0"


def experiments(config: Path = CONFIG) -> dict[str, dict]:
    """The ablation experiments of ``config``, in its order."""
    if not config.is_file():
        raise InputError(f"{config}: no such file (run from the repository root)")
    return yaml.safe_load(config.read_text(encoding="utf-8"))["experiments"]


def targets(config: Path = CONFIG, results: Path = RESULTS) -> list[str]:
    out = []
    for name, experiment in experiments(config).items():
        out.append(str(results / name / "models" / FOLD / "training.tsv"))
        if experiment["model"] == "classification":
            out.append(str(results / name / "predictions" / FOLD / "predictions.tsv"))
    return out


def row(name: str, experiment: dict, results: Path = RESULTS) -> dict[str, object]:
    """One experiment's figures: best validation bits/dim, balanced accuracy, ms per step."""
    curve_path = results / name / "models" / FOLD / "training.tsv"
    if not curve_path.is_file():
        raise InputError(f"{curve_path}: missing; run the ablation's targets first")
    curve = pd.read_csv(curve_path, sep="\t")
    figures: dict[str, object] = {
        "task": experiment["model"],
        "row": name.split("_", 2)[2],
        "val_bpd": float(curve["val_bpd"].min()),
        "ms_per_step": 1000 * float(curve["train_seconds"].sum()) / float(curve["steps"].sum()),
        "parameters": int(curve["parameters"].iloc[0]),
    }
    if experiment["model"] == "classification":
        predictions = pd.read_csv(results / name / "predictions" / FOLD / "predictions.tsv", sep="\t", dtype=str)
        figures["balanced_accuracy"] = balanced_accuracy_score(predictions["true"], predictions["predicted"])
    return figures


def table(config: Path = CONFIG, results: Path = RESULTS) -> str:
    rows = [row(name, experiment, results) for name, experiment in experiments(config).items()]
    lines = [
        "| task | refinement | parameters | best validation bits/dim (vs none) | test balanced accuracy | ms per step |",
        "|---|---|---|---|---|---|",
    ]
    for task in ("generation", "classification"):
        group = [r for r in rows if r["task"] == task]
        base = next((r for r in group if r["row"] == "none"), None)
        for r in group:
            delta = f" ({r['val_bpd'] - base['val_bpd']:+.3f})" if base and r is not base else ""
            accuracy = f"{r['balanced_accuracy']:.2f}" if "balanced_accuracy" in r else "-"
            lines.append(
                f"| {task} | {r['row']} | {r['parameters']:,} | {r['val_bpd']:.3f}{delta} | {accuracy} | {r['ms_per_step']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m magicflow.evaluate.ablation", description=__doc__)
    parser.add_argument("what", choices=("targets", "table"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        print(" ".join(targets(args.config, args.results)) if args.what == "targets" else table(args.config, args.results))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
