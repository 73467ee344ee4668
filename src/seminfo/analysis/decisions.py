"""When is each trajectory decided? Decision times, per-class medians and entropy-rate peaks, with bootstrap CIs.

Decision time of one trajectory: the largest grid time t such that the posterior of the trajectory's final MAP
class (its MAP class at the end of generation, the smallest time of the grid) exceeds ``threshold`` at every
grid time t' <= t. A trajectory whose final MAP posterior does not exceed the threshold is undecided (NaN).

Per class k (trajectories generated for class k): the median decision time over the decided trajectories and
its percentile-bootstrap confidence interval; and the time at which the entropy rate dH_k/dt peaks, with a CI
from resampling the class's trajectories, recomputing H_k and its rate (``summary.entropy_rate``, same
smoothing) and taking the argmax. The replicates are those of the profiles' bands (``seminfo.analysis.bootstrap``,
stratified by class), so they are joint across classes: the difference of two classes' peak times in one
replicate is a replicate of the difference, which gives the pairwise table "does class a peak before class b?".
Pure numpy; times are in the units of the grid given (DDPM steps here).
"""

from __future__ import annotations

import warnings

import numpy as np

from .bootstrap import CONFIDENCE, RESAMPLES, SEED, percentile_interval, replicate_means
from .summary import rate_peak_times

__all__ = [
    "DEFAULTS",
    "decision_times",
    "percentile_interval",
    "bootstrap_median",
    "class_decision_statistics",
    "class_rate_peaks",
    "pairwise_differences",
]

# analysis.* options of the config that this module reads, with their defaults (the schema documents them).
DEFAULTS = {"decision_threshold": 0.9, "bootstrap_resamples": RESAMPLES, "bootstrap_seed": SEED}


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


def one_vs_rest_decision_times(p, times, threshold: float):
    """One-vs-rest: the time each trajectory was decided *for its class* (P(c | x_t) stays above ``threshold`` from
    then on; NaN when it was not, including trajectories decided for the rest) and whether it ended decided for
    its class (P(c | x_0) > 1/2): (N,) float and (N,) bool. ``p`` (N, G) on the ascending grid ``times``."""
    p = np.asarray(p, dtype=np.float64)
    dt, side = decision_times(np.stack([p, 1.0 - p], axis=-1), times, threshold)
    return np.where(side == 0, dt, np.nan), side == 0


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
    bootstrap interval from resampling class-k trajectories with replacement.

    Also returns the replicate peak times (``replicates``, (K, resamples)), joint across classes, for
    ``pairwise_differences``. A class with fewer than two trajectories gets NaN.
    """
    entropy = np.asarray(entropy, dtype=np.float64)
    labels = np.asarray(labels)
    times = np.asarray(times)
    t = times / T
    count = np.bincount(labels, minlength=K)
    reps = replicate_means([(entropy, np.eye(K))], labels, K, resamples, seed)[0]  # (K, B, G)
    replicates = rate_peak_times(t, reps, times, smoothing).astype(np.float64)
    out = {name: np.full(K, np.nan) for name in ("peak", "ci_low", "ci_high")}
    for k in np.flatnonzero(count >= 2):
        out["peak"][k] = rate_peak_times(t, entropy[labels == k].mean(0), times, smoothing)
        out["ci_low"][k], out["ci_high"][k] = percentile_interval(replicates[k], confidence)
    replicates[count < 2] = np.nan
    out["replicates"] = replicates
    return out


def pairwise_differences(point, replicates, confidence: float = CONFIDENCE) -> dict:
    """Differences point[a] - point[b] (K, K) with percentile intervals from joint replicates (K, B), and whether
    each interval excludes 0 (``resolved``; the diagonal is 0 and never resolved)."""
    point = np.asarray(point, dtype=np.float64)
    replicates = np.asarray(replicates, dtype=np.float64)
    diff = replicates[:, None, :] - replicates[None, :, :]
    lo, hi = percentile_interval(diff, confidence, axis=2)
    return {"difference": point[:, None] - point[None, :], "ci_low": lo, "ci_high": hi,
            "resolved": (lo > 0) | (hi < 0)}
