# Translation experiments (model: translation): per fold the DUAL-GLOW dual flow is trained on
# the fold's (source, target) slice pairs and translates its test sources (translate_train,
# translate_fold); translation baselines (U-Net, training mean, class mean) train through baseline_train and
# translate through baseline_translate; translation_evaluate and translation_report score and
# show them all. Splits and settings are the shared experiment_settings and split rules.


rule translate_train:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
    output:
        model=f"{RESULTS}/{{experiment}}/translation/models/{{fold}}/best.pt",
        curves=f"{RESULTS}/{{experiment}}/translation/models/{{fold}}/training.tsv",
        plot=report(
            f"{RESULTS}/{{experiment}}/translation/models/{{fold}}/training.png",
            caption="../report/training.rst",
            category="Training curves",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "fold": "{fold}"},
        ),
    log:
        log_path("translate_train", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("translate_train", "{experiment}_{fold}")
    wildcard_constraints:
        experiment=name_regex(TRANSLATION_EXPERIMENTS),
    retries: config["training"]["retries"]  # each attempt resumes from last.pt with a longer limit
    conda:
        torch_environment
    threads: config["training"]["threads"]
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 5000 + 3 * int(input.size_mb),
        runtime=lambda wc, attempt: config["training"]["runtime_minutes"] * attempt,
        gpu=gpu_request,
    params:
        slices=slices_args,
        out=lambda wc, output: Path(output.model).parent,  # also holds last.pt, the resumable state
    shell:
        magicflow_command(
            "translate-train --experiment {input.settings} {params.slices} --fold-dir {input.folds}/{wildcards.fold}"
            " --out {params.out}",
            torch=True,
            gpu=True,
        )


rule translate_fold:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        model=rules.translate_train.output.model,
    output:
        directory(f"{RESULTS}/{{experiment}}/translation/outputs/{{fold}}"),  # translations.npz, NIfTI
    log:
        log_path("translate", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("translate", "{experiment}_{fold}")
    wildcard_constraints:
        experiment=name_regex(TRANSLATION_EXPERIMENTS),
    conda:
        torch_environment
    threads: 1
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 1500 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        slices=slices_args,
    shell:
        magicflow_command(
            "translate --experiment {input.settings} {params.slices} --fold-dir {input.folds}/{wildcards.fold}"
            " --model {input.model} --out {output}",
            torch=True,
            gpu=True,
        )


rule baseline_translate:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        baseline=rules.baseline_settings.output[0],
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        model=rules.baseline_train.output.model,
    output:
        directory(f"{RESULTS}/{{experiment}}/baselines/{{baseline}}/translations/{{fold}}"),
    log:
        log_path("baseline_translate", "{experiment}_{baseline}_{fold}"),
    benchmark:
        benchmark_path("baseline_translate", "{experiment}_{baseline}_{fold}")
    wildcard_constraints:
        experiment=name_regex(TRANSLATION_EXPERIMENTS),
    conda:
        torch_environment
    threads: 1
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 1500 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        slices=slices_args,
    shell:
        magicflow_command(
            "baseline-translate --experiment {input.settings} --baseline {input.baseline} {params.slices}"
            " --fold-dir {input.folds}/{wildcards.fold} --model {input.model} --out {output}",
            torch=True,
            gpu=True,
        )


rule translation_evaluate:
    input:
        unpack(translation_inputs),
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
        experiment=name_regex(TRANSLATION_EXPERIMENTS),
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=lambda wc, input: 2000 + 2 * int(input.size_mb),
        runtime=60,
    params:
        inputs=translation_args,
    shell:
        magicflow_command(
            "translation-evaluate --experiment {input.settings} --folds {input.folds} {params.inputs}"
            " --template {input.template} --out-dir {output.figures} --out-json {output.json} --out-tsv {output.tsv}",
            torch=True,
        )


rule translation_report:
    input:
        metrics=rules.translation_evaluate.output.json,
        figures=rules.translation_evaluate.output.figures,  # evaluation figures, the triptychs among them
        curves=lambda wc: [
            rules.translate_train.output.plot.format(experiment=wc.experiment, fold=f) for f in folds_of(wc.experiment)
        ],
        excluded=lambda wc: [f"{RESULTS}/{d}/manifest_excluded.tsv" for d in EXPERIMENT_SETTINGS[wc.experiment]["datasets"]],
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
        experiment=name_regex(TRANSLATION_EXPERIMENTS),
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        folds=lambda wc, input: " ".join(f"--curves {f}={c}" for f, c in zip(folds_of(wc.experiment), input.curves)),
        excluded=lambda wc, input: " ".join(
            f"--excluded {d}={p}" for d, p in zip(EXPERIMENT_SETTINGS[wc.experiment]["datasets"], input.excluded)
        ),
    shell:
        magicflow_command(
            "translation-report --metrics {input.metrics} --evaluation {input.figures} {params.folds} {params.excluded} --out {output}"
        )


rule translate:
    input:
        [rules.translate_fold.output[0].format(experiment=e, fold=f) for e in TRANSLATION_EXPERIMENTS for f in folds_of(e)],
        baseline_outputs(rules.baseline_translate.output[0], "translation"),
