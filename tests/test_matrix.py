"""What the schema allows, together: every model source x tracking x guidance, with the studies at their defaults.

Each combination is either refused when the workflow is parsed, with one line naming the experiment's key, or runs to a
complete summary.nc. The parse-level check covers the whole matrix; the end-to-end run covers every source, every
tracking mode, every guidance setting and every (tracking, guidance) pair of the network sources at least once, on tiny
twins (the rest of the matrix is the same code on other inputs, and the other end-to-end tests run it).
"""

import copy
import itertools
import os

import numpy as np
import pytest
import xarray as xr
import yaml
from test_workflow_ddpm import TINY_NET
from test_workflow_gmm import snakemake
from twins import diffusers_twin, dit_twin, gauss_twin, sd_twin

SAMPLING = {"steps": 4, "trajectories_per_class": 2, "shards": 1, "batch_size": 64, "snapshots": 3}
STUDIES = {"immse": {"samples": 8, "points": 4}}  # on, as by default, but small
TRACKING = {"full": {}, "ovr": {"tracking": "one_vs_rest"}, "ovr_targets": {"tracking": "one_vs_rest"}}
GUIDANCE = {"off": None, "on": {"scale": 2.0}, "interval": {"scale": 2.0, "interval": [50, 100]}}


def sources(folder):
    """One base experiment per source (tiny twins written with save_pretrained) and its condition names."""
    entry, params = gauss_twin(folder / "gauss", [-0.6, 0.0, 0.6], [0.4, 0.4, 0.4], shape=(1, 8, 8))
    unet = diffusers_twin(folder / "unet", null_label=3, class_scale=3.0)
    return {
        "own": ({"kind": "ddpm", "data": {"name": "digits", "classes": [0, 1, 7], "limit_per_class": 30},
                 "model": TINY_NET, "schedule": {"name": "linear", "T": 100},
                 "train": {"steps": 6, "batch_size": 32, "checkpoint_every": 6, "warmup": 2}}, ["0", "1", "7"]),
        "diffusers": ({"kind": "ddpm", "model": {"source": "diffusers", "path": str(unet), "null_label": 3,
                                                 "class_names": ["a", "b", "c"]}}, ["a", "b", "c"]),
        "dit": ({"kind": "ddpm", "model": {"source": "dit", "path": str(dit_twin(folder / "dit", class_scale=0.3)),
                                           "classes": ["golden retriever", "Labrador retriever", 4]}},
                ["golden retriever", "Labrador retriever", "tabby"]),
        "sd": ({"kind": "ddpm", "model": {"source": "stable_diffusion", "path": str(sd_twin(folder / "sd")),
                                          "prompts": ["a red cat", "a blue cat"]}}, ["a red cat", "a blue cat"]),
        "python": ({"kind": "ddpm", "model": {"source": "python", "path": params, "entry": entry,
                                              "class_names": ["a", "b", "c"]}}, ["a", "b", "c"]),
        "gmm": ({"kind": "gmm", "mixture": {"weights": [0.5, 0.3, 0.2], "means": [-1.0, 0.3, 1.2],
                                            "stds": [0.5, 0.3, 0.2], "class_names": ["x", "y", "z"]},
                 "schedule": {"name": "linear", "T": 100}, "sampling": {"kernel": "ddpm"}}, ["x", "y", "z"]),
    }


def experiment(base, names, tracking, guidance):
    spec = copy.deepcopy(base)
    sampling = spec.setdefault("sampling", {})
    sampling |= copy.deepcopy(SAMPLING) | copy.deepcopy(TRACKING[tracking])
    if spec["kind"] == "gmm":
        sampling.pop("shards"), sampling.pop("batch_size"), sampling.pop("snapshots")
        sampling |= {"trajectories_per_class": 20, "steps": 20}
    if tracking == "ovr_targets":
        sampling["targets"] = names[:2]
    if GUIDANCE[guidance] is not None:
        sampling["guidance"] = copy.deepcopy(GUIDANCE[guidance])
    return spec | copy.deepcopy(STUDIES) | {"analysis": {"rate_smoothing": 1, "bootstrap_resamples": 100},
                                            "plots": {"dpi": 50}}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    os.environ["HF_HUB_OFFLINE"] = "1"
    return folder, {f"{s}_{t}_{g}": experiment(*sources(folder)[s], t, g)
                    for s, t, g in itertools.product(["own", "diffusers", "dit", "sd", "python", "gmm"], TRACKING,
                                                     GUIDANCE)}


def parse(config, schema):
    """The checks the workflow runs when it is parsed (workflow/rules/common.smk); the error or None."""
    from seminfo.config import ConfigError, validate_config
    from seminfo.models import check_sources
    from seminfo.stages.precision import check_own_precision

    try:
        config = validate_config(config, schema)
        check_sources(config)
        check_own_precision(config)
    except ConfigError as err:
        return str(err)
    return None


def test_every_combination_is_accepted_or_refused_in_one_line(matrix, schema):
    _, experiments = matrix
    refused = {}
    for name, spec in experiments.items():
        error = parse({"experiments": {name: spec}}, schema)
        if error is not None:
            assert "\n" not in error and error.startswith(f"experiments.{name}."), error
            assert "(rule: " in error
            refused[name] = error
    print({k: v[:90] for k, v in refused.items()})
    # the python twin has no null condition, which one-vs-rest and guidance need (and its time grid is its 4 Karras
    # steps, so an interval in DDPM steps is out of range); a mixture is tracked in full (its exact posterior)
    python = {n for n in experiments if n.startswith("python_") and n != "python_full_off"}
    assert python <= set(refused)
    assert all("null" in refused[n] or "interval" in refused[n] for n in python)
    mixture_ovr = {n for n in experiments if n.startswith("gmm_ovr")}
    assert mixture_ovr <= set(refused) and all("tracking" in refused[n] or "targets" in refused[n]
                                                for n in mixture_ovr)
    assert set(refused) == python | mixture_ovr, sorted(set(refused) - python - mixture_ovr)


COVER = ["own_ovr_interval", "own_full_on", "diffusers_ovr_targets_on", "diffusers_full_interval", "dit_ovr_off",
         "dit_full_on", "sd_ovr_targets_interval", "python_full_off", "gmm_full_on", "gmm_full_interval"]


@pytest.mark.slow
def test_a_covering_set_runs_end_to_end_with_every_default_study(matrix, schema):
    folder, experiments = matrix
    chosen = {name: experiments[name] for name in COVER if parse({"experiments": {name: experiments[name]}},
                                                                 schema) is None}
    assert len(chosen) == len(COVER), sorted(set(COVER) - set(chosen))
    (folder / "config.yaml").write_text(yaml.safe_dump({"experiments": chosen}))
    proc = snakemake(folder, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for name in chosen:
        s = xr.open_dataset(folder / "results" / name / "summary.nc")
        assert {"entropy", "entropy_rate", "decision_time_median"} <= set(s.data_vars), name
        assert np.isfinite(s["entropy"].values).all(), name
        assert (folder / "results" / name / "figures" / "entropy_rate.png").stat().st_size > 1000, name
        immse = folder / "results" / name / "immse.nc"
        has_null = not name.startswith("python")
        pretrained_guided = name.split("_")[0] in ("diffusers", "dit", "sd") and not name.endswith("_off")
        assert immse.exists() == (has_null and not pretrained_guided), name
