"""The I-MMSE cross-estimator: against the analytic I(c; x_t) of Gaussian mixtures, with exact denoisers and with
the same denoisers behind the network interface (eps predictions, null label)."""

import numpy as np
import pytest
import torch

from seminfo.analysis import immse
from seminfo.chain.schedules import make_schedule
from seminfo.mixtures import gmm

SCHED = make_schedule("linear", 1000)
MIXTURES = {
    "asymmetric": gmm.Mixture([0.6, 0.3, 0.1], [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2]),
    "hierarchical": gmm.Mixture([0.25] * 4, [-1.6, -1.0, 1.0, 1.6], [0.12] * 4),
}
TIMES = np.arange(0, 1001, 20)


def analytic_information(mix, alpha_bar):
    """I(c; x_t) = H(c) - sum_k pi_k H_k(t) in bits (quadrature)."""
    prior_entropy = -(mix.weights * np.log2(mix.weights)).sum()
    return prior_entropy - mix.weights @ gmm.exact_entropy(mix, alpha_bar)


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_exact_denoisers_reproduce_the_analytic_mutual_information(name):
    mix = MIXTURES[name]
    u = immse.log_snr_grid(SCHED.alpha_bar, 96)
    g, g_se = immse.gmm_integrand(mix, u, 3000, seed=1)
    ab = SCHED.alpha_bar[TIMES]
    info, se = immse.information_at(u, g, g_se, np.log(immse.snr(ab)))
    truth = analytic_information(mix, ab)
    # Monte Carlo error (4 SE) plus the quadrature / interpolation error of the grids (a few 1e-3 bit).
    assert np.all(np.abs(info - truth) <= 4 * se + 3e-3), np.abs(info - truth).max()  # t = 0 included


def test_denoisers_are_the_posterior_means():
    mix = MIXTURES["asymmetric"]
    ab = SCHED.alpha_bar[300]
    x = np.linspace(-3, 3, 7)
    cond, uncond = immse.gmm_denoisers(mix, x, ab)
    mean, var = gmm.marginal_moments(mix, ab)
    direct = mix.means + np.sqrt(ab) * mix.stds**2 / var * (x[:, None] - mean)  # E[x0 | x_t, c], Gaussian
    np.testing.assert_allclose(cond, direct, rtol=1e-10, atol=1e-12)
    post = np.exp(gmm.exact_log_posterior(mix, x, ab))
    np.testing.assert_allclose(uncond, (post * direct).sum(1), rtol=1e-10)


def test_network_interface_with_exact_gmm_eps():
    """A 1-pixel 'network' returning the exact class eps (label K: the unconditional eps) on sampled data."""
    mix = MIXTURES["hierarchical"]
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(mix.K), 20000)
    x0 = mix.means[labels] + mix.stds[labels] * rng.standard_normal(labels.size)
    images = torch.as_tensor(x0, dtype=torch.float32).view(-1, 1, 1, 1)

    def eps_fn(x, t, y):
        ab = SCHED.alpha_bar[int(t[0])]
        xs = x.double().view(-1).numpy()
        eps = gmm.exact_eps(mix, xs, ab)  # (B, K)
        post = np.exp(gmm.exact_log_posterior(mix, xs, ab))
        full = np.concatenate([eps, (post * eps).sum(1, keepdims=True)], axis=1)
        return torch.as_tensor(full[np.arange(xs.size), y.numpy()]).view(x.shape)

    steps = immse.step_grid(SCHED.alpha_bar, 40)
    g, g_se = immse.network_integrand(eps_fn, images, torch.as_tensor(labels), SCHED.alpha_bar, steps, 1500,
                                      mix.K, seed=2, prior=mix.weights)
    u = np.log(immse.snr(SCHED.alpha_bar[steps]))
    times = TIMES[1:]
    info, se = immse.information_at(u, g, g_se, np.log(immse.snr(SCHED.alpha_bar[times])))
    truth = analytic_information(mix, SCHED.alpha_bar[times])
    # float32 network inputs and 40 grid points: a slightly larger systematic allowance than exact denoisers
    assert np.all(np.abs(info - truth) <= 4 * se + 0.02), np.abs(info - truth).max()


def test_integrate_a_known_integrand():
    u = np.linspace(-12, 10, 120)
    g = 1.3 * np.exp(u) / (1 + np.exp(u)) ** 2  # d/du of 1.3 sigmoid(u)
    info, se = immse.integrate(u, g, np.full(u.size, 0.01))
    truth = 1.3 / (1 + np.exp(-u))  # the head g(u_0) ~ I(u_0) for a flat integrand near gamma = 0
    np.testing.assert_allclose(info, truth, atol=2e-4)
    assert np.all(np.diff(se) >= 0) and se[0] == pytest.approx(0.01)
    # trapezoid weights on a uniform grid of spacing h: 1 + h/2 on g_0 (head and first panel), h inside, h/2 last
    h = u[1] - u[0]
    assert se[-1] == pytest.approx(0.01 * np.sqrt((1 + h / 2) ** 2 + (u.size - 2) * h**2 + h**2 / 4), rel=1e-9)


def test_information_outside_the_grid():
    u = np.linspace(-5, 5, 30)
    g = np.exp(-((u - 1) ** 2))
    se = np.full(u.size, 0.001)
    inside, _ = immse.information_at(u, g, se, u, bits=False)
    np.testing.assert_allclose(inside, immse.integrate(u, g, se)[0])
    below, above = immse.information_at(u, g, se, np.array([-7.0, np.inf]), bits=False)[0]
    assert below == pytest.approx(g[0] * np.exp(-2.0))  # linear in gamma below the grid
    assert above == pytest.approx(inside[-1])


def test_step_grid():
    steps = immse.step_grid(SCHED.alpha_bar, 32)
    assert steps[0] == 1000 and steps[-1] == 1 and np.all(np.diff(steps) < 0)
    assert 20 <= steps.size <= 34
    du = np.diff(np.log(immse.snr(SCHED.alpha_bar[steps])))
    assert np.all(du > 0) and du.max() < 3 * np.median(du)
