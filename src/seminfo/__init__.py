"""seminfo: measure when a diffusion model makes its semantic decisions.

The online Bayesian class posterior along reverse trajectories (Handke et al. 2025), its entropy profiles,
rates and binary decisions, on exact Gaussian mixtures and on trained DDPMs.
"""

from .io import package_version

__version__ = package_version()

__all__ = ["measure", "load_model", "experiment_spec", "Run", "plot", "__version__"]

# The Python API (seminfo.api, seminfo.plot) is imported on first use, so that `import seminfo` stays cheap.
_API = {"measure": "api", "load_model": "api", "Run": "api", "experiment_spec": "api"}


def __getattr__(name: str):
    import importlib

    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    if name == "plot":
        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | {"plot"})
