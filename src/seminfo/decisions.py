"""When is each trajectory decided? Decision times, per-class medians and entropy-rate peaks, with bootstrap CIs.

Decision time of one trajectory: the largest grid time t such that the posterior of the trajectory's final MAP
class (its MAP class at the end of generation, the smallest time of the grid) exceeds ``threshold`` at every
grid time t' <= t. A trajectory whose final MAP posterior does not exceed the threshold is undecided (NaN).

Per class k (trajectories generated for class k): the median decision time over the decided trajectories and
its percentile-bootstrap confidence interval; and the time at which the entropy rate dH_k/dt peaks, with a CI
from resampling the class's trajectories, recomputing H_k and its rate (``summary.entropy_rate``, same
smoothing) and taking the argmax. Pure numpy; times are in the units of the grid given (DDPM steps here).
"""

from __future__ import annotations

import warnings

import numpy as np

from .summary import entropy_rate

__all__ = [
    "DEFAULTS",
    "decision_times",
    "percentile_interval",
    "bootstrap_median",
    "rate_peak_times",
    "class_decision_statistics",
    "class_rate_peaks",
]

# analysis.* options of the config that this module reads, with their defaults (the schema documents them).
DEFAULTS = {"decision_threshold": 0.9, "bootstrap_resamples": 1000, "bootstrap_seed": 0}
CONFIDENCE = 0.95


def decision_times(posterior, times, threshold: float):
    """Per-trajectory decision time and final MAP class.

    posterior (N, G, K) P(c | x_t) on the ascending grid ``times`` (G,); index 0 is the end of generation.
    Returns decision time (N,) float (NaN = undecided) and final MAP class (N,) int.
    """
    posterior = np.asarray(posterior)
    times = np.asarray(times, dtype=np.float64)
    final = posterior[:, 0].argmax(-1)
    p_final = np.take_along_axis(posterior, final[:, None, None], axis=2)[..., 0]  # (N, G)
    above = p_final > threshold
    # Length of the leading run of True: the first False (or G when there is none) ...
    run = np.where(above.all(1), above.shape[1], (~above).argmax(1))
    out = np.full(run.shape, np.nan)
    decided = run > 0
    out[decided] = times[run[decided] - 1]  # ... minus one is the last index still above the threshold
    return out, final


def percentile_interval(samples, confidence: float = CONFIDENCE, axis: int = 0):
    """Percentile interval of bootstrap replicates (NaN-aware)."""
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.nanpercentile(samples, [tail, 100.0 - tail], axis=axis)
    return lo, hi


def bootstrap_median(values, resamples: int, rng: np.random.Generator, confidence: float = CONFIDENCE):
    """Median of the finite ``values`` and a percentile-bootstrap interval (resampling all values, NaN included,
    so the share of undecided trajectories varies between replicates). NaN when nothing is finite."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return np.nan, np.nan, np.nan
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate made only of undecided trajectories
        reps = np.nanmedian(values[idx], axis=1)
    lo, hi = percentile_interval(reps, confidence)
    return float(np.nanmedian(values)), float(lo), float(hi)


def rate_peak_times(t, H, times, smoothing: float = 0.0):
    """Time (from ``times``) at which dH/dt, computed on the normalised grid ``t``, is largest; along H's last axis."""
    rate = entropy_rate(t, H, smoothing)
    return np.asarray(times)[rate.argmax(-1)]


def class_decision_statistics(decision_time, labels, K: int, resamples: int, seed: int,
                              confidence: float = CONFIDENCE) -> dict:
    """Per class: median decision time with its bootstrap interval, and the share of undecided trajectories."""
    decision_time = np.asarray(decision_time, dtype=np.float64)
    labels = np.asarray(labels)
    out = {name: np.full(K, np.nan) for name in ("median", "ci_low", "ci_high", "undecided")}
    for k in range(K):
        v = decision_time[labels == k]
        rng = np.random.default_rng([seed, 0, k])
        out["median"][k], out["ci_low"][k], out["ci_high"][k] = bootstrap_median(v, resamples, rng, confidence)
        out["undecided"][k] = float(np.isnan(v).mean()) if v.size else np.nan
    return out


def class_rate_peaks(entropy, labels, K: int, times, T: int, smoothing: float, resamples: int, seed: int,
                     confidence: float = CONFIDENCE) -> dict:
    """Per class: peak time of dH_k/dt (H_k the mean of ``entropy`` (N, G) over class-k trajectories) and a
    bootstrap interval from resampling class-k trajectories with replacement."""
    entropy = np.asarray(entropy, dtype=np.float64)
    labels = np.asarray(labels)
    times = np.asarray(times)
    t = times / T
    out = {name: np.full(K, np.nan) for name in ("peak", "ci_low", "ci_high")}
    for k in range(K):
        h = entropy[labels == k]
        n = h.shape[0]
        if n < 2:
            continue
        out["peak"][k] = rate_peak_times(t, h.mean(0), times, smoothing)
        rng = np.random.default_rng([seed, 1, k])
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)  # (B, n): one replicate per row
        reps = rate_peak_times(t, counts @ h / n, times, smoothing)
        out["ci_low"][k], out["ci_high"][k] = percentile_interval(reps, confidence)
    return out
