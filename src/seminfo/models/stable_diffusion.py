"""Stable Diffusion (1.x / 2.x) in the layout ``StableDiffusionPipeline.save_pretrained`` writes, conditioned on
prompts. Needs ``transformers`` (``pip install -e ".[sd]"``).

Folder layout (``model.path``; the safety checker and feature extractor are not needed)::

    unet/config.json + weights           UNet2DConditionModel
    vae/config.json + weights            AutoencoderKL (its scaling_factor scales the latents)
    text_encoder/config.json + weights   CLIPTextModel
    tokenizer/                           CLIPTokenizer (vocab.json + merges.txt, or tokenizer.json)
    scheduler/scheduler_config.json      the training schedule (scaled_linear, T = 1000) and prediction_type

The conditions are ``model.prompts``, each embedded once by the text encoder (the last hidden state, as the pipeline
feeds the UNet); condition K, the unconditional prediction, is the embedding of ``model.negative_prompt`` (default
""), as in classifier-free guidance. The chain runs on the latent (4 x 64 x 64 for 512 px) on the grid of the
scheduler's ``timestep_spacing`` / ``steps_offset`` (SD 1.5: leading, offset 1), with its x̂_0 clipping if it has one
(``folders.scheduler_sampling``); figures decode through the VAE.
"""

from __future__ import annotations

import torch

from .base import Adapter
from .diffusers_unet import check_prediction, check_variance
from .dit import VaeDecoder
from .folders import (FolderError, component, from_pretrained, read_json, resolve_path, scheduler_sampling,
                      scheduler_schedule)

__all__ = ["inspect", "StableDiffusionAdapter", "load", "embed_prompts"]

COMPONENTS = ("unet", "vae", "text_encoder")


def config_has_null(model: dict) -> bool:
    """Whether the model has a null (unconditional) condition, from its config ``model`` section alone:
    always (the negative, empty prompt)."""
    return True


def inspect(spec: dict) -> dict:
    model = spec["model"]
    folder = resolve_path(model["path"])
    for name in COMPONENTS:
        component(folder, name)
    if not (folder / "tokenizer").is_dir():
        raise FolderError(f"{folder}: lacks the component tokenizer/")
    cfg_path = folder / "unet" / "config.json"
    cfg = read_json(cfg_path)
    if cfg.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise FolderError(f"{cfg_path}: holds a {cfg['_class_name']}, expected a UNet2DConditionModel")
    schedule, sched_cfg, sched_path = scheduler_schedule(folder)
    in_ch = int(cfg.get("in_channels", 4))
    size = int(cfg.get("sample_size", 64))
    return {"folder": folder, "names": list(model["prompts"]), "negative_prompt": model.get("negative_prompt", ""),
            "has_null": config_has_null(spec["model"]), "prediction": check_prediction(sched_cfg, str(sched_path)),
            "variance": check_variance(in_ch, int(cfg.get("out_channels", in_ch)), sched_cfg, str(sched_path)),
            "schedule": schedule, "state_shape": (in_ch, size, size)} | scheduler_sampling(sched_cfg, sched_path)


@torch.no_grad()
def embed_prompts(tokenizer, text_encoder, prompts: list[str], where: str) -> torch.Tensor:
    """(len(prompts), L, D) text-encoder hidden states, padded to the tokenizer's length as the pipeline does.

    Two prompts that are the same token sequence (e.g. equal up to case or after truncation) would be the same
    condition: refused.
    """
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    seen = {}
    for j, row in enumerate(ids.tolist()):
        if tuple(row) in seen:
            raise FolderError(f"{where}: the prompts {prompts[seen[tuple(row)]]!r} and {prompts[j]!r} are the same "
                              "token sequence for this tokenizer: they would be one condition")
        seen[tuple(row)] = j
    return text_encoder(ids.to(text_encoder.device))[0]


class StableDiffusionAdapter(Adapter):
    source = "stable_diffusion"
    latent = True

    def __init__(self, unet, vae, embeddings: torch.Tensor, plan: dict):
        super().__init__()
        self.unet = unet
        self.decoder = VaeDecoder(vae)
        self.condition_names = tuple(plan["names"])
        self.negative_prompt = plan["negative_prompt"]
        self.has_null = True
        self.prediction, self.variance = plan["prediction"], plan["variance"]
        self.schedule = plan["schedule"]
        self.state_shape = tuple(plan["state_shape"])
        self.register_buffer("embeddings", embeddings, persistent=False)  # (K + 1, L, D); row K = negative prompt
        self.timestep_spacing, self.steps_offset = plan["timestep_spacing"], plan["steps_offset"]
        self.clipping = plan["clipping"]
        self.chain_variance = plan["chain_variance"]
        self.check()

    def network_time(self, t: int):
        return int(t) - 1

    def forward(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=self.embeddings[cond]).sample

    def decode(self, x):
        return self.decoder(x)

    def describe(self) -> dict:
        return super().describe() | {"network": "UNet2DConditionModel", "negative_prompt": self.negative_prompt,
                                     "text_embedding_shape": list(self.embeddings.shape[1:])}


def load(spec: dict, device) -> StableDiffusionAdapter:
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise FolderError("Stable Diffusion needs transformers: pip install -e \".[sd]\"") from None
    from diffusers import AutoencoderKL, UNet2DConditionModel

    plan = inspect(spec)
    folder = plan["folder"]
    tokenizer = from_pretrained(CLIPTokenizer, folder, "tokenizer")
    text_encoder = from_pretrained(CLIPTextModel, folder, "text_encoder").to(device).eval()
    prompts = plan["names"] + [plan["negative_prompt"]]
    embeddings = embed_prompts(tokenizer, text_encoder, prompts, str(folder / "tokenizer"))
    del text_encoder
    unet = from_pretrained(UNet2DConditionModel, folder, "unet")
    vae = from_pretrained(AutoencoderKL, folder, "vae")
    return StableDiffusionAdapter(unet, vae, embeddings.float(), plan).to(device).eval()
