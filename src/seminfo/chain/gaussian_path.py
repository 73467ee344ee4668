"""Gaussian paths x_tau = alpha(tau) x_0 + sigma(tau) eps (flow matching, rectified flow) as variance-preserving
chains, and the coefficients of a velocity prediction (float64).

Any Gaussian path is a VP path in other units: with ``x_VP = x / sqrt(alpha^2 + sigma^2)`` and
``alpha_bar = alpha^2 / (alpha^2 + sigma^2)``, x_VP = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps. The ancestral step
from tau to a less noisy tau' is then q(x_s | x_t, x̂_0), the 'small' DDPM step with an x_0 prediction
(``seminfo.chain.diffusion.x0_mean_coefficients``); the sigma-parameterised (VE / EDM) chains are the case alpha = 1.

A velocity network predicts v = d x_tau / d tau = alpha' x_0 + sigma' eps (primes: d/dtau, in the path's own time
convention). Solving the pair (x, v) for x_0 gives

    x̂_0 = (sigma' x - sigma v) / (alpha sigma' - sigma alpha'),

affine in x (= sqrt(alpha^2 + sigma^2) x_VP) and v, so the step mean stays affine in the network's native output and
each condition's Bayes increment stays an exact float64 difference of two outputs (``velocity_x0_coefficients``).

The paths (``PATHS``), each with the velocity prediction kind named ``velocity_<name>``:

    rectified_flow  x = (1 - s) x_0 + s eps, s in [0, 1], s = 1 pure noise; v = eps - x_0. diffusers'
                    FlowMatchEulerDiscreteScheduler convention (Stable Diffusion 3, FLUX); the network is fed s x 1000.
    linear          x = t x_0 + (1 - t) eps, t in [0, 1], t = 0 pure noise; v = x_0 - eps. SiT's Linear path
                    (Ma et al. 2024), time running from noise to data.
    gvp             x = sin(pi t / 2) x_0 + cos(pi t / 2) eps, t = 0 pure noise; v = dx/dt. SiT's GVP path.

On each path tau is a function of alpha_bar alone (the log SNR is monotone in tau), so a prediction kind together
with alpha_bar fixes the coefficients, whatever grid the chain runs on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .schedules import Schedule

__all__ = ["GaussianPath", "PATHS", "VELOCITY_PREDICTIONS", "path_of_prediction", "path_alpha_bar", "path_scale",
           "path_schedule", "uniform_path_times", "velocity_x0_coefficients", "flow_match_sigmas",
           "FLOW_MATCH_UNSUPPORTED"]


@dataclass(frozen=True)
class GaussianPath:
    """x_tau = alpha(tau) x_0 + sigma(tau) eps, with tau in [0, 1] and its time derivatives (all float64).

    name            the path kind; its velocity prediction is ``velocity_<name>``
    alpha, sigma    tau -> the coefficients; d_alpha, d_sigma their derivatives d/dtau
    noise_time      the tau of pure noise (alpha = 0); the other end of [0, 1] is data (sigma = 0)
    time_of         alpha_bar -> tau (the inverse of ``path_alpha_bar``)
    """

    name: str
    alpha: Callable
    sigma: Callable
    d_alpha: Callable
    d_sigma: Callable
    noise_time: float
    time_of: Callable

    @property
    def prediction(self) -> str:
        return f"velocity_{self.name}"


def _roots(alpha_bar):
    ab = np.asarray(alpha_bar, dtype=np.float64)
    return np.sqrt(ab), np.sqrt(1.0 - ab)


def _rf_time(alpha_bar):
    a, s = _roots(alpha_bar)
    return s / (a + s)


def _linear_time(alpha_bar):
    a, s = _roots(alpha_bar)
    return a / (a + s)


def _gvp_time(alpha_bar):
    a, s = _roots(alpha_bar)
    return np.arctan2(a, s) * (2.0 / math.pi)


_HALF_PI = math.pi / 2.0
PATHS = {
    "rectified_flow": GaussianPath("rectified_flow", lambda s: 1.0 - s, lambda s: s, lambda s: -np.ones_like(s),
                                   lambda s: np.ones_like(s), 1.0, _rf_time),
    "linear": GaussianPath("linear", lambda t: t, lambda t: 1.0 - t, lambda t: np.ones_like(t),
                           lambda t: -np.ones_like(t), 0.0, _linear_time),
    "gvp": GaussianPath("gvp", lambda t: np.sin(_HALF_PI * t), lambda t: np.cos(_HALF_PI * t),
                        lambda t: _HALF_PI * np.cos(_HALF_PI * t), lambda t: -_HALF_PI * np.sin(_HALF_PI * t), 0.0,
                        _gvp_time),
}
VELOCITY_PREDICTIONS = tuple(p.prediction for p in PATHS.values())


def path_of_prediction(prediction: str) -> GaussianPath:
    """The path whose velocity prediction kind is ``prediction`` ('velocity_<path>')."""
    name = prediction.removeprefix("velocity_")
    if not prediction.startswith("velocity_") or name not in PATHS:
        raise ValueError(f"unknown velocity prediction {prediction!r} (expected one of {VELOCITY_PREDICTIONS})")
    return PATHS[name]


def path_alpha_bar(path: GaussianPath, tau):
    """alpha_bar = alpha^2 / (alpha^2 + sigma^2) of the path at ``tau`` (float64)."""
    tau = np.asarray(tau, dtype=np.float64)
    a, s = path.alpha(tau), path.sigma(tau)
    return a**2 / (a**2 + s**2)


def path_scale(path: GaussianPath, tau):
    """m = sqrt(alpha^2 + sigma^2): the path's state is x = m x_VP."""
    tau = np.asarray(tau, dtype=np.float64)
    return np.hypot(path.alpha(tau), path.sigma(tau))


def velocity_x0_coefficients(prediction: str, alpha_bar: float) -> tuple[float, float]:
    """(r, s) with x̂_0 = r x_VP + s v for the velocity prediction kind ``prediction`` at ``alpha_bar`` < 1 (float64).

    With tau = time_of(alpha_bar), m = sqrt(alpha^2 + sigma^2) and det = alpha sigma' - sigma alpha' (never 0 on these
    paths): r = sigma' m / det, s = -sigma / det. Closed forms: rectified_flow r = 1 / (a + b), s = -b / (a + b);
    linear r = 1 / (a + b), s = b / (a + b); gvp r = a, s = (2 / pi) b, with a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar).
    """
    path = path_of_prediction(prediction)
    ab = float(alpha_bar)
    if not 0.0 <= ab < 1.0:
        raise ValueError(f"alpha_bar must lie in [0, 1) for a velocity step, got {ab}")
    tau = float(path.time_of(ab))
    a, s = float(path.alpha(tau)), float(path.sigma(tau))
    da, ds = float(path.d_alpha(np.float64(tau))), float(path.d_sigma(np.float64(tau)))
    det = a * ds - s * da
    return ds * math.hypot(a, s) / det, -s / det


def uniform_path_times(path: GaussianPath, steps: int) -> np.ndarray:
    """``steps`` path times evenly spaced from the step next to data to pure noise, ordered from data to noise (grid
    index t = 1 … S of ``path_schedule``; t = 0 is data): the grid of SiT's Euler samplers."""
    if steps < 2:
        raise ValueError(f"a path grid needs at least 2 steps, got {steps}")
    frac = np.arange(1, steps + 1, dtype=np.float64) / steps  # noise fraction
    return frac if path.noise_time == 1.0 else 1.0 - frac


def path_schedule(path: GaussianPath, times) -> Schedule:
    """The VP schedule whose step t = 1 … S is path time ``times[t-1]`` (ordered from data to noise; t = 0 is data,
    alpha_bar = 1): the grid itself is the schedule, T = S, and ``reverse_chain(schedule, S)`` visits exactly these
    times. A grid ending at pure noise has alpha_bar_T = 0 (beta_T = 1): the chain then starts exactly at x_T ~ N(0, I)
    and its first step is defined through the x_0 form of the mean."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size < 1 or np.any((times < 0) | (times > 1)):
        raise ValueError("path times must be a non-empty array in [0, 1]")
    ab = np.concatenate([[1.0], path_alpha_bar(path, times)])
    if not np.all(np.diff(ab) < 0) or ab[-1] < 0:
        raise ValueError("path times must run strictly from data towards noise")
    betas = 1.0 - ab[1:] / ab[:-1]
    return Schedule(f"path_{path.name}", betas)


# FlowMatchEulerDiscreteScheduler options that change its sigma grid in ways not rebuilt here
FLOW_MATCH_UNSUPPORTED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas")


def flow_match_sigmas(config: dict, steps: int, image_seq_len: int | None = None,
                      source: str = "scheduler_config.json") -> np.ndarray:
    """The sigma grid (descending, ``steps`` values, the first 1 = pure noise) of diffusers'
    ``FlowMatchEulerDiscreteScheduler.set_timesteps(steps)`` with its configuration ``config``, in float64.

    As diffusers: the training sigmas i / T (i = T … 1), shifted by ``shift`` unless ``use_dynamic_shifting``; the
    inference sigmas evenly spaced from the largest to the smallest of those (the smallest already shifted) and shifted
    once more, by ``shift * s / (1 + (shift - 1) s)`` or, with dynamic shifting, by ``time_shift`` with
    mu = ``calculate_shift(image_seq_len, …)`` as the Stable Diffusion 3 pipeline computes it (``time_shift_type``
    exponential: e^mu / (e^mu + 1/s - 1); linear: mu / (mu + 1/s - 1)); then ``shift_terminal`` stretches the grid.
    The terminal sigma 0 that diffusers appends is grid index 0 here. Karras, exponential and beta sigmas and
    ``invert_sigmas`` raise ValueError naming ``source`` and the key.
    """
    def bad(key, why):
        return ValueError(f"{source}: {key}: {why}")

    for key in FLOW_MATCH_UNSUPPORTED:
        if config.get(key):
            raise bad(key, "is not supported (the grid is rebuilt from shift, dynamic shifting and shift_terminal)")
    T = config.get("num_train_timesteps", 1000)
    if not isinstance(T, int) or isinstance(T, bool) or T < 2:
        raise bad("num_train_timesteps", f"must be an integer >= 2, got {T!r}")
    shift = float(config.get("shift", 1.0))
    if not shift > 0:
        raise bad("shift", f"must be positive, got {shift}")
    dynamic = bool(config.get("use_dynamic_shifting", False))

    def shifted(s):
        return shift * s / (1.0 + (shift - 1.0) * s)

    train = np.arange(T, 0, -1, dtype=np.float64) / T
    if not dynamic:
        train = shifted(train)
    sigmas = np.linspace(train[0] * T, train[-1] * T, steps) / T
    if dynamic:
        if image_seq_len is None:
            raise bad("use_dynamic_shifting", "needs the image sequence length")
        base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.16)
        slope = (max_shift - base_shift) / (max_len - base_len)
        mu = image_seq_len * slope + base_shift - slope * base_len
        kind = config.get("time_shift_type", "exponential")
        if kind == "exponential":
            sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0))
        elif kind == "linear":
            sigmas = mu / (mu + (1.0 / sigmas - 1.0))
        else:
            raise bad("time_shift_type", f"{kind!r} is not exponential or linear")
    else:
        sigmas = shifted(sigmas)
    if config.get("shift_terminal"):
        one_minus = 1.0 - sigmas
        sigmas = 1.0 - one_minus / (one_minus[-1] / (1.0 - float(config["shift_terminal"])))
    if not (np.all(np.diff(sigmas) < 0) and sigmas[-1] > 0 and sigmas[0] <= 1.0 + 1e-12):
        raise bad("shift", "the sigma grid is not strictly decreasing inside (0, 1]")
    return np.minimum(sigmas, 1.0)
