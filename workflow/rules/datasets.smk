# Manifests: one row per usable image of a dataset, plus the exclusions with reasons.
# A checkpoint, because which images exist is only known once the dataset has been read.
# IDA downloads (ppmi, adni) are first converted DICOM -> NIfTI by their own rule, whose
# output is kept: a rerun of the manifest never converts again, and a forced conversion
# rerun converts only image folders it has not converted before.

IDA_KINDS = ("ppmi", "adni")
IDA_DATASETS = sorted(name for name, d in config["datasets"].items() if d["kind"] in IDA_KINDS)


rule dicom_to_nifti:
    output:
        f"{RESULTS}/{{dataset}}/nifti/conversion.tsv",
    log:
        log_path("dicom_to_nifti", "{dataset}"),
    benchmark:
        benchmark_path("dicom_to_nifti", "{dataset}")
    wildcard_constraints:
        dataset=name_regex(IDA_DATASETS),
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
    params:
        kind=manifest_kind,
        root=dataset_root,
        nifti=lambda wc, output: Path(output[0]).parent,  # the converted images, beside their table
    shell:
        magicflow_command(
            "manifest --dataset {wildcards.dataset} --kind {params.kind} --root {params.root:q}"
            " --nifti-dir {params.nifti} --convert-only"
        )


checkpoint dataset_manifest:
    input:
        manifest_inputs,
    output:
        manifest=f"{RESULTS}/{{dataset}}/manifest.tsv",
        excluded=f"{RESULTS}/{{dataset}}/manifest_excluded.tsv",
    log:
        log_path("manifest", "{dataset}"),
    benchmark:
        benchmark_path("manifest", "{dataset}")
    wildcard_constraints:
        dataset=name_regex(DATASETS),
    conda:
        ENV_CPU
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        kind=manifest_kind,
        root=dataset_root,
        options=manifest_options,
    shell:
        magicflow_command(
            "manifest --dataset {wildcards.dataset} --kind {params.kind} --root {params.root:q}"
            " --out {output.manifest} --excluded {output.excluded} {params.options}"
        )


rule manifest:
    input:
        expand(f"{RESULTS}/{{dataset}}/manifest.tsv", dataset=DATASETS),
