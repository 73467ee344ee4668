import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def schema():
    from seminfo.config import load_schema

    return load_schema(SCHEMA)


def tiny_class_unet(class_scale: float = 1.0):
    """A 4-class UNet on 1x8x8 images with random weights (seed 0), small enough for sampler tests, as the sampler
    sees it (an adapter with the null label 4 and the linear T = 1000 schedule; the network is its ``net``).

    ``class_scale`` > 1 scales the class embeddings up, so that trajectories separate the classes."""
    import torch

    from seminfo.chain.schedules import make_schedule
    from seminfo.ddpm.model import ClassConditionalUNet
    from seminfo.models import NetworkAdapter

    torch.manual_seed(0)
    arch = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention_resolutions": [], "mid_attention": False,
            "attention_head_dim": None, "dropout": 0.0, "norm_num_groups": 4}
    model = ClassConditionalUNet(arch, (1, 8, 8), 4).eval()
    with torch.no_grad():
        model.unet.class_embedding.weight.mul_(class_scale)
    return NetworkAdapter(model, make_schedule("linear", 1000), [str(k) for k in range(4)], (1, 8, 8), has_null=True)


@pytest.fixture(scope="module")
def tiny_unet():
    return tiny_class_unet()


@pytest.fixture(scope="module")
def decisive_unet():
    """The tiny UNet with its class embeddings scaled up, so that trajectories separate the classes."""
    return tiny_class_unet(3.0)
