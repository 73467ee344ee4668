"""The Python API: measure a mixture or a model from a notebook, with the workflow's own stages.

``measure`` turns its arguments into one experiment spec, validates it exactly as the workflow validates its
config (the same schema, defaults and checks, so a bad setting raises the same ``ConfigError`` naming its key),
then calls the stage functions the Snakemake rules call, in the rules' order, writing the files the workflow
writes for ``results/<experiment>/`` into a folder. Nothing here computes anything itself.

Example::

    import seminfo

    run = seminfo.measure({"weights": [0.5, 0.5], "means": [-1.0, 1.0], "stds": [0.3, 0.3]},
                          steps=100, trajectories_per_class=200, seed=0)
    run.summary["entropy"]            # xarray, (class, time)
    seminfo.plot.entropy(run.summary)  # a matplotlib Figure
    run.save("results/pair")          # the workflow's file layout
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from . import plan
from .config import ConfigError, pretrained_source, validate_config

__all__ = ["Run", "measure", "load_model", "experiment_spec", "mixture_section", "DEFAULT_SCHEDULE"]

# The schedule of a mixture experiment when neither the target nor ``schedule=`` gives one (the default config's).
DEFAULT_SCHEDULE = {"name": "linear", "T": 1000, "beta_start": 1.0e-4, "beta_end": 0.02}


@dataclass(frozen=True)
class Run:
    """The outcome of ``measure``.

    Attributes:
        experiment: the experiment's name (its ``experiment`` attribute in every file).
        spec: the validated experiment spec, schema defaults filled in (as in the workflow's config).
        folder: where the files were written (``results/<experiment>/`` of the workflow).
        files: the files of the run, relative to ``folder``, in the order the stages wrote them.
        summary: ``summary.nc``, loaded into memory.
    """

    experiment: str
    spec: dict
    folder: Path
    files: tuple[str, ...]
    summary: xr.Dataset = field(repr=False)

    def path(self, name: str) -> Path:
        """The absolute path of one of ``files`` (e.g. ``'summary.nc'``, ``'figures/entropy.png'``)."""
        if name not in self.files:
            raise KeyError(f"{name!r} is not a file of this run; it has {list(self.files)}")
        return self.folder / name

    def open(self, name: str) -> xr.Dataset:
        """One of the run's NetCDF files (``'profiles.nc'``, ``'decisions.nc'``, …), loaded into memory."""
        with xr.open_dataset(self.path(name)) as handle:
            return handle.load()

    def save(self, path) -> Path:
        """Copy the run's files to ``path``, with the names and layout of the workflow's ``results/<experiment>/``.

        Returns ``path``. Existing files of the same names are overwritten.
        """
        dest = Path(path)
        for name in self.files:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.folder / name, target)
        return dest


# --- the experiment spec ------------------------------------------------------------------------------------


def mixture_section(target) -> dict:
    """The config ``mixture`` section of a mixture object (``seminfo.mixtures.gmm.Mixture``, ``seminfo.mixtures.highdim.
    IsotropicMixture``) or of a mapping that already is one."""
    if isinstance(target, Mapping):
        return copy.deepcopy(dict(target))
    means = target.means
    section = {"weights": target.weights.tolist(), "means": means.tolist(), "stds": target.stds.tolist()}
    if means.ndim == 2:
        section["dim"] = int(means.shape[1])
    return section


def _is_adapter(target) -> bool:
    from .models.base import Adapter

    return isinstance(target, Adapter)


def _base_spec(target) -> dict:
    """The experiment spec the target alone gives: a full experiment (has ``kind``), a model section (has
    ``source``), a mixture section or object."""
    if isinstance(target, Mapping) and "kind" in target:
        return copy.deepcopy(dict(target))
    if isinstance(target, Mapping) and "source" in target:
        return {"kind": "ddpm", "model": copy.deepcopy(dict(target))}
    if isinstance(target, Mapping) or hasattr(target, "weights"):
        return {"kind": "gmm", "mixture": mixture_section(target)}
    raise TypeError(f"measure: cannot measure a {type(target).__name__}; give a mixture (config section or "
                    "seminfo.mixtures.gmm / seminfo.mixtures.highdim object), a model config (with 'source'), a "
                    "loaded adapter, or an experiment spec (with 'kind')")


def experiment_spec(target, *, name: str = "api", schema=None, **settings) -> dict:
    """The validated experiment spec of ``measure(target, **settings)``, schema defaults filled in.

    ``settings``: ``steps``, ``trajectories_per_class``, ``seed`` (into ``sampling``), and whole or partial config
    sections ``sampling``, ``schedule``, ``analysis``, ``plots``, ``partitions`` and the study sections
    (``immse``, …), merged over the target's. Raises ``ConfigError`` naming the key
    (``experiments.<name>.<section>.<key>``) on an invalid setting, as the workflow does.
    """
    spec = _base_spec(target)
    sampling = dict(spec.get("sampling") or {})
    for key in ("steps", "trajectories_per_class", "seed"):
        value = settings.pop(key, None)
        if value is not None:
            sampling[key] = value
    sampling |= dict(settings.pop("sampling", None) or {})
    spec["sampling"] = sampling
    for section, value in settings.items():
        if value is None:
            continue
        spec[section] = (dict(spec.get(section) or {}) | dict(value)) if isinstance(value, Mapping) else value
    if spec["kind"] == "gmm":
        spec.setdefault("schedule", dict(DEFAULT_SCHEDULE))
    config = validate_config({"experiments": {name: spec}}, plan.schema(schema))
    if spec["kind"] == "ddpm" and pretrained_source(spec) is not None:
        from .models import check_sources

        check_sources(config)
    return config["experiments"][name]


# --- models -------------------------------------------------------------------------------------------------


def load_model(model: Mapping, device=None, **sampling):
    """The adapter the workflow samples a pretrained model with (``seminfo.models``), on ``device``.

    ``model`` is a config ``model`` section (``source``, ``path``, and the source's keys), checked as the workflow
    checks it (``ConfigError`` naming the key). ``device``: default CUDA where available, else the CPU.
    ``sampling`` keys (e.g. ``guidance``) take part in the check only.
    """
    from .models import load_adapter
    from .stages.network import device as default_device

    # the checks need an experiment: the smallest sampling section the schema allows, or the caller's keys
    spec = experiment_spec(dict(model), sampling={"steps": 2, "trajectories_per_class": 2} | sampling)
    adapter = load_adapter(spec, None, device if device is not None else default_device())
    adapter.model_config = spec["model"]  # measure(adapter) then measures it as the workflow measures this config
    return adapter


# --- running the stages -------------------------------------------------------------------------------------


Step = tuple[str, Callable[[], Any]]


def gmm_steps(spec: dict, name: str, folder: Path, config_schema: dict, figures: bool) -> list[Step]:
    """The stages of a mixture experiment as the rules chain them (gmm.smk, analysis.smk, extras.smk)."""
    from .stages.decisions import decisions_stage
    from .stages.immse import immse_stage
    from .stages.shared import aggregate, gmm_posterior, gmm_sample, plots, summarize

    core, analysis, dpi = plan.core_spec(spec), plan.analysis_spec(spec), spec["plots"]["dpi"]
    f = {k: folder / v for k, v in {"paths": "paths.nc", "posterior": "posterior.nc", "profiles": "profiles.nc",
                                     "decisions": "decisions.nc", "immse": "immse.nc", "summary": "summary.nc"}.items()}
    immse, run_immse = plan.study_options(spec, "immse", config_schema), plan.immse_runs(spec, config_schema)
    studies = {"decisions": f["decisions"]} | ({"immse": f["immse"]} if run_immse else {})
    steps: list[Step] = [
        ("gmm_sample", lambda: gmm_sample(core, name, f["paths"])),
        ("gmm_posterior", lambda: gmm_posterior(analysis, name, f["paths"], f["posterior"])),
        ("aggregate", lambda: aggregate(analysis, name, [f["posterior"]], f["profiles"])),
        ("decisions", lambda: decisions_stage(analysis, name, f["profiles"], f["posterior"], f["decisions"],
                                              plan.decision_options(spec), folder / "figures/decisions.png", dpi)),
    ]
    if run_immse:
        steps.append(("immse", lambda: immse_stage(core, name, f["profiles"], f["immse"], immse,
                                                   figure=folder / "figures/immse.png", dpi=dpi)))
    steps.append(("summarize", lambda: summarize(analysis, name, f["profiles"], f["summary"], studies=studies)))
    if figures:
        outputs = [folder / f"figures/{n}.png" for n in plan.figure_names(spec)]
        steps.append(("plots", lambda: plots(f["profiles"], outputs, dpi=dpi,
                                             time_axis=spec["plots"].get("time_axis"))))
    return steps


def network_steps(spec: dict, name: str, folder: Path, config_schema: dict, figures: bool,
                  model=None, progress: bool = True) -> list[Step]:
    """The stages of a pretrained model's experiment as the rules chain them (ddpm.smk, analysis.smk, extras.smk).

    ``model``: an adapter already loaded, which the stages then sample instead of loading the model again (a
    ``memory`` model has no folder, so no adapter.json); ``progress``: its sampler's progress bar.
    """
    from .models import model_source
    from .stages.decisions import decisions_stage
    from .stages.health import health_stage
    from .stages.immse import immse_stage
    from .stages.network import (collect, model_check, sample_shard, sample_shard_with, shard_posterior,
                                 write_adapter_record)
    from .stages.shared import aggregate, plots, summarize

    core, analysis, dpi = plan.core_spec(spec), plan.analysis_spec(spec), spec["plots"]["dpi"]
    shards = range(spec["sampling"]["shards"])
    adapter_json = folder / "model/adapter.json"
    sample = [folder / f"shards/sample_{i}.nc" for i in shards]
    posterior = [folder / f"shards/posterior_{i}.nc" for i in shards]
    f = {k: folder / f"{k}.nc" for k in ("trajectories", "samples", "profiles", "decisions", "immse", "summary")}
    immse, run_immse = plan.study_options(spec, "immse", config_schema), plan.immse_runs(spec, config_schema)
    studies = {"decisions": f["decisions"]} | ({"immse": f["immse"]} if run_immse else {})

    def sample_step(i: int) -> Callable[[], None]:
        if model is not None:
            return lambda: sample_shard_with(model, core, name, i, sample[i], progress=progress)
        return lambda: sample_shard(core, name, adapter_json, i, sample[i], progress=progress)

    # The sampler may leave the adapter in another memory layout (channels_last), whose rounding differs: like rule
    # immse, the study loads a folder's model afresh; a model in memory has no folder, so it gets the object.
    immse_model = model if model is not None and model_source(spec) == "memory" else None
    if model is None:
        steps: list[Step] = [("model_check", lambda: model_check(core, name, adapter_json))]
    elif model_source(spec) != "memory":  # a folder's model: its adapter.json, as rule model_check writes it
        steps = [("model_check", lambda: write_adapter_record(model, core, adapter_json))]
    else:
        steps = []
    steps += [(f"sample {i}", sample_step(i)) for i in shards]
    steps += [(f"posterior {i}", lambda i=i: shard_posterior(analysis, name, sample[i], posterior[i])) for i in shards]
    steps += [
        ("collect", lambda: collect(analysis, name, posterior, sample, f["trajectories"], f["samples"])),
        ("aggregate", lambda: aggregate(analysis, name, posterior, f["profiles"])),
        ("decisions", lambda: decisions_stage(analysis, name, f["profiles"], f["trajectories"], f["decisions"],
                                              plan.decision_options(spec), folder / "figures/decisions.png", dpi,
                                              samples=f["samples"])),
    ]
    if run_immse:
        steps.append(("immse", lambda: immse_stage(core, name, f["profiles"], f["immse"], immse,
                                                   model_path=adapter_json, figure=folder / "figures/immse.png",
                                                   dpi=dpi, samples=f["samples"], model=immse_model)))
    steps += [
        ("health", lambda: health_stage(analysis, name, f["profiles"], sample, folder / "health.json",
                                        immse=f["immse"] if run_immse else None)),
        ("summarize", lambda: summarize(analysis, name, f["profiles"], f["summary"], studies=studies,
                                        health=folder / "health.json")),
    ]
    if figures:
        names = plan.figure_names(spec)
        profile = [folder / f"figures/{n}.png" for n in names if n not in ("filmstrip", "samples")]
        images = [folder / f"figures/{n}.png" for n in ("filmstrip", "samples")]
        steps += [("plots", lambda: plots(f["profiles"], profile, dpi=dpi, time_axis=spec["plots"].get("time_axis"))),
                  ("plot images", lambda: plots(f["profiles"], images, samples=f["samples"], dpi=dpi,
                                                time_axis=spec["plots"].get("time_axis")))]
    return steps


def _run_steps(steps: list[Step], progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(steps, desc="seminfo", unit="stage", disable=not progress)
    for label, step in bar:
        bar.set_postfix_str(label)
        step()


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(modification time, size) of every file under ``folder``, by path relative to it."""
    stats = {str(p.relative_to(folder)): p.stat() for p in folder.rglob("*") if p.is_file()}
    return {name: (st.st_mtime_ns, st.st_size) for name, st in stats.items()}


def _written(folder: Path, before: dict[str, tuple[int, int]], temporary: tuple[str, ...]) -> tuple[str, ...]:
    """The files under ``folder`` new or rewritten since ``before`` (``_stamps``) that the workflow keeps (its
    ``temp()`` outputs removed), sorted: files of an earlier run in the same folder are not the run's."""
    for name in temporary:
        (folder / name).unlink(missing_ok=True)
    return tuple(sorted(name for name, stamp in _stamps(folder).items() if before.get(name) != stamp))


def measure(target, *, steps: int | None = None, trajectories_per_class: int | None = None, seed: int | None = None,
            name: str = "api", schedule: Mapping | None = None, sampling: Mapping | None = None,
            analysis: Mapping | None = None, partitions: Mapping | None = None, plots: Mapping | None = None,
            studies: Mapping[str, Mapping] | None = None, figures: bool = False, folder=None, schema=None,
            progress: bool = True) -> Run:
    """Measure when ``target`` makes its semantic decisions: the workflow's ``summary.nc`` for one experiment.

    Args:
        target: a mixture (a config ``mixture`` section, or a ``seminfo.mixtures.gmm.Mixture`` /
            ``seminfo.mixtures.highdim.IsotropicMixture``), a model (a config ``model`` section with ``source`` and
            ``path`` of a pretrained source; ``load_model``'s adapter, measured as its config is; or any other
            ``seminfo.models.Adapter`` object, e.g. a ``NetworkAdapter`` around a network defined in a notebook,
            measured as ``model.source: memory``), or a whole experiment spec (a mapping with ``kind``).
        steps: reverse steps (``sampling.steps``).
        trajectories_per_class: trajectories per class (``sampling.trajectories_per_class``).
        seed: the sampling seed (``sampling.seed``; default the schema's).
        name: the experiment's name, recorded in every file.
        schedule: a mixture's forward schedule (default: linear, T = 1000).
        sampling, analysis, partitions, plots: config sections (or parts of them), as in ``config.yaml``.
        studies: the study sections, e.g. ``{"immse": {"enable": False}}``.
        figures: also draw the profile figures (``figures/*.png``) as the workflow's plot rules do.
        folder: where to write the files (default: a new temporary folder).
        schema: the config schema's path (default: the workflow's, ``seminfo.plan.SCHEMA_PATH``).
        progress: show a progress bar over the stages.

    Returns:
        The ``Run``: its ``summary``, ``spec``, ``folder`` and ``files``.

    Raises:
        ConfigError: an invalid setting, naming its key (``experiments.<name>.sampling.steps: …``).
    """
    settings = {"steps": steps, "trajectories_per_class": trajectories_per_class, "seed": seed,
                "schedule": schedule, "sampling": sampling, "analysis": analysis, "partitions": partitions,
                "plots": plots} | dict(studies or {})
    if not _is_adapter(target):
        return _measure(target, None, name, settings, figures, folder, schema, progress)
    from .models.memory import registered

    if getattr(target, "model_config", None) is not None:  # load_model's: its folder's config
        return _measure(target.model_config, target, name, settings, figures, folder, schema, progress)
    with registered(target) as key:
        memory = {"source": "memory", "path": key}
        return _measure(memory, target, name, settings, figures, folder, schema, progress)


def _measure(target, model, name: str, settings: dict, figures: bool, folder, schema, progress: bool) -> Run:
    """``measure`` of a target given as a config (``model``: the adapter of a model target, already loaded)."""
    config_schema = plan.schema(schema)
    spec = experiment_spec(target, name=name, schema=schema, **settings)
    if spec["kind"] == "ddpm" and pretrained_source(spec) is None:
        raise ConfigError(f"experiments.{name}.model.source: measure runs mixtures and pretrained models; the own "
                          "UNet is trained by the workflow (snakemake), then measured from its folder")
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix=f"seminfo-{name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "gmm":
        steps = gmm_steps(spec, name, folder, config_schema, figures)
    else:
        steps = network_steps(spec, name, folder, config_schema, figures, model, progress)
    before = _stamps(folder)
    _run_steps(steps, progress)
    files = _written(folder, before, ("paths.nc",) if spec["kind"] == "gmm" else ())
    with xr.open_dataset(folder / "summary.nc") as handle:
        summary = handle.load()
    return Run(experiment=name, spec=spec, folder=folder, files=files, summary=summary)
