"""The chain a pretrained model's pipeline samples (issue 18): its scheduler's time grid and its x̂_0 clipping or
dynamic thresholding, against diffusers' own ``set_timesteps`` and ``DDPMScheduler.step`` / ``DDIMScheduler.step``;
the Bayes increments with clipping (and guidance) against the float64 log-densities of the per-condition means; and
the own model's chain, which none of this changes.

Every model is a tiny random-weight twin written by ``save_pretrained`` and loaded through the adapters' real path,
with hub access off.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from seminfo.chain.clipping import Clipping  # noqa: E402
from seminfo.chain.diffusion import (reverse_chain, step_coefficients, x0_coefficients,  # noqa: E402
                               clipping_gain)
from seminfo.chain.guidance import Guidance  # noqa: E402
from seminfo.chain.noise import normal  # noqa: E402
from seminfo.chain.sampler import model_chain, sample_trajectories  # noqa: E402
from seminfo.chain.schedules import chain_times, make_schedule  # noqa: E402
from seminfo.config import ConfigError, validate_config  # noqa: E402
from seminfo.models import check_sources, load_adapter  # noqa: E402

from test_adapters import noise, scheduler_mean_std, scheduler_of, spec_of  # noqa: E402,F401 (noise: a fixture)
from twins import diffusers_twin  # noqa: E402

SPACINGS = [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)]
CLIPPINGS = {"clip": {"clip_sample": True, "clip_sample_range": 0.5},
             "threshold": {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}}


def ddpm_scheduler(T, spacing, offset):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)


# --- the grid ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing, offset", SPACINGS)
def test_grid_is_set_timesteps_of_the_scheduler(spacing, offset):
    """chain_times = [0] + (set_timesteps(S)'s timesteps + 1) ascending, for every spacing; where diffusers' formula
    gives no valid grid (trailing: S + 1 timesteps, the last -1; leading with an offset at S = T) it is refused."""
    checked = refused = 0
    for T, S in ((1000, 1), (1000, 7), (1000, 61), (1000, 100), (1000, 1000), (100, 6), (100, 29), (100, 100)):
        sched = ddpm_scheduler(T, spacing, offset)
        sched.set_timesteps(S)
        tau = sched.timesteps.numpy()
        if tau.size != S or tau.min() < 0 or tau.max() >= T:
            with pytest.raises(ValueError, match=f"timestep_spacing '{spacing}'.*choose another number of steps"):
                chain_times(T, S, spacing, offset)
            refused += 1
            continue
        times = chain_times(T, S, spacing, offset)
        assert times[0] == 0 and np.all(np.diff(times) > 0) and times.size == S + 1
        np.testing.assert_array_equal(times[1:][::-1] - 1, tau)
        checked += 1
    assert checked >= 6 and (refused > 0) == (spacing == "trailing" or offset > 0)


def test_leading_grid_starts_below_T_and_even_grid_is_unchanged():
    """Leading spacing at T = 1000, S = 100 starts at t = 991 (tau = 990); the own model's even grid is
    round(linspace(0, T, S + 1)), starting at T, whatever else the chain is built with."""
    sched = make_schedule("linear", 1000)
    leading = reverse_chain(sched, 100, "small", "leading")
    assert leading.start_time == 991 and leading.times[1] == 1
    np.testing.assert_array_equal(leading.grid_attrs()["scheduler_timesteps"], np.arange(990, -1, -10))
    even = reverse_chain(sched, 100, "small")
    np.testing.assert_array_equal(even.times, np.round(np.linspace(0, 1000, 101)).astype(np.int64))
    assert even.grid_attrs() == {"timestep_spacing": "even", "steps_offset": 0, "chain_start_time": 1000}


def test_own_model_chain_times_and_coefficients_follow_the_formulas_bitwise(decisive_unet):
    """The own UNet (no scheduler folder) samples on the even grid without clipping: its chain's times and every
    coefficient are bitwise those of the formulas (Ho et al. 2020, eq. 11 and the respaced beta), as before the
    scheduler grids existed, for the default digits sampling section."""
    assert decisive_unet.timestep_spacing == "even" and decisive_unet.clipping is None
    sampling = {"steps": 100, "variance": "small", "kernel": "ddpm"}
    chain = model_chain(decisive_unet, sampling)
    times = np.round(np.linspace(0, 1000, 101)).astype(np.int64)
    ab = decisive_unet.schedule.alpha_bar[times]
    beta = 1.0 - ab[1:] / ab[:-1]
    sigma = np.sqrt(beta * (1.0 - ab[:-1]) / (1.0 - ab[1:]))
    sigma[0] = 0.0
    np.testing.assert_array_equal(chain.times, times)
    np.testing.assert_array_equal(chain.alpha_bar, ab)
    np.testing.assert_array_equal(chain.beta, beta)
    np.testing.assert_array_equal(chain.sigma, sigma)
    for i in (100, 50, 1):
        a = 1.0 / np.sqrt(1.0 - beta[i - 1])
        assert step_coefficients(chain, i) == (a, -(beta[i - 1] / np.sqrt(1.0 - ab[i])) * a)


def test_an_inactive_clip_changes_nothing_bitwise(decisive_unet, monkeypatch):
    """The sampler's clipping term is an exact float64 correction: a clip that never binds leaves every increment,
    Gram matrix and sample bitwise as without clipping (so the affine path, the own model's, is untouched)."""
    chain = reverse_chain(decisive_unet.schedule, 8, "small")
    labels = np.repeat(np.arange(4), 2)
    plain = sample_trajectories(decisive_unet, chain, labels, np.arange(8), 3, progress=False)
    monkeypatch.setattr(decisive_unet, "clipping", Clipping("clip", clip_range=1e9), raising=False)
    clipped = sample_trajectories(decisive_unet, chain, labels, np.arange(8), 3, progress=False)
    for name in ("increments", "gram", "final", "snapshots"):
        np.testing.assert_array_equal(getattr(clipped, name), getattr(plain, name), err_msg=name)


@pytest.fixture(scope="module")
def spaced(tmp_path_factory):
    """Twin folders whose schedulers have each spacing (and leading with steps_offset 1)."""
    d = tmp_path_factory.mktemp("spaced")
    return {(s, o): diffusers_twin(d / f"{s}_{o}", "epsilon", class_scale=3.0,
                                   scheduler_kw={"timestep_spacing": s, "steps_offset": o}) for s, o in SPACINGS}


@pytest.mark.parametrize("spacing, offset", SPACINGS)
def test_adapter_samples_on_its_schedulers_grid_and_each_step_is_ddpm_schedulers(spaced, noise, spacing, offset):
    """A diffusers folder's chain is, by default, its scheduler's set_timesteps(S) grid (read from
    scheduler_config.json), and on it every step's mean and standard deviation equal DDPMScheduler.step's (the same
    inputs), and a whole trajectory equals DDPMScheduler's loop from the same x_T with the same noise."""
    folder = spaced[spacing, offset]
    adapter = load_adapter(spec_of("diffusers", folder), None, "cpu")
    assert (adapter.timestep_spacing, adapter.steps_offset) == (spacing, offset)
    S = 6
    chain = model_chain(adapter, {"steps": S})
    sched = scheduler_of(folder)
    sched.set_timesteps(S)
    np.testing.assert_array_equal(chain.times[1:][::-1] - 1, sched.timesteps.numpy())
    assert chain.start_time == int(sched.timesteps[0]) + 1
    torch.manual_seed(1)
    x = torch.randn(3, *adapter.state_shape)
    cond = torch.tensor([0, 1, 2])
    for i in range(S, 0, -1):
        tau = adapter.network_time(chain.times[i])
        assert tau == int(sched.timesteps[S - i])
        with torch.no_grad():
            out = adapter(x, torch.full((3,), tau), cond)
        a, b = step_coefficients(chain, i, "epsilon")
        mean, std = scheduler_mean_std(sched, out, tau, x, noise)
        ours = a * x.double() + b * out.double()
        assert float((ours - mean).abs().max()) <= 2e-6 * float(ours.abs().max()), i
        # std is a float32 difference of two steps, good to float32 rounding of the mean; on the last step
        # DDPMScheduler draws noise whenever tau > 0, with variance beta_tilde = 0 floored at 1e-20
        np.testing.assert_allclose(std.numpy(), chain.sigma[i - 1], rtol=2e-6,
                                   atol=2e-7 * float(mean.abs().max()) + (1e-9 if i == 1 else 0))
        x = torch.randn_like(x)
    assert_loop_equals_sampler(adapter, chain, sched, noise)


def assert_loop_equals_sampler(adapter, chain, sched, noise, labels=(0, 1, 2), seed=5, guidance=None):
    """The sampler's final states equal the scheduler's own loop (its step on the network's, or guided, output) from
    the same x_T with the same per-step noise (``seminfo.chain.noise``)."""
    labels, idx = np.asarray(labels), np.arange(len(labels))
    out = sample_trajectories(adapter, chain, labels, idx, seed, progress=False, guidance=guidance)
    D = int(np.prod(adapter.state_shape))
    x = normal(seed, torch.as_tensor(idx), 0, D).float().view(len(idx), *adapter.state_shape)
    for i in range(chain.steps, 0, -1):
        tau = adapter.network_time(chain.times[i])
        t = torch.full((len(idx),), tau)
        with torch.no_grad():
            net_out = adapter(x, t, torch.as_tensor(labels))
            if guidance is not None:
                null = adapter(x, t, torch.full((len(idx),), adapter.null_index))
                net_out = null + guidance.scale * (net_out - null)
        noise.value = (normal(seed, torch.as_tensor(idx), i, D).float().view_as(x) if chain.sigma[i - 1] > 0
                       else torch.zeros_like(x))
        x = sched.step(net_out, tau, x).prev_sample
    np.testing.assert_allclose(out.final, x.numpy(), rtol=1e-4, atol=1e-4)
    return out


# --- clipping and thresholding ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clipped(tmp_path_factory):
    d = tmp_path_factory.mktemp("clipped")
    return {name: diffusers_twin(d / name, "v_prediction" if name == "clip" else "epsilon", null_label=3,
                                 class_scale=3.0, scheduler_kw=option) for name, option in CLIPPINGS.items()}


def _x0_process(sched):
    """DDPMScheduler.step's x̂_0 processing (its step 3), on float64 tensors."""
    if sched.config.thresholding:
        return sched._threshold_sample
    return lambda x0: x0.clamp(-sched.config.clip_sample_range, sched.config.clip_sample_range)


@pytest.mark.parametrize("which", list(CLIPPINGS))
def test_clipped_step_means_and_chain_equal_ddpm_scheduler_step(clipped, noise, which):
    """With clip_sample (v prediction, range 0.5) or dynamic thresholding (eps, ratio 0.9, ceiling 1.5) in the
    scheduler's config, every step mean A x + B out + G (p(x̂_0) - x̂_0) equals DDPMScheduler.step's on the same inputs
    (where the processing binds: checked), and whole trajectories equal its loop on the same noise."""
    folder = clipped[which]
    adapter = load_adapter(spec_of("diffusers", folder, null_label=3), None, "cpu")
    assert adapter.clipping is not None and adapter.clipping.describe() == CLIPPINGS[which]
    chain = model_chain(adapter, {"steps": 6})
    sched = scheduler_of(folder)
    sched.set_timesteps(6)
    process = _x0_process(sched)
    torch.manual_seed(2)
    x = torch.randn(3, *adapter.state_shape)
    binds = 0
    for i in range(chain.steps, 0, -1):
        tau = adapter.network_time(chain.times[i])
        with torch.no_grad():
            out = adapter(x, torch.full((3,), tau), torch.tensor([0, 1, 2]))
        a, b = step_coefficients(chain, i, adapter.prediction)
        r, s = x0_coefficients(adapter.prediction, chain.alpha_bar[i])
        x0 = r * x.double() + s * out.double()
        ours = a * x.double() + b * out.double() + clipping_gain(chain, i) * (adapter.clipping(x0) - x0)
        mean, _ = scheduler_mean_std(sched, out, tau, x, noise)
        assert float((ours - mean).abs().max()) <= 2e-6 * float(ours.abs().max()) + 1e-6, i
        binds += int(float((process(x0) - x0).abs().max()) > 1e-3)
        x = torch.randn_like(x)
    assert binds >= 2  # the processing changed x̂_0 on several steps: the test sees it
    assert_loop_equals_sampler(adapter, chain, sched, noise)
    assert_loop_equals_sampler(adapter, chain, sched, noise, guidance=Guidance(2.5))


def _replayed_increments(adapter, chain, sched, labels, seed, w=1.0):
    """The chain replayed in float64 from diffusers' formulas (DDPMScheduler.step, steps 2-5, with its own x̂_0
    processing): each condition's mean mu_c at every Bayes step, the increments log N(x'; mu_c, sigma^2) -
    log N(x'; mu_own, sigma^2) of the step taken (guided family with w != 1, and the unguided model's means against
    the guided step), the Gram matrices of mu_own - mu_c and the final states."""
    process = _x0_process(sched)
    N, K = len(labels), adapter.num_conditions
    idx = torch.arange(N)
    D = int(np.prod(adapter.state_shape))
    x = normal(seed, idx, 0, D)
    ab = chain.alpha_bar
    incs, model_incs, grams = [], [], []
    for i in range(chain.steps, 0, -1):
        ab_t, ab_s = float(ab[i]), float(ab[i - 1])
        beta = 1.0 - ab_t / ab_s

        def mean(out):
            if adapter.prediction == "epsilon":
                x0 = (x - (1 - ab_t) ** 0.5 * out) / ab_t ** 0.5
            else:  # v_prediction
                x0 = ab_t ** 0.5 * x - (1 - ab_t) ** 0.5 * out
            x0 = process(x0.view(N, *adapter.state_shape)).view(N, D)
            return ab_s ** 0.5 * beta / (1 - ab_t) * x0 + (1 - beta) ** 0.5 * (1 - ab_s) / (1 - ab_t) * x

        t = torch.full((N,), adapter.network_time(chain.times[i]))
        with torch.no_grad():
            outs = [adapter(x.float().view(N, *adapter.state_shape), t, torch.full((N,), c)).double().view(N, D)
                    for c in range(K + 1)]
        guided = [outs[K] + w * (o - outs[K]) for o in outs[:K]]
        means = torch.stack([mean(o) for o in guided], 1)  # (N, K, D)
        own = means[torch.arange(N), torch.as_tensor(labels)]
        var = (1 - ab_s) / (1 - ab_t) * beta
        if i > 1:
            x_next = own + var ** 0.5 * normal(seed, idx, i, D)
            log_n = lambda m: -((x_next[:, None] - m) ** 2).sum(-1) / (2 * var)  # noqa: E731
            incs.append(log_n(means) - log_n(own[:, None]))
            delta = own[:, None] - means
            grams.append(torch.einsum("nkd,nld->nkl", delta, delta))
            plain = torch.stack([mean(o) for o in outs[:K]], 1)
            model_incs.append(log_n(plain) - log_n(own[:, None]))
        else:
            x_next = own
        x = x_next
    stack = lambda items: torch.stack(items[::-1], 1).numpy()  # noqa: E731 (ascending time, as the sampler's)
    return stack(incs), stack(model_incs), stack(grams), x.numpy()


@pytest.mark.parametrize("which, w", [("clip", 1.0), ("threshold", 1.0), ("clip", 2.5)])
def test_clipped_increments_are_float64_log_density_differences_of_the_means(clipped, which, w):
    """The sampler's Bayes increments with clipping or thresholding (and with guidance: over the guided family, which
    clips the guided prediction's x̂_0, and the unguided model's on the guided path) equal log N(x'; mu_c, sigma^2 I) -
    log N(x'; mu_own, sigma^2 I) from each condition's pipeline mean computed in float64, and the Gram matrices are
    those of the mean differences."""
    folder = clipped[which]
    adapter = load_adapter(spec_of("diffusers", folder, null_label=3), None, "cpu")
    chain = model_chain(adapter, {"steps": 6})
    sched = scheduler_of(folder)
    labels, seed = np.array([0, 1, 2, 1]), 7
    guidance = Guidance(w) if w != 1.0 else None
    out = sample_trajectories(adapter, chain, labels, np.arange(labels.size), seed, progress=False, guidance=guidance)
    incs, model_incs, grams, final = _replayed_increments(adapter, chain, sched, labels, seed, w)
    np.testing.assert_allclose(out.final.reshape(final.shape), final, rtol=1e-6, atol=1e-6)
    scale = np.abs(incs).max()
    assert scale > 1.0  # the conditions are told apart: the comparison is not between zeros
    np.testing.assert_allclose(out.increments, incs, rtol=0, atol=1e-8 * scale)
    if guidance is not None:
        np.testing.assert_allclose(out.model_increments, model_incs, rtol=0, atol=1e-8 * np.abs(model_incs).max())
    np.testing.assert_allclose(out.gram, grams, rtol=0, atol=1e-5 * np.abs(grams).max())


def test_ddim_kernel_with_clipping_equals_ddim_scheduler(clipped):
    """kernel ddim (eta 0.5) on a clipping folder: the sampler's trajectory equals DDIMScheduler.step's loop (leading
    grid, set_alpha_to_one, the network's eps kept unclipped as DDIMPipeline does) on the same noise."""
    from diffusers import DDIMScheduler

    folder = clipped["clip"]
    adapter = load_adapter(spec_of("diffusers", folder, null_label=3), None, "cpu")
    chain = model_chain(adapter, {"steps": 5, "kernel": "ddim", "eta": 0.5})
    sched = DDIMScheduler.from_config(scheduler_of(folder).config, set_alpha_to_one=True)
    sched.set_timesteps(5)
    np.testing.assert_array_equal(chain.times[1:][::-1] - 1, sched.timesteps.numpy())
    labels, idx, seed = np.array([0, 1, 2]), np.arange(3), 4
    out = sample_trajectories(adapter, chain, labels, idx, seed, progress=False)
    D = int(np.prod(adapter.state_shape))
    x = normal(seed, torch.as_tensor(idx), 0, D).float().view(3, *adapter.state_shape)
    for i in range(chain.steps, 0, -1):
        tau = adapter.network_time(chain.times[i])
        with torch.no_grad():
            net_out = adapter(x, torch.full((3,), tau), torch.as_tensor(labels))
        z = normal(seed, torch.as_tensor(idx), i, D).float().view_as(x) if chain.sigma[i - 1] > 0 else torch.zeros_like(x)
        x = sched.step(net_out, tau, x, eta=0.5, variance_noise=z).prev_sample
    np.testing.assert_allclose(out.final, x.numpy(), rtol=1e-4, atol=1e-4)


# --- configuration -----------------------------------------------------------------------------------------------


def test_timestep_spacing_override_and_bad_grids_are_checked(spaced, schema):
    """sampling.timestep_spacing overrides the folder's spacing; a grid diffusers' formula cannot make is refused when
    the config is checked, naming the key; a σ-denoiser and a mixture take no timestep_spacing."""
    spec = spec_of("diffusers", spaced["leading", 1])
    spec["sampling"] |= {"steps": 6, "timestep_spacing": "linspace"}
    adapter = load_adapter(spec, None, "cpu")
    chain = model_chain(adapter, spec["sampling"])
    assert chain.spacing == "linspace" and chain.steps_offset == 0 and chain.start_time == 100
    bad = spec_of("diffusers", spaced["trailing", 0])
    bad["sampling"]["steps"] = 29  # diffusers' trailing formula gives 30 timesteps, the last -1, for T = 100
    with pytest.raises(ConfigError, match=r"experiments\.m\.sampling\.steps: timestep_spacing 'trailing' .* "
                                          r"\(rule: scheduler-grid\)"):
        check_sources({"experiments": {"m": bad}})
    python = {"kind": "ddpm", "model": {"source": "python", "path": "p.json", "entry": "m:f"},
              "sampling": {"steps": 8, "trajectories_per_class": 2, "timestep_spacing": "leading"}}
    with pytest.raises(ConfigError, match=r"experiments\.m\.sampling\.timestep_spacing: model\.source python samples "
                                          r"on its own grid"):
        validate_config({"experiments": {"m": python}}, schema)
    gmm = {"kind": "gmm", "mixture": {"weights": [0.5, 0.5], "means": [-1.0, 1.0], "stds": [0.5, 0.5]},
           "schedule": {"name": "linear", "T": 1000},
           "sampling": {"steps": 10, "trajectories_per_class": 2, "timestep_spacing": "leading"}}
    with pytest.raises(ConfigError, match=r"timestep_spacing"):
        validate_config({"experiments": {"g": gmm}}, schema)


def test_clipping_is_read_as_diffusers_reads_the_config_and_thresholds_as_it_does():
    """clip_sample's class default (DDPMScheduler / DDIMScheduler: true), thresholding before clip_sample, bad values
    refused naming the key; the thresholding map equals DDPMScheduler._threshold_sample on float64 samples."""
    from diffusers import DDPMScheduler

    from seminfo.chain.clipping import clipping_from_scheduler_config

    assert clipping_from_scheduler_config({"_class_name": "DDPMScheduler"}) == Clipping("clip", clip_range=1.0)
    assert clipping_from_scheduler_config({"_class_name": "PNDMScheduler"}) is None
    assert clipping_from_scheduler_config({"clip_sample": False}) is None
    assert clipping_from_scheduler_config({"clip_sample": True, "thresholding": True}).kind == "threshold"
    with pytest.raises(ValueError, match=r"s\.json: dynamic_thresholding_ratio: must be a number in \(0\.0, 1\.0\]"):
        clipping_from_scheduler_config({"thresholding": True, "dynamic_thresholding_ratio": 1.5}, "s.json")
    torch.manual_seed(0)
    x0 = 2.0 * torch.randn(5, 3, 8, 8, dtype=torch.float64)
    x0[0] *= 0.1  # a sample whose quantile is below 1: clamped to [-1, 1] as standard clipping
    for ratio, ceiling in ((0.995, 1.0), (0.9, 1.5), (0.5, 10.0)):
        sched = DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=ratio, sample_max_value=ceiling)
        ours = Clipping("threshold", ratio=ratio, max_value=ceiling)(x0)
        np.testing.assert_allclose(ours.numpy(), sched._threshold_sample(x0).numpy(), rtol=1e-14, atol=1e-15)


def test_a_scheduler_config_the_grid_cannot_read_is_refused(spaced, tmp_path):
    import json
    import shutil

    bad = tmp_path / "u"
    shutil.copytree(spaced["leading", 0], bad)
    path = bad / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"timestep_spacing": "karras"}))
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.path: .*scheduler_config\.json: timestep_spacing: "
                                          r"'karras' is not one diffusers' set_timesteps knows"):
        check_sources({"experiments": {"m": spec_of("diffusers", bad)}})


def test_the_schedulers_variance_type_is_followed_unless_the_config_says_otherwise(tmp_path, noise):
    """A scheduler with variance_type fixed_large samples with beta: the chain follows it (its sigma equals
    DDPMScheduler.step's), unless sampling.variance is set; the default stays beta-tilde (fixed_small)."""
    folder = diffusers_twin(tmp_path / "large", "epsilon", scheduler_kw={"variance_type": "fixed_large"})
    adapter = load_adapter(spec_of("diffusers", folder), None, "cpu")
    assert adapter.chain_variance == "large"
    chain = model_chain(adapter, {"steps": 6})
    assert chain.variance == "large"
    sched = scheduler_of(folder)
    sched.set_timesteps(6)
    x = torch.zeros(3, *adapter.state_shape)
    for i in range(chain.steps, 1, -1):  # the last step adds no noise in the chain
        tau = adapter.network_time(chain.times[i])
        _, std = scheduler_mean_std(sched, torch.zeros_like(x), tau, x, noise)
        np.testing.assert_allclose(std.numpy(), chain.sigma[i - 1], rtol=2e-6, atol=1e-7)
    assert model_chain(adapter, {"steps": 6, "variance": "small"}).variance == "small"
    small = load_adapter(spec_of("diffusers", diffusers_twin(tmp_path / "small", "epsilon")), None, "cpu")
    assert model_chain(small, {"steps": 6}).variance == "small"
