"""d-dimensional isotropic Gaussian mixtures (seminfo.mixtures.highdim) against direct d-dimensional formulas, the 1-D
module and the exact curves (issue 13, acceptance 3)."""

import numpy as np
import pytest

from seminfo.analysis import speciation
from seminfo.analysis.summary import class_moments
from seminfo.chain.diffusion import ddim_chain, reverse_chain
from seminfo.chain.posterior import (entropy_bits, log_normal, normalize_log, online_log_posterior,
                                    partition_log_posterior)
from seminfo.chain.schedules import make_schedule
from seminfo.mixtures import gmm, highdim

SCHED = make_schedule("linear", 200)
MIX1 = gmm.Mixture([0.55, 0.3, 0.15], [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2])
# three classes in general position in R^6 with unequal stds: no quadrature is exact, the exact curve is Monte Carlo
MIX6 = highdim.IsotropicMixture([0.5, 0.3, 0.2], np.random.default_rng(7).standard_normal((3, 6)) * 0.8,
                                [0.4, 0.6, 0.9])


def as_highdim(mix: gmm.Mixture) -> highdim.IsotropicMixture:
    return highdim.IsotropicMixture(mix.weights, mix.means[:, None], mix.stds)


def direct_log_likelihood(mix, x, mean, var):
    """log N(x; mean, var I_d) summed over the d coordinates in R^d."""
    return log_normal(x, mean, var).sum(-1)


def test_d1_exact_entropy_is_the_1d_quadrature():
    ab = SCHED.alpha_bar[::2]
    H, se, method = highdim.exact_entropy(as_highdim(MIX1), ab)
    assert method == "quadrature" and not se.any()
    np.testing.assert_array_equal(H, gmm.exact_entropy(MIX1, ab))
    part, _, _ = highdim.exact_partition_entropy(as_highdim(MIX1), ab, [0], [1, 2])
    np.testing.assert_array_equal(part, gmm.exact_partition_entropy(MIX1, ab, [0], [1, 2]))


@pytest.mark.parametrize("variance,kernel", [("small", "exact"), ("small", "ddpm"), ("large", "ddpm"), (0.5, "ddim")])
def test_d1_kernels_are_the_1d_kernels(variance, kernel):
    chain = ddim_chain(SCHED, 40, variance) if kernel == "ddim" else reverse_chain(SCHED, 40, variance)
    x = np.array([-1.3, 0.2, 2.0])
    for i in (40, 17, 2):
        A, B, W = highdim.kernel_coefficients(as_highdim(MIX1), chain, kernel, i)
        mean, var = gmm._step_kernel(MIX1, chain, kernel, i, x)
        np.testing.assert_allclose(A * x[:, None] + B * MIX1.means, mean, rtol=0, atol=1e-14)
        np.testing.assert_allclose(W, var, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["exact", "ddpm"])
def test_reduced_statistics_give_the_d_dimensional_likelihoods(kernel):
    """log N(x_s; A x_t + B mu_c, W I_d) and log N(x_t; sqrt(ab) mu_c, v_c I_d) from the span coordinates and the
    perpendicular norms equal the direct sums over the d coordinates."""
    rng = np.random.default_rng(0)
    chain = reverse_chain(SCHED, 50, "small")
    x_t = rng.standard_normal((20, MIX6.dim)) * 1.3
    x_s = 0.9 * x_t + 0.3 * rng.standard_normal(x_t.shape)
    y_t, perp_t = MIX6.reduce(x_t)
    y_s, perp_s = MIX6.reduce(x_s)
    np.testing.assert_allclose(perp_t @ MIX6.basis.T, 0, atol=1e-12)
    A, B, W = coefficients = highdim.kernel_coefficients(MIX6, chain, kernel, 30)
    got = highdim.step_log_likelihoods(MIX6, coefficients, y_t, (perp_t**2).sum(1), y_s, (perp_s**2).sum(1),
                                       (perp_s * perp_t).sum(1))
    mean = A[:, None] * x_t[:, None, :] + B[:, None] * MIX6.means
    want = direct_log_likelihood(MIX6, x_s[:, None, :], mean, W[:, None])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    ab = chain.alpha_bar[30]
    var = ab * MIX6.stds**2 + 1 - ab
    want = direct_log_likelihood(MIX6, x_t[:, None, :], np.sqrt(ab) * MIX6.means, var[:, None])
    np.testing.assert_allclose(highdim.log_likelihood(MIX6, y_t, (perp_t**2).sum(1), ab), want, rtol=1e-12)
    # eps_c from its definition: E[eps | x_t, c] of the forward process, sqrt(1 - ab)(x - sqrt(ab) mu_c) / v_c
    eps = highdim.exact_eps(MIX6, x_t, ab)
    np.testing.assert_allclose(eps, np.sqrt(1 - ab) * (x_t[:, None] - np.sqrt(ab) * MIX6.means) / var[:, None],
                               rtol=1e-12)


def test_d1_sampled_statistics_are_1d_paths():
    """For d = 1 the statistics are the path itself (no perpendicular part) and give the 1-D module's increments."""
    chain = reverse_chain(SCHED, 30, "small")
    labels = np.repeat(np.arange(3), 5)
    stats, _ = highdim.sample_statistics(as_highdim(MIX1), chain, labels, "ddpm", "prior", np.random.default_rng(0))
    assert not stats.perp_sq.any() and not stats.perp_cross.any()
    x = stats.proj[..., 0]
    np.testing.assert_allclose(highdim.path_log_likelihoods(as_highdim(MIX1), chain, stats, "ddpm", 1),
                               gmm.path_log_likelihoods(MIX1, chain, x, "ddpm", 1), rtol=1e-12)


def test_mean_draws_and_span():
    means = highdim.draw_means(3, 50, 4.0, seed=2)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 4.0)
    np.testing.assert_array_equal(means, highdim.draw_means(3, 50, 4.0, seed=2))
    pair = highdim.draw_means(2, 50, 4.0, seed=2, antipodal=True)
    np.testing.assert_array_equal(pair[0], -pair[1])
    mix = highdim.IsotropicMixture([0.5, 0.5], pair, [1.0, 1.0])
    assert mix.span == 1 and mix.projected() is not None
    np.testing.assert_allclose(np.abs(mix.coords[:, 0]), 4.0)
    np.testing.assert_allclose(mix.basis @ mix.basis.T, np.eye(1), atol=1e-15)
    assert MIX6.span == 3 and MIX6.projected() is None
    np.testing.assert_allclose(MIX6.coords @ MIX6.basis, MIX6.means, atol=1e-12)


def test_top_eigenvalue_of_the_data_covariance():
    rng = np.random.default_rng(3)
    c = rng.choice(3, 200_000, p=MIX6.weights)
    x = MIX6.means[c] + MIX6.stds[c, None] * rng.standard_normal((c.size, MIX6.dim))
    assert speciation.mixture_eigenvalue(MIX6) == pytest.approx(speciation.top_eigenvalue(x), rel=0.01)
    pair = highdim.IsotropicMixture([0.5, 0.5], highdim.draw_means(2, 64, 8.0, 0, antipodal=True), [0.5, 0.5])
    assert speciation.mixture_eigenvalue(pair) == pytest.approx(64.25, rel=1e-12)  # |m|^2 + s^2
    assert speciation.mixture_eigenvalue(as_highdim(MIX1)) == pytest.approx(speciation.mixture_variance(MIX1))


def test_monte_carlo_exact_entropy_matches_quadrature():
    """Where quadrature is exact, the Monte Carlo of the exact posterior in reduced coordinates agrees within 4 SE."""
    mix = highdim.IsotropicMixture([0.3, 0.7], highdim.draw_means(2, 40, 3.0, 1) * [[1.0], [-0.5]], [0.6, 0.6])
    ab = SCHED.alpha_bar[::10]
    H, _, _ = highdim.exact_entropy(mix, ab)
    H_mc, se, method = highdim.exact_entropy(mix, ab, samples=4000, method="monte carlo")
    assert method == "monte carlo" and se.max() > 0
    ok = se > 1e-6
    assert np.all(np.abs(H_mc - H)[ok] <= 4 * se[ok]) and np.all(np.abs(H_mc - H)[~ok] < 1e-5)
    part, _, _ = highdim.exact_partition_entropy(mix, ab, [0], [1])
    part_mc, part_se, _ = highdim.exact_partition_entropy(mix, ab, [0], [1], samples=4000, method="monte carlo")
    ok = part_se > 1e-6
    assert np.all(np.abs(part_mc - part)[ok] <= 4 * part_se[ok])


def run_online(mix, chain, per_class, kernel, init, seed):
    labels = np.repeat(np.arange(mix.K), per_class)
    stats, log_init = highdim.sample_statistics(mix, chain, labels, kernel, init, np.random.default_rng(seed))
    start = gmm.posterior_start(chain, kernel)
    log_post = online_log_posterior(log_init, highdim.path_log_likelihoods(mix, chain, stats, kernel, start))
    return labels, stats, log_post, start


# The components overlap at t = 0 (as in test_gmm): with near-disjoint ones the entropy near t = 0 is carried by rare
# trajectories, and the sample standard error of a few hundred underestimates the Monte Carlo error.
@pytest.mark.parametrize("mix", [
    highdim.IsotropicMixture([0.5, 0.5], highdim.draw_means(2, 16, 1.2, 0, antipodal=True), [0.6, 0.6]),
    MIX6,
], ids=["quadrature-d16", "monte-carlo-d6"])
def test_acceptance_3_d_dimensional_profiles_within_4_se_of_exact(mix):
    """Trajectories simulated in R^d (exact kernel, exact start, so the online posterior is P(c | x_t)): their
    per-class entropy lies within 4 SE of the exact curve (with the exact curve's own SE where it is Monte Carlo),
    and the online posterior equals the exact posterior computed from each x_t's reduced coordinates."""
    chain = reverse_chain(SCHED, 40, "small")
    labels, stats, log_post, start = run_online(mix, chain, 400, "exact", "exact", seed=11)
    exact_post = highdim.exact_log_posterior(mix, stats.proj, stats.perp_sq, chain.alpha_bar)
    assert np.abs(np.exp(log_post) - np.exp(exact_post)).max() < 1e-9
    H, var, count = class_moments(entropy_bits(log_post), labels, mix.K)
    H_exact, H_exact_se, _ = highdim.exact_entropy(mix, chain.alpha_bar, samples=8000)
    se = np.sqrt(var / count[:, None] + H_exact_se**2)
    ok = se > 1e-6
    z = np.abs(H - H_exact)[ok] / se[ok]
    assert z.max() < 4.0, z.max()
    assert np.all(np.abs(H - H_exact)[~ok] < 1e-5)


def test_ddpm_kernel_in_d_dims_starts_at_the_prior_and_decides():
    mix = highdim.IsotropicMixture([0.5, 0.5], highdim.draw_means(2, 32, 6.0, 0, antipodal=True), [0.3, 0.3])
    chain = reverse_chain(SCHED, 50, "small")
    labels, _, log_post, start = run_online(mix, chain, 30, "ddpm", "prior", seed=0)
    h = entropy_bits(log_post)
    assert start == 1 and h[:, -1] == pytest.approx(1.0)
    assert np.all(np.exp(log_post[np.arange(labels.size), 0, labels]) > 0.99)
    # the posterior is normalised and each partition is a valid binary posterior
    np.testing.assert_allclose(np.exp(normalize_log(log_post)), np.exp(log_post), atol=1e-12)
    assert entropy_bits(partition_log_posterior(log_post, [0], [1])).max() <= 1 + 1e-12


# --- configuration ----------------------------------------------------------------------------------------------

def highdim_config(**mixture):
    mix = {"dim": 3, "weights": [0.5, 0.5], "means": [[1, 0, 0], [-1, 0, 0]], "stds": [0.5, 0.5]} | mixture
    return {"experiments": {"h": {"kind": "gmm", "mixture": {k: v for k, v in mix.items() if v is not None},
                                  "schedule": {"name": "linear", "T": 100},
                                  "sampling": {"steps": 20, "trajectories_per_class": 10}}}}


def test_config_accepts_given_and_drawn_means(schema):
    from seminfo.config import validate_config
    from seminfo.stages.shared import mixture_from_spec

    spec = validate_config(highdim_config(), schema)["experiments"]["h"]
    np.testing.assert_array_equal(mixture_from_spec(spec).means, [[1, 0, 0], [-1, 0, 0]])
    drawn = highdim_config(means=None, mean_norm=2.0, mean_seed=5, mean_antipodal=True)
    mix = mixture_from_spec(validate_config(drawn, schema)["experiments"]["h"])
    np.testing.assert_allclose(mix.means, highdim.draw_means(2, 3, 2.0, 5, antipodal=True))
    # without dim the mixture is the 1-D one, as before
    one_d = highdim_config(dim=None, means=[-1.0, 1.0])
    assert isinstance(mixture_from_spec(validate_config(one_d, schema)["experiments"]["h"]), gmm.Mixture)


@pytest.mark.parametrize("mixture,extra,key,rule", [
    ({"means": [[1, 0], [-1, 0, 0]]}, {}, "mixture.means[0]", "dim-length"),
    ({"means": [1.0, -1.0]}, {}, "mixture.means[0]", "dim-length"),
    ({"mean_norm": 2.0, "mean_seed": 0}, {}, "mixture", "one-of"),
    ({"means": None}, {}, "mixture", "one-of"),
    ({"means": None, "mean_norm": 2.0}, {}, "mixture.mean_seed", "required"),
    ({"means": None, "mean_norm": 2.0, "mean_seed": 0, "mean_antipodal": True, "weights": [0.4, 0.3, 0.3],
      "stds": [0.5, 0.5, 0.5]}, {}, "mixture.mean_antipodal", "antipodal-pair"),
    ({"mean_seed": 1}, {}, "mixture.mean_seed", "unused-key"),
    ({"dim": None, "means": [[1.0], [-1.0]]}, {}, "mixture.means[0]", "needs-dim"),
    ({"dim": None, "means": [1.0, -1.0], "mean_norm": 2.0}, {}, "mixture.mean_norm", "needs-dim"),
    ({"means": None, "mean_norm": float("nan"), "mean_seed": 0}, {}, "mixture.mean_norm", "finite"),
    ({}, {"convergence": {"steps": [10]}}, "convergence", "one-dimensional"),
    ({"stds": [0.5, 0.6]}, {"speciation": {"dims": [4, 16]}}, "speciation", "equal-stds"),
])
def test_config_rejects_bad_highdim_keys(schema, mixture, extra, key, rule):
    from seminfo.config import ConfigError, validate_config

    cfg = highdim_config(**mixture)
    cfg["experiments"]["h"].update(extra)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, schema)
    assert str(err.value).startswith(f"experiments.h.{key}:") and f"(rule: {rule}" in str(err.value), str(err.value)


def test_speciation_section_does_not_change_the_hash(schema):
    from seminfo.config import experiment_hash, validate_config

    plain = validate_config(highdim_config(), schema)["experiments"]["h"]
    cfg = highdim_config()
    cfg["experiments"]["h"]["speciation"] = {"dims": [4, 16]}
    assert experiment_hash(validate_config(cfg, schema)["experiments"]["h"]) == experiment_hash(plain)


def test_step_gram_is_the_d_dimensional_gram_of_the_mean_differences():
    rng = np.random.default_rng(3)
    chain = reverse_chain(SCHED, 50, "small")
    x_t = rng.standard_normal((12, MIX6.dim)) * 1.3
    own = rng.integers(0, MIX6.K, 12)
    y_t, perp_t = MIX6.reduce(x_t)
    A, B, W = coefficients = highdim.kernel_coefficients(MIX6, chain, "ddpm", 30)
    means = A[:, None] * x_t[:, None, :] + B[:, None] * MIX6.means  # (N, K, d)
    delta = means[np.arange(12), own][:, None, :] - means
    got = highdim.step_gram(MIX6, coefficients, y_t, (perp_t**2).sum(1), own)
    np.testing.assert_allclose(got, np.einsum("nkd,nld->nkl", delta, delta), rtol=1e-10, atol=1e-12)


def test_rao_blackwellised_changes_in_d_dims_differ_from_the_realised_ones_by_noise_only():
    """DDPM kernel (one sigma for all classes) in R^16, three classes: the expected change of every step and the
    realised one differ by the step's martingale noise (mean zero within 4 SE); unequal variances give None."""
    mix = highdim.IsotropicMixture([0.5, 0.3, 0.2], np.random.default_rng(2).standard_normal((3, 16)) * 0.5,
                                   [0.4, 0.6, 0.9])
    chain = reverse_chain(SCHED, 30, "small")
    labels = np.repeat(np.arange(3), 300)
    stats, log_init = highdim.sample_statistics(mix, chain, labels, "ddpm", "prior", np.random.default_rng(0))
    start = chain.posterior_start
    log_post = online_log_posterior(log_init, highdim.path_log_likelihoods(mix, chain, stats, "ddpm", start))
    h = entropy_bits(log_post)
    expected, _ = highdim.path_expected_entropies(mix, chain, stats, "ddpm", labels, log_post, start)
    noise = (h[:, :-1] - h[:, 1:]) - (expected - h[:, 1:])
    z = noise.mean(0) / (noise.std(0, ddof=1) / np.sqrt(labels.size))
    assert np.abs(z).max() < 4
    assert np.all((expected - h[:, 1:]).var(0) < (h[:, :-1] - h[:, 1:]).var(0))
    assert highdim.path_expected_entropies(mix, chain, stats, "exact", labels, log_post, start) is None
