"""Stratified bootstrap over trajectories: replicate means of per-trajectory curves and percentile bands.

A replicate resamples the trajectories of each class with replacement within the class (stratified by class:
every replicate keeps each class's trajectory count). It is held as a count matrix, counts[b, i] = how often
trajectory i of the class is drawn in replicate b, so the replicate's class mean of any per-trajectory curve is
counts @ curves / n, one float64 matrix product. Every curve of one replicate (class means, their prior-weighted
combinations, partitions, rates) is computed from the same counts, so the replicates are joint across curves
and across classes; class k's counts come from the generator seeded [seed, 1, k] (the decisions study uses the
same streams, so its peak-time intervals come from the very replicates whose bands profiles.nc stores).

The band of a curve is pointwise: at each grid time, the 2.5 and 97.5 percentiles of the replicates (a 95 %
percentile interval of the Monte Carlo estimate, not of the spread of single trajectories).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONFIDENCE", "RESAMPLES", "SEED", "class_counts", "replicate_means", "percentile_interval",
           "percentile_band"]

CONFIDENCE = 0.95
RESAMPLES = 1000  # analysis.bootstrap_resamples when the config does not set it
SEED = 0  # analysis.bootstrap_seed when the config does not set it
_CHUNK_COUNTS = 1 << 22
_STREAM = 1  # second word of every class's seed: the trajectory-resampling stream (0 is the decision medians')


def class_counts(n: int, resamples: int, seed: int, k: int, chunk: int | None = None):
    """Count matrices of class k's replicates, ``chunk`` replicates at a time: yields (rows, counts (b, n)).

    Each replicate draws n indices uniformly with replacement (so its counts are multinomial(n, 1/n)). The
    draws are sequential in one generator, so the replicates do not depend on ``chunk`` (default: about 4 M
    counts per chunk; large chunks keep the matrix products efficient).
    """
    rng = np.random.default_rng([seed, _STREAM, k])
    chunk = chunk or max(1, _CHUNK_COUNTS // n)
    for lo in range(0, resamples, chunk):
        b = min(chunk, resamples - lo)
        idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        yield slice(lo, lo + b), np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)


def replicate_means(sources, labels, K: int, resamples: int, seed: int, chunk: int | None = None) -> list[np.ndarray]:
    """Bootstrap replicates of weighted class means of per-trajectory curves, all from the same replicates.

    sources  list of (curves (N, G), weights (J, K)): row j of a source's output is
             sum_k weights[j, k] * (class-k mean of ``curves``), e.g. the identity for per-class means and the
             prior for H(c | x_t) = sum_k pi_k H_k
    labels   (N,) class of each trajectory
    Returns one float64 array (J, resamples, G) per source.
    """
    labels = np.asarray(labels)
    prepared = [(np.asarray(c), np.asarray(w, dtype=np.float64)) for c, w in sources]
    out = [np.zeros((w.shape[0], resamples, c.shape[1])) for c, w in prepared]
    for k in range(K):
        rows = np.flatnonzero(labels == k)
        used = [i for i, (_, w) in enumerate(prepared) if np.any(w[:, k] != 0)]
        if not used or rows.size == 0:
            continue
        class_curves = {i: prepared[i][0][rows].astype(np.float64) / rows.size for i in used}
        for sl, counts in class_counts(rows.size, resamples, seed, k, chunk):
            counts = counts.astype(np.float64)
            for i in used:
                mean = counts @ class_curves[i]  # (b, G)
                w = prepared[i][1][:, k]
                for j in np.flatnonzero(w):
                    out[i][j, sl] += w[j] * mean
    return out


def percentile_interval(samples, confidence: float = CONFIDENCE, axis: int = 0):
    """Percentile interval of bootstrap replicates along ``axis`` (NaN-aware)."""
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.nanpercentile(samples, [tail, 100.0 - tail], axis=axis)
    return lo, hi


def percentile_band(replicates, confidence: float = CONFIDENCE, axis: int = 0):
    """Pointwise percentile band of finite replicate curves along ``axis`` (the fast path of
    ``percentile_interval``, for arrays of millions of values)."""
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail], axis=axis)
    return lo, hi
