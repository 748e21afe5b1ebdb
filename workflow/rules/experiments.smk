# Experiments: settings -> subject-level splits -> per fold: train, sample, classify, attribution.
# Everything an experiment's stages read from the config goes through experiment.json (the data
# check and the split through splits/settings.json, its part they read), so a changed training
# setting reruns the learning stages and nothing upstream (registration, slices, the split).

import json

from magicflow.config import experiment_settings, split_settings

EXPERIMENT_SETTINGS = {name: parse_time(experiment_settings, config, name) for name in EXPERIMENTS}
# MAGIC-Flow experiments (generation, classification: this file's rules) and translation ones (translation.smk)
FLOW_EXPERIMENTS = sorted(e for e, s in EXPERIMENT_SETTINGS.items() if s["model"] != "translation")
TRANSLATION_EXPERIMENTS = sorted(e for e, s in EXPERIMENT_SETTINGS.items() if s["model"] == "translation")


wildcard_constraints:
    experiment=name_regex(sorted(EXPERIMENTS)),
    fold=r"fold-\d+",


localrules:
    experiment_settings,
    split_settings,


rule experiment_settings:
    output:
        f"{RESULTS}/{{experiment}}/experiment.json",
    log:
        log_path("experiment_settings", "{experiment}"),
    benchmark:
        benchmark_path("experiment_settings", "{experiment}")
    params:
        settings=lambda wc: json.dumps(EXPERIMENT_SETTINGS[wc.experiment], indent=2, sort_keys=True),
    run:
        write_logged(output[0], f"{params.settings}\n", log[0])


# What the data check and the split read of the settings, in a file of their own: a training setting
# changes experiment.json, never this, so it retrains without re-splitting.
rule split_settings:
    output:
        f"{RESULTS}/{{experiment}}/splits/settings.json",
    log:
        log_path("split_settings", "{experiment}"),
    benchmark:
        benchmark_path("split_settings", "{experiment}")
    params:
        settings=lambda wc: json.dumps(split_settings(EXPERIMENT_SETTINGS[wc.experiment]), indent=2, sort_keys=True),
    run:
        write_logged(output[0], f"{params.settings}\n", log[0])


# The experiment against its datasets' manifests as soon as they exist: a label, class or fold
# count the data cannot give fails here, minutes in, not at split after registration and slicing.
rule check_data:
    input:
        manifests=lambda wc: [f"{RESULTS}/{d}/manifest.tsv" for d in EXPERIMENT_SETTINGS[wc.experiment]["datasets"]],
        settings=rules.split_settings.output[0],
    output:
        f"{RESULTS}/{{experiment}}/data_check.json",
    log:
        log_path("check_data", "{experiment}"),
    benchmark:
        benchmark_path("check_data", "{experiment}")
    priority: 50
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        manifests=lambda wc, input: " ".join(
            f"--manifest {d}={path}" for d, path in zip(EXPERIMENT_SETTINGS[wc.experiment]["datasets"], input.manifests)
        ),
    shell:
        magicflow_command("check-data --experiment {input.settings} {params.manifests} --out {output}")


rule split:
    input:
        unpack(slices_inputs),
        settings=rules.split_settings.output[0],
        checked=f"{RESULTS}/{{experiment}}/data_check.json",
    output:
        info=f"{RESULTS}/{{experiment}}/splits/split.json",
        folds=directory(f"{RESULTS}/{{experiment}}/splits/folds"),
    log:
        log_path("split", "{experiment}"),
    benchmark:
        benchmark_path("split", "{experiment}")
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        slices=lambda wc, input: slices_args(wc, input, arrays=False),
    shell:
        magicflow_command("split --experiment {input.settings} {params.slices} --out {output.folds} --info {output.info}")


rule train_fold:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
    output:
        model=f"{RESULTS}/{{experiment}}/models/{{fold}}/best.pt",
        curves=f"{RESULTS}/{{experiment}}/models/{{fold}}/training.tsv",
        plot=report(
            f"{RESULTS}/{{experiment}}/models/{{fold}}/training.png",
            caption="../report/training.rst",
            category="Training curves",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "fold": "{fold}"},
        ),
    log:
        log_path("train", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("train", "{experiment}_{fold}")
    wildcard_constraints:
        experiment=name_regex(FLOW_EXPERIMENTS),
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
            "train --experiment {input.settings} {params.slices} --fold-dir {input.folds}/{wildcards.fold}"
            " --out {params.out}",
            torch=True,
            gpu=True,
        )


rule sample_fold:
    input:
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        model=rules.train_fold.output.model,
    output:
        directory(f"{RESULTS}/{{experiment}}/samples/{{fold}}"),  # samples.npz, a grid per class, NIfTI samples
    log:
        log_path("sample", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("sample", "{experiment}_{fold}")
    wildcard_constraints:
        experiment=name_regex(FLOW_EXPERIMENTS),
    conda:
        torch_environment
    threads: 1  # mostly start-up and I/O: two at once beat one with two threads
    resources:
        **GPU_RESOURCES,
        mem_mb=1000,
        runtime=60,
        gpu=gpu_request,
    shell:
        magicflow_command("sample --experiment {input.settings} --model {input.model} --out {output}", torch=True, gpu=True)


rule classify_fold:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        model=rules.train_fold.output.model,
    output:
        f"{RESULTS}/{{experiment}}/predictions/{{fold}}/predictions.tsv",
    log:
        log_path("classify", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("classify", "{experiment}_{fold}")
    wildcard_constraints:
        experiment=name_regex(FLOW_EXPERIMENTS),
    conda:
        torch_environment
    threads: 1  # mostly start-up and I/O: two at once beat one with two threads
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 1000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        slices=slices_args,
    shell:
        magicflow_command(
            "classify --experiment {input.settings} {params.slices} --fold-dir {input.folds}/{wildcards.fold}"
            " --model {input.model} --out {output}",
            torch=True,
            gpu=True,
        )


rule attribution_fold:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        model=rules.train_fold.output.model,
        predictions=rules.classify_fold.output,
    output:
        directory(f"{RESULTS}/{{experiment}}/attribution/{{fold}}"),  # maps.npz and an overlay per mapped slice
    log:
        log_path("attribution", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("attribution", "{experiment}_{fold}")
    wildcard_constraints:
        experiment=name_regex(FLOW_EXPERIMENTS),
    conda:
        torch_environment
    threads: 1  # mostly start-up and I/O: two at once beat one with two threads
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 1000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        slices=slices_args,
    shell:
        magicflow_command(
            "attribution --experiment {input.settings} {params.slices} --fold-dir {input.folds}/{wildcards.fold}"
            " --model {input.model} --predictions {input.predictions} --out {output}",
            torch=True,
            gpu=True,
        )


rule train:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/models/{{fold}}/best.pt"),


rule sample:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/samples/{{fold}}"),


rule classify:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/predictions/{{fold}}/predictions.tsv"),


rule attribution:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/attribution/{{fold}}"),
