"""Figures of the information profiles of summary.nc: entropies, rates, the rate heat map, binary decisions,
and posteriors along example trajectories."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .style import (_BAND_ALPHA, _BOOTSTRAP_LABEL, _EXACT, _HEATMAP_CMAP, _PARTITION_CMAP, _band_handle, _band_or_sem, _ci,
                    _class_handles, _class_labels, _label, _limits, _max_entropy, _mc, _outside_legend,
                    _partition_titles, _peak, _rate_name, _speciation_line, _style_handles, _styled, _t, _time_axis,
                    _values, class_colors)


def _rao_blackwell_title(ax, name: str) -> None:
    if name.endswith("_rb"):
        ax.set_title("Rao-Blackwellised estimator: expected change per step given x_t", fontsize=8, loc="left",
                     pad=16)


@_styled
def plot_entropy(ds: xr.Dataset) -> Figure:
    """Per-class conditional entropy H_k(t), the marginal H(c|x_t) in black, and I(c; x_t) beside it, each with its
    95 % bootstrap band (± 2 SEM for datasets without bands; the legend says which).

    Exact curves (``entropy_exact``, ``entropy_marginal_exact``) are overlaid dashed when present. Data lines carry
    gids ``mc:<class>``, ``exact:<class>``, ``marginal`` and ``marginal:exact``; bands ``band:<class>``,
    ``band:marginal`` and ``band:mutual_information``.
    """
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    has_mi = "mutual_information" in ds
    fig = Figure(figsize=(7.6 if has_mi else 6.2, 3.5), layout="constrained")
    if has_mi:
        ax, ax_mi = fig.subplots(1, 2, width_ratios=(1.7, 1.0))
    else:
        ax, ax_mi = fig.subplots(), None

    h = _values(ds["entropy"], "class", "time")
    band = _band_or_sem(ds, "entropy", "class", "time")
    exact = _values(ds["entropy_exact"], "class", "time") if "entropy_exact" in ds else None
    for k, (lab, c) in enumerate(zip(labels, colors)):
        if band is not None:
            ax.fill_between(t, band[0][k], band[1][k], color=c, alpha=_BAND_ALPHA, lw=0, gid=f"band:{lab}")
        ax.plot(t, h[k], color=c, gid=f"mc:{lab}", **_mc(exact is not None))
    if exact is not None:
        for k, (lab, c) in enumerate(zip(labels, colors)):
            ax.plot(t, exact[k], color=c, gid=f"exact:{lab}", **_EXACT)
    marginal_label = _label(ds["entropy_marginal"]) if "entropy_marginal" in ds else None
    if "entropy_marginal" in ds:
        marginal_band = _band_or_sem(ds, "entropy_marginal", "time")
        if marginal_band is not None:
            ax.fill_between(t, marginal_band[0], marginal_band[1], color="k", alpha=_BAND_ALPHA, lw=0,
                            gid="band:marginal")
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
        curves = [mi]
        mi_band = _ci(ds, "mutual_information", "time")
        if mi_band is not None:
            ax_mi.fill_between(t, *mi_band, color="k", alpha=_BAND_ALPHA, lw=0, gid="band:mutual_information")
            curves += list(mi_band)
        ax_mi.plot(t, mi, color="k", gid="mutual_information", **_mc("entropy_marginal_exact" in ds, lw=2.0))
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
    if band is not None:
        handles.append(_band_handle(band[2]))
    _outside_legend(fig, handles + _style_handles(exact is not None))
    return fig


@_styled
def plot_entropy_rate(ds: xr.Dataset) -> Figure:
    """Per-class entropy rate dH_k/dt, the paper's main view, with its 95 % bootstrap band and each class's peak.

    Positive where generation produces information. The Rao-Blackwellised rate (``entropy_rate_rb``) is drawn when
    present, the plain one otherwise; the axis label and title say which. Exact rates (``entropy_rate_exact``)
    are dashed. Data lines carry gids ``mc:<class>`` and ``exact:<class>``, bands ``band:<class>``; the peak
    markers are one scatter collection.
    """
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    fig = Figure(figsize=(6.2, 3.5), layout="constrained")
    ax = fig.subplots()

    name = _rate_name(ds, "entropy_rate")
    rate = _values(ds[name], "class", "time")
    band = _ci(ds, name, "class", "time")
    exact = _values(ds["entropy_rate_exact"], "class", "time") if "entropy_rate_exact" in ds else None
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
    peaks = []
    for k, (lab, c) in enumerate(zip(labels, colors)):
        if band is not None:
            ax.fill_between(t, band[0][k], band[1][k], color=c, alpha=_BAND_ALPHA, lw=0, gid=f"band:{lab}")
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

    ax.set_ylim(*_limits(rate, *(() if exact is None else (exact,)), *(() if band is None else band)))
    ax.set_ylabel(_label(ds[name], "entropy rate", wrap=name.endswith("_rb")))
    _rao_blackwell_title(ax, name)
    _time_axis(ax)
    handles = _class_handles(labels, colors) + [
        Line2D([], [], ls="none", marker="o", color="0.3", markeredgecolor="white", label="peak")
    ]
    if band is not None:
        handles.append(_band_handle(_BOOTSTRAP_LABEL))
    if "speciation_time" in ds.attrs:
        handles.append(_speciation_line(ax, ds))
    _outside_legend(fig, handles + _style_handles(exact is not None))
    return fig


@_styled
def plot_rate_heatmap(ds: xr.Dataset) -> Figure:
    """Heat map of the entropy rate, one row per class against t/T, with each row's peak ticked in white.

    The Rao-Blackwellised rate is drawn when present (the colour bar's label says which). Where the rate's 95 %
    bootstrap band includes 0 the cells are faded (mesh gid ``unresolved``), so only rates resolved from zero
    show at full colour.
    """
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    n = len(labels)
    name = _rate_name(ds, "entropy_rate")
    rate = _values(ds[name], "class", "time")
    band = _ci(ds, name, "class", "time")
    fig = Figure(figsize=(6.4, 1.3 + 0.32 * n + (0.25 if band is not None else 0.0)), layout="constrained")
    ax = fig.subplots()
    ax.grid(False)
    vmin, vmax = _limits(rate, pad=0.0)
    mesh = ax.pcolormesh(t, np.arange(n), np.ma.masked_invalid(rate), shading="nearest", cmap=_HEATMAP_CMAP,
                         vmin=vmin, vmax=vmax, rasterized=True)
    if band is not None:
        unresolved = (band[0] <= 0) & (band[1] >= 0)
        ax.pcolormesh(t, np.arange(n), np.ma.masked_where(~unresolved, np.ones_like(rate)), shading="nearest",
                      cmap=ListedColormap(["white"]), vmin=0, vmax=1, alpha=0.6, rasterized=True, gid="unresolved")
        fig.suptitle("faded: the 95% bootstrap band of the rate includes 0", fontsize=7, color="0.35")
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
    fig.colorbar(mesh, ax=ax, label=_label(ds[name], "entropy rate", wrap=True), pad=0.02, aspect=max(8, 3 * n))
    return fig


@_styled
def plot_partitions(ds: xr.Dataset) -> Figure | None:
    """Binary-decision entropies H(z|x_t) (top) and their rates (bottom) per partition, with their 95 % bootstrap
    bands (± 2 SEM for the entropies of datasets without bands); the Rao-Blackwellised rates when present (the
    axis label says so). None without partitions."""
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
    band = _band_or_sem(ds, "partition_entropy", "partition", "time")
    exact = (_values(ds["partition_entropy_exact"], "partition", "time")
             if "partition_entropy_exact" in ds else None)
    for i, (title, c) in enumerate(zip(titles, colors)):
        if band is not None:
            ax.fill_between(t, band[0][i], band[1][i], color=c, alpha=_BAND_ALPHA, lw=0, gid=f"band:{title}")
        ax.plot(t, h[i], color=c, gid=f"mc:{title}", **_mc(exact is not None))
        if exact is not None:
            ax.plot(t, exact[i], color=c, gid=f"exact:{title}", **_EXACT)
    ax.set_ylim(0.0, 1.03)  # a binary decision carries at most one bit
    ax.set_ylabel(_label(ds["partition_entropy"], "decision entropy", wrap=True))
    _time_axis(ax, label=not has_rate)

    rate_band = None
    if has_rate:
        ax = axes[1]
        name = _rate_name(ds, "partition_entropy_rate")
        rate = _values(ds[name], "partition", "time")
        rate_band = _ci(ds, name, "partition", "time")
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
        curves = [rate] + ([] if rate_band is None else list(rate_band))
        rate_exact = None
        if "partition_entropy_rate_exact" in ds:
            rate_exact = _values(ds["partition_entropy_rate_exact"], "partition", "time")
        elif exact is not None:
            rate_exact = np.gradient(exact, t, axis=1)
        for i, (title, c) in enumerate(zip(titles, colors)):
            if rate_band is not None:
                ax.fill_between(t, rate_band[0][i], rate_band[1][i], color=c, alpha=_BAND_ALPHA, lw=0,
                                gid=f"band:{title}")
            ax.plot(t, rate[i], color=c, gid=f"mc:{title}", **_mc(rate_exact is not None))
            if rate_exact is not None:
                ax.plot(t, rate_exact[i], color=c, gid=f"exact:{title}", **_EXACT)
            peak = _peak(t, rate[i])
            if peak is not None:
                ax.scatter(*peak, s=28, color=c, edgecolors="white", linewidths=0.9, zorder=4)
        if rate_exact is not None:
            curves.append(rate_exact)
        ax.set_ylim(*_limits(*curves))
        ax.set_ylabel(_label(ds[name], "decision entropy rate", wrap=True))
        _rao_blackwell_title(ax, name)
        _time_axis(ax, arrow=False)

    handles = [Line2D([], [], color=c, lw=2.0, label=title) for title, c in zip(titles, colors)]
    shown = {band[2]} if band is not None else set()
    shown |= {_BOOTSTRAP_LABEL} if rate_band is not None else set()
    handles += [_band_handle(label) for label in sorted(shown)]
    _outside_legend(fig, handles + _style_handles(exact is not None), title="decision")
    return fig


@_styled
def plot_examples(ds: xr.Dataset, max_examples: int = 12) -> Figure | None:
    """Small multiples of P(c|x_t) along single trajectories, as stacked areas in class colours.

    One-vs-rest tracking (``example_posterior_target``): the tracked class's P(c | x_t) in its colour, the rest grey.
    """
    ovr = "example_posterior_target" in ds
    if "example_posterior" not in ds and not ovr:
        return None
    labels, colors, t = _class_labels(ds), class_colors(ds.sizes["class"]), _t(ds)
    gen = ds["example_label"].values if "example_label" in ds else None
    if ovr:
        p = _values(ds["example_posterior_target"], "example", "time")[:max_examples]
        post = np.zeros(p.shape + (len(labels) + 1,))
        post[np.arange(p.shape[0]), :, np.asarray(gen[:max_examples], dtype=int)] = p
        post[..., -1] = 1.0 - p
        area_colors = list(colors) + ["0.85"]
        label_var = ds["example_posterior_target"]
    else:
        post = _values(ds["example_posterior"], "example", "time", "class")[:max_examples]
        area_colors = colors
        label_var = ds["example_posterior"]
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
        ax.stackplot(t, np.nan_to_num(post[e].T), colors=area_colors, lw=0)
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
    fig.supylabel(_label(label_var, "class posterior P(c | x_t)"), fontsize=9)
    handles = [Patch(color=c, label=lab) for lab, c in zip(labels, colors)]
    if ovr:
        handles.append(Patch(color="0.85", label="rest (one-vs-rest)"))
    _outside_legend(fig, handles, title="class")
    return fig

