"""Local model folders: where a pretrained model's files are, what they say, and a fingerprint of them.

Everything here reads files only (JSON configurations, file listings), so that ``seminfo.models.check_sources`` can
check every pretrained experiment before any job runs; loading the weights is the adapters' job. Problems are
``FolderError``s whose message names the file and what is wrong; the config check prefixes the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

__all__ = ["FolderError", "HUB_ID", "resolve_path", "component", "read_json", "fingerprint", "scheduler_schedule",
           "scheduler_sampling", "from_pretrained"]

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class FolderError(ValueError):
    """A model folder that is missing, incomplete or holds something the adapter cannot use; ``key`` is the config
    key (below ``experiments.<name>``) it concerns."""

    def __init__(self, message: str, key: str = "model.path"):
        super().__init__(message)
        self.key = key


def resolve_path(path: str, want_dir: bool = True) -> Path:
    """The local folder (or, with ``want_dir=False``, file or folder) ``model.path`` names.

    A hub id (``org/name`` that is not an existing path) gets one message saying how to download it first: models
    are only ever loaded from local folders, with hub access off.
    """
    p = Path(path).expanduser()
    if p.exists():
        if want_dir and not p.is_dir():
            raise FolderError(f"{path!r} is a file, expected the model's folder")
        return p
    if HUB_ID.match(str(path)):
        raise FolderError(f"{path!r} is not a local folder (models load from local folders only, hub access off); "
                          f"download it first, e.g. `hf download {path} --local-dir models/{path.split('/')[-1]}` "
                          "(older huggingface_hub: huggingface-cli download), and set model.path to that folder")
    raise FolderError(f"{path!r} does not exist")


def component(folder: Path, name: str, config_file: str = "config.json") -> Path:
    """``folder/name`` with its configuration file, or a FolderError naming what is missing."""
    sub = folder / name
    if not (sub / config_file).is_file():
        raise FolderError(f"{folder}: lacks the component {name}/ ({sub / config_file} not found)")
    return sub


def read_json(path: Path) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise FolderError(f"{path}: not found") from None
    except (OSError, ValueError) as err:
        raise FolderError(f"{path}: cannot be read as JSON ({err})") from None
    if not isinstance(data, dict):
        raise FolderError(f"{path}: expected a JSON object")
    return data


def scheduler_schedule(folder: Path):
    """(schedule, scheduler config, its path) from ``folder/scheduler/scheduler_config.json`` (float64)."""
    from ..chain.schedules import schedule_from_scheduler_config

    path = component(folder, "scheduler", "scheduler_config.json") / "scheduler_config.json"
    config = read_json(path)
    try:
        return schedule_from_scheduler_config(config, str(path)), config, path
    except ValueError as err:
        raise FolderError(str(err)) from None


def scheduler_sampling(config: dict, path) -> dict:
    """How the folder's pipeline samples, from its scheduler configuration: ``timestep_spacing`` (diffusers' default
    'leading' when absent), ``steps_offset`` (default 0), ``clipping`` (``seminfo.chain.clipping``; None when the
    scheduler neither clips nor thresholds x̂_0) and ``chain_variance``, the fixed step variance its ``variance_type``
    names: 'large' (beta) for fixed_large / fixed_large_log, else 'small' (beta-tilde, diffusers' default)."""
    from ..chain.clipping import clipping_from_scheduler_config

    spacing = config.get("timestep_spacing") or "leading"
    if spacing not in ("leading", "trailing", "linspace"):
        raise FolderError(f"{path}: timestep_spacing: {spacing!r} is not one diffusers' set_timesteps knows (leading, "
                          "trailing, linspace)")
    offset = config.get("steps_offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise FolderError(f"{path}: steps_offset: must be an integer >= 0, got {offset!r}")
    try:
        clipping = clipping_from_scheduler_config(config, str(path))
    except ValueError as err:
        raise FolderError(str(err)) from None
    large = config.get("variance_type") in ("fixed_large", "fixed_large_log")
    return {"timestep_spacing": spacing, "steps_offset": offset, "clipping": clipping,
            "chain_variance": "large" if large else "small"}


def fingerprint(path) -> dict:
    """sha256 over every file of a model folder (or one file): relative names, sizes and contents.

    Recorded in adapter.json, so that replacing a model's files is visible in what sampling depends on.
    """
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    total, digest = 0, hashlib.sha256()
    for f in files:
        name = f.relative_to(root).as_posix() if root.is_dir() else f.name
        size = f.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        total += size
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": total}


def from_pretrained(cls, folder: Path, subfolder: str, **kwargs):
    """``cls.from_pretrained(folder, subfolder=…, local_files_only=True)``; a failure is one FolderError line."""
    try:
        return cls.from_pretrained(str(folder), subfolder=subfolder, local_files_only=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - diffusers and transformers raise many types; report one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FolderError(f"{folder / subfolder}: cannot be loaded as {cls.__name__} ({first})") from None
