"""analyze end to end on synthetic ground truth, and against outside references."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.analysis.analyze import analyze
from tracekit.analysis.iterations import autocorr_period_s, autocorrelation, iteration_table
from tracekit.analysis.phases import detect
from tracekit.analysis.rules import load_rules
from tracekit.analysis.spectrum import welch_spectrum
from tracekit.errors import InputError
from tracekit.quality import DataQuality
from tracekit.synth import inference, training
from tracekit.traceset import TraceSet, gpu_arrays

from tests import naive


def _traceset(result) -> TraceSet:
    s = result.samples.drop([c for c in result.samples.columns if c.startswith("truth")])
    q = DataQuality(rows_read=s.height, rows_used=s.height)
    return TraceSet(s, result.topology, q, [{"path": "synth", "format": "synth", "power": result.power.to_dict()}])


def _accuracy(result, workload: str) -> float:
    ts = _traceset(result)
    det = detect(gpu_arrays(ts.samples, ts.topology), workload=workload, effective_period_s=0.001,
                 sample_period_s=0.001)
    codes = {int(k): v for k, v in result.truth["phase_codes"].items()} if isinstance(
        next(iter(result.truth["phase_codes"])), str) and next(iter(result.truth["phase_codes"])).isdigit() else {
        int(v): k for k, v in result.truth["phase_codes"].items()}
    truth = np.array([codes[c] for c in range(max(codes) + 1)])[result.samples.get_column("truth_phase").to_numpy()]
    if workload == "training":  # checkpoint and idle sit at the low level; ramps are transitions
        truth = np.where(np.isin(truth, ["checkpoint", "idle"]), "communication", truth)
    pred = np.array(list(det.names) + ["none"])[det.labels]
    scored = np.isin(truth, det.names)
    assert scored.mean() > 0.85
    return float((pred[scored] == truth[scored]).mean())


@pytest.fixture(scope="module")
def train():
    return training(gpus=32, seconds=25, seed=1, noise_w=25.0)


def test_training_phase_accuracy_period_straggler_checkpoints(train):
    assert _accuracy(train, "training") >= 0.98
    a = analyze(_traceset(train))
    s = a.summary()
    assert a.workload == "training"
    true_period = train.truth["iteration_period_s"]
    assert s["iterations"]["period_s"] == pytest.approx(true_period, rel=0.01)
    assert {x["gpu"] for x in train.truth["stragglers"]} <= set(s["iterations"]["stragglers"])
    dips = [e for e in s["events"] if e["kind"] == "dip"]
    for cp in train.truth["checkpoints"]:
        t_mid = np.datetime64(train.truth["start"].replace("+00:00", "")) + np.timedelta64(
            int((cp["start_s"] + cp["end_s"]) / 2 * 1e9), "ns")
        assert any(np.datetime64(e["start"][:-6]) <= t_mid <= np.datetime64(e["end"][:-6]) for e in dips), cp


@pytest.mark.parametrize("model", ["A100", "H100"])
def test_inference_phase_accuracy(model):
    r = inference(gpus=4, seconds=40, seed=3, gpu_model=model)
    assert _accuracy(r, "inference") >= 0.98
    assert analyze(_traceset(r)).workload == "inference"


def test_clock_offsets_recovered_within_one_sample():
    r = training(gpus=32, seconds=15, seed=4, host_offset_ms=30)
    a = analyze(_traceset(r), align="auto")
    est = np.array([a.offsets_s[h] for h in sorted(a.offsets_s)]) * 1e3
    true = np.array([r.truth["host_offsets_ms"][h] for h in sorted(a.offsets_s)])
    err = (est - np.median(est)) - (true - np.median(true))
    assert np.abs(err).max() < 1.0  # ms; the sampling period is 1 ms


def test_clock_offsets_from_the_middle_of_a_long_trace(monkeypatch):
    """Past ``MAX_CELLS`` grid cells the offsets come from the middle slice only; they
    are still recovered, and the slice is what the estimate saw (changing the samples
    outside it changes nothing)."""
    from tracekit.analysis import align

    r = training(gpus=32, seconds=15, seed=4, host_offset_ms=30)
    monkeypatch.setattr(align, "MAX_CELLS", 5000)
    a = analyze(_traceset(r), align="auto")
    est = np.array([a.offsets_s[h] for h in sorted(a.offsets_s)]) * 1e3
    true = np.array([r.truth["host_offsets_ms"][h] for h in sorted(a.offsets_s)])
    err = (est - np.median(est)) - (true - np.median(true))
    assert np.abs(err).max() < 1.0
    # flatten the first and last 4 s (outside the middle 5 s): same offsets
    t0 = r.samples.get_column("ts").min()
    edge = (pl.col("ts") < t0 + dt.timedelta(seconds=4)) | (pl.col("ts") > t0 + dt.timedelta(seconds=11))
    flat = r.samples.with_columns(pl.when(edge).then(pl.lit(300.0, dtype=pl.Float32)).otherwise(pl.col("power_w"))
                                  .alias("power_w"))
    b = analyze(_traceset(dataclasses.replace(r, samples=flat)), align="auto")
    assert b.offsets_s == a.offsets_s


def test_clock_offset_of_a_host_missing_from_the_window_is_reported(monkeypatch):
    """A host with no sample in the estimate's cells keeps offset 0, with a warning
    naming it (not a silent 0)."""
    from tracekit.analysis import align

    r = training(gpus=32, seconds=15, seed=4, host_offset_ms=30)
    monkeypatch.setattr(align, "MAX_CELLS", 5000)
    t0 = r.samples.get_column("ts").min()
    middle = (pl.col("ts") > t0 + dt.timedelta(seconds=4)) & (pl.col("ts") < t0 + dt.timedelta(seconds=11))
    host_gpus = r.topology.filter(pl.col("host") == "node02").get_column("gpu")
    holed = r.samples.filter(~(middle & pl.col("gpu").is_in(host_gpus.implode())))
    a = analyze(_traceset(dataclasses.replace(r, samples=holed)), align="auto")
    assert a.offsets_s["node02"] == 0.0
    assert any("node02" in w and "--align auto" in w for w in a.warnings), a.warnings
    b = analyze(_traceset(r), align="auto")
    assert not any("--align auto" in w for w in b.warnings)


def test_alignment_window():
    from tracekit.analysis.align import MAX_CELLS, MAX_SAMPLES, window

    assert window(MAX_CELLS, 1_000_000, 1e6) is None
    assert window(MAX_CELLS + 11, 1_000_000, 1e6) == (5, MAX_CELLS)
    # a coarse grid over fine samples: the window is bounded in sampling periods too
    assert window(10 * MAX_CELLS, 1_000_000_000, 1e6) == ((10 * MAX_CELLS - MAX_SAMPLES // 1000) // 2,
                                                          MAX_SAMPLES // 1000)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(8, 400), seed=st.integers(0, 2**32 - 1), lag_frac=st.floats(0, 0.25), sparse=st.booleans())
def test_best_lag_equals_the_dot_product_search(n, seed, lag_frac, sparse):
    """The FFT correlation picks the lag the direct dot products pick (an obvious
    reference: one dot product per lag), with the same sub-cell refinement."""
    from tracekit.analysis.align import _best_lag

    rng = np.random.default_rng(seed)
    a = rng.random(n) * (rng.random(n) < 0.2 if sparse else 1.0)
    b = np.roll(a, rng.integers(-n // 4, n // 4 + 1)) + rng.random(n) * 0.1
    max_lag = int(n * lag_frac)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.array([np.dot(a[k:], b[: n - k]) if k >= 0 else np.dot(a[: n + k], b[-k:]) for k in lags])
    lag, frac = _best_lag(a, b, max_lag)
    top = corr.max()
    assert corr[lag + max_lag] >= top - 1e-9 * abs(top)  # the best lag (up to ties)
    if np.sum(corr >= top - 1e-9 * abs(top)) == 1:
        assert lag == lags[np.argmax(corr)]
        k = int(np.argmax(corr))
        if 0 < k < len(lags) - 1:
            y0, y1, y2 = corr[k - 1], corr[k], corr[k + 1]
            den = y0 - 2 * y1 + y2
            if abs(den) > 1e-6 * abs(top):
                assert frac == pytest.approx(0.5 * (y0 - y2) / den, abs=1e-6)


def test_aggregation_equals_polars_group_by(train):
    """Samples on the grid: a cell's mean is the sample, so the cluster series is a
    plain sum per timestamp."""
    a = analyze(_traceset(train), windows_s=(1.0,))
    s = train.samples
    ref = s.group_by("ts").agg(pl.col("power_w").cast(pl.Float64).sum().alias("ref"), pl.len().alias("n")).sort("ts")
    got = a.cluster_power.with_columns(pl.col("ts").dt.replace_time_zone("UTC")).join(ref, on="ts", how="inner")
    full = got.filter(pl.col("n") == s.get_column("gpu").n_unique())
    assert full.height > 0.9 * ref.height
    np.testing.assert_allclose(full.get_column("power_w").to_numpy(), full.get_column("ref").to_numpy(), rtol=1e-5)


def test_energy_conserved_between_segments_and_grid(train):
    a = analyze(_traceset(train))
    grid_energy = float(np.nansum(a.cluster_power.get_column("power_w").to_numpy()) * 1e-3)
    seg_energy = float(a.phases.get_column("energy_j").sum())
    assert grid_energy == pytest.approx(seg_energy, rel=1e-6)


def test_spectrum_matches_scipy_and_finds_the_tone():
    from scipy.signal import welch

    step = 0.01
    t = np.arange(6000) * step
    x = 1000 + 300 * np.sign(np.sin(2 * np.pi * 0.8 * t)) + np.random.default_rng(0).normal(0, 5, len(t))
    spec = welch_spectrum(x, step)
    f, p = welch(x, fs=1 / step, nperseg=2000, detrend="constant")
    np.testing.assert_allclose(spec.psd_w2_per_hz, p, rtol=1e-9)
    assert spec.dominant_hz == pytest.approx(0.8, abs=0.05)
    assert spec.band_share > 0.95


def test_rules_and_fail_on_exit_codes(tmp_path, train):
    from tracekit.cli import cli
    from tracekit.io.dataset import DatasetWriter

    with DatasetWriter(tmp_path / "ds", topology=train.topology) as w:
        w.write(train.samples)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "5 s change"\nkind = "window_change"\nwindow = "5s"\nlimit_w = 5000\n')
    runner = CliRunner()
    r = runner.invoke(cli, ["analyze", str(tmp_path / "ds"), "--json", "--rules", str(rules)])
    assert r.exit_code == 1, r.output
    summary = json.loads(r.output)
    assert summary["violations"] and summary["violations"][0]["rule"] == "5 s change"
    assert summary["schema"] == "tracekit.analyze/1"
    for key in ("dataset", "data_quality", "workload", "phases", "iterations", "levels", "events"):
        assert key in summary
    c = summary["levels"]["cluster"]["cluster"]
    for key in ("peak_w", "mean_w", "min_w", "p99_w", "peak_over_tdp", "swing", "ramp_up_w_per_s",
                "ramp_down_w_per_s", "dominant_hz", "band_share", "coincidence_factor"):
        assert key in c
    r = runner.invoke(cli, ["analyze", str(tmp_path / "ds"), "--json", "--fail-on", "peak_over_tdp>2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["analyze", str(tmp_path / "ds"), "--json", "--fail-on", "peak_over_tdp>0.5"])
    assert r.exit_code == 1
    out = tmp_path / "out"
    r = runner.invoke(cli, ["analyze", str(tmp_path / "ds"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} >= {"summary.json", "report.html", "phases.parquet",
                                                "cluster_power.parquet", "swings.parquet", "events.parquet",
                                                "gpu_stats.parquet", "iterations.parquet"}
    assert "<img src=\"data:image/png;base64," in (out / "report.html").read_text()


def test_bad_rules_file_names_it(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[[rule]]\nkind = "window_change"\nwindow = "5s"\n')
    with pytest.raises(InputError, match=r"r.toml: rule 1: missing limit_w"):
        load_rules(p)


@settings(max_examples=60, deadline=None)
@given(gpus=st.lists(st.text("abcxyz", min_size=1, max_size=3), min_size=1, max_size=5, unique=True),
       data=st.data(), period_ms=st.sampled_from([10, 37, 100]), shuffle=st.booleans())
def test_iteration_table_equals_naive_grouping(gpus, data, period_ms, shuffle):
    """The run-length iteration table = a dict group-by of the compute segments (any
    GPU names and row order; exact halves of a period included)."""
    rows = []
    for g in gpus:
        t = data.draw(st.integers(0, 50)) * 5_000_000
        for _ in range(data.draw(st.integers(0, 12))):
            d = data.draw(st.integers(1, 40)) * 2_500_000  # 2.5 ms steps: halves of 10 ms and 100 ms periods
            rows.append((g, t, t + d, data.draw(st.sampled_from(["compute", "communication"]))))
            t += d
    if shuffle:
        rows = data.draw(st.permutations(rows))
    frame = pl.DataFrame(rows, schema={"gpu": pl.String, "start": pl.Int64, "end": pl.Int64, "phase": pl.String},
                         orient="row").with_columns(pl.col("start", "end").cast(pl.Datetime("ns", "UTC")))
    got = iteration_table(frame, period_ms / 1e3)
    want = naive.naive_iteration_table(rows, period_ms / 1e3)
    assert got.columns == ["iteration", "gpu", "compute_start", "compute_end", "compute_s"]
    assert got.schema["compute_start"] == pl.Datetime("ns", "UTC")
    rows_got = [(r[0], r[1], int(r[2]), int(r[3]), r[4]) for r in got.with_columns(
        pl.col("compute_start", "compute_end").dt.epoch("ns")).iter_rows()]
    assert rows_got == want


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 400), st.data())
def test_autocorrelation_equals_direct_sums(n, data):
    # every lag asked for equals the plain sum of products: no circular wrap-around
    # from the FFT's padding, whatever the length
    max_lag = data.draw(st.integers(0, n - 1))
    x = np.random.default_rng(n).normal(size=n) + np.sin(np.arange(n) / 3.0)
    ac = autocorrelation(x, max_lag)
    y = x - x.mean()
    want = np.array([np.dot(y[: n - lag], y[lag:]) for lag in range(max_lag + 1)]) / np.dot(y, y)
    np.testing.assert_allclose(ac, want, rtol=1e-9, atol=1e-12)
    assert autocorrelation(np.full(n, 3.0), max_lag) is None


def test_autocorr_period_finds_a_square_wave_period():
    rng = np.random.default_rng(3)
    cells = np.arange(120_000)
    x = np.where((cells // 533) % 2 == 0, 4e4, 1e4) + rng.normal(0, 100, len(cells))
    period, corr = autocorr_period_s(x, 0.001)
    assert period == pytest.approx(1.066, abs=0.002) and corr > 0.9
