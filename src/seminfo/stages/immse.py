"""Stage of rule immse: I(c; x_t) by the I-MMSE identity (``seminfo.analysis.immse``) on the experiment's time grid,
beside the trajectory estimate of summary.nc → immse.nc (and its figure)."""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .. import plotting
from ..analysis import health, immse
from ..chain.diffusion import x0_coefficients
from ..chain.posterior import LOG2
from ..config import experiment_hash
from ..io import InputError, open_checked, provenance
from ..mixtures import highdim
from .shared import mixture_from_spec
from .studies_common import T_of, is_pretrained, source_schedule, time_coords, var, write_study

log = logging.getLogger(__name__)

AGREEMENT_BITS = 0.1  # the tolerance between the I-MMSE and the trajectory estimate on learned models


def comparison_skipped(spec: dict, profiles) -> str | None:
    """Why the I-MMSE estimate cannot be compared with the trajectories' I(c; x_t) (None when it can): one-vs-rest
    tracking has no K-class posterior, and under guidance the trajectories' posterior is the guided family's while
    the I-MMSE identity measures the unguided model."""
    if "mutual_information" not in profiles:
        return "one-vs-rest tracking has no K-class posterior, hence no I(c; x_t) from the trajectories"
    if spec["sampling"].get("guidance"):
        return ("guided sampling: the trajectories' I(c; x_t) is the guided family's, the I-MMSE estimate the unguided "
                "model's; they are not compared")
    return None


def _agreement_time(times, diff, tol: float) -> float:
    """Smallest grid time above which |diff| <= tol at every grid time (NaN if not even at the last point)."""
    ok = np.abs(diff) <= tol
    if not ok[-1]:
        return float("nan")
    bad = np.flatnonzero(~ok)
    return float(times[bad[-1] + 1] if bad.size else times[0])



def _network_eps_fn(model, batch: int, device):
    """eps_fn(x, t, y) of ``immse.network_integrand`` from an adapter: chain times t, condition indices y; fp32 (TF32
    off on a GPU: the integrand is a difference of two outputs, which rounding noise biases up)."""
    import torch

    from ..chain.evaluator import network_precision

    @torch.inference_mode()
    def eps_fn(x, t, y):
        t_net = torch.tensor([model.network_time(int(v)) for v in t], dtype=model.time_dtype)
        with network_precision("fp32", torch.device(device)):
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
        from ..ddpm.data import load_images

        data = load_images(spec["data"])
        return data.images, data.labels, "network: class label vs null label"
    ds = open_checked(samples, summary_hash, required=("state", "label"))
    return (torch.from_numpy(ds["state"].values.astype(np.float32)), torch.from_numpy(ds["label"].values),
            "network: condition vs null condition, on the model's own generated samples (no data set)")



def immse_stage(spec: dict, experiment: str, summary, output, options: dict, model_path=None, figure=None,
                dpi: int = 150, samples=None, model=None) -> None:
    """I(c; x_t) by the I-MMSE identity on the experiment's time grid, with its discrepancy to summary.nc.

    Network models: ``model_path`` is the checkpoint (own) or adapter.json (pretrained); a pretrained model has no
    data set, so x_0 are its own generated samples (``samples``: samples.nc), and it needs a null condition.
    ``model``: the adapter already loaded (then ``model_path`` is not read).
    """
    s = open_checked(summary, experiment_hash(spec), required=("prior", "log_snr"))
    skipped = comparison_skipped(spec, s)
    if is_pretrained(spec) and spec["sampling"].get("guidance"):
        raise InputError(f"{experiment}: the I-MMSE study of a pretrained model takes x0 from its generated samples, "
                         "which sampling.guidance makes guided samples, not draws of p(x0 | c); it is not run")
    prior = s["prior"].values
    schedule = source_schedule(spec)
    if spec["kind"] == "gmm":
        K = prior.size
        per_class = max(2, -(-int(options["samples"]) // K))
        mix = mixture_from_spec(spec)
        u = immse.log_snr_grid(schedule.alpha_bar, options["points"])
        log.info("gmm: exact denoisers, %d log-SNR points x %d samples per class", u.size, per_class)
        if isinstance(mix, highdim.IsotropicMixture):
            log.info("d = %d: samples and denoisers in R^d", mix.dim)
            g, g_se = immse.isotropic_integrand(mix, u, per_class, options["seed"])
        else:
            g, g_se = immse.gmm_integrand(mix, u, per_class, options["seed"])
        point_steps = np.full(u.size, -1)
        inputs = {}
    else:
        from ..models import load_adapter
        from .network import class_prior, device

        dev = device() if model is None else next((p.device for p in model.parameters()), device())
        model = load_adapter(spec, model_path, dev) if model is None else model
        # the model's prior over all its conditions (one-vs-rest may track a subset of them)
        prior = class_prior(spec["sampling"], model.num_conditions)
        K = prior.size
        per_class = max(2, -(-int(options["samples"]) // K))
        if spec["sampling"].get("tracking", "full") == "full" and s.sizes["class"] != K:
            raise InputError(f"{model_path}: the model has {model.num_conditions} conditions, {summary} has "
                             f"{s.sizes['class']}")
        if not model.has_null:
            raise InputError(f"{model_path}: the model has no null condition, which the I-MMSE study needs")
        images, labels, denoisers = _network_data(spec, experiment_hash(spec), samples)
        bound = health.state_bound(model.latent)
        inputs = {"input_outside_fraction": float(health.outside_share(images.numpy(), bound).mean()),
                  "input_bound": bound}
        log.info("x0 inputs: %.3g of the values beyond |x0| = %g (seminfo.analysis.health)",
                 inputs["input_outside_fraction"], bound)
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
    times = s["time"].values
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "T": T_of(s, spec),
        "estimator": "I-MMSE: dI/dgamma = 1/2 E||x0_hat(x, c) - x0_hat(x)||^2, integrated in log SNR from gamma = 0",
        "denoisers": "exact (Gaussian mixture)" if spec["kind"] == "gmm" else denoisers,
        "samples_per_class": per_class,
        "points": int(u.size),
        "seed": int(options["seed"]),
        "immse_max_se_bits": float(mi_se.max()),
    } | inputs
    comparison = {}
    if skipped:
        attrs["comparison_skipped"] = skipped
        log.info("no comparison with the trajectories' I(c; x_t): %s", skipped)
    else:
        traj = s["mutual_information"].values
        diff = mi - traj
        worst = int(np.abs(diff).argmax())
        attrs |= {
            "discrepancy_max_abs_bits": float(np.abs(diff).max()),
            "discrepancy_argmax_time": int(times[worst]),
            "discrepancy_mean_abs_bits": float(np.abs(diff).mean()),
            "agreement_tolerance_bits": AGREEMENT_BITS,
            "agreement_from_time": _agreement_time(times, diff, AGREEMENT_BITS),
        }
        log.info("max |I_immse - I_traj| = %.3g bit at t = %d; |diff| <= %.2g bit for t >= %s", attrs[
            "discrepancy_max_abs_bits"], attrs["discrepancy_argmax_time"], AGREEMENT_BITS,
            attrs["agreement_from_time"])
        comparison["mutual_information_difference"] = var("time", diff, "I-MMSE minus trajectory estimate of "
                                                          "I(c; x_t)", "bit")
    if "entropy_marginal_exact" in s and not skipped:
        exact = s.attrs["prior_entropy_bits"] - s["entropy_marginal_exact"].values
        attrs["immse_max_abs_error_vs_exact_bits"] = float(np.abs(mi - exact).max())
        attrs["trajectory_max_abs_error_vs_exact_bits"] = float(np.abs(traj - exact).max())
        log.info("vs exact: I-MMSE %.3g bit, trajectories %.3g bit", attrs["immse_max_abs_error_vs_exact_bits"],
                 attrs["trajectory_max_abs_error_vs_exact_bits"])
    ds = xr.Dataset(
        {
            "mutual_information_immse": var("time", mi, "mutual information I(c; x_t), I-MMSE estimate", "bit"),
            "mutual_information_immse_se": var("time", mi_se, "Monte Carlo standard error of the I-MMSE estimate",
                                                "bit"),
            **comparison,
            "information_rate_immse": var("point", g / LOG2, "I-MMSE integrand dI/dlog SNR",
                                           "bit per unit log SNR"),
            "information_rate_immse_se": var("point", g_se / LOG2, "standard error of the I-MMSE integrand",
                                              "bit per unit log SNR"),
            "mutual_information_immse_grid": var("point", info_grid / LOG2,
                                                  "I-MMSE estimate of I(c; x_gamma) on the log-SNR grid", "bit"),
            "mutual_information_immse_grid_se": var("point", info_grid_se / LOG2,
                                                     "standard error of the I-MMSE estimate on the grid", "bit"),
        },
        coords=time_coords(s) | {
            "point_log_snr": ("point", u, {"long_name": "log signal-to-noise ratio of the I-MMSE grid", "units": "1"}),
            "point_step": ("point", point_steps, {"long_name": "DDPM step of the grid point (-1: not a step)",
                                                  "units": "1"}),
        },
        attrs=attrs,
    )
    write_study(ds, output, figure, lambda d: plotting.plot_immse(s, d), dpi)


