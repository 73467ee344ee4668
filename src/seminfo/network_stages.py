"""Stage functions of the network rules (own or pretrained models): check a pretrained model, sample one shard,
its posterior, collect.

Trajectories are laid out class-major (``seminfo.stages.class_layout``): global index n has class
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

from .config import experiment_hash
from .diffusion import sampler_chain
from .io import InputError, atomic_path, open_checked, packing, provenance, write_netcdf
from .models import adapter_record, is_pretrained, load_adapter, model_source
from .posterior import online_log_posterior
from .rao_blackwell import shared_sigma_expected_entropies
from .sampler import sample_trajectories
from .stages import class_layout, concat_shards, resolve_partitions, trajectory_dataset

log = logging.getLogger(__name__)

__all__ = ["device", "shard_indices", "model_check", "sample_shard", "shard_posterior", "collect", "STATE_DIMS"]

STATE_DIMS = ("state_channel", "state_y", "state_x")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def shard_indices(total: int, shards: int, shard: int) -> np.ndarray:
    """Global trajectory indices of one shard (contiguous, sizes differ by at most one)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0 … {shards - 1}")
    return np.array_split(np.arange(total), shards)[shard]


def _ddim_attrs(sampling: dict) -> dict:
    """eta of a DDIM run, and for eta < 1 what its posterior is (see ``seminfo.sampler``)."""
    if sampling.get("kernel") != "ddim":
        return {}
    eta = float(sampling.get("eta", 1.0))
    note = {"note": "DDIM with eta < 1: the posterior is P(c | the path so far), not P(c | x_t)"} if eta < 1 else {}
    return {"eta": eta} | note


@torch.no_grad()
def _decode(model, states: np.ndarray, dev, batch: int = 64) -> np.ndarray:
    """States (..., *state_shape) -> images (..., C, H, W) in [0, 1] through the adapter's decode, float32."""
    lead = states.shape[:-len(model.state_shape)]
    flat = torch.from_numpy(np.ascontiguousarray(states)).reshape(-1, *model.state_shape)
    parts = [model.decode(flat[i:i + batch].to(dev)).float().cpu() for i in range(0, flat.shape[0], batch)]
    images = torch.cat(parts) if parts else torch.empty((0, *model.state_shape))
    return images.reshape(*lead, *images.shape[1:]).numpy()


def model_check(spec: dict, experiment: str, output) -> None:
    """Load a pretrained model once through its adapter, check it, and write adapter.json (rule model_check).

    adapter.json holds the adapter's description (conditions, prediction and variance kind, state shape, T) and a
    fingerprint of the model's files; sampling depends on it.
    """
    model = load_adapter(spec, None, device())
    record = adapter_record(spec, model)
    for option, value in record["describe"].get("scheduler_options_not_applied", {}).items():
        log.warning("the scheduler's %s = %r is not applied (the step stays affine in the network output)",
                    option, value)
    log.info("%s: %d conditions %s, %s prediction, %s variance, state %s, T = %d; %d files, sha256 %s",
             model.source, model.num_conditions, list(model.condition_names), model.prediction, model.variance,
             tuple(model.state_shape), model.schedule.T, record["fingerprint"]["files"],
             record["fingerprint"]["sha256"][:16])
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    log.info("wrote %s", output)


def _checked_adapter(spec: dict, model_path, dev):
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


def sample_shard(spec: dict, experiment: str, model_path, shard: int, output) -> None:
    """Sample one shard of trajectories with the per-step Bayes increments (rule ddpm_sample)."""
    s = spec["sampling"]
    dev = device()
    model = _checked_adapter(spec, model_path, dev)
    K, names = model.num_conditions, list(model.condition_names)
    chain = sampler_chain(model.schedule, s)
    labels, members = class_layout(K, s["trajectories_per_class"])
    idx = shard_indices(labels.size, s["shards"], shard)
    log.info("shard %d/%d: %d trajectories x %d steps x %d classes on %s", shard, s["shards"], idx.size,
             chain.steps, K, dev)
    stats = {}
    out = sample_trajectories(model, chain, labels[idx], idx, s["seed"], eval_batch=s["batch_size"],
                              examples=members[idx] < s["examples_per_class"], n_snapshots=s["snapshots"],
                              device=dev, prune_log_threshold=s.get("prune_log_threshold"),
                              precision=s.get("precision", "fp32"), compile=s.get("compile", False), stats=stats)
    log.info("%d network evaluations (%.1f %% of exact) in %.1f s, %.0f %% of it in the network",
             stats["evaluations"], 100 * stats["evaluations"] / stats["exact_evaluations"], stats["seconds"],
             100 * stats["model_seconds"] / stats["seconds"])
    start = chain.posterior_start
    attrs = provenance(experiment, spec, experiment_hash(spec)) | {
        "T": model.schedule.T, "seed": s["seed"], "shard": shard, "shards": s["shards"],
        "kernel": s.get("kernel", "ddpm"),
    } | _ddim_attrs(s)
    ds = xr.Dataset(
        {
            "increment": (("traj", "step", "class"), out.increments,
                          {"long_name": "log-likelihood of the step taken under each class (up to a constant)",
                           "units": "nat"}),
            "label": ("traj", labels[idx]),
            "member": ("traj", members[idx]),
            "traj_index": ("traj", idx),
            **({} if out.gram is None else {"gram": (
                ("traj", "step", "class", "class_b"), out.gram,
                {"long_name": "Gram matrix <delta_c, delta_d> of the step's mean differences (Rao-Blackwell input)",
                 "units": "1"})}),
            "prior": ("class", np.full(K, 1.0 / K)),
            "image": (("traj", "channel", "y", "x"), _decode(model, out.final, dev)),
            "filmstrip_x0": (("example", "snapshot", "channel", "y", "x"), _decode(model, out.snapshots, dev),
                             {"long_name": "predicted x0 along example trajectories", "units": "1"}),
            "snapshot_time": ("snapshot", out.snapshot_times, {"long_name": "time of the snapshot", "units": "1"}),
        },
        coords={
            "step": ("step", chain.times[start + 1:], {"long_name": "time the step starts from"}),
            "step_sigma": ("step", chain.sigma[start:], {"long_name": "standard deviation of the step", "units": "1"}),
            "time": chain.times[start:],
            "alpha_bar": ("time", chain.alpha_bar[start:]),
            "class": np.asarray(names, dtype=str),
        },
        attrs=attrs,
    )
    if is_pretrained(spec):
        ds = ds.assign(state=(("traj",) + STATE_DIMS, out.final,
                              {"long_name": "generated x0 in the chain's units (the model's own sample)", "units": "1"}))
        ds.attrs |= {"model_source": model_source(spec), "adapter": json.dumps(model.describe(), sort_keys=True)}
    write_netcdf(ds, output, packed=("image", "filmstrip_x0") if model.latent else ())
    log.info("wrote %s", output)


def shard_posterior(spec: dict, experiment: str, sample, output) -> None:
    """Turn one shard's increments into P(c | x_t) and entropies (rule ddpm_posterior)."""
    ds = open_checked(sample, experiment_hash(spec), required=("increment", "label", "prior"))
    prior = ds["prior"].values
    n = ds.sizes["traj"]
    log_post = online_log_posterior(np.broadcast_to(np.log(prior), (n, prior.size)), ds["increment"].values)
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
    out = out.assign(traj_index=ds["traj_index"], filmstrip_x0=ds["filmstrip_x0"], snapshot_time=ds["snapshot_time"])
    write_netcdf(out, output)
    log.info("wrote %s", output)


def collect(spec: dict, experiment: str, posteriors, samples, trajectories_out, samples_out) -> None:
    """Write trajectories.nc (posterior per trajectory, time, class) and samples.nc (rule ddpm_collect)."""
    h = experiment_hash(spec)
    traj = concat_shards([open_checked(p, h, required=("posterior",)) for p in posteriors])
    attrs = dict(traj.attrs)
    for key in ("shard",):
        attrs.pop(key, None)
    trajectories = xr.Dataset(
        {
            "posterior": (("traj", "time", "class"), traj["posterior"].values,
                          {"long_name": "class posterior P(c | x_t)", "units": "1"}),
            "entropy": (("traj", "time"), traj["entropy"].values,
                        {"long_name": "posterior entropy", "units": "bit"}),
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
