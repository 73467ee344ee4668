"""The reverse (generative) chain on a respaced grid: per-step coefficients in float64 and the DDPM mean.

Step ``i`` (i = 1 … S) goes from ``times[i]`` to ``times[i-1]``. On a respaced grid its beta is recomputed
from alpha_bar, ``beta_i = 1 - alpha_bar[times[i]] / alpha_bar[times[i-1]]`` (Nichol & Dhariwal 2021, §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schedules import Schedule, respaced_times

__all__ = ["ReverseChain", "reverse_chain", "ddpm_mean", "ddpm_mean_shift", "predict_x0"]


@dataclass(frozen=True)
class ReverseChain:
    """Coefficients of a respaced reverse chain; every array is float64.

    times      (S+1,)  integer grid, ascending, times[0] = 0, times[S] = T
    alpha_bar  (S+1,)  alpha_bar on the grid
    beta       (S,)    beta of step i (index i-1), from times[i] to times[i-1]
    beta_tilde (S,)    posterior variance of q(x_{t'} | x_t, x_0) for that step
    sigma      (S,)    the standard deviation the sampler uses (sqrt of beta_tilde or beta)
    variance   'small' (beta_tilde) or 'large' (beta)
    """

    times: np.ndarray
    alpha_bar: np.ndarray
    beta: np.ndarray
    beta_tilde: np.ndarray
    sigma: np.ndarray
    variance: str

    @property
    def steps(self) -> int:
        return int(self.beta.size)

    @property
    def posterior_start(self) -> int:
        """First grid index at which the class posterior is defined.

        With the 'small' variance the last step (t_1 -> 0) has sigma = 0: x_0 is a deterministic function of
        x_{t_1} and the class, so no Bayes update is possible and the posterior grid ends at t_1.
        """
        return 0 if self.sigma[0] > 0 else 1


def reverse_chain(schedule: Schedule, steps: int, variance: str = "small") -> ReverseChain:
    """Respace ``schedule`` to ``steps`` steps and compute the reverse-step coefficients."""
    if variance not in ("small", "large"):
        raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")
    times = respaced_times(schedule.T, steps)
    ab = schedule.alpha_bar[times]
    beta = 1.0 - ab[1:] / ab[:-1]
    beta_tilde = beta * (1.0 - ab[:-1]) / (1.0 - ab[1:])
    sigma = np.sqrt(beta_tilde if variance == "small" else beta)
    return ReverseChain(times, ab, beta, beta_tilde, sigma, variance)


def ddpm_mean_shift(alpha_bar_t, beta):
    """Factor k with mu = (x_t - k * eps) / sqrt(1 - beta): k = beta / sqrt(1 - alpha_bar_t).

    Two classes' means at the same x_t differ by ``(k / sqrt(1 - beta)) * (eps_c - eps_s)``: only the
    difference of the network outputs enters the Bayes update.
    """
    return beta / np.sqrt(1.0 - alpha_bar_t)


def ddpm_mean(x_t, eps, alpha_bar_t, beta):
    """Mean of the DDPM reverse kernel from an epsilon prediction (Ho et al. 2020, eq. 11).

    ``mu = (x_t - beta / sqrt(1 - alpha_bar_t) * eps) / sqrt(1 - beta)``; the step coefficients are scalars,
    ``x_t`` and ``eps`` numpy arrays or torch tensors.
    """
    k = float(ddpm_mean_shift(alpha_bar_t, beta))
    return (x_t - k * eps) / float(np.sqrt(1.0 - beta))


def predict_x0(x_t, eps, alpha_bar_t):
    """x̂_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    return (x_t - float(np.sqrt(1.0 - alpha_bar_t)) * eps) / float(np.sqrt(alpha_bar_t))
