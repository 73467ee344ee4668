"""Entry point of a SiT network (willisma/SiT, Ma et al. 2024) for seminfo's python source with a velocity network:
``model.entry: workflow/configs/sit_entry.py:load``, ``model.prediction: velocity``, ``model.path_kind: linear`` and
``model.path`` the checkpoint (SiT-XL-2-256x256.pt, a state dict; a train.py checkpoint's "ema" entry is used).

The network class comes from the SiT repository (its models.py): put a checkout of it on PYTHONPATH. ``SiT.forward(x,
t, y)`` is already the interface seminfo.models.velocity expects (x the latent on SiT's path, t in [0, 1] with t = 0
noise, y the ImageNet class id, y = 1000 the label-dropout embedding, the learned-sigma channels dropped); the wrapper
adds img_channels, img_resolution and label_dim, and ``decode`` for the figures: the Stable Diffusion VAE that SiT's
sample.py uses (sd-vae-ft-mse), loaded from the local folder in $SIT_VAE (default models/sd-vae-ft-mse), x / 0.18215.
"""

import os

import torch


class SiTVelocity(torch.nn.Module):
    def __init__(self, net, vae_folder):
        super().__init__()
        self.net = net
        self.img_channels, self.img_resolution, self.label_dim = 4, 32, 1000
        self.vae_folder = vae_folder
        self.vae = None

    def forward(self, x, t, y):
        return self.net(x, t, y)

    @torch.no_grad()
    def decode(self, x):
        if self.vae is None:
            from diffusers import AutoencoderKL

            self.vae = AutoencoderKL.from_pretrained(self.vae_folder, local_files_only=True).to(x.device).eval()
        return ((self.vae.decode(x / 0.18215).sample + 1.0) / 2.0).clamp(0.0, 1.0)


def load(path):
    from models import SiT_models  # from the SiT checkout

    net = SiT_models["SiT-XL/2"](input_size=32, num_classes=1000, learn_sigma=True)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("ema", state))
    return SiTVelocity(net.eval(), os.environ.get("SIT_VAE", "models/sd-vae-ft-mse"))
