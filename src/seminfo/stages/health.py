"""Stage of rule health: the health checks of a network run (``seminfo.analysis.health``) → health.json.

Rule summarize copies the result into summary.nc's attributes (``health.summary_attrs``); each failed check is a
warning in the job's log and on Snakemake's console (``seminfo.workflow.run``), and health.json is in the report.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import xarray as xr

from ..analysis import health
from ..config import experiment_hash, pretrained_source
from ..io import InputError, atomic_path, open_checked

log = logging.getLogger(__name__)

__all__ = ["health_stage", "STATE_VARIABLES"]

STATE_VARIABLES = ("state_outside_fraction", "state_max_abs")  # per trajectory, in every network sample shard


def _state_range(samples, config_hash: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-trajectory share beyond the bound and max |x_0| from the sample shards (only these variables are read),
    and the bound they were counted against."""
    shares, peaks, bounds = [], [], set()
    for path in samples:
        try:
            ds = xr.open_dataset(path, engine="netcdf4")
        except (FileNotFoundError, OSError, ValueError) as err:
            raise InputError(f"{path}: cannot be read as NetCDF ({err})") from None
        with ds:
            if ds.attrs.get("config_hash") != config_hash:
                raise InputError(f"{path}: was made for another configuration; delete it and rerun")
            missing = [v for v in STATE_VARIABLES if v not in ds]
            if missing:
                raise InputError(f"{path}: lacks variables {missing} (made by an older version); delete it and rerun")
            shares.append(ds["state_outside_fraction"].values)
            peaks.append(ds["state_max_abs"].values)
            bounds.add(float(ds["state_outside_fraction"].attrs["bound"]))
    if len(bounds) != 1:
        raise InputError(f"sample shards counted states against different bounds {sorted(bounds)}; rerun them")
    return np.concatenate(shares), np.concatenate(peaks), bounds.pop()


def health_stage(spec: dict, experiment: str, profiles, samples, output, immse=None, quality=None) -> dict:
    """Run the health checks of a network run and write health.json (rule health); returns the report.

    profiles   profiles.nc (the class entropy profiles, for the first-step share)
    samples    the sample shards (their per-trajectory state range)
    immse      immse.nc, when the I-MMSE study ran (the range of its x_0: attribute ``input_outside_fraction``)
    quality    quality.json, where an independent classifier exists (digits: ``sample_label_agreement``)
    """
    h = experiment_hash(spec)
    prof = open_checked(profiles, h, required=("entropy", "prior"))
    shares, peaks, bound = _state_range(samples, h)
    values = {"state_range": float(shares.mean()),
              "first_step": health.first_step_share(prof["entropy"].transpose("class", "time").values,
                                                    prof["prior"].values)}
    details = {"state_bound": bound, "state_max_abs": float(peaks.max()),
               "trajectories_beyond_bound": int((shares > 0).sum()), "trajectories": int(shares.size),
               "chain_start_time": int(prof["time"].values[-1]), "T": int(prof.attrs["T"])}
    if immse is not None:
        attrs = open_checked(immse, h).attrs
        values["immse_inputs"] = float(attrs["input_outside_fraction"])
        details["immse_input_bound"] = float(attrs["input_bound"])
    if quality is not None:
        with open(quality) as fh:
            values["sample_agreement"] = float(json.load(fh)["sample_label_agreement"])
    grid = health.SIGMA_GRID_ADVICE if pretrained_source(spec) == "python" else health.GRID_ADVICE
    report = health.assess(values, grid) | {"experiment": experiment, "details": details}
    for name, check in report["checks"].items():
        log.info("%s: %s = %.4g (limit %g): %s", name, check["what"], check["value"], check["limit"],
                 "passed" if check["passed"] else "FAILED")
    for line in health.warnings_of(report, experiment):
        log.warning("%s", line)
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    log.info("wrote %s", output)
    return report
