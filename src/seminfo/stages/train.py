"""Stage function of rule ddpm_train: train the class-conditional DDPM of an experiment (the ``own`` model source)."""

from __future__ import annotations

import logging

from ..chain.schedules import schedule_from_spec
from ..ddpm.data import load_images
from ..ddpm.model import resolve_arch
from ..ddpm.train import train
from .network import device

log = logging.getLogger(__name__)

__all__ = ["train_model"]


def train_model(spec: dict, experiment: str, model_path, work_dir) -> None:
    """Train the class-conditional DDPM of an experiment (rule ddpm_train)."""
    data = load_images(spec["data"])
    arch = resolve_arch({k: v for k, v in spec["model"].items() if k != "source"})
    stats = train(data, arch, spec["train"], schedule_from_spec(spec), model_path, work_dir, device=device())
    log.info("training: %s", stats)
