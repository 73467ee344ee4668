"""Noise schedules of the DDPM forward process, computed once in float64.

Convention used throughout the package: steps are numbered t = 1 … T with betas beta_1 … beta_T, and
``alpha_bar[t] = prod_{s <= t} (1 - beta_s)`` is stored for t = 0 … T with ``alpha_bar[0] = 1`` (t = 0 is
data, t = T is noise). A respaced chain visits a subsequence ``times`` of 0 … T that starts at 0 (``chain_times``:
evenly spaced up to T, or the grid a diffusers scheduler's ``set_timesteps`` makes, which may start below T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Schedule",
    "linear_betas",
    "cosine_betas",
    "make_schedule",
    "schedule_from_spec",
    "schedule_from_alpha_bar",
    "respaced_times",
    "TIMESTEP_SPACINGS",
    "chain_times",
    "SCHEDULER_BETA_SCHEDULES",
    "schedule_from_scheduler_config",
    "karras_sigmas",
    "sigma_schedule",
]


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Linear schedule of Ho et al. (2020), ``beta_t`` from ``beta_start`` to ``beta_end`` (scaled to T = 1000)."""
    scale = 1000.0 / T
    return np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal (2021), eq. 17, betas clipped at ``max_beta``."""
    f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


@dataclass(frozen=True)
class Schedule:
    """A forward process: ``betas`` for t = 1 … T and ``alpha_bar`` for t = 0 … T (float64)."""

    name: str
    betas: np.ndarray

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError("betas must be a non-empty 1-D array")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("every beta must lie in (0, 1]")
        betas.setflags(write=False)
        object.__setattr__(self, "betas", betas)
        alpha_bar = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
        alpha_bar.setflags(write=False)
        object.__setattr__(self, "alpha_bar", alpha_bar)

    @property
    def T(self) -> int:
        return int(self.betas.size)

    def log_snr(self, times: np.ndarray) -> np.ndarray:
        """log(alpha_bar / (1 - alpha_bar)) at integer ``times`` (+inf at t = 0)."""
        ab = self.alpha_bar[np.asarray(times)]
        with np.errstate(divide="ignore"):
            return np.log(ab) - np.log1p(-ab)


def make_schedule(name: str, T: int, **params) -> Schedule:
    """Build a named schedule ('linear' or 'cosine') with its parameters."""
    if name == "linear":
        return Schedule(name, linear_betas(T, **params))
    if name == "cosine":
        return Schedule(name, cosine_betas(T, **params))
    raise ValueError(f"unknown schedule {name!r} (expected 'linear' or 'cosine')")


def schedule_from_spec(spec: dict) -> Schedule:
    """The schedule of an experiment's ``schedule`` section (its name, T and the schedule's parameters)."""
    params = {k: v for k, v in spec["schedule"].items() if k not in ("name", "T")}
    return make_schedule(spec["schedule"]["name"], spec["schedule"]["T"], **params)


def schedule_from_alpha_bar(name: str, alpha_bar) -> Schedule:
    """The schedule whose alpha_bar on t = 0 … T is ``alpha_bar`` (1 at t = 0, strictly decreasing, positive):
    ``beta_t = 1 - alpha_bar[t] / alpha_bar[t-1]``. The Schedule recomputes alpha_bar as the product of the
    1 - beta_t, which agrees with the input to rounding (float64)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    if ab.ndim != 1 or ab.size < 2 or ab[0] != 1.0 or not np.all((ab[1:] > 0) & (np.diff(ab) < 0)):
        raise ValueError("alpha_bar must start at 1 and decrease strictly, staying positive")
    return Schedule(name, 1.0 - ab[1:] / ab[:-1])


def respaced_times(T: int, steps: int) -> np.ndarray:
    """``steps + 1`` evenly spaced integer times from 0 to T (ascending), the grid of a respaced chain.

    The betas of the respaced chain follow from alpha_bar on this grid (see ``seminfo.chain.diffusion``).
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1 … T = {T}, got {steps}")
    times = np.round(np.linspace(0, T, steps + 1)).astype(np.int64)
    assert np.all(np.diff(times) > 0)
    return times


TIMESTEP_SPACINGS = ("even", "leading", "trailing", "linspace")


def chain_times(T: int, steps: int, spacing: str = "even", steps_offset: int = 0) -> np.ndarray:
    """The ascending grid ``times`` (``steps + 1`` integers, ``times[0] = 0``) of a chain of ``steps`` steps on 0 … T.

    'even': ``respaced_times`` (0 … T evenly spaced; the own model's grid). 'leading', 'trailing', 'linspace': the
    timesteps tau that diffusers' ``DDPMScheduler.set_timesteps(steps)`` (0.42; ``DDIMScheduler``'s are the same)
    makes for that ``timestep_spacing``, as this package's t = tau + 1, below them t = 0, where the scheduler's last
    step lands (its alpha_prod_prev = 1 below tau = 0). With T = 1000 and 100 steps: leading tau = 990, 980, …, 0
    (plus ``steps_offset``, which only leading adds), so the chain starts at t = 991 < T; trailing tau = 999, 989, …,
    9 and linspace tau = 999, …, 0, both starting at t = T. The formulas are diffusers' own, in float64 numpy.

    Raises ValueError for ``steps`` outside 1 … T and where the scheduler's formula gives no valid grid: trailing
    spacing yields steps + 1 timesteps, the last -1, for some (T, steps) (e.g. 1000, 61), and a leading
    ``steps_offset`` can push the first timestep to T.
    """
    if spacing == "even":
        return respaced_times(T, steps)
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing {spacing!r} is not one of {TIMESTEP_SPACINGS}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1 … T = {T}, got {steps}")
    if spacing == "linspace":
        tau = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    elif spacing == "leading":
        tau = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64) + int(steps_offset)
    else:
        tau = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    if tau.size != steps or tau.min() < 0 or tau.max() > T - 1 or np.any(np.diff(tau) >= 0):
        raise ValueError(f"timestep_spacing {spacing!r} (steps_offset {steps_offset}) gives diffusers timesteps "
                         f"{_excerpt(tau)} for {steps} steps of T = {T}: not {steps} distinct timesteps in "
                         f"0 … {T - 1} (choose another number of steps or spacing)")
    return np.concatenate([[0], tau[::-1] + 1]).astype(np.int64)


def _excerpt(values: np.ndarray) -> str:
    items = [str(v) for v in values.tolist()]
    return f"[{', '.join(items)}]" if len(items) <= 6 else f"[{', '.join(items[:3])}, …, {', '.join(items[-3:])}]"


SCHEDULER_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def schedule_from_scheduler_config(config: dict, source: str = "scheduler_config.json") -> Schedule:
    """The forward process of a diffusers scheduler configuration (``scheduler_config.json``), in float64.

    Keys read: ``num_train_timesteps`` (T), and ``trained_betas`` (the betas themselves) or ``beta_schedule`` with
    ``beta_start`` / ``beta_end``: 'linear' (evenly spaced betas), 'scaled_linear' (evenly spaced sqrt(beta), the
    latent-diffusion schedule), 'squaredcos_cap_v2' (Nichol & Dhariwal 2021, eq. 17 with s = 0.008, betas capped
    at 0.999: ``cosine_betas``). diffusers computes the same in float32; here every step is float64.

    Index convention: diffusers' timestep tau = 0 … T-1 is this package's step t = tau + 1 (``alpha_bar[0] = 1`` is
    data), so ``alpha_bar[1:]`` is the scheduler's ``alphas_cumprod``. Anything else (another beta_schedule,
    ``rescale_betas_zero_snr``, which makes alpha_bar_T = 0 and the chain's start undefined) raises ValueError
    naming ``source`` and the key.
    """
    def bad(key, why):
        return ValueError(f"{source}: {key}: {why}")

    T = config.get("num_train_timesteps", 1000)
    if not isinstance(T, int) or isinstance(T, bool) or T < 2:
        raise bad("num_train_timesteps", f"must be an integer >= 2, got {T!r}")
    if config.get("rescale_betas_zero_snr"):
        raise bad("rescale_betas_zero_snr", "zero terminal SNR (alpha_bar_T = 0) is not supported: the chain starts "
                  "from N(0, I) at a finite SNR")
    trained = config.get("trained_betas")
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64)
        if betas.shape != (T,):
            raise bad("trained_betas", f"has shape {betas.shape}, num_train_timesteps is {T}")
        name = "trained_betas"
    else:
        name = config.get("beta_schedule", "linear")
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        if name == "linear":
            betas = np.linspace(start, end, T, dtype=np.float64)
        elif name == "scaled_linear":
            betas = np.linspace(math.sqrt(start), math.sqrt(end), T, dtype=np.float64) ** 2
        elif name == "squaredcos_cap_v2":
            betas = cosine_betas(T, 0.008, 0.999)
        else:
            raise bad("beta_schedule", f"{name!r} cannot be rebuilt (known: {', '.join(SCHEDULER_BETA_SCHEDULES)}, "
                      "or trained_betas)")
    try:
        return Schedule(name, betas)
    except ValueError as err:
        raise bad("trained_betas" if trained is not None else "beta_schedule", str(err)) from None


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """The sigma grid of Karras et al. (2022), eq. 5, ascending: ``steps`` values from sigma_min to sigma_max,
    evenly spaced in sigma^(1/rho) (float64)."""
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if steps < 2:
        raise ValueError(f"a sigma grid needs at least 2 points, got {steps}")
    ramp = np.linspace(0.0, 1.0, steps, dtype=np.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (lo + ramp * (hi - lo)) ** rho


def sigma_schedule(sigmas) -> Schedule:
    """The forward process of a sigma-parameterised (VE / EDM) model on the grid ``sigmas`` (ascending, > 0), in
    variance-preserving units.

    With x_VP = sqrt(alpha_bar) x_VE and alpha_bar = 1 / (1 + sigma^2) (METHOD.md, "sigma-parameterised chains"),
    step t = 1 … S of the returned schedule is ``sigmas[t-1]`` and t = 0 is sigma = 0 (data): the grid itself is
    the schedule, T = S, and a chain on every step (``reverse_chain(schedule, S)``) visits exactly these sigmas.
    """
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.ndim != 1 or sigmas.size < 1 or not np.all(sigmas > 0) or np.any(np.diff(sigmas) <= 0):
        raise ValueError("sigmas must be a non-empty, strictly ascending array of positive values")
    return schedule_from_alpha_bar("sigma", 1.0 / (1.0 + np.concatenate([[0.0], sigmas]) ** 2))
