"""What each stage of an experiment reads from its spec, and which outputs an experiment has.

The workflow's rules (``workflow/rules/*.smk``) and the Python API (``seminfo.api``) both take these views of a
validated experiment spec, so that a stage sees the same options (and writes the same ``config`` attributes)
however it is run.
"""

from __future__ import annotations

from pathlib import Path

from .config import STUDY_SECTIONS, load_schema

__all__ = ["SCHEMA_PATH", "schema", "core_spec", "train_spec", "analysis_spec", "study_options", "decision_options",
           "figure_names", "immse_skipped", "immse_runs"]

# The config schema, package data (workflow/schemas/config.schema.yaml links to it), so an installed seminfo has it.
SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


def schema(path=None) -> dict:
    """The config schema (default: the workflow's, ``SCHEMA_PATH``)."""
    path = Path(path) if path is not None else SCHEMA_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the config schema is not there")
    return load_schema(path)


def core_spec(spec: dict) -> dict:
    """What sampling depends on: changing analysis or plotting options must not resample."""
    return {k: v for k, v in spec.items() if k not in ("analysis", "plots") + STUDY_SECTIONS}


def train_spec(spec: dict) -> dict:
    """What training depends on: changing sampling options must not retrain."""
    return {k: spec[k] for k in ("kind", "data", "model", "schedule", "train")}


def analysis_spec(spec: dict) -> dict:
    """What the posterior and aggregation stages depend on (plotting options excluded)."""
    return {k: v for k, v in spec.items() if k not in ("plots",) + STUDY_SECTIONS}


def study_options(spec: dict, section: str, config_schema: dict) -> dict:
    """An optional study section of an experiment with its schema defaults (also when the section is absent)."""
    from .stages.studies_common import section_options

    definition = f"{section}_{spec['kind']}" if section in ("immse", "convergence") else section
    return section_options(spec.get(section), config_schema, definition)


def decision_options(spec: dict) -> dict:
    """The ``analysis`` options of the decisions study, with their defaults."""
    from .analysis.decisions import DEFAULTS

    return {k: spec["analysis"].get(k, v) for k, v in DEFAULTS.items()}


def immse_skipped(spec: dict) -> str | None:
    """Why an experiment's I-MMSE study (on by default) cannot run, or None: a network without a null condition has
    no I-MMSE estimate, and a guided pretrained model has no draws of its p(x0 | c) (its samples are guided)."""
    from .models import has_null_condition, is_pretrained

    if spec["kind"] == "gmm":
        return None
    if not has_null_condition(spec):
        return "the model has no null (unconditional) condition"
    if is_pretrained(spec) and spec["sampling"].get("guidance"):
        return "its x0 would be the model's generated samples, which sampling.guidance makes guided samples"
    return None


def immse_runs(spec: dict, config_schema: dict) -> bool:
    """Whether an experiment's I-MMSE study runs: it is on (the default) and can run (``immse_skipped``)."""
    return bool(study_options(spec, "immse", config_schema)["enable"]) and immse_skipped(spec) is None


def figure_names(spec: dict) -> list[str]:
    """The profile figures of one experiment (which ones apply depends on its kind and partitions)."""
    names = ["entropy", "entropy_rate", "rate_heatmap", "examples"]
    if spec.get("partitions"):
        names.append("partitions")
    if spec["kind"] == "ddpm":
        names += ["filmstrip", "samples"]
    return names
