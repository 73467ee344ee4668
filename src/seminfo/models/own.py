"""The project's own class-conditional UNet (``seminfo.ddpm``), trained by rule ddpm_train: labels 0 … K-1 and the
null label K (trained by label dropout), eps-prediction, the experiment's schedule, the chain's step as time input."""

from __future__ import annotations

from ..chain.schedules import Schedule
from ..ddpm.checkpoint import CheckpointError, load_model
from ..ddpm.model import resolve_arch
from .base import NetworkAdapter

__all__ = ["own_adapter", "check_model_matches"]


def check_model_matches(spec: dict, record: dict, path) -> None:
    """Refuse a checkpoint whose architecture or schedule differs from the experiment's config."""
    arch = resolve_arch({k: v for k, v in spec["model"].items() if k != "source"})
    if record["arch"] != arch:
        differs = sorted(k for k in arch if record["arch"].get(k) != arch[k])
        raise CheckpointError(f"{path}: architecture differs from the config in {differs}; delete it to retrain")
    sched = {"name": spec["schedule"]["name"], "T": spec["schedule"]["T"]}
    if record.get("schedule") != sched:
        raise CheckpointError(f"{path}: trained with schedule {record.get('schedule')}, the config has {sched}")


def own_adapter(spec: dict, model_path, schedule: Schedule, device) -> NetworkAdapter:
    """Load the trained checkpoint of an experiment and check it against the experiment's config."""
    net, record = load_model(model_path, map_location=device)
    check_model_matches(spec, record, model_path)
    K = record["num_classes"]
    names = record.get("class_names") or [str(k) for k in range(K)]
    return NetworkAdapter(net, schedule, names, net.image_shape, has_null=True, source="own").to(device).eval()
