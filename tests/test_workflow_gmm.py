"""End-to-end: the Snakemake workflow on a tiny Gaussian-mixture config (acceptance 6)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import yaml

from conftest import REPO

TINY = {
    "experiments": {
        "quad": {
            "kind": "gmm",
            "mixture": {"weights": [0.25, 0.25, 0.25, 0.25], "means": [-1.5, -0.9, 0.9, 1.5],
                        "stds": [0.2, 0.2, 0.2, 0.2], "class_names": ["a", "b", "c", "d"]},
            "schedule": {"name": "linear", "T": 200},
            "sampling": {"steps": 50, "trajectories_per_class": 40, "seed": 3},
            "partitions": {"coarse": [["a", "b"], ["c", "d"]], "fine": [[0], [1]]},
        },
        "pair_ddpm": {
            "kind": "gmm",
            "mixture": {"weights": [0.7, 0.3], "means": [-1.0, 1.0], "stds": [0.4, 0.3]},
            "schedule": {"name": "cosine", "T": 100},
            "sampling": {"steps": 100, "kernel": "ddpm", "variance": "small", "trajectories_per_class": 30},
            "analysis": {"rate_smoothing": 2},
        },
    }
}

COORDS = {"class", "time", "t", "alpha_bar", "log_snr"}
VARIABLES = {"entropy", "entropy_sem", "entropy_rate", "posterior_true", "entropy_marginal",
             "mutual_information", "entropy_var", "entropy_exact", "entropy_rate_exact", "entropy_marginal_rate"}
BANDED = ("entropy", "entropy_rate", "entropy_marginal", "mutual_information", "entropy_marginal_rate")


def snakemake(workdir, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
         *args], capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gmm_run")
    (d / "config.yaml").write_text(yaml.safe_dump(TINY))
    proc = snakemake(d)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return d


@pytest.mark.slow
def test_summary_contract(run_dir):
    for name, spec in TINY["experiments"].items():
        ds = xr.open_dataset(run_dir / "results" / name / "summary.nc", engine="netcdf4")
        assert set(ds.dims) >= {"class", "time"}
        assert COORDS <= set(ds.coords)
        assert VARIABLES <= set(ds.data_vars)
        for curve in BANDED:  # every curve has its bootstrap band, on the curve's dimensions
            assert ds[f"{curve}_ci_low"].dims == ds[f"{curve}_ci_high"].dims == ds[curve].dims, curve
            assert bool((ds[f"{curve}_ci_low"] <= ds[f"{curve}_ci_high"]).all()), curve
        K = len(spec["mixture"]["weights"])
        assert ds.sizes["class"] == K
        times = ds["time"].values
        assert np.all(np.diff(times) > 0) and times[-1] == spec["schedule"]["T"]
        np.testing.assert_allclose(ds["t"], times / spec["schedule"]["T"])
        for var in list(ds.data_vars) + list(ds.coords):
            assert "long_name" in ds[var].attrs, var
            if var != "class" and var != "partition":
                assert "units" in ds[var].attrs, var
        for unit_var in ("entropy", "entropy_sem", "mutual_information", "entropy_marginal"):
            assert ds[unit_var].attrs["units"] == "bit"
        for attr in ("experiment", "kind", "config", "seed", "n_trajectories", "seminfo_version", "config_hash"):
            assert attr in ds.attrs, attr
        assert ds.attrs["experiment"] == name and ds.attrs["kind"] == "gmm"
        assert json.loads(ds.attrs["config"])["mixture"]["means"] == spec["mixture"]["means"]
        assert ds.attrs["n_trajectories"] == K * spec["sampling"]["trajectories_per_class"]
        # invariants: H at t = T is the prior entropy; I = H(c) - H(c | x_t); entropies within [0, log2 K]
        prior = np.asarray(spec["mixture"]["weights"])
        np.testing.assert_allclose(ds["entropy"].isel(time=-1), -(prior * np.log2(prior)).sum(), atol=1e-6)
        np.testing.assert_allclose(ds["mutual_information"] + ds["entropy_marginal"],
                                   -(prior * np.log2(prior)).sum(), atol=1e-9)
        assert float(ds["entropy"].min()) >= 0 and float(ds["entropy"].max()) <= np.log2(K) + 1e-6
        ds.close()


@pytest.mark.slow
def test_partitions_and_time_grid(run_dir):
    ds = xr.open_dataset(run_dir / "results" / "quad" / "summary.nc", engine="netcdf4")
    assert list(ds["partition"].values) == ["coarse", "fine"]
    assert {"partition_entropy", "partition_entropy_rate", "partition_entropy_exact", "partition_entropy_ci_low",
            "partition_entropy_rate_ci_high"} <= set(ds.data_vars)
    assert float(ds["partition_entropy"].max()) <= 1 + 1e-6
    assert ds["time"].values[0] == 0  # the exact kernel is stochastic down to t = 0
    ds2 = xr.open_dataset(run_dir / "results" / "pair_ddpm" / "summary.nc", engine="netcdf4")
    assert ds2["time"].values[0] == 1  # small variance: the last DDPM step is deterministic, no Bayes update
    assert "partition" not in ds2.dims


@pytest.mark.slow
def test_figures_written(run_dir):
    for name, figs in {"quad": ["entropy", "entropy_rate", "rate_heatmap", "examples", "partitions"],
                       "pair_ddpm": ["entropy", "entropy_rate", "rate_heatmap", "examples"]}.items():
        for fig in figs:
            png = run_dir / "results" / name / "figures" / f"{fig}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert not (run_dir / "results" / "pair_ddpm" / "figures" / "partitions.png").exists()
    for log in (run_dir / "results" / "quad" / "logs").iterdir():
        assert "done in" in log.read_text(), log


@pytest.mark.slow
def test_second_run_does_nothing_and_plot_option_reruns_only_plots(run_dir):
    proc = snakemake(run_dir, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["experiments"]["quad"]["plots"] = {"dpi": 80}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(run_dir, "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0
    assert "plot_profiles" in out and "plot_partitions" in out
    for rule in ("gmm_sample", "gmm_posterior", "aggregate"):
        assert rule not in out, out
