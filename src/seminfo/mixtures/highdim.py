"""Gaussian mixtures in d dimensions with isotropic components, reduced to the span of the class means.

Class c has weight pi_c and data x_0 ~ N(mu_c, s_c^2 I_d), mu_c in R^d. Every coordinate follows the 1-D process of
``seminfo.mixtures.gmm``: x_t | c ~ N(sqrt(ab) mu_c, v_c I_d) with v_c = ab s_c^2 + 1 - ab, and each reverse kernel
(exact, DDPM or DDIM with the exact class eps) acts on every coordinate as the 1-D one, with a mean affine in
(x_t, mu_c):

    x_s | x_t, c ~ N(A_c x_t + B_c mu_c, W_c I_d)                                 (``kernel_coefficients``)

Let the rows of U (r x d) be an orthonormal basis of the span of the means (r <= K), y = U x the coordinates of x
in it and x_perp = x - U^T y. With b_c = U mu_c,

    log N(x; sqrt(ab) mu_c, v_c I_d) = -(|y - sqrt(ab) b_c|^2 + |x_perp|^2) / (2 v_c) - d/2 log(2 pi v_c),

so the exact posterior depends on x_t only through (y, |x_perp|^2), and the log-likelihood of a reverse step
x_t -> x_s only through those of both points and <x_s_perp, x_t_perp> (``PathStatistics``; METHOD.md,
"High-dimensional mixtures"). Nothing the posterior needs grows with d. Under class k, y ~ N(sqrt(ab) b_k, v_k I_r)
and |x_perp|^2 ~ v_k chi^2_{d-r}.

Exact entropies: when r = 1 and the perpendicular part carries no class information (equal stds, or d = 1), the
posterior is that of the 1-D mixture of the coordinates b_c along the span (``IsotropicMixture.projected``), and
``gmm``'s quadrature gives it (for d = 1 exactly today's curve). Otherwise the exact posterior is averaged by Monte
Carlo over (y, |x_perp|^2) drawn in the reduced coordinates, at a cost that does not grow with d, and the standard
error is returned with it. The same random draws serve every time of the grid (common random numbers), so the curve
is smooth in t and can be differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..chain.diffusion import ReverseChain, mean_coefficients
from ..chain.posterior import entropy_bits, normalize_log, partition_log_posterior
from . import gmm

__all__ = [
    "IsotropicMixture",
    "draw_means",
    "mixture_from_config",
    "span_basis",
    "log_likelihood",
    "exact_log_posterior",
    "exact_eps",
    "kernel_coefficients",
    "step_log_likelihoods",
    "PathStatistics",
    "sample_statistics",
    "path_log_likelihoods",
    "step_gram",
    "path_expected_entropies",
    "exact_entropy",
    "exact_partition_entropy",
    "EXACT_MC_SAMPLES",
]

EXACT_MC_SAMPLES = 20000  # draws per class of the Monte Carlo exact entropy (where no quadrature is exact)
_LOG_2PI = np.log(2.0 * np.pi)


def span_basis(means, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (r, d) of the span of the rows of ``means`` (K, d), r >= 1 (e_1 if every mean is 0).

    Each basis vector's largest-magnitude component is made positive; for d = 1 the basis is [[1.0]].
    """
    means = np.asarray(means, dtype=np.float64)
    d = means.shape[1]
    if d == 1:
        return np.ones((1, 1))
    _, sv, vt = np.linalg.svd(means, full_matrices=False)
    r = int((sv > rtol * sv.max()).sum()) if sv.max() > 0 else 0
    if r == 0:
        return np.eye(1, d)
    basis = vt[:r]
    lead = basis[np.arange(r), np.abs(basis).argmax(1)]
    return basis * np.sign(lead)[:, None]


@dataclass(frozen=True)
class IsotropicMixture:
    """A d-dimensional mixture of isotropic Gaussians: weights (K,), means (K, d), stds (K,), float64.

    Derived: ``basis`` (r, d), the orthonormal basis of the span of the means, and ``coords`` (K, r), the means in it.
    """

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    def __post_init__(self):
        for name in ("weights", "means", "stds"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        w, m, s = self.weights, self.means, self.stds
        if w.ndim != 1 or s.shape != w.shape or m.ndim != 2 or m.shape[0] != w.size or m.shape[1] < 1:
            raise ValueError("weights and stds must be 1-D of length K and means of shape (K, d)")
        if not (np.isfinite(w).all() and np.isfinite(m).all() and np.isfinite(s).all()):
            raise ValueError("weights, means and stds must be finite")
        if np.any(s <= 0) or np.any(w <= 0):
            raise ValueError("weights and stds must be positive")
        if abs(w.sum() - 1.0) > 1e-6:
            raise ValueError("weights must sum to 1")
        basis = span_basis(m)
        object.__setattr__(self, "basis", basis)
        object.__setattr__(self, "coords", m @ basis.T)

    @property
    def K(self) -> int:
        return int(self.weights.size)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def span(self) -> int:
        return int(self.basis.shape[0])

    @property
    def log_prior(self) -> np.ndarray:
        return np.log(self.weights)

    def projected(self) -> gmm.Mixture | None:
        """The 1-D mixture of the means' coordinates along the span when it carries the whole posterior (r = 1
        and equal stds or d = 1), else None."""
        if self.span == 1 and (self.dim == 1 or np.all(self.stds == self.stds[0])):
            return gmm.Mixture(self.weights, self.coords[:, 0], self.stds)
        return None

    def reduce(self, x):
        """Coordinates y (..., r) of points x (..., d) in the span, and their perpendicular parts (..., d)."""
        x = np.asarray(x, dtype=np.float64)
        y = x @ self.basis.T
        return y, x - y @ self.basis


def draw_means(K: int, dim: int, norm: float, seed: int, antipodal: bool = False) -> np.ndarray:
    """K means of length ``norm`` in uniformly random directions of R^dim (seeded), shape (K, dim).

    ``antipodal`` (K = 2): the second mean is minus the first.
    """
    rng = np.random.default_rng(seed)
    if antipodal:
        if K != 2:
            raise ValueError(f"antipodal means need K = 2 classes, got {K}")
        g = rng.standard_normal((1, dim))
        g = np.concatenate([g, -g])
    else:
        g = rng.standard_normal((K, dim))
    return norm * g / np.linalg.norm(g, axis=1, keepdims=True)


def mixture_from_config(mixture: dict) -> IsotropicMixture:
    """The mixture of a config's ``mixture`` section with ``dim`` (means given, or drawn with ``mean_norm``)."""
    K, dim = len(mixture["weights"]), int(mixture["dim"])
    if "means" in mixture:
        means = np.asarray(mixture["means"], dtype=np.float64).reshape(K, dim)
    else:
        means = draw_means(K, dim, mixture["mean_norm"], mixture["mean_seed"], mixture.get("mean_antipodal", False))
    return IsotropicMixture(mixture["weights"], means, mixture["stds"])


# --- exact posterior --------------------------------------------------------------------------------------------


def log_likelihood(mix: IsotropicMixture, proj, perp_sq, alpha_bar):
    """log N(x_t; sqrt(ab) mu_c, v_c I_d) of every class from the reduced coordinates, shape (..., K).

    proj (..., r), perp_sq (...) = |x_perp|^2; ``alpha_bar`` broadcasts against ``perp_sq``.
    """
    ab = np.asarray(alpha_bar, dtype=np.float64)
    var = gmm.component_variance(mix.stds, ab)
    diff = np.asarray(proj)[..., None, :] - np.sqrt(ab)[..., None, None] * mix.coords
    sq = (diff * diff).sum(-1) + np.asarray(perp_sq)[..., None]
    return -0.5 * (sq / var + mix.dim * (_LOG_2PI + np.log(var)))


def exact_log_posterior(mix: IsotropicMixture, proj, perp_sq, alpha_bar):
    """Exact log P(c | x_t) from the reduced coordinates of x_t, shape (..., K)."""
    return normalize_log(mix.log_prior + log_likelihood(mix, proj, perp_sq, alpha_bar))


def exact_eps(mix: IsotropicMixture, x, alpha_bar: float):
    """Exact class-conditional noise prediction eps_c(x_t) = sqrt(1 - ab) (x_t - sqrt(ab) mu_c) / v_c (the 1-D
    formula of ``gmm.exact_eps`` in every coordinate): x (..., d) -> (..., K, d)."""
    var = gmm.component_variance(mix.stds, alpha_bar)
    x = np.asarray(x, dtype=np.float64)[..., None, :]
    return np.sqrt(1.0 - alpha_bar) * (x - np.sqrt(alpha_bar) * mix.means) / var[:, None]


# --- reverse kernels --------------------------------------------------------------------------------------------


def kernel_coefficients(mix: IsotropicMixture, chain: ReverseChain, kernel: str, i: int):
    """(A, B, W), each (K,), of step i (chain.times[i] -> times[i-1]): x_s | x_t, c ~ N(A_c x_t + B_c mu_c, W_c I_d).

    exact   ``gmm.exact_kernel_gain``: A = C / v_t, B = sqrt(ab_s) - A sqrt(ab_t), W = v_s - C^2 / v_t
    ddpm    the chain's mean a x_t + b eps_c (``diffusion.mean_coefficients``) with the exact eps_c =
            e_c (x_t - sqrt(ab_t) mu_c), e_c = sqrt(1 - ab_t) / v_c: A = a + b e_c, B = -b e_c sqrt(ab_t), W = sigma^2
    ddim    the same with the DDIM mean (a chain from ``diffusion.ddim_chain``)
    """
    ab_t, ab_s = float(chain.alpha_bar[i]), float(chain.alpha_bar[i - 1])
    if kernel == "exact":
        gain, var = gmm.exact_kernel_gain(mix.stds, ab_t, ab_s)
        return gain, np.sqrt(ab_s) - gain * np.sqrt(ab_t), var
    if kernel not in ("ddpm", "ddim"):
        raise ValueError(f"kernel must be 'exact', 'ddpm' or 'ddim', got {kernel!r}")
    if (kernel == "ddim") != (chain.variance == "ddim"):
        raise ValueError(f"kernel {kernel!r} does not match a chain with variance {chain.variance!r}")
    a, b = mean_coefficients(chain, i)
    e = np.sqrt(1.0 - ab_t) / gmm.component_variance(mix.stds, ab_t)
    return a + b * e, -b * e * np.sqrt(ab_t), np.full(mix.K, float(chain.sigma[i - 1]) ** 2)


def step_log_likelihoods(mix: IsotropicMixture, coefficients, proj_t, perp_sq_t, proj_s, perp_sq_s, perp_cross):
    """log N(x_s; A_c x_t + B_c mu_c, W_c I_d) of every class, shape (..., K), from the reduced statistics of x_t
    and x_s: their span coordinates (..., r), |perp|^2 (...) and <x_s_perp, x_t_perp> (...).

    |x_s - A x_t - B mu|^2 = |y_s - A y_t - B b|^2 + |x_s_perp|^2 - 2 A <x_s_perp, x_t_perp> + A^2 |x_t_perp|^2.
    """
    A, B, W = coefficients
    span = np.asarray(proj_s)[..., None, :] - A[:, None] * np.asarray(proj_t)[..., None, :] - B[:, None] * mix.coords
    perp = (np.asarray(perp_sq_s)[..., None] - 2.0 * A * np.asarray(perp_cross)[..., None]
            + A * A * np.asarray(perp_sq_t)[..., None])
    sq = (span * span).sum(-1) + np.maximum(perp, 0.0)  # the perpendicular term is a squared norm; rounding aside
    return -0.5 * (sq / W + mix.dim * (_LOG_2PI + np.log(W)))


@dataclass(frozen=True)
class PathStatistics:
    """What the posterior needs of trajectories in R^d, on the ascending grid (index 0 = t = 0), float64.

    proj        (N, S+1, r)  coordinates of x_t in the span of the means
    perp_sq     (N, S+1)     |x_t_perp|^2
    perp_cross  (N, S)       <x_{t_{i-1}}_perp, x_{t_i}_perp> of step i (index i-1)
    """

    proj: np.ndarray
    perp_sq: np.ndarray
    perp_cross: np.ndarray


def sample_statistics(mix: IsotropicMixture, chain: ReverseChain, labels, kernel: str, init: str,
                      rng: np.random.Generator, block: int = 2**18) -> tuple[PathStatistics, np.ndarray]:
    """Draw reverse trajectories in R^d, each from the kernel of its own class, and keep their ``PathStatistics``.

    A real d-dimensional simulation: x (N, d) is stepped with ``kernel_coefficients`` and fresh d-dimensional
    noise, and reduced at every grid time (|x_perp|^2 = |x|^2 - |y|^2, <x_s_perp, x_t_perp> = <x_s, x_t> - y_s.y_t).
    Trajectories run in blocks of about ``block`` numbers (rows x d, cache-sized), each block with its own noise
    stream: float32 normals of torch's CPU generator (four times faster than numpy's, which dominate the cost),
    seeded from ``rng``, added in float64; the chain and every statistic are float64.
    init  'prior': x_T ~ N(0, I_d) and log P(c | x_T) = log pi; 'exact': x_T ~ p(x_T | c) and log P(c | x_T) exact.
    Returns the statistics and the initial log posterior (N, K).
    """
    import torch

    labels = np.asarray(labels)
    n, steps, d = labels.size, chain.steps, mix.dim
    if init not in ("prior", "exact"):
        raise ValueError(f"init must be 'prior' or 'exact', got {init!r}")
    proj = np.empty((n, steps + 1, mix.span))
    perp_sq = np.empty((n, steps + 1))
    cross = np.empty((n, steps))
    coefficients = [kernel_coefficients(mix, chain, kernel, i) if i else None for i in range(steps + 1)]
    rows = max(1, block // d)
    seeds = rng.integers(2**63, size=-(-n // rows))
    ab_T = chain.alpha_bar[steps]
    sd_T = np.sqrt(gmm.component_variance(mix.stds, ab_T)) if init == "exact" else np.ones(mix.K)
    for b, lo in enumerate(range(0, n, rows)):
        sl = slice(lo, lo + rows)
        lab = labels[sl]
        means = mix.means[lab]
        gen = torch.Generator().manual_seed(int(seeds[b]))

        def noise(scale):
            z = torch.randn((lab.size, d), generator=gen, dtype=torch.float32).numpy()
            return z * scale.astype(np.float32)[:, None]

        def record(j, x):
            y = x @ mix.basis.T
            proj[sl, j] = y
            perp_sq[sl, j] = np.einsum("ij,ij->i", x, x) - np.einsum("ij,ij->i", y, y)
            return y

        x = noise(sd_T[lab]).astype(np.float64)
        if init == "exact":
            x += np.sqrt(ab_T) * means
        y_t = record(steps, x)
        for i in range(steps, 0, -1):
            A, B, W = coefficients[i]
            x_s = A[lab, None] * x
            x_s += B[lab, None] * means
            x_s += noise(np.sqrt(W[lab]))
            y_s = record(i - 1, x_s)
            cross[sl, i - 1] = np.einsum("ij,ij->i", x_s, x) - np.einsum("ij,ij->i", y_s, y_t)
            x, y_t = x_s, y_s
    if init == "prior":
        log_init = np.broadcast_to(mix.log_prior, (n, mix.K)).copy()
    else:
        log_init = exact_log_posterior(mix, proj[:, steps], perp_sq[:, steps], ab_T)
    return PathStatistics(proj, perp_sq, cross), log_init


def path_log_likelihoods(mix: IsotropicMixture, chain: ReverseChain, stats: PathStatistics, kernel: str,
                         start: int = 0):
    """log p(x_{t_{i-1}} | x_{t_i}, c) of the steps i = start+1 … S of every path under every class, from the path
    statistics; shape (N, S - start, K), index j for the step from times[start+j+1] to times[start+j], as
    ``gmm.path_log_likelihoods``."""
    n = stats.perp_sq.shape[0]
    out = np.empty((n, chain.steps - start, mix.K), dtype=np.float64)
    for i in range(chain.steps, start, -1):
        coefficients = kernel_coefficients(mix, chain, kernel, i)
        out[:, i - 1 - start] = step_log_likelihoods(mix, coefficients, stats.proj[:, i], stats.perp_sq[:, i],
                                                     stats.proj[:, i - 1], stats.perp_sq[:, i - 1],
                                                     stats.perp_cross[:, i - 1])
    return out


def step_gram(mix: IsotropicMixture, coefficients, proj_t, perp_sq_t, own):
    """Gram matrices <delta_c, delta_d> (N, K, K) of the mean differences delta_c = m_own - m_c of one step, with
    m_c = A_c x_t + B_c mu_c, from the reduced statistics of x_t: delta_c = alpha_c x_t + beta_c with
    alpha_c = A_own - A_c and beta_c = B_own mu_own - B_c mu_c, so <delta_c, delta_d> = alpha_c alpha_d |x_t|^2 +
    alpha_c <x_t, beta_d> + alpha_d <x_t, beta_c> + <beta_c, beta_d>, all in the span coordinates but |x_t|^2."""
    A, B, _ = coefficients
    own = np.asarray(own)
    proj_t = np.asarray(proj_t)
    alpha = A[own][:, None] - A[None, :]  # (N, K)
    beta = (B[own][:, None] * mix.coords[own])[:, None, :] - (B[:, None] * mix.coords)[None]  # (N, K, r)
    sq = (proj_t * proj_t).sum(-1) + np.asarray(perp_sq_t)  # |x_t|^2
    xb = np.einsum("nr,nkr->nk", proj_t, beta)
    return (alpha[:, :, None] * alpha[:, None, :] * sq[:, None, None] + alpha[:, :, None] * xb[:, None, :]
            + alpha[:, None, :] * xb[:, :, None] + np.einsum("nkr,nlr->nkl", beta, beta))


def path_expected_entropies(mix: IsotropicMixture, chain: ReverseChain, stats: PathStatistics, kernel: str, labels,
                            log_post, start: int = 0, partitions=(), seed: int = 0):
    """Rao–Blackwellised step changes E[h at grid j | path down to grid j+1] of d-dimensional paths (as
    ``gmm.path_expected_entropies``), or None when the classes' kernel variances W_c differ at some step (the exact
    kernel with unequal stds: then |z|^2 does not cancel and the expectation is not a K-dimensional one).

    With one W the kernels share sigma = sqrt(W) and the increments depend on the step's d-dimensional noise only
    through <delta_c, z>: ``rao_blackwell.shared_sigma_increments`` of ``step_gram``.
    """
    from ..chain import rao_blackwell

    labels = np.asarray(labels)
    G = chain.steps - start + 1
    h = np.empty((labels.size, G - 1))
    hz = np.empty((len(partitions), labels.size, G - 1))
    for i in range(chain.steps, start, -1):
        j = i - 1 - start
        coefficients = kernel_coefficients(mix, chain, kernel, i)
        W = coefficients[2]
        if not np.allclose(W, W[0], rtol=1e-12, atol=0):
            return None
        gram = step_gram(mix, coefficients, stats.proj[:, i], stats.perp_sq[:, i], labels)
        inc, weights = rao_blackwell.shared_sigma_increments(gram, float(np.sqrt(W[0])), [seed, j])
        h[:, j], hz[:, :, j] = rao_blackwell.expected_entropies(log_post[:, j + 1], inc, weights, partitions)
    return h, hz


# --- exact entropies --------------------------------------------------------------------------------------------


def _reduced_draws(mix: IsotropicMixture, samples: int, seed: int):
    """Standard draws of the reduced coordinates per class: z (K, n, r) ~ N(0, I_r) and chi (K, n) ~ chi^2_{d-r}."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((mix.K, samples, mix.span))
    free = mix.dim - mix.span
    chi = rng.chisquare(free, (mix.K, samples)) if free > 0 else np.zeros((mix.K, samples))
    return z, chi


def _mc_log_posteriors(mix: IsotropicMixture, alpha_bar, samples: int, seed: int, chunk: int = 2_000_000):
    """Yield (time slice, k, exact log posterior (g, n, K)) of x_t drawn from class k in reduced coordinates:
    y = sqrt(ab) b_k + sqrt(v_k) z and |x_perp|^2 = v_k chi, with the same (z, chi) at every time."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    z, chi = _reduced_draws(mix, samples, seed)
    step = max(1, chunk // (samples * mix.K))
    for lo in range(0, ab.size, step):
        sl = slice(lo, lo + step)
        a = ab[sl]
        sd = np.sqrt(gmm.component_variance(mix.stds, a))  # (g, K)
        for k in range(mix.K):
            proj = np.sqrt(a)[:, None, None] * mix.coords[k] + sd[:, k, None, None] * z[k]  # (g, n, r)
            perp_sq = sd[:, k, None] ** 2 * chi[k]  # (g, n)
            yield sl, k, exact_log_posterior(mix, proj, perp_sq, a[:, None])


def _chunked(alpha_bar, fn, chunk: int):
    ab = np.asarray(alpha_bar, dtype=np.float64)
    return np.concatenate([fn(ab[lo:lo + chunk]) for lo in range(0, ab.size, chunk)], axis=-1)


def exact_entropy(mix: IsotropicMixture, alpha_bar, points: int = 4001, samples: int = EXACT_MC_SAMPLES,
                  seed: int = 0, method: str | None = None):
    """Exact per-class entropy H_k(t) in bits, shape (K, G), its standard error (K, G) and the method used.

    method  'quadrature' (``gmm.exact_entropy`` of ``mix.projected()``, ``points`` nodes; standard error 0),
            'monte carlo' (``samples`` draws per class in the reduced coordinates, seeded), or None: quadrature
            where it is exact, else Monte Carlo.
    """
    method = method or ("quadrature" if mix.projected() is not None else "monte carlo")
    ab = np.asarray(alpha_bar, dtype=np.float64)
    if method == "quadrature":
        line = mix.projected()
        if line is None:
            raise ValueError("quadrature needs means on a line and equal stds (or d = 1)")
        H = _chunked(ab, lambda a: gmm.exact_entropy(line, a, points), max(1, 500_000 // points))
        return H, np.zeros_like(H), method
    if method != "monte carlo":
        raise ValueError(f"method must be 'quadrature' or 'monte carlo', got {method!r}")
    H, se = np.empty((mix.K, ab.size)), np.empty((mix.K, ab.size))
    for sl, k, log_post in _mc_log_posteriors(mix, ab, samples, seed):
        h = entropy_bits(log_post)
        H[k, sl], se[k, sl] = h.mean(-1), h.std(-1, ddof=1) / np.sqrt(samples)
    return H, se, method


def exact_partition_entropy(mix: IsotropicMixture, alpha_bar, side_a, side_b, points: int = 4001,
                            samples: int = EXACT_MC_SAMPLES, seed: int = 0, method: str | None = None):
    """Exact H(z | x_t) in bits (G,), its standard error (G,) and the method, for x_t from the prior-weighted mixture
    of the classes in A ∪ B (as ``gmm.exact_partition_entropy``; Monte Carlo stratified by class)."""
    method = method or ("quadrature" if mix.projected() is not None else "monte carlo")
    ab = np.asarray(alpha_bar, dtype=np.float64)
    if method == "quadrature":
        line = mix.projected()
        if line is None:
            raise ValueError("quadrature needs means on a line and equal stds (or d = 1)")
        H = _chunked(ab, lambda a: gmm.exact_partition_entropy(line, a, side_a, side_b, points),
                     max(1, 500_000 // points))
        return H, np.zeros_like(H), method
    members = list(side_a) + list(side_b)
    w = mix.weights[members] / mix.weights[members].sum()
    mean, var = np.zeros(ab.size), np.zeros(ab.size)
    for sl, k, log_post in _mc_log_posteriors(mix, ab, samples, seed):
        if k in members:
            wk = w[members.index(k)]
            h = entropy_bits(partition_log_posterior(log_post, side_a, side_b))
            mean[sl] += wk * h.mean(-1)
            var[sl] += wk**2 * h.var(-1, ddof=1) / samples
    return mean, np.sqrt(var), method
