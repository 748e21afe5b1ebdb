"""Config validation: the schema in ``magicflow/schemas/config.schema.yaml`` plus the checks a
schema cannot express (folders exist, names refer to things that are configured).

Errors come out as one line naming the key and what was expected, since the first thing a
user does after editing ``config/config.yaml`` is misspell something."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from magicflow.errors import InputError
from magicflow.view import crop_setting

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the JSON schemas of the config and the manifest, shipped inside the package (package data) so that
#: an installed magicflow validates without the repository
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"
#: the flow library's presets (magicflow.flow.presets.PRESETS, which imports torch: too slow to load
#: for validating a config at every Snakemake start); a test holds the two equal
LIBRARY_PRESETS = ("paper", "refined", "lite", "small")


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _allowed_keys(schema: dict) -> list[str]:
    keys = set(schema.get("properties", {}))
    for branch in schema.get("allOf", []):
        keys |= set(branch.get("then", {}).get("properties", {}))
    return sorted(keys)


def _explain(error: jsonschema.ValidationError) -> str:
    """One line for the most relevant schema error."""
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = _allowed_keys(error.schema)
        extra = sorted(set(error.instance) - set(allowed))
        hints = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        return f"config key '{where}': unknown key {', '.join(hints)}; allowed keys: {', '.join(allowed)}"
    if error.validator == "required":
        return f"config key '{where}': {error.message}"
    if error.validator == "enum":
        return f"config key '{where}': {error.instance!r} is not one of {error.validator_value}"
    return f"config key '{where}': {error.message}"


def _set_defaults(validator, properties, instance, schema):
    """``properties`` that first fills each absent key with a copy of its schema default, so that
    the defaults are validated too (jsonschema's FAQ recipe, which snakemake.utils.validate uses)."""
    if isinstance(instance, dict):
        for name, subschema in properties.items():
            if isinstance(subschema, dict) and "default" in subschema:
                instance.setdefault(name, copy.deepcopy(subschema["default"]))
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


#: Draft 2020-12 that fills defaults in place (jsonschema alone: validating needs no Snakemake)
_DefaultFillingValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": _set_defaults})


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate against the schema, fill its defaults in place, then run the semantic checks.

    On failure the most relevant error (of the config as given, before any default was filled)
    is reported as one line."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    original = copy.deepcopy(config)
    try:
        _DefaultFillingValidator(schema).validate(config)
    except jsonschema.ValidationError:
        best = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(original))
        raise InputError(_explain(best) if best else "config does not match its schema") from None
    check_config(config)
    return config


def schema_defaults(section: str) -> dict[str, Any]:
    """The schema's defaults for one top-level section, for commands run outside Snakemake
    (the workflow passes them schema-filled already); one source, so the two cannot drift."""
    properties = yaml.safe_load(SCHEMA_PATH.read_text())["properties"][section]["properties"]
    return {key: copy.deepcopy(spec["default"]) for key, spec in properties.items() if "default" in spec}


#: what an experiment's label can name: the manifest's columns, plus the two the experiments derive
DERIVED_LABELS = ("modality", "dataset_scanner")
#: image kinds a demo cohort's tracer setting adds
DEMO_TRACER_KINDS = {"FDG": "pet-fdg", "AV45": "pet-amyloid", "AV1451": "pet-tau"}


def _label_columns() -> list[str]:
    manifest = yaml.safe_load((SCHEMA_DIR / "manifest.schema.yaml").read_text())
    return sorted(manifest["properties"]) + list(DERIVED_LABELS)


def dataset_kinds(dataset: dict[str, Any]) -> set[str] | None:
    """The image kinds a dataset can hold, where its kind fixes them (None: only its files know)."""
    kind = dataset["kind"]
    if kind == "demo":
        return {"T1w", "T2w", "FLAIR"} | {DEMO_TRACER_KINDS[t] for t in dataset.get("tracers", DEMO_TRACER_KINDS)}
    return {"ixi": {"T1w", "T2w"}, "sald": {"T1w"}}.get(kind)


def known_label_values(config: dict[str, Any], experiment: dict[str, Any]) -> set[str] | None:
    """Every value the experiment's label can take, where the config alone fixes them (None when
    only the manifests know): image kinds, dataset names, and the diagnosis of the demo, IXI
    and SALD (healthy cohorts get one configured label)."""
    label, datasets = experiment["label"], [config["datasets"][d] for d in experiment["datasets"] if d in config["datasets"]]
    if label == "modality":
        return set(experiment.get("modalities") or [experiment.get("target")])
    if label == "dataset":
        return set(experiment["datasets"])
    if label == "diagnosis" and datasets and all(d["kind"] in ("demo", "ixi", "sald") for d in datasets):
        return {v for d in datasets for v in (("AD", "CN") if d["kind"] == "demo" else (d.get("diagnosis", "CN"),))}
    return None


def _case_clashes(names: list[str], key: str) -> None:
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise InputError(
                f"config key '{key}': {other!r} and {name!r} differ only by case; their results folders "
                "collide on case-insensitive file systems, so rename one"
            )


def check_experiment_data(config: dict[str, Any], name: str, experiment: dict[str, Any]) -> None:
    """What the config alone says about an experiment's data: the label is a column the
    manifests have, ``classes`` name values the label can take, the datasets can hold the
    modalities asked for, and a demo cohort has subjects for every fold."""
    key = f"config key 'experiments.{name}"
    columns = _label_columns()
    if experiment["label"] not in columns:
        close = difflib.get_close_matches(experiment["label"], columns, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(f"{key}.label': no dataset has a column {experiment['label']!r}{hint}; labels are {', '.join(columns)}")
    known = known_label_values(config, experiment)
    classes = experiment.get("classes") or []
    if experiment["label"] == "dataset_scanner":
        stray = [c for c in classes if not any(c.startswith(d + " ") for d in experiment["datasets"])]
        if stray:
            raise InputError(
                f"{key}.classes': {stray} do not start with one of the experiment's datasets "
                f"{experiment['datasets']} (dataset_scanner values are '<dataset> <scanner>')"
            )
    elif known is not None and set(classes) - known:
        raise InputError(
            f"{key}.classes': {sorted(set(classes) - known)} never occur as {experiment['label']!r} here; "
            f"the values are {sorted(known)}"
        )
    datasets = {d: config["datasets"][d] for d in experiment["datasets"] if d in config["datasets"]}
    held = [dataset_kinds(d) for d in datasets.values()]
    if datasets and all(h is not None for h in held):
        available = set().union(*held)
        wanted = experiment.get("modalities") or [experiment.get("source"), experiment.get("target")]
        lacking = [m for m in wanted if m is not None and m not in available]
        if lacking:
            raise InputError(
                f"{key}': asks for {lacking}, which datasets {sorted(datasets)} cannot hold (they hold {sorted(available)})"
            )
    demo = [d for d in datasets.values() if d["kind"] == "demo"]
    folds = experiment.get("folds")
    if folds and demo and len(demo) == len(datasets):
        subjects = sum(d.get("subjects", 12) + d.get("t1w_only", 0) for d in demo)
        if subjects < folds:
            raise InputError(f"{key}.folds': {folds} folds but the demo cohort has {subjects} subjects; lower folds")


def check_config(config: dict[str, Any]) -> None:
    """What the schema cannot say: roots exist, presets exist, experiments name configured
    datasets and data those datasets can have, names do not clash by case."""
    _case_clashes(list(config["datasets"]), "datasets")
    _case_clashes(list(config["experiments"]), "experiments")
    for name, dataset in config["datasets"].items():
        if dataset["kind"] != "demo":
            root = Path(dataset["root"]).expanduser()
            if root.exists() and not root.is_dir():
                raise InputError(f"config key 'datasets.{name}.root': {str(root)!r} is a file, not a folder")
            if not root.is_dir():
                raise InputError(f"config key 'datasets.{name}.root': folder {str(root)!r} does not exist")
    for name, experiment in config["experiments"].items():
        check_experiment_data(config, name, experiment)
    presets = set(LIBRARY_PRESETS) | set(config.get("model_presets", {}))
    for name, experiment in config["experiments"].items():
        if experiment["preset"] not in presets:
            raise InputError(
                f"config key 'experiments.{name}.preset': {experiment['preset']!r} is neither a library preset "
                f"{list(LIBRARY_PRESETS)} nor a model_presets entry {sorted(config.get('model_presets', {}))}"
            )
        if experiment["model"] == "translation":
            key = f"config key 'experiments.{name}"
            if experiment["source"] == experiment["target"]:
                raise InputError(f"{key}.target': {experiment['target']!r} is also the source; translate between two kinds")
            if "modalities" in experiment:
                raise InputError(f"{key}.modalities': a translation experiment uses source and target instead")
        else:
            for field in ("source", "target"):
                if field in experiment:
                    raise InputError(f"config key 'experiments.{name}.{field}': only for model: translation")
        crop_setting(experiment, f"config key 'experiments.{name}")
        baseline_entries(name, experiment)
    for name, entry in config.get("predict", {}).items():
        check_predict(config, name, entry)


def check_predict(config: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    """A ``predict`` entry names one model (a MAGIC-Flow experiment of this config or an exported
    folder, whose existence is checked in the job: it may be on the compute nodes only) and a
    configured dataset."""
    key = f"config key 'predict.{name}"
    if ("experiment" in entry) == ("model" in entry):
        raise InputError(f"{key}': give exactly one of experiment (trained here) or model (an exported folder)")
    if entry["dataset"] not in config["datasets"]:
        raise InputError(f"{key}.dataset': {entry['dataset']!r} is not a configured dataset {sorted(config['datasets'])}")
    experiment = entry.get("experiment")
    if experiment is not None:
        if experiment not in config["experiments"]:
            raise InputError(f"{key}.experiment': {experiment!r} is not a configured experiment {sorted(config['experiments'])}")
        if config["experiments"][experiment]["model"] == "translation":
            raise InputError(f"{key}.experiment': {experiment!r} is a translation experiment; predict classifies")


def model_image_size(experiment: dict[str, Any]) -> int:
    """The side of the images the experiment's model sees: the crop's, else ``image_size`` (182 when absent)."""
    return int(experiment["crop"]["size"] if experiment.get("crop") else experiment.get("image_size", 182))


def baseline_entries(name: str, experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiment's ``baselines`` as checked mappings ``{id, name, weights, training}``:
    known names, unique ids, a classification experiment, an image size the architecture
    runs at, and weights files that exist."""
    from magicflow.baselines import DISCRIMINATIVE, EXPERIMENT_MODEL, GENERATIVE, TRANSLATION, kind_of

    known = [*DISCRIMINATIVE, *GENERATIVE, *TRANSLATION]
    entries, seen = [], {}
    for i, item in enumerate(experiment.get("baselines") or []):
        key = f"config key 'experiments.{name}.baselines.{i}'"
        entry = {"name": item} if isinstance(item, str) else dict(item)
        kind = kind_of(entry["name"])
        if kind is None:
            close = difflib.get_close_matches(entry["name"], known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(f"{key}: unknown baseline {entry['name']!r}{hint}; known baselines: {', '.join(known)}")
        wanted = EXPERIMENT_MODEL[kind]
        if experiment["model"] != wanted:
            raise InputError(
                f"{key}: {entry['name']!r} is a {wanted} baseline, but experiment {name!r} has model: "
                f"{experiment['model']} (list it under a model: {wanted} experiment)"
            )
        size = model_image_size(experiment)
        arch = DISCRIMINATIVE.get(entry["name"])
        if arch is not None and size < arch.min_size:
            raise InputError(
                f"{key}: {entry['name']} ({arch.timm_name}) needs image_size >= {arch.min_size}, the experiment has "
                f"{size}; sizes {arch.min_size}-182 work"
            )
        side = (experiment.get("translation") or {}).get("side")
        if entry["name"] == "class_mean" and side == "age":
            raise InputError(
                f"{key}: class_mean predicts each class's mean image, but translation.side is age (no class); "
                "use mean, or side label, predicted or none"
            )
        if kind != "discriminative" and "weights" in entry:
            raise InputError(f"{key}.weights: {kind} baselines train from scratch; remove weights")
        entry_id = entry.get("id", entry["name"])
        if entry_id in seen:
            raise InputError(f"{key}: baseline id {entry_id!r} is listed twice (also entry {seen[entry_id]}); give one an id")
        seen[entry_id] = i
        if "weights" in entry:
            weights = Path(entry["weights"]).expanduser()
            if not weights.is_file():
                raise InputError(f"{key}.weights: file {str(weights)!r} does not exist (weights are never downloaded)")
            entry["weights"] = str(weights)
        entries.append(
            {"id": entry_id, "name": entry["name"], "weights": entry.get("weights"), "training": entry.get("training", {})}
        )
    return entries


def active_experiments(config: dict[str, Any]) -> tuple[dict[str, dict], list[str]]:
    """Experiments whose datasets are all configured, and one line per skipped experiment."""
    active, skipped = {}, []
    for name, experiment in config["experiments"].items():
        missing = [d for d in experiment["datasets"] if d not in config["datasets"]]
        if missing:
            alike = {d: [c for c in config["datasets"] if c.lower() == d.lower()] for d in missing}
            hints = "".join(f" ({d!r}: did you mean {a[0]!r}?)" for d, a in alike.items() if a)
            skipped.append(f"experiment {name!r} skipped: dataset(s) {', '.join(missing)} not configured{hints}")
        else:
            active[name] = experiment
    return active, skipped


def baseline_settings(config: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Each baseline of one experiment by id: what its training and classification read besides
    experiment.json, written to ``results/<experiment>/baselines/<id>/baseline.json`` (a file of
    its own, so adding a baseline reruns nothing of the flow's). Training is the experiment's
    with the entry's overrides; augmentation and seed are always the experiment's."""
    from magicflow.baselines import DISCRIMINATIVE, GENERATIVE, TRANSLATION

    experiment = config["experiments"][name]
    resolved = experiment_settings(config, name)
    training = resolved["training"]
    out = {}
    for entry in baseline_entries(name, experiment):
        if entry["name"] in GENERATIVE or entry["name"] in TRANSLATION:
            kind = "generative" if entry["name"] in GENERATIVE else "translation"
            gen = {**GENERATIVE, **TRANSLATION}[entry["name"]]
            label, architecture = gen.label, gen.architecture
        else:
            arch = DISCRIMINATIVE[entry["name"]]
            kind, label, architecture = "discriminative", arch.label, arch.timm_name
        out[entry["id"]] = {
            "id": entry["id"],
            "name": entry["name"],
            "kind": kind,
            "label": label,
            "architecture": architecture,
            "image_size": model_image_size(experiment),
            "weights": entry["weights"],
            "training": {**training, **entry["training"]},
            **({"preset": resolved["preset_base"], "samples": resolved["samples"]} if kind == "generative" else {}),
            **({"side": resolved["translation"]["side"]} if kind == "translation" else {}),
        }
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a config file (for use outside Snakemake)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read config {str(path)!r}: {error}") from None
    if not isinstance(config, dict):
        raise InputError(f"config {str(path)!r} must be a mapping of sections, got {type(config).__name__}")
    return validate_config(config)


def experiment_settings(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything the learning stages of one experiment need, resolved from the config.

    Written to ``results/<experiment>/experiment.json`` by the workflow: a change here (and
    only here) reruns that experiment's stages, never registration or slicing."""
    experiment = config["experiments"][name]
    preset = experiment["preset"]
    if preset in LIBRARY_PRESETS:
        base, overrides = preset, {}
    else:
        base, overrides = config["model_presets"][preset]["base"], config["model_presets"][preset].get("overrides", {})
    if "image_size" in overrides:
        raise InputError(f"config key 'model_presets.{preset}.overrides.image_size': set experiments.{name}.image_size instead")
    own = experiment.get("training", {})
    training = {**config["training"], **own, "augment": {**config["training"]["augment"], **own.get("augment", {})}}
    for key in ("threads", "runtime_minutes", "retries"):  # how a job runs, not what is learned: rerun nothing
        training.pop(key, None)
    folds = experiment["folds"]
    run_folds = experiment["run_folds"] or (1 if experiment["model"] == "generation" else folds)
    if run_folds > folds:
        raise InputError(f"config key 'experiments.{name}.run_folds': {run_folds} is more than folds={folds}")
    translation = {}
    if experiment["model"] == "translation":
        translation = {"source": experiment["source"], "target": experiment["target"], "translation": experiment["translation"]}
    return {
        "name": name,
        "datasets": experiment["datasets"],
        "label": experiment["label"],
        "classes": experiment["classes"],
        "modalities": [experiment["target"]] if translation else experiment["modalities"],
        **translation,
        "offsets": experiment["offsets"],
        "model": experiment["model"],
        "preset": preset,
        "preset_base": base,
        "preset_overrides": overrides,
        "image_size": model_image_size(experiment),
        # only when set: adding the key to every experiment.json would rerun every resized experiment
        **({"crop": crop} if (crop := crop_setting(experiment, f"config key 'experiments.{name}")) else {}),
        "folds": folds,
        "run_folds": run_folds,
        "seed": training["seed"],
        "training": training,
        "samples": experiment["samples"],
        "attribution": experiment["attribution"],
    }


#: what an experiment's data check and split read of its settings (written to splits/settings.json,
#: so that a training or evaluation setting reruns neither)
SPLIT_KEYS = ("name", "datasets", "label", "classes", "modalities", "source", "target", "folds", "run_folds", "seed")


def split_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of :func:`experiment_settings` the data check and the split read."""
    return {key: settings[key] for key in SPLIT_KEYS if key in settings}


def check_experiment_manifests(experiment: dict[str, Any], manifests: dict[str, Any]) -> dict[str, dict[str, int]]:
    """What an experiment needs of its datasets' manifests, checked as soon as they exist (before
    any registration): the label column is there, every value of ``classes`` occurs among the
    experiment's image kinds, and there are subjects for every fold. ``experiment`` is its
    resolved settings (experiment.json), ``manifests`` maps each dataset to its manifest table;
    the slices can only have fewer images than these. Returns images and subjects per class."""
    import pandas as pd

    key = f"experiment {experiment.get('name', '')!r}"
    kinds = experiment.get("modalities") or [experiment.get("target")]
    parts = []
    for dataset in experiment["datasets"]:
        table = manifests[dataset].copy()
        table["dataset"] = dataset
        table["kind"] = table["modality"].where(table["modality"] != "pet", "pet-" + table["tracer"])
        table["dataset_scanner"] = dataset + " " + table["scanner"]
        column = "kind" if experiment["label"] == "modality" else experiment["label"]
        if column not in table:
            raise InputError(
                f"{key}: the manifest of dataset {dataset!r} has no column {experiment['label']!r} to use as the label"
            )
        parts.append(table.assign(label=table[column])[table["kind"].isin(kinds)])
    images = pd.concat(parts, ignore_index=True)
    images = images[images["label"] != "n/a"]
    present = sorted(images["label"].unique())
    classes = experiment.get("classes") or []
    absent = sorted(set(classes) - set(present))
    if absent:
        raise InputError(
            f"{key}: classes {absent} never occur as {experiment['label']!r} among its {kinds} images in "
            f"{experiment['datasets']}; values present: {present}"
        )
    if classes:
        images = images[images["label"].isin(classes)]
    if images.empty:
        raise InputError(f"{key}: no {kinds} images with a {experiment['label']!r} label in {experiment['datasets']}")
    folds = experiment["folds"]
    subjects = images.groupby("label").apply(lambda t: (t["dataset"] + "/" + t["subject"]).nunique(), include_groups=False)
    if (images["dataset"] + "/" + images["subject"]).nunique() < folds or (subjects < folds).all():
        counts = ", ".join(f"{k}: {v}" for k, v in subjects.items())
        raise InputError(
            f"{key}: {folds} folds but the manifests hold too few subjects per class ({counts}); lower folds or add data"
        )
    images_per_class = images.groupby("label").size()
    return {str(c): {"images": int(images_per_class[c]), "subjects": int(subjects[c])} for c in images_per_class.index}
