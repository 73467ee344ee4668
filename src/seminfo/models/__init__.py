"""Model adapters: every diffusion model the sampler can measure, behind one small protocol (``base.Adapter``).

``load_adapter(spec, model_path, device)`` builds the adapter an experiment's ``model.source`` names:

- ``own`` (the default): the class-conditional UNet trained by rule ddpm_train (``own``)
"""

from __future__ import annotations

from ..stages import schedule_from_spec
from .base import PREDICTIONS, VARIANCES, Adapter, NetworkAdapter

__all__ = ["PREDICTIONS", "VARIANCES", "Adapter", "NetworkAdapter", "SOURCES", "model_source", "load_adapter"]

SOURCES = ("own",)


def model_source(spec: dict) -> str:
    """The ``model.source`` of an experiment (absent: 'own')."""
    return spec.get("model", {}).get("source", "own")


def load_adapter(spec: dict, model_path, device) -> Adapter:
    """The adapter of an experiment's model, on ``device`` and in eval mode.

    ``model_path``: for ``own``, the trained checkpoint (model.safetensors).
    """
    source = model_source(spec)
    if source == "own":
        from .own import own_adapter

        return own_adapter(spec, model_path, schedule_from_spec(spec), device)
    raise ValueError(f"unknown model source {source!r} (expected one of {SOURCES})")
