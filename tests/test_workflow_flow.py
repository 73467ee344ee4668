"""End-to-end: one Snakemake run with the flow-matching sources on tiny twins (issue 20): a Stable Diffusion 3 folder
(source sd3, prompts, T5 left out in one of them, one-vs-rest tracking in another) and the python source's velocity
networks on SiT's linear path (with a null label, so the I-MMSE study and guidance run) and GVP path.
"""

import json
import os

import numpy as np
import pytest
import xarray as xr
import yaml

from test_workflow_gmm import COORDS, snakemake
from twins import sd3_twin, velocity_twin

SAMPLING = {"steps": 4, "trajectories_per_class": 2, "shards": 1, "batch_size": 64, "snapshots": 3}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("flow_run")
    os.environ["HF_HUB_OFFLINE"] = "1"
    entry, params = velocity_twin(d / "linear", [-0.6, 0.0, 0.6], [0.4, 0.4, 0.4], "linear")
    gvp_entry, gvp_params = velocity_twin(d / "gvp", [-0.6, 0.6], [0.4, 0.4], "gvp")
    sd3 = str(sd3_twin(d / "sd3"))
    velocity = {"source": "python", "prediction": "velocity", "entry": entry, "path": params}
    config = {"experiments": {
        "sd3": {"kind": "ddpm", "sampling": SAMPLING, "immse": {"enable": False},
                "model": {"source": "sd3", "path": sd3, "prompts": ["a red cat", "a blue cat"]}},
        "sd3_no_t5": {"kind": "ddpm", "sampling": SAMPLING | {"tracking": "one_vs_rest"}, "immse": {"enable": False},
                      "model": {"source": "sd3", "path": str(sd3_twin(d / "sd3_no_t5", t5=False)),
                                "prompts": ["a red cat", "a blue cat", "a green cat"]}},
        "sit_linear": {"kind": "ddpm", "sampling": SAMPLING, "immse": {"samples": 8, "points": 4},
                       "model": velocity | {"path_kind": "linear", "null_label": 3,
                                            "class_names": ["a", "b", "c"]}},
        "sit_linear_guided": {"kind": "ddpm", "sampling": SAMPLING | {"guidance": {"scale": 2.0}},
                              "immse": {"enable": False},
                              "model": velocity | {"path_kind": "linear", "null_label": 3}},
        "sit_gvp": {"kind": "ddpm", "sampling": SAMPLING,
                    "model": {"source": "python", "prediction": "velocity", "path_kind": "gvp", "entry": gvp_entry,
                              "path": gvp_params}},
    }}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(d, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return d


def results(run_dir, name, file):
    return xr.open_dataset(run_dir / "results" / name / file, engine="netcdf4")


@pytest.mark.slow
@pytest.mark.parametrize("name, K", [("sd3", 2), ("sit_linear", 3), ("sit_linear_guided", 3), ("sit_gvp", 2)])
def test_each_flow_source_gives_the_summary_contract(run_dir, name, K):
    s = results(run_dir, name, "summary.nc")
    assert COORDS <= set(s.coords)
    assert {"entropy", "entropy_rate", "posterior_true", "entropy_marginal", "mutual_information", "filmstrip_x0",
            "decision_time_median"} <= set(s.data_vars)
    assert s.sizes["class"] == K and s.attrs["model_source"] in ("sd3", "python")
    adapter = json.loads(s.attrs["adapter"])
    assert adapter["prediction"].startswith("velocity_")
    np.testing.assert_allclose(s["entropy_marginal"].isel(time=-1), np.log2(K), atol=1e-6)  # prior start, x_T
    assert float(s["alpha_bar"].isel(time=-1)) == 0.0  # the chain starts at pure noise
    traj = results(run_dir, name, "trajectories.nc")
    np.testing.assert_allclose(traj["posterior"].sum("class"), 1.0, atol=1e-5)  # float32 storage
    for figure in ("entropy", "entropy_rate", "rate_heatmap", "examples", "filmstrip", "samples", "decisions"):
        assert (run_dir / "results" / name / "figures" / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_latents_decode_and_the_studies_run(run_dir):
    sd3 = results(run_dir, "sd3", "samples.nc")
    assert sd3["state"].shape == (4, 4, 8, 8) and sd3["image"].shape == (4, 3, 8, 8)
    assert sd3["image"].encoding["dtype"] == np.uint8
    assert json.loads(results(run_dir, "sd3", "summary.nc").attrs["adapter"])["t5_encoder"] is True
    s = results(run_dir, "sit_linear", "summary.nc")  # a null label: the I-MMSE study on the model's own samples
    assert "mutual_information_immse" in s
    assert "model_entropy" in results(run_dir, "sit_linear_guided", "summary.nc")
    ovr = results(run_dir, "sd3_no_t5", "summary.nc")
    assert json.loads(ovr.attrs["adapter"])["t5_encoder"] is False and ovr.sizes["class"] == 3


@pytest.mark.slow
def test_a_non_flow_scheduler_stops_before_any_job(run_dir, tmp_path):
    import shutil

    from diffusers import DDPMScheduler

    folder = tmp_path / "sd3"
    shutil.copytree(run_dir / "sd3", folder)
    shutil.rmtree(folder / "scheduler")
    DDPMScheduler().save_pretrained(folder / "scheduler")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["experiments"] = {"sd3": cfg["experiments"]["sd3"]}
    cfg["experiments"]["sd3"]["model"]["path"] = str(folder)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("seminfo: invalid configuration")]
    assert len(lines) == 1 and "experiments.sd3.model.path: " in lines[0] and "'DDPMScheduler' is not " \
        "FlowMatchEulerDiscreteScheduler" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()
