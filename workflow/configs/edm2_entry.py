"""Entry point of an EDM2 network (NVlabs/edm2) for seminfo's python source:
``model.entry: workflow/configs/edm2_entry.py:load`` with ``model.path`` the network pickle.

The pickle refers to the modules of the EDM2 repository (dnnlib, torch_utils, training): put a checkout of it on
PYTHONPATH. Unpickling runs code: use trusted files only. The returned network is EDM2's ``Precond``, whose
``forward(x, sigma, class_labels)`` (one-hot labels), ``img_channels``, ``img_resolution`` and ``label_dim`` are what
seminfo.models.sigma_denoiser expects; ``decode`` is added for the figures: the pickle's latent encoder (the
Stability VAE with EDM2's scaling) turns x_0 latents into uint8 pixels, divided here by 255.
"""

import pickle


def load(path):
    import dnnlib  # from the EDM2 checkout

    with open(path, "rb") as fh:
        data = pickle.load(fh)
    net = data["ema"].eval()
    encoder = data.get("encoder") or dnnlib.util.construct_class_by_name(
        class_name="training.encoders.StandardRGBEncoder")
    net.decode = lambda x: encoder.decode(x).float() / 255.0
    return net
