"""gpu_sampling kernel vs a plain-loop twin and vs Polars."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.errors import SchemaError
from tracekit.kernels.stats import gpu_sampling


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
    # 1 ms units make it wide (its np.median fallback)
    unit = draw(st.sampled_from([1, 997, 1_000_000]))
    counts = draw(st.lists(st.integers(0, 30), min_size=n_gpus, max_size=n_gpus))
    ts, power = [], []
    for c in counts:
        steps = draw(st.lists(st.integers(0, 5), min_size=c, max_size=c))
        ts += list(np.cumsum(steps) * unit)
        if draw(st.booleans()):  # a logged counter: values repeat
            power += draw(st.lists(st.sampled_from([100.0, 200.0, 300.0, float("nan")]), min_size=c, max_size=c))
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
