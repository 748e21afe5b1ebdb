"""``magicflow translation-report``: ``results/<experiment>/report.html`` of a translation experiment.

One page: the Table 1 metrics of the dual flow and its baselines (mean +/- std over test images,
with the paired test against the flow), Table 2's real-versus-generated classification check
for every model (marked circular where the true test diagnosis was the side information),
triptychs (source, real, generated, uncertainty) per fold, generated against real regional
uptake, the age sweep when age conditions the model, cost (Table 5) and training curves, and
the images the manifests left out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from magicflow import __version__
from magicflow.errors import InputError
from magicflow.view import describe
from magicflow.io import atomic_path
from magicflow.report import html as h

#: triptychs shown per fold (the rest stay in results/<experiment>/evaluation/)
TRIPTYCHS_PER_FOLD = 2
METRIC_HEADERS = {"mae": "MAE", "correlation": "CorCoef", "psnr": "PSNR (dB)", "ssim": "SSIM"}
#: DUAL-GLOW's Table 1 (ADNI FDG, 10 folds), for scale: (CorCoef, PSNR, SSIM)
DUAL_GLOW_TABLE1 = {"correlation": "0.975", "psnr": "29.56 ± 2.66", "ssim": "0.898 ± 0.06"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, type=Path, help="results/<experiment>/metrics.json")
    parser.add_argument("--evaluation", required=True, type=Path, help="results/<experiment>/evaluation (figures)")
    parser.add_argument("--curves", action="append", default=[], metavar="FOLD=PNG", help="a fold's training.png")
    parser.add_argument(
        "--excluded", action="append", default=[], metavar="DATASET=TSV", help="a dataset's manifest_excluded.tsv"
    )
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/report.html")


def _mean_std(block: dict, digits: int = 3) -> str:
    if not block or block.get("mean") is None:
        return "&ndash;"
    return f"{h.fmt(block['mean'], digits)} ± {h.fmt(block.get('std'), digits)}"


def table1(m: dict) -> str:
    best = {}
    for key in METRIC_HEADERS:
        values = [(e["metrics"][key].get("mean"), e["id"]) for e in m["models"] if e["metrics"][key].get("mean") is not None]
        if values:
            best[key] = (min if key == "mae" else max)(values)[1]
    rows = []
    for entry in m["models"]:
        cells = "".join(
            f"<td>{'<b>' if best.get(k) == entry['id'] else ''}{_mean_std(entry['metrics'][k])}{'</b>' if best.get(k) == entry['id'] else ''}</td>"
            for k in METRIC_HEADERS
        )
        test = entry.get("comparison")
        paired = (
            "; ".join(
                f"{METRIC_HEADERS[k]} {h.fmt(test[k]['difference'], 3)} (p {h.fmt(test[k]['p_wilcoxon'], 2)})"
                for k in METRIC_HEADERS
            )
            if test
            else "&ndash;"
        )
        rows.append(
            f"<tr><td>{h.esc(entry['model'])}</td>{cells}<td>{entry['metrics']['mae'].get('n', '')}</td><td>{paired}</td></tr>"
        )
    head = "".join(f"<th>{h.esc(v)}</th>" for v in ["model", *METRIC_HEADERS.values(), "images", "flow minus model (Wilcoxon p)"])
    paper = "".join(f"<td>{DUAL_GLOW_TABLE1.get(k, '&ndash;')}</td>" for k in METRIC_HEADERS)
    rows.append(f'<tr class="note"><td>DUAL-GLOW paper (ADNI FDG, 3-D)</td>{paper}<td>80 per fold</td><td>&ndash;</td></tr>')
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Inside the brain mask, mean ± std over test images (an image\'s slices averaged first), all folds '
        "pooled; the best per column in bold. The paired column is the dual flow's mean minus that model's over the same "
        "images, with the two-sided Wilcoxon signed-rank p. Every model gets the same side information (the overview's); "
        "the training mean ignores it and the class mean is the trivial floor for it. The paper's row is for scale only: "
        "other data, 3-D volumes.</p>"
    )


#: Table 2's rate columns
TABLE2_RATES = ("accuracy", "balanced_accuracy", "false_negative_rate", "false_positive_rate", "n")


def table2(m: dict) -> str:
    """Table 2: what the SVM trained on real PET makes of real and of each model's generated PET,
    each row saying which side information made it and whether the check is circular."""
    block = m.get("table2") or {}
    if "skipped" in block:
        return f'<p class="note">Not run: {h.esc(block["skipped"])}.</p>'
    entries = block.get("models") or [  # metrics.json of before per-model checks: the flow only
        {"model": "DUAL-GLOW", "side": m.get("side"), "circular": m.get("side") == "label", "generated": block["generated"]}
    ]
    rows = [{"tested on": "real PET", "side information": "&ndash;", "check": "reference", **block["real"]}]
    for entry in entries:
        verdict = "<b>circular</b>: the true test diagnosis was its input" if entry["circular"] else "fair"
        rows.append(
            {
                "tested on": f"{entry['model']}: generated PET",
                "side information": h.esc(entry["side"]),
                "check": verdict,
                **entry["generated"],
            }
        )
    if block.get("side_predicted"):
        rows.append(
            {
                "tested on": "source-only classifier (the predicted side information itself)",
                "side information": "&ndash;",
                "check": "what generated PET is read against",
                **block["side_predicted"],
            }
        )
    columns = ["tested on", "side information", "check", *TABLE2_RATES]
    body = "".join(
        "<tr>" + "".join(f"<td>{r[c] if c in ('side information', 'check') else h.fmt(r.get(c))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    head = "".join(f"<th>{h.esc(c)}</th>" for c in columns)
    circular = [e["model"] for e in entries if e["circular"]]
    warning = (
        f'<p class="note"><b>Circular check</b> for {h.esc(", ".join(circular))}: with translation.side label the '
        "translators were given each test subject's true diagnosis, so an SVM finding AD in their output measures "
        "obedience to that label, not disease signal found in the source. Use side: none or predicted for this check.</p>"
        if circular
        else ""
    )
    return (
        warning
        + f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        + f'<p class="note">An RBF SVM per fold, trained on the real training targets (positive class {h.esc(block["positive"])}), '
        "tested on the real and on each model's translated test targets of the same subjects (DUAL-GLOW's Table 2: 94% "
        "real, 91% synthetic). Generated PET is measured against the true diagnoses; what it can know of them is its side "
        "information: none (only the source image), predicted (the label a classifier of the source images alone "
        "predicts; its own rates are the last row: generated PET that only repeats them adds nothing) or label (the "
        "answer itself: circular). The training mean gives every subject one image; the class mean gives each the mean "
        "of the class its side information names, the trivial floor for that side information.</p>"
    )


def uptake(m: dict, evaluation: Path) -> str:
    parts = []
    for entry in m["models"]:
        parts.append(f"<h3>{h.esc(entry['model'])}</h3>" + h.table(entry["uptake"]))
    figures = "".join(
        h.image(evaluation / f"uptake_{e['id']}.png", f"{e['model']}: generated against real mean uptake per region", 420)
        for e in m["models"]
    )
    return figures + "".join(parts)


def triptychs(m: dict, evaluation: Path) -> str:
    """The triptychs evaluation drew (metrics.json lists them), at most TRIPTYCHS_PER_FOLD per fold."""
    shown: dict[str, int] = {}
    parts = []
    for t in m.get("triptychs", []):
        shown[t["fold"]] = shown.get(t["fold"], 0) + 1
        if shown[t["fold"]] <= TRIPTYCHS_PER_FOLD:
            parts.append(h.image(evaluation / t["file"], f"{t['fold']}: {t['image']} (offset {t['offset']})", 720))
    return "".join(parts) or '<p class="note">no triptychs</p>'


def age_sweep(m: dict, evaluation: Path) -> str:
    if "age_sweep" not in m:
        return '<p class="note">Age does not condition this model (translation.side is not age).</p>'
    return h.image(evaluation / "age_sweep.png", f"{m['age_sweep']['image']}: translated across ages", 900)


def excluded_section(excluded: dict[str, pd.DataFrame]) -> str:
    rows = []
    for dataset, table in excluded.items():
        for _, row in table.iterrows():
            rows.append(
                {"dataset": dataset, "image": row.get("image", ""), "reason": row.get("reason", row.get("exclusion_reason", ""))}
            )
    return h.table(rows) if rows else '<p class="note">The manifests left nothing out.</p>'


def build_report(m: dict, curves: dict[str, Path], evaluation: Path, excluded: dict) -> str:
    flow = m["models"][0]["metrics"]
    overview = h.cards(
        [
            ("task", h.esc(f"{m['source']} → {m['target']}")),
            ("test images", m["test_images"]),
            ("DUAL-GLOW MAE", _mean_std(flow["mae"], 3)),
            ("DUAL-GLOW SSIM", _mean_std(flow["ssim"], 3)),
            ("side information", h.esc(m["side"])),
            ("images", h.esc(describe(m.get("view"), m["image_size"]))),
        ]
    )
    curves_html = "".join(h.image(p, f"{f}: training curves", 560) for f, p in sorted(curves.items()))
    sections = [
        ("overview", "Overview", overview),
        ("table1", "Translation against the real target (Table 1)", table1(m)),
        ("table2", "Diagnosis from real and generated images (Table 2)", table2(m)),
        ("triptychs", "Source, real, generated, uncertainty", triptychs(m, evaluation)),
        ("uptake", "Regional uptake", uptake(m, evaluation)),
        ("age", "Age sweep", age_sweep(m, evaluation)),
        ("cost", "Cost (Table 5)", h.table(m["cost"])),
        ("training", "Training", curves_html),
        ("left-out", "Left out", excluded_section(excluded)),
    ]
    subtitle = f"MAGIC-Flow pipeline {__version__}: translation {m['source']} → {m['target']}, folds {', '.join(m['folds'])}"
    return h.page(f"Translation report: {m['experiment']}", subtitle, sections)


def run(args: argparse.Namespace) -> int:
    from magicflow.experiments.commands import parse_pairs

    try:
        metrics = json.loads(args.metrics.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read {args.metrics}: {error}; rerun the translation-evaluate stage") from None
    if metrics.get("model") != "translation":
        raise InputError(f"{args.metrics} is not a translation experiment's metrics; use magicflow report")
    excluded = {
        name: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        for name, path in parse_pairs(args.excluded, "excluded").items()
    }
    page = build_report(metrics, parse_pairs(args.curves, "curves"), args.evaluation, excluded)
    with atomic_path(args.out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(f"{metrics['experiment']}: translation report ({len(page) / 1e6:.1f} MB) -> {args.out}")
    return 0
