"""Figures of the studies beyond the paper: I-MMSE, decision statistics, step convergence, speciation over d."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import (_BAND_ALPHA, _EXACT, _PARTITION_CMAP, _SPECIATION, _label, _limits, _outside_legend,
                    _speciation_line, _styled, _t, _time_axis, class_colors)


_IMMSE_COLOR = "#c2185b"
_TOLERANCE_BITS = 0.1


@_styled
def plot_immse(summary: xr.Dataset, immse: xr.Dataset) -> Figure:
    """I(c; x_t) from trajectories (black) and from the I-MMSE identity (colour), their difference, and the
    I-MMSE integrand against log SNR beside the log-SNR derivative of the trajectory estimate.

    Exact curves are dashed (Gaussian mixtures). Data lines carry gids ``trajectory``, ``immse``, ``exact``,
    ``difference``, ``rate:immse`` and ``rate:trajectory``. Where immse.nc says the two estimates are not comparable
    (``comparison_skipped``: one-vs-rest tracking, guided sampling) only the I-MMSE estimate is drawn, with the
    reason in place of the difference.
    """
    t = _t(summary)
    fig = Figure(figsize=(10.5, 3.4), layout="constrained")
    ax, ax_d, ax_g = fig.subplots(1, 3, width_ratios=(1.2, 1.0, 1.0))

    compared = "mutual_information_difference" in immse
    mi = immse["mutual_information_immse"].values
    mi_se = immse["mutual_information_immse_se"].values
    curves = [mi]
    if compared:
        traj = summary["mutual_information"].values
        traj_se = summary["entropy_marginal_sem"].values if "entropy_marginal_sem" in summary else np.zeros_like(traj)
        ax.fill_between(t, traj - 2 * traj_se, traj + 2 * traj_se, color="k", alpha=_BAND_ALPHA, lw=0)
        ax.plot(t, traj, color="k", gid="trajectory", label="trajectories (online posterior)")
        curves.append(traj)
    ax.fill_between(t, mi - 2 * mi_se, mi + 2 * mi_se, color=_IMMSE_COLOR, alpha=_BAND_ALPHA, lw=0)
    ax.plot(t, mi, color=_IMMSE_COLOR, gid="immse", label="I-MMSE (forward-noised data)")
    if "entropy_marginal_exact" in summary:
        exact = summary.attrs["prior_entropy_bits"] - summary["entropy_marginal_exact"].values
        ax.plot(t, exact, color="0.35", gid="exact", label="exact", **_EXACT)
        curves.append(exact)
    if "prior_entropy_bits" in summary.attrs:  # no consistent joint of (c, x_t) exceeds it
        ax.axhline(summary.attrs["prior_entropy_bits"], color="0.6", lw=0.8, ls=":", label="H(c)")
        curves.append(np.array([summary.attrs["prior_entropy_bits"]]))
    ax.set_ylim(*_limits(*curves, pad=0.03))
    ax.set_ylabel(_label(immse["mutual_information_immse"], "mutual information"))
    ax.legend(loc="upper right")
    _time_axis(ax)
    if not compared:
        ax_d.axis("off")
        ax_d.text(0.5, 0.5, "not compared with the trajectories:\n" + _wrap(immse.attrs.get("comparison_skipped", "")),
                  ha="center", va="center", fontsize=8, transform=ax_d.transAxes, gid="comparison_skipped")
        _immse_integrand(ax_g, immse, summary, None)
        return fig
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
    _immse_integrand(ax_g, immse, summary, traj)

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


def _wrap(text: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width))


def _immse_integrand(ax_g, immse: xr.Dataset, summary: xr.Dataset, traj) -> None:
    """The I-MMSE integrand against log SNR, beside the log-SNR derivative of the trajectories' I (when given)."""
    u = immse["point_log_snr"].values
    g = immse["information_rate_immse"].values
    g_se = immse["information_rate_immse_se"].values
    ax_g.fill_between(u, g - 2 * g_se, g + 2 * g_se, color=_IMMSE_COLOR, alpha=_BAND_ALPHA, lw=0)
    ax_g.plot(u, g, color=_IMMSE_COLOR, marker=".", ms=3, gid="rate:immse", label="I-MMSE integrand")
    log_snr = summary["log_snr"].values
    finite = np.isfinite(log_snr)
    order = np.argsort(log_snr[finite])
    if traj is not None and finite.sum() > 2:
        # Thinned to about 60 points: differences of a Monte Carlo curve on a fine grid are mostly noise.
        keep = np.unique(np.linspace(0, finite.sum() - 1, min(60, finite.sum())).round().astype(int))
        uu, ii = log_snr[finite][order][keep], traj[finite][order][keep]
        ax_g.plot(uu, np.gradient(ii, uu), color="k", lw=1.0, gid="rate:trajectory", label="dI/dlog SNR, trajectories")
    ax_g.axhline(0.0, color="0.6", lw=0.8)
    ax_g.set_xlabel("log SNR = log(ᾱ / (1 − ᾱ))")
    ax_g.set_ylabel(_label(immse["information_rate_immse"], wrap=True))
    ax_g.legend(loc="upper left")


def _rao_blackwellised_peaks(decisions: xr.Dataset) -> bool:
    return str(decisions.attrs.get("peak_curves", "")).startswith("entropy_rb")


def _peak_difference_matrix(fig, decisions: xr.Dataset) -> None:
    """K x K matrix of entropy-rate peak time differences, row minus column, classes ordered by peak time
    (earliest in generation first); cells whose 95 % interval includes 0 are faded (mesh gid ``unresolved``)."""
    labels = [str(c) for c in decisions["class"].values]
    K = len(labels)
    colors = class_colors(K)
    peak = decisions["entropy_rate_peak_time"].values
    order = np.argsort(np.where(np.isfinite(peak), -peak, np.inf), kind="stable")
    diff = decisions["peak_time_difference"].transpose("class", "class_b").values[np.ix_(order, order)]
    resolved = decisions["peak_time_difference_resolved"].transpose("class", "class_b").values[np.ix_(order, order)]
    off = ~np.eye(K, dtype=bool)
    ax = fig.subplots()
    ax.grid(False)
    span = float(np.nanmax(np.abs(diff[off]))) if np.isfinite(diff[off]).any() else 1.0
    mesh = ax.pcolormesh(np.arange(K), np.arange(K), np.ma.masked_where(~off | ~np.isfinite(diff), diff),
                         cmap="RdBu_r", vmin=-(span or 1.0), vmax=span or 1.0, shading="nearest", gid="difference")
    ax.pcolormesh(np.arange(K), np.arange(K), np.ma.masked_where(~off | (resolved != 0), np.ones((K, K))),
                  cmap=ListedColormap(["white"]), vmin=0, vmax=1, alpha=0.65, shading="nearest", gid="unresolved")
    size = 7 if K <= 6 else 5.5
    for i in range(K):
        for j in range(K):
            if i != j and np.isfinite(diff[i, j]):
                dark = resolved[i, j] and abs(diff[i, j]) > 0.6 * span
                ax.text(j, i, f"{diff[i, j]:+.0f}", ha="center", va="center", fontsize=size,
                        color="white" if dark else "k" if resolved[i, j] else "0.45",
                        fontweight="bold" if resolved[i, j] else "normal")
    ax.set_xticks(np.arange(K), [labels[k] for k in order],
                  rotation=90 if K > 4 and max(map(len, labels)) > 2 else 0)
    ax.set_yticks(np.arange(K), [labels[k] for k in order])
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, k in zip(ticks, order):
            tick.set_color(colors[k])
            tick.set_fontweight("bold")
    ax.set_xlim(-0.5, K - 0.5)
    ax.set_ylim(K - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.tick_params(length=0)
    ax.spines[["top", "right"]].set_visible(True)
    ax.set_xlabel("class b")
    ax.set_ylabel("class a")
    curves = " (Rao-Blackwellised)" if _rao_blackwellised_peaks(decisions) else ""
    ax.set_title(f"entropy-rate peak time{curves}:\na − b [DDPM steps], > 0: a peaks earlier\nin generation; "
                 "bold: 95% CI excludes 0", fontsize=8)
    fig.colorbar(mesh, ax=ax, shrink=0.7, pad=0.03, aspect=15)


@_styled
def plot_decisions(decisions: xr.Dataset, profiles: xr.Dataset | None = None) -> Figure:
    """Class-sorted dot/interval chart: median decision time with its 95% bootstrap CI, the interquartile range of
    the per-trajectory decision times, and the entropy-rate peak with its CI; below, the binary decisions' rate
    peaks with their CIs (from ``profiles``, profiles.nc or summary.nc); the speciation time as a line. Beside it,
    when decisions.nc has the pairwise table, the K x K matrix of peak time differences with the pairs whose
    95 % interval excludes 0 in bold ("does class a decide before class b?").

    Classes are sorted by median decision time (undecided classes last). Marker collections carry gids
    ``median``, ``peak``, ``peak:exact``, ``partition_peak`` and ``partition_peak:exact``; the matrix meshes
    ``difference`` and ``unresolved``.
    """
    labels = [str(c) for c in decisions["class"].values]
    K = len(labels)
    colors = class_colors(K)
    T = float(decisions.attrs.get("T", 1.0))
    median = decisions["decision_time_median"].values / T
    order = np.argsort(np.where(np.isfinite(median), median, np.inf), kind="stable")
    y = np.empty(K)
    y[order] = np.arange(K)

    # the binary decisions' rate peaks: the profiles' (with intervals), or, in a decisions.nc of before, its own
    part = profiles if profiles is not None and "partition_rate_peak_time" in profiles else decisions
    n_rows = K + (part.sizes.get("partition", 0) if "partition_rate_peak_time" in part else 0)
    has_matrix = "peak_time_difference" in decisions and K >= 2
    height = 1.5 + 0.38 * n_rows
    if has_matrix:
        height = max(height, 2.2 + 0.3 * K)
        width = max(3.6, 2.2 + 0.3 * K)
        fig = Figure(figsize=(6.8 + width, height), layout="constrained")
        left, right = fig.subfigures(1, 2, width_ratios=(6.8, width))
    else:
        fig = left = Figure(figsize=(6.8, height), layout="constrained")
    ax = left.subplots()
    if has_matrix:
        _peak_difference_matrix(right, decisions)
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
               label="entropy-rate peak (95% CI)" + (",\nRao-Blackwellised" if _rao_blackwellised_peaks(decisions)
                                                      else "")),
    ]
    if "entropy_rate_peak_time_exact" in decisions:
        exact = decisions["entropy_rate_peak_time_exact"].values / T
        ax.scatter(exact, y + 0.18, s=40, marker="|", color="k", linewidths=1.4, zorder=5, gid="peak:exact")
        handles.append(Line2D([], [], ls="none", marker="|", color="k", markersize=8, label="exact entropy-rate peak"))
    rows = [labels[k] for k in order]
    if "partition_rate_peak_time" in part:
        # Binary decisions below the classes: their entropy-rate peaks only (no per-trajectory decision times).
        names = [str(p) for p in part["partition"].values]
        yp = K + np.arange(len(names))
        ax.axhline(K - 0.5, color="0.7", lw=0.8)
        if "partition_rate_peak_time_ci_low" in part:
            for y_p, lo, hi in zip(yp, part["partition_rate_peak_time_ci_low"].values / T,
                                   part["partition_rate_peak_time_ci_high"].values / T):
                ax.plot([lo, hi], [y_p] * 2, color="0.35", lw=2.0, alpha=0.7, solid_capstyle="butt",
                        gid="partition_peak:ci")
        ax.scatter(part["partition_rate_peak_time"].values / T, yp, s=30, marker="D", facecolors="white",
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
    _outside_legend(left, handles, title=title)
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




@_styled
def plot_speciation(ds: xr.Dataset) -> Figure:
    """The speciation study (speciation.nc): entropy H(c | x_s) against OU time s and against s - s_S, the entropy
    rate dH/ds against s - s_S and against s / s_S (top), and against d the rate peak minus s_S and its full width at
    half maximum in rescaled time s / s_S (bottom). Exact curves dashed, Monte Carlo solid (entropy with ± 2 SE
    bands; rate after the study's Gaussian filter, which widens it), one colour per d. In the d panels the Monte
    Carlo values carry 95% bootstrap intervals, beside the exact curve put through the same estimator (hollow).

    Lines carry gids ``exact:d=<d>`` and ``mc:d=<d>`` in the curve panels, ``exact``, ``exact_estimator`` and
    ``mc`` in the d panels.
    """
    dims = ds["d"].values
    colors = [mpl.colormaps["viridis"](x) for x in np.linspace(0.0, 0.88, dims.size)]
    s, s_chain = ds["s"].values, ds["s_chain"].values
    s_S = ds["speciation_time"].values
    fig = Figure(figsize=(11.0, 6.6), layout="constrained")
    (ax_h, ax_r, ax_q), (ax_c, ax_p, ax_w) = fig.subplots(2, 3)
    H, Hx = ds["entropy"].values, ds["entropy_exact"].values
    se = ds["entropy_se"].values
    R, Rx = ds["entropy_rate"].values, ds["entropy_rate_exact"].values
    line = {k: v for k, v in _SPECIATION.items() if k != "gid"}
    for j, (d, c) in enumerate(zip(dims, colors)):
        for ax, x, xc in ((ax_h, s, s_chain), (ax_c, s - s_S[j], s_chain - s_S[j])):
            ax.fill_between(xc, H[j] - 2 * se[j], H[j] + 2 * se[j], color=c, alpha=_BAND_ALPHA, lw=0)
            ax.plot(xc, H[j], color=c, lw=1.2, gid=f"mc:d={d}")
            ax.plot(x, Hx[j], color=c, gid=f"exact:d={d}", **_EXACT)
        for ax, x, xc in ((ax_r, s - s_S[j], s_chain - s_S[j]), (ax_q, s / s_S[j], s_chain / s_S[j])):
            ax.plot(xc, R[j], color=c, lw=1.0, alpha=0.7, gid=f"mc:d={d}")
            ax.plot(x, Rx[j], color=c, gid=f"exact:d={d}", **_EXACT)
    ax_h.set_xlabel("OU time s  (ᾱ = e^{−2s})")
    ax_c.set_xlabel("s − s_S")
    ax_r.set_xlabel("s − s_S")
    ax_q.set_xlabel("rescaled time s / s_S")
    for ax in (ax_h, ax_c):
        ax.set_ylabel("H(c | x_s) [bit]")
        ax.set_ylim(0.0, 1.03)
    for ax in (ax_r, ax_q):
        ax.set_ylabel(f"dH/ds [{ds['entropy_rate_exact'].attrs.get('units', '')}]")
        ax.set_ylim(*_limits(Rx, R, pad=0.05))
    for ax, x0 in ((ax_c, 0.0), (ax_r, 0.0), (ax_q, 1.0)):
        ax.axvline(x0, **line)
    ax_q.set_xlim(0.0, min(3.0, float((s / s_S.max()).max())))
    ax_r.set_xlim(-3.0, 3.0)
    ax_c.set_xlim(-3.0, 3.0)
    smoothing = ds.attrs.get("rate_smoothing")
    if smoothing is not None:
        ax_r.set_title(f"Monte Carlo rate: Gaussian filter of {smoothing:g} grid points", fontsize=8)

    def panel(ax, exact, estimator, mc, low, high, label):
        ax.plot(dims, exact, color="k", marker="o", ms=4, gid="exact", label="exact", **_EXACT)
        ax.plot(dims, estimator, ls="none", marker="o", ms=6, mfc="none", mec="0.3", gid="exact_estimator",
                label="exact through the MC estimator")
        ax.errorbar(dims, mc, yerr=[mc - low, high - mc], color="tab:red", marker="s", ms=3.5, lw=0,
                    elinewidth=1.2, capsize=2, gid="mc", label="MC (95% bootstrap CI)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        ax.set_xlabel("dimension d  (classes at ±m, |m|² = d)")
        ax.set_ylabel(label)

    panel(ax_p, ds["peak_minus_speciation_exact"].values, ds["rate_peak_exact_estimator"].values - s_S,
          ds["peak_minus_speciation"].values, ds["rate_peak_ci_low"].values - s_S,
          ds["rate_peak_ci_high"].values - s_S, "rate peak − s_S (OU time)")
    ax_p.axhline(0.0, color="0.6", lw=0.8)
    panel(ax_w, ds["rate_width_rescaled_exact"].values, ds["rate_width_exact_estimator"].values / s_S,
          ds["rate_width_rescaled"].values, ds["rate_width_ci_low"].values / s_S,
          ds["rate_width_ci_high"].values / s_S, "rate FWHM / s_S")
    ax_w.set_ylim(bottom=0.0)
    handles = [Line2D([], [], color=c, lw=2.0, label=f"d = {d}") for d, c in zip(dims, colors)]
    handles += [Line2D([], [], color="0.2", lw=1.2, label="Monte Carlo"),
                Line2D([], [], color="0.2", label="exact", **_EXACT),
                Line2D([], [], label="speciation time", **line)]
    handles += ax_w.get_legend_handles_labels()[0]
    _outside_legend(fig, handles)
    return fig


@_styled
def plot_network_convergence(conv: xr.Dataset) -> Figure:
    """A network model's step convergence: H(c | path) at every S (the finest dashed), and each S's difference to the
    finest with ± 2 SE. Lines carry gids ``S=<S>`` and ``bias:S=<S>``."""
    steps = [int(S) for S in conv["steps"].values]
    t = np.asarray(conv["t"].values, dtype=float)
    colors = [mpl.colormaps["viridis"](x) for x in np.linspace(0.0, 0.85, len(steps))]
    fig = Figure(figsize=(9.6, 3.5), layout="constrained")
    ax, ax_b = fig.subplots(1, 2)
    for b, (S, c) in enumerate(zip(steps, colors)):
        h = conv["entropy_marginal"].values[b]
        ok = np.isfinite(h)
        style = dict(_EXACT, color="k") if b == len(steps) - 1 else {"color": c, "lw": 1.2}
        ax.plot(t[ok], h[ok], gid=f"S={S}", **style)
        if b < len(steps) - 1:
            d, se = conv["bias_vs_finest"].values[b], conv["bias_vs_finest_se"].values[b]
            ok = np.isfinite(d)
            ax_b.fill_between(t[ok], d[ok] - 2 * se[ok], d[ok] + 2 * se[ok], color=c, alpha=_BAND_ALPHA, lw=0)
            ax_b.plot(t[ok], d[ok], color=c, lw=1.2, gid=f"bias:S={S}")
    ax.set_ylabel(_label(conv["entropy_marginal"], wrap=True))
    ax_b.axhline(0.0, color="0.6", lw=0.8)
    ax_b.set_ylabel(f"H(c | path) − that at S = {steps[-1]}\n[bit] (± 2 SE)")
    for a in (ax, ax_b):
        _time_axis(a)
    handles = [Line2D([], [], color=c, lw=1.6, label=f"S = {S}") for c, S in zip(colors[:-1], steps[:-1])]
    handles.append(Line2D([], [], color="k", label=f"S = {steps[-1]} (reference)", **_EXACT))
    _outside_legend(fig, handles)
    return fig
