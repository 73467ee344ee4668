"""The class-conditional ε-prediction network: a diffusers ``UNet2DModel`` with a learned class embedding.

Labels 0 … K-1 are the classes and label K is the null (unconditional) class, trained by label dropout
so that the same network gives eps(x_t, t, y) and eps(x_t, t, ∅). The class embedding is added to the
timestep embedding (``num_class_embeds = K + 1``).

An architecture is a plain dict (JSON-safe, stored in checkpoints):

    block_out_channels     channels of each resolution level; level i has resolution H / 2**i
    layers_per_block       residual blocks per level on the way down (the way up has one more)
    attention_resolutions  spatial sizes (e.g. [16]) whose levels get self-attention
    mid_attention          self-attention in the middle block (at the lowest resolution)
    attention_head_dim     channels per attention head; None for one head over all channels
    dropout                dropout in the residual blocks
    norm_num_groups        GroupNorm groups; must divide every channel count
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

__all__ = ["ARCH_PRESETS", "resolve_arch", "ClassConditionalUNet", "count_parameters"]

ARCH_PRESETS = {
    # ~1.0 M parameters for 8×8 grey digits: two levels (8×8, 4×4), attention only at 4×4.
    "digits": {
        "block_out_channels": [32, 64],
        "layers_per_block": 2,
        "attention_resolutions": [4],
        "mid_attention": True,
        "attention_head_dim": None,
        "dropout": 0.0,
        "norm_num_groups": 16,
    },
    # The CIFAR-10 network of Ho et al. (2020), appendix B: 35.7 M parameters.
    "cifar10_ddpm": {
        "block_out_channels": [128, 256, 256, 256],
        "layers_per_block": 2,
        "attention_resolutions": [16],
        "mid_attention": True,
        "attention_head_dim": None,
        "dropout": 0.1,
        "norm_num_groups": 32,
    },
}
ARCH_KEYS = tuple(ARCH_PRESETS["digits"])


def resolve_arch(model_cfg: dict) -> dict:
    """``{"preset": name, **overrides}`` → the full architecture dict, checked and JSON-safe."""
    cfg = dict(model_cfg)
    preset = cfg.pop("preset", None)
    if preset not in ARCH_PRESETS:
        raise ValueError(f"model config needs 'preset', one of {sorted(ARCH_PRESETS)}; got {preset!r}")
    unknown = sorted(set(cfg) - set(ARCH_KEYS))
    if unknown:
        raise ValueError(f"unknown architecture key {unknown[0]!r} (known: preset, {', '.join(ARCH_KEYS)})")
    return check_arch({**ARCH_PRESETS[preset], **cfg})


def check_arch(arch: dict) -> dict:
    """Validate an architecture dict and return it normalised (lists of ints, floats, bools)."""
    missing = sorted(set(ARCH_KEYS) - set(arch))
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if missing or unknown:
        raise ValueError(f"architecture keys: missing {missing}, unknown {unknown}")
    channels = [int(c) for c in arch["block_out_channels"]]
    groups = int(arch["norm_num_groups"])
    head_dim = arch["attention_head_dim"]
    if not channels or min(channels) < 1:
        raise ValueError(f"block_out_channels must be positive, got {channels}")
    if groups < 1 or any(c % groups for c in channels):
        raise ValueError(f"norm_num_groups={groups} must divide every channel count {channels}")
    if head_dim is not None and any(c % int(head_dim) for c in channels):
        raise ValueError(f"attention_head_dim={head_dim} must divide every channel count {channels}")
    if int(arch["layers_per_block"]) < 1:
        raise ValueError(f"layers_per_block must be >= 1, got {arch['layers_per_block']}")
    if not 0.0 <= float(arch["dropout"]) < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {arch['dropout']}")
    return {
        "block_out_channels": channels,
        "layers_per_block": int(arch["layers_per_block"]),
        "attention_resolutions": sorted({int(r) for r in arch["attention_resolutions"]}, reverse=True),
        "mid_attention": bool(arch["mid_attention"]),
        "attention_head_dim": None if head_dim is None else int(head_dim),
        "dropout": float(arch["dropout"]),
        "norm_num_groups": groups,
    }


def _level_resolutions(arch: dict, image_shape) -> list[int]:
    """Spatial size of each level; every level but the last halves the size, so it must stay integral."""
    _, height, width = image_shape
    if height != width:
        raise ValueError(f"images must be square, got {height}×{width}")
    levels = len(arch["block_out_channels"])
    if height % 2 ** (levels - 1):
        raise ValueError(f"image size {height} is not divisible by 2**{levels - 1} for {levels} levels")
    resolutions = [height // 2**i for i in range(levels)]
    stray = sorted(set(arch["attention_resolutions"]) - set(resolutions))
    if stray:
        raise ValueError(f"attention_resolutions {stray} match no level (level resolutions: {resolutions})")
    return resolutions


class ClassConditionalUNet(torch.nn.Module):
    """eps_theta(x_t, t, y) for images of ``image_shape`` and classes 0 … K-1 plus the null label K."""

    def __init__(self, arch: dict, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch = check_arch(arch)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.null_label = self.num_classes
        resolutions = _level_resolutions(self.arch, self.image_shape)
        attention = [r in self.arch["attention_resolutions"] for r in resolutions]
        channels = self.image_shape[0]
        self.unet = UNet2DModel(
            sample_size=self.image_shape[1],
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(self.arch["block_out_channels"]),
            layers_per_block=self.arch["layers_per_block"],
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            add_attention=self.arch["mid_attention"],
            attention_head_dim=self.arch["attention_head_dim"],
            dropout=self.arch["dropout"],
            norm_num_groups=self.arch["norm_num_groups"],
            num_class_embeds=self.num_classes + 1,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Predicted noise for ``x`` (B, C, H, W) at steps ``t`` (B,) in 1 … T with ``labels`` (B,) in 0 … K."""
        return self.unet(x, t, class_labels=labels).sample


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
