"""Ancestral sampling of a conditional diffusion model with the online Bayes increments of every step.

The sampler sees a model only through its adapter (``seminfo.models.base``). One call advances all its
trajectories together, from x ~ N(0, I) at the grid's start ``times[S]`` (T, or below T on a diffusers grid with
leading spacing, as the model's pipeline starts; ``model_chain`` builds the grid the model's scheduler makes). Each
step i = S … 1 (from ``times[i]`` to ``times[i-1]``) has a mean affine in the state and the network's native output,
mu_c = A x_t + B out_c (``seminfo.chain.diffusion.step_coefficients``: the DDPM mean for the 'small' and 'large'
chains, the DDIM mean for a chain from ``ddim_chain``, in eps, v or x_0 units), plus, when the model's scheduler clips
or thresholds x̂_0 (``model.clipping``), G (p(x̂_0,c) - x̂_0,c), nonlinear in the output (``seminfo.chain.clipping``),
and a standard deviation sigma shared by all conditions (or, for a learned-range network, per element and per
condition). Each step is the paper's three parts, one piece each in ``seminfo.chain.step``, with every mode
(guidance, one-vs-rest and null tracking, pruning, learned variance, clipping) in its own function there:

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
3. Move: x <- A x + B out_own (+ G gap_own) + sigma z (under guidance with the guided output), the state in
   float64 (the network sees float32).

What the posterior is. The update is exact Bayes for the chain that ran, so it gives P(c | x_t, x_{t+1}, …, x_start),
the posterior given the whole path so far (it starts from the prior, exactly: the chain's first state is drawn from
N(0, I) whatever the class), whose mean entropy is at most the sampler's H(c | x_t) (conditioning on more
cannot raise entropy). It equals P(c | x_t) only when the chain is the exact time reversal of the forward process,
under which the path above x_t carries no information about c beyond x_t: ancestral DDPM with the model's own
kernels (and DDIM with eta = 1, the same chain) approaches that as the steps get finer (S -> inf; measured on
gmm_asymmetric with exact eps by ``python benchmarks/path_deficit.py``: at S = 100 the marginal entropy lies
0.062 +- 0.005 bit below H(c | x_t) at its worst grid time, t = 10, and 0.001 +- 0.003 bit on average over the grid;
at S = 1000 nowhere resolvably, at most 0.013 +- 0.007 bit). DDIM with eta < 1 is a Gaussian Markov chain with
condition-dependent means and a shared sigma, so Bayes' rule applies step by step, but it is never that time
reversal: its posterior stays P(c | path) at every S.

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

from .diffusion import ReverseChain, sampler_chain
from .evaluator import PRECISIONS, PairEvaluator
from .guidance import Guidance
from .noise import check_indices, normal
from .pruning import PRUNED
from .step import (Plan, Step, evaluate, full_increments, gram_matrices, make_plan, null_increment, own_increment,
                   step_kernel, unguided_increments)

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
    D = int(np.prod(model.state_shape))
    snaps = snapshot_indices(chain, n_snapshots)
    tracks_null = ovr or null_tracking  # the null condition is evaluated at every Bayes step
    evaluator = PairEvaluator(model, eval_batch, N * ((1 if ovr else K) + (guidance is not None or tracks_null)),
                              precision, compile, dev, timed=stats is not None)
    record = _Record(N, K, S - start, D, dev, tracking=tracking, guided=guidance is not None,
                     null_tracking=null_tracking, gram=model.variance != "learned_range",
                     examples=int(examples.sum()), n_snapshots=snaps.size)
    pruning = None if prune_log_threshold is None else _Pruning(prune_log_threshold, log_prior, labels, K, dev)

    indices = check_indices(indices).to(dev)
    own_flat = torch.arange(N, device=dev) * K + torch.as_tensor(labels, dtype=torch.long, device=dev)
    null_cond = torch.full((N,), K, dtype=torch.long, device=dev)
    example_rows = torch.as_tensor(np.flatnonzero(examples), dtype=torch.long, device=dev)
    plan = make_plan(own_flat if ovr else torch.arange(N * K, device=dev), own_flat, K)
    bar = tqdm(total=N * S, unit="step", desc="sampling", disable=not progress, mininterval=5)
    null_evaluations = 0
    x = normal(seed, indices, 0, D, device=dev)  # x_T ~ N(0, I), float64 state
    for i in range(S, 0, -1):
        kernel = step_kernel(chain, i, model.prediction, model.clipping is not None, guidance)
        if not kernel.bayes:  # the noiseless last step needs the own condition only
            plan = make_plan(own_flat, own_flat, K)
        elif pruning is not None and (S - i) % pruning.every == 0:
            plan = pruning.plan(own_flat, K)
        with_null = kernel.w != 1.0 or (kernel.bayes and tracks_null)
        null_evaluations += N if with_null else 0
        z = normal(seed, indices, i, D, device=dev) if kernel.sigma > 0 else None
        step = evaluate(evaluator, model, chain, kernel, x, z, plan, null_cond if with_null else None)  # 1.
        if kernel.bayes:
            record.increments_of(step, plan, i - 1 - start, pruning)  # 2.
        if i in snaps and example_rows.numel():
            record.snapshots[:, int(np.flatnonzero(snaps == i)[0])] = step.predicted_x0(example_rows,
                                                                                         model.prediction).float()
        x = step.moved()  # 3.
        bar.update(N)
    bar.close()
    result = record.batch(x, model.state_shape, chain.times[snaps])
    if stats is not None:
        exact = N * (1 if ovr else K) * (S - start) + N * start + null_evaluations  # the plan without pruning
        stats.update(evaluations=evaluator.evaluations, padded=evaluator.padded, exact_evaluations=exact,
                     model_seconds=evaluator.total_model_seconds(), seconds=time.perf_counter() - began,
                     compiled=evaluator.net is not model, trajectories=N, steps=S, classes=K, tracking=tracking)
    return result


class _Pruning:
    """The decided conditions of each trajectory (``seminfo.chain.pruning``): a condition is dropped once its log
    posterior odds against the trajectory's own fall below the threshold."""

    def __init__(self, threshold: float, log_prior, labels: np.ndarray, K: int, device: torch.device):
        lp = torch.zeros(K, dtype=torch.float64) if log_prior is None else torch.as_tensor(log_prior).double()
        self.threshold = threshold
        self.log_odds = (lp[None, :] - lp[labels][:, None]).to(device)  # log P(c|x) - log P(own|x), from the prior
        self.active = torch.ones((labels.size, K), dtype=torch.bool, device=device)
        self.every = _REPLAN_EVERY.get(device.type, _REPLAN_EVERY_DEFAULT)

    def plan(self, own_flat: torch.Tensor, K: int) -> Plan:
        """The pairs still active; the one host sync of a step (the pair count), and only when replanning."""
        return make_plan(self.active.reshape(-1).nonzero().squeeze(1), own_flat, K)

    def update(self, increments: torch.Tensor) -> torch.Tensor:
        """Mark the step's increments (N, K) of dropped conditions ``PRUNED`` and drop the newly decided ones."""
        increments = increments.masked_fill(~self.active, PRUNED)
        self.log_odds += increments
        self.active &= self.log_odds >= self.threshold
        return increments


class _Record:
    """The sampler's outputs, filled step by step on the device (float64 increments, float32 Gram matrices)."""

    def __init__(self, N: int, K: int, G: int, D: int, device, *, tracking: str, guided: bool, null_tracking: bool,
                 gram: bool, examples: int, n_snapshots: int):
        f64 = {"dtype": torch.float64, "device": device}
        ovr = tracking == "one_vs_rest"
        self.N, self.K = N, K
        self.increments = None if ovr else torch.empty((N, G, K), **f64)
        self.model_increments = torch.empty((N, G, K), **f64) if guided and not ovr else None
        self.ovr_increments = torch.empty((N, G, 1 if ovr else K), **f64) if ovr or null_tracking else None
        self.gram = torch.zeros((N, G, K, K), dtype=torch.float32, device=device) if gram and not ovr else None
        self.snapshots = torch.empty((examples, n_snapshots, D), dtype=torch.float32, device=device)

    def increments_of(self, step: Step, plan: Plan, j: int, pruning: _Pruning | None):
        """2. The Bayes increments of Bayes step j (posterior grid index) of each tracked family."""
        N, K = self.N, self.K
        unguided = None  # log N(x'; mu_c) of the unguided kernels, per condition
        if self.increments is not None:  # full tracking
            increments, delta = full_increments(step, plan, N, K)
            if self.gram is not None:
                self.gram[:, j] = gram_matrices(delta, plan, N, K)
            if pruning is not None:
                increments = pruning.update(increments)
            self.increments[:, j] = unguided = increments
            if self.model_increments is not None:
                if step.kernel.w != 1.0:
                    unguided = unguided_increments(step, plan, N, K)
                self.model_increments[:, j] = unguided
        if self.ovr_increments is not None:  # log N(x'; mu_c) - log N(x'; mu_null) (seminfo.chain.one_vs_rest)
            null = null_increment(step)
            if self.increments is None:  # one-vs-rest tracking: the own condition only
                self.ovr_increments[:, j, 0] = own_increment(step, plan) - null
            else:  # null tracking: every condition
                self.ovr_increments[:, j] = unguided - null[:, None]

    def batch(self, x: torch.Tensor, shape, snapshot_times: np.ndarray) -> TrajectoryBatch:
        """The outputs on the host, with the generated x_0 ``x``."""
        host = lambda v: None if v is None else v.cpu().numpy()  # noqa: E731
        N, E, n = self.N, self.snapshots.shape[0], self.snapshots.shape[1]
        return TrajectoryBatch(host(self.increments), host(self.gram), x.view(N, *shape).float().cpu().numpy(),
                               self.snapshots.view(E, n, *shape).cpu().numpy(), snapshot_times,
                               host(self.model_increments), host(self.ovr_increments))
