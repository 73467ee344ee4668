"""How classifier-free guidance moves semantic decisions: a sweep of scales and intervals on the same seeds.

Every setting (scale w, interval) samples the same trajectories (same labels, indices and seed: the same noise) with
the experiment's model, chain and posterior; w = 1 is the unguided model, the same for every interval, and is sampled
once. Per setting (``seminfo.chain.guidance`` for the two posteriors):

- per class and marginal (prior-weighted) entropy of the guided posterior (the process that ran, P(c | path)) and of
  the unguided model's posterior along the guided path (a cross-entropy, ``model_*``);
- the Rao–Blackwellised rate of the guided posterior (``seminfo.chain.rao_blackwell``) and its peak time, per class and
  marginal, with 95 % stratified-bootstrap intervals (``seminfo.analysis.bootstrap``);
- the information produced in windows of t/T: H(c | x_t) at the window's upper end minus at its lower end, with
  intervals from the same replicates;
- on digits, the share of samples an independent classifier (``seminfo.ddpm.quality``) labels as the class they were
  generated for, with its binomial standard error.

At w = 1 the null condition is evaluated too (``null_tracking``), so the one-vs-rest posterior of each trajectory's
class (2 evaluations per step, ``seminfo.chain.one_vs_rest``) is compared with the K-class posterior of the same
trajectories: the mean absolute gap is recorded (``ovr_*`` attributes).
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from ..analysis import bootstrap
from ..analysis.summary import entropy_rate
from ..chain.guidance import Guidance
from ..chain.one_vs_rest import binary_entropy_bits, clipped_posterior, ovr_log_posterior
from ..chain.posterior import entropy_bits, online_log_posterior
from ..chain.rao_blackwell import rao_blackwell_curves, shared_sigma_expected_entropies
from ..config import experiment_hash
from ..io import provenance
from .shared import class_layout

log = logging.getLogger(__name__)

__all__ = ["INTERVALS", "settings", "run_setting", "setting_profiles", "guidance_stage"]

INTERVALS = ("full", "high_noise", "low_noise")  # [0, T], [T/2, T], [0, T/2]
WINDOWS = (0.0, 0.25, 0.5, 0.75, 1.0)  # edges in t/T of the information-per-window summary


def interval_bounds(name: str, T: int) -> tuple[float, float]:
    """Chain-time bounds of a named interval."""
    return {"full": (0.0, float(T)), "high_noise": (T / 2, float(T)), "low_noise": (0.0, T / 2)}[name]


def settings(scales, intervals, T: int) -> list[tuple[float, str, Guidance | None]]:
    """(scale, interval name, Guidance) of every setting to sample: w = 1 once (no guidance), every other w on
    every interval."""
    out = [(1.0, "full", None)] if 1.0 in scales else []
    out += [(float(w), name, Guidance(float(w), interval_bounds(name, T))) for w in scales if w != 1.0
            for name in intervals]
    return out


def run_setting(model, chain, labels, indices, seed: int, guidance, batch: int, device, null_tracking: bool,
                prior=None):
    """Sample one setting; return per-trajectory curves on the ascending posterior grid and the final states.
    ``prior``: the class prior the posteriors start from (None: uniform)."""
    from ..chain.sampler import sample_trajectories

    K = model.num_conditions
    prior = np.full(K, 1.0 / K) if prior is None else np.asarray(prior, dtype=np.float64)
    stats = {}
    out = sample_trajectories(model, chain, labels, indices, seed, eval_batch=batch, device=device, progress=False,
                              guidance=guidance, null_tracking=null_tracking, stats=stats)
    n = labels.size
    log_start = np.broadcast_to(np.log(prior), (n, K))
    log_post = online_log_posterior(log_start, out.increments)
    h = entropy_bits(log_post)
    sigma = chain.sigma[chain.posterior_start:]
    expected, _ = shared_sigma_expected_entropies(log_post, out.increments, out.gram, sigma, seed)
    result = {"entropy": h, "entropy_rb": rao_blackwell_curves(h, expected), "final": out.final,
              "model_entropy": h if out.model_increments is None else entropy_bits(
                  online_log_posterior(log_start, out.model_increments)),
              "evaluations": stats["evaluations"], "seconds": stats["seconds"]}
    if null_tracking:
        rows = np.arange(n)
        p_ovr, clipped, _ = clipped_posterior(ovr_log_posterior(log_start[rows, labels],
                                                                out.ovr_increments[rows, :, labels]))
        p_full = np.exp(log_post[rows, :, labels])
        result["ovr"] = {"mean_abs_gap": float(np.abs(p_ovr - p_full).mean()),
                         "max_abs_gap": float(np.abs(p_ovr - p_full).max()),
                         "binary_entropy_gap_bits": float(np.abs(binary_entropy_bits(p_ovr).mean(0)
                                                                 - binary_entropy_bits(p_full).mean(0)).max()),
                         "clipped_fraction": clipped}
    return result


def setting_profiles(curves: dict, labels, K: int, t, smoothing: float, resamples: int, seed: int,
                     prior=None) -> dict:
    """Per-class and marginal profiles of one setting with bootstrap intervals (marginal weights: the class prior,
    uniform when None)."""
    prior = np.full(K, 1.0 / K) if prior is None else np.asarray(prior, dtype=np.float64)
    eye = np.eye(K)
    reps_h, reps_rb, reps_m = bootstrap.replicate_means(
        [(curves["entropy"], np.vstack([eye, prior])), (curves["entropy_rb"], np.vstack([eye, prior])),
         (curves["model_entropy"], np.vstack([eye, prior]))], labels, K, resamples, seed)
    mean = {name: np.vstack([np.stack([c[labels == k].mean(0) for k in range(K)]),
                             prior @ np.stack([c[labels == k].mean(0) for k in range(K)])])
            for name, c in curves.items() if name in ("entropy", "entropy_rb", "model_entropy")}
    rate = entropy_rate(t, mean["entropy_rb"], smoothing)  # (K+1, G): classes, then the marginal
    rate_reps = entropy_rate(t, reps_rb, smoothing)  # (K+1, B, G)
    peak = t[rate.argmax(-1)]
    peak_lo, peak_hi = bootstrap.percentile_interval(t[rate_reps.argmax(-1)], axis=1)
    edges = np.searchsorted(t, WINDOWS)
    edges = np.clip(edges, 0, t.size - 1)
    info = mean["entropy"][-1, edges[1:]] - mean["entropy"][-1, edges[:-1]]  # (W,) bits produced per window
    info_reps = reps_h[-1][:, edges[1:]] - reps_h[-1][:, edges[:-1]]
    info_lo, info_hi = bootstrap.percentile_interval(info_reps, axis=0)
    return {"entropy": mean["entropy"], "model_entropy": mean["model_entropy"], "entropy_rate_rb": rate,
            "entropy_rate_rb_ci": bootstrap.percentile_interval(rate_reps, axis=1),
            "model_entropy_ci": bootstrap.percentile_interval(reps_m, axis=1),
            "peak": peak, "peak_ci": (peak_lo, peak_hi), "info": info, "info_ci": (info_lo, info_hi)}


def _agreement(model, final, labels, dev) -> tuple[float, float]:
    """Share of samples the independent digits classifier labels as their class, with its binomial standard error."""
    from ..ddpm.quality import digits_classifier
    from .network import decode_states

    images = decode_states(model, final, dev).reshape(final.shape[0], -1)
    clf, _ = digits_classifier()
    p = float(np.mean(clf.predict(images) == labels))
    return p, float(np.sqrt(p * (1 - p) / labels.size))


def _var(dims, data, long_name, units):
    return dims, np.asarray(data), {"long_name": long_name, "units": units}


def guidance_stage(spec: dict, experiment: str, model_path, output, options: dict, figure=None,
                   dpi: int = 150) -> None:
    """The guidance sweep of an experiment → guidance.nc (+ its figure) (rule guidance)."""
    from ..chain.sampler import model_chain
    from .network import checked_adapter, class_prior, device

    dev = device()
    model = checked_adapter(spec, model_path, dev)
    K, T = model.num_conditions, model.schedule.T
    prior = class_prior(spec["sampling"], K)
    sampling = {k: v for k, v in spec["sampling"].items() if k not in ("guidance", "tracking", "targets")}
    chain = model_chain(model, sampling | {"steps": int(options["steps"])})
    per_class, seed = int(options["trajectories_per_class"]), int(options["seed"])
    labels, _ = class_layout(K, per_class)
    indices = np.arange(labels.size)
    start = chain.posterior_start
    times = chain.times[start:]
    t = times / T
    analysis = spec["analysis"]
    smoothing = float(analysis["rate_smoothing"])
    resamples = int(analysis.get("bootstrap_resamples", bootstrap.RESAMPLES))
    boot_seed = int(analysis.get("bootstrap_seed", bootstrap.SEED))
    scales = sorted({float(w) for w in options["scales"]})
    intervals = list(options["intervals"])
    digits = spec.get("data", {}).get("name") == "digits"
    results, ovr = {}, None
    for w, name, guidance in settings(scales, intervals, T):
        curves = run_setting(model, chain, labels, indices, seed, guidance, int(spec["sampling"]["batch_size"]),
                             dev, null_tracking=guidance is None, prior=prior)
        ovr = curves.get("ovr", ovr)
        prof = setting_profiles(curves, labels, K, t, smoothing, resamples, boot_seed, prior)
        prof["evaluations"] = curves["evaluations"]
        if digits:
            prof["agreement"] = _agreement(model, curves["final"], labels, dev)
        log.info("w = %g, %s: %d evaluations in %.1f s; marginal rate peak at t/T = %.3f [%.3f, %.3f]%s", w, name,
                 curves["evaluations"], curves["seconds"], prof["peak"][-1] / 1, prof["peak_ci"][0][-1],
                 prof["peak_ci"][1][-1], f"; sample agreement {prof['agreement'][0]:.3f}" if digits else "")
        results[w, name] = prof
    # w = 1 does not depend on the interval: the same setting stands in every interval's column
    for name in intervals:
        if (1.0, "full") in results:
            results.setdefault((1.0, name), results[1.0, "full"])
    grid = (len(scales), len(intervals))

    def stack(key, index=None):
        rows = [[results[w, name][key] if index is None else results[w, name][key][index] for name in intervals]
                for w in scales]
        return np.asarray(rows, dtype=np.float64).reshape(grid + np.shape(rows[0][0]))

    si = ("scale", "interval")
    names = list(model.condition_names)
    data = {
        "entropy": _var(si + ("class", "time"), stack("entropy")[:, :, :K], "class entropy of the guided posterior "
                        "P(c | path), class-k trajectories", "bit"),
        "entropy_marginal": _var(si + ("time",), stack("entropy")[:, :, K], "conditional entropy of the guided "
                                 "posterior, prior-weighted", "bit"),
        "model_entropy_marginal": _var(si + ("time",), stack("model_entropy")[:, :, K], "entropy of the unguided "
                                       "model's posterior along the guided paths (a cross-entropy), prior-weighted",
                                       "bit"),
        "entropy_rate_rb": _var(si + ("class", "time"), stack("entropy_rate_rb")[:, :, :K], "entropy rate dH/dt of "
                                "the guided posterior, Rao-Blackwellised", "bit per unit time"),
        "entropy_marginal_rate_rb": _var(si + ("time",), stack("entropy_rate_rb")[:, :, K], "rate of the guided "
                                         "posterior's conditional entropy, Rao-Blackwellised", "bit per unit time"),
        "entropy_marginal_rate_rb_ci_low": _var(si + ("time",), stack("entropy_rate_rb_ci", 0)[:, :, K],
                                                "lower end of the 95% bootstrap band of the marginal rate",
                                                "bit per unit time"),
        "entropy_marginal_rate_rb_ci_high": _var(si + ("time",), stack("entropy_rate_rb_ci", 1)[:, :, K],
                                                 "upper end of the 95% bootstrap band of the marginal rate",
                                                 "bit per unit time"),
        "peak_time": _var(si + ("class",), stack("peak")[:, :, :K], "t/T of the class's entropy-rate peak", "1"),
        "peak_time_ci_low": _var(si + ("class",), stack("peak_ci", 0)[:, :, :K], "lower end of its 95% bootstrap "
                                 "interval", "1"),
        "peak_time_ci_high": _var(si + ("class",), stack("peak_ci", 1)[:, :, :K], "upper end of its 95% bootstrap "
                                  "interval", "1"),
        "marginal_peak_time": _var(si, stack("peak")[:, :, K], "t/T of the marginal entropy-rate peak", "1"),
        "marginal_peak_time_ci_low": _var(si, stack("peak_ci", 0)[:, :, K], "lower end of its 95% bootstrap interval",
                                          "1"),
        "marginal_peak_time_ci_high": _var(si, stack("peak_ci", 1)[:, :, K], "upper end of its 95% bootstrap "
                                           "interval", "1"),
        "information": _var(si + ("window",), stack("info"), "information produced in the window: H(c | x_t) at its "
                            "upper end minus at its lower end (guided posterior)", "bit"),
        "information_ci_low": _var(si + ("window",), stack("info_ci", 0), "lower end of its 95% bootstrap interval",
                                   "bit"),
        "information_ci_high": _var(si + ("window",), stack("info_ci", 1), "upper end of its 95% bootstrap interval",
                                    "bit"),
        "network_evaluations": _var(si, stack("evaluations"), "network evaluations of the setting", "1"),
    }
    if digits:
        data["sample_agreement"] = _var(si, stack("agreement", 0), "share of samples an independent classifier "
                                        "labels as their class", "1")
        data["sample_agreement_se"] = _var(si, stack("agreement", 1), "its binomial standard error", "1")
    coords = {
        "scale": ("scale", scales, {"long_name": "guidance scale w", "units": "1"}),
        "interval": ("interval", intervals, {"long_name": "guided steps: full [0, T], high_noise [T/2, T], "
                                                          "low_noise [0, T/2]"}),
        "class": ("class", names, {"long_name": "class"}),
        "time": ("time", times, {"long_name": "step of the grid (0 = data, T = noise)", "units": "1"}),
        "t": ("time", t, {"long_name": "normalised time t/T", "units": "1"}),
        "window": ("window", [f"{a:g}-{b:g}" for a, b in zip(WINDOWS[:-1], WINDOWS[1:])],
                   {"long_name": "window of t/T"}),
    }
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "T": T, "steps": chain.steps, "trajectories_per_class": per_class, "seed": seed, "rate_smoothing": smoothing,
        "bootstrap_resamples": resamples,
        "posteriors": "entropy*: exact Bayes posterior over the guided kernels (the process that ran; P(c | path), "
                      "not P(c | x_t)); model_*: the unguided model's posterior along the guided paths (a "
                      "cross-entropy); w = 1 is the unguided model, the same in every interval column",
    }
    if ovr is not None:
        attrs |= {f"ovr_{k}": v for k, v in ovr.items()}
        attrs["ovr_note"] = ("w = 1: one-vs-rest P(c | path) of each trajectory's class (2 evaluations per step) "
                             "against the K-class posterior of the same trajectories")
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    from .. import plotting
    from .studies_common import write_study

    write_study(ds, output, figure, plotting.plot_guidance, dpi)
