"""Counter-based Gaussian noise: each trajectory's noise at each step is a pure function of (seed, index, step).

The sampler must give a trajectory the same result whatever shard or batch it runs in, without a Python
loop over trajectories. A counter-based generator does that in one vectorised call: the bits for element
pair ``j`` of step ``step`` of trajectory ``index`` are Threefry-2x32 with 20 rounds (Salmon et al. 2011,
*Parallel random numbers: as easy as 1, 2, 3*; the generator behind JAX's PRNG) applied to the counter
``(step, j)`` under the key ``(seed, index)``. Box–Muller turns each pair of 32-bit words into two standard
normal draws.

The words are computed with 64-bit integer tensor arithmetic (masked to 32 bits), so they are bitwise the
same on every device; the float transform (log, cos, sin in float64) agrees across devices to an ulp or
so. Uniforms have 32-bit resolution, which truncates the normals at |z| <= sqrt(64 ln 2) ~= 6.66 (a tail
probability of 3e-11 per draw).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["threefry2x32", "check_indices", "normal"]

_MASK = 0xFFFFFFFF
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA
_TWO_POW_32 = 4294967296.0


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) | (x >> (32 - r))) & _MASK


def threefry2x32(key0, key1, ctr0, ctr1) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20 of counter words (ctr0, ctr1) under key words (key0, key1).

    Every argument is an int64 tensor (or int) holding values in [0, 2**32); they broadcast against each
    other, and the tensors share one device, where the words are computed. Returns the two output words as int64
    tensors in [0, 2**32).
    """
    # The words live on the device of the tensor arguments. Python ints stay Python ints (tensor ops take them as
    # scalars): turning one into a tensor on a GPU is a host-to-device copy, which stalls every step of the loop.
    device = next((w.device for w in (key0, key1, ctr0, ctr1) if isinstance(w, torch.Tensor)), None)
    k0, k1, c0, c1 = (int(w) if isinstance(w, (int, np.integer)) else torch.as_tensor(w, dtype=torch.int64,
                                                                                      device=device)
                      for w in (key0, key1, ctr0, ctr1))
    ks = (k0, k1, (k0 ^ k1) ^ _PARITY)
    x0 = (c0 + ks[0]) & _MASK
    x1 = (c1 + ks[1]) & _MASK
    for r in range(20):
        x0 = (x0 + x1) & _MASK
        x1 = _rotl(x1, _ROTATIONS[r % 8]) ^ x0
        if r % 4 == 3:
            s = r // 4 + 1  # key injection after every fourth round
            x0 = (x0 + ks[s % 3]) & _MASK
            x1 = (x1 + ks[(s + 1) % 3] + s) & _MASK
    return tuple(torch.as_tensor(x, dtype=torch.int64, device=device) for x in (x0, x1))


def check_indices(index) -> torch.Tensor:
    """Trajectory indices as an int64 CPU tensor, refused unless they lie in [0, 2**32)."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if index.size and (index.min() < 0 or index.max() > _MASK):
        raise ValueError("trajectory indices must lie in [0, 2**32)")
    return torch.from_numpy(index)


def normal(seed: int, index, step: int, dim: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """Standard normal draws of shape (len(index), dim): row n is the noise of trajectory ``index[n]`` at ``step``.

    seed   run seed, 0 <= seed < 2**32
    index  global trajectory indices in [0, 2**32): array-like (checked here), or an int64 tensor, taken as
           it is (check it once with ``check_indices``; checking a GPU tensor would sync every step)
    step   which draw along the trajectory (the sampler uses 0 for x_T and i for step i)
    A row depends on (seed, index[n], step) alone, not on the other rows or the device.
    """
    if not 0 <= int(seed) <= _MASK or not 0 <= int(step) <= _MASK:
        raise ValueError(f"seed and step must lie in [0, 2**32), got seed={seed}, step={step}")
    if not isinstance(index, torch.Tensor):
        index = check_indices(index)
    index = index.to(device=device, dtype=torch.int64)
    pairs = torch.arange((dim + 1) // 2, dtype=torch.int64, device=index.device)
    b0, b1 = threefry2x32(int(seed), index[:, None], int(step), pairs[None, :])
    u = (b0.to(torch.float64) + 1.0) / _TWO_POW_32  # (0, 1]
    angle = (b1.to(torch.float64) + 0.5) * (2.0 * math.pi / _TWO_POW_32)
    radius = torch.sqrt(-2.0 * torch.log(u))
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1).reshape(index.numel(), -1)
    return z[:, :dim].to(dtype)
