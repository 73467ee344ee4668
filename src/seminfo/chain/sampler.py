"""Ancestral sampling of a conditional diffusion model with the online Bayes increments of every step.

The sampler sees a model only through its adapter (``seminfo.models.base``). One call advances all its
trajectories together, from x ~ N(0, I) at the grid's start ``times[S]`` (T, or below T on a diffusers grid with
leading spacing, as the model's pipeline starts; ``model_chain`` builds the grid the model's scheduler makes). Each
step i = S … 1 (from ``times[i]`` to ``times[i-1]``) has a mean affine in the state and the network's native output,
mu_c = A x_t + B out_c (``seminfo.chain.diffusion.step_coefficients``: the DDPM mean for the 'small' and 'large'
chains, the DDIM mean for a chain from ``ddim_chain``, in eps, v or x_0 units), plus, when the model's scheduler clips
or thresholds x̂_0 (``model.clipping``), G (p(x̂_0,c) - x̂_0,c), nonlinear in the output (``seminfo.chain.clipping``),
and a standard deviation sigma shared by all conditions (or, for a learned-range network, per element and per
condition):

1. Evaluate the network for the planned (trajectory, condition) pairs, in chunks of ``eval_batch``
   (``seminfo.chain.evaluator``): all K conditions of every trajectory, or, with pruning, those not yet decided against.
   This is the only work that grows with K, and the step where the time goes.
2. Bayes increment of every evaluated condition: with the step actually taken, x_t' = mu_own + sigma z,
   delta_c = mu_own - mu_c = -B (out_c - out_own) (+ G (gap_own - gap_c) with clipping), and the
   condition-dependent part of log N(x_t'; mu_c, sigma^2 I)
   (``seminfo.chain.posterior.shared_variance_increment``; ``diagonal_variance_increment`` when the variance is
   learned), in float64. The last step (to t = 0) adds no noise: it is not a Bayes step and needs only the
   trajectory's own condition. With a shared sigma the K x K Gram matrix of the delta_c is kept as well: the
   increments depend on the step's noise only through <delta_c, z>, so it is all the Rao–Blackwellised entropy rate
   needs (``seminfo.chain.rao_blackwell``), whatever the state dimension.
3. Move: x <- A x + B out_own (+ G gap_own) + sigma z, the state in float64 (the network sees float32).

What the posterior is. The update is exact Bayes for the chain that ran, so it gives P(c | x_t, x_{t+1}, …, x_start),
the posterior given the whole path so far (it starts from the prior, exactly: the chain's first state is drawn from
N(0, I) whatever the class), whose mean entropy is at most the sampler's H(c | x_t) (conditioning on more
cannot raise entropy). It equals P(c | x_t) only when the chain is the exact time reversal of the forward process,
under which the path above x_t carries no information about c beyond x_t: ancestral DDPM with the model's own
kernels (and DDIM with eta = 1, the same chain) approaches that as the steps get finer (S -> inf; measured on
gmm_asymmetric with exact eps by ``python benchmarks/path_deficit.py``: at S = 100 the marginal entropy lies
0.062 +- 0.005 bit below H(c | x_t) at its worst grid time, t = 10, and 0.001 +- 0.003 bit on average over the grid;
at S = 1000 nowhere resolvably, at most 0.013 +- 0.007 bit). DDIM with eta < 1 is a Gaussian Markov chain with condition-dependent means and a
shared sigma, so Bayes' rule applies step by step, but it is never that time reversal: its posterior stays
P(c | path) at every S.

Noise is counter-based (``seminfo.chain.noise``): trajectory n's draw at step i is a function of (seed, global index
n, i) alone, so a trajectory's result does not depend on the shard or batch it runs in (bitwise where the chunks have
the same shapes). Nothing is read back to the host inside the loop, except the pair count when a pruning plan is
rebuilt. Pruning of decided conditions and its error bound: ``seminfo.chain.pruning``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .diffusion import (ReverseChain, learned_range_log_variance, predict_x0, sampler_chain, step_coefficients,
                        x0_coefficients, clipping_gain)
from .evaluator import PRECISIONS, PairEvaluator
from .guidance import Guidance, guided_output
from .noise import check_indices, normal
from .posterior import diagonal_variance_increment, shared_variance_increment
from .pruning import PRUNED

__all__ = ["TrajectoryBatch", "PRECISIONS", "TRACKING", "snapshot_indices", "model_chain", "sample_trajectories"]

TRACKING = ("full", "one_vs_rest")

# Steps between rebuilds of the pruning plan. Rebuilding reads the pair count back to the host, free on a
# CPU; on a GPU it would stall the queue every step. Classes are dropped at the same steps either way;
# between rebuilds a dropped class is still evaluated (its result unused), so only the saving is delayed.
_REPLAN_EVERY = {"cpu": 1}
_REPLAN_EVERY_DEFAULT = 8


def model_chain(model, sampling: dict) -> ReverseChain:
    """The chain an experiment's ``sampling`` section samples with ``model`` (an adapter): its kernel, variance and
    steps on the model's schedule, on the grid of ``sampling.timestep_spacing`` when set, else the model's own (its
    scheduler's ``timestep_spacing`` and ``steps_offset``, as its pipeline's ``set_timesteps``; 'even' for the own
    UNet and the sigma grid of a σ-denoiser), with ``sampling.variance`` when set, else the model's own (its
    scheduler's ``variance_type``: fixed_large samples with beta)."""
    if "variance" not in sampling:  # the scheduler's variance_type, unless the config says otherwise
        sampling = sampling | {"variance": model.chain_variance}
    return sampler_chain(model.schedule, sampling, model.timestep_spacing, model.steps_offset)


def snapshot_indices(chain: ReverseChain, count: int) -> np.ndarray:
    """Grid indices (descending, from the chain's start towards 0) at which predicted x_0 snapshots are taken."""
    return np.unique(np.round(np.linspace(chain.steps, 1, count)).astype(np.int64))[::-1]


@dataclass
class TrajectoryBatch:
    """What sampling returns for a set of trajectories (numpy arrays; S' = S - posterior start)."""

    increments: np.ndarray | None  # (N, S', K) float64, step j from times[start+j+1] to times[start+j]; None for
    #                                one-vs-rest tracking. With guidance: the guided family's.
    gram: np.ndarray | None  # (N, S', K, K) float32 Gram matrices of the step's delta_c (shared sigma only)
    final: np.ndarray  # (N, *state_shape) float32, the generated x_0 in the chain's units
    snapshots: np.ndarray  # (E, n_snapshots, *state_shape) float32 predicted x_0 of the example trajectories (the
    #                        clipped x̂_0 the step uses when the scheduler clips)
    snapshot_times: np.ndarray  # (n_snapshots,) int
    model_increments: np.ndarray | None = None  # (N, S', K) the unguided model's, with guidance
    ovr_increments: np.ndarray | None = None  # (N, S', 1 or K) one-vs-rest: log N(mu_c) - log N(mu_null)


def _plan(flat: torch.Tensor, own_flat: torch.Tensor, K: int):
    """Pairs to evaluate from their flat indices n * K + c (ascending, so trajectory-major).

    Returns rows, conditions, flat and where each trajectory's own pair sits in the list.
    """
    position = torch.full((own_flat.numel() * K,), -1, dtype=torch.long, device=flat.device)
    position[flat] = torch.arange(flat.numel(), device=flat.device)
    return flat // K, flat % K, flat, position[own_flat]


def _gram(delta: torch.Tensor, flat: torch.Tensor, N: int, K: int) -> torch.Tensor:
    """Per-trajectory Gram matrices <delta_c, delta_d> (N, K, K) of the evaluated pairs (the others count as 0)."""
    if flat.numel() == N * K:  # every pair, in trajectory-major order
        full = delta.view(N, K, -1)
    else:
        full = delta.new_zeros((N * K, delta.shape[1]))
        full[flat] = delta
        full = full.view(N, K, -1)
    return torch.bmm(full, full.transpose(1, 2)).float()


def _predicted_x0(prediction: str, x, out_own, alpha_bar_t: float):
    if prediction == "epsilon":
        return predict_x0(x, out_own, alpha_bar_t)
    r, s = x0_coefficients(prediction, alpha_bar_t)
    return r * x + s * out_own


@torch.no_grad()
def sample_trajectories(model, chain: ReverseChain, labels, indices, seed: int, eval_batch: int = 1024,
                        examples=None, n_snapshots: int = 8, device="cpu", progress: bool = True, *,
                        prune_log_threshold: float | None = None, precision: str = "fp32", compile: bool = False,
                        log_prior=None, guidance: Guidance | None = None, tracking: str = "full",
                        null_tracking: bool = False, stats: dict | None = None) -> TrajectoryBatch:
    """Sample trajectories of the given conditions and record the per-step log-likelihood increments.

    model                an adapter (``seminfo.models.base.Adapter``) with K = ``model.num_conditions``
    chain                DDPM ('small' / 'large') or DDIM chain (``model_chain``,
                         ``seminfo.chain.diffusion.sampler_chain``) on the adapter's schedule; ``model.clipping``
                         (None: none) is applied to x̂_0 of every step
    labels               (N,) condition of each trajectory
    indices              (N,) global trajectory indices (key the per-trajectory noise)
    examples             boolean mask (N,) of trajectories whose predicted x_0 is snapshotted for figures
    eval_batch           network evaluations (trajectory x condition pairs) per forward call
    prune_log_threshold  None = exact; theta < 0: drop a condition once its log posterior odds against the
                         trajectory's own fall below theta (``seminfo.chain.pruning``)
    precision            'fp32', or 'bf16' autocast around the network (increments stay float64)
    compile              torch.compile the network (static shapes: chunks padded to eval_batch / 8, / 4, / 2
                         or eval_batch, so at most four compilations)
    log_prior            (K,) log prior used for the pruning odds; None = uniform
    guidance             classifier-free guidance (``seminfo.chain.guidance``): the trajectories move with the guided
                         output; ``increments`` are then those of the guided family and ``model_increments`` those
                         of the unguided model on the guided path (one null evaluation per trajectory and guided step)
    tracking             'full': all K conditions per step (``increments``); 'one_vs_rest': only the own condition and
                         the null one, 2 evaluations per step whatever K (``ovr_increments`` (N, S', 1), no
                         ``increments``); see ``seminfo.chain.one_vs_rest``
    null_tracking        with 'full': evaluate the null condition too and record the one-vs-rest increments of every
                         condition on the same trajectories (``ovr_increments`` (N, S', K)), for comparison
    stats                if a dict, filled with evaluations performed, padding, seconds and model_seconds
    The posterior grid starts at ``chain.posterior_start`` (the noiseless last step is not a Bayes step).
    Pruned conditions get increment ``PRUNED`` from the step after they are dropped. A convolutional model's
    weights are converted to channels-last in place (same values, other strides).
    """
    if tracking not in TRACKING:
        raise ValueError(f"tracking must be one of {TRACKING}, got {tracking!r}")
    ovr = tracking == "one_vs_rest"
    if (guidance is not None or ovr or null_tracking) and not model.has_null:
        raise ValueError(f"{model.source}: guidance and one-vs-rest tracking need a model with a null condition")
    if prune_log_threshold is not None and not prune_log_threshold < 0:
        raise ValueError(f"prune_log_threshold must be negative (or None for exact), got {prune_log_threshold}")
    if prune_log_threshold is not None and (model.variance == "learned_range" or ovr):
        raise ValueError("pruning needs full tracking and a variance shared by all conditions")
    began = time.perf_counter()
    dev = torch.device(device)
    labels = np.asarray(labels)
    N, K, S, start = labels.size, model.num_conditions, chain.steps, chain.posterior_start
    examples = np.zeros(N, bool) if examples is None else np.asarray(examples, bool)
    shape = tuple(model.state_shape)
    D = int(np.prod(shape))
    learned = model.variance == "learned_range"
    clipping = model.clipping
    snaps = snapshot_indices(chain, n_snapshots)
    nulls = guidance is not None or ovr or null_tracking
    evaluate = PairEvaluator(model, eval_batch, N * ((1 if ovr else K) + nulls), precision, compile, dev,
                             timed=stats is not None)
    replan_every = _REPLAN_EVERY.get(dev.type, _REPLAN_EVERY_DEFAULT)

    indices = check_indices(indices).to(dev)
    own = torch.as_tensor(labels, dtype=torch.long, device=dev)
    arange = torch.arange(N, device=dev)
    null_cond = torch.full((N,), K, dtype=torch.long, device=dev)
    example_rows = torch.as_tensor(np.flatnonzero(examples), dtype=torch.long, device=dev)
    G = S - start
    f64 = {"dtype": torch.float64, "device": dev}
    increments = None if ovr else torch.empty((N, G, K), **f64)
    model_increments = torch.empty((N, G, K), **f64) if guidance is not None and not ovr else None
    ovr_increments = torch.empty((N, G, 1 if ovr else K), **f64) if ovr or null_tracking else None
    gram = None if learned or ovr else torch.zeros((N, G, K, K), dtype=torch.float32, device=dev)
    snapshots = torch.empty((example_rows.numel(), snaps.size, D), dtype=torch.float32, device=dev)
    pruning = prune_log_threshold is not None
    if pruning:
        lp = torch.zeros(K, dtype=torch.float64) if log_prior is None else torch.as_tensor(log_prior).double()
        log_odds = (lp[None, :] - lp[labels][:, None]).to(dev)  # log P(c|x) - log P(own|x), from the prior
        active = torch.ones((N, K), dtype=torch.bool, device=dev)
    own_flat = arange * K + own
    everything = own_flat if ovr else torch.arange(N * K, device=dev)
    rows, conds, flat, own_pos = _plan(everything, own_flat, K)
    bar = tqdm(total=N * S, unit="step", desc="sampling", disable=not progress, mininterval=5)

    null_evaluations = 0
    x = normal(seed, indices, 0, D, device=dev)  # x_T ~ N(0, I), float64 state
    for i in range(S, 0, -1):
        ab_t, sigma = float(chain.alpha_bar[i]), float(chain.sigma[i - 1])
        a, b = step_coefficients(chain, i, model.prediction)
        if clipping is not None:
            g = clipping_gain(chain, i)
            r0, s0 = x0_coefficients(model.prediction, ab_t)
        w = 1.0 if guidance is None else guidance.scale_at(float(chain.times[i]))
        bayes = i > start
        if not bayes:
            rows, conds, flat, own_pos = _plan(own_flat, own_flat, K)
        elif pruning and (S - i) % replan_every == 0:
            # the one host sync of a step (the pair count), and only when replanning
            rows, conds, flat, own_pos = _plan(active.reshape(-1).nonzero().squeeze(1), own_flat, K)
        with_null = w != 1.0 or (bayes and (ovr or null_tracking))
        # 1. the network's output for the planned pairs (and the null condition of every trajectory when guiding or
        #    tracking one-vs-rest); the own condition's (guided) output is the one that moves the trajectory.
        pair_rows, pair_conds = (rows, conds)
        if with_null:
            pair_rows, pair_conds = torch.cat([rows, arange]), torch.cat([conds, null_cond])
            null_evaluations += N
        out = evaluate(x.float(), model.network_time(int(chain.times[i])), pair_rows, pair_conds, once=not bayes)
        log_var = None
        z = normal(seed, indices, i, D, device=dev) if sigma > 0 else None
        if learned:
            out, var_values = out[:, :D], out[:, D:]
            if z is not None:
                beta, beta_tilde = float(chain.beta[i - 1]), float(chain.beta_tilde[i - 1])
                log_var = learned_range_log_variance(var_values.double(), beta, beta_tilde)  # (pairs, D)
                sigma = (0.5 * log_var.index_select(0, own_pos)).exp()  # (N, D): the own condition's, per element
        if with_null:
            out, out_null = out[:rows.numel()], out[rows.numel():].double()
            log_var, log_var_null = (None, None) if log_var is None else (log_var[:rows.numel()],
                                                                          log_var[rows.numel():])
        out_own = out.index_select(0, own_pos).double()
        move = guided_output(out_own, out_null, w) if w != 1.0 else out_own

        def x0_gap(outputs, at):
            """p(x̂_0) - x̂_0 (``seminfo.chain.clipping``) of float64 outputs of the trajectories ``at``."""
            x0 = r0 * x.index_select(0, at) + s0 * outputs
            return clipping(x0) - x0

        if clipping is not None:
            move_gap = x0_gap(move, arange)

        def with_clipping(delta, outputs, at):
            """delta = mu(move) - mu(outputs) of the affine means, plus G (gap_move - gap_outputs) with clipping."""
            if clipping is None:
                return delta
            return delta + g * (move_gap.index_select(0, at) - x0_gap(outputs, at))

        def step_increment(delta, at, lv):
            """log N(x'; mu_c, .) up to a common constant, for pairs of trajectories ``at`` (x' = mu_move + sigma z)."""
            if learned:
                return diagonal_variance_increment(delta, z.index_select(0, at), sigma.index_select(0, at), lv)
            return shared_variance_increment(delta[:, None, :], z.index_select(0, at), sigma)[:, 0]

        if bayes:
            j = i - 1 - start
            unguided = None  # log N(x'; mu_c) of the unguided kernels, per pair
            if not ovr:
                # 2. delta_c = mu~_own - mu~_c = -B w (out_c - out_own), exact in float64 (w = 1: unguided); with
                #    clipping plus G (gap_own - gap_c) of the guided outputs, as the pipeline clips them.
                delta = -(b * w) * (out.double() - out_own.index_select(0, rows))
                if clipping is not None:
                    guided = out.double() if w == 1.0 else guided_output(out.double(), out_null.index_select(0, rows),
                                                                         w)
                    delta = with_clipping(delta, guided, rows)
                pair_inc = step_increment(delta, rows, log_var)
                inc = torch.full((N * K,), PRUNED, **f64)
                inc[flat] = pair_inc
                if gram is not None:
                    gram[:, j] = _gram(delta, flat, N, K)
                inc = inc.view(N, K)
                if pruning:
                    inc = inc.masked_fill(~active, PRUNED)
                    log_odds += inc
                    active &= log_odds >= prune_log_threshold
                increments[:, j] = inc
                unguided = inc
                if model_increments is not None:
                    if w != 1.0:  # the unguided model's kernels against the step taken: delta_c = mu~_own - mu_c
                        unguided = torch.full((N * K,), PRUNED, **f64)
                        unguided[flat] = step_increment(with_clipping(-b * (out.double() - move.index_select(0, rows)),
                                                                      out.double(), rows), rows, log_var)
                        unguided = unguided.view(N, K)
                    model_increments[:, j] = unguided
            if ovr_increments is not None:
                # one condition against the null one: log N(x'; mu_c) - log N(x'; mu_null)
                # (``seminfo.chain.one_vs_rest``)
                null_inc = step_increment(with_clipping(-b * (out_null - move), out_null, arange), arange, log_var_null)
                if ovr:
                    own_inc = step_increment(with_clipping(-b * (out_own - move), out_own, arange), arange,
                                             None if log_var is None else log_var.index_select(0, own_pos))
                    ovr_increments[:, j, 0] = own_inc - null_inc
                else:
                    ovr_increments[:, j] = unguided - null_inc[:, None]
        if i in snaps and example_rows.numel():
            x0 = _predicted_x0(model.prediction, x[example_rows], move[example_rows], ab_t)
            if clipping is not None:
                x0 = clipping(x0)
            snapshots[:, int(np.flatnonzero(snaps == i)[0])] = x0.float()
        # 3. the step with the trajectory's own (guided) kernel.
        x = a * x + b * move
        if clipping is not None:
            x = x + g * move_gap
        if z is not None:
            x = x + sigma * z
        bar.update(N)
    bar.close()
    host = lambda v: None if v is None else v.cpu().numpy()  # noqa: E731
    result = TrajectoryBatch(host(increments), host(gram), x.view(N, *shape).float().cpu().numpy(),
                             snapshots.view(example_rows.numel(), snaps.size, *shape).cpu().numpy(),
                             chain.times[snaps], host(model_increments), host(ovr_increments))
    if stats is not None:
        exact = N * (1 if ovr else K) * G + N * start + null_evaluations  # the plan without pruning
        stats.update(evaluations=evaluate.evaluations, padded=evaluate.padded, exact_evaluations=exact,
                     model_seconds=evaluate.total_model_seconds(), seconds=time.perf_counter() - began,
                     compiled=evaluate.net is not model, trajectories=N, steps=S, classes=K, tracking=tracking)
    return result
