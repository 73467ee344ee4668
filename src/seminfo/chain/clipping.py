"""x̂_0 clipping and dynamic thresholding of diffusers' schedulers: every step stays Gaussian, its mean moves.

``DDPMScheduler.step`` (and ``DDIMScheduler.step``) compute x̂_0 from the network's output, replace it, when the
scheduler's configuration says so, by

- ``thresholding`` (dynamic thresholding, Saharia et al. 2022; takes precedence over clip_sample): per sample,
  s = clamp(quantile(|x̂_0|, ``dynamic_thresholding_ratio``), 1, ``sample_max_value``) and
  x̂_0 -> clamp(x̂_0, -s, s) / s
- ``clip_sample``: x̂_0 -> clamp(x̂_0, -``clip_sample_range``, ``clip_sample_range``)

and form the step mean from the result. The step's variance does not depend on x̂_0, so the step is still a Gaussian
transition x' ~ N(mu_c, sigma^2 I); only its mean is now a nonlinear function of the output,

    mu_c = A x + B out_c + G (p(x̂_0,c) - x̂_0,c),     x̂_0,c = r x + s out_c,

with (A, B) the affine mean (``diffusion.step_coefficients``), G ``diffusion.clipping_gain``, (r, s)
``diffusion.x0_coefficients`` and p the map above. The Bayes increment of condition c needs its mean, through
delta_c = mu_own - mu_c = -B (out_c - out_own) + G (gap_own - gap_c), gap = p(x̂_0) - x̂_0, which the sampler computes
in float64 from the float32 outputs (``seminfo.chain.sampler``); a clip that leaves x̂_0 inside its range has gap
exactly 0, so the increment is then the affine one bitwise. The Rao-Blackwell Gram matrix needs only these delta_c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Clipping", "clipping_from_scheduler_config", "CLIP_SAMPLE_DEFAULTS"]

# diffusers' default of clip_sample where a scheduler_config.json leaves it out (the class's __init__ default); the
# other scheduler classes do not clip.
CLIP_SAMPLE_DEFAULTS = {"DDPMScheduler": True, "DDIMScheduler": True}


@dataclass(frozen=True)
class Clipping:
    """What a scheduler does to x̂_0 before forming the step mean: ``kind`` 'clip' (to ±``clip_range``) or 'threshold'
    (dynamic thresholding with quantile ``ratio`` and ceiling ``max_value``)."""

    kind: str
    clip_range: float = 1.0
    ratio: float = 0.995
    max_value: float = 1.0

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        """The processed x̂_0 of a batch (B, …), each sample (row) on its own, in the input's dtype."""
        if self.kind == "clip":
            return x0.clamp(-self.clip_range, self.clip_range)
        flat = x0.reshape(x0.shape[0], -1)
        s = _row_quantile(flat.abs(), self.ratio).clamp(min=1.0, max=self.max_value)[:, None]
        return (torch.minimum(torch.maximum(flat, -s), s) / s).reshape(x0.shape)

    def describe(self) -> dict:
        """The scheduler options applied, with diffusers' names."""
        if self.kind == "clip":
            return {"clip_sample": True, "clip_sample_range": self.clip_range}
        return {"thresholding": True, "dynamic_thresholding_ratio": self.ratio, "sample_max_value": self.max_value}


def _row_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each row with linear interpolation, as ``torch.quantile(values, q, dim=1)`` (which refuses
    inputs above 2^24 elements)."""
    n = values.shape[1]
    ordered = values.sort(dim=1).values
    position = q * (n - 1)
    lo = int(position // 1)
    hi = min(lo + 1, n - 1)
    return torch.lerp(ordered[:, lo], ordered[:, hi], position - lo)


def clipping_from_scheduler_config(config: dict, source: str = "scheduler_config.json") -> Clipping | None:
    """The x̂_0 processing a diffusers scheduler configuration asks for, or None.

    ``thresholding`` wins over ``clip_sample`` as in ``DDPMScheduler.step``; a missing ``clip_sample`` takes the
    class's default (``CLIP_SAMPLE_DEFAULTS``: true for DDPMScheduler and DDIMScheduler). Bad values raise ValueError
    naming ``source`` and the key.
    """
    def number(key, default, low, inclusive_high=None):
        value = config.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > low
        if ok and inclusive_high is not None:
            ok = value <= inclusive_high
        if not ok:
            bound = f"in ({low}, {inclusive_high}]" if inclusive_high is not None else f"> {low}"
            raise ValueError(f"{source}: {key}: must be a number {bound}, got {value!r}")
        return float(value)

    if config.get("thresholding"):
        return Clipping("threshold", ratio=number("dynamic_thresholding_ratio", 0.995, 0.0, 1.0),
                        max_value=number("sample_max_value", 1.0, 0.0))
    if config.get("clip_sample", CLIP_SAMPLE_DEFAULTS.get(config.get("_class_name"), False)):
        return Clipping("clip", clip_range=number("clip_sample_range", 1.0, 0.0))
    return None
