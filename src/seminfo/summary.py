"""From per-trajectory posteriors to the per-class information profiles of summary.nc.

Per class k, H_k(t) is the mean over trajectories generated from class k of the posterior entropy
h(t) = -sum_c P(c | x_t) log2 P(c | x_t); H(c | x_t) = sum_k pi_k H_k(t) and I(c; x_t) = H(c) - H(c | x_t).
The entropy rate is dH/dt on the normalised forward time t/T (positive where generation produces
information), estimated by second-order central finite differences on the (possibly non-uniform) grid
(``numpy.gradient``), after an optional Gaussian filter of ``rate_smoothing`` grid points.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter1d

from .posterior import LOG2

__all__ = ["entropy_rate", "class_moments", "partition_moments", "build_summary", "VARIABLE_ATTRS"]

BIT_RATE = "bit per unit time"

VARIABLE_ATTRS = {
    "prior": ("class prior P(c)", "1"),
    "entropy": ("class entropy H(c | x_t), class-k trajectories", "bit"),
    "entropy_sem": ("standard error of the per-class entropy", "bit"),
    "entropy_var": ("variance of the per-trajectory posterior entropy", "bit2"),
    "entropy_rate": ("entropy rate dH/dt", BIT_RATE),
    "posterior_true": ("mean posterior of the generating class P(c = k | x_t)", "1"),
    "entropy_marginal": ("conditional entropy H(c | x_t)", "bit"),
    "entropy_marginal_sem": ("standard error of H(c | x_t)", "bit"),
    "mutual_information": ("mutual information I(c; x_t)", "bit"),
    "entropy_exact": ("exact class entropy (quadrature)", "bit"),
    "entropy_rate_exact": ("exact entropy rate dH/dt", BIT_RATE),
    "entropy_marginal_exact": ("exact conditional entropy H(c | x_t)", "bit"),
    "partition_entropy": ("decision entropy H(z | x_t)", "bit"),
    "partition_entropy_sem": ("standard error of the decision entropy", "bit"),
    "partition_entropy_rate": ("decision entropy rate dH(z | x_t)/dt", BIT_RATE),
    "partition_entropy_exact": ("exact decision entropy (quadrature)", "bit"),
    "partition_side_a": ("classes on side A of the decision", "1"),
    "partition_side_b": ("classes on side B of the decision", "1"),
    "example_posterior": ("class posterior P(c | x_t) along example trajectories", "1"),
    "example_label": ("class index the example trajectory was generated for", "1"),
    "n_trajectories": ("number of trajectories per class", "1"),
    "filmstrip_x0": ("predicted x0 along example trajectories", "1"),
    "snapshot_time": ("time of each filmstrip frame", "1"),
}


def entropy_rate(t, H, smoothing: float = 0.0):
    """dH/dt along the last axis of ``H`` on the ascending grid ``t`` (normalised forward time)."""
    H = np.asarray(H, dtype=np.float64)
    if smoothing > 0:
        H = gaussian_filter1d(H, smoothing, axis=-1, mode="nearest")
    return np.gradient(H, np.asarray(t, dtype=np.float64), axis=-1)


def class_moments(values, labels, K: int):
    """Per-class mean, variance (ddof = 1) and count of per-trajectory values (N, G) -> (K, G), (K, G), (K,)."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    mean = np.empty((K,) + values.shape[1:])
    var = np.empty_like(mean)
    count = np.bincount(labels, minlength=K)
    for k in range(K):
        v = values[labels == k]
        mean[k] = v.mean(0)
        var[k] = v.var(0, ddof=1) if len(v) > 1 else np.nan
    return mean, var, count


def partition_moments(values, labels, prior, members):
    """Mean and standard error of a decision entropy over the prior-weighted mixture of ``members``.

    Each class's trajectories estimate its own expectation; the mixture expectation is their weighted sum
    with weights pi_c / sum_{members} pi (stratified sampling).
    """
    K = len(prior)
    mean, var, count = class_moments(values, labels, K)
    w = np.zeros(K)
    w[members] = np.asarray(prior)[members] / np.asarray(prior)[members].sum()
    m = (w[:, None] * mean)[members].sum(0)
    sem = np.sqrt((w[:, None] ** 2 * var / count[:, None])[members].sum(0))
    return m, sem


def _var(name, dims, data):
    long_name, units = VARIABLE_ATTRS[name]
    return dims, np.asarray(data), {"long_name": long_name, "units": units}


def build_summary(traj: xr.Dataset, rate_smoothing: float = 0.0, exact: dict | None = None) -> xr.Dataset:
    """Build summary.nc from a per-trajectory dataset.

    ``traj`` holds coordinates ``time`` (ascending), ``class``, ``alpha_bar`` (time), attribute ``T`` and
    variables ``prior`` (class), ``label`` (traj), ``entropy`` and ``posterior_true`` (traj, time); optionally
    ``partition_entropy`` (partition, traj, time) with ``partition_side_a``/``_b`` and ``example_*``.
    ``exact`` optionally maps 'entropy' -> (K, G) and 'partition_entropy' -> (P, G) analytic curves.
    """
    T = int(traj.attrs["T"])
    prior = traj["prior"].values
    K = prior.size
    labels = traj["label"].values
    times = traj["time"].values
    t = times / T
    alpha_bar = traj["alpha_bar"].values
    with np.errstate(divide="ignore"):
        log_snr = np.log(alpha_bar) - np.log1p(-alpha_bar)

    H, H_var, count = class_moments(traj["entropy"].values, labels, K)
    if np.any(count < 2):
        raise ValueError(f"every class needs at least two trajectories, got counts {count.tolist()}")
    H_sem = np.sqrt(H_var / count[:, None])
    post_true, _, _ = class_moments(traj["posterior_true"].values, labels, K)
    marginal = prior @ H
    prior_entropy = -(prior * np.log(prior)).sum() / LOG2

    data = {
        "prior": _var("prior", ("class",), prior),
        "n_trajectories": _var("n_trajectories", ("class",), count),
        "entropy": _var("entropy", ("class", "time"), H),
        "entropy_sem": _var("entropy_sem", ("class", "time"), H_sem),
        "entropy_var": _var("entropy_var", ("class", "time"), H_var),
        "entropy_rate": _var("entropy_rate", ("class", "time"), entropy_rate(t, H, rate_smoothing)),
        "posterior_true": _var("posterior_true", ("class", "time"), post_true),
        "entropy_marginal": _var("entropy_marginal", ("time",), marginal),
        "entropy_marginal_sem": _var("entropy_marginal_sem", ("time",), np.sqrt(((prior[:, None] * H_sem) ** 2).sum(0))),
        "mutual_information": _var("mutual_information", ("time",), prior_entropy - marginal),
    }
    coords = {
        "class": ("class", traj["class"].values.astype(str), {"long_name": "class"}),
        "time": ("time", times, {"long_name": "DDPM step (0 = data, T = noise)", "units": "1"}),
        "t": ("time", t, {"long_name": "normalised time t/T", "units": "1"}),
        "alpha_bar": ("time", alpha_bar, {"long_name": "signal level alpha_bar", "units": "1"}),
        "log_snr": ("time", log_snr, {"long_name": "log signal-to-noise ratio", "units": "1"}),
    }
    if "partition_entropy" in traj:
        values = traj["partition_entropy"].values
        means, sems = [], []
        for p in range(values.shape[0]):
            members = [int(c) for side in ("partition_side_a", "partition_side_b")
                       for c in str(traj[side].values[p]).split(",")]
            m, s = partition_moments(values[p], labels, prior, members)
            means.append(m)
            sems.append(s)
        coords["partition"] = ("partition", traj["partition"].values.astype(str), {"long_name": "binary decision"})
        data["partition_entropy"] = _var("partition_entropy", ("partition", "time"), np.array(means))
        data["partition_entropy_sem"] = _var("partition_entropy_sem", ("partition", "time"), np.array(sems))
        data["partition_entropy_rate"] = _var(
            "partition_entropy_rate", ("partition", "time"), entropy_rate(t, np.array(means), rate_smoothing)
        )
        for side in ("partition_side_a", "partition_side_b"):
            data[side] = _var(side, ("partition",), traj[side].values.astype(str))
    if "example_posterior" in traj:
        data["example_posterior"] = _var("example_posterior", ("example", "time", "class"),
                                         traj["example_posterior"].values)
        data["example_label"] = _var("example_label", ("example",), traj["example_label"].values)
    if "filmstrip_x0" in traj:
        data["filmstrip_x0"] = _var("filmstrip_x0", ("example", "snapshot", "channel", "y", "x"),
                                    traj["filmstrip_x0"].values)
        data["snapshot_time"] = _var("snapshot_time", ("snapshot",), traj["snapshot_time"].values)
    if exact is not None:
        He = np.asarray(exact["entropy"])
        data["entropy_exact"] = _var("entropy_exact", ("class", "time"), He)
        data["entropy_rate_exact"] = _var("entropy_rate_exact", ("class", "time"), entropy_rate(t, He))
        data["entropy_marginal_exact"] = _var("entropy_marginal_exact", ("time",), prior @ He)
        if "partition_entropy" in exact:
            data["partition_entropy_exact"] = _var(
                "partition_entropy_exact", ("partition", "time"), exact["partition_entropy"]
            )
    attrs = dict(traj.attrs)
    attrs.update(
        n_trajectories=int(count.sum()),
        prior_entropy_bits=float(prior_entropy),
        rate_estimator=f"numpy.gradient on t/T after a Gaussian filter of {rate_smoothing} grid points",
    )
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    if "filmstrip_x0" in traj:
        ds["filmstrip_x0"].encoding = dict(traj["filmstrip_x0"].encoding)  # keeps 8-bit storage (latent models)
    return ds
