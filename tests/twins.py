"""Tiny random-weight twins of the pretrained models the adapters load, saved in their real layouts.

Each builder writes a folder with the library's own ``save_pretrained`` (``DDPMPipeline``, ``DiTPipeline``,
``StableDiffusionPipeline``), so the adapters load them through the same path as a downloaded model. ``class_scale``
scales the class embeddings (so that trajectories separate the classes); ``identical=True`` makes every condition
the same (equal embedding rows, or text embeddings that are all zero), so no step can carry information;
``out_scale`` scales the UNet's output layer (a large one makes a twin whose chain explodes at its first step).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

DIT_LABELS = {"0": "tench, Tinca tinca", "1": "goldfish, Carassius auratus", "2": "golden retriever",
              "3": "Labrador retriever", "4": "tabby, tabby cat", "5": "tiger cat"}

# The Gaussian-class denoiser of test_adapters / the python source: x0 | c ~ N(m_c, s^2 I), so
# D(x; sigma, c) = m_c + s^2 / (s^2 + sigma^2) (x - m_c) is exact.
GAUSS_MODULE = '''
import json
import torch


class GaussianClassDenoiser(torch.nn.Module):
    """D(x; sigma, c) = E[x0 | x, c] for x0 | c ~ N(m_c, s_c^2 I): exact, EDM's call signature."""

    def __init__(self, means, stds, shape):
        super().__init__()
        self.register_buffer("means", torch.tensor(means, dtype=torch.float64).view(len(means), *shape))
        self.register_buffer("var", torch.tensor(stds, dtype=torch.float64) ** 2)
        self.img_channels, self.img_resolution, self.label_dim = shape[0], shape[1], len(means)

    def forward(self, x, sigma, class_labels):
        labels = class_labels.double()
        m = torch.einsum("bk,k...->b...", labels, self.means)
        v = (labels @ self.var).view(-1, 1, 1, 1)
        s2 = sigma.double().view(-1, 1, 1, 1) ** 2
        return (m + v / (v + s2) * (x.double() - m)).float()


def load(path):
    with open(path) as fh:
        p = json.load(fh)
    return GaussianClassDenoiser(p["means"], p["stds"], p["shape"])
'''


# The Gaussian-class velocity network of the velocity path tests: x0 | c ~ N(m_c, s_c^2 I) on SiT's paths (t = 0 noise,
# t = 1 data), v(x, t, c) = alpha'(t) E[x0 | x, c] + sigma'(t) E[eps | x, c] is exact; label ``label_dim`` is the
# null condition, the uniform mixture's velocity (the class velocities weighted by P(c | x_t)).
VELOCITY_MODULE = '''
import json
import math
import torch


def coefficients(kind, t):
    if kind == "linear":
        return t, 1.0 - t, torch.ones_like(t), -torch.ones_like(t)
    h = math.pi / 2
    return torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t), -h * torch.sin(h * t)


class GaussianClassVelocity(torch.nn.Module):
    def __init__(self, means, stds, shape, kind):
        super().__init__()
        self.register_buffer("means", torch.tensor(means, dtype=torch.float64).view(len(means), *shape))
        self.register_buffer("var", torch.tensor(stds, dtype=torch.float64) ** 2)
        self.img_channels, self.img_resolution, self.label_dim = shape[0], shape[1], len(means)
        self.kind = kind

    def class_velocity(self, x, t, c):
        a, s, da, ds = (v.view(-1, 1, 1, 1) for v in coefficients(self.kind, t))
        m, var = self.means[c], self.var[c].view(-1, 1, 1, 1)
        x0 = m + a * var / (a * a * var + s * s) * (x - a * m)
        eps = (x - a * x0) / s
        return da * x0 + ds * eps

    def forward(self, x, t, y):
        x, t = x.double(), t.double()
        K = self.label_dim
        null = y == K
        out = self.class_velocity(x, t, y.clamp(max=K - 1))
        if null.any():
            xn, tn = x[null], t[null]
            a, s = (v.view(-1, 1, 1, 1, 1) for v in coefficients(self.kind, tn)[:2])
            var = a * a * self.var.view(1, K, 1, 1, 1) + s * s
            dev = xn[:, None] - a * self.means[None]
            log_lik = (-0.5 * dev**2 / var - 0.5 * torch.log(var)).flatten(2).sum(-1)
            w = torch.softmax(log_lik, dim=1)
            vel = torch.stack([self.class_velocity(xn, tn, torch.full_like(y[null], k)) for k in range(K)], 1)
            out[null] = (w.view(*w.shape, 1, 1, 1) * vel).sum(1)
        return out.float()


def load(path):
    with open(path) as fh:
        p = json.load(fh)
    return GaussianClassVelocity(p["means"], p["stds"], p["shape"], p["kind"])
'''


def _scheduler(prediction="epsilon", T=100, variance_type="fixed_small", **kw):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-3, beta_end=0.1,
                         prediction_type=prediction, variance_type=variance_type, **({"clip_sample": False} | kw))


def diffusers_twin(folder, prediction="epsilon", classes=3, null_label=None, class_scale=1.0, identical=False,
                   learned=False, scheduler_kw=None, seed=0, out_scale=1.0):
    """A DDPMPipeline folder with a class-conditional UNet2DModel on 1x8x8 images."""
    from diffusers import DDPMPipeline, UNet2DModel

    torch.manual_seed(seed)
    n_embeds = classes + (null_label is not None)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=2 if learned else 1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=n_embeds)
    with torch.no_grad():
        unet.class_embedding.weight.mul_(class_scale)
        if identical:
            unet.class_embedding.weight.copy_(unet.class_embedding.weight[:1].expand_as(unet.class_embedding.weight))
        unet.conv_out.weight.mul_(out_scale)
        unet.conv_out.bias.mul_(out_scale)
    sched = _scheduler(prediction, **({"variance_type": "learned_range" if learned else "fixed_small"}
                                      | (scheduler_kw or {})))
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return Path(folder)


def dit_twin(folder, class_scale=1.0, identical=False, seed=0):
    """A DiTPipeline folder: a 1-layer DiT with learned sigma on 4x8x8 latents, a 1-level VAE, 6 labelled classes."""
    from diffusers import DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=len(DIT_LABELS),
                                        norm_num_groups=4)
    with torch.no_grad():
        for block in transformer.transformer_blocks:
            table = block.norm1.emb.class_embedder.embedding_table.weight
            table.mul_(class_scale)
            if identical:
                table.copy_(table[:1].expand_as(table))
    vae = _tiny_vae()
    DiTPipeline(transformer=transformer, vae=vae, scheduler=_scheduler(variance_type="learned_range"),
                id2label=DIT_LABELS).save_pretrained(folder)
    # save_pretrained does not write id2label; the hub's DiT folders carry it in model_index.json, as here
    index = Path(folder) / "model_index.json"
    index.write_text(json.dumps(json.loads(index.read_text()) | {"id2label": DIT_LABELS}, indent=2))
    return Path(folder)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
                         down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         layers_per_block=1, norm_num_groups=4, sample_size=8)


def _tiny_tokenizer(folder, max_length=16):
    """A byte-level CLIP tokenizer written offline: every byte character with and without </w>, no merges."""
    from transformers import CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                         model_max_length=max_length), len(vocab)


def sd_twin(folder, identical=False, seed=0):
    """A StableDiffusionPipeline folder: tiny UNet2DConditionModel on 4x8x8 latents, CLIP text encoder, VAE."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer, vocab_size = _tiny_tokenizer(folder.parent / f"{folder.name}_tok")
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2,
                                                max_position_embeddings=16, bos_token_id=vocab_size - 2,
                                                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
    if identical:  # every prompt's last hidden state is zero: one condition under K names
        final = getattr(text_encoder, "text_model", text_encoder).final_layer_norm  # transformers 4 / 5 layouts
        with torch.no_grad():
            final.weight.zero_()
            final.bias.zero_()
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=2)
    sched = _scheduler(T=100, steps_offset=1)
    StableDiffusionPipeline(vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=sched, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


def gauss_twin(folder, means, stds, shape=(1, 8, 8)):
    """The python source's entry file and its parameter file: returns (entry, path) for the config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gauss_denoiser.py").write_text(GAUSS_MODULE)
    means = np.asarray(means, dtype=np.float64)
    if means.ndim == 1:
        means = np.repeat(means[:, None], int(np.prod(shape)), axis=1)
    (folder / "params.json").write_text(json.dumps({"means": means.tolist(), "stds": list(map(float, stds)),
                                                    "shape": list(shape)}))
    return f"{folder / 'gauss_denoiser.py'}:load", str(folder / "params.json")


def velocity_twin(folder, means, stds, kind="linear", shape=(1, 8, 8)):
    """The python source's velocity entry file and its parameter file: returns (entry, path) for the config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gauss_velocity.py").write_text(VELOCITY_MODULE)
    means = np.asarray(means, dtype=np.float64)
    if means.ndim == 1:
        means = np.repeat(means[:, None], int(np.prod(shape)), axis=1)
    (folder / "params.json").write_text(json.dumps({"means": means.tolist(), "stds": list(map(float, stds)),
                                                    "shape": list(shape), "kind": kind}))
    return f"{folder / 'gauss_velocity.py'}:load", str(folder / "params.json")


def _tiny_t5_tokenizer():
    """A T5 (unigram) tokenizer written offline: the printable ASCII characters, with and without the word marker."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(32, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in chars] + [
        ("\u2581" + c, -1.5) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def sd3_twin(folder, identical=False, t5=True, seed=0, scheduler_kw=None):
    """A StableDiffusion3Pipeline folder: a 1-layer SD3Transformer2DModel on 4x8x8 latents, two tiny CLIP text encoders
    with projection, a tiny T5 encoder (left out with ``t5=False``, as a user who drops T5 does), a 1-level VAE with a
    shift_factor, FlowMatchEulerDiscreteScheduler with shift 3. ``identical``: every token embeds alike and the pooled
    projections are zero, so every prompt has the same embedding."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    folder = Path(folder)
    parts = {}
    for j in ("", "_2"):
        tokenizer, vocab_size = _tiny_tokenizer(folder.parent / f"{folder.name}_tok{j}")
        encoder = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=16, projection_dim=16, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1))
        if identical:
            with torch.no_grad():
                table = encoder.text_model.embeddings.token_embedding.weight
                table.copy_(table[:1].expand_as(table))
                encoder.text_projection.weight.zero_()
        parts[f"text_encoder{j}"], parts[f"tokenizer{j}"] = encoder, tokenizer
    parts["text_encoder_3"] = parts["tokenizer_3"] = None
    if t5:
        tokenizer = _tiny_t5_tokenizer()
        encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=32, num_layers=1,
                                          num_heads=2, decoder_start_token_id=0))
        if identical:
            with torch.no_grad():
                encoder.shared.weight.copy_(encoder.shared.weight[:1].expand_as(encoder.shared.weight))
        parts["text_encoder_3"], parts["tokenizer_3"] = encoder, tokenizer
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                        pooled_projection_dim=32, out_channels=4, pos_embed_max_size=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        layers_per_block=1, norm_num_groups=4, sample_size=8, shift_factor=0.0609,
                        scaling_factor=1.5035)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, **(scheduler_kw or {}))
    StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, **parts).save_pretrained(folder)
    return folder
