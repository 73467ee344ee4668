"""Step-convergence of the online posterior on a Gaussian mixture: one sampler at one step count.

A sampler draws reverse trajectories with the exact class-conditional eps and updates the class posterior with
its own Gaussian kernel; its per-class entropy H_k(t) is compared with the exact curve of the data process.

- ``ddpm_small`` / ``ddpm_large``: ancestral DDPM steps with variance beta-tilde / beta. Their kernels have
  the exact mean E[x_s | x_t, c] and a variance that is wrong by O(step size), so the error falls with S.
- ``ddim``: DDIM with sigma = eta sqrt(beta-tilde), 0 < eta <= 1 (eta = 1 is ``ddpm_small``). For eta < 1 the
  reverse chain is not the time reversal of a class-independent forward chain, so the online update yields
  P(c | x_t, x_{t+1}, …, x_T), the posterior given the whole path so far, not P(c | x_t): its entropy is
  lower than H(c | x_t) at every step count, and the error does not vanish as S grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..chain.diffusion import ReverseChain, ddim_chain, reverse_chain
from ..chain.one_vs_rest import clipped_posterior, ovr_log_posterior
from ..chain.posterior import entropy_bits, online_log_posterior
from ..chain.schedules import Schedule
from ..mixtures import gmm

__all__ = ["SAMPLERS", "StudyPoint", "OneVsRestPoint", "named_chain", "run_point", "run_one_vs_rest_point",
           "entropy_errors", "marginal_deficits"]

SAMPLERS = ("ddpm_small", "ddpm_large", "ddim")


def named_chain(schedule: Schedule, sampler: str, steps: int, eta: float = 1.0) -> tuple[ReverseChain, str]:
    """(chain, gmm kernel name) of a named sampler."""
    if sampler == "ddpm_small":
        return reverse_chain(schedule, steps, "small"), "ddpm"
    if sampler == "ddpm_large":
        return reverse_chain(schedule, steps, "large"), "ddpm"
    if sampler == "ddim":
        return ddim_chain(schedule, steps, eta), "ddim"
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


@dataclass
class StudyPoint:
    """Result of one (sampler, S): per-class entropies on its posterior grid."""

    times: np.ndarray  # (G,) posterior grid, ascending
    alpha_bar: np.ndarray  # (G,)
    entropy: np.ndarray  # (K, G) bit, mean over class-k trajectories
    entropy_sem: np.ndarray  # (K, G) bit
    posterior_mean_abs_error: float  # mean over trajectories, times, classes of |P_online - P(c | x_t)|


@dataclass
class OneVsRestPoint:
    """One-vs-rest tracking at one S (``seminfo.chain.one_vs_rest``), DDPM steps with the exact class and null eps: mean
    over trajectories and times of |P(c | path) - P(c | x_t)|, c each trajectory's class."""

    ovr_error: float  # the one-vs-rest tracker (2 evaluations per step)
    full_error: float  # the K-class online posterior of the same trajectories
    clipped_fraction: float  # share of (trajectory, time) points with log P > 0 (reported P = 1)


def marginal_deficits(H_marginal, exact_marginal) -> tuple[float, float]:
    """Largest and time-averaged H_exact(c | x_t) - H(c | x_t) (bit) where H is defined (not NaN): how far below the
    exact curve a sampler's posterior entropy lies (positive: below, as P(c | path) does)."""
    diff = np.asarray(exact_marginal) - np.asarray(H_marginal)
    diff = diff[np.isfinite(diff)]
    return float(diff.max()), float(diff.mean())


def entropy_errors(entropy, entropy_exact) -> tuple[float, float]:
    """Max and mean over classes and times of |H_k(t) - H_k^exact(t)| (bit)."""
    diff = np.abs(np.asarray(entropy) - np.asarray(entropy_exact))
    return float(diff.max()), float(diff.mean())


def run_point(mix: gmm.Mixture, schedule: Schedule, sampler: str, steps: int, per_class: int, seed: int,
              eta: float = 1.0, init: str = "prior", chunk: int = 2000) -> StudyPoint:
    """Sample ``per_class`` trajectories of every class with ``sampler`` on ``steps`` steps; track the posterior."""
    chain, kernel = named_chain(schedule, sampler, steps, eta)
    labels = np.repeat(np.arange(mix.K), per_class)
    x, log_init = gmm.sample_paths(mix, chain, labels, kernel, init, np.random.default_rng(seed))
    start = gmm.posterior_start(chain, kernel)
    alpha_bar = chain.alpha_bar[start:]
    h = np.empty((labels.size, alpha_bar.size))
    abs_error = 0.0
    for lo in range(0, labels.size, chunk):  # bounded memory: (chunk, G, K) at a time
        sl = slice(lo, lo + chunk)
        log_post = online_log_posterior(log_init[sl], gmm.path_log_likelihoods(mix, chain, x[sl], kernel, start))
        h[sl] = entropy_bits(log_post)
        exact = gmm.exact_log_posterior(mix, x[sl, start:], alpha_bar)
        abs_error += np.abs(np.exp(log_post) - np.exp(exact)).sum()
    H = np.stack([h[labels == k].mean(0) for k in range(mix.K)])
    sem = np.stack([h[labels == k].std(0, ddof=1) for k in range(mix.K)]) / np.sqrt(per_class)
    return StudyPoint(
        times=chain.times[start:],
        alpha_bar=alpha_bar,
        entropy=H,
        entropy_sem=sem,
        posterior_mean_abs_error=float(abs_error / (labels.size * alpha_bar.size * mix.K)),
    )


def run_one_vs_rest_point(mix: gmm.Mixture, schedule: Schedule, steps: int, per_class: int, seed,
                          init: str = "prior") -> OneVsRestPoint:
    """Sample DDPM ('small') trajectories with the exact eps and track each one's class both ways."""
    chain = reverse_chain(schedule, steps, "small")
    labels = np.repeat(np.arange(mix.K), per_class)
    rows = np.arange(labels.size)
    x, log_init = gmm.sample_paths(mix, chain, labels, "ddpm", init, np.random.default_rng(seed))
    start = chain.posterior_start
    exact = np.exp(gmm.exact_log_posterior(mix, x[:, start:], chain.alpha_bar[start:]))[rows, :, labels]
    inc = gmm.path_ovr_increments(mix, chain, x, "ddpm", start)[rows, :, labels]
    P, clipped, _ = clipped_posterior(ovr_log_posterior(log_init[rows, labels], inc))
    full = online_log_posterior(log_init, gmm.path_log_likelihoods(mix, chain, x, "ddpm", start))
    return OneVsRestPoint(ovr_error=float(np.abs(P - exact).mean()),
                          full_error=float(np.abs(np.exp(full[rows, :, labels]) - exact).mean()),
                          clipped_fraction=clipped)
