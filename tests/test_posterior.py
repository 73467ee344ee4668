"""The online Bayesian classifier against independent truth: brute-force Bayes, invariants, extremes."""

import numpy as np
import pytest
from scipy.special import logsumexp

from seminfo.chain.posterior import (
    entropy_bits,
    log_normal,
    online_log_posterior,
    partition_log_posterior,
    shared_variance_increment,
)


def test_stable_increment_equals_log_density_difference():
    rng = np.random.default_rng(1)
    K, D, sigma = 4, 16, 0.07
    mu = rng.standard_normal((K, D))
    s = 2
    z = rng.standard_normal(D)
    x_next = mu[s] + sigma * z
    direct = log_normal(x_next[None], mu, sigma**2).sum(-1)
    stable = shared_variance_increment(mu[s] - mu, z, sigma)
    # equal up to a class-independent constant
    np.testing.assert_allclose(direct - direct[s], stable - stable[s], rtol=1e-10, atol=1e-8)
    assert stable[s] == 0.0


def test_online_update_equals_batch_bayes_rule():
    """Sequential updates = prior times the product of all likelihoods, normalised once."""
    rng = np.random.default_rng(2)
    N, S, K = 7, 30, 5
    inc = rng.normal(scale=3.0, size=(N, S, K))
    prior = np.log(rng.dirichlet(np.ones(K)))
    lp = online_log_posterior(np.broadcast_to(prior, (N, K)), inc)
    assert lp.shape == (N, S + 1, K)
    np.testing.assert_allclose(lp[:, S], np.broadcast_to(prior - logsumexp(prior), (N, K)))
    for i in range(S + 1):
        unnorm = prior + inc[:, i:].sum(1)
        np.testing.assert_allclose(lp[:, i], unnorm - logsumexp(unnorm, axis=-1, keepdims=True), atol=1e-10)


def test_posterior_survives_extreme_increments():
    N, S, K = 3, 5, 3
    inc = np.zeros((N, S, K))
    inc[:, :, 0] = -1e16  # a class ruled out far beyond the range of exp
    inc[1, :, 2] = 1e15
    lp = online_log_posterior(np.log(np.full((N, K), 1 / 3)), inc)
    assert np.all(np.isfinite(lp[:, :, 1:]) | (lp[:, :, 1:] == -np.inf)) and not np.isnan(lp).any()
    p = np.exp(lp)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    h = entropy_bits(lp)
    assert not np.isnan(h).any() and h.min() >= 0
    np.testing.assert_allclose(h[1, 0], 0.0, atol=1e-12)


def test_entropy_bits_known_values():
    assert entropy_bits(np.log(np.full(8, 1 / 8))) == pytest.approx(3.0)
    assert entropy_bits(np.array([0.0, -np.inf])) == pytest.approx(0.0)
    assert entropy_bits(np.log(np.array([0.5, 0.25, 0.25]))) == pytest.approx(1.5)


def test_partition_posterior_renormalises_over_both_sides():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    lz = partition_log_posterior(np.log(p), [0], [2, 3])
    np.testing.assert_allclose(np.exp(lz), [0.1 / 0.8, 0.7 / 0.8])
    # the decision entropy never exceeds one bit
    rng = np.random.default_rng(3)
    lp = np.log(rng.dirichlet(np.ones(4), size=1000))
    h = entropy_bits(partition_log_posterior(lp, [0, 1], [2, 3]))
    assert h.max() <= 1.0 + 1e-12
