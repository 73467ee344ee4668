"""One function per workflow rule: paths in, files out. The math lives in the pure modules.

Intermediate files carry the experiment's ``config_hash``; a stage refuses inputs made for another
configuration. Every output is written atomically.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import xarray as xr

from ..analysis.bootstrap import RESAMPLES, SEED
from ..analysis.summary import build_summary
from ..chain.guidance import guidance_from_spec
from ..chain.posterior import entropy_bits, online_log_posterior, partition_log_posterior
from ..chain.rao_blackwell import rao_blackwell_curves
from ..chain.schedules import schedule_from_spec
from ..config import class_index, experiment_hash
from ..io import InputError, open_checked, provenance, write_netcdf
from ..mixtures import gmm, highdim

log = logging.getLogger(__name__)

__all__ = [
    "mixture_from_spec",
    "resolve_partitions",
    "trajectory_dataset",
    "gmm_sample",
    "gmm_posterior",
    "aggregate",
    "summarize",
    "plots",
]


def mixture_from_spec(spec: dict) -> gmm.Mixture | highdim.IsotropicMixture:
    """The 1-D mixture, or with ``mixture.dim`` the d-dimensional isotropic one."""
    mix = spec["mixture"]
    if "dim" in mix:
        return highdim.mixture_from_config(mix)
    return gmm.Mixture(mix["weights"], mix["means"], mix["stds"])


def _is_highdim(mix) -> bool:
    return isinstance(mix, highdim.IsotropicMixture)


def resolve_partitions(spec: dict, names: list[str]) -> dict[str, tuple[list[int], list[int]]]:
    """Partition sides as class indices, in config order."""
    out = {}
    for pname, sides in (spec.get("partitions") or {}).items():
        key = f"partitions.{pname}"
        out[pname] = tuple([class_index(r, names, key) for r in side] for side in sides)
    return out


def trajectory_dataset(log_post, labels, members, times, alpha_bar, names, prior, partitions, examples_per_class,
                       attrs, keep_posterior: bool = False, expected=None) -> xr.Dataset:
    """Per-trajectory quantities from the log posterior (N, G, K) on the ascending grid ``times``.

    ``members`` is each trajectory's index within its class; those below ``examples_per_class`` are the
    examples whose full posterior is kept. Stored in float32 (entropy resolution ~1e-7 bit, far below Monte
    Carlo error): ``entropy`` and ``posterior_true`` (traj, time), ``partition_entropy`` (partition, traj,
    time), and with ``keep_posterior`` the posterior of every trajectory (traj, time, class). ``expected``:
    the Rao–Blackwellised expected entropies after each step, ((N, G-1), (P, N, G-1)) from
    ``seminfo.chain.rao_blackwell``, which add ``entropy_rb`` and ``partition_entropy_rb`` (``rao_blackwell_curves``).
    """
    labels = np.asarray(labels)
    n = labels.size
    h = entropy_bits(log_post)
    data = {
        "label": ("traj", labels),
        "member": ("traj", np.asarray(members)),
        "prior": ("class", np.asarray(prior, dtype=np.float64)),
        "entropy": (("traj", "time"), h.astype(np.float32)),
        "posterior_true": (("traj", "time"), np.exp(log_post[np.arange(n), :, labels]).astype(np.float32)),
    }
    coords = {"time": times, "alpha_bar": ("time", alpha_bar), "class": np.asarray(names, dtype=str)}
    if partitions:
        hz = np.array([entropy_bits(partition_log_posterior(log_post, a, b)) for a, b in partitions.values()])
        data["partition_entropy"] = (("partition", "traj", "time"), hz.astype(np.float32))
        data["partition_side_a"] = ("partition", [",".join(map(str, a)) for a, _ in partitions.values()])
        data["partition_side_b"] = ("partition", [",".join(map(str, b)) for _, b in partitions.values()])
        coords["partition"] = list(partitions)
    if expected is not None:
        h_exp, hz_exp = expected
        data["entropy_rb"] = (("traj", "time"), rao_blackwell_curves(h, h_exp).astype(np.float32),
                              {"long_name": "posterior entropy with expected step changes (Rao-Blackwellised)",
                               "units": "bit"})
        if partitions:
            data["partition_entropy_rb"] = (("partition", "traj", "time"),
                                            rao_blackwell_curves(hz, hz_exp).astype(np.float32),
                                            {"long_name": "decision entropy with expected step changes "
                                                          "(Rao-Blackwellised)", "units": "bit"})
    examples = np.flatnonzero(np.asarray(members) < examples_per_class)
    data["example_posterior"] = (("example", "time", "class"), np.exp(log_post[examples]))
    data["example_label"] = ("example", labels[examples])
    if keep_posterior:
        data["posterior"] = (("traj", "time", "class"), np.exp(log_post).astype(np.float32))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def model_posterior_variables(log_post, labels, partitions) -> dict:
    """Per-trajectory variables of the unguided model's posterior along guided paths (``seminfo.chain.guidance``): not
    the posterior of the process that ran but a cross-entropy; float32 like ``trajectory_dataset``'s."""
    labels = np.asarray(labels)
    what = "unguided model's posterior along the guided path (a cross-entropy)"
    out = {
        "model_entropy": (("traj", "time"), entropy_bits(log_post).astype(np.float32),
                          {"long_name": f"entropy of the {what}", "units": "bit"}),
        "model_posterior_true": (("traj", "time"),
                                 np.exp(log_post[np.arange(labels.size), :, labels]).astype(np.float32),
                                 {"long_name": f"generating class's probability under the {what}", "units": "1"}),
    }
    if partitions:
        hz = np.array([entropy_bits(partition_log_posterior(log_post, a, b)) for a, b in partitions.values()])
        out["model_partition_entropy"] = (("partition", "traj", "time"), hz.astype(np.float32),
                                          {"long_name": f"decision entropy of the {what}", "units": "bit"})
    return out


def class_layout(K: int, per_class: int):
    """Global trajectory order: class-major. Returns each trajectory's class and index within its class."""
    return np.repeat(np.arange(K), per_class), np.tile(np.arange(per_class), K)


def concat_shards(parts: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate per-shard datasets along their trajectory and example dimensions."""
    first = parts[0]
    for part in parts[1:]:
        for name in ("prior", "time", "class"):
            if name in first and not np.array_equal(first[name].values, part[name].values):
                raise ValueError(f"shards disagree in {name!r}")
    joined = {}
    for name, var in first.data_vars.items():
        dim = "traj" if "traj" in var.dims else "example" if "example" in var.dims else None
        if dim is not None:
            joined[name] = xr.concat([p[name] for p in parts], dim)
    return first.drop_vars(list(joined)).assign(joined)


# --- gmm ------------------------------------------------------------------------------------------------


def gmm_sample(spec: dict, experiment: str, output) -> None:
    """Draw the reverse trajectories of a Gaussian-mixture experiment (rule gmm_sample)."""
    mix = mixture_from_spec(spec)
    s = spec["sampling"]
    chain = gmm.sampler_chain(schedule_from_spec(spec), s)
    labels, members = class_layout(mix.K, s["trajectories_per_class"])
    rng = np.random.default_rng(s["seed"])
    log.info("sampling %d trajectories x %d steps (kernel %s, init %s)", labels.size, chain.steps, s["kernel"],
             s["init"])
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {"T": spec["schedule"]["T"], "seed": s["seed"]}
    if _is_highdim(mix):
        log.info("d = %d dimensions, means spanning %d; the step-convergence study is skipped (1-D mixtures only)",
                 mix.dim, mix.span)
        stats, log_init = highdim.sample_statistics(mix, chain, labels, s["kernel"], s["init"], rng)
        paths = path_statistics_variables(mix, stats)
        attrs["dim"] = mix.dim
    else:
        guidance = guidance_from_spec(s)
        x, log_init = gmm.sample_paths(mix, chain, labels, s["kernel"], s["init"], rng, guidance)
        paths = {"x": (("traj", "time"), x, {"long_name": "reverse trajectory x_t", "units": "1"})}
        if guidance is not None:
            attrs |= guidance.describe()
    ds = xr.Dataset(
        paths | {
            "label": ("traj", labels, {"long_name": "generating class", "units": "1"}),
            "member": ("traj", members, {"long_name": "index of the trajectory within its class", "units": "1"}),
            "log_posterior_init": (("traj", "class"), log_init, {"long_name": "log P(c | x_T)", "units": "1"}),
        },
        coords={"time": chain.times, "alpha_bar": ("time", chain.alpha_bar)},
        attrs=attrs,
    )
    write_netcdf(ds, output)
    log.info("wrote %s", output)


def path_statistics_variables(mix: highdim.IsotropicMixture, stats: highdim.PathStatistics) -> dict:
    """paths.nc variables of d-dimensional trajectories: their ``highdim.PathStatistics`` (nothing grows with d)."""
    return {
        "proj": (("traj", "time", "span"), stats.proj, {"long_name": "coordinates of x_t in an orthonormal basis of "
                                                        "the span of the class means", "units": "1"}),
        "perp_sq": (("traj", "time"), stats.perp_sq, {"long_name": "squared norm of the part of x_t orthogonal to "
                                                      "the means", "units": "1"}),
        "perp_cross": (("traj", "step"), stats.perp_cross, {"long_name": "inner product of the orthogonal parts of "
                                                            "x_t before and after step i (index i-1)", "units": "1"}),
        "mean_coords": (("class", "span"), mix.coords, {"long_name": "class means in the span basis", "units": "1"}),
    }


def path_statistics(mix: highdim.IsotropicMixture, ds: xr.Dataset, path) -> highdim.PathStatistics:
    """The statistics of a paths.nc, checked against the span basis of the config's means."""
    if ds.sizes.get("span") != mix.span or not np.allclose(ds["mean_coords"].values, mix.coords, rtol=0,
                                                            atol=1e-12 * (1 + np.abs(mix.coords).max())):
        raise InputError(f"{path}: its span coordinates of the means differ from the config's")
    return highdim.PathStatistics(ds["proj"].values, ds["perp_sq"].values, ds["perp_cross"].values)


def gmm_posterior(spec: dict, experiment: str, paths, output) -> None:
    """Run the online Bayes update along the sampled paths (rule gmm_posterior)."""
    config_hash = experiment_hash(spec)
    mix = mixture_from_spec(spec)
    data = ("proj", "perp_sq", "perp_cross", "mean_coords") if _is_highdim(mix) else ("x",)
    ds = open_checked(paths, config_hash, required=data + ("label", "log_posterior_init"))
    s = spec["sampling"]
    chain = gmm.sampler_chain(schedule_from_spec(spec), s)
    start = gmm.posterior_start(chain, s["kernel"])
    times, alpha_bar = chain.times[start:], chain.alpha_bar[start:]
    if _is_highdim(mix):
        stats = path_statistics(mix, ds, paths)
        increments = highdim.path_log_likelihoods(mix, chain, stats, s["kernel"], start)
        exact = highdim.exact_log_posterior(mix, stats.proj[:, start:], stats.perp_sq[:, start:], alpha_bar)
    else:
        x = ds["x"].values
        guidance = guidance_from_spec(s)
        increments = gmm.path_log_likelihoods(mix, chain, x, s["kernel"], start, guidance)
        exact = gmm.exact_log_posterior(mix, x[:, start:], alpha_bar)
    log_post = online_log_posterior(ds["log_posterior_init"].values, increments)
    max_err = float(np.abs(np.exp(log_post) - np.exp(exact)).max())
    init_gap = float(np.abs(np.exp(ds["log_posterior_init"].values) - np.exp(exact[:, -1])).max())
    log.info("max |P_online - P_exact| = %.3g (start-up mismatch at t = T: %.3g)", max_err, init_gap)
    names = list(spec["mixture"].get("class_names") or [str(k) for k in range(mix.K)])
    attrs = dict(ds.attrs) | {
        "posterior_max_abs_error_vs_exact": max_err,
        "posterior_init_gap_vs_exact": init_gap,
    }
    partitions = resolve_partitions(spec, names)
    sides = list(partitions.values())
    if _is_highdim(mix):
        expected = highdim.path_expected_entropies(mix, chain, stats, s["kernel"], ds["label"].values, log_post,
                                                   start, sides)
        if expected is None:
            log.info("no Rao-Blackwellised rate: the classes' kernel variances differ (unequal stds, exact kernel)")
    else:
        expected = gmm.path_expected_entropies(mix, chain, x, s["kernel"], ds["label"].values, log_post, start, sides,
                                               guidance)
    # d-dimensional paths are not stored, so the decisions study cannot replay them: keep every posterior (N, G, K).
    out = trajectory_dataset(log_post, ds["label"].values, ds["member"].values, times, alpha_bar, names, mix.weights,
                             partitions, s["examples_per_class"], attrs, keep_posterior=_is_highdim(mix),
                             expected=expected)
    if not _is_highdim(mix) and guidance is not None:
        # the unguided model's kernels on the guided paths: a cross-entropy (seminfo.chain.guidance)
        model_log_post = online_log_posterior(ds["log_posterior_init"].values,
                                              gmm.path_log_likelihoods(mix, chain, x, s["kernel"], start))
        out = out.assign(model_posterior_variables(model_log_post, ds["label"].values, partitions))
    write_netcdf(out, output)
    log.info("wrote %s", output)


def gmm_exact_curves(spec: dict, alpha_bar, names) -> dict:
    """Exact entropies for ``build_summary``; d-dimensional mixtures add their standard errors and method."""
    mix = mixture_from_spec(spec)
    partitions = resolve_partitions(spec, names)
    if _is_highdim(mix):
        H, se, method = highdim.exact_entropy(mix, alpha_bar)
        exact = {"entropy": H, "entropy_se": se, "method": method}
        if partitions:
            parts = [highdim.exact_partition_entropy(mix, alpha_bar, a, b) for a, b in partitions.values()]
            exact["partition_entropy"] = np.array([p[0] for p in parts])
            exact["partition_entropy_se"] = np.array([p[1] for p in parts])
        return exact
    exact = {"entropy": gmm.exact_entropy(mix, alpha_bar)}
    if partitions:
        exact["partition_entropy"] = np.array(
            [gmm.exact_partition_entropy(mix, alpha_bar, a, b) for a, b in partitions.values()]
        )
    return exact


# --- shared ---------------------------------------------------------------------------------------------


def aggregate(spec: dict, experiment: str, posteriors, summary) -> None:
    """Concatenate per-shard posteriors and build the profiles, profiles.nc (rule aggregate)."""
    config_hash = experiment_hash(spec)
    traj = concat_shards([open_checked(p, config_hash, required=("entropy", "label")) for p in posteriors])
    exact = None
    if spec["kind"] == "gmm":
        exact = gmm_exact_curves(spec, traj["alpha_bar"].values, list(traj["class"].values.astype(str)))
    analysis = spec["analysis"]
    resamples = int(analysis.get("bootstrap_resamples", RESAMPLES))
    seed = int(analysis.get("bootstrap_seed", SEED))
    start = time.perf_counter()
    ds = build_summary(traj, analysis["rate_smoothing"], exact, resamples=resamples, seed=seed,
                       rb_rate_smoothing=analysis.get("rb_rate_smoothing"))
    log.info("profiles with %d-replicate bootstrap bands (seed %d) in %.2f s", resamples, seed,
             time.perf_counter() - start)
    ds.attrs["seed"] = spec["sampling"]["seed"]
    if "model_entropy" in traj:
        ds = ds.assign(model_profiles(traj, analysis["rate_smoothing"], resamples, seed))
    if ds.attrs.get("tracking") == "one_vs_rest":
        ds = one_vs_rest_profiles(ds, traj)
    if spec["kind"] == "gmm":
        from ..analysis.speciation import mixture_eigenvalue, speciation_step

        ds.attrs["speciation_time"] = speciation_step(schedule_from_spec(spec).alpha_bar,
                                                      mixture_eigenvalue(mixture_from_spec(spec)))[1]
    if exact is not None:
        diff = np.abs(ds["entropy"] - ds["entropy_exact"])
        se = np.sqrt(ds["entropy_sem"] ** 2 + (ds["entropy_exact_se"] ** 2 if "entropy_exact_se" in ds else 0))
        z = (diff / se).where(se > 1e-6)
        log.info("Monte Carlo vs exact entropy: max |diff| = %.3g bit, max |diff| / SE = %.2f (where SE > 1e-6 bit; "
                 "SE: the SEM, with the exact curve's own where it is Monte Carlo)", float(diff.max()), float(z.max()))
    write_netcdf(ds, summary)
    log.info("wrote %s", summary)


MODEL_PROFILES = ("entropy", "entropy_sem", "entropy_rate", "posterior_true", "entropy_marginal",
                  "entropy_marginal_rate", "mutual_information", "partition_entropy", "partition_entropy_rate")


def model_profiles(traj: xr.Dataset, rate_smoothing: float, resamples: int, seed: int) -> dict:
    """``model_*`` profiles of the unguided model's posterior along guided paths (``seminfo.chain.guidance``), built
    like the guided ones, bands included; a cross-entropy, said so in every long_name."""
    plain = [v for v in ("entropy", "posterior_true", "partition_entropy", "entropy_rb", "partition_entropy_rb")
             if v in traj]
    renamed = {f"model_{v}": v for v in ("entropy", "posterior_true", "partition_entropy") if f"model_{v}" in traj}
    profiles = build_summary(traj.drop_vars(plain).rename(renamed), rate_smoothing, None, resamples=resamples,
                             seed=seed)
    out = {}
    for name in MODEL_PROFILES:
        for v in (name, f"{name}_ci_low", f"{name}_ci_high"):
            if v in profiles:
                var = profiles[v].variable.copy()
                var.attrs["long_name"] = f"{var.attrs['long_name']}: unguided model on the guided paths (cross-entropy)"
                out[f"model_{v}"] = var
    return out


def one_vs_rest_profiles(ds: xr.Dataset, traj: xr.Dataset) -> xr.Dataset:
    """Profiles of one-vs-rest tracking: per class the binary entropy h(P(c | x_t)) along class-c trajectories and its
    rate; the marginal and mutual-information curves of full tracking do not apply and are dropped."""
    drop = [v for v in ds.data_vars if v.startswith(("entropy_marginal", "mutual_information"))]
    ds = ds.drop_vars(drop)
    ds.attrs.pop("prior_entropy_bits", None)
    ds["entropy"].attrs["long_name"] = "binary entropy h(P(c | x_t)) of class c against the rest, class-c trajectories"
    for name in ("example_posterior_target", "example_label"):
        if name in traj:
            ds[name] = traj[name]
    ds.attrs["note"] = ("one-vs-rest tracking: P(c | x_t) of each trajectory's class against the null model, exact "
                        "only as the step -> 0 (seminfo.chain.one_vs_rest)")
    return ds


# What summary.nc takes from each study file: its variables on these dimensions (not the per-trajectory ones),
# and these global attributes, renamed where the name alone would not say which study it belongs to.
STUDY_MERGE = {
    "decisions": {
        "dims": ("class", "partition"),
        "attrs": {"decision_threshold": None, "bootstrap_resamples": None, "bootstrap_seed": None,
                  "confidence": "decision_confidence", "posterior_source": "decision_posterior_source",
                  "peak_curves": "decision_peak_curves", "peak_interval_method": "decision_peak_interval_method",
                  "speciation_eigenvalue": None, "speciation_ou_time": None, "speciation_time": None,
                  "speciation_note": None, "marginal_entropy_rate_peak_time": None,
                  "marginal_entropy_rate_peak_source": None, "marginal_peak_minus_speciation": None,
                  "speciation_skipped": None},
        "nan_allowed": ("decision_time", "decision_time_median", "decision_time_ci_low", "decision_time_ci_high"),
    },
    "immse": {
        "dims": ("time",),
        "attrs": {"estimator": "immse_estimator", "denoisers": "immse_denoisers",
                  "samples_per_class": "immse_samples_per_class", "points": "immse_points", "seed": "immse_seed",
                  "discrepancy_max_abs_bits": "immse_discrepancy_max_abs_bits",
                  "discrepancy_argmax_time": "immse_discrepancy_argmax_time",
                  "discrepancy_mean_abs_bits": "immse_discrepancy_mean_abs_bits",
                  "agreement_tolerance_bits": "immse_agreement_tolerance_bits",
                  "agreement_from_time": "immse_agreement_from_time", "immse_max_se_bits": None,
                  "input_outside_fraction": "immse_input_outside_fraction", "input_bound": "immse_input_bound",
                  "immse_max_abs_error_vs_exact_bits": None, "trajectory_max_abs_error_vs_exact_bits": None,
                  "comparison_skipped": "immse_comparison_skipped"},
        "nan_allowed": (),
    },
}


def summarize(spec: dict, experiment: str, profiles, output, studies: dict | None = None, health=None) -> None:
    """summary.nc: the profiles with the per-class and per-time results of the studies (rule summarize).

    ``studies`` maps a study name of ``STUDY_MERGE`` ('decisions', 'immse') to its file. Their per-trajectory
    and per-grid-point variables stay in the study files. ``health``: a network run's health.json, whose checks
    become the ``health_*`` attributes (``seminfo.analysis.health.summary_attrs``).
    """
    config_hash = experiment_hash(spec)
    out = open_checked(profiles, config_hash, required=("entropy", "prior"))
    for name, path in (studies or {}).items():
        rule = STUDY_MERGE[name]
        ds = open_checked(path, config_hash, nan_allowed=rule["nan_allowed"])
        for dim in set(rule["dims"]) & set(ds.dims):
            if dim in out.dims and not np.array_equal(ds[dim].values, out[dim].values):
                raise InputError(f"{path}: its {dim!r} coordinate differs from {profiles}'s")
        taken = [v for v, var in ds.data_vars.items() if var.dims and set(var.dims) <= set(rule["dims"])]
        clash = sorted(set(taken) & set(out.data_vars))
        if clash:
            raise InputError(f"{path}: variables {clash} are already in {profiles}")
        out = out.assign({v: ds[v].variable for v in taken})  # values and attrs; the coordinates stay the profiles'
        out.attrs.update({new or old: ds.attrs[old] for old, new in rule["attrs"].items() if old in ds.attrs})
        log.info("%s: took %d variables from %s", name, len(taken), path)
    if health is not None:
        from ..analysis.health import summary_attrs

        try:
            out.attrs.update(summary_attrs(json.loads(Path(health).read_text())))
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{health}: cannot be read as a health report ({err}); delete it and rerun") from None
        log.info("health: failed checks: %s", out.attrs["health_failed"])
    write_netcdf(out, output)
    log.info("wrote %s", output)


def plots(summary, outputs, samples=None, dpi: int = 150, time_axis: str | None = None) -> None:
    """Write the figures named by ``outputs`` (``<dir>/<name>.png``; rule plot_*) on ``time_axis`` (plots.time_axis)."""
    from ..plotting import write_figures

    outputs = [Path(p) for p in outputs]
    written = write_figures(summary, outputs[0].parent, samples_path=samples, dpi=dpi,
                            names=[p.stem for p in outputs], time_axis=time_axis)
    missing = set(outputs) - set(written)
    if missing:
        raise InputError(f"{summary}: lacks the data for figures {sorted(str(p) for p in missing)}")
