"""Classifier-free guidance with an interval, and the two posteriors along guided trajectories.

Guided prediction of condition c (Ho & Salimans 2022; diffusers' convention): out~_c = out_null + w (out_c - out_null),
w = 1 being the unguided conditional model; inside ``interval`` (chain times t_lo <= t <= t_hi of the step's start)
the step uses it, outside it the unguided out_c. Every chain's mean is affine in the output, mu = A x + B out, so the
guided chains of all conditions are Gaussian with one shared sigma (METHOD.md, "Guidance"):

- the guided posterior, exact Bayes over the family of guided kernels (the process that ran): delta_c =
  mu~_own - mu~_c = -B w (out_c - out_own), out_null cancelling. Guided chains are not time reversals of the data
  process, so, like DDIM with eta < 1, this is P(c | the path so far), not P(c | x_t);
- the model posterior, the unguided model's belief on the guided path: delta_c = mu~_own - mu_c = -B (out_c - out~_own),
  with the step actually taken x' = mu~_own + sigma z. It is not the posterior of any process that ran (the own
  condition's delta is not zero): a cross-entropy, measuring how soon the unguided model recognises what guidance
  produced (the 2026 follow-up, arXiv 2602.09651).

With w = 1, or outside the interval, out_null is not evaluated and both posteriors are the unguided one, bitwise.
Where the model's scheduler clips x̂_0 (``seminfo.chain.clipping``) each mean also carries the clipping term of its own
(guided) output, as the pipeline clips the guided prediction's x̂_0; the sampler adds it to both deltas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Guidance", "guidance_from_spec", "guided_output"]


@dataclass(frozen=True)
class Guidance:
    """Guidance scale ``scale`` (> 0) on the steps whose start time lies in ``interval`` = (t_lo, t_hi)."""

    scale: float
    interval: tuple[float, float] = (0.0, math.inf)

    def __post_init__(self):
        lo, hi = self.interval
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"the guidance scale must be a positive number, got {self.scale}")
        if not 0 <= lo <= hi:
            raise ValueError(f"the guidance interval must satisfy 0 <= t_lo <= t_hi, got {list(self.interval)}")

    def scale_at(self, t: float) -> float:
        """The scale of the step that starts at chain time ``t`` (1 outside the interval)."""
        lo, hi = self.interval
        return float(self.scale) if lo <= t <= hi else 1.0

    def describe(self) -> dict:
        return {"guidance_scale": float(self.scale), "guidance_interval": [float(v) for v in self.interval]}


def guidance_from_spec(sampling: dict) -> Guidance | None:
    """The ``sampling.guidance`` section ({scale, interval}) as a ``Guidance``, or None when absent."""
    section = sampling.get("guidance")
    if section is None:
        return None
    interval = section.get("interval")
    return Guidance(float(section["scale"]), (0.0, math.inf) if interval is None else tuple(map(float, interval)))


def guided_output(out_cond, out_null, scale: float):
    """out_null + w (out_cond - out_null): the guided native output (eps, v or x_0 alike)."""
    return out_null + scale * (out_cond - out_null)
