"""Health checks of a network run: is the chain that was measured one whose numbers can be read as findings?

Each check is one number against a limit (docs/troubleshooting.md, "Health checks"); a failed check is a warning,
not an error:

state_range        share of the generated states' elements (x_0 in the chain's units, every trajectory) beyond the
                   data's range: |x_0| > 1.5 for a pixel model (data in [-1, 1]), |x_0| > 4 for a latent one (the
                   VAE's scaling_factor gives its latents unit standard deviation, so 4 standard deviations). Fails
                   above 1 %: the chain has left the data, typically because x̂_0 = (x - sqrt(1 - ab) eps) / sqrt(ab)
                   multiplies the network's error by 1 / sqrt(ab) at a first step taken where ab is tiny.
first_step         share of the information the chain produces, the prior-weighted mean entropy at its start (H(c)
                   with full tracking), that its first Bayes step produces. Fails above 50 %: a first step from
                   pure noise that decides most of the class is a grid too coarse at the noise end, or a diverging
                   chain; the online posterior is P(c | path), which such a step makes far sharper than P(c | x_t).
immse_inputs       share of the I-MMSE study's x_0 beyond the same bound (a pretrained model's inputs are its own
                   generated states; the own model's, its data). Fails above 1 %: the study's estimate then rests on
                   states outside the data.
sample_agreement   where an independent classifier exists (the digits quality check, quality.json): the share of
                   samples it assigns to their conditioning class. Fails below 0.8.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PIXEL_BOUND", "LATENT_BOUND", "CHECKS", "GRID_ADVICE", "SIGMA_GRID_ADVICE", "state_bound", "outside_share",
           "first_step_share", "assess", "warnings_of", "summary_attrs"]

PIXEL_BOUND = 1.5  # |x_0| beyond it is outside a pixel model's data range [-1, 1] by half its width
LATENT_BOUND = 4.0  # 4 standard deviations of a latent scaled to unit standard deviation by the VAE's scaling_factor

# What to try about the grid ({grid} in the advice below): a diffusers-style model, and a sigma-denoiser's Karras grid.
GRID_ADVICE = ("the scheduler's own timestep spacing (leave sampling.timestep_spacing unset, or set it to leading, "
               "which starts below T), more sampling.steps")
SIGMA_GRID_ADVICE = "more sampling.steps, or a lower sampling.sigma_max"

# name -> (limit, "max" (value must not exceed it) or "min" (must not fall below it), what the number is, what to try)
CHECKS = {
    "state_range": (0.01, "max", "share of the generated states' values beyond the data's range",
                    "try {grid}, or x̂0 clipping (the scheduler's clip_sample: true)"),
    "first_step": (0.5, "max", "share of the information produced in the first Bayes step",
                   "try {grid}; until then the early-time curves are artefacts of the first step"),
    "immse_inputs": (0.01, "max", "share of the I-MMSE study's x0 beyond the data's range",
                     "its estimate rests on states outside the data: fix the chain first (see state_range)"),
    "sample_agreement": (0.8, "min", "share of samples the independent classifier assigns to their class",
                         "the samples are not reliably of their class: try {grid}"),
}


def state_bound(latent: bool) -> float:
    """|x_0| beyond which a generated state is outside the data's range (``PIXEL_BOUND`` or ``LATENT_BOUND``)."""
    return LATENT_BOUND if latent else PIXEL_BOUND


def outside_share(states, bound: float) -> np.ndarray:
    """Per state (first axis), the share of its elements with |x| > ``bound`` (float64, (N,)); NaN counts as outside."""
    flat = np.asarray(states).reshape(len(states), -1)
    return (~(np.abs(flat) <= bound)).mean(axis=1, dtype=np.float64)


def first_step_share(entropy, prior) -> float:
    """(E[start] - E[after the first Bayes step]) / E[start] of the prior-weighted mean entropy E = sum_k w_k H_k(t),
    w = prior / sum(prior), from class profiles ``entropy`` (K, G) on the ascending posterior grid; NaN when E starts
    at 0."""
    w = np.asarray(prior, dtype=np.float64)
    E = (w / w.sum()) @ np.asarray(entropy, dtype=np.float64)
    if E.size < 2 or not E[-1] > 0:
        return math.nan
    return float((E[-1] - E[-2]) / E[-1])


def assess(values: dict, grid_advice: str = GRID_ADVICE) -> dict:
    """The health report of measured ``values`` (check name -> number; NaN or absent: not assessed).

    Returns {"checks": {name: {"value", "limit", "passed", "what"}}, "failed": [names], "advice": {name: text}}, the
    advice naming ``grid_advice`` as what to try about the grid.
    """
    checks, failed, advice = {}, [], {}
    for name, (limit, kind, what, to_try) in CHECKS.items():
        value = values.get(name)
        if value is None or not math.isfinite(value):
            continue
        passed = value <= limit if kind == "max" else value >= limit
        checks[name] = {"value": float(value), "limit": limit, "passed": bool(passed), "what": what}
        if not passed:
            failed.append(name)
            advice[name] = to_try.format(grid=grid_advice)
    return {"checks": checks, "failed": failed, "advice": advice}


def warnings_of(report: dict, experiment: str) -> list[str]:
    """One line per failed check: the check, its value against the limit, and what to try."""
    lines = []
    for name in report["failed"]:
        c = report["checks"][name]
        relation = "above" if CHECKS[name][1] == "max" else "below"
        lines.append(f"{experiment}: health check {name} failed: {c['what']} is {c['value']:.3g}, {relation} the limit "
                     f"{c['limit']:g}; {report['advice'][name]}")
    return lines


def summary_attrs(report: dict) -> dict:
    """summary.nc attributes of a health report: ``health_failed`` (the failed checks, or 'none'), and per check
    ``health_<name>`` (the value) and ``health_<name>_limit``, and ``health_advice`` (what to try, per failed check)."""
    attrs = {"health_failed": ", ".join(report["failed"]) or "none"}
    for name, c in report["checks"].items():
        attrs[f"health_{name}"] = c["value"]
        attrs[f"health_{name}_limit"] = c["limit"]
    attrs["health_advice"] = " | ".join(f"{name}: {text}" for name, text in report["advice"].items()) or "none"
    return attrs
