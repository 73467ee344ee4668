"""Stage functions of the studies beyond the paper (workflow/rules/extras.smk): paths in, files out.

- ``immse``: I(c; x_t) from forward-noised data by the I-MMSE identity (``seminfo.immse``), on the experiment's
  time grid, beside the trajectory estimate of summary.nc → immse.nc
- ``decisions``: per-trajectory decision times, per-class medians and entropy-rate peaks with bootstrap
  intervals (``seminfo.decisions``), and the speciation time (``seminfo.speciation``) → decisions.nc
- ``convergence``: 1-D Gaussian mixtures only, the online posterior of several samplers at several step counts
  against the exact curves (``seminfo.convergence``) → convergence.nc
- ``speciation``: over the data dimension d, where the entropy rate of two classes at +-m (|m|^2 = d) peaks against
  the speciation time, and its width in rescaled time (``seminfo.speciation``) → speciation.nc
Each stage also draws its figure (``figure``: the png path) from the dataset it has just written.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from . import convergence as conv
from . import decisions as dec
from . import gmm, highdim, immse, plotting, speciation
from .config import experiment_hash, pretrained_source
from .diffusion import x0_coefficients
from .guidance import guidance_from_spec
from .io import InputError, open_checked, provenance, write_netcdf
from .posterior import LOG2, entropy_bits, online_log_posterior
from .stages import class_layout, mixture_from_spec, schedule_from_spec
from .summary import entropy_rate

log = logging.getLogger(__name__)

__all__ = ["section_options", "immse_stage", "decisions_stage", "convergence_stage", "speciation_stage",
           "replay_gmm_posterior"]

AGREEMENT_BITS = 0.1  # the tolerance between the I-MMSE and the trajectory estimate on learned models


def is_pretrained(spec: dict) -> bool:
    return pretrained_source(spec) is not None


def source_schedule(spec: dict):
    """The experiment's forward process (``seminfo.models.source_schedule``; imported here only when needed, as the
    model adapters import torch)."""
    if not is_pretrained(spec):
        return schedule_from_spec(spec)
    from .models import source_schedule as from_folder

    return from_folder(spec)


def section_options(section: dict | None, schema: dict, definition: str) -> dict:
    """An optional config section with the defaults of its schema definition filled in.

    Optional sections have no default of their own (adding one would change every experiment's config and
    hash); the validator fills their keys' defaults only when the section is present, so absent sections
    get them here, from the same schema.
    """
    props = schema["$defs"][definition]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v} | dict(section or {})


def _var(dims, data, long_name, units):
    return dims, np.asarray(data), {"long_name": long_name, "units": units}


def _time_coords(summary: xr.Dataset) -> dict:
    return {name: summary[name] for name in ("time", "t", "alpha_bar", "log_snr")}


def _agreement_time(times, diff, tol: float) -> float:
    """Smallest grid time above which |diff| <= tol at every grid time (NaN if not even at the last point)."""
    ok = np.abs(diff) <= tol
    if not ok[-1]:
        return float("nan")
    bad = np.flatnonzero(~ok)
    return float(times[bad[-1] + 1] if bad.size else times[0])


# --- I-MMSE ---------------------------------------------------------------------------------------------


def _network_eps_fn(model, batch: int, device):
    """eps_fn(x, t, y) of ``immse.network_integrand`` from an adapter: chain times t, condition indices y."""
    import torch

    @torch.inference_mode()
    def eps_fn(x, t, y):
        t_net = torch.tensor([model.network_time(int(v)) for v in t], dtype=model.time_dtype)
        out = [model(x[i:i + batch].to(device), t_net[i:i + batch].to(device), y[i:i + batch].to(device)).cpu()
               for i in range(0, x.shape[0], batch)]
        return torch.cat(out)

    return eps_fn


def _denoiser_difference_fn(model, batch: int, device):
    """f(x, t, y) = sqrt(gamma_t) s_t out(x, t, y) for ``immse.network_integrand``, from an adapter of any prediction
    kind: with x̂_0 = r x + s out (``diffusion.x0_coefficients``), f(x, t, c) - f(x, t, ∅) = sqrt(gamma_t) (x̂_0(x, c) -
    x̂_0(x, ∅)), so the integrand's 1/2 ||f_c - f_∅||^2 is gamma/2 ||x̂_0(x, c) - x̂_0(x, ∅)||^2 (for eps, f = -eps)."""
    import torch

    C, alpha_bar = model.state_shape[0], model.schedule.alpha_bar
    out_fn = _network_eps_fn(model, batch, device)

    def f(x, t, y):
        coef = []
        for v in t.tolist():
            ab = float(alpha_bar[int(v)])
            coef.append(np.sqrt(immse.snr(ab)) * x0_coefficients(model.prediction, ab)[1])
        coef = torch.tensor(coef, dtype=torch.float64).view(-1, *([1] * (x.dim() - 1)))
        return coef * out_fn(x, t, y)[:, :C].double()  # a learned-range output: its prediction channels

    return f


def _network_data(spec: dict, summary_hash: str, samples):
    """x_0 of the I-MMSE study: the data set (own model), or the model's own generated states (samples.nc)."""
    import torch

    if not is_pretrained(spec):
        from .ddpm.data import load_images

        data = load_images(spec["data"])
        return data.images, data.labels, "network: class label vs null label"
    ds = open_checked(samples, summary_hash, required=("state", "label"))
    return (torch.from_numpy(ds["state"].values.astype(np.float32)), torch.from_numpy(ds["label"].values),
            "network: condition vs null condition, on the model's own generated samples (no data set)")


def _T(summary: xr.Dataset, spec: dict) -> int:
    return int(summary.attrs["T"]) if "T" in summary.attrs else int(spec["schedule"]["T"])


def immse_stage(spec: dict, experiment: str, summary, output, options: dict, model_path=None, figure=None,
                dpi: int = 150, samples=None) -> None:
    """I(c; x_t) by the I-MMSE identity on the experiment's time grid, with its discrepancy to summary.nc.

    Network models: ``model_path`` is the checkpoint (own) or adapter.json (pretrained); a pretrained model has no
    data set, so x_0 are its own generated samples (``samples``: samples.nc), and it needs a null condition.
    """
    s = open_checked(summary, experiment_hash(spec), required=("mutual_information", "prior", "log_snr"))
    prior = s["prior"].values
    K = prior.size
    per_class = max(2, -(-int(options["samples"]) // K))
    schedule = source_schedule(spec)
    if spec["kind"] == "gmm":
        mix = mixture_from_spec(spec)
        u = immse.log_snr_grid(schedule.alpha_bar, options["points"])
        log.info("gmm: exact denoisers, %d log-SNR points x %d samples per class", u.size, per_class)
        if isinstance(mix, highdim.IsotropicMixture):
            log.info("d = %d: samples and denoisers in R^d", mix.dim)
            g, g_se = immse.isotropic_integrand(mix, u, per_class, options["seed"])
        else:
            g, g_se = immse.gmm_integrand(mix, u, per_class, options["seed"])
        point_steps = np.full(u.size, -1)
    else:
        from .models import load_adapter
        from .network_stages import device

        dev = device()
        model = load_adapter(spec, model_path, dev)
        if model.num_conditions != K:
            raise InputError(f"{model_path}: the model has {model.num_conditions} conditions, {summary} has {K}")
        if not model.has_null:
            raise InputError(f"{model_path}: the model has no null condition, which the I-MMSE study needs")
        images, labels, denoisers = _network_data(spec, experiment_hash(spec), samples)
        point_steps = immse.step_grid(schedule.alpha_bar, options["points"])
        u = np.log(immse.snr(schedule.alpha_bar[point_steps]))
        log.info("ddpm: network denoisers on %s, %d steps x %d samples per class (2 evaluations each)", dev,
                 point_steps.size, per_class)
        batch = spec["sampling"]["batch_size"]
        eps_fn = (_denoiser_difference_fn if is_pretrained(spec) else _network_eps_fn)(model, batch, dev)
        g, g_se = immse.network_integrand(eps_fn, images, labels, schedule.alpha_bar, point_steps,
                                          per_class, K, options["seed"], prior=prior)
    info_grid, info_grid_se = immse.integrate(u, g, g_se)
    mi, mi_se = immse.information_at(u, g, g_se, s["log_snr"].values)
    traj = s["mutual_information"].values
    diff = mi - traj
    worst = int(np.abs(diff).argmax())
    times = s["time"].values
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "T": _T(s, spec),
        "estimator": "I-MMSE: dI/dgamma = 1/2 E||x0_hat(x, c) - x0_hat(x)||^2, integrated in log SNR from gamma = 0",
        "denoisers": "exact (Gaussian mixture)" if spec["kind"] == "gmm" else denoisers,
        "samples_per_class": per_class,
        "points": int(u.size),
        "seed": int(options["seed"]),
        "discrepancy_max_abs_bits": float(np.abs(diff).max()),
        "discrepancy_argmax_time": int(times[worst]),
        "discrepancy_mean_abs_bits": float(np.abs(diff).mean()),
        "agreement_tolerance_bits": AGREEMENT_BITS,
        "agreement_from_time": _agreement_time(times, diff, AGREEMENT_BITS),
        "immse_max_se_bits": float(mi_se.max()),
    }
    log.info("max |I_immse - I_traj| = %.3g bit at t = %d; |diff| <= %.2g bit for t >= %s", attrs[
        "discrepancy_max_abs_bits"], attrs["discrepancy_argmax_time"], AGREEMENT_BITS, attrs["agreement_from_time"])
    if "entropy_marginal_exact" in s:
        exact = s.attrs["prior_entropy_bits"] - s["entropy_marginal_exact"].values
        attrs["immse_max_abs_error_vs_exact_bits"] = float(np.abs(mi - exact).max())
        attrs["trajectory_max_abs_error_vs_exact_bits"] = float(np.abs(traj - exact).max())
        log.info("vs exact: I-MMSE %.3g bit, trajectories %.3g bit", attrs["immse_max_abs_error_vs_exact_bits"],
                 attrs["trajectory_max_abs_error_vs_exact_bits"])
    ds = xr.Dataset(
        {
            "mutual_information_immse": _var("time", mi, "mutual information I(c; x_t), I-MMSE estimate", "bit"),
            "mutual_information_immse_se": _var("time", mi_se, "Monte Carlo standard error of the I-MMSE estimate",
                                                "bit"),
            "mutual_information_difference": _var("time", diff, "I-MMSE minus trajectory estimate of I(c; x_t)",
                                                  "bit"),
            "information_rate_immse": _var("point", g / LOG2, "I-MMSE integrand dI/dlog SNR",
                                           "bit per unit log SNR"),
            "information_rate_immse_se": _var("point", g_se / LOG2, "standard error of the I-MMSE integrand",
                                              "bit per unit log SNR"),
            "mutual_information_immse_grid": _var("point", info_grid / LOG2,
                                                  "I-MMSE estimate of I(c; x_gamma) on the log-SNR grid", "bit"),
            "mutual_information_immse_grid_se": _var("point", info_grid_se / LOG2,
                                                     "standard error of the I-MMSE estimate on the grid", "bit"),
        },
        coords=_time_coords(s) | {
            "point_log_snr": ("point", u, {"long_name": "log signal-to-noise ratio of the I-MMSE grid", "units": "1"}),
            "point_step": ("point", point_steps, {"long_name": "DDPM step of the grid point (-1: not a step)",
                                                  "units": "1"}),
        },
        attrs=attrs,
    )
    write_netcdf(ds, output)
    log.info("wrote %s", output)
    if figure is not None:
        plotting.save_figure(plotting.plot_immse(s, ds), figure, dpi=dpi)


# --- decisions ------------------------------------------------------------------------------------------


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


def _speciation(spec: dict, schedule, samples=None) -> tuple[float, float, float]:
    """(Lambda, s_S, step of s_S) for an experiment's data (a pretrained model: its generated states, samples.nc)."""
    if spec["kind"] == "gmm":
        lam = speciation.mixture_eigenvalue(mixture_from_spec(spec))
    elif is_pretrained(spec):
        states = open_checked(samples, experiment_hash(spec), required=("state",))["state"].values
        lam = speciation.top_eigenvalue(states)
    else:
        from .ddpm.data import load_images

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
    T = _T(s, spec)
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
            p = traj["posterior_target"].values
            dt, final_binary = dec.decision_times(np.stack([p, 1.0 - p], axis=-1), traj["time"].values, threshold)
            final = np.where(final_binary == 0, traj["label"].values, -1)
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
        "decision_time_median": _var("class", stats["median"], "median decision time (DDPM step)", "1"),
        "decision_time_ci_low": _var("class", stats["ci_low"], "lower bound of the 95% bootstrap interval of the "
                                     "median decision time (DDPM step)", "1"),
        "decision_time_ci_high": _var("class", stats["ci_high"], "upper bound of the 95% bootstrap interval of the "
                                      "median decision time (DDPM step)", "1"),
        "undecided_fraction": _var("class", stats["undecided"], "share of trajectories whose final MAP posterior "
                                   "does not exceed the threshold", "1"),
        "final_class_is_label": _var("class", agree, "share of trajectories whose final MAP class is the class "
                                     "they were generated for", "1"),
        "entropy_rate_peak_time": _var("class", peaks["peak"], "time of the entropy-rate peak (DDPM step)",
                                       "1"),
        "entropy_rate_peak_time_ci_low": _var("class", peaks["ci_low"], "lower bound of the 95% bootstrap interval "
                                              "of the entropy-rate peak time (DDPM step)", "1"),
        "entropy_rate_peak_time_ci_high": _var("class", peaks["ci_high"], "upper bound of the 95% bootstrap "
                                               "interval of the entropy-rate peak time (DDPM step)", "1"),
        "peak_time_difference": _var(("class", "class_b"), pairs["difference"], "entropy-rate peak time of class "
                                     "minus that of class_b (DDPM steps; > 0: class peaks earlier in generation)",
                                     "1"),
        "peak_time_difference_ci_low": _var(("class", "class_b"), pairs["ci_low"], "lower bound of the 95% "
                                            "bootstrap interval of the peak time difference (DDPM steps)", "1"),
        "peak_time_difference_ci_high": _var(("class", "class_b"), pairs["ci_high"], "upper bound of the 95% "
                                             "bootstrap interval of the peak time difference (DDPM steps)", "1"),
        "peak_time_difference_resolved": _var(("class", "class_b"), pairs["resolved"].astype(np.int8),
                                              "1 where the 95% interval of the peak time difference excludes 0",
                                              "1"),
        "decision_time": _var("traj", dt, "decision time of the trajectory (DDPM step; NaN: undecided)",
                              "1"),
        "final_class": _var("traj", final, "MAP class at the end of generation", "1"),
        "label": _var("traj", labels, "class the trajectory was generated for", "1"),
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
        data["entropy_rate_peak_time_exact"] = _var("class", peak_exact, "time of the exact entropy-rate peak "
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
    data["peak_minus_speciation"] = _var("class", np.asarray(reference, dtype=float) - step,
                                         f"{which} entropy-rate peak time minus the speciation time (DDPM steps)",
                                         "1")
    coords = {"class": s["class"].values, "class_b": ("class_b", s["class"].values, {"long_name": "class"}),
              "traj": np.arange(labels.size)}
    if "partition_entropy_rate" in s:
        coords["partition"] = s["partition"].values
        part_rate = "partition_entropy_rate_rb" if "partition_entropy_rate_rb" in s else "partition_entropy_rate"
        part_peak = times[s[part_rate].transpose("partition", "time").values.argmax(1)]
        data["partition_rate_peak_time"] = _var("partition", part_peak, "time of the decision-entropy rate peak "
                                                "(DDPM step)", "1")
        part_which = "Monte Carlo" + (" (Rao-Blackwellised)" if part_rate.endswith("_rb") else "")
        if "partition_entropy_exact" in s:
            exact_part = s["partition_entropy_exact"].transpose("partition", "time").values
            part_peak = times[entropy_rate(times / T, exact_part).argmax(1)]
            data["partition_rate_peak_time_exact"] = _var("partition", part_peak, "time of the exact "
                                                          "decision-entropy rate peak (DDPM step)", "1")
            part_which = "exact"
        data["partition_peak_minus_speciation"] = _var(
            "partition", part_peak - step, f"{part_which} decision-entropy rate peak time minus the speciation "
            "time (DDPM steps)", "1")
        log.info("%s partition rate peaks minus speciation: %s", part_which,
                 dict(zip(coords["partition"].tolist(), (part_peak - step).round(1).tolist())))
    log.info("speciation: Lambda = %.4g, s_S = %.4g, step %.1f (t/T = %.3f); %s marginal rate peak at %d",
             lam, s_ou, step, step / T, which, attrs["marginal_entropy_rate_peak_time"])
    log.info("median decision times: %s; rate peaks: %s", np.round(stats["median"], 1).tolist(),
             np.round(peaks["peak"], 1).tolist())
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    write_netcdf(ds, output)
    log.info("wrote %s", output)
    if figure is not None:
        plotting.save_figure(plotting.plot_decisions(ds), figure, dpi=dpi)


# --- convergence ----------------------------------------------------------------------------------------


def convergence_stage(spec: dict, experiment: str, output, options: dict, figure=None, dpi: int = 150,
                      model_path=None) -> None:
    """Entropy curves of several samplers at several step counts against the exact curve → convergence.nc.

    1-D mixtures; the workflow does not run it for experiments with ``mixture.dim``. A network model (``model_path``
    its checkpoint or adapter.json): ``seminfo.network_convergence``, against its finest step count.
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
        "entropy": _var(grid + ("class", "time"), H, "class entropy H(c | x_t), class-k trajectories", "bit"),
        "entropy_sem": _var(grid + ("class", "time"), H_sem, "standard error of the class entropy", "bit"),
        "entropy_marginal": _var(grid + ("time",), np.einsum("k,abkt->abt", mix.weights, H),
                                 "conditional entropy H(c | x_t)", "bit"),
        "entropy_exact": _var(("class", "time"), exact, "exact class entropy (quadrature)", "bit"),
        "entropy_marginal_exact": _var("time", mix.weights @ exact, "exact conditional entropy H(c | x_t)", "bit"),
        "entropy_max_abs_error": _var(grid, errors["max"], "max |H - H_exact|", "bit"),
        "entropy_mean_abs_error": _var(grid, errors["mean"], "mean |H - H_exact|", "bit"),
        "entropy_sem_max": _var(grid, errors["sem"], "largest standard error of the class entropy", "bit"),
        "posterior_mean_abs_error": _var(grid, errors["posterior"], "mean |P_online - P_exact|",
                                         "1"),
        "entropy_marginal_deficit_max": _var(grid, errors["deficit_max"], "largest H_exact(c | x_t) - H(c | x_t) over "
                                             "time", "bit"),
        "entropy_marginal_deficit_mean": _var(grid, errors["deficit_mean"], "time average of H_exact(c | x_t) - "
                                              "H(c | x_t)", "bit"),
    }
    if options.get("one_vs_rest", True):
        ovr = {S: conv.run_one_vs_rest_point(mix, schedule, S, per_class, [seed, len(conv.SAMPLERS), S], init)
               for S in steps}
        for S, point in ovr.items():
            log.info("one-vs-rest S = %d: mean |P_ovr - P_exact| = %.3g (K-class tracker %.3g); clipped %.3g", S,
                     point.ovr_error, point.full_error, point.clipped_fraction)
        data |= {
            "ovr_posterior_mean_abs_error": _var("steps", [ovr[S].ovr_error for S in steps], "mean |P(c | path) - "
                                                 "P(c | x_t)| of one-vs-rest tracking (DDPM, exact eps and null)", "1"),
            "ovr_full_posterior_mean_abs_error": _var("steps", [ovr[S].full_error for S in steps], "mean |P(c | path) "
                                                      "- P(c | x_t)| of the K-class tracker, same trajectories", "1"),
            "ovr_clipped_fraction": _var("steps", [ovr[S].clipped_fraction for S in steps], "share of points with "
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
    write_netcdf(ds, output)
    log.info("wrote %s", output)
    if figure is not None:
        plotting.save_figure(plotting.plot_convergence(ds), figure, dpi=dpi)



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
        "eigenvalue": _var("d", stack("eigenvalue"), "largest eigenvalue Lambda = d + std^2 of the data covariance",
                           "1"),
        "speciation_time": _var("d", s_S, "speciation time s_S = 1/2 log Lambda (OU time)", "1"),
        "entropy_exact": _var(("d", "s"), stack("entropy_exact"), "exact conditional entropy H(c | x_s) "
                              "(quadrature)", "bit"),
        "entropy_rate_exact": _var(("d", "s"), stack("entropy_rate_exact"), "exact entropy rate dH/ds", rate_units),
        "entropy": _var(("d", "s_chain"), stack("entropy"), "conditional entropy H(c | x_s), Monte Carlo over "
                        "d-dimensional chains", "bit"),
        "entropy_se": _var(("d", "s_chain"), stack("entropy_se"), "standard error of the Monte Carlo entropy", "bit"),
        "entropy_rate": _var(("d", "s_chain"), stack("entropy_rate"), "entropy rate dH/ds, Monte Carlo (after the "
                             "Gaussian filter)", rate_units),
        "rate_peak_exact": _var("d", stack("rate_peak_exact"), "OU time of the exact entropy-rate peak", "1"),
        "peak_minus_speciation_exact": _var("d", offset, "exact entropy-rate peak minus the speciation time "
                                            "(OU time)", "1"),
        "rate_width_exact": _var("d", stack("rate_width_exact"), "full width at half maximum of the exact "
                                 "entropy rate (OU time)", "1"),
        "rate_width_rescaled_exact": _var("d", width, "full width at half maximum of the exact entropy rate in "
                                          "rescaled time s / s_S", "1"),
        "entropy_rate_exact_estimator": _var(("d", "s_chain"), stack("entropy_rate_exact_estimator"), "exact "
                                             "entropy through the Monte Carlo rate estimator (chain grid, same "
                                             "filter)", rate_units),
        "rate_peak_exact_estimator": _var("d", stack("rate_peak_exact_estimator"), "OU time of the peak of the "
                                          "exact entropy through the Monte Carlo rate estimator (chain grid, same "
                                          "filter)", "1"),
        "rate_width_exact_estimator": _var("d", stack("rate_width_exact_estimator"), "full width at half maximum "
                                           "of the exact entropy through the Monte Carlo rate estimator", "1"),
        "rate_peak": _var("d", stack("rate_peak"), "OU time of the Monte Carlo entropy-rate peak", "1"),
        "rate_peak_ci_low": _var("d", stack("rate_peak_ci_low"), "lower bound of the 95% bootstrap interval of the "
                                 "Monte Carlo rate peak", "1"),
        "rate_peak_ci_high": _var("d", stack("rate_peak_ci_high"), "upper bound of the 95% bootstrap interval of "
                                  "the Monte Carlo rate peak", "1"),
        "peak_minus_speciation": _var("d", stack("rate_peak") - s_S, "Monte Carlo entropy-rate peak minus the "
                                      "speciation time (OU time)", "1"),
        "rate_width": _var("d", stack("rate_width"), "full width at half maximum of the Monte Carlo entropy rate "
                           "(OU time)", "1"),
        "rate_width_ci_low": _var("d", stack("rate_width_ci_low"), "lower bound of the 95% bootstrap interval of "
                                  "the Monte Carlo width", "1"),
        "rate_width_ci_high": _var("d", stack("rate_width_ci_high"), "upper bound of the 95% bootstrap interval of "
                                   "the Monte Carlo width", "1"),
        "rate_width_rescaled": _var("d", stack("rate_width") / s_S, "full width at half maximum of the Monte Carlo "
                                    "entropy rate in rescaled time s / s_S", "1"),
        "entropy_max_abs_z": _var("d", stack("entropy_max_abs_z"), "max |H - H_exact| / SE over the chain grid "
                                  f"where H_exact >= {speciation.Z_FLOOR_BITS} bit", "1"),
        "entropy_max_abs_diff": _var("d", stack("entropy_max_abs_diff"), "max |H - H_exact| over the chain grid",
                                     "bit"),
        "posterior_max_abs_error": _var("d", stack("posterior_max_abs_error"), "max |P_online - P_exact| along "
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
    write_netcdf(ds, output)
    log.info("wrote %s", output)
    if figure is not None:
        plotting.save_figure(plotting.plot_speciation(ds), figure, dpi=dpi)
