"""The estimator where the truth is analytic: 1-D Gaussian mixtures (issue acceptance 1-4)."""

import numpy as np
import pytest

from seminfo.chain.diffusion import reverse_chain
from seminfo.chain.posterior import entropy_bits, online_log_posterior, partition_log_posterior
from seminfo.chain.schedules import make_schedule
from seminfo.mixtures import gmm

# Unequal weights and widths. Components overlap at t = 0, so the entropy is not dominated by rare events
# there (with near-disjoint components the per-trajectory entropy is heavy-tailed and its sample standard
# error underestimates the Monte Carlo error of 2000 trajectories).
MIX3 = gmm.Mixture([0.55, 0.3, 0.15], [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2])
SCHED = make_schedule("linear", 1000)


def run(mix, chain, per_class, kernel, init, seed=0):
    labels = np.repeat(np.arange(mix.K), per_class)
    x, log_init = gmm.sample_paths(mix, chain, labels, kernel, init, np.random.default_rng(seed))
    start = gmm.posterior_start(chain, kernel)
    log_post = online_log_posterior(log_init, gmm.path_log_likelihoods(mix, chain, x, kernel, start))
    return labels, x[:, start:], log_post, start


def test_exact_kernel_is_the_marginal_reverse_process():
    """Integrating the exact reverse kernel against p(x_t | c) gives p(x_s | c) (moments)."""
    ab_t, ab_s = SCHED.alpha_bar[600], SCHED.alpha_bar[550]
    mt, vt = gmm.marginal_moments(MIX3, ab_t)
    ms, vs = gmm.marginal_moments(MIX3, ab_s)
    # mean(x_s) = a + b mean(x_t) and var(x_s) = b^2 var(x_t) + kernel variance, per class
    m0, kv = gmm.exact_kernel(MIX3, np.zeros(1), ab_t, ab_s)
    m1, _ = gmm.exact_kernel(MIX3, np.ones(1), ab_t, ab_s)
    b = (m1 - m0)[0]
    np.testing.assert_allclose(m0[0] + b * mt, ms, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b**2 * vt + kv, vs, rtol=1e-12)


def test_exact_eps_is_the_posterior_mean_noise():
    """eps_c(x) = E[eps | x_t = x, c], checked by Monte Carlo regression on the forward process."""
    rng = np.random.default_rng(0)
    ab = SCHED.alpha_bar[300]
    x0 = MIX3.means[1] + MIX3.stds[1] * rng.standard_normal(400_000)
    eps = rng.standard_normal(x0.size)
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    slope, intercept = np.polyfit(xt, eps, 1)  # E[eps | x_t] is linear in x_t within a class
    pred = gmm.exact_eps(MIX3, np.array([0.0, 1.0]), ab)[:, 1]
    assert intercept == pytest.approx(pred[0], abs=5e-3)
    assert slope == pytest.approx(pred[1] - pred[0], abs=5e-3)


def test_acceptance_1_exact_kernel_exact_init_tracks_the_analytic_posterior():
    chain = reverse_chain(SCHED, 1000, "small")
    labels, x, log_post, start = run(MIX3, chain, 300, "exact", "exact")
    exact = gmm.exact_log_posterior(MIX3, x, chain.alpha_bar[None, start:])
    assert np.abs(np.exp(log_post) - np.exp(exact)).max() < 1e-9


def test_acceptance_1_prior_init_gap_is_the_startup_mismatch():
    chain = reverse_chain(SCHED, 1000, "small")
    labels, x, log_post, start = run(MIX3, chain, 300, "exact", "prior")
    exact = gmm.exact_log_posterior(MIX3, x, chain.alpha_bar[None, start:])
    gap = np.abs(np.exp(log_post) - np.exp(exact)).max()
    scale = np.sqrt(chain.alpha_bar[-1])
    print(f"prior-init gap {gap:.3g}, sqrt(alpha_bar_T) = {scale:.3g}")
    assert 0 < gap < 10 * scale * np.abs(MIX3.means).max()
    # a chain started at a tiny alpha_bar_T has a proportionally smaller gap
    sched = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.03)
    chain2 = reverse_chain(sched, 1000, "small")
    _, x2, lp2, s2 = run(MIX3, chain2, 300, "exact", "prior")
    gap2 = np.abs(np.exp(lp2) - np.exp(gmm.exact_log_posterior(MIX3, x2, chain2.alpha_bar[None, s2:]))).max()
    assert gap2 < gap * 0.5


def test_acceptance_2_monte_carlo_entropy_within_4_sem_of_quadrature():
    chain = reverse_chain(SCHED, 1000, "small")
    labels, x, log_post, start = run(MIX3, chain, 2000, "exact", "exact", seed=5)
    h = entropy_bits(log_post)
    H_exact = gmm.exact_entropy(MIX3, chain.alpha_bar[start:])
    for k in range(MIX3.K):
        hk = h[labels == k]
        sem = hk.std(0, ddof=1) / np.sqrt(hk.shape[0])
        z = np.abs(hk.mean(0) - H_exact[k]) / sem
        assert z.max() < 4.0, (k, z.max())


def test_quadrature_entropy_limits():
    """At t = T with a tiny alpha_bar the classes are indistinguishable; at t = 0 of well-separated
    components nearly everything is decided."""
    mix = gmm.Mixture([0.5, 0.5], [-3.0, 3.0], [0.1, 0.1])
    H = gmm.exact_entropy(mix, np.array([1.0, SCHED.alpha_bar[-1]]))
    assert H[:, 0] == pytest.approx([0, 0], abs=1e-10)
    assert H[:, 1] == pytest.approx([1, 1], abs=1e-3)


def test_acceptance_3_ddpm_kernel_error_shrinks_with_steps():
    errors = {}
    for steps in (50, 1000):
        chain = reverse_chain(SCHED, steps, "small")
        labels, x, log_post, start = run(MIX3, chain, 2000, "ddpm", "exact", seed=7)
        h = entropy_bits(log_post)
        H_exact = gmm.exact_entropy(MIX3, chain.alpha_bar[start:])
        H_mc = np.stack([h[labels == k].mean(0) for k in range(MIX3.K)])
        errors[steps] = np.abs(H_mc - H_exact).max()
    print(errors)
    assert errors[1000] < 0.5 * errors[50]


@pytest.mark.parametrize("variance", ["small", "large"])
def test_acceptance_4_prior_entropy_at_T_and_partitions(variance):
    mix = gmm.Mixture([0.25] * 4, [-1.6, -1.0, 1.0, 1.6], [0.12] * 4)
    chain = reverse_chain(SCHED, 200, variance)
    labels, x, log_post, start = run(mix, chain, 300, "ddpm", "prior")
    h = entropy_bits(log_post)
    assert h[:, -1] == pytest.approx(2.0, abs=1e-12)  # the prior entropy, log2 4
    coarse = entropy_bits(partition_log_posterior(log_post, [0, 1], [2, 3]))
    fine = entropy_bits(partition_log_posterior(log_post, [0], [1]))
    assert coarse.max() <= 1 + 1e-12 and fine.max() <= 1 + 1e-12
    assert coarse[:, -1] == pytest.approx(1.0) and fine[:, -1] == pytest.approx(1.0)
    # bracketing: the class entropy is at least each decision's entropy, and the coarse decision is
    # resolved earlier in generation (lower entropy) than the fine one at intermediate times
    assert np.all(h + 1e-12 >= coarse)
    mid = slice(len(chain.times[start:]) // 4, len(chain.times[start:]) // 2)
    assert coarse[:, mid].mean() < fine[labels < 2][:, mid].mean()
    # chain rule: H(c) <= H(z_coarse) + sum of within-group entropies (per trajectory, exact identity ≤ bound)
    fine_r = entropy_bits(partition_log_posterior(log_post, [2], [3]))
    assert np.all(h <= coarse + fine + fine_r + 1e-9)


def test_exact_partition_entropy_matches_monte_carlo():
    mix = gmm.Mixture([0.3, 0.2, 0.25, 0.25], [-1.2, -0.6, 0.6, 1.2], [0.35, 0.3, 0.3, 0.35])
    chain = reverse_chain(SCHED, 200, "small")
    labels, x, log_post, start = run(mix, chain, 2000, "exact", "exact", seed=3)
    coarse = entropy_bits(partition_log_posterior(log_post, [0, 1], [2, 3]))
    exact = gmm.exact_partition_entropy(mix, chain.alpha_bar[start:], [0, 1], [2, 3])
    mc = coarse.mean(0)
    sem = coarse.std(0, ddof=1) / np.sqrt(coarse.shape[0])
    # 1e-9 absolute: near t = 0 both are ~1e-16 and only rounding differs
    assert np.all(np.abs(mc - exact) <= 4 * sem + 1e-9)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_last_step_adds_no_noise_for_every_variance(variance):
    """Ho et al. (2020), Algorithm 2: z = 0 on the step to t = 0, also with sigma^2 = beta; the posterior grid then
    ends at t_1 (no Bayes update from a deterministic step)."""
    mix = gmm.Mixture([0.5, 0.5], [-1.0, 1.0], [0.3, 0.5])
    chain = reverse_chain(make_schedule("linear", 100), 20, variance)
    assert chain.sigma[0] == 0.0 and np.all(chain.sigma[1:] > 0)
    assert chain.posterior_start == gmm.posterior_start(chain, "ddpm") == 1
    labels = np.repeat([0, 1], 50)
    x, _ = gmm.sample_paths(mix, chain, labels, "ddpm", "prior", np.random.default_rng(0))
    mean, _ = gmm.ddpm_kernel(mix, x[:, 1], chain.alpha_bar[1], chain.beta[0], chain.sigma[0])
    np.testing.assert_array_equal(x[:, 0], mean[np.arange(labels.size), labels])
    assert gmm.path_log_likelihoods(mix, chain, x, "ddpm", chain.posterior_start).shape == (100, 19, 2)
