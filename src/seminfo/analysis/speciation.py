"""Speciation time of Biroli, Bonnaire, de Bortoli & Mézard (2024), mapped onto a DDPM schedule, and the study of the
entropy rate against it over the data dimension.

In Ornstein–Uhlenbeck time s (forward x_s = e^{-s} x_0 + sqrt(1 - e^{-2s}) noise, so alpha_bar = e^{-2s}) the
classes of the data separate around s_S = 1/2 log Lambda, with Lambda the largest eigenvalue of the data
covariance (METHOD.md, "Speciation time"). On a DDPM schedule that is the step whose alpha_bar_t = e^{-2 s_S} =
1 / Lambda. For Lambda <= 1 the prediction lies at or before t = 0: the theory places no speciation inside
the forward process.

The study (``speciation_point``): two equally likely classes at +-m with |m|^2 = d and std sigma, so Lambda =
d + sigma^2. The class log-odds of x_s is Gaussian with mean and variance set by kappa = ab d / (ab sigma^2 + 1 - ab),
which for large d is e^{-2 (s - 1/2 log d)}: the entropy curve in s is one curve shifted by 1/2 log d ~ s_S, so the
rate peaks at s_S plus a constant and its width in s stays fixed while s_S grows (METHOD.md, "High-dimensional
mixtures"). The width is the full width at half maximum of dH/ds (``half_maximum_width``) divided by s_S, the
width in rescaled time s / s_S.
"""

from __future__ import annotations

import numpy as np

from ..chain.diffusion import reverse_chain
from ..chain.posterior import entropy_bits, online_log_posterior
from ..chain.schedules import Schedule, schedule_from_alpha_bar
from ..mixtures import gmm, highdim
from .decisions import percentile_interval
from .summary import class_moments, entropy_rate

__all__ = [
    "mixture_variance",
    "mixture_eigenvalue",
    "top_eigenvalue",
    "speciation_ou_time",
    "ou_time_to_step",
    "speciation_step",
    "ou_schedule",
    "pair_mixture",
    "rate_peak",
    "half_maximum_width",
    "speciation_point",
    "study_grid",
]

S_MARGIN = 4.0  # the study's grid ends at s_S of the largest d plus this (H within ~3e-4 bit of one bit there)
EXACT_REFINE = 4  # the exact curves' grid is this many times finer than the chains'
EXACT_POINTS = 1001  # quadrature nodes of the exact curves (peak and width agree with 4001 nodes to 1e-4)
# Monte Carlo and exact entropies are compared in standard errors where the exact one is at least this: below it the
# entropy of a few hundred trajectories is carried by rare ones and their sample standard error understates the error.
Z_FLOOR_BITS = 0.01


def mixture_variance(mix: gmm.Mixture) -> float:
    """Variance of a 1-D Gaussian mixture, the only eigenvalue of its covariance."""
    mean = mix.weights @ mix.means
    return float(mix.weights @ (mix.stds**2 + mix.means**2) - mean**2)


def mixture_eigenvalue(mix) -> float:
    """Largest eigenvalue Lambda of the data covariance of a mixture (``gmm.Mixture`` or
    ``highdim.IsotropicMixture``).

    1-D: its variance. Isotropic in d dimensions: the covariance is sum_c pi_c s_c^2 I_d plus the between-class
    covariance sum_c pi_c mu_c mu_c^T - mu_bar mu_bar^T, which lives in the span of the means, so Lambda is
    sum_c pi_c s_c^2 plus the largest eigenvalue of the latter's r x r form in the span coordinates.
    """
    if isinstance(mix, gmm.Mixture):
        return mixture_variance(mix)
    b = mix.coords - mix.weights @ mix.coords
    between = (mix.weights[:, None] * b).T @ b
    return float(mix.weights @ mix.stds**2 + max(np.linalg.eigvalsh(between)[-1], 0.0))


def top_eigenvalue(x) -> float:
    """Largest eigenvalue of the sample covariance of data ``x`` (N, ...) flattened to (N, D).

    Small D: the D x D covariance in float64. Large D (e.g. CIFAR10, D = 3072): Lanczos on v -> x^T x v without
    forming the covariance, in the data's own precision (float32 images stay float32: no float64 copy of the
    data set).
    """
    x = np.asarray(x)
    x = x.reshape(len(x), -1)
    n, d = x.shape
    if d <= 512:
        x = x.astype(np.float64)
        x = x - x.mean(0)
        return float(np.linalg.eigvalsh(x.T @ x / (n - 1))[-1])
    from scipy.sparse.linalg import LinearOperator, eigsh

    dtype = np.float32 if x.dtype == np.float32 else np.float64
    x = x.astype(dtype, copy=False)
    x = x - x.mean(0, dtype=np.float64).astype(dtype)

    def matvec(v):
        v = np.asarray(v, dtype=dtype).ravel()
        return (x.T @ (x @ v)).astype(np.float64) / (n - 1)

    op = LinearOperator((d, d), matvec=matvec, dtype=np.float64)
    return float(eigsh(op, k=1, which="LA", return_eigenvectors=False)[0])


def speciation_ou_time(eigenvalue: float) -> float:
    """s_S = 1/2 log Lambda (Biroli et al. 2024)."""
    if eigenvalue <= 0:
        raise ValueError(f"the covariance eigenvalue must be positive, got {eigenvalue}")
    return 0.5 * float(np.log(eigenvalue))


def ou_time_to_step(alpha_bar, s: float) -> float:
    """The (fractional) DDPM step t with alpha_bar_t = e^{-2 s}, linear in log alpha_bar between integer steps.

    ``alpha_bar`` is the schedule's array for t = 0 … T (decreasing). Clipped to [0, T]: s <= 0 gives 0.
    """
    log_ab = np.log(np.asarray(alpha_bar, dtype=np.float64))
    target = -2.0 * s
    steps = np.arange(log_ab.size, dtype=np.float64)
    # np.interp needs ascending abscissae: -log alpha_bar increases with t.
    return float(np.interp(-target, -log_ab, steps))


def speciation_step(alpha_bar, eigenvalue: float) -> tuple[float, float]:
    """(s_S, the DDPM step of s_S) for the top covariance eigenvalue ``eigenvalue`` on schedule ``alpha_bar``."""
    s = speciation_ou_time(eigenvalue)
    return s, ou_time_to_step(alpha_bar, s)


# --- the study over d ---------------------------------------------------------------------------------------------


def ou_schedule(s_max: float, steps: int) -> Schedule:
    """A schedule uniform in OU time: s_j = j s_max / steps, alpha_bar_j = e^{-2 s_j} (so every beta is
    1 - e^{-2 s_max / steps})."""
    return schedule_from_alpha_bar("ou", np.exp(-2.0 * np.linspace(0.0, s_max, steps + 1)))


def study_grid(dims, std: float, steps: int) -> tuple[np.ndarray, np.ndarray, Schedule]:
    """The study's chain grid s (steps + 1,), its exact grid (EXACT_REFINE times finer, containing it) and the
    chains' schedule, reaching s_S of the largest d plus ``S_MARGIN``."""
    s_max = speciation_ou_time(max(dims) + std**2) + S_MARGIN
    s_fine = np.linspace(0.0, s_max, EXACT_REFINE * steps + 1)
    return s_fine[::EXACT_REFINE], s_fine, ou_schedule(s_max, steps)


def pair_mixture(d: int, std: float) -> highdim.IsotropicMixture:
    """Two equally likely classes at +-m in R^d, m = sqrt(d) e_1 (|m|^2 = d), isotropic std ``std``."""
    means = np.zeros((2, d))
    means[:, 0] = [np.sqrt(d), -np.sqrt(d)]
    return highdim.IsotropicMixture([0.5, 0.5], means, [std, std])


def rate_peak(s, rate):
    """s at the maximum of ``rate`` (..., G) on the uniform grid ``s``, refined by the parabola through the grid
    maximum and its neighbours."""
    s, rate = np.asarray(s, dtype=np.float64), np.asarray(rate, dtype=np.float64)
    i = np.clip(rate.argmax(-1), 1, s.size - 2)
    y0, y1, y2 = (np.take_along_axis(rate, (i + o)[..., None], -1)[..., 0] for o in (-1, 0, 1))
    curvature = y0 - 2.0 * y1 + y2
    offset = np.where(curvature < 0, 0.5 * (y0 - y2) / np.where(curvature < 0, curvature, -1.0), 0.0)
    return s[i] + np.clip(offset, -0.5, 0.5) * (s[1] - s[0])


def half_maximum_width(s, rate):
    """Full width at half maximum of the peak of ``rate`` (..., G) on the grid ``s``: the distance between the
    nearest points on either side of the maximum where the curve falls to half of it (linear interpolation); NaN
    where it does not fall that far inside the grid."""
    s, rate = np.asarray(s, dtype=np.float64), np.asarray(rate, dtype=np.float64)
    flat = rate.reshape(-1, rate.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    for row, r in enumerate(flat):
        i = int(r.argmax())
        half = 0.5 * r[i]
        left = np.flatnonzero(r[:i] < half)
        right = np.flatnonzero(r[i:] < half)
        if left.size and right.size:
            a, b = left[-1], i + right[0]
            s_left = s[a] + (half - r[a]) / (r[a + 1] - r[a]) * (s[a + 1] - s[a])
            s_right = s[b - 1] + (r[b - 1] - half) / (r[b - 1] - r[b]) * (s[b] - s[b - 1])
            out[row] = s_right - s_left
    return out.reshape(rate.shape[:-1])


def speciation_point(d: int, std: float, s_chain, s_fine, schedule: Schedule, per_class: int, seed: int,
                     smoothing: float, resamples: int) -> dict:
    """The study at one dimension d: exact and Monte Carlo entropy H(c | x_s) and rate dH/ds, their peaks and widths.

    Exact: ``highdim.exact_entropy`` (quadrature along the line of the means) on ``s_fine``, rate by
    ``summary.entropy_rate`` without smoothing. Monte Carlo: ``per_class`` trajectories of each class simulated in
    R^d with the exact reverse kernel from x_T ~ p(x_T | c) (``highdim.sample_statistics``), so the online posterior
    is P(c | x_s); its rate after a Gaussian filter of ``smoothing`` grid points, and bootstrap intervals of the
    peak and width (``resamples`` replicates, trajectories resampled within each class). The exact curve put through
    the same estimator (chain grid, same filter) gives the values the Monte Carlo ones estimate.
    """
    mix = pair_mixture(d, std)
    lam = mixture_eigenvalue(mix)
    s_S = speciation_ou_time(lam)
    H_fine = mix.weights @ highdim.exact_entropy(mix, np.exp(-2.0 * s_fine), points=EXACT_POINTS)[0]
    rate_fine = entropy_rate(s_fine, H_fine)
    H_chain = H_fine[::EXACT_REFINE]
    rate_chain = entropy_rate(s_chain, H_chain, smoothing)

    chain = reverse_chain(schedule, schedule.T, "small")
    labels = np.repeat([0, 1], per_class)
    rng = np.random.default_rng([seed, d])
    stats, log_init = highdim.sample_statistics(mix, chain, labels, "exact", "exact", rng)
    log_post = online_log_posterior(log_init, highdim.path_log_likelihoods(mix, chain, stats, "exact"))
    exact_post = highdim.exact_log_posterior(mix, stats.proj, stats.perp_sq, chain.alpha_bar)
    h = entropy_bits(log_post)
    H_k, var, count = class_moments(h, labels, 2)
    H = mix.weights @ H_k
    se = np.sqrt((mix.weights[:, None] ** 2 * var / count[:, None]).sum(0))
    rate = entropy_rate(s_chain, H, smoothing)
    ok = (H_chain >= Z_FLOOR_BITS) & (se > 0)
    z = np.abs(H - H_chain)[ok] / se[ok]

    boot = np.zeros((resamples, s_chain.size))
    for k in range(2):
        hk = h[labels == k]
        counts = np.random.default_rng([seed, d, 1, k]).multinomial(hk.shape[0], np.full(hk.shape[0],
                                                                                        1.0 / hk.shape[0]),
                                                                    size=resamples)
        boot += mix.weights[k] * (counts @ hk) / hk.shape[0]
    boot_rate = entropy_rate(s_chain, boot, smoothing)
    peak_lo, peak_hi = percentile_interval(rate_peak(s_chain, boot_rate))
    width_lo, width_hi = percentile_interval(half_maximum_width(s_chain, boot_rate))
    return {
        "eigenvalue": lam,
        "speciation_time": s_S,
        "entropy_exact": H_fine,
        "entropy_rate_exact": rate_fine,
        "rate_peak_exact": float(rate_peak(s_fine, rate_fine)),
        "rate_width_exact": float(half_maximum_width(s_fine, rate_fine)),
        "entropy_rate_exact_estimator": rate_chain,
        "rate_peak_exact_estimator": float(rate_peak(s_chain, rate_chain)),
        "rate_width_exact_estimator": float(half_maximum_width(s_chain, rate_chain)),
        "entropy": H,
        "entropy_se": se,
        "entropy_rate": rate,
        "rate_peak": float(rate_peak(s_chain, rate)),
        "rate_peak_ci_low": float(peak_lo),
        "rate_peak_ci_high": float(peak_hi),
        "rate_width": float(half_maximum_width(s_chain, rate)),
        "rate_width_ci_low": float(width_lo),
        "rate_width_ci_high": float(width_hi),
        "entropy_max_abs_z": float(z.max()) if z.size else 0.0,
        "entropy_max_abs_diff": float(np.abs(H - H_chain).max()),
        "posterior_max_abs_error": float(np.abs(np.exp(log_post) - np.exp(exact_post)).max()),
    }
