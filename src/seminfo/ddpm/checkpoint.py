"""Checkpoints that load without unpickling: tensors in safetensors, everything else in JSON.

A model checkpoint is a pair ``<name>.safetensors`` (the state_dict) + ``<name>.json`` (architecture,
image shape, class count, caller metadata and the sha256 of the safetensors file). The safetensors file
is written first and the JSON last, each to a temporary file renamed into place, so the JSON acts as the
commit record: an interrupted save leaves either no JSON or a JSON whose hash does not match, and
``load_model`` refuses both.

A training state (for resuming) is a directory ``step_<step>/`` holding ``state.safetensors`` (model,
EMA, optimizer tensors, RNG states) and ``state.json`` (step, the optimizer's non-tensor state, extras,
hash). It is written under a temporary name and renamed when complete; the last ``keep`` are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .model import ClassConditionalUNet

__all__ = [
    "CheckpointError",
    "save_model",
    "load_model",
    "sidecar_path",
    "save_training_state",
    "load_latest_training_state",
]

log = logging.getLogger(__name__)

FORMAT = "seminfo.ddpm.model/1"
TRAINING_FORMAT = "seminfo.ddpm.training_state/1"
_RESERVED = ("format", "arch", "image_shape", "num_classes", "sha256")
_STEP_PREFIX = "step_"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, or does not fit the model it is loaded into."""


def sidecar_path(path) -> Path:
    """The JSON file that belongs to the safetensors file ``path``."""
    return Path(path).with_suffix(".json")


def save_model(path, model: ClassConditionalUNet, meta: dict) -> None:
    """Write ``model``'s weights to ``path`` (.safetensors) and its description plus ``meta`` to the JSON sidecar."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"model checkpoints must end in .safetensors, got {path}")
    clash = sorted(set(meta) & set(_RESERVED))
    if clash:
        raise ValueError(f"meta keys {clash} are reserved")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    digest = _atomic_write(path, lambda tmp: save_file(tensors, tmp))
    record = {
        "format": FORMAT,
        "arch": model.arch,
        "image_shape": list(model.image_shape),
        "num_classes": model.num_classes,
        "sha256": digest,
        **meta,
    }
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    _atomic_write(sidecar_path(path), lambda tmp: Path(tmp).write_text(text))


def load_model(path, expect_num_classes: int | None = None, map_location="cpu"):
    """Load a model checkpoint; returns ``(model in eval mode, the JSON record)``.

    Raises CheckpointError, naming the file, for a missing or corrupt file, a hash mismatch between the
    pair, weights that do not fit the recorded architecture, or a class count other than expected.
    """
    path = Path(path)
    record = _read_json(sidecar_path(path))
    missing = [k for k in _RESERVED if k not in record]
    if missing or record["format"] != FORMAT:
        raise CheckpointError(f"{sidecar_path(path)}: not a {FORMAT} record (missing {missing})")
    if expect_num_classes is not None and record["num_classes"] != expect_num_classes:
        raise CheckpointError(f"{path}: model has {record['num_classes']} classes, expected {expect_num_classes}")
    tensors = _read_tensors(path, record["sha256"])
    try:
        model = ClassConditionalUNet(record["arch"], tuple(record["image_shape"]), record["num_classes"])
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{sidecar_path(path)}: invalid architecture: {err}") from err
    _check_state(path, model.state_dict(), tensors)
    model.load_state_dict(tensors)
    return model.to(map_location).eval(), record


def save_training_state(dir, step: int, model, ema, optimizer, rng_state: dict, extra: dict, keep: int = 2) -> Path:
    """Write the training state after ``step`` updates to ``dir/step_<step>/``; keep the newest ``keep``.

    ``rng_state`` maps names to generator states (uint8 tensors); ``extra`` must be JSON-serialisable.
    """
    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema/{k}": v for k, v in ema.state_dict().items()}
    opt_tensors, opt_json = _split_optimizer_state(optimizer.state_dict())
    tensors |= {f"optimizer/{k}": v for k, v in opt_tensors.items()}
    for name, state in rng_state.items():
        if not isinstance(state, torch.Tensor):
            raise TypeError(f"rng_state[{name!r}] must be a tensor, got {type(state).__name__}")
        tensors[f"rng/{name}"] = state
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    save_file(tensors, tmp / "state.safetensors")
    _fsync(tmp / "state.safetensors")
    record = {
        "format": TRAINING_FORMAT,
        "step": int(step),
        "optimizer": opt_json,
        "extra": extra,
        "sha256": _sha256(tmp / "state.safetensors"),
    }
    (tmp / "state.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    _fsync(tmp / "state.json")

    final = root / f"{_STEP_PREFIX}{int(step):08d}"
    if final.exists():
        # A state for this step that we are redoing (e.g. it was corrupt): move it aside, then drop it.
        stale = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        os.rename(final, stale / final.name)
        os.rename(tmp, final)
        shutil.rmtree(stale)
    else:
        os.rename(tmp, final)
    _fsync(root)
    _prune(root, keep)
    return final


def load_latest_training_state(dir, model, ema, optimizer):
    """Load the newest complete, intact training state into ``model``, ``ema`` and ``optimizer``.

    Returns ``(step, rng_state, extra)``, or None when there is none. Incomplete or corrupt states are
    skipped with a warning, so an interrupted write falls back to the one before.
    """
    for folder in reversed(_complete_states(Path(dir))):
        try:
            return _load_training_state(folder, model, ema, optimizer)
        except CheckpointError as err:
            log.warning("skipping training state %s: %s", folder, err)
    return None


def _load_training_state(folder: Path, model, ema, optimizer):
    record = _read_json(folder / "state.json")
    if record.get("format") != TRAINING_FORMAT or "sha256" not in record:
        raise CheckpointError(f"{folder / 'state.json'}: not a {TRAINING_FORMAT} record")
    tensors = _read_tensors(folder / "state.safetensors", record["sha256"])
    groups = {name: {} for name in ("model", "ema", "optimizer", "rng")}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        if group not in groups:
            raise CheckpointError(f"{folder}: unexpected tensor {key!r}")
        groups[group][name] = value
    _check_state(folder, model.state_dict(), groups["model"])
    _check_state(folder, ema.state_dict(), groups["ema"])
    try:
        optimizer.load_state_dict(_join_optimizer_state(groups["optimizer"], record["optimizer"]))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder}: optimizer state does not fit: {err}") from err
    model.load_state_dict(groups["model"])
    ema.load_state_dict(groups["ema"])
    return record["step"], groups["rng"], record["extra"]


def _split_optimizer_state(state_dict: dict):
    """Optimizer state_dict → (flat tensors ``"<param>/<key>"``, JSON-safe rest)."""
    tensors, scalars = {}, {}
    for param, entries in state_dict["state"].items():
        scalars[str(param)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}/{key}"] = value
            else:
                scalars[str(param)][key] = value
    return tensors, {"state": scalars, "param_groups": state_dict["param_groups"]}


def _join_optimizer_state(tensors: dict, rest: dict) -> dict:
    """Inverse of ``_split_optimizer_state``; JSON turned tuples (betas) into lists, so turn them back."""
    state = {int(param): dict(entries) for param, entries in rest["state"].items()}
    for key, value in tensors.items():
        param, _, name = key.partition("/")
        state.setdefault(int(param), {})[name] = value
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in group.items()}
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _check_state(where, expected: dict, tensors: dict) -> None:
    """Raise CheckpointError unless ``tensors`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"{where}: weights do not match the architecture ({detail})")


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: file not found") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable JSON: {err}") from err
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return record


def _read_tensors(path: Path, sha256: str) -> dict:
    """Load a safetensors file after checking it against the hash its JSON record holds."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    digest = _sha256(path)
    if digest != sha256:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}… does not match {sha256[:12]}… in its JSON record "
            "(truncated, corrupt, or not written together with it)"
        )
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt safetensors file: {err}") from err


def _atomic_write(path: Path, write) -> str:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync, rename onto ``path``; returns its sha256."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _fsync(Path(tmp))
        digest = _sha256(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return digest


def _complete_states(root: Path) -> list[Path]:
    """Finished training-state folders under ``root``, oldest first (temporary folders never qualify)."""
    if not root.is_dir():
        return []
    steps = {p: p.name.removeprefix(_STEP_PREFIX) for p in root.glob(f"{_STEP_PREFIX}*") if p.is_dir()}
    return sorted((p for p, s in steps.items() if s.isdigit()), key=lambda p: int(steps[p]))


def _prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` states, and temporary folders left by interrupted writes."""
    for folder in _complete_states(root)[:-keep]:
        shutil.rmtree(folder)
    for folder in root.glob(".tmp-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk, so a rename never exposes unwritten data after a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
