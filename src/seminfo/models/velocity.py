"""A class-conditional velocity network v(x, t, y) of a Gaussian path (flow matching: SiT, Ma et al. 2024), loaded
through a Python entry point the user names (``model.source: python`` with ``model.prediction: velocity``), sampled
with the ancestral step of the path in variance-preserving units.

The entry point. ``model.entry`` is ``module:function`` or ``path/to/file.py:function``; ``function(model.path)``
returns a ``torch.nn.Module`` ``net`` with

    net.img_channels, net.img_resolution   the state's shape (C, R, R) (a latent for latent models)
    net.label_dim                          the number of classes (> 0)
    net(x, t, y)                           the velocity v = d x_t / dt, for x (B, C, R, R) float32 in the path's own
                                           units, x_t = alpha(t) x_0 + sigma(t) eps, t (B,) float32 the path time in
                                           SiT's convention, t in [0, 1] with t = 0 pure noise and t = 1 data (fed as
                                           is, not scaled), and y (B,) int64 class ids
    net.decode(x) (optional)               x_0 states -> images in [0, 1] (B, 3 or 1, H, W) for figures (a VAE
                                           decoder); absent: x_0 in [-1, 1] is the image

which is SiT's ``SiT.forward(x, t, y)`` (its learned-sigma channels already dropped) plus three attributes.
``model.path_kind`` names the path (``seminfo.chain.gaussian_path``): 'linear' (alpha = t, sigma = 1 - t, v = x_0 - eps)
or 'gvp' (alpha = sin(pi t / 2), sigma = cos(pi t / 2)). The conditions are ``model.classes`` (label ids, default
all), named by ``model.class_names``; ``model.null_label`` is the id of the unconditional prediction of a network
trained with label dropout (SiT: label_dim, its extra embedding row), needed for guidance, one-vs-rest and I-MMSE.

The chain. ``sampling.steps`` = S path times evenly spaced from t = 1/S … 1 away from data to t = 0 (pure noise)
(``gaussian_path.uniform_path_times``: the grid of SiT's Euler samplers), plus data. In VP units x_VP = x /
sqrt(alpha^2 + sigma^2), alpha_bar = alpha^2 / (alpha^2 + sigma^2), each step is q(x_s | x_t, x̂_0), the 'small' DDPM
step with x̂_0 = r x_VP + s v affine in the velocity (``gaussian_path.velocity_x0_coefficients``). The chain starts
exactly at the path's noise end, x_VP ~ N(0, I) at alpha_bar = 0; its last step, to data, is x̂_0 itself (no noise,
not a Bayes step). SiT's own ODE sampler (Euler, Heun, dopri5) is deterministic and has no transition density; its SDE
sampler (Euler–Maruyama) has Gaussian steps too, but with another variance; this chain is the one whose steps are the
time reversal of the path as S grows.
"""

from __future__ import annotations

import numpy as np
import torch

from ..chain.gaussian_path import PATHS, path_scale, path_schedule, uniform_path_times
from .base import Adapter, unit_range
from .folders import FolderError, resolve_path
from .sigma_denoiser import entry_classes, entry_network

__all__ = ["PATH_KINDS", "inspect", "VelocityAdapter", "load"]

PATH_KINDS = ("linear", "gvp")  # the paths model.path_kind may name (SiT's conventions)


def config_has_null(model: dict) -> bool:
    """Whether the model has a null (unconditional) condition, from its config ``model`` section alone:
    ``model.null_label`` is given."""
    return "null_label" in model


def inspect(spec: dict) -> dict:
    model = spec["model"]
    path = resolve_path(model["path"], want_dir=False)
    kind = model.get("path_kind")
    if kind not in PATH_KINDS:
        raise FolderError(f"{kind!r} is not a path kind of a velocity network (one of {', '.join(PATH_KINDS)})",
                          "model.path_kind")
    gpath = PATHS[kind]
    times = uniform_path_times(gpath, int(spec["sampling"]["steps"]))
    return {"path": path, "gaussian_path": gpath, "times": times, "schedule": path_schedule(gpath, times),
            "has_null": config_has_null(model)}


class VelocityAdapter(Adapter):
    """v(x, t, y) in the chain's VP units: ``forward(x_VP, t, cond)`` = v(x_VP sqrt(alpha_t^2 + sigma_t^2), t_path,
    label(cond)), the native velocity (prediction 'velocity_<path>'); the network time of grid index t is the index
    itself, mapped to the path time (float64 table) inside ``forward``."""

    source = "python"
    variance = "fixed"

    def __init__(self, net, plan: dict, classes, names, null_label: int | None):
        super().__init__()
        self.net = net
        self.path = plan["gaussian_path"]
        self.prediction = self.path.prediction
        self.schedule = plan["schedule"]
        times = np.concatenate([[1.0 - self.path.noise_time], plan["times"]])  # path time of grid index 0 … S
        self.register_buffer("times", torch.as_tensor(times, dtype=torch.float64), persistent=False)
        self.register_buffer("scales", torch.as_tensor(path_scale(self.path, times), dtype=torch.float64),
                             persistent=False)
        self.state_shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
        self.condition_names = tuple(names)
        self.has_null = null_label is not None
        self.latent = callable(getattr(net, "decode", None))
        ids = list(classes) + [0 if null_label is None else int(null_label)]  # row K: the null label
        self.register_buffer("labels", torch.as_tensor(ids, dtype=torch.long), persistent=False)
        self.classes, self.null_label = list(classes), null_label
        self.check()

    def forward(self, x, t, cond):
        t = t.long()
        scale = self.scales[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return self.net(x * scale, self.times[t].to(x.dtype), self.labels[cond])

    def decode(self, x):
        return self.net.decode(x) if self.latent else unit_range(x)

    def describe(self) -> dict:
        return super().describe() | {"network": type(self.net).__name__, "label_ids": self.classes,
                                     "path_kind": self.path.name, "null_label": self.null_label,
                                     "path_times": "uniform in t, t = 0 (noise) … 1 (data)"}


def load(spec: dict, device) -> VelocityAdapter:
    model = spec["model"]
    plan = inspect(spec)
    net = entry_network(model)
    label_dim = int(net.label_dim)
    classes, names = entry_classes(model, label_dim)
    null = model.get("null_label")
    if null is not None and (null in classes or not 0 <= null <= label_dim):
        raise FolderError(f"{null} must be a label id in 0…{label_dim} that is not one of the conditions",
                          "model.null_label")
    return VelocityAdapter(net, plan, classes, names, null).to(device).eval()
