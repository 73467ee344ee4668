"""End-to-end: one Snakemake run with one experiment per pretrained source, each on its tiny twin (acceptance 1), and
a twin built to explode at its first step, whose health checks fail (issue 18).

The twins are written with the libraries' save_pretrained and loaded by the workflow through the real path, with
hub access off.
"""

import json
import os

import numpy as np
import pytest
import xarray as xr
import yaml

from test_workflow_gmm import COORDS, snakemake
from twins import diffusers_twin, dit_twin, gauss_twin, sd_twin

SAMPLING = {"steps": 4, "trajectories_per_class": 2, "shards": 1, "batch_size": 64, "snapshots": 3}
STUDY = {"samples": 8, "points": 4}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapters_run")
    os.environ["HF_HUB_OFFLINE"] = "1"
    entry, params = gauss_twin(d / "gauss", [-0.6, 0.0, 0.6], [0.4, 0.4, 0.4], shape=(1, 8, 8))
    config = {"experiments": {
        "unet": {"kind": "ddpm", "sampling": SAMPLING, "immse": STUDY,
                 "model": {"source": "diffusers", "path": str(diffusers_twin(d / "unet", "v_prediction", null_label=3,
                                                                              class_scale=3.0)),
                           "null_label": 3, "class_names": ["zero", "one", "two"]}},
        "dit": {"kind": "ddpm", "sampling": SAMPLING, "immse": STUDY,
                "model": {"source": "dit", "path": str(dit_twin(d / "dit", class_scale=0.3)),
                          "classes": ["golden retriever", "Labrador retriever", 4]},
                "partitions": {"dogs_vs_cat": [["golden retriever", "Labrador retriever"], ["tabby"]]}},
        "unet_guided": {"kind": "ddpm", "sampling": SAMPLING | {"guidance": {"scale": 2.0}}, "immse": STUDY,
                        "model": {"source": "diffusers", "path": str(d / "unet"), "null_label": 3,
                                  "class_names": ["zero", "one", "two"]}},
        "sd": {"kind": "ddpm", "sampling": SAMPLING, "immse": {"enable": False},
               "model": {"source": "stable_diffusion", "path": str(sd_twin(d / "sd")),
                         "prompts": ["a red cat", "a blue cat"]}},
        "edm": {"kind": "ddpm", "sampling": SAMPLING | {"sigma_min": 0.01, "sigma_max": 20.0},
                "model": {"source": "python", "path": params, "entry": entry, "class_names": ["a", "b", "c"]}},
        "broken": {"kind": "ddpm", "sampling": SAMPLING, "immse": {"enable": False},
                   "model": {"source": "diffusers", "path": str(diffusers_twin(
                       d / "broken", class_scale=3.0, out_scale=100.0,
                       scheduler_kw={"timestep_spacing": "trailing"}))}},
    }}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(d, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    (d / "console.txt").write_text(proc.stderr)
    return d


def results(run_dir, name, file):
    return xr.open_dataset(run_dir / "results" / name / file, engine="netcdf4")


@pytest.mark.slow
@pytest.mark.parametrize("name, K", [("unet", 3), ("dit", 3), ("sd", 2), ("edm", 3)])
def test_each_adapter_gives_the_summary_contract(run_dir, name, K):
    s = results(run_dir, name, "summary.nc")
    assert COORDS <= set(s.coords)
    assert {"entropy", "entropy_sem", "entropy_rate", "posterior_true", "entropy_marginal", "mutual_information",
            "filmstrip_x0", "decision_time_median", "entropy_rate_peak_time"} <= set(s.data_vars)
    assert s.sizes["class"] == K and s.attrs["kind"] == "ddpm"
    assert json.loads(s.attrs["adapter"])["source"] == s.attrs["model_source"]
    np.testing.assert_allclose(s["entropy_marginal"].isel(time=-1), np.log2(K), atol=1e-6)  # prior start
    traj = results(run_dir, name, "trajectories.nc")
    np.testing.assert_allclose(traj["posterior"].sum("class"), 1.0, atol=1e-5)  # float32 storage
    for figure in ("entropy", "entropy_rate", "rate_heatmap", "examples", "filmstrip", "samples", "decisions"):
        assert (run_dir / "results" / name / "figures" / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run_dir / "results" / name / "model" / "adapter.json").read_text())
    assert record["describe"]["conditions"] == list(s["class"].values) and len(record["fingerprint"]["sha256"]) == 64
    assert not (run_dir / "results" / name / "model" / "model.safetensors").exists()  # nothing was trained


@pytest.mark.slow
def test_names_partitions_and_the_immse_study(run_dir):
    assert list(results(run_dir, "dit", "summary.nc")["class"].values) == ["golden retriever", "Labrador retriever",
                                                                          "tabby"]
    assert "partition_entropy" in results(run_dir, "dit", "summary.nc")
    assert list(results(run_dir, "unet", "summary.nc")["class"].values) == ["zero", "one", "two"]
    for name in ("unet", "dit"):  # a null condition: I-MMSE on the model's own samples (sd: turned off, for time)
        s = results(run_dir, name, "summary.nc")
        assert "mutual_information_immse" in s and "own generated samples" in s.attrs["immse_denoisers"]
    assert not (run_dir / "results" / "edm" / "immse.nc").exists()  # no null condition: no I-MMSE study
    assert "mutual_information_immse" not in results(run_dir, "edm", "summary.nc")


@pytest.mark.slow
def test_samples_keep_states_and_latent_images_are_8_bit(run_dir):
    dit = results(run_dir, "dit", "samples.nc")
    assert dit["state"].shape == (6, 4, 8, 8) and dit["image"].shape == (6, 3, 8, 8)
    assert dit["image"].encoding["dtype"] == np.uint8 and 0 <= float(dit["image"].min()) <= float(dit["image"].max()) <= 1
    assert results(run_dir, "dit", "summary.nc")["filmstrip_x0"].encoding["dtype"] == np.uint8
    unet = results(run_dir, "unet", "samples.nc")  # a pixel model: images as before (float32), and its states
    assert unet["image"].encoding["dtype"] == np.float32 and unet["state"].shape == (6, 1, 8, 8)


@pytest.mark.slow
def test_replacing_the_model_reruns_from_model_check(run_dir):
    weights = run_dir / "unet" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes())  # a new copy of the file
    proc = snakemake(run_dir, "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "model_check" in out and "ddpm_sample" in out, out


@pytest.mark.slow
def test_a_missing_model_folder_stops_before_any_job(run_dir, tmp_path):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["experiments"]["dit"]["model"]["path"] = str(tmp_path / "gone")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert f"seminfo: invalid configuration: experiments.dit.model.path: '{tmp_path / 'gone'}' does not exist " \
           "(rule: model-folder)" in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_guided_pretrained_model_skips_what_needs_unguided_samples(run_dir):
    """With guidance a pretrained model's samples are guided, not draws of its p(x0 | c): the I-MMSE study (on by
    default) and the speciation time, which take x0 from them, are skipped, and the files say why; the rest runs."""
    res = run_dir / "results" / "unet_guided"
    assert not (res / "immse.nc").exists()
    s = results(run_dir, "unet_guided", "summary.nc")
    assert "guided samples" in s.attrs["speciation_skipped"] and "speciation_time" not in s.attrs
    assert {"entropy", "model_entropy", "decision_time_median"} <= set(s.data_vars)
    assert (res / "figures" / "decisions.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_chain_is_the_pipelines_and_its_grid_is_recorded(run_dir):
    """Each diffusers-format twin sampled on its scheduler's own grid (DDPMScheduler's default leading spacing; the
    Stable Diffusion twin with steps_offset 1; the broken twin's trailing), recorded in every output, and the time axis
    starts where the chain starts."""
    from diffusers import DDPMScheduler

    for name in ("unet", "dit", "sd", "broken"):
        s = results(run_dir, name, "summary.nc")
        folder = json.loads(s.attrs["config"])["model"]["path"]
        sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
        sched.set_timesteps(SAMPLING["steps"])
        np.testing.assert_array_equal(np.atleast_1d(s.attrs["scheduler_timesteps"]), sched.timesteps.numpy())
        assert s.attrs["timestep_spacing"] == sched.config.timestep_spacing
        assert s.attrs["chain_start_time"] == int(s["time"].values[-1]) == int(sched.timesteps[0]) + 1
        assert s.attrs["steps_offset"] == (sched.config.steps_offset if s.attrs["timestep_spacing"] == "leading" else 0)
    assert results(run_dir, "unet", "summary.nc").attrs["chain_start_time"] < 100  # leading: below T
    assert results(run_dir, "edm", "summary.nc").attrs["timestep_spacing"] == "even"  # its Karras sigma grid


@pytest.mark.slow
def test_a_chain_that_explodes_fails_its_health_checks_with_a_warning(run_dir):
    """The twin whose output is scaled by 100, from tau = T - 1: its summary.nc, health.json and the console name the
    failed checks and what to try; every run has its checks, and the exact Gaussian denoiser's states stay in range
    (its 4-step grid is coarse: first_step may fail, with the sigma grid's advice)."""
    broken = results(run_dir, "broken", "summary.nc")
    assert broken.attrs["health_failed"] == "state_range, first_step"
    assert broken.attrs["health_state_range"] > 0.5 and broken.attrs["health_first_step"] > 0.9
    assert "timestep spacing" in broken.attrs["health_advice"]
    report = json.loads((run_dir / "results" / "broken" / "health.json").read_text())
    assert report["failed"] == ["state_range", "first_step"] and report["details"]["state_max_abs"] > 10
    console = (run_dir / "console.txt").read_text()
    assert "seminfo (health) warning: broken: health check state_range failed" in console
    assert "seminfo (health) warning: broken: health check first_step failed" in console
    for name in ("unet", "dit", "sd", "edm"):
        assert (run_dir / "results" / name / "health.json").is_file()
        assert {"health_failed", "health_state_range", "health_first_step"} <= set(results(run_dir, name,
                                                                                           "summary.nc").attrs)
    edm = results(run_dir, "edm", "summary.nc")
    assert edm.attrs["health_state_range"] == 0.0 and "edm: health check state_range" not in console
    assert "timestep_spacing" not in edm.attrs["health_advice"]
    unet = results(run_dir, "unet", "summary.nc")  # the I-MMSE inputs' range is checked where the study runs
    assert "health_immse_inputs" in unet.attrs and unet.attrs["immse_input_bound"] == 1.5
