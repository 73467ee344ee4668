"""Ancestral sampling of a class-conditional DDPM (or DDIM, eta > 0) with the online Bayes increments of every step.

One call advances all its trajectories together. Each step i = S … 1 (from ``times[i]`` to ``times[i-1]``) has a
mean affine in the state and the noise prediction, mu_c = a x_t + b eps_c (``seminfo.diffusion.mean_coefficients``:
the DDPM mean for the 'small' and 'large' chains, the DDIM mean for a chain from ``ddim_chain``), and a standard
deviation sigma shared by all classes:

1. Evaluate eps for the planned (trajectory, class) pairs, in chunks of ``eval_batch`` images: all K
   classes of every trajectory, or, with pruning, those not yet decided against. This is the only work
   that grows with K, and the step where the time goes.
2. Bayes increment of every evaluated class: with the step actually taken, x_t' = mu_own + sigma z,
   delta_c = mu_own - mu_c = -b (eps_c - eps_own), and the class-dependent part of
   log N(x_t'; mu_c, sigma^2 I) (``seminfo.posterior.shared_variance_increment``), in float64. The step to
   t = 0 with sigma = 0 is not a Bayes step and needs only the trajectory's own class.
3. Move: x <- a x + b eps_own + sigma z, the state in float64 (the network sees float32).

What the posterior is. Ancestral DDPM with the model's own kernels (and DDIM with eta = 1, the same chain) is the
time reversal of the forward process, under which the path above x_t carries no information about c beyond x_t:
the online update gives P(c | x_t). DDIM with eta < 1 is still a Gaussian Markov chain with class-dependent means
and a shared sigma, so Bayes' rule applies step by step, but it is not that time reversal (its x_t keeps the
forward marginal as the steps get finer; the joint law of the path does not): given x_t, the states above it still
depend on c. The update then gives P(c | x_t, x_{t+1}, …, x_T), the posterior given the whole path so far, whose
mean entropy is at most the sampler's H(c | x_t) (conditioning on more cannot raise entropy) and lower in practice.

Noise is counter-based (``seminfo.ddpm.noise``): trajectory n's draw at step i is a function of
(seed, global index n, i) alone, so a trajectory's result does not depend on the shard or batch it runs in
(bitwise where the chunks have the same shapes). Nothing is read back to the host inside the loop, except
the pair count when a pruning plan is rebuilt.

Pruning of decided classes (``prune_log_threshold`` = theta < 0; off by default, which is exact). After each
Bayes update, a class c whose log posterior odds against the trajectory's own class k fall below theta,
log P(c | x_t) - log P(k | x_t) < theta (which implies log P(c | x_t) < theta), is dropped: from the next step
on it is not evaluated and its increments are ``PRUNED`` (-1e6: finite, as the pipeline's files must be, and so
far below any real increment that exp underflows and P(c | x) = 0 exactly, as with -inf). The own class is
never dropped (it moves the trajectory), so pruning leaves the trajectories themselves unchanged.

Error bound. The pruned posterior is the exact one conditioned on c not being a dropped class:
Q_t(j) = P_t(j) / (1 - eps_t) for the kept classes, where eps_t = sum of P_t(c) over the dropped c is the mass
the exact posterior would still give them. So ||Q_t - P_t||_TV = eps_t, and no probability moves by more
than eps_t. The trajectory is drawn from class k's kernel, under which every likelihood ratio
N(x'; mu_c, s^2 I) / N(x'; mu_k, s^2 I) has mean 1 (DDPM and DDIM alike): the exact odds
O_t(c:k) = P_t(c) / P_t(k) are a non-negative martingale along the trajectory. With t_c the step at which c was
dropped (a stopping time, O_{t_c} < e^theta), for every later t: E[P_t(c)] <= E[O_t(c:k)] <= e^theta, and with
at most K - 1 classes dropped

    E[eps_t] <= (K - 1) e^theta,   and   Pr(sup_t eps_t >= a) <= (K - 1) e^theta / a   (Ville's inequality).

Entropy: H(P) = h(eps) + eps H(P on the dropped classes) + (1 - eps) H(Q), hence |H(P_t) - H(Q_t)| <= g(eps_t)
with g(e) = h(e) + e log2(K - 1), h the binary entropy in bits. g is concave and increasing on [0, 1/2], so by
Jensen a per-class entropy profile (a mean over the class's trajectories) moves by at most
g((K - 1) e^theta) in expectation, when (K - 1) e^theta <= 1/2. ``pruning_error_bound`` returns both bounds;
K = 10, theta = -12: 5.5e-5 in P and 1.0e-3 bit in the entropy profile.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..diffusion import ReverseChain, mean_coefficients, predict_x0
from ..posterior import shared_variance_increment
from .noise import check_indices, normal

log = logging.getLogger(__name__)

__all__ = ["TrajectoryBatch", "PRECISIONS", "PRUNED", "snapshot_indices", "pruning_error_bound",
           "sample_trajectories"]

PRECISIONS = ("fp32", "bf16")
PRUNED = -1.0e6  # the increment recorded for a dropped class (log-likelihood "minus infinity", kept finite)
# Steps between rebuilds of the pruning plan. Rebuilding reads the pair count back to the host, free on a
# CPU; on a GPU it would stall the queue every step. Classes are dropped at the same steps either way;
# between rebuilds a dropped class is still evaluated (its result unused), so only the saving is delayed.
_REPLAN_EVERY = {"cpu": 1}
_REPLAN_EVERY_DEFAULT = 8
# Chunks are padded up to one of a few sizes, so that pruning (a different pair count at every step) gives a
# handful of input shapes, each prepared once by the conv backend (eager) or compiled once (compile):
# eager, multiples of eval_batch / 8; compiled, eval_batch / 8, / 4, / 2 and eval_batch itself.
_EAGER_BUCKETS = 8
_COMPILED_BUCKETS = 4
_CHANNELS_LAST = True


def snapshot_indices(chain: ReverseChain, count: int) -> np.ndarray:
    """Grid indices (descending, from T towards 0) at which predicted x_0 snapshots are taken."""
    return np.unique(np.round(np.linspace(chain.steps, 1, count)).astype(np.int64))[::-1]


def pruning_error_bound(log_threshold: float, num_classes: int) -> tuple[float, float]:
    """Bounds on the error that pruning at ``log_threshold`` introduces (see the module docstring).

    Returns ``(p_bound, entropy_bound_bits)``: the expected total-variation distance between the pruned and
    the exact posterior at any time on a trajectory, (K - 1) e^theta, and the bound on the error of a
    per-class mean entropy profile, h(p) + p log2(K - 1) (valid for p <= 1/2, else log2 K is returned).
    """
    p = (num_classes - 1) * math.exp(log_threshold)
    if p > 0.5:
        return min(p, 1.0), math.log2(num_classes)
    h = -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p) if p > 0 else 0.0
    return p, h + p * math.log2(max(num_classes - 1, 1))


@dataclass
class TrajectoryBatch:
    """What sampling returns for a set of trajectories (numpy arrays)."""

    increments: np.ndarray  # (N, S - start, K) float64, step j from times[start+j+1] to times[start+j]
    final: np.ndarray  # (N, C, H, W) float32, the generated x_0
    snapshots: np.ndarray  # (E, n_snapshots, C, H, W) float32 predicted x_0 of the example trajectories
    snapshot_times: np.ndarray  # (n_snapshots,) int


class _ClassEps:
    """eps_theta(x[rows], t, classes) for a list of (trajectory, class) pairs, in padded chunks.

    Applies the precision (bf16 autocast around the network only) and torch.compile; times the network
    calls when asked (CUDA events on a GPU, read once at the end, so timing adds no host sync).
    """

    def __init__(self, model, image_shape, eval_batch: int, max_pairs: int, precision: str, compile: bool, device,
                 timed: bool):
        self.model, self.shape, self.device = model, tuple(image_shape), device
        # Convolutions run faster on channels-last (NHWC) tensors with cuDNN and with oneDNN (1.09x eager on
        # the 2-core CPU of BENCHMARKS.md); the conversion changes the weights' strides in place, not their
        # values.
        self.channels_last = _CHANNELS_LAST and any(p.dim() == 4 for p in model.parameters())
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.batch = max(1, min(int(eval_batch), max_pairs))  # no chunk larger than the whole step
        self.net = torch.compile(model, dynamic=False) if compile else model
        self.compiled = compile
        if compile:
            sizes = {max(1, -(-self.batch // 2**k)) for k in range(_COMPILED_BUCKETS)}
        else:
            granule = max(1, -(-self.batch // _EAGER_BUCKETS))
            sizes = {min(self.batch, granule * k) for k in range(1, _EAGER_BUCKETS + 1)}
        self.sizes, self.used = sorted(sizes), set()
        self.autocast = precision == "bf16"
        self.timed, self.model_seconds, self._events = timed, 0.0, []
        self.evaluations = self.padded = 0

    def __call__(self, x32: torch.Tensor, t: int, rows: torch.Tensor, classes: torch.Tensor,
                 once: bool = False) -> torch.Tensor:
        """x32 (N, D) float32 states; rows, classes (M,) pairs → eps (M, D) float32.

        ``once``: a shape needed for this call only (the last step) reuses a compiled size rather than
        compiling a new one.
        """
        M, D = rows.numel(), x32.shape[1]
        out = torch.empty((M, D), dtype=torch.float32, device=self.device)
        for lo in range(0, M, self.batch):
            hi = min(lo + self.batch, M)
            n = hi - lo
            size = next(b for b in self.sizes if b >= n)
            if once and self.compiled and size not in self.used:
                size = min((b for b in self.used if b >= n), default=size)
            self.used.add(size)
            xin = x32.new_zeros((size, D))
            xin[:n] = x32.index_select(0, rows[lo:hi])
            labels = classes.new_zeros(size)
            labels[:n] = classes[lo:hi]
            xin = xin.view(size, *self.shape)
            if self.channels_last:
                xin = xin.contiguous(memory_format=torch.channels_last)
            ts = torch.full((size,), t, dtype=torch.long, device=self.device)
            out[lo:hi] = self._forward(xin, ts, labels)[:n].reshape(n, D).float()
            self.evaluations += n
            self.padded += size - n
        return out

    def _forward(self, x, ts, labels):
        cast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext()
        if not self.timed:
            with cast:
                return self._net(x, ts, labels)
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            with cast:
                y = self._net(x, ts, labels)
            end.record()
            self._events.append((start, end))
            return y
        began = time.perf_counter()
        with cast:
            y = self._net(x, ts, labels)
        self.model_seconds += time.perf_counter() - began
        return y

    def _net(self, x, ts, labels):
        if self.compiled and self.net is not self.model:
            try:
                return self.net(x, ts, labels)
            except Exception as err:  # noqa: BLE001 - a compiler that fails here must not stop the run
                log.warning("torch.compile failed (%s: %s); continuing eager", type(err).__name__, err)
                self.net = self.model
        return self.net(x, ts, labels)

    def total_model_seconds(self) -> float:
        if self._events:
            torch.cuda.synchronize(self.device)
            self.model_seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1e3
            self._events.clear()
        return self.model_seconds


def _plan(flat: torch.Tensor, own_flat: torch.Tensor, K: int):
    """Pairs to evaluate from their flat indices n * K + c (ascending, so trajectory-major).

    Returns rows, classes, flat and where each trajectory's own pair sits in the list.
    """
    position = torch.full((own_flat.numel() * K,), -1, dtype=torch.long, device=flat.device)
    position[flat] = torch.arange(flat.numel(), device=flat.device)
    return flat // K, flat % K, flat, position[own_flat]


@torch.no_grad()
def sample_trajectories(model, chain: ReverseChain, labels, indices, seed: int, num_classes: int,
                        eval_batch: int = 1024, examples=None, n_snapshots: int = 8, device="cpu",
                        progress: bool = True, *, prune_log_threshold: float | None = None,
                        precision: str = "fp32", compile: bool = False, log_prior=None,
                        stats: dict | None = None) -> TrajectoryBatch:
    """Sample trajectories of the given classes and record the per-step log-likelihood increments.

    chain                DDPM ('small' / 'large') or DDIM chain (``seminfo.diffusion.sampler_chain``)
    labels               (N,) class of each trajectory
    indices              (N,) global trajectory indices (key the per-trajectory noise)
    examples             boolean mask (N,) of trajectories whose predicted x_0 is snapshotted for figures
    eval_batch           network evaluations (trajectory x class pairs) per forward call
    prune_log_threshold  None = exact; theta < 0: drop a class once its log posterior odds against the
                         trajectory's own class fall below theta (error bounds: module docstring)
    precision            'fp32', or 'bf16' autocast around the network (increments stay float64)
    compile              torch.compile the network (static shapes: chunks padded to eval_batch / 8, / 4, / 2
                         or eval_batch, so at most four compilations)
    log_prior            (K,) log class prior used for the pruning odds; None = uniform
    stats                if a dict, filled with evaluations performed, padding, seconds and model_seconds
    The posterior grid starts at ``chain.posterior_start`` (the deterministic last step is not a Bayes step).
    Pruned classes get increment ``PRUNED`` from the step after they are dropped. A convolutional model's
    weights are converted to channels-last in place (same values, other strides).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if prune_log_threshold is not None and not prune_log_threshold < 0:
        raise ValueError(f"prune_log_threshold must be negative (or None for exact), got {prune_log_threshold}")
    began = time.perf_counter()
    dev = torch.device(device)
    labels = np.asarray(labels)
    N, K, S, start = labels.size, num_classes, chain.steps, chain.posterior_start
    examples = np.zeros(N, bool) if examples is None else np.asarray(examples, bool)
    shape = tuple(model.image_shape)
    D = int(np.prod(shape))
    snaps = snapshot_indices(chain, n_snapshots)
    eps_fn = _ClassEps(model, shape, eval_batch, N * K, precision, compile, dev, timed=stats is not None)
    replan_every = _REPLAN_EVERY.get(dev.type, _REPLAN_EVERY_DEFAULT)

    indices = check_indices(indices).to(dev)
    own = torch.as_tensor(labels, dtype=torch.long, device=dev)
    arange = torch.arange(N, device=dev)
    example_rows = torch.as_tensor(np.flatnonzero(examples), dtype=torch.long, device=dev)
    increments = torch.empty((N, S - start, K), dtype=torch.float64, device=dev)
    snapshots = torch.empty((example_rows.numel(), snaps.size, D), dtype=torch.float32, device=dev)
    pruning = prune_log_threshold is not None
    if pruning:
        lp = torch.zeros(K, dtype=torch.float64) if log_prior is None else torch.as_tensor(log_prior).double()
        log_odds = (lp[None, :] - lp[labels][:, None]).to(dev)  # log P(c|x) - log P(own|x), from the prior
        active = torch.ones((N, K), dtype=torch.bool, device=dev)
    own_flat = arange * K + own
    rows, classes, flat, own_pos = _plan(torch.arange(N * K, device=dev), own_flat, K)
    bar = tqdm(total=N * S, unit="step", desc="sampling", disable=not progress, mininterval=5)

    x = normal(seed, indices, 0, D, device=dev)  # x_T ~ N(0, I), float64 state
    for i in range(S, 0, -1):
        ab_t, sigma = float(chain.alpha_bar[i]), float(chain.sigma[i - 1])
        a, b = mean_coefficients(chain, i)
        bayes = i > start
        if not bayes:
            rows, classes, flat, own_pos = _plan(own_flat, own_flat, K)
        elif pruning and (S - i) % replan_every == 0:
            # the one host sync of a step (the pair count), and only when replanning
            rows, classes, flat, own_pos = _plan(active.reshape(-1).nonzero().squeeze(1), own_flat, K)
        # 1. eps of the planned pairs; the own class's is the one that moves the trajectory.
        eps = eps_fn(x.float(), int(chain.times[i]), rows, classes, once=not bayes)
        eps_own = eps.index_select(0, own_pos).double()
        z = normal(seed, indices, i, D, device=dev) if sigma > 0 else None
        if bayes:
            # 2. delta_c = mu_own - mu_c = -b (eps_c - eps_own), exact in float64.
            delta = -b * (eps.double() - eps_own.index_select(0, rows))
            pair_inc = shared_variance_increment(delta[:, None, :], z.index_select(0, rows), sigma)[:, 0]
            inc = torch.full((N * K,), PRUNED, dtype=torch.float64, device=dev)
            inc[flat] = pair_inc
            inc = inc.view(N, K)
            if pruning:
                inc = inc.masked_fill(~active, PRUNED)
                log_odds += inc
                active &= log_odds >= prune_log_threshold
            increments[:, i - 1 - start] = inc
        if i in snaps and example_rows.numel():
            x0 = predict_x0(x[example_rows], eps_own[example_rows], ab_t)
            snapshots[:, int(np.flatnonzero(snaps == i)[0])] = x0.float()
        # 3. the step with the trajectory's own kernel.
        x = a * x + b * eps_own
        if z is not None:
            x = x + sigma * z
        bar.update(N)
    bar.close()
    out = TrajectoryBatch(increments.cpu().numpy(), x.view(N, *shape).float().cpu().numpy(),
                          snapshots.view(example_rows.numel(), snaps.size, *shape).cpu().numpy(), chain.times[snaps])
    if stats is not None:
        exact = N * K * (S - start) + N * start
        stats.update(evaluations=eps_fn.evaluations, padded=eps_fn.padded, exact_evaluations=exact,
                     model_seconds=eps_fn.total_model_seconds(), seconds=time.perf_counter() - began,
                     compiled=eps_fn.net is not model, trajectories=N, steps=S, classes=K)
    return out
