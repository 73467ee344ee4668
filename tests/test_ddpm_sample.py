"""The DDPM sampler's Bayes increments against analytic truth and its invariance to sharding."""

import numpy as np
import pytest
import torch

from seminfo.chain.diffusion import ddim_chain, reverse_chain
from seminfo.chain.posterior import entropy_bits, online_log_posterior
from seminfo.chain.sampler import sample_trajectories, snapshot_indices
from seminfo.chain.schedules import make_schedule
from seminfo.mixtures import gmm
from seminfo.models import NetworkAdapter

MIX = gmm.Mixture([1 / 3] * 3, [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2])


class ExactMixtureNet(torch.nn.Module):
    """A stand-in network: the exact class-conditional eps of a 1-D Gaussian mixture, as a 1x1x1 image; label K is
    the exact unconditional eps, sum_c P(c | x_t) eps_c (Tweedie's formula for the mixture)."""

    def __init__(self, mix, schedule):
        super().__init__()
        self.mix, self.alpha_bar = mix, schedule.alpha_bar

    def forward(self, x, t, labels):
        ab = self.alpha_bar[t.numpy()]
        xs = x.double().view(-1).numpy()
        eps = gmm.exact_eps(self.mix, xs, ab)
        null = (np.exp(gmm.exact_log_posterior(self.mix, xs, ab)) * eps).sum(-1, keepdims=True)
        eps = np.concatenate([eps, null], axis=1)
        return torch.as_tensor(eps[np.arange(len(labels)), labels.numpy()], dtype=torch.float32).view(-1, 1, 1, 1)


def ExactMixtureEps(mix, schedule):
    """``ExactMixtureNet`` as the sampler sees it: K classes and the null condition."""
    return NetworkAdapter(ExactMixtureNet(mix, schedule), schedule, [str(k) for k in range(mix.K)], (1, 1, 1),
                          has_null=True)


def run_mixture(steps, per_class, seed=0):
    sched = make_schedule("linear", 1000)
    chain = reverse_chain(sched, steps, "small")
    labels = np.repeat(np.arange(MIX.K), per_class)
    out = sample_trajectories(ExactMixtureEps(MIX, sched), chain, labels, np.arange(labels.size), seed,
                              eval_batch=3 * 200, progress=False)
    log_post = online_log_posterior(np.broadcast_to(MIX.log_prior, (labels.size, MIX.K)), out.increments)
    h = entropy_bits(log_post)
    H = np.stack([h[labels == k].mean(0) for k in range(MIX.K)])
    exact = gmm.exact_entropy(MIX, chain.alpha_bar[chain.posterior_start:])
    return out, H, exact, labels


def test_sampler_increments_reproduce_the_exact_mixture_entropy():
    """With the exact eps of a mixture, the DDPM sampler's online posterior entropy approaches the analytic
    curve, and the error falls as the chain gets finer."""
    errors = {}
    for steps in (25, 200):
        out, H, exact, labels = run_mixture(steps, 400)
        assert out.increments.shape == (labels.size, steps - 1, MIX.K)  # small variance: no update at t_1 -> 0
        # relative to the sampled class: its own increment is exactly zero (delta = 0)
        assert np.all(out.increments[np.arange(labels.size), :, labels] == 0)
        errors[steps] = np.abs(H - exact).max()
    print(errors)
    # at 200 steps what is left is mostly Monte Carlo noise of 400 trajectories per class (SEM ~0.02 bit)
    assert errors[200] < 0.08
    assert errors[200] < 0.5 * errors[25]


def test_final_samples_follow_their_class():
    out, H, exact, labels = run_mixture(200, 300, seed=1)
    x0 = out.final.reshape(-1)
    for k in range(MIX.K):
        xk = x0[labels == k]
        assert xk.mean() == pytest.approx(MIX.means[k], abs=0.1)
        assert xk.std() == pytest.approx(MIX.stds[k], rel=0.2)


def test_ddim_with_eta_one_is_ancestral_sampling_with_the_small_variance():
    """The DDIM mean with sigma = sqrt(beta_tilde) is the DDPM mean: same increments and samples on the same seeds."""
    sched = make_schedule("linear", 1000)
    labels = np.repeat(np.arange(MIX.K), 50)
    net, idx = ExactMixtureEps(MIX, sched), np.arange(labels.size)
    ddpm, ddim = (sample_trajectories(net, chain, labels, idx, 4, eval_batch=450, progress=False)
                  for chain in (reverse_chain(sched, 60, "small"), ddim_chain(sched, 60, 1.0)))
    np.testing.assert_allclose(ddim.increments, ddpm.increments, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ddim.final, ddpm.final, rtol=0, atol=1e-9)
    assert np.abs(ddpm.increments).max() > 1e-3  # the steps do carry information


def test_ddim_path_posterior_is_calibrated_below_the_exact_entropy_and_matches_the_mixture_module():
    """DDIM with eta = 0.5 through the network sampler (exact eps, labels drawn from a non-uniform prior).

    Its online posterior is P(c | x_t, …, x_T) under the sampler's own joint law, hence (i) calibrated: averaged
    over trajectories, P(c | path_t) is the prior at every t; (ii) its mean entropy is at most H(c | x_t), the exact
    curve of the forward process; (iii) its per-class entropy curves are those of the mixture module's own DDIM path
    posterior (``gmm.sample_paths`` + ``gmm.path_log_likelihoods``, independent draws). Tolerances are 4 Monte
    Carlo standard errors; (ii) adds I(c; x_T), exact, which starting from x_T ~ N(0, 1) with P = prior ignores.
    """
    mix = gmm.Mixture([0.5, 0.3, 0.2], [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2])
    sched = make_schedule("linear", 1000)
    chain = ddim_chain(sched, 200, 0.5)
    n = 3000
    labels = np.random.default_rng(0).choice(mix.K, size=n, p=mix.weights)
    out = sample_trajectories(ExactMixtureEps(mix, sched), chain, labels, np.arange(n), 2, eval_batch=3 * n,
                              progress=False)
    log_post = online_log_posterior(np.broadcast_to(mix.log_prior, (n, mix.K)), out.increments)
    P, h = np.exp(log_post), entropy_bits(log_post)  # (n, G, K), (n, G) on the grid times[1:]

    sem_p = P.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(P.mean(0) - mix.weights) <= 4 * sem_p + 1e-9)  # (i)

    exact = mix.weights @ gmm.exact_entropy(mix, chain.alpha_bar[1:])  # H(c | x_t), bit
    info_at_T = entropy_bits(mix.log_prior) - exact[-1]
    sem_h = h.std(0, ddof=1) / np.sqrt(n)
    assert np.all(h.mean(0) <= exact + 4 * sem_h + info_at_T)  # (ii)
    assert (exact - h.mean(0)).mean() > 0.03  # and strictly below: the path says more than x_t

    labels_gmm = np.random.default_rng(1).choice(mix.K, size=n, p=mix.weights)
    x, log_init = gmm.sample_paths(mix, chain, labels_gmm, "ddim", "prior", np.random.default_rng(2))
    h_gmm = entropy_bits(online_log_posterior(log_init, gmm.path_log_likelihoods(mix, chain, x, "ddim", 1)))
    for k in range(mix.K):
        a, b = h[labels == k], h_gmm[labels_gmm == k]
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        assert np.all(np.abs(a.mean(0) - b.mean(0)) <= 4 * se + 1e-9), k  # (iii)


def test_shards_and_batches_do_not_change_results(tiny_unet):
    chain = reverse_chain(make_schedule("linear", 100), 12, "small")
    labels = np.repeat(np.arange(4), 6)
    idx = np.arange(labels.size)
    examples = idx % 6 == 0
    whole = sample_trajectories(tiny_unet, chain, labels, idx, 7, eval_batch=32, examples=examples,
                                n_snapshots=3, progress=False)
    # the same chunk shapes (8 trajectories x 4 classes per call): bitwise identical
    parts = [sample_trajectories(tiny_unet, chain, labels[s], idx[s], 7, eval_batch=32, examples=examples[s],
                                 n_snapshots=3, progress=False) for s in (slice(0, 8), slice(8, 16), slice(16, 24))]
    np.testing.assert_array_equal(np.concatenate([p.increments for p in parts]), whole.increments)
    np.testing.assert_array_equal(np.concatenate([p.final for p in parts]), whole.final)
    np.testing.assert_array_equal(np.concatenate([p.snapshots for p in parts]), whole.snapshots)
    # different shard boundaries and chunk sizes: posteriors agree to 1e-6
    split = [sample_trajectories(tiny_unet, chain, labels[s], idx[s], 7, eval_batch=20, examples=examples[s],
                                 n_snapshots=3, progress=False) for s in (slice(0, 5), slice(5, 24))]
    prior = np.full((labels.size, 4), np.log(0.25))
    p_whole = np.exp(online_log_posterior(prior, whole.increments))
    p_split = np.exp(online_log_posterior(prior, np.concatenate([p.increments for p in split])))
    assert np.abs(p_whole - p_split).max() < 1e-6


def test_snapshots_run_from_noise_to_data():
    chain = reverse_chain(make_schedule("linear", 1000), 100, "small")
    idx = snapshot_indices(chain, 8)
    assert idx[0] == chain.steps and idx[-1] == 1 and np.all(np.diff(idx) < 0) and idx.size == 8


def class_entropy(out, labels, K):
    log_post = online_log_posterior(np.full((labels.size, K), -np.log(K)), out.increments)
    h = entropy_bits(log_post)
    return np.stack([h[labels == k].mean(0) for k in range(K)])


def test_pruned_runs_do_not_depend_on_shards(decisive_unet):
    chain = reverse_chain(make_schedule("linear", 1000), 30, "small")
    labels = np.repeat(np.arange(4), 10)
    idx = np.arange(labels.size) + 1000
    opts = dict(prune_log_threshold=-6.0, progress=False)
    stats = {}
    whole = sample_trajectories(decisive_unet, chain, labels, idx, 3, eval_batch=64, stats=stats, **opts)
    assert stats["evaluations"] < 0.95 * stats["exact_evaluations"]  # pruning is active
    split = [sample_trajectories(decisive_unet, chain, labels[s], idx[s], 3, eval_batch=24, **opts)
             for s in (slice(0, 7), slice(7, 40))]
    prior = np.full((labels.size, 4), np.log(0.25))
    p_whole = np.exp(online_log_posterior(prior, whole.increments))
    p_split = np.exp(online_log_posterior(prior, np.concatenate([p.increments for p in split])))
    assert np.abs(p_whole - p_split).max() < 1e-6
    np.testing.assert_allclose(np.concatenate([p.final for p in split]), whole.final, atol=1e-5)


def test_bf16_entropy_curves_stay_within_the_gate(decisive_unet):
    """bf16 autocast moves eps by ~1 %; the per-class entropy curves must stay within 0.01 bit of fp32."""
    chain = reverse_chain(make_schedule("linear", 1000), 30, "small")
    labels = np.repeat(np.arange(4), 40)
    idx = np.arange(labels.size)
    fp32 = sample_trajectories(decisive_unet, chain, labels, idx, 0, eval_batch=800, progress=False)
    bf16 = sample_trajectories(decisive_unet, chain, labels, idx, 0, eval_batch=800, progress=False,
                               precision="bf16")
    H32, H16 = class_entropy(fp32, labels, 4), class_entropy(bf16, labels, 4)
    assert H32[:, 0].max() < 1.5  # the classes do separate (from 2 bits at t = T)
    assert np.abs(H16 - H32).max() < 0.01
    assert bf16.increments.dtype == np.float64


def test_stats_count_network_evaluations(tiny_unet):
    chain = reverse_chain(make_schedule("linear", 100), 6, "small")
    stats = {}
    sample_trajectories(tiny_unet, chain, [0, 1, 2], [0, 1, 2], 0, eval_batch=5, progress=False, stats=stats)
    # 5 Bayes steps x 3 trajectories x 4 classes, and the last (sigma = 0) step needs only the own class
    assert stats["evaluations"] == stats["exact_evaluations"] == 5 * 3 * 4 + 3
    assert 0 < stats["model_seconds"] <= stats["seconds"]
    with pytest.raises(ValueError, match="precision"):
        sample_trajectories(tiny_unet, chain, [0], [0], 0, precision="fp16", progress=False)
