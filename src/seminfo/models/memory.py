"""Source ``memory``: an adapter object already in memory (e.g. a network defined in a notebook), by name.

``seminfo.measure`` registers the adapter it is given under a name, which becomes the experiment's ``model.path``;
the stages then reach it through ``inspect`` and ``load`` like any folder's model. A config file cannot hold an
object, so in the workflow every ``memory`` model fails ``check_sources`` (nothing is registered in its process).
"""

from __future__ import annotations

from contextlib import contextmanager

from .base import Adapter
from .folders import FolderError

__all__ = ["register", "registered", "inspect", "load"]

_ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter, name: str | None = None) -> str:
    """Register ``adapter`` under ``name`` (default: its class name, numbered when taken); returns the name."""
    adapter.check()
    base = name or type(adapter).__name__
    key, n = base, 1
    while key in _ADAPTERS and _ADAPTERS[key] is not adapter:
        n += 1
        key = f"{base}-{n}"
    _ADAPTERS[key] = adapter
    return key


@contextmanager
def registered(adapter: Adapter, name: str | None = None):
    """``register`` for the duration of a block, then forget the adapter."""
    key = register(adapter, name)
    try:
        yield key
    finally:
        _ADAPTERS.pop(key, None)


def _adapter(spec: dict) -> Adapter:
    key = spec["model"]["path"]
    if key not in _ADAPTERS:
        raise FolderError(f"no adapter in memory under {key!r}: model.source memory is an object handed to "
                          "seminfo.measure, not something a config file can name")
    return _ADAPTERS[key]


def inspect(spec: dict) -> dict:
    """What the sampler and the checks need to know of the registered adapter (as a folder's ``inspect`` says)."""
    model = _adapter(spec)
    return {"folder": spec["model"]["path"], "names": list(model.condition_names), "has_null": bool(model.has_null),
            "schedule": model.schedule, "state_shape": tuple(model.state_shape), "prediction": model.prediction,
            "variance": model.variance, "timestep_spacing": model.timestep_spacing,
            "steps_offset": int(model.steps_offset)}


def load(spec: dict, device) -> Adapter:
    """The registered adapter, on ``device`` and in eval mode (moved in place, as ``torch.nn.Module.to`` does)."""
    return _adapter(spec).to(device).eval()
