"""Pruning of decided classes: what it reports is the exact posterior conditioned on the kept classes, and its
error stays within the martingale bound of ``seminfo.chain.pruning.pruning_error_bound``."""

import math

import numpy as np
import pytest
from test_ddpm_sample import MIX, ExactMixtureEps

from seminfo.chain import pruning
from seminfo.chain.diffusion import reverse_chain
from seminfo.chain.posterior import entropy_bits, online_log_posterior
from seminfo.chain.pruning import pruning_error_bound
from seminfo.chain.sampler import sample_trajectories
from seminfo.chain.schedules import make_schedule


@pytest.fixture(scope="module")
def runs():
    """Exact and pruned runs of the same 600 mixture trajectories (exact eps), at three thresholds."""
    sched = make_schedule("linear", 1000)
    chain = reverse_chain(sched, 100, "small")
    labels = np.repeat(np.arange(MIX.K), 200)
    net = ExactMixtureEps(MIX, sched)

    def run(threshold):
        stats = {}
        out = sample_trajectories(net, chain, labels, np.arange(labels.size), 0, eval_batch=600,
                                  progress=False, prune_log_threshold=threshold, stats=stats)
        return out, stats

    prior = np.broadcast_to(MIX.log_prior, (labels.size, MIX.K))
    exact, exact_stats = run(None)
    out = {"labels": labels, "exact": exact, "exact_stats": exact_stats,
           "P": np.exp(online_log_posterior(prior, exact.increments))}
    for threshold in (-2.0, -3.0, -5.0):
        pruned, stats = run(threshold)
        out[threshold] = (pruned, stats, np.exp(online_log_posterior(prior, pruned.increments)))
    return out


@pytest.mark.parametrize("threshold", [-2.0, -3.0, -5.0])
def test_pruned_posterior_is_the_exact_one_conditioned_on_the_kept_classes(runs, threshold):
    pruned, stats, Q = runs[threshold]
    P, labels = runs["P"], runs["labels"]
    assert stats["evaluations"] < runs["exact_stats"]["evaluations"]  # it did prune
    np.testing.assert_array_equal(pruned.final, runs["exact"].final)  # the trajectories are untouched
    kept = Q > 0
    conditioned = np.where(kept, P, 0.0)
    np.testing.assert_allclose(Q, conditioned / conditioned.sum(-1, keepdims=True), rtol=0, atol=1e-12)
    # once dropped, always dropped (time runs backwards along axis 1); the own class is never dropped
    assert np.all(kept[:, :-1] <= kept[:, 1:])
    assert np.all(kept[np.arange(labels.size), :, labels])
    # a class is dropped only after its odds against the own class fell below the threshold
    odds = np.log(P) - np.log(P[np.arange(labels.size), :, labels])[..., None]
    first_dropped = ~kept[:, :-1] & kept[:, 1:]
    assert np.all(odds[:, 1:][first_dropped] < threshold)


@pytest.mark.parametrize("threshold", [-2.0, -3.0, -5.0])
def test_pruning_error_stays_within_the_bound(runs, threshold):
    pruned, stats, Q = runs[threshold]
    P, labels = runs["P"], runs["labels"]
    p_bound, h_bound = pruning_error_bound(threshold, MIX.K)
    tv = 0.5 * np.abs(P - Q).sum(-1)  # (N, G)
    np.testing.assert_allclose(tv, np.where(Q > 0, 0.0, P).sum(-1), atol=1e-12)  # = the dropped mass
    assert tv.mean(0).max() <= p_bound
    with np.errstate(divide="ignore"):
        dh = entropy_bits(np.log(Q)) - entropy_bits(np.log(P))
    assert np.abs(dh).max() > 0  # the test has teeth: pruning changed the entropies
    curve_error = np.abs(np.stack([dh[labels == k].mean(0) for k in range(MIX.K)])).max()
    assert curve_error <= h_bound


def test_error_bound_values():
    p, h = pruning_error_bound(-12.0, 10)
    assert p == pytest.approx(9 * math.exp(-12))
    assert h == pytest.approx(-p * math.log2(p) - (1 - p) * math.log2(1 - p) + p * math.log2(9))
    assert h < 0.0011
    assert pruning_error_bound(-1.0, 10) == (1.0, math.log2(10))  # vacuous once (K-1) e^theta > 1/2


def test_threshold_must_be_negative():
    sched = make_schedule("linear", 1000)
    chain = reverse_chain(sched, 10, "small")
    with pytest.raises(ValueError, match="negative"):
        sample_trajectories(ExactMixtureEps(MIX, sched), chain, [0], [0], 0, prune_log_threshold=0.5,
                            progress=False)


def test_bound_process_is_a_supermartingale_and_dominates_the_dropped_mass(runs):
    """The bound of ``seminfo.chain.pruning``: W_t (dropped classes' exact odds, e^theta for those not yet dropped)
    starts at (K - 1) e^theta, its mean never rises along generation, and it bounds the dropped mass eps_t at every step
    of every trajectory; the sum of the dropped odds alone, which the bound must not rest on, rises from 0 (a
    submartingale)."""
    threshold = -3.0
    _, _, Q = runs[threshold]
    P, labels = runs["P"], runs["labels"]
    n = labels.size
    log_odds = np.log(P) - np.log(P[np.arange(n), :, labels])[..., None]  # exact odds against the own class
    dropped = Q == 0
    # generation order: index 0 of the grid is t = 0, so reverse the time axis
    W = pruning.bound_supermartingale(log_odds[:, ::-1], dropped[:, ::-1], labels, threshold)
    eps = np.where(dropped, P, 0.0).sum(-1)[:, ::-1]
    assert np.all(eps <= W + 1e-12)
    np.testing.assert_allclose(W[:, 0], (MIX.K - 1) * math.exp(threshold))
    mean, sem = W.mean(0), W.std(0, ddof=1) / np.sqrt(n)
    assert np.all(mean <= mean[0] + 4 * sem)  # E[W_t] <= W_T, within Monte Carlo error
    assert np.all(np.diff(mean) <= 4 * np.sqrt(sem[1:] ** 2 + sem[:-1] ** 2))
    dropped_odds = (np.exp(log_odds) * dropped).sum(-1)[:, ::-1]
    rise = dropped_odds.mean(0) / (dropped_odds.std(0, ddof=1) / np.sqrt(n) + 1e-300)
    assert dropped_odds[:, 0].max() == 0 and rise.max() > 4
    # Ville's inequality for W: Pr(sup_t eps_t >= a) <= (K - 1) e^theta / a
    for a in (0.1, 0.3):
        assert np.mean(eps.max(1) >= a) <= (MIX.K - 1) * math.exp(threshold) / a
