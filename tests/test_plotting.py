"""Figures from synthetic summary datasets that follow the summary.nc contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from seminfo import plotting

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def make_summary(K=4, G=101, T=1000, partitions=True, exact=True, examples=3, filmstrip=False, channels=1, seed=0):
    """A summary Dataset with sigmoid-shaped entropy profiles: class k decides around t_k, sharper for larger k."""
    rng = np.random.default_rng(seed)
    time = np.unique(np.linspace(0, T, G).round().astype(int))
    t = time / T
    alpha_bar = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    with np.errstate(divide="ignore"):
        log_snr = np.log(alpha_bar) - np.log1p(-np.minimum(alpha_bar, 1 - 1e-300))
    log_snr[0] = np.inf
    h_max = np.log2(K)

    centres = np.linspace(0.35, 0.65, K)
    widths = np.linspace(0.06, 0.03, K)
    s = _sigmoid((t[None, :] - centres[:, None]) / widths[:, None])  # (K, G): 0 at data, 1 at noise
    h_exact = h_max * s
    rate_exact = h_max * s * (1 - s) / widths[:, None]
    sem = 0.01 + 0.02 * s * (1 - s)
    h_mc = np.clip(h_exact + rng.normal(0, 1, h_exact.shape) * sem, 0, h_max)
    rate_mc = rate_exact * (1 + 0.08 * rng.normal(size=rate_exact.shape))
    marginal, marginal_exact = h_mc.mean(0), h_exact.mean(0)

    def attrs(long_name, units):
        return {"long_name": long_name, "units": units}

    data = {
        "entropy": (("class", "time"), h_mc, attrs("class-conditional entropy H_k(t)", "bit")),
        "entropy_sem": (("class", "time"), sem, attrs("standard error of H_k(t)", "bit")),
        "entropy_var": (("class", "time"), (sem * 30) ** 2, attrs("variance of h(t) across trajectories", "bit^2")),
        "entropy_rate": (("class", "time"), rate_mc, attrs("entropy rate dH_k/dt", "bit per unit time")),
        "posterior_true": (("class", "time"), 1 / K + (1 - 1 / K) * (1 - s), attrs("P(true class | x_t)", "1")),
        "entropy_marginal": (("time",), marginal, attrs("conditional entropy H(c | x_t)", "bit")),
        "mutual_information": (("time",), h_max - marginal, attrs("mutual information I(c; x_t)", "bit")),
    }
    if exact:
        data["entropy_exact"] = (("class", "time"), h_exact, attrs("exact H_k(t)", "bit"))
        data["entropy_rate_exact"] = (("class", "time"), rate_exact, attrs("exact dH_k/dt", "bit per unit time"))
        data["entropy_marginal_exact"] = (("time",), marginal_exact, attrs("exact H(c | x_t)", "bit"))
    coords = {
        "class": [f"c{k}" for k in range(K)],
        "time": ("time", time),
        "t": ("time", t),
        "alpha_bar": ("time", alpha_bar),
        "log_snr": ("time", log_snr),
    }
    if partitions:
        half = K // 2
        sides = [(list(range(half)), list(range(half, K))), ([0], [1])]
        names = ["coarse", "fine"]
        ps = _sigmoid((t[None, :] - np.array([[0.7], [0.3]])) / 0.05)
        coords["partition"] = names
        data["partition_entropy"] = (("partition", "time"), np.clip(ps + 0.01 * rng.normal(size=ps.shape), 0, 1),
                                     attrs("decision entropy H(z | x_t)", "bit"))
        data["partition_entropy_sem"] = (("partition", "time"), 0.01 + 0 * ps, attrs("SEM of H(z | x_t)", "bit"))
        data["partition_entropy_rate"] = (("partition", "time"), ps * (1 - ps) / 0.05,
                                          attrs("decision entropy rate", "bit per unit time"))
        data["partition_side_a"] = (("partition",), [",".join(f"c{k}" for k in a) for a, _ in sides])
        data["partition_side_b"] = (("partition",), [",".join(f"c{k}" for k in b) for _, b in sides])
        if exact:
            data["partition_entropy_exact"] = (("partition", "time"), ps, attrs("exact H(z | x_t)", "bit"))
    if examples:
        label = np.arange(examples) % K
        walk = np.cumsum(rng.normal(0, 0.15, (examples, G, K))[:, ::-1], axis=1)[:, ::-1]
        logits = 8 * (1 - s.T[None]) * np.eye(K)[label][:, None, :] + walk * (1 - t[None, :, None])
        post = np.exp(logits - logits.max(-1, keepdims=True))
        post /= post.sum(-1, keepdims=True)
        data["example_posterior"] = (("example", "time", "class"), post, attrs("class posterior P(c | x_t)", "1"))
        data["example_label"] = (("example",), label)
        if filmstrip:
            snapshot_time = time[np.linspace(0, G - 1, 6).round().astype(int)]
            yy, xx = np.mgrid[0:16, 0:16] / 15.0
            frames = np.empty((examples, len(snapshot_time), channels, 16, 16))
            for e in range(examples):
                target = np.exp(-((xx - 0.3 - 0.1 * label[e]) ** 2 + (yy - 0.5) ** 2) / 0.03)
                for j, st in enumerate(snapshot_time):
                    w = 1 - st / T
                    frames[e, j] = np.clip(w * target + (1 - w) * rng.uniform(0.3, 0.6, (channels, 16, 16)), 0, 1)
            data["filmstrip_x0"] = (("example", "snapshot", "channel", "y", "x"), frames,
                                    attrs("predicted x_0", "1"))
            data["snapshot_time"] = (("snapshot",), snapshot_time)
    return xr.Dataset(data, coords=coords, attrs={"experiment": "synthetic", "kind": "gmm", "T": T})


def with_bands(ds, rb=False, half_width=0.3):
    """The summary with the bootstrap bands summary.nc carries (± ``half_width`` around each curve, so that a rate
    near 0 is unresolved), and with ``rb`` Rao-Blackwellised rates (half the plain ones, to tell them apart)."""
    out = ds.copy()
    if rb:
        for name in ("entropy_rate", "partition_entropy_rate"):
            if name in out:
                out[f"{name}_rb"] = (out[name].dims, 0.5 * out[name].values,
                                     {"long_name": f"{out[name].attrs['long_name']}, Rao-Blackwellised",
                                      "units": "bit per unit time"})
    for name in ("entropy", "entropy_marginal", "mutual_information", "entropy_rate", "partition_entropy",
                 "partition_entropy_rate", "entropy_rate_rb", "partition_entropy_rate_rb"):
        if name in out:
            out[f"{name}_ci_low"] = out[name] - half_width
            out[f"{name}_ci_high"] = out[name] + half_width
    return out


def _bands(ax):
    return {c.get_gid(): c for c in ax.collections if (c.get_gid() or "").startswith("band:")}


def _legend(fig):
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def make_samples(K=4, per_class=5, channels=1, size=12, seed=0):
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(K), per_class)
    image = rng.uniform(0, 1, (label.size, channels, size, size))
    return xr.Dataset(
        {"image": (("sample", "channel", "y", "x"), image), "label": (("sample",), label)},
        attrs={"class_names": json.dumps([f"c{k}" for k in range(K)])},
    )


def _gid_lines(ax, prefix):
    return [line for line in ax.lines if (line.get_gid() or "").startswith(prefix)]


@pytest.mark.parametrize("exact", [True, False])
def test_entropy_lines(exact):
    K = 4
    fig = plotting.plot_entropy(make_summary(K=K, exact=exact))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(_gid_lines(ax, "mc:")) == K
    assert len(_gid_lines(ax, "exact:")) == (K if exact else 0)
    assert len(_gid_lines(ax, "marginal")) == (2 if exact else 1)
    data_lines = [line for line in ax.lines if line.get_gid()]
    assert len(data_lines) == (2 * K + 2 if exact else K + 1)
    assert ax.get_ylim() == pytest.approx((0.0, 1.03 * np.log2(K)))
    assert ax.get_xlim() == (0.0, 1.0)
    assert "bit" in ax.get_ylabel()


def test_class_colours_match_across_figures():
    ds = make_summary(K=3)
    expected = [to_rgba(c) for c in plotting.class_colors(3)]
    for fig in (plotting.plot_entropy(ds), plotting.plot_entropy_rate(ds)):
        assert [to_rgba(line.get_color()) for line in _gid_lines(fig.axes[0], "mc:")] == expected


@pytest.mark.parametrize("exact", [True, False])
def test_entropy_rate_lines_and_peaks(exact):
    K = 3
    ds = make_summary(K=K, exact=exact)
    fig = plotting.plot_entropy_rate(ds)
    ax = fig.axes[0]
    assert len(_gid_lines(ax, "mc:")) == K
    assert len(_gid_lines(ax, "exact:")) == (K if exact else 0)
    (peaks,) = [c for c in ax.collections if c.get_gid() == "peaks"]
    expected = ds["t"].values[ds["entropy_rate"].argmax("time").values]
    np.testing.assert_allclose(np.sort(peaks.get_offsets()[:, 0]), np.sort(expected))
    assert "bit per unit time" in ax.get_ylabel()


def test_entropy_draws_the_bootstrap_band_else_two_sem():
    ds = make_summary(K=3)
    fig = plotting.plot_entropy(with_bands(ds))
    ax, ax_mi = fig.axes[:2]
    bands = _bands(ax)
    assert set(bands) == {"band:c0", "band:c1", "band:c2", "band:marginal"}
    assert set(_bands(ax_mi)) == {"band:mutual_information"}
    lows = bands["band:c1"].get_paths()[0].vertices[:, 1]
    assert lows.min() == pytest.approx(float((ds["entropy"][1] - 0.3).min()))
    assert "95% bootstrap band" in _legend(fig) and "± 2 SEM" not in _legend(fig)
    fig = plotting.plot_entropy(ds)  # a dataset without bands: ± 2 SEM, and the legend says so
    assert "± 2 SEM" in _legend(fig) and "95% bootstrap band" not in _legend(fig)
    assert "band:marginal" not in _bands(fig.axes[0])


@pytest.mark.parametrize("rb", [True, False])
def test_rate_figures_draw_the_rao_blackwellised_rate_when_present(rb):
    ds = with_bands(make_summary(K=3), rb=rb)
    name, part = ("entropy_rate_rb", "partition_entropy_rate_rb") if rb else ("entropy_rate", "partition_entropy_rate")
    ax = plotting.plot_entropy_rate(ds).axes[0]
    for k, line in enumerate(_gid_lines(ax, "mc:")):
        np.testing.assert_array_equal(line.get_ydata(), ds[name].values[k])
    assert set(_bands(ax)) == {"band:c0", "band:c1", "band:c2"}
    assert ("Rao-Blackwellised" in ax.get_ylabel()) == rb and ("Rao-Blackwellised" in ax.get_title(loc="left")) == rb
    fig = plotting.plot_rate_heatmap(ds)
    ax, cbar = fig.axes
    mesh, unresolved = ax.collections[:2]
    np.testing.assert_array_equal(mesh.get_array().reshape(3, -1), ds[name].values)
    assert unresolved.get_gid() == "unresolved"
    faded = ~np.ma.getmaskarray(unresolved.get_array()).reshape(3, -1)
    np.testing.assert_array_equal(faded, np.abs(ds[name].values) <= 0.3)
    assert ("Rao-Blackwellised" in cbar.get_ylabel()) == rb
    bottom = plotting.plot_partitions(ds).axes[1]
    for i, line in enumerate(_gid_lines(bottom, "mc:")):
        np.testing.assert_array_equal(line.get_ydata(), ds[part].values[i])
    assert len(_bands(bottom)) == 2 and ("Rao-Blackwellised" in bottom.get_ylabel()) == rb


def test_rate_heatmap_rows_and_colorbar():
    K = 4
    fig = plotting.plot_rate_heatmap(make_summary(K=K))
    ax, cbar = fig.axes
    assert [tick.get_text() for tick in ax.get_yticklabels()] == [f"c{k}" for k in range(K)]
    assert "bit per unit time" in cbar.get_ylabel()


def test_partitions():
    ds = make_summary(K=4, exact=True)
    fig = plotting.plot_partitions(ds)
    top, bottom = fig.axes
    assert len(_gid_lines(top, "mc:")) == 2 and len(_gid_lines(top, "exact:")) == 2
    assert len(_gid_lines(bottom, "mc:")) == 2
    titles = [line.get_gid()[3:] for line in _gid_lines(top, "mc:")]
    assert titles == ["coarse: {c0,c1} vs {c2,c3}", "fine: {c0} vs {c1}"]
    legend_texts = [text.get_text() for text in fig.legends[0].get_texts()]
    assert titles[0] in legend_texts


def test_partitions_without_exact_and_absent():
    fig = plotting.plot_partitions(make_summary(exact=False))
    assert not _gid_lines(fig.axes[0], "exact:")
    assert plotting.plot_partitions(make_summary(partitions=False)) is None


def test_examples_small_multiples():
    K, E = 4, 5
    fig = plotting.plot_examples(make_summary(K=K, examples=E))
    assert len(fig.axes) == E
    for ax in fig.axes:
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == K
    assert fig.axes[0].get_title() == "generated as c0"
    assert plotting.plot_examples(make_summary(examples=0)) is None


def test_filmstrip():
    K, E = 3, 2
    ds = make_summary(K=K, examples=E, filmstrip=True)
    fig = plotting.plot_filmstrip(ds)
    S = ds.sizes["snapshot"]
    assert len(fig.axes) == 2 * E * S  # one image and one bar chart per frame
    assert len(fig.axes[0].images) == 1 and len(fig.axes[1].patches) == K
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "t/T = 1.00" and titles[-1] == "t/T = 0.00"  # generation order
    assert plotting.plot_filmstrip(make_summary()) is None


def test_filmstrip_rgb():
    ds = make_summary(K=3, examples=2, filmstrip=True, channels=3)
    fig = plotting.plot_filmstrip(ds)
    assert fig.axes[0].images[0].get_array().shape[-1] == 3


def test_sample_grid():
    K = 4
    fig = plotting.plot_sample_grid(make_samples(K=K, per_class=3), n_per_class=4)
    assert len(fig.axes) == K
    assert [ax.get_ylabel() for ax in fig.axes] == [f"c{k}" for k in range(K)]
    assert plotting.plot_sample_grid(None) is None


def test_ten_classes():
    ds = make_summary(K=10, examples=10, filmstrip=True)
    for func in (plotting.plot_entropy, plotting.plot_entropy_rate, plotting.plot_rate_heatmap,
                 plotting.plot_partitions, plotting.plot_examples, plotting.plot_filmstrip):
        assert isinstance(func(ds), Figure)
    assert len(_gid_lines(plotting.plot_entropy(ds).axes[0], "mc:")) == 10


def test_write_figures(tmp_path):
    summary, samples = tmp_path / "summary.nc", tmp_path / "samples.nc"
    make_summary(K=3, examples=2, filmstrip=True).to_netcdf(summary)
    make_samples(K=3).to_netcdf(samples)
    out = tmp_path / "figures"
    paths = plotting.write_figures(summary, out, samples_path=samples, dpi=40)
    assert [p.name for p in paths] == [f"{name}.png" for name in plotting.FIGURE_NAMES]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_write_figures_skips_absent(tmp_path):
    summary = tmp_path / "summary.nc"
    make_summary(partitions=False, examples=0).to_netcdf(summary)
    paths = plotting.write_figures(summary, tmp_path / "figs", formats=("png", "pdf"), dpi=40)
    assert {p.name for p in paths} == {f"{n}.{f}" for n in ("entropy", "entropy_rate", "rate_heatmap")
                                       for f in ("png", "pdf")}
    assert len(list((tmp_path / "figs").iterdir())) == 6


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    fig = plotting.plot_entropy(make_summary())

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, "savefig", fail)
    with pytest.raises(KeyboardInterrupt):
        plotting._save_atomic(fig, tmp_path / "entropy.png", "png", 40)
    assert list(tmp_path.iterdir()) == []


def test_partition_sides_from_coordinate_attrs():
    ds = make_summary(K=4).drop_vars(["partition_side_a", "partition_side_b"])
    ds = ds.assign_coords(partition=["c0,c1|c2,c3", "fine"])
    ds["partition"].attrs.update(side_a=["c0,c1", "c0"], side_b=["c2,c3", "c1"])
    fig = plotting.plot_partitions(ds)
    assert [line.get_gid() for line in _gid_lines(fig.axes[0], "mc:")] == [
        "mc:{c0,c1} vs {c2,c3}", "mc:fine: {c0} vs {c1}"]


def test_tolerates_nan_and_minimal_dataset():
    """No ``t`` coordinate, no SEM, no mutual information, and NaN where the last step allows no Bayes update."""
    ds = make_summary(K=3, exact=False, partitions=False).drop_vars(["t", "entropy_sem", "mutual_information"])
    ds["entropy_rate"][:, 0] = np.nan
    ds["entropy"][:, 0] = np.nan
    for func in (plotting.plot_entropy, plotting.plot_entropy_rate, plotting.plot_rate_heatmap):
        fig = func(ds)
        assert np.isfinite(fig.axes[0].get_ylim()).all()
        assert fig.axes[0].get_xlim() == (0.0, 1.0)


@pytest.mark.parametrize("mode", ["log_snr", "sigma"])
def test_a_model_independent_time_axis(mode):
    """On the log-SNR (or sigma) axis every curve sits at its grid time's log SNR, mapped onto [0, 1] from data to
    noise, and the ticks are labelled in log SNR (sigma); a sigma-grid model (model.source python) gets it by default."""
    ds = make_summary(K=3)
    ds.attrs["plot_time_axis"] = mode
    fig = plotting.plot_entropy(ds)
    ax = fig.axes[0]
    x = _gid_lines(ax, "mc:")[0].get_xdata()
    lam = ds["log_snr"].values
    finite = np.isfinite(lam)
    hi, lo = lam[finite].max(), lam[finite].min()
    np.testing.assert_allclose(x[finite], (hi - lam[finite]) / (hi - lo))
    assert x[~finite].tolist() == [0.0]  # alpha_bar = 1 (data) at the left edge
    assert ("log SNR" if mode == "log_snr" else "σ") in ax.get_xlabel()
    tick = ax.xaxis.get_major_formatter()(0.0, 0)
    assert float(tick) == pytest.approx(hi if mode == "log_snr" else np.exp(-hi / 2), rel=0.05)
    default = make_summary(K=3)
    default.attrs["model_source"] = "python"
    assert "log SNR" in plotting.plot_entropy(default).axes[0].get_xlabel()
    assert "t/T" in plotting.plot_entropy(make_summary(K=3)).axes[0].get_xlabel()


def test_key_numbers_of_the_report_captions(tmp_path):
    """The captions' key numbers: each class's and each decision's rate peak with its interval and the exact value
    where there is one, the median decision times with theirs; NaN as n/a; nothing for an absent summary.nc."""
    import xarray as xr

    from seminfo.plotting.captions import caption_numbers, key_numbers

    ds = xr.Dataset(
        {"entropy_rate_peak_time": ("class", [12.0, np.nan]), "entropy_rate_peak_time_ci_low": ("class", [10.0, 18]),
         "entropy_rate_peak_time_ci_high": ("class", [15.4, 22]), "entropy_rate_peak_time_exact": ("class", [11, 20]),
         "decision_time_median": ("class", [30.5, 41]), "decision_time_ci_low": ("class", [28.0, 39]),
         "decision_time_ci_high": ("class", [33.0, 44]),
         "partition_rate_peak_time": ("partition", [7]), "partition_rate_peak_time_ci_low": ("partition", [5.0]),
         "partition_rate_peak_time_ci_high": ("partition", [9.0])},
        coords={"class": ["a", "tiger cat"], "partition": ["a_vs_b"],
                "time": ("time", [0, 50, 100], {"long_name": "DDPM step (0 = data, T = noise)"})},
        attrs={"T": 100})
    out = key_numbers(ds)
    assert out["class_peaks"] == ("Entropy-rate peak of each class: ``a`` 12 [10, 15] (exact 11); ``tiger cat`` n/a "
                                  "[18, 22] (exact 20).")
    assert out["decision_times"] == "Median decision time of each class: ``a`` 30 [28, 33]; ``tiger cat`` 41 [39, 44]."
    assert out["decision_peaks"] == "Rate peak of each binary decision: ``a_vs_b`` 7 [5, 9]."
    assert out["units"].startswith("Times are in DDPM step (0 = data, T = noise), T = 100;")
    ds.drop_vars(["partition_rate_peak_time", "decision_time_median"]).to_netcdf(tmp_path / "summary.nc")
    read = caption_numbers(tmp_path / "summary.nc")
    assert read["class_peaks"] == out["class_peaks"] and read["decision_peaks"] == read["decision_times"] == ""
    assert set(caption_numbers(tmp_path / "absent.nc").values()) == {""}
