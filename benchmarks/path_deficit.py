"""How far the online posterior P(c | path) lies below P(c | x_t): the path-posterior deficit of ancestral sampling.

    python benchmarks/path_deficit.py [--experiment gmm_asymmetric] [--steps 100 1000] [--per-class 1000] [--seed 0]
                                      [--path linear|gvp]

A DDPM chain with the model's own kernels is the time reversal of the forward process only as S -> inf, so with S
steps the online update gives P(c | x_t, x_t+1, ..., x_T), whose mean entropy is at most H(c | x_t). On a default
mixture of config.yaml, with its exact eps (the DDPM kernel, ``gmm.sample_paths`` with kernel 'ddpm'), started from
the exact marginal of x_T (so that no start-up gap mixes in), this prints, per S, the deficit of the marginal
H(c | x_t) = sum_k pi_k H_k(t): H_exact(c | x_t) (quadrature) minus the Monte Carlo mean, averaged over the grid,
with its standard error (from each trajectory's time-averaged entropy, stratified by class), and its largest value
over the grid with that time's standard error (a maximum over many grid times of a noisy curve: read it with its
SE), the largest per-class deficit H_exact,k - H_k with its SE, and the largest per-class excess H_k - H_exact,k. One
JSON line per S.

``--path linear`` or ``gvp``: the chain of a Gaussian path (``seminfo.chain.gaussian_path``) on its grid uniform in path
time (the grid of the python source's velocity networks; the rectified-flow grid uniform in sigma has the same alpha_bar
as linear), in VP units, instead of the experiment's DDPM schedule; ``max_at_time`` is then a grid index. The kernel is
still gmm's DDPM kernel with the exact eps (an implementation independent of the velocity code), on the same grid
except that its noisiest point lies 1e-6 in path time short of pure noise (alpha_bar about 1e-12 instead of 0, where
the eps form of the DDPM mean is undefined).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def deficit(mix, schedule, steps: int, per_class: int, seed: int) -> dict:
    from seminfo.chain.diffusion import reverse_chain
    from seminfo.chain.posterior import entropy_bits, online_log_posterior
    from seminfo.mixtures import gmm

    chain = reverse_chain(schedule, steps, "small")
    labels = np.repeat(np.arange(mix.K), per_class)
    x, log_init = gmm.sample_paths(mix, chain, labels, "ddpm", "exact", np.random.default_rng(seed))
    start = gmm.posterior_start(chain, "ddpm")
    h = entropy_bits(online_log_posterior(log_init, gmm.path_log_likelihoods(mix, chain, x, "ddpm", start)))
    exact_k = gmm.exact_entropy(mix, chain.alpha_bar[start:])
    exact = mix.weights @ exact_k
    w = mix.weights
    mc = sum(w[k] * h[labels == k].mean(0) for k in range(mix.K))
    per_traj = h.mean(1)  # each trajectory's time-averaged entropy
    se = np.sqrt(sum(w[k] ** 2 * per_traj[labels == k].var(ddof=1) / per_class for k in range(mix.K)))
    gap = exact - mc
    worst = int(gap.argmax())
    se_worst = np.sqrt(sum(w[k] ** 2 * h[labels == k, worst].var(ddof=1) / per_class for k in range(mix.K)))
    per_k = exact_k - np.stack([h[labels == k].mean(0) for k in range(mix.K)])
    k, j = np.unravel_index(int(per_k.argmax()), per_k.shape)
    return {"steps": steps, "mean_deficit_bits": float(gap.mean()), "mean_deficit_se_bits": float(se),
            "max_deficit_bits": float(gap[worst]), "max_deficit_se_bits": float(se_worst),
            "max_at_time": int(chain.times[start:][worst]), "max_class_deficit_bits": float(per_k[k, j]),
            "max_class_deficit_se_bits": float(h[labels == k, j].std(ddof=1) / np.sqrt(per_class)),
            "max_class": int(k), "max_class_excess_bits": float(-per_k.min())}


def _path_schedule(kind: str, steps: int):
    from seminfo.chain.gaussian_path import PATHS, path_schedule, uniform_path_times

    path = PATHS[kind]
    times = uniform_path_times(path, steps)
    times[-1] += 1e-6 if path.noise_time == 0.0 else -1e-6  # alpha_bar about 1e-12: the eps-form DDPM mean exists
    return path_schedule(path, times)


def main(argv=None) -> list[dict]:
    from seminfo.chain.schedules import schedule_from_spec
    from seminfo.config import load_config
    from seminfo.stages.shared import mixture_from_spec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="gmm_asymmetric")
    p.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--per-class", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--path", choices=["linear", "gvp"], help="a Gaussian path's grid instead of the DDPM schedule")
    args = p.parse_args(argv)
    spec = load_config(REPO / "config.yaml", REPO / "workflow/schemas/config.schema.yaml")["experiments"][args.experiment]
    mix, schedule = mixture_from_spec(spec), schedule_from_spec(spec)
    out = []
    for S in args.steps:
        if args.path:
            schedule = _path_schedule(args.path, S)
        row = {"experiment": args.experiment, "per_class": args.per_class, "seed": args.seed} | (
            {"path": args.path} if args.path else {}) | deficit(mix, schedule, S, args.per_class, args.seed)
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main()
