"""replay with aggregate caps (a cap on the summed power of a host, rack, row or the
cluster): parsing, the group kernel against a naive twin, identity, invariants
(hypothesis), the relation to per-GPU caps, synchronous coupling, CLI errors."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracekit
from tracekit.errors import PolicyError
from tracekit.kernels import replay as K
from tracekit.quality import DataQuality
from tracekit.replay.policy import Cap, build_policies, parse_cap
from tracekit.schema import canonical_topology
from tracekit.synth import training
from tracekit.traceset import GpuArrays, TraceSet

from .test_replay import _covered, _traceset, naive_energy, naive_window_means

MS = 1_000_000
IDLE_W = 75.0  # H100-SXM idle power of the spec table


def _racks_traceset(series: list[tuple[np.ndarray, np.ndarray]], racks: list[str],
                    rows: list[str] | None = None) -> TraceSet:
    """One GPU per host, ``racks[i]`` the rack of GPU i (``rows[i]`` its row, default
    the rack), H100-SXM (idle 75 W, TDP 700 W)."""
    gpus = [f"node{i:02d}/0" for i in range(len(series))]
    offsets = np.zeros(len(series) + 1, dtype=np.int64)
    np.cumsum([len(t) for t, _ in series], out=offsets[1:])
    ts = np.concatenate([t for t, _ in series]).astype(np.int64)
    power = np.concatenate([p for _, p in series]).astype(np.float32)
    topo = canonical_topology(pl.DataFrame({"gpu": gpus, "rack": racks, "row": rows or racks,
                                            "model": ["H100-SXM"] * len(gpus), "tdp_w": [700.0] * len(gpus)}))
    q = DataQuality(rows_read=len(ts), rows_used=len(ts))
    return TraceSet(None, topo, q, [], arrays=GpuArrays(gpus, offsets, ts, power, topo))


def naive_group_means(src: GpuArrays, out: GpuArrays, members: list[int], window: int, hold: int) -> dict:
    """Group power per original controller window from the traces alone: the sum over
    the group's GPUs of each one's mean replayed power over its replayed window."""
    total: dict[int, float] = {}
    for i in members:
        for w, m in naive_window_means(src.gpu(i)[0], *out.gpu(i), window, 5_000 * MS, hold).items():
            total[w] = total.get(w, 0.0) + m
    return total


# --------------------------------------------------------------------------- parsing


def test_aggregate_cap_parsing():
    assert parse_cap("rack:40kW") == [Cap(40000.0, "W", "rack")]
    assert parse_cap("cluster:0.5MW") == [Cap(500000.0, "W", "cluster")]
    assert parse_cap("Row:80%") == [Cap(80.0, "%", "row")]
    assert parse_cap("gpu:350W") == parse_cap("350") == [Cap(350.0, "W", "gpu")]
    assert [c.label for c in parse_cap("rack:30kW:40kW:5kW")] == ["rack:30kW", "rack:35kW", "rack:40kW"]
    assert parse_cap("host:800")[0].label == "host:800W" and parse_cap("rack:37.5kW")[0].label == "rack:37.5kW"
    (p,) = build_policies(cap="rack:40kW", scope="row=row00")
    assert p.label() == "cap=rack:40kW@row=row00"
    assert p.to_dict()["cap"] == {"value": 40000.0, "unit": "W", "level": "rack"}
    assert len(build_policies(cap=["rack:40kW", 350, "cluster:90%"])) == 3
    cases = {
        "shelf:40kW": "--cap: unknown level 'shelf' in 'shelf:40kW'; use gpu, host, rack, row, cluster "
                      "(e.g. rack:40kW)",
        "rack:": "--cap 'rack:' gives no value after rack:",
        "rack:0kW": "--cap must be > 0, got rack:0W",
        "rack:40kWh": "--cap: unknown unit 'kWh' in '40kWh'; use W, w, kW, MW, %",
        "rack:40kW:30kW:1kW": "--cap: sweep '40kW:30kW:1kW' needs STEP > 0 and STOP >= START",
        "rack:30kW:40%:1kW": "--cap: START, STOP and STEP of '30kW:40%:1kW' must use the same unit",
    }
    for text, message in cases.items():
        with pytest.raises(PolicyError) as exc:
            parse_cap(text)
        assert str(exc.value) == message
    with pytest.raises(PolicyError, match=r"caps whole racks, but --scope host=\.\.\. selects part of a rack"):
        build_policies(cap="rack:40kW", scope="host=node00")


# --------------------------------------------------------------------------- kernel vs twin


def naive_group_windows(series, labels, betas, members, *, cap, a, g, window, max_gap, hold):
    """Plain loops: per original window, one clock ratio for the GPUs in ``members``
    (every sample above idle throttled) by a 200-step bisection on the sum of their
    window means computed sample by sample; the others keep every sample."""
    def r(x):
        return a * x + (1 - a) * x ** g

    spans = []  # per GPU: {window: (i, j)}
    for ts, _ in series:
        d: dict[int, list[int]] = {}
        for k, t in enumerate(ts):
            d.setdefault(int(t) // window, [k, k])[1] = k + 1
        spans.append(d)

    def sample(gi, k, x):
        ts, power = series[gi]
        c, ok, gap = _covered(ts, k, max_gap, hold)
        p = float(power[k])
        if math.isnan(p) or p <= IDLE_W or gi not in members:
            return p, c, gap
        beta = betas[labels[gi][k] + 1] if ok else 0.0
        return IDLE_W + (p - IDLE_W) * r(x), c * (1 + beta * (1 / x - 1)), gap

    def mean(gi, i, j, x):
        e = t = 0.0
        for k in range(i, j):
            p, d, _ = sample(gi, k, x)
            if not math.isnan(p):
                e += p * d
                t += d
        return e / t if t > 0 else 0.0

    xs = {}
    for w in sorted({w for d in spans for w in d}):
        inside = [(gi, *spans[gi][w]) for gi in members if w in spans[gi]]

        def total(x):
            return sum(mean(gi, i, j, x) for gi, i, j in inside)

        x = 1.0
        if inside and total(1.0) > cap:
            lo, hi = 0.0, 1.0
            for _ in range(200):
                mid = (lo + hi) / 2
                if mid <= lo or mid >= hi:
                    break
                if total(mid) > cap:
                    hi = mid
                else:
                    lo = mid
            x = lo
        xs[w] = x
    out = []
    for gi, (ts, power) in enumerate(series):
        out_p = np.array(power, dtype=np.float32)
        out_t = np.zeros(len(ts), dtype=np.int64)
        acc = 0.0
        for k in range(len(ts)):
            p, d, gap = sample(gi, k, xs[int(ts[k]) // window])
            out_p[k] = p
            out_t[k] = int(ts[0]) + int(acc + 0.5)
            acc += d + gap
        out.append((out_p, out_t))
    return xs, out


@st.composite
def group_of_gpus(draw):
    series, labels = [], []
    start = 5_000_000_000 + draw(st.integers(0, 20)) * MS
    for _ in range(draw(st.integers(2, 3))):
        n = draw(st.integers(1, 50))
        steps = draw(st.lists(st.sampled_from([MS, MS, 2 * MS, 3 * MS // 2, 30 * MS]), min_size=n, max_size=n))
        ts = start + draw(st.integers(0, 8)) * MS + np.cumsum(np.array(steps, dtype=np.int64))
        levels = st.one_of(st.sampled_from([60.0, 75.0, 137.0, 380.0, 700.0]), st.floats(0, 800, width=32),
                           st.just(float("nan")))
        series.append((ts, np.array(draw(st.lists(levels, min_size=n, max_size=n)), dtype=np.float32)))
        labels.append(np.array(draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)), dtype=np.int8))
    return series, labels


@settings(max_examples=50, deadline=None)
@given(group_of_gpus(), st.floats(0.0, 1.0), st.sampled_from([(0.0, 3.0), (0.3, 2.0)]),
       st.sampled_from([4 * MS, 10 * MS, 1000 * MS]))
def test_group_kernel_matches_naive_twin(trace, frac, ag, window):
    """Every GPU but the last in one capped group, the last uncapped."""
    series, labels = trace
    n_gpus = len(series)
    members = list(range(n_gpus - 1))
    cap = IDLE_W * len(members) + 1.0 + frac * 700.0 * len(members)
    a, g = ag
    betas = np.array([0.0, 0.0, 0.2, 1.0])
    offsets = np.zeros(n_gpus + 1, dtype=np.int64)
    np.cumsum([len(t) for t, _ in series], out=offsets[1:])
    ts = np.concatenate([t for t, _ in series])
    power = np.concatenate([p for _, p in series])
    lab = np.concatenate(labels)
    gp = np.tile([IDLE_W, IDLE_W, np.nan, 1980.0, a, g], (n_gpus, 1))
    bt = np.tile(betas, (n_gpus, 1))
    common = dict(window_ns=window, max_gap_ns=20 * MS, hold_ns=MS)
    summary = K.clock_windows(ts, power, lab, offsets, gp, bt, write=False, keep_summary=True, solve=False,
                              workers=1, **common).summary
    group_of = np.array([0] * len(members) + [-1])
    windows, rows = K.solve_group_windows(summary, gp, group_of, np.array([cap]), workers=1)
    cw = K.write_windows(ts, power, lab, offsets, gp, bt, summary, windows, rows, workers=1, **common)
    xs, want = naive_group_windows(series, labels, betas, members, cap=cap, a=a, g=g, window=window,
                                   max_gap=20 * MS, hold=MS)
    for gi in range(n_gpus):
        lo, hi = offsets[gi], offsets[gi + 1]
        w = windows[summary.win_offsets[gi]:summary.win_offsets[gi + 1]]
        first = int(series[gi][0][0]) // window
        got = {first + k: x for k, x in enumerate(w[:, K.W_X]) if np.isfinite(x)}
        want_x = [xs[k] if gi in members else 1.0 for k in sorted(got)]
        np.testing.assert_allclose([got[k] for k in sorted(got)], want_x, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(cw.power_w[lo:hi], want[gi][0], rtol=2e-6, atol=1e-3)
        t = want[gi][1]
        assert np.abs(cw.ts_ns[lo:hi] - t).max() <= max(2, 1e-6 * (t[-1] - t[0]))
    assert np.array_equal(cw.power_w[offsets[-2]:], series[-1][1], equal_nan=True)  # the uncapped GPU: bitwise
    keys, group_w = K.group_window_power(cw.windows, cw.win_offsets, summary.first_window, group_of, 1)
    assert (keys[:, 0] == 0).all()
    assert group_w.max(initial=0.0) <= cap * (1 + 1e-6)


# --------------------------------------------------------------------------- identity and invariants


@st.composite
def two_rack_traces(draw):
    """2-4 GPUs, one per host, in two racks; steps of 1-7 ms; levels of an H100."""
    series = []
    n_gpus = draw(st.integers(2, 4))
    for _ in range(n_gpus):
        n = draw(st.integers(20, 120))
        steps = draw(st.lists(st.sampled_from([MS, MS, MS, 2 * MS, 7 * MS]), min_size=n, max_size=n))
        ts = 1_700_000_000_000_000_000 + np.cumsum(np.array(steps, dtype=np.int64))
        base = draw(st.lists(st.sampled_from([75.0, 137.0, 380.0, 700.0]), min_size=3, max_size=8))
        power = np.repeat(np.array(base), -(-n // len(base)))[:n] + np.array(
            draw(st.lists(st.floats(-20, 20), min_size=n, max_size=n)))
        power = np.maximum(power, 1.0)
        if draw(st.booleans()):
            power[draw(st.integers(0, n - 1))] = np.nan
        series.append((ts, power))
    racks = ["rackA"] * (n_gpus // 2) + ["rackB"] * (n_gpus - n_gpus // 2)
    return series, racks


def _replay_agg(ts_set, cap, window_s, **kw):
    return tracekit.replay(ts_set, cap=cap, cap_window_s=window_s, workload="inference", sync="off",
                           resolution_s=0.001, windows_s=(0.01,), max_gap_s=5.0, **kw)


@settings(max_examples=40, deadline=None)
@given(two_rack_traces(), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from([0.003, 0.01, 0.05]))
def test_aggregate_cap_invariants(trace, f_hi, f_lo, window_s):
    """Every controller window's rack power (from the replayed traces alone) is at most
    the cap; a lower cap never raises a rack's peak window power nor shortens any
    GPU's run; energy = integral of the replayed power; racks within the cap are
    left alone."""
    series, racks = trace
    ts_set = _racks_traceset(series, racks)
    src = ts_set.arrays()
    n_most = max(racks.count("rackA"), racks.count("rackB"))
    cap_hi = IDLE_W * n_most + 5.0 + f_hi * 700.0 * n_most
    cap_lo = IDLE_W * n_most + 5.0 + f_lo * (cap_hi - IDLE_W * n_most - 5.0)
    window = int(round(window_s * 1e9))
    peaks, ends = {}, {}
    for cap in (cap_hi, cap_lo):
        r = _replay_agg(ts_set, f"rack:{cap!r}W", window_s)
        out = r.trace(r.results[1].name)
        hold = r.summary()["hold"]["hold_ns"]
        for rack in ("rackA", "rackB"):
            members = [i for i, x in enumerate(racks) if x == rack]
            means = naive_group_means(src, out, members, window, hold)
            assert max(means.values()) <= cap * (1 + 1e-5)
            peaks[cap, rack] = max(means.values())
            base = naive_group_means(src, src, members, window, hold)
            if max(base.values()) <= cap:  # a rack within its cap everywhere: bitwise unchanged
                for i in members:
                    assert np.array_equal(out.gpu(i)[1], src.gpu(i)[1], equal_nan=True)
                    assert np.array_equal(out.gpu(i)[0], src.gpu(i)[0])
        energy = sum(naive_energy(*out.gpu(i), 5_000 * MS, hold) for i in range(len(src.gpus)))
        assert r.results[1].figures["energy_j"] == pytest.approx(energy, rel=1e-9, abs=1e-3)
        for i in range(len(src.gpus)):
            ends[cap, i] = out.gpu(i)[0][-1]
    for rack in ("rackA", "rackB"):
        assert peaks[cap_lo, rack] <= peaks[cap_hi, rack] * (1 + 1e-5)
    for i in range(len(src.gpus)):
        assert ends[cap_lo, i] >= ends[cap_hi, i] - 1


@pytest.fixture(scope="module")
def two_racks():
    """16 H100 GPUs, 8 per rack, synchronous training (no stragglers or checkpoints)."""
    return _traceset(training(gpus=16, seconds=10, gpu_model="H100", seed=7, hosts_per_rack=1, stragglers=0,
                              checkpoint_every_s=None))


def test_cap_above_the_group_peak_is_the_identity(two_racks):
    src = two_racks.arrays()
    top = float(np.nanmax(src.power_w)) * 8  # above any window's rack power
    r = tracekit.replay(two_racks, cap=[f"rack:{top}W", "cluster:1MW"], cap_window_s=0.1)
    base = r.summary()["policies"][0]
    assert r.summary()["sync"]
    for res in r.results[1:]:
        out = r.trace(res.name)
        assert np.array_equal(out.ts_ns, src.ts_ns) and np.array_equal(out.power_w, src.power_w)
        p = res.figures
        assert p["energy_j"] == base["energy_j"] and p["peak_w"] == base["peak_w"] and p["slowdown"] == 1.0


def test_percent_of_summed_tdp_equals_watts(two_racks):
    r = tracekit.replay(two_racks, cap=["rack:60%", f"rack:{0.6 * 8 * 700}W"], cap_window_s=0.1)
    pct, watts = r.results[1], r.results[2]
    assert pct.name == "cap=rack:60%" and watts.name == "cap=rack:3.36kW"
    assert np.array_equal(r.trace(pct.name).power_w, r.trace(watts.name).power_w)
    groups = pct.figures["aggregate_cap"]["groups"]
    assert set(groups) == {"rack00", "rack01"}
    for g in groups.values():
        assert g["cap_w"] == pytest.approx(3360.0) and g["max_window_w"] <= 3360.0 * (1 + 1e-6)


def test_rows_scopes_and_partial_groups():
    """Row caps group by the topology's row; a scope at a coarser level picks whole
    groups; a scope that splits a group (racks spanning rows) is refused."""
    t = 1_700_000_000_000_000_000 + np.arange(400, dtype=np.int64) * MS
    p = np.where(np.arange(400) % 100 < 70, 700.0, 137.0)
    series = [(t, p)] * 4
    ts = _racks_traceset(series, ["r0", "r0", "r1", "r1"], ["w0", "w0", "w0", "w1"])
    r = _replay_agg(ts, "row:500W", 0.05, scope="row=w1")
    groups = r.results[1].figures["aggregate_cap"]["groups"]
    assert list(groups) == ["w1"] and groups["w1"]["max_window_w"] <= 500 * (1 + 1e-6)
    out, src = r.trace(r.results[1].name), ts.arrays()
    for i in range(3):  # row w0 is not capped
        assert np.array_equal(out.gpu(i)[1], src.gpu(i)[1])
    assert (out.gpu(3)[1][:50] < 700).all()  # the first 50 ms window is all compute
    with pytest.raises(PolicyError, match=r"^--cap rack:1kW: --scope selects 1 of the 2 GPUs of rack r1; an "
                                          r"aggregate cap covers whole racks$"):
        _replay_agg(ts, "rack:1kW", 0.05, scope="row=w1")
    # the same GPUs as one cluster group: bitwise the same as a row cap over one row
    one = _racks_traceset(series, ["r0"] * 4, ["w0"] * 4)
    a = _replay_agg(one, "row:2kW", 0.05)
    b = _replay_agg(one, "cluster:2kW", 0.05, workers=1)
    assert np.array_equal(a.trace(a.results[1].name).power_w, b.trace(b.results[1].name).power_w)
    assert np.array_equal(a.trace(a.results[1].name).ts_ns, b.trace(b.results[1].name).ts_ns)


def test_capping_one_rack_slows_the_whole_job(two_racks):
    """A rack cap on rack01 only: its windows stay within the cap, rack00 keeps its
    clocks but waits for rack01 at communication power, and the job slows by about
    as much as with the same cap on both racks."""
    r = tracekit.replay(two_racks, cap="rack:3kW", scope="rack=rack01", cap_window_s=0.1)
    r_all = tracekit.replay(two_racks, cap="rack:3kW", cap_window_s=0.1)
    one, every = r.results[1].figures, r_all.results[1].figures
    assert one["name"] == "cap=rack:3kW@rack=rack01"
    assert set(one["aggregate_cap"]["groups"]) == {"rack01"}
    assert one["slowdown"] > 1.05 and one["slowdown"] == pytest.approx(every["slowdown"], rel=0.02)
    assert one["iterations"]["period_s"] > 1.05 * one["iterations"]["base_period_s"]
    src, out = two_racks.arrays(), r.trace(one["name"])
    rack00 = [i for i, g in enumerate(src.gpus) if g.startswith("node00")]
    rack01 = [i for i, g in enumerate(src.gpus) if g.startswith("node01")]
    means = naive_group_means(src, out, rack01, 100 * MS, MS)
    assert max(means.values()) <= 3000 * (1 + 1e-5)
    assert max(naive_group_means(src, src, rack01, 100 * MS, MS).values()) > 4000
    # rack00 is not throttled (every sample above the communication level is kept) ...
    for i in rack00:
        p0, p1 = src.gpu(i)[1], out.gpu(i)[1]
        busy = p0 > 300
        assert np.array_equal(p0[busy], p1[busy])
        # ... but it runs as long as rack01: it waits for it every iteration
        assert out.gpu(i)[0][-1] - out.gpu(i)[0][0] > 1.04 * (src.gpu(i)[0][-1] - src.gpu(i)[0][0])


def test_cluster_cap_equals_n_per_gpu_caps_on_uniform_gpus():
    """N identical GPUs: in a window where every sample is above the per-GPU cap C
    both policies throttle every sample at the same clock (the group mean is N times
    the GPU mean), so ``cluster:N*C`` and ``C`` give the same clock there; they differ
    only in windows mixing compute with communication, where the per-GPU cap
    throttles the samples above C only and the cluster cap every sample above idle.
    Throttling communication (which does not stretch) leaves the cluster cap more
    room for compute, so its slowdown and energy are at most the per-GPU cap's, and
    its peak cut is about the same."""
    ts = _traceset(training(gpus=8, seconds=8, gpu_model="H100", seed=4, hosts_per_rack=1, stragglers=0,
                            checkpoint_every_s=None, level_spread=0.0, noise_w=0.0, jitter=0.0))
    for window_s in (0.1, 1.0):
        r = tracekit.replay(ts, cap=[450, "cluster:3600W"], cap_window_s=window_s, resolution_s=window_s)
        base, per_gpu, cluster = r.summary()["policies"]
        assert per_gpu["peak_cut"] > 0.1
        assert cluster["peak_cut"] == pytest.approx(per_gpu["peak_cut"], abs=0.01)
        assert cluster["slowdown"] <= per_gpu["slowdown"] * (1 + 1e-9)
        assert cluster["slowdown"] == pytest.approx(per_gpu["slowdown"], rel=0.01)
        assert cluster["energy_j"] <= per_gpu["energy_j"] * (1 + 1e-9)
        assert cluster["aggregate_cap"]["groups"]["cluster"]["max_window_w"] <= 3600 * (1 + 1e-6)


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay_agg") / "train"
    training(d, gpus=8, seconds=4, gpu_model="H100", seed=2)
    return d


@pytest.mark.parametrize("args, message", [
    (["--cap", "shelf:40kW"],
     "--cap: unknown level 'shelf' in 'shelf:40kW'; use gpu, host, rack, row, cluster (e.g. rack:40kW)"),
    (["--cap", "rack:500W"],
     "--cap rack:500W (500 W) is not above the summed idle power of rack rack00 (8 GPUs, 600 W): GPUs cannot "
     "draw less than idle; raise the cap"),
    (["--cap", "rack:5%"],
     "--cap rack:5% (280 W) is not above the summed idle power of rack rack00 (8 GPUs, 600 W): GPUs cannot "
     "draw less than idle; raise the cap"),
    (["--cap", "rack:4kW", "--scope", "host=node00"],
     "--cap rack:4kW caps whole racks, but --scope host=... selects part of a rack; scope it by cluster, row, "
     "rack"),
    (["--cap", "rack:4kW", "--scope", "rack=rack09"], "--scope: unknown rack 'rack09'; known: rack00"),
    (["--cap", "rack:"], "--cap 'rack:' gives no value after rack:"),
    (["--cap", "cluster:5kW:4kW:1kW"], "--cap: sweep '5kW:4kW:1kW' needs STEP > 0 and STOP >= START"),
    (["--cap", "rack:3kW", "--smooth", "floor=60%"],
     "contradicting policies: the summed power floor 3360 W of rack rack00 is above its cap 3000 W; lower the "
     "floor or raise the cap"),
])
def test_cli_bad_aggregate_caps_exit_2_with_one_line(dataset, capsys, args, message):
    from tracekit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["replay", str(dataset), *args])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"tracekit: error: {message}\n"


def test_cli_aggregate_cap_json(dataset, capsys):
    import json

    from tracekit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["replay", str(dataset), "--cap", "rack:3kW:4kW:1kW", "--cap-window", "100ms", "--json"])
    assert exc.value.code == 0
    s = json.loads(capsys.readouterr().out)
    names = [p["name"] for p in s["policies"]]
    assert names == ["baseline", "cap=rack:3kW", "cap=rack:4kW"]
    peaks = [p["aggregate_cap"]["groups"]["rack00"]["max_window_w"] for p in s["policies"][1:]]
    assert peaks[0] <= 3000 * (1 + 1e-6) and peaks[1] <= 4000 * (1 + 1e-6)
    assert s["policies"][1]["slowdown"] >= s["policies"][2]["slowdown"] > 1.0
