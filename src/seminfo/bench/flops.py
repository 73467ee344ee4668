"""FLOPs of one network evaluation of the architectures in workflow/configs, for the cost estimates there.

    python -m seminfo.bench.flops [--edm2 PATH/TO/NVlabs-edm2-checkout]

Each network is built with random weights on PyTorch's meta device (shapes only: no memory, no weights
downloaded) from the architecture of the public checkpoint, and one forward pass at batch size 1 is counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, 2 FLOPs per multiply-add; the
elementwise work it does not count is a few per cent). EDM2 networks need the code of their repository
(``--edm2``), which is only imported, never copied. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "ARCHITECTURES", "main"]


def count_flops(build, inputs) -> int:
    """FLOPs of ``build()(*inputs())`` at the given shapes, on the meta device."""
    with torch.device("meta"):
        net = build().eval()
        args = inputs()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(*args)
    return int(counter.get_total_flops())


def _dit_xl2_256():
    from diffusers import DiTTransformer2DModel

    # facebook/DiT-XL-2-256 transformer/config.json: 28 layers, 16 heads x 72, patch 2, 4x32x32 latents, learned sigma
    net = lambda: DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4,  # noqa: E731
                                        out_channels=8, num_layers=28, sample_size=32, patch_size=2,
                                        num_embeds_ada_norm=1000)
    return net, lambda: (torch.randn(1, 4, 32, 32), torch.tensor([500]), torch.tensor([207]))


def _sd15_unet():
    from diffusers import UNet2DConditionModel

    # runwayml/stable-diffusion-v1-5 unet/config.json: the defaults of UNet2DConditionModel with a 768-dim context
    net = lambda: UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # noqa: E731
    return net, lambda: (torch.randn(1, 4, 64, 64), torch.tensor([500]), torch.randn(1, 77, 768))


def _vae_decoder(size: int):
    from diffusers import AutoencoderKL

    # the Stable Diffusion VAE (also DiT's sd-vae-ft-ema): 4 latent channels, 8x downsampling
    class Decode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                                     down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4, sample_size=size)

        def forward(self, z):
            return self.vae.decode(z).sample

    return Decode, lambda: (torch.randn(1, 4, size // 8, size // 8),)


def _cifar_unet():
    from diffusers import UNet2DModel

    # the DDPM CIFAR10 UNet (google/ddpm-cifar10-32's layout) with a class embedding of 10 classes + null label
    net = lambda: UNet2DModel(sample_size=32, block_out_channels=(128, 256, 256, 256), layers_per_block=2,  # noqa: E731
                              down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                              up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                              num_class_embeds=11)
    return net, lambda: (torch.randn(1, 3, 32, 32), torch.tensor([500]), torch.tensor([3]))


def _clip_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    # openai/clip-vit-large-patch14's text tower (SD 1.5's text_encoder)
    net = lambda: CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,  # noqa: E731
                                               num_attention_heads=12, projection_dim=768))
    return net, lambda: (torch.zeros(1, 77, dtype=torch.long),)


def _sd35_medium():
    from diffusers import SD3Transformer2DModel

    # stabilityai/stable-diffusion-3.5-medium transformer/config.json (MMDiT-X: dual attention in layers 0-12, RMS
    # q/k norm), 16x128x128 latents at 1024 px; context 77 CLIP + 256 T5 tokens of width 4096, pooled 2048
    net = lambda: SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,  # noqa: E731
                                        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                        caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                        pos_embed_max_size=384, dual_attention_layers=tuple(range(13)),
                                        qk_norm="rms_norm")
    return net, lambda: (torch.randn(1, 16, 128, 128), torch.randn(1, 333, 4096), torch.randn(1, 2048),
                         torch.tensor([500.0]))


def _sd3_vae_decoder_1024():
    from diffusers import AutoencoderKL

    # the Stable Diffusion 3 VAE: 16 latent channels, 8x downsampling, no quant convs
    class Decode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=16, layers_per_block=2,
                                     down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
                                     use_quant_conv=False, use_post_quant_conv=False)

        def forward(self, z):
            return self.vae.decode(z).sample

    return Decode, lambda: (torch.randn(1, 16, 128, 128),)


def _clip_g_text():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    # laion CLIP-ViT-bigG-14's text tower (SD3's text_encoder_2): width 1280, 32 layers
    net = lambda: CLIPTextModelWithProjection(CLIPTextConfig(  # noqa: E731
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280,
        hidden_act="gelu"))
    return net, lambda: (torch.zeros(1, 77, dtype=torch.long),)


def _t5_xxl_encoder():
    from transformers import T5Config, T5EncoderModel

    # google/t5-v1_1-xxl's encoder (SD3's text_encoder_3) on the pipeline's 256 tokens
    net = lambda: T5EncoderModel(T5Config(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,  # noqa: E731
                                          feed_forward_proj="gated-gelu", vocab_size=32128))
    return net, lambda: (torch.zeros(1, 256, dtype=torch.long),)


ARCHITECTURES = {
    "dit_xl2_256": _dit_xl2_256,
    "sd15_unet": _sd15_unet,
    "sd_vae_decoder_256": lambda: _vae_decoder(256),
    "sd_vae_decoder_512": lambda: _vae_decoder(512),
    "cifar10_class_unet": _cifar_unet,
    "clip_text_encoder": _clip_text,
    "sd35_medium_transformer": _sd35_medium,
    "sd3_vae_decoder_1024": _sd3_vae_decoder_1024,
    "clip_g_text_encoder": _clip_g_text,
    "t5_xxl_encoder_256": _t5_xxl_encoder,
}


def _edm2_xs(repo: str):
    sys.path.insert(0, repo)
    from training.networks_edm2 import Precond  # noqa: E402 - the user's checkout of NVlabs/edm2

    # edm2-img512-xs: model_channels 128 on 4x64x64 latents, 1000 classes
    net = lambda: Precond(img_resolution=64, img_channels=4, label_dim=1000, model_channels=128)  # noqa: E731
    return net, lambda: (torch.randn(1, 4, 64, 64), torch.full((1,), 1.0), torch.eye(1000)[:1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edm2", help="a checkout of NVlabs/edm2 to count edm2-img512-xs too")
    args = parser.parse_args(argv)
    out = {}
    for name, make in ARCHITECTURES.items():
        try:
            out[name] = count_flops(*make())
        except ImportError as err:  # transformers is optional
            out[name] = f"skipped ({err})"
    if args.edm2:
        out["edm2_img512_xs"] = count_flops(*_edm2_xs(args.edm2))
    gflops = {k: (round(v / 1e9, 2) if isinstance(v, int) else v) for k, v in out.items()}
    print(json.dumps({"gflop_per_evaluation_batch_1": gflops}))
    return out


if __name__ == "__main__":
    main()
