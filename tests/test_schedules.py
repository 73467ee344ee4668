import numpy as np
import pytest

from seminfo.chain.diffusion import ddpm_mean, predict_x0, reverse_chain
from seminfo.chain.schedules import Schedule, cosine_betas, make_schedule, respaced_times


def test_linear_schedule_matches_ho_et_al():
    s = make_schedule("linear", 1000)
    assert s.betas.dtype == np.float64
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    assert s.alpha_bar[0] == 1.0
    np.testing.assert_allclose(s.alpha_bar[1:], np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), rtol=1e-14)
    # the well-known value alpha_bar_T ~ 4e-5 of the DDPM schedule
    assert 3e-5 < s.alpha_bar[-1] < 5e-5


def test_cosine_schedule_follows_its_closed_form():
    T, s_ = 1000, 0.008
    sched = Schedule("cosine", cosine_betas(T, s_))
    f = np.cos((np.arange(T + 1) / T + s_) / (1 + s_) * np.pi / 2) ** 2
    # away from the clipped end, alpha_bar_t = f(t) / f(0)
    np.testing.assert_allclose(sched.alpha_bar[:990], (f / f[0])[:990], rtol=1e-10)
    assert np.all(sched.betas <= 0.999)


def test_schedule_rejects_bad_betas():
    with pytest.raises(ValueError):
        Schedule("bad", np.array([0.1, 0.0]))
    with pytest.raises(ValueError):
        Schedule("bad", np.array([0.1, 1.5]))
    with pytest.raises(ValueError):
        make_schedule("quadratic", 10)


@pytest.mark.parametrize("T,S", [(1000, 1000), (1000, 50), (1000, 2), (50, 7)])
def test_respacing_recomputes_betas_from_alpha_bar(T, S):
    sched = make_schedule("linear", T)
    chain = reverse_chain(sched, S, "large")
    assert chain.times[0] == 0 and chain.times[-1] == T and len(chain.times) == S + 1
    # the respaced chain's alpha_bar is the product of its own (1 - beta)
    np.testing.assert_allclose(np.cumprod(1 - chain.beta), chain.alpha_bar[1:], rtol=1e-12)
    if S == T:
        np.testing.assert_allclose(chain.beta, sched.betas, rtol=1e-12)


def test_respaced_times_rejects_too_many_steps():
    with pytest.raises(ValueError):
        respaced_times(10, 11)


def test_small_variance_is_the_forward_posterior_variance_and_vanishes_at_the_last_step():
    chain = reverse_chain(make_schedule("linear", 1000), 100, "small")
    assert chain.sigma[0] == 0 and np.all(chain.sigma[1:] > 0)
    assert chain.posterior_start == 1
    large = reverse_chain(make_schedule("linear", 1000), 100, "large")
    assert large.posterior_start == 1 and large.sigma[0] == 0  # no noise on the last step (Ho et al., Algorithm 2)
    np.testing.assert_allclose(large.sigma[1:] ** 2, large.beta[1:])
    # beta_tilde <= beta always
    assert np.all(chain.beta_tilde <= chain.beta + 1e-15)


def test_ddpm_mean_equals_the_forward_posterior_mean_given_true_noise():
    """With eps the true noise, the DDPM mean is the mean of q(x_{t-1} | x_t, x_0)."""
    rng = np.random.default_rng(0)
    chain = reverse_chain(make_schedule("linear", 1000), 20, "small")
    x0 = rng.standard_normal(5)
    for i in range(1, chain.steps + 1):
        ab_t, ab_s, beta = chain.alpha_bar[i], chain.alpha_bar[i - 1], chain.beta[i - 1]
        eps = rng.standard_normal(5)
        x_t = np.sqrt(ab_t) * x0 + np.sqrt(1 - ab_t) * eps
        q_mean = (np.sqrt(ab_s) * beta / (1 - ab_t)) * x0 + (np.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t)) * x_t
        np.testing.assert_allclose(ddpm_mean(x_t, eps, ab_t, beta), q_mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(predict_x0(x_t, eps, ab_t), x0, rtol=1e-9, atol=1e-12)


# --- schedules rebuilt from a diffusers scheduler configuration ---------------------------------------------

SCHEDULER_CASES = [
    {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
    {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
    {"num_train_timesteps": 50, "trained_betas": list(np.linspace(1e-3, 0.2, 50) ** 1.5)},
]


@pytest.mark.parametrize("config", SCHEDULER_CASES, ids=lambda c: c.get("beta_schedule", "trained_betas"))
def test_scheduler_config_schedule_equals_diffusers_alphas_cumprod(config):
    """alpha_bar[1:] is the scheduler's own alphas_cumprod (diffusers' tau = t - 1), within float32 resolution."""
    from diffusers import DDPMScheduler

    from seminfo.chain.schedules import schedule_from_scheduler_config

    sched = schedule_from_scheduler_config(dict(config))
    reference = DDPMScheduler(**config).alphas_cumprod.double().numpy()
    assert sched.alpha_bar.dtype == np.float64 and sched.T == config["num_train_timesteps"]
    assert sched.alpha_bar[0] == 1.0
    # float32 cumulative products over T factors: relative error up to ~T * 6e-8
    np.testing.assert_allclose(sched.alpha_bar[1:], reference, rtol=config["num_train_timesteps"] * 6e-8, atol=0)


@pytest.mark.parametrize("config, key", [
    ({"beta_schedule": "sigmoid"}, "beta_schedule"),
    ({"beta_schedule": "linear", "rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ({"num_train_timesteps": 4, "trained_betas": [0.1, 0.2]}, "trained_betas"),
    ({"num_train_timesteps": 2, "trained_betas": [0.1, 1.5]}, "trained_betas"),
])
def test_scheduler_config_that_cannot_be_rebuilt_names_file_and_key(config, key):
    from seminfo.chain.schedules import schedule_from_scheduler_config

    with pytest.raises(ValueError, match=f"^m/scheduler/scheduler_config.json: {key}: "):
        schedule_from_scheduler_config(config, "m/scheduler/scheduler_config.json")


def test_sigma_schedule_is_the_grid_in_vp_units():
    from seminfo.chain.schedules import karras_sigmas, sigma_schedule

    sigmas = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert sigmas[0] == pytest.approx(0.002, rel=1e-12) and sigmas[-1] == pytest.approx(80.0, rel=1e-12)
    # evenly spaced in sigma^(1/rho) (Karras et al. 2022, eq. 5)
    np.testing.assert_allclose(np.diff(sigmas ** (1 / 7)), np.diff(sigmas ** (1 / 7))[0], rtol=1e-10)
    sched = sigma_schedule(sigmas)
    assert sched.T == 18 and sched.alpha_bar[0] == 1.0
    # 1 / alpha_bar - 1 = sigma^2 cancels near alpha_bar = 1: ~1e-16 / sigma_min^2 relative (2.5e-11 here)
    np.testing.assert_allclose(np.sqrt(1 / sched.alpha_bar[1:] - 1), sigmas, rtol=1e-10)
