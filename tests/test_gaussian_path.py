"""Gaussian paths (flow matching) as VP chains: the velocity coefficients against the paths' own definitions, the step
against the path's posterior in its own units and against diffusers' FlowMatchEulerDiscreteScheduler (its sigma grid,
its x0 and its Euler step), the velocity source's step against the mixture's DDPM kernel, and the exact velocity of a
Gaussian mixture reproducing the exact H(c | x_t) (issue 20, acceptance "exactness").
"""

import json
import math

import numpy as np
import pytest
import torch

from seminfo.chain.diffusion import (ReverseChain, reverse_chain, step_coefficients, x0_coefficients,
                                    x0_mean_coefficients)
from seminfo.chain.gaussian_path import (PATHS, flow_match_sigmas, path_alpha_bar, path_scale, path_schedule,
                                         uniform_path_times)
from seminfo.chain.posterior import entropy_bits, online_log_posterior
from seminfo.chain.sampler import sample_trajectories
from seminfo.mixtures import gmm

from conftest import REPO
from twins import velocity_twin

# Each path written out independently of seminfo.chain.gaussian_path: (alpha, sigma, d alpha / d tau, d sigma / d tau).
H = math.pi / 2
DEFINITIONS = {
    "rectified_flow": lambda s: (1 - s, s, -1.0, 1.0),  # diffusers: x = (1 - s) x0 + s eps, v = eps - x0
    "linear": lambda t: (t, 1 - t, 1.0, -1.0),  # SiT Linear: x = t x0 + (1 - t) eps, v = x0 - eps
    "gvp": lambda t: (math.sin(H * t), math.cos(H * t), H * math.cos(H * t), -H * math.sin(H * t)),  # SiT GVP
}


@pytest.mark.parametrize("kind", sorted(DEFINITIONS))
def test_velocity_coefficients_recover_x0_from_the_state_and_its_velocity(kind):
    """For x = alpha x0 + sigma eps and v = alpha' x0 + sigma' eps of the path's definition, r x_VP + s v = x0 with
    x_VP = x / sqrt(alpha^2 + sigma^2), at alpha_bar = alpha^2 / (alpha^2 + sigma^2); the path's time of that alpha_bar
    is the time itself."""
    rng = np.random.default_rng(0)
    path = PATHS[kind]
    for tau in np.linspace(0.0, 1.0, 23):
        a, s, da, ds = DEFINITIONS[kind](tau)
        if s < 1e-12:  # data: no velocity step starts there
            continue
        ab = a * a / (a * a + s * s)
        assert path_alpha_bar(path, tau) == pytest.approx(ab, abs=1e-15)
        assert float(path.time_of(ab)) == pytest.approx(tau, abs=1e-12)
        x0, eps = rng.standard_normal(5), rng.standard_normal(5)
        x, v = a * x0 + s * eps, da * x0 + ds * eps
        r, c = x0_coefficients(path.prediction, ab)
        np.testing.assert_allclose(r * x / math.hypot(a, s) + c * v, x0, rtol=0, atol=1e-12)


def _chain(kind, times):
    path = PATHS[kind]
    return path, reverse_chain(path_schedule(path, times), len(times), "small")


@pytest.mark.parametrize("kind", sorted(DEFINITIONS))
def test_small_step_is_the_paths_posterior_in_its_own_units(kind):
    """The 'small' step in VP units, mapped back by x = sqrt(alpha^2 + sigma^2) x_VP, is q(x_s | x_t, x0) of the path
    itself (Kingma et al. 2021, eq. 32-34): alpha_ts = alpha_t / alpha_s, sigma_ts^2 = sigma_t^2 - alpha_ts^2
    sigma_s^2, mean alpha_ts sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_ts^2 / sigma_t^2 x0, variance sigma_ts^2
    sigma_s^2 / sigma_t^2; from pure noise (alpha_t = 0) the mean is alpha_s x0, the variance sigma_s^2."""
    path, chain = _chain(kind, uniform_path_times(PATHS[kind], 9))
    grid = np.concatenate([[1.0 - path.noise_time], uniform_path_times(path, 9)])
    for i in range(chain.steps, 1, -1):
        at, st, _, _ = DEFINITIONS[kind](grid[i])
        as_, ss, _, _ = DEFINITIONS[kind](grid[i - 1])
        m_t, m_s = path_scale(path, grid[i]), path_scale(path, grid[i - 1])
        c_x, c_0 = x0_mean_coefficients(chain, i)  # VP: mean = c_x x_VP + c_0 x0
        ats = at / as_
        var_ts = st**2 - ats**2 * ss**2
        assert m_s * c_x / m_t == pytest.approx(ats * ss**2 / st**2, rel=1e-12, abs=1e-15)
        assert m_s * c_0 == pytest.approx(as_ * var_ts / st**2, rel=1e-12)
        assert (m_s * chain.sigma[i - 1]) ** 2 == pytest.approx(var_ts * ss**2 / st**2, rel=1e-12)


def _flow_scheduler(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


@pytest.mark.parametrize("config, mu", [({"shift": 1.0}, None), ({"shift": 3.0}, None),
                                        ({"shift": 3.0, "shift_terminal": 0.02}, None),
                                        ({"use_dynamic_shifting": True}, 256),
                                        ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, 1024)])
def test_sigma_grid_is_the_schedulers(config, mu):
    """flow_match_sigmas equals FlowMatchEulerDiscreteScheduler.set_timesteps(steps) (its float32 sigmas, without the
    appended 0), with the shift, shift_terminal, and dynamic shifting with the Stable Diffusion 3 pipeline's mu."""
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    sched = _flow_scheduler(**config)
    steps = 11
    kw = {}
    if mu is not None:
        cfg = sched.config
        kw["mu"] = calculate_shift(mu, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                                   cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))
    sched.set_timesteps(steps, **kw)
    ours = flow_match_sigmas(dict(sched.config), steps, mu)
    np.testing.assert_allclose(ours, sched.sigmas[:-1].double().numpy(), rtol=2e-6, atol=1e-7)
    assert float(sched.sigmas[-1]) == 0.0 and ours[0] == 1.0


def test_unsupported_scheduler_options_are_refused():
    with pytest.raises(ValueError, match=r"sched\.json: use_karras_sigmas: is not supported"):
        flow_match_sigmas({"use_karras_sigmas": True}, 5, source="sched.json")


def _sd3_chain(steps, shift=3.0):
    sigmas = flow_match_sigmas({"shift": shift}, steps)[::-1]
    return sigmas, reverse_chain(path_schedule(PATHS["rectified_flow"], sigmas), steps, "small")


def test_deterministic_limit_is_the_schedulers_euler_step():
    """DDIM with eta = 0 on the rectified-flow chain (the x0-form mean, sigma = 0), mapped back to the path's units, is
    FlowMatchEulerDiscreteScheduler.step (x + (s' - s) v) on the same state and network output, at every step of a
    shifted grid, the first one from pure noise included."""
    steps = 7
    sigmas, base = _sd3_chain(steps)
    chain = ReverseChain(base.times, base.alpha_bar, base.beta, base.beta_tilde, np.zeros(steps), "ddim")
    sched = _flow_scheduler(shift=3.0)
    sched.set_timesteps(steps)
    grid = np.concatenate([[0.0], sigmas])
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3)
    for j, tau in enumerate(sched.timesteps):
        i = steps - j
        v = torch.randn_like(x)
        lib = sched.step(v, tau, x).prev_sample.double()
        a, b = step_coefficients(chain, i, "velocity_rectified_flow")
        m_t, m_s = path_scale(PATHS["rectified_flow"], grid[i]), path_scale(PATHS["rectified_flow"], grid[i - 1])
        ours = m_s * (a * x.double() / m_t + b * v.double())
        np.testing.assert_allclose(ours.numpy(), lib.numpy(), rtol=1e-5, atol=1e-5)
        x = torch.randn_like(x)


def test_x0_is_the_schedulers(monkeypatch):
    """The velocity's x̂0 (x0_coefficients, VP state) equals the scheduler's own x0 = sample - sigma v, read from its
    stochastic step with zero noise: prev = (1 - s_next) x0."""
    import diffusers.schedulers.scheduling_flow_match_euler_discrete as fm

    monkeypatch.setattr(fm, "randn_tensor", lambda shape, **kw: torch.zeros(shape))
    steps = 6
    sigmas, chain = _sd3_chain(steps)
    sched = _flow_scheduler(shift=3.0, stochastic_sampling=True)
    sched.set_timesteps(steps)
    grid = np.concatenate([[0.0], sigmas])
    torch.manual_seed(1)
    for j, tau in enumerate(sched.timesteps):
        i = steps - j
        x, v = torch.randn(3, 5), torch.randn(3, 5)
        lib_x0 = sched.step(v, tau, x).prev_sample.double() / (1.0 - float(sched.sigmas[j + 1]))
        r, s = x0_coefficients("velocity_rectified_flow", chain.alpha_bar[i])
        ours = r * x.double() / path_scale(PATHS["rectified_flow"], grid[i]) + s * v.double()
        np.testing.assert_allclose(ours.numpy(), lib_x0.numpy(), rtol=1e-5, atol=1e-5)


# --- the velocity source with the exact velocity of a Gaussian mixture ------------------------------------------

MIX = gmm.Mixture([0.6, 0.3, 0.1], [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2])  # config.yaml's gmm_asymmetric


def _adapter(tmp_path, kind, steps, shape=(1, 1, 1)):
    from seminfo.models import load_adapter

    entry, path = velocity_twin(tmp_path / kind, MIX.means, MIX.stds, kind, shape=shape)
    spec = {"kind": "ddpm", "sampling": {"steps": steps, "trajectories_per_class": 2, "kernel": "ddpm",
                                         "variance": "small"},
            "model": {"source": "python", "prediction": "velocity", "path_kind": kind, "path": path, "entry": entry,
                      "null_label": 3}}
    return load_adapter(spec, None, "cpu")


@pytest.mark.parametrize("kind", ["linear", "gvp"])
def test_velocity_step_is_the_ddpm_step_with_the_exact_eps(tmp_path, kind):
    """Through the python source (entry file, VP scaling, path time fed to the network), the step's mean A x + B v_c
    and sigma equal the mixture's DDPM kernel with its exact class eps (``gmm.ddpm_kernel``, eps form) on the same grid;
    the first step, from pure noise, has mean sqrt(ab_s) m_c (x̂0 = E[x0 | c]) and variance 1 - ab_s."""
    steps = 8
    adapter = _adapter(tmp_path, kind, steps)
    assert adapter.prediction == f"velocity_{kind}" and adapter.has_null
    chain = reverse_chain(adapter.schedule, steps, "small")
    x = torch.linspace(-2.5, 2.5, 7, dtype=torch.float64)
    for i in range(steps, 0, -1):
        a, b = step_coefficients(chain, i, adapter.prediction)
        for c in range(3):
            with torch.no_grad():
                v = adapter(x.float().view(-1, 1, 1, 1), torch.full((7,), i), torch.full((7,), c)).double().view(-1)
            ours = (a * x + b * v).numpy()
            ab_t, ab_s = chain.alpha_bar[i], chain.alpha_bar[i - 1]
            if i == steps:
                assert ab_t == 0.0
                np.testing.assert_allclose(ours, np.sqrt(ab_s) * MIX.means[c], rtol=1e-6, atol=1e-6)
                assert chain.sigma[i - 1] ** 2 == pytest.approx(1 - ab_s, rel=1e-12)
                continue
            mean, var = gmm.ddpm_kernel(MIX, x.numpy(), ab_t, chain.beta[i - 1], chain.sigma[i - 1])
            np.testing.assert_allclose(ours, mean[:, c], rtol=2e-6, atol=2e-6)
    # the null label is the mixture's velocity: its x̂0 is sum_c P(c | x_t) x̂0_c (uniform prior in the twin)
    i = 4
    ab = chain.alpha_bar[i]
    r, s = x0_coefficients(adapter.prediction, ab)
    with torch.no_grad():
        v_null = adapter(x.float().view(-1, 1, 1, 1), torch.full((7,), i), torch.full((7,), 3)).double().view(-1)
    uniform = gmm.Mixture([1 / 3] * 3, MIX.means, MIX.stds)
    eps = gmm.exact_null_eps(uniform, x.numpy(), ab)
    x0_null = (x.numpy() - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    np.testing.assert_allclose((r * x + s * v_null).numpy(), x0_null, rtol=2e-6, atol=2e-6)


def _measured_deficit(kind, steps):
    rows = [json.loads(line) for line in (REPO / "benchmarks" / "path_deficit_paths_2026-12-04.jsonl").open()]
    return next(r for r in rows if r["path"] == kind and r["steps"] == steps)


@pytest.mark.parametrize("kind", ["linear", "gvp"])
def test_exact_velocity_reproduces_the_exact_entropy(tmp_path, kind):
    """The exact velocity of gmm_asymmetric's classes through the velocity path (S = 100 steps uniform in t, 400
    trajectories per class): every class's entropy profile H_k(t) lies within 4 standard errors plus the path-posterior
    deficit of this chain at S = 100 (measured with gmm's own DDPM kernel by ``benchmarks/path_deficit.py --path``,
    20000 trajectories per class) of the exact H(c = k | x_t) at the path's alpha_bar (quadrature), and the generated
    x0 are draws of the classes."""
    steps, per = 100, 400
    adapter = _adapter(tmp_path, kind, steps)
    chain = reverse_chain(adapter.schedule, steps, "small")
    labels = np.repeat(np.arange(3), per)
    out = sample_trajectories(adapter, chain, labels, np.arange(labels.size), 0, eval_batch=4096, progress=False)
    h = entropy_bits(online_log_posterior(np.broadcast_to(MIX.log_prior, (labels.size, 3)), out.increments))
    H = np.stack([h[labels == k].mean(0) for k in range(3)])
    se = np.stack([h[labels == k].std(0, ddof=1) for k in range(3)]) / np.sqrt(per)
    exact = gmm.exact_entropy(MIX, chain.alpha_bar[chain.posterior_start:])
    m = _measured_deficit(kind, steps)
    below = m["max_class_deficit_bits"] + 4 * m["max_class_deficit_se_bits"]
    above = m["max_class_excess_bits"] + 4 * m["max_class_deficit_se_bits"]
    assert np.all(exact - H <= 4 * se + below + 1e-9), (exact - H - 4 * se).max()
    assert np.all(H - exact <= 4 * se + above + 1e-9), (H - exact - 4 * se).max()
    np.testing.assert_allclose(H[:, -1], entropy_bits(MIX.log_prior), rtol=0, atol=1e-12)  # x_T: the prior
    for k in range(3):
        x0 = out.final[labels == k].ravel()
        assert abs(x0.mean() - MIX.means[k]) < 4 * MIX.stds[k] / np.sqrt(per)
        assert abs(x0.std() / MIX.stds[k] - 1) < 0.15


def test_chain_samples_agree_with_the_euler_ode_sampler(tmp_path):
    """The same exact velocity (linear path, S = 100) sampled two ways from the same x_T per trajectory: this chain
    (stochastic) and the Euler ODE sampler of SiT / diffusers (x <- x + v dt, deterministic). Both target p(x0 | c):
    per class the two samples are indistinguishable by a two-sample Kolmogorov–Smirnov test (statistic below its
    0.1 % critical value), while the chain's samples are not the ODE's (they differ path by path)."""
    from scipy.stats import ks_2samp

    from seminfo.chain.noise import normal

    steps, per = 100, 400
    adapter = _adapter(tmp_path, "linear", steps)
    chain = reverse_chain(adapter.schedule, steps, "small")
    labels = np.repeat(np.arange(3), per)
    idx = np.arange(labels.size)
    out = sample_trajectories(adapter, chain, labels, idx, 0, eval_batch=4096, progress=False)
    x = normal(0, torch.as_tensor(idx), 0, 1).view(-1, 1, 1, 1)  # the chain's x_T (pure noise: x = x_VP)
    y = torch.as_tensor(labels)
    for t in np.arange(steps) / steps:
        with torch.no_grad():
            x = x + adapter.net(x.float(), torch.full((labels.size,), t), y).double() / steps
    ode = x.view(-1).numpy()
    chain_x0 = out.final.reshape(-1)
    for k in range(3):
        ks = ks_2samp(chain_x0[labels == k], ode[labels == k]).statistic
        assert ks < 1.95 * np.sqrt(2 / per), (k, ks)
    assert np.abs(chain_x0 - ode).mean() > 0.1


def test_immse_grid_of_a_chain_from_pure_noise_has_finite_log_snr():
    """A path grid ends at alpha_bar = 0 (log SNR -inf): the I-MMSE study's steps stop one short of it."""
    from seminfo.analysis.immse import snr, step_grid

    schedule = path_schedule(PATHS["linear"], uniform_path_times(PATHS["linear"], 20))
    steps = step_grid(schedule.alpha_bar, 6)
    assert steps[0] == 19 and steps[-1] == 1 and np.all(np.isfinite(np.log(snr(schedule.alpha_bar[steps]))))


def test_precision_gate_runs_on_a_velocity_chain():
    """The reduced-precision bound (``seminfo.chain.precision``) on the rectified-flow chain of an SD3-size latent:
    finite and refused for bf16, as for the other sources."""
    from seminfo.chain.precision import precision_gate

    _, chain = _sd3_chain(50)
    gate = precision_gate("bf16", chain, 4, 16 * 128 * 128, "sd3_medium", "velocity_rectified_flow")
    assert np.isfinite(gate["entropy_bias_bound_bits"]) and not gate["allowed"]
