"""Figure of the guidance study (guidance.nc): how guidance moves the entropy-rate peak and the information produced."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import _BAND_ALPHA, _outside_legend, _styled, _time_axis

_INTERVAL_STYLE = {"full": "-", "high_noise": "--", "low_noise": ":"}
_INTERVAL_MARKER = {"full": "o", "high_noise": "^", "low_noise": "v"}
_INTERVAL_LABEL = {"full": "all steps", "high_noise": "high noise (t/T ≥ 0.5)", "low_noise": "low noise (t/T ≤ 0.5)"}
_INTERVAL_SHORT = {"full": "all", "high_noise": "high", "low_noise": "low"}


def _scale_colors(scales) -> dict:
    cmap = mpl.colormaps["plasma"]
    return {w: cmap(x) for w, x in zip(scales, np.linspace(0.0, 0.8, len(scales)))}


@_styled
def plot_guidance(ds: xr.Dataset) -> Figure:
    """Four panels: the Rao–Blackwellised marginal entropy rate of every setting (colour = scale, line = interval;
    band on the unguided curve); the marginal rate-peak time against w with its 95 % interval; the information
    produced per window of t/T; and, on digits, the independent classifier's sample agreement per setting.

    Lines carry gids ``rate:w=<w>:<interval>``; the peak markers ``peak:<interval>``.
    """
    scales = [float(w) for w in ds["scale"].values]
    intervals = [str(i) for i in ds["interval"].values]
    colors = _scale_colors(scales)
    t = np.asarray(ds["t"].values, dtype=float)
    has_agreement = "sample_agreement" in ds
    fig = Figure(figsize=(11.0, 6.4), layout="constrained")
    (ax_rate, ax_peak), (ax_info, ax_agree) = fig.subplots(2, 2)

    rate = ds["entropy_marginal_rate_rb"]
    for w in scales:
        for name in intervals:
            if w == 1.0 and name != intervals[0]:
                continue  # the unguided setting does not depend on the interval
            y = rate.sel(scale=w, interval=name).values
            ax_rate.plot(t, y, color=colors[w], ls=_INTERVAL_STYLE.get(name, "-"), lw=1.5, gid=f"rate:w={w:g}:{name}")
            if w == 1.0:
                lo = ds["entropy_marginal_rate_rb_ci_low"].sel(scale=w, interval=name).values
                hi = ds["entropy_marginal_rate_rb_ci_high"].sel(scale=w, interval=name).values
                ax_rate.fill_between(t, lo, hi, color=colors[w], alpha=_BAND_ALPHA, lw=0)
    ax_rate.axhline(0.0, color="0.6", lw=0.8)
    ax_rate.set_ylabel("dH(c | x_t)/dt, guided posterior\n(Rao-Blackwellised) [bit per unit time]")
    _time_axis(ax_rate)

    offsets = np.linspace(-0.06, 0.06, len(intervals)) * (max(scales) - min(scales) or 1.0)
    for off, name in zip(offsets, intervals):
        peak = ds["marginal_peak_time"].sel(interval=name).values
        lo = ds["marginal_peak_time_ci_low"].sel(interval=name).values
        hi = ds["marginal_peak_time_ci_high"].sel(interval=name).values
        x = np.asarray(scales) + off
        ax_peak.errorbar(x, peak, yerr=[peak - lo, hi - peak], fmt=_INTERVAL_MARKER.get(name, "o"), color="0.25",
                         ms=5, capsize=2.5, lw=1.0, label=_INTERVAL_LABEL.get(name, name), gid=f"peak:{name}")
    ax_peak.set_xlabel("guidance scale w")
    ax_peak.set_ylabel("t/T of the marginal rate peak\n(95% bootstrap interval)")
    ax_peak.set_xticks(scales)
    ax_peak.legend(loc="best")

    windows = [str(v) for v in ds["window"].values]
    labels, values, errs, bar_colors = [], [], [], []
    for w in scales:
        for name in (intervals[:1] if w == 1.0 else intervals):
            info = ds["information"].sel(scale=w, interval=name).values
            lo = ds["information_ci_low"].sel(scale=w, interval=name).values
            hi = ds["information_ci_high"].sel(scale=w, interval=name).values
            labels.append(f"w={w:g}" + ("" if w == 1.0 else f"\n{_INTERVAL_SHORT.get(name, name)}"))
            values.append(info)
            errs.append((info - lo, hi - info))
            bar_colors.append(colors[w])
    values = np.asarray(values)  # (settings, windows): H at the window's noisy end minus at its clean end
    x = np.arange(len(labels))
    width = 0.8 / len(windows)
    window_colors = [mpl.colormaps["viridis"](v) for v in np.linspace(0.15, 0.9, len(windows))]
    for j, (win, c) in enumerate(zip(windows, window_colors)):
        err = np.array([[e[0][j] for e in errs], [e[1][j] for e in errs]])
        ax_info.bar(x + (j - (len(windows) - 1) / 2) * width, values[:, j], width, color=c, yerr=err,
                    error_kw={"lw": 0.8, "capsize": 1.5}, label=f"t/T in {win}")
    ax_info.set_xticks(x, labels, fontsize=7)
    ax_info.set_ylabel("information produced in the window\nH(c | x) at its noisy end − at its clean end [bit]")
    ax_info.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=len(windows), fontsize=7, handlelength=1.0)

    if has_agreement:
        lowest = 1.0
        for xi, w, name, c in zip(x, *zip(*[(w, name, colors[w]) for w in scales
                                             for name in (intervals[:1] if w == 1.0 else intervals)])):
            p = float(ds["sample_agreement"].sel(scale=w, interval=name))
            se = float(ds["sample_agreement_se"].sel(scale=w, interval=name))
            ax_agree.errorbar(xi, p, yerr=2 * se, fmt="o", color=c, capsize=2.5)
            lowest = min(lowest, p - 2 * se)
        ax_agree.set_xticks(x, labels, fontsize=7)
        ax_agree.set_ylim(max(0.0, lowest - 0.05), 1.01)
        ax_agree.set_ylabel("samples labelled as their class\nby an independent classifier (± 2 SE)")
    else:
        ax_agree.set_axis_off()
    handles = [Line2D([], [], color=colors[w], lw=2.0, label=f"w = {w:g}") for w in scales]
    handles += [Line2D([], [], color="0.3", ls=_INTERVAL_STYLE.get(n, "-"), label=_INTERVAL_LABEL.get(n, n))
                for n in intervals]
    _outside_legend(fig, handles, title="setting")
    fig.suptitle("guided posterior P(c | path); same seeds in every setting", fontsize=9)
    return fig
