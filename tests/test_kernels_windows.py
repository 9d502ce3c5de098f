"""Sliding-window swing, ramps, rolling median and events against naive twins and NumPy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import naive
from tests.strategies import chunks, regular_series, split_points
from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels.windows import (
    RampStream,
    SwingStream,
    ramp_rates,
    rolling_median,
    threshold_events,
    window_swing,
)

FAST = settings(max_examples=50, deadline=None)
windows = st.integers(1, 12)


def _nan_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


# --------------------------------------------------------------------------- swing


def test_swing_hand_worked_example():
    x = np.array([1, 5, np.nan, 2, 8, 3, np.nan, np.nan, np.nan, 4.0])
    _nan_equal(window_swing(x, 3), [4, 3, 6, 6, 5, 0, np.nan, 0])


@FAST
@given(regular_series(), windows)
def test_swing_equals_naive(x, w):
    _nan_equal(window_swing(x, w), naive.naive_window_swing(x, w))


@pytest.mark.parametrize("w", [1, 2, 7, 64])
def test_swing_equals_numpy_sliding_window(w):
    rng = np.random.default_rng(w)
    x = rng.normal(1e6, 2e5, 3_000)
    x[rng.integers(0, 3_000, 600)] = np.nan
    x[1000:1100] = np.nan  # an all-NaN stretch
    view = np.lib.stride_tricks.sliding_window_view(x, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        expected = np.nanmax(view, axis=1) - np.nanmin(view, axis=1)
    _nan_equal(window_swing(x, w), expected)


@FAST
@given(regular_series(), windows, st.data())
def test_swing_stream_chunked_equals_one_shot(x, w, data):
    cuts = data.draw(split_points(len(x)))
    stream = SwingStream(w)
    parts = [stream.push(x[s]) for s in chunks(len(x), cuts)]
    _nan_equal(np.concatenate(parts) if parts else [], window_swing(x, w))


def test_swing_edge_cases():
    assert window_swing(np.empty(0), 3).shape == (0,)
    assert window_swing(np.ones(2), 3).shape == (0,)  # shorter than one window
    _nan_equal(window_swing(np.array([3.0, np.nan]), 1), [0.0, np.nan])
    _nan_equal(window_swing(np.full(4, np.nan, dtype=np.float32), 2), [np.nan] * 3)


# --------------------------------------------------------------------------- ramps


@FAST
@given(regular_series(), windows, st.sampled_from([0.1, 1.0, 2.5]))
def test_ramp_equals_naive(x, w, cell_s):
    got = ramp_rates(x, w, cell_s=cell_s)
    up, up_idx, down, down_idx = naive.naive_ramp(x, w)
    window_s = w * cell_s
    assert (got.up_idx, got.down_idx) == (up_idx, down_idx)
    _nan_equal([got.up_per_s, got.down_per_s], [up / window_s, down / window_s])


def test_ramp_hand_worked_example():
    x = np.array([0.0, 10.0, 40.0, 40.0, 5.0])
    ramp = ramp_rates(x, 2, cell_s=0.5)  # window 1 s: diffs 40, 30, -35
    assert ramp == (40.0, 0, 35.0, 2)
    none = ramp_rates(np.array([1.0, np.nan, np.nan]), 1, cell_s=1.0)
    assert np.isnan(none.up_per_s) and none.up_idx == -1 and none.down_idx == -1


@FAST
@given(regular_series(), windows, st.data())
def test_ramp_stream_chunked_equals_one_shot(x, w, data):
    cuts = data.draw(split_points(len(x)))
    stream = RampStream(w, cell_s=0.1)
    for s in chunks(len(x), cuts):
        stream.push(x[s])
    got = stream.result()
    expected = ramp_rates(x, w, cell_s=0.1)
    assert (got.up_idx, got.down_idx) == (expected.up_idx, expected.down_idx)
    _nan_equal([got.up_per_s, got.down_per_s], [expected.up_per_s, expected.down_per_s])


# --------------------------------------------------------------------------- median and events


@FAST
@given(regular_series(), windows)
def test_rolling_median_equals_naive(x, w):
    _nan_equal(rolling_median(x, w), naive.naive_rolling_median(x, w))


def test_rolling_median_equals_numpy():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 50, 500).astype(np.float64)  # many ties
    x[rng.integers(0, 500, 50)] = np.nan
    w = 9
    padded = np.concatenate([np.full(w - 1, np.nan), x])
    expected = np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, w), axis=1)
    _nan_equal(rolling_median(x, w), expected)


@FAST
@given(regular_series(), st.data())
def test_events_equal_naive(x, data):
    kind = data.draw(st.sampled_from(["dip", "spike"]))
    threshold = data.draw(st.sampled_from([0.0, 50.0, 400.0]))
    min_cells = data.draw(st.integers(1, 4))
    if data.draw(st.booleans()):
        baseline = data.draw(st.sampled_from([0.0, 500.0]))
        base_arr = np.full(len(x), baseline)
    else:
        baseline = rolling_median(x, data.draw(windows))
        base_arr = baseline
    ev = threshold_events(x, baseline, threshold=threshold, min_cells=min_cells, kind=kind)
    expected = naive.naive_events(x, base_arr, threshold=threshold, min_cells=min_cells, kind=kind)
    got = list(zip(ev.start_idx.tolist(), ev.end_idx.tolist(), ev.depth.tolist(), ev.extreme_idx.tolist()))
    assert got == expected


def test_events_hand_worked_example():
    x = np.array([1000, 1000, 600, 400, 900, 1000, 700, np.nan, 650, 1000.0])
    dips = threshold_events(x, 1000.0, threshold=200.0, min_cells=1, kind="dip")
    assert dips.start_idx.tolist() == [2, 6, 8]  # the NaN ends the dip at 6
    assert dips.end_idx.tolist() == [4, 7, 9]
    assert dips.depth.tolist() == [600.0, 300.0, 350.0]
    assert dips.extreme_idx.tolist() == [3, 6, 8]
    long_dips = threshold_events(x, 1000.0, threshold=200.0, min_cells=2)
    assert long_dips.start_idx.tolist() == [2]
    spikes = threshold_events(x, 500.0, threshold=400.0, kind="spike")
    # 900 is exactly 400 above: not beyond the threshold
    assert spikes.start_idx.tolist() == [0, 5, 9] and spikes.end_idx.tolist() == [2, 6, 10]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: window_swing(np.ones(3), 0), ParameterError, "window_cells must be >= 1"),
        (lambda: window_swing(np.ones(3, dtype=np.int64), 2), SchemaError, "float32 or float64"),
        (lambda: window_swing(np.ones((3, 2)), 2), SchemaError, "1-D"),
        (lambda: SwingStream(0), ParameterError, "window_cells"),
        (lambda: ramp_rates(np.ones(3), 1, cell_s=0.0), ParameterError, "cell_s"),
        (lambda: rolling_median(np.ones(3), 2.5), ParameterError, "integer"),
        (lambda: threshold_events(np.ones(3), np.ones(2), threshold=1.0), SchemaError, "length of x"),
        (lambda: threshold_events(np.ones(3), 0.0, threshold=-1.0), ParameterError, "threshold"),
        (lambda: threshold_events(np.ones(3), 0.0, threshold=1.0, kind="up"), ParameterError, "kind"),
        (lambda: threshold_events(np.ones(3), 0.0, threshold=1.0, min_cells=0), ParameterError, "min_cells"),
    ],
)
def test_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
