"""Speciation time (Biroli et al. 2024) on the DDPM schedule, and where the default mixtures put it."""

import numpy as np
import pytest
import yaml

from seminfo import gmm, plotting, speciation, stages
from seminfo.schedules import make_schedule
from seminfo.summary import entropy_rate

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
    """Regression values of the report: Lambda and the speciation step of every default mixture."""
    expected = {"gmm_symmetric": (1.09, 88.6), "gmm_asymmetric": (0.7999, 0.0), "gmm_hierarchical": (1.7944, 237.6)}
    for name, spec in default_mixtures().items():
        lam = speciation.mixture_variance(stages.mixture_from_spec(spec))
        _, step = speciation.speciation_step(stages.schedule_from_spec(spec).alpha_bar, lam)
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
