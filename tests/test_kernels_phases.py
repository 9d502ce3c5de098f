"""Hysteresis labelling and segments against naive twins; chunked == one shot."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import naive
from tests.strategies import chunks, power_traces, split_points
from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels.phases import (
    HysteresisLabeler,
    SegmentBuilder,
    hysteresis_thresholds,
    label_phases,
    phase_segments,
)

FAST = settings(max_examples=50, deadline=None)

level_sets = st.sampled_from([[400.0], [100.0, 700.0], [100.0, 400.0, 700.0], [100.0, 380.0, 400.0, 700.0]])
hysteresis_values = st.sampled_from([0.0, 0.2, 0.5, 0.9])
dwell_values = st.sampled_from([0, 1, 10, 50, 200, 10_000])


def _streamed_labels(ts, power, levels, h, dwell, cuts):
    labeler = HysteresisLabeler(levels, hysteresis=h, min_dwell_ns=dwell)
    parts = [labeler.push(ts[s], power[s]) for s in chunks(len(ts), cuts)]
    parts.append(labeler.finish())
    return np.concatenate(parts)


# --------------------------------------------------------------------------- labels


def test_labels_hand_worked_example():
    ts = np.arange(20, dtype=np.int64) * 100
    power = np.array(
        [100] * 5 + [600, 100] + [600] * 6 + [np.nan, 600] + [100] * 5, dtype=np.float32
    )
    labels = label_phases(ts, power, [100.0, 600.0], hysteresis=0.2, min_dwell_ns=250)
    # the 1-sample blip at 5 is absorbed; the run from 7 is confirmed at 10 (dwell 300 ns)
    # and relabelled from 7; the NaN at 13 keeps the label; the run from 15 confirms at 18
    assert labels.tolist() == [0] * 7 + [1] * 8 + [0] * 5


def test_nan_time_does_not_count_toward_dwell():
    lead_ts = np.arange(0, 1_001, 100, dtype=np.int64)  # 11 samples at 100 W: dwell 1000 ns
    ts = np.concatenate([lead_ts, [1_100, 1_200, 2_000, 2_100]])
    power = np.concatenate([np.full(11, 100.0), [600.0, np.nan, 600.0, 600.0]])
    # the run from 1100 holds 1100..1200 (100 ns), the NaN's 800 ns do not count, the
    # sample at 2000 holds until 2100: dwell reaches 200 ns at the last sample (1000 ns
    # if the NaN's time counted)
    lead = [0] * 11
    assert label_phases(ts, power, [100.0, 600.0], min_dwell_ns=201).tolist() == lead + [0] * 4
    assert label_phases(ts, power, [100.0, 600.0], min_dwell_ns=200).tolist() == lead + [1] * 4


def test_band_samples_break_a_run_and_keep_the_label():
    # levels 100/700, h=0.5: band [250, 550]
    ts = np.arange(8, dtype=np.int64) * 10
    power = np.array([100, 100, 100, 600, 400, 600, 600, 600], dtype=np.float32)
    labels = label_phases(ts, power, [100.0, 700.0], hysteresis=0.5, min_dwell_ns=20)
    assert labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # without the band sample the run from 3 confirms at 5
    power[4] = 600
    labels = label_phases(ts, power, [100.0, 700.0], hysteresis=0.5, min_dwell_ns=20)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_leading_samples_take_the_first_confirmed_label():
    ts = np.arange(5, dtype=np.int64) * 10
    power = np.array([np.nan, 400, 700, 700, 700], dtype=np.float32)
    labels = label_phases(ts, power, [100.0, 700.0], min_dwell_ns=20)
    assert labels.tolist() == [1, 1, 1, 1, 1]


def test_never_confirmed_is_unlabelled():
    ts = np.arange(3, dtype=np.int64)
    assert label_phases(ts, np.full(3, np.nan), [1.0, 2.0]).tolist() == [-1, -1, -1]
    assert label_phases(ts, np.ones(3), [1.0, 2.0], min_dwell_ns=5).tolist() == [-1, -1, -1]
    assert label_phases(ts[:0], np.ones(0), [1.0, 2.0]).tolist() == []
    assert label_phases(ts[:1], np.array([2.0]), [1.0, 2.0]).tolist() == [1]


@FAST
@given(power_traces(max_n=40), level_sets, hysteresis_values)
def test_zero_dwell_zero_band_is_nearest_level(trace, levels, h):
    ts, power = trace
    labels = label_phases(ts, power, levels, hysteresis=0.0, min_dwell_ns=0)
    lv = np.asarray(levels)
    mids = (lv[:-1] + lv[1:]) / 2
    for i, p in enumerate(power.astype(np.float64)):
        if np.isnan(p) or np.any(p == mids):
            continue
        assert labels[i] == int(np.argmin(np.abs(lv - p)))


@FAST
@given(power_traces(max_n=40), level_sets, hysteresis_values, dwell_values)
def test_labels_equal_naive(trace, levels, h, dwell):
    ts, power = trace
    labels = label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)
    expected = naive.naive_label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)
    assert labels.dtype == np.int8
    assert labels.tolist() == expected


@FAST
@given(level_sets, hysteresis_values, dwell_values, st.data())
def test_labels_at_the_band_edges_equal_naive(levels, h, dwell, data):
    """Samples at, just inside and just outside every hysteresis band's edges (where a
    sample stops keeping its label without a pending change)."""
    lower, upper = hysteresis_thresholds(levels, h)
    edges = np.concatenate([lower, upper])
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), edges - 3.0,
                           edges + 3.0, levels])
    n = data.draw(st.integers(1, 60))
    power = np.array(data.draw(st.lists(st.sampled_from(near.tolist()), min_size=n, max_size=n)))
    ts = np.cumsum(np.array(data.draw(st.lists(st.integers(1, 20), min_size=n, max_size=n)), dtype=np.int64))
    labels = label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)
    assert labels.tolist() == naive.naive_label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)


@FAST
@given(power_traces(max_n=40), level_sets, hysteresis_values, dwell_values, st.data())
def test_any_chunking_equals_one_shot_and_naive(trace, levels, h, dwell, data):
    ts, power = trace
    cuts = data.draw(split_points(len(ts), max_splits=6))
    streamed = _streamed_labels(ts, power, levels, h, dwell, cuts)
    one_shot = label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)
    assert streamed.tolist() == one_shot.tolist()
    assert one_shot.tolist() == naive.naive_label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)


@st.composite
def phase_runs(draw, max_runs: int = 20):
    """(ts, power): runs of 1..400 samples near one level each (noise inside the bands
    and out of them, NaN, short excursions), long enough that the labeler's block
    test (all samples of a block keep the label) takes part, also while a change is
    pending."""
    levels = draw(level_sets)
    length = st.one_of(st.integers(1, 40), st.integers(1, 400))
    runs = draw(st.lists(st.tuples(length, st.integers(0, len(levels) - 1)), min_size=1, max_size=max_runs))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    noise = draw(st.sampled_from([0.0, 5.0, 60.0]))
    power = np.concatenate([np.full(n, levels[k]) for n, k in runs]) + rng.normal(0.0, noise, sum(n for n, _ in runs))
    power[rng.random(len(power)) < draw(st.sampled_from([0.0, 0.01, 0.2]))] = np.nan
    ts = np.cumsum(rng.integers(1, 4, len(power))).astype(np.int64)
    dt = draw(st.sampled_from([np.float32, np.float64]))
    return levels, ts, power.astype(dt)


@settings(max_examples=200, deadline=None)
@given(phase_runs(), hysteresis_values, dwell_values, st.data())
def test_long_runs_equal_naive_in_any_chunking(runs, h, dwell, data):
    levels, ts, power = runs
    labels = label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)
    assert labels.tolist() == naive.naive_label_phases(ts, power, levels, hysteresis=h, min_dwell_ns=dwell)
    cuts = data.draw(split_points(len(ts), max_splits=4))
    assert _streamed_labels(ts, power, levels, h, dwell, cuts).tolist() == labels.tolist()


@pytest.mark.parametrize("excursion", [1, 3])
def test_a_change_pending_at_any_position_is_cancelled_as_naive(excursion):
    """A short excursion to another level starts a change that the samples after it
    cancel, before the level changes for good.  Placed at every position over 70
    samples, with gaps of powers of two, the excursion ends, for some of them, exactly
    where the labeler's block test (all samples of a block keep the label) begins and
    the change comes back at a block's end: the blocks must not skip the cancellation."""
    levels = [100.0, 700.0]
    ts = np.arange(600, dtype=np.int64)
    for gap in (8, 16, 32, 64, 128):
        for at in range(100, 170):
            power = np.full(600, 100.0)
            power[at: at + excursion] = 700.0
            power[at + excursion + gap: at + excursion + gap + 100] = 700.0
            expected = naive.naive_label_phases(ts, power, levels, hysteresis=0.2, min_dwell_ns=50)
            got = label_phases(ts, power, levels, hysteresis=0.2, min_dwell_ns=50)
            assert got.tolist() == expected, (gap, at)


def test_streaming_finalizes_all_but_the_pending_run():
    labeler = HysteresisLabeler([100.0, 700.0], min_dwell_ns=50)
    ts = np.arange(10, dtype=np.int64) * 10
    power = np.array([100] * 8 + [700] * 2, dtype=np.float32)
    out = labeler.push(ts, power)
    assert out.tolist() == [0] * 8
    assert labeler.n_pending == 2 and labeler.n_seen == 10
    out = labeler.push(ts + 100, np.full(10, 700, dtype=np.float32))
    assert out.tolist() == [1] * 12  # the run confirmed and became final retroactively
    assert labeler.finish().tolist() == []


def test_accepts_datetime64_and_polars():
    ts = pl.Series(
        "ts", np.array([0, 10, 20], dtype="datetime64[ns]"), dtype=pl.Datetime("ns", "UTC")
    )
    power = pl.Series("power_w", [100.0, None, 700.0], dtype=pl.Float32)
    assert label_phases(ts, power, [100.0, 700.0]).tolist() == [0, 0, 1]
    # ms are converted to ns: the run from 1 ms confirms after 1e6 ns, and the
    # unconfirmed first sample takes the first confirmed label
    ts_ms = np.array([0, 1, 2], dtype="datetime64[ms]")
    labels = label_phases(ts_ms, np.array([100.0, 700, 700]), [100.0, 700.0], min_dwell_ns=1_000_000)
    assert labels.tolist() == [1, 1, 1]


def test_thresholds():
    lower, upper = hysteresis_thresholds([100.0, 300.0, 700.0], 0.5)
    assert lower.tolist() == [150.0, 400.0]
    assert upper.tolist() == [250.0, 600.0]


@pytest.mark.parametrize(
    ("ts", "power", "levels", "kwargs", "error", "match"),
    [
        ([0, 2, 1], [1.0, 1.0, 1.0], [1.0, 2.0], {}, SchemaError, "sorted ascending; sample 2"),
        ([0, 1], [1.0, 1.0, 1.0], [1.0, 2.0], {}, SchemaError, "same length"),
        ([0, 1], [1, 1], [1.0, 2.0], {}, SchemaError, "float32 or float64"),
        ([0.0, 1.0], [1.0, 1.0], [1.0, 2.0], {}, SchemaError, "int64 nanoseconds"),
        ([0, 1], [1.0, 1.0], [2.0, 1.0], {}, ParameterError, "strictly ascending"),
        ([0, 1], [1.0, 1.0], [], {}, ParameterError, "at least one"),
        ([0, 1], [1.0, 1.0], [1.0, 2.0], {"hysteresis": 1.0}, ParameterError, "hysteresis"),
        ([0, 1], [1.0, 1.0], [1.0, 2.0], {"min_dwell_ns": -1}, ParameterError, "min_dwell_ns"),
        ([0, 1], [1.0, 1.0], [1.0, 2.0], {"min_dwell_ns": 1.5}, ParameterError, "integer"),
    ],
)
def test_label_phases_rejects_bad_input(ts, power, levels, kwargs, error, match):
    with pytest.raises(error, match=match):
        label_phases(np.asarray(ts), np.asarray(power), np.asarray(levels), **kwargs)


def test_labeler_rejects_out_of_order_chunks_and_push_after_finish():
    labeler = HysteresisLabeler([1.0, 2.0])
    labeler.push(np.array([10, 20]), np.array([1.0, 2.0]))
    with pytest.raises(SchemaError, match="before the previous chunk"):
        labeler.push(np.array([15]), np.array([1.0]))
    labeler.finish()
    with pytest.raises(ParameterError, match="finished"):
        labeler.push(np.array([30]), np.array([1.0]))


# --------------------------------------------------------------------------- segments


def _as_rows(seg):
    return list(
        zip(
            seg.start_idx.tolist(),
            seg.end_idx.tolist(),
            seg.label.tolist(),
            seg.mean_w.tolist(),
            seg.peak_w.tolist(),
            seg.energy_j.tolist(),
            seg.covered_s.tolist(),
        )
    )


def _assert_rows_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g[:3] == e[:3]
        np.testing.assert_allclose(g[3:], e[3:], rtol=1e-12, atol=0, equal_nan=True)


def test_segments_hand_worked_example():
    ts = np.array([0, 1_000_000_000, 2_000_000_000, 4_000_000_000], dtype=np.int64)
    power = np.array([100.0, 300.0, np.nan, 700.0], dtype=np.float32)
    labels = np.array([0, 0, 0, 1], dtype=np.int8)
    seg = phase_segments(ts, power, labels, last_hold_ns=500_000_000)
    assert seg.start_idx.tolist() == [0, 3]
    assert seg.end_idx.tolist() == [3, 4]
    assert seg.label.tolist() == [0, 1]
    assert seg.energy_j.tolist() == pytest.approx([400.0, 350.0])  # 100*1 + 300*1; 700*0.5
    assert seg.covered_s.tolist() == pytest.approx([2.0, 0.5])  # the NaN's 2 s are missing
    assert seg.mean_w.tolist() == pytest.approx([200.0, 700.0])
    assert seg.peak_w.tolist() == [300.0, 700.0]


@FAST
@given(power_traces(max_n=40), st.data())
def test_segments_equal_naive_and_conserve_energy(trace, data):
    ts, power = trace
    labels = np.asarray(
        data.draw(st.lists(st.integers(-1, 2), min_size=len(ts), max_size=len(ts))), dtype=np.int8
    )
    hold = data.draw(st.sampled_from([0, 10, 100]))
    seg = phase_segments(ts, power, labels, last_hold_ns=hold)
    expected = naive.naive_segments(ts, power, labels, last_hold_ns=hold)
    _assert_rows_equal(_as_rows(seg), expected)
    total = naive.naive_zoh_energy(
        ts, power, lo_ns=-(2**62), hi_ns=2**62, max_gap_ns=2**62, hold_ns=hold
    )
    assert seg.energy_j.sum() == pytest.approx(total, rel=1e-9, abs=1e-15)
    assert seg.end_idx.tolist() == seg.start_idx.tolist()[1:] + ([len(ts)] if len(ts) else [])


@FAST
@given(power_traces(max_n=40), st.data())
def test_segment_builder_chunked_equals_one_shot(trace, data):
    ts, power = trace
    labels = np.asarray(
        data.draw(st.lists(st.integers(0, 2), min_size=len(ts), max_size=len(ts))), dtype=np.int8
    )
    cuts = data.draw(split_points(len(ts)))
    builder = SegmentBuilder(last_hold_ns=50)
    rows = []
    for part in chunks(len(ts), cuts):
        rows += _as_rows(builder.push(ts[part], power[part], labels[part]))
    rows += _as_rows(builder.finish())
    one_shot = _as_rows(phase_segments(ts, power, labels, last_hold_ns=50))
    _assert_rows_equal(rows, one_shot)


def test_segments_of_empty_and_single_sample():
    empty = phase_segments(np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int8), last_hold_ns=10)
    assert len(empty.start_idx) == 0
    one = phase_segments(np.array([5]), np.array([2e9], dtype=np.float64), np.array([1]), last_hold_ns=1)
    assert _as_rows(one) == [(0, 1, 1, pytest.approx(2e9), 2e9, pytest.approx(2.0), pytest.approx(1e-9))]
    nan = phase_segments(np.array([5]), np.array([np.nan]), np.array([0]), last_hold_ns=1)
    assert np.isnan(nan.mean_w[0]) and np.isnan(nan.peak_w[0]) and nan.energy_j[0] == 0.0


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        ([0.0, 1.0], {"last_hold_ns": 1}, SchemaError, "integer"),
        ([0, 1, 1], {"last_hold_ns": 1}, SchemaError, "same length"),
        ([0, 1], {"last_hold_ns": -1}, ParameterError, "last_hold_ns"),
    ],
)
def test_segments_reject_bad_input(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        phase_segments(np.array([0, 1]), np.array([1.0, 2.0]), np.asarray(labels), **kwargs)
