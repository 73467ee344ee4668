"""Pruning of decided classes in the sampler, and the bounds on the error it introduces.

Rule (``prune_log_threshold`` = theta < 0; off by default, which is exact). After each Bayes update, a class c whose
log posterior odds against the trajectory's own class k fall below theta, log P(c | x_t) - log P(k | x_t) < theta
(which implies log P(c | x_t) < theta), is dropped: from the next step on it is not evaluated and its increments
are ``PRUNED`` (-1e6: finite, as the pipeline's files must be, and so far below any real increment that exp
underflows and P(c | x) = 0 exactly, as with -inf). The own class is never dropped (it moves the trajectory), so
pruning leaves the trajectories themselves unchanged.

What is reported. The pruned posterior is the exact one conditioned on c not being a dropped class:
Q_t(j) = P_t(j) / (1 - eps_t) for the kept classes, where eps_t = sum of P_t(c) over the dropped c is the mass the
exact posterior would still give them. So ||Q_t - P_t||_TV = eps_t, and no probability moves by more than eps_t.

The bound. The trajectory is drawn from class k's kernel, under which every likelihood ratio
N(x'; mu_c, s^2 I) / N(x'; mu_k, s^2 I) has mean 1 (DDPM and DDIM alike): the exact odds O_t(c:k) = P_t(c) / P_t(k)
are a non-negative martingale along the trajectory. Let t_c be the step at which c is dropped (a stopping time,
O_{t_c}(c:k) < e^theta) and

    W_t = sum_{c != k} [ O_t(c:k) 1{c dropped by t} + e^theta 1{c not yet dropped at t} ].

Before its drop a class contributes the constant e^theta; at the drop its term jumps down to O_{t_c} < e^theta;
afterwards it is a martingale. So W is a non-negative supermartingale with W_T = (K - 1) e^theta (the sum over the
dropped classes alone, which grows whenever a class is dropped, is a submartingale, to which Ville's inequality
does not apply). Since P_t(c) <= O_t(c:k), eps_t <= W_t at every t, and

    E[eps_t] <= E[W_t] <= (K - 1) e^theta,   Pr(sup_t eps_t >= a) <= Pr(sup_t W_t >= a) <= (K - 1) e^theta / a

(the second by Ville's inequality for the supermartingale W).

Entropy: H(P) = h(eps) + eps H(P on the dropped classes) + (1 - eps) H(Q), hence |H(P_t) - H(Q_t)| <= g(eps_t)
with g(e) = h(e) + e log2(K - 1), h the binary entropy in bits. g is concave and increasing on [0, 1/2], so by
Jensen a per-class entropy profile (a mean over the class's trajectories) moves by at most g((K - 1) e^theta) in
expectation, when (K - 1) e^theta <= 1/2. ``pruning_error_bound`` returns both bounds; K = 10, theta = -12:
5.5e-5 in P and 1.0e-3 bit in the entropy profile. ``bound_supermartingale`` computes W_t along recorded
trajectories (for checking the argument).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PRUNED", "pruning_error_bound", "bound_supermartingale"]

PRUNED = -1.0e6  # the increment recorded for a dropped class (log-likelihood "minus infinity", kept finite)


def pruning_error_bound(log_threshold: float, num_classes: int) -> tuple[float, float]:
    """Bounds on the error that pruning at ``log_threshold`` introduces (see the module docstring).

    Returns ``(p_bound, entropy_bound_bits)``: the expected total-variation distance between the pruned and
    the exact posterior at any time on a trajectory, (K - 1) e^theta, and the bound on the error of a
    per-class mean entropy profile, h(p) + p log2(K - 1) (valid for p <= 1/2, else log2 K is returned).
    """
    p = (num_classes - 1) * math.exp(log_threshold)
    if p > 0.5:
        return min(p, 1.0), math.log2(num_classes)
    h = -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p) if p > 0 else 0.0
    return p, h + p * math.log2(max(num_classes - 1, 1))


def bound_supermartingale(log_odds, dropped, labels, log_threshold: float):
    """W_t of the module docstring along trajectories.

    log_odds (N, G, K)  exact log O_t(c:k) against each trajectory's own class k = ``labels`` (N,)
    dropped  (N, G, K)  whether c has been dropped by that time (never the own class)
    Returns W (N, G).
    """
    log_odds, dropped = np.asarray(log_odds, dtype=np.float64), np.asarray(dropped, dtype=bool)
    own = np.arange(log_odds.shape[-1]) == np.asarray(labels)[:, None, None]
    kept = ~dropped & ~own
    return (np.exp(log_odds) * (dropped & ~own)).sum(-1) + math.exp(log_threshold) * kept.sum(-1)
