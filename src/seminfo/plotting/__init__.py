"""Figures of semantic information production, drawn from a summary Dataset (summary.nc).

Every ``plot_*`` function takes an ``xarray.Dataset`` and returns a ``matplotlib.figure.Figure`` (or ``None`` when
the dataset lacks what the figure shows). Figures are built with ``matplotlib.figure.Figure`` directly, never
through pyplot: nothing is registered in pyplot's global figure list, no interactive backend is touched, and
``savefig`` renders with Agg whatever backend the caller has chosen. Axis labels come from the variables'
``long_name`` and ``units`` attributes.

Conventions shared by all figures:

- the x axis is normalised forward time t/T in [0, 1]; generation runs from t = 1 (noise) to t = 0 (data), which
  each time axis says with an arrow;
- class k has the same colour everywhere (``class_colors``);
- Monte Carlo estimates are solid lines, exact (Gaussian-mixture) curves dashed in the same colour.

``write_figures`` turns a summary.nc (and optionally samples.nc) into one file per applicable figure.
"""

from __future__ import annotations

import pathlib

import xarray as xr

from .guidance import plot_guidance
from .images import plot_filmstrip, plot_sample_grid
from .profiles import plot_entropy, plot_entropy_rate, plot_examples, plot_partitions, plot_rate_heatmap
from .style import _save_atomic, class_colors, logger, save_figure
from .studies import plot_convergence, plot_decisions, plot_immse, plot_network_convergence, plot_speciation

__all__ = [
    "FIGURE_NAMES",
    "class_colors",
    "plot_entropy",
    "plot_entropy_rate",
    "plot_rate_heatmap",
    "plot_partitions",
    "plot_examples",
    "plot_filmstrip",
    "plot_sample_grid",
    "plot_immse",
    "plot_decisions",
    "plot_convergence",
    "plot_guidance",
    "plot_network_convergence",
    "plot_speciation",
    "save_figure",
    "write_figures",
]

FIGURE_NAMES = ("entropy", "entropy_rate", "rate_heatmap", "partitions", "examples", "filmstrip", "samples")


def write_figures(summary_path, out_dir, samples_path=None, formats=("png",), dpi: int = 150,
                  names=None, time_axis: str | None = None) -> list[pathlib.Path]:
    """Write the applicable figures of a summary.nc (and samples.nc) as ``<out_dir>/<name>.<format>``.

    ``time_axis``: 't', 'log_snr' or 'sigma' (None: ``style.time_axis_mode``'s default for the dataset).

    ``names`` selects from ``FIGURE_NAMES`` (default: all); figures whose data are absent are skipped.
    Returns the written paths.
    """
    unknown = set(names or ()) - set(FIGURE_NAMES)
    if unknown:
        raise ValueError(f"unknown figure names {sorted(unknown)}; known: {list(FIGURE_NAMES)}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(formats, str):
        formats = (formats,)
    with xr.open_dataset(summary_path) as handle:
        ds = handle.load()
    if time_axis is not None:
        ds.attrs["plot_time_axis"] = time_axis
    samples = None
    if samples_path is not None:
        with xr.open_dataset(samples_path) as handle:
            samples = handle.load()

    builders = {
        "entropy": lambda: plot_entropy(ds),
        "entropy_rate": lambda: plot_entropy_rate(ds),
        "rate_heatmap": lambda: plot_rate_heatmap(ds),
        "partitions": lambda: plot_partitions(ds),
        "examples": lambda: plot_examples(ds),
        "filmstrip": lambda: plot_filmstrip(ds),
        "samples": lambda: plot_sample_grid(samples),
    }
    written = []
    for name in FIGURE_NAMES:
        if names is not None and name not in names:
            continue
        fig = builders[name]()
        if fig is None:
            logger.info("skipping %s: the data it shows are absent", name)
            continue
        try:
            for fmt in formats:
                path = out_dir / f"{name}.{fmt}"
                _save_atomic(fig, path, fmt, dpi)
                written.append(path)
                logger.info("wrote %s", path)
        finally:
            fig.clear()  # built without pyplot, so dropping the last reference frees it; clearing breaks cycles
    return written
