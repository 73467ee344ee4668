"""Step convergence of a network model's online posterior: the same trajectories' seeds at S = 25 … 1000 steps.

The online update is exact Bayes for the chain that ran, so with S steps it gives P(c | the path so far), which equals
P(c | x_t) only as S -> inf (``seminfo.chain.sampler``). A network model has no exact curve to compare with, so the
finest step count stands in for the limit: per S, the class and marginal entropy profiles on that chain's grid, and
their difference to the finest S at the grid times they share (every coarser grid is a subset of the finest one when T
is a multiple of the step counts), with the standard error of the difference. The runs share their seeds (every
trajectory starts from the same x_T at every S), so the difference is taken trajectory by trajectory and its standard
error is that of the paired differences (``paired_difference``), not of two independent means. What this estimates
is the bias of the coarser chain relative to the finest, itself below H(c | x_t) by its own (smaller) bias.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from ..chain.posterior import entropy_bits, online_log_posterior
from ..config import experiment_hash
from ..io import InputError, provenance
from .shared import class_layout

log = logging.getLogger(__name__)

__all__ = ["network_convergence_stage", "paired_difference"]


def paired_difference(h, h_ref, labels, prior):
    """Prior-weighted mean of per-trajectory differences h - h_ref (N, G) of the same trajectories (class-stratified:
    each class's mean difference, weighted by ``prior``) and its standard error from the paired differences."""
    d = np.asarray(h, dtype=np.float64) - np.asarray(h_ref, dtype=np.float64)
    K = len(prior)
    means = np.stack([d[labels == k].mean(0) for k in range(K)])
    var = np.stack([d[labels == k].var(0, ddof=1) / (labels == k).sum() for k in range(K)])
    return np.asarray(prior) @ means, np.sqrt(np.asarray(prior) ** 2 @ var)


def _profiles(model, chain, labels, seed: int, batch: int, device):
    """Per-class mean entropy (K, G), its standard error on the chain's posterior grid, and the per-trajectory
    entropies (N, G)."""
    from ..chain.sampler import sample_trajectories

    K = model.num_conditions
    out = sample_trajectories(model, chain, labels, np.arange(labels.size), seed, eval_batch=batch, device=device,
                              progress=False)
    h = entropy_bits(online_log_posterior(np.full((labels.size, K), -np.log(K)), out.increments))
    H = np.stack([h[labels == k].mean(0) for k in range(K)])
    se = np.stack([h[labels == k].std(0, ddof=1) / np.sqrt((labels == k).sum()) for k in range(K)])
    return H, se, h


def network_convergence_stage(spec: dict, experiment: str, model_path, output, options: dict, figure=None,
                              dpi: int = 150) -> None:
    """Entropy profiles of the experiment's sampler at several S on the same seeds → convergence.nc (rule
    convergence, network models)."""
    from ..chain.sampler import model_chain
    from .network import checked_adapter, device

    dev = device()
    model = checked_adapter(spec, model_path, dev)
    K, T = model.num_conditions, model.schedule.T
    per_class, seed = int(options["trajectories_per_class"]), int(options["seed"])
    labels, _ = class_layout(K, per_class)
    sampling = {k: v for k, v in spec["sampling"].items() if k not in ("guidance", "tracking", "targets")}
    chains = {}
    for S in sorted({int(S) for S in options["steps"] if S <= T}) or [T]:
        try:
            chains[S] = model_chain(model, sampling | {"steps": S})
        except ValueError as err:  # a step count the model's grid formula cannot space (schedules.chain_times)
            log.warning("dropping S = %d: %s", S, err)
    if not chains:
        raise InputError(f"convergence.steps: no step count has a grid on the model's spacing ({options['steps']})")
    steps = list(chains)
    profiles, grids = {}, {}
    for S, chain in chains.items():
        grids[S] = chain.times[chain.posterior_start:]
        profiles[S] = _profiles(model, chain, labels, seed, int(spec["sampling"]["batch_size"]), dev)
        log.info("S = %d: %d trajectories sampled", S, labels.size)
    union = np.unique(np.concatenate(list(grids.values())))
    H = np.full((len(steps), K, union.size), np.nan)
    se = np.full_like(H, np.nan)
    for b, S in enumerate(steps):
        cols = np.searchsorted(union, grids[S])
        H[b][:, cols], se[b][:, cols] = profiles[S][:2]
    prior = np.full(K, 1.0 / K)
    marginal = np.einsum("k,bkt->bt", prior, H)
    marginal_se = np.sqrt(np.einsum("k,bkt->bt", prior**2, se**2))
    bias, bias_se = np.full_like(marginal, np.nan), np.full_like(marginal, np.nan)
    ref_grid, h_ref = grids[steps[-1]], profiles[steps[-1]][2]
    for b, S in enumerate(steps):  # at the times both grids have, trajectory by trajectory
        common, mine, theirs = np.intersect1d(grids[S], ref_grid, return_indices=True)
        cols = np.searchsorted(union, common)
        bias[b, cols], bias_se[b, cols] = paired_difference(profiles[S][2][:, mine], h_ref[:, theirs], labels, prior)
    shared = np.isfinite(bias)
    bias_max = np.array([np.nanmax(np.abs(b)) if np.isfinite(b).any() else np.nan for b in bias])
    bias_mean = np.array([np.nanmean(b) if np.isfinite(b).any() else np.nan for b in bias])
    for b, S in enumerate(steps):
        log.info("S = %d vs %d: max |H - H_finest| = %.3g bit, mean %.3g bit (largest SE %.3g) at %d shared times",
                 S, steps[-1], bias_max[b], bias_mean[b], np.nanmax(bias_se[b]), shared[b].sum())
    data = {
        "entropy": (("steps", "class", "time"), H, {"long_name": "class entropy of P(c | path), class-k "
                                                                  "trajectories", "units": "bit"}),
        "entropy_sem": (("steps", "class", "time"), se, {"long_name": "standard error of the class entropy",
                                                         "units": "bit"}),
        "entropy_marginal": (("steps", "time"), marginal, {"long_name": "conditional entropy of P(c | path)",
                                                            "units": "bit"}),
        "entropy_marginal_sem": (("steps", "time"), marginal_se, {"long_name": "its standard error", "units": "bit"}),
        "bias_vs_finest": (("steps", "time"), bias, {"long_name": "H(c | path) minus that of the finest S, at the "
                                                                  "times both grids have", "units": "bit"}),
        "bias_vs_finest_se": (("steps", "time"), bias_se, {"long_name": "standard error of the difference (paired: "
                                                                        "the same trajectories' seeds)",
                                                           "units": "bit"}),
        "bias_vs_finest_max_abs": ("steps", bias_max, {"long_name": "largest |difference| to the finest S",
                                                       "units": "bit"}),
        "bias_vs_finest_mean": ("steps", bias_mean, {"long_name": "time-averaged difference to the finest S",
                                                     "units": "bit"}),
    }
    coords = {
        "steps": ("steps", np.asarray(steps), {"long_name": "number of sampling steps S", "units": "1"}),
        "class": ("class", list(model.condition_names), {"long_name": "class"}),
        "time": ("time", union, {"long_name": "step of the grid (0 = data, T = noise)", "units": "1"}),
        "t": ("time", union / T, {"long_name": "normalised time t/T", "units": "1"}),
    }
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "T": T, "trajectories_per_class": per_class, "seed": seed, "reference_steps": steps[-1],
        "note": "network model: no exact curve; the finest step count stands in for S -> inf. entropy is NaN at "
                "times not on a step count's grid",
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    from .. import plotting
    from .studies_common import write_study

    write_study(ds, output, figure, plotting.plot_network_convergence, dpi)
