"""Speciation time of Biroli, Bonnaire, de Bortoli & Mézard (2024), mapped onto a DDPM schedule.

In Ornstein–Uhlenbeck time s (forward x_s = e^{-s} x_0 + sqrt(1 - e^{-2s}) noise, so alpha_bar = e^{-2s}) the
classes of the data separate around s_S = 1/2 log Lambda, with Lambda the largest eigenvalue of the data
covariance (METHOD.md, "Speciation time"). On a DDPM schedule that is the step whose alpha_bar_t = e^{-2 s_S} =
1 / Lambda. For Lambda <= 1 the prediction lies at or before t = 0: the theory places no speciation inside
the forward process.
"""

from __future__ import annotations

import numpy as np

from . import gmm

__all__ = [
    "mixture_variance",
    "mixture_eigenvalue",
    "top_eigenvalue",
    "speciation_ou_time",
    "ou_time_to_step",
    "speciation_step",
]


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
