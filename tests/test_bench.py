"""The benchmark command: options, the naive loop's agreement with the fast path, the JSON line."""

import json

import numpy as np
import pytest
import torch

from seminfo.bench import core as bench
from seminfo.chain.diffusion import reverse_chain
from seminfo.chain.posterior import entropy_bits, online_log_posterior
from seminfo.chain.sampler import sample_trajectories
from seminfo.chain.schedules import make_schedule

KEYS = {"evals_per_s", "naive_evals_per_s", "speedup_vs_naive", "model_fraction", "matmul_peak_gflops",
        "achieved_gflops", "fraction_of_peak", "entropy_max_abs_diff_bits", "peak_rss_mb", "device"}


def test_dry_run_prints_the_resolved_options(capsys):
    assert bench.main(["--dry-run"]) == 0
    opts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert opts["preset"] == "digits" and opts["precision"] == "fp32" and opts["steps"] == 100 and opts["compile"]
    assert opts["prune_log_threshold"] == -12.0
    assert bench.main(["--dry-run", "--no-prune", "--device", "cuda", "--rss-steps", "none"]) == 0
    opts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert opts["preset"] == "cifar10_ddpm" and opts["precision"] == "bf16" and opts["compile"] is True
    assert opts["prune_log_threshold"] is None and opts["rss_steps"] == []


def test_naive_loop_walks_the_same_trajectories(decisive_unet):
    """The naive loop (one forward per class, diffusers' step arithmetic, fp32) and the fast path agree."""
    chain = reverse_chain(make_schedule("linear", 1000), 12, "small")
    labels, idx = bench.workload(12, 4)
    h_naive = bench.naive_sample(decisive_unet.net, chain, labels, idx, 0, 4, torch.device("cpu"))
    out = sample_trajectories(decisive_unet, chain, labels, idx, 0, eval_batch=16, progress=False)
    h_fast = entropy_bits(online_log_posterior(np.full((12, 4), np.log(0.25)), out.increments))
    assert h_naive.shape == h_fast.shape
    assert np.abs(h_naive - h_fast).max() < 1e-3
    assert h_fast[:, 0].mean() < 1.9  # the posterior moved, so the comparison means something


def test_benchmark_prints_one_json_line_last(decisive_unet, monkeypatch, capsys):
    monkeypatch.setattr(bench, "build_model", lambda *a, **k: (decisive_unet.net, "tiny"))
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda dtype, device: 100.0)
    monkeypatch.setattr(bench, "rss_at", lambda args, steps: {"steps": steps, "peak_rss_mb": 1.0})
    argv = ["--classes", "4", "--trajectories", "8", "--steps", "6", "--repeats", "1", "--eval-batch", "16",
            "--prune-log-threshold", "-6", "--rss-steps", "3,6", "--no-compile"]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert KEYS <= set(result)
    assert result["peak_rss_mb"] == {"3": 1.0, "6": 1.0}
    assert 0 < result["evaluated_fraction"] <= 1 and 0 < result["model_fraction"] <= 1
    assert result["speedup_vs_naive"] == pytest.approx(result["evals_per_s"] / result["naive_evals_per_s"], rel=1e-4)
    assert result["entropy_max_abs_diff_bits"] <= result["pruning_entropy_bound_bits"] + 1e-3
    assert result["naive_entropy_max_abs_diff_bits"] < 1e-3
    # one-vs-rest on the same work: 2 evaluations per step (1 on the noiseless last one) instead of K = 4
    assert result["ovr_evaluations"] == 8 * (2 * 5 + 1) and result["full_evaluations"] == 8 * (4 * 5 + 1)
    assert result["ovr_performed_evals_per_s"] > 0 and result["ovr_speedup_vs_full"] > 0


def test_rss_probe_runs_in_a_fresh_process():
    args, _ = bench.parse_args(["--trajectories", "4", "--steps", "3", "--eval-batch", "40", "--no-prune",
                                "--no-compile"])
    probe = bench.rss_at(args, 3)
    assert probe["steps"] == 3 and probe["peak_rss_mb"] > 10


def test_parts_choose_the_timed_loops():
    args, _ = bench.parse_args(["--parts", "naive,fast", "--dry-run"])
    assert args.parts == ["fast", "naive"]  # fast always runs, first
    with pytest.raises(SystemExit):
        bench.parse_args(["--parts", "fast,slow"])


@pytest.mark.parametrize("name", sorted(bench.NETWORKS))
def test_published_size_networks_speak_the_samplers_protocol(name):
    """Each stand-in network maps (x, t, label) with labels 0 … K (K the null condition) to an output of the state's
    shape; built on the meta device (shapes only, no memory)."""
    from seminfo.bench.networks import build_network

    net = build_network(name, 3, "meta")
    x = torch.zeros((2, *net.image_shape), device="meta")
    out = net(x, torch.tensor([1, 999], device="meta"), torch.tensor([0, 3], device="meta"))
    assert out.shape == x.shape and net.num_classes == 3
