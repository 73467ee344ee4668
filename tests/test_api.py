"""The Python API (seminfo.measure, seminfo.plot) against the workflow's own outputs for the same settings."""

import subprocess
import sys

import matplotlib.figure
import numpy as np
import pytest
import xarray as xr
import yaml

import seminfo
from seminfo.config import ConfigError
from conftest import REPO

# Attributes that say where and when a file was made, not what it holds (seminfo.io.provenance).
PROVENANCE = ("seminfo_version", "git_commit")

MIXTURE = {"weights": [0.3, 0.3, 0.4], "means": [-1.2, 0.2, 1.4], "stds": [0.3, 0.25, 0.3],
           "class_names": ["a", "b", "c"]}
SETTINGS = {"steps": 12, "trajectories_per_class": 6, "seed": 5, "schedule": {"name": "linear", "T": 60},
            "partitions": {"ab_c": [["a", "b"], ["c"]]}, "studies": {"immse": {"samples": 60, "points": 8}}}


def snakemake(workdir, *targets, timeout=600):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "--cores", "2", *targets], capture_output=True, text=True, timeout=timeout)


def workflow_experiment(target, settings: dict) -> dict:
    """The config.yaml experiment of ``measure(target, **settings)`` (a mixture)."""
    spec = {"kind": "gmm", "mixture": target, "schedule": settings["schedule"],
            "sampling": {k: settings[k] for k in ("steps", "trajectories_per_class", "seed")}}
    return spec | {k: v for k, v in settings.items() if k == "partitions"} | settings.get("studies", {})


def assert_same_file(api_path, workflow_path):
    with xr.open_dataset(api_path) as a, xr.open_dataset(workflow_path) as w:
        a, w = a.load(), w.load()
    for ds in (a, w):
        for key in PROVENANCE:
            ds.attrs.pop(key, None)
    xr.testing.assert_identical(a, w)  # values bitwise, dtypes, coordinates, variable and global attributes


@pytest.fixture(scope="module")
def mixture_runs(tmp_path_factory):
    """The workflow's results/pair/ and measure()'s folder for the same tiny mixture experiment."""
    d = tmp_path_factory.mktemp("api_gmm")
    config = {"experiments": {"pair": workflow_experiment(MIXTURE, SETTINGS)}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(d, "results/pair/summary.nc")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = seminfo.measure(MIXTURE, name="pair", folder=d / "api", progress=False, **SETTINGS)
    return d / "results" / "pair", run


def test_mixture_summary_equals_workflow(mixture_runs):
    results, run = mixture_runs
    assert_same_file(run.folder / "summary.nc", results / "summary.nc")
    with xr.open_dataset(results / "summary.nc") as w:
        expected = w.load()
    for ds in (run.summary, expected):
        for key in PROVENANCE:
            ds.attrs.pop(key, None)
    xr.testing.assert_identical(run.summary, expected)


@pytest.mark.parametrize("name", ["posterior.nc", "profiles.nc", "decisions.nc", "immse.nc"])
def test_mixture_files_equal_workflow(mixture_runs, name):
    results, run = mixture_runs
    assert name in run.files
    assert_same_file(run.folder / name, results / name)


def test_run_save_has_workflow_layout(mixture_runs, tmp_path):
    results, run = mixture_runs
    saved = run.save(tmp_path / "pair")
    workflow_files = {str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()}
    assert set(run.files) <= workflow_files  # the same names (the workflow adds logs and its figures)
    for name in run.files:
        assert (saved / name).read_bytes() == (run.folder / name).read_bytes()
    assert run.spec["sampling"]["kernel"] == "exact"  # schema defaults filled in


def test_mixture_object_gives_the_same_spec():
    from seminfo.mixtures.gmm import Mixture

    mix = Mixture(MIXTURE["weights"], MIXTURE["means"], MIXTURE["stds"])
    from_object = seminfo.experiment_spec(mix, steps=12, trajectories_per_class=6)
    from_section = seminfo.experiment_spec({k: MIXTURE[k] for k in ("weights", "means", "stds")}, steps=12,
                                           trajectories_per_class=6)
    assert from_object == from_section


def test_highdim_mixture_object_round_trips():
    from seminfo.mixtures.highdim import IsotropicMixture
    from seminfo.stages.shared import mixture_from_spec

    mix = IsotropicMixture([0.5, 0.5], [[1.0, 0.0, 2.0], [-1.0, 0.5, 0.0]], [0.4, 0.6])
    spec = seminfo.experiment_spec(mix, steps=10, trajectories_per_class=3)
    back = mixture_from_spec(spec)
    assert spec["mixture"]["dim"] == 3
    for name in ("weights", "means", "stds"):
        np.testing.assert_array_equal(getattr(back, name), getattr(mix, name))


@pytest.mark.parametrize("settings, key", [
    ({"steps": 1, "trajectories_per_class": 4}, "experiments.api.sampling.steps"),
    ({"steps": 10, "trajectories_per_class": 4, "sampling": {"kernel": "euler"}}, "experiments.api.sampling.kernel"),
    ({"steps": 10, "trajectories_per_class": 4, "schedule": {"name": "linear", "T": 5}}, "experiments.api"),
])
def test_bad_setting_raises_config_error_naming_the_key(settings, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        seminfo.measure(MIXTURE, progress=False, **settings)


def test_bad_mixture_raises_config_error():
    with pytest.raises(ConfigError, match=r"experiments\.api\.mixture\.weights"):
        seminfo.measure({"weights": [0.5], "means": [0.0, 1.0], "stds": [1.0, 1.0]}, steps=10,
                        trajectories_per_class=2, progress=False)


@pytest.mark.parametrize("name", ["entropy", "entropy_rate", "rate_heatmap", "partitions", "examples"])
def test_plot_profile_figures(mixture_runs, name):
    _, run = mixture_runs
    for data in (run.summary, run):
        fig = seminfo.plot.figure(name, data, time_axis="t")
        assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
    assert "plot_time_axis" not in run.summary.attrs  # the caller's dataset is not changed


def test_plot_study_figures(mixture_runs):
    _, run = mixture_runs
    assert isinstance(seminfo.plot.decisions(run), matplotlib.figure.Figure)
    assert isinstance(seminfo.plot.immse(run), matplotlib.figure.Figure)
    assert isinstance(seminfo.plot.immse(run.summary, run.open("immse.nc")), matplotlib.figure.Figure)


def test_measure_draws_the_workflow_figures(tmp_path):
    settings = {k: v for k, v in SETTINGS.items() if k != "studies"}
    run = seminfo.measure(MIXTURE, folder=tmp_path, figures=True, progress=False, studies={"immse": {"enable": False}},
                          **settings)
    assert {f"figures/{n}.png" for n in seminfo.plan.figure_names(run.spec)} <= set(run.files)
    assert "immse.nc" not in run.files and "paths.nc" not in run.files


NETWORK = {"steps": 4, "trajectories_per_class": 2, "seed": 2,
           "sampling": {"shards": 1, "batch_size": 64, "snapshots": 3},
           "studies": {"immse": {"samples": 8, "points": 4}}}


@pytest.fixture(scope="module")
def network_runs(tmp_path_factory):
    """The workflow's results/unet/ and measure()'s folder for a tiny diffusers twin (pretrained source)."""
    import os

    from twins import diffusers_twin

    d = tmp_path_factory.mktemp("api_net")
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = {"source": "diffusers", "path": str(diffusers_twin(d / "twin", "v_prediction", null_label=3,
                                                               class_scale=3.0)),
             "null_label": 3, "class_names": ["zero", "one", "two"]}
    sampling = {k: NETWORK[k] for k in ("steps", "trajectories_per_class", "seed")} | NETWORK["sampling"]
    config = {"experiments": {"unet": {"kind": "ddpm", "model": model, "sampling": sampling} | NETWORK["studies"]}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(d, "results/unet/summary.nc")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = seminfo.measure(model, name="unet", folder=d / "api", progress=False, **NETWORK)
    return d / "results" / "unet", run


@pytest.mark.slow
@pytest.mark.parametrize("name", ["summary.nc", "profiles.nc", "trajectories.nc", "samples.nc", "decisions.nc",
                                  "immse.nc", "shards/sample_0.nc"])
def test_network_files_equal_workflow(network_runs, name):
    results, run = network_runs
    assert name in run.files
    assert_same_file(run.folder / name, results / name)


@pytest.mark.slow
def test_network_health_and_adapter_record_equal_workflow(network_runs):
    results, run = network_runs
    for name in ("health.json", "model/adapter.json"):
        assert (run.folder / name).read_text() == (results / name).read_text(), name


@pytest.mark.slow
def test_loaded_model_is_measured_as_its_config(network_runs):
    results, run = network_runs
    adapter = seminfo.load_model(run.spec["model"], device="cpu")
    again = seminfo.measure(adapter, name="unet", folder=run.folder.parent / "api_loaded", progress=False, **NETWORK)
    assert again.spec == run.spec
    for name in ("summary.nc", "trajectories.nc"):
        assert_same_file(again.folder / name, results / name)


def test_memory_models_cannot_come_from_a_config(schema):
    from seminfo.config import validate_config
    from seminfo.models import check_sources

    config = validate_config({"experiments": {"net": {"kind": "ddpm", "model": {"source": "memory", "path": "Net"},
                                                      "sampling": {"steps": 4, "trajectories_per_class": 2}}}},
                             schema)
    with pytest.raises(ConfigError, match=r"experiments\.net\.model\.path: no adapter in memory"):
        check_sources(config)


def test_example_script_measures_its_network(tmp_path):
    """examples/measure_network.py: a network defined in the script, measured on the CPU, its summary's invariants."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "measure_network.py"), "--steps", "8",
                           "--trajectories-per-class", "4", "--immse-samples", "12", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "entropy.png").stat().st_size > 0
    with xr.open_dataset(out / "summary.nc") as s, xr.open_dataset(out / "trajectories.nc") as traj:
        s, traj = s.load(), traj.load()
    K = s.sizes["class"]
    assert K == 3 and s.attrs["model_source"] == "memory" and "health_failed" in s.attrs
    tol = 1e-5
    for name in ("entropy", "entropy_marginal"):
        assert float(s[name].min()) >= -tol and float(s[name].max()) <= np.log2(K) + tol, name
    np.testing.assert_allclose(traj["posterior"].sum("class"), 1.0, atol=1e-5)
    np.testing.assert_allclose(traj["entropy"].isel(time=-1), np.log2(K), atol=1e-5)  # the uniform prior at t = T
    np.testing.assert_allclose(s["mutual_information"], s.attrs["prior_entropy_bits"] - s["entropy_marginal"],
                               atol=1e-6)
    assert s.sizes["time"] == traj.sizes["time"] and np.all(np.diff(s["time"].values) > 0)
