# Manifests: one row per usable image of a dataset, plus the exclusions with reasons.
# A checkpoint, because which images exist is only known once the dataset has been read.


def dataset_root(wc):
    dataset = config["datasets"][wc.dataset]
    return f"{RESULTS}/{wc.dataset}/bids" if dataset["kind"] == "demo" else dataset["root"]


def manifest_kind(wc):
    kind = config["datasets"][wc.dataset]["kind"]
    return "bids" if kind == "demo" else kind


def participant_columns(wc):
    columns = config["datasets"][wc.dataset].get("participant_columns", {})
    return " ".join(f"--participant-column {k}={v}" for k, v in sorted(columns.items()))


checkpoint dataset_manifest:
    input:
        lambda wc: dataset_root(wc) if config["datasets"][wc.dataset]["kind"] == "demo" else [],
    output:
        manifest=f"{RESULTS}/{{dataset}}/manifest.tsv",
        excluded=f"{RESULTS}/{{dataset}}/manifest_excluded.tsv",
    wildcard_constraints:
        dataset=name_regex(DATASETS),
    params:
        kind=manifest_kind,
        root=dataset_root,
        columns=participant_columns,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        log_path("manifest", "{dataset}"),
    benchmark:
        benchmark_path("manifest", "{dataset}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{MAGICFLOW} manifest --dataset {wildcards.dataset} --kind {params.kind} --root {params.root:q}"
        " --out {output.manifest} --excluded {output.excluded} {params.columns} > {log} 2>&1"


rule manifest:
    input:
        expand(f"{RESULTS}/{{dataset}}/manifest.tsv", dataset=DATASETS),
