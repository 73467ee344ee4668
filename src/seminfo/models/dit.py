"""DiT (Peebles & Xie 2023) in the layout ``DiTPipeline.save_pretrained`` writes (the hub's facebook/DiT-XL-2-256).

Folder layout (``model.path``)::

    model_index.json                      with "id2label": {"0": "tench, Tinca tinca", …} (the ImageNet labels)
    transformer/config.json + weights     DiTTransformer2DModel (num_embeds_ada_norm = 1000 classes + the null id)
    vae/config.json + weights             AutoencoderKL (its scaling_factor scales the latents)
    scheduler/scheduler_config.json       the training schedule (linear, T = 1000) and prediction_type

The conditions are ``model.classes``, a subset of the labels by name (any of the comma-separated names of an id, as
``DiTPipeline.get_label_ids`` reads them) or by id, so the posterior is P(c | x_t, c in the subset). The null
condition is id ``num_embeds_ada_norm`` (the label-dropout embedding). With 2C output channels (DiT's learned
sigma) the step's variance is the network's learned range, per element and per condition. The chain runs on the
latent (4 x 32 x 32 for 256 px) on the grid of the scheduler's ``timestep_spacing`` / ``steps_offset``, with its x̂_0
clipping if it has one (``folders.scheduler_sampling``); figures decode x / scaling_factor through the VAE.
"""

from __future__ import annotations

import torch

from .base import Adapter, unit_range
from .diffusers_unet import check_prediction, check_variance
from .folders import (FolderError, component, from_pretrained, read_json, resolve_path, scheduler_sampling,
                      scheduler_schedule)

__all__ = ["label_ids", "inspect", "DiTAdapter", "load", "VaeDecoder"]


def label_ids(id2label: dict) -> dict[str, int]:
    """Every name of every id (names split on commas and stripped, as DiTPipeline does) -> id."""
    out = {}
    for key, value in id2label.items():
        for name in str(value).split(","):
            out[name.strip()] = int(key)
    return out


def config_has_null(model: dict) -> bool:
    """Whether the model has a null (unconditional) condition, from its config ``model`` section alone:
    always (its label num_classes is the null class)."""
    return True


def inspect(spec: dict) -> dict:
    model = spec["model"]
    folder = resolve_path(model["path"])
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FolderError(f"{folder}: lacks model_index.json (with the id2label map of the class names)")
    index = read_json(index_path)
    id2label = index.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise FolderError(f"{index_path}: has no id2label map of the class names")
    tr_path = component(folder, "transformer") / "config.json"
    cfg = read_json(tr_path)
    component(folder, "vae")
    n_classes = int(cfg.get("num_embeds_ada_norm") or 0)
    if n_classes < 1:
        raise FolderError(f"{tr_path}: num_embeds_ada_norm is unset: not a class-conditional DiT")
    names_to_id = label_ids(id2label)
    ids, names = [], []
    for j, ref in enumerate(model["classes"]):
        if isinstance(ref, int):
            if not 0 <= ref < n_classes:
                raise FolderError(f"id {ref} is outside the model's classes 0…{n_classes - 1} ({tr_path})",
                                  f"model.classes[{j}]")
            ids.append(ref)
            names.append(str(id2label.get(str(ref), ref)).split(",")[0].strip())
        else:
            if ref not in names_to_id:
                raise FolderError(f"{ref!r} is not a class name in {index_path} id2label", f"model.classes[{j}]")
            ids.append(names_to_id[ref])
            names.append(ref)
    if len(set(ids)) != len(ids):
        raise FolderError(f"names the same class twice (ids {ids})", "model.classes")
    schedule, sched_cfg, sched_path = scheduler_schedule(folder)
    in_ch = int(cfg.get("in_channels", 4))
    out_ch = int(cfg.get("out_channels") or in_ch)
    # The learned sigma of DiT: 2C channels are a learned range whatever variance_type the (inference) scheduler has.
    variance = "learned_range" if out_ch == 2 * in_ch else check_variance(in_ch, out_ch, sched_cfg, str(sched_path))
    size = int(cfg.get("sample_size", 32))
    return {"folder": folder, "names": names, "labels": ids + [n_classes], "has_null": config_has_null(spec["model"]),
            "prediction": check_prediction(sched_cfg, str(sched_path)), "variance": variance, "schedule": schedule,
            "state_shape": (in_ch, size, size), "ids": ids} | scheduler_sampling(sched_cfg, sched_path)


class VaeDecoder(torch.nn.Module):
    """Latents -> images in [0, 1]: ``vae.decode(x / scaling_factor)`` mapped from [-1, 1] (as DiTPipeline and
    StableDiffusionPipeline do)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        return unit_range(self.vae.decode(x / self.vae.config.scaling_factor).sample)


class DiTAdapter(Adapter):
    source = "dit"
    latent = True

    def __init__(self, transformer, vae, plan: dict):
        super().__init__()
        self.transformer = transformer
        self.decoder = VaeDecoder(vae)
        self.condition_names = tuple(plan["names"])
        self.has_null = True
        self.prediction, self.variance = plan["prediction"], plan["variance"]
        self.schedule = plan["schedule"]
        self.state_shape = tuple(plan["state_shape"])
        self.register_buffer("label_map", torch.as_tensor(plan["labels"], dtype=torch.long), persistent=False)
        self.timestep_spacing, self.steps_offset = plan["timestep_spacing"], plan["steps_offset"]
        self.clipping = plan["clipping"]
        self.chain_variance = plan["chain_variance"]
        self.check()

    def network_time(self, t: int):
        return int(t) - 1

    def forward(self, x, t, cond):
        return self.transformer(x, timestep=t, class_labels=self.label_map[cond]).sample

    def decode(self, x):
        return self.decoder(x)

    def describe(self) -> dict:
        return super().describe() | {"network": "DiTTransformer2DModel", "imagenet_ids": self.label_map[:-1].tolist(),
                                     "null_id": int(self.label_map[-1])}


def load(spec: dict, device) -> DiTAdapter:
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    plan = inspect(spec)
    transformer = from_pretrained(DiTTransformer2DModel, plan["folder"], "transformer")
    rows = transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings
    if rows <= plan["labels"][-1]:
        raise FolderError(f"{plan['folder']}/transformer: has no null-class embedding (trained without label "
                          "dropout), which the adapter needs for id num_embeds_ada_norm")
    vae = from_pretrained(AutoencoderKL, plan["folder"], "vae")
    return DiTAdapter(transformer, vae, plan).to(device).eval()
