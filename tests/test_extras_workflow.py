"""End-to-end: the study rules (workflow/rules/extras.smk) on a tiny Gaussian mixture, and the HTML report."""

import numpy as np
import pytest
import xarray as xr
import yaml

from test_workflow_gmm import snakemake

TINY = {
    "experiments": {
        "pair": {
            "kind": "gmm",
            "mixture": {"weights": [0.6, 0.4], "means": [-1.0, 1.0], "stds": [0.4, 0.3], "class_names": ["a", "b"]},
            "schedule": {"name": "linear", "T": 100},
            "sampling": {"steps": 25, "trajectories_per_class": 40, "seed": 1},
            "analysis": {"rate_smoothing": 1, "decision_threshold": 0.8, "bootstrap_resamples": 100},
            "immse": {"samples": 400, "points": 24},
            "convergence": {"steps": [10, 25, 100], "trajectories_per_class": 30},
            "plots": {"dpi": 50},
        }
    }
}
STUDIES = ("immse", "decisions", "convergence")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("extras_run")
    (d / "config.yaml").write_text(yaml.safe_dump(TINY))
    targets = [f"results/pair/{s}.nc" for s in STUDIES + ("summary",)]
    targets += [f"results/pair/figures/{s}.png" for s in STUDIES]
    proc = snakemake(d, *targets)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return d


@pytest.mark.slow
def test_study_files(run_dir):
    res = run_dir / "results" / "pair"
    immse = xr.open_dataset(res / "immse.nc")
    summary = xr.open_dataset(res / "summary.nc")
    np.testing.assert_array_equal(immse["time"], summary["time"])
    # summary.nc carries the studies' per-class and per-time results, unchanged, and not the per-trajectory ones
    np.testing.assert_array_equal(summary["mutual_information_immse"], immse["mutual_information_immse"])
    assert summary.attrs["immse_discrepancy_max_abs_bits"] == immse.attrs["discrepancy_max_abs_bits"]
    assert "traj" not in summary.dims and "point" not in summary.dims
    assert immse.attrs["discrepancy_max_abs_bits"] < 0.1
    assert immse.attrs["immse_max_abs_error_vs_exact_bits"] < 0.05
    decisions = xr.open_dataset(res / "decisions.nc")
    assert decisions.attrs["decision_threshold"] == 0.8 and decisions.attrs["bootstrap_resamples"] == 100
    assert decisions.sizes["class"] == 2 and decisions.sizes["traj"] == 80
    for name in ("decision_time_median", "decision_time_ci_low", "decision_time_ci_high", "entropy_rate_peak_time",
                 "entropy_rate_peak_time_ci_low", "entropy_rate_peak_time_ci_high"):
        assert summary[name].dims == ("class",)
        np.testing.assert_array_equal(summary[name], decisions[name])
    assert summary.attrs["decision_threshold"] == 0.8
    # the bands of the profiles and the intervals of decisions.nc come from the same configured bootstrap
    assert summary.attrs["bootstrap_resamples"] == 100 and "entropy_rate_ci_low" in summary
    assert decisions["peak_time_difference"].dims == ("class", "class_b")
    assert summary.attrs["decision_peak_curves"] == decisions.attrs["peak_curves"]
    # the median decision time lies inside its bootstrap interval, and the interval on the time grid
    assert np.all(summary["decision_time_ci_low"] <= summary["decision_time_median"])
    assert np.all(summary["decision_time_median"] <= summary["decision_time_ci_high"])
    convergence = xr.open_dataset(res / "convergence.nc")
    assert convergence["steps"].values.tolist() == [10, 25, 100]
    for s in STUDIES:
        assert (res / "figures" / f"{s}.png").stat().st_size > 1000
        assert (res / "logs" / f"{s}.log").exists()


@pytest.mark.slow
def test_report_has_every_study_figure_with_its_caption(run_dir):
    targets = [f"results/pair/figures/{s}.png" for s in STUDIES]
    proc = snakemake(run_dir, "--report", "report.html", *targets)
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (run_dir / "report.html").read_text()
    for caption in ("Mutual information I(c; x_t) of experiment", "When each class of experiment",
                    "Step convergence on experiment"):
        assert caption in html, caption
    # the decisions caption carries the run's key numbers, read from its summary.nc when the report is made
    summary = xr.open_dataset(run_dir / "results" / "pair" / "summary.nc")
    for k in range(2):
        median = "{:.0f} [{:.0f}, {:.0f}]".format(*(summary[v].values[k] for v in (
            "decision_time_median", "decision_time_ci_low", "decision_time_ci_high")))
        peak = "{:.0f} [{:.0f}, {:.0f}] (exact {:.0f})".format(*(summary[v].values[k] for v in (
            "entropy_rate_peak_time", "entropy_rate_peak_time_ci_low", "entropy_rate_peak_time_ci_high",
            "entropy_rate_peak_time_exact")))
        assert median in html and peak in html, (median, peak)
    assert "Median decision time of each class" in html and "T = 100;" in html
