"""After the GPU workflow run (benchmarks/gpu/run.sh): one shard again on the CPU, and the loop's host syncs on the GPU.

    python benchmarks/gpu/check_workflow.py benchmarks/gpu/workflow.yaml cifar10_gpu [--shard 0]

1. Agreement. Rule ddpm_sample's stage (``seminfo.stages.network.sample_shard``) runs the same shard on the CPU, from
   the checkpoint the GPU run trained; the posteriors P(c | path) of the two shard files (fp32, TF32 off on the GPU)
   are compared at every step: the largest absolute difference, and that of the increments.
2. Host syncs. The same shard is sampled on the GPU under ``torch.cuda.set_sync_debug_mode("warn")``: every operation
   that makes the host wait for the GPU warns, with its source line. A line inside the step loop warns once per step;
   the copies of the results back to the host after the loop warn once each.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr

REPO = Path(__file__).resolve().parents[2]


def posterior(ds: xr.Dataset) -> np.ndarray:
    """P(c | path) (traj, grid, class) from a shard's prior and increments (float64)."""
    from seminfo.chain.posterior import online_log_posterior

    inc = ds["increment"].values.astype(np.float64)
    prior = np.broadcast_to(np.log(ds["prior"].values.astype(np.float64)), (inc.shape[0], inc.shape[2]))
    return np.exp(online_log_posterior(prior, inc))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("experiment")
    p.add_argument("--shard", type=int, default=0)
    args = p.parse_args(argv)

    from seminfo.chain.diffusion import sampler_chain
    from seminfo.config import load_config
    from seminfo.stages import network as network_stages
    from seminfo.stages.shared import class_layout

    config = load_config(args.config, REPO / "workflow/schemas/config.schema.yaml")
    spec = config["experiments"][args.experiment]
    results = REPO / "results" / args.experiment
    model_path = results / "model" / "model.safetensors"
    gpu_file = results / "shards" / f"sample_{args.shard}.nc"
    out = {"experiment": args.experiment, "shard": args.shard}

    # 1. the shard on the CPU, through the rule's own stage
    cuda = network_stages.device
    network_stages.device = lambda: torch.device("cpu")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        network_stages.sample_shard(spec, args.experiment, model_path, args.shard, Path(tmp) / "cpu.nc")
        out["cpu_shard_seconds"] = time.perf_counter() - began
        with xr.open_dataset(gpu_file) as g, xr.open_dataset(Path(tmp) / "cpu.nc") as c:
            g, c = g.load(), c.load()
    network_stages.device = cuda
    out["posterior_max_abs_diff"] = float(np.abs(posterior(g) - posterior(c)).max())
    out["increment_max_abs_diff"] = float(np.abs(g["increment"].values - c["increment"].values).max())
    out["final_image_max_abs_diff"] = float(np.abs(g["image"].values - c["image"].values).max())
    out["agree_1e-6"] = out["posterior_max_abs_diff"] <= 1e-6
    print(json.dumps(out), file=sys.stderr, flush=True)  # kept if part 2 fails

    # 2. host syncs of the sampling loop on the GPU
    dev = torch.device("cuda")
    s = spec["sampling"]
    model = network_stages.checked_adapter(spec, model_path, dev)
    chain = sampler_chain(model.schedule, s)
    slots, members = class_layout(model.num_conditions, s["trajectories_per_class"])
    idx = network_stages.shard_indices(slots.size, s["shards"], args.shard)
    from seminfo.chain.sampler import sample_trajectories

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            sample_trajectories(model, chain, slots[idx], idx, s["seed"], eval_batch=s["batch_size"],
                                examples=members[idx] < s["examples_per_class"], n_snapshots=s["snapshots"],
                                device=dev, progress=False, precision=s.get("precision", "fp32"))
        finally:
            torch.cuda.set_sync_debug_mode(0)
    lines = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    out["steps"] = chain.steps
    out["sync_lines"] = dict(lines)
    out["syncs_inside_loop"] = {k: v for k, v in lines.items() if v >= chain.steps - 1}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
    sys.exit(0)
