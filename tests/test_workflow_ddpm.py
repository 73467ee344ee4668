"""End-to-end DDPM runs of the workflow on tiny configs: digits with 1 vs 4 shards, and a fake CIFAR10, with the GPU
jobs spread over two simulated GPUs."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import yaml

from seminfo.ddpm.data import write_fake_cifar10

from conftest import REPO
from test_workflow_gmm import COORDS, snakemake

SIMULATED_GPUS = ("sim0", "sim1")
TINY_NET = {"preset": "digits", "block_out_channels": [16, 32], "layers_per_block": 1, "attention_resolutions": [],
            "mid_attention": False, "norm_num_groups": 8}


def digits(shards):
    return {
        "kind": "ddpm",
        "data": {"name": "digits", "classes": [0, 1, 7], "limit_per_class": 40},
        "model": TINY_NET,
        "schedule": {"name": "linear", "T": 100},
        "train": {"steps": 12, "batch_size": 32, "checkpoint_every": 5, "warmup": 2},
        "sampling": {"steps": 8, "trajectories_per_class": 4, "shards": shards, "batch_size": 24, "snapshots": 3},
        "partitions": {"zero_vs_rest": [["0"], ["1", "7"]]},
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddpm_run")
    write_fake_cifar10(d / "cifar", n_per_class=3)
    config = {"experiments": {
        "one_shard": digits(1),
        "four_shards": digits(4),
        "cifar": {
            "kind": "ddpm",
            "data": {"name": "cifar10", "root": str(d / "cifar"), "classes": [3, 5], "verify_checksums": False},
            "model": {"preset": "cifar10_ddpm", "block_out_channels": [8, 16], "layers_per_block": 1,
                      "attention_resolutions": [16], "norm_num_groups": 4},
            "schedule": {"name": "cosine", "T": 50},
            "train": {"steps": 3, "batch_size": 4},
            "sampling": {"steps": 4, "trajectories_per_class": 2, "batch_size": 8, "variance": "large"},
        },
    }}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    # Two GPU jobs at a time, each holding one of two simulated devices (seminfo.gpu_pool). CUDA, where there is
    # one, matches neither name and shows the jobs no device, so they run on the CPU as on a CPU-only machine.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CUDA_VISIBLE_DEVICES", ",".join(SIMULATED_GPUS))
        env.delenv("SLURM_JOB_ID", raising=False)
        proc = snakemake(d, "--resources", f"gpu={len(SIMULATED_GPUS)}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return d


@pytest.mark.slow
def test_summary_has_the_gmm_contract_without_exact_curves(run_dir):
    ds = xr.open_dataset(run_dir / "results" / "one_shard" / "summary.nc", engine="netcdf4")
    assert COORDS <= set(ds.coords)
    assert {"entropy", "entropy_sem", "entropy_rate", "posterior_true", "entropy_marginal", "mutual_information",
            "entropy_var", "partition_entropy", "filmstrip_x0"} <= set(ds.data_vars)
    assert not any(name.endswith("_exact") for name in ds.data_vars)
    assert list(ds["class"].values) == ["0", "1", "7"]
    assert ds.attrs["kind"] == "ddpm"
    np.testing.assert_allclose(ds["entropy"].isel(time=-1), np.log2(3), atol=1e-6)
    assert ds["time"].values[0] > 0  # small variance: the grid ends at the last stochastic step


@pytest.mark.slow
def test_one_and_four_shards_agree(run_dir):
    a = xr.open_dataset(run_dir / "results" / "one_shard" / "trajectories.nc", engine="netcdf4")
    b = xr.open_dataset(run_dir / "results" / "four_shards" / "trajectories.nc", engine="netcdf4")
    np.testing.assert_array_equal(a["traj"], b["traj"])
    assert np.abs(a["posterior"].values - b["posterior"].values).max() < 1e-6
    sa = xr.open_dataset(run_dir / "results" / "one_shard" / "summary.nc", engine="netcdf4")
    sb = xr.open_dataset(run_dir / "results" / "four_shards" / "summary.nc", engine="netcdf4")
    assert np.abs(sa["entropy"].values - sb["entropy"].values).max() < 1e-6
    assert len(list((run_dir / "results" / "four_shards" / "shards").glob("sample_*.nc"))) == 4


@pytest.mark.slow
def test_samples_and_figures(run_dir):
    s = xr.open_dataset(run_dir / "results" / "cifar" / "samples.nc", engine="netcdf4")
    assert s["image"].dims == ("sample", "channel", "y", "x") and s["image"].shape == (4, 3, 32, 32)
    assert float(s["image"].min()) >= 0 and float(s["image"].max()) <= 1
    assert list(s["label"].values) == [0, 0, 1, 1]
    for name in ("entropy", "entropy_rate", "rate_heatmap", "examples", "filmstrip", "samples"):
        png = run_dir / "results" / "cifar" / "figures" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "results" / "one_shard" / "quality.json").exists()
    assert not (run_dir / "results" / "cifar" / "quality.json").exists()


@pytest.mark.slow
def test_changing_sampling_does_not_retrain(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["experiments"]["one_shard"]["sampling"]["trajectories_per_class"] = 5
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(run_dir, "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "ddpm_sample" in out and "ddpm_train" not in out, out


@pytest.mark.slow
def test_gpu_jobs_held_a_device_and_their_shards_are_those_of_one_device(run_dir, tmp_path, monkeypatch):
    """Every GPU job of the run held one of the simulated devices (its log says which) and no CPU job did; a shard
    sampled under the pool is bitwise the same shard sampled again here, in one process on one device."""
    import torch

    from seminfo.stages import network as network_stages

    res = run_dir / "results"
    held = re.compile(rf"GPU ({'|'.join(SIMULATED_GPUS)}) of {','.join(SIMULATED_GPUS)} ")
    gpu_logs = {p for rule in ("ddpm_train", "ddpm_sample_*", "immse") for p in res.glob(f"*/logs/{rule}.log")}
    assert len(gpu_logs) == 3 + 6 + 3 and all(held.search(p.read_text()) for p in gpu_logs), gpu_logs
    assert all("threads 1\n" in p.read_text() for p in gpu_logs)  # --cores 2 shared by --resources gpu=2
    cpu_logs = set(res.glob("*/logs/*.log")) - gpu_logs
    assert cpu_logs and not any("seminfo.gpu_pool" in p.read_text() for p in cpu_logs)
    shard_of = {held.search((res / "four_shards" / "logs" / f"ddpm_sample_{i}.log").read_text())[1]: i
                for i in range(4)}  # one shard per device that was used
    monkeypatch.setattr(network_stages, "device", lambda: torch.device("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the jobs' threads: 2 cores shared by 2 GPU jobs
    try:
        for shard in shard_of.values():
            ran = xr.load_dataset(res / "four_shards" / "shards" / f"sample_{shard}.nc", engine="netcdf4")
            network_stages.sample_shard(json.loads(ran.attrs["config"]), "four_shards",
                                        res / "four_shards" / "model" / "model.safetensors", shard,
                                        tmp_path / f"sample_{shard}.nc")
            again = xr.load_dataset(tmp_path / f"sample_{shard}.nc", engine="netcdf4")
            assert set(again.data_vars) == set(ran.data_vars)
            for name in ran.data_vars:
                np.testing.assert_array_equal(again[name].values, ran[name].values, err_msg=f"{shard}: {name}")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("resources, threads", [((), 8), (("--resources", "gpu=1"), 8), (("--resources", "gpu=4"), 2),
                                                (("--resources", "gpu=16"), 1)])
def test_gpu_jobs_share_the_cores_among_the_gpus(tmp_path, resources, threads):
    """With --resources gpu=N the GPU jobs get cores // N threads each, so that N of them fit side by side."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"experiments": {"d": digits(2)}}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "-n", "--cores", "8", *resources], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [(rule, int(m[1]) if (m := re.search(r"^    threads: (\d+)$", body, re.M)) else 1)
            for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)*)", proc.stdout, re.M)]
    gpu_rules = {"ddpm_train", "ddpm_sample", "immse"}
    assert {rule for rule, _ in jobs} >= gpu_rules | {"ddpm_posterior"}
    assert {n for rule, n in jobs if rule in gpu_rules} == {threads}
    assert {n for rule, n in jobs if rule == "ddpm_posterior"} == {1}


@pytest.mark.slow
def test_own_model_chain_and_health_are_recorded(run_dir):
    """The own UNet samples on the even grid from T without clipping, as it always has; its health checks include the
    independent classifier's agreement (digits) and the I-MMSE inputs' range (its data, inside [-1, 1])."""
    import json

    ds = xr.open_dataset(run_dir / "results" / "one_shard" / "summary.nc", engine="netcdf4")
    assert ds.attrs["timestep_spacing"] == "even" and ds.attrs["x0_clipping"] == "none"
    assert ds.attrs["chain_start_time"] == int(ds["time"].values[-1]) == 100 and "scheduler_timesteps" not in ds.attrs
    quality = json.loads((run_dir / "results" / "one_shard" / "quality.json").read_text())
    assert ds.attrs["health_sample_agreement"] == quality["sample_label_agreement"]
    assert ds.attrs["health_immse_inputs"] == 0.0 and ds.attrs["immse_input_bound"] == 1.5
    report = json.loads((run_dir / "results" / "one_shard" / "health.json").read_text())
    assert set(report["checks"]) == {"state_range", "first_step", "immse_inputs", "sample_agreement"}
    assert ds.attrs["health_failed"] == (", ".join(report["failed"]) or "none")
