# Experiments: settings -> subject-level splits -> per fold: train, sample, classify, attribution.
# Everything an experiment's stages read from the config goes through experiment.json, so a
# changed training setting reruns these stages and nothing upstream (registration, slices).

import json

from magicflow.config import experiment_settings

EXPERIMENT_SETTINGS = {name: experiment_settings(config, name) for name in EXPERIMENTS}
GPU = 0 if config["training"]["device"] == "cpu" else 1
# torch's CPU thread pool (libgomp) spin-waits by default: jobs that share cores then slow each
# other down many times over. Passive waiting keeps a shared machine usable.
TORCH_ENV = "OMP_WAIT_POLICY=PASSIVE"


def folds_of(experiment):
    return [f"fold-{k}" for k in range(EXPERIMENT_SETTINGS[experiment]["run_folds"])]


def experiment_outputs(pattern):
    """pattern with {experiment} and {fold}, expanded over every active experiment and fold."""
    return [pattern.format(experiment=e, fold=f) for e in EXPERIMENTS for f in folds_of(e)]


def slices_inputs(wc):
    datasets = EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
    return {
        "tsv": [f"{RESULTS}/{d}/slices/slices.tsv" for d in datasets],
        "npz": [f"{RESULTS}/{d}/slices/slices.npz" for d in datasets],
    }


def slices_args(wc, arrays=True):
    datasets = EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
    words = [f"--slices {d}={RESULTS}/{d}/slices/slices.tsv" for d in datasets]
    if arrays:
        words += [f"--arrays {d}={RESULTS}/{d}/slices/slices.npz" for d in datasets]
    return " ".join(words)


wildcard_constraints:
    experiment=name_regex(sorted(EXPERIMENTS)),
    fold=r"fold-\d+",


localrules:
    experiment_settings,


rule experiment_settings:
    output:
        f"{RESULTS}/{{experiment}}/experiment.json",
    params:
        settings=lambda wc: json.dumps(EXPERIMENT_SETTINGS[wc.experiment], indent=2, sort_keys=True),
    log:
        log_path("experiment_settings", "{experiment}"),
    run:
        write_logged(output[0], params.settings + "\n", log[0])


rule split:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
    output:
        info=f"{RESULTS}/{{experiment}}/splits/split.json",
        folds=directory(f"{RESULTS}/{{experiment}}/splits/folds"),
    params:
        slices=lambda wc: slices_args(wc, arrays=False),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("split", "{experiment}"),
    benchmark:
        benchmark_path("split", "{experiment}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} {MAGICFLOW} split --experiment {input.settings} {params.slices} --out {output.folds} --info {output.info}"


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
    params:
        slices=slices_args,
        out=lambda wc: f"{RESULTS}/{wc.experiment}/models/{wc.fold}",
    threads: config["training"]["threads"]
    resources:
        mem_mb=lambda wc, input: 5000 + 3 * int(input.size_mb),
        runtime=240,
        gpu=GPU,
    log:
        log_path("train", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("train", "{experiment}_{fold}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} OMP_NUM_THREADS={threads} {TORCH_ENV} {MAGICFLOW} train --experiment {input.settings} {params.slices}"
        " --fold-dir {input.folds}/{wildcards.fold} --out {params.out}"


rule sample_fold:
    input:
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        model=rules.train_fold.output.model,
    output:
        f"{RESULTS}/{{experiment}}/samples/{{fold}}/samples.npz",
    params:
        out=lambda wc: f"{RESULTS}/{wc.experiment}/samples/{wc.fold}",
    threads: 1  # mostly start-up and I/O: two at once beat one with two threads
    resources:
        mem_mb=1000,
        runtime=60,
        gpu=GPU,
    log:
        log_path("sample", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("sample", "{experiment}_{fold}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} OMP_NUM_THREADS={threads} {TORCH_ENV} {MAGICFLOW} sample --experiment {input.settings} --model {input.model}"
        " --out {params.out}"


rule classify_fold:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        model=rules.train_fold.output.model,
    output:
        f"{RESULTS}/{{experiment}}/predictions/{{fold}}/predictions.tsv",
    params:
        slices=slices_args,
    threads: 1  # mostly start-up and I/O: two at once beat one with two threads
    resources:
        mem_mb=lambda wc, input: 1000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=GPU,
    log:
        log_path("classify", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("classify", "{experiment}_{fold}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} OMP_NUM_THREADS={threads} {TORCH_ENV} {MAGICFLOW} classify --experiment {input.settings} {params.slices}"
        " --fold-dir {input.folds}/{wildcards.fold} --model {input.model} --out {output}"


rule attribution_fold:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        model=rules.train_fold.output.model,
        predictions=rules.classify_fold.output,
    output:
        f"{RESULTS}/{{experiment}}/attribution/{{fold}}/maps.npz",
    params:
        slices=slices_args,
        out=lambda wc: f"{RESULTS}/{wc.experiment}/attribution/{wc.fold}",
    threads: 1  # mostly start-up and I/O: two at once beat one with two threads
    resources:
        mem_mb=lambda wc, input: 1000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=GPU,
    log:
        log_path("attribution", "{experiment}_{fold}"),
    benchmark:
        benchmark_path("attribution", "{experiment}_{fold}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} OMP_NUM_THREADS={threads} {TORCH_ENV} {MAGICFLOW} attribution --experiment {input.settings} {params.slices}"
        " --fold-dir {input.folds}/{wildcards.fold} --model {input.model} --predictions {input.predictions}"
        " --out {params.out}"


rule train:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/models/{{fold}}/best.pt"),


rule sample:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/samples/{{fold}}/samples.npz"),


rule classify:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/predictions/{{fold}}/predictions.tsv"),


rule attribution:
    input:
        experiment_outputs(f"{RESULTS}/{{experiment}}/attribution/{{fold}}/maps.npz"),
