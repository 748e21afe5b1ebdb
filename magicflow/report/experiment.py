"""``magicflow report``: ``results/<experiment>/report.html``, one self-contained page.

Everything a researcher needs to judge an experiment without opening another file: what
data went in (against the paper's Table 4 where it applies), the metric tables, sample grids
beside real slices, attribution overlays and curves, efficiency, and a section per dataset."""

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

#: attribution overlays shown per fold (the rest stay in results/<experiment>/attribution/)
OVERLAYS_PER_FOLD = 2
#: per-fold files the page shows: option name -> what each FOLD=PATH names (the report rule's inputs)
FOLD_FILES = {
    "curves": "training.png",
    "samples": "samples folder (samples_<class>.png grids)",
    "attribution": "attribution folder (overlay PNGs)",
}
CLASSIFICATION_COLUMNS = ["accuracy", "balanced_accuracy", "macro_auc", "macro_precision", "macro_recall", "macro_f1", "n"]
GENERATION_COLUMNS = [
    "fid",
    "fid_ci",
    "kid",
    "kid_std",
    "kid_ci",
    "precision",
    "recall",
    "density",
    "coverage",
    "n_real",
    "n_fake",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, type=Path, help="results/<experiment>/metrics.json")
    for name, what in FOLD_FILES.items():
        parser.add_argument(f"--{name}", action="append", default=[], metavar="FOLD=PATH", help=f"a fold's {what}")
    parser.add_argument("--evaluation", required=True, type=Path, help="results/<experiment>/evaluation (figures)")
    parser.add_argument(
        "--excluded", action="append", default=[], metavar="DATASET=TSV", help="a dataset's manifest_excluded.tsv"
    )
    parser.add_argument("--template", type=Path, help="results/template/template.json (which template space was used)")
    parser.add_argument(
        "--synthetic-worth", type=Path, help="results/<experiment>/synthetic_worth.json (generation experiments; optional)"
    )
    parser.add_argument("--out", required=True, type=Path, help="results/<experiment>/report.html")


def _generation_rows(block: dict) -> list[dict]:
    """The generated row and the real reference row of one block (overall, a class or a fold),
    each saying what it compares with what; a metric not computed is a dash with its reason in
    the note."""
    rows = []
    for source in ("generated", "real"):
        values = block.get(source, {})
        row = {
            "images": "generated vs test subjects"
            if source == "generated"
            else "real training subjects vs test subjects (reference)"
        }
        row.update({c: values.get(c) for c in GENERATION_COLUMNS if c in values})
        for c in ("fid_sd", "n_folds"):
            if c in values:
                row[c] = values[c]
        if "kid_sd" in values and "n_folds" in values and values["n_folds"] > 1:
            row["kid_sd_over_folds"] = values["kid_sd"]
        row["note"] = values.get("skipped", values.get("note", ""))
        rows.append(row)
    return rows


def _gen_headers(suffix: str) -> dict[str, str]:
    """Column titles that name each number's unit and reference."""
    return {
        "fid": f"FID_{suffix}",
        "fid_sd": "FID sd over folds",
        "fid_ci": "FID 95% CI (subjects resampled)",
        "kid": f"KID_{suffix}",
        "kid_std": "KID std over subsets",
        "kid_sd_over_folds": "KID sd over folds",
        "kid_ci": "KID 95% CI (subjects resampled)",
        "precision": f"precision_{suffix}",
        "recall": f"recall_{suffix}",
        "density": f"density_{suffix}",
        "coverage": f"coverage_{suffix}",
        "n_real": "test slices",
        "n_fake": "compared slices",
        "n_folds": "folds",
    }


def overview(m: dict, evaluation: Path | None = None) -> str:
    """Headline numbers, what the model saw and, for a crop, where its box sits on the slice."""
    c, g, a = m["classification"], m["generation"], m["attribution"]
    mean = next((r for r in c["summary"] if r["fold"] == "mean"), {})
    std = next((r for r in c["summary"] if r["fold"] == "std"), {})
    suffix = g["suffix"]
    items = [
        (
            "balanced accuracy (mean over folds)",
            f"{h.fmt(mean.get('balanced_accuracy'))} ± {h.fmt(std.get('balanced_accuracy'))}",
        ),
        ("macro AUC", h.fmt(mean.get("macro_auc"))),
        ("chance level", h.fmt(1 / len(m["classes"]))),
        (
            "pooled balanced accuracy, p vs chance (label shuffles)",
            f"{h.fmt(c['chance']['balanced_accuracy'])} (p = {c['chance']['p_value']:.2g}, n = {c['chance']['n']})",
        ),
        ("expected calibration error", h.fmt(c["calibration"]["ece"])),
        (
            f"FID_{suffix} generated / real ref.",
            f"{h.fmt(g['overall']['generated'].get('fid'))} / {h.fmt(g['overall']['real'].get('fid'))}",
        ),
        (f"coverage_{suffix}", h.fmt(g["overall"]["generated"].get("coverage"))),
    ]
    items += _attribution_cards(a)
    text = (
        f"<p>{h.esc(m['model'])} model, label <b>{h.esc(m['label'])}</b>, {len(m['classes'])} classes "
        f"({h.esc(', '.join(m['classes']))}), datasets {h.esc(', '.join(m['datasets']))}, "
        f"images {h.esc(describe(m.get('view'), m.get('image_size', 182)))}, "
        f"{m['folds_run']} of {m['folds']} folds run. Feature extractor: {h.esc(m['feature_extractor']['name'])} "
        f"(checksum {h.esc(m['feature_extractor']['checksum'][:16])}&hellip;).</p>"
    )
    if evaluation is not None and (m.get("view") or {}).get("mode") == "crop":
        text += h.image(
            evaluation / "crop.png", "the crop's box on the template brain mask slice (same box for every image)", 300
        )
    return text + h.cards(items)


def _attribution_cards(a: dict) -> list[tuple[str, str]]:
    """Attribution headline numbers, each beside its no-model control (nested ROI F1 beside a
    random region of equal area; the model map's AUC beside the best map without a model)."""
    items = []
    roi = a.get("roi")
    if roi:
        items.append(
            (
                "attribution ROI F1, held-out subjects / random region",
                f"{h.fmt(roi['nested']['f1'])} / {h.fmt(roi['control']['nested']['f1'])}",
            )
        )
    elif "best_f1" in a:  # metrics written before issue 30
        items.append(("attribution: best ROI F1 (optimistic)", h.fmt(a.get("best_f1"))))
    scores = (a.get("groundtruth") or {}).get("scores")
    if scores:
        model = scores.get("evidence") or next(b for b in scores.values() if b.get("kind") == "model")
        trivial = max((b.get("mean") or 0 for b in scores.values() if b.get("kind") == "trivial"), default=None)
        items.append(
            (
                "attribution vs planted uptake, AUC per subject: evidence map / best map without a model",
                f"{h.fmt(model.get('mean'))} / {h.fmt(trivial)}",
            )
        )
    return items


def data(m: dict, excluded: dict[str, pd.DataFrame]) -> str:
    d = m["data"]
    paper = d.get("paper_counts") or {}
    counts = [{**r, "paper_slices": paper.get(r["class"])} for r in d["counts"]]
    body = "<h3>Images and slices per class</h3>"
    body += h.table(
        counts,
        ["dataset", "class", "subjects", "images", "slices", "paper_slices"],
        {"slices": "slices (training offsets)", "paper_slices": "paper, Table 4"},
    )
    if not paper:
        body += '<p class="note">This experiment is not one of the paper\'s four tasks: no Table 4 counts to compare with.</p>'
    body += "<h3>Registration QC flags</h3>"
    body += (
        h.table(d["qc_flags"], ["dataset", "label", "measure", "score", "threshold", "flag_reason"])
        if d["qc_flags"]
        else '<p class="note">No image of this experiment was flagged.</p>'
    )
    body += "<h3>Images excluded when the manifest was built</h3>"
    for dataset, table in excluded.items():
        if table.empty:
            body += f'<p class="note">{h.esc(dataset)}: none.</p>'
            continue
        reasons = table.groupby("reason").size().reset_index(name="images").to_dict(orient="records")
        body += f"<p>{h.esc(dataset)}: {len(table)} excluded.</p>" + h.table(reasons)
    return body


def _generation_intro(g: dict, m: dict) -> str:
    """What the generation numbers are measured on, against what, and which rule left a cell empty."""
    suffix, name = h.esc(g["suffix"]), h.esc(m["feature_extractor"]["name"])
    defs = g.get("definitions")
    if not defs:  # metrics.json written before the per-fold, test-subject evaluation
        return (
            f'<p class="note">Fold {h.esc(g["fold"])}: {g["n_generated"]} generated slices against {g["n_heldout"]} held-out '
            f"real slices (validation and test subjects). Metrics with the suffix _{suffix} use the {name} features; they are "
            f"comparable within this pipeline, not with the paper's FID_Rad. The reference row compares real training slices "
            f"with the same held-out slices.</p>"
        )
    folds = g.get("folds_scored", [g["fold"]])
    extractor = g.get("extractor", {})
    accuracy = extractor.get("heldout_balanced_accuracy")
    acc_text = (
        f"Its balanced accuracy on the validation subjects is {h.fmt(accuracy)} (chance "
        f"{h.fmt(extractor.get('chance_balanced_accuracy'))}, {h.fmt(extractor.get('steps'))} optimiser steps"
        f"{', mean over folds' if len(folds) > 1 else ''}): features of a network near chance cannot tell good samples from bad."
        if accuracy is not None
        else "No held-out accuracy is available for this extractor."
    )
    rules = "".join(f"<li>{h.esc(k)}: {h.esc(v)}</li>" for k, v in g.get("min_sizes", {}).items())
    return (
        f'<p class="note">Unit: {h.esc(defs["unit"])}. Judged against {h.esc(defs["judged_against"])}: '
        f"{g['n_heldout']} test slices of {g.get('n_test_subjects', '?')} subjects over {len(folds)} fold(s) "
        f"({h.esc(', '.join(folds))}). Generated: {h.esc(defs['generated'])} ({g.get('n_compared', '?')} of "
        f"{g.get('n_generated_total', g['n_generated'])} compared over the folds). Reference: {h.esc(defs['reference'])}; it is what samples indistinguishable "
        f"from new subjects would score at these sizes, so read the generated row against it, not against 0. "
        f"{h.esc(defs['folds'])}. {h.esc(defs.get('intervals', ''))}. Metrics with the suffix _{suffix} use the {name} features "
        f"({'trained per fold on that fold’s training subjects' if m['feature_extractor'].get('trained_per_fold') else 'pretrained'}); "
        f"they are comparable within this pipeline, not with the paper's FID_Rad. {acc_text}</p>"
        f'<p class="note">A dash means not computed, for the reason in the note; the minimum sizes are:</p><ul>{rules}</ul>'
    )


def _memorisation_text(memo: dict) -> str:
    if "null_median_ratio" not in memo:
        if "fraction_below_0.5" not in memo:
            return f"<p>Memorisation check not computed: {h.esc(memo.get('not_computed', memo.get('note', '')))}</p>"
        return (
            f"<p>For each generated slice, the pixel distance to its nearest training slice divided by the distance to its "
            f"nearest held-out slice. Median ratio {h.fmt(memo['median_ratio'])}; {h.fmt(memo['fraction_below_0.5'])} of "
            f"generated slices are under 0.5. (Written without a null: the ratio of unseen real slices is not known.)</p>"
        )
    return (
        "<p>For each generated slice: pixel distance to its nearest training slice (training offsets) divided by the "
        "distance to its nearest test slice of another subject. The null is the same ratio for the real test slices "
        "themselves, which the generator never saw: nearest-neighbour distances shrink with set size, so even unseen real "
        "slices sit below 1.</p>"
        + h.table(
            [
                {
                    "what": "generated slices",
                    "median": memo.get("median_ratio"),
                    "below1": memo.get("fraction_below_1"),
                    "below_p05": memo.get("fraction_below_null_p05"),
                    "n": memo.get("n_generated"),
                },
                {
                    "what": "real test slices (null)",
                    "median": memo.get("null_median_ratio"),
                    "below1": memo.get("null_fraction_below_1"),
                    "below_p05": 0.05,
                    "n": memo.get("n_null"),
                },
            ],
            ["what", "median", "below1", "below_p05", "n"],
            {
                "median": "median ratio",
                "below1": "fraction below 1",
                "below_p05": f"fraction below the null's 5th percentile ({h.fmt(memo.get('null_p05'))})",
                "n": "slices (per fold)" if memo.get("n_folds", 1) > 1 else "slices",
            },
        )
        + "<p>Copying shows as a generated fraction well above 0.05 below the null's 5th percentile"
        + (" (values are means over folds)." if memo.get("n_folds", 1) > 1 else ".")
        + "</p>"
    )


def generation(m: dict, folds: dict[str, dict[str, Path]], evaluation: Path) -> str:
    g = m["generation"]
    suffix = g["suffix"]
    headers = _gen_headers(suffix)
    several = any(r.get("n_folds", 1) > 1 for r in g["overall"].values() if isinstance(r, dict))
    columns = ["images", "fid", *(["fid_sd"] if several else []), "fid_ci", "kid", *(["kid_sd_over_folds"] if several else [])]
    columns += ["kid_ci", "precision", "recall", "density", "coverage", "n_real", "n_fake", "note"]
    body = _generation_intro(g, m)
    title = "All classes" + (" (mean over folds; intervals per fold below)" if several else "")
    body += f"<h3>{title}</h3>" + h.table(_generation_rows(g["overall"]), columns, headers)
    if g.get("per_fold") and several:
        rows = [{"fold": f["fold"], **r} for f in g["per_fold"] for r in _generation_rows(f["overall"])]
        body += "<h3>Per fold</h3>" + h.table(
            rows, ["fold", "images", "fid", "fid_ci", "kid", "kid_ci", "coverage", "n_real", "n_fake", "note"], headers
        )
    rows = []
    for name, block in g["per_class"].items():
        for r in _generation_rows(block):
            rows.append({"class": name, **r})
    body += "<h3>Per class</h3>" + h.table(
        rows, ["class", "images", "fid", "kid", "precision", "recall", "density", "coverage", "n_real", "n_fake", "note"], headers
    )
    ms = [{"images": {"generated": "generated", "real": "real test subjects"}.get(k, k), **v} for k, v in g["ms_ssim"].items()]
    body += (
        "<h3>MS-SSIM (diversity: lower intra-class = more diverse)</h3>"
        + ('<p class="note">Real pairs never join two slices of one subject.</p>' if g.get("definitions") else "")
        + h.table(ms, ["images", "intra", "intra_std", "inter", "inter_std", "intra_pairs", "inter_pairs"])
    )
    body += h.image(
        evaluation / "real_vs_generated.png", f"Per class: test slices (left) and generated slices (right), {g['fold']}."
    )
    samples = folds["samples"].get(g["fold"])
    for png in sorted(samples.glob("samples_*.png")) if samples else []:
        body += h.image(png, f"Sample grid: {png.stem.removeprefix('samples_')}", width=560)
    body += "<h3>Memorisation check</h3>" + _memorisation_text(g["memorisation"])
    body += h.image(
        evaluation / "memorisation.png", "Ratio distributions (generated and null) and the closest generated/training pairs."
    )
    return body


def _unit_note(unit: dict | None) -> str:
    """What the classification numbers count, from metrics.json's ``classification.unit``."""
    if not unit:  # metrics written before the unit was recorded: per slice, %.6g posteriors
        return "Unit not recorded (metrics from an older evaluation): per slice."
    lo, hi = unit["slices_min"], unit["slices_max"]
    slices = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return (
        f"Per image ({unit['images']} test images of {unit['subjects']} subjects, log-likelihoods summed over "
        f"{slices} slice{'s' if hi > 1 else ''} each, the log prior added once); AUC and the rejection order from the "
        f"margins between the summed log-likelihoods."
    )


def classification(m: dict, evaluation: Path) -> str:
    c = m["classification"]
    unit = c.get("unit")
    temperatures = ", ".join(f"{k} {v:.3g}" for k, v in (unit or {}).get("temperature", {}).items() if v is not None)
    body = f'<p class="note">{h.esc(_unit_note(unit))}'
    if unit:
        body += (
            f" Temperature ({h.esc(temperatures)}): {h.esc(unit['temperature_origin'])}. Chance test: labels permuted "
            f"across {h.esc(unit['permutation_unit'])}s ({c['chance'].get('units', unit['subjects'])} units), "
            f"p = {c['chance']['p_value']:.2g}."
        )
    body += "</p>"
    body += "<h3>Per fold and mean ± std over folds (the paper's Table 3 layout)</h3>"
    body += h.table(c["summary"], ["fold", *CLASSIFICATION_COLUMNS], {"n": "n (images)" if unit else "n"})
    if c.get("per_slice") and unit and unit["slices_max"] > 1:
        body += "<h3>Per slice, for comparison only (test folds pooled, every slice counted as independent)</h3>"
        body += h.table([c["per_slice"]], CLASSIFICATION_COLUMNS, {"n": "n (slices)"})
    recall = [{"class": k, "recall (pooled test folds)": v} for k, v in c["pooled"].get("per_class_recall", {}).items()]
    body += "<h3>Per-class recall</h3>" + h.table(recall)
    what = "images" if unit else "predictions"
    body += h.image(evaluation / "confusion.png", f"Confusion matrix over all test folds ({what}).")
    body += h.image(
        evaluation / "reliability.png",
        f"Reliability diagram: posterior confidence against accuracy ({what}; temperature fitted on validation folds"
        + (", add-one-smoothed)." if unit else ")."),
    )
    body += h.image(
        evaluation / "rejection.png",
        f"Accuracy-rejection curve ({what}): the least confident predictions are rejected first"
        + (" (smallest lead of the predicted class's summed log-likelihood, ties shared)" if unit else "")
        + "; a rising curve means confidence is informative.",
    )
    return body


TABLE3_HEADERS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_auc": "AUC",
    "macro_precision": "Precision (macro)",
    "macro_recall": "Recall (macro)",
    "macro_f1": "F1 (macro)",
}


PAPER_NOTE = (
    " The paper column holds the authors' published values for the model (with their pretraining, at 182 x 182, on "
    "their cohort), to read beside this run's, not as its target; n/a: a model the paper does not report."
)
TABLE3_SHORT = {
    "accuracy": "acc.",
    "balanced_accuracy": "bal. acc.",
    "macro_auc": "AUC",
    "macro_precision": "P",
    "macro_recall": "R",
    "macro_f1": "F1",
}


def _paper_table3(paper: dict | None) -> str:
    if not paper:
        return "n/a"
    return ", ".join(f"{TABLE3_SHORT.get(k, k)} {v[0]:.2f} ± {v[1]:.2f}" for k, v in paper.items())


def _paper_tables12(paper: dict | None) -> str:
    if not paper:
        return "n/a"
    parts = []
    if paper.get("fid_rad") is not None:
        parts.append(f"FID_Rad {paper['fid_rad']:.3g}, KID_Rad {paper['kid_rad']:.3g}")
    if paper.get("precision") is not None:
        parts.append("P/R/D/C " + "/".join(f"{paper[k]:.2f}" for k in ("precision", "recall", "density", "coverage")))
    parts.append(f"MS-SSIM intra/inter {paper['ms_ssim_intra']:.2f}/{paper['ms_ssim_inter']:.2f}")
    return ", ".join(parts)


def _paper_table5(paper: dict | None) -> str:
    if not paper:
        return "n/a"
    return (
        f"{paper['steps'] / 1000:.0f}k steps, {paper['hours']:g} h, {paper['gpu_gb']:g} GB GPU, "
        f"{paper['ms_per_step']:g} ms/step, {paper['images_per_s']:g} generated images/s"
    )


def _p(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def comparison(m: dict) -> str:
    """Table 3: one row per model (MAGIC-Flow first), mean ± std over folds, the best mean of
    each column in bold with a ▲, then the paired tests of MAGIC-Flow against each baseline."""
    c = m["comparison"]
    metrics = c["metrics"]
    published = any(row.get("paper") for row in c["models"])
    head = "<th>model</th><th>pretrained weights</th><th>folds</th>" + "".join(
        f"<th>{h.esc(TABLE3_HEADERS.get(x, x))}</th>" for x in metrics
    )
    head += "<th>paper, Table 3 (mean ± std)</th>" if published else ""

    def paper_cell(row: dict) -> str:
        return f"<td>{_paper_table3(row.get('paper'))}</td>" if published else ""

    rows = []
    for row in c["models"]:
        cells = []
        for metric in metrics:
            text = f"{h.fmt(row['mean'][metric])} ± {h.fmt(row['std'][metric])}"
            cells.append(f"<td><b>{text} ▲</b></td>" if row["id"] in c["best"].get(metric, []) else f"<td>{text}</td>")
        weights = (
            Path(row["weights"]).name
            if row.get("weights")
            else ("&ndash;" if row["id"] == "magicflow" else "none (from scratch)")
        )
        rows.append(
            f"<tr><td>{h.esc(row['model'])}</td><td>{h.esc(weights) if row.get('weights') else weights}</td>"
            f"<td>{row['folds']}</td>{''.join(cells)}{paper_cell(row)}</tr>"
        )
    unit = f" Unit: {h.esc(c['unit'])}." if c.get("unit") else ""
    body = (
        '<p class="note">Every model trained and tested on the same folds, slices and augmentation; metrics from each '
        "model's predictions.tsv by the same functions, mean ± std (sample std) over folds." + unit + " ▲ and bold: "
        "the best mean of the column." + (PAPER_NOTE if published else "") + "</p>"
        f'<table class="table3"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    names = {r["id"]: r["model"] for r in c["models"]}
    tests = [
        {
            "baseline": names.get(t["baseline"], t["baseline"]),
            "folds": t["folds"],
            "difference": t["mean_difference"],
            "p_ttest": _p(t["p_ttest"]),
            "p_wilcoxon": _p(t["p_wilcoxon"]),
            "note": t.get("note", ""),
        }
        for t in c["tests"]
    ]
    body += "<h3>MAGIC-Flow against each baseline (per-fold balanced accuracy)</h3>"
    body += h.table(
        tests,
        ["baseline", "folds", "difference", "p_ttest", "p_wilcoxon", "note"],
        {"difference": "mean difference (MAGIC-Flow − baseline)", "p_ttest": "p, paired t-test", "p_wilcoxon": "p, Wilcoxon"},
    )
    body += f'<p class="note">{h.esc(c["test"])}</p>'
    return body


def generative_comparison(m: dict, evaluation: Path) -> str:
    """Tables 1-2: one row per model (MAGIC-Flow first), each scored on the same held-out real
    slices by the same functions, then each model's real-vs-generated grid."""
    c = m["comparison"]
    headers = {**_gen_headers(c["suffix"]), "ms_ssim_intra": "MS-SSIM intra-class", "ms_ssim_inter": "MS-SSIM inter-class"}
    reference = {"model": "real training slices (reference)", "metrics": c["reference"], "ms_ssim": {}}
    reference["paper"] = c.get("paper_reference")
    published = any(model.get("paper") for model in [*c["models"], reference])
    rows = []
    for model in [*c["models"], reference]:
        values = model["metrics"]
        row = {"model": model["model"], **{k: values.get(k) for k in GENERATION_COLUMNS if k in values}}
        row["fid_sd"] = values.get("fid_sd")
        row["ms_ssim_intra"] = model["ms_ssim"].get("intra")
        row["ms_ssim_inter"] = model["ms_ssim"].get("inter")
        row["note"] = values.get("skipped", values.get("note", ""))
        row["paper"] = _paper_tables12(model.get("paper"))
        rows.append(row)
    headers["paper"] = "paper, Tables 1-2 (FID_Rad features)"
    scored = c.get("folds_scored", [c["fold"]])
    reference["model"] = "real training subjects (reference)" if "folds_scored" in c else reference["model"]
    where = (
        f"Folds {h.esc(', '.join(scored))}: every model trained on the same training slices and augmentation; its samples, "
        f"subsampled to the test set's class mix, scored against the same {c['n_heldout']} test-subject slices (evaluation "
        f"offsets) by the same functions; {'mean over folds, ' if len(scored) > 1 else ''}95% intervals by resampling subjects. "
        f"The reference row is the training subjects' slices at the same offsets, matched in size and class mix."
        if "folds_scored" in c
        else f"Fold {h.esc(c['fold'])}: every model trained on the same training slices and augmentation; its samples (95% "
        f"intervals by bootstrap) scored against the same {c['n_heldout']} held-out real slices by the same functions."
    )
    body = f'<p class="note">{where}{PAPER_NOTE if published else ""}</p>'
    several = any((model["metrics"] or {}).get("n_folds", 1) > 1 for model in c["models"])
    columns = [
        "model",
        "fid",
        *(["fid_sd"] if several else []),
        *GENERATION_COLUMNS[1:],
        "ms_ssim_intra",
        "ms_ssim_inter",
        "note",
    ]
    columns += ["paper"] if published else []
    body += h.table(rows, columns, headers)
    for model in c["models"]:
        body += h.image(evaluation / model["figure"], f"{model['model']}: held-out real slices (left) and samples (right).")
    return body


COST_COLUMNS = {
    "parameters": "parameters",
    "steps": "optimiser steps (sum over folds)",
    "wall_s": "training wall time (s, sum over folds)",
    "peak_rss_mb": "peak RAM (MB, max over folds)",
    "peak_gpu_mb": "peak GPU (MB, max over folds)",
    "ms_per_step": "ms per step",
    "images_per_s": "training images/s",
}


def _na(value, digits: int = 3) -> str:
    return "n/a" if value is None else h.fmt(value, digits)


def cost(m: dict) -> str:
    """Table 5: one row per model (MAGIC-Flow first): its size and what training it cost."""
    c = m["comparison"]
    rows = []
    for row in c["cost"]:
        cells = {k: _na(row.get(k)) for k in COST_COLUMNS}
        cells["parameters"] = "n/a" if row.get("parameters") is None else f"{row['parameters'] / 1e6:.2f} M"
        cells["steps"] = "n/a" if row.get("steps") is None else f"{int(row['steps']):,}"
        cells["paper"] = _paper_table5(row.get("paper"))
        rows.append({"model": row["model"], "folds": str(row["folds"]), **cells})
    published = any(row.get("paper") for row in c["cost"])
    body = (
        '<p class="note">Per model, over the folds it trained: optimiser steps and training wall time summed (wall time '
        "from each training job's Snakemake benchmark, so it includes start-up, validation and checkpoints), peak memory the "
        "largest fold's (RAM: the benchmark's max_rss; GPU: torch's peak allocation), ms per step and images/s from "
        "training.tsv's optimiser-loop seconds. n/a: not in the files given (no benchmark outside Snakemake, or a "
        "training.tsv from before these columns)."
        + (PAPER_NOTE.replace("at 182 x 182", "one A100, batch 8") if published else "")
        + "</p>"
    )
    columns = ["model", "folds", *COST_COLUMNS, *(["paper"] if published else [])]
    return body + h.table(rows, columns, {**COST_COLUMNS, "paper": "paper, Table 5 (A100, batch 8)"})


_MAP_NAMES = {
    "evidence": "evidence: log p(x|true class) minus the other classes' mean, per pixel (model)",
    "low_likelihood": "low log p(x|true class) (model)",
    "intensity_high": "image intensity, high (no model)",
    "intensity_low": "image intensity, low (no model)",
    "difference_from_other_class": "|image - mean image of the other class(es)|, other subjects (no model)",
    "random_region": "random region of the planted mask's area (chance)",
}


def _mean_sd(block: dict) -> str:
    """'mean ± sd' of a per-subject summary; the sd is a dash for a single subject."""
    return f"{h.fmt(block.get('mean'))} ± {h.fmt(block.get('sd'))}"


def _roi_text(a: dict) -> str:
    """The ROI F1 paragraph: nested and fixed-threshold F1 beside random regions of equal area."""
    roi = a["roi"]
    control = roi["control"]
    rows = [
        {
            "selection": "threshold chosen on inner subject-grouped folds (nested)",
            "attribution ROI": f"{h.fmt(roi['nested']['f1'])} ± {h.fmt(roi['nested']['f1_std'])}",
            "random region, same area": f"{h.fmt(control['nested']['f1'])} ± {h.fmt(control['nested']['f1_std'])}",
            "thresholds chosen": ", ".join(f"{t:.2f}" for t in roi["nested"]["chosen_thresholds"]),
        },
        {
            "selection": f"fixed in advance at {roi['fixed']['threshold']:.2f} (the paper's peak)",
            "attribution ROI": f"{h.fmt(roi['fixed']['f1'])} ± {h.fmt(roi['fixed']['f1_std'])}",
            "random region, same area": f"{h.fmt(control['fixed']['f1'])} ± {h.fmt(control['fixed']['f1_std'])}",
            "thresholds chosen": f"{roi['fixed']['threshold']:.2f}",
        },
    ]
    return (
        f"<p>Macro F1 of a logistic regression on gray-level features inside each slice's ROI, on held-out subjects: "
        f"mean ± sd over {roi['folds']} outer folds grouped by subject ({roi['n_subjects']} subjects, {roi['n_maps']} maps); "
        "no subject's slices are on both sides of any split. The control replaces each ROI by a random region of the "
        "same area in the same slice: an ROI is evidence of localisation only where it beats that.</p>"
        + h.table(rows)
        + f'<p class="note">The curve\'s maximum ({h.fmt(a.get("best_f1"))} at {h.fmt(a.get("best_threshold"))}) is selected on '
        "the folds it is scored on and is optimistic; it is shown for the figure only.</p>"
    )


def _groundtruth_text(gt: dict) -> str:
    """Model maps beside trivial maps against the planted uptake, with the unit stated."""
    if "scores" not in gt:  # metrics written before issue 30: the pooled AUCs only
        return (
            f"<p>Over {gt['slices']} slices with planted uptake ({h.fmt(gt['uptake_fraction'])} of the brain): AUC of the evidence map "
            f"against the uptake mask {h.fmt(gt['auc_evidence'])}; AUC of the low-likelihood map of the true class "
            f"{h.fmt(gt['auc_low_likelihood'])}, pooled over pixels; no trivial map was scored beside them.</p>"
        )
    rows = []
    for name, block in gt["scores"].items():
        beats = block.get("beats_every_trivial_fraction")
        rows.append(
            {
                "map": _MAP_NAMES.get(name, name),
                "AUC": _mean_sd(block),
                "subjects": block.get("n_subjects"),
                "beats every no-model map in": "" if block.get("kind") != "model" else f"{h.fmt(beats, 2)} of subjects",
            }
        )
    best = max(
        (b for b in gt["scores"].values() if b.get("kind") == "trivial" and b.get("mean") is not None),
        key=lambda b: b["mean"],
        default=None,
    )
    return (
        f"<p>Pixel ROC AUC against the planted uptake mask inside the brain, <b>per slice, averaged per subject; "
        f"mean ± sd over {gt['n_subjects']} subjects</b> ({gt['slices']} slices, planted uptake "
        f"{h.fmt(gt['uptake_fraction'])} of the brain). 0.5 = no relation. The maps without a model are the bar: "
        f"the model finds the planted signal only where its maps beat them (best of them here: {h.fmt(best and best['mean'])}); "
        "a subject counts for a model map when its AUC there exceeds every map without a model.</p>"
        + h.table(rows)
        + f'<p class="note">Pooled over all scored pixels after per-slice min-max scaling (the earlier headline, not '
        f"per subject): evidence {h.fmt(gt.get('pooled_auc_evidence'))}, low likelihood "
        f"{h.fmt(gt.get('pooled_auc_low_likelihood'))}.</p>"
    )


def attribution(m: dict, folds: dict[str, dict[str, Path]], evaluation: Path) -> str:
    a = m["attribution"]
    body = (
        '<p class="note">Maps H(x, y) of Section 5: each pixel\'s share of log p(x|y); blue = low likelihood, red = high. '
        "Regions of interest are cut from each test slice's map for its predicted label.</p>"
    )
    for fold in range(m["folds_run"]):
        overlays = folds["attribution"].get(f"fold-{fold}")
        for png in sorted(overlays.glob("*.png"))[:OVERLAYS_PER_FOLD] if overlays else []:
            body += h.image(png, f"fold-{fold}: {png.stem}", width=720)
    body += "<h3>Threshold analysis (the paper's Figure 3)</h3>"
    if "roi" in a:
        body += _roi_text(a)
        body += h.image(
            evaluation / "attribution_thresholds.png",
            "F1 on held-out subjects and retained area against the threshold; gray: random regions of the same area.",
        )
    elif "thresholds" in a:  # metrics written before issue 30
        body += (
            f"<p>Best macro F1 {h.fmt(a['best_f1'])} at threshold {h.fmt(a['best_threshold'])} over {a['n_maps']} maps "
            "(gray-level features inside the ROI, cross-validated over slices; the threshold picked on the same folds).</p>"
        )
        body += h.image(evaluation / "attribution_thresholds.png", "F1 and retained area against the threshold.")
    else:
        body += f'<p class="note">Skipped: {h.esc(a.get("thresholds_skipped", "no maps"))}</p>'
    gt = a.get("groundtruth")
    if gt:
        body += "<h3>Against the demo's ground truth</h3>"
        if "auc_evidence" in gt:
            body += _groundtruth_text(gt)
            body += h.image(
                evaluation / "attribution_groundtruth.png",
                "Evidence map and |image - other class mean| with the planted uptake region outlined.",
            )
        else:
            body += f'<p class="note">{h.esc(gt.get("note", ""))}</p>'
    return body


def efficiency(m: dict, folds: dict[str, dict[str, Path]]) -> str:
    body = h.table(
        m["efficiency"],
        [
            "fold",
            "epochs",
            "steps",
            "training_s",
            "ms_per_step",
            "epoch_s_with_validation",
            "peak_rss_mb",
            "peak_gpu_mb",
            "generated_per_s",
            "device",
        ],
        {
            "training_s": "training (s)",
            "ms_per_step": "ms/step",
            "epoch_s_with_validation": "s/epoch incl. validation",
            "peak_rss_mb": "peak RAM (MB)",
            "peak_gpu_mb": "peak GPU (MB)",
            "generated_per_s": "generated images/s",
        },
    )
    for fold in range(m["folds_run"]):
        curves = folds["curves"].get(f"fold-{fold}", Path(f"fold-{fold} training.png (not given)"))
        body += h.image(curves, f"fold-{fold}: training and validation curves", width=620)
    return body


def per_dataset(m: dict, dataset: str, excluded: dict[str, pd.DataFrame]) -> str:
    counts = [r for r in m["data"]["counts"] if r["dataset"] == dataset]
    body = h.table(counts, ["class", "subjects", "images", "slices"])
    metrics = m["classification"]["per_dataset"].get(dataset)
    if metrics:
        body += "<h3>Classification on this dataset's test slices (folds pooled)</h3>"
        body += h.table([metrics], CLASSIFICATION_COLUMNS)
        recall = [{"class": k, "recall": v} for k, v in metrics.get("per_class_recall", {}).items()]
        body += h.table(recall)
    flags = [f for f in m["data"]["qc_flags"] if f["dataset"] == dataset]
    body += f"<p>{len(flags)} QC-flagged image(s); {len(excluded.get(dataset, []))} image(s) excluded from the manifest.</p>"
    return body


def _comparison_sections(metrics: dict, evaluation: Path) -> list[tuple[str, str, str]]:
    c = metrics.get("comparison")
    if not c:
        return []
    if c.get("kind") == "generation":
        sections = [
            ("tables12", "Tables 1-2: MAGIC-Flow and the generative baselines", generative_comparison(metrics, evaluation))
        ]
    else:
        sections = [("table3", "Table 3: MAGIC-Flow and the baselines", comparison(metrics))]
    if c.get("cost"):
        sections.append(("table5", "Table 5: cost per model", cost(metrics)))
    return sections


def synthetic_worth(worth: dict) -> str:
    """Classifiers trained on real, synthetic and mixed slices, tested on the real test subjects."""
    rows = [
        {
            "fold": r["fold"],
            "classifier": r["classifier"],
            "training set": r["training_set"],
            "real / synthetic slices": f"{r['real_slices']} / {r['synthetic_slices']}",
            "balanced accuracy [95 % interval]": f"{h.fmt(r['balanced_accuracy'])} {h.fmt(r['interval'])}",
            "vs real only [95 % interval]": f"{r['difference_vs_real']:+.3f} {h.fmt(r['difference_interval'])}",
            f"recall of {r['smallest_class']}": r["smallest_class_recall"],
        }
        for r in worth["rows"]
    ]
    smallest = [r for r in rows if r["training set"] in ("real", "real + synthetic smallest class")]
    return (
        "<p class=\"note\">Each classifier (the flow's classification model at the experiment's preset, and ResNet-18, both "
        "from scratch with the experiment's training settings) is trained on the fold's real training slices, on the "
        "generator's synthetic slices only (train on synthetic, test on real), on real plus synthetic slices at ratios "
        f"{', '.join(f'{r:g}' for r in worth['ratios'])} of the real count, and on real plus synthetic slices of the smallest "
        "class, selected on real validation slices and tested on the fold's real test subjects, whom the generator never "
        "saw. Intervals: 2.5th-97.5th percentiles over resampled test subjects; differences are paired (the same "
        "resamples).</p>" + h.table(rows) + "<h3>Augmenting the smallest class</h3>" + h.table(smallest)
    )


def build_report(
    metrics: dict,
    folds: dict[str, dict[str, Path]],
    evaluation: Path,
    excluded: dict[str, pd.DataFrame],
    template_space: str = "",
    worth: dict | None = None,
) -> str:
    """The page; ``folds`` maps each :data:`FOLD_FILES` name to ``{fold name: path}``; ``worth``
    is synthetic_worth.json, where a generation experiment has one."""
    folds = {name: folds.get(name, {}) for name in FOLD_FILES}
    sections = [
        ("overview", "Overview", overview(metrics, evaluation)),
        ("data", "Data", data(metrics, excluded)),
        ("generation", "Generation", generation(metrics, folds, evaluation)),
        ("classification", "Classification", classification(metrics, evaluation)),
        *_comparison_sections(metrics, evaluation),
        ("attribution", "Attribution", attribution(metrics, folds, evaluation)),
        ("efficiency", "Training and efficiency", efficiency(metrics, folds)),
    ]
    if worth is not None:
        sections.insert(3, ("synthetic-worth", "What the synthetic slices are worth", synthetic_worth(worth)))
    for dataset in metrics["datasets"]:
        sections.append((f"dataset-{dataset}", f"Dataset: {dataset}", per_dataset(metrics, dataset, excluded)))
    space = f", template {template_space}" if template_space else ""
    subtitle = f"MAGIC-Flow pipeline {__version__}: {metrics['model']} model over {', '.join(metrics['datasets'])}{space}"
    return h.page(f"MAGIC-Flow report: {metrics['experiment']}", subtitle, sections)


def run(args: argparse.Namespace) -> int:
    from magicflow.experiments.commands import parse_pairs

    try:
        metrics = json.loads(args.metrics.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read {args.metrics}: {error}; rerun the evaluate stage") from None
    excluded = {
        name: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        for name, path in parse_pairs(args.excluded, "excluded").items()
    }
    space = json.loads(args.template.read_text()).get("space", "") if args.template and args.template.exists() else ""
    folds = {name: parse_pairs(getattr(args, name), name) for name in FOLD_FILES}
    worth = None
    if args.synthetic_worth:
        try:
            worth = json.loads(args.synthetic_worth.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read {args.synthetic_worth}: {error}; rerun synthetic_worth") from None
    page = build_report(metrics, folds, args.evaluation, excluded, space, worth)
    with atomic_path(args.out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(f"{metrics['experiment']}: report ({len(page) / 1e6:.1f} MB) -> {args.out}")
    return 0
