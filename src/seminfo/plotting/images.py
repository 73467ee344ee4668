"""Figures of images: predicted x̂_0 along example trajectories (filmstrip) and generated samples per class."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .style import _class_labels, _outside_legend, _styled, _values, class_colors


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


