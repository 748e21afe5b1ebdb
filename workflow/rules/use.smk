# Use a trained model: each MAGIC-Flow experiment exported as one folder that travels
# (results/<experiment>/model: weights, calibration, training bits/dim, model card); the
# config's `predict` entries, each a model applied to a configured dataset
# (results/predictions/<name>: predictions, refusals, attribution maps, report); and a labelled
# synthetic dataset per generation experiment (results/<experiment>/synthetic).

FOLD_FILES["model"] = rules.train_fold.output.model
EXPORT_READS = ("model", "predictions")

# entries whose experiment is active (an experiment skipped for unconfigured datasets skips them too)
PREDICT = {}
for _name, _entry in config["predict"].items():
    if "model" in _entry or _entry["experiment"] in EXPERIMENTS:
        PREDICT[_name] = _entry
    else:
        print(f"predict {_name!r} skipped: experiment {_entry['experiment']!r} is skipped", file=sys.stderr)


wildcard_constraints:
    prediction=name_regex(sorted(PREDICT)),


rule export_model:
    input:
        unpack(slices_inputs),
        **{name: lambda wc, name=name: fold_files(wc, name) for name in EXPORT_READS},
        settings=rules.experiment_settings.output[0],
        split=rules.split.output.info,
        folds=rules.split.output.folds,
        metrics=rules.evaluate_experiment.output.json,
    output:
        directory(f"{RESULTS}/{{experiment}}/model"),  # fold-<k>.pt, model.json, MODEL_CARD.md
    log:
        log_path("export_model", "{experiment}"),
    benchmark:
        benchmark_path("export_model", "{experiment}")
    wildcard_constraints:
        experiment=name_regex(FLOW_EXPERIMENTS),
    conda:
        torch_environment
    threads: 1
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 1000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        slices=slices_args,
        folds=lambda wc, input: fold_args(wc, input, EXPORT_READS),
        kinds=lambda wc: " ".join(
            f"--dataset-kind {config['datasets'][d]['kind']}" for d in EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
        ),
    shell:
        magicflow_command(
            "export-model --experiment {input.settings} {params.slices} --split {input.split} --folds {input.folds}"
            " {params.folds} --metrics {input.metrics} {params.kinds} --out {output}",
            torch=True,
            gpu=True,
        )


rule predict_dataset:
    input:
        model=predict_model,
        tsv=lambda wc: f"{RESULTS}/{PREDICT[wc.prediction]['dataset']}/slices/slices.tsv",
        npz=lambda wc: f"{RESULTS}/{PREDICT[wc.prediction]['dataset']}/slices/slices.npz",
    output:
        directory(f"{RESULTS}/predictions/{{prediction}}"),  # predictions.tsv, refused.tsv, metrics.json, report.html
    log:
        log_path("predict", "{prediction}"),
    benchmark:
        benchmark_path("predict", "{prediction}")
    conda:
        torch_environment
    threads: 1
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 1000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        dataset=lambda wc: PREDICT[wc.prediction]["dataset"],
        device=config["training"]["device"],
        options=lambda wc: ("--ignore-labels " if PREDICT[wc.prediction]["ignore_labels"] else "")
        + f"--attribution-max {PREDICT[wc.prediction]['attribution_max']}",
    shell:
        magicflow_command(
            "predict --model {input.model} --slices {params.dataset}={input.tsv} --arrays {params.dataset}={input.npz}"
            " {params.options} --device {params.device} --out {output}",
            torch=True,
            gpu=True,
        )


GENERATION_EXPERIMENTS = sorted(e for e in FLOW_EXPERIMENTS if EXPERIMENT_SETTINGS[e]["model"] == "generation")


rule synthesise_experiment:
    input:
        unpack(slices_inputs),
        model=lambda wc: fold_files(wc, "model"),
        settings=rules.experiment_settings.output[0],
        folds=rules.split.output.folds,
    output:
        directory(f"{RESULTS}/{{experiment}}/synthetic"),  # synthetic.tsv, synthetic.npz, slices/, dataset_description.json
    log:
        log_path("synthesise", "{experiment}"),
    benchmark:
        benchmark_path("synthesise", "{experiment}")
    wildcard_constraints:
        experiment=name_regex(GENERATION_EXPERIMENTS),
    conda:
        torch_environment
    threads: 1
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 1000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        slices=slices_args,
        models=lambda wc, input: fold_args(wc, input, ["model"]),
        synthesis=lambda wc: " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in sorted(config["synthesis"].items()) if k != "worth"
        ),
    shell:
        magicflow_command(
            "synthesise --experiment {input.settings} {params.slices} --folds {input.folds} {params.models}"
            " {params.synthesis} --out {output}",
            torch=True,
            gpu=True,
        )


# generation experiments whose report shows what their synthetic slices are worth
WORTH_EXPERIMENTS = [e for e in GENERATION_EXPERIMENTS if config["experiments"][e]["synthetic_worth"]]


rule synthetic_worth:
    input:
        unpack(slices_inputs),
        settings=rules.experiment_settings.output[0],
        folds=rules.split.output.folds,
        synthetic=rules.synthesise_experiment.output[0],
    output:
        f"{RESULTS}/{{experiment}}/synthetic_worth.json",
    log:
        log_path("synthetic_worth", "{experiment}"),
    benchmark:
        benchmark_path("synthetic_worth", "{experiment}")
    wildcard_constraints:
        experiment=name_regex(WORTH_EXPERIMENTS),
    conda:
        torch_environment
    threads: config["training"]["threads"]
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 5000 + 3 * int(input.size_mb),
        # one training's limit per classifier it trains (folds x classifiers x the 3 + ratios training sets)
        runtime=lambda wc: config["training"]["runtime_minutes"]
        * len(folds_of(wc.experiment))
        * len(config["synthesis"]["worth"]["classifiers"])
        * (3 + len(config["synthesis"]["worth"]["ratios"])),
        gpu=gpu_request,
    params:
        slices=slices_args,
        worth=lambda wc: " ".join(
            [
                f"--classifiers {','.join(config['synthesis']['worth']['classifiers'])}",
                f"--ratios {','.join(str(r) for r in config['synthesis']['worth']['ratios'])}",
                f"--bootstrap {config['synthesis']['worth']['bootstrap']}",
            ]
            + ([f"--epochs {config['synthesis']['worth']['epochs']}"] if config["synthesis"]["worth"]["epochs"] else [])
        ),
    shell:
        magicflow_command(
            "synthetic-worth --experiment {input.settings} {params.slices} --folds {input.folds}"
            " --synthetic {input.synthetic}/synthetic.npz {params.worth} --out {output}",
            torch=True,
            gpu=True,
        )


rule synthesise:
    input:
        expand(rules.synthesise_experiment.output[0], experiment=GENERATION_EXPERIMENTS),


rule export:
    input:
        expand(rules.export_model.output[0], experiment=FLOW_EXPERIMENTS),


rule predict:
    input:
        expand(rules.predict_dataset.output[0], prediction=sorted(PREDICT)),
