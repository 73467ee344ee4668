"""Accuracy of the drawn entropy rates on the default mixtures, against the true (unsmoothed) rate.

    python benchmarks/rate_accuracy.py [--smoothing 0 1 2 4] [--experiments gmm_asymmetric ...] [--seed S]

Each default Gaussian-mixture experiment of config.yaml is sampled once through the workflow's own stages (in this
process, at the config's sizes and seed), then summarised at each smoothing width for both estimators (the plain
rate ``entropy_rate`` and the Rao-Blackwellised ``entropy_rate_rb``). For each it prints, over the (class, time) points
where the true rate exceeds 1 % of its class's peak: the coverage of the 95 % band of the true rate
``entropy_rate_exact`` and the root-mean-square error of the drawn curve. Prints one JSON line per experiment.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
MIXTURES = ("gmm_symmetric", "gmm_asymmetric", "gmm_hierarchical", "gmm_highdim")


def sample(spec: dict, name: str, folder: Path) -> xr.Dataset:
    """The experiment's per-trajectory posterior dataset (rules gmm_sample and gmm_posterior)."""
    from seminfo.stages import shared as stages

    stages.gmm_sample(spec, name, folder / "sample.nc")
    stages.gmm_posterior(spec, name, folder / "sample.nc", folder / "posterior.nc")
    with xr.open_dataset(folder / "posterior.nc") as ds:
        return ds.load()


def accuracy(summary: xr.Dataset, variable: str) -> dict:
    """Band coverage of the true rate and RMSE of ``variable`` where the true rate exceeds 1 % of its peak."""
    truth = summary["entropy_rate_exact"].values
    mask = np.abs(truth) > 0.01 * np.abs(truth).max(axis=1, keepdims=True)
    lo, hi = summary[f"{variable}_ci_low"].values, summary[f"{variable}_ci_high"].values
    return {"coverage": float(((truth >= lo) & (truth <= hi))[mask].mean()),
            "rmse": float(np.sqrt(((summary[variable].values - truth) ** 2)[mask].mean()))}


def main(argv=None) -> list[dict]:
    from seminfo.analysis.summary import build_summary
    from seminfo.config import load_config
    from seminfo.stages.shared import gmm_exact_curves

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoothing", type=float, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--experiments", nargs="+", default=list(MIXTURES))
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's)")
    p.add_argument("--resamples", type=int, default=1000)
    args = p.parse_args(argv)
    config = load_config(REPO / "config.yaml", REPO / "workflow/schemas/config.schema.yaml")
    out = []
    for name in args.experiments:
        spec = copy.deepcopy(config["experiments"][name])
        if args.seed is not None:
            spec["sampling"]["seed"] = args.seed
        with tempfile.TemporaryDirectory() as tmp:
            traj = sample(spec, name, Path(tmp))
        exact = gmm_exact_curves(spec, traj["alpha_bar"].values, list(traj["class"].values.astype(str)))
        row = {"experiment": name, "seed": spec["sampling"]["seed"], "config_smoothing":
               spec["analysis"]["rate_smoothing"]}
        for s in args.smoothing:
            ds = build_summary(traj, s, exact, resamples=args.resamples)
            row[f"smoothing_{s:g}"] = {v: accuracy(ds, v) for v in ("entropy_rate", "entropy_rate_rb")}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main()
