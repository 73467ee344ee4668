"""One class against the rest: P(c | x_t) tracked with two network evaluations per step, whatever the number of classes.

Along a trajectory, the exact update of one class's posterior needs the unconditional reverse kernel, a mixture:

    log P(c | x_t') = log P(c | x_t) + log N(x_t'; mu_c, sigma^2 I) - log sum_j P(j | x_t) N(x_t'; mu_j, sigma^2 I).

With a null (unconditional) condition the mixture is replaced by one Gaussian at the null model's mean mu_null
(METHOD.md, "One class against the rest"; the 2026 follow-up, arXiv 2602.09651):

    log P(c | x_t') ~ log P(c | x_t) + log N(x_t'; mu_c, sigma^2 I) - log N(x_t'; mu_null, sigma^2 I),

which needs eps_c and eps_null only. If the null model is exact, eps_null = sum_j P(j | x_t) eps_j (Tweedie), so mu_null
is the mixture's mean mu-bar and the replacement is exact only as the step -> 0.

Leading error term. Write mu_j = mu-bar + d_j (sum_j P_j d_j = 0), x_t' - mu-bar = sigma z + d_own and M the
covariance of the d_j under P(. | x_t), divided by sigma^2 (D x D, rank <= K - 1). The exact log normaliser minus the
Gaussian one is log E_j[exp(<x_t' - mu-bar, d_j> / sigma^2 - |d_j|^2 / (2 sigma^2))] = (1/2)(z^T M z - tr M)
+ O(|d|^3 / sigma^3) when the cumulants are expanded, so per step

    error = -(1/2)(z^T M z - tr M) - z^T M d_own / sigma - (1/2) d_own^T M d_own / sigma^2 + O(|d / sigma|^3).

With a DDPM step d_j = b (eps_j - eps-bar), b ~ beta / sqrt(1 - alpha_bar) and sigma^2 ~ beta, so M = O(beta): the first
term has mean zero and variance O(beta^2) per step, the second mean zero, the third is a bias O(beta^2). Summed over the
S steps of a chain (sum of beta ~ const), the error of log P is a martingale of variance O(1 / S) plus a bias O(1 / S):
it vanishes as S grows, at rate S^(-1/2) (measured on the mixtures by the convergence study). A learned null model
adds its own error, eps_null - sum_j P_j eps_j, to mu_null.

The recursion is not normalised over the classes, so log P may exceed 0 (P > 1) by the accumulated error; the
posterior reported is min(P, 1), and how often and by how much it was clipped is recorded.

The start. The null model is trained under the class prior pi of its data, so the summed increments approximate
log P(c | path) - log pi_c: started at log pi_c they give the posterior. The "half-prior" posterior of the 2026
follow-up is another quantity: the posterior of c against not-c when the prior odds are 1:1,

    P_1/2 = odds / (1 + odds),   odds = P / (1 - P) * (1 - pi_c) / pi_c,

(``half_prior_posterior``), which is 1/2 at t = T whatever K, and is computed from P, not by starting the recursion at
log 1/2 (that would give P / (2 pi_c), K/2 times P for a uniform prior, clipped at 1).
"""

from __future__ import annotations

import numpy as np

from .posterior import binary_entropy_bits

__all__ = ["ovr_log_posterior", "binary_entropy_bits", "clipped_posterior", "half_prior_posterior"]
# binary_entropy_bits: re-exported


def ovr_log_posterior(log_start, increments):
    """log P(c | x_t) on the ascending grid from the one-vs-rest increments of each step.

    log_start   (N,)      log P(c | x_T): the class prior log pi_c
    increments  (N, S')   log N(x_t'; mu_c) - log N(x_t'; mu_null) of the steps, index j for grid j+1 -> j
    returns     (N, S'+1) unclipped (may exceed 0; see the module docstring)
    """
    inc = np.asarray(increments, dtype=np.float64)
    out = np.empty((inc.shape[0], inc.shape[1] + 1))
    out[:, -1] = np.asarray(log_start, dtype=np.float64)
    out[:, :-1] = out[:, -1:] + np.cumsum(inc[:, ::-1], axis=1)[:, ::-1]
    return out


def clipped_posterior(log_p):
    """min(P, 1) and the share of entries whose log P exceeded 0, with the largest excess (nat)."""
    log_p = np.asarray(log_p, dtype=np.float64)
    excess = np.maximum(log_p, 0.0)
    return np.exp(np.minimum(log_p, 0.0)), float((excess > 0).mean()), float(excess.max())


def half_prior_posterior(p, prior):
    """P(c | path) under 1:1 prior odds of c against the rest, from the posterior ``p`` under the class prior
    ``prior`` = pi_c (broadcast against p): odds P / (1 - P) * (1 - pi_c) / pi_c, as a probability (1 where P = 1)."""
    p = np.asarray(p, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    num = p * (1.0 - prior)
    return num / (num + (1.0 - p) * prior)
