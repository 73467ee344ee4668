"""From per-trajectory posteriors to the per-class information profiles of summary.nc.

Per class k, H_k(t) is the mean over trajectories generated from class k of the posterior entropy
h(t) = -sum_c P(c | x_t) log2 P(c | x_t); H(c | x_t) = sum_k pi_k H_k(t) and I(c; x_t) = H(c) - H(c | x_t).
The entropy rate is dH/dt on the normalised forward time t/T (positive where generation produces
information), estimated by second-order central finite differences on the (possibly non-uniform) grid
(``numpy.gradient``), after an optional Gaussian filter of ``rate_smoothing`` grid points.

Every entropy and rate curve gets a pointwise 95 % band from a bootstrap over trajectories stratified by class
(``seminfo.analysis.bootstrap``): a replicate resamples each class's trajectories within the class, its curves are the
same functions of its class means as the point estimates (prior weights for H(c | x_t), member weights for a
partition), and its rate is ``entropy_rate`` (same smoothing) of its mean curve. The bands are stored as
``<variable>_ci_low`` / ``<variable>_ci_high``.

A smoothed rate estimates the smoothed true rate; near a peak the smoothing flattens the curve, a bias the
bootstrap does not see. A smoothed rate's band is therefore extended by the estimated smoothing bias
(``smoothing_bias``): to leading order the bias of a Gaussian filter of width s is (s^2 / 2) r'', and filtering the
smoothed estimate once more changes it by the same amount, so b = G_s(r_s) - r_s estimates it from the data, and the
band [lo, hi] becomes [min(lo, lo - b), max(hi, hi - b)]: it covers the unsmoothed true rate, not only the smoothed
one (``tests/test_bands.py`` measures the coverage on the default mixtures).

Per-trajectory curves ``entropy_rb`` (traj, time) and ``partition_entropy_rb`` (partition, traj, time), when the
posterior stage provides them, are Rao-Blackwellised curves: same mean as ``entropy``, step differences equal to
the expected change given x_t. Their rates are added as ``entropy_rate_rb``, ``entropy_marginal_rate_rb`` and
``partition_entropy_rate_rb``, with bands from the same replicates.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter1d

from ..chain.posterior import LOG2
from .bootstrap import CONFIDENCE, RESAMPLES, SEED, percentile_band, percentile_interval, replicate_means

__all__ = ["entropy_rate", "smoothing_bias", "rate_band", "rate_peak_times", "rate_peak_interval", "class_moments", "partition_weights", "partition_moments", "build_summary",
           "VARIABLE_ATTRS"]

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
    "entropy_marginal_rate": ("rate dH(c | x_t)/dt of the conditional entropy", BIT_RATE),
    "entropy_rate_rb": ("entropy rate dH/dt, Rao-Blackwellised", BIT_RATE),
    "entropy_rate_rb_variance_ratio": ("variance of the plain over the Rao-Blackwellised per-step entropy change "
                                       "at the class's per-step rate peak (equivalent trajectories per trajectory)",
                                       "1"),
    "entropy_marginal_rate_rb": ("rate dH(c | x_t)/dt of the conditional entropy, Rao-Blackwellised", BIT_RATE),
    "partition_entropy_rate_rb": ("decision entropy rate dH(z | x_t)/dt, Rao-Blackwellised", BIT_RATE),
    "entropy_exact": ("exact class entropy (quadrature)", "bit"),
    "entropy_exact_se": ("standard error of the exact class entropy (Monte Carlo of the exact posterior)", "bit"),
    "entropy_rate_exact": ("exact entropy rate dH/dt (the true rate: no smoothing)", BIT_RATE),
    "entropy_rate_exact_smoothed": ("exact entropy rate through the drawn rate's own smoothing (compare with the "
                                    "estimate's expectation, not with the truth)", BIT_RATE),
    "entropy_marginal_rate_exact": ("exact rate dH(c | x_t)/dt (no smoothing)", BIT_RATE),
    "entropy_marginal_exact": ("exact conditional entropy H(c | x_t)", "bit"),
    "partition_entropy": ("decision entropy H(z | x_t)", "bit"),
    "partition_entropy_sem": ("standard error of the decision entropy", "bit"),
    "partition_entropy_rate": ("decision entropy rate dH(z | x_t)/dt", BIT_RATE),
    "partition_entropy_exact": ("exact decision entropy (quadrature)", "bit"),
    "partition_entropy_exact_se": ("standard error of the exact decision entropy (Monte Carlo of the exact "
                                   "posterior)", "bit"),
    "partition_rate_peak_time": ("time of the decision-entropy rate peak (of the Rao-Blackwellised rate where "
                                 "there is one)", "1"),
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


def smoothing_bias(t, H, smoothing: float):
    """Estimated bias of the smoothed rate ``entropy_rate(t, H, smoothing)`` against the unsmoothed one: the change
    that one more Gaussian filter of the same width makes to it (module docstring); 0 without smoothing."""
    r = entropy_rate(t, H, smoothing)
    if smoothing <= 0:
        return np.zeros_like(r)
    return gaussian_filter1d(r, smoothing, axis=-1, mode="nearest") - r


def rate_band(t, replicates, means, smoothing: float, axis: int = 1):
    """Band of the rate of ``means`` (its replicates along ``axis``), extended by the estimated smoothing bias."""
    lo, hi = percentile_band(entropy_rate(t, replicates, smoothing), axis=axis)
    bias = smoothing_bias(t, means, smoothing)
    return np.minimum(lo, lo - bias), np.maximum(hi, hi - bias)


def rate_peak_times(t, H, times, smoothing: float = 0.0):
    """Time (from ``times``) at which dH/dt, computed on the normalised grid ``t``, is largest; along H's last axis."""
    rate = entropy_rate(t, H, smoothing)
    return np.asarray(times)[rate.argmax(-1)]


def rate_peak_interval(t, replicates, times, smoothing: float = 0.0, confidence: float = CONFIDENCE):
    """Percentile interval of the rate's peak time over bootstrap replicate curves (..., B, G) -> (...), (...)."""
    return percentile_interval(rate_peak_times(t, replicates, times, smoothing).astype(np.float64), confidence,
                               axis=-1)


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


def partition_weights(prior, members):
    """Class weights (K,) of the prior-weighted mixture of ``members``: pi_c / sum_{members} pi, 0 elsewhere."""
    prior = np.asarray(prior, dtype=np.float64)
    w = np.zeros(prior.size)
    w[members] = prior[members] / prior[members].sum()
    return w


def partition_moments(values, labels, prior, members):
    """Mean and standard error of a decision entropy over the prior-weighted mixture of ``members``.

    Each class's trajectories estimate its own expectation; the mixture expectation is their weighted sum
    with weights ``partition_weights`` (stratified sampling).
    """
    K = len(prior)
    mean, var, count = class_moments(values, labels, K)
    w = partition_weights(prior, members)
    m = (w[:, None] * mean)[members].sum(0)
    sem = np.sqrt((w[:, None] ** 2 * var / count[:, None])[members].sum(0))
    return m, sem


def rb_variance_ratios(h, h_rb, labels, prior):
    """Variance across trajectories of the plain per-step entropy change over that of the Rao-Blackwellised one, at
    the step where each class's (and the prior-weighted marginal's) mean entropy falls fastest: the per-step rate
    peak. (K,) and a float; a ratio r means the plain estimator needs r times the trajectories for the same
    standard error at that step. With ``rate_smoothing`` the plain rate also averages step noise over neighbouring
    steps, so the gain of the rates drawn is smaller (docs/concepts.md, "The Rao-Blackwellised rate")."""
    h, h_rb, labels, prior = (np.asarray(a, dtype=np.float64) for a in (h, h_rb, labels, prior))
    plain, rb = h[:, :-1] - h[:, 1:], h_rb[:, :-1] - h_rb[:, 1:]
    K = prior.size
    per_class = np.full(K, np.nan)
    v_plain, v_rb, mean_rb = 0.0, 0.0, 0.0
    for k in range(K):
        m = labels == k
        if m.sum() < 2:
            continue
        peak = int(np.argmin(rb[m].mean(0)))
        per_class[k] = plain[m][:, peak].var(ddof=1) / max(rb[m][:, peak].var(ddof=1), 1e-300)
        v_plain = v_plain + prior[k] ** 2 * plain[m].var(0, ddof=1) / m.sum()
        v_rb = v_rb + prior[k] ** 2 * rb[m].var(0, ddof=1) / m.sum()
        mean_rb = mean_rb + prior[k] * rb[m].mean(0)
    peak = int(np.argmin(mean_rb))
    return per_class, float(v_plain[peak] / max(v_rb[peak], 1e-300))


def _var(name, dims, data):
    long_name, units = VARIABLE_ATTRS[name]
    return dims, np.asarray(data), {"long_name": long_name, "units": units}


def _band(name, dims, band) -> dict:
    """``<name>_ci_low`` / ``_ci_high`` from a (low, high) pair, named after the variable they bound."""
    long_name, units = VARIABLE_ATTRS[name]
    what = f"the pointwise {100 * CONFIDENCE:g}% stratified-bootstrap band of the {long_name}"
    return {
        f"{name}_ci_{side}": (dims, np.asarray(value), {"long_name": f"{bound} bound of {what}", "units": units})
        for side, bound, value in (("low", "lower", band[0]), ("high", "upper", band[1]))
    }


def _interval(name, dims, interval) -> dict:
    """``<name>_ci_low`` / ``_ci_high``: the percentile interval of a number over the bootstrap replicates."""
    long_name, units = VARIABLE_ATTRS[name]
    what = f"the {100 * CONFIDENCE:g}% stratified-bootstrap interval of the {long_name}"
    return {
        f"{name}_ci_{side}": (dims, np.asarray(value), {"long_name": f"{bound} bound of {what}", "units": units})
        for side, bound, value in (("low", "lower", interval[0]), ("high", "upper", interval[1]))
    }


def _members(traj: xr.Dataset) -> list[list[int]]:
    """Class indices of each partition (side A, then side B)."""
    return [[int(c) for side in ("partition_side_a", "partition_side_b") for c in str(traj[side].values[p]).split(",")]
            for p in range(traj.sizes["partition"])]


def _bands(t, replicates, means, smoothing: float, axis: int = 1):
    """Bands of replicate curves and of their rates (``rate_band``: ``entropy_rate`` along the last axis)."""
    return percentile_band(replicates, axis=axis), rate_band(t, replicates, means, smoothing, axis)


def build_summary(traj: xr.Dataset, rate_smoothing: float = 0.0, exact: dict | None = None,
                  resamples: int = RESAMPLES, seed: int = SEED, rb_rate_smoothing: float | None = None) -> xr.Dataset:
    """Build summary.nc from a per-trajectory dataset.

    ``traj`` holds coordinates ``time`` (ascending), ``class``, ``alpha_bar`` (time), attribute ``T`` and
    variables ``prior`` (class), ``label`` (traj), ``entropy`` and ``posterior_true`` (traj, time); optionally
    ``partition_entropy`` (partition, traj, time) with ``partition_side_a``/``_b``, ``example_*``, and the
    Rao-Blackwellised curves ``entropy_rb`` (traj, time) and ``partition_entropy_rb`` (partition, traj, time).
    ``exact`` optionally maps 'entropy' -> (K, G) and 'partition_entropy' -> (P, G) analytic curves; where they are
    Monte Carlo averages of the exact posterior (d-dimensional mixtures) also 'entropy_se', 'partition_entropy_se'
    and 'method' (recorded as attribute ``exact_entropy_method``). ``resamples`` and ``seed`` set the stratified
    bootstrap of the bands. ``rate_smoothing`` is the Gaussian filter width (grid points) of the plain rates,
    ``rb_rate_smoothing`` that of the Rao-Blackwellised ones (None: the same).
    """
    rb_smoothing = rate_smoothing if rb_rate_smoothing is None else float(rb_rate_smoothing)
    T = int(traj.attrs["T"])
    prior = traj["prior"].values
    K = prior.size
    labels = traj["label"].values
    times = traj["time"].values
    t = times / T
    alpha_bar = traj["alpha_bar"].values
    with np.errstate(divide="ignore"):
        log_snr = np.log(alpha_bar) - np.log1p(-alpha_bar)

    entropy = traj["entropy"].transpose("traj", "time").values
    H, H_var, count = class_moments(entropy, labels, K)
    if np.any(count < 2):
        raise ValueError(f"every class needs at least two trajectories, got counts {count.tolist()}")
    H_sem = np.sqrt(H_var / count[:, None])
    post_true, _, _ = class_moments(traj["posterior_true"].values, labels, K)
    marginal = prior @ H
    prior_entropy = -(prior * np.log(prior)).sum() / LOG2

    # One joint set of replicates for every curve: per class and H(c | x_t) from each entropy-like source, and
    # each partition's member-weighted mean.
    class_and_marginal = np.vstack([np.eye(K), prior])
    has_partitions = "partition_entropy" in traj
    has_rb = "entropy_rb" in traj
    has_partition_rb = has_partitions and "partition_entropy_rb" in traj
    members = _members(traj) if has_partitions else []
    part_w = [partition_weights(prior, m)[None] for m in members]
    sources = [(entropy, class_and_marginal)]
    if has_partitions:
        part_values = traj["partition_entropy"].transpose("partition", "traj", "time").values
        sources += [(part_values[p], w) for p, w in enumerate(part_w)]
    if has_rb:
        entropy_rb = traj["entropy_rb"].transpose("traj", "time").values
        sources.append((entropy_rb, class_and_marginal))
    if has_partition_rb:
        part_rb = traj["partition_entropy_rb"].transpose("partition", "traj", "time").values
        sources += [(part_rb[p], w) for p, w in enumerate(part_w)]
    reps = iter(replicate_means(sources, labels, K, resamples, seed))

    rep = next(reps)  # (K + 1, B, G)
    h_band, h_rate_band = _bands(t, rep[:K], H, rate_smoothing)
    m_band, m_rate_band = _bands(t, rep[K], marginal, rate_smoothing, axis=0)
    mi_band = percentile_band(prior_entropy - rep[K], axis=0)
    data = {
        "prior": _var("prior", ("class",), prior),
        "n_trajectories": _var("n_trajectories", ("class",), count),
        "entropy": _var("entropy", ("class", "time"), H),
        "entropy_sem": _var("entropy_sem", ("class", "time"), H_sem),
        "entropy_var": _var("entropy_var", ("class", "time"), H_var),
        **_band("entropy", ("class", "time"), h_band),
        "entropy_rate": _var("entropy_rate", ("class", "time"), entropy_rate(t, H, rate_smoothing)),
        **_band("entropy_rate", ("class", "time"), h_rate_band),
        "posterior_true": _var("posterior_true", ("class", "time"), post_true),
        "entropy_marginal": _var("entropy_marginal", ("time",), marginal),
        "entropy_marginal_sem": _var("entropy_marginal_sem", ("time",), np.sqrt(((prior[:, None] * H_sem) ** 2).sum(0))),
        **_band("entropy_marginal", ("time",), m_band),
        "entropy_marginal_rate": _var("entropy_marginal_rate", ("time",), entropy_rate(t, marginal, rate_smoothing)),
        **_band("entropy_marginal_rate", ("time",), m_rate_band),
        "mutual_information": _var("mutual_information", ("time",), prior_entropy - marginal),
        **_band("mutual_information", ("time",), mi_band),
    }
    # a sigma grid or a flow path's grid: its steps are grid indices, not DDPM steps
    grid = traj.attrs.get("model_source") in ("python", "sd3")
    step_name = "index of the model's sampling grid (0 = data, T = noise)" if grid else "DDPM step (0 = data, T = noise)"
    with np.errstate(divide="ignore"):
        sigma = np.sqrt((1.0 - alpha_bar) / alpha_bar)
    coords = {
        "class": ("class", traj["class"].values.astype(str), {"long_name": "class"}),
        "time": ("time", times, {"long_name": step_name, "units": "1"}),
        "t": ("time", t, {"long_name": "normalised time t/T", "units": "1"}),
        "alpha_bar": ("time", alpha_bar, {"long_name": "signal level alpha_bar", "units": "1"}),
        "log_snr": ("time", log_snr, {"long_name": "log signal-to-noise ratio log(alpha_bar / (1 - alpha_bar)): a "
                                                   "time axis that does not depend on the model's grid", "units": "1"}),
        "sigma": ("time", sigma, {"long_name": "noise level sigma = sqrt((1 - alpha_bar) / alpha_bar) of the "
                                               "variance-exploding form (EDM's sigma)", "units": "1"}),
    }
    if has_partitions:
        means, sems = zip(*(partition_moments(part_values[p], labels, prior, m) for p, m in enumerate(members)))
        means = np.array(means)
        p_rep = np.concatenate([next(reps) for _ in members])
        p_band, p_rate_band = _bands(t, p_rep, means, rate_smoothing)
        dims = ("partition", "time")
        coords["partition"] = ("partition", traj["partition"].values.astype(str), {"long_name": "binary decision"})
        data["partition_entropy"] = _var("partition_entropy", dims, means)
        data["partition_entropy_sem"] = _var("partition_entropy_sem", dims, np.array(sems))
        data.update(_band("partition_entropy", dims, p_band))
        data["partition_entropy_rate"] = _var("partition_entropy_rate", dims, entropy_rate(t, means, rate_smoothing))
        data.update(_band("partition_entropy_rate", dims, p_rate_band))
        for side in ("partition_side_a", "partition_side_b"):
            data[side] = _var(side, ("partition",), traj[side].values.astype(str))
    if has_rb:
        H_rb = class_moments(entropy_rb, labels, K)[0]
        rep = next(reps)
        data["entropy_rate_rb"] = _var("entropy_rate_rb", ("class", "time"), entropy_rate(t, H_rb, rb_smoothing))
        data.update(_band("entropy_rate_rb", ("class", "time"), rate_band(t, rep[:K], H_rb, rb_smoothing, axis=1)))
        data["entropy_marginal_rate_rb"] = _var("entropy_marginal_rate_rb", ("time",),
                                                entropy_rate(t, prior @ H_rb, rb_smoothing))
        data.update(_band("entropy_marginal_rate_rb", ("time",),
                          rate_band(t, rep[K], prior @ H_rb, rb_smoothing, axis=0)))
        ratio, marginal_ratio = rb_variance_ratios(entropy, entropy_rb, labels, prior)
        data["entropy_rate_rb_variance_ratio"] = _var("entropy_rate_rb_variance_ratio", ("class",), ratio)
    if has_partition_rb:
        means_rb = np.array([partition_moments(part_rb[p], labels, prior, m)[0] for p, m in enumerate(members)])
        rep = np.concatenate([next(reps) for _ in members])
        dims = ("partition", "time")
        data["partition_entropy_rate_rb"] = _var("partition_entropy_rate_rb", dims,
                                                 entropy_rate(t, means_rb, rb_smoothing))
        data.update(_band("partition_entropy_rate_rb", dims, rate_band(t, rep, means_rb, rb_smoothing, axis=1)))
    if has_partitions:
        # when each decision is made: the peak of the rate drawn (Rao-Blackwellised where there is one), with the
        # interval of the replicates' peaks
        curves, replicates, smoothing = ((means_rb, rep, rb_smoothing) if has_partition_rb
                                         else (means, p_rep, rate_smoothing))
        data["partition_rate_peak_time"] = _var("partition_rate_peak_time", ("partition",),
                                                rate_peak_times(t, curves, times, smoothing))
        data.update(_interval("partition_rate_peak_time", ("partition",),
                              rate_peak_interval(t, replicates, times, smoothing)))
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
        # the true rate (unsmoothed), and beside it the true rate through the drawn estimator's own smoothing
        drawn = rb_smoothing if has_rb else rate_smoothing
        data["entropy_rate_exact"] = _var("entropy_rate_exact", ("class", "time"), entropy_rate(t, He))
        data["entropy_rate_exact_smoothed"] = _var("entropy_rate_exact_smoothed", ("class", "time"),
                                                   entropy_rate(t, He, drawn))
        data["entropy_rate_exact_smoothed"][2]["smoothing"] = drawn
        data["entropy_marginal_exact"] = _var("entropy_marginal_exact", ("time",), prior @ He)
        data["entropy_marginal_rate_exact"] = _var("entropy_marginal_rate_exact", ("time",), entropy_rate(t, prior @ He))
        if "partition_entropy" in exact:
            data["partition_entropy_exact"] = _var(
                "partition_entropy_exact", ("partition", "time"), exact["partition_entropy"]
            )
        if exact.get("method") == "monte carlo":
            data["entropy_exact_se"] = _var("entropy_exact_se", ("class", "time"), exact["entropy_se"])
            if "partition_entropy_se" in exact:
                data["partition_entropy_exact_se"] = _var("partition_entropy_exact_se", ("partition", "time"),
                                                          exact["partition_entropy_se"])
            for name in ("entropy_exact", "partition_entropy_exact"):
                if name in data:
                    dims, values, attrs = data[name]
                    data[name] = dims, values, attrs | {"long_name": attrs["long_name"].replace(
                        "(quadrature)", "(Monte Carlo of the exact posterior)")}
    attrs = dict(traj.attrs)
    rate = f"numpy.gradient on t/T after a Gaussian filter of {rate_smoothing} grid points"
    if exact is not None and "method" in exact:
        attrs["exact_entropy_method"] = exact["method"]
    attrs.update(
        n_trajectories=int(count.sum()),
        prior_entropy_bits=float(prior_entropy),
        rate_estimator=rate,
        bootstrap_resamples=int(resamples),
        bootstrap_seed=int(seed),
        band_confidence=CONFIDENCE,
        band_method="pointwise percentile interval of a bootstrap over trajectories stratified by class (each "
                    "class's trajectories resampled with replacement within the class); every curve of a replicate, "
                    "rates included, is computed from the replicate's class means as the point estimate is; a "
                    "smoothed rate's band is extended by its estimated smoothing bias (summary.smoothing_bias), so "
                    "that it covers the unsmoothed rate",
    )
    if has_rb:
        attrs["rate_estimator_rb"] = (f"numpy.gradient on t/T after a Gaussian filter of {rb_smoothing} grid points, "
                                      "of the class means of entropy_rb (per-trajectory curves whose step differences "
                                      "are the expected changes given x_t)")
        attrs["entropy_marginal_rate_rb_variance_ratio"] = marginal_ratio
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    if "filmstrip_x0" in traj:
        ds["filmstrip_x0"].encoding = dict(traj["filmstrip_x0"].encoding)  # keeps 8-bit storage (latent models)
    return ds
