# Baselines (config key experiments.<name>.baselines): discriminative ones of classification
# experiments (timm CNNs and ViTs: baseline_train, baseline_classify) and generative ones of
# generation experiments (Glow, CVAE: baseline_train, baseline_sample); per baseline and fold,
# trained and applied on exactly the flow's slices, split and augmentation. Each baseline's settings live in their own baseline.json, so
# adding or changing a baseline reruns that baseline (and evaluation), never the flow.

import json

from magicflow.config import baseline_settings as configured_baselines

# experiment -> baseline id -> settings; only experiments that list baselines
BASELINES = {e: b for e, b in ((e, parse_time(configured_baselines, config, e)) for e in EXPERIMENTS) if b}


wildcard_constraints:
    baseline=name_regex(sorted({b for found in BASELINES.values() for b in found})),


localrules:
    baseline_settings,


rule baseline_settings:
    output:
        f"{RESULTS}/{{experiment}}/baselines/{{baseline}}/baseline.json",
    log:
        log_path("baseline_settings", "{experiment}_{baseline}"),
    benchmark:
        benchmark_path("baseline_settings", "{experiment}_{baseline}")
    params:
        settings=lambda wc: json.dumps(BASELINES[wc.experiment][wc.baseline], indent=2, sort_keys=True),
    run:
        write_logged(output[0], f"{params.settings}\n", log[0])


rule baseline_train:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        baseline=rules.baseline_settings.output[0],
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        weights=baseline_weights,
    output:
        model=f"{RESULTS}/{{experiment}}/baselines/{{baseline}}/models/{{fold}}/best.pt",
        curves=f"{RESULTS}/{{experiment}}/baselines/{{baseline}}/models/{{fold}}/training.tsv",
        plot=f"{RESULTS}/{{experiment}}/baselines/{{baseline}}/models/{{fold}}/training.png",
    log:
        log_path("baseline_train", "{experiment}_{baseline}_{fold}"),
    benchmark:
        benchmark_path("baseline_train", "{experiment}_{baseline}_{fold}")
    retries: config["training"]["retries"]  # each attempt resumes from last.pt with a longer limit
    conda:
        torch_environment
    threads: config["training"]["threads"]
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 4000 + 3 * int(input.size_mb),
        runtime=lambda wc, attempt: config["training"]["runtime_minutes"] * attempt,
        gpu=gpu_request,
    params:
        slices=slices_args,
        out=lambda wc, output: Path(output.model).parent,  # also holds last.pt, the resumable state
    shell:
        magicflow_command(
            "baseline-train --experiment {input.settings} --baseline {input.baseline} {params.slices}"
            " --fold-dir {input.folds}/{wildcards.fold} --out {params.out}",
            torch=True,
            gpu=True,
        )


rule baseline_classify:
    input:
        unpack(slices_inputs),
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        baseline=rules.baseline_settings.output[0],
        folds=f"{RESULTS}/{{experiment}}/splits/folds",
        model=rules.baseline_train.output.model,
    output:
        f"{RESULTS}/{{experiment}}/baselines/{{baseline}}/predictions/{{fold}}/predictions.tsv",
    log:
        log_path("baseline_classify", "{experiment}_{baseline}_{fold}"),
    benchmark:
        benchmark_path("baseline_classify", "{experiment}_{baseline}_{fold}")
    conda:
        torch_environment
    threads: 1
    resources:
        **GPU_RESOURCES,
        mem_mb=lambda wc, input: 2000 + 2 * int(input.size_mb),
        runtime=60,
        gpu=gpu_request,
    params:
        slices=slices_args,
    shell:
        magicflow_command(
            "baseline-classify --experiment {input.settings} --baseline {input.baseline} {params.slices}"
            " --fold-dir {input.folds}/{wildcards.fold} --model {input.model} --out {output}",
            torch=True,
            gpu=True,
        )


rule baseline_sample:
    input:
        settings=f"{RESULTS}/{{experiment}}/experiment.json",
        baseline=rules.baseline_settings.output[0],
        model=rules.baseline_train.output.model,
    output:
        directory(f"{RESULTS}/{{experiment}}/baselines/{{baseline}}/samples/{{fold}}"),  # samples.npz, grids, NIfTI
    log:
        log_path("baseline_sample", "{experiment}_{baseline}_{fold}"),
    benchmark:
        benchmark_path("baseline_sample", "{experiment}_{baseline}_{fold}")
    conda:
        torch_environment
    threads: 1
    resources:
        **GPU_RESOURCES,
        mem_mb=2000,
        runtime=60,
        gpu=gpu_request,
    shell:
        magicflow_command(
            "baseline-sample --experiment {input.settings} --baseline {input.baseline} --model {input.model} --out {output}",
            torch=True,
            gpu=True,
        )


rule baselines:
    input:
        baseline_outputs(rules.baseline_classify.output[0], "discriminative"),
        baseline_outputs(rules.baseline_sample.output[0], "generative"),
