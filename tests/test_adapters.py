"""The model adapters against the libraries' own steps, the sigma-ancestral step against its DDPM form, the
condition-wiring twins, and every bad model folder with its message.

Every model is a tiny random-weight twin written by the library's own ``save_pretrained`` (``twins``) and loaded back
through the adapters' real path (``from_pretrained(…, local_files_only=True)``), with hub access off.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from seminfo.chain.diffusion import learned_range_log_variance, reverse_chain, step_coefficients  # noqa: E402
from seminfo.chain.noise import normal  # noqa: E402
from seminfo.chain.posterior import entropy_bits, online_log_posterior  # noqa: E402
from seminfo.chain.sampler import sample_trajectories  # noqa: E402
from seminfo.chain.schedules import karras_sigmas, sigma_schedule  # noqa: E402
from seminfo.config import ConfigError, validate_config  # noqa: E402
from seminfo.io import InputError  # noqa: E402
from seminfo.mixtures import gmm  # noqa: E402
from seminfo.models import check_sources, load_adapter  # noqa: E402

from conftest import REPO  # noqa: E402
from twins import diffusers_twin, dit_twin, gauss_twin, sd_twin  # noqa: E402

SAMPLING = {"steps": 6, "trajectories_per_class": 2}


def spec_of(source, path, **model):
    s = {"kind": "ddpm", "model": {"source": source, "path": str(path), **model}, "sampling": dict(SAMPLING)}
    if source == "python":
        s["sampling"] |= {"kernel": "ddpm", "variance": "small"}
    return s


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("twins")
    out = {
        "epsilon": diffusers_twin(d / "unet_eps", "epsilon", null_label=3),
        "v_prediction": diffusers_twin(d / "unet_v", "v_prediction"),
        "v_null": diffusers_twin(d / "unet_vn", "v_prediction", null_label=3, class_scale=3.0),
        "sample": diffusers_twin(d / "unet_x0", "sample"),
        "dit": dit_twin(d / "dit", class_scale=3.0),
        "sd": sd_twin(d / "sd"),
        "root": d,
    }
    out["gauss_entry"], out["gauss_path"] = gauss_twin(d / "gauss", [-1.0, 0.2, 1.0], [0.3, 0.4, 0.3])
    return out


def dit_spec(path):
    return spec_of("dit", path, classes=["golden retriever", "Labrador retriever", 4])


def sd_spec(path):
    return spec_of("stable_diffusion", path, prompts=["a photo of a red cat", "a photo of a blue cat"])


@pytest.fixture
def noise(monkeypatch):
    """Hand DDPMScheduler.step the noise we choose (``noise.value``), so its step and ours use the same draw."""
    import diffusers.schedulers.scheduling_ddpm as ddpm

    class Noise:
        value = None

    monkeypatch.setattr(ddpm, "randn_tensor", lambda shape, **kw: Noise.value.to(kw.get("dtype") or torch.float32))
    return Noise


def scheduler_of(folder, **overrides):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler", local_files_only=True, **overrides)


def scheduler_mean_std(scheduler, out, tau, x, noise):
    """The mean and standard deviation of DDPMScheduler.step: its result with zero noise, and with unit noise minus
    that mean."""
    noise.value = torch.zeros_like(x)
    mean = scheduler.step(out, tau, x).prev_sample.double()
    noise.value = torch.ones_like(x)
    return mean, scheduler.step(out, tau, x).prev_sample.double() - mean


# --- acceptance 2: the adapter's step is the library's step -----------------------------------------------------


@pytest.mark.parametrize("prediction, variance", [("epsilon", "small"), ("v_prediction", "small"),
                                                  ("sample", "small"), ("epsilon", "large")])
def test_diffusers_step_mean_and_variance_equal_ddpm_scheduler_step(folders, noise, prediction, variance):
    """On a respaced grid (custom timesteps = the chain's times - 1), for every step: mean A x + B out and sigma of the
    chain equal DDPMScheduler.step's (clip_sample off) on the same network output, within float32 resolution."""
    adapter = load_adapter(spec_of("diffusers", folders[prediction]), None, "cpu")
    assert adapter.prediction == prediction
    chain = reverse_chain(adapter.schedule, 7, variance)
    sched = scheduler_of(folders[prediction], **({"variance_type": "fixed_large"} if variance == "large" else {}))
    sched.set_timesteps(timesteps=[int(t) - 1 for t in chain.times[1:][::-1]])
    torch.manual_seed(1)
    x = torch.randn(3, *adapter.state_shape)
    cond = torch.tensor([0, 1, 2])
    for i in range(chain.steps, 0, -1):
        tau = adapter.network_time(chain.times[i])
        with torch.no_grad():
            out = adapter(x, torch.full((3,), tau), cond)
        a, b = step_coefficients(chain, i, prediction)
        mean, std = scheduler_mean_std(sched, out, tau, x, noise)
        ours = a * x.double() + b * out.double()
        scale = float(ours.abs().max())
        assert float((ours - mean).abs().max()) <= 2e-6 * scale, (i, float((ours - mean).abs().max()))
        if i == 1 and variance == "large":
            # The last step is noiseless for every variance (Ho et al. 2020, Algorithm 2; improved-diffusion's respaced
            # sampler likewise). DDPMScheduler skips the noise only when its timestep is 0, so on a respaced grid,
            # whose last step starts at t = 15, it still draws noise there with fixed_large.
            assert chain.sigma[0] == 0 and float(std.min()) > 0
            continue
        np.testing.assert_allclose(std.numpy(), chain.sigma[i - 1], rtol=2e-6, atol=1e-7 if i == 1 else 0)
        x = torch.randn_like(x)


def test_learned_range_variance_equals_the_schedulers(folders, noise):
    """DiT's learned sigma: the step's log variance from the variance channels (``learned_range_log_variance``) and the
    mean from the eps channels equal DDPMScheduler.step with variance_type learned_range, per element."""
    adapter = load_adapter(dit_spec(folders["dit"]), None, "cpu")
    assert adapter.variance == "learned_range" and adapter.output_channels == 8
    chain = reverse_chain(adapter.schedule, 5, "small")
    sched = scheduler_of(folders["dit"])
    assert sched.config.variance_type == "learned_range"
    sched.set_timesteps(timesteps=[int(t) - 1 for t in chain.times[1:][::-1]])
    torch.manual_seed(2)
    x = torch.randn(3, *adapter.state_shape)
    for i in range(chain.steps, 1, -1):
        tau = adapter.network_time(chain.times[i])
        with torch.no_grad():
            out = adapter(x, torch.full((3,), tau), torch.tensor([0, 1, 3]))  # 3 = the null condition
        eps, values = out[:, :4].double(), out[:, 4:].double()
        a, b = step_coefficients(chain, i, "epsilon")
        log_var = learned_range_log_variance(values, float(chain.beta[i - 1]), float(chain.beta_tilde[i - 1]))
        mean, std = scheduler_mean_std(sched, out, tau, x, noise)
        np.testing.assert_allclose((a * x.double() + b * eps).numpy(), mean.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose((0.5 * log_var).exp().numpy(), std.numpy(), rtol=1e-5)
        assert float(std.std()) > 0  # per element: the variance really is learned
        x = torch.randn_like(x)


@pytest.mark.parametrize("which", ["v_prediction", "dit"])
def test_sampler_reproduces_the_scheduler_loop_with_the_same_noise(folders, noise, which):
    """A whole trajectory: the sampler's final states equal DDPMScheduler.step iterated from the same x_T with the
    same per-step noise (seminfo.chain.noise), for a v-prediction UNet and for DiT's learned variance."""
    spec = dit_spec(folders["dit"]) if which == "dit" else spec_of("diffusers", folders[which])
    adapter = load_adapter(spec, None, "cpu")
    chain = reverse_chain(adapter.schedule, 6, "small")
    labels, idx, seed = np.array([0, 1, 2]), np.arange(3), 5
    out = sample_trajectories(adapter, chain, labels, idx, seed, progress=False)
    sched = scheduler_of(folders[which])
    sched.set_timesteps(timesteps=[int(t) - 1 for t in chain.times[1:][::-1]])
    D = int(np.prod(adapter.state_shape))
    x = normal(seed, torch.as_tensor(idx), 0, D).float().view(3, *adapter.state_shape)
    for i in range(chain.steps, 0, -1):
        tau = adapter.network_time(chain.times[i])
        with torch.no_grad():
            net_out = adapter(x, torch.full((3,), tau), torch.as_tensor(labels))
        noise.value = normal(seed, torch.as_tensor(idx), i, D).float().view_as(x) if i > 1 else torch.zeros_like(x)
        x = sched.step(net_out, tau, x).prev_sample
    np.testing.assert_allclose(out.final, x.numpy(), rtol=1e-4, atol=1e-4)


def test_sigma_ancestral_step_is_the_small_ddpm_step_through_alpha_bar():
    """Issue 11: on a Karras grid the ancestral step in sigma, mean (s^2/t^2) x + (1 - s^2/t^2) D and variance
    s^2 (t^2 - s^2) / t^2 (VE units), is the 'small' DDPM step with x_0 prediction D through alpha_bar = 1/(1 + sigma^2),
    x_VP = sqrt(alpha_bar) x."""
    sigmas = karras_sigmas(40, 0.002, 80.0, 7.0)
    chain = reverse_chain(sigma_schedule(sigmas), 40, "small")
    grid = np.concatenate([[0.0], sigmas])
    np.testing.assert_allclose(np.sqrt(1 / chain.alpha_bar[1:] - 1), sigmas, rtol=1e-10)
    for i in range(40, 0, -1):
        st, ss = grid[i], grid[i - 1]
        a, b = step_coefficients(chain, i, "sample")  # VP: mean = a x_VP + b D
        root_t, root_s = np.sqrt(chain.alpha_bar[i]), np.sqrt(chain.alpha_bar[i - 1])
        # x_VP = root_t x  ->  mean_VE = (a root_t x + b D) / root_s
        assert a * root_t / root_s == pytest.approx(ss**2 / st**2, rel=1e-9, abs=1e-15)
        assert b / root_s == pytest.approx(1 - ss**2 / st**2, rel=1e-9)
        assert chain.sigma[i - 1] ** 2 / root_s**2 == pytest.approx(ss**2 * (st**2 - ss**2) / st**2, rel=1e-9,
                                                                    abs=1e-300)


def test_sigma_chain_with_the_exact_denoiser_approaches_the_exact_entropy(tmp_path):
    """The python source with D = E[x_0 | x, c] of Gaussian classes (1-D states): the online posterior entropy of the
    sigma-ancestral chain approaches H(c | x_t) of the mixture (quadrature, ``gmm.exact_entropy``) as the grid gets
    finer."""
    mix = gmm.Mixture([1 / 3] * 3, [-1.0, 0.2, 1.0], [0.3, 0.4, 0.3])
    entry, path = gauss_twin(tmp_path, mix.means, mix.stds, shape=(1, 1, 1))
    errors = {}
    for steps in (10, 200):
        spec = spec_of("python", path, entry=entry)
        spec["sampling"]["steps"] = steps
        adapter = load_adapter(spec, None, "cpu")
        chain = reverse_chain(adapter.schedule, steps, "small")
        labels = np.repeat(np.arange(3), 1000)
        out = sample_trajectories(adapter, chain, labels, np.arange(labels.size), 0, eval_batch=9000, progress=False)
        h = entropy_bits(online_log_posterior(np.full((labels.size, 3), -np.log(3)), out.increments))
        H = np.stack([h[labels == k].mean(0) for k in range(3)])
        errors[steps] = np.abs(H - gmm.exact_entropy(mix, chain.alpha_bar[chain.posterior_start:])).max()
        for k in range(3):  # the final states are draws of the classes
            assert out.final[labels == k].mean() == pytest.approx(mix.means[k], abs=0.08)
    # measured: 0.49 bit at 10 steps, 0.03-0.06 at 200 (the path posterior's own bias, about 0.01 bit below H(c | x_t)
    # on average, plus a Monte Carlo standard error of 0.014 bit per grid point at 1000 trajectories per class)
    assert errors[200] < 0.08 and errors[200] < 0.5 * errors[10], errors


# --- acceptance 3: the conditions are wired -------------------------------------------------------------------


def _posterior(spec, steps=6, per_class=3, eval_batch=1024):
    adapter = load_adapter(spec, None, "cpu")
    chain = reverse_chain(adapter.schedule, steps, "small")
    K = adapter.num_conditions
    labels = np.repeat(np.arange(K), per_class)
    out = sample_trajectories(adapter, chain, labels, np.arange(labels.size), 3, eval_batch=eval_batch,
                              progress=False)
    return np.exp(online_log_posterior(np.full((labels.size, K), -np.log(K)), out.increments)), out.increments


def _twin_spec(source, folder, tmp, identical):
    if source == "diffusers":
        return spec_of("diffusers", diffusers_twin(folder, class_scale=3.0, identical=identical))
    if source == "dit":
        return dit_spec(dit_twin(folder, class_scale=3.0, identical=identical))
    if source == "stable_diffusion":
        return sd_spec(sd_twin(folder, identical=identical))
    means = [0.0, 0.0, 0.0] if identical else [-0.5, 0.0, 0.5]
    entry, path = gauss_twin(folder, means, [0.5, 0.5, 0.5])
    return spec_of("python", path, entry=entry)


@pytest.mark.parametrize("source", ["diffusers", "dit", "stable_diffusion", "python"])
def test_conditions_sharing_one_network_are_told_apart_and_identical_ones_leave_the_prior(tmp_path, source):
    """Twins whose K conditions share one weight set and differ only in their embedding (label row, prompt, class
    mean) give a posterior that moves; twins whose conditions are identical give the same increment for every
    condition (zero, with a shared variance), so the posterior is exactly the prior at every step.

    The identical twins evaluate one pair per forward call: a batched matrix product may round rows at different
    positions differently (DiT: 2e-6 nat), which is not what this test is about.
    """
    post, inc = _posterior(_twin_spec(source, tmp_path / "a", tmp_path, identical=False))
    np.testing.assert_allclose(post.sum(-1), 1.0, rtol=0, atol=1e-12)
    K = post.shape[-1]
    assert np.abs(post[:, 0] - 1 / K).max() > 1e-3  # the last posterior has moved away from the prior
    post, inc = _posterior(_twin_spec(source, tmp_path / "b", tmp_path, identical=True), eval_batch=1)
    assert np.all(inc == inc[..., :1])
    if source != "dit":  # a shared variance: the own condition's increment is 0 by construction, so all are
        assert np.all(inc == 0.0)
        assert np.all(post == 1 / K)
    else:  # equal, non-zero increments (the learned log variance stays): the prior up to float64 rounding
        np.testing.assert_allclose(post, 1 / K, rtol=1e-14, atol=0)


# --- acceptance 5: bad input -----------------------------------------------------------------------------------


def _check(spec):
    check_sources({"experiments": {"m": spec}})


def test_missing_folder_and_hub_id_are_refused_with_how_to_download(tmp_path):
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.path: '.*nowhere' does not exist"):
        _check(spec_of("diffusers", tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.path: 'facebook/DiT-XL-2-256' is not a local "
                                          r"folder .* `hf download facebook/DiT-XL-2-256 --local-dir "):
        _check(spec_of("dit", "facebook/DiT-XL-2-256", classes=[1, 2]))


def test_folder_lacking_a_component_is_refused(folders, tmp_path):
    broken = tmp_path / "dit"
    shutil.copytree(folders["dit"], broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.path: .*dit: lacks the component vae/"):
        _check(dit_spec(broken))
    sd = tmp_path / "sd"
    shutil.copytree(folders["sd"], sd)
    shutil.rmtree(sd / "tokenizer")
    with pytest.raises(ConfigError, match="lacks the component tokenizer/"):
        _check(sd_spec(sd))


def test_unconditional_unet_is_refused(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "u")
    with pytest.raises(ConfigError, match=r"unet/config\.json: not a class-conditional UNet \(num_class_embeds and "
                                          r"class_embed_type are both unset\)"):
        _check(spec_of("diffusers", tmp_path / "u"))


def test_duplicate_prompts_are_refused(schema):
    spec = sd_spec("anywhere")
    spec["model"]["prompts"] = ["a cat", "a dog", "a cat"]
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.prompts\[2\]: 'a cat' appears twice"):
        validate_config({"experiments": {"m": spec}}, schema)


def test_prompts_that_tokenize_alike_are_refused_when_loading(folders):
    spec = sd_spec(folders["sd"])
    spec["model"]["prompts"] = ["a cat " + "x" * 40, "a cat " + "x" * 41]  # equal after truncation to 16 tokens
    with pytest.raises(InputError, match="are the same token sequence for this tokenizer"):
        load_adapter(spec, None, "cpu")


def test_class_name_not_in_id2label_is_refused(folders):
    spec = dit_spec(folders["dit"])
    spec["model"]["classes"] = ["golden retriever", "unicorn"]
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.classes\[1\]: 'unicorn' is not a class name in "
                                          r".*model_index\.json id2label"):
        _check(spec)


def _edit_scheduler(src, dst, **changes):
    shutil.copytree(src, dst)
    path = dst / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return dst


def test_unknown_prediction_type_and_unrebuildable_schedule_are_refused(folders, tmp_path):
    bad = _edit_scheduler(folders["v_prediction"], tmp_path / "p", prediction_type="flow")
    with pytest.raises(ConfigError, match=r"scheduler_config\.json: prediction_type: 'flow' is not one the adapter "
                                          r"knows \(epsilon, v_prediction, sample\)"):
        _check(spec_of("diffusers", bad))
    bad = _edit_scheduler(folders["v_prediction"], tmp_path / "s", beta_schedule="sigmoid")
    with pytest.raises(ConfigError, match=r"scheduler_config\.json: beta_schedule: 'sigmoid' cannot be rebuilt"):
        _check(spec_of("diffusers", bad))


def test_steps_beyond_the_models_schedule_are_refused(folders):
    spec = spec_of("diffusers", folders["v_prediction"])
    spec["sampling"]["steps"] = 101
    with pytest.raises(ConfigError, match=r"experiments\.m\.sampling\.steps: 101 exceeds the model's T = 100"):
        _check(spec)


def test_python_entry_that_cannot_be_imported_is_refused(folders):
    spec = spec_of("python", folders["gauss_path"], entry="no_such_module_here:load")
    with pytest.raises(InputError, match=r"model\.entry: 'no_such_module_here:load': cannot import "
                                         r"'no_such_module_here' \(ModuleNotFoundError"):
        load_adapter(spec, None, "cpu")


def test_pretrained_source_takes_no_training_sections(schema):
    spec = dit_spec("x") | {"train": {"steps": 10}}
    with pytest.raises(ConfigError, match=r"experiments\.m\.train: a pretrained model \(model\.source: dit\) takes "
                                          "no train section"):
        validate_config({"experiments": {"m": spec}}, schema)
    spec = dit_spec("x")
    spec["model"]["prompts"] = ["a", "b"]
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.prompts: applies to model\.source "
                                          r"stable_diffusion / sd3 only, not dit"):
        validate_config({"experiments": {"m": spec}}, schema)


def test_corrupt_weights_stop_model_check_and_leave_nothing(folders, tmp_path):
    from seminfo.stages.network import model_check

    broken = tmp_path / "u"
    shutil.copytree(folders["v_prediction"], broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "results" / "adapter.json"
    with pytest.raises(InputError, match=r"model\.path: .*unet: cannot be loaded as UNet2DModel"):
        model_check(spec_of("diffusers", broken), "m", out)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary file left either


def test_adapter_configs_validate(schema):
    """The documented configs of workflow/configs pass config validation (their model folders are not here)."""
    for name in ("dit_imagenet.yaml", "stable_diffusion.yaml", "diffusers_unet.yaml", "edm2.yaml"):
        config = yaml.safe_load((REPO / "workflow" / "configs" / name).read_text())
        validated = validate_config(config, schema)
        assert all(s["model"]["source"] != "own" for s in validated["experiments"].values())


@pytest.mark.parametrize("which", ["v_null", "dit"])
def test_immse_denoiser_difference_is_sqrt_gamma_times_the_schedulers_x0_difference(folders, which):
    """The I-MMSE integrand of a pretrained model: f(x, t, c) - f(x, t, ∅) = sqrt(gamma_t) (x̂_0(x, c) - x̂_0(x, ∅)),
    with x̂_0 the scheduler's own pred_original_sample (v prediction; DiT's eps channels of a learned-range output)."""
    from seminfo.stages.immse import _denoiser_difference_fn

    spec = dit_spec(folders["dit"]) if which == "dit" else spec_of("diffusers", folders[which], null_label=3)
    adapter = load_adapter(spec, None, "cpu")
    f = _denoiser_difference_fn(adapter, 16, "cpu")
    sched = scheduler_of(folders[which])
    torch.manual_seed(4)
    x = torch.randn(2, *adapter.state_shape)
    for t in (90, 40, 5):
        steps = torch.full((2,), t)
        cond, null = torch.tensor([0, 2]), torch.full((2,), adapter.null_index)
        with torch.no_grad():
            x0 = [sched.step(adapter(x, steps - 1, c), t - 1, x).pred_original_sample.double() for c in (cond, null)]
        gamma = adapter.schedule.alpha_bar[t] / (1 - adapter.schedule.alpha_bar[t])
        expected = np.sqrt(gamma) * (x0[0] - x0[1])
        np.testing.assert_allclose((f(x, steps, cond) - f(x, steps, null)).numpy(), expected.numpy(),
                                   rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_guidance_and_one_vs_rest_need_a_null_condition_and_known_targets(folders):
    """Issue 12, bad input on pretrained models: guidance or one-vs-rest tracking on a model without a null condition,
    an interval beyond the model's T, one-vs-rest targets not among its classes."""
    no_null = spec_of("diffusers", folders["v_prediction"])
    no_null["sampling"]["guidance"] = {"scale": 2.0}
    with pytest.raises(ConfigError, match=r"experiments\.m\.sampling\.guidance: needs a model with a null "
                                          r"\(unconditional\) condition.*\(rule: null-condition\)"):
        _check(no_null)
    ovr = spec_of("diffusers", folders["v_prediction"])
    ovr["sampling"]["tracking"] = "one_vs_rest"
    with pytest.raises(ConfigError, match=r"sampling\.tracking: needs a model with a null"):
        _check(ovr)
    late = spec_of("diffusers", folders["epsilon"], null_label=3)
    late["sampling"]["guidance"] = {"scale": 2.0, "interval": [0, 10_000]}
    with pytest.raises(ConfigError, match=r"sampling\.guidance\.interval: \[0, 10000\] must satisfy 0 <= t_lo <= "
                                          r"t_hi <= T = \d+ \(rule: interval\)"):
        _check(late)
    unknown = dit_spec(folders["dit"])
    unknown["sampling"] |= {"tracking": "one_vs_rest", "targets": ["golden retriever", "goldfish"]}  # not among the 3
    with pytest.raises(ConfigError, match=r"sampling\.targets\[1\]: unknown class 'goldfish'"):
        _check(unknown)
