"""Noise schedules of the DDPM forward process, computed once in float64.

Convention used throughout the package: steps are numbered t = 1 … T with betas beta_1 … beta_T, and
``alpha_bar[t] = prod_{s <= t} (1 - beta_s)`` is stored for t = 0 … T with ``alpha_bar[0] = 1`` (t = 0 is
data, t = T is noise). A respaced chain visits a subsequence ``times`` of 0 … T that contains 0 and T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Schedule", "linear_betas", "cosine_betas", "make_schedule", "schedule_from_alpha_bar", "respaced_times"]


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Linear schedule of Ho et al. (2020), ``beta_t`` from ``beta_start`` to ``beta_end`` (scaled to T = 1000)."""
    scale = 1000.0 / T
    return np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal (2021), eq. 17, betas clipped at ``max_beta``."""
    f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


@dataclass(frozen=True)
class Schedule:
    """A forward process: ``betas`` for t = 1 … T and ``alpha_bar`` for t = 0 … T (float64)."""

    name: str
    betas: np.ndarray

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError("betas must be a non-empty 1-D array")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("every beta must lie in (0, 1]")
        betas.setflags(write=False)
        object.__setattr__(self, "betas", betas)
        alpha_bar = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
        alpha_bar.setflags(write=False)
        object.__setattr__(self, "alpha_bar", alpha_bar)

    @property
    def T(self) -> int:
        return int(self.betas.size)

    def log_snr(self, times: np.ndarray) -> np.ndarray:
        """log(alpha_bar / (1 - alpha_bar)) at integer ``times`` (+inf at t = 0)."""
        ab = self.alpha_bar[np.asarray(times)]
        with np.errstate(divide="ignore"):
            return np.log(ab) - np.log1p(-ab)


def make_schedule(name: str, T: int, **params) -> Schedule:
    """Build a named schedule ('linear' or 'cosine') with its parameters."""
    if name == "linear":
        return Schedule(name, linear_betas(T, **params))
    if name == "cosine":
        return Schedule(name, cosine_betas(T, **params))
    raise ValueError(f"unknown schedule {name!r} (expected 'linear' or 'cosine')")


def schedule_from_alpha_bar(name: str, alpha_bar) -> Schedule:
    """The schedule whose alpha_bar on t = 0 … T is ``alpha_bar`` (1 at t = 0, strictly decreasing, positive):
    ``beta_t = 1 - alpha_bar[t] / alpha_bar[t-1]``. The Schedule recomputes alpha_bar as the product of the
    1 - beta_t, which agrees with the input to rounding (float64)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    if ab.ndim != 1 or ab.size < 2 or ab[0] != 1.0 or not np.all((ab[1:] > 0) & (np.diff(ab) < 0)):
        raise ValueError("alpha_bar must start at 1 and decrease strictly, staying positive")
    return Schedule(name, 1.0 - ab[1:] / ab[:-1])


def respaced_times(T: int, steps: int) -> np.ndarray:
    """``steps + 1`` evenly spaced integer times from 0 to T (ascending), the grid of a respaced chain.

    The betas of the respaced chain follow from alpha_bar on this grid (see ``seminfo.diffusion``).
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1 … T = {T}, got {steps}")
    times = np.round(np.linspace(0, T, steps + 1)).astype(np.int64)
    assert np.all(np.diff(times) > 0)
    return times
