"""The reverse (generative) chain on a respaced grid: per-step coefficients in float64, the DDPM and DDIM means.

Step ``i`` (i = 1 … S) goes from ``times[i]`` to ``times[i-1]``. On a respaced grid its beta is recomputed
from alpha_bar, ``beta_i = 1 - alpha_bar[times[i]] / alpha_bar[times[i-1]]`` (Nichol & Dhariwal 2021, §4), which is
also what diffusers' ``DDPMScheduler.step`` computes from ``alphas_cumprod`` at a timestep and its
``previous_timestep``. The grid (``seminfo.chain.schedules.chain_times``) is evenly spaced up to T, or the one a
diffusers scheduler's ``set_timesteps`` makes, whose first step may start below T (leading spacing). Both means are
affine in (x_t, eps); ``mean_coefficients`` gives that form for any chain, ``x0_mean_coefficients`` the same in (x_t,
x̂_0), ``step_coefficients`` the same in a network's native output (eps, v, x_0, or the velocity of a Gaussian path,
``seminfo.chain.gaussian_path``), ``clipping_gain`` how the mean moves with x̂_0 when a scheduler clips it
(``seminfo.chain.clipping``), and ``sampler_chain`` builds the chain a config's ``sampling`` section asks for (both
experiment kinds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .gaussian_path import VELOCITY_PREDICTIONS, velocity_x0_coefficients
from .schedules import Schedule, chain_times

__all__ = [
    "ReverseChain",
    "reverse_chain",
    "ddpm_mean",
    "ddpm_mean_shift",
    "predict_x0",
    "ddim_sigma",
    "ddim_mean",
    "ddim_chain",
    "mean_coefficients",
    "x0_mean_coefficients",
    "eps_coefficients",
    "step_coefficients",
    "x0_coefficients",
    "clipping_gain",
    "learned_range_log_variance",
    "sampler_chain",
]


@dataclass(frozen=True)
class ReverseChain:
    """Coefficients of a respaced reverse chain; every array is float64.

    times        (S+1,)  integer grid, ascending, times[0] = 0; times[S] <= T is where the chain starts, from
                         x ~ N(0, I) (T on an even grid; below T on a diffusers grid with leading spacing)
    alpha_bar    (S+1,)  alpha_bar on the grid
    beta         (S,)    beta of step i (index i-1), from times[i] to times[i-1]
    beta_tilde   (S,)    posterior variance of q(x_{t'} | x_t, x_0) for that step
    sigma        (S,)    the standard deviation the sampler uses (sqrt of beta_tilde or beta; 0 on the last step)
    variance     'small' (beta_tilde) or 'large' (beta); 'ddim' for a chain from ``ddim_chain``
    spacing      the grid's ``timestep_spacing`` (``seminfo.chain.schedules.chain_times``): 'even', 'leading', …
    steps_offset the scheduler's ``steps_offset`` added to the grid (leading spacing; 0 for the others)
    """

    times: np.ndarray
    alpha_bar: np.ndarray
    beta: np.ndarray
    beta_tilde: np.ndarray
    sigma: np.ndarray
    variance: str
    spacing: str = "even"
    steps_offset: int = 0

    @property
    def steps(self) -> int:
        return int(self.beta.size)

    @property
    def start_time(self) -> int:
        """The grid time the chain starts from, times[S]: where x ~ N(0, I) is drawn and P(c | x) is the prior."""
        return int(self.times[-1])

    def grid_attrs(self) -> dict:
        """What output files record of the grid: its spacing, steps_offset, start time and, for a diffusers grid,
        the scheduler's timesteps tau = t - 1 in sampling order (netCDF-safe values)."""
        attrs = {"timestep_spacing": self.spacing, "steps_offset": int(self.steps_offset),
                 "chain_start_time": self.start_time}
        if self.spacing != "even":
            attrs["scheduler_timesteps"] = (self.times[1:][::-1] - 1).astype(np.int64)
        return attrs

    @property
    def posterior_start(self) -> int:
        """First grid index at which the class posterior is defined.

        The last step (t_1 -> 0) adds no noise (sigma = 0): x_0 is a deterministic function of x_{t_1} and the
        class, so no Bayes update is possible and the posterior grid ends at t_1.
        """
        return 0 if self.sigma[0] > 0 else 1


def reverse_chain(schedule: Schedule, steps: int, variance: str = "small", spacing: str = "even",
                  steps_offset: int = 0) -> ReverseChain:
    """Respace ``schedule`` to ``steps`` steps on the grid of ``spacing`` (``seminfo.chain.schedules.chain_times``) and
    compute the reverse-step coefficients.

    The last step (t_1 -> 0) is noiseless for every variance, as in Ho et al. (2020), Algorithm 2 (z = 0 at t = 1);
    with 'small' its beta-tilde vanishes anyway.
    """
    if variance not in ("small", "large"):
        raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")
    times = chain_times(schedule.T, steps, spacing, steps_offset)
    ab = schedule.alpha_bar[times]
    beta = 1.0 - ab[1:] / ab[:-1]
    beta_tilde = beta * (1.0 - ab[:-1]) / (1.0 - ab[1:])
    sigma = np.sqrt(beta_tilde if variance == "small" else beta)
    sigma[0] = 0.0
    offset = int(steps_offset) if spacing == "leading" else 0  # the other spacings do not use it
    return ReverseChain(times, ab, beta, beta_tilde, sigma, variance, spacing, offset)


def ddpm_mean_shift(alpha_bar_t, beta):
    """Factor k with mu = (x_t - k * eps) / sqrt(1 - beta): k = beta / sqrt(1 - alpha_bar_t).

    Two classes' means at the same x_t differ by ``(k / sqrt(1 - beta)) * (eps_c - eps_s)``: only the
    difference of the network outputs enters the Bayes update.
    """
    return beta / np.sqrt(1.0 - alpha_bar_t)


def ddpm_mean(x_t, eps, alpha_bar_t, beta):
    """Mean of the DDPM reverse kernel from an epsilon prediction (Ho et al. 2020, eq. 11).

    ``mu = (x_t - beta / sqrt(1 - alpha_bar_t) * eps) / sqrt(1 - beta)``; the step coefficients are scalars,
    ``x_t`` and ``eps`` numpy arrays or torch tensors.
    """
    k = float(ddpm_mean_shift(alpha_bar_t, beta))
    return (x_t - k * eps) / float(np.sqrt(1.0 - beta))


def predict_x0(x_t, eps, alpha_bar_t):
    """x̂_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    return (x_t - float(np.sqrt(1.0 - alpha_bar_t)) * eps) / float(np.sqrt(alpha_bar_t))


def ddim_sigma(alpha_bar_t, alpha_bar_s, eta: float):
    """Standard deviation of the DDIM step t -> s < t (Song et al. 2021, eq. 16).

    ``sigma = eta * sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))`` = eta * sqrt(beta_tilde): eta = 1 is
    ancestral DDPM sampling with the small variance, eta = 0 the deterministic DDIM (no Bayes update possible).
    """
    ab_t = np.asarray(alpha_bar_t, dtype=np.float64)
    ab_s = np.asarray(alpha_bar_s, dtype=np.float64)
    return eta * np.sqrt((1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s))


def ddim_mean(x_t, eps, alpha_bar_t, alpha_bar_s, sigma):
    """Mean of the DDIM step t -> s (Song et al. 2021, eq. 12): ``sqrt(ab_s) x̂_0 + sqrt(1 - ab_s - sigma^2) eps``.

    With sigma = sqrt(beta_tilde) (eta = 1) this equals ``ddpm_mean``. The coefficients are scalars, ``x_t`` and
    ``eps`` numpy arrays or torch tensors.
    """
    x0 = predict_x0(x_t, eps, alpha_bar_t)
    return float(np.sqrt(alpha_bar_s)) * x0 + float(np.sqrt(max(1.0 - alpha_bar_s - sigma**2, 0.0))) * eps


def ddim_chain(schedule: Schedule, steps: int, eta: float, spacing: str = "even",
               steps_offset: int = 0) -> ReverseChain:
    """A respaced chain whose sampler is DDIM with ``0 < eta <= 1``: ``sigma = eta * sqrt(beta_tilde)``.

    ``variance`` is 'ddim'. Its last step has sigma = 0 like the small variance, so ``posterior_start`` is 1.
    """
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"eta must lie in (0, 1] (eta = 0 is deterministic: no Bayes update), got {eta}")
    base = reverse_chain(schedule, steps, "small", spacing, steps_offset)
    return replace(base, sigma=ddim_sigma(base.alpha_bar[1:], base.alpha_bar[:-1], eta), variance="ddim")


def mean_coefficients(chain: ReverseChain, i: int) -> tuple[float, float]:
    """(a, b) with the mean of step i (times[i] -> times[i-1]) of ``chain`` = ``a * x_t + b * eps``, in float64.

    'small' / 'large': ``ddpm_mean`` (Ho et al. 2020, eq. 11), a = 1 / sqrt(1 - beta),
    b = -beta / sqrt(1 - ab_t) / sqrt(1 - beta). 'ddim': ``ddim_mean`` (Song et al. 2021, eq. 12) with x̂_0
    expanded, a = sqrt(ab_s / ab_t), b = sqrt(max(1 - ab_s - sigma^2, 0)) - sqrt(ab_s (1 - ab_t) / ab_t).
    Two classes' means at the same x_t differ by ``b * (eps_c - eps_s)``.
    """
    ab_t, ab_s = float(chain.alpha_bar[i]), float(chain.alpha_bar[i - 1])
    if chain.variance == "ddim":
        sigma = float(chain.sigma[i - 1])
        b = math.sqrt(max(1.0 - ab_s - sigma**2, 0.0)) - math.sqrt(ab_s * (1.0 - ab_t) / ab_t)
        return math.sqrt(ab_s / ab_t), b
    beta = float(chain.beta[i - 1])
    a = 1.0 / math.sqrt(1.0 - beta)
    return a, -float(ddpm_mean_shift(ab_t, beta)) * a


def x0_mean_coefficients(chain: ReverseChain, i: int) -> tuple[float, float]:
    """(c_x, c_0) with the mean of step i of ``chain`` = ``c_x x_t + c_0 x̂_0``, in float64; defined also where
    alpha_bar_t = 0 (a path grid that starts at pure noise), where the eps form of ``mean_coefficients`` is not.

    'small' / 'large': the mean of q(x_s | x_t, x_0) (Ho et al. 2020, eq. 7), c_x = sqrt(1 - beta) (1 - ab_s) /
    (1 - ab_t), c_0 = sqrt(ab_s) beta / (1 - ab_t). 'ddim': ``ddim_mean`` with eps = (x_t - sqrt(ab_t) x̂_0) /
    sqrt(1 - ab_t), c_x = k / sqrt(1 - ab_t), c_0 = sqrt(ab_s) - k sqrt(ab_t / (1 - ab_t)), k = sqrt(max(1 - ab_s -
    sigma^2, 0)). Algebraically the same means as ``mean_coefficients``.
    """
    ab_t, ab_s = float(chain.alpha_bar[i]), float(chain.alpha_bar[i - 1])
    if chain.variance == "ddim":
        k = math.sqrt(max(1.0 - ab_s - float(chain.sigma[i - 1]) ** 2, 0.0))
        return k / math.sqrt(1.0 - ab_t), math.sqrt(ab_s) - k * math.sqrt(ab_t / (1.0 - ab_t))
    beta = float(chain.beta[i - 1])
    return math.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab_t), math.sqrt(ab_s) * beta / (1.0 - ab_t)


def clipping_gain(chain: ReverseChain, i: int) -> float:
    """G with the mean of step i of ``chain`` moving by ``G * d`` when x̂_0 moves by d with the rest held, float64.

    What a scheduler holds is what it does not recompute from the clipped x̂_0 (``seminfo.chain.clipping``). DDPM
    (``DDPMScheduler.step``, Ho et al. 2020, eq. 7): mu = sqrt(ab_s) beta / (1 - ab_t) x̂_0 + sqrt(1 - beta)
    (1 - ab_s) / (1 - ab_t) x_t, x_t held: G = sqrt(ab_s) beta / (1 - ab_t) (1 on the last step, to ab_s = 1).
    DDIM (``DDIMScheduler.step``, Song et al. 2021, eq. 12): mu = sqrt(ab_s) x̂_0 + sqrt(1 - ab_s - sigma^2) eps,
    the network's eps held: G = sqrt(ab_s).
    """
    ab_t, ab_s = float(chain.alpha_bar[i]), float(chain.alpha_bar[i - 1])
    if chain.variance == "ddim":
        return math.sqrt(ab_s)
    return math.sqrt(ab_s) * float(chain.beta[i - 1]) / (1.0 - ab_t)


def eps_coefficients(prediction: str, alpha_bar_t: float) -> tuple[float, float]:
    """(p, q) with eps = p x_t + q out for a network whose native output ``out`` is of kind ``prediction``.

    'epsilon': (0, 1). 'sample' (x_0, a denoiser): x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps gives
    (1 / sqrt(1 - ab), -sqrt(ab / (1 - ab))). 'v_prediction' (v = sqrt(ab) eps - sqrt(1 - ab) x_0, Salimans & Ho
    2022): (sqrt(1 - ab), sqrt(ab)). A velocity of a Gaussian path ('velocity_<path>', ``seminfo.chain.gaussian_path``):
    from its x̂_0 = r x_t + s out, (p, q) = ((1 - sqrt(ab) r) / sqrt(1 - ab), -sqrt(ab) s / sqrt(1 - ab)).
    """
    ab = float(alpha_bar_t)
    if prediction in VELOCITY_PREDICTIONS:
        r, s = velocity_x0_coefficients(prediction, ab)
        root = math.sqrt(1.0 - ab)
        return (1.0 - math.sqrt(ab) * r) / root, -math.sqrt(ab) * s / root
    if prediction == "epsilon":
        return 0.0, 1.0
    if prediction == "sample":
        return 1.0 / math.sqrt(1.0 - ab), -math.sqrt(ab / (1.0 - ab))
    if prediction == "v_prediction":
        return math.sqrt(1.0 - ab), math.sqrt(ab)
    raise ValueError(f"unknown prediction type {prediction!r} (expected epsilon, v_prediction, sample or one of "
                     f"{VELOCITY_PREDICTIONS})")


def step_coefficients(chain: ReverseChain, i: int, prediction: str = "epsilon") -> tuple[float, float]:
    """(A, B) with the mean of step i of ``chain`` = ``A x_t + B out``, ``out`` the network's native output.

    ``mean_coefficients`` composed with ``eps_coefficients``; for 'epsilon' exactly ``mean_coefficients``. Two
    conditions' means at the same x_t differ by ``B (out_c - out_s)``. A velocity of a Gaussian path
    ('velocity_<path>'): ``x0_mean_coefficients`` composed with ``x0_coefficients``, A = c_x + c_0 r, B = c_0 s, which
    stays finite on a step from pure noise (alpha_bar_t = 0).
    """
    if prediction in VELOCITY_PREDICTIONS:
        c_x, c_0 = x0_mean_coefficients(chain, i)
        r, s = velocity_x0_coefficients(prediction, chain.alpha_bar[i])
        return c_x + c_0 * r, c_0 * s
    a, b = mean_coefficients(chain, i)
    if prediction == "epsilon":
        return a, b
    p, q = eps_coefficients(prediction, chain.alpha_bar[i])
    return a + b * p, b * q


def x0_coefficients(prediction: str, alpha_bar_t: float) -> tuple[float, float]:
    """(r, s) with x̂_0 = r x_t + s out (``predict_x0`` with eps from ``eps_coefficients``; a velocity's directly,
    ``seminfo.chain.gaussian_path.velocity_x0_coefficients``)."""
    ab = float(alpha_bar_t)
    if prediction in VELOCITY_PREDICTIONS:
        return velocity_x0_coefficients(prediction, ab)
    if prediction == "sample":
        return 0.0, 1.0
    p, q = eps_coefficients(prediction, ab)
    root = math.sqrt(1.0 - ab)
    return (1.0 - root * p) / math.sqrt(ab), -root * q / math.sqrt(ab)


def learned_range_log_variance(values, beta: float, beta_tilde: float):
    """Log variance of a learned-range network (Nichol & Dhariwal 2021, eq. 15): ``frac log beta + (1 - frac)
    log beta_tilde`` with ``frac = (values + 1) / 2``, ``values`` its variance channels (a numpy array or tensor).

    beta-tilde is floored at 1e-20 as in diffusers' ``DDPMScheduler`` (it vanishes only on the last step, which
    adds no noise).
    """
    log_max, log_min = math.log(beta), math.log(max(beta_tilde, 1e-20))
    frac = (values + 1.0) / 2.0
    return frac * log_max + (1.0 - frac) * log_min


def sampler_chain(schedule: Schedule, sampling: dict, spacing: str = "even", steps_offset: int = 0) -> ReverseChain:
    """The reverse chain a ``sampling`` config section samples with, for both experiment kinds.

    ``kernel: ddim``: DDIM with sigma = eta sqrt(beta_tilde) (``eta`` default 1; ``variance`` is ignored). Any
    other kernel ('ddpm' or absent; the gmm-only 'exact', which uses the chain's grid only): the respaced DDPM
    chain with the configured ``variance`` (default 'small'). The grid is ``sampling.timestep_spacing`` when set,
    else ``spacing`` (the model's own: ``seminfo.chain.sampler.model_chain``), with ``steps_offset``.
    """
    spacing = sampling.get("timestep_spacing", spacing)
    if sampling.get("kernel") == "ddim":
        return ddim_chain(schedule, sampling["steps"], sampling.get("eta", 1.0), spacing, steps_offset)
    if "eta" in sampling:
        raise ValueError(f"sampling.eta applies to kernel 'ddim' only, the kernel is {sampling.get('kernel')!r}")
    return reverse_chain(schedule, sampling["steps"], sampling.get("variance", "small"), spacing, steps_offset)
