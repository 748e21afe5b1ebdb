# Shared by the other .smk files: config validation, paths, how jobs call the package, and
# every function their rules use (input functions, params, resources), by stage below, so that
# those files hold rules only (snakemake --lint).

import json
import os
import shlex
import sys
import traceback
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake_interface_executor_plugins.settings import ExecMode

from magicflow.config import active_experiments, validate_config
from magicflow.datasets.manifest import read_manifest
from magicflow.errors import InputError
from magicflow.gpu_slots import DEVICES_VARIABLE, visible_gpus
from magicflow.preprocess.accuracy import demo_groundtruth
from magicflow.preprocess.template import METADATA


def parse_time(function, *args):
    """Call a magicflow helper while the rule files are read. Its InputError already names the
    config key or file and the problem, so it stops Snakemake as that one line on stderr (a
    WorkflowError would add the lines of the rule files it passed through)."""
    try:
        return function(*args)
    except InputError as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        raise SystemExit(1) from None


parse_time(validate_config, config)

EXPERIMENTS, SKIPPED_EXPERIMENTS = active_experiments(config)
for line in SKIPPED_EXPERIMENTS:
    print(line, file=sys.stderr)

# Run locally, the jobs running at once may together claim at most this machine's memory (each
# rule's mem_mb is its measured peak with a margin), so parallel jobs cannot exhaust a laptop.
# `--resources mem_mb=N` sets another limit; cluster executors give each job its own memory.
if workflow.local_exec and "mem_mb" not in workflow.global_resources:
    workflow.register_resource("mem_mb", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 9 // 10 // 2**20)

# GPUs. Snakemake only counts resources and hands a local job no device id, so:
# - the Snakemake a user starts knows this machine's GPUs (CUDA_VISIBLE_DEVICES, else nvidia-smi;
#   MAGICFLOW_GPUS=N keeps the first N) and runs at most that many GPU jobs at once; each takes a
#   device of its own through `magicflow gpu-slot` (magicflow/gpu_slots.py), which reads them from
#   MAGICFLOW_GPU_DEVICES, set here;
# - a cluster job (the Snakemake inside it runs in remote mode) has the GPU its scheduler gave it:
#   the slots step aside, and its steps take turns on that GPU;
# - a group job on a cluster (profiles/slurm: a fold's sampling, classification and attribution)
#   holds one GPU, on which its GPU steps run one after another: Snakemake sizes a group by the steps
#   it can run side by side within the limits of `--resources`, so these two limits are resources of
#   their own, beside `gpu` (what the scheduler is asked for):
#   `local_gpus` (1 per GPU job of a local run, else 0) may sum to the machine's GPUs, and
#   `submitted_gpus` (1 per GPU job under a cluster executor, else 0) to 1 per submitted job. Which
#   executor runs a job is known only when the job is made (workflow.local_exec is always true while
#   these files are read), and both are scoped local, so that neither limits how many jobs a cluster
#   queues. `--resources gpu=N` still limits GPU jobs as Snakemake's own resource.
if workflow.exec_mode == ExecMode.DEFAULT:
    _GPUS = parse_time(visible_gpus)
    os.environ[DEVICES_VARIABLE] = ",".join(_GPUS)
    if _GPUS:  # none: no limit (training.device auto then runs on the CPU)
        workflow.register_resource("local_gpus", len(_GPUS))
elif workflow.exec_mode == ExecMode.REMOTE:
    os.environ[DEVICES_VARIABLE] = ""
    workflow.register_resource("local_gpus", 1)
workflow.register_resource("submitted_gpus", 1)


resource_scopes:
    local_gpus="local",
    submitted_gpus="local",


DATASETS = sorted(config["datasets"])
DEMO_DATASETS = sorted(name for name, d in config["datasets"].items() if d["kind"] == "demo")
RESULTS = "results"

# Rules call the package as `python -m magicflow`. With --use-conda that is the rule's conda
# environment (which gets the package through PYTHONPATH); otherwise the Python running
# Snakemake, so no activation is needed. Every shell command runs through logged.sh: output to
# the job's log, and on failure the log kept as <log>.failed-<time> and its end quoted in
# Snakemake's error output. Both reach the commands as environment variables (set again
# wherever Snakemake reads these files, cluster nodes included), so that a rule's command text
# stays the same whichever Python runs it, and Snakemake's code-change trigger means a change
# of the rule.
_USES_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")])),
    MAGICFLOW_PYTHON="python" if _USES_CONDA else sys.executable,
    MAGICFLOW_LOGGED=str(Path(workflow.basedir) / "workflow" / "scripts" / "logged.sh"),
)
# --use-conda environments (envs/): the CPU-only PyTorch one for every rule that needs no GPU, so that
# manifests, registration, slices and reports never install CUDA; FSL's for registration.backend fsl.
ENV_CPU = "../../envs/magicflow-cpu.yaml"
ENV_FSL = "../../envs/fsl.yaml"


def torch_environment(wc):
    """A GPU rule's environment: the PyTorch build config `conda.torch` names (cuda or cpu), and the
    CPU-only one for an experiment whose training.device is cpu."""
    return f"../../envs/magicflow-{config['conda']['torch']}.yaml" if gpu_request(wc) else ENV_CPU


def magicflow_command(arguments, torch=False, gpu=False):
    """A rule's shell command: `magicflow ARGUMENTS`, logged. torch=True sizes torch's CPU thread
    pool to the job's threads and makes it wait passively: libgomp spin-waits by default, and
    jobs sharing cores then slow each other down many times over (Snakemake's shell sets
    OMP_NUM_THREADS too; said here, the command is complete as a log shows it). gpu=True (rules
    with a `gpu` resource) runs it through `magicflow gpu-slot`, which gives it a device of its
    own in a local run and steps aside otherwise (see the GPUs above)."""
    env = "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE " if torch else ""
    slot = '"$MAGICFLOW_PYTHON" -m magicflow gpu-slot --gpus {resources.gpu} -- ' if gpu else ""
    return f'bash "$MAGICFLOW_LOGGED" {{log}} {env}{slot}"$MAGICFLOW_PYTHON" -m magicflow {arguments}'


def write_logged(path, text, log):
    """A run: rule's one write, logged like a shell rule's command: a line on success, the
    traceback on failure, so that show-failed-logs has the cause to show."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    try:
        Path(path).write_text(text)
    except Exception:
        Path(log).write_text(traceback.format_exc())
        raise
    Path(log).write_text(f"wrote {path}\n")


def log_path(stage, name):
    return f"{RESULTS}/logs/{stage}/{name}.log"


def benchmark_path(stage, name):
    return f"{RESULTS}/benchmarks/{stage}/{name}.tsv"


def name_regex(names):
    """Wildcard constraint matching exactly these names (none: matches nothing)."""
    return "|".join(names) if names else "(?!)"


# --------------------------------------------------------------------------- manifests (datasets.smk)
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
    "max_voxel_mm": "--max-voxel-mm",
    "max_interpolated_slices": "--max-interpolated-slices",
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
        inputs.append(conversion_table(wc.dataset))
    return inputs


def conversion_table(dataset):
    """An IDA dataset's DICOM -> NIfTI conversion table as dicom_to_nifti declares it; the
    converted images lie beside it."""
    return rules.dicom_to_nifti.output[0].format(dataset=dataset)


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
        words.append(f"--nifti-dir {Path(conversion_table(wc.dataset)).parent}")
    return " ".join(words)


# --------------------------------------------------------------------------- preprocessing (preprocess.smk)
_MANIFESTS = {}


def manifest_of(dataset):
    """The dataset's manifest, read once per version of the file: every registration job's
    inputs and params look up their row, so a dataset of N images would otherwise be read ~8N times."""
    path = checkpoints.dataset_manifest.get(dataset=dataset).output.manifest
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _MANIFESTS:
        _MANIFESTS[key] = read_manifest(path)
    return _MANIFESTS[key]


def template_space():
    """The template's space (template.json), once the template checkpoint has run."""
    path = Path(checkpoints.preprocess_template.get().output[0]) / METADATA
    try:
        return json.loads(path.read_text())["space"]
    except (OSError, ValueError, KeyError) as error:
        raise WorkflowError(
            f"{path}: no template space to read ({type(error).__name__}: {error}); delete {TEMPLATE} and rerun"
        ) from None


def manifest_row(wc):
    table = manifest_of(wc.dataset)
    row = table[table["image"] == wc.image]
    if row.empty:
        raise WorkflowError(f"image {wc.image} is not in the manifest of dataset {wc.dataset}")
    return row.iloc[0]


def t1_outputs(dataset, image, space):
    """The files of a T1w's registration that its T2w/FLAIR/PET job reads (mni: for the QC)."""
    stem = PREPROC.format(dataset=dataset, image=image, space=space)
    return {
        "mni": f"{stem}_space-{space}.nii.gz",
        "json": f"{stem}_t1.json",
        "affine": f"{stem}_affine.mat",
        "warp": f"{stem}_warp.nii.gz",
        "native": f"{stem}_native.nii.gz",
    }


def dataset_images(dataset, what):
    """Per-image files of every manifest image of a dataset: what = 'mni' or 'qc'."""
    space = template_space()
    suffix = {"mni": f"_space-{space}.nii.gz", "qc": "_qc.json"}[what]
    return [f"{PREPROC.format(dataset=dataset, image=i, space=space)}{suffix}" for i in manifest_of(dataset)["image"]]


def dataset_offsets(dataset):
    """Every slice offset an experiment using this dataset asks for (0 at least)."""
    offsets = {0}
    for experiment in EXPERIMENTS.values():
        if dataset in experiment["datasets"]:
            o = experiment["offsets"]
            offsets |= set(o["train"]) | set(o["eval"]) | {v for extra in o.get("augment", {}).values() for v in extra}
    for entry in config["predict"].values():  # a trained model scores the new dataset at its evaluation offsets
        if entry["dataset"] == dataset:
            scored = EXPERIMENTS[entry["experiment"]]["offsets"]["eval"] if entry.get("experiment") in EXPERIMENTS else [0]
            offsets |= set(entry.get("offsets", scored))
    return ",".join(str(v) for v in sorted(offsets))


def sidecar_input(wc):
    """The image's JSON sidecar as the manifest names it (it may be inherited from higher up a
    BIDS tree), as a rule input so a changed sidecar reruns the job; none when there is none."""
    sidecar = manifest_row(wc)["sidecar"]
    return [] if sidecar == "n/a" else [sidecar]


def groundtruth_files(wc):
    """A demo image's planted transforms (its cohort's derivatives/groundtruth), so its
    registration job records its error against them; none for other datasets or spaces."""
    truth = demo_groundtruth(manifest_row(wc)["path"], wc.space) if wc.dataset in DEMO_DATASETS else None
    if truth is None:
        return {}
    return {"truth_points": str(truth.points)} | ({"truth_rigid": str(truth.rigid)} if truth.rigid else {})


def groundtruth_options(wc, input):
    """The registration command's --groundtruth-* options for the files groundtruth_files gave."""
    keys = [k for k in ("truth_points", "truth_rigid") if k in input.keys()]
    return "".join(f" --groundtruth-{k.removeprefix('truth_')} {input[k]}" for k in keys)


# --------------------------------------------------------------------------- experiments (experiments.smk)
def gpu_request(wc):
    """GPUs a job of this experiment asks the scheduler for: none when its own training.device
    (the experiment's, else the top-level one) is cpu, else one (auto runs on the CPU without one).
    A prediction (no experiment wildcard) follows the top-level training.device."""
    experiment = getattr(wc, "experiment", None)
    device = EXPERIMENT_SETTINGS[experiment]["training"]["device"] if experiment else config["training"]["device"]
    return 0 if device == "cpu" else 1


def gpu_job_only(value):
    """A resource of the jobs that ask for a GPU (gpu_request 1); unset on the others."""
    return lambda wc: value if gpu_request(wc) else None


def local_gpus(wc):
    """The GPU a job takes from this machine's in a local run; 0 on a cluster and in dry runs (see GPUs above)."""
    return gpu_request(wc) if workflow.local_exec and not workflow.dryrun else 0


def submitted_gpus(wc):
    """The GPU a job holds as (part of) a submitted cluster job; 0 in local and dry runs (see GPUs above)."""
    return 0 if workflow.local_exec else gpu_request(wc)


# What every GPU rule's resources take besides `gpu` (`**GPU_RESOURCES`): the two GPU limits above,
# and how SLURM runs GPU jobs (config slurm:). A slurm key left unset is not declared at all, so that
# the profile's default-resources (its slurm_partition, slurm_account) still reach those jobs.
GPU_RESOURCES = {"local_gpus": local_gpus, "submitted_gpus": submitted_gpus} | {
    resource: gpu_job_only(config["slurm"][key])
    for resource, key in (
        ("slurm_partition", "gpu_partition"),
        ("slurm_account", "gpu_account"),
        ("cpus_per_gpu", "cpus_per_gpu"),
    )
    if config["slurm"][key] is not None
}


def folds_of(experiment):
    return [f"fold-{k}" for k in range(EXPERIMENT_SETTINGS[experiment]["run_folds"])]


def experiment_outputs(pattern):
    """pattern with {experiment} and {fold}, expanded over every active MAGIC-Flow experiment and fold."""
    return [pattern.format(experiment=e, fold=f) for e in FLOW_EXPERIMENTS for f in folds_of(e)]


def slices_inputs(wc):
    datasets = EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
    return {
        "tsv": [f"{RESULTS}/{d}/slices/slices.tsv" for d in datasets],
        "npz": [f"{RESULTS}/{d}/slices/slices.npz" for d in datasets],
    }


def slices_args(wc, input, arrays=True):
    """`--slices` (and `--arrays`) DATASET=PATH per dataset of the experiment, PATH the declared input."""
    datasets = EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
    words = [f"--slices {d}={path}" for d, path in zip(datasets, input.tsv)]
    if arrays:
        words += [f"--arrays {d}={path}" for d, path in zip(datasets, input.npz)]
    return " ".join(words)


# --------------------------------------------------------------------------- baselines (baselines.smk)
def baseline_weights(wc):
    """The baseline's pretrained weights file as a rule input (a changed file retrains it); none from scratch."""
    weights = BASELINES[wc.experiment][wc.baseline]["weights"]
    return [weights] if weights else []


def baselines_of(experiment, kind):
    """The experiment's baseline ids of one kind (discriminative or generative), in config order."""
    return [b for b, s in BASELINES.get(experiment, {}).items() if s["kind"] == kind]


def baseline_outputs(pattern, kind):
    """pattern with {experiment}, {baseline} and {fold}, over every baseline of this kind of every experiment and fold."""
    return [
        pattern.format(experiment=e, baseline=b, fold=f) for e in BASELINES for b in baselines_of(e, kind) for f in folds_of(e)
    ]


def baseline_files(wc, pattern, kind):
    """Per (baseline of this kind, fold) of this experiment, in the order baseline_args reads them."""
    return [
        pattern.format(experiment=wc.experiment, baseline=b, fold=f)
        for b in baselines_of(wc.experiment, kind)
        for f in folds_of(wc.experiment)
    ]


def baseline_train_files(wc, pattern):
    """Per (baseline of either kind, in config order; fold) of this experiment: its training outputs (Table 5)."""
    return [
        pattern.format(experiment=wc.experiment, baseline=b, fold=f)
        for b in BASELINES.get(wc.experiment, {})
        for f in folds_of(wc.experiment)
    ]


def baseline_args(wc, input):
    """`--baseline ID=JSON` per baseline, `--baseline-predictions ID:FOLD=PATH` per discriminative
    baseline and fold, `--baseline-samples ID:FOLD=PATH` per generative baseline and fold."""
    found = list(BASELINES.get(wc.experiment, {}))
    words = [f"--baseline {b}={path}" for b, path in zip(found, input.baseline_settings)]
    for kind, option, paths in (
        ("discriminative", "predictions", input.baseline_predictions),
        ("generative", "samples", input.baseline_samples),
    ):
        pairs = [(b, f) for b in baselines_of(wc.experiment, kind) for f in folds_of(wc.experiment)]
        words += [f"--baseline-{option} {b}:{f}={path}" for (b, f), path in zip(pairs, paths)]
    pairs = [(b, f) for b in found for f in folds_of(wc.experiment)]
    for option, paths in (("training", input.baseline_training), ("train-benchmark", input.baseline_train_benchmark)):
        words += [f"--baseline-{option} {b}:{f}={path}" for (b, f), path in zip(pairs, paths)]
    return " ".join(words)


# --------------------------------------------------------------------------- evaluation and reports (report.smk)
def fold_files(wc, name):
    return [FOLD_FILES[name].format(experiment=wc.experiment, fold=f) for f in folds_of(wc.experiment)]


def evaluation_inputs(wc):
    settings = EXPERIMENT_SETTINGS[wc.experiment]
    base = f"{RESULTS}/{wc.experiment}"
    baselines = BASELINES.get(wc.experiment, {})
    return {
        **slices_inputs(wc),
        "settings": f"{base}/experiment.json",
        "evaluation": f"{base}/evaluation.json",
        "split": rules.split.output.info.format(experiment=wc.experiment),
        "folds": rules.split.output.folds.format(experiment=wc.experiment),
        **{name: fold_files(wc, name) for name in EVALUATION_READS},
        "baseline_settings": [rules.baseline_settings.output[0].format(experiment=wc.experiment, baseline=b) for b in baselines],
        "baseline_predictions": baseline_files(wc, rules.baseline_classify.output[0], "discriminative"),
        "baseline_samples": baseline_files(wc, rules.baseline_sample.output[0], "generative"),
        # Table 5: each baseline's training log and its training job's benchmark (as the flow's train_benchmark)
        "baseline_training": baseline_train_files(wc, rules.baseline_train.output.curves),
        "baseline_train_benchmark": baseline_train_files(wc, rules.baseline_train.benchmark),
        "qc": [f"{RESULTS}/{d}/qc.tsv" for d in settings["datasets"]],
        "groundtruth": [f"{RESULTS}/{d}/bids" for d in settings["datasets"] if d in DEMO_DATASETS],
    }


def fold_args(wc, input, names):
    """`--NAME fold-k=PATH` for every fold, PATH the rule's declared input of that name."""
    return " ".join(
        f"--{name.replace('_', '-')} {fold}={path}" for name in names for fold, path in zip(folds_of(wc.experiment), input[name])
    )


def evaluation_args(wc, input):
    datasets = EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
    words = [slices_args(wc, input), fold_args(wc, input, EVALUATION_READS), baseline_args(wc, input)]
    words += [f"--qc {d}={path}" for d, path in zip(datasets, input.qc)]
    demo = [d for d in datasets if d in DEMO_DATASETS]
    words += [f"--groundtruth {d}={Path(path) / 'derivatives' / 'groundtruth'}" for d, path in zip(demo, input.groundtruth)]
    return " ".join(words)


# --------------------------------------------------------------------------- translation (translation.smk)
def translation_inputs(wc):
    settings = EXPERIMENT_SETTINGS[wc.experiment]
    base = f"{RESULTS}/{wc.experiment}"
    baselines = BASELINES.get(wc.experiment, {})
    return {
        **slices_inputs(wc),
        "settings": f"{base}/experiment.json",
        "folds": rules.split.output.folds.format(experiment=wc.experiment),
        "translations": [
            rules.translate_fold.output[0].format(experiment=wc.experiment, fold=f) for f in folds_of(wc.experiment)
        ],
        "training": [
            rules.translate_train.output.curves.format(experiment=wc.experiment, fold=f) for f in folds_of(wc.experiment)
        ],
        "train_benchmark": [
            rules.translate_train.benchmark.format(experiment=wc.experiment, fold=f) for f in folds_of(wc.experiment)
        ],
        "baseline_settings": [rules.baseline_settings.output[0].format(experiment=wc.experiment, baseline=b) for b in baselines],
        "baseline_translations": baseline_files(wc, rules.baseline_translate.output[0], "translation"),
        "baseline_training": baseline_train_files(wc, rules.baseline_train.output.curves),
        "baseline_train_benchmark": baseline_train_files(wc, rules.baseline_train.benchmark),
        "template": TEMPLATE,
        "groundtruth": [f"{RESULTS}/{d}/bids" for d in settings["datasets"] if d in DEMO_DATASETS],
    }


def translation_args(wc, input):
    datasets = EXPERIMENT_SETTINGS[wc.experiment]["datasets"]
    folds = folds_of(wc.experiment)
    words = [slices_args(wc, input)]
    for option in ("translations", "training", "train_benchmark"):
        words += [f"--{option.replace('_', '-')} {f}={p}" for f, p in zip(folds, input[option])]
    found = list(BASELINES.get(wc.experiment, {}))
    words += [f"--baseline {b}={p}" for b, p in zip(found, input.baseline_settings)]
    pairs = [(b, f) for b in baselines_of(wc.experiment, "translation") for f in folds]
    words += [f"--baseline-translations {b}:{f}={p}" for (b, f), p in zip(pairs, input.baseline_translations)]
    pairs = [(b, f) for b in found for f in folds]
    for option, paths in (("training", input.baseline_training), ("train-benchmark", input.baseline_train_benchmark)):
        words += [f"--baseline-{option} {b}:{f}={p}" for (b, f), p in zip(pairs, paths)]
    demo = [d for d in datasets if d in DEMO_DATASETS]
    words += [f"--groundtruth {d}={Path(p) / 'derivatives' / 'groundtruth'}" for d, p in zip(demo, input.groundtruth)]
    return " ".join(words)


# --------------------------------------------------------------------------- using trained models (use.smk)
def predict_model(wc):
    """A predict entry's model folder: an exported one it names, else its experiment's export."""
    entry = PREDICT[wc.prediction]
    return entry["model"] if "model" in entry else rules.export_model.output[0].format(experiment=entry["experiment"])
