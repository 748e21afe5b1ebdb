# Evaluation and reports: per experiment, metrics (JSON, TSV, figures) from every fold's
# outputs, then one self-contained HTML page. Evaluation settings live in their own file, so
# changing them reruns evaluation and reports, not training.

import json

# Per-fold files that evaluation and reports read: input name (the command's option, with - for
# _) -> the file a rule declares, so neither command rebuilds the results layout.
FOLD_FILES = {
    "training": rules.train_fold.output.curves,
    "curves": rules.train_fold.output.plot,
    "samples": rules.sample_fold.output[0],
    "predictions": rules.classify_fold.output[0],
    "attribution": rules.attribution_fold.output[0],
    "train_benchmark": rules.train_fold.benchmark,  # peak memory of training, for the efficiency table
}
EVALUATION_READS = ("training", "samples", "predictions", "attribution", "train_benchmark")
REPORT_READS = ("curves", "samples", "attribution")


localrules:
    evaluation_settings,


rule evaluation_settings:
    output:
        f"{RESULTS}/{{experiment}}/evaluation.json",
    log:
        log_path("evaluation_settings", "{experiment}"),
    benchmark:
        benchmark_path("evaluation_settings", "{experiment}")
    params:
        settings=json.dumps({k: v for k, v in config["evaluation"].items() if k != "threads"}, indent=2, sort_keys=True),
    run:
        write_logged(output[0], f"{params.settings}\n", log[0])


rule evaluate_experiment:
    input:
        unpack(evaluation_inputs),
    output:
        json=f"{RESULTS}/{{experiment}}/metrics.json",
        tsv=f"{RESULTS}/{{experiment}}/metrics.tsv",
        figures=report(
            directory(f"{RESULTS}/{{experiment}}/evaluation"),
            patterns=["{figure}.png"],
            caption="../report/evaluation.rst",
            category="Evaluation figures",
            subcategory="{experiment}",
        ),
    log:
        log_path("evaluate", "{experiment}"),
    benchmark:
        benchmark_path("evaluate", "{experiment}")
    wildcard_constraints:
        experiment=name_regex(FLOW_EXPERIMENTS),
    conda:
        ENV_CPU
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=lambda wc, input: 2000 + 2 * int(input.size_mb),
        runtime=60,
    params:
        inputs=evaluation_args,
    shell:
        magicflow_command(
            "evaluate --experiment {input.settings} --evaluation {input.evaluation} --split {input.split} --folds {input.folds}"
            " {params.inputs} --out-dir {output.figures} --out-json {output.json} --out-tsv {output.tsv}",
            torch=True,
        )


rule report_experiment:
    input:
        **{name: lambda wc, name=name: fold_files(wc, name) for name in REPORT_READS},
        metrics=rules.evaluate_experiment.output.json,
        figures=rules.evaluate_experiment.output.figures,
        excluded=lambda wc: [f"{RESULTS}/{d}/manifest_excluded.tsv" for d in EXPERIMENT_SETTINGS[wc.experiment]["datasets"]],
        template=TEMPLATE,
        # generation experiments with synthetic_worth (use.smk): what their synthetic slices are worth
        worth=lambda wc: [f"{RESULTS}/{wc.experiment}/synthetic_worth.json"] if wc.experiment in WORTH_EXPERIMENTS else [],
    output:
        report(
            f"{RESULTS}/{{experiment}}/report.html",
            caption="../report/experiment.rst",
            category="Experiment reports",
            labels={"experiment": "{experiment}"},
        ),
    log:
        log_path("report", "{experiment}"),
    benchmark:
        benchmark_path("report", "{experiment}")
    wildcard_constraints:
        experiment=name_regex(FLOW_EXPERIMENTS),
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        excluded=lambda wc, input: " ".join(
            f"--excluded {d}={p}" for d, p in zip(EXPERIMENT_SETTINGS[wc.experiment]["datasets"], input.excluded)
        ),
        folds=lambda wc, input: fold_args(wc, input, REPORT_READS),
        worth=lambda wc, input: " ".join(f"--synthetic-worth {path}" for path in input.worth),
    shell:
        magicflow_command(
            "report --metrics {input.metrics} --evaluation {input.figures} {params.folds}"
            " {params.excluded} --template {input.template}/template.json {params.worth} --out {output}"
        )


rule evaluate:
    input:
        expand(f"{RESULTS}/{{experiment}}/metrics.json", experiment=sorted(EXPERIMENTS)),


rule report:
    input:
        expand(f"{RESULTS}/{{experiment}}/report.html", experiment=sorted(EXPERIMENTS)),
