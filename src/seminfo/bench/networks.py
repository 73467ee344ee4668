"""Random-weight networks of the size of published models, for throughput and precision measurements.

What a sampling run costs, and how much rounding noise a reduced precision adds to a network's output, depend on the
architecture and the state size, not on trained weights. Each network here has the layout of a public checkpoint
(the layouts ``seminfo.bench.flops`` counts), random weights, and the sampler's protocol ``net(x, t, label)``: labels
0 … K-1 are the conditions and K the null one, the chain's integer time is the time input. Its native output is the
epsilon prediction (DiT's learned-variance channels are dropped: they cost nothing extra to compute).

    digits         the project's own digits UNet, 1x8x8 (the default experiment's network)
    cifar10_ddpm   the DDPM-paper CIFAR10 UNet (the project's own preset), 3x32x32, class embedding
    dit_xl2_256    DiT-XL/2 at 256 px, 4x32x32 latents, ImageNet class ids (the null id 1000)
    sd15_unet      the Stable Diffusion 1.5 UNet, 4x64x64 latents, one fixed random 77x768 context per condition
    sd3_medium     the Stable Diffusion 3 medium transformer at 1024 px, 16x128x128 latents, a fixed random 333x4096
                   context and 2048-d pooled vector per condition; its time input is the flow time x 1000

``PAPER_SCALE`` gives, for each, the size of a full run (the project's config for it: trajectories, conditions,
steps, schedule), used for wall-time estimates and for the precision bias (``seminfo.chain.precision``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["NETWORKS", "PAPER_SCALE", "PaperScale", "build_network"]


@dataclass(frozen=True)
class PaperScale:
    """A full run of a network: its config in ``workflow/configs`` (or the paper's CIFAR10 run)."""

    trajectories: int  # all classes together
    conditions: int
    steps: int
    schedule: dict  # ``seminfo.chain.schedules.schedule_from_scheduler_config`` keys
    config: str

    @property
    def evaluations(self) -> int:
        return self.trajectories * self.conditions * self.steps


_LINEAR = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
_SCALED = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
PAPER_SCALE = {
    "digits": PaperScale(200, 10, 100, _LINEAR, "config.yaml (digits)"),
    "cifar10_ddpm": PaperScale(1000, 10, 1000, _LINEAR, "Handke et al. (2025): 1000 trajectories x 10 classes"),
    "dit_xl2_256": PaperScale(1000, 10, 250, _LINEAR, "workflow/configs/dit_imagenet.yaml"),
    "sd15_unet": PaperScale(200, 4, 250, _SCALED, "workflow/configs/stable_diffusion.yaml"),
    "sd3_medium": PaperScale(200, 4, 50, _LINEAR, "no source yet: 4 prompts, 50 steps (throughput only)"),
}


class _ClassUNet(torch.nn.Module):
    def __init__(self, num_classes: int, preset: str, shape):
        super().__init__()
        from ..ddpm.model import ClassConditionalUNet, resolve_arch

        self.net = ClassConditionalUNet(resolve_arch({"preset": preset}), shape, num_classes)

    def forward(self, x, t, y):
        return self.net(x, t, y)


class _DiT(torch.nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        from .flops import _dit_xl2_256

        self.net = _dit_xl2_256()[0]()
        ids = torch.arange(num_classes + 1) * (1000 // max(num_classes, 1)) % 1000
        ids[-1] = 1000  # DiT's null class
        self.register_buffer("ids", ids, persistent=False)

    def forward(self, x, t, y):
        return self.net(x, timestep=t, class_labels=self.ids[y]).sample[:, :4]


class _PromptNetwork(torch.nn.Module):
    """A text-conditioned network with one fixed random context (and pooled vector) per condition."""

    def __init__(self, num_classes: int, tokens: int, width: int, pooled: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        context = torch.randn(num_classes + 1, tokens, width, generator=g, device="cpu")
        pooled = torch.randn(num_classes + 1, max(pooled, 1), generator=g, device="cpu")
        self.register_buffer("context", context.to(torch.get_default_device()), persistent=False)
        self.register_buffer("pooled", pooled.to(torch.get_default_device()), persistent=False)


class _SD15(_PromptNetwork):
    def __init__(self, num_classes: int):
        super().__init__(num_classes, 77, 768)
        from .flops import _sd15_unet

        self.net = _sd15_unet()[0]()

    def forward(self, x, t, y):
        return self.net(x, t, encoder_hidden_states=self.context[y]).sample


class _SD3(_PromptNetwork):
    def __init__(self, num_classes: int):
        super().__init__(num_classes, 333, 4096, 2048)
        from diffusers import SD3Transformer2DModel

        # stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json
        self.net = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                         attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                         caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                         pos_embed_max_size=192)

    def forward(self, x, t, y):
        return self.net(hidden_states=x, encoder_hidden_states=self.context[y], pooled_projections=self.pooled[y],
                        timestep=t.float()).sample


NETWORKS = {"digits": (lambda k: _ClassUNet(k, "digits", (1, 8, 8)), (1, 8, 8)),
            "cifar10_ddpm": (lambda k: _ClassUNet(k, "cifar10_ddpm", (3, 32, 32)), (3, 32, 32)), "dit_xl2_256": (_DiT, (4, 32, 32)),
            "sd15_unet": (_SD15, (4, 64, 64)), "sd3_medium": (_SD3, (16, 128, 128))}


def build_network(name: str, num_classes: int, device) -> torch.nn.Module:
    """The named network with random weights (seed 0) on ``device``, in eval mode; ``image_shape`` and
    ``num_classes`` set as on the project's own UNet."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r} (expected one of {sorted(NETWORKS)})")
    make, shape = NETWORKS[name]
    torch.manual_seed(0)
    with torch.device(device):
        net = make(num_classes)
    net.image_shape, net.num_classes = shape, num_classes
    return net.eval()
