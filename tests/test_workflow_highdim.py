"""End-to-end: a d-dimensional mixture (mixture.dim) through the whole per-experiment pipeline and the speciation
study, on a tiny config."""

import numpy as np
import pytest
import xarray as xr
import yaml

from test_workflow_gmm import snakemake

# Three classes in general position in R^8 with equal stds: the means span 3 dimensions, so the exact curves are
# Monte Carlo averages of the exact posterior (with their own standard error). The components overlap at t = 0, so
# the trajectories' standard error is a fair measure of their error (see test_gmm).
TINY = {
    "experiments": {
        "cube": {
            "kind": "gmm",
            "mixture": {"dim": 8, "weights": [0.4, 0.35, 0.25], "mean_norm": 1.2, "mean_seed": 1,
                        "stds": [0.6, 0.6, 0.6], "class_names": ["a", "b", "c"]},
            "schedule": {"name": "linear", "T": 100},
            "sampling": {"steps": 25, "kernel": "exact", "init": "exact", "trajectories_per_class": 150, "seed": 2},
            "partitions": {"a_vs_bc": [["a"], ["b", "c"]]},
            "analysis": {"rate_smoothing": 1, "bootstrap_resamples": 100},
            "immse": {"samples": 300, "points": 16},
            "speciation": {"dims": [4, 64, 1024], "trajectories_per_class": 40, "steps": 40,
                           "bootstrap_resamples": 100},
            "plots": {"dpi": 50},
        }
    }
}
FIGURES = ("entropy", "entropy_rate", "rate_heatmap", "examples", "partitions", "decisions", "immse", "speciation")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("highdim_run")
    (d / "config.yaml").write_text(yaml.safe_dump(TINY))
    proc = snakemake(d)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return d


@pytest.mark.slow
def test_highdim_pipeline(run_dir):
    res = run_dir / "results" / "cube"
    summary = xr.open_dataset(res / "summary.nc").load()
    assert summary.attrs["exact_entropy_method"] == "monte carlo"
    for name in ("entropy_exact", "entropy_exact_se", "entropy_rate_exact", "entropy_marginal_exact",
                 "partition_entropy_exact", "partition_entropy_exact_se", "mutual_information_immse",
                 "decision_time_median", "entropy_rate_peak_time_exact"):
        assert name in summary, name
        assert {"long_name", "units"} <= set(summary[name].attrs), name
    assert "Monte Carlo" in summary["entropy_exact"].attrs["long_name"]
    # exact kernel and exact start: the online posterior is P(c | x_t), its entropy within 4 SE of the exact curve
    se = np.sqrt(summary["entropy_sem"] ** 2 + summary["entropy_exact_se"] ** 2)
    z = (np.abs(summary["entropy"] - summary["entropy_exact"]) / se).where(se > 1e-6)
    assert float(z.max()) < 4.0
    assert summary.attrs["posterior_max_abs_error_vs_exact"] < 1e-9
    assert summary.attrs["immse_max_abs_error_vs_exact_bits"] < 0.1
    # nothing stored grows with d; the decisions study reads every posterior instead of replaying paths
    posterior = xr.open_dataset(res / "posterior.nc")
    assert "posterior" in posterior and "x" not in posterior and 8 not in posterior.sizes.values()
    assert not (res / "paths.nc").exists()
    decisions = xr.open_dataset(res / "decisions.nc")
    assert decisions.attrs["posterior_source"].startswith("posterior of every trajectory")
    for fig in FIGURES:
        assert (res / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    assert not (res / "convergence.nc").exists()
    assert "step-convergence study is skipped" in (res / "logs" / "gmm_sample.log").read_text()


@pytest.mark.slow
def test_speciation_study_file(run_dir):
    ds = xr.open_dataset(run_dir / "results" / "cube" / "speciation.nc").load()
    assert ds["d"].values.tolist() == [4, 64, 1024] and ds.attrs["std"] == 0.6
    assert ds.attrs["rate_width_rescaled_exact_decreasing"] == 1
    offset = ds["peak_minus_speciation_exact"].values
    assert abs(offset[2] - offset[1]) < abs(offset[1] - offset[0])
    assert np.all(ds["posterior_max_abs_error"] < 1e-9)
    proc = snakemake(run_dir, "--report", "report.html", "results/cube/figures/speciation.png")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Speciation study of experiment" in (run_dir / "report.html").read_text()
