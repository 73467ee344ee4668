"""Decision times, bootstrap intervals, entropy-rate peaks, and the decisions stage on a tiny Gaussian mixture."""

import copy

import numpy as np
import pytest
import xarray as xr

from seminfo import plotting
from seminfo.analysis import decisions as dec
from seminfo.analysis import speciation
from seminfo.analysis.summary import entropy_rate
from seminfo.chain.schedules import schedule_from_spec
from seminfo.config import experiment_hash
from seminfo.io import InputError, write_netcdf
from seminfo.stages import shared as stages
from seminfo.stages.decisions import decisions_stage, replay_gmm_posterior

TIMES = np.array([0, 10, 20, 30, 40, 50])


def posterior(p_first):
    """(N, G, 2) posteriors from P(class 0 | x_t) rows."""
    p = np.asarray(p_first, dtype=float)
    return np.stack([p, 1 - p], axis=-1)


def test_decision_time_is_the_end_of_the_leading_run_above_threshold():
    post = posterior([
        [0.99, 0.95, 0.92, 0.6, 0.5, 0.5],  # decided at t = 20
        [0.99, 0.95, 0.5, 0.95, 0.99, 0.5],  # a dip: decided at 10, later excursions do not count
        [0.02, 0.05, 0.2, 0.5, 0.5, 0.5],  # final MAP class 1, decided at 10 (P(1) = 0.95 > 0.9)
        [0.6, 0.7, 0.5, 0.5, 0.5, 0.5],  # never above the threshold: undecided
        [0.95, 0.95, 0.95, 0.95, 0.95, 0.95],  # above everywhere: decided at T
    ])
    t, final = dec.decision_times(post, TIMES, 0.9)
    np.testing.assert_array_equal(final, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(t[[0, 1, 2, 4]], [20, 10, 10, 50])
    assert np.isnan(t[3])


def test_bootstrap_median_interval():
    rng = np.random.default_rng(0)
    values = rng.normal(100, 10, 400)
    med, lo, hi = dec.bootstrap_median(values, 1000, np.random.default_rng(1))
    assert med == pytest.approx(np.median(values)) and lo < med < hi
    assert 0.5 < hi - lo < 4  # about 2 x 1.96 x 1.25 sigma / sqrt(n) = 2.5
    assert dec.bootstrap_median(values, 1000, np.random.default_rng(1)) == (med, lo, hi)  # seeded
    values[:100] = np.nan  # undecided trajectories are left out of each replicate's median
    med, lo, hi = dec.bootstrap_median(values, 500, np.random.default_rng(1))
    assert med == pytest.approx(np.nanmedian(values)) and lo < med < hi
    assert all(np.isnan(dec.bootstrap_median(np.full(5, np.nan), 100, np.random.default_rng(0))))


def test_class_statistics_reproducible_and_per_class():
    t = np.concatenate([np.full(50, 100.0), np.full(50, 300.0)])
    t[::10] = np.nan
    labels = np.repeat([0, 1], 50)
    a = dec.class_decision_statistics(t, labels, 2, 200, seed=3)
    b = dec.class_decision_statistics(t, labels, 2, 200, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(a["median"], [100, 300])
    np.testing.assert_allclose(a["undecided"], [0.1, 0.1])


def test_rate_peak_and_its_interval():
    """Class k's trajectories carry a noisy sigmoid entropy step centred at c_k: the rate peaks there."""
    rng = np.random.default_rng(0)
    times = np.arange(0, 1001, 10)
    centres = np.array([300, 600])
    labels = np.repeat([0, 1], 300)
    shift = rng.normal(0, 40, labels.size)
    h = 1 / (1 + np.exp(-(times[None, :] - centres[labels, None] - shift[:, None]) / 50))
    out = dec.class_rate_peaks(h, labels, 2, times, 1000, smoothing=2, resamples=300, seed=0)
    for k in range(2):
        H = h[labels == k].mean(0)
        assert out["peak"][k] == times[entropy_rate(times / 1000, H, 2).argmax()]  # same estimator as summary.nc
        assert abs(out["peak"][k] - centres[k]) <= 30
        assert out["ci_low"][k] <= out["peak"][k] <= out["ci_high"][k]
        assert out["ci_high"][k] - out["ci_low"][k] <= 100


TINY = {
    "kind": "gmm",
    "mixture": {"weights": [0.5, 0.3, 0.2], "means": [-1.0, 0.2, 0.9], "stds": [0.4, 0.3, 0.3],
                "class_names": ["a", "b", "c"]},
    "schedule": {"name": "linear", "T": 100},
    "sampling": {"steps": 50, "variance": "small", "kernel": "exact", "init": "prior", "trajectories_per_class": 40,
                 "seed": 4, "examples_per_class": 1},
    "partitions": {"a_vs_bc": [["a"], ["b", "c"]]},
    "analysis": {"rate_smoothing": 1},
    "plots": {"dpi": 60},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("decisions")
    stages.gmm_sample(TINY, "tiny", d / "paths.nc")
    stages.gmm_posterior(TINY, "tiny", d / "paths.nc", d / "posterior.nc")
    stages.aggregate(TINY, "tiny", [d / "posterior.nc"], d / "summary.nc")
    return d


def test_replay_matches_the_full_posterior(tiny_run):
    """The gmm stage regenerates the trajectories; its decision times equal those from the full posterior."""
    with xr.open_dataset(tiny_run / "paths.nc") as paths, xr.open_dataset(tiny_run / "posterior.nc") as stored:
        paths, stored = paths.load(), stored.load()
    from seminfo.chain.posterior import online_log_posterior
    from seminfo.mixtures import gmm

    mix = stages.mixture_from_spec(TINY)
    chain = gmm.sampler_chain(schedule_from_spec(TINY), TINY["sampling"])
    log_post = online_log_posterior(paths["log_posterior_init"].values,
                                    gmm.path_log_likelihoods(mix, chain, paths["x"].values, "exact", 0))
    expected = dec.decision_times(np.exp(log_post), chain.times, 0.9)
    got = replay_gmm_posterior(TINY, stored, 0.9, chunk=7)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    broken = stored.copy(deep=True)
    broken["entropy"][3, 5] += 0.01
    with pytest.raises(InputError, match="do not reproduce"):
        replay_gmm_posterior(TINY, broken, 0.9)


def test_decisions_stage_and_figure(tiny_run):
    out = tiny_run / "decisions.nc"
    options = dict(dec.DEFAULTS, bootstrap_resamples=200)
    decisions_stage(TINY, "tiny", tiny_run / "summary.nc", tiny_run / "posterior.nc", out, options,
                            figure=tiny_run / "figures" / "decisions.png", dpi=50)
    assert (tiny_run / "figures" / "decisions.png").stat().st_size > 1000
    ds = xr.open_dataset(out).load()
    for name in ("decision_time_median", "decision_time_ci_low", "decision_time_ci_high", "entropy_rate_peak_time",
                 "entropy_rate_peak_time_ci_low", "entropy_rate_peak_time_ci_high", "entropy_rate_peak_time_exact",
                 "peak_minus_speciation", "partition_rate_peak_time_exact"):
        assert ds[name].dims == (("partition",) if name.startswith("partition") else ("class",)), name
        assert {"long_name", "units"} <= set(ds[name].attrs), name
    assert ds.sizes["traj"] == 120 and list(ds["class"].values) == ["a", "b", "c"]
    ok = np.isfinite(ds["decision_time_median"])
    assert ok.all()
    assert np.all((ds["decision_time_ci_low"] <= ds["decision_time_median"])
                  & (ds["decision_time_median"] <= ds["decision_time_ci_high"]))
    summary = xr.open_dataset(tiny_run / "summary.nc")
    # the peaks come from the Rao-Blackwellised curves, which posterior.nc carries
    assert "entropy_rate_rb" in summary and "Rao-Blackwellised" in ds.attrs["peak_curves"]
    peaks = summary["time"].values[summary["entropy_rate_rb"].values.argmax(1)]
    np.testing.assert_array_equal(ds["entropy_rate_peak_time"], peaks)
    # The pairwise table: row minus column, antisymmetric, its interval around it, "resolved" = excludes 0.
    diff = ds["peak_time_difference"]
    assert diff.dims == ("class", "class_b") and list(ds["class_b"].values) == ["a", "b", "c"]
    np.testing.assert_array_equal(diff, peaks[:, None] - peaks[None, :])
    lo, hi = ds["peak_time_difference_ci_low"].values, ds["peak_time_difference_ci_high"].values
    np.testing.assert_allclose(lo, -hi.T)
    np.testing.assert_array_equal(ds["peak_time_difference_resolved"], (lo > 0) | (hi < 0))
    assert ds.attrs["peak_curves"].startswith("entropy_rb: ")
    lam = speciation.mixture_variance(stages.mixture_from_spec(TINY))
    assert ds.attrs["speciation_eigenvalue"] == pytest.approx(lam)
    assert ds.attrs["speciation_time"] == pytest.approx(
        speciation.ou_time_to_step(schedule_from_spec(TINY).alpha_bar, 0.5 * np.log(lam)))
    # the decisions' rate peaks are the profiles' (one place): the argmax of the rate drawn, with the interval of
    # the bands' replicates' peaks
    assert "partition_rate_peak_time" not in ds
    part_peaks = summary["time"].values[summary["partition_entropy_rate_rb"].values.argmax(1)]
    np.testing.assert_array_equal(summary["partition_rate_peak_time"], part_peaks)
    assert np.all(summary["partition_rate_peak_time_ci_low"] <= summary["partition_rate_peak_time_ci_high"])
    fig = plotting.plot_decisions(ds, profiles=summary)
    ax = fig.axes[0]
    assert {c.get_gid() for c in ax.collections} >= {"median", "peak", "peak:exact", "partition_peak",
                                                     "partition_peak:exact"}
    assert len([line for line in ax.lines if line.get_gid() == "partition_peak:ci"]) == summary.sizes["partition"]
    assert any(line.get_gid() == "speciation" for line in ax.lines)
    (matrix,) = [a for a in fig.axes if any(c.get_gid() == "difference" for c in a.collections)]
    assert len(matrix.texts) == 6  # one number per ordered pair of the 3 classes
    assert {tick.get_text() for tick in matrix.get_yticklabels()} == {"a", "b", "c"}
    plotting.save_figure(fig, tiny_run / "decisions.png", dpi=60)
    assert (tiny_run / "decisions.png").stat().st_size > 1000


def test_decisions_take_the_peaks_from_the_rao_blackwellised_curves(tiny_run):
    """With entropy_rb in the per-trajectory file, the peak times, their intervals and the pairwise table come
    from it (here: curves that step at a known time per class), and the attributes say so."""
    with xr.open_dataset(tiny_run / "posterior.nc") as stored:
        stored = stored.load()
    times = stored["time"].values
    centre = np.array([20, 50, 80])[stored["label"].values]
    rb = 1 / (1 + np.exp(-(times[None, :] - centre[:, None]) / 4.0))
    stored.assign(entropy_rb=(("traj", "time"), rb)).to_netcdf(tiny_run / "posterior_rb.nc")
    out = tiny_run / "decisions_rb.nc"
    decisions_stage(TINY, "tiny", tiny_run / "summary.nc", tiny_run / "posterior_rb.nc", out,
                            dict(dec.DEFAULTS, bootstrap_resamples=100))
    ds = xr.open_dataset(out).load()
    np.testing.assert_array_equal(ds["entropy_rate_peak_time"], [20, 50, 80])
    np.testing.assert_array_equal(ds["entropy_rate_peak_time_ci_low"], [20, 50, 80])  # no spread between curves
    np.testing.assert_array_equal(ds["peak_time_difference"][0], [0, -30, -60])
    assert ds["peak_time_difference_resolved"].values.sum() == 6
    assert ds.attrs["peak_curves"].startswith("entropy_rb: Rao-Blackwellised")


def test_decisions_stage_refuses_another_configuration(tiny_run):
    other = copy.deepcopy(TINY)
    other["sampling"]["seed"] = 5
    with pytest.raises(InputError, match="another configuration"):
        decisions_stage(other, "tiny", tiny_run / "summary.nc", tiny_run / "posterior.nc",
                                tiny_run / "other.nc", dec.DEFAULTS)


def test_ddpm_decisions_from_trajectories_file(tmp_path):
    """DDPM experiments read the posterior of every trajectory from trajectories.nc; speciation from the data."""
    spec = {"kind": "ddpm", "data": {"name": "digits", "classes": [0, 1]}, "schedule": {"name": "linear", "T": 50},
            "sampling": {"steps": 5, "trajectories_per_class": 2}, "analysis": {"rate_smoothing": 0}}
    attrs = {"config_hash": experiment_hash(spec), "T": 50}
    post = posterior([[0.99, 0.95, 0.5, 0.5, 0.5, 0.5], [0.97, 0.6, 0.5, 0.5, 0.5, 0.5],
                      [0.01, 0.05, 0.08, 0.5, 0.5, 0.5], [0.3, 0.4, 0.5, 0.5, 0.5, 0.5]])
    entropy = -(post * np.log2(post)).sum(-1)
    labels = np.array([0, 0, 1, 1])
    coords = {"time": TIMES, "class": ["0", "1"]}
    write_netcdf(xr.Dataset({"posterior": (("traj", "time", "class"), post), "entropy": (("traj", "time"), entropy),
                             "label": ("traj", labels)}, coords=coords, attrs=attrs), tmp_path / "trajectories.nc")
    rate = entropy_rate(TIMES / 50, np.stack([entropy[:2].mean(0), entropy[2:].mean(0)]))
    write_netcdf(xr.Dataset({"entropy_rate": (("class", "time"), rate), "prior": ("class", [0.5, 0.5])},
                            coords=coords, attrs=attrs), tmp_path / "summary.nc")
    out = tmp_path / "decisions.nc"
    decisions_stage(spec, "d", tmp_path / "summary.nc", tmp_path / "trajectories.nc", out,
                            dict(dec.DEFAULTS, bootstrap_resamples=100))
    ds = xr.open_dataset(out).load()
    np.testing.assert_array_equal(ds["decision_time"], [10, 0, 20, np.nan])
    np.testing.assert_array_equal(ds["final_class"], [0, 0, 1, 1])
    np.testing.assert_allclose(ds["undecided_fraction"], [0, 0.5])
    assert ds["decision_time_median"].values.tolist() == [5.0, 20.0]
    assert ds.attrs["speciation_eigenvalue"] > 1 and "entropy_rate_peak_time_exact" not in ds
    plotting.plot_decisions(ds)


def test_summarize_merges_the_per_class_statistics(tiny_run):
    """summary.nc = the profiles + the per-class decision statistics (NaN kept for an undecided class); a study
    file whose classes differ from the profiles' is refused."""
    out = tiny_run / "decisions_for_summary.nc"
    decisions_stage(TINY, "tiny", tiny_run / "summary.nc", tiny_run / "posterior.nc", out,
                            dict(dec.DEFAULTS, bootstrap_resamples=50))
    with xr.open_dataset(out) as d:
        d = d.load()
    d["decision_time_median"][1] = np.nan  # as for a class none of whose trajectories is decided
    d.to_netcdf(tiny_run / "with_nan.nc")
    stages.summarize(TINY, "tiny", tiny_run / "summary.nc", tiny_run / "merged.nc",
                     {"decisions": tiny_run / "with_nan.nc"})
    merged = xr.open_dataset(tiny_run / "merged.nc").load()
    profiles = xr.open_dataset(tiny_run / "summary.nc").load()
    xr.testing.assert_equal(merged[list(profiles.data_vars)], profiles[list(profiles.data_vars)])
    np.testing.assert_array_equal(merged["decision_time_median"], d["decision_time_median"])
    np.testing.assert_array_equal(merged["partition_rate_peak_time_exact"], d["partition_rate_peak_time_exact"])
    assert "traj" not in merged.dims and merged.attrs["speciation_time"] == d.attrs["speciation_time"]
    for name in merged.coords:  # the profiles' coordinates, with their attributes, are kept
        assert merged[name].attrs == profiles[name].attrs, name
    d.assign_coords({"class": ["x", "y", "z"]}).to_netcdf(tiny_run / "other_classes.nc")
    with pytest.raises(InputError, match="'class' coordinate differs"):
        stages.summarize(TINY, "tiny", tiny_run / "summary.nc", tiny_run / "bad.nc",
                         {"decisions": tiny_run / "other_classes.nc"})
    assert not (tiny_run / "bad.nc").exists()


def test_one_vs_rest_decision_times_count_only_trajectories_decided_for_their_class():
    """A trajectory whose P(c | x_t) ends low was decided for the rest: it has no decision time for c (it used to
    count, at the time 1 - P crossed the threshold, into the class's median)."""
    times = np.arange(5.0)  # ascending: index 0 is the end of generation
    p = np.array([[0.99, 0.97, 0.9, 0.6, 0.5],    # decided for c at t = 2
                  [0.01, 0.02, 0.05, 0.4, 0.5],   # decided for the rest at t = 2
                  [0.7, 0.6, 0.55, 0.5, 0.5]])    # never decided
    dt, for_class = dec.one_vs_rest_decision_times(p, times, 0.8)
    np.testing.assert_array_equal(np.isnan(dt), [False, True, True])
    assert dt[0] == 2.0 and for_class.tolist() == [True, False, True]
