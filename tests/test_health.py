"""Health checks of a network run (issue 18): the measures against their definitions, a twin built to explode at its
first step trips them, healthy twins do not, and a failed check is a warning in the job's log and on the console."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from seminfo.analysis import health  # noqa: E402
from seminfo.chain.posterior import entropy_bits, online_log_posterior  # noqa: E402
from seminfo.chain.sampler import model_chain, sample_trajectories  # noqa: E402
from seminfo.models import load_adapter  # noqa: E402

from twins import diffusers_twin, gauss_twin  # noqa: E402


def test_measures_follow_their_definitions():
    states = np.zeros((3, 2, 5))
    states[0, 0, :2] = [1.6, -1.51]  # 2 of 10 values beyond 1.5
    states[1] = 1.5  # on the bound: inside
    states[2, 1, 4] = np.nan  # not a number: outside
    np.testing.assert_allclose(health.outside_share(states, 1.5), [0.2, 0.0, 0.1])
    assert health.state_bound(latent=False) == 1.5 and health.state_bound(latent=True) == 4.0
    # E = 0.75 H_0 + 0.25 H_1 on the ascending grid: start (last column) 1.0, after the first step 0.25
    entropy = np.array([[0.0, 0.0, 0.25, 1.0], [0.0, 0.5, 0.25, 1.0]])
    assert health.first_step_share(entropy, [3.0, 1.0]) == pytest.approx(0.75)
    assert math.isnan(health.first_step_share(np.zeros((2, 3)), [0.5, 0.5]))


def test_assess_compares_each_value_with_its_limit_and_says_what_to_try():
    report = health.assess({"state_range": 0.5, "first_step": 0.2, "immse_inputs": float("nan"),
                            "sample_agreement": 0.4})
    assert report["failed"] == ["state_range", "sample_agreement"]
    assert set(report["checks"]) == {"state_range", "first_step", "sample_agreement"}  # NaN: not assessed
    assert report["checks"]["first_step"] == {"value": 0.2, "limit": 0.5, "passed": True,
                                              "what": health.CHECKS["first_step"][2]}
    assert health.assess({"state_range": 0.01, "sample_agreement": 0.8})["failed"] == []  # the limits pass
    lines = health.warnings_of(report, "exp")
    assert lines[0].startswith("exp: health check state_range failed: share of the generated states' values beyond "
                               "the data's range is 0.5, above the limit 0.01; try the scheduler's own timestep spacing")
    assert "clip_sample" in lines[0] and "more sampling.steps" in lines[0]
    assert "below the limit 0.8" in lines[1]
    attrs = health.summary_attrs(report)
    assert attrs["health_failed"] == "state_range, sample_agreement" and attrs["health_first_step"] == 0.2
    assert attrs["health_state_range_limit"] == 0.01 and "state_range: try" in attrs["health_advice"]
    assert health.summary_attrs(health.assess({"state_range": 0.0}))["health_failed"] == "none"


def _health_values(spec, steps=10, per_class=4):
    """state_range and first_step of a sampled run (the sampler, the online posterior, the class entropy means)."""
    adapter = load_adapter(spec, None, "cpu")
    chain = model_chain(adapter, spec["sampling"] | {"steps": steps})
    K = adapter.num_conditions
    labels = np.repeat(np.arange(K), per_class)
    out = sample_trajectories(adapter, chain, labels, np.arange(labels.size), 0, progress=False)
    h = entropy_bits(online_log_posterior(np.full((labels.size, K), -np.log(K)), out.increments))
    H = np.stack([h[labels == k].mean(0) for k in range(K)])
    return {"state_range": float(health.outside_share(out.final, health.state_bound(adapter.latent)).mean()),
            "first_step": health.first_step_share(H, np.full(K, 1.0 / K))}


def _diffusers(folder, **kw):
    return {"kind": "ddpm", "model": {"source": "diffusers", "path": str(diffusers_twin(folder, class_scale=3.0, **kw))},
            "sampling": {"steps": 10}}


def test_a_chain_that_explodes_at_its_first_step_trips_the_checks_and_healthy_ones_do_not(tmp_path):
    """A UNet twin whose output is scaled by 100, sampled from tau = T - 1 (trailing spacing, alpha_bar 0.006), makes
    x̂_0 explode at its first step: its states leave the data's range and the whole H(c) goes in that step. The same
    network unscaled with the scheduler's clip_sample (the pipeline's chain), and the exact denoiser of Gaussian
    classes (the python source), pass both checks."""
    broken = _health_values(_diffusers(tmp_path / "broken", out_scale=100.0,
                                       scheduler_kw={"timestep_spacing": "trailing"}))
    assert broken["state_range"] > 0.5 and broken["first_step"] > 0.9, broken
    assert health.assess(broken)["failed"] == ["state_range", "first_step"]
    clipped = _health_values(_diffusers(tmp_path / "clipped", scheduler_kw={"clip_sample": True}))
    entry, path = gauss_twin(tmp_path / "gauss", [-0.5, 0.0, 0.5], [0.2, 0.2, 0.2])
    exact = _health_values({"kind": "ddpm", "model": {"source": "python", "path": path, "entry": entry},
                            "sampling": {"steps": 10, "kernel": "ddpm", "variance": "small"}})
    for values in (clipped, exact):
        assert health.assess(values)["failed"] == [], values
        assert values["state_range"] == 0.0 and values["first_step"] < 0.1, values


def test_a_warning_goes_to_the_jobs_log_and_to_the_console(tmp_path, capfd, monkeypatch):
    """Under Snakemake (``seminfo.workflow.run``) a warning of the package is written to the job's log and, prefixed
    with the rule, to the console Snakemake shows; info lines and other libraries' warnings stay in the log."""
    from seminfo.workflow import run

    monkeypatch.setattr(sys, "stderr", sys.stderr)  # run() sends stderr to the job's log; restored afterwards
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # run() replaces the root handlers: pytest's are put back afterwards
    log_file = tmp_path / "health.log"
    smk = SimpleNamespace(log=[str(log_file)], rule="health", threads=1, wildcards={"experiment": "e"})

    def stage():
        logging.getLogger("seminfo.stages.health").info("state_range passed")
        logging.getLogger("seminfo.stages.health").warning("e: health check first_step failed: try more steps")
        logging.getLogger("matplotlib").warning("a font was not found")

    run(smk, stage)
    for handler in root.handlers:
        handler.close()
    err = capfd.readouterr().err
    assert "seminfo (health) warning: e: health check first_step failed: try more steps" in err
    assert "state_range passed" not in err and "font" not in err
    text = log_file.read_text()
    assert "WARNING seminfo.stages.health: e: health check first_step failed" in text and "state_range passed" in text
