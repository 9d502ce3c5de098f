"""Power histogram and exact 1-D k-means against naive twins and NumPy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import naive
from tests.strategies import chunks, histograms, power_traces, split_points
from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels.levels import (
    choose_levels,
    histogram_bin_centers,
    kmeans_1d,
    power_histogram,
)

FAST = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------- histogram


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bin_w", [10.0, 0.3, 1.0, 0.25])  # powers of two take the multiplying loop
def test_histogram_matches_naive_with_out_of_range_nan_and_inf(dtype, bin_w):
    rng = np.random.default_rng(1)
    power = rng.uniform(-50, 900, 2_000).astype(dtype)
    power[:200] = np.round(power[:200] / bin_w) * bin_w + 0.1  # at and near the bin edges
    power[200:300] = np.round(power[200:300] / bin_w) * bin_w
    power[::17] = np.nan
    power[5] = np.inf
    power[6] = -np.inf
    n_bins = int(800 / bin_w)
    counts = power_histogram(power, bin_w=bin_w, n_bins=n_bins, lo_w=0.1)
    expected = naive.naive_power_histogram(power, lo_w=0.1, bin_w=bin_w, n_bins=n_bins)
    assert counts.dtype == np.int64
    assert counts.tolist() == expected
    assert counts.sum() == np.isfinite(power).sum()


@pytest.mark.parametrize("bin_w", [0.1, 10.0, 0.3, 0.25, 1.0])
def test_histogram_at_bin_edges_from_zero_equals_naive(bin_w):
    """Samples at k x bin_w and one float below, from lo_w = 0: where multiplying by
    1 / bin_w and dividing disagree unless bin_w is a power of two (the kernel divides
    then); a finite sample whose distance from lo_w overflows is still counted."""
    k = np.arange(0, 400, dtype=np.float64)
    edges = k * bin_w
    power = np.concatenate([edges, np.nextafter(edges, 0.0), [1.7e308, -1.7e308]])
    counts = power_histogram(power, bin_w=bin_w, n_bins=500, lo_w=0.0)
    assert counts.tolist() == naive.naive_power_histogram(power, lo_w=0.0, bin_w=bin_w, n_bins=500)
    wide = power_histogram(np.array([1.7e308, 5.0]), bin_w=1.0, n_bins=10, lo_w=-1.7e308)
    assert wide.sum() == 2 and wide[-1] == 2


def test_histogram_of_a_subnormal_bin_width_divides():
    tiny = 2.0**-1070  # a power of two whose inverse overflows
    counts = power_histogram(np.array([5e-321, 1e-322]), bin_w=tiny, n_bins=1000)
    assert counts.tolist() == naive.naive_power_histogram([5e-321, 1e-322], lo_w=0.0, bin_w=tiny, n_bins=1000)


def test_histogram_matches_numpy_histogram_in_range():
    rng = np.random.default_rng(2)
    power = rng.uniform(0, 700, 5_000)
    counts = power_histogram(power, bin_w=7.0, n_bins=100, lo_w=0.0)
    np_counts, _ = np.histogram(power, bins=100, range=(0.0, 700.0))
    assert counts.tolist() == np_counts.tolist()


@FAST
@given(power_traces(max_n=40), st.data())
def test_histogram_of_chunks_adds_up_to_one_shot(trace, data):
    _, power = trace
    cuts = data.draw(split_points(len(power)))
    counts = np.zeros(30, dtype=np.int64)
    for part in chunks(len(power), cuts):
        power_histogram(power[part], bin_w=25.0, counts=counts, lo_w=10.0)
    one_shot = power_histogram(power, bin_w=25.0, n_bins=30, lo_w=10.0)
    assert counts.tolist() == one_shot.tolist()


def test_histogram_accepts_polars_and_counts_null_as_missing():
    series = pl.Series("power_w", [100.0, None, 250.0, 260.0], dtype=pl.Float32)
    counts = power_histogram(series, bin_w=100.0, n_bins=4)
    assert counts.tolist() == [0, 1, 2, 0]


def test_histogram_accepts_arrow_with_nulls():
    import pyarrow as pa

    arr = pa.array([100.0, None, 250.0], type=pa.float32())
    assert power_histogram(arr, bin_w=100.0, n_bins=4).tolist() == [0, 1, 1, 0]
    chunked = pa.chunked_array([arr, arr])
    assert power_histogram(chunked, bin_w=100.0, n_bins=4).tolist() == [0, 2, 2, 0]


def test_histogram_edges_follow_floor_rule():
    counts = power_histogram(np.array([0.0, 9.999, 10.0, 20.0, 39.0, 40.0]), bin_w=10.0, n_bins=4)
    assert counts.tolist() == [2, 1, 1, 2]  # 40.0 is clamped into the last bin


def test_histogram_empty_and_all_nan_add_nothing():
    counts = np.array([1, 2, 3], dtype=np.int64)
    power_histogram(np.empty(0, np.float32), bin_w=1.0, counts=counts)
    power_histogram(np.full(5, np.nan), bin_w=1.0, counts=counts)
    assert counts.tolist() == [1, 2, 3]


def test_histogram_refuses_more_bins_than_its_int32_bins_hold():
    with pytest.raises(ParameterError, match=r"n_bins must be below 2\*\*31 - 1"):
        power_histogram(np.ones(3, dtype=np.float32), bin_w=1.0, n_bins=2**31)


def test_histogram_bin_centers():
    assert histogram_bin_centers(bin_w=10.0, n_bins=3, lo_w=50.0).tolist() == [55.0, 65.0, 75.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"power_w": np.arange(3), "bin_w": 1.0, "n_bins": 3}, SchemaError, "float32 or float64"),
        ({"power_w": np.zeros((2, 2)), "bin_w": 1.0, "n_bins": 3}, SchemaError, "1-D"),
        ({"power_w": np.zeros(3), "bin_w": 0.0, "n_bins": 3}, ParameterError, "bin_w"),
        ({"power_w": np.zeros(3), "bin_w": 1.0}, ParameterError, "n_bins"),
        ({"power_w": np.zeros(3), "bin_w": 1.0, "n_bins": 0}, ParameterError, "n_bins"),
        (
            {"power_w": np.zeros(3), "bin_w": 1.0, "counts": np.zeros(3, dtype=np.int32)},
            SchemaError,
            "int64",
        ),
        (
            {"power_w": np.zeros(3), "bin_w": 1.0, "n_bins": 4, "counts": np.zeros(3, np.int64)},
            SchemaError,
            "shape",
        ),
    ],
)
def test_histogram_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        power_histogram(**kwargs)


# --------------------------------------------------------------------------- k-means


def test_kmeans_known_answer():
    levels = kmeans_1d([1.0, 2.0, 10.0, 11.0], [1, 1, 1, 1], 2)
    assert levels.centers_w.tolist() == [1.5, 10.5]
    assert levels.boundaries_w.tolist() == [6.0]
    assert levels.weights.tolist() == [2.0, 2.0]
    assert levels.sse_w2 == pytest.approx(1.0)
    assert levels.sse_by_k[0] == pytest.approx(25 + 16 + 16 + 25)


def test_kmeans_weighted_known_answer():
    # weight pulls the centre: (1*0 + 3*4) / 4 = 3
    levels = kmeans_1d([0.0, 4.0, 100.0], [1, 3, 5], 2)
    assert levels.centers_w.tolist() == [3.0, 100.0]
    assert levels.sse_w2 == pytest.approx(1 * 9 + 3 * 1)


@FAST
@given(histograms(max_bins=9), st.integers(1, 4))
def test_kmeans_sse_equals_brute_force(hist, k):
    centers, counts = hist
    k = min(k, int((counts > 0).sum()))
    if k == 0:
        return
    levels = kmeans_1d(centers, counts, k)
    best = naive.naive_kmeans_sse(centers, counts, k)
    assert levels.sse_w2 == pytest.approx(best, rel=1e-9, abs=1e-9)
    for m in range(1, k + 1):
        assert levels.sse_by_k[m - 1] == pytest.approx(
            naive.naive_kmeans_sse(centers, counts, m), rel=1e-9, abs=1e-6
        )
    # the partition is consistent with nearest-centre assignment and the centres are ordered
    assert naive.nearest_center_sse(centers, counts, levels.centers_w) == pytest.approx(
        levels.sse_w2, rel=1e-9, abs=1e-9
    )
    assert np.all(np.diff(levels.centers_w) > 0)
    assert levels.weights.sum() == counts.sum()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kmeans_large_histogram_equals_textbook_dp(k):
    rng = np.random.default_rng(k)
    power = np.concatenate([rng.normal(90, 8, 3000), rng.normal(380, 30, 2000), rng.normal(690, 15, 4000)])
    counts = power_histogram(power, bin_w=5.0, n_bins=160)
    centers = histogram_bin_centers(bin_w=5.0, n_bins=160)
    levels = kmeans_1d(centers, counts, k)
    expected = naive.naive_kmeans_dp_sse(centers, counts, k)
    assert levels.sse_w2 == pytest.approx(expected, rel=1e-9)


def test_kmeans_finds_inference_levels():
    rng = np.random.default_rng(7)
    power = np.concatenate([rng.normal(75, 5, 4000), rng.normal(380, 15, 5000), rng.normal(700, 10, 1000)])
    counts = power_histogram(power.astype(np.float32), bin_w=2.0, n_bins=500)
    levels = kmeans_1d(histogram_bin_centers(bin_w=2.0, n_bins=500), counts, 3)
    np.testing.assert_allclose(levels.centers_w, [75, 380, 700], atol=3)


@pytest.mark.parametrize(
    ("means", "expected_k"),
    [
        ((100.0,), 1),
        ((100.0, 650.0), 2),
        ((75.0, 380.0, 700.0), 3),
        ((100.0, 400.0, 700.0), 3),  # equally spaced: the step 1 -> 2 removes only 75 %
    ],
)
def test_choose_levels_finds_the_number_of_levels(means, expected_k):
    rng = np.random.default_rng(3)
    power = np.concatenate([rng.normal(m, 12, 3000) for m in means])
    counts = power_histogram(power, bin_w=2.0, n_bins=500)
    levels = choose_levels(histogram_bin_centers(bin_w=2.0, n_bins=500), counts, kmax=3)
    assert len(levels.centers_w) == expected_k
    np.testing.assert_allclose(levels.centers_w, means, atol=3)


@FAST
@given(histograms(max_bins=8), st.integers(1, 4), st.sampled_from([0.3, 0.6, 0.8, 0.95]))
def test_choose_levels_applies_the_relative_drop_rule(hist, kmax, min_rel_drop):
    centers, counts = hist
    if counts.sum() == 0:
        with pytest.raises(ParameterError, match="no values"):
            choose_levels(centers, counts, kmax=kmax)
        return
    levels = choose_levels(centers, counts, kmax=kmax, min_rel_drop=min_rel_drop)
    top = min(kmax, int((counts > 0).sum()))
    sse = [naive.naive_kmeans_sse(centers, counts, m) for m in range(1, top + 1)]
    drops = {
        m: (sse[m - 2] - sse[m - 1]) / sse[m - 2]
        for m in range(2, top + 1)
        if sse[m - 2] > 1e-9 * sse[0]
    }
    k = max([m for m, drop in drops.items() if drop >= min_rel_drop], default=1)
    # the choice may differ only where a drop sits on the threshold within rounding
    if len(levels.centers_w) != k:
        m = max(len(levels.centers_w), k)
        assert drops[m] == pytest.approx(min_rel_drop, abs=1e-9)
    assert levels.sse_w2 == pytest.approx(sse[len(levels.centers_w) - 1], rel=1e-9, abs=1e-9)


def test_choose_levels_constant_power_is_one_level():
    levels = choose_levels([10.0, 20.0, 30.0], [0, 50, 0], kmax=3)
    assert levels.centers_w.tolist() == [20.0]
    assert levels.sse_w2 == 0.0


@pytest.mark.parametrize(
    ("values", "weights", "k", "error", "match"),
    [
        ([2.0, 1.0], [1, 1], 1, SchemaError, "ascending"),
        ([1.0, 1.0], [1, 1], 1, SchemaError, "ascending"),
        ([1.0, 2.0], [1, -1], 1, SchemaError, ">= 0"),
        ([1.0, np.nan], [1, 1], 1, SchemaError, "finite"),
        ([1.0, 2.0], [1, 1, 1], 1, SchemaError, "same length"),
        ([1.0, 2.0, 3.0], [1, 0, 1], 3, ParameterError, "at least 3"),
        ([1.0, 2.0], [1, 1], 0, ParameterError, "k must be >= 1"),
        (["a", "b"], [1, 1], 1, SchemaError, "numeric"),
    ],
)
def test_kmeans_rejects_bad_input(values, weights, k, error, match):
    with pytest.raises(error, match=match):
        kmeans_1d(np.asarray(values), np.asarray(weights), k)


def test_choose_levels_rejects_bad_threshold():
    with pytest.raises(ParameterError, match="min_rel_drop"):
        choose_levels([1.0, 2.0], [1, 1], min_rel_drop=0.0)


def test_label_histogram_equals_numpy_bincount():
    from tracekit.kernels.levels import label_histogram

    rng = np.random.default_rng(5)
    power = rng.uniform(-10, 900, 5000).astype(np.float32)
    power[::97] = np.nan
    labels = rng.integers(-1, 3, 5000).astype(np.int8)
    got = label_histogram(power, labels, np.zeros((3, 801), dtype=np.int64), bin_w=1.0)
    ok = (labels >= 0) & np.isfinite(power)
    bins = np.clip((power[ok] / 1.0).astype(np.int64), 0, 800)
    want = np.bincount(labels[ok].astype(np.int64) * 801 + bins, minlength=3 * 801).reshape(3, 801)
    np.testing.assert_array_equal(got, want)


def test_label_histogram_puts_values_past_int64_in_the_edge_bins():
    from tracekit.kernels.levels import label_histogram

    power = np.array([1e30, -1e30, 3e38, 0.5, 799.9], dtype=np.float32)  # / 0.25 W: past 2**63
    got = label_histogram(power, np.zeros(5, dtype=np.int8), np.zeros((1, 3200), dtype=np.int64), bin_w=0.25)
    assert (got[0, 3199], got[0, 0], got[0, 2], got.sum()) == (3, 1, 1, 5)  # 799.9 W is in the top bin too


@pytest.mark.parametrize("bin_w", [0.25, 1.0, 2.0, 0.3, 0.1])
def test_label_histogram_bin_edges_as_the_division(bin_w):
    # on and either side of every bin edge: the bins of p / bin_w (a power-of-two
    # width is applied as a multiplication by its inverse, which must bin the same)
    from tracekit.kernels.levels import label_histogram

    edges = (np.arange(800) * bin_w).astype(np.float32)
    power = np.concatenate([edges, np.nextafter(edges, np.float32(-np.inf)), np.nextafter(edges, np.float32(np.inf))])
    n_bins = 700
    got = label_histogram(power, np.zeros(len(power), dtype=np.int8), np.zeros((1, n_bins), dtype=np.int64),
                          bin_w=bin_w)
    x = np.minimum(power.astype(np.float64) / bin_w, n_bins - 1.0)
    bins = np.where(x > 0, x, 0).astype(np.int64)
    np.testing.assert_array_equal(got[0], np.bincount(bins, minlength=n_bins))
