"""Stages of rules convergence and speciation: the online posterior of several samplers at several step counts
against the exact curves (``seminfo.analysis.convergence``; network models: ``seminfo.stages.network_convergence``) →
convergence.nc, and, over the data dimension d, where the entropy rate of two classes at +-m peaks against the
speciation time (``seminfo.analysis.speciation``) → speciation.nc."""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .. import plotting
from ..analysis import convergence as conv
from ..analysis import decisions as dec
from ..analysis import speciation
from ..chain.schedules import schedule_from_spec
from ..config import experiment_hash
from ..io import InputError, provenance
from ..mixtures import gmm
from .shared import mixture_from_spec
from .studies_common import var, write_study

log = logging.getLogger(__name__)


def convergence_stage(spec: dict, experiment: str, output, options: dict, figure=None, dpi: int = 150,
                      model_path=None) -> None:
    """Entropy curves of several samplers at several step counts against the exact curve → convergence.nc.

    1-D mixtures; the workflow does not run it for experiments with ``mixture.dim``. A network model (``model_path``
    its checkpoint or adapter.json): ``seminfo.stages.network_convergence``, against its finest step count.
    """
    if spec["kind"] == "ddpm":
        from .network_convergence import network_convergence_stage

        return network_convergence_stage(spec, experiment, model_path, output, options, figure, dpi)
    if "dim" in spec["mixture"]:
        raise InputError("the step-convergence study is for 1-D mixtures only (this experiment sets mixture.dim)")
    mix = mixture_from_spec(spec)
    schedule = schedule_from_spec(spec)
    T = schedule.T
    steps = sorted({int(S) for S in options["steps"] if S <= T})
    dropped = sorted({int(S) for S in options["steps"] if S > T})
    if dropped:
        log.warning("dropping step counts %s above T = %d", dropped, T)
    if not steps:
        steps = [T]  # a schedule shorter than every configured step count: study the full chain alone
    samplers = list(options["samplers"])
    per_class, seed, eta = int(options["trajectories_per_class"]), int(options["seed"]), float(options["eta"])
    init = spec["sampling"]["init"]
    points = {}
    for sampler in samplers:
        for S in steps:
            # One random stream per (sampler, S), independent of which others are configured.
            stream = [seed, conv.SAMPLERS.index(sampler), S]
            points[sampler, S] = p = conv.run_point(mix, schedule, sampler, S, per_class, stream, eta=eta, init=init)
            log.info("%s S = %d: posterior mean |error| %.3g", sampler, S, p.posterior_mean_abs_error)
    union = np.unique(np.concatenate([p.times for p in points.values()]))
    exact = gmm.exact_entropy(mix, schedule.alpha_bar[union])
    shape = (len(samplers), len(steps))
    H = np.full(shape + (mix.K, union.size), np.nan)
    H_sem = np.full_like(H, np.nan)
    errors = {name: np.empty(shape) for name in ("max", "mean", "sem", "posterior", "deficit_max", "deficit_mean")}
    for (sampler, S), p in points.items():
        a, b = samplers.index(sampler), steps.index(S)
        cols = np.searchsorted(union, p.times)
        H[a, b][:, cols], H_sem[a, b][:, cols] = p.entropy, p.entropy_sem
        errors["max"][a, b], errors["mean"][a, b] = conv.entropy_errors(p.entropy, exact[:, cols])
        errors["sem"][a, b] = p.entropy_sem.max()
        errors["posterior"][a, b] = p.posterior_mean_abs_error
        errors["deficit_max"][a, b], errors["deficit_mean"][a, b] = conv.marginal_deficits(
            mix.weights @ p.entropy, mix.weights @ exact[:, cols])
        log.info("%s S = %d: max |H - H_exact| = %.3g bit (max SEM %.3g)", sampler, S, errors["max"][a, b],
                 errors["sem"][a, b])
    names = list(spec["mixture"].get("class_names") or [str(k) for k in range(mix.K)])
    grid = ("sampler", "steps")
    data = {
        "entropy": var(grid + ("class", "time"), H, "class entropy H(c | x_t), class-k trajectories", "bit"),
        "entropy_sem": var(grid + ("class", "time"), H_sem, "standard error of the class entropy", "bit"),
        "entropy_marginal": var(grid + ("time",), np.einsum("k,abkt->abt", mix.weights, H),
                                 "conditional entropy H(c | x_t)", "bit"),
        "entropy_exact": var(("class", "time"), exact, "exact class entropy (quadrature)", "bit"),
        "entropy_marginal_exact": var("time", mix.weights @ exact, "exact conditional entropy H(c | x_t)", "bit"),
        "entropy_max_abs_error": var(grid, errors["max"], "max |H - H_exact|", "bit"),
        "entropy_mean_abs_error": var(grid, errors["mean"], "mean |H - H_exact|", "bit"),
        "entropy_sem_max": var(grid, errors["sem"], "largest standard error of the class entropy", "bit"),
        "posterior_mean_abs_error": var(grid, errors["posterior"], "mean |P_online - P_exact|",
                                         "1"),
        "entropy_marginal_deficit_max": var(grid, errors["deficit_max"], "largest H_exact(c | x_t) - H(c | x_t) over "
                                             "time", "bit"),
        "entropy_marginal_deficit_mean": var(grid, errors["deficit_mean"], "time average of H_exact(c | x_t) - "
                                              "H(c | x_t)", "bit"),
    }
    if options.get("one_vs_rest", True):
        ovr = {S: conv.run_one_vs_rest_point(mix, schedule, S, per_class, [seed, len(conv.SAMPLERS), S], init)
               for S in steps}
        for S, point in ovr.items():
            log.info("one-vs-rest S = %d: mean |P_ovr - P_exact| = %.3g (K-class tracker %.3g); clipped %.3g", S,
                     point.ovr_error, point.full_error, point.clipped_fraction)
        data |= {
            "ovr_posterior_mean_abs_error": var("steps", [ovr[S].ovr_error for S in steps], "mean |P(c | path) - "
                                                 "P(c | x_t)| of one-vs-rest tracking (DDPM, exact eps and null)", "1"),
            "ovr_full_posterior_mean_abs_error": var("steps", [ovr[S].full_error for S in steps], "mean |P(c | path) "
                                                      "- P(c | x_t)| of the K-class tracker, same trajectories", "1"),
            "ovr_clipped_fraction": var("steps", [ovr[S].clipped_fraction for S in steps], "share of points with "
                                         "one-vs-rest log P > 0 (reported as P = 1)", "1"),
        }
    coords = {
        "sampler": ("sampler", samplers, {"long_name": "sampler"}),
        "steps": ("steps", np.asarray(steps), {"long_name": "number of sampling steps S", "units": "1"}),
        "class": ("class", names, {"long_name": "class"}),
        "time": ("time", union, {"long_name": "DDPM step (0 = data, T = noise)", "units": "1"}),
        "t": ("time", union / T, {"long_name": "normalised time t/T", "units": "1"}),
    }
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "T": T, "eta": eta, "trajectories_per_class": per_class, "seed": seed, "init": init,
        "note": "entropy is NaN at times not on a step count's grid; ddim with eta < 1 measures P(c | path so far), "
                "not P(c | x_t)",
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    write_study(ds, output, figure, plotting.plot_convergence, dpi)




# --- speciation over d ----------------------------------------------------------------------------------------------


def speciation_stage(spec: dict, experiment: str, output, options: dict, figure=None, dpi: int = 150) -> None:
    """Entropy rate against the speciation time for two classes at +-m, |m|^2 = d, over d → speciation.nc."""
    std = float(spec["mixture"]["stds"][0])
    dims = sorted(int(d) for d in options["dims"])
    steps, per_class, seed = int(options["steps"]), int(options["trajectories_per_class"]), int(options["seed"])
    smoothing, resamples = float(options["rate_smoothing"]), int(options["bootstrap_resamples"])
    s_chain, s_fine, schedule = speciation.study_grid(dims, std, steps)
    log.info("two classes at +-m, |m|^2 = d, std %g; s in [0, %.3f], %d chain steps (exact grid %d points); %d "
             "trajectories per class", std, s_fine[-1], steps, s_fine.size, per_class)
    points = []
    for d in dims:
        p = speciation.speciation_point(d, std, s_chain, s_fine, schedule, per_class, seed, smoothing, resamples)
        s_S = p["speciation_time"]
        log.info("d = %d: s_S = %.4f; exact peak - s_S = %.4f, FWHM / s_S = %.4f; Monte Carlo peak - s_S = %.3f "
                 "[%.3f, %.3f] (exact through the same estimator %.3f), max |H - H_exact| / SE = %.2f (where H_exact "
                 ">= %g bit), max |H - H_exact| = %.3g bit, max |P_online - P_exact| = %.2g", d, s_S,
                 p["rate_peak_exact"] - s_S, p["rate_width_exact"] / s_S, p["rate_peak"] - s_S,
                 p["rate_peak_ci_low"] - s_S, p["rate_peak_ci_high"] - s_S, p["rate_peak_exact_estimator"] - s_S,
                 p["entropy_max_abs_z"], speciation.Z_FLOOR_BITS, p["entropy_max_abs_diff"],
                 p["posterior_max_abs_error"])
        points.append(p)

    def stack(name):
        return np.array([p[name] for p in points])

    s_S = stack("speciation_time")
    offset = stack("rate_peak_exact") - s_S
    width = stack("rate_width_exact") / s_S
    rate_units = "bit per unit OU time"
    data = {
        "eigenvalue": var("d", stack("eigenvalue"), "largest eigenvalue Lambda = d + std^2 of the data covariance",
                           "1"),
        "speciation_time": var("d", s_S, "speciation time s_S = 1/2 log Lambda (OU time)", "1"),
        "entropy_exact": var(("d", "s"), stack("entropy_exact"), "exact conditional entropy H(c | x_s) "
                              "(quadrature)", "bit"),
        "entropy_rate_exact": var(("d", "s"), stack("entropy_rate_exact"), "exact entropy rate dH/ds", rate_units),
        "entropy": var(("d", "s_chain"), stack("entropy"), "conditional entropy H(c | x_s), Monte Carlo over "
                        "d-dimensional chains", "bit"),
        "entropy_se": var(("d", "s_chain"), stack("entropy_se"), "standard error of the Monte Carlo entropy", "bit"),
        "entropy_rate": var(("d", "s_chain"), stack("entropy_rate"), "entropy rate dH/ds, Monte Carlo (after the "
                             "Gaussian filter)", rate_units),
        "rate_peak_exact": var("d", stack("rate_peak_exact"), "OU time of the exact entropy-rate peak", "1"),
        "peak_minus_speciation_exact": var("d", offset, "exact entropy-rate peak minus the speciation time "
                                            "(OU time)", "1"),
        "rate_width_exact": var("d", stack("rate_width_exact"), "full width at half maximum of the exact "
                                 "entropy rate (OU time)", "1"),
        "rate_width_rescaled_exact": var("d", width, "full width at half maximum of the exact entropy rate in "
                                          "rescaled time s / s_S", "1"),
        "entropy_rate_exact_estimator": var(("d", "s_chain"), stack("entropy_rate_exact_estimator"), "exact "
                                             "entropy through the Monte Carlo rate estimator (chain grid, same "
                                             "filter)", rate_units),
        "rate_peak_exact_estimator": var("d", stack("rate_peak_exact_estimator"), "OU time of the peak of the "
                                          "exact entropy through the Monte Carlo rate estimator (chain grid, same "
                                          "filter)", "1"),
        "rate_width_exact_estimator": var("d", stack("rate_width_exact_estimator"), "full width at half maximum "
                                           "of the exact entropy through the Monte Carlo rate estimator", "1"),
        "rate_peak": var("d", stack("rate_peak"), "OU time of the Monte Carlo entropy-rate peak", "1"),
        "rate_peak_ci_low": var("d", stack("rate_peak_ci_low"), "lower bound of the 95% bootstrap interval of the "
                                 "Monte Carlo rate peak", "1"),
        "rate_peak_ci_high": var("d", stack("rate_peak_ci_high"), "upper bound of the 95% bootstrap interval of "
                                  "the Monte Carlo rate peak", "1"),
        "peak_minus_speciation": var("d", stack("rate_peak") - s_S, "Monte Carlo entropy-rate peak minus the "
                                      "speciation time (OU time)", "1"),
        "rate_width": var("d", stack("rate_width"), "full width at half maximum of the Monte Carlo entropy rate "
                           "(OU time)", "1"),
        "rate_width_ci_low": var("d", stack("rate_width_ci_low"), "lower bound of the 95% bootstrap interval of "
                                  "the Monte Carlo width", "1"),
        "rate_width_ci_high": var("d", stack("rate_width_ci_high"), "upper bound of the 95% bootstrap interval of "
                                   "the Monte Carlo width", "1"),
        "rate_width_rescaled": var("d", stack("rate_width") / s_S, "full width at half maximum of the Monte Carlo "
                                    "entropy rate in rescaled time s / s_S", "1"),
        "entropy_max_abs_z": var("d", stack("entropy_max_abs_z"), "max |H - H_exact| / SE over the chain grid "
                                  f"where H_exact >= {speciation.Z_FLOOR_BITS} bit", "1"),
        "entropy_max_abs_diff": var("d", stack("entropy_max_abs_diff"), "max |H - H_exact| over the chain grid",
                                     "bit"),
        "posterior_max_abs_error": var("d", stack("posterior_max_abs_error"), "max |P_online - P_exact| along "
                                        "the chains", "1"),
    }
    coords = {
        "d": ("d", np.asarray(dims), {"long_name": "data dimension d", "units": "1"}),
        "s": ("s", s_fine, {"long_name": "OU time s (alpha_bar = e^{-2s}), exact curves", "units": "1"}),
        "s_chain": ("s_chain", s_chain, {"long_name": "OU time s (alpha_bar = e^{-2s}) of the chains' grid",
                                         "units": "1"}),
    }
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "std": std, "s_max": float(s_fine[-1]), "steps": steps, "trajectories_per_class": per_class, "seed": seed,
        "rate_smoothing": smoothing, "bootstrap_resamples": resamples, "confidence": dec.CONFIDENCE,
        "exact_points": speciation.EXACT_POINTS, "exact_refine": speciation.EXACT_REFINE,
        "sampler": "exact reverse kernel from x_T ~ p(x_T | c), trajectories in R^d: the online posterior is "
                   "P(c | x_s)",
        "width_definition": "full width at half maximum of dH/ds (linear interpolation of the half-maximum "
                            "crossings) divided by s_S",
        "peak_definition": "argmax of dH/ds on the grid refined by a parabola through it and its neighbours",
        "peak_minus_speciation_exact_last_change": float(abs(offset[-1] - offset[-2])),
        "rate_width_rescaled_exact_decreasing": int(np.all(np.diff(width) < 0)),
    }
    log.info("exact: peak - s_S %s (last change %.2g); FWHM / s_S %s", np.round(offset, 4).tolist(),
             attrs["peak_minus_speciation_exact_last_change"], np.round(width, 4).tolist())
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    write_study(ds, output, figure, plotting.plot_speciation, dpi)
