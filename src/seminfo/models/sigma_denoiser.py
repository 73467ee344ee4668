"""A sigma-parameterised denoiser D(x; sigma, label) (EDM / EDM2 style, Karras et al. 2022, 2024), loaded through a
Python entry point the user names, sampled with the ancestral step in sigma on a Karras sigma grid.

The entry point. ``model.entry`` is ``module:function`` (an importable module) or ``path/to/file.py:function``.
The adapter calls ``function(path)`` once, with ``model.path`` as a string (a pickle, a folder, whatever the
function reads), and expects a ``torch.nn.Module`` ``net`` with

    net.img_channels, net.img_resolution   the state's shape (C, R, R), in the network's units (a latent for EDM2)
    net.label_dim                          the number of classes (> 0: a class-conditional network)
    net(x, sigma, class_labels)            D(x; sigma, c) = the denoised estimate of x_0, for x (B, C, R, R) float32
                                           in variance-exploding units (x = x_0 + sigma n), sigma (B,) float32 and
                                           class_labels (B, label_dim) float32 one-hot (all zeros: unconditional)
    net.decode(x) (optional)               x_0 states (B, C, R, R) -> images in [0, 1] (B, 3 or 1, H, W) for figures
                                           (EDM2: its VAE decoder); absent: x_0 in [-1, 1] is the image

which is the interface of EDM's and EDM2's preconditioned networks (``EDMPrecond``, ``Precond``). Loading a pickle
runs code: use trusted files only. The conditions are ``model.classes`` (label ids, default all), named by
``model.class_names``; with ``model.zero_label_is_null: true`` (a network trained with label dropout) the all-zero
label is the null condition (needed for the I-MMSE study).

The chain. On the ascending grid sigma_1 < … < sigma_S (``seminfo.chain.schedules.karras_sigmas``, ``sampling.steps``,
``sampling.sigma_min`` / ``sigma_max`` / ``rho``, EDM's defaults 0.002, 80, 7) plus sigma_0 = 0, the ancestral step
from sigma_t to sigma_s < sigma_t is

    x_s ~ N((sigma_s^2 / sigma_t^2) x_t + (1 - sigma_s^2 / sigma_t^2) D(x_t; sigma_t, c),  sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2),

an exact Gaussian transition. In variance-preserving units x_VP = sqrt(alpha_bar) x with alpha_bar = 1 / (1 +
sigma^2) it is the 'small' DDPM step on the schedule whose grid is the sigma grid itself
(``seminfo.chain.schedules.sigma_schedule``), with D the x_0 ('sample') prediction, so the sampler runs it unchanged;
the Bayes increment is invariant under the rescaling of the state. The chain starts from x_VP ~ N(0, I) at sigma_max
(x ~ N(0, (1 + sigma_max^2) I)); the last step, to sigma = 0, is D itself (no noise, not a Bayes step). EDM's own
stochastic sampler ("churn": noise added to raise sigma, then a class-dependent Heun step) has no closed-form
transition density from x to x', so it cannot be measured this way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from ..chain.schedules import karras_sigmas, sigma_schedule
from .base import Adapter, unit_range
from .folders import FolderError, resolve_path

__all__ = ["SIGMA_DEFAULTS", "sigma_grid", "inspect", "entry_function", "entry_network", "entry_classes",
           "SigmaDenoiserAdapter", "load"]

SIGMA_DEFAULTS = {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}  # Karras et al. (2022), Table 1


def sigma_grid(sampling: dict) -> np.ndarray:
    """The ascending Karras grid of an experiment's ``sampling`` section (``steps`` points)."""
    opts = {k: float(sampling.get(k, v)) for k, v in SIGMA_DEFAULTS.items()}
    return karras_sigmas(int(sampling["steps"]), **opts)


def config_has_null(model: dict) -> bool:
    """Whether the model has a null (unconditional) condition, from its config ``model`` section alone:
    ``model.zero_label_is_null``."""
    return bool(model.get("zero_label_is_null", False))


def inspect(spec: dict) -> dict:
    model = spec["model"]
    path = resolve_path(model["path"], want_dir=False)
    sigmas = sigma_grid(spec["sampling"])
    return {"path": path, "sigmas": sigmas, "schedule": sigma_schedule(sigmas), "has_null": config_has_null(model)}


def entry_function(entry: str):
    """The callable ``model.entry`` names: ``module:function`` or ``file.py:function``."""
    where, _, name = entry.rpartition(":")
    try:
        if where.endswith(".py"):
            file = Path(where).expanduser().resolve()
            if not file.is_file():
                raise FileNotFoundError(f"{file} not found")
            mod_name = f"seminfo_entry_{abs(hash(str(file)))}"
            spec = importlib.util.spec_from_file_location(mod_name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except Exception as err:  # noqa: BLE001 - any failure of the user's module is reported in one line
        raise FolderError(f"{entry!r}: cannot import {where!r} ({type(err).__name__}: {err})", "model.entry") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise FolderError(f"{entry!r}: {where!r} has no function {name!r}", "model.entry")
    return fn


class SigmaDenoiserAdapter(Adapter):
    """D(x; sigma, c) in the chain's variance-preserving units: ``forward(x_VP, sigma, cond)`` = D(x_VP sqrt(1 + sigma^2);
    sigma, one-hot(c)), the x_0 prediction ('sample'); the network time of step t is sigma_t (float64)."""

    source = "python"
    prediction = "sample"
    variance = "fixed"
    time_dtype = torch.float64

    def __init__(self, net, plan: dict, classes, names):
        super().__init__()
        self.net = net
        self.schedule = plan["schedule"]
        self.sigmas = np.concatenate([[0.0], plan["sigmas"]])  # sigma of step t = 0 … S
        self.state_shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
        self.condition_names = tuple(names)
        self.has_null = plan["has_null"]
        self.latent = callable(getattr(net, "decode", None))
        onehot = torch.zeros(len(classes) + 1, int(net.label_dim))
        onehot[torch.arange(len(classes)), torch.as_tensor(classes)] = 1.0  # row K: all zeros, the null label
        self.register_buffer("labels", onehot, persistent=False)
        self.classes = list(classes)
        self.check()

    def network_time(self, t: int):
        return float(self.sigmas[int(t)])

    def forward(self, x, sigma, cond):
        scale = torch.sqrt(1.0 + sigma.double() ** 2).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return self.net(x * scale, sigma.to(x.dtype), self.labels[cond])

    def decode(self, x):
        return self.net.decode(x) if self.latent else unit_range(x)

    def describe(self) -> dict:
        return super().describe() | {"network": type(self.net).__name__, "label_ids": self.classes,
                                     "sigma_min": float(self.sigmas[1]), "sigma_max": float(self.sigmas[-1]),
                                     "null": "all-zero label" if self.has_null else None}


def entry_network(model: dict) -> torch.nn.Module:
    """``model.entry`` called with ``model.path``: a ``torch.nn.Module`` with img_channels, img_resolution and a
    positive label_dim (a class-conditional network), or a FolderError naming model.entry."""
    try:
        net = entry_function(model["entry"])(str(model["path"]))
    except FolderError:
        raise
    except Exception as err:  # noqa: BLE001
        raise FolderError(f"{model['entry']!r}: calling it with {model['path']!r} failed "
                          f"({type(err).__name__}: {err})", "model.entry") from None
    if not isinstance(net, torch.nn.Module):
        raise FolderError(f"{model['entry']!r}: returned a {type(net).__name__}, not a torch.nn.Module", "model.entry")
    missing = [a for a in ("img_channels", "img_resolution", "label_dim") if not hasattr(net, a)]
    if missing:
        raise FolderError(f"{model['entry']!r}: the network lacks {missing} (see seminfo.models.sigma_denoiser or "
                          "seminfo.models.velocity for the interface)", "model.entry")
    label_dim = int(net.label_dim)
    if label_dim < 1:
        raise FolderError(f"{model['entry']!r}: label_dim is {label_dim}: not a class-conditional network",
                          "model.entry")
    return net


def entry_classes(model: dict, label_dim: int) -> tuple[list[int], list[str]]:
    """The conditions' label ids (``model.classes``, default all) and names (``model.class_names``)."""
    classes = list(model.get("classes") or range(label_dim))
    bad = [c for c in classes if not 0 <= c < label_dim]
    if bad:
        raise FolderError(f"ids {bad} are outside the network's labels 0…{label_dim - 1}", "model.classes")
    names = model.get("class_names") or [str(c) for c in classes]
    if len(names) != len(classes):
        raise FolderError(f"names {len(names)} classes, the network has {len(classes)}", "model.class_names")
    return classes, names


def load(spec: dict, device) -> SigmaDenoiserAdapter:
    model = spec["model"]
    plan = inspect(spec)
    net = entry_network(model)
    classes, names = entry_classes(model, int(net.label_dim))
    return SigmaDenoiserAdapter(net, plan, classes, names).to(device).eval()
