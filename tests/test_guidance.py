"""Classifier-free guidance and one-vs-rest tracking against exact truth on Gaussian mixtures (issue 12, acceptance 1-3)
and the sampler's bookkeeping of both."""

import numpy as np
import pytest
from test_ddpm_sample import ExactMixtureEps

from seminfo.chain.diffusion import reverse_chain
from seminfo.chain.guidance import Guidance
from seminfo.chain.one_vs_rest import clipped_posterior, half_prior_posterior, ovr_log_posterior
from seminfo.chain.posterior import online_log_posterior
from seminfo.chain.sampler import sample_trajectories
from seminfo.chain.schedules import make_schedule
from seminfo.mixtures import gmm

MIX = gmm.Mixture([0.5, 0.3, 0.2], [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2])
SCHED = make_schedule("linear", 1000)


def test_scale_one_is_the_unguided_chain_bitwise():
    """Acceptance 1: with w = 1 the guided paths and posterior equal today's, bitwise, on the same seeds."""
    chain = reverse_chain(SCHED, 50, "small")
    labels = np.repeat(np.arange(MIX.K), 30)
    plain = gmm.sample_paths(MIX, chain, labels, "ddpm", "prior", np.random.default_rng(4))
    guided = gmm.sample_paths(MIX, chain, labels, "ddpm", "prior", np.random.default_rng(4), Guidance(1.0))
    np.testing.assert_array_equal(plain[0], guided[0])
    np.testing.assert_array_equal(gmm.path_log_likelihoods(MIX, chain, plain[0], "ddpm", 1),
                                  gmm.path_log_likelihoods(MIX, chain, guided[0], "ddpm", 1, Guidance(1.0)))
    # the network sampler likewise, with the exact-eps stand-in network
    net = ExactMixtureEps(MIX, SCHED)
    a = sample_trajectories(net, chain, labels, np.arange(labels.size), 2, eval_batch=300, progress=False)
    b = sample_trajectories(net, chain, labels, np.arange(labels.size), 2, eval_batch=300, progress=False,
                            guidance=Guidance(1.0))
    np.testing.assert_array_equal(a.increments, b.increments)
    np.testing.assert_array_equal(a.final, b.final)
    np.testing.assert_array_equal(b.model_increments, b.increments)


def _calibration_z(P, weights):
    """|mean_n P_n(j | path) - pi_j| / SE at every time and class, for labels drawn from the prior."""
    n = P.shape[0]
    return np.abs(P.mean(0) - weights) / (P.std(0, ddof=1) / np.sqrt(n) + 1e-12)


@pytest.fixture(scope="module")
def guided_paths():
    """3000 trajectories with labels drawn from the prior, DDPM steps guided with w = 3 on t in [200, 1000]."""
    chain = reverse_chain(SCHED, 100, "small")
    labels = np.random.default_rng(0).choice(MIX.K, size=3000, p=MIX.weights)
    guidance = Guidance(3.0, (200.0, 1000.0))
    x, log_init = gmm.sample_paths(MIX, chain, labels, "ddpm", "prior", np.random.default_rng(1), guidance)
    return chain, labels, guidance, x, log_init


def test_guided_family_posterior_is_calibrated(guided_paths):
    """Acceptance 1: with w != 1 the exact Bayes posterior over the guided kernels is calibrated: averaged over
    trajectories whose classes were drawn from the prior, P(j | path) is pi_j at every step (tower property)."""
    chain, labels, guidance, x, log_init = guided_paths
    P = np.exp(online_log_posterior(log_init, gmm.path_log_likelihoods(MIX, chain, x, "ddpm", 1, guidance)))
    assert _calibration_z(P, MIX.weights).max() < 4
    assert P[np.arange(labels.size), 0, labels].mean() > 0.9  # the guided classes are decided by the end


@pytest.mark.parametrize("wrong", ["unguided", "squared"])
def test_wrong_guidance_coefficients_are_not_calibrated(guided_paths, wrong):
    """Two deliberately wrong coefficient variants fail the calibration test: the unguided kernels (delta without w:
    the model posterior, a cross-entropy) and the kernels guided with w^2."""
    chain, labels, guidance, x, log_init = guided_paths
    other = None if wrong == "unguided" else Guidance(guidance.scale**2, guidance.interval)
    P = np.exp(online_log_posterior(log_init, gmm.path_log_likelihoods(MIX, chain, x, "ddpm", 1, other)))
    assert _calibration_z(P, MIX.weights).max() > 6


def test_network_sampler_guided_posterior_is_calibrated_and_counts_null_evaluations():
    """The network sampler with the exact-eps stand-in network (null = Tweedie's mixture eps): the guided family's
    posterior is calibrated, and each guided step costs one null evaluation per trajectory."""
    chain = reverse_chain(SCHED, 60, "small")
    n = 1500
    labels = np.random.default_rng(3).choice(MIX.K, size=n, p=MIX.weights)
    stats = {}
    out = sample_trajectories(ExactMixtureEps(MIX, SCHED), chain, labels, np.arange(n), 5, eval_batch=4 * n,
                              progress=False, guidance=Guidance(2.5, (0.0, 500.0)), stats=stats, log_prior=MIX.log_prior)
    log_start = np.broadcast_to(MIX.log_prior, (n, MIX.K))
    P = np.exp(online_log_posterior(log_start, out.increments))
    assert _calibration_z(P, MIX.weights).max() < 4
    Pm = np.exp(online_log_posterior(log_start, out.model_increments))
    assert _calibration_z(Pm, MIX.weights).max() > 6  # the unguided model's belief is not a posterior of the run
    guided_steps = int(((chain.times[1:] >= 0) & (chain.times[1:] <= 500)).sum())
    assert stats["evaluations"] == n * (MIX.K * (chain.steps - 1) + 1) + n * guided_steps


def test_one_vs_rest_costs_two_evaluations_per_step(tiny_unet):
    """Acceptance 3: one-vs-rest tracking evaluates the own class and the null one, whatever K (one on the last,
    noiseless step); with guidance the last step needs the null too."""
    chain = reverse_chain(SCHED, 12, "small")
    labels = np.array([0, 1, 2, 3, 1])
    stats = {}
    out = sample_trajectories(tiny_unet, chain, labels, np.arange(5), 0, eval_batch=64, progress=False,
                              tracking="one_vs_rest", stats=stats)
    assert out.increments is None and out.ovr_increments.shape == (5, 11, 1)
    assert stats["evaluations"] == 5 * (2 * 11 + 1)
    full = {}
    sample_trajectories(tiny_unet, chain, labels, np.arange(5), 0, eval_batch=64, progress=False, stats=full)
    assert full["evaluations"] == 5 * (4 * 11 + 1)
    guided = {}
    sample_trajectories(tiny_unet, chain, labels, np.arange(5), 0, eval_batch=64, progress=False,
                        tracking="one_vs_rest", guidance=Guidance(2.0), stats=guided)
    assert guided["evaluations"] == 5 * 2 * 12


def test_one_vs_rest_increments_equal_those_of_full_tracking_on_the_same_trajectories(decisive_unet):
    """The 2-evaluation tracker and full tracking with null tracking walk the same trajectories (same seeds) and give
    the same one-vs-rest increments for each trajectory's class."""
    chain = reverse_chain(SCHED, 15, "small")
    labels = np.repeat(np.arange(4), 6)
    ovr = sample_trajectories(decisive_unet, chain, labels, np.arange(24), 9, eval_batch=64, progress=False,
                              tracking="one_vs_rest")
    full = sample_trajectories(decisive_unet, chain, labels, np.arange(24), 9, eval_batch=64, progress=False,
                               null_tracking=True)
    np.testing.assert_allclose(ovr.final, full.final, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ovr.ovr_increments[:, :, 0], full.ovr_increments[np.arange(24), :, labels],
                               rtol=1e-6, atol=1e-6)
    assert np.abs(full.ovr_increments).max() > 1e-3


def test_one_vs_rest_error_against_the_exact_posterior_shrinks_with_steps():
    """Acceptance 2: with the exact unconditional eps, the one-vs-rest posterior of each trajectory's class approaches
    the exact P(c | x_t) as the chain gets finer (S = 25 -> 1000)."""
    errors = {}
    for steps in (25, 100, 1000):
        chain = reverse_chain(SCHED, steps, "small")
        labels = np.repeat(np.arange(MIX.K), 200)
        x, _ = gmm.sample_paths(MIX, chain, labels, "ddpm", "prior", np.random.default_rng(steps))
        inc = gmm.path_ovr_increments(MIX, chain, x, "ddpm", 1)[np.arange(labels.size), :, labels]
        P, _, _ = clipped_posterior(ovr_log_posterior(MIX.log_prior[labels], inc))
        exact = np.exp(gmm.exact_log_posterior(MIX, x[:, 1:], chain.alpha_bar[1:]))[np.arange(labels.size), :, labels]
        errors[steps] = float(np.abs(P - exact).mean())
    print("mean |P_ovr - P_exact|:", errors)
    assert errors[1000] < errors[100] < errors[25]
    assert errors[1000] < 0.5 * errors[25]


def test_half_prior_posterior_against_the_exact_mixture():
    """``target_prior: half`` is the posterior of c against the rest under 1:1 prior odds. From the one-vs-rest
    P(c | path), started at the class prior, it tracks the same quantity of the exact P(c | x_t) (an unequal-prior
    mixture, exact null eps, 250 steps); starting the recursion at log 1/2 instead (P / (2 pi_c), clipped at 1) does
    not."""
    mix = MIX
    chain = reverse_chain(SCHED, 250, "small")
    labels = np.repeat(np.arange(mix.K), 300)
    rows = np.arange(labels.size)
    x, _ = gmm.sample_paths(mix, chain, labels, "ddpm", "prior", np.random.default_rng(3))
    inc = gmm.path_ovr_increments(mix, chain, x, "ddpm", 1)[rows, :, labels]
    P, _, _ = clipped_posterior(ovr_log_posterior(mix.log_prior[labels], inc))
    exact = np.exp(gmm.exact_log_posterior(mix, x[:, 1:], chain.alpha_bar[1:]))[rows, :, labels]
    prior = mix.weights[labels][:, None]
    truth = half_prior_posterior(exact, prior)
    error = float(np.abs(half_prior_posterior(P, prior) - truth).mean())
    started_at_half = np.minimum(1.0, P / (2.0 * prior))
    old_error = float(np.abs(started_at_half - truth).mean())
    print("mean error of the half-prior posterior:", error, "started at log 1/2:", old_error)
    assert error < 0.03 and old_error > 3 * error
    np.testing.assert_allclose(half_prior_posterior(prior, prior), 0.5)  # 1/2 where P is the prior
    np.testing.assert_allclose(half_prior_posterior(np.array([0.0, 1.0]), 0.1), [0.0, 1.0])
