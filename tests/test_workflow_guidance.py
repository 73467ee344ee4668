"""End-to-end: guided sampling, the guidance study and one-vs-rest tracking on tiny digits models (issue 12)."""

import numpy as np
import pytest
import xarray as xr
import yaml
from test_workflow_ddpm import TINY_NET
from test_workflow_gmm import snakemake

BASE = {
    "kind": "ddpm",
    "data": {"name": "digits", "classes": [0, 1, 7], "limit_per_class": 40},
    "model": TINY_NET,
    "schedule": {"name": "linear", "T": 100},
    "train": {"steps": 12, "batch_size": 32, "checkpoint_every": 12, "warmup": 2},
    "analysis": {"rate_smoothing": 1, "bootstrap_resamples": 100},
    "immse": {"samples": 24, "points": 6},  # on, as by default, but small
    "plots": {"dpi": 50},
}
CONFIG = {"experiments": {
    "guided": BASE | {
        "sampling": {"steps": 8, "trajectories_per_class": 3, "batch_size": 24, "snapshots": 3,
                     "guidance": {"scale": 3.0, "interval": [50, 100]}},
        "partitions": {"zero_vs_rest": [["0"], ["1", "7"]]},
        "guidance_study": {"scales": [1, 3], "intervals": ["full", "high_noise"], "steps": 6,
                           "trajectories_per_class": 3},
        "convergence": {"steps": [4, 8], "trajectories_per_class": 3},
    },
    "ovr": BASE | {
        "sampling": {"steps": 8, "trajectories_per_class": 3, "batch_size": 24, "snapshots": 3,
                     "tracking": "one_vs_rest", "targets": ["0", "7"], "target_prior": "half"},
    },
    "ovr_all": BASE | {  # every class tracked, under an unequal class prior
        "sampling": {"steps": 8, "trajectories_per_class": 3, "batch_size": 24, "snapshots": 3,
                     "tracking": "one_vs_rest", "class_prior": [0.5, 0.3, 0.2]},
    },
}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("guidance_run")
    (d / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    proc = snakemake(d, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return d


@pytest.mark.slow
def test_guided_run_writes_both_posteriors(run_dir):
    ds = xr.open_dataset(run_dir / "results" / "guided" / "summary.nc")
    assert ds.attrs["guidance_scale"] == 3.0 and list(ds.attrs["guidance_interval"]) == [50.0, 100.0]
    for name in ("entropy", "entropy_rate_rb", "model_entropy", "model_entropy_rate", "model_entropy_marginal",
                 "model_partition_entropy"):
        assert name in ds, name
    assert "cross-entropy" in ds["model_entropy"].attrs["long_name"]
    np.testing.assert_allclose(ds["entropy"].isel(time=-1), np.log2(3), atol=1e-6)  # the prior start
    tr = xr.open_dataset(run_dir / "results" / "guided" / "trajectories.nc")
    np.testing.assert_allclose(tr["posterior"].sum("class"), 1.0, atol=1e-5)
    assert "guided kernels" in tr["posterior"].attrs["long_name"]
    # the unguided model's belief is not the guided family's posterior once guided steps were taken (the tiny
    # model hardly separates the classes, so the difference is small)
    assert float(np.abs(ds["model_entropy"] - ds["entropy"]).max()) > 1e-6
    np.testing.assert_allclose(ds["model_entropy"].isel(time=-1), np.log2(3), atol=1e-6)


@pytest.mark.slow
def test_guidance_study_dataset_and_figure(run_dir):
    g = xr.open_dataset(run_dir / "results" / "guided" / "guidance.nc")
    assert g["scale"].values.tolist() == [1.0, 3.0] and g["interval"].values.tolist() == ["full", "high_noise"]
    assert g["entropy"].dims == ("scale", "interval", "class", "time")
    assert g["peak_time"].dims == ("scale", "interval", "class")
    assert g["information"].dims == ("scale", "interval", "window")
    # w = 1 is one setting, the same in every interval column
    np.testing.assert_array_equal(g["entropy"].sel(scale=1.0, interval="full"),
                                  g["entropy"].sel(scale=1.0, interval="high_noise"))
    assert np.all(g["marginal_peak_time_ci_low"] <= g["marginal_peak_time"])
    assert np.all(g["marginal_peak_time"] <= g["marginal_peak_time_ci_high"])
    # guided steps cost one null evaluation more per trajectory; w = 1 tracks the null too (one-vs-rest comparison)
    evals = g["network_evaluations"]
    assert float(evals.sel(scale=3.0, interval="full")) > float(evals.sel(scale=3.0, interval="high_noise"))
    assert 0 <= g.attrs["ovr_mean_abs_gap"] <= 1
    assert 0 <= float(g["sample_agreement"].min()) <= 1
    assert (run_dir / "results" / "guided" / "figures" / "guidance.png").stat().st_size > 5000


@pytest.mark.slow
def test_one_vs_rest_run(run_dir):
    res = run_dir / "results" / "ovr"
    ds = xr.open_dataset(res / "summary.nc")
    assert ds.attrs["tracking"] == "one_vs_rest"
    assert ds["class"].values.tolist() == ["0", "7"]
    np.testing.assert_allclose(ds["entropy"].isel(time=-1), 1.0, atol=1e-6)  # h(1/2) at t = T
    assert "entropy_marginal" not in ds and "mutual_information" not in ds
    assert {"entropy_rate", "entropy_rate_ci_low", "decision_time_median"} <= set(ds.data_vars)
    tr = xr.open_dataset(res / "trajectories.nc")
    assert float(tr["posterior_target"].max()) <= 1.0 and tr.sizes["traj"] == 6
    sample = xr.open_dataset(res / "shards" / "sample_0.nc")
    assert sample.attrs["network_evaluations"] == 6 * (2 * 7 + 1)  # own class and null per step; the last, own only
    for name in ("entropy", "entropy_rate", "examples", "samples", "decisions"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 1000, name
    assert not (res / "quality.json").exists()


@pytest.mark.slow
def test_network_step_convergence(run_dir):
    """Correction 2: the step-convergence study runs on network models too, against the finest step count."""
    res = run_dir / "results" / "guided"
    c = xr.open_dataset(res / "convergence.nc")
    assert c["steps"].values.tolist() == [4, 8] and c.attrs["reference_steps"] == 8
    assert c["entropy"].dims == ("steps", "class", "time")
    np.testing.assert_array_equal(c["bias_vs_finest"].sel(steps=8).values[np.isfinite(c["entropy_marginal"].sel(
        steps=8).values)], 0.0)
    shared = np.isfinite(c["bias_vs_finest"].sel(steps=4).values)
    assert c["time"].values[shared].tolist() == [25, 50, 75, 100]
    assert (res / "figures" / "convergence.png").stat().st_size > 5000


@pytest.mark.slow
def test_default_studies_run_or_say_why_not(run_dir):
    """Every default study runs for one-vs-rest (with and without targets) and guided experiments; where the I-MMSE
    estimate cannot be compared with the trajectories' I(c; x_t) (none with one-vs-rest; another family under
    guidance) immse.nc and summary.nc say why and hold no difference."""
    for name in ("guided", "ovr", "ovr_all"):
        res = run_dir / "results" / name
        immse = xr.open_dataset(res / "immse.nc")
        summary = xr.open_dataset(res / "summary.nc")
        assert "mutual_information_immse" in summary and "mutual_information_difference" not in immse
        reason = summary.attrs["immse_comparison_skipped"]
        assert reason == immse.attrs["comparison_skipped"]
        assert ("one-vs-rest" in reason) if name.startswith("ovr") else ("guided" in reason)
        assert (res / "figures" / "immse.png").stat().st_size > 1000
        assert "decision_time_median" in summary


@pytest.mark.slow
def test_the_class_prior_is_where_tracking_starts(run_dir):
    """sampling.class_prior: one-vs-rest starts each trajectory's P(c | path) at its class's prior."""
    res = run_dir / "results" / "ovr_all"
    tr = xr.open_dataset(res / "trajectories.nc")
    start = tr["posterior_target"].isel(time=-1).values
    np.testing.assert_allclose(start, np.array([0.5, 0.3, 0.2])[tr["label"].values], rtol=1e-6)
    sample = xr.open_dataset(res / "shards" / "sample_0.nc")
    np.testing.assert_allclose(sample["prior"].values, [0.5, 0.3, 0.2])
