"""File I/O shared by every stage: atomic NetCDF writes, provenance, and checked reads."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["package_version", "git_commit", "provenance", "atomic_path", "IMAGE_8BIT", "packing", "write_netcdf",
           "open_checked"]


class InputError(ValueError):
    """An input file that is missing, unreadable or does not belong to this experiment."""


def package_version() -> str:
    try:
        return version("seminfo")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def git_commit() -> str:
    """The commit of the source tree the package runs from, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def provenance(experiment: str, spec: dict, config_hash: str) -> dict:
    """Global attributes every dataset carries."""
    return {
        "experiment": experiment,
        "kind": spec["kind"],
        "config": json.dumps(spec, sort_keys=True),
        "config_hash": config_hash,
        "seminfo_version": package_version(),
        "git_commit": git_commit(),
    }


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# 8-bit storage of images in [0, 1] (CF packing: xarray reads them back as floats, value = byte / 255).
IMAGE_8BIT = {"dtype": "uint8", "scale_factor": 1.0 / 255.0, "add_offset": 0.0, "_FillValue": None}
_PACKING = ("dtype", "scale_factor", "add_offset", "_FillValue")


def packing(var) -> dict:
    """The CF packing (integer dtype with scale_factor) a variable was read with or is set to, else {}."""
    enc = var.encoding
    if "scale_factor" in enc and np.dtype(enc.get("dtype", "f4")).kind in "iu":
        return {k: enc[k] for k in _PACKING if k in enc}
    return {}


def write_netcdf(ds: xr.Dataset, path, packed=()) -> None:
    """Write ``ds`` with the netCDF4 engine and zlib compression, atomically.

    Variables named in ``packed`` (images in [0, 1]) are stored 8-bit (``IMAGE_8BIT``), and so is any variable that
    was read with such packing (``packing``), so it stays compact through the stages.
    """
    encoding = {
        name: {"zlib": True, "complevel": 4} | (dict(IMAGE_8BIT) if name in packed else packing(var))
        for name, var in ds.variables.items()
        if var.dtype.kind in "fiu" and var.ndim > 0
    }
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # packed images are clipped to [0, 1] and finite: they need no fill value for NaN
        warnings.filterwarnings("ignore", "saving variable .* as an integer dtype without any _FillValue")
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)


def open_checked(path, config_hash: str | None = None, required=(), nan_allowed=()) -> xr.Dataset:
    """Load a NetCDF file fully, checking that it belongs to the experiment and holds finite numbers.

    ``nan_allowed`` names variables in which NaN marks a missing value (e.g. an undecided trajectory's decision
    time); inf is refused there too.
    """
    path = Path(path)
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot be read as NetCDF ({err}); delete it and rerun the workflow") from None
    if config_hash is not None and ds.attrs.get("config_hash") != config_hash:
        raise InputError(
            f"{path}: was made for another configuration (config_hash {ds.attrs.get('config_hash')!r}, "
            f"expected {config_hash!r}); delete it and rerun"
        )
    missing = [name for name in required if name not in ds]
    if missing:
        raise InputError(f"{path}: lacks variables {missing}")
    for name, var in ds.data_vars.items():
        if var.dtype.kind != "f":
            continue
        values = var.values
        if name in nan_allowed:
            values = values[~np.isnan(values)]
        if not np.isfinite(values).all():
            raise InputError(f"{path}: variable {name!r} holds NaN or inf values")
    return ds
