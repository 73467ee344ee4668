"""Speciation time (Biroli et al. 2024) on the DDPM schedule, and where the default mixtures put it."""

import numpy as np
import pytest
import yaml

from seminfo import plotting
from seminfo.analysis import speciation
from seminfo.analysis.summary import entropy_rate
from seminfo.chain.schedules import make_schedule, schedule_from_spec
from seminfo.mixtures import gmm
from seminfo.stages import shared as stages

from conftest import REPO
from test_plotting import make_summary

SCHED = make_schedule("linear", 1000)


def test_mixture_variance_is_the_sample_variance():
    mix = gmm.Mixture([0.6, 0.3, 0.1], [-1.0, 0.3, 1.2], [0.5, 0.3, 0.2])
    rng = np.random.default_rng(0)
    c = rng.choice(3, 400_000, p=mix.weights)
    x = mix.means[c] + mix.stds[c] * rng.standard_normal(c.size)
    assert speciation.mixture_variance(mix) == pytest.approx(x.var(), rel=5e-3)


@pytest.mark.parametrize("dims", [20, 600])  # dense eigensolver and Lanczos
def test_top_eigenvalue(dims):
    rng = np.random.default_rng(1)
    scales = np.linspace(0.2, 1.0, dims)
    scales[dims // 3] = 2.0
    x = rng.standard_normal((4000, dims)) * scales
    assert speciation.top_eigenvalue(x) == pytest.approx(4.0, rel=0.08)


def test_ou_time_maps_to_the_step_with_that_alpha_bar():
    for t in (1, 37, 500, 999):
        s = -0.5 * np.log(SCHED.alpha_bar[t])
        assert speciation.ou_time_to_step(SCHED.alpha_bar, s) == pytest.approx(t, abs=1e-9)
    mid = -0.25 * (np.log(SCHED.alpha_bar[100]) + np.log(SCHED.alpha_bar[101]))
    assert 100 < speciation.ou_time_to_step(SCHED.alpha_bar, mid) < 101
    assert speciation.ou_time_to_step(SCHED.alpha_bar, -0.3) == 0.0  # Lambda < 1: at (before) the data
    assert speciation.ou_time_to_step(SCHED.alpha_bar, 50.0) == 1000.0
    s, step = speciation.speciation_step(SCHED.alpha_bar, np.e)
    assert s == pytest.approx(0.5) and SCHED.alpha_bar[int(step)] >= np.exp(-1) >= SCHED.alpha_bar[int(step) + 1]


def default_mixtures():
    config = yaml.safe_load((REPO / "config.yaml").read_text())["experiments"]
    return {name: spec for name, spec in config.items() if spec["kind"] == "gmm"}


def test_default_mixtures():
    """Regression values of the report: Lambda and the speciation step of every default 1-D mixture; for the
    d-dimensional one Lambda = |m|^2 + s^2 and the step brackets alpha_bar = 1 / Lambda."""
    expected = {"gmm_symmetric": (1.09, 88.6), "gmm_asymmetric": (0.7999, 0.0), "gmm_hierarchical": (1.7944, 237.6)}
    for name, spec in default_mixtures().items():
        lam = speciation.mixture_eigenvalue(stages.mixture_from_spec(spec))
        alpha_bar = schedule_from_spec(spec).alpha_bar
        _, step = speciation.speciation_step(alpha_bar, lam)
        if "dim" in spec["mixture"]:
            assert lam == pytest.approx(spec["mixture"]["mean_norm"] ** 2 + spec["mixture"]["stds"][0] ** 2), name
            assert alpha_bar[int(step)] >= 1 / lam >= alpha_bar[int(step) + 1], name
            continue
        assert (lam, step) == pytest.approx(expected[name], abs=0.1), name


def test_speciation_predicts_the_coarse_split_of_the_hierarchical_mixture():
    """The first split ({0, 1} vs {2, 3}) peaks within 30 steps of t_S; the fine splits much later."""
    spec = default_mixtures()["gmm_hierarchical"]
    mix = stages.mixture_from_spec(spec)
    times = np.arange(0, 1001, 2)
    ab = SCHED.alpha_bar[times]
    h = gmm.exact_partition_entropy(mix, ab, [0, 1], [2, 3], points=1501)
    peak = times[entropy_rate(times / 1000, h).argmax()]
    _, step = speciation.speciation_step(SCHED.alpha_bar, speciation.mixture_variance(mix))
    assert abs(peak - step) < 30


def test_entropy_rate_figure_marks_the_speciation_time():
    ds = make_summary(K=3, partitions=False, examples=0)
    assert not [line for line in plotting.plot_entropy_rate(ds).axes[0].lines if line.get_gid() == "speciation"]
    ds.attrs["speciation_time"] = 250
    ax = plotting.plot_entropy_rate(ds).axes[0]
    (line,) = [line for line in ax.lines if line.get_gid() == "speciation"]
    assert line.get_xdata()[0] == pytest.approx(0.25)


# --- the study over d: two classes at +-m, |m|^2 = d ------------------------------------------------------------


def large_d_limit(u):
    """H(c | x_s) of two equally likely classes at +-m as d -> infinity at s = u + 1/2 log d, in bits.

    Independent of the package's quadrature: the log-odds of x_s is L = 2 sqrt(ab) <m, x> / v, under the class at +m
    Gaussian with mean 2 kappa and variance 4 kappa, kappa = ab d / v -> e^{-2u}; H = E[h(sigmoid(L))] by
    Gauss-Hermite quadrature.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    kappa = np.exp(-2.0 * np.asarray(u))[:, None]
    L = 2.0 * kappa + 2.0 * np.sqrt(kappa) * nodes
    p = 1.0 / (1.0 + np.exp(-L))
    h = (p * np.logaddexp(0.0, -L) + (1.0 - p) * np.logaddexp(0.0, L)) / np.log(2.0)
    return h @ weights / weights.sum()


def dense_peak_and_width(x, y):
    """Argmax of y on a dense grid and the distance between its half-maximum crossings (np.interp on each side)."""
    i = int(np.argmax(y))
    half = y[i] / 2
    left = np.interp(half, y[:i + 1], x[:i + 1])  # y rises up to the peak
    right = np.interp(half, y[i:][::-1], x[i:][::-1])  # and falls after it
    return x[i], right - left


@pytest.fixture(scope="module")
def study():
    dims, std = [16, 256, 4096], 0.5
    s_chain, s_fine, schedule = speciation.study_grid(dims, std, 100)
    return {d: speciation.speciation_point(d, std, s_chain, s_fine, schedule, 150, 0, 2.0, 100) for d in dims}


def test_speciation_study_exact_trend(study):
    """From the exact curves: the rate peak minus s_S tends to the large-d constant, and the width in s / s_S shrinks
    (the full width at half maximum in s tends to the large-d width, while s_S grows like 1/2 log d)."""
    u = np.linspace(-4.0, 4.0, 16001)
    u_star, w_star = dense_peak_and_width(u, np.gradient(large_d_limit(u), u))
    print(f"large-d limit: peak - 1/2 log d = {u_star:.4f}, FWHM = {w_star:.4f}")
    offsets = [p["rate_peak_exact"] - p["speciation_time"] for p in study.values()]
    widths = [p["rate_width_exact"] / p["speciation_time"] for p in study.values()]
    print("peak - s_S", np.round(offsets, 4), "FWHM / s_S", np.round(widths, 4))
    gaps = np.abs(np.array(offsets) - u_star)  # the grid and the quadrature resolve the peak to ~1e-4
    assert gaps[-1] < 1e-3 and gaps[1] < 2e-3 and gaps[0] > 5 * gaps[1]
    assert np.all(np.diff(widths) < 0)
    assert study[4096]["rate_width_exact"] == pytest.approx(w_star, abs=0.01)


def test_speciation_study_monte_carlo_agrees_with_exact(study):
    """d-dimensional chains: the online posterior is the exact one at every step, and the entropy lies within 4 SE of
    the exact curve (where it is at least Z_FLOOR_BITS; below, the entropy of 300 trajectories is carried by rare ones)."""
    for d, p in study.items():
        assert p["posterior_max_abs_error"] < 1e-9, d
        assert p["entropy_max_abs_z"] < 4.0, (d, p["entropy_max_abs_z"])
        assert p["entropy_max_abs_diff"] < 0.15, d
        assert p["rate_peak_ci_low"] <= p["rate_peak"] <= p["rate_peak_ci_high"]


def test_ou_schedule_is_uniform_in_s():
    sched = speciation.ou_schedule(3.0, 30)
    np.testing.assert_allclose(-0.5 * np.log(sched.alpha_bar), np.linspace(0.0, 3.0, 31), atol=1e-12)
    np.testing.assert_allclose(sched.betas, 1.0 - np.exp(-0.2), rtol=1e-12)


def test_speciation_figure():
    import xarray as xr

    from seminfo.stages.convergence import speciation_stage

    spec = {"kind": "gmm", "mixture": {"weights": [0.5, 0.5], "means": [-1.0, 1.0], "stds": [0.5, 0.5]}}
    options = {"dims": [4, 64], "trajectories_per_class": 20, "steps": 30, "rate_smoothing": 1.0,
               "bootstrap_resamples": 100, "seed": 0}
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        speciation_stage(spec, "e", out / "speciation.nc", options, figure=out / "speciation.png", dpi=40)
        ds = xr.open_dataset(out / "speciation.nc").load()
        assert (out / "speciation.png").stat().st_size > 1000
    assert ds.sizes["d"] == 2 and ds.sizes["s"] == 4 * 30 + 1 and ds.sizes["s_chain"] == 31
    for name in list(ds.data_vars) + ["d", "s", "s_chain"]:
        assert {"long_name", "units"} <= set(ds[name].attrs), name
    np.testing.assert_allclose(ds["speciation_time"], 0.5 * np.log(np.array([4, 64]) + 0.25))
    fig = plotting.plot_speciation(ds)
    gids = {line.get_gid() for ax in fig.axes for line in ax.lines}
    assert {"exact:d=4", "mc:d=64", "exact"} <= gids
