"""Shared style of the figures: rc settings, colours, dataset helpers, axis decorations, atomic saving.

Conventions shared by all figures:

- the x axis is normalised forward time t/T in [0, 1]; generation runs from t = 1 (noise) to t = 0 (data), which
  each time axis says with an arrow;
- class k has the same colour everywhere (``class_colors``);
- Monte Carlo estimates are solid lines, exact (Gaussian-mixture) curves dashed in the same colour;
- shaded bands are the pointwise 95 % stratified-bootstrap bands of summary.nc (``<variable>_ci_low`` /
  ``_ci_high``), or ± 2 standard errors for datasets without them; the legend says which;
- rates are the Rao-Blackwellised ones (``<rate>_rb``) when the dataset has them, and the axis label says so.
"""

from __future__ import annotations

import functools
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

logger = logging.getLogger("seminfo.plotting")

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
_BOOTSTRAP_LABEL = "95% bootstrap band"
_SEM_LABEL = "± 2 SEM"
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


TIME_AXES = ("t", "log_snr", "sigma")
# The time axis of the figure being drawn, set by ``_t`` (every figure calls it first) and read by ``_time_axis`` and
# ``_position``: positions in [0, 1] from data (0) to noise (1), and how to label them.
_AXIS: dict = {"mode": "t"}


def time_axis_mode(ds: xr.Dataset) -> str:
    """The figure's time axis: attribute ``plot_time_axis`` (plots.time_axis), else log SNR for a model sampled on its
    own grid (model.source python: a Karras sigma grid or a flow path's; sd3: the scheduler's sigmas; their steps are
    grid indices, not DDPM steps), else t/T."""
    mode = ds.attrs.get("plot_time_axis") or ("log_snr" if ds.attrs.get("model_source") in ("python", "sd3") else "t")
    return mode if mode == "t" or "log_snr" in ds.coords else "t"


def _t(ds: xr.Dataset) -> np.ndarray:
    """Positions of the ``time`` grid on the figure's time axis (``time_axis_mode``): t/T, or the log SNR mapped
    linearly onto [0, 1] (data at 0, noise at 1; the tick labels show log SNR or sigma)."""
    if "t" in ds.coords or "t" in ds.data_vars:
        t = np.asarray(ds["t"].values, dtype=float)
    else:
        time = np.asarray(ds["time"].values, dtype=float)
        t = time / float(ds.attrs.get("T", time.max()))
    mode = time_axis_mode(ds)
    if mode == "t":
        _AXIS.clear()
        _AXIS.update(mode="t")
        return t
    lam = np.asarray(ds["log_snr"].values, dtype=float)
    finite = lam[np.isfinite(lam)]
    hi, lo = float(finite.max()), float(finite.min())
    pos = (hi - np.clip(lam, lo, hi)) / max(hi - lo, 1e-12)
    _AXIS.clear()
    _AXIS.update(mode=mode, hi=hi, lo=lo, t=t, pos=pos)
    return pos


def _position(t):
    """Position on the current figure's time axis of normalised times t/T (e.g. the speciation time)."""
    if _AXIS.get("mode", "t") == "t":
        return t
    order = np.argsort(_AXIS["t"])
    return np.interp(t, _AXIS["t"][order], _AXIS["pos"][order])


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


def _rate_name(ds: xr.Dataset, base: str) -> str:
    """The rate variable a figure draws: the Rao-Blackwellised one when present (same mean, lower variance)."""
    return f"{base}_rb" if f"{base}_rb" in ds else base


def _ci(ds: xr.Dataset, name: str, *dims: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) of the bootstrap band of variable ``name``, or None when the dataset has none."""
    lo, hi = f"{name}_ci_low", f"{name}_ci_high"
    if lo in ds and hi in ds:
        return _values(ds[lo], *dims), _values(ds[hi], *dims)
    return None


def _band_or_sem(ds: xr.Dataset, name: str, *dims: str):
    """(low, high, legend label) of the band drawn around ``name``: its bootstrap band, else ± 2 SEM (from
    ``<name>_sem``), else None."""
    ci = _ci(ds, name, *dims)
    if ci is not None:
        return (*ci, _BOOTSTRAP_LABEL)
    if f"{name}_sem" in ds:
        mid, sem = _values(ds[name], *dims), _values(ds[f"{name}_sem"], *dims)
        return mid - 2 * sem, mid + 2 * sem, _SEM_LABEL
    return None


def _band_handle(label: str) -> Patch:
    return Patch(color="0.5", alpha=0.35, lw=0, label=label)


def _max_entropy(ds: xr.Dataset) -> float:
    """log2 K, or one bit for the binary entropies of one-vs-rest tracking."""
    if ds.attrs.get("tracking") == "one_vs_rest":
        return 1.0
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
    """x in [0, 1] on the figure's time axis (t/T, log SNR or sigma: ``_t``), with an arrow above the axes showing
    the direction of generation."""
    ax.set_xlim(0.0, 1.0)
    mode = _AXIS.get("mode", "t")
    if mode != "t":
        from matplotlib.ticker import FuncFormatter

        hi, lo = _AXIS["hi"], _AXIS["lo"]
        to_lambda = lambda u: hi - u * (hi - lo)  # noqa: E731
        if mode == "log_snr":
            ax.xaxis.set_major_formatter(FuncFormatter(lambda u, _: f"{to_lambda(u):.1f}"))
        else:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda u, _: f"{np.exp(-to_lambda(u) / 2):.2g}"))
    if label:
        ax.set_xlabel({"t": "normalised time t/T", "log_snr": "log SNR = log(ᾱ / (1 − ᾱ))",
                       "sigma": "noise level σ = √((1 − ᾱ) / ᾱ)"}[mode])
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
    ax.axvline(float(_position(float(ds.attrs["speciation_time"]) / T)), **_SPECIATION)
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
# Files
# --------------------------------------------------------------------------------------------------------------


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
