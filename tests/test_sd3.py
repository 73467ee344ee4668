"""The sd3 source (Stable Diffusion 3 layout) and the python source's velocity networks: the adapter's evaluation and
step against the pipeline's and the scheduler's own, the condition wiring (moving posteriors, identical conditions
leave the prior), and bad input refused when the workflow is parsed (issue 20).

The twins are written with ``StableDiffusion3Pipeline.save_pretrained`` and loaded through the adapters' real path with
hub access off.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from seminfo.chain.diffusion import reverse_chain, x0_coefficients  # noqa: E402
from seminfo.chain.posterior import online_log_posterior  # noqa: E402
from seminfo.chain.sampler import sample_trajectories  # noqa: E402
from seminfo.config import ConfigError, validate_config  # noqa: E402
from seminfo.models import check_sources, load_adapter  # noqa: E402

from twins import sd3_twin, velocity_twin  # noqa: E402

PROMPTS = ["a photo of a red cat", "a photo of a blue cat"]


def sd3_spec(path, steps=5, **sampling):
    return {"kind": "ddpm", "model": {"source": "sd3", "path": str(path), "prompts": list(PROMPTS)},
            "sampling": {"steps": steps, "trajectories_per_class": 2} | sampling}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd3")
    return {"t5": sd3_twin(d / "t5"), "no_t5": sd3_twin(d / "no_t5", t5=False), "root": d}


@pytest.mark.parametrize("which", ["t5", "no_t5"])
def test_adapter_evaluates_the_transformer_as_the_pipeline_feeds_it(folders, which):
    """adapter(x_VP, grid index, c) is the transformer on x = x_VP sqrt((1 - s)^2 + s^2) at the scheduler's own timestep
    (FlowMatchEulerDiscreteScheduler.set_timesteps(steps), shift 3) with the prompt embeddings of the pipeline's
    encode_prompt (T5 left out: zeros, as the pipeline does), row K the negative prompt ""."""
    from diffusers import StableDiffusion3Pipeline

    steps = 5
    adapter = load_adapter(sd3_spec(folders[which], steps), None, "cpu")
    assert adapter.prediction == "velocity_rectified_flow" and adapter.has_null
    drop = {"text_encoder_3": None, "tokenizer_3": None} if which == "no_t5" else {}  # how users leave out T5
    pipe = StableDiffusion3Pipeline.from_pretrained(str(folders[which]), local_files_only=True, **drop)
    assert (pipe.text_encoder_3 is None) == (which == "no_t5")
    emb, neg, pooled, neg_pooled = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=True,
                                                      device="cpu")
    pipe.scheduler.set_timesteps(steps)
    torch.manual_seed(0)
    x = torch.randn(3, *adapter.state_shape)
    cond = torch.tensor([0, 1, 2])
    for j, tau in enumerate(pipe.scheduler.timesteps):
        i = steps - j
        sigma = float(pipe.scheduler.sigmas[j])
        assert adapter.schedule.alpha_bar[i] == pytest.approx((1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2),
                                                              rel=1e-5, abs=1e-12)
        scale = float(np.hypot(1 - sigma, sigma))
        with torch.no_grad():
            ours = adapter(x, torch.full((3,), i), cond)
            lib = pipe.transformer(hidden_states=x * scale, timestep=tau.expand(3),
                                   encoder_hidden_states=torch.cat([emb, neg[:1]]),
                                   pooled_projections=torch.cat([pooled, neg_pooled[:1]])).sample
        np.testing.assert_allclose(ours.numpy(), lib.numpy(), rtol=1e-5, atol=1e-5)
    if which == "no_t5":
        assert float(adapter.embeddings[:, -256:].abs().max()) == 0.0  # the T5 tokens: zeros


def test_predicted_x0_is_the_schedulers_on_the_adapters_output(folders, monkeypatch):
    """x̂0 = r x_VP + s v with v the adapter's output equals the scheduler's x0 = sample - sigma v on the same
    transformer output (its stochastic step with zero noise), at every step."""
    import diffusers.schedulers.scheduling_flow_match_euler_discrete as fm
    from diffusers import FlowMatchEulerDiscreteScheduler

    monkeypatch.setattr(fm, "randn_tensor", lambda shape, **kw: torch.zeros(shape))
    steps = 5
    adapter = load_adapter(sd3_spec(folders["t5"], steps), None, "cpu")
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(folders["t5"]), subfolder="scheduler",
                                                            stochastic_sampling=True)
    sched.set_timesteps(steps)
    torch.manual_seed(1)
    for j, tau in enumerate(sched.timesteps):
        i = steps - j
        sigma = float(sched.sigmas[j])
        x = torch.randn(2, *adapter.state_shape)
        with torch.no_grad():
            v = adapter(x, torch.full((2,), i), torch.tensor([0, 1]))
        lib = sched.step(v, tau, x * float(np.hypot(1 - sigma, sigma))).prev_sample.double()
        lib_x0 = lib / (1.0 - float(sched.sigmas[j + 1]))
        r, s = x0_coefficients(adapter.prediction, adapter.schedule.alpha_bar[i])
        np.testing.assert_allclose((r * x.double() + s * v.double()).numpy(), lib_x0.numpy(), rtol=1e-5, atol=1e-5)


def _posterior(spec, per_class=3):
    adapter = load_adapter(spec, None, "cpu")
    chain = reverse_chain(adapter.schedule, spec["sampling"]["steps"], "small")
    K = adapter.num_conditions
    labels = np.repeat(np.arange(K), per_class)
    out = sample_trajectories(adapter, chain, labels, np.arange(labels.size), 3, eval_batch=1, progress=False)
    return np.exp(online_log_posterior(np.full((labels.size, K), -np.log(K)), out.increments)), out.increments


@pytest.mark.parametrize("source", ["sd3", "velocity"])
def test_conditions_are_told_apart_and_identical_ones_leave_the_prior(tmp_path, source):
    """A twin with distinct conditions moves the posterior (which sums to one); a twin whose conditions are identical
    (equal text embeddings; equal class means) gives increment 0 for every condition at every step: exactly the
    prior. One pair per forward call, so no batched rounding enters."""
    def spec(identical, folder):
        if source == "sd3":
            return sd3_spec(sd3_twin(folder, identical=identical), 4)
        entry, path = velocity_twin(folder, [0.0] * 3 if identical else [-0.5, 0.0, 0.5], [0.5] * 3, "gvp")
        return {"kind": "ddpm", "sampling": {"steps": 4, "trajectories_per_class": 2},
                "model": {"source": "python", "prediction": "velocity", "path_kind": "gvp", "path": path,
                          "entry": entry}}

    post, _ = _posterior(spec(False, tmp_path / "a"))
    np.testing.assert_allclose(post.sum(-1), 1.0, rtol=0, atol=1e-12)
    K = post.shape[-1]
    assert np.abs(post[:, 0] - 1 / K).max() > 1e-3
    post, inc = _posterior(spec(True, tmp_path / "b"))
    assert np.all(inc == 0.0) and np.all(post == 1 / K)


# --- bad input, refused when the workflow is parsed --------------------------------------------------------------


def _check(spec):
    check_sources({"experiments": {"m": spec}})


def test_folder_lacking_a_component_is_refused(folders, tmp_path):
    for part in ("vae", "text_encoder_2", "tokenizer", "transformer"):
        broken = tmp_path / part
        shutil.copytree(folders["t5"], broken)
        shutil.rmtree(broken / part)
        with pytest.raises(ConfigError, match=rf"^experiments\.m\.model\.path: .*: lacks the component {part}/"):
            _check(sd3_spec(broken))
    half = tmp_path / "half"
    shutil.copytree(folders["t5"], half)
    shutil.rmtree(half / "tokenizer_3")
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.path: .* has text_encoder_3/ without tokenizer_3/"):
        _check(sd3_spec(half))


def test_a_non_flow_scheduler_and_unsupported_grid_options_are_refused(folders, tmp_path):
    from diffusers import DDPMScheduler

    ddpm = tmp_path / "ddpm"
    shutil.copytree(folders["t5"], ddpm)
    shutil.rmtree(ddpm / "scheduler")
    DDPMScheduler().save_pretrained(ddpm / "scheduler")
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.path: .*scheduler_config\.json: _class_name: "
                                          r"'DDPMScheduler' is not FlowMatchEulerDiscreteScheduler"):
        _check(sd3_spec(ddpm))
    karras = tmp_path / "karras"
    shutil.copytree(folders["t5"], karras)
    cfg = karras / "scheduler" / "scheduler_config.json"
    cfg.write_text(json.dumps(json.loads(cfg.read_text()) | {"use_karras_sigmas": True}))
    with pytest.raises(ConfigError, match=r"scheduler_config\.json: use_karras_sigmas: is not supported"):
        _check(sd3_spec(karras))


def test_config_errors_name_the_key(schema):
    def check(spec):
        validate_config({"experiments": {"m": spec}}, schema)

    velocity = {"kind": "ddpm", "sampling": {"steps": 4, "trajectories_per_class": 2},
                "model": {"source": "python", "prediction": "velocity", "path_kind": "cosine", "path": "p",
                          "entry": "m:f"}}
    with pytest.raises(ConfigError, match=r"^experiments\.m\.model\.path_kind: 'cosine' is not one of \['linear', "
                                          r"'gvp'\]"):
        check(velocity)
    del velocity["model"]["path_kind"]
    with pytest.raises(ConfigError, match=r"^experiments\.m\.model\.path_kind: required for model\.prediction "
                                          r"velocity"):
        check(velocity)
    velocity["model"] |= {"path_kind": "linear", "zero_label_is_null": True}
    with pytest.raises(ConfigError, match=r"^experiments\.m\.model\.zero_label_is_null: applies to model\.prediction "
                                          r"sample only, not velocity"):
        check(velocity)
    del velocity["model"]["zero_label_is_null"]
    velocity["sampling"]["sigma_max"] = 10.0
    with pytest.raises(ConfigError, match=r"^experiments\.m\.sampling\.sigma_max: applies to model\.source python "
                                          r"with a sigma denoiser only"):
        check(velocity)
    sd3 = sd3_spec("x")
    sd3["model"]["prompts"] = ["a cat", "a cat"]
    with pytest.raises(ConfigError, match=r"^experiments\.m\.model\.prompts\[1\]: 'a cat' appears twice"):
        check(sd3)
    sd3 = sd3_spec("x")
    sd3["model"]["entry"] = "m:f"
    with pytest.raises(ConfigError, match=r"^experiments\.m\.model\.entry: applies to model\.source python only, "
                                          r"not sd3"):
        check(sd3)


def test_velocity_entry_with_a_bad_null_label_is_refused(tmp_path):
    entry, path = velocity_twin(tmp_path, [-0.5, 0.5], [0.5, 0.5], "linear")
    spec = {"kind": "ddpm", "sampling": {"steps": 4, "trajectories_per_class": 2},
            "model": {"source": "python", "prediction": "velocity", "path_kind": "linear", "path": path,
                      "entry": entry, "null_label": 7}}
    from seminfo.io import InputError

    with pytest.raises(InputError, match=r"^model\.null_label: 7 must be a label id in 0…2"):
        load_adapter(spec, None, "cpu")


def test_prompts_that_tokenize_alike_for_every_tokenizer_are_refused(folders):
    """Equal after CLIP's truncation (16 tokens here): one condition without T5, two with it (T5 reads 256)."""
    from seminfo.io import InputError

    spec = sd3_spec(folders["no_t5"])
    spec["model"]["prompts"] = ["a cat " + "x" * 40, "a cat " + "x" * 41]
    with pytest.raises(InputError, match=r"^model\.prompts\[1\]: .* are the same token sequences for these tokenizers"):
        load_adapter(spec, None, "cpu")
    spec["model"]["path"] = str(folders["t5"])
    assert load_adapter(spec, None, "cpu").num_conditions == 2


def test_flow_configs_validate(schema):
    """The documented configs of the flow sources pass config validation (their model files are not here)."""
    import yaml

    from conftest import REPO

    for name, source in (("sit_imagenet.yaml", "python"), ("sd35_medium.yaml", "sd3")):
        config = yaml.safe_load((REPO / "workflow" / "configs" / name).read_text())
        validated = validate_config(config, schema)
        assert all(s["model"]["source"] == source for s in validated["experiments"].values())
