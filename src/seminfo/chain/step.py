"""One reverse step of a batch of trajectories, in the paper's three parts: evaluate, increment, move.

Step i goes from ``times[i]`` to ``times[i-1]``. Its kernels have a mean affine in the state and the network's
output, mu_c = A x + B out_c (``step_coefficients``), plus, when the model's scheduler clips or thresholds x̂_0,
G (p(x̂_0,c) - x̂_0,c) with x̂_0,c = r0 x + s0 out_c (``seminfo.chain.clipping``), and a standard deviation sigma shared
by all conditions (per element and condition for a learned-range network). The trajectory moves with the output
``move``: its own condition's, or under guidance the guided one, null + w (own - null).

1. ``evaluate``: the network's outputs for the planned (trajectory, condition) pairs, split into what the other two
   parts need (a ``Step``).
2. The Bayes increments, one function per family of kernels compared with the step taken:
   ``full_increments`` (every planned condition of the family that moves the trajectory, and the mean differences
   the Gram matrices are built from), ``unguided_increments`` (the unguided model's kernels on a guided path),
   ``own_increment`` and ``null_increment`` (one-vs-rest, ``seminfo.chain.one_vs_rest``). Each is the
   condition-dependent part of log N(x'; mu_c, .) at the step taken, x' = mu_move + sigma z, in float64
   (``seminfo.chain.posterior``).
3. ``Step.moved``: x <- A x + B move (+ G gap_move) + sigma z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .diffusion import (ReverseChain, clipping_gain, learned_range_log_variance, predict_x0, step_coefficients,
                        x0_coefficients)
from .guidance import Guidance, guided_output
from .posterior import diagonal_variance_increment, shared_variance_increment
from .pruning import PRUNED

__all__ = ["Plan", "make_plan", "Kernel", "step_kernel", "Step", "evaluate", "full_increments",
           "unguided_increments", "own_increment", "null_increment", "gram_matrices"]


@dataclass(frozen=True)
class Plan:
    """The (trajectory, condition) pairs a step evaluates, trajectory-major: each pair's trajectory (row) and
    condition, its flat index n * K + c, and where each trajectory's own pair sits in the list."""

    rows: torch.Tensor
    conds: torch.Tensor
    flat: torch.Tensor
    own_pos: torch.Tensor


def make_plan(flat: torch.Tensor, own_flat: torch.Tensor, K: int) -> Plan:
    """The plan of the pairs with flat indices ``flat`` (ascending); ``own_flat`` n * K + own_n."""
    position = torch.full((own_flat.numel() * K,), -1, dtype=torch.long, device=flat.device)
    position[flat] = torch.arange(flat.numel(), device=flat.device)
    return Plan(flat // K, flat % K, flat, position[own_flat])


@dataclass(frozen=True)
class Kernel:
    """Step i's coefficients: mean A x + B out (+ G (p(x̂_0) - x̂_0), x̂_0 = r0 x + s0 out, when the model clips), the
    shared standard deviation (0 at the noiseless last step), the guidance weight w (1: unguided) and whether the step
    is a Bayes step (all but the noiseless last one)."""

    i: int
    alpha_bar: float  # alpha_bar at times[i]
    beta: float  # beta and beta_tilde of the step, the ends of a learned variance range
    beta_tilde: float
    a: float
    b: float
    sigma: float
    w: float
    bayes: bool
    g: float | None = None
    r0: float | None = None
    s0: float | None = None


def step_kernel(chain: ReverseChain, i: int, prediction: str, clipped: bool, guidance: Guidance | None) -> Kernel:
    """The coefficients of step i of ``chain`` for a network predicting ``prediction``."""
    ab_t = float(chain.alpha_bar[i])
    a, b = step_coefficients(chain, i, prediction)
    g, r0, s0 = None, None, None
    if clipped:
        g = clipping_gain(chain, i)
        r0, s0 = x0_coefficients(prediction, ab_t)
    w = 1.0 if guidance is None else guidance.scale_at(float(chain.times[i]))
    return Kernel(i, ab_t, float(chain.beta[i - 1]), float(chain.beta_tilde[i - 1]), a, b, float(chain.sigma[i - 1]),
                  w, i > chain.posterior_start, g, r0, s0)


@dataclass
class Step:
    """What a step's increments and move are computed from. ``at`` arguments select trajectories (rows of the
    trajectory-indexed tensors); None means all of them, in order."""

    kernel: Kernel
    x: torch.Tensor  # (N, D) float64, the state at times[i]
    out: torch.Tensor  # (pairs, D) the planned pairs' outputs, as the network returned them
    out_own: torch.Tensor  # (N, D) float64, the own condition's
    out_null: torch.Tensor | None  # (N, D) float64, the null condition's, when evaluated
    move: torch.Tensor  # (N, D) float64, the output the trajectory moves with
    z: torch.Tensor | None  # (N, D) float64 noise of the step; None when sigma = 0
    sigma: float | torch.Tensor  # shared, or (N, D) the own condition's, per element (learned range)
    learned: bool  # learned-range variance: log_var below holds each pair's
    log_var: torch.Tensor | None = None  # (pairs, D)
    log_var_null: torch.Tensor | None = None  # (N, D)
    clipping: object = None  # seminfo.chain.clipping.Clipping, or None
    move_gap: torch.Tensor | None = None  # (N, D) p(x̂_0) - x̂_0 of ``move``, with clipping

    def __post_init__(self):
        if self.clipping is not None:
            self.move_gap = self.x0_gap(self.move)

    def x0_gap(self, outputs: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """p(x̂_0) - x̂_0 of float64 outputs of the trajectories ``at``."""
        k = self.kernel
        x0 = k.r0 * _rows(self.x, at) + k.s0 * outputs
        return self.clipping(x0) - x0

    def mean_difference(self, delta: torch.Tensor, outputs: torch.Tensor, at: torch.Tensor | None = None):
        """mu(move) - mu(outputs) from ``delta``, that of the affine means: with clipping, plus
        G (gap_move - gap_outputs)."""
        if self.clipping is None:
            return delta
        return delta + self.kernel.g * (_rows(self.move_gap, at) - self.x0_gap(outputs, at))

    def log_likelihood(self, delta: torch.Tensor, at: torch.Tensor | None = None, log_var=None) -> torch.Tensor:
        """log N(x'; mu_c, .) up to a term common to all conditions, x' = mu_move + sigma z, from
        delta = mu_move - mu_c of pairs of the trajectories ``at`` (``log_var``: their learned log-variances)."""
        if self.learned:
            return diagonal_variance_increment(delta, _rows(self.z, at), _rows(self.sigma, at), log_var)
        return shared_variance_increment(delta[:, None, :], _rows(self.z, at), self.sigma)[:, 0]

    def moved(self) -> torch.Tensor:
        """3. The state at times[i-1]: x <- A x + B move (+ G gap_move) + sigma z."""
        k = self.kernel
        x = k.a * self.x + k.b * self.move
        if self.clipping is not None:
            x = x + k.g * self.move_gap
        if self.z is not None:
            x = x + self.sigma * self.z
        return x

    def predicted_x0(self, rows: torch.Tensor, prediction: str) -> torch.Tensor:
        """x̂_0 of the trajectories ``rows`` from the output they move with (clipped as the step clips it)."""
        x, out = self.x[rows], self.move[rows]
        if prediction == "epsilon":
            x0 = predict_x0(x, out, self.kernel.alpha_bar)
        else:
            r, s = x0_coefficients(prediction, self.kernel.alpha_bar)
            x0 = r * x + s * out
        return x0 if self.clipping is None else self.clipping(x0)


def _rows(values, at):
    return values if at is None else values.index_select(0, at)


def evaluate(evaluator, model, chain: ReverseChain, kernel: Kernel, x: torch.Tensor, z: torch.Tensor | None,
             plan: Plan, null_cond: torch.Tensor | None) -> Step:
    """1. The network's outputs for the planned pairs, and for the null condition of every trajectory when
    ``null_cond`` (N,) is given (guiding, or tracking against the null condition); ``evaluator`` a
    ``seminfo.chain.evaluator.PairEvaluator``, ``x`` (N, D) float64 (the network sees float32)."""
    rows, conds = plan.rows, plan.conds
    if null_cond is not None:
        rows = torch.cat([rows, torch.arange(x.shape[0], device=x.device)])
        conds = torch.cat([conds, null_cond])
    out = evaluator(x.float(), model.network_time(int(chain.times[kernel.i])), rows, conds, once=not kernel.bayes)
    learned = model.variance == "learned_range"
    sigma, log_var, log_var_null, out_null = kernel.sigma, None, None, None
    if learned:
        D = x.shape[1]
        out, var_values = out[:, :D], out[:, D:]
        if z is not None:
            log_var = learned_range_log_variance(var_values.double(), kernel.beta, kernel.beta_tilde)  # (pairs, D)
            sigma = (0.5 * log_var.index_select(0, plan.own_pos)).exp()  # (N, D): the own condition's, per element
    if null_cond is not None:
        P = plan.rows.numel()
        out, out_null = out[:P], out[P:].double()
        if log_var is not None:
            log_var, log_var_null = log_var[:P], log_var[P:]
    out_own = out.index_select(0, plan.own_pos).double()
    move = guided_output(out_own, out_null, kernel.w) if kernel.w != 1.0 else out_own
    return Step(kernel, x, out, out_own, out_null, move, z, sigma, learned, log_var, log_var_null, model.clipping)


def _scatter(pair_values: torch.Tensor, plan: Plan, N: int, K: int) -> torch.Tensor:
    """(N, K) from the planned pairs' values; ``PRUNED`` where a pair was not evaluated."""
    full = torch.full((N * K,), PRUNED, dtype=torch.float64, device=pair_values.device)
    full[plan.flat] = pair_values
    return full.view(N, K)


def full_increments(step: Step, plan: Plan, N: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2. The increments (N, K) of the family that moves the trajectory (the guided one under guidance) and its mean
    differences (pairs, D): delta_c = mu~_own - mu~_c = -B w (out_c - out_own), exact in float64, with clipping plus
    G (gap_own - gap_c) of the guided outputs, as the pipeline clips them."""
    k = step.kernel
    out = step.out.double()
    delta = -(k.b * k.w) * (out - step.out_own.index_select(0, plan.rows))
    if step.clipping is not None:
        guided = out if k.w == 1.0 else guided_output(out, step.out_null.index_select(0, plan.rows), k.w)
        delta = step.mean_difference(delta, guided, plan.rows)
    return _scatter(step.log_likelihood(delta, plan.rows, step.log_var), plan, N, K), delta


def unguided_increments(step: Step, plan: Plan, N: int, K: int) -> torch.Tensor:
    """2. The unguided model's kernels against the step a guided chain took (N, K): delta_c = mu~_own - mu_c."""
    out = step.out.double()
    delta = step.mean_difference(-step.kernel.b * (out - step.move.index_select(0, plan.rows)), out, plan.rows)
    return _scatter(step.log_likelihood(delta, plan.rows, step.log_var), plan, N, K)


def own_increment(step: Step, plan: Plan) -> torch.Tensor:
    """2. The own condition's unguided kernel against the step taken (N,)."""
    log_var = None if step.log_var is None else step.log_var.index_select(0, plan.own_pos)
    delta = step.mean_difference(-step.kernel.b * (step.out_own - step.move), step.out_own)
    return step.log_likelihood(delta, None, log_var)


def null_increment(step: Step) -> torch.Tensor:
    """2. The null condition's kernel against the step taken (N,)."""
    delta = step.mean_difference(-step.kernel.b * (step.out_null - step.move), step.out_null)
    return step.log_likelihood(delta, None, step.log_var_null)


def gram_matrices(delta: torch.Tensor, plan: Plan, N: int, K: int) -> torch.Tensor:
    """Per-trajectory Gram matrices <delta_c, delta_d> (N, K, K) of the planned pairs (the others count as 0)."""
    if plan.flat.numel() == N * K:  # every pair, in trajectory-major order
        full = delta.view(N, K, -1)
    else:
        full = delta.new_zeros((N * K, delta.shape[1]))
        full[plan.flat] = delta
        full = full.view(N, K, -1)
    return torch.bmm(full, full.transpose(1, 2)).float()
