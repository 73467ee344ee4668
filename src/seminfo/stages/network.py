"""Stage functions of the network rules (own or pretrained models): check a pretrained model, sample one shard,
its posterior, collect.

Trajectories are laid out class-major (``seminfo.stages.shared.class_layout``): global index n has class
n // per_class. A shard is a contiguous block of global indices; each trajectory's noise is seeded by its
global index, so the shard count changes how work is split, not the results. The model comes in through its
adapter (``seminfo.models``); nothing here depends on the model family. For a pretrained model the shards and
samples.nc also keep the generated final states in the chain's units (``state``: the latent for latent models),
which are the model's own samples for the studies that need data (I-MMSE, speciation); a latent model's decoded
images are stored 8-bit.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
import xarray as xr

from ..analysis.health import outside_share, state_bound
from ..chain.guidance import guidance_from_spec
from ..chain.one_vs_rest import binary_entropy_bits, clipped_posterior, half_prior_posterior, ovr_log_posterior
from ..chain.posterior import online_log_posterior
from ..chain.rao_blackwell import shared_sigma_expected_entropies
from ..chain.sampler import model_chain, sample_trajectories
from ..config import class_index, experiment_hash
from ..io import InputError, atomic_path, open_checked, packing, provenance, write_netcdf
from ..models import adapter_record, check_sources, is_pretrained, load_adapter, model_source
from ..models.hub import is_hub, read_record
from .precision import check_experiment_precision
from .shared import class_layout, concat_shards, model_posterior_variables, resolve_partitions, trajectory_dataset

log = logging.getLogger(__name__)

__all__ = ["device", "class_prior", "shard_indices", "decode_states", "checked_adapter", "tracked_conditions",
           "model_check", "write_adapter_record", "sample_shard", "sample_shard_with", "shard_posterior",
           "ovr_dataset", "collect", "STATE_DIMS"]

STATE_DIMS = ("state_channel", "state_y", "state_x")


def device() -> torch.device:
    """The device of a network stage: ``cuda`` where CUDA is available (on a machine with several GPUs, the one the
    job holds: ``seminfo.gpu_pool`` points CUDA_VISIBLE_DEVICES at it), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def shard_indices(total: int, shards: int, shard: int) -> np.ndarray:
    """Global trajectory indices of one shard (contiguous, sizes differ by at most one)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0 … {shards - 1}")
    return np.array_split(np.arange(total), shards)[shard]


def _ddim_attrs(sampling: dict) -> dict:
    """eta of a DDIM run, and for eta < 1 what its posterior is (see ``seminfo.chain.sampler``)."""
    if sampling.get("kernel") != "ddim":
        return {}
    eta = float(sampling.get("eta", 1.0))
    note = {"note": "DDIM with eta < 1: the posterior is P(c | the path so far), not P(c | x_t)"} if eta < 1 else {}
    return {"eta": eta} | note


@torch.no_grad()
def decode_states(model, states: np.ndarray, dev, batch: int = 64) -> np.ndarray:
    """States (..., *state_shape) -> images (..., C, H, W) in [0, 1] through the adapter's decode, float32."""
    lead = states.shape[:-len(model.state_shape)]
    flat = torch.from_numpy(np.ascontiguousarray(states)).reshape(-1, *model.state_shape)
    parts = [model.decode(flat[i:i + batch].to(dev)).float().cpu() for i in range(0, flat.shape[0], batch)]
    images = torch.cat(parts) if parts else torch.empty((0, *model.state_shape))
    return images.reshape(*lead, *images.shape[1:]).numpy()


def model_check(spec: dict, experiment: str, output) -> None:
    """Load a pretrained model once through its adapter, check it, and write adapter.json (rule model_check).

    adapter.json holds the adapter's description (conditions, prediction and variance kind, state shape, T) and a
    fingerprint of the model's files; sampling depends on it. A model named by its hub id first gets the checks the
    workflow's parse could not run before rule model_download had fetched it (``check_sources``).
    """
    if is_hub(spec):
        check_sources({"experiments": {experiment: spec}})
        log.info("%s at revision %s, commit %s", spec["model"]["hub"], spec["model"]["revision"],
                 (read_record(spec) or {}).get("commit"))
    write_adapter_record(load_adapter(spec, None, device()), spec, output)


def write_adapter_record(model, spec: dict, output) -> None:
    """``model_check`` with the model already loaded: check ``model`` (its adapter) and write adapter.json."""
    record = adapter_record(spec, model)
    log.info("sampled as its pipeline samples: %s grid (steps_offset %d), x0 clipping %s", model.timestep_spacing,
             model.steps_offset, record["describe"]["clipping"])
    log.info("%s: %d conditions %s, %s prediction, %s variance, state %s, T = %d; %d files, sha256 %s",
             model.source, model.num_conditions, list(model.condition_names), model.prediction, model.variance,
             tuple(model.state_shape), model.schedule.T, record["fingerprint"]["files"],
             record["fingerprint"]["sha256"][:16])
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    log.info("wrote %s", output)


def checked_adapter(spec: dict, model_path, dev):
    """The experiment's adapter; for a pretrained model also checked against its adapter.json (``model_path``)."""
    model = load_adapter(spec, model_path, dev)
    if is_pretrained(spec):
        try:
            record = json.loads(open(model_path).read())
        except (OSError, ValueError) as err:
            raise InputError(f"{model_path}: cannot be read ({err}); delete it and rerun") from None
        if record.get("describe") != json.loads(json.dumps(model.describe())):
            raise InputError(f"{model_path}: describes another model than {spec['model']['path']} holds now; "
                             "delete it and rerun")
    return model


def tracked_conditions(spec: dict, names: list[str]) -> list[int]:
    """The model conditions that get trajectories: every one, or the one-vs-rest ``sampling.targets``."""
    s = spec["sampling"]
    if s.get("tracking") != "one_vs_rest" or not s.get("targets"):
        return list(range(len(names)))
    return [class_index(ref, names, f"sampling.targets[{j}]") for j, ref in enumerate(s["targets"])]


def sample_shard(spec: dict, experiment: str, model_path, shard: int, output, progress: bool = True) -> None:
    """Sample one shard of trajectories with the per-step Bayes increments (rule ddpm_sample).

    Full tracking writes ``increment`` (traj, step, class) and the Gram matrices of the Rao-Blackwell estimate; with
    guidance also ``model_increment``, the unguided model's; one-vs-rest tracking writes ``ovr_increment``
    (traj, step), with ``class`` the tracked targets.
    """
    dev = device()
    sample_shard_with(checked_adapter(spec, model_path, dev), spec, experiment, shard, output, dev, progress)


def sample_shard_with(model, spec: dict, experiment: str, shard: int, output, dev=None,
                      progress: bool = True) -> None:
    """``sample_shard`` with a model already loaded: ``model``, an adapter (``seminfo.models.Adapter``) on ``dev``
    (default: its parameters' device, else ``device()``); ``progress``: the sampler's progress bar."""
    s = spec["sampling"]
    if dev is None:
        dev = next((p.device for p in model.parameters()), device())
    K, names = model.num_conditions, list(model.condition_names)
    chain = model_chain(model, s)
    guidance, tracking = guidance_from_spec(s), s.get("tracking", "full")
    ovr = tracking == "one_vs_rest"
    targets = np.asarray(tracked_conditions(spec, names))
    slots, members = class_layout(targets.size, s["trajectories_per_class"])
    idx = shard_indices(slots.size, s["shards"], shard)
    log.info("shard %d/%d: %d trajectories x %d steps, %d conditions, %s tracking%s on %s", shard, s["shards"],
             idx.size, chain.steps, K, tracking, f", guidance {guidance.describe()}" if guidance else "", dev)
    gate = check_experiment_precision(spec, f"experiments.{experiment}", chain, K, int(np.prod(model.state_shape)),
                                      model.prediction)
    if gate["precision"] != "fp32":
        log.info("precision %s: predicted entropy bias at most %.3g bit (%s)", gate["precision"],
                 gate["entropy_bias_bound_bits"], "accepted by sampling.precision_override" if not gate["allowed"]
                 else "within the gate")
    stats = {}
    out = sample_trajectories(model, chain, targets[slots[idx]], idx, s["seed"], eval_batch=s["batch_size"],
                              examples=members[idx] < s["examples_per_class"], n_snapshots=s["snapshots"],
                              device=dev, progress=progress, prune_log_threshold=s.get("prune_log_threshold"),
                              precision=s.get("precision", "fp32"), compile=s.get("compile", False),
                              guidance=guidance, tracking=tracking, stats=stats)
    log.info("%d network evaluations (%.1f %% of the exact plan) in %.1f s, %.0f %% of it in the network",
             stats["evaluations"], 100 * stats["evaluations"] / stats["exact_evaluations"], stats["seconds"],
             100 * stats["model_seconds"] / stats["seconds"])
    start = chain.posterior_start
    # the chain the model's pipeline samples: its grid and its scheduler's x0 clipping (seminfo.chain.clipping)
    grid = chain.grid_attrs() | {"x0_clipping": json.dumps(model.clipping.describe()) if model.clipping else "none"}
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "T": model.schedule.T, "seed": s["seed"], "shard": shard, "shards": s["shards"],
        "kernel": s.get("kernel", "ddpm"), "variance": chain.variance, "tracking": tracking,
        "network_evaluations": int(stats["evaluations"]),
        "precision": gate["precision"], "precision_entropy_bias_bound_bits": gate["entropy_bias_bound_bits"],
    } | grid | _ddim_attrs(s) | (guidance.describe() if guidance else {})
    nat = "nat"
    data = {
        "label": ("traj", slots[idx]),
        "member": ("traj", members[idx]),
        "traj_index": ("traj", idx),
        "prior": ("class", class_prior(s, K)[targets], {"long_name": "class prior P(c) of the tracked classes "
                                                        "(sampling.class_prior; uniform when absent)", "units": "1"}),
        "image": (("traj", "channel", "y", "x"), decode_states(model, out.final, dev)),
        "filmstrip_x0": (("example", "snapshot", "channel", "y", "x"), decode_states(model, out.snapshots, dev),
                         {"long_name": "predicted x0 along example trajectories", "units": "1"}),
        "snapshot_time": ("snapshot", out.snapshot_times, {"long_name": "time of the snapshot", "units": "1"}),
        "state_outside_fraction": ("traj", outside_share(out.final, state_bound(model.latent)),
                                   {"long_name": "share of the generated x0's values beyond the data's range "
                                                 "(seminfo.analysis.health)", "units": "1",
                                    "bound": state_bound(model.latent)}),
        "state_max_abs": ("traj", np.abs(out.final.reshape(idx.size, -1)).max(1),
                          {"long_name": "largest |x0| of the generated state, in the chain's units", "units": "1"}),
    }
    if out.increments is not None:
        data["increment"] = (("traj", "step", "class"), out.increments,
                             {"long_name": "log-likelihood of the step taken under each class (up to a constant)"
                              + (", guided kernels" if guidance else ""), "units": nat})
    if out.gram is not None:
        data["gram"] = (("traj", "step", "class", "class_b"), out.gram,
                        {"long_name": "Gram matrix <delta_c, delta_d> of the step's mean differences "
                                      "(Rao-Blackwell input)", "units": "1"})
    if out.model_increments is not None:
        data["model_increment"] = (("traj", "step", "class"), out.model_increments,
                                   {"long_name": "log-likelihood of the step taken under each class's unguided "
                                                 "kernel (up to a constant)", "units": nat})
    if ovr:
        data["ovr_increment"] = (("traj", "step"), out.ovr_increments[:, :, 0],
                                 {"long_name": "log N(x'; mu_c) - log N(x'; mu_null) of the step, c the trajectory's "
                                               "class", "units": nat})
    ds = xr.Dataset(
        data,
        coords={
            "step": ("step", chain.times[start + 1:], {"long_name": "time the step starts from"}),
            "step_sigma": ("step", chain.sigma[start:], {"long_name": "standard deviation of the step", "units": "1"}),
            "time": chain.times[start:],
            "alpha_bar": ("time", chain.alpha_bar[start:]),
            "class": np.asarray([names[k] for k in targets], dtype=str),
        },
        attrs=attrs,
    )
    if is_pretrained(spec):
        ds = ds.assign(state=(("traj",) + STATE_DIMS, out.final, {"long_name": "generated x0 in the chain's units "
                                                                           "(the model's own sample)", "units": "1"}))
        ds.attrs |= {"model_source": model_source(spec), "adapter": json.dumps(model.describe(), sort_keys=True)}
        hub = read_record(spec)
        if hub is not None:  # provenance: the repository, revision and commit the folder was downloaded at
            ds.attrs["model_hub"] = json.dumps({k: hub.get(k) for k in ("repo_id", "revision", "commit")},
                                               sort_keys=True)
    write_netcdf(ds, output, packed=("image", "filmstrip_x0") if model.latent else ())
    log.info("wrote %s", output)


def class_prior(sampling: dict, K: int) -> np.ndarray:
    """The class prior P(c) of a network model's K conditions: ``sampling.class_prior`` normalised, or uniform.

    It is where full and one-vs-rest tracking start (P(c | x_T)), and the weights of H(c | x_t). A model trained on
    imbalanced data (its null model too) encodes its training prior: set it to that."""
    given = sampling.get("class_prior")
    if given is None:
        return np.full(K, 1.0 / K)
    prior = np.asarray(given, dtype=np.float64)
    if prior.shape != (K,) or not np.all(prior > 0):
        raise InputError(f"sampling.class_prior: needs {K} positive weights (one per condition), got {list(given)}")
    return prior / prior.sum()


def shard_posterior(spec: dict, experiment: str, sample, output) -> None:
    """Turn one shard's increments into P(c | x_t) and entropies (rule ddpm_posterior).

    Full tracking: the online posterior of every trajectory (with guidance: over the guided kernels, and the unguided
    model's as ``model_*``) and its Rao-Blackwellised curves; one-vs-rest: ``ovr_dataset``.
    """
    ds = open_checked(sample, experiment_hash(spec), required=("label", "prior"))
    if "ovr_increment" in ds and "increment" not in ds:
        out = ovr_dataset(ds, spec["sampling"]["examples_per_class"], spec["sampling"].get("target_prior", "class"))
    else:
        if "increment" not in ds:
            raise InputError(f"{sample}: lacks variables ['increment']")
        prior = ds["prior"].values
        log_start = np.broadcast_to(np.log(prior), (ds.sizes["traj"], prior.size))
        log_post = online_log_posterior(log_start, ds["increment"].values)
        names = list(ds["class"].values.astype(str))
        partitions = resolve_partitions(spec, names)
        expected = None
        if "gram" in ds:
            expected = shared_sigma_expected_entropies(log_post, ds["increment"].values, ds["gram"].values,
                                                       ds["step_sigma"].values, spec["sampling"]["seed"],
                                                       list(partitions.values()))
        out = trajectory_dataset(log_post, ds["label"].values, ds["member"].values, ds["time"].values,
                                 ds["alpha_bar"].values, names, prior, partitions,
                                 spec["sampling"]["examples_per_class"], dict(ds.attrs), keep_posterior=True,
                                 expected=expected)
        if "model_increment" in ds:
            out = out.assign(model_posterior_variables(online_log_posterior(log_start, ds["model_increment"].values),
                                                       ds["label"].values, partitions))
    out = out.assign(traj_index=ds["traj_index"], filmstrip_x0=ds["filmstrip_x0"], snapshot_time=ds["snapshot_time"])
    write_netcdf(out, output)
    log.info("wrote %s", output)


def ovr_dataset(ds: xr.Dataset, examples_per_class: int, target_prior: str = "class") -> xr.Dataset:
    """Per-trajectory one-vs-rest quantities (``seminfo.chain.one_vs_rest``) of a sample shard: P(c | path) of each
    trajectory's class c, started at its class prior and clipped at 1 (with ``target_prior`` 'half': its posterior
    under 1:1 prior odds against the rest, ``half_prior_posterior``), its binary entropy, and the clipping
    diagnostics as attributes."""
    labels, members = ds["label"].values, ds["member"].values
    prior = ds["prior"].values
    log_p = ovr_log_posterior(np.log(prior[labels]), ds["ovr_increment"].values)
    p, clipped, excess = clipped_posterior(log_p)
    what = "one-vs-rest P(c | path) of the trajectory's class c (an approximation exact as the step -> 0)"
    start = prior
    if target_prior == "half":
        p = half_prior_posterior(p, prior[labels][:, None])
        what = ("one-vs-rest posterior of the trajectory's class c against the rest under 1:1 prior odds (from P(c | "
                "path), an approximation exact as the step -> 0)")
        start = np.full(prior.shape, 0.5)
    examples = np.flatnonzero(members < examples_per_class)
    attrs = dict(ds.attrs) | {"ovr_clipped_fraction": clipped, "ovr_max_log_excess": excess,
                              "ovr_target_prior": target_prior}
    log.info("one-vs-rest: log P > 0 at %.3g of (trajectory, time) points, by at most %.3g nat (reported P = 1)",
             clipped, excess)
    return xr.Dataset(
        {
            "label": ("traj", labels),
            "member": ("traj", members),
            "prior": ("class", start, {"long_name": "the reported posterior at t = T (the class prior, or 1/2 under "
                                                    "1:1 prior odds)", "units": "1"}),
            "entropy": (("traj", "time"), binary_entropy_bits(p).astype(np.float32),
                        {"long_name": "binary entropy h(P(c | x_t)) of the trajectory's class against the rest",
                         "units": "bit"}),
            "posterior_true": (("traj", "time"), p.astype(np.float32), {"long_name": what, "units": "1"}),
            "posterior_target": (("traj", "time"), p.astype(np.float32), {"long_name": what, "units": "1"}),
            "example_posterior_target": (("example", "time"), p[examples], {"long_name": what, "units": "1"}),
            "example_label": ("example", labels[examples]),
        },
        coords={"time": ds["time"].values, "alpha_bar": ("time", ds["alpha_bar"].values), "class": ds["class"].values},
        attrs=attrs,
    )


def collect(spec: dict, experiment: str, posteriors, samples, trajectories_out, samples_out) -> None:
    """Write trajectories.nc (posterior per trajectory, time, class) and samples.nc (rule ddpm_collect)."""
    h = experiment_hash(spec)
    traj = concat_shards([open_checked(p, h, required=("entropy", "label")) for p in posteriors])
    attrs = dict(traj.attrs)
    for key in ("shard",):
        attrs.pop(key, None)
    if "posterior" in traj:
        posterior = {"posterior": (("traj", "time", "class"), traj["posterior"].values,
                                   {"long_name": "class posterior P(c | path)"
                                    + (" over the guided kernels" if "guidance_scale" in attrs else ""), "units": "1"})}
    else:  # one-vs-rest tracking
        posterior = {"posterior_target": traj["posterior_target"].variable}
    trajectories = xr.Dataset(
        {
            **posterior,
            "entropy": (("traj", "time"), traj["entropy"].values,
                        {"long_name": traj["entropy"].attrs.get("long_name", "posterior entropy"), "units": "bit"}),
            "label": ("traj", traj["label"].values, {"long_name": "generating class", "units": "1"}),
        },
        coords={"traj": traj["traj_index"].values, "time": traj["time"].values, "class": traj["class"].values},
        attrs=attrs,
    )
    if "entropy_rb" in traj:  # the decisions study takes its rate peaks from the lower-variance curves
        trajectories["entropy_rb"] = (("traj", "time"), traj["entropy_rb"].transpose("traj", "time").values,
                                      {"long_name": "Rao-Blackwellised posterior entropy curve", "units": "bit"})
    write_netcdf(trajectories, trajectories_out)
    parts = [open_checked(p, h, required=("image", "label")) for p in samples]
    images = np.concatenate([p["image"].values for p in parts])
    labels = np.concatenate([p["label"].values for p in parts])
    samples_ds = xr.Dataset(
        {
            "image": (("sample", "channel", "y", "x"), images, {"long_name": "generated image", "units": "1"}),
            "label": ("sample", labels, {"long_name": "class the sample was generated for", "units": "1"}),
        },
        coords={"class": parts[0]["class"].values},
        attrs=attrs,
    )
    if "state" in parts[0]:
        samples_ds["state"] = (("sample",) + STATE_DIMS, np.concatenate([p["state"].values for p in parts]),
                               dict(parts[0]["state"].attrs))
    write_netcdf(samples_ds, samples_out, packed=("image",) if packing(parts[0]["image"]) else ())
    log.info("wrote %s and %s", trajectories_out, samples_out)
