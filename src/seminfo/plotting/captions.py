"""The key numbers of an experiment in words, for the Snakemake report's figure captions.

``key_numbers`` turns a summary.nc into reStructuredText lines: when each class's entropy rate peaks, when each
binary decision's does, and each class's median decision time, each with its 95 % bootstrap interval and, for the
Gaussian mixtures, the exact value. The rules pass them to their captions as a parameter that is a function of the
job's input (``caption_numbers``), so Snakemake evaluates it when the report is made and never reruns a job for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["key_numbers", "caption_numbers"]

# What a caption says where the numbers are not there (yet): a report made before the run finished.
MISSING = {"units": "", "class_peaks": "", "decision_peaks": "", "decision_times": ""}


def _value(v) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.0f}"


def _items(ds: xr.Dataset, names, point: str, interval: str, exact: str | None = None) -> str:
    """'``name`` point [low, high] (exact e)' for each name, joined by semicolons; low and high from
    ``<interval>_ci_low`` / ``_ci_high``."""
    out = []
    for i, name in enumerate(names):
        text = f"``{name}`` {_value(ds[point].values[i])}"
        if f"{interval}_ci_low" in ds:
            text += f" [{_value(ds[f'{interval}_ci_low'].values[i])}, {_value(ds[f'{interval}_ci_high'].values[i])}]"
        if exact is not None and exact in ds:
            text += f" (exact {_value(ds[exact].values[i])})"
        out.append(text)
    return "; ".join(out)


def key_numbers(summary: xr.Dataset) -> dict[str, str]:
    """An experiment's key numbers as caption text (reStructuredText), from its summary.nc.

    Keys: ``units`` (the time axis and the intervals, one sentence), ``class_peaks`` (each class's entropy-rate
    peak), ``decision_peaks`` (each binary decision's), ``decision_times`` (each class's median decision time); a
    key whose numbers the summary lacks is the empty string.
    """
    time = summary["time"]
    units = (f"Times are in {time.attrs.get('long_name', 'grid steps')}, T = {int(summary.attrs['T'])}; "
             "brackets hold 95 % stratified-bootstrap intervals.") if "T" in summary.attrs else ""
    classes = [str(c) for c in summary["class"].values]
    out = dict(MISSING, units=units)
    if "entropy_rate_peak_time" in summary:
        out["class_peaks"] = "Entropy-rate peak of each class: " + _items(
            summary, classes, "entropy_rate_peak_time", "entropy_rate_peak_time", "entropy_rate_peak_time_exact") + "."
    if "partition_rate_peak_time" in summary:
        out["decision_peaks"] = "Rate peak of each binary decision: " + _items(
            summary, [str(p) for p in summary["partition"].values], "partition_rate_peak_time",
            "partition_rate_peak_time", "partition_rate_peak_time_exact") + "."
    if "decision_time_median" in summary:
        out["decision_times"] = "Median decision time of each class: " + _items(
            summary, classes, "decision_time_median", "decision_time") + "."
    return out


def caption_numbers(path) -> dict[str, str]:
    """``key_numbers`` of the summary.nc at ``path``; empty texts while it is absent or unreadable (a run in
    progress: the report is made after the run, when it is there)."""
    path = Path(path)
    if not path.is_file():
        return dict(MISSING)
    try:
        with xr.open_dataset(path) as ds:
            return key_numbers(ds.load())
    except (OSError, ValueError, KeyError):
        return dict(MISSING)
