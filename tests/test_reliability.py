"""Failures explained, nothing lost: corrupt inputs, interruptions, reproducibility, provenance."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
import yaml

from seminfo.config import experiment_hash, validate_config
from seminfo.io import InputError, open_checked, write_netcdf
from seminfo.stages.shared import gmm_posterior, gmm_sample

from conftest import REPO
from test_workflow_ddpm import TINY_NET
from test_workflow_gmm import snakemake

GMM = {
    "kind": "gmm",
    "mixture": {"weights": [0.5, 0.5], "means": [-1, 1], "stds": [0.3, 0.3]},
    "schedule": {"name": "linear", "T": 50},
    "sampling": {"steps": 10, "trajectories_per_class": 5},
}


@pytest.fixture()
def spec(schema):
    return validate_config({"experiments": {"g": GMM}}, schema)["experiments"]["g"]


def test_same_seed_gives_bitwise_identical_results(spec, tmp_path):
    gmm_sample(spec, "g", tmp_path / "a.nc")
    gmm_sample(spec, "g", tmp_path / "b.nc")
    a, b = open_checked(tmp_path / "a.nc"), open_checked(tmp_path / "b.nc")
    np.testing.assert_array_equal(a["x"].values, b["x"].values)


def test_provenance_attributes(spec, tmp_path):
    gmm_sample(spec, "g", tmp_path / "paths.nc")
    ds = open_checked(tmp_path / "paths.nc")
    for attr in ("config_hash", "seed", "seminfo_version", "git_commit", "config", "experiment", "kind"):
        assert attr in ds.attrs, attr
    assert ds.attrs["config_hash"] == experiment_hash(spec)


def test_file_from_another_experiment_is_refused_by_name(spec, tmp_path):
    gmm_sample(spec, "g", tmp_path / "paths.nc")
    other = dict(spec, sampling=dict(spec["sampling"], seed=9))
    with pytest.raises(InputError, match=r"paths\.nc: was made for another configuration"):
        gmm_posterior(other, "g", tmp_path / "paths.nc", tmp_path / "posterior.nc")
    assert not (tmp_path / "posterior.nc").exists()


def test_nan_in_a_shard_is_refused_by_name(spec, tmp_path):
    gmm_sample(spec, "g", tmp_path / "paths.nc")
    ds = open_checked(tmp_path / "paths.nc")
    ds["x"][0, 3] = np.nan
    write_netcdf(ds, tmp_path / "paths.nc")
    with pytest.raises(InputError, match=r"paths\.nc: variable 'x' holds NaN"):
        gmm_posterior(spec, "g", tmp_path / "paths.nc", tmp_path / "posterior.nc")


def test_truncated_netcdf_is_refused_by_name(spec, tmp_path):
    gmm_sample(spec, "g", tmp_path / "paths.nc")
    data = (tmp_path / "paths.nc").read_bytes()
    (tmp_path / "paths.nc").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"paths\.nc: cannot be read as NetCDF"):
        gmm_posterior(spec, "g", tmp_path / "paths.nc", tmp_path / "posterior.nc")


def test_failed_write_leaves_no_file(tmp_path):
    ds = xr.Dataset({"a": ("x", np.arange(3.0))})

    class Boom(Exception):
        pass

    def explode(*args, **kwargs):
        raise Boom

    original = xr.Dataset.to_netcdf
    xr.Dataset.to_netcdf = explode
    try:
        with pytest.raises(Boom):
            write_netcdf(ds, tmp_path / "out.nc")
    finally:
        xr.Dataset.to_netcdf = original
    assert list(tmp_path.iterdir()) == []


def tiny_ddpm(steps_train=40, sampling_steps=8, per_class=3):
    return {
        "kind": "ddpm",
        "data": {"name": "digits", "classes": [0, 1], "limit_per_class": 30},
        "model": TINY_NET,
        "schedule": {"name": "linear", "T": 100},
        "train": {"steps": steps_train, "batch_size": 16, "checkpoint_every": 10, "warmup": 2},
        "sampling": {"steps": sampling_steps, "trajectories_per_class": per_class, "batch_size": 8},
    }


@pytest.mark.slow
def test_corrupt_checkpoint_stops_the_workflow_with_the_file_named(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"experiments": {"d": tiny_ddpm(steps_train=3)}}))
    proc = snakemake(tmp_path, "results/d/model/model.safetensors")
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = tmp_path / "results" / "d" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = snakemake(tmp_path, "results/d/shards/sample_0.nc", "--force")
    assert proc.returncode != 0
    assert "seminfo (ddpm_sample):" in proc.stderr and "model.safetensors" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "results" / "d" / "shards" / "sample_0.nc").exists()


@pytest.mark.slow
def test_edge_cases_run(tmp_path):
    """Valid edge cases: K = 2, one shard, S = T, S = 2."""
    cfg = {"experiments": {
        "s_equals_T": dict(GMM, schedule={"name": "linear", "T": 20}, sampling={"steps": 20, "trajectories_per_class": 3}),
        "two_steps": dict(GMM, sampling={"steps": 2, "trajectories_per_class": 3, "kernel": "ddpm"}),
        "ddpm_k2": tiny_ddpm(steps_train=2, sampling_steps=2, per_class=2),
    }}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, n_times in (("s_equals_T", 21), ("two_steps", 2), ("ddpm_k2", 2)):
        ds = xr.open_dataset(tmp_path / "results" / name / "summary.nc", engine="netcdf4")
        assert ds.sizes["time"] == n_times and ds.sizes["class"] == 2


def _wait_for(path, timeout=120):
    start = time.time()
    while not path.exists():
        if time.time() - start > timeout:
            raise TimeoutError(path)
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_training_resumes_and_continues_the_loss_trajectory(tmp_path):
    """SIGKILL the training job after its first checkpoint; the rerun resumes from that checkpoint and its
    losses continue those of an uninterrupted run exactly."""
    for name in ("killed", "straight"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump({"experiments": {"d": tiny_ddpm()}}))
    target = "results/d/model/model.safetensors"
    assert snakemake(tmp_path / "straight", target).returncode == 0
    d = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(d), "--cores", "2", target],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    _wait_for(d / "results" / "d" / "model" / "work" / "checkpoints" / "step_00000010" / "state.json")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (d / target).exists()
    assert snakemake(d, "--unlock").returncode == 0  # a killed Snakemake leaves its lock behind
    rerun = snakemake(d, target, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (d / "results" / "d" / "logs" / "ddpm_train.log").read_text()
    assert "resuming from step" in log
    killed = (d / "results" / "d" / "model" / "work" / "loss.tsv").read_text()
    straight = (tmp_path / "straight" / "results" / "d" / "model" / "work" / "loss.tsv").read_text()
    assert killed == straight


@pytest.mark.slow
def test_killed_sampling_leaves_no_complete_looking_file(tmp_path):
    cfg = {"experiments": {"d": tiny_ddpm(steps_train=2, sampling_steps=60, per_class=150)}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert snakemake(tmp_path, "results/d/model/model.safetensors").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    log = tmp_path / "results" / "d" / "logs" / "ddpm_sample_0.log"
    _wait_for(log)
    while "trajectories" not in log.read_text():  # sampling has started
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shards = tmp_path / "results" / "d" / "shards"
    assert not (shards / "sample_0.nc").exists()
    assert not any(p.suffix == ".nc" for p in shards.glob("*")) if shards.exists() else True
    assert snakemake(tmp_path, "--unlock").returncode == 0
    rerun = snakemake(tmp_path, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "results" / "d" / "summary.nc").exists()
