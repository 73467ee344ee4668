"""The one interface the sampler sees of a diffusion model, whatever family it comes from.

An adapter is a ``torch.nn.Module`` whose ``forward(x, t, cond)`` is the network's native prediction for a batch of
states ``x`` (B, *state_shape) in the chain's units, network times ``t`` (B,) (what ``network_time`` maps the chain's
integer time to) and condition indices ``cond`` (B,) in 0 … K-1, or K for the unconditional (null) condition when
the model has one. Everything else the sampler needs is plain data on the adapter:

    state_shape      shape of the chain's state (the latent shape for latent models)
    condition_names  the K conditions (class names, ImageNet labels, prompts)
    has_null         whether condition index K is the model's unconditional prediction
    prediction       the network's output kind: 'epsilon', 'v_prediction' or 'sample' (x_0, a denoiser D), or the
                     velocity of a Gaussian path, 'velocity_<path>' (``seminfo.chain.gaussian_path``)
    variance         'fixed' (the chain's sigma) or 'learned_range' (2C output channels; the last C interpolate
                     log beta and log beta-tilde per element, Nichol & Dhariwal 2021, eq. 15)
    schedule         the forward process, float64 (``seminfo.chain.schedules.Schedule``), rebuilt from the model's own
                     scheduler configuration (or a sigma grid)
    network_time     chain time t (an integer step of ``schedule``) -> the number the network is fed
    decode           state -> images in [0, 1] (the identity map of [-1, 1] for pixel models, the VAE for latent ones)
    timestep_spacing the grid the model's pipeline samples on (``seminfo.chain.schedules.chain_times``): its scheduler's
                     ``timestep_spacing`` (leading, trailing, linspace) for a diffusers folder, 'even' otherwise
    steps_offset     its scheduler's ``steps_offset`` (leading spacing adds it to every timestep)
    clipping         what its scheduler does to x̂_0 before the step mean (``seminfo.chain.clipping.Clipping``), or
                     None
    chain_variance   'small' or 'large': the fixed step variance its scheduler's ``variance_type`` samples with (the
                     default of ``sampling.variance``)

The step mean of every chain (DDPM, DDIM, the sigma-ancestral step) is affine in the native output
(``seminfo.chain.diffusion.step_coefficients``), so the sampler stays model-agnostic: a class's Bayes increment is an
exact float64 difference of two network outputs times one coefficient (plus, when the scheduler clips x̂_0, the
float64 difference of the two means' clipping terms, ``seminfo.chain.clipping``).
"""

from __future__ import annotations

import torch

from ..chain.clipping import Clipping
from ..chain.gaussian_path import VELOCITY_PREDICTIONS
from ..chain.schedules import Schedule

__all__ = ["PREDICTIONS", "VARIANCES", "Adapter", "NetworkAdapter", "unit_range"]

PREDICTIONS = ("epsilon", "v_prediction", "sample")  # a DDPM scheduler's prediction_type
VARIANCES = ("fixed", "learned_range")


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model space -> [0, 1] image space, clipped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class Adapter(torch.nn.Module):
    """Base class of the adapters (see the module docstring); subclasses set the attributes and ``forward``."""

    source: str = "adapter"
    state_shape: tuple[int, ...]
    condition_names: tuple[str, ...]
    has_null: bool = False
    prediction: str = "epsilon"
    variance: str = "fixed"
    schedule: Schedule
    time_dtype: torch.dtype = torch.long
    latent: bool = False  # decode is more than a change of range (figures store 8-bit images)
    timestep_spacing: str = "even"
    steps_offset: int = 0
    clipping: Clipping | None = None
    chain_variance: str = "small"  # the fixed step variance its scheduler samples with (variance_type), unless set

    @property
    def num_conditions(self) -> int:
        return len(self.condition_names)

    @property
    def null_index(self) -> int | None:
        """The condition index of the unconditional prediction (K), or None."""
        return self.num_conditions if self.has_null else None

    @property
    def output_channels(self) -> int:
        return self.state_shape[0] * (2 if self.variance == "learned_range" else 1)

    def network_time(self, t: int):
        """What the network is fed for the chain's integer time t (1 … T)."""
        return int(t)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """States (B, *state_shape) -> images (B, C, H, W) in [0, 1]."""
        return unit_range(x)

    def describe(self) -> dict:
        """JSON-safe description recorded in the output files."""
        return {"source": self.source, "prediction": self.prediction, "variance": self.variance,
                "state_shape": list(self.state_shape), "conditions": list(self.condition_names),
                "has_null": bool(self.has_null), "T": self.schedule.T, "timestep_spacing": self.timestep_spacing,
                "steps_offset": int(self.steps_offset),
                "clipping": None if self.clipping is None else self.clipping.describe()}

    def check(self) -> None:
        """Refuse an adapter whose attributes the sampler cannot use."""
        if self.prediction not in PREDICTIONS + VELOCITY_PREDICTIONS:
            raise ValueError(f"{self.source}: prediction type {self.prediction!r} is not one of "
                             f"{PREDICTIONS + VELOCITY_PREDICTIONS}")
        if self.variance not in VARIANCES:
            raise ValueError(f"{self.source}: variance {self.variance!r} is not one of {VARIANCES}")
        if len(set(self.condition_names)) != len(self.condition_names) or not self.condition_names:
            raise ValueError(f"{self.source}: the conditions must be distinct and at least one")


class NetworkAdapter(Adapter):
    """A network ``net(x, t, labels)`` that already speaks the protocol: labels 0 … K-1 (and K = null when
    ``has_null``), the chain's integer time as its time input. The project's own UNet is one; tests wrap stand-in
    networks (e.g. the exact eps of a Gaussian mixture) with it."""

    def __init__(self, net: torch.nn.Module, schedule: Schedule, condition_names, state_shape, *,
                 has_null: bool = False, prediction: str = "epsilon", source: str = "network"):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.condition_names = tuple(str(c) for c in condition_names)
        self.state_shape = tuple(int(s) for s in state_shape)
        self.has_null = bool(has_null)
        self.prediction = prediction
        self.source = source
        self.check()

    def forward(self, x, t, cond):
        return self.net(x, t, cond)

