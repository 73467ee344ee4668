"""Stable Diffusion 3 / 3.5 (a rectified-flow transformer, Esser et al. 2024) in the layout
``StableDiffusion3Pipeline.save_pretrained`` writes, conditioned on prompts (``model.source: sd3``). Needs
``transformers`` (``pip install -e ".[sd]"``).

Folder layout (``model.path``)::

    transformer/config.json + weights      SD3Transformer2DModel, a velocity v = eps - x_0 of the latent
    vae/config.json + weights              AutoencoderKL (its shift_factor and scaling_factor map the latents)
    text_encoder/, text_encoder_2/         CLIPTextModelWithProjection (CLIP-L, CLIP-G)
    tokenizer/, tokenizer_2/               CLIPTokenizer
    text_encoder_3/, tokenizer_3/          T5EncoderModel and its tokenizer: optional. Left out (both folders absent),
                                           the T5 part of the prompt embedding is zeros, as the pipeline does with
                                           text_encoder_3=None
    scheduler/scheduler_config.json        FlowMatchEulerDiscreteScheduler (num_train_timesteps, shift, dynamic
                                           shifting)

The conditions are ``model.prompts``, each embedded once by the pipeline's own ``encode_prompt`` (the two CLIP
hidden states and T5's, joined as it joins them, and the pooled CLIP vectors); condition K, the unconditional
prediction, is the embedding of ``model.negative_prompt`` (default ""), as in classifier-free guidance.

The chain. The sigma grid is the scheduler's own for ``sampling.steps`` (``gaussian_path.flow_match_sigmas``: its
spacing, ``shift``, dynamic shifting with the pipeline's mu for the transformer's default sample size), plus sigma = 0.
The path x_s = (1 - s) x_0 + s eps is, in VP units x_VP = x / sqrt((1 - s)^2 + s^2), a VP path with alpha_bar =
(1 - s)^2 / ((1 - s)^2 + s^2), and each step is q(x_s' | x_s, x̂_0), the 'small' DDPM step with x̂_0 = x - s v
(``gaussian_path``, prediction 'velocity_rectified_flow'). It starts exactly at pure noise (s = 1), as the pipeline
does; the network is fed s x num_train_timesteps, as the scheduler's timesteps. The chain runs on the latent (16 x 128
x 128 for 1024 px); figures decode x / scaling_factor + shift_factor through the VAE.
"""

from __future__ import annotations

import numpy as np
import torch

from ..chain.gaussian_path import PATHS, flow_match_sigmas, path_scale, path_schedule
from .base import Adapter, unit_range
from .folders import FolderError, component, from_pretrained, read_json, resolve_path

__all__ = ["COMPONENTS", "inspect", "SD3Adapter", "load", "Sd3VaeDecoder"]

COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2")
TOKENIZERS = ("tokenizer", "tokenizer_2")
FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"


def config_has_null(model: dict) -> bool:
    """Whether the model has a null (unconditional) condition, from its config ``model`` section alone:
    always (the negative, empty prompt)."""
    return True


def inspect(spec: dict) -> dict:
    model = spec["model"]
    folder = resolve_path(model["path"])
    for name in COMPONENTS:
        component(folder, name)
    for name in TOKENIZERS:
        if not (folder / name).is_dir():
            raise FolderError(f"{folder}: lacks the component {name}/")
    t5 = [(folder / name).is_dir() for name in ("text_encoder_3", "tokenizer_3")]
    if t5[0] != t5[1]:
        raise FolderError(f"{folder}: has {'text_encoder_3' if t5[0] else 'tokenizer_3'}/ without "
                          f"{'tokenizer_3' if t5[0] else 'text_encoder_3'}/ (leave out both to drop T5)")
    cfg_path = folder / "transformer" / "config.json"
    cfg = read_json(cfg_path)
    if cfg.get("_class_name", "SD3Transformer2DModel") != "SD3Transformer2DModel":
        raise FolderError(f"{cfg_path}: holds a {cfg['_class_name']}, expected an SD3Transformer2DModel")
    sched_path = component(folder, "scheduler", "scheduler_config.json") / "scheduler_config.json"
    sched = read_json(sched_path)
    if sched.get("_class_name") != FLOW_SCHEDULER:
        raise FolderError(f"{sched_path}: _class_name: {sched.get('_class_name')!r} is not {FLOW_SCHEDULER} "
                          "(model.source sd3 samples a flow-matching model)")
    size, patch = int(cfg.get("sample_size", 128)), int(cfg.get("patch_size", 2))
    try:
        sigmas = flow_match_sigmas(sched, int(spec["sampling"]["steps"]), (size // patch) ** 2, str(sched_path))
    except ValueError as err:
        raise FolderError(str(err)) from None
    sigmas = sigmas[::-1]  # grid index 1 … S, from data towards noise
    path = PATHS["rectified_flow"]
    return {"folder": folder, "names": list(model["prompts"]), "negative_prompt": model.get("negative_prompt", ""),
            "has_null": config_has_null(spec["model"]), "prediction": path.prediction, "variance": "fixed",
            "sigmas": sigmas, "schedule": path_schedule(path, sigmas),
            "num_train_timesteps": int(sched.get("num_train_timesteps", 1000)),
            "t5": t5[0], "state_shape": (int(cfg.get("in_channels", 16)), size, size),
            "shift": float(sched.get("shift", 1.0)), "dynamic_shifting": bool(sched.get("use_dynamic_shifting"))}


class Sd3VaeDecoder(torch.nn.Module):
    """Latents -> images in [0, 1]: ``vae.decode(x / scaling_factor + shift_factor)`` mapped from [-1, 1] (as
    StableDiffusion3Pipeline does)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        cfg = self.vae.config
        return unit_range(self.vae.decode(x / cfg.scaling_factor + (cfg.shift_factor or 0.0)).sample)


class SD3Adapter(Adapter):
    """The transformer in the chain's VP units: ``forward(x_VP, t, cond)`` = v(x_VP sqrt((1 - s)^2 + s^2), s T,
    prompt cond) with s the sigma of grid index t (the network time is the index; the float64 tables map it)."""

    source = "sd3"
    latent = True
    variance = "fixed"

    def __init__(self, transformer, vae, embeddings: torch.Tensor, pooled: torch.Tensor, plan: dict):
        super().__init__()
        self.transformer = transformer
        self.decoder = Sd3VaeDecoder(vae)
        self.condition_names = tuple(plan["names"])
        self.negative_prompt = plan["negative_prompt"]
        self.has_null = True
        self.prediction = plan["prediction"]
        self.schedule = plan["schedule"]
        self.state_shape = tuple(plan["state_shape"])
        sigmas = np.concatenate([[0.0], plan["sigmas"]])  # grid index 0 … S
        self.register_buffer("timesteps", torch.as_tensor(sigmas * plan["num_train_timesteps"], dtype=torch.float64),
                             persistent=False)
        self.register_buffer("scales", torch.as_tensor(path_scale(PATHS["rectified_flow"], sigmas)),
                             persistent=False)
        self.register_buffer("embeddings", embeddings, persistent=False)  # (K + 1, L, D); row K = negative prompt
        self.register_buffer("pooled", pooled, persistent=False)  # (K + 1, P)
        self.plan = {k: plan[k] for k in ("shift", "dynamic_shifting", "t5")}
        self.check()

    def forward(self, x, t, cond):
        t = t.long()
        scale = self.scales[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return self.transformer(hidden_states=x * scale, timestep=self.timesteps[t].to(x.dtype),
                                encoder_hidden_states=self.embeddings[cond], pooled_projections=self.pooled[cond]).sample

    def decode(self, x):
        return self.decoder(x)

    def describe(self) -> dict:
        return super().describe() | {"network": "SD3Transformer2DModel", "negative_prompt": self.negative_prompt,
                                     "text_embedding_shape": list(self.embeddings.shape[1:]),
                                     "t5_encoder": self.plan["t5"], "shift": self.plan["shift"],
                                     "dynamic_shifting": self.plan["dynamic_shifting"],
                                     "timesteps": [float(self.timesteps[1]), float(self.timesteps[-1])]}


@torch.no_grad()
def encode_prompts(components: dict, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, L, D), pooled (N, P)) of ``prompts`` by ``StableDiffusion3Pipeline.encode_prompt`` itself
    (CLIP-L and CLIP-G hidden states joined, T5's or zeros, pooled CLIP vectors), without guidance."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**components)
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=device,
                                              do_classifier_free_guidance=False)
    return embeds, pooled


def _token_rows(parts: dict, prompts: list[str]) -> list[tuple]:
    """Each prompt's token ids under every tokenizer present, padded and truncated as the pipeline does (CLIP: the
    first tokenizer's model_max_length, T5: 256)."""
    length = parts["tokenizer"].model_max_length
    ids = [parts[name](prompts, padding="max_length", max_length=length, truncation=True).input_ids
           for name in ("tokenizer", "tokenizer_2")]
    if parts["tokenizer_3"] is not None:
        ids.append(parts["tokenizer_3"](prompts, padding="max_length", max_length=256, truncation=True).input_ids)
    return [tuple(tuple(rows[j]) for rows in ids) for j in range(len(prompts))]


def load(spec: dict, device) -> SD3Adapter:
    try:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel
    except ImportError:
        raise FolderError("Stable Diffusion 3 needs transformers: pip install -e \".[sd]\"") from None
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    plan = inspect(spec)
    folder = plan["folder"]
    parts = {"transformer": from_pretrained(SD3Transformer2DModel, folder, "transformer"),
             "vae": from_pretrained(AutoencoderKL, folder, "vae"),
             "scheduler": from_pretrained(FlowMatchEulerDiscreteScheduler, folder, "scheduler"),
             "text_encoder_3": None, "tokenizer_3": None}
    for j in ("", "_2"):
        parts[f"text_encoder{j}"] = from_pretrained(CLIPTextModelWithProjection, folder, f"text_encoder{j}").to(device)
        parts[f"tokenizer{j}"] = from_pretrained(CLIPTokenizer, folder, f"tokenizer{j}")
    if plan["t5"]:
        parts["text_encoder_3"] = from_pretrained(T5EncoderModel, folder, "text_encoder_3").to(device)
        parts["tokenizer_3"] = from_pretrained(AutoTokenizer, folder, "tokenizer_3")
    prompts = plan["names"] + [plan["negative_prompt"]]
    seen = {}
    for j, row in enumerate(_token_rows(parts, prompts)):
        if row in seen:
            key = "model.negative_prompt" if j == len(prompts) - 1 else f"model.prompts[{j}]"
            raise FolderError(f"{prompts[j]!r} and {prompts[seen[row]]!r} are the same token sequences for these "
                              "tokenizers: they would be one condition", key)
        seen[row] = j
    embeds, pooled = encode_prompts(parts, prompts, device)
    return SD3Adapter(parts["transformer"], parts["vae"], embeds.float(), pooled.float(), plan).to(device).eval()
