"""An estimator of I(c; x_t) without trajectories: the I-MMSE identity on forward-noised data.

With the signal-to-noise ratio gamma = alpha_bar / (1 - alpha_bar), x_t / sqrt(1 - alpha_bar) = sqrt(gamma) x_0 +
noise, and (Guo, Shamai & Verdú 2005, applied to I(x_0; x) - I(x_0; x | c); METHOD.md, "An estimator without
trajectories")

    dI(c; x_gamma) / dgamma = 1/2 E || x̂_0(x_gamma, c) - x̂_0(x_gamma) ||^2        (nats)

with x̂_0(x, c) = E[x_0 | x, c] the class-conditional and x̂_0(x) = E[x_0 | x] the unconditional denoiser, the
expectation over the joint of (c, x_0, noise). I(c; x_gamma) is its integral from gamma = 0.

The integral is taken in u = log gamma, where the integrand g(u) = gamma dI/dgamma is smooth: on a log-SNR grid
u_0 < … < u_n, I(u) = g(u_0) + ∫_{u_0}^{u} g du', the first term being ∫_0^{gamma_0} dI (the integrand is flat
near gamma = 0, so it is gamma_0 dI/dgamma(gamma_0) = g(u_0)). g is interpolated with a monotone cubic (PCHIP,
which keeps it non-negative) and integrated exactly; the Monte Carlo standard error follows from trapezoid
weights on the grid. Everything here is float64 numpy; the network's predictions come in through a callable.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

from ..chain.diffusion import predict_x0
from ..chain.posterior import LOG2
from ..mixtures import gmm, highdim

__all__ = [
    "snr",
    "log_snr_grid",
    "step_grid",
    "gmm_denoisers",
    "gmm_integrand",
    "isotropic_denoisers",
    "isotropic_integrand",
    "network_integrand",
    "integrate",
    "information_at",
]


def snr(alpha_bar):
    """gamma = alpha_bar / (1 - alpha_bar) (inf at alpha_bar = 1)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return ab / (1.0 - ab)


def log_snr_grid(alpha_bar, points: int, margin: float = 3.0) -> np.ndarray:
    """``points`` log-SNR values evenly spaced from ``margin`` below the smallest to ``margin`` above the largest
    finite log-SNR of ``alpha_bar`` (for estimators that can evaluate any gamma, e.g. exact denoisers)."""
    with np.errstate(divide="ignore"):
        u = np.log(snr(alpha_bar))
    u = u[np.isfinite(u)]
    return np.linspace(u.min() - margin, u.max() + margin, points)


def step_grid(alpha_bar, points: int) -> np.ndarray:
    """About ``points`` integer steps t in 1 … T, evenly spaced in log-SNR, ascending in gamma (descending in t).

    ``alpha_bar`` is the schedule's array for t = 0 … T; a network can only be evaluated at these steps. A grid that
    ends at pure noise (alpha_bar_T = 0, a flow path's) has no finite log-SNR there: its top step is T - 1.
    """
    T = len(alpha_bar) - 1
    with np.errstate(divide="ignore"):
        u = np.log(snr(np.asarray(alpha_bar)[1:]))  # steps 1 … T, decreasing
    top = T if np.isfinite(u[-1]) else T - 1
    u = u[:top]
    targets = np.linspace(u[-1], u[0], points)
    steps = 1 + np.abs(u[None, :] - targets[:, None]).argmin(1)
    steps = np.unique(np.concatenate([[1, top], steps]))[::-1]
    return steps


def gmm_denoisers(mix: gmm.Mixture, x, alpha_bar):
    """Exact denoisers of a 1-D Gaussian mixture at ``x`` (shape (N,)) and scalar ``alpha_bar``.

    Returns the class-conditional x̂_0(x, c) (N, K), from the exact class eps through ``predict_x0``, and the
    unconditional x̂_0(x) = sum_c P(c | x) x̂_0(x, c) (N,).
    """
    x = np.asarray(x, dtype=np.float64)
    cond = predict_x0(x[:, None], gmm.exact_eps(mix, x, alpha_bar), alpha_bar)
    post = np.exp(gmm.exact_log_posterior(mix, x, alpha_bar))
    return cond, (post * cond).sum(-1)


def _stratified(values_per_class, prior):
    """Mean and standard error of sum_k pi_k E[v | c = k] from equal-size samples per class (K, n)."""
    v = np.asarray(values_per_class, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    n = v.shape[1]
    return float(prior @ v.mean(1)), float(np.sqrt((prior**2 * v.var(1, ddof=1) / n).sum()))


def gmm_integrand(mix: gmm.Mixture, u, per_class: int, seed: int):
    """g(u) = gamma dI/dgamma = gamma/2 E||x̂_0(x, c) - x̂_0(x)||^2 (nats) at log-SNR values ``u``, by Monte Carlo.

    ``per_class`` forward-noised samples of every class at each point (stratified by class, weighted by the
    prior); each point has its own random stream (seed, index), so points are independent.
    Returns mean and standard error, shape (len(u),) each.
    """
    u = np.asarray(u, dtype=np.float64)
    mean, se = np.empty(u.size), np.empty(u.size)
    for j, uj in enumerate(u):
        rng = np.random.default_rng([seed, j])
        gamma = np.exp(uj)
        ab = gamma / (1.0 + gamma)
        x0 = mix.means[:, None] + mix.stds[:, None] * rng.standard_normal((mix.K, per_class))
        x = np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * rng.standard_normal(x0.shape)
        sq = np.empty_like(x)
        for k in range(mix.K):
            cond, uncond = gmm_denoisers(mix, x[k], ab)
            sq[k] = 0.5 * gamma * (cond[:, k] - uncond) ** 2
        mean[j], se[j] = _stratified(sq, mix.weights)
    return mean, se


def isotropic_denoisers(mix: highdim.IsotropicMixture, x, alpha_bar):
    """Exact denoisers of a d-dimensional isotropic mixture at ``x`` (N, d) and scalar ``alpha_bar``: the
    class-conditional x̂_0(x, c) (N, K, d), from the exact class eps through ``predict_x0``, and the unconditional
    x̂_0(x) = sum_c P(c | x) x̂_0(x, c) (N, d)."""
    x = np.asarray(x, dtype=np.float64)
    cond = predict_x0(x[:, None, :], highdim.exact_eps(mix, x, alpha_bar), alpha_bar)
    y, perp = mix.reduce(x)
    post = np.exp(highdim.exact_log_posterior(mix, y, (perp * perp).sum(-1), alpha_bar))
    return cond, np.einsum("nk,nkd->nd", post, cond)


def isotropic_integrand(mix: highdim.IsotropicMixture, u, per_class: int, seed: int, chunk: int = 2_000_000):
    """``gmm_integrand`` for a d-dimensional isotropic mixture: samples of x_t | c ~ N(sqrt(ab) mu_c, v_c I_d) in R^d
    (the forward-noised data, drawn in one step), exact denoisers (``isotropic_denoisers``), |x̂_0(x, c) - x̂_0(x)|^2
    summed over the d coordinates. Samples are processed in chunks of about ``chunk`` numbers; each point has its
    own random stream (seed, index)."""
    u = np.asarray(u, dtype=np.float64)
    mean, se = np.empty(u.size), np.empty(u.size)
    rows = max(1, chunk // (mix.dim * mix.K))
    for j, uj in enumerate(u):
        rng = np.random.default_rng([seed, j])
        gamma = np.exp(uj)
        ab = gamma / (1.0 + gamma)
        sq = np.empty((mix.K, per_class))
        for k in range(mix.K):
            for lo in range(0, per_class, rows):
                n = min(rows, per_class - lo)
                sd = np.sqrt(ab * mix.stds[k] ** 2 + 1.0 - ab)
                x = np.sqrt(ab) * mix.means[k] + sd * rng.standard_normal((n, mix.dim))
                cond, uncond = isotropic_denoisers(mix, x, ab)
                sq[k, lo:lo + n] = 0.5 * gamma * ((cond[:, k] - uncond) ** 2).sum(-1)
        mean[j], se[j] = _stratified(sq, mix.weights)
    return mean, se


def network_integrand(eps_fn, images, labels, alpha_bar, steps, per_class: int, num_classes: int, seed: int,
                      prior=None):
    """g = gamma dI/dgamma at integer ``steps`` from an eps-prediction network, by Monte Carlo over real data.

    eps_fn(x, t, y) -> eps   torch tensors: x (B, C, H, W) float32, t (B,) long steps, y (B,) long labels with
                             ``num_classes`` meaning the null (unconditional) label
    images (N, C, H, W), labels (N,) torch tensors: the data, x_0 drawn uniformly within each class
    alpha_bar                the schedule's alpha_bar for t = 0 … T
    Since x̂_0(x, c) - x̂_0(x) = -(eps(x, c) - eps(x, ∅)) / sqrt(gamma), g = 1/2 E||eps(x, c) - eps(x, ∅)||^2,
    summed over pixels. Stratified over classes (``per_class`` each, weights ``prior``, default uniform); each
    step has its own random stream (seed, index). Returns mean and standard error per step.
    """
    import torch

    labels_np = np.asarray(labels.cpu().numpy() if hasattr(labels, "cpu") else labels)
    members = [np.flatnonzero(labels_np == k) for k in range(num_classes)]
    prior = np.full(num_classes, 1.0 / num_classes) if prior is None else np.asarray(prior, dtype=np.float64)
    mean, se = np.empty(len(steps)), np.empty(len(steps))
    for j, step in enumerate(steps):
        rng = np.random.default_rng([seed, j])
        pick = np.stack([rng.choice(m, per_class) for m in members])  # (K, n) image indices
        y = np.repeat(np.arange(num_classes), per_class)
        x0 = images[torch.as_tensor(pick.ravel())].double()
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        ab = float(alpha_bar[int(step)])
        x = (np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise).float()
        t = torch.full((x.shape[0],), int(step), dtype=torch.long)
        cond = eps_fn(x, t, torch.as_tensor(y)).double()
        null = eps_fn(x, t, torch.full_like(t, num_classes)).double()
        sq = 0.5 * ((cond - null) ** 2).flatten(1).sum(1).cpu().numpy()
        mean[j], se[j] = _stratified(sq.reshape(num_classes, per_class), prior)
    return mean, se


def integrate(u, g, g_se):
    """I(c; x_gamma) in nats at the grid points ``u`` (ascending log-SNR) from the integrand g = dI/du.

    Returns I (PCHIP integral plus the head g(u_0)) and its standard error (trapezoid weights, independent
    points).
    """
    u, g, g_se = (np.asarray(a, dtype=np.float64) for a in (u, g, g_se))
    if np.any(np.diff(u) <= 0):
        raise ValueError("the log-SNR grid must be strictly ascending")
    anti = PchipInterpolator(u, g).antiderivative()
    info = g[0] + anti(u) - anti(u[0])
    # Trapezoid weights of I(u_j) on g_0 … g_j: the head contributes 1 to g_0.
    du = np.diff(u)
    weights = np.zeros((u.size, u.size))
    weights[:, 0] = 1.0
    for j in range(1, u.size):
        weights[j, :j] += 0.5 * du[:j]
        weights[j, 1:j + 1] += 0.5 * du[:j]
    return info, np.sqrt((weights**2 * g_se**2).sum(1))


def information_at(u, g, g_se, u_target, bits: bool = True):
    """I(c; x_gamma) at target log-SNR values (e.g. an experiment's time grid), in bits by default.

    Below the grid the integral grows linearly in gamma (g flat near gamma = 0); above it (e.g. u = inf at t = 0)
    the value at the top of the grid is used. The standard error is interpolated linearly in u.
    """
    u = np.asarray(u, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    info, info_se = integrate(u, g, g_se)
    anti = PchipInterpolator(u, g).antiderivative()
    ut = np.asarray(u_target, dtype=np.float64)
    inside = np.clip(ut, u[0], u[-1])
    out = g[0] + anti(inside) - anti(u[0])
    below = ut < u[0]
    out[below] = g[0] * np.exp(ut[below] - u[0])
    se = np.interp(inside, u, info_se)
    se[below] *= np.exp(ut[below] - u[0])
    scale = 1.0 / LOG2 if bits else 1.0
    return out * scale, se * scale
