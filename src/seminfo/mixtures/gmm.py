"""One-dimensional Gaussian mixtures, where every quantity of the method is analytic.

Class c has weight pi_c and data x_0 ~ N(m_c, s_c^2). Under the DDPM forward process
x_t | c ~ N(sqrt(ab_t) m_c, ab_t s_c^2 + 1 - ab_t), so the exact posterior P(c | x_t), the exact
class-conditional noise prediction and the exact reverse kernel of each class are closed-form
(METHOD.md, "Gaussian mixtures").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..chain import rao_blackwell
from ..chain.diffusion import ReverseChain, ddim_mean, ddpm_mean, sampler_chain  # sampler_chain: re-exported
from ..chain.guidance import Guidance, guided_output
from ..chain.posterior import entropy_bits, log_normal, normalize_log, partition_log_posterior

__all__ = [
    "Mixture",
    "component_variance",
    "marginal_moments",
    "exact_log_posterior",
    "exact_eps",
    "exact_null_eps",
    "guided_eps",
    "exact_kernel_gain",
    "exact_kernel",
    "ddpm_kernel",
    "ddim_kernel",
    "sampler_chain",
    "sample_paths",
    "posterior_start",
    "path_log_likelihoods",
    "path_expected_entropies",
    "path_ovr_increments",
    "exact_entropy",
    "exact_partition_entropy",
]


@dataclass(frozen=True)
class Mixture:
    """A 1-D Gaussian mixture, one component per class (float64 arrays of length K)."""

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    def __post_init__(self):
        for name in ("weights", "means", "stds"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if not (self.weights.shape == self.means.shape == self.stds.shape) or self.weights.ndim != 1:
            raise ValueError("weights, means and stds must be 1-D arrays of equal length")
        if np.any(self.stds <= 0) or np.any(self.weights <= 0):
            raise ValueError("weights and stds must be positive")
        if abs(self.weights.sum() - 1.0) > 1e-6:
            raise ValueError("weights must sum to 1")

    @property
    def K(self) -> int:
        return int(self.weights.size)

    @property
    def log_prior(self) -> np.ndarray:
        return np.log(self.weights)


def component_variance(stds, alpha_bar):
    """Variance v_c(t) = ab s_c^2 + 1 - ab of x_t | c (of each coordinate), shape (..., K) for ``alpha_bar`` (...)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)[..., None]
    return ab * stds**2 + 1.0 - ab


def marginal_moments(mix: Mixture, alpha_bar):
    """Mean and variance of x_t | c, shapes (..., K) for ``alpha_bar`` of shape (...)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)[..., None]
    return np.sqrt(ab) * mix.means, component_variance(mix.stds, alpha_bar)


def exact_log_posterior(mix: Mixture, x, alpha_bar):
    """Exact log P(c | x_t) ∝ log pi_c + log N(x_t; sqrt(ab) m_c, ab s_c^2 + 1 - ab), shape (..., K).

    ``alpha_bar`` is a scalar or broadcasts against ``x``.
    """
    mean, var = marginal_moments(mix, alpha_bar)
    return normalize_log(mix.log_prior + log_normal(np.asarray(x)[..., None], mean, var))


def exact_eps(mix: Mixture, x, alpha_bar):
    """Exact class-conditional noise prediction eps_c(x_t) = sqrt(1 - ab) (x_t - sqrt(ab) m_c) / v_c(t)."""
    mean, var = marginal_moments(mix, alpha_bar)
    return np.sqrt(1.0 - np.asarray(alpha_bar))[..., None] * (np.asarray(x)[..., None] - mean) / var


def exact_null_eps(mix: Mixture, x, alpha_bar):
    """Exact unconditional noise prediction sum_c P(c | x_t) eps_c(x_t) (Tweedie's formula for the mixture), (...)."""
    return (np.exp(exact_log_posterior(mix, x, alpha_bar)) * exact_eps(mix, x, alpha_bar)).sum(-1)


def guided_eps(mix: Mixture, x, alpha_bar, scale: float = 1.0):
    """eps of every class for a step guided with ``scale`` (``seminfo.chain.guidance``): the exact class eps at scale 1,
    else eps_null + w (eps_c - eps_null) with the exact null eps."""
    eps = exact_eps(mix, x, alpha_bar)
    if scale == 1.0:
        return eps
    return guided_output(eps, exact_null_eps(mix, x, alpha_bar)[..., None], scale)


def exact_kernel_gain(stds, ab_t: float, ab_s: float):
    """Gain C / v_t and variance v_s - C^2 / v_t of the exact reverse kernel of every class, shapes (K,).

    (x_s, x_t) | c is jointly Gaussian with Cov = C = sqrt(ab_t / ab_s) v_s, so
    x_s | x_t, c ~ N(sqrt(ab_s) m_c + (C / v_t)(x_t - sqrt(ab_t) m_c), v_s - C^2 / v_t).
    """
    v_t = component_variance(stds, ab_t)
    v_s = component_variance(stds, ab_s)
    cov = np.sqrt(ab_t / ab_s) * v_s
    return cov / v_t, v_s - cov**2 / v_t


def exact_kernel(mix: Mixture, x_t, ab_t: float, ab_s: float):
    """Exact reverse kernel p(x_s | x_t, c) of every class for s < t: mean (..., K) and variance (K,)
    (``exact_kernel_gain``)."""
    mean_t, _ = marginal_moments(mix, ab_t)
    mean_s, _ = marginal_moments(mix, ab_s)
    gain, var = exact_kernel_gain(mix.stds, ab_t, ab_s)
    mean = mean_s + gain * (np.asarray(x_t)[..., None] - mean_t)
    return mean, var


def ddpm_kernel(mix: Mixture, x_t, ab_t: float, beta: float, sigma: float, scale: float = 1.0):
    """DDPM-parameterised reverse kernel with the exact class-conditional eps (guided with ``scale``): mean (..., K),
    variance (K,)."""
    eps = guided_eps(mix, x_t, ab_t, scale)
    mean = ddpm_mean(np.asarray(x_t)[..., None], eps, ab_t, beta)
    return mean, np.full(mix.K, sigma**2)


def ddim_kernel(mix: Mixture, x_t, ab_t: float, ab_s: float, sigma: float, scale: float = 1.0):
    """DDIM reverse kernel with the exact class-conditional eps (guided with ``scale``) and standard deviation
    ``sigma``: mean (..., K), variance (K,). All classes share sigma, as in the DDPM kernel."""
    eps = guided_eps(mix, x_t, ab_t, scale)
    mean = ddim_mean(np.asarray(x_t)[..., None], eps, ab_t, ab_s, sigma)
    return mean, np.full(mix.K, sigma**2)


def _step_kernel(mix: Mixture, chain: ReverseChain, kernel: str, i: int, x_t, guidance: Guidance | None = None):
    """Kernel of step i (from chain.times[i] to chain.times[i-1]) of the requested type, guided if asked."""
    ab_t, ab_s = chain.alpha_bar[i], chain.alpha_bar[i - 1]
    scale = 1.0 if guidance is None else guidance.scale_at(float(chain.times[i]))
    if kernel == "exact":
        if scale != 1.0:
            raise ValueError("guidance moves an eps-parameterised step: use kernel 'ddpm' or 'ddim'")
        return exact_kernel(mix, x_t, ab_t, ab_s)
    if kernel == "ddpm":
        return ddpm_kernel(mix, x_t, ab_t, chain.beta[i - 1], chain.sigma[i - 1], scale)
    if kernel == "ddim":
        if chain.variance != "ddim":
            raise ValueError("kernel 'ddim' needs a chain from diffusion.ddim_chain (or sampler_chain), got a "
                             f"chain with variance {chain.variance!r}")
        return ddim_kernel(mix, x_t, ab_t, ab_s, chain.sigma[i - 1], scale)
    raise ValueError(f"kernel must be 'exact', 'ddpm' or 'ddim', got {kernel!r}")


def sample_paths(mix: Mixture, chain: ReverseChain, labels, kernel: str, init: str, rng: np.random.Generator,
                 guidance: Guidance | None = None):
    """Draw reverse trajectories, each from the kernel of its own class.

    labels    (N,) int class of each trajectory
    kernel    'exact', 'ddpm' or 'ddim'
    init      'prior': x_T ~ N(0, 1) and log P(c | x_T) = log pi (as for a learned model);
              'exact': x_T ~ p(x_T | c) and log P(c | x_T) exact
    guidance  classifier-free guidance of the 'ddpm' / 'ddim' steps (exact null eps)
    Returns x (N, S+1) on the ascending time grid and the initial log posterior (N, K).
    """
    labels = np.asarray(labels)
    n, steps = labels.size, chain.steps
    x = np.empty((n, steps + 1), dtype=np.float64)
    if init == "prior":
        x[:, steps] = rng.standard_normal(n)
        log_init = np.broadcast_to(mix.log_prior, (n, mix.K)).copy()
    elif init == "exact":
        mean, var = marginal_moments(mix, chain.alpha_bar[steps])
        x[:, steps] = mean[labels] + np.sqrt(var[labels]) * rng.standard_normal(n)
        log_init = exact_log_posterior(mix, x[:, steps], chain.alpha_bar[steps])
    else:
        raise ValueError(f"init must be 'prior' or 'exact', got {init!r}")
    rows = np.arange(n)
    for i in range(steps, 0, -1):
        mean, var = _step_kernel(mix, chain, kernel, i, x[:, i], guidance)
        x[:, i - 1] = mean[rows, labels] + np.sqrt(var[labels]) * rng.standard_normal(n)
    return x, log_init


def posterior_start(chain: ReverseChain, kernel: str) -> int:
    """First grid index with a defined posterior: the exact kernel is stochastic down to t = 0."""
    return 0 if kernel == "exact" else chain.posterior_start


def path_log_likelihoods(mix: Mixture, chain: ReverseChain, x, kernel: str, start: int = 0,
                         guidance: Guidance | None = None):
    """log p(x_{t_{i-1}} | x_{t_i}, c) of the steps i = start+1 … S of every path under every class.

    Returns shape (N, S - start, K), index j for the step from times[start+j+1] to times[start+j]; evaluated
    with the same kernel, and so the same variance, that ``sample_paths`` drew the step with. ``guidance``: the
    guided kernels of every class (the guided posterior); without it on guided paths, the unguided model's.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], chain.steps - start, mix.K), dtype=np.float64)
    for i in range(chain.steps, start, -1):
        mean, var = _step_kernel(mix, chain, kernel, i, x[:, i], guidance)
        out[:, i - 1 - start] = log_normal(x[:, i - 1, None], mean, var)
    return out


def path_ovr_increments(mix: Mixture, chain: ReverseChain, x, kernel: str = "ddpm", start: int = 0):
    """One-vs-rest increments log N(x'; mu_c, s^2) - log N(x'; mu_null, s^2) of every class along the paths
    (``seminfo.chain.one_vs_rest``), with the exact null eps (Tweedie): the 'ddpm' or 'ddim' means, shape
    (N, S - start, K)."""
    if kernel not in ("ddpm", "ddim"):
        raise ValueError(f"one-vs-rest tracking needs an eps-parameterised kernel ('ddpm' or 'ddim'), got "
                         f"{kernel!r}")
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], chain.steps - start, mix.K), dtype=np.float64)
    for i in range(chain.steps, start, -1):
        ab_t, ab_s, sigma = chain.alpha_bar[i], chain.alpha_bar[i - 1], chain.sigma[i - 1]
        eps = np.concatenate([exact_eps(mix, x[:, i], ab_t), exact_null_eps(mix, x[:, i], ab_t)[:, None]], axis=1)
        if kernel == "ddpm":
            mean = ddpm_mean(x[:, i, None], eps, ab_t, chain.beta[i - 1])
        else:
            mean = ddim_mean(x[:, i, None], eps, ab_t, ab_s, sigma)
        ll = log_normal(x[:, i - 1, None], mean, sigma**2)
        out[:, i - 1 - start] = ll[:, :-1] - ll[:, -1:]
    return out


def path_expected_entropies(mix: Mixture, chain: ReverseChain, x, kernel: str, labels, log_post, start: int = 0,
                            partitions=(), guidance: Guidance | None = None):
    """Rao–Blackwellised step changes: E[h at grid j | path down to grid j+1] under each path's own kernel.

    ``log_post`` (N, G, K) is the online posterior on the grid times[start:] (``online_log_posterior`` of
    ``path_log_likelihoods``); the expectation over the step's noise is a 1-D Gauss–Hermite integral
    (``seminfo.chain.rao_blackwell``). Returns (N, G-1) and (P, N, G-1) in bits, index j for the step grid j+1 -> j.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    nodes, weights = rao_blackwell.gauss_hermite()
    G = chain.steps - start + 1
    h = np.empty((x.shape[0], G - 1))
    hz = np.empty((len(partitions), x.shape[0], G - 1))
    for i in range(chain.steps, start, -1):
        j = i - 1 - start
        mean, var = _step_kernel(mix, chain, kernel, i, x[:, i], guidance)
        inc = rao_blackwell.mixture_increments(mean, var, labels, nodes)
        h[:, j], hz[:, :, j] = rao_blackwell.expected_entropies(log_post[:, j + 1], inc, weights, partitions)
    return h, hz


def _quadrature(mix: Mixture, alpha_bar, points: int, width: float = 10.0):
    """Nodes x (G, P), per-class densities of x_t | c (G, P, K) and node spacing (G,) on a fine uniform grid."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    mean, var = marginal_moments(mix, ab)
    sd = np.sqrt(var)
    lo = (mean - width * sd).min(-1)
    hi = (mean + width * sd).max(-1)
    u = np.linspace(0.0, 1.0, points)
    x = lo[:, None] + (hi - lo)[:, None] * u
    dens = np.exp(log_normal(x[..., None], mean[:, None, :], var[:, None, :]))
    return x, dens, (hi - lo) / (points - 1)


def exact_entropy(mix: Mixture, alpha_bar, points: int = 4001):
    """Exact per-class entropy H_k(t) = E[h(P(. | x_t)) | c = k] in bits, shape (K, G), by quadrature.

    A trapezoid rule on a uniform grid spanning ±10 standard deviations of every component is used
    rather than Gauss–Hermite: near t = 0 the posterior has sharp steps that polynomial rules miss.
    """
    x, dens, dx = _quadrature(mix, alpha_bar, points)
    h = entropy_bits(exact_log_posterior(mix, x, np.asarray(alpha_bar)[:, None]))  # (G, P)
    integrand = dens * h[..., None]
    return (np.trapezoid(integrand, dx=1.0, axis=1) * dx[:, None]).T


def exact_partition_entropy(mix: Mixture, alpha_bar, side_a, side_b, points: int = 4001):
    """Exact H(z | x_t) in bits, shape (G,), for x_t from the prior-weighted mixture of the classes in A ∪ B."""
    x, dens, dx = _quadrature(mix, alpha_bar, points)
    log_post = exact_log_posterior(mix, x, np.asarray(alpha_bar)[:, None])
    h = entropy_bits(partition_log_posterior(log_post, side_a, side_b))
    members = list(side_a) + list(side_b)
    w = mix.weights[members] / mix.weights[members].sum()
    mixture_density = (dens[..., members] * w).sum(-1)
    return np.trapezoid(mixture_density * h, dx=1.0, axis=1) * dx

