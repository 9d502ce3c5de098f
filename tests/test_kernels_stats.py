"""gpu_sampling kernel vs a plain-loop twin and vs Polars; quantiles vs np.quantile."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.errors import SchemaError
from tracekit.kernels.stats import (_QUANTILE_MIN_N, _WIDE_BUCKETS, _band_order_stats, _median_of_diffs, _ranks_mean,
                                    gpu_sampling, quantiles)


def naive_gpu_sampling(ts, power, offsets):
    rows = []
    for g in range(len(offsets) - 1):
        t = [int(x) for x in ts[offsets[g]:offsets[g + 1]]]
        p = [float(x) for x in power[offsets[g]:offsets[g + 1]]]
        dts = [b - a for a, b in zip(t, t[1:])]
        changes = []
        last = None
        for i, (ti, pi) in enumerate(zip(t, p)):
            if i == 0:
                last = pi
                continue
            same = (pi == last) or (np.isnan(pi) and np.isnan(last))
            if not same:
                changes.append(ti)
                last = pi
        dcs = [b - a for a, b in zip(changes, changes[1:])]
        fin = [x for x in p if np.isfinite(x)]
        rows.append((
            len(t),
            float(np.median(dts)) / 1e6 if dts else np.nan,
            float(np.median(dcs)) / 1e6 if len(dcs) else np.nan,
            sum(fin) / len(fin) if fin else np.nan,
            min(fin) if fin else np.nan,
            max(fin) if fin else np.nan,
        ))
    return rows


@st.composite
def csr_series(draw):
    n_gpus = draw(st.integers(1, 4))
    # small units keep the differences' range narrow (the kernel's counting median),
    # 1 ms units make it wide (its bucket passes and selection, _wide_medians)
    unit = draw(st.sampled_from([1, 997, 1_000_000]))
    counts = draw(st.lists(st.integers(0, 30), min_size=n_gpus, max_size=n_gpus))
    ts, power = [], []
    for c in counts:
        steps = draw(st.lists(st.integers(0, 5), min_size=c, max_size=c))
        ts += list(np.cumsum(steps) * unit)
        if draw(st.booleans()):  # a logged counter: values repeat
            power += draw(st.lists(st.sampled_from([100.0, 200.0, 300.0, float("nan"), float("inf"), -float("inf")]),
                                   min_size=c, max_size=c))
        else:  # noisy power: every sample changes the value (a lone NaN too), or all but a few
            noisy = list(100.0 + np.arange(c) * 0.5)
            for i in draw(st.lists(st.integers(0, max(c - 1, 0)), max_size=2)) if c else []:
                noisy[i] = draw(st.sampled_from([float("nan"), noisy[i - 1] if i else 100.0]))
            power += noisy
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return np.array(ts, dtype=np.int64), np.array(power, dtype=np.float32), offsets


@settings(max_examples=150, deadline=None)
@given(csr_series())
def test_gpu_sampling_equals_naive(data):
    ts, power, offsets = data
    got = gpu_sampling(ts, power, offsets)
    for g, row in enumerate(naive_gpu_sampling(ts, power, offsets)):
        n, sp, ep, mean, lo, hi = row
        assert got["samples"][g] == n
        np.testing.assert_allclose(
            [got["sample_period_ms"][g], got["effective_period_ms"][g], got["mean_w"][g], got["min_w"][g],
             got["peak_w"][g]],
            [sp, ep, mean, lo, hi], rtol=1e-6, equal_nan=True)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(st.integers(0, 4), min_size=1, max_size=80),
                 st.lists(st.integers(-10**15, 10**15), min_size=1, max_size=80),
                 st.lists(st.integers(2**62 - 2**40, 2**63 - 1), min_size=1, max_size=80)),
       st.sampled_from(["as drawn", "sorted", "reversed"]))
def test_median_by_selection_equals_np_median(values, order):
    x = np.array(values, dtype=np.int64)
    x = {"as drawn": x, "sorted": np.sort(x), "reversed": np.sort(x)[::-1].copy()}[order]
    n = len(x)
    assert _ranks_mean(x.copy(), n, (n - 1) // 2, n // 2) == np.median(x)  # the median by selection


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(2, 3000), st.integers(_WIDE_BUCKETS + 1, 4 * _WIDE_BUCKETS)),
       st.sampled_from(["jitter", "gaps", "two clocks", "outliers", "tiny"]), st.integers(0, 2**31))
def test_median_of_diffs_equals_np_median(n, kind, seed):
    # both medians (all intervals; without the first), on every path: a counting table,
    # or the wide range's passes over coarse buckets (a few long gaps, two clocks far
    # apart, ...; above _WIDE_BUCKETS values), then a selection
    rng = np.random.default_rng(seed)
    d = {
        "jitter": 1_000_000 + rng.integers(-100_000, 100_000, n),
        "gaps": np.where(rng.random(n) < 0.01, rng.integers(10**9, 10**12, n), 1_000_000 + rng.integers(0, 50, n)),
        "two clocks": np.where(rng.random(n) < rng.random(), 20_000_000, 100_000_000) + rng.integers(0, 3, n),
        "outliers": np.where(rng.random(n) < 0.4, rng.integers(0, 10**13, n), rng.integers(999_990, 1_000_010, n)),
        "tiny": rng.integers(0, 3, n),
    }[kind].astype(np.int64)
    d[0] = rng.choice([d.min(), d.max(), d[0]])  # the first difference at either end too
    t = np.concatenate([[0], np.cumsum(d)]).astype(np.int64)
    whole, but_first = _median_of_diffs(t, int(d.min()), int(d.max()), True)
    assert whole == np.median(d)
    assert but_first == np.median(d[1:])


def test_gpu_sampling_matches_polars_on_repeated_values():
    # a counter logged every 20 ms that updates every 100 ms
    ts = np.arange(50, dtype=np.int64) * 20_000_000
    power = np.repeat(np.arange(10, dtype=np.float32) * 10 + 100, 5)
    got = gpu_sampling(ts, power, np.array([0, 50]))
    df = pl.DataFrame({"ts": ts, "p": power})
    ref_period = df.get_column("ts").diff().median() / 1e6
    changes = df.filter(pl.col("p") != pl.col("p").shift(1)).get_column("ts")
    assert got["sample_period_ms"][0] == ref_period == 20.0
    assert got["effective_period_ms"][0] == changes.diff().median() / 1e6 == 100.0


def test_gpu_sampling_rejects_bad_offsets():
    with pytest.raises(SchemaError, match="offsets"):
        gpu_sampling(np.arange(3, dtype=np.int64), np.ones(3, np.float32), np.array([0, 2]))


@settings(max_examples=150, deadline=None)
@given(csr_series(), st.data())
def test_sampling_accumulator_any_chunking_equals_gpu_sampling(data, draw):
    from tracekit.kernels.stats import SamplingAccumulator

    ts, power, offsets = data
    want = gpu_sampling(ts, power, offsets)
    acc = SamplingAccumulator(len(offsets) - 1)
    for g in range(len(offsets) - 1):
        a, b = int(offsets[g]), int(offsets[g + 1])
        cuts = sorted(draw.draw(st.lists(st.integers(a, b), max_size=4)))
        for lo, hi in zip([a, *cuts], [*cuts, b]):
            acc.push(g, ts[lo:hi], power[lo:hi])
    got = acc.finish()
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def _series_of(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "walk":  # an aggregate's power: strongly autocorrelated
        return 5e4 + np.cumsum(rng.normal(0, 50, n))
    if kind == "iid":
        return rng.normal(300, 80, n)
    if kind == "levels":  # compute/communication: two levels and noise, long runs
        return np.where((np.arange(n) // rng.integers(50, 5000)) % 2 == 0, 650.0, 120.0) + rng.normal(0, 5, n)
    if kind == "few":  # many ties
        return rng.integers(0, 4, n).astype(np.float64) * 100.0
    if kind == "sorted":
        return np.sort(rng.normal(0, 1, n))[:: 1 if seed % 2 else -1].copy()
    if kind == "spiky":  # mostly zero, rare huge values (a swing series of a flat trace)
        x = np.zeros(n)
        x[rng.integers(0, n, 50)] = rng.uniform(1e3, 1e4, 50)
        return x
    # the systematic sample sees only the spikes: the bracket misses, NumPy takes over
    x = np.zeros(n)
    stride = n // 4096
    x[stride // 2:: stride] = 1e6
    return x


KINDS = ["walk", "iid", "levels", "few", "sorted", "spiky", "aliased"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(KINDS), st.integers(_QUANTILE_MIN_N, 3 * _QUANTILE_MIN_N), st.integers(0, 2**31),
       st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.5, 0.99, 0.999, 1.0])), min_size=1, max_size=4))
def test_quantiles_bitwise_equal_numpy(kind, n, seed, qs):
    x = _series_of(kind, n, seed)
    before = x.copy()
    got = quantiles(x, qs)
    want = np.quantile(x, np.asarray(qs, dtype=np.float64))
    assert got.tobytes() == np.asarray(want, dtype=np.float64).tobytes(), (kind, n, qs, got, want)
    np.testing.assert_array_equal(x, before)  # x is not reordered


def test_quantiles_kernel_path_taken_and_its_misses_detected():
    # the fast path answers on ordinary series; a series whose systematic sample is
    # unrepresentative, or that has NaN, is refused (and quantiles falls back)
    n = _QUANTILE_MIN_N
    r = np.array([n // 2 - 1, int(0.99 * (n - 1))], dtype=np.int64)
    out = np.empty(4)
    assert _band_order_stats(_series_of("walk", n, 1), r, r + 1, out)
    assert _band_order_stats(_series_of("aliased", n, 1), r, r + 1, out) is False
    x = _series_of("iid", n, 2)
    x[123] = np.nan
    assert _band_order_stats(x, r, r + 1, out) is False
    assert np.isnan(quantiles(x, [0.5])).all()


def test_quantiles_short_and_float32_inputs():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(quantiles(x, [0.5, 0.9]), np.quantile(x.astype(np.float64), [0.5, 0.9]))
    with pytest.raises(ValueError):
        quantiles(np.zeros(_QUANTILE_MIN_N), [1.5])
