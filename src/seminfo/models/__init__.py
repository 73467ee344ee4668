"""Model adapters: every diffusion model the sampler can measure, behind one small protocol (``base.Adapter``).

``load_adapter(spec, model_path, device)`` builds the adapter an experiment's ``model.source`` names:

- ``own`` (the default): the class-conditional UNet trained by rule ddpm_train (``own``)
- ``diffusers``: a class-conditional diffusers ``UNet2DModel`` folder (``diffusers_unet``)
- ``dit``: a DiT folder, conditions a subset of its ImageNet classes (``dit``)
- ``stable_diffusion``: a Stable Diffusion folder, conditions a list of prompts (``stable_diffusion``)
- ``python``: a sigma-parameterised denoiser D(x; sigma, label) from a user's entry point (``sigma_denoiser``), or
  with ``model.prediction: velocity`` a velocity network v(x, t, y) of a Gaussian path (``velocity``)
- ``sd3``: a Stable Diffusion 3 folder (flow matching), conditions a list of prompts (``sd3``)
- ``memory``: an adapter object handed to ``seminfo.measure`` (``memory``; not in a config file)

A pretrained source is loaded from a local folder only (``from_pretrained(…, local_files_only=True)``).
``check_sources`` checks every pretrained experiment's folder from its JSON files when the workflow is parsed, so a
missing folder, component, class name or an unknown schedule stops the run before any job. A model named by its hub
id (``hub``) reads its download folder; until rule model_download has filled it, its checks wait for rule model_check.
"""

from __future__ import annotations

from ..chain.schedules import schedule_from_spec
from ..config import ConfigError, check_grids, check_guidance_and_tracking
from .base import PREDICTIONS, VARIANCES, Adapter, NetworkAdapter
from .folders import FolderError, fingerprint
from .hub import downloaded, is_hub, read_record

__all__ = ["PREDICTIONS", "VARIANCES", "Adapter", "NetworkAdapter", "SOURCES", "PRETRAINED", "model_source",
           "is_pretrained", "load_adapter", "inspect_source", "check_sources", "has_null_condition",
           "source_schedule", "adapter_record", "FolderError"]

PRETRAINED = ("diffusers", "dit", "stable_diffusion", "python", "sd3", "memory")
SOURCES = ("own",) + PRETRAINED


def model_source(spec: dict) -> str:
    """The ``model.source`` of an experiment (absent: 'own')."""
    return spec.get("model", {}).get("source", "own")


def is_pretrained(spec: dict) -> bool:
    return spec.get("kind") == "ddpm" and model_source(spec) in PRETRAINED


def _module(source: str):
    from . import diffusers_unet, dit, memory, sd3, sigma_denoiser, stable_diffusion

    modules = {"diffusers": diffusers_unet, "dit": dit, "stable_diffusion": stable_diffusion,
               "python": sigma_denoiser, "sd3": sd3, "memory": memory}
    if source not in modules:
        raise ValueError(f"unknown model source {source!r} (expected one of {SOURCES})")
    return modules[source]


def _spec_module(spec: dict):
    """The adapter module of an experiment: by source, and for python by ``model.prediction``."""
    source = model_source(spec)
    if source == "python" and spec["model"].get("prediction") == "velocity":
        from . import velocity

        return velocity
    return _module(source)


def inspect_source(spec: dict) -> dict:
    """What a pretrained experiment's folder holds, from its files (no weights loaded); FolderError if unusable."""
    return _spec_module(spec).inspect(spec)


def load_adapter(spec: dict, model_path, device) -> Adapter:
    """The adapter of an experiment's model, on ``device`` and in eval mode.

    ``model_path``: for ``own``, the trained checkpoint (model.safetensors); for a pretrained source it is not read
    (the model is ``model.path``). A folder the adapter cannot load raises ``InputError`` naming the key and file.
    """
    source = model_source(spec)
    if source == "own":
        from .own import own_adapter

        return own_adapter(spec, model_path, schedule_from_spec(spec), device)
    from ..io import InputError

    try:
        return _spec_module(spec).load(spec, device)
    except FolderError as err:
        raise InputError(f"{err.key}: {err}") from None


def check_sources(config: dict) -> None:
    """Check the folder of every pretrained experiment (JSON files only) and the sampling options it allows.

    Raises ``ConfigError`` naming ``experiments.<name>.<key>``, the file and the problem. A hub model not downloaded
    yet is skipped: rule model_check runs these checks once rule model_download has fetched it.
    """
    for name, spec in config["experiments"].items():
        if not is_pretrained(spec) or (is_hub(spec) and not downloaded(spec)):
            continue
        key = f"experiments.{name}"
        try:
            plan = inspect_source(spec)
        except FolderError as err:
            raise ConfigError(f"{key}.{err.key}: {err} (rule: model-folder)") from None
        s = spec["sampling"]
        T = plan["schedule"].T
        check_guidance_and_tracking(spec, key, T, plan.get("names"), bool(plan["has_null"]))
        if model_source(spec) not in ("python", "sd3") and s["steps"] > T:
            raise ConfigError(f"{key}.sampling.steps: {s['steps']} exceeds the model's T = {T} (rule: steps <= T)")
        if model_source(spec) not in ("python", "sd3"):
            check_grids(spec, key, T, plan["timestep_spacing"], plan["steps_offset"])
        elif model_source(spec) == "sd3" and "timestep_spacing" in s:
            raise ConfigError(f"{key}.sampling.timestep_spacing: model.source sd3 samples on its scheduler's shifted "
                              "sigma grid (rule: unused-key)")
        if plan.get("variance") == "learned_range":
            if s.get("kernel") == "ddim":
                raise ConfigError(f"{key}.sampling.kernel: ddim does not apply to a learned-variance model (its step "
                                  "variance is the network's) (rule: learned-variance)")
            if s.get("prune_log_threshold") is not None:
                raise ConfigError(f"{key}.sampling.prune_log_threshold: pruning needs a variance shared by all "
                                  "conditions; a learned-variance model has none (rule: learned-variance)")


def has_null_condition(spec: dict) -> bool:
    """Whether the experiment's model has an unconditional (null) condition, without loading it."""
    if not is_pretrained(spec):
        return True  # the own UNet is trained with the null label K
    if is_hub(spec) and not downloaded(spec):  # from the config, as its inspect will say once it is downloaded
        return _spec_module(spec).config_has_null(spec["model"])
    return bool(inspect_source(spec)["has_null"])


def source_schedule(spec: dict):
    """The forward process of an experiment's model (float64): the config's for ``own``, else rebuilt from the
    model's scheduler configuration (or its sigma grid), without loading the network."""
    if not is_pretrained(spec):
        return schedule_from_spec(spec)
    return inspect_source(spec)["schedule"]


def adapter_record(spec: dict, adapter: Adapter) -> dict:
    """What rule model_check writes to adapter.json: the adapter's description and the folder's fingerprint, and for
    a model named by its hub id its repository, revision and the commit downloaded (``hub.read_record``)."""
    record = {"describe": adapter.describe(), "path": str(spec["model"]["path"]),
              "fingerprint": fingerprint(spec["model"]["path"])}
    hub = read_record(spec)
    if hub is not None:
        record["hub"] = {k: hub.get(k) for k in ("repo_id", "revision", "commit")}
    return record
