"""Ancestral sampling of a class-conditional DDPM with the online Bayes increments of every step.

At every step the network is evaluated for all K classes (one batched call, chunked), the trajectory moves
with its own class's kernel, and the class-dependent part of log N(x_t'; mu_c(x_t), sigma^2 I) is recorded
for every class (``seminfo.posterior.shared_variance_increment``). Each trajectory draws its noise from its
own generator seeded by (seed, global trajectory index), so its result does not depend on the shard or batch
it runs in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..diffusion import ReverseChain, ddpm_mean_shift
from ..posterior import shared_variance_increment

log = logging.getLogger(__name__)

__all__ = ["TrajectoryBatch", "trajectory_seed", "snapshot_indices", "sample_trajectories"]


def trajectory_seed(seed: int, index: int) -> int:
    """A 63-bit seed for trajectory ``index`` of a run with ``seed`` (independent streams via SeedSequence)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def snapshot_indices(chain: ReverseChain, count: int) -> np.ndarray:
    """Grid indices (descending, from T towards 0) at which predicted x_0 snapshots are taken."""
    return np.unique(np.round(np.linspace(chain.steps, 1, count)).astype(np.int64))[::-1]


@dataclass
class TrajectoryBatch:
    """What sampling returns for a set of trajectories (numpy arrays)."""

    increments: np.ndarray  # (N, S - start, K) float64, step j from times[start+j+1] to times[start+j]
    final: np.ndarray  # (N, C, H, W) float32, the generated x_0
    snapshots: np.ndarray  # (E, n_snapshots, C, H, W) float32 predicted x_0 of the example trajectories
    snapshot_times: np.ndarray  # (n_snapshots,) int


def _eps_all_classes(model, x, t: int, K: int, chunk: int):
    """eps_c(x) for every class: (B, K, C, H, W) float32, evaluated in chunks of ``chunk`` images."""
    B = x.shape[0]
    xs = x.repeat_interleave(K, dim=0)
    labels = torch.arange(K, device=x.device).repeat(B)
    ts = torch.full((B * K,), t, device=x.device, dtype=torch.long)
    out = torch.cat([model(xs[i:i + chunk], ts[i:i + chunk], labels[i:i + chunk])
                     for i in range(0, B * K, chunk)])
    return out.view(B, K, *x.shape[1:])


@torch.no_grad()
def sample_trajectories(model, chain: ReverseChain, labels, indices, seed: int, num_classes: int,
                        eval_batch: int = 1024, examples=None, n_snapshots: int = 8, device="cpu",
                        progress: bool = True) -> TrajectoryBatch:
    """Sample trajectories of the given classes and record the per-step log-likelihood increments.

    labels    (N,) class of each trajectory
    indices   (N,) global trajectory indices (seed the per-trajectory noise)
    examples  boolean mask (N,) of trajectories whose predicted x_0 is snapshotted for figures
    The posterior grid starts at ``chain.posterior_start`` (the deterministic last step is not a Bayes step).
    """
    labels = np.asarray(labels)
    indices = np.asarray(indices)
    examples = np.zeros(labels.size, bool) if examples is None else np.asarray(examples, bool)
    K, S, start = num_classes, chain.steps, chain.posterior_start
    shape = tuple(model.image_shape)
    D = int(np.prod(shape))
    per_batch = max(1, eval_batch // K)
    snaps = snapshot_indices(chain, n_snapshots)
    increments = np.empty((labels.size, S - start, K), dtype=np.float64)
    final = np.empty((labels.size,) + shape, dtype=np.float32)
    snapshots = np.empty((int(examples.sum()), snaps.size) + shape, dtype=np.float32)
    example_rows = np.cumsum(examples) - 1
    bar = tqdm(total=labels.size * S, unit="step", desc="sampling", disable=not progress, mininterval=5)
    for lo in range(0, labels.size, per_batch):
        hi = min(lo + per_batch, labels.size)
        gens = [torch.Generator().manual_seed(trajectory_seed(seed, int(i))) for i in indices[lo:hi]]
        noise = lambda: torch.stack([torch.randn(D, generator=g, dtype=torch.float64) for g in gens])  # noqa: E731
        own = torch.as_tensor(labels[lo:hi], device=device)
        rows = torch.arange(hi - lo, device=device)
        x = noise().to(device)  # x_T ~ N(0, I), float64 state; the network sees float32
        for i in range(S, 0, -1):
            ab_t, beta, sigma = chain.alpha_bar[i], chain.beta[i - 1], chain.sigma[i - 1]
            eps = _eps_all_classes(model, x.view(-1, *shape).float(), int(chain.times[i]), K, eval_batch)
            eps = eps.reshape(hi - lo, K, D).double()
            eps_own = eps[rows, own]
            shift = float(ddpm_mean_shift(ab_t, beta))
            mean_own = (x - shift * eps_own) / float(np.sqrt(1.0 - beta))
            z = noise().to(device)
            if i > start:
                # delta_c = mu_own - mu_c = shift / sqrt(alpha) (eps_c - eps_own)
                delta = (shift / float(np.sqrt(1.0 - beta))) * (eps - eps_own[:, None])
                increments[lo:hi, i - 1 - start] = shared_variance_increment(delta, z, sigma).cpu().numpy()
            if i in snaps and examples[lo:hi].any():
                sel = np.flatnonzero(examples[lo:hi])
                x0 = (x[sel] - float(np.sqrt(1.0 - ab_t)) * eps_own[sel]) / float(np.sqrt(ab_t))
                snapshots[example_rows[lo + sel], int(np.flatnonzero(snaps == i)[0])] = (
                    x0.view(-1, *shape).float().cpu().numpy()
                )
            x = mean_own + sigma * z
            bar.update(hi - lo)
        final[lo:hi] = x.view(-1, *shape).float().cpu().numpy()
    bar.close()
    return TrajectoryBatch(increments, final, snapshots, chain.times[snaps])
