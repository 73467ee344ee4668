"""Configuration: JSON-schema validation, defaults, and the checks a schema cannot express.

Every problem is reported as one ``ConfigError`` whose message names the offending key (as a dotted path,
``experiments.<name>.<…>``) and the rule it broke, before any job runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import jsonschema
import yaml

__all__ = ["STUDY_SECTIONS", "ConfigError", "load_schema", "validate_config", "class_index", "experiment_hash", "class_names",
           "pretrained_source", "PRETRAINED_SOURCES", "check_grids"]


# Optional per-experiment sections of the studies: they never change what sampling produces (nor the config hash).
STUDY_SECTIONS = ("immse", "convergence", "speciation", "guidance_study")


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and the rule."""


def load_schema(path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<config>"


def _with_defaults(validator_class):
    """Extend a validator so that it fills in ``default`` values of object properties as it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _check_finite(value, path=()) -> None:
    """Refuse NaN and infinities anywhere in the config (YAML's .nan and .inf are floats a schema accepts)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{_key(path)}: must be a finite number, got {value} (rule: finite)")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, (*path, index))


def _schema_errors(config: dict, schema: dict) -> None:
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    # For if/then branches best_match may return the container; descend to the most specific cause.
    while error.context:
        error = jsonschema.exceptions.best_match(error.context)
    value = error.instance
    shown = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    raise ConfigError(f"{_key(error.absolute_path)}: {error.message} (rule: {error.validator}; value: {shown})")


DATASET_CLASSES = {
    "digits": [str(k) for k in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


PRETRAINED_SOURCES = ("diffusers", "dit", "stable_diffusion", "python", "sd3", "memory")
# model keys of each pretrained source besides source and path
SOURCE_KEYS = {
    "diffusers": ("class_names", "null_label"),
    "dit": ("classes",),
    "stable_diffusion": ("prompts", "negative_prompt"),
    "python": ("entry", "classes", "class_names", "zero_label_is_null", "prediction", "path_kind", "null_label"),
    "sd3": ("prompts", "negative_prompt"),
    "memory": (),
}
REQUIRED_SOURCE_KEYS = {"dit": ("classes",), "stable_diffusion": ("prompts",), "python": ("entry",),
                        "sd3": ("prompts",)}
PROMPT_SOURCES = ("stable_diffusion", "sd3")
# model keys of the python source that apply to one network kind only (model.prediction: sample, the default, or
# velocity)
PYTHON_KIND_KEYS = {"sample": ("zero_label_is_null",), "velocity": ("path_kind", "null_label")}
SIGMA_KEYS = ("sigma_min", "sigma_max", "rho")


def pretrained_source(spec: dict) -> str | None:
    """The pretrained ``model.source`` of a network experiment, or None (own model, or a mixture)."""
    source = spec.get("model", {}).get("source") if spec.get("kind") == "ddpm" else None
    return source if source in PRETRAINED_SOURCES else None


def class_names(spec: dict) -> list[str] | None:
    """The class labels of an experiment, in label order (a data subset is relabelled in its given order); None
    where only the model's folder can tell (a pretrained model named by ids or labels)."""
    if spec.get("kind") == "gmm":
        mix = spec["mixture"]
        return list(mix.get("class_names") or [str(k) for k in range(len(mix["weights"]))])
    source = pretrained_source(spec)
    if source is not None:
        model = spec["model"]
        if source in PROMPT_SOURCES:
            return list(model["prompts"])
        if source == "dit" and all(isinstance(c, str) for c in model["classes"]):
            return list(model["classes"])
        if source == "python" and model.get("classes"):
            return list(model.get("class_names") or [str(c) for c in model["classes"]])
        return list(model["class_names"]) if model.get("class_names") else None
    names = DATASET_CLASSES.get(spec.get("data", {}).get("name"))
    if names is None:
        return None
    subset = spec["data"].get("classes")
    return [names[k] for k in subset if k < len(names)] if subset else names


def class_index(ref, names: list[str], key: str) -> int:
    """Resolve a class given by index or by name to its index."""
    if isinstance(ref, int):
        if not 0 <= ref < len(names):
            raise ConfigError(f"{key}: class index {ref} is out of range 0…{len(names) - 1} (rule: class-range)")
        return ref
    if ref not in names:
        raise ConfigError(f"{key}: unknown class {ref!r}; classes are {names} (rule: class-name)")
    return names.index(ref)


def _check_partitions(spec: dict, names: list[str] | None, key: str) -> None:
    """Partition sides against the class names; with names None (known only from a model's folder), skipped here
    and checked by ``seminfo.models.check_sources``."""
    if names is None:
        return
    for pname, sides in (spec.get("partitions") or {}).items():
        pkey = f"{key}.partitions.{pname}"
        resolved = [[class_index(r, names, f"{pkey}[{s}]") for r in side] for s, side in enumerate(sides)]
        overlap = set(resolved[0]) & set(resolved[1])
        if overlap:
            raise ConfigError(f"{pkey}: the two sides share classes {sorted(overlap)} (rule: disjoint-sides)")


def _check_schedule(spec: dict, key: str) -> None:
    sched = spec["schedule"]
    if sched["name"] == "linear":
        start, end = sched.get("beta_start", 1e-4), sched.get("beta_end", 0.02)
        if not start < end:
            raise ConfigError(f"{key}.schedule.beta_start: must be below beta_end ({start} >= {end}) (rule: order)")
        if end * 1000.0 / sched["T"] > 1:
            raise ConfigError(f"{key}.schedule.beta_end: beta_end * 1000 / T exceeds 1 (rule: beta-range)")
    elif "beta_start" in sched or "beta_end" in sched:
        raise ConfigError(f"{key}.schedule: beta_start/beta_end apply to the linear schedule only (rule: unused-key)")
    steps = spec["sampling"]["steps"]
    if steps > sched["T"]:
        raise ConfigError(f"{key}.sampling.steps: {steps} exceeds schedule.T = {sched['T']} (rule: steps <= T)")
    if spec["kind"] == "ddpm":
        check_grids(spec, key, sched["T"])


def check_grids(spec: dict, key: str, T: int, spacing: str = "even", steps_offset: int = 0) -> None:
    """The grids of a network experiment's chains (``sampling.steps`` and ``guidance_study.steps``) exist for T with
    ``sampling.timestep_spacing``, else the model's ``spacing`` and ``steps_offset`` (``schedules.chain_times``);
    raises ``ConfigError`` naming the key. Step counts above T are left to the steps <= T checks."""
    from .chain.schedules import chain_times

    spacing = spec["sampling"].get("timestep_spacing", spacing)
    for name, steps in (("sampling.steps", spec["sampling"]["steps"]),
                        ("guidance_study.steps", spec.get("guidance_study", {}).get("steps"))):
        if steps is None or steps > T:
            continue
        try:
            chain_times(T, steps, spacing, steps_offset)
        except ValueError as err:
            raise ConfigError(f"{key}.{name}: {err} (rule: scheduler-grid)") from None


def _check_sampling_kernel(spec: dict, key: str) -> None:
    sampling = spec["sampling"]
    if "eta" in sampling and sampling["kernel"] != "ddim":
        raise ConfigError(f"{key}.sampling.eta: applies to kernel ddim only, the kernel is {sampling['kernel']!r} "
                          "(rule: unused-key)")


def _check_mixture_means(spec: dict, key: str) -> None:
    """1-D means are numbers; with ``dim`` they are K lists of dim numbers, or drawn (mean_norm, mean_seed)."""
    mix, k = spec["mixture"], len(spec["mixture"]["weights"])
    drawn = [f for f in ("mean_norm", "mean_seed", "mean_antipodal") if f in mix]
    if "dim" not in mix:
        if drawn:
            raise ConfigError(f"{key}.mixture.{drawn[0]}: applies with mixture.dim only (rule: needs-dim)")
        if "means" not in mix:
            raise ConfigError(f"{key}.mixture: 'means' is a required property (rule: required)")
        vectors = [i for i, m in enumerate(mix["means"]) if isinstance(m, list)]
        if vectors:
            raise ConfigError(f"{key}.mixture.means[{vectors[0]}]: a 1-D mixture takes one number per class; set "
                              "mixture.dim for vector means (rule: needs-dim)")
        return
    dim = mix["dim"]
    if ("means" in mix) == ("mean_norm" in mix):
        raise ConfigError(f"{key}.mixture: with dim give either means or mean_norm, not both or neither "
                          "(rule: one-of)")
    if "means" in mix:
        if drawn:
            raise ConfigError(f"{key}.mixture.{drawn[0]}: applies with mean_norm only (rule: unused-key)")
        for i, m in enumerate(mix["means"]):
            if not isinstance(m, list) or len(m) != dim:
                raise ConfigError(f"{key}.mixture.means[{i}]: must be a list of dim = {dim} numbers "
                                  "(rule: dim-length)")
        return
    if "mean_seed" not in mix:
        raise ConfigError(f"{key}.mixture.mean_seed: required with mean_norm (rule: required)")
    if mix.get("mean_antipodal") and k != 2:
        raise ConfigError(f"{key}.mixture.mean_antipodal: needs exactly 2 classes, there are {k} "
                          "(rule: antipodal-pair)")


def _check_studies(spec: dict, key: str) -> None:
    """The step-convergence study is 1-D only; the speciation study takes the experiment's (common) std."""
    if "dim" in spec["mixture"] and "convergence" in spec:
        raise ConfigError(f"{key}.convergence: the step-convergence study is for 1-D mixtures only (without "
                          "mixture.dim) (rule: one-dimensional)")
    stds = spec["mixture"]["stds"]
    if "speciation" in spec and len(set(stds)) != 1:
        raise ConfigError(f"{key}.speciation: the study takes the experiment's std, which must be the same for "
                          f"every class, got {stds} (rule: equal-stds)")


def _check_gmm(spec: dict, key: str) -> None:
    mix = spec["mixture"]
    k = len(mix["weights"])
    _check_mixture_means(spec, key)
    _check_studies(spec, key)
    for field in ("means", "stds", "class_names"):
        if field in mix and len(mix[field]) != k:
            raise ConfigError(
                f"{key}.mixture.{field}: has {len(mix[field])} entries but weights has {k} (rule: same-length)"
            )
    total = sum(mix["weights"])
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"{key}.mixture.weights: must sum to 1 within 1e-6, sums to {total!r} (rule: sum-to-one)")
    if "class_names" in mix and len(set(mix["class_names"])) != k:
        raise ConfigError(f"{key}.mixture.class_names: names must be unique (rule: unique)")


def _check_ddpm(spec: dict, key: str) -> None:
    data = spec["data"]
    if data["name"] == "cifar10" and "root" not in data:
        raise ConfigError(f"{key}.data.root: required for cifar10 (the folder holding cifar-10-batches-py) "
                          "(rule: required)")
    classes = data.get("classes") or []
    if any(k >= len(DATASET_CLASSES[data["name"]]) for k in classes):
        raise ConfigError(f"{key}.data.classes: {data['name']} has classes 0…{len(DATASET_CLASSES[data['name']]) - 1} "
                          "(rule: class-range)")
    sampling = spec["sampling"]
    if sampling["shards"] > sampling["trajectories_per_class"] * len(classes or range(10)):
        raise ConfigError(f"{key}.sampling.shards: more shards than trajectories (rule: shards <= trajectories)")


def _check_pretrained(spec: dict, key: str) -> None:
    """A pretrained model: no training sections, the model keys of its source, distinct conditions."""
    source, model, sampling = spec["model"]["source"], spec["model"], spec["sampling"]
    for section in ("data", "train", "schedule"):
        if section in spec:
            grids = {"python": "the grid is set by sampling.steps (and for a denoiser sampling.sigma_min/sigma_max/rho)",
                     "sd3": "the sigma grid is the flow-matching scheduler's for sampling.steps"}
            what = grids.get(source, "the schedule is rebuilt from the model's scheduler config") if (
                section == "schedule") else "the model is not trained here"
            raise ConfigError(f"{key}.{section}: a pretrained model (model.source: {source}) takes no {section} "
                              f"section: {what} (rule: unused-section)")
    for name in sorted(set(model) - {"source", "path", "revision"} - set(SOURCE_KEYS[source])):
        users = [s for s, keys in SOURCE_KEYS.items() if name in keys]
        raise ConfigError(f"{key}.model.{name}: applies to model.source {' / '.join(users)} only, not {source} "
                          "(rule: unused-key)")
    for name in REQUIRED_SOURCE_KEYS.get(source, ()):
        if name not in model:
            raise ConfigError(f"{key}.model.{name}: required for model.source {source} (rule: required)")
    if source in PROMPT_SOURCES:
        prompts = model["prompts"]
        for j, prompt in enumerate(prompts):
            if prompt in prompts[:j]:
                raise ConfigError(f"{key}.model.prompts[{j}]: {prompt!r} appears twice; the conditions must be "
                                  "distinct (rule: unique)")
        if model.get("negative_prompt", "") in prompts:
            raise ConfigError(f"{key}.model.negative_prompt: {model.get('negative_prompt', '')!r} is also one of the "
                              "prompts (rule: unique)")
    if source == "python":
        kind = model.get("prediction", "sample")
        for other, keys in PYTHON_KIND_KEYS.items():
            for name in keys:
                if other != kind and name in model:
                    raise ConfigError(f"{key}.model.{name}: applies to model.prediction {other} only, not {kind} "
                                      "(rule: unused-key)")
        if kind == "velocity" and "path_kind" not in model:
            raise ConfigError(f"{key}.model.path_kind: required for model.prediction velocity (linear or gvp) "
                              "(rule: required)")
        if any(not isinstance(c, int) for c in model.get("classes", [])):
            raise ConfigError(f"{key}.model.classes: label ids (integers) for model.source python (rule: type)")
        if "class_names" in model and "classes" in model and len(model["class_names"]) != len(model["classes"]):
            raise ConfigError(f"{key}.model.class_names: has {len(model['class_names'])} names, model.classes "
                              f"{len(model['classes'])} (rule: same-length)")
        if "null_label" in model and model["null_label"] in model.get("classes", []):
            raise ConfigError(f"{key}.model.null_label: {model['null_label']} is also one of model.classes "
                              "(rule: unique)")
        if sampling["kernel"] != "ddpm" or sampling.get("variance", "small") != "small":
            raise ConfigError(f"{key}.sampling.kernel: model.source python samples with the ancestral step of its "
                              "path (kernel ddpm, variance small) (rule: sigma-ancestral)")
        if "timestep_spacing" in sampling:
            raise ConfigError(f"{key}.sampling.timestep_spacing: model.source python samples on its own grid (the "
                              "Karras sigma grid, or the path's uniform grid) (rule: unused-key)")
    if source == "python" and model.get("prediction", "sample") == "sample":
        lo, hi = sampling.get("sigma_min", 0.002), sampling.get("sigma_max", 80.0)
        if not lo < hi:
            raise ConfigError(f"{key}.sampling.sigma_min: must be below sigma_max ({lo} >= {hi}) (rule: order)")
    else:
        for name in SIGMA_KEYS:
            if name in sampling:
                raise ConfigError(f"{key}.sampling.{name}: applies to model.source python with a sigma denoiser only "
                                  "(rule: unused-key)")
    names = class_names(spec)
    if names is not None and sampling["shards"] > sampling["trajectories_per_class"] * len(names):
        raise ConfigError(f"{key}.sampling.shards: more shards than trajectories (rule: shards <= trajectories)")


def check_guidance_and_tracking(spec: dict, key: str, T: int, names: list[str] | None, has_null: bool) -> None:
    """``sampling.guidance`` and one-vs-rest tracking against the model: a null condition, an interval inside
    [0, T], targets among the classes; raises ``ConfigError``. (Pretrained models: ``seminfo.models.check_sources``
    calls it with what their folders say.)"""
    s = spec["sampling"]
    guidance, ovr = s.get("guidance"), s.get("tracking") == "one_vs_rest"
    if guidance is not None:
        lo, hi = guidance.get("interval", [0, T])
        if not 0 <= lo <= hi <= T:
            raise ConfigError(f"{key}.sampling.guidance.interval: [{lo}, {hi}] must satisfy 0 <= t_lo <= t_hi <= "
                              f"T = {T} (rule: interval)")
    if (guidance is not None or ovr) and not has_null:
        what = "guidance" if guidance is not None else "tracking"
        raise ConfigError(f"{key}.sampling.{what}: needs a model with a null (unconditional) condition, which this "
                          "model does not have (rule: null-condition)")
    if spec["kind"] == "gmm" and guidance is not None:
        if s["kernel"] == "exact":
            raise ConfigError(f"{key}.sampling.guidance: guidance moves an eps-parameterised step; use kernel ddpm or "
                              "ddim (rule: guided-kernel)")
        if spec["mixture"].get("dim", 1) != 1:
            raise ConfigError(f"{key}.sampling.guidance: applies to 1-D mixtures (rule: guided-kernel)")
    prior = s.get("class_prior")
    if prior is not None and names is not None and len(prior) != len(names):
        raise ConfigError(f"{key}.sampling.class_prior: {len(prior)} weights for {len(names)} conditions "
                          "(rule: class-prior)")
    for name in ("targets", "target_prior"):
        if name in s and not ovr:
            raise ConfigError(f"{key}.sampling.{name}: applies to tracking one_vs_rest only (rule: unused-key)")
    if "guidance_study" in spec:
        if not has_null:
            raise ConfigError(f"{key}.guidance_study: needs a model with a null (unconditional) condition "
                              "(rule: null-condition)")
        if spec["guidance_study"].get("steps", 2) > T:
            raise ConfigError(f"{key}.guidance_study.steps: exceeds T = {T} (rule: steps <= T)")
    if ovr:
        if spec.get("partitions"):
            raise ConfigError(f"{key}.partitions: binary decisions need the K-class posterior; one-vs-rest tracking "
                              "has one class per trajectory (rule: one-vs-rest)")
        if s.get("prune_log_threshold") is not None:
            raise ConfigError(f"{key}.sampling.prune_log_threshold: pruning applies to full tracking only "
                              "(rule: one-vs-rest)")
        if names is not None:
            for j, ref in enumerate(s.get("targets") or []):
                class_index(ref, names, f"{key}.sampling.targets[{j}]")


def validate_config(config: dict, schema: dict) -> dict:
    """Validate ``config`` against ``schema``, fill in defaults, run the semantic checks; return the result, in
    which a pretrained model named by its hub id reads its download folder (``seminfo.models.hub.hub_models``).

    The input is not modified. Raises ``ConfigError`` on the first problem.
    """
    if not isinstance(config, dict):
        raise ConfigError("<config>: the configuration must be a mapping with an 'experiments' key (rule: type)")
    config = copy.deepcopy(config)
    _check_finite(config)
    _schema_errors(config, schema)
    for name in config.get("run", []):
        if name not in config["experiments"]:
            raise ConfigError(f"run: {name!r} is not an experiment of this config (rule: known-experiment)")
    for name, spec in config["experiments"].items():
        key = f"experiments.{name}"
        if pretrained_source(spec):
            _check_pretrained(spec, key)
        else:
            _check_schedule(spec, key)
        _check_sampling_kernel(spec, key)
        if spec["kind"] == "gmm":
            _check_gmm(spec, key)
        elif not pretrained_source(spec):
            _check_ddpm(spec, key)
        if not pretrained_source(spec):
            check_guidance_and_tracking(spec, key, spec["schedule"]["T"], class_names(spec), has_null=True)
        _check_partitions(spec, class_names(spec), key)
    from .models.hub import hub_models  # here: seminfo.models imports this module

    return hub_models(config)


def experiment_hash(spec: dict) -> str:
    """Short content hash of what an experiment's samples depend on (analysis and plot options excluded).

    Intermediate files carry it, so that a stage can refuse files made for another configuration.
    """
    core = {k: v for k, v in spec.items() if k not in ("analysis", "plots") + STUDY_SECTIONS}
    blob = json.dumps(core, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_config(path, schema_path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return validate_config(config, load_schema(schema_path))
