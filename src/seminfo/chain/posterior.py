"""The online Bayesian classifier along a reverse trajectory, and the information measures built on it.

Because c -> x_0 -> x_1 -> … -> x_T is a Markov chain, every stochastic reverse step t -> t' updates the class
posterior exactly by Bayes' rule (Handke et al. 2025, eq. 6):

    log P(c | x_t') = log P(c | x_t) + log N(x_t'; mu_c(x_t), sigma_c^2 I) - logsumexp_j(same),

starting from the class prior where the chain starts (t = T, or below T on a scheduler's leading grid). All functions
work in log space on float64 numpy arrays, so the posterior can neither underflow nor produce NaN for finite
increments.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "LOG2",
    "log_normal",
    "shared_variance_increment",
    "diagonal_variance_increment",
    "normalize_log",
    "online_log_posterior",
    "entropy_bits",
    "binary_entropy_bits",
    "partition_log_posterior",
]

LOG2 = np.log(2.0)


def log_normal(x, mean, var):
    """Elementwise log N(x; mean, var) for scalar (1-D) variables; broadcasting numpy arrays."""
    return -0.5 * ((x - mean) ** 2 / var + np.log(2.0 * np.pi * var))


def shared_variance_increment(delta, z, sigma):
    """Class-dependent part of log N(x_t'; mu_c, sigma^2 I) when all classes share sigma.

    With the step actually taken ``x_t' = mu_s + sigma z`` and ``delta_c = mu_s - mu_c``,
    ``||x_t' - mu_c||^2 = ||delta_c||^2 + 2 sigma <delta_c, z> + sigma^2 ||z||^2``; the last term is common to
    all classes and dropped. ``delta`` has shape (..., K, D) and ``z`` shape (..., D); returns (..., K).
    Works for numpy arrays and torch tensors.
    """
    sq = (delta * delta).sum(-1)
    cross = (delta * z[..., None, :]).sum(-1)
    return -(sq + 2.0 * sigma * cross) / (2.0 * sigma * sigma)


def diagonal_variance_increment(delta, z, sigma_own, log_var):
    """Class-dependent part of log N(x_t'; mu_c, diag(sigma_c^2)) when the variance differs between classes and
    elements (a learned-range network).

    With the step taken ``x_t' = mu_s + sigma_s z`` (``sigma_s`` elementwise) and ``delta_c = mu_s - mu_c``,
    ``-1/2 sum_d [(delta_c + sigma_s z)^2 / sigma_c^2 + log sigma_c^2]``: the log-variance term stays, as it differs
    between classes. ``delta``, ``log_var`` (..., D) per (trajectory, class) pair, ``z`` and ``sigma_own`` the same
    shape; returns (...). Works for numpy arrays and torch tensors.
    """
    r = delta + sigma_own * z
    precision = (-log_var).exp() if hasattr(log_var, "exp") else np.exp(-log_var)
    return -0.5 * (r * r * precision + log_var).sum(-1)


def normalize_log(log_p, axis=-1):
    """Subtract logsumexp along ``axis`` so that exp(log_p) sums to one."""
    return log_p - logsumexp(log_p, axis=axis, keepdims=True)


def online_log_posterior(log_init, increments):
    """Run the Bayes update backwards in time along each trajectory.

    log_init    (N, K)     log P(c | x_T) (the log prior for a chain started from the prior)
    increments  (N, S, K)  log-likelihood of the step taken under each class; index i-1 is the step from
                           times[i] to times[i-1]
    returns     (N, S+1, K) normalised log P(c | x_t) on the grid, index 0 = t = 0 (ascending time)
    """
    log_init = np.asarray(log_init, dtype=np.float64)
    increments = np.asarray(increments, dtype=np.float64)
    n, steps, k = increments.shape
    out = np.empty((n, steps + 1, k), dtype=np.float64)
    out[:, steps] = normalize_log(log_init)
    for i in range(steps, 0, -1):
        out[:, i - 1] = normalize_log(out[:, i] + increments[:, i - 1])
    return out


def entropy_bits(log_p, axis=-1):
    """Shannon entropy in bits of normalised log-probabilities (0 log 0 = 0)."""
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        plogp = np.where(p > 0, p * log_p, 0.0)
    return -plogp.sum(axis=axis) / LOG2


def binary_entropy_bits(p):
    """h(p) = -p log2 p - (1 - p) log2(1 - p) of probabilities ``p`` (0 at p in {0, 1})."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
    return h / LOG2


def partition_log_posterior(log_p, side_a, side_b):
    """log P(z | x) for a binary decision z between disjoint class sets A and B.

    The class posterior is renormalised over A ∪ B: P(z = A) = sum_A P(c) / sum_{A ∪ B} P(c).
    Returns shape ``log_p.shape[:-1] + (2,)``: [..., 0] = log P(z = A), [..., 1] = log P(z = B).
    """
    la = logsumexp(log_p[..., list(side_a)], axis=-1)
    lb = logsumexp(log_p[..., list(side_b)], axis=-1)
    return normalize_log(np.stack([la, lb], axis=-1))
