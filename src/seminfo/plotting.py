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

import functools
import json
import logging
import os
import pathlib
import tempfile

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

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
    "save_figure",
    "write_figures",
]

logger = logging.getLogger(__name__)

FIGURE_NAMES = ("entropy", "entropy_rate", "rate_heatmap", "partitions", "examples", "filmstrip", "samples")

# Applied while a figure is built; artists keep these values after the context ends.
_STYLE = {
    "font.size": 9,
    "axes.labelsize": 9,
    "axes.titlesize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "image.interpolation": "nearest",
    "savefig.facecolor": "white",
}

_EXACT_DASH = (0, (3.5, 2.0))
_EXACT = {"ls": _EXACT_DASH, "lw": 1.3, "zorder": 3}
_BAND_ALPHA = 0.18
_PARTITION_CMAP = "Dark2"  # deliberately not tab10, so partitions are never mistaken for classes
_HEATMAP_CMAP = "viridis"
_SPECIATION = {"color": "0.25", "ls": ":", "lw": 1.3, "zorder": 1, "gid": "speciation"}


def _styled(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------------------------------------------
# Dataset helpers
# --------------------------------------------------------------------------------------------------------------


def class_colors(n: int) -> list:
    """RGBA colours for classes 0 … n-1: tab10 up to 10 classes, tab20 up to 20, evenly spaced turbo beyond."""
    if n <= 10:
        return [mpl.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [mpl.colormaps["tab20"](i) for i in range(n)]
    return [mpl.colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def _class_labels(ds: xr.Dataset) -> list[str]:
    if "class" in ds.coords:
        return [str(c) for c in ds["class"].values]
    return [str(k) for k in range(ds.sizes["class"])]


def _t(ds: xr.Dataset) -> np.ndarray:
    """Normalised forward time t/T of the ``time`` grid."""
    if "t" in ds.coords or "t" in ds.data_vars:
        return np.asarray(ds["t"].values, dtype=float)
    time = np.asarray(ds["time"].values, dtype=float)
    return time / float(ds.attrs.get("T", time.max()))


def _label(da: xr.DataArray, fallback: str | None = None, wrap: bool = False) -> str:
    """``long_name [units]`` (units omitted when dimensionless); on two lines with ``wrap`` for short axes."""
    name = str(da.attrs.get("long_name", fallback or da.name or ""))
    units = str(da.attrs.get("units", "")).strip()
    if not units or units == "1":
        return name
    return f"{name}\n[{units}]" if wrap else f"{name} [{units}]"


def _values(da: xr.DataArray, *dims: str) -> np.ndarray:
    return np.asarray(da.transpose(*dims).values, dtype=float)


def _limits(*arrays, pad: float = 0.05) -> tuple[float, float]:
    """Tight finite limits over all arrays, always including zero, with a small relative margin."""
    flat = np.concatenate([np.ravel(a) for a in arrays])
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return (0.0, 1.0)
    lo, hi = min(float(flat.min()), 0.0), max(float(flat.max()), 0.0)
    span = hi - lo or 1.0
    return (lo - pad * span if lo < 0 else lo, hi + pad * span)


def _max_entropy(ds: xr.Dataset) -> float:
    return float(np.log2(ds.sizes["class"]))


def _peak(t: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    if not np.isfinite(y).any():
        return None
    i = int(np.nanargmax(y))
    return float(t[i]), float(y[i])


def _partition_sides(ds: xr.Dataset) -> list[tuple[str, str] | None]:
    """(side A, side B) label strings per partition, from variables or from attrs of the partition coordinate."""
    n = ds.sizes["partition"]
    if "partition_side_a" in ds.variables and "partition_side_b" in ds.variables:
        a, b = ds["partition_side_a"].values, ds["partition_side_b"].values
        return [(str(a[i]), str(b[i])) for i in range(n)]
    attrs = ds["partition"].attrs
    for key_a, key_b in (("side_a", "side_b"), ("partition_side_a", "partition_side_b")):
        if key_a in attrs and key_b in attrs:
            a, b = attrs[key_a], attrs[key_b]
            if isinstance(a, str):
                a, b = a.split(";"), b.split(";")
            a, b = np.atleast_1d(a), np.atleast_1d(b)
            if len(a) == n and len(b) == n:
                return [(str(a[i]), str(b[i])) for i in range(n)]
    return [None] * n


def _partition_titles(ds: xr.Dataset) -> list[str]:
    """Legend label per partition: ``name: {a,b} vs {c,d}``; the bare split when the name spells it already."""
    names = [str(p) for p in ds["partition"].values] if "partition" in ds.coords else None
    titles = []
    for i, sides in enumerate(_partition_sides(ds)):
        name = names[i] if names else f"partition {i}"
        if sides is None:
            titles.append(name)
            continue
        a, b = (side.replace(" ", "") for side in sides)
        split = f"{{{a}}} vs {{{b}}}"
        bare = name.replace(" ", "").strip("{}")
        titles.append(split if bare in (f"{a}}}vs{{{b}", f"{a}|{b}", f"{a}vs{b}") else f"{name}: {split}")
    return titles


# --------------------------------------------------------------------------------------------------------------
# Axis decorations
# --------------------------------------------------------------------------------------------------------------


def _time_axis(ax, *, label: bool = True, arrow: bool = True) -> None:
    """x in [0, 1] as t/T, with an arrow above the axes showing the direction of generation."""
    ax.set_xlim(0.0, 1.0)
    if label:
        ax.set_xlabel("normalised time t/T")
    if arrow:
        ax.annotate(
            "", xy=(0.0, 1.03), xytext=(1.0, 1.03), xycoords="axes fraction",
            arrowprops={"arrowstyle": "-|>", "color": "0.5", "lw": 0.8, "shrinkA": 0, "shrinkB": 0},
            annotation_clip=False,
        )
        for x, ha, text in ((0.0, "left", "data"), (0.5, "center", "generation"), (1.0, "right", "noise")):
            ax.text(x, 1.045, text, transform=ax.transAxes, ha=ha, va="bottom", fontsize=7, color="0.35")


def _speciation_line(ax, ds: xr.Dataset) -> Line2D:
    """Vertical line at the speciation time (attribute ``speciation_time``, a DDPM step); returns its legend handle."""
    T = float(ds.attrs["T"]) if "T" in ds.attrs else float(ds["time"].max())
    ax.axvline(float(ds.attrs["speciation_time"]) / T, **_SPECIATION)
    return Line2D([], [], label="speciation time", **{k: v for k, v in _SPECIATION.items() if k != "gid"})


def _class_handles(labels, colors) -> list:
    return [Line2D([], [], color=c, lw=2.0, label=lab) for lab, c in zip(labels, colors)]


def _mc(has_exact: bool, lw: float = 1.6) -> dict:
    """Monte Carlo line style: wide and translucent under an exact curve, so the dashes stay visible on top."""
    return {"lw": lw + 1.0, "alpha": 0.45, "zorder": 2} if has_exact else {"lw": lw, "zorder": 2}


def _style_handles(has_exact: bool) -> list:
    if not has_exact:
        return []
    return [
        Line2D([], [], color="0.2", label="Monte Carlo", **_mc(True)),
        Line2D([], [], color="0.2", label="exact", **_EXACT),
    ]


def _outside_legend(fig: Figure, handles, **kwargs) -> None:
    ncols = 1 if len(handles) <= 14 else 2
    fig.legend(handles=handles, loc="outside right upper", ncols=ncols, handlelength=2.2, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


@_styled
def plot_entropy(ds: xr.Dataset) -> Figure:
    """Per-class conditional entropy H_k(t) ± 2 SEM, the marginal H(c|x_t) in black, and I(c; x_t) beside it.

    Exact curves (``entropy_exact``, ``entropy_marginal_exact``) are overlaid dashed when present. Data lines carry
    gids ``mc:<class>``, ``exact:<class>``, ``marginal`` and ``marginal:exact``.
    """
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    has_mi = "mutual_information" in ds
    fig = Figure(figsize=(7.6 if has_mi else 6.2, 3.5), layout="constrained")
    if has_mi:
        ax, ax_mi = fig.subplots(1, 2, width_ratios=(1.7, 1.0))
    else:
        ax, ax_mi = fig.subplots(), None

    h = _values(ds["entropy"], "class", "time")
    sem = _values(ds["entropy_sem"], "class", "time") if "entropy_sem" in ds else None
    exact = _values(ds["entropy_exact"], "class", "time") if "entropy_exact" in ds else None
    for k, (lab, c) in enumerate(zip(labels, colors)):
        if sem is not None:
            ax.fill_between(t, h[k] - 2 * sem[k], h[k] + 2 * sem[k], color=c, alpha=_BAND_ALPHA, lw=0)
        ax.plot(t, h[k], color=c, gid=f"mc:{lab}", **_mc(exact is not None))
    if exact is not None:
        for k, (lab, c) in enumerate(zip(labels, colors)):
            ax.plot(t, exact[k], color=c, gid=f"exact:{lab}", **_EXACT)
    marginal_label = _label(ds["entropy_marginal"]) if "entropy_marginal" in ds else None
    if "entropy_marginal" in ds:
        ax.plot(t, ds["entropy_marginal"].values, color="k", gid="marginal",
                **_mc("entropy_marginal_exact" in ds, lw=2.0))
    if "entropy_marginal_exact" in ds:
        ax.plot(t, ds["entropy_marginal_exact"].values, color="k", gid="marginal:exact", **_EXACT)

    h_max = _max_entropy(ds)
    ax.set_ylim(0.0, 1.03 * h_max)
    ax.set_ylabel(_label(ds["entropy"], "entropy"))
    _time_axis(ax)

    if ax_mi is not None:
        mi = ds["mutual_information"].values
        ax_mi.plot(t, mi, color="k", gid="mutual_information", **_mc("entropy_marginal_exact" in ds, lw=2.0))
        curves = [mi]
        if "entropy_marginal_exact" in ds:
            # I(c; x_t) = H(c) - H(c|x_t), and H(c) is the entropy at t = T where the posterior is the prior.
            hm = ds["entropy_marginal_exact"].values
            mi_exact = hm[np.argmax(t)] - hm
            ax_mi.plot(t, mi_exact, color="k", gid="mutual_information:exact", **_EXACT)
            curves.append(mi_exact)
        ax_mi.set_ylim(*_limits(*curves, pad=0.03))
        ax_mi.set_ylabel(_label(ds["mutual_information"], "mutual information"))
        _time_axis(ax_mi)

    handles = _class_handles(labels, colors)
    if marginal_label is not None:
        handles.append(Line2D([], [], color="k", lw=2.0, label="all classes"))
    if sem is not None:
        handles.append(Patch(color="0.5", alpha=0.35, lw=0, label="± 2 SEM"))
    _outside_legend(fig, handles + _style_handles(exact is not None))
    return fig


@_styled
def plot_entropy_rate(ds: xr.Dataset) -> Figure:
    """Per-class entropy rate dH_k/dt, the paper's main view, with each class's peak marked.

    Positive where generation produces information. Exact rates (``entropy_rate_exact``) are dashed. Data lines
    carry gids ``mc:<class>`` and ``exact:<class>``; the peak markers are one scatter collection.
    """
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    fig = Figure(figsize=(6.2, 3.5), layout="constrained")
    ax = fig.subplots()

    rate = _values(ds["entropy_rate"], "class", "time")
    exact = _values(ds["entropy_rate_exact"], "class", "time") if "entropy_rate_exact" in ds else None
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
    peaks = []
    for k, (lab, c) in enumerate(zip(labels, colors)):
        ax.plot(t, rate[k], color=c, gid=f"mc:{lab}", **_mc(exact is not None))
        peak = _peak(t, rate[k])
        if peak is not None:
            peaks.append((*peak, c))
    if exact is not None:
        for k, (lab, c) in enumerate(zip(labels, colors)):
            ax.plot(t, exact[k], color=c, gid=f"exact:{lab}", **_EXACT)
    if peaks:
        pt, py, pc = zip(*peaks)
        ax.scatter(pt, py, s=28, color=pc, edgecolors="white", linewidths=0.9, zorder=4, gid="peaks")

    ax.set_ylim(*_limits(rate, *(() if exact is None else (exact,))))
    ax.set_ylabel(_label(ds["entropy_rate"], "entropy rate"))
    _time_axis(ax)
    handles = _class_handles(labels, colors) + [
        Line2D([], [], ls="none", marker="o", color="0.3", markeredgecolor="white", label="peak")
    ]
    if "speciation_time" in ds.attrs:
        handles.append(_speciation_line(ax, ds))
    _outside_legend(fig, handles + _style_handles(exact is not None))
    return fig


@_styled
def plot_rate_heatmap(ds: xr.Dataset) -> Figure:
    """Heat map of the entropy rate, one row per class against t/T, with each row's peak ticked in white."""
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    n = len(labels)
    rate = _values(ds["entropy_rate"], "class", "time")
    fig = Figure(figsize=(6.4, 1.3 + 0.32 * n), layout="constrained")
    ax = fig.subplots()
    ax.grid(False)
    vmin, vmax = _limits(rate, pad=0.0)
    mesh = ax.pcolormesh(t, np.arange(n), np.ma.masked_invalid(rate), shading="nearest", cmap=_HEATMAP_CMAP,
                         vmin=vmin, vmax=vmax, rasterized=True)
    peaks = [(p[0], k) for k in range(n) if (p := _peak(t, rate[k])) is not None]
    if peaks:
        ax.scatter(*zip(*peaks), marker="|", s=90, color="white", linewidths=1.6, zorder=3)
    ax.set_yticks(np.arange(n), labels)
    for tick, c in zip(ax.get_yticklabels(), colors):
        tick.set_color(c)
        tick.set_fontweight("bold")
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_ylabel("class")
    ax.spines[["top", "right"]].set_visible(True)
    _time_axis(ax)
    fig.colorbar(mesh, ax=ax, label=_label(ds["entropy_rate"], "entropy rate", wrap=True), pad=0.02,
                 aspect=max(8, 3 * n))
    return fig


@_styled
def plot_partitions(ds: xr.Dataset) -> Figure | None:
    """Binary-decision entropies H(z|x_t) (top) and their rates (bottom) per partition; None without partitions."""
    if "partition" not in ds.dims or "partition_entropy" not in ds:
        return None
    titles, t = _partition_titles(ds), _t(ds)
    n = len(titles)
    colors = [mpl.colormaps[_PARTITION_CMAP](i % 8) for i in range(n)]
    has_rate = "partition_entropy_rate" in ds
    fig = Figure(figsize=(6.6, 5.2 if has_rate else 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(2 if has_rate else 1, 1, sharex=True))

    ax = axes[0]
    h = _values(ds["partition_entropy"], "partition", "time")
    sem = _values(ds["partition_entropy_sem"], "partition", "time") if "partition_entropy_sem" in ds else None
    exact = (_values(ds["partition_entropy_exact"], "partition", "time")
             if "partition_entropy_exact" in ds else None)
    for i, (title, c) in enumerate(zip(titles, colors)):
        if sem is not None:
            ax.fill_between(t, h[i] - 2 * sem[i], h[i] + 2 * sem[i], color=c, alpha=_BAND_ALPHA, lw=0)
        ax.plot(t, h[i], color=c, gid=f"mc:{title}", **_mc(exact is not None))
        if exact is not None:
            ax.plot(t, exact[i], color=c, gid=f"exact:{title}", **_EXACT)
    ax.set_ylim(0.0, 1.03)  # a binary decision carries at most one bit
    ax.set_ylabel(_label(ds["partition_entropy"], "decision entropy", wrap=True))
    _time_axis(ax, label=not has_rate)

    if has_rate:
        ax = axes[1]
        rate = _values(ds["partition_entropy_rate"], "partition", "time")
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
        curves = [rate]
        rate_exact = None
        if "partition_entropy_rate_exact" in ds:
            rate_exact = _values(ds["partition_entropy_rate_exact"], "partition", "time")
        elif exact is not None:
            rate_exact = np.gradient(exact, t, axis=1)
        for i, (title, c) in enumerate(zip(titles, colors)):
            ax.plot(t, rate[i], color=c, gid=f"mc:{title}", **_mc(rate_exact is not None))
            if rate_exact is not None:
                ax.plot(t, rate_exact[i], color=c, gid=f"exact:{title}", **_EXACT)
            peak = _peak(t, rate[i])
            if peak is not None:
                ax.scatter(*peak, s=28, color=c, edgecolors="white", linewidths=0.9, zorder=4)
        if rate_exact is not None:
            curves.append(rate_exact)
        ax.set_ylim(*_limits(*curves))
        ax.set_ylabel(_label(ds["partition_entropy_rate"], "decision entropy rate", wrap=True))
        _time_axis(ax, arrow=False)

    handles = [Line2D([], [], color=c, lw=2.0, label=title) for title, c in zip(titles, colors)]
    _outside_legend(fig, handles + _style_handles(exact is not None), title="decision")
    return fig


@_styled
def plot_examples(ds: xr.Dataset, max_examples: int = 12) -> Figure | None:
    """Small multiples of P(c|x_t) along single trajectories, as stacked areas in class colours."""
    if "example_posterior" not in ds:
        return None
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    post = _values(ds["example_posterior"], "example", "time", "class")[:max_examples]
    gen = ds["example_label"].values if "example_label" in ds else None
    n = post.shape[0]
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(1.9 * ncols + 1.2, 1.75 * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    for e, ax in enumerate(axes):
        if e >= n:
            fig.delaxes(ax)
            continue
        ax.grid(False)
        ax.stackplot(t, np.nan_to_num(post[e].T), colors=colors, lw=0)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_yticks([0, 0.5, 1])
        ax.spines[["top", "right"]].set_visible(True)
        if e >= n - ncols:  # lowest panel of its column: show the time ticks that sharex hid
            ax.xaxis.set_tick_params(labelbottom=True)
        if gen is not None:
            k = int(gen[e])
            ax.set_title(f"generated as {labels[k]}", color=colors[k], fontweight="bold", pad=3)
        else:
            ax.set_title(f"example {e}", pad=3)
    fig.supxlabel("normalised time t/T   (generation runs from t = 1, noise, to t = 0, data)", fontsize=8)
    fig.supylabel(_label(ds["example_posterior"], "class posterior P(c | x_t)"), fontsize=9)
    handles = [Patch(color=c, label=lab) for lab, c in zip(labels, colors)]
    _outside_legend(fig, handles, title="class")
    return fig


def _to_image(frame: np.ndarray) -> tuple[np.ndarray, dict]:
    """(channel, y, x) in [0, 1] -> imshow array and keyword arguments (grayscale for one channel, else RGB)."""
    frame = np.clip(np.nan_to_num(np.asarray(frame, dtype=float)), 0.0, 1.0)
    if frame.shape[0] >= 3:
        return np.moveaxis(frame[:3], 0, -1), {}
    return frame[0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}


@_styled
def plot_filmstrip(ds: xr.Dataset, max_examples: int = 8) -> Figure | None:
    """Rows of x̂_0 predictions along example trajectories, in generation order, each above a bar chart of P(c|x_t).

    None when the dataset has no ``filmstrip_x0``.
    """
    if "filmstrip_x0" not in ds:
        return None
    labels, colors = _class_labels(ds), class_colors(ds.sizes["class"])
    frames = _values(ds["filmstrip_x0"], "example", "snapshot", "channel", "y", "x")[:max_examples]
    snap_time = np.asarray(ds["snapshot_time"].values if "snapshot_time" in ds.variables
                           else ds["snapshot"].values)
    order = np.argsort(-snap_time, kind="stable")  # generation order: noise on the left, data on the right
    T = float(ds.attrs.get("T", ds["time"].max()))
    post = None
    if "example_posterior" in ds:
        post = _values(ds["example_posterior"].sel(time=snap_time, method="nearest"), "example", "time", "class")
        post = post[:max_examples]
    gen = ds["example_label"].values if "example_label" in ds else None

    n_ex, n_snap, n_cls = frames.shape[0], frames.shape[1], len(labels)
    bar_ratio = 0.45 if post is not None else 0.0
    fig = Figure(figsize=(1.05 * n_snap + 1.6, (1.05 + 1.05 * bar_ratio) * n_ex + 0.6), layout="constrained")
    rows_per_ex = 2 if post is not None else 1
    gs = fig.add_gridspec(rows_per_ex * n_ex, n_snap,
                          height_ratios=[1.0, bar_ratio][:rows_per_ex] * n_ex)
    for e in range(n_ex):
        for j, s in enumerate(order):
            ax = fig.add_subplot(gs[rows_per_ex * e, j])
            img, kw = _to_image(frames[e, s])
            ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("0.7")
            if e == 0:
                ax.set_title(f"t/T = {snap_time[s] / T:.2f}", fontsize=8, pad=3)
            if j == 0:
                k = int(gen[e]) if gen is not None else None
                ax.set_ylabel(labels[k] if k is not None else f"example {e}", fontweight="bold", fontsize=8,
                              color=colors[k] if k is not None else "k")
            if post is None:
                continue
            bx = fig.add_subplot(gs[rows_per_ex * e + 1, j])
            bx.bar(np.arange(n_cls), post[e, s], color=colors, width=0.8)
            bx.set_ylim(0.0, 1.0)
            bx.set_xlim(-0.6, n_cls - 0.4)
            bx.set_xticks([])
            bx.grid(False)
            bx.spines[["top", "right"]].set_visible(False)
            bx.tick_params(labelsize=6, length=2)
            if j == 0:
                bx.set_yticks([0, 1])
            else:
                bx.set_yticks([])
                bx.spines["left"].set_visible(False)
    fig.suptitle(r"predicted $\hat{x}_0$ along generation (noise → data)" +
                 ("  with P(c | $x_t$) beneath" if post is not None else ""), fontsize=9)
    handles = [Patch(color=c, label=lab) for lab, c in zip(labels, colors)]
    _outside_legend(fig, handles, title="class")
    return fig


def _sample_class_names(samples: xr.Dataset) -> list[str] | None:
    for source in (samples.coords, samples.attrs):
        if "class_names" in source:
            value = source["class_names"]
            value = getattr(value, "values", value)
            if isinstance(value, np.ndarray) and value.ndim == 0:
                value = value.item()
            if isinstance(value, (str, bytes)):
                return [str(v) for v in json.loads(value)]
            return [str(v) for v in np.atleast_1d(value)]
    if "class" in samples.coords:
        return [str(c) for c in samples["class"].values]
    return None


@_styled
def plot_sample_grid(samples_ds: xr.Dataset | None, n_per_class: int = 8) -> Figure | None:
    """Generated samples, one row per class (the first ``n_per_class`` of each label); None when given None."""
    if samples_ds is None:
        return None
    images = _values(samples_ds["image"], "sample", "channel", "y", "x")
    sample_labels = np.asarray(samples_ds["label"].values, dtype=int)
    names = _sample_class_names(samples_ds)
    n_cls = len(names) if names is not None else int(sample_labels.max()) + 1
    names = names or [str(k) for k in range(n_cls)]
    colors = class_colors(n_cls)

    _, n_ch, h, w = images.shape
    pad = max(1, h // 16)
    fig = Figure(figsize=(0.75 * n_per_class + 0.9, 0.8 * n_cls + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_cls, 1, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        # One mosaic per row keeps the figure light: K axes instead of K * n_per_class.
        row = np.ones((n_ch, h, n_per_class * (w + pad) - pad))
        for j, i in enumerate(np.flatnonzero(sample_labels == k)[:n_per_class]):
            row[:, :, j * (w + pad): j * (w + pad) + w] = images[i]
        img, kw = _to_image(row)
        ax.imshow(img, **kw)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(names[k], rotation=0, ha="right", va="center", fontweight="bold", color=colors[k])
    return fig


# --------------------------------------------------------------------------------------------------------------
# Studies beyond the paper (workflow/rules/extras.smk)
# --------------------------------------------------------------------------------------------------------------

_IMMSE_COLOR = "#c2185b"
_TOLERANCE_BITS = 0.1


@_styled
def plot_immse(summary: xr.Dataset, immse: xr.Dataset) -> Figure:
    """I(c; x_t) from trajectories (black) and from the I-MMSE identity (colour), their difference, and the
    I-MMSE integrand against log SNR beside the log-SNR derivative of the trajectory estimate.

    Exact curves are dashed (Gaussian mixtures). Data lines carry gids ``trajectory``, ``immse``, ``exact``,
    ``difference``, ``rate:immse`` and ``rate:trajectory``.
    """
    t = _t(summary)
    fig = Figure(figsize=(10.5, 3.4), layout="constrained")
    ax, ax_d, ax_g = fig.subplots(1, 3, width_ratios=(1.2, 1.0, 1.0))

    traj = summary["mutual_information"].values
    mi = immse["mutual_information_immse"].values
    mi_se = immse["mutual_information_immse_se"].values
    traj_se = summary["entropy_marginal_sem"].values if "entropy_marginal_sem" in summary else np.zeros_like(traj)
    ax.fill_between(t, traj - 2 * traj_se, traj + 2 * traj_se, color="k", alpha=_BAND_ALPHA, lw=0)
    ax.plot(t, traj, color="k", gid="trajectory", label="trajectories (online posterior)")
    ax.fill_between(t, mi - 2 * mi_se, mi + 2 * mi_se, color=_IMMSE_COLOR, alpha=_BAND_ALPHA, lw=0)
    ax.plot(t, mi, color=_IMMSE_COLOR, gid="immse", label="I-MMSE (forward-noised data)")
    curves = [traj, mi]
    if "entropy_marginal_exact" in summary:
        exact = summary.attrs["prior_entropy_bits"] - summary["entropy_marginal_exact"].values
        ax.plot(t, exact, color="0.35", gid="exact", label="exact", **_EXACT)
        curves.append(exact)
    if "prior_entropy_bits" in summary.attrs:  # no consistent joint of (c, x_t) exceeds it
        ax.axhline(summary.attrs["prior_entropy_bits"], color="0.6", lw=0.8, ls=":", label="H(c)")
        curves.append(np.array([summary.attrs["prior_entropy_bits"]]))
    ax.set_ylim(*_limits(*curves, pad=0.03))
    ax.set_ylabel(_label(summary["mutual_information"], "mutual information"))
    ax.legend(loc="upper right")
    _time_axis(ax)

    diff = immse["mutual_information_difference"].values
    band = 2 * np.sqrt(mi_se**2 + traj_se**2)
    ax_d.fill_between(t, diff - band, diff + band, color=_IMMSE_COLOR, alpha=_BAND_ALPHA, lw=0, label="± 2 SE")
    ax_d.plot(t, diff, color=_IMMSE_COLOR, gid="difference")
    ax_d.axhline(0.0, color="0.6", lw=0.8)
    for sign in (-1, 1):
        ax_d.axhline(sign * _TOLERANCE_BITS, color="0.4", lw=0.9, ls="--", zorder=1,
                     label=f"± {_TOLERANCE_BITS:g} bit" if sign > 0 else None)
    ax_d.set_ylim(*_limits(diff - band, diff + band, pad=0.08))
    ax_d.set_ylabel("I-MMSE − trajectories [bit]")
    ax_d.legend(loc="upper right")
    _time_axis(ax_d)

    u = immse["point_log_snr"].values
    g = immse["information_rate_immse"].values
    g_se = immse["information_rate_immse_se"].values
    ax_g.fill_between(u, g - 2 * g_se, g + 2 * g_se, color=_IMMSE_COLOR, alpha=_BAND_ALPHA, lw=0)
    ax_g.plot(u, g, color=_IMMSE_COLOR, marker=".", ms=3, gid="rate:immse", label="I-MMSE integrand")
    log_snr = summary["log_snr"].values
    finite = np.isfinite(log_snr)
    order = np.argsort(log_snr[finite])
    if finite.sum() > 2:
        # Thinned to about 60 points: differences of a Monte Carlo curve on a fine grid are mostly noise.
        keep = np.unique(np.linspace(0, finite.sum() - 1, min(60, finite.sum())).round().astype(int))
        uu, ii = log_snr[finite][order][keep], traj[finite][order][keep]
        ax_g.plot(uu, np.gradient(ii, uu), color="k", lw=1.0, gid="rate:trajectory", label="dI/dlog SNR, trajectories")
    ax_g.axhline(0.0, color="0.6", lw=0.8)
    ax_g.set_xlabel("log SNR = log(ᾱ / (1 − ᾱ))")
    ax_g.set_ylabel(_label(immse["information_rate_immse"], wrap=True))
    ax_g.legend(loc="upper left")

    d = immse.attrs.get("discrepancy_max_abs_bits")
    if d is not None:
        T = float(summary.attrs.get("T", summary["time"].max()))
        where = immse.attrs.get("discrepancy_argmax_time", np.nan) / T
        agree = immse.attrs.get("agreement_from_time", np.nan)
        text = f"max |I-MMSE − trajectories| = {d:.3g} bit at t/T = {where:.2f}"
        if np.isfinite(agree):
            text += f";  within {_TOLERANCE_BITS:g} bit for t/T ≥ {agree / T:.2f}"
        fig.suptitle(text, fontsize=9)
    return fig


@_styled
def plot_decisions(decisions: xr.Dataset) -> Figure:
    """Class-sorted dot/interval chart: median decision time with its 95% bootstrap CI, the interquartile range of
    the per-trajectory decision times, and the entropy-rate peak with its CI; the speciation time as a line.

    Classes are sorted by median decision time (undecided classes last). Marker collections carry gids
    ``median``, ``peak`` and ``peak:exact``.
    """
    labels = [str(c) for c in decisions["class"].values]
    K = len(labels)
    colors = class_colors(K)
    T = float(decisions.attrs.get("T", 1.0))
    median = decisions["decision_time_median"].values / T
    order = np.argsort(np.where(np.isfinite(median), median, np.inf), kind="stable")
    y = np.empty(K)
    y[order] = np.arange(K)

    n_rows = K + (decisions.sizes.get("partition", 0) if "partition_rate_peak_time" in decisions else 0)
    fig = Figure(figsize=(6.8, 1.5 + 0.38 * n_rows), layout="constrained")
    ax = fig.subplots()
    dt = decisions["decision_time"].values / T
    lab = decisions["label"].values
    for k in range(K):
        v = dt[(lab == k) & np.isfinite(dt)]
        if v.size:
            q1, q3 = np.percentile(v, [25, 75])
            ax.plot([q1, q3], [y[k] - 0.12] * 2, color=colors[k], lw=1.0, alpha=0.6, solid_capstyle="butt")
        lo, hi = (decisions[f"decision_time_ci_{s}"].values[k] / T for s in ("low", "high"))
        ax.plot([lo, hi], [y[k] - 0.12] * 2, color=colors[k], lw=4.0, solid_capstyle="butt")
        plo, phi = (decisions[f"entropy_rate_peak_time_ci_{s}"].values[k] / T for s in ("low", "high"))
        ax.plot([plo, phi], [y[k] + 0.18] * 2, color=colors[k], lw=2.0, alpha=0.7, solid_capstyle="butt")
    ax.scatter(median, y - 0.12, s=34, color=colors, edgecolors="white", linewidths=0.9, zorder=4, gid="median")
    peak = decisions["entropy_rate_peak_time"].values / T
    ax.scatter(peak, y + 0.18, s=30, marker="D", facecolors="white", edgecolors=colors, linewidths=1.3, zorder=4,
               gid="peak")
    handles = [
        Line2D([], [], color="0.3", marker="o", markeredgecolor="white", lw=4.0, label="median decision time (95% CI)"),
        Line2D([], [], color="0.3", lw=1.0, alpha=0.6, label="decision times, interquartile range"),
        Line2D([], [], color="0.3", marker="D", markerfacecolor="white", lw=2.0, alpha=0.8,
               label="entropy-rate peak (95% CI)"),
    ]
    if "entropy_rate_peak_time_exact" in decisions:
        exact = decisions["entropy_rate_peak_time_exact"].values / T
        ax.scatter(exact, y + 0.18, s=40, marker="|", color="k", linewidths=1.4, zorder=5, gid="peak:exact")
        handles.append(Line2D([], [], ls="none", marker="|", color="k", markersize=8, label="exact entropy-rate peak"))
    rows = [labels[k] for k in order]
    if "partition_rate_peak_time" in decisions:
        # Binary decisions below the classes: their entropy-rate peaks only (no per-trajectory decision times).
        names = [str(p) for p in decisions["partition"].values]
        yp = K + np.arange(len(names))
        ax.axhline(K - 0.5, color="0.7", lw=0.8)
        ax.scatter(decisions["partition_rate_peak_time"].values / T, yp, s=30, marker="D", facecolors="white",
                   edgecolors="0.35", linewidths=1.3, zorder=4, gid="partition_peak")
        if "partition_rate_peak_time_exact" in decisions:
            ax.scatter(decisions["partition_rate_peak_time_exact"].values / T, yp, s=40, marker="|", color="k",
                       linewidths=1.4, zorder=5, gid="partition_peak:exact")
        rows += [f"decision {name}" for name in names]
    if "speciation_time" in decisions.attrs:
        handles.append(_speciation_line(ax, decisions))
    ax.set_yticks(np.arange(len(rows)), rows)
    for i, tick in enumerate(ax.get_yticklabels()):
        tick.set_color(colors[order[i]] if i < K else "0.35")
        tick.set_fontweight("bold" if i < K else "normal")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_ylabel("class (sorted by decision time)")
    _time_axis(ax)
    threshold = decisions.attrs.get("decision_threshold")
    title = None if threshold is None else f"decided: P(final MAP class) > {threshold:g}\nfrom then on"
    _outside_legend(fig, handles, title=title)
    return fig


@_styled
def plot_convergence(conv: xr.Dataset) -> Figure:
    """Step convergence: H(c | x_t) of every sampler at every step count S against the exact curve (top), and the
    largest entropy error and the mean posterior error against S (bottom, log-log).

    Lines carry gids ``<sampler>:S=<S>``, ``exact`` and ``error:<sampler>``.
    """
    samplers = [str(s) for s in conv["sampler"].values]
    steps = conv["steps"].values
    t = np.asarray(conv["t"].values, dtype=float)
    n = len(samplers)
    fig = Figure(figsize=(max(6.4, 2.6 * n + 1.4), 5.6), layout="constrained")
    top = fig.subfigures(2, 1, height_ratios=(1.0, 1.0))
    axes = np.atleast_1d(top[0].subplots(1, n, sharey=True))
    step_colors = [mpl.colormaps["viridis"](x) for x in np.linspace(0.0, 0.85, len(steps))]
    exact = conv["entropy_marginal_exact"].values
    for a, (ax, sampler) in enumerate(zip(axes, samplers)):
        for b, S in enumerate(steps):
            h = conv["entropy_marginal"].values[a, b]
            ok = np.isfinite(h)
            ax.plot(t[ok], h[ok], color=step_colors[b], lw=1.2, gid=f"{sampler}:S={S}")
        ax.plot(t, exact, color="k", gid="exact", **_EXACT)
        title = sampler + (f" (η = {conv.attrs['eta']:g})" if sampler == "ddim" and "eta" in conv.attrs else "")
        ax.set_title(title, pad=16)
        _time_axis(ax)
    axes[0].set_ylabel(_label(conv["entropy_marginal"], wrap=True))
    handles = [Line2D([], [], color=c, lw=1.6, label=f"S = {S}") for c, S in zip(step_colors, steps)]
    handles.append(Line2D([], [], color="k", label="exact", **_EXACT))
    top[0].legend(handles=handles, loc="outside right upper")

    ax_e, ax_p = top[1].subplots(1, 2)
    sampler_colors = [mpl.colormaps[_PARTITION_CMAP](i % 8) for i in range(n)]
    for a, (sampler, c) in enumerate(zip(samplers, sampler_colors)):
        ax_e.plot(steps, conv["entropy_max_abs_error"].values[a], color=c, marker="o", ms=4, gid=f"error:{sampler}",
                  label=sampler)
        ax_p.plot(steps, conv["posterior_mean_abs_error"].values[a], color=c, marker="o", ms=4,
                  gid=f"posterior_error:{sampler}", label=sampler)
    floor = 2 * conv["entropy_sem_max"].values.max()
    ax_e.axhline(floor, color="0.5", ls=":", lw=1.0, label="2 × largest SEM")
    for ax, var in ((ax_e, "entropy_max_abs_error"), (ax_p, "posterior_mean_abs_error")):
        ax.set_xscale("log")
        if np.any(conv[var].values > 0):  # an exact sampler can have zero error everywhere
            ax.set_yscale("log")
        ax.set_xticks(steps, [str(S) for S in steps])
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        ax.set_xlabel("sampling steps S")
        ax.set_ylabel(_label(conv[var], wrap=True))
    ax_e.legend(loc="upper right")
    return fig


def save_figure(fig: Figure, path, dpi: int = 150) -> pathlib.Path:
    """Write ``fig`` atomically to ``path`` (format from its suffix) and free it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _save_atomic(fig, path, path.suffix.lstrip(".") or "png", dpi)
    finally:
        fig.clear()
    logger.info("wrote %s", path)
    return path


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def _save_atomic(fig: Figure, path: pathlib.Path, fmt: str, dpi: int) -> None:
    """Render to a hidden temporary file beside ``path`` and rename it, so ``path`` is never half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".{fmt}.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_figures(summary_path, out_dir, samples_path=None, formats=("png",), dpi: int = 150,
                  names=None) -> list[pathlib.Path]:
    """Write the applicable figures of a summary.nc (and samples.nc) as ``<out_dir>/<name>.<format>``.

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
