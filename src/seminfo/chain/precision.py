"""What reduced precision does to the Bayes increments: the bias, derived; the rounding noise, measured at full size.

    python -m seminfo.bench.precision --network cifar10_ddpm --device cuda      # prints one JSON line

The bias. At step i the trajectory moves to x' = mu~_own + sigma z, where mu~_c = A x + B out~_c and out~_c = out_c +
n_c is the network's output in the reduced precision (n_c its rounding error). The increment of condition c against
the own one is then

    Delta~_c = -||d_c + B e_c||^2 / (2 sigma^2) - <z, d_c + B e_c> / sigma,   d_c = B (out_own - out_c),
                                                                              e_c = n_own - n_c,

against Delta_c in exact arithmetic (e_c = 0). For rounding noise that is uncorrelated with d_c and z, every other
condition loses on average

    b_i = B_i^2 E||e_c||^2 / (2 sigma_i^2)                                          (nats of log-odds per step)

and gains a zero-mean spread of variance 2 b_i: exactly what an extra Gaussian observation would add whose class
means differ by B e_c. The reduced-precision posterior is sharper than the model's: the mean entropy is biased down,
decisions look early, and b_i grows with the state dimension D (E||e_c||^2 = D v, v the per-element noise power).
Treating the noise as such an observation, the information it can add about c by step i is at most the mean
pairwise divergence, so the mean entropy on the posterior grid is biased by at most

    (K - 1) / K * L_g / ln 2 bits,    L_g = sum of b_i over the Bayes steps taken before grid point g       (*)

(``entropy_bias_bound_bits``; a test injects Gaussian noise of known power into an exact mixture's outputs and checks
the measured drop against (*)). The own condition's output moves the trajectory; its rounding error does not enter
(*) except through e_c. A learned-range network's per-element sigma is at least sqrt(beta-tilde), so the fixed small
chain's sigma gives an upper bound.

The noise. ``rounding_noise`` evaluates a network at the same inputs in fp32 (TF32 off) and in the reduced precision,
and returns E||e_c||^2 / D of the difference of two conditions' outputs. A random-weight network's outputs are not a
trained one's (a trained epsilon network has unit output power); the noise is reported both as measured and relative
to the fp32 output power, and the prediction for a trained epsilon network uses the relative one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import yaml

from .diffusion import ReverseChain, step_coefficients
from .evaluator import network_precision

__all__ = ["GATE_BITS", "bias_factors", "log_odds_budget", "entropy_bias_bound_bits", "rounding_noise",
           "noise_table", "predicted_bias", "relative_noise_power", "precision_gate", "experiment_network"]

GATE_BITS = 0.01  # largest entropy bias a reduced precision may add
NOISE_FILE = Path(__file__).with_name("rounding_noise.yaml")


def bias_factors(chain: ReverseChain, prediction: str = "epsilon") -> np.ndarray:
    """B_i^2 / (2 sigma_i^2) of each step i = 1 … S (index i - 1); 0 where the step adds no noise (no Bayes step)."""
    out = np.zeros(chain.steps)
    for i in range(chain.posterior_start + 1, chain.steps + 1):
        _, b = step_coefficients(chain, i, prediction)
        out[i - 1] = b * b / (2.0 * float(chain.sigma[i - 1]) ** 2)
    return out


def log_odds_budget(chain: ReverseChain, noise_power, prediction: str = "epsilon") -> np.ndarray:
    """L_g (nats) on the posterior grid g = 0 … S - start (grid point g is ``chain.times[start + g]``).

    ``noise_power`` (S,) is E||e_c||^2 of step i at index i - 1 (or a scalar for every step). L_g sums b_i over the
    steps from T down to grid point g, so it is 0 at g = S - start (the prior) and largest at g = 0.
    """
    b = bias_factors(chain, prediction) * np.broadcast_to(np.asarray(noise_power, dtype=np.float64), (chain.steps,))
    start = chain.posterior_start
    steps_after = b[start:]  # step i = start + 1 + j at index start + j, taken before grid points g <= j
    tail = np.cumsum(steps_after[::-1])[::-1]
    return np.append(tail, 0.0)


def entropy_bias_bound_bits(budget, K: int):
    """Bound (*) of the module docstring: the most the mean posterior entropy can drop, in bits (at most log2 K)."""
    return np.minimum((K - 1) / K * np.asarray(budget, dtype=np.float64) / math.log(2.0), math.log2(K))


# --- the gate ---------------------------------------------------------------------------------------------------


def relative_noise_power(network: str | None, precision: str) -> tuple[float, str]:
    """Per-element rounding-noise power of ``precision`` relative to the output power, from ``rounding_noise.yaml``:
    the network's own measurement, or for an architecture not measured there the largest of the precision."""
    table = yaml.safe_load(NOISE_FILE.read_text())["networks"]
    if network in table and precision in table[network]:
        return float(table[network][precision]), f"measured on {network}"
    values = {name: row[precision] for name, row in table.items() if precision in row}
    worst = max(values, key=values.get)
    return float(values[worst]), f"largest measured ({worst}); {network or 'this architecture'} is not measured"


def precision_gate(precision: str, chain: ReverseChain, K: int, D: int, network: str | None = None,
                   prediction: str = "epsilon") -> dict:
    """Bound (*) for a run on ``chain`` with K conditions and state dimension D in ``precision``, with the noise of
    ``relative_noise_power`` at unit output power (a trained network's); ``allowed`` when it is at most GATE_BITS."""
    if precision == "fp32":
        return {"precision": precision, "entropy_bias_bound_bits": 0.0, "allowed": True}
    rho, source = relative_noise_power(network, precision)
    bound = float(entropy_bias_bound_bits(log_odds_budget(chain, D * rho, prediction), K).max())
    return {"precision": precision, "entropy_bias_bound_bits": bound, "allowed": bound <= GATE_BITS,
            "relative_noise_power": rho, "noise_source": source}


# Architectures of rounding_noise.yaml by model source: the own presets by name, DiT and Stable Diffusion 1.5 and 3 by
# their sources (other sizes of those families are close enough; an unmeasured one gets the largest value).
_SOURCE_NETWORK = {"dit": "dit_xl2_256", "stable_diffusion": "sd15_unet", "sd3": "sd3_medium"}


def experiment_network(spec: dict) -> str | None:
    """The entry of rounding_noise.yaml an experiment's network is measured by, or None."""
    model = spec.get("model", {})
    source = model.get("source", "own")
    if source == "own":
        return model.get("preset") if set(model) <= {"preset"} else None  # a preset with overrides is another net
    return _SOURCE_NETWORK.get(source)


# --- measuring the rounding noise ---------------------------------------------------------------------------


def _noisy_states(shape, alpha_bar: float, n: int, g: torch.Generator) -> torch.Tensor:
    """x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps with x_0 uniform in [-1, 1] (image-like values), float32 on the CPU."""
    x0 = torch.rand((n, *shape), generator=g) * 2 - 1
    return (math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * torch.randn((n, *shape), generator=g)).float()


@torch.no_grad()
def rounding_noise(net, x: torch.Tensor, t: int, conditions, precisions, device) -> dict:
    """Noise of out_c - out_own in each of ``precisions`` against fp32 (TF32 off), at states x (n, *shape), time t.

    ``conditions``: condition indices, the first is 'own'. Returns, per precision, per-element powers (means over
    states, condition pairs and elements): ``noise`` E||e_c||^2 / D, ``signal`` of the fp32 differences, ``output``
    of the fp32 outputs.
    """
    dev = torch.device(device)
    n, k = x.shape[0], len(conditions)
    xs = x.to(dev).repeat_interleave(k, 0)
    ts = torch.full((n * k,), int(t), dtype=torch.long, device=dev)
    ys = torch.as_tensor(list(conditions), dtype=torch.long, device=dev).repeat(n)

    def outputs(p):
        with network_precision(p, dev):
            return net(xs, ts, ys).double().reshape(n, k, -1)

    diff = lambda o: o[:, 1:] - o[:, :1]  # noqa: E731 - out_c - out_own
    exact = outputs("fp32")
    signal, output = float(diff(exact).pow(2).mean()), float(exact.pow(2).mean())
    return {p: {"noise": float((diff(outputs(p)) - diff(exact)).pow(2).mean()), "signal": signal, "output": output}
            for p in precisions}


def noise_table(net, shape, schedule, times, precisions, device, samples: int = 4, conditions=(0, 1, 2),
                seed: int = 0) -> dict:
    """``rounding_noise`` of each precision at each time (the same states for every precision)."""
    g = torch.Generator().manual_seed(seed)
    table = {p: {"noise": [], "signal": [], "output": []} for p in precisions}
    for t in times:
        x = _noisy_states(shape, float(schedule.alpha_bar[int(t)]), samples, g)
        for p, row in rounding_noise(net, x, int(t), conditions, precisions, device).items():
            for key, value in row.items():
                table[p][key].append(value)
    return {"times": [int(t) for t in times], **table}


def predicted_bias(table: dict, precision: str, chain: ReverseChain, K: int, D: int, prediction: str = "epsilon",
                   relative: bool = True) -> dict:
    """Bound (*) for a run on ``chain`` with K conditions, from a ``noise_table``: the per-element noise power is
    interpolated in t onto the chain's steps; ``relative`` scales it to unit output power (a trained epsilon network).
    """
    row = table[precision]
    power = np.asarray(row["noise"], dtype=np.float64)
    if relative:
        power = power / np.asarray(row["output"], dtype=np.float64)
    per_step = D * np.interp(chain.times[1:], np.asarray(table["times"], dtype=np.float64), power)
    budget = log_odds_budget(chain, per_step, prediction)
    bound = entropy_bias_bound_bits(budget, K)
    return {"log_odds_budget_nats": float(budget[0]), "entropy_bias_bound_bits": float(bound.max()),
            "allowed": bool(bound.max() <= GATE_BITS)}
