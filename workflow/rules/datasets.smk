# Manifests: one row per usable image of a dataset, plus the exclusions with reasons.
# A checkpoint, because which images exist is only known once the dataset has been read.
# IDA downloads (ppmi, adni) are first converted DICOM -> NIfTI by their own rule, whose
# output is kept: a rerun of the manifest never converts again, and a forced conversion
# rerun converts only image folders it has not converted before.

IDA_KINDS = ("ppmi", "adni")
IDA_DATASETS = sorted(name for name, d in config["datasets"].items() if d["kind"] in IDA_KINDS)
# config key -> `magicflow manifest` option; mappings become one KEY=VALUE option per entry
MANIFEST_OPTIONS = {
    "participant_columns": "--participant-column",
    "demographics": "--demographics",
    "sites": "--site",
    "sex_labels": "--sex-label",
    "diagnosis": "--diagnosis",
    "scanner": "--scanner",
    "t1_pattern": "--t1-pattern",
    "collection": "--collection",
    "diagnosis_table": "--diagnosis-table",
    "visit_window_days": "--visit-window-days",
    "diagnosis_labels": "--diagnosis-label",
    "max_reference_gap_days": "--max-reference-gap-days",
    "processing_level": "--processing-level",
    "mri_series_include": "--mri-series-include",
    "mri_series_exclude": "--mri-series-exclude",
}
TABLE_KEYS = ("demographics", "collection", "diagnosis_table")  # files read by the manifest: rule inputs


def dataset_root(wc):
    dataset = config["datasets"][wc.dataset]
    return f"{RESULTS}/{wc.dataset}/bids" if dataset["kind"] == "demo" else str(Path(dataset["root"]).expanduser())


def manifest_kind(wc):
    kind = config["datasets"][wc.dataset]["kind"]
    return "bids" if kind == "demo" else kind


def dataset_table(dataset, key):
    path = Path(dataset[key]).expanduser()
    return str(path if path.is_absolute() else Path(dataset["root"]).expanduser() / path)


def manifest_inputs(wc):
    dataset = config["datasets"][wc.dataset]
    if dataset["kind"] == "demo":
        return [dataset_root(wc)]
    inputs = [dataset_table(dataset, key) for key in TABLE_KEYS if key in dataset]
    if dataset["kind"] in IDA_KINDS:
        inputs.append(f"{RESULTS}/{wc.dataset}/nifti/conversion.tsv")
    return inputs


def manifest_options(wc):
    """The dataset's kind-specific settings as `magicflow manifest` options, shell-quoted."""
    dataset = config["datasets"][wc.dataset]
    words = []
    for key, option in MANIFEST_OPTIONS.items():
        value = dataset.get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            words += [f"{option} {shlex.quote(f'{k}={v}')}" for k, v in sorted(value.items())]
        else:
            words.append(f"{option} {shlex.quote(str(value))}")
    if dataset["kind"] in IDA_KINDS:
        words.append(f"--nifti-dir {RESULTS}/{wc.dataset}/nifti")
    return " ".join(words)


rule dicom_to_nifti:
    output:
        f"{RESULTS}/{{dataset}}/nifti/conversion.tsv",
    wildcard_constraints:
        dataset=name_regex(IDA_DATASETS),
    params:
        kind=manifest_kind,
        root=dataset_root,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
    log:
        log_path("dicom_to_nifti", "{dataset}"),
    benchmark:
        benchmark_path("dicom_to_nifti", "{dataset}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} {MAGICFLOW} manifest --dataset {wildcards.dataset} --kind {params.kind} --root {params.root:q}"
        " --nifti-dir {RESULTS}/{wildcards.dataset}/nifti --convert-only"


checkpoint dataset_manifest:
    input:
        manifest_inputs,
    output:
        manifest=f"{RESULTS}/{{dataset}}/manifest.tsv",
        excluded=f"{RESULTS}/{{dataset}}/manifest_excluded.tsv",
    wildcard_constraints:
        dataset=name_regex(DATASETS),
    params:
        kind=manifest_kind,
        root=dataset_root,
        options=manifest_options,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    log:
        log_path("manifest", "{dataset}"),
    benchmark:
        benchmark_path("manifest", "{dataset}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} {MAGICFLOW} manifest --dataset {wildcards.dataset} --kind {params.kind} --root {params.root:q}"
        " --out {output.manifest} --excluded {output.excluded} {params.options}"


rule manifest:
    input:
        expand(f"{RESULTS}/{{dataset}}/manifest.tsv", dataset=DATASETS),
