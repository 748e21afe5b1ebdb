# Preprocessing (paper Appendix B.1): template, T1w -> MNI152, T2w/FLAIR/PET rigidly to their
# T1w then through its transforms, each registration job also writing its image's QC figure and
# QC score (a T2w, FLAIR or PET against its own T1w in MNI), then a QC table and coronal slices per dataset.
# Which images exist is read from the manifest checkpoint; which template space they are
# registered to, from the template checkpoint's template.json.

from magicflow.datasets.manifest import IMAGE_STEM
from magicflow.preprocess.template import SPACE_FSL, SPACE_NILEARN

# auto | fsl | ants, resolved by each registration job in the environment that runs it (so
# `fsl` with --use-conda finds envs/fsl.yaml's FSL; `auto` runs in the CPU environment and takes FSL
# only where the host has it, through $FSLDIR, else ANTs); the template job resolves it the same
# way, and the space it writes to template.json names every output below.
BACKEND = config["registration"]["backend"]
# one folder per template space: a registration to another template never mixes with this one
PREPROC = f"{RESULTS}/{{dataset}}/preproc/space-{{space}}/{{image}}/{{image}}"
# Peak memory of a registration job (MB) with a margin: measured 0.87 GB (T1w) and 0.63 GB
# (coregistration) with the demo preset, 1.75 GB for a 1 mm T1w with the full preset; the full
# preset's coregistration is not measured yet (2.5 GB is an upper guess).
REGISTRATION_MEM_MB = {"demo": {"t1": 1500, "coregister": 1000}, "full": {"t1": 3000, "coregister": 2500}}[
    config["registration"]["preset"]
]
TEMPLATE = f"{RESULTS}/template"
ENV_REGISTRATION = ENV_FSL if BACKEND == "fsl" else ENV_CPU


# the manifest schema holds every image stem to this pattern, so any manifest image has a rule
wildcard_constraints:
    image=IMAGE_STEM,
    space=name_regex([SPACE_FSL, SPACE_NILEARN]),


checkpoint preprocess_template:
    output:
        directory(TEMPLATE),
    log:
        log_path("preprocess_template", "template"),
    benchmark:
        benchmark_path("preprocess_template", "template")
    conda:
        ENV_REGISTRATION
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        backend=BACKEND,
    shell:
        magicflow_command("preprocess-template --backend {params.backend} --out-dir {output}")


rule preprocess_t1:
    input:
        unpack(groundtruth_files),
        image=lambda wc: manifest_row(wc)["path"],
        template=TEMPLATE,
    output:
        image=f"{PREPROC}_space-{{space}}.nii.gz",
        mask=f"{PREPROC}_space-{{space}}_brainmask.nii.gz",
        native=f"{PREPROC}_native.nii.gz",
        affine=f"{PREPROC}_affine.mat",
        warp=f"{PREPROC}_warp.nii.gz",
        json=f"{PREPROC}_t1.json",
        qc_png=f"{PREPROC}_qc.png",
        qc_json=f"{PREPROC}_qc.json",
    log:
        log_path("preprocess_t1", "{dataset}_{image}_space-{space}"),
    benchmark:
        benchmark_path("preprocess_t1", "{dataset}_{image}_space-{space}")
    wildcard_constraints:
        image=f"{IMAGE_STEM}_T1w",
    conda:
        ENV_REGISTRATION
    threads: config["registration"]["threads"]
    resources:
        mem_mb=REGISTRATION_MEM_MB["t1"],
        runtime=90,
    params:
        backend=BACKEND,
        preset=config["registration"]["preset"],
        truth=groundtruth_options,
    shell:
        magicflow_command(
            "preprocess-t1 --t1 {input.image:q} --template-dir {input.template} --backend {params.backend}"
            " --preset {params.preset} --threads {threads} --out-t1 {output.image} --out-mask {output.mask}"
            " --out-native {output.native} --out-affine {output.affine} --out-warp {output.warp} --out-json {output.json}"
            " --qc-png {output.qc_png} --qc-json {output.qc_json} --qc-label {wildcards.image}{params.truth}"
        )


rule preprocess_coregister:
    input:
        unpack(groundtruth_files),
        image=lambda wc: manifest_row(wc)["path"],
        t1=lambda wc: t1_outputs(wc.dataset, manifest_row(wc)["reference"], wc.space).values(),
        # the QC scores the image against its subject's T1w in MNI (also in t1, named here for the shell)
        t1_mni=lambda wc: t1_outputs(wc.dataset, manifest_row(wc)["reference"], wc.space)["mni"],
        sidecar=sidecar_input,
    output:
        image=f"{PREPROC}_space-{{space}}.nii.gz",
        rigid=f"{PREPROC}_rigid.mat",
        json=f"{PREPROC}_coreg.json",
        qc_png=f"{PREPROC}_qc.png",
        qc_json=f"{PREPROC}_qc.json",
    log:
        log_path("preprocess_coregister", "{dataset}_{image}_space-{space}"),
    benchmark:
        benchmark_path("preprocess_coregister", "{dataset}_{image}_space-{space}")
    wildcard_constraints:
        image=f"{IMAGE_STEM}_(T2w|FLAIR|pet)",
    conda:
        ENV_REGISTRATION
    threads: config["registration"]["threads"]
    resources:
        mem_mb=REGISTRATION_MEM_MB["coregister"],
        runtime=30,
    params:
        modality=lambda wc: manifest_row(wc)["modality"],
        t1_json=lambda wc: t1_outputs(wc.dataset, manifest_row(wc)["reference"], wc.space)["json"],
        bias="--bias-correct" if config["registration"]["bias_correction"] else "",
        sidecar=lambda wc: manifest_row(wc)["sidecar"],
        tracer=lambda wc: manifest_row(wc)["tracer_name"],
        truth=groundtruth_options,
    shell:
        magicflow_command(
            "preprocess-coregister --image {input.image:q} --modality {params.modality} --t1-json {params.t1_json}"
            " --sidecar {params.sidecar:q} --tracer {params.tracer:q} {params.bias} --threads {threads} --out-image {output.image} --out-rigid {output.rigid} --out-json {output.json}"
            " --qc-png {output.qc_png} --qc-json {output.qc_json} --qc-label {wildcards.image} --qc-t1w {input.t1_mni}{params.truth}"
        )


rule qc_table:
    input:
        lambda wc: dataset_images(wc.dataset, "qc"),
    output:
        f"{RESULTS}/{{dataset}}/qc.tsv",
    log:
        log_path("qc_table", "{dataset}"),
    benchmark:
        benchmark_path("qc_table", "{dataset}")
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        threshold=config["registration"]["qc_threshold"],
    shell:
        magicflow_command("preprocess-qc-table --inputs {input} --threshold {params.threshold} --out-tsv {output}")


rule dataset_slices:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.tsv",
        images=lambda wc: dataset_images(wc.dataset, "mni"),
        qc=f"{RESULTS}/{{dataset}}/qc.tsv",
        template=TEMPLATE,
    output:
        npz=f"{RESULTS}/{{dataset}}/slices/slices.npz",
        tsv=f"{RESULTS}/{{dataset}}/slices/slices.tsv",
    log:
        log_path("slices", "{dataset}"),
    benchmark:
        benchmark_path("slices", "{dataset}")
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1000 + int(input.size_mb),
        runtime=30,
    params:
        preproc=lambda wc: f"{RESULTS}/{wc.dataset}/preproc/space-{template_space()}",
        offsets=lambda wc: dataset_offsets(wc.dataset),
        exclude=lambda wc, input: f"--exclude-flagged {input.qc}" if config["registration"]["exclude_failed_qc"] else "",
    shell:
        magicflow_command(
            "slices --manifest {input.manifest} --preproc-dir {params.preproc}"
            " --template-dir {input.template} --offsets={params.offsets} {params.exclude}"
            " --out-npz {output.npz} --out-tsv {output.tsv}"
        )


rule preprocess:
    input:
        expand(f"{RESULTS}/{{dataset}}/qc.tsv", dataset=DATASETS),


rule slices:
    input:
        expand(f"{RESULTS}/{{dataset}}/slices/slices.tsv", dataset=DATASETS),
