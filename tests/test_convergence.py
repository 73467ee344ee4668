"""DDIM kernels and the step-convergence study on Gaussian mixtures."""

import numpy as np
import pytest
import xarray as xr

from seminfo import plotting
from seminfo.analysis import convergence as conv
from seminfo.chain import diffusion
from seminfo.chain.diffusion import ddim_chain, ddim_mean, ddim_sigma, ddpm_mean, mean_coefficients, reverse_chain
from seminfo.chain.posterior import entropy_bits, online_log_posterior
from seminfo.chain.schedules import make_schedule
from seminfo.mixtures import gmm
from seminfo.stages.convergence import convergence_stage

SCHED = make_schedule("linear", 1000)
HIER = gmm.Mixture([0.25] * 4, [-1.6, -1.0, 1.0, 1.6], [0.12] * 4)
SYM = gmm.Mixture([0.5, 0.5], [-1.0, 1.0], [0.3, 0.3])


def test_ddim_with_eta_one_is_ddpm_with_the_small_variance():
    """sigma = eta sqrt(beta_tilde), and for eta = 1 the DDIM mean is the DDPM posterior mean (Song et al. 2021)."""
    chain = reverse_chain(SCHED, 40, "small")
    ab_t, ab_s = chain.alpha_bar[1:], chain.alpha_bar[:-1]
    np.testing.assert_allclose(ddim_sigma(ab_t, ab_s, 1.0), np.sqrt(chain.beta_tilde), rtol=1e-12)
    np.testing.assert_allclose(ddim_sigma(ab_t, ab_s, 0.3), 0.3 * np.sqrt(chain.beta_tilde), rtol=1e-12)
    rng = np.random.default_rng(0)
    x, eps = rng.standard_normal((2, 50))
    for i in (1, 7, 40):
        sigma = float(np.sqrt(chain.beta_tilde[i - 1]))
        np.testing.assert_allclose(ddim_mean(x, eps, ab_t[i - 1], ab_s[i - 1], sigma),
                                   ddpm_mean(x, eps, ab_t[i - 1], chain.beta[i - 1]), rtol=1e-10, atol=1e-12)
    assert ddim_chain(SCHED, 40, 0.5).posterior_start == 1
    with pytest.raises(ValueError):
        ddim_chain(SCHED, 40, 0.0)


def test_mean_coefficients_are_the_ddpm_and_ddim_means():
    """a x_t + b eps is ``ddpm_mean`` on 'small' / 'large' chains and ``ddim_mean`` on DDIM chains, at every step."""
    rng = np.random.default_rng(1)
    x, eps = rng.standard_normal((2, 200)) * 3.0
    cosine = make_schedule("cosine", 1000)
    for sched in (SCHED, cosine):
        for chain in (reverse_chain(sched, 50, "small"), reverse_chain(sched, 50, "large"), ddim_chain(sched, 50, 0.3),
                      ddim_chain(sched, 50, 1.0)):
            for i in (1, 2, *rng.integers(3, 50, size=5), 50):
                a, b = mean_coefficients(chain, i)
                assert isinstance(a, float) and isinstance(b, float)
                ab_t, ab_s = chain.alpha_bar[i], chain.alpha_bar[i - 1]
                if chain.variance == "ddim":
                    mean = ddim_mean(x, eps, ab_t, ab_s, chain.sigma[i - 1])
                else:
                    mean = ddpm_mean(x, eps, ab_t, chain.beta[i - 1])
                np.testing.assert_allclose(a * x + b * eps, mean, rtol=1e-10, atol=1e-10)


def posterior_along(chain, kernel, seed=3, per_class=200, mix=SYM):
    labels = np.repeat(np.arange(mix.K), per_class)
    x, log_init = gmm.sample_paths(mix, chain, labels, kernel, "prior", np.random.default_rng(seed))
    start = gmm.posterior_start(chain, kernel)
    return x, online_log_posterior(log_init, gmm.path_log_likelihoods(mix, chain, x, kernel, start))


def test_online_posterior_with_ddim_eta_one_equals_ddpm_small():
    x_ddim, lp_ddim = posterior_along(ddim_chain(SCHED, 100, 1.0), "ddim")
    x_ddpm, lp_ddpm = posterior_along(reverse_chain(SCHED, 100, "small"), "ddpm")
    np.testing.assert_allclose(x_ddim, x_ddpm, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.exp(lp_ddim), np.exp(lp_ddpm), rtol=0, atol=1e-8)


def test_sampler_chain_from_config():
    assert gmm.sampler_chain is diffusion.sampler_chain  # one function for both experiment kinds
    chain = gmm.sampler_chain(SCHED, {"steps": 20, "kernel": "ddim", "eta": 0.5, "variance": "small"})
    assert chain.variance == "ddim"
    np.testing.assert_allclose(chain.sigma, 0.5 * np.sqrt(chain.beta_tilde))
    assert gmm.sampler_chain(SCHED, {"steps": 20, "kernel": "ddpm", "variance": "large"}).variance == "large"
    # a ddpm experiment's section: kernel absent or 'ddpm' is the respaced chain with its variance
    assert diffusion.sampler_chain(SCHED, {"steps": 20, "variance": "large"}).variance == "large"
    ddpm = diffusion.sampler_chain(SCHED, {"steps": 20, "kernel": "ddpm", "variance": "small"})
    np.testing.assert_array_equal(ddpm.sigma, reverse_chain(SCHED, 20, "small").sigma)
    np.testing.assert_allclose(diffusion.sampler_chain(SCHED, {"steps": 20, "kernel": "ddim"}).sigma, 2 * chain.sigma)
    for kernel in ("exact", "ddpm"):
        with pytest.raises(ValueError, match="ddim"):
            gmm.sampler_chain(SCHED, {"steps": 20, "kernel": kernel, "eta": 0.5})
    with pytest.raises(ValueError, match="ddim_chain"):  # kernel ddim on a DDPM chain would silently mean eta = 1
        gmm.sample_paths(SYM, reverse_chain(SCHED, 20, "small"), np.zeros(3, int), "ddim", "prior",
                         np.random.default_rng(0))


def test_error_falls_with_the_number_of_steps():
    """The errors against the exact curves fall with S: the pathwise posterior error for ddpm_large and for ddim with
    eta = 1 (= ddpm_small), and the entropy error where discretisation dominates the Monte Carlo error (ddpm_large)."""
    for sampler, per_class in (("ddim", 100), ("ddpm_large", 200)):
        points = {S: conv.run_point(HIER, SCHED, sampler, S, per_class, [0, S], eta=1.0) for S in (25, 100, 1000)}
        posterior = {S: p.posterior_mean_abs_error for S, p in points.items()}
        assert posterior[25] > posterior[100] > posterior[1000], (sampler, posterior)
        assert posterior[1000] < 0.002
    largest = {S: conv.entropy_errors(p.entropy, gmm.exact_entropy(HIER, p.alpha_bar))[0] for S, p in points.items()}
    assert max(largest[100], largest[1000]) < 0.5 * largest[25], largest  # then Monte Carlo noise dominates


def test_ddim_below_eta_one_measures_the_posterior_given_the_path():
    """For eta < 1 the samples have the right marginals, but the online posterior is P(c | x_t, …, x_T): its entropy
    is below H(c | x_t) at every step count."""
    chain = ddim_chain(SCHED, 1000, 0.5)
    x, lp = posterior_along(chain, "ddim", per_class=400)
    labels = np.repeat(np.arange(SYM.K), 400)
    ab = chain.alpha_bar[1:]
    exact = gmm.exact_entropy(SYM, ab)
    online = np.stack([entropy_bits(lp)[labels == k].mean(0) for k in range(SYM.K)])
    at_x = entropy_bits(gmm.exact_log_posterior(SYM, x[:, 1:], ab))  # H(c | x_t) of the sampled states
    at_x = np.stack([at_x[labels == k].mean(0) for k in range(SYM.K)])
    assert np.abs(at_x - exact).mean() < 0.01  # the marginals of x_t are right
    assert (online - exact).mean() < -0.03  # the path carries more information about c than x_t alone


def test_convergence_stage_and_figure(tmp_path):
    spec = {"kind": "gmm", "mixture": {"weights": [0.5, 0.5], "means": [-1.0, 1.0], "stds": [0.3, 0.3]},
            "schedule": {"name": "linear", "T": 100}, "sampling": {"steps": 50, "init": "prior",
                                                                  "trajectories_per_class": 10}}
    options = {"steps": [10, 25, 100, 250], "samplers": ["ddpm_small", "ddim"], "eta": 0.5,
               "trajectories_per_class": 30, "seed": 0}
    convergence_stage(spec, "tiny", tmp_path / "convergence.nc", options, figure=tmp_path / "c.png", dpi=50)
    assert (tmp_path / "c.png").stat().st_size > 1000
    ds = xr.open_dataset(tmp_path / "convergence.nc").load()
    assert ds["steps"].values.tolist() == [10, 25, 100]  # 250 > T is dropped
    assert ds["sampler"].values.tolist() == ["ddpm_small", "ddim"]
    assert ds["entropy"].dims == ("sampler", "steps", "class", "time")
    assert ds["time"].values.tolist() == list(range(1, 101))  # union of the posterior grids
    s10 = ds["entropy"].sel(sampler="ddim", steps=10)
    assert np.isfinite(s10.sel(time=10)).all() and np.isnan(s10.sel(time=15)).all()
    for name in ("entropy_max_abs_error", "posterior_mean_abs_error", "entropy_exact"):
        assert {"long_name", "units"} <= set(ds[name].attrs)
    fig = plotting.plot_convergence(ds)
    gids = {line.get_gid() for ax in fig.axes for line in ax.lines}
    assert {"ddim:S=10", "exact", "error:ddpm_small"} <= gids
    plotting.save_figure(fig, tmp_path / "convergence.png", dpi=60)
    # the marginal deficit: its largest and its time-averaged value, as docs/own-model/flow-matching.md quotes both
    for sampler in ("ddpm_small", "ddim"):
        for S in (10, 25, 100):
            H = ds["entropy_marginal"].sel(sampler=sampler, steps=S).values
            diff = ds["entropy_marginal_exact"].values - H
            diff = diff[np.isfinite(diff)]
            assert ds["entropy_marginal_deficit_max"].sel(sampler=sampler, steps=S) == pytest.approx(diff.max())
            assert ds["entropy_marginal_deficit_mean"].sel(sampler=sampler, steps=S) == pytest.approx(diff.mean())
    assert float(ds["entropy_marginal_deficit_max"].sel(sampler="ddim", steps=100)) > 2 * float(
        ds["entropy_marginal_deficit_mean"].sel(sampler="ddim", steps=100))
    # one-vs-rest tracking at every S, and the K-class tracker of the same trajectories
    assert ds["ovr_posterior_mean_abs_error"].dims == ("steps",)
    assert np.all(ds["ovr_posterior_mean_abs_error"] > 0) and np.all(ds["ovr_full_posterior_mean_abs_error"] > 0)


def test_paired_difference_uses_the_pairs():
    """Two runs that share their randomness differ by much less than two independent means would: the standard error
    of the paired differences is that of the differences themselves (and 0 for a run against itself)."""
    from seminfo.stages.network_convergence import paired_difference

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    common = rng.normal(size=(400, 5))
    h, h_ref = common + 0.1 + 0.05 * rng.normal(size=(400, 5)), common
    prior = np.array([0.5, 0.5])
    mean, se = paired_difference(h, h_ref, labels, prior)
    d = h - h_ref
    expected_se = np.sqrt(sum(0.25 * d[labels == k].var(0, ddof=1) / 200 for k in (0, 1)))
    np.testing.assert_allclose(se, expected_se, rtol=1e-12)
    np.testing.assert_allclose(mean, 0.1, atol=5 * expected_se.max())
    independent = np.sqrt(2 * sum(0.25 * common[labels == k].var(0, ddof=1) / 200 for k in (0, 1)))
    assert np.all(se < 0.2 * independent)  # the old, independent-draw error was far too wide
    assert np.all(paired_difference(h, h, labels, prior)[1] == 0)
