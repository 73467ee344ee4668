"""Helpers shared by the study stages: options with schema defaults, dataset variables, the model's schedule."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..chain.schedules import schedule_from_spec
from ..config import pretrained_source

__all__ = ["is_pretrained", "source_schedule", "section_options", "var", "time_coords", "T_of", "write_study"]


def is_pretrained(spec: dict) -> bool:
    return pretrained_source(spec) is not None


def source_schedule(spec: dict):
    """The experiment's forward process (``seminfo.models.source_schedule``; imported here only when needed, as the
    model adapters import torch)."""
    if not is_pretrained(spec):
        return schedule_from_spec(spec)
    from ..models import source_schedule as from_folder

    return from_folder(spec)


def section_options(section: dict | None, schema: dict, definition: str) -> dict:
    """An optional config section with the defaults of its schema definition filled in.

    Optional sections have no default of their own (adding one would change every experiment's config and
    hash); the validator fills their keys' defaults only when the section is present, so absent sections
    get them here, from the same schema.
    """
    props = schema["$defs"][definition]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v} | dict(section or {})


def var(dims, data, long_name, units):
    return dims, np.asarray(data), {"long_name": long_name, "units": units}


def time_coords(summary: xr.Dataset) -> dict:
    return {name: summary[name] for name in ("time", "t", "alpha_bar", "log_snr")}



def T_of(summary: xr.Dataset, spec: dict) -> int:
    return int(summary.attrs["T"]) if "T" in summary.attrs else int(spec["schedule"]["T"])


def write_study(ds: xr.Dataset, output, figure=None, draw=None, dpi: int = 150) -> None:
    """Write a study's dataset (atomically, ``seminfo.io.write_netcdf``) and, when ``figure`` is a path, the figure
    ``draw(ds)`` returns."""
    import logging

    from ..io import write_netcdf

    write_netcdf(ds, output)
    logging.getLogger("seminfo.stages").info("wrote %s", output)
    if figure is not None:
        from ..plotting import save_figure

        save_figure(draw(ds), figure, dpi=dpi)
