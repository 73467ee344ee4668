"""Stage of rule decisions: per-trajectory decision times, per-class medians and entropy-rate peaks with bootstrap
intervals and their pairwise table (``seminfo.analysis.decisions``), and the speciation time
(``seminfo.analysis.speciation``) → decisions.nc (and its figure)."""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .. import plotting
from ..analysis import decisions as dec
from ..analysis import speciation
from ..analysis.summary import entropy_rate
from ..chain.guidance import guidance_from_spec
from ..chain.posterior import entropy_bits, online_log_posterior
from ..chain.schedules import schedule_from_spec
from ..config import experiment_hash
from ..io import InputError, open_checked, provenance
from ..mixtures import gmm
from .shared import class_layout, mixture_from_spec
from .studies_common import T_of, is_pretrained, source_schedule, var, write_study

log = logging.getLogger(__name__)


def replay_gmm_posterior(spec: dict, stored: xr.Dataset, threshold: float, chunk: int = 1000):
    """Decision times of a Gaussian-mixture experiment, from its trajectories regenerated from the config.

    posterior.nc keeps only the entropy and P(generating class | x_t) of each trajectory, which do not give the
    posterior of the final MAP class when it is not the generating class (K > 2). The trajectories are a
    deterministic function of the config (seeded generator, same functions as rules gmm_sample and
    gmm_posterior), so they are regenerated and their posterior recomputed in chunks; the recomputed
    entropies must match the stored ones. Returns decision time (N,) and final MAP class (N,).
    """
    mix = mixture_from_spec(spec)
    s = spec["sampling"]
    chain = gmm.sampler_chain(schedule_from_spec(spec), s)
    labels, _ = class_layout(mix.K, s["trajectories_per_class"])
    start = gmm.posterior_start(chain, s["kernel"])
    times = stored["time"].values
    if not (np.array_equal(chain.times[start:], times) and np.array_equal(labels, stored["label"].values)):
        raise InputError("posterior.nc: its time grid or trajectory layout differs from the config's")
    guidance = guidance_from_spec(s)
    x, log_init = gmm.sample_paths(mix, chain, labels, s["kernel"], s["init"], np.random.default_rng(s["seed"]),
                                   guidance)
    stored_h = stored["entropy"].values
    dt, final = np.empty(labels.size), np.empty(labels.size, dtype=np.int64)
    worst = 0.0
    for lo in range(0, labels.size, chunk):
        sl = slice(lo, lo + chunk)
        log_post = online_log_posterior(log_init[sl], gmm.path_log_likelihoods(mix, chain, x[sl], s["kernel"], start,
                                                                               guidance))
        worst = max(worst, float(np.abs(entropy_bits(log_post) - stored_h[sl]).max()))
        dt[sl], final[sl] = dec.decision_times(np.exp(log_post), times, threshold)
    log.info("replayed %d trajectories; max |entropy - stored| = %.2g bit", labels.size, worst)
    if worst > 1e-4:
        raise InputError(f"posterior.nc: regenerated trajectories do not reproduce its entropies (max diff "
                         f"{worst:.3g} bit); was it made by another version of the sampler? Delete it and rerun")
    return dt, final



SPECIATION_SKIPPED = ("a pretrained model's data for Lambda are its generated samples, and with sampling.guidance "
                      "those are guided samples, not draws of the model's p(x0 | c)")


def _speciation(spec: dict, schedule, samples=None) -> tuple[float, float, float]:
    """(Lambda, s_S, step of s_S) for an experiment's data (a pretrained model: its generated states, samples.nc);
    NaN for a guided pretrained run (``SPECIATION_SKIPPED``)."""
    if is_pretrained(spec) and spec["sampling"].get("guidance"):
        return np.nan, np.nan, np.nan
    if spec["kind"] == "gmm":
        lam = speciation.mixture_eigenvalue(mixture_from_spec(spec))
    elif is_pretrained(spec):
        states = open_checked(samples, experiment_hash(spec), required=("state",))["state"].values
        lam = speciation.top_eigenvalue(states)
    else:
        from ..ddpm.data import load_images

        lam = speciation.top_eigenvalue(load_images(spec["data"]).images.numpy())
    s_ou, step = speciation.speciation_step(schedule.alpha_bar, lam)
    return lam, s_ou, step


def decisions_stage(spec: dict, experiment: str, summary, source, output, options: dict, figure=None,
                    dpi: int = 150, samples=None) -> None:
    """Decision times, entropy-rate peaks with bootstrap CIs, and the speciation time → decisions.nc.

    ``samples`` (samples.nc) gives a pretrained model's generated states, its data for the speciation time.
    """
    h = experiment_hash(spec)
    s = open_checked(summary, required=("entropy_rate", "prior"))
    threshold = float(options["decision_threshold"])
    resamples, seed = int(options["bootstrap_resamples"]), int(options["bootstrap_seed"])
    K = s.sizes["class"]
    T = T_of(s, spec)
    times = s["time"].values
    if spec["kind"] == "gmm":
        traj = open_checked(source, h, required=("entropy", "label"))
        if "posterior" in traj:
            dt, final = dec.decision_times(traj["posterior"].values, traj["time"].values, threshold)
            origin = "posterior of every trajectory, from posterior.nc"
        else:
            dt, final = replay_gmm_posterior(spec, traj, threshold)
            origin = "trajectories regenerated from the config, checked against posterior.nc entropies"
    else:
        traj = open_checked(source, h, required=("entropy", "label"))
        if "posterior_target" in traj:
            # one-vs-rest: decided for its class once P(c | x_t) stays above the threshold; the final "MAP class" is
            # the trajectory's class when P(c | x_t) > 1/2 at the end, else none (-1: the rest)
            dt, for_class = dec.one_vs_rest_decision_times(traj["posterior_target"].values, traj["time"].values,
                                                           threshold)
            final = np.where(for_class, traj["label"].values, -1)
            origin = "one-vs-rest P(c | x_t) of every trajectory's class, from trajectories.nc"
        else:
            if "posterior" not in traj:
                raise InputError(f"{source}: lacks variables ['posterior']")
            dt, final = dec.decision_times(traj["posterior"].values, traj["time"].values, threshold)
            origin = "posterior of every trajectory, from trajectories.nc"
    if not np.array_equal(traj["time"].values, times):
        raise InputError(f"{source}: its time grid differs from {summary}'s")
    labels = traj["label"].values
    stats = dec.class_decision_statistics(dt, labels, K, resamples, seed)
    smoothing = float(spec["analysis"]["rate_smoothing"])
    # The peaks come from the lower-variance curves when the posterior stage wrote them (same mean, step noise
    # removed), so that their intervals, and the pairwise table, are as narrow as the data allow.
    curves = "entropy_rb" if "entropy_rb" in traj else "entropy"
    peaks = dec.class_rate_peaks(traj[curves].transpose("traj", "time").values, labels, K, times, T, smoothing,
                                 resamples, seed)
    pairs = dec.pairwise_differences(peaks["peak"], peaks["replicates"])
    lam, s_ou, step = _speciation(spec, source_schedule(spec), samples)
    agree = np.array([np.mean(final[labels == k] == k) for k in range(K)])

    data = {
        "decision_time_median": var("class", stats["median"], "median decision time (DDPM step)", "1"),
        "decision_time_ci_low": var("class", stats["ci_low"], "lower bound of the 95% bootstrap interval of the "
                                     "median decision time (DDPM step)", "1"),
        "decision_time_ci_high": var("class", stats["ci_high"], "upper bound of the 95% bootstrap interval of the "
                                      "median decision time (DDPM step)", "1"),
        "undecided_fraction": var("class", stats["undecided"], "share of trajectories whose final MAP posterior "
                                   "does not exceed the threshold", "1"),
        "final_class_is_label": var("class", agree, "share of trajectories whose final MAP class is the class "
                                     "they were generated for", "1"),
        "entropy_rate_peak_time": var("class", peaks["peak"], "time of the entropy-rate peak (DDPM step)",
                                       "1"),
        "entropy_rate_peak_time_ci_low": var("class", peaks["ci_low"], "lower bound of the 95% bootstrap interval "
                                              "of the entropy-rate peak time (DDPM step)", "1"),
        "entropy_rate_peak_time_ci_high": var("class", peaks["ci_high"], "upper bound of the 95% bootstrap "
                                               "interval of the entropy-rate peak time (DDPM step)", "1"),
        "peak_time_difference": var(("class", "class_b"), pairs["difference"], "entropy-rate peak time of class "
                                     "minus that of class_b (DDPM steps; > 0: class peaks earlier in generation)",
                                     "1"),
        "peak_time_difference_ci_low": var(("class", "class_b"), pairs["ci_low"], "lower bound of the 95% "
                                            "bootstrap interval of the peak time difference (DDPM steps)", "1"),
        "peak_time_difference_ci_high": var(("class", "class_b"), pairs["ci_high"], "upper bound of the 95% "
                                             "bootstrap interval of the peak time difference (DDPM steps)", "1"),
        "peak_time_difference_resolved": var(("class", "class_b"), pairs["resolved"].astype(np.int8),
                                              "1 where the 95% interval of the peak time difference excludes 0",
                                              "1"),
        "decision_time": var("traj", dt, "decision time of the trajectory (DDPM step; NaN: undecided)",
                              "1"),
        "final_class": var("traj", final, "MAP class at the end of generation", "1"),
        "label": var("traj", labels, "class the trajectory was generated for", "1"),
    }
    attrs = provenance(experiment, spec, h) | {
        "T": T,
        "decision_threshold": threshold,
        "bootstrap_resamples": resamples,
        "bootstrap_seed": seed,
        "confidence": dec.CONFIDENCE,
        "rate_smoothing": smoothing,
        "posterior_source": origin,
        "peak_curves": (f"{curves}: Rao-Blackwellised per-trajectory entropy curves (expected changes given x_t)"
                        if curves == "entropy_rb" else f"{curves}: per-trajectory posterior entropy"),
        "peak_interval_method": "percentile intervals of the stratified bootstrap replicates of profiles.nc's bands "
                                "(same seed and streams), joint across classes for the pairwise differences",
        "speciation_eigenvalue": lam,
        "speciation_ou_time": s_ou,
        "speciation_time": step,
        "speciation_note": "Biroli et al. 2024: s_S = log(Lambda)/2 in OU time, at the step with alpha_bar = "
                           "1/Lambda; Lambda <= 1 places it at t = 0 (no speciation inside the forward process)",
    }
    if is_pretrained(spec):
        attrs["speciation_note"] += "; Lambda from the model's generated samples in the chain's units (no data set)"
    # The distance of the rate peaks from the speciation time: exact curves where known. Speciation concerns the
    # first, coarsest split of the data, so binary decisions (partitions) are compared as well.
    if "entropy_rate_exact" in s:
        exact_rate = s["entropy_rate_exact"].transpose("class", "time").values
        peak_exact = times[exact_rate.argmax(1)]
        data["entropy_rate_peak_time_exact"] = var("class", peak_exact, "time of the exact entropy-rate peak "
                                                    "(DDPM step)", "1")
        marginal_rate = s["prior"].values @ exact_rate
        reference, which = peak_exact, "exact"
    elif "entropy_marginal_rate_rb" in s:
        reference, which = peaks["peak"], "Monte Carlo (Rao-Blackwellised)"
        marginal_rate = s["entropy_marginal_rate_rb"].values
    else:
        reference, which = peaks["peak"], "Monte Carlo"
        marginal_rate = s["prior"].values @ s["entropy_rate"].transpose("class", "time").values
    attrs["marginal_entropy_rate_peak_time"] = int(times[marginal_rate.argmax()])
    attrs["marginal_entropy_rate_peak_source"] = which
    attrs["marginal_peak_minus_speciation"] = float(times[marginal_rate.argmax()] - step)
    data["peak_minus_speciation"] = var("class", np.asarray(reference, dtype=float) - step,
                                         f"{which} entropy-rate peak time minus the speciation time (DDPM steps)",
                                         "1")
    coords = {"class": s["class"].values, "class_b": ("class_b", s["class"].values, {"long_name": "class"}),
              "traj": np.arange(labels.size)}
    if "partition_rate_peak_time" in s:
        # the decisions' rate peaks and their intervals are the profiles' (the rate drawn, from the bands' replicates)
        coords["partition"] = s["partition"].values
        part_peak = s["partition_rate_peak_time"].values
        part_which = "Monte Carlo" + (" (Rao-Blackwellised)" if "partition_entropy_rate_rb" in s else "")
        if "partition_entropy_exact" in s:
            exact_part = s["partition_entropy_exact"].transpose("partition", "time").values
            part_peak = times[entropy_rate(times / T, exact_part).argmax(1)]
            data["partition_rate_peak_time_exact"] = var("partition", part_peak, "time of the exact "
                                                          "decision-entropy rate peak (DDPM step)", "1")
            part_which = "exact"
        data["partition_peak_minus_speciation"] = var(
            "partition", part_peak - step, f"{part_which} decision-entropy rate peak time minus the speciation "
            "time (DDPM steps)", "1")
        log.info("%s partition rate peaks minus speciation: %s", part_which,
                 dict(zip(coords["partition"].tolist(), (part_peak - step).round(1).tolist())))
    log.info("speciation: Lambda = %.4g, s_S = %.4g, step %.1f (t/T = %.3f); %s marginal rate peak at %d",
             lam, s_ou, step, step / T, which, attrs["marginal_entropy_rate_peak_time"])
    if not np.isfinite(step):  # nothing to compare the peaks with
        for key in ("speciation_eigenvalue", "speciation_ou_time", "speciation_time", "speciation_note",
                    "marginal_peak_minus_speciation"):
            attrs.pop(key, None)
        for key in ("peak_minus_speciation", "partition_peak_minus_speciation"):
            data.pop(key, None)
        attrs["speciation_skipped"] = SPECIATION_SKIPPED
        log.info("speciation time skipped: %s", SPECIATION_SKIPPED)
    log.info("median decision times: %s; rate peaks: %s", np.round(stats["median"], 1).tolist(),
             np.round(peaks["peak"], 1).tolist())
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    write_study(ds, output, figure, lambda d: plotting.plot_decisions(d, profiles=s), dpi)


