"""A class-conditional diffusers ``UNet2DModel`` saved with ``save_pretrained`` (a ``DDPMPipeline`` folder).

Folder layout (``model.path``)::

    unet/config.json, unet/diffusion_pytorch_model.safetensors   UNet2DModel with num_class_embeds (or
                                                                 class_embed_type 'timestep')
    scheduler/scheduler_config.json                              its training schedule and prediction_type

The conditions are the UNet's class labels except ``model.null_label`` (the unconditional label, if the model was
trained with one), in label order, named by ``model.class_names`` (default: the label numbers). The schedule is
rebuilt from the scheduler configuration (``seminfo.chain.schedules.schedule_from_scheduler_config``); diffusers'
timestep tau = t - 1 for the chain's step t. A UNet with 2C output channels is a learned-range model
(``variance_type: learned_range``). The chain is the pipeline's: the grid of the scheduler's ``timestep_spacing`` and
``steps_offset`` (``seminfo.chain.schedules.chain_times``), and its ``clip_sample`` / ``thresholding`` of x̂_0
(``seminfo.chain.clipping``), read by ``folders.scheduler_sampling``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import PREDICTIONS, Adapter
from .folders import (FolderError, component, from_pretrained, read_json, resolve_path, scheduler_sampling,
                      scheduler_schedule)

__all__ = ["inspect", "DiffusersUNetAdapter", "load", "check_variance"]


def check_variance(in_channels: int, out_channels: int, scheduler: dict, where: str) -> str:
    """'fixed' or 'learned_range' from the network's channels and the scheduler's ``variance_type``."""
    variance_type = scheduler.get("variance_type") or "fixed_small"
    if out_channels == 2 * in_channels:
        if variance_type not in ("learned_range",):
            raise FolderError(f"{where}: variance_type: the network has 2x{in_channels} output channels (a learned "
                              f"variance) but variance_type is {variance_type!r}; only 'learned_range' is supported")
        return "learned_range"
    if out_channels != in_channels:
        raise FolderError(f"{where}: the network has {out_channels} output channels for {in_channels} input channels")
    if variance_type in ("learned", "learned_range"):
        raise FolderError(f"{where}: variance_type: {variance_type!r} needs 2x{in_channels} output channels, the "
                          f"network has {out_channels}")
    return "fixed"


def check_prediction(scheduler: dict, where: str) -> str:
    prediction = scheduler.get("prediction_type") or "epsilon"
    if prediction not in PREDICTIONS:
        raise FolderError(f"{where}: prediction_type: {prediction!r} is not one the adapter knows ({', '.join(PREDICTIONS)})")
    return prediction


def _size(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def config_has_null(model: dict) -> bool:
    """Whether the model has a null (unconditional) condition, from its config ``model`` section alone:
    ``model.null_label`` is set."""
    return model.get("null_label") is not None


def inspect(spec: dict) -> dict:
    """What the folder holds, from its JSON files alone: conditions, network labels, prediction, variance, schedule,
    and how its pipeline samples (grid spacing, steps_offset, x̂_0 clipping)."""
    model = spec["model"]
    folder = resolve_path(model["path"])
    unet_dir = component(folder, "unet")
    cfg_path = unet_dir / "config.json"
    cfg = read_json(cfg_path)
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise FolderError(f"{cfg_path}: holds a {cfg['_class_name']}, expected a UNet2DModel")
    embed_type, n_embeds = cfg.get("class_embed_type"), cfg.get("num_class_embeds")
    names = model.get("class_names")
    null = model.get("null_label")
    if embed_type is None and n_embeds:
        n_labels = int(n_embeds)
    elif embed_type == "timestep":
        if not names:
            raise FolderError(f"{cfg_path}: class_embed_type 'timestep' does not say how many classes there are; "
                              "name them in model.class_names")
        n_labels = len(names) + (null is not None)
    else:
        why = (f"class_embed_type {embed_type!r} takes embedding vectors, not class labels" if embed_type
               else "num_class_embeds and class_embed_type are both unset")
        raise FolderError(f"{cfg_path}: not a class-conditional UNet ({why})")
    if null is not None and not 0 <= null < n_labels:
        raise FolderError(f"{null} is not one of the UNet's labels 0…{n_labels - 1} ({cfg_path})", "model.null_label")
    labels = [k for k in range(n_labels) if k != null]
    if names is not None and len(names) != len(labels):
        raise FolderError(f"names {len(names)} classes, the UNet has {len(labels)} class labels besides the null "
                          f"label ({cfg_path})", "model.class_names")
    names = list(names) if names is not None else [str(k) for k in labels]
    schedule, sched_cfg, sched_path = scheduler_schedule(folder)
    in_ch = int(cfg.get("in_channels", 3))
    out_ch = int(cfg.get("out_channels", in_ch))
    return {
        "folder": folder, "names": names, "labels": labels + ([null] if null is not None else []),
        "has_null": config_has_null(model), "prediction": check_prediction(sched_cfg, str(sched_path)),
        "variance": check_variance(in_ch, out_ch, sched_cfg, str(sched_path)),
        "schedule": schedule, "state_shape": (in_ch, *_size(cfg.get("sample_size", 32))),
    } | scheduler_sampling(sched_cfg, sched_path)


class DiffusersUNetAdapter(Adapter):
    """eps / v / x0 of a class-conditional ``UNet2DModel``; condition index -> the UNet's label through ``label_map``."""

    source = "diffusers"

    def __init__(self, unet, plan: dict):
        super().__init__()
        self.unet = unet
        self.condition_names = tuple(plan["names"])
        self.has_null = plan["has_null"]
        self.prediction, self.variance = plan["prediction"], plan["variance"]
        self.schedule = plan["schedule"]
        self.state_shape = tuple(plan["state_shape"])
        self.register_buffer("label_map", torch.as_tensor(plan["labels"], dtype=torch.long), persistent=False)
        self.timestep_spacing, self.steps_offset = plan["timestep_spacing"], plan["steps_offset"]
        self.clipping = plan["clipping"]
        self.chain_variance = plan["chain_variance"]
        self.check()

    def network_time(self, t: int):
        return int(t) - 1  # diffusers' timestep tau = t - 1 (its alphas_cumprod[tau] is our alpha_bar[t])

    def forward(self, x, t, cond):
        return self.unet(x, t, class_labels=self.label_map[cond]).sample

    def describe(self) -> dict:
        return super().describe() | {"network": "UNet2DModel", "network_labels": self.label_map.tolist()}


def load(spec: dict, device) -> DiffusersUNetAdapter:
    from diffusers import UNet2DModel

    plan = inspect(spec)
    unet = from_pretrained(UNet2DModel, Path(plan["folder"]), "unet")
    shape = (unet.config.in_channels, *_size(unet.config.sample_size))
    if shape != plan["state_shape"]:
        raise FolderError(f"{plan['folder']}/unet: loaded a network for {shape}, its config says {plan['state_shape']}")
    return DiffusersUNetAdapter(unet, plan).to(device).eval()
