# Preprocessing (paper Appendix B.1): template, T1w -> MNI152, T2w/FLAIR/PET rigidly to their
# T1w then through its transforms, each registration job also writing its image's QC figure and
# correlation, then a QC table and coronal slices per dataset.
# Which images exist is read from the manifest checkpoint.

from magicflow.datasets.manifest import IMAGE_STEM, read_manifest
from magicflow.preprocess.backend import resolve_backend
from magicflow.preprocess.template import space_for_backend

BACKEND = resolve_backend(config["registration"]["backend"])
SPACE = space_for_backend(BACKEND)  # the template of the backend that registers (FSL's MNI152, or nilearn's 2009a)
PREPROC = f"{RESULTS}/{{dataset}}/preproc/{{image}}/{{image}}"
# Peak memory of a registration job (MB) with a margin: measured 0.87 GB (T1w) and 0.63 GB
# (coregistration) with the demo preset, 1.75 GB for a 1 mm T1w with the full preset; the full
# preset's coregistration is not measured yet (2.5 GB is an upper guess).
REGISTRATION_MEM_MB = {"demo": {"t1": 1500, "coregister": 1000}, "full": {"t1": 3000, "coregister": 2500}}[config["registration"]["preset"]]
TEMPLATE = f"{RESULTS}/template"
ENV_REGISTRATION = "../../envs/fsl.yaml" if BACKEND == "fsl" else ENV_MAGICFLOW


_MANIFESTS = {}


def manifest_of(dataset):
    """The dataset's manifest, read once per version of the file: every registration job's
    inputs and params look up their row, so a dataset of N images would otherwise be read ~8N times."""
    path = checkpoints.dataset_manifest.get(dataset=dataset).output.manifest
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _MANIFESTS:
        _MANIFESTS[key] = read_manifest(path)
    return _MANIFESTS[key]


def manifest_row(wc):
    table = manifest_of(wc.dataset)
    row = table[table["image"] == wc.image]
    if row.empty:
        raise WorkflowError(f"image {wc.image} is not in the manifest of dataset {wc.dataset}")
    return row.iloc[0]


def t1_outputs(dataset, image):
    stem = PREPROC.format(dataset=dataset, image=image)
    return {"json": f"{stem}_t1.json", "affine": f"{stem}_affine.mat", "warp": f"{stem}_warp.nii.gz", "native": f"{stem}_native.nii.gz"}


def dataset_images(dataset, what):
    """Per-image files of every manifest image of a dataset: what = 'mni' or 'qc'."""
    suffix = {"mni": f"_space-{SPACE}.nii.gz", "qc": "_qc.json"}[what]
    return [PREPROC.format(dataset=dataset, image=i) + suffix for i in manifest_of(dataset)["image"]]


def dataset_offsets(dataset):
    """Every slice offset an experiment using this dataset asks for (0 at least)."""
    offsets = {0}
    for experiment in EXPERIMENTS.values():
        if dataset in experiment["datasets"]:
            o = experiment["offsets"]
            offsets |= set(o["train"]) | set(o["eval"]) | {v for extra in o.get("augment", {}).values() for v in extra}
    return ",".join(str(v) for v in sorted(offsets))


# the manifest schema holds every image stem to this pattern, so any manifest image has a rule
wildcard_constraints:
    image=IMAGE_STEM,


rule preprocess_template:
    output:
        directory(TEMPLATE),
    params:
        backend=BACKEND,
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    log:
        log_path("preprocess_template", "template"),
    benchmark:
        benchmark_path("preprocess_template", "template")
    conda:
        ENV_REGISTRATION
    shell:
        "{LOGGED} {log} {MAGICFLOW} preprocess-template --backend {params.backend} --out-dir {output}"


rule preprocess_t1:
    input:
        image=lambda wc: manifest_row(wc)["path"],
        template=TEMPLATE,
    output:
        image=f"{PREPROC}_space-{SPACE}.nii.gz",
        mask=f"{PREPROC}_space-{SPACE}_brainmask.nii.gz",
        native=f"{PREPROC}_native.nii.gz",
        affine=f"{PREPROC}_affine.mat",
        warp=f"{PREPROC}_warp.nii.gz",
        json=f"{PREPROC}_t1.json",
        qc_png=f"{PREPROC}_qc.png",
        qc_json=f"{PREPROC}_qc.json",
    wildcard_constraints:
        image=IMAGE_STEM + "_T1w",
    params:
        backend=BACKEND,
        preset=config["registration"]["preset"],
    threads: config["registration"]["threads"]
    resources:
        mem_mb=REGISTRATION_MEM_MB['t1'],
        runtime=90,
    log:
        log_path("preprocess_t1", "{dataset}_{image}"),
    benchmark:
        benchmark_path("preprocess_t1", "{dataset}_{image}")
    conda:
        ENV_REGISTRATION
    shell:
        "{LOGGED} {log} {MAGICFLOW} preprocess-t1 --t1 {input.image:q} --template-dir {input.template} --backend {params.backend}"
        " --preset {params.preset} --threads {threads} --out-t1 {output.image} --out-mask {output.mask}"
        " --out-native {output.native} --out-affine {output.affine} --out-warp {output.warp} --out-json {output.json}"
        " --qc-png {output.qc_png} --qc-json {output.qc_json} --qc-label {wildcards.image}"


def sidecar_input(wc):
    """The image's JSON sidecar as the manifest names it (it may be inherited from higher up a
    BIDS tree), as a rule input so a changed sidecar reruns the job; none when there is none."""
    sidecar = manifest_row(wc)["sidecar"]
    return [] if sidecar == "n/a" else [sidecar]


rule preprocess_coregister:
    input:
        image=lambda wc: manifest_row(wc)["path"],
        t1=lambda wc: t1_outputs(wc.dataset, manifest_row(wc)["reference"]).values(),
        sidecar=sidecar_input,
    output:
        image=f"{PREPROC}_space-{SPACE}.nii.gz",
        rigid=f"{PREPROC}_rigid.mat",
        json=f"{PREPROC}_coreg.json",
        qc_png=f"{PREPROC}_qc.png",
        qc_json=f"{PREPROC}_qc.json",
    wildcard_constraints:
        image=IMAGE_STEM + "_(T2w|FLAIR|pet)",
    params:
        modality=lambda wc: manifest_row(wc)["modality"],
        t1_json=lambda wc: t1_outputs(wc.dataset, manifest_row(wc)["reference"])["json"],
        bias="--bias-correct" if config["registration"]["bias_correction"] else "",
        sidecar=lambda wc: manifest_row(wc)["sidecar"],
        tracer=lambda wc: manifest_row(wc)["tracer_name"],
    threads: config["registration"]["threads"]
    resources:
        mem_mb=REGISTRATION_MEM_MB['coregister'],
        runtime=30,
    log:
        log_path("preprocess_coregister", "{dataset}_{image}"),
    benchmark:
        benchmark_path("preprocess_coregister", "{dataset}_{image}")
    conda:
        ENV_REGISTRATION
    shell:
        "{LOGGED} {log} {MAGICFLOW} preprocess-coregister --image {input.image:q} --modality {params.modality} --t1-json {params.t1_json}"
        " --sidecar {params.sidecar:q} --tracer {params.tracer:q} {params.bias} --threads {threads} --out-image {output.image} --out-rigid {output.rigid} --out-json {output.json}"
        " --qc-png {output.qc_png} --qc-json {output.qc_json} --qc-label {wildcards.image}"


rule qc_table:
    input:
        lambda wc: dataset_images(wc.dataset, "qc"),
    output:
        f"{RESULTS}/{{dataset}}/qc.tsv",
    params:
        threshold=config["registration"]["qc_threshold"],
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    log:
        log_path("qc_table", "{dataset}"),
    benchmark:
        benchmark_path("qc_table", "{dataset}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} {MAGICFLOW} preprocess-qc-table --inputs {input} --threshold {params.threshold} --out-tsv {output}"


rule dataset_slices:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.tsv",
        images=lambda wc: dataset_images(wc.dataset, "mni"),
        qc=f"{RESULTS}/{{dataset}}/qc.tsv",
        template=TEMPLATE,
    output:
        npz=f"{RESULTS}/{{dataset}}/slices/slices.npz",
        tsv=f"{RESULTS}/{{dataset}}/slices/slices.tsv",
    params:
        offsets=lambda wc: dataset_offsets(wc.dataset),
        exclude=lambda wc, input: f"--exclude-flagged {input.qc}" if config["registration"]["exclude_failed_qc"] else "",
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1000 + int(input.size_mb),
        runtime=30,
    log:
        log_path("slices", "{dataset}"),
    benchmark:
        benchmark_path("slices", "{dataset}")
    conda:
        ENV_MAGICFLOW
    shell:
        "{LOGGED} {log} {MAGICFLOW} slices --manifest {input.manifest} --preproc-dir {RESULTS}/{wildcards.dataset}/preproc"
        " --template-dir {input.template} --offsets={params.offsets} {params.exclude}"
        " --out-npz {output.npz} --out-tsv {output.tsv}"


rule preprocess:
    input:
        expand(f"{RESULTS}/{{dataset}}/qc.tsv", dataset=DATASETS),


rule slices:
    input:
        expand(f"{RESULTS}/{{dataset}}/slices/slices.tsv", dataset=DATASETS),
