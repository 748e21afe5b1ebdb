# Evaluation and reports: per experiment, metrics (JSON, TSV, figures) from every fold's
# outputs, then one self-contained HTML page. Evaluation settings live in their own file, so
# changing them reruns evaluation and reports, not training.

import json


def evaluation_inputs(wc):
    settings = EXPERIMENT_SETTINGS[wc.experiment]
    folds = folds_of(wc.experiment)
    base = f"{RESULTS}/{wc.experiment}"
    return {
        **slices_inputs(wc),
        "settings": f"{base}/experiment.json",
        "evaluation": f"{base}/evaluation.json",
        "training": [f"{base}/models/{f}/training.tsv" for f in folds],
        "samples": [f"{base}/samples/{f}/samples.npz" for f in folds],
        "predictions": [f"{base}/predictions/{f}/predictions.tsv" for f in folds],
        "maps": [f"{base}/attribution/{f}/maps.npz" for f in folds],
        "qc": [f"{RESULTS}/{d}/qc.tsv" for d in settings["datasets"]],
        "groundtruth": [f"{RESULTS}/{d}/bids" for d in settings["datasets"] if d in DEMO_DATASETS],
    }


def evaluation_args(wc):
    datasets = EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
    words = [slices_args(wc)]
    words += [f"--qc {d}={RESULTS}/{d}/qc.tsv" for d in datasets]
    words += [f"--groundtruth {d}={RESULTS}/{d}/bids/derivatives/groundtruth" for d in datasets if d in DEMO_DATASETS]
    return " ".join(words)


localrules:
    evaluation_settings,


rule evaluation_settings:
    output:
        f"{RESULTS}/{{experiment}}/evaluation.json",
    params:
        settings=json.dumps({k: v for k, v in config["evaluation"].items() if k != "threads"}, indent=2, sort_keys=True),
    log:
        log_path("evaluation_settings", "{experiment}"),
    run:
        write_logged(output[0], params.settings + "\n", log[0])


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
    params:
        inputs=evaluation_args,
        results=lambda wc: f"{RESULTS}/{wc.experiment}",
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=lambda wc, input: 2000 + 2 * int(input.size_mb),
        runtime=60,
    log:
        log_path("evaluate", "{experiment}"),
    benchmark:
        benchmark_path("evaluate", "{experiment}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} OMP_NUM_THREADS={threads} {TORCH_ENV} {MAGICFLOW} evaluate --experiment {input.settings} --evaluation {input.evaluation}"
        " {params.inputs} --results {params.results} --benchmarks {RESULTS}/benchmarks"
        " --out-dir {output.figures} --out-json {output.json} --out-tsv {output.tsv}"


rule report_experiment:
    input:
        metrics=rules.evaluate_experiment.output.json,
        figures=rules.evaluate_experiment.output.figures,
        excluded=lambda wc: [f"{RESULTS}/{d}/manifest_excluded.tsv" for d in EXPERIMENT_SETTINGS[wc.experiment]["datasets"]],
        template=TEMPLATE,
    output:
        report(
            f"{RESULTS}/{{experiment}}/report.html",
            caption="../report/experiment.rst",
            category="Experiment reports",
            labels={"experiment": "{experiment}"},
        ),
    params:
        excluded=lambda wc: " ".join(f"--excluded {d}={RESULTS}/{d}/manifest_excluded.tsv" for d in EXPERIMENT_SETTINGS[wc.experiment]["datasets"]),
        results=lambda wc: f"{RESULTS}/{wc.experiment}",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("report", "{experiment}"),
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} {MAGICFLOW} report --metrics {input.metrics} --results {params.results} --evaluation {input.figures}"
        " {params.excluded} --template {input.template}/template.json --out {output}"


rule evaluate:
    input:
        expand(f"{RESULTS}/{{experiment}}/metrics.json", experiment=sorted(EXPERIMENTS)),


rule report:
    input:
        expand(f"{RESULTS}/{{experiment}}/report.html", experiment=sorted(EXPERIMENTS)),
