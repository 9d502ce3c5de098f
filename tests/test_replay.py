"""replay: kernels against naive twins, identity, invariants (hypothesis), the
literature figures on synthetic traces, synchronous coupling, CLI errors and outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracekit
from tracekit.analysis.analyze import analyze
from tracekit.errors import PolicyError
from tracekit.kernels import replay as K
from tracekit.quality import DataQuality
from tracekit.replay.model import PowerModel
from tracekit.replay.policy import build_policies, parse_cap, parse_scope, parse_smoothing, parse_storage
from tracekit.schema import canonical_topology
from tracekit.synth import inference, training
from tracekit.traceset import GpuArrays, TraceSet

MS = 1_000_000


def _traceset(result) -> TraceSet:
    s = result.samples.drop([c for c in result.samples.columns if c.startswith("truth")])
    q = DataQuality(rows_read=s.height, rows_used=s.height)
    return TraceSet(s, result.topology, q, [{"path": "synth", "format": "synth", "power": result.power.to_dict()}])


def _arrays_traceset(series: list[tuple[np.ndarray, np.ndarray]], model: str = "H100-SXM") -> TraceSet:
    gpus = [f"node00/{i}" for i in range(len(series))]
    counts = [len(t) for t, _ in series]
    offsets = np.zeros(len(series) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    ts = np.concatenate([t for t, _ in series]).astype(np.int64)
    power = np.concatenate([p for _, p in series]).astype(np.float32)
    topo = canonical_topology(pl.DataFrame({"gpu": gpus, "model": [model] * len(gpus),
                                            "tdp_w": [700.0] * len(gpus)}))
    q = DataQuality(rows_read=len(ts), rows_used=len(ts))
    return TraceSet(None, topo, q, [], arrays=GpuArrays(gpus, offsets, ts, power, topo))


# --------------------------------------------------------------------------- naive twins


def _covered(ts, k, max_gap, hold):
    """(covered ns, stretchable, gap remainder ns) of sample k of one GPU."""
    if k + 1 < len(ts):
        d = int(ts[k + 1] - ts[k])
        if d <= max_gap:
            return float(d), True, 0.0
        return float(min(d, hold)), False, float(max(d - hold, 0))
    return float(hold), False, 0.0


def naive_clock_windows(ts, power, labels, betas, *, idle, cap, lock_ratio, a, g, window, max_gap, hold):
    """One GPU, no waits: plain loops over each window and a 200-step bisection on
    the window mean computed sample by sample."""
    ts = [int(t) for t in ts]
    power = [float(p) for p in power]
    win = [t // window for t in ts]
    out_p = list(power)
    out_t = [0] * len(ts)
    xs = []
    acc = 0.0

    def r(x):
        return a * x + (1 - a) * x ** g

    i = 0
    while i < len(ts):
        j = i
        while j < len(ts) and win[j] == win[i]:
            j += 1
        xl = lock_ratio

        def sample(k, x):
            c, ok, gap = _covered(ts, k, max_gap, hold)
            p = power[k]
            if math.isnan(p):
                return p, c, gap
            pl = p if xl == 1.0 else (idle + (p - idle) * r(xl) if p > idle else p)
            beta = betas[labels[k] + 1] if ok else 0.0
            if cap is not None and pl > cap and p > idle:
                return idle + (p - idle) * r(x), c * (1 + beta * (1 / x - 1)), gap
            return pl, c * (1 + beta * (1 / xl - 1)), gap

        def mean(x):
            e = t = 0.0
            for k in range(i, j):
                p, d, _ = sample(k, x)
                if not math.isnan(p):
                    e += p * d
                    t += d
            return e / t if t > 0 else 0.0

        x = xl
        if cap is not None and mean(x) > cap:
            lo, hi = 0.0, x
            for _ in range(200):
                mid = (lo + hi) / 2
                if mid <= lo or mid >= hi:
                    break
                if mean(mid) > cap:
                    hi = mid
                else:
                    lo = mid
            x = lo
        xs.append(x)
        for k in range(i, j):
            p, d, gap = sample(k, x)
            out_p[k] = p
            out_t[k] = ts[0] + int(acc + 0.5)
            acc += d + gap
        i = j
    return np.array(xs), np.array(out_p, dtype=np.float32), np.array(out_t, dtype=np.int64)


def naive_smooth(ts, power, floor, up, down):
    out = [max(float(p), floor) for p in power]
    for k in range(1, len(out)):
        out[k] = max(out[k], out[k - 1] - down * (ts[k] - ts[k - 1]) / 1e9)
    for k in range(len(out) - 2, -1, -1):
        out[k] = max(out[k], out[k + 1] - up * (ts[k + 1] - ts[k]) / 1e9)
    return np.array(out, dtype=np.float32)


def naive_storage(p, target, step_s, energy, pmax, eff, soc0):
    soc = soc0 * energy
    grid, socs = [], []
    for pc, tc in zip(p, target):
        b = min(max(pc - tc, -pmax), pmax)
        if b > 0:
            b = min(b, soc / step_s)
            soc -= b * step_s
        elif b < 0:
            b = max(b, -(energy - soc) / (step_s * eff))
            soc += -b * step_s * eff
        grid.append(pc - b)
        socs.append(soc / energy)
    return np.array(grid), np.array(socs)


def naive_window_means(ts0, ts1, power1, window, max_gap, hold):
    """Mean replayed power of each original window, from the output trace alone."""
    n = len(ts0)
    rows = {}
    for k in range(n):
        if math.isnan(power1[k]):
            continue
        if k + 1 < n:
            d0 = int(ts0[k + 1] - ts0[k])
            gap = max(d0 - hold, 0) if d0 > max_gap else 0
            d = int(ts1[k + 1] - ts1[k]) - gap
        else:
            d = hold
        e, t = rows.get(ts0[k] // window, (0.0, 0.0))
        rows[ts0[k] // window] = (e + float(power1[k]) * d, t + d)
    return {w: e / t for w, (e, t) in rows.items() if t > 0}


def naive_energy(ts, power, max_gap, hold):
    e = 0.0
    for k in range(len(ts)):
        if math.isnan(power[k]):
            continue
        c, _, _ = _covered(ts, k, max_gap, hold)
        e += float(power[k]) * c * 1e-9
    return e


# --------------------------------------------------------------------------- model and parsing


def test_model_reproduces_the_h100_prompt_figure():
    m = PowerModel(model="H100-SXM", idle_w=75.0, f0_mhz=1980.0, tdp_w=700.0)
    x = m.ratio_for_power(700.0, 350.0)
    assert x == pytest.approx(((350 - 75) / (700 - 75)) ** (1 / 3), rel=1e-12)
    assert x == pytest.approx(0.7606, abs=1e-4)
    assert float(m.stretch("prompt", x)) == pytest.approx(1.315, abs=1e-3)
    assert float(m.power_w(700.0, x)) == pytest.approx(350.0)
    assert float(m.stretch("token", m.ratio_for_power(380.0, 350.0))) <= 1.02
    assert float(m.stretch("communication", 0.5)) == 1.0
    m2 = PowerModel(model=None, idle_w=75.0, f0_mhz=None, tdp_w=None, a=0.3, g=2.5)
    x2 = m2.ratio_for_power(700.0, 350.0)
    assert float(m2.power_w(700.0, x2)) == pytest.approx(350.0, rel=1e-9)


def test_policy_parsing():
    assert [c.value for c in parse_cap("300:700:100")] == [300, 400, 500, 600, 700]
    assert parse_cap("50%")[0].unit == "%" and parse_cap("0.35kW")[0].value == 350
    assert parse_smoothing("floor=90%,up=2000,down=10%/s").down_unit == "%"
    st_ = parse_storage("energy_kwh=1,power_kw=50,window=30s,efficiency=0.9")
    assert st_.energy_j == 3.6e6 and st_.power_w == 5e4 and st_.window_s == 30
    assert parse_scope("rack=rack01,rack02").names == ("rack01", "rack02")
    assert len(build_policies(lock_mhz="1000:1400:200", cap=500)) == 3
    for bad in (dict(cap="300:700:50", lock_mhz="1000:1400:100"), dict(cap="abc"), dict(cap="-5"),
                dict(cap="700:300:50"), dict(smoothing="floor=120%"), dict(smoothing="up=0"),
                dict(storage="energy_j=1"), dict(scope="galaxy=a"), dict(cap=300, scope="cluster=x")):
        with pytest.raises(PolicyError):
            build_policies(**bad)


# --------------------------------------------------------------------------- kernels vs twins


@st.composite
def one_gpu(draw):
    n = draw(st.integers(1, 60))
    steps = draw(st.lists(st.sampled_from([MS, MS, MS, 2 * MS, 3 * MS // 2, 30 * MS]), min_size=n, max_size=n))
    ts = 5_000_000_000 + np.cumsum(np.array(steps, dtype=np.int64))
    levels = st.one_of(st.sampled_from([60.0, 75.0, 137.0, 380.0, 700.0, 720.0]),
                       st.floats(0, 800, width=32), st.just(float("nan")))
    power = np.array(draw(st.lists(levels, min_size=n, max_size=n)), dtype=np.float32)
    labels = np.array(draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)), dtype=np.int8)
    return ts, power, labels


@settings(max_examples=60, deadline=None)
@given(one_gpu(), st.sampled_from([None, 150.0, 350.0, 500.0]), st.sampled_from([1.0, 0.8]),
       st.sampled_from([(0.0, 3.0), (0.3, 2.0)]), st.sampled_from([4 * MS, 10 * MS, 1000 * MS]))
def test_clock_windows_matches_naive_twin(trace, cap, lock_ratio, ag, window):
    ts, power, labels = trace
    a, g = ag
    betas = np.array([0.0, 0.0, 0.2, 1.0])
    gp = np.array([[75.0, np.nan if cap is None else cap, 1980.0 * lock_ratio if lock_ratio < 1 else np.nan,
                    1980.0, a, g]])
    cw = K.clock_windows(ts, power, labels, np.array([0, len(ts)]), gp, betas[None, :], window_ns=window,
                         max_gap_ns=20 * MS, hold_ns=MS, workers=1)
    xs, p, t = naive_clock_windows(ts, power, labels, betas, idle=75.0, cap=cap, lock_ratio=lock_ratio, a=a, g=g,
                                   window=window, max_gap=20 * MS, hold=MS)
    got_x = cw.windows[:, K.W_X]
    got_x = got_x[np.isfinite(got_x)]
    np.testing.assert_allclose(got_x, xs, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cw.power_w, p, rtol=2e-6, atol=1e-3)
    assert np.abs(cw.ts_ns - t).max() <= max(2, 1e-6 * (t[-1] - t[0]))
    if cap is not None:  # the kernel's own window means stay at or below the cap
        means = cw.windows[:, K.W_MEAN_W]
        assert np.nanmax(np.append(means, 0)) <= cap * (1 + 1e-6)


@settings(max_examples=60, deadline=None)
@given(one_gpu(), st.sampled_from([0.0, 300.0, 650.0]), st.sampled_from([np.inf, 500.0, 20000.0]),
       st.sampled_from([np.inf, 300.0, 50000.0]))
def test_smooth_power_matches_naive_twin(trace, floor, up, down):
    ts, power, _ = trace
    power = np.where(np.isnan(power), 100.0, power).astype(np.float32)
    got = K.smooth_power(ts, power, np.array([0, len(ts)]), floor_w=np.array([floor]), up_w_per_s=np.array([up]),
                         down_w_per_s=np.array([down]), workers=1)
    want = naive_smooth(ts, power, floor, up, down)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (got >= np.maximum(power, floor) - 1e-3).all()
    dt = np.diff(ts) / 1e9
    assert (np.diff(got.astype(np.float64)) <= up * dt + 1e-2).all()
    assert (-np.diff(got.astype(np.float64)) <= down * dt + 1e-2).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 5e4), min_size=1, max_size=80), st.sampled_from([1e3, 5e4]),
       st.sampled_from([1e3, 3e4]), st.sampled_from([1.0, 0.8]), st.sampled_from([0.0, 0.5, 1.0]))
def test_storage_matches_naive_twin(p, energy, pmax, eff, soc0):
    p = np.array(p)
    target = np.full(len(p), p.mean())
    grid, soc = K.storage_dispatch(p, target, step_s=0.1, energy_j=energy, power_max_w=pmax, efficiency=eff,
                                   soc0=soc0)
    g2, s2 = naive_storage(p, target, 0.1, energy, pmax, eff, soc0)
    np.testing.assert_allclose(grid, g2, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(soc, s2, rtol=1e-9, atol=1e-12)
    assert (soc >= -1e-12).all() and (soc <= 1 + 1e-12).all()
    assert (np.abs(p - grid) <= pmax + 1e-6).all()


def test_zoh_energy_matches_naive():
    rng = np.random.default_rng(1)
    ts = np.cumsum(rng.choice([MS, 2 * MS, 9 * MS], 300)).astype(np.int64)
    p = rng.uniform(50, 700, 300).astype(np.float32)
    p[::17] = np.nan
    e, _ = K.zoh_energy(ts, p, np.array([0, 300]), max_gap_ns=5 * MS, hold_ns=MS)
    assert e[0] == pytest.approx(naive_energy(ts, p, 5 * MS, MS), rel=1e-12)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_level_series_equals_each_level_alone(workers):
    """Racks and the cluster summed from host rows (and hosts summed in place) equal
    each level aggregated on its own from the GPUs, for any number of batches."""
    from tracekit.analysis import aggregate as agg
    from tracekit.engine.local import set_workers
    from tracekit.replay.engine import level_series

    ts = _traceset(training(gpus=40, seconds=4, seed=2, hosts_per_rack=2, drop_fraction=0.01, gaps=1))
    a = ts.arrays()
    grid = agg.make_grid(a, 0.001)
    set_workers(workers)
    try:
        got, peaks = level_series(a, grid, 5.0)
    finally:
        set_workers(None)
    assert list(got) == ["host", "rack", "cluster"]
    for level in ("cluster", "rack", "host"):
        ref = agg.aggregate(a, grid, 5.0, level=level)
        assert got[level].groups == ref.groups
        np.testing.assert_allclose(got[level].power_w, ref.power_w, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(got[level].coverage, ref.coverage, rtol=1e-12, atol=1e-12)
    _, ref_peaks, _ = agg.aggregate_all(a, grid, 5.0, levels=("cluster",), heatmap_columns=0)
    assert peaks == ref_peaks
    # hosts against each GPU's own cells (the energy-mode kernel): sum of cell means
    names, host_of_gpu, _ = a.groups("host")
    want = np.zeros((len(names), grid.n_cells))
    seen = np.zeros((len(names), grid.n_cells), dtype=bool)
    for i in range(len(a.gpus)):
        e, c = agg.gpu_cells(a, i, grid, 5.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            want[host_of_gpu[i]] += np.where(c > 0, e / c, 0.0)
        seen[host_of_gpu[i]] |= c > 0
    want[~seen] = np.nan
    np.testing.assert_allclose(got["host"].power_w, want, rtol=1e-9, equal_nan=True)


# --------------------------------------------------------------------------- identity and invariants


@pytest.fixture(scope="module")
def train():
    return _traceset(training(gpus=16, seconds=12, gpu_model="H100", seed=3, hosts_per_rack=1))


def test_identity_no_policy_and_cap_above_every_sample(train):
    r = tracekit.replay(train)
    assert [p.name for p in r.results] == ["baseline"]
    assert r.trace("baseline") is train.arrays()
    top = float(np.nanmax(train.arrays().power_w))
    r = tracekit.replay(train, cap=top + 1, lock_mhz=1980)
    out, src = r.trace(r.results[1].name), train.arrays()
    assert np.array_equal(out.ts_ns, src.ts_ns) and np.array_equal(out.power_w, src.power_w)
    base, pol = r.summary()["policies"]
    assert pol["energy_j"] == base["energy_j"] and pol["peak_w"] == base["peak_w"] and pol["slowdown"] == 1.0


@st.composite
def small_traces(draw):
    n_gpus = draw(st.integers(1, 3))
    series = []
    for _ in range(n_gpus):
        n = draw(st.integers(20, 150))
        steps = draw(st.lists(st.sampled_from([MS, MS, MS, 2 * MS, 7 * MS]), min_size=n, max_size=n))
        ts = 1_700_000_000_000_000_000 + np.cumsum(np.array(steps, dtype=np.int64))
        base = draw(st.lists(st.sampled_from([75.0, 137.0, 380.0, 700.0]), min_size=3, max_size=8))
        reps = -(-n // len(base))
        power = np.repeat(np.array(base), reps)[:n] + np.array(
            draw(st.lists(st.floats(-20, 20), min_size=n, max_size=n)))
        power = np.maximum(power, 1.0)
        if draw(st.booleans()):
            power[draw(st.integers(0, n - 1))] = np.nan
        series.append((ts, power))
    return series


def _replay_one(ts_set, cap, window_s, lock_mhz=None):
    return tracekit.replay(ts_set, cap=cap, lock_mhz=lock_mhz, cap_window_s=window_s, workload="inference",
                           sync="off", resolution_s=0.001, windows_s=(0.01,), max_gap_s=5.0)


@settings(max_examples=50, deadline=None)
@given(small_traces(), st.floats(90, 720), st.floats(0.0, 1.0), st.sampled_from([0.003, 0.01, 0.05]),
       st.sampled_from([None, 1500.0]))
def test_cap_invariants(series, cap_hi, frac, window_s, lock_mhz):
    """Over each controller window the replayed mean is at most the cap; a lower cap
    never raises a GPU's peak power over the controller window; a cap never shortens
    a GPU's run against the same lock without a cap; energy = integral of the
    replayed power.

    (Single samples inside a window are not bounded by the cap, and a lower cap may
    let one rise: below-cap samples that turn into throttled ones leave room to the
    others under the window mean.  DESIGN.md: samples may exceed C briefly.  For the
    same reason a lower cap may shorten a run: see
    test_lower_cap_may_spread_the_throttling.)"""
    ts_set = _arrays_traceset(series)
    cap_lo = 80.0 + frac * (cap_hi - 80.0)
    r_hi = _replay_one(ts_set, cap_hi, window_s, lock_mhz)
    r_lo = _replay_one(ts_set, cap_lo, window_s, lock_mhz)
    src = ts_set.arrays()
    window = int(round(window_s * 1e9))
    peaks = {}
    for r, cap in ((r_hi, cap_hi), (r_lo, cap_lo)):
        name = r.results[1].name
        out = r.trace(name)
        hold = r.summary()["hold"]["hold_ns"]
        energy = 0.0
        for i in range(len(src.gpus)):
            t0, _ = src.gpu(i)
            t1, p1 = out.gpu(i)
            means = naive_window_means(t0, t1, p1, window, 5_000 * MS, hold)
            assert max(means.values()) <= cap * (1 + 1e-5)
            peaks[cap, i] = max(means.values())
            energy += naive_energy(t1, p1, 5_000 * MS, hold)
        assert r.results[1].figures["energy_j"] == pytest.approx(energy, rel=1e-9, abs=1e-3)
    free = _replay_one(ts_set, None, window_s, lock_mhz)
    a_free = free.trace(free.results[-1].name)
    for i in range(len(src.gpus)):
        assert peaks[cap_lo, i] <= peaks[cap_hi, i] * (1 + 1e-5)
        for r in (r_hi, r_lo):
            assert r.trace(r.results[1].name).gpu(i)[0][-1] >= a_free.gpu(i)[0][-1] - 1


def test_lower_cap_may_spread_the_throttling():
    """DESIGN.md: within a window the clock applies to the samples above the cap;
    troughs below it are unchanged.  At 380 W the token samples sit at the cap and
    keep their clock, so the compute-bound prompt samples take all the throttling;
    at 342.5 W the token samples share it and the prompt samples stretch less: the
    run ends sooner, though both are longer than the uncapped run (found by
    hypothesis in test_cap_invariants)."""
    ts = 1_700_000_000_000_000_000 + np.arange(1, 52, dtype=np.int64) * MS
    ts_set = _arrays_traceset([(ts, np.r_[np.full(34, 380.0), np.full(17, 700.0)])])
    ends = {}
    for cap in (380.0, 342.5, None):
        r = _replay_one(ts_set, cap, 0.05)
        ends[cap] = (r.trace(r.results[-1].name).gpu(0)[0][-1] - ts[0]) / 1e6
    assert ends[None] == 50.0
    assert ends[380.0] == pytest.approx(54.32, abs=0.01) and ends[342.5] == pytest.approx(53.68, abs=0.01)


# --------------------------------------------------------------------------- literature targets


def test_h100_inference_cap_350w_reproduces_the_literature():
    ts = _traceset(inference(gpus=8, tp=8, seconds=30, gpu_model="H100", seed=1, arrival_rate_hz=0.5))
    # a controller window shorter than the phases caps each phase on its own (DESIGN.md)
    r = tracekit.replay(ts, cap=350, cap_window_s=0.01, resolution_s=0.01)
    p = r.summary()["policies"][1]
    assert r.workload == "inference"
    assert p["phase_stretch"]["prompt"] == pytest.approx(1.30, abs=0.05)
    assert p["phase_stretch"]["token"] <= 1.02
    assert p["ttft_factor"] == p["phase_stretch"]["prompt"] and p["tpot_factor"] == p["phase_stretch"]["token"]
    host = r.results[1].groups.filter(pl.col("level") == "host").get_column("peak_w")[0]
    host0 = r.baseline.groups.filter(pl.col("level") == "host").get_column("peak_w")[0]
    assert host <= 0.70 * host0


def test_training_cap_cuts_peaks_not_troughs_lock_lowers_both(train):
    # peaks and swings over the controller window (100 ms): single samples may exceed
    # the cap where a window starts in a trough (DESIGN.md)
    r = tracekit.replay(train, cap=[450], cap_window_s=0.1, resolution_s=0.1)
    r2 = tracekit.replay(train, lock_mhz=1400, resolution_s=0.1)
    base, cap = r.summary()["policies"]
    lock = r2.summary()["policies"][1]
    assert cap["peak_w"] < 0.85 * base["peak_w"]
    assert cap["swing"]["1s"]["max_w"] < 0.85 * base["swing"]["1s"]["max_w"]
    assert cap["slowdown"] > 1.0 and lock["slowdown"] > 1.0

    src = train.arrays().power_w
    capped = r.trace(cap["name"]).power_w
    locked = r2.trace(lock["name"]).power_w
    trough = src <= 450  # communication, checkpoints, idle: below the cap
    assert trough.mean() > 0.2
    assert np.array_equal(capped[trough], src[trough])
    above_idle = src > 80
    assert (locked[above_idle] < src[above_idle]).all()
    comm = (src > 100) & (src < 200)  # the communication level, 137 W
    assert np.median(locked[comm]) < 0.8 * np.median(src[comm])
    assert lock["mean_w"] < 0.8 * base["mean_w"]


def test_power_floor_keeps_a_swing_and_costs_energy():
    ts = _traceset(training(gpus=8, seconds=8, gpu_model="H100", seed=5, level_spread=0.0, stragglers=0))
    p = tracekit.replay(ts, smoothing="floor=90%").summary()["policies"][1]
    s = p["smoothing"]
    assert s["min_gpu_swing_pct_of_tdp"] >= 10.0
    assert s["energy_overhead_j"] > 0 and s["energy_overhead_pct"] > 0
    assert p["energy_change"] == pytest.approx(s["energy_overhead_pct"] / 100, rel=1e-3)
    assert p["min_w"] >= 0.9 * 700 * 8 * 0.999 and p["slowdown"] == 1.0


def test_storage_shaves_rack_swings_within_its_ratings(train):
    r = tracekit.replay(train, storage="energy_j=2e5,power_w=3000,window=2s")
    p = r.summary()["policies"][1]
    s = p["storage"]
    assert 0 <= s["soc_min"] <= 0.5 <= s["soc_max"] <= 1 and s["soc_range"] > 0
    frame = r.results[1].storage
    assert (np.abs(frame["rack_w"] - frame["grid_w"]) <= 3000 + 1e-6).all()
    # steady iterations (away from the start ramp, the checkpoint at 10 s and the
    # half-window edges where the moving average is undefined): swings shrink
    from tracekit.kernels.windows import window_swing

    def steady_swing(res):
        cp = res.cluster_power
        x = cp["power_w"].to_numpy()[2000:9000]
        return np.nanmax(window_swing(x, 1000))

    assert steady_swing(r.results[1]) < 0.5 * steady_swing(r.baseline)
    assert p["energy_j"] == pytest.approx(r.baseline.figures["energy_j"] + s["grid_energy_change_j"], rel=1e-9)


def test_summary_is_strict_json_with_every_feature(train):
    r = tracekit.replay(train, cap=500, lock_mhz=1800, smoothing="floor=20%,up=5000",
                        storage="energy_kwh=0.01,power_kw=2", scope="rack=rack00")
    s = json.loads(json.dumps(r.summary(), allow_nan=False))
    p = s["policies"][1]
    assert p["name"] == "lock=1800MHz+cap=500W+smooth(floor=20%,up=5000W/s)+storage(36000J,2000W)@rack=rack00"
    assert p["policy"]["smoothing"]["down"] is None and p["storage"]["racks"] == ["rack00"]


def test_unknown_gpu_model_and_observed_clocks():
    ts_ns = 1_700_000_000_000_000_000 + np.arange(4000, dtype=np.int64) * MS
    power = np.where((np.arange(4000) // 500) % 2 == 0, 600.0, 150.0).astype(np.float32)
    frame = pl.DataFrame({"gpu": ["a/0"] * 4000, "ts": pl.Series(ts_ns).cast(pl.Datetime("ns", "UTC")),
                          "power_w": power, "sm_clock_mhz": np.full(4000, 1410.0, dtype=np.float32)})
    topo = canonical_topology(pl.DataFrame({"gpu": ["a/0"]}))
    q = DataQuality(rows_read=4000, rows_used=4000)
    ts = TraceSet(frame, topo, q, [])
    # model unknown: idle from the GPU's lowest level, a warning; % caps need a TDP
    r = tracekit.replay(ts, cap=400, workload="training")
    assert any("does not know" in w for w in r.warnings)
    assert r.models["unknown"]["idle_source"] == "data"
    with pytest.raises(PolicyError, match="TDP"):
        tracekit.replay(ts, cap="50%", workload="training")
    # the observed clock is the reference: a lock at it changes nothing, below it scales
    r = tracekit.replay(ts, lock_mhz=1410, workload="training", model_params={"idle_w": 60, "f0_mhz": 1980})
    assert np.array_equal(r.trace(r.results[1].name).power_w, power)
    r = tracekit.replay(ts, lock_mhz=705, workload="training", model_params={"idle_w": 60, "f0_mhz": 1980})
    out = r.trace(r.results[1].name).power_w
    np.testing.assert_allclose(out, 60 + (power - 60) * 0.125, rtol=1e-6)
    assert r.results[1].figures["mean_clock_mhz"] == pytest.approx(705)


# --------------------------------------------------------------------------- synchronous training


@pytest.fixture(scope="module")
def two_racks():
    return _traceset(training(gpus=16, seconds=10, gpu_model="H100", seed=7, hosts_per_rack=1, stragglers=0,
                              checkpoint_every_s=None))


def test_capping_one_rack_slows_the_whole_job(two_racks):
    r = tracekit.replay(two_racks, cap="450", scope="rack=rack01", cap_window_s=0.1)
    r_all = tracekit.replay(two_racks, cap="450", cap_window_s=0.1)
    one = r.summary()["policies"][1]
    every = r_all.summary()["policies"][1]
    assert r.summary()["sync"] and one["slowdown"] > 1.05
    assert one["slowdown"] == pytest.approx(every["slowdown"], rel=0.01)
    assert one["phase_stretch"]["compute"] > 1.05  # over the capped rack's GPUs
    # every GPU starts each iteration together again: compute starts line up
    out = r.trace(one["name"])
    det = analyze(r.traceset(one["name"]), workload="training").phases
    starts = det.filter(pl.col("phase") == "compute").group_by("gpu").agg(pl.col("start").sort())
    first = [s[3:8] for s in starts.get_column("start").to_list()]  # iterations 3..7 on every GPU
    spread = [(max(col) - min(col)).total_seconds() for col in zip(*first)]
    assert max(spread) < 0.02
    # the window invariant holds on the coupled trace
    src = two_racks.arrays()
    for i, gpu in enumerate(src.gpus):
        if not gpu.startswith("node01"):
            continue
        means = naive_window_means(src.gpu(i)[0], *out.gpu(i), 100 * MS, 5_000 * MS, MS)
        assert max(means.values()) <= 450 * (1 + 1e-5)


def test_summary_solve_and_write_equal_one_pass(two_racks):
    """solve_windows + write_windows give bitwise what one clock_windows pass gives,
    for any row parameters."""
    from tracekit.replay import engine as E

    ctx, _ = E.build_context(two_racks, E.ReplayOptions(cap_window_s=0.1), lambda s: None)
    res = E.resolve(build_policies(cap=450, scope="rack=rack01")[0], ctx)
    gp, betas = E._gpu_params(ctx, res)
    it = ctx.iterations
    a = ctx.arrays
    common = dict(window_ns=100 * MS, max_gap_ns=ctx.max_gap_ns, hold_ns=ctx.hold_ns)
    rng = np.random.default_rng(0)
    rows0 = K.Rows(it.offsets, it.azn, E._row_params(it, np.zeros(len(it.base_end_ns)), it.crit))
    first = K.clock_windows(a.ts_ns, a.power_w, ctx.labels, a.offsets, gp, betas, rows=rows0, write=False,
                            keep_summary=True, **common)
    for _ in range(2):
        d_len = rng.uniform(0, 5e7, len(it.base_end_ns))
        crit = it.crit.copy()
        crit[rng.integers(0, len(crit), 3)] = rng.integers(0, len(it.group), 3)
        rows = K.Rows(it.offsets, it.azn, E._row_params(it, d_len, crit))
        one = K.clock_windows(a.ts_ns, a.power_w, ctx.labels, a.offsets, gp, betas, rows=rows, **common)
        windows, row_out = K.solve_windows(first.summary, gp, rows)
        two = K.write_windows(a.ts_ns, a.power_w, ctx.labels, a.offsets, gp, betas, first.summary, windows, row_out,
                              azn=it.azn, **common)
        assert np.array_equal(one.rows, row_out)
        assert np.array_equal(one.windows, two.windows, equal_nan=True)
        assert np.array_equal(one.power_w, two.power_w) and np.array_equal(one.ts_ns, two.ts_ns)
        assert np.array_equal(one.phase_ns, two.phase_ns)


def test_sweep_table_and_pareto(two_racks):
    r = tracekit.replay(two_racks, cap="350:650:150", cap_window_s=0.1, resolution_s=0.1)
    s = r.summary()
    assert [p["name"] for p in s["policies"]] == ["baseline", "cap=350W", "cap=500W", "cap=650W"]
    peaks = [p["peak_w"] for p in s["policies"][1:]]
    slow = [p["slowdown"] for p in s["policies"][1:]]
    assert peaks == sorted(peaks) and slow == sorted(slow, reverse=True)
    assert set(s["pareto"]) <= {"cap=350W", "cap=500W", "cap=650W"} and s["pareto"]
    assert r.table().height == 4


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay") / "train"
    training(d, gpus=8, seconds=6, gpu_model="H100", seed=2)
    return d


@pytest.mark.parametrize("args, words", [
    (["--cap", "50"], ["idle power", "raise the cap"]),
    (["--lock-mhz", "2500"], ["above the max SM clock"]),
    (["--cap", "300", "--scope", "rack=r3"], ["unknown rack", "'r3'"]),
    (["--cap", "300", "--smooth", "floor=90%"], ["contradicting", "floor"]),
    (["--cap", "300:500:100", "--lock-mhz", "1000:1400:200"], ["sweep one policy"]),
    (["--cap", "3OO"], ["--cap"]),
    (["--storage", "power_w=5"], ["energy"]),
    (["--model-param", "zeta=1", "--cap", "300"], ["unknown model parameter"]),
])
def test_cli_bad_policies_exit_2_with_one_line(dataset, capsys, args, words):
    from tracekit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["replay", str(dataset), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tracekit: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err


def test_cli_json_and_output_folder(dataset, tmp_path, capsys):
    from tracekit.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(dataset), "--cap", "55%", "--json", "-o", str(out)])
    assert exc.value.code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["schema"] == "tracekit.replay/1" and s["policies"][0]["name"] == "baseline"
    for p in s["policies"]:
        for key in ("name", "peak_w", "p99_w", "min_w", "mean_w", "energy_j", "swing", "slowdown", "phase_stretch"):
            assert key in p
        assert all("max_w" in v for v in p["swing"].values())
    name = s["policies"][1]["name"]
    assert name == "cap=55%"
    assert (out / "summary.json").is_file() and (out / "report.html").is_file()
    replayed = tracekit.open(out / "traces" / "cap_55pct")
    assert replayed.n_samples == tracekit.open(dataset).n_samples
    a = analyze(replayed, workload="training")
    assert a.levels["cluster"]["cluster"]["peak_w"] <= s["policies"][0]["peak_w"]


def test_real_a100_serving_trace_with_observed_clocks(real_traces):
    ts = tracekit.open(real_traces / "powertrace-sim" / "a100-qwen3-8b-vllm-burstgpt_power_250ms.csv",
                       utc_offset_s=-7 * 3600, gpu_model="A100")
    r = tracekit.replay(ts, cap=300, lock_mhz=1200)
    base, pol = r.summary()["policies"]
    assert r.workload == "inference"
    assert pol["peak_w"] < base["peak_w"] and pol["energy_j"] < base["energy_j"] and pol["slowdown"] > 1
    assert pol["ttft_factor"] >= pol["tpot_factor"] >= 1.0
    assert pol["mean_clock_mhz"] <= 1200 + 1e-6


def test_replay_time_slice_equals_replay_of_the_sliced_samples(tmp_path):
    """--since/--until: the replay of a slice is the replay of those samples alone."""
    import polars as pl

    from tracekit.io.dataset import DatasetWriter
    from tracekit.schema import PowerSemantics

    src = Path(__file__).resolve().parent.parent / "sample_traces" / "h100_training"
    ts = tracekit.open(src)
    first = ts.first_ts_ns()
    since, until = first + 5 * 10**9, first + 15 * 10**9
    cut = ts.samples.filter((pl.col("ts").dt.epoch("ns") >= since) & (pl.col("ts").dt.epoch("ns") < until))
    with DatasetWriter(tmp_path / "cut", topology=ts.topology, power=PowerSemantics(**ts.manifest["power"])) as w:
        w.write(cut)
    want = tracekit.replay(tracekit.open(tmp_path / "cut"), cap=500).summary()
    got = tracekit.replay(tracekit.open(src), cap=500, since="+5s", until=until).summary()
    tr = got["dataset"].pop("time_range")
    assert tr["samples_outside"] == ts.n_samples - cut.height
    assert got["dataset"] == want["dataset"]
    assert got["policies"] == want["policies"]


def test_replay_refuses_a_trace_over_the_memory_limit(capfd):
    from tracekit.cli import main

    src = Path(__file__).resolve().parent.parent / "sample_traces" / "h100_training"
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(src), "--cap", "500", "--memory-limit", "10MB"])
    err = capfd.readouterr().err
    assert exc.value.code == 2
    assert err == ("tracekit: error: replay holds the whole trace in memory: ~110 MiB for 1,918,032 samples, over "
                   "the limit of 10 MiB; replay a time slice (--since/--until) or raise --memory-limit\n")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_critical_rows_equal_the_last_of_a_stable_sort(data):
    """critical_rows (vectorised) = assigning rows in stable order of their end, the
    last assignment per group winning (ties, NaN, +-inf and empty groups included)."""
    from tracekit.replay.engine import critical_rows

    n_groups = data.draw(st.integers(1, 6))
    n = data.draw(st.integers(0, 30))
    group = np.array(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n)), dtype=np.int64)
    values = st.sampled_from([0.0, 1.0, 2.0, 2.5, np.nan, np.inf, -np.inf])
    end = np.array(data.draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64)
    want = np.full(n_groups, -1, dtype=np.int64)
    for r in np.argsort(end, kind="stable"):
        want[group[r]] = r
    np.testing.assert_array_equal(critical_rows(group, end, n_groups), want)


def test_analyze_and_replay_baseline_report_the_same_cluster_figures():
    """Both commands compute a group's figures on its fully covered cells only
    (``swings.full_cells``): the sample's GPUs start and stop logging a few ms apart,
    and its first and last cells (coverage down to 5 %) would read as a 602 W
    minimum of 8 busy H100s."""
    path = Path(__file__).resolve().parents[1] / "sample_traces" / "h100_training"
    a = analyze(tracekit.open(path))
    r = tracekit.replay(tracekit.open(path), cap=500).summary()
    base = next(p for p in r["policies"] if p["name"] == "baseline")
    cluster = a.levels["cluster"]["cluster"]
    coverage = a.cluster_power.get_column("coverage").to_numpy()
    assert coverage.min() < 0.1  # the edges are partial
    for key in ("peak_w", "p99_w", "min_w", "mean_w", "ramp_up_w_per_s", "ramp_down_w_per_s", "band_share",
                "dominant_hz", "peak_over_tdp"):
        assert cluster[key] == base[key], key
    for window, s in base["swing"].items():
        assert {k: cluster["swing"][window][k] for k in s} == s, window
    full = a.cluster_power.filter(pl.col("coverage") >= 0.999).get_column("power_w")
    assert cluster["min_w"] == round(float(full.min()), 3) > 4000
    assert cluster["peak_w"] == round(float(full.max()), 3)
