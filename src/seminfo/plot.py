"""The workflow's figures as functions for notebooks: one per figure file, each returning a matplotlib Figure.

Each takes a summary Dataset (``Run.summary``, or ``summary.nc`` / ``profiles.nc`` opened with xarray) or a
``seminfo.Run``; the study figures also take the study's own file (``decisions.nc``, ``immse.nc``), which a ``Run``
provides. The drawing is ``seminfo.plotting``'s, the code behind the workflow's png files; a function returns
``None`` when the data it shows are absent (e.g. ``partitions`` without partitions), as the workflow then skips the
file. ``time_axis`` ('t', 'log_snr' or 'sigma') is the config's ``plots.time_axis``.

Example::

    fig = seminfo.plot.entropy(run.summary)
    fig.savefig("entropy.png", dpi=150)
"""

from __future__ import annotations

import xarray as xr
from matplotlib.figure import Figure

from . import plotting

__all__ = ["FIGURES", "entropy", "entropy_rate", "rate_heatmap", "partitions", "examples", "filmstrip", "samples",
           "decisions", "immse", "convergence", "speciation", "guidance", "figure"]


def _dataset(data, name: str = "summary.nc", time_axis: str | None = None) -> xr.Dataset:
    """The Dataset of ``data``: itself, or a run's file ``name``; with ``time_axis`` a shallow copy that asks for it."""
    if not isinstance(data, xr.Dataset):
        data = data.summary if name == "summary.nc" else data.open(name)
    if time_axis is None:
        return data
    ds = data.copy()
    ds.attrs["plot_time_axis"] = time_axis
    return ds


def entropy(summary, time_axis: str | None = None) -> Figure:
    """Class-conditional entropy profiles H(c | x_t) with bands, marginal entropy and mutual information
    (``figures/entropy.png``)."""
    return plotting.plot_entropy(_dataset(summary, time_axis=time_axis))


def entropy_rate(summary, time_axis: str | None = None) -> Figure:
    """Entropy rates, the semantic information production per unit time (``figures/entropy_rate.png``)."""
    return plotting.plot_entropy_rate(_dataset(summary, time_axis=time_axis))


def rate_heatmap(summary, time_axis: str | None = None) -> Figure:
    """Entropy rate of every class over time as a heat map (``figures/rate_heatmap.png``)."""
    return plotting.plot_rate_heatmap(_dataset(summary, time_axis=time_axis))


def partitions(summary, time_axis: str | None = None) -> Figure | None:
    """Decision entropies of the config's binary partitions (``figures/partitions.png``); None without
    partitions."""
    return plotting.plot_partitions(_dataset(summary, time_axis=time_axis))


def examples(summary, time_axis: str | None = None, max_examples: int = 12) -> Figure | None:
    """Posterior P(c | x_t) along example trajectories (``figures/examples.png``)."""
    return plotting.plot_examples(_dataset(summary, time_axis=time_axis), max_examples=max_examples)


def filmstrip(summary, time_axis: str | None = None, max_examples: int = 8) -> Figure | None:
    """Predicted x0 along example trajectories of a network run (``figures/filmstrip.png``)."""
    return plotting.plot_filmstrip(_dataset(summary, time_axis=time_axis), max_examples=max_examples)


def samples(samples, n_per_class: int = 8) -> Figure | None:
    """A grid of generated images per class (``figures/samples.png``): ``samples.nc`` or a network ``Run``."""
    return plotting.plot_sample_grid(_dataset(samples, "samples.nc"), n_per_class=n_per_class)


def decisions(decisions, summary=None) -> Figure:
    """Decision times and entropy-rate peaks with their intervals (``figures/decisions.png``): ``decisions.nc``
    or a ``Run``; the binary decisions' peaks come from ``summary`` (summary.nc; a ``Run``'s own by default)."""
    if summary is None and not isinstance(decisions, xr.Dataset):
        summary = decisions
    return plotting.plot_decisions(_dataset(decisions, "decisions.nc"),
                                   profiles=None if summary is None else _dataset(summary))


def immse(summary, immse=None) -> Figure:
    """I(c; x_t) by the I-MMSE identity against the trajectory estimate (``figures/immse.png``).

    ``summary``: a ``Run`` (then ``immse`` defaults to its ``immse.nc``) or the summary Dataset with ``immse``.
    """
    study = _dataset(immse if immse is not None else summary, "immse.nc")
    return plotting.plot_immse(_dataset(summary), study)


def convergence(convergence: xr.Dataset) -> Figure:
    """Step convergence of the online posterior (``figures/convergence.png``): a ``convergence.nc`` Dataset (a
    network run's, attribute ``kind`` 'ddpm', against its finest step count)."""
    if convergence.attrs.get("kind") == "ddpm":
        return plotting.plot_network_convergence(convergence)
    return plotting.plot_convergence(convergence)


def speciation(speciation: xr.Dataset) -> Figure:
    """Rate peak against the speciation time over the data dimension (``figures/speciation.png``)."""
    return plotting.plot_speciation(speciation)


def guidance(guidance: xr.Dataset) -> Figure:
    """The guidance-scale sweep (``figures/guidance.png``): a ``guidance.nc`` Dataset."""
    return plotting.plot_guidance(guidance)


# The figure files of an experiment's profiles (``seminfo.plan.figure_names``) by name.
FIGURES = {"entropy": entropy, "entropy_rate": entropy_rate, "rate_heatmap": rate_heatmap, "partitions": partitions,
           "examples": examples, "filmstrip": filmstrip}


def figure(name: str, summary, time_axis: str | None = None) -> Figure | None:
    """The profile figure ``name`` (a key of ``FIGURES``, as in ``figures/<name>.png``) of a summary or run."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {sorted(FIGURES)}")
    return FIGURES[name](summary, time_axis=time_axis)
