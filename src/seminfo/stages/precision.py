"""The precision gate on an experiment (``seminfo.chain.precision``'s bound against ``GATE_BITS``): when the
workflow is parsed (own networks, ``check_own_precision``) and in the sampling stage (``check_experiment_precision``).
"""

from __future__ import annotations

import numpy as np

from ..chain.diffusion import ReverseChain, sampler_chain
from ..chain.precision import GATE_BITS, experiment_network, precision_gate
from ..chain.schedules import schedule_from_spec
from ..config import ConfigError, class_names

__all__ = ["check_experiment_precision", "check_own_precision"]

_DATA_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}


def check_experiment_precision(spec: dict, key: str, chain: ReverseChain, K: int, D: int,
                               prediction: str = "epsilon") -> dict:
    """``precision_gate`` for an experiment; refuses (``ConfigError`` naming ``<key>.sampling.precision``) a reduced
    precision whose bound exceeds GATE_BITS unless ``sampling.precision_override`` is set. Returns the gate's dict."""
    s = spec["sampling"]
    gate = precision_gate(s.get("precision", "fp32"), chain, K, D, experiment_network(spec), prediction)
    if not gate["allowed"] and not s.get("precision_override", False):
        raise ConfigError(
            f"{key}.sampling.precision: {gate['precision']} may bias the entropy by up to "
            f"{gate['entropy_bias_bound_bits']:.3g} bit over {chain.steps} steps at D = {D}, K = {K} (the gate is "
            f"{GATE_BITS} bit; noise {gate['noise_source']}; seminfo.chain.precision). Use fp32, or set "
            "sampling.precision_override: true to accept the bias (rule: precision-gate)")
    return gate


def check_own_precision(config: dict) -> None:
    """The precision gate of every own-network experiment, when the workflow is parsed (before training)."""
    for name, spec in config["experiments"].items():
        if spec.get("kind") != "ddpm" or spec.get("model", {}).get("source", "own") != "own":
            continue
        if spec["sampling"].get("precision", "fp32") == "fp32":
            continue
        shape = _DATA_SHAPES.get(spec["data"]["name"])
        names = class_names(spec)
        if shape is None or names is None:
            continue  # the sampling job checks it, with the adapter in hand
        chain = sampler_chain(schedule_from_spec(spec), spec["sampling"])
        check_experiment_precision(spec, f"experiments.{name}", chain, len(names), int(np.prod(shape)))
