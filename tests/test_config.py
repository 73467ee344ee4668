"""Configuration validation: every malformed key gives one message naming the key and the rule."""

import copy
import subprocess
import sys

import pytest
import yaml

from seminfo.config import ConfigError, experiment_hash, validate_config

from conftest import REPO

GOOD = {
    "experiments": {
        "g": {
            "kind": "gmm",
            "mixture": {"weights": [0.5, 0.3, 0.2], "means": [-1, 0, 1], "stds": [0.3, 0.3, 0.3]},
            "schedule": {"name": "linear", "T": 100},
            "sampling": {"steps": 20, "trajectories_per_class": 10},
            "partitions": {"p": [[0], [1, 2]]},
        }
    }
}


def mutate(path, value=None, delete=False):
    cfg = copy.deepcopy(GOOD)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


G = ("experiments", "g")
BAD = [
    (mutate(G + ("mixture", "stds"), [0.3, -0.3, 0.3]), "experiments.g.mixture.stds[1]", "exclusiveMinimum"),
    (mutate(G + ("mixture", "weights"), [0.5, 0.3, 0.3]), "experiments.g.mixture.weights", "sum-to-one"),
    (mutate(G + ("kind",), "vae"), "experiments.g.kind", "enum"),
    (mutate(G + ("sampling", "steps"), 101), "experiments.g.sampling.steps", "steps <= T"),
    (mutate(G + ("partitions", "p"), [[0, 1], [1, 2]]), "experiments.g.partitions.p", "disjoint-sides"),
    (mutate(G + ("sampling", "trajectories_per_class"), delete=True), "experiments.g.sampling", "required"),
    (mutate(G + ("schedule",), delete=True), "experiments.g", "required"),
    (mutate(G + ("sampling", "steps"), "many"), "experiments.g.sampling.steps", "type"),
    (mutate(G + ("sampling", "variance"), "medium"), "experiments.g.sampling.variance", "enum"),
    (mutate(G + ("mixture", "means"), [0, 1]), "experiments.g.mixture.means", "same-length"),
    (mutate(G + ("schedule", "T"), 10.5), "experiments.g.schedule.T", "type"),
    (mutate(G + ("sampling", "seed"), -1), "experiments.g.sampling.seed", "minimum"),
    (mutate(G + ("partitions", "p"), [[0], [7]]), "experiments.g.partitions.p[1]", "class-range"),
    (mutate(G + ("unknown_key",), 1), "experiments.g", "additionalProperties"),
    (mutate(("experiments",), {}), "experiments", "minProperties"),
    (mutate(G + ("sampling", "eta"), 0.5), "experiments.g.sampling.eta", "unused-key"),  # kernel exact
    # non-finite numbers (YAML .nan / .inf are floats that a JSON schema's "number" accepts)
    (mutate(G + ("mixture", "means"), [float("nan"), 0, 1]), "experiments.g.mixture.means[0]", "finite"),
    (mutate(G + ("mixture", "stds"), [0.3, float("inf"), 0.3]), "experiments.g.mixture.stds[1]", "finite"),
    (mutate(G + ("mixture", "weights"), [float("nan"), 0.3, 0.2]), "experiments.g.mixture.weights[0]", "finite"),
    (mutate(G + ("schedule", "beta_end"), float("-inf")), "experiments.g.schedule.beta_end", "finite"),
    (mutate(G + ("analysis",), {"decision_threshold": float("nan")}), "experiments.g.analysis.decision_threshold",
     "finite"),
    # guidance and one-vs-rest (issue 12): scale <= 0, an interval outside [0, T] or reversed, a kernel guidance cannot
    # move, one-vs-rest on a mixture (its error is measured by the convergence study instead)
    (mutate(G + ("sampling", "guidance"), {"scale": 0.0}), "experiments.g.sampling.guidance.scale",
     "exclusiveMinimum"),
    (mutate(G + ("sampling", "guidance"), {"scale": 2.0, "interval": [60, 40]}),
     "experiments.g.sampling.guidance.interval", "interval"),
    (mutate(G + ("sampling", "guidance"), {"scale": 2.0, "interval": [0, 101]}),
     "experiments.g.sampling.guidance.interval", "interval"),
    (mutate(G + ("sampling", "guidance"), {"scale": 2.0}), "experiments.g.sampling.guidance", "guided-kernel"),
]


def test_good_config_gets_defaults(schema):
    cfg = validate_config(GOOD, schema)
    s = cfg["experiments"]["g"]["sampling"]
    assert s["variance"] == "small" and s["kernel"] == "exact" and s["init"] == "prior" and s["seed"] == 0
    assert cfg["experiments"]["g"]["analysis"] == {"rate_smoothing": 0}
    assert "analysis" not in GOOD["experiments"]["g"]  # input untouched


def test_default_config_is_valid(schema):
    validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), schema)


@pytest.mark.parametrize("cfg,key,rule", BAD, ids=[b[2] + ":" + b[1] for b in BAD])
def test_bad_config_names_key_and_rule(schema, cfg, key, rule):
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, schema)
    msg = str(info.value)
    assert msg.startswith(key + ":") and f"rule: {rule}" in msg, msg


def test_hash_ignores_plot_and_analysis_options(schema):
    a = validate_config(GOOD, schema)["experiments"]["g"]
    b = copy.deepcopy(a)
    b["plots"]["dpi"] = 300
    b["analysis"]["rate_smoothing"] = 3
    assert experiment_hash(a) == experiment_hash(b)
    b["sampling"]["seed"] = 1
    assert experiment_hash(a) != experiment_hash(b)


@pytest.mark.parametrize("cfg,key,rule", BAD[:5] + BAD[-5:-4], ids=[b[2] for b in BAD[:5] + BAD[-5:-4]])
def test_snakemake_rejects_bad_config_and_writes_nothing(tmp_path, cfg, key, rule):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert f"invalid configuration: {key}:" in proc.stderr and f"rule: {rule}" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


def test_ddpm_partitions_are_checked_against_the_data_set_classes(schema):
    ddpm = {"kind": "ddpm", "data": {"name": "cifar10", "root": "x", "classes": [3, 5]}, "model": {"preset": "digits"},
            "schedule": {"name": "linear", "T": 100}, "train": {"steps": 1},
            "sampling": {"steps": 5, "trajectories_per_class": 2}, "partitions": {"p": [["cat"], ["dog"]]}}
    validate_config({"experiments": {"d": ddpm}}, schema)
    ddpm["partitions"] = {"p": [["cat"], ["truck"]]}  # not in the selected subset
    with pytest.raises(ConfigError, match=r"experiments\.d\.partitions\.p\[1\]: unknown class 'truck'"):
        validate_config({"experiments": {"d": ddpm}}, schema)
    ddpm["partitions"] = {}
    ddpm["data"]["classes"] = [3, 10]
    with pytest.raises(ConfigError, match=r"experiments\.d\.data\.classes: .*rule: class-range"):
        validate_config({"experiments": {"d": ddpm}}, schema)


def test_ddpm_sampling_kernel_and_eta(schema):
    """kernel defaults to ddpm; eta is accepted with kernel ddim only, and must lie in (0, 1]."""
    def ddpm(**sampling):
        spec = {"kind": "ddpm", "data": {"name": "digits"}, "model": {"preset": "digits"},
                "schedule": {"name": "linear", "T": 100}, "train": {"steps": 1},
                "sampling": {"steps": 5, "trajectories_per_class": 2} | sampling}
        return {"experiments": {"d": spec}}

    assert validate_config(ddpm(), schema)["experiments"]["d"]["sampling"]["kernel"] == "ddpm"
    s = validate_config(ddpm(kernel="ddim", eta=0.5), schema)["experiments"]["d"]["sampling"]
    assert s["kernel"] == "ddim" and s["eta"] == 0.5
    for cfg in (ddpm(eta=0.5), ddpm(kernel="ddpm", eta=0.5)):
        with pytest.raises(ConfigError) as info:
            validate_config(cfg, schema)
        msg = str(info.value)
        assert msg.startswith("experiments.d.sampling.eta:") and "rule: unused-key" in msg and "ddim" in msg, msg
    with pytest.raises(ConfigError, match=r"experiments\.d\.sampling\.eta: .*rule: exclusiveMinimum"):
        validate_config(ddpm(kernel="ddim", eta=0.0), schema)


def test_one_vs_rest_options_are_checked(schema):
    """Issue 12, bad input on the own model: one-vs-rest targets not among the classes, targets without one-vs-rest,
    one-vs-rest with partitions or pruning, or on a mixture."""
    digits = {"kind": "ddpm", "data": {"name": "digits", "classes": [0, 1, 7]}, "model": {"preset": "digits"},
              "schedule": {"name": "linear", "T": 100}, "train": {"steps": 2},
              "sampling": {"steps": 10, "trajectories_per_class": 2, "tracking": "one_vs_rest"}}
    validate_config({"experiments": {"d": digits}}, schema)
    cases = [
        ({"targets": ["0", "3"]}, None, r"experiments\.d\.sampling\.targets\[1\]: unknown class '3'.*class-name"),
        ({"targets": [5]}, None, r"sampling\.targets\[0\]: class index 5 is out of range.*class-range"),
        ({"tracking": "full", "targets": ["0"]}, None, r"sampling\.targets: applies to tracking one_vs_rest only"),
        ({"prune_log_threshold": -12.0}, None, r"sampling\.prune_log_threshold: pruning applies to full tracking"),
        ({}, {"p": [["0"], ["1"]]}, r"experiments\.d\.partitions: binary decisions need the K-class posterior"),
    ]
    for sampling, partitions, message in cases:
        bad = copy.deepcopy(digits)
        bad["sampling"].update(sampling)
        if partitions:
            bad["partitions"] = partitions
        with pytest.raises(ConfigError, match=message):
            validate_config({"experiments": {"d": bad}}, schema)
    mixture = mutate(G + ("sampling", "tracking"), "one_vs_rest")  # mixtures: the convergence study measures it
    with pytest.raises(ConfigError, match=r"experiments\.g\.sampling: Additional properties .*'tracking'"):
        validate_config(mixture, schema)
