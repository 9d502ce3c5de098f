"""Energy-conserving grid alignment against a naive twin and a plain Polars computation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import naive
from tests.strategies import chunks, gpu_batches, grids_for, power_traces, split_points
from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels.grid import (
    GridAccumulator,
    TimeGrid,
    accumulate_grid,
    accumulate_grid_batch,
    time_grid,
)

FAST = settings(max_examples=50, deadline=None)
CLOSE = dict(rtol=1e-12, atol=1e-18)

grids = st.builds(
    TimeGrid,
    t0_ns=st.integers(-1_500, 500),
    step_ns=st.sampled_from([1, 7, 50, 100, 333]),
    n_cells=st.integers(0, 40),
)
gap_params = st.tuples(st.sampled_from([0, 20, 100, 10_000]), st.sampled_from([0, 10, 50, 100]))


def _csr(traces):
    ts = np.concatenate([t for t, _ in traces]) if traces else np.empty(0, np.int64)
    power = np.concatenate([p for _, p in traces]) if traces else np.empty(0, np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t, _ in traces])]).astype(np.int64)
    return ts, power, offsets


def polars_grid(ts, power, grid, max_gap_ns, hold_ns):
    """The same gridding as a plain Polars pipeline: intervals x cells, clip, group by."""
    t, nxt, end = pl.col("t"), pl.col("next"), pl.col("end")
    samples = (
        pl.DataFrame({"t": ts, "p": power.astype(np.float64)})
        .with_columns(next=t.shift(-1))
        .with_columns(
            end=pl.when(nxt.is_null())
            .then(t + hold_ns)
            .when(nxt - t <= max_gap_ns)
            .then(nxt)
            .otherwise(pl.min_horizontal(t + hold_ns, nxt))
        )
        .filter(pl.col("p").is_not_nan())
    )
    cell = pl.DataFrame({"cell": np.arange(grid.n_cells)}).with_columns(
        cs=grid.t0_ns + pl.col("cell") * grid.step_ns
    ).with_columns(ce=pl.col("cs") + grid.step_ns)
    overlap = (pl.min_horizontal(end, pl.col("ce")) - pl.max_horizontal(t, pl.col("cs"))).clip(0)
    sums = (
        samples.join(cell, how="cross")
        .with_columns(ov=overlap)
        .group_by("cell")
        .agg(energy=(pl.col("p") * pl.col("ov")).sum() * 1e-9, covered=pl.col("ov").sum() * 1e-9)
    )
    out = cell.select("cell").join(sums, on="cell", how="left").sort("cell").fill_null(0.0)
    return out["energy"].to_numpy(), out["covered"].to_numpy()


# --------------------------------------------------------------------------- one GPU


def test_hand_worked_example():
    grid = time_grid(0, 100, 10)
    ts = np.array([0, 50, 120, 400, 950], dtype=np.int64)
    power = np.array([1, 2, 3, 4, 5], dtype=np.float32)
    energy, covered = accumulate_grid(ts, power, grid, max_gap_ns=100, hold_ns=50)
    # 120 -> 400 is a gap > 100: sample 2 holds 50 ns, the rest is missing
    np.testing.assert_allclose(energy * 1e9, [150, 190, 0, 0, 200, 0, 0, 0, 0, 250], rtol=1e-12)
    np.testing.assert_allclose(covered * 1e9, [100, 70, 0, 0, 50, 0, 0, 0, 0, 50], rtol=1e-12)


@FAST
@given(power_traces(max_n=30), gap_params, st.data())
def test_one_gpu_equals_naive_and_conserves_energy(trace, gaps, data):
    ts, power = trace
    grid = TimeGrid(*data.draw(grids_for(ts)))
    max_gap, hold = gaps
    energy, covered = accumulate_grid(ts, power, grid, max_gap_ns=max_gap, hold_ns=hold)
    exp_e, exp_c = naive.naive_grid(
        ts, power, t0_ns=grid.t0_ns, step_ns=grid.step_ns, n_cells=grid.n_cells,
        max_gap_ns=max_gap, hold_ns=hold,
    )
    np.testing.assert_allclose(energy, exp_e, **CLOSE)
    np.testing.assert_allclose(covered, exp_c, **CLOSE)
    integral = naive.naive_zoh_energy(
        ts, power, lo_ns=grid.t0_ns, hi_ns=grid.end_ns, max_gap_ns=max_gap, hold_ns=hold
    )
    assert energy.sum() == pytest.approx(integral, rel=1e-12, abs=1e-18)
    assert np.all(covered <= grid.step_s * (1 + 1e-12))


@FAST
@given(power_traces(max_n=20), grids, gap_params)
def test_one_gpu_on_any_grid_equals_naive(trace, grid, gaps):
    ts, power = trace
    max_gap, hold = gaps
    energy, covered = accumulate_grid(ts, power, grid, max_gap_ns=max_gap, hold_ns=hold)
    exp_e, exp_c = naive.naive_grid(
        ts, power, t0_ns=grid.t0_ns, step_ns=grid.step_ns, n_cells=grid.n_cells,
        max_gap_ns=max_gap, hold_ns=hold,
    )
    np.testing.assert_allclose(energy, exp_e, **CLOSE)
    np.testing.assert_allclose(covered, exp_c, **CLOSE)


@pytest.mark.parametrize("seed", range(4))
def test_one_gpu_equals_polars(seed):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 400, 25)).astype(np.int64) - 500
    power = rng.uniform(50, 700, 25).astype(np.float32)
    power[rng.integers(0, 25, 3)] = np.nan
    grid = time_grid(-300, 250, 30)
    energy, covered = accumulate_grid(ts, power, grid, max_gap_ns=300, hold_ns=120)
    pl_energy, pl_covered = polars_grid(ts, power, grid, 300, 120)
    np.testing.assert_allclose(energy, pl_energy, rtol=1e-12)
    np.testing.assert_allclose(covered, pl_covered, rtol=1e-12)


def test_real_seconds_scale_conserves_energy():
    # 10 Hz samples for one hour onto 1 s cells: mean per cell is the sample mean
    ts = np.arange(36_000, dtype=np.int64) * 100_000_000 + 1_700_000_000_000_000_000
    power = np.tile(np.array([700.0, 100.0], dtype=np.float32), 18_000)
    grid = time_grid(ts[0], 1_000_000_000, 3_600)
    energy, covered = accumulate_grid(ts, power, grid, max_gap_ns=200_000_000, hold_ns=100_000_000)
    np.testing.assert_allclose(covered, 1.0, rtol=1e-12)
    np.testing.assert_allclose(energy / covered, 400.0, rtol=1e-12)
    assert energy.sum() == pytest.approx(400.0 * 3_600, rel=1e-12)


def test_edge_cases():
    grid = time_grid(0, 10, 5)
    empty = accumulate_grid(np.empty(0, np.int64), np.empty(0, np.float32), grid, max_gap_ns=5, hold_ns=5)
    assert empty[0].tolist() == [0.0] * 5 and empty[1].tolist() == [0.0] * 5
    nan = accumulate_grid(np.array([0, 10]), np.full(2, np.nan), grid, max_gap_ns=50, hold_ns=5)
    assert nan[0].sum() == 0.0 and nan[1].sum() == 0.0
    one = accumulate_grid(np.array([12]), np.array([3.0]), grid, max_gap_ns=5, hold_ns=10)
    np.testing.assert_allclose(one[1] * 1e9, [0, 8, 2, 0, 0])
    outside = accumulate_grid(np.array([-100, 500]), np.array([1.0, 1.0]), grid, max_gap_ns=10**6, hold_ns=1)
    np.testing.assert_allclose(outside[1] * 1e9, [10] * 5)  # the hold from -100 to 500 spans the grid
    zero_cells = accumulate_grid(np.array([0]), np.array([1.0]), time_grid(0, 10, 0), max_gap_ns=1, hold_ns=1)
    assert zero_cells[0].shape == (0,)


def test_accepts_datetime64_and_adds_into_given_arrays():
    grid = time_grid(0, 1_000, 3)
    energy = np.ones(3)
    covered = np.zeros(3)
    ts = np.array([0, 1], dtype="datetime64[us]")  # 0 and 1000 ns
    accumulate_grid(ts, np.array([1e9, 2e9]), grid, max_gap_ns=1_000, hold_ns=1_000, energy_j=energy, covered_s=covered)
    np.testing.assert_allclose(energy, [1 + 1_000, 1 + 2_000, 1], rtol=1e-12)


# --------------------------------------------------------------------------- many GPUs


@FAST
@given(gpu_batches(), gap_params, st.randoms(use_true_random=False), st.data())
def test_batch_equals_per_gpu_sums_and_gpu_order_does_not_matter(batch, gaps, rnd, data):
    traces, groups, n_groups = batch
    grid = TimeGrid(*data.draw(grids_for(np.concatenate([t for t, _ in traces]))))
    max_gap, hold = gaps
    ts, power, offsets = _csr(traces)
    energy, covered = accumulate_grid_batch(
        ts, power, offsets, groups, grid, max_gap_ns=max_gap, hold_ns=hold, n_groups=n_groups
    )
    exp_e = np.zeros((n_groups, grid.n_cells))
    exp_c = np.zeros((n_groups, grid.n_cells))
    for (t, p), g in zip(traces, groups):
        accumulate_grid(t, p, grid, max_gap_ns=max_gap, hold_ns=hold, energy_j=exp_e[g], covered_s=exp_c[g])
    np.testing.assert_allclose(energy, exp_e, **CLOSE)
    np.testing.assert_allclose(covered, exp_c, **CLOSE)

    order = list(range(len(traces)))
    rnd.shuffle(order)
    ts2, power2, offsets2 = _csr([traces[i] for i in order])
    energy2, covered2 = accumulate_grid_batch(
        ts2, power2, offsets2, groups[order], grid, max_gap_ns=max_gap, hold_ns=hold, n_groups=n_groups
    )
    np.testing.assert_allclose(energy2, energy, **CLOSE)
    np.testing.assert_allclose(covered2, covered, **CLOSE)


@FAST
@given(gpu_batches(), gap_params, st.data())
def test_chunked_accumulator_equals_one_shot(batch, gaps, data):
    traces, groups, n_groups = batch
    grid = TimeGrid(*data.draw(grids_for(np.concatenate([t for t, _ in traces]))))
    max_gap, hold = gaps
    ts, power, offsets = _csr(traces)
    one_e, one_c = accumulate_grid_batch(
        ts, power, offsets, groups, grid, max_gap_ns=max_gap, hold_ns=hold, n_groups=n_groups
    )
    # time windows x GPU batch: round r holds every GPU's r-th piece
    n_rounds = 3
    pieces = []
    for t, p in traces:
        cuts = data.draw(split_points(len(t), max_splits=n_rounds - 1))
        cuts = (cuts + [len(t)] * n_rounds)[: n_rounds - 1]
        pieces.append([(t[s], p[s]) for s in chunks(len(t), sorted(cuts))])
    acc = GridAccumulator(grid, groups, max_gap_ns=max_gap, hold_ns=hold, n_groups=n_groups)
    use_add_gpu = data.draw(st.booleans())
    for r in range(n_rounds):
        if use_add_gpu:
            for g, gpu_pieces in enumerate(pieces):
                acc.add_gpu(g, *gpu_pieces[r])
        else:
            acc.add(*_csr([gpu_pieces[r] for gpu_pieces in pieces]))
    energy, covered = acc.finish()
    np.testing.assert_allclose(energy, one_e, **CLOSE)
    np.testing.assert_allclose(covered, one_c, **CLOSE)


def test_cluster_row_sums_gpus():
    grid = time_grid(0, 100, 2)
    ts = np.array([0, 100, 0, 100], dtype=np.int64)
    power = np.array([100, 200, 300, 400], dtype=np.float32)
    energy, covered = accumulate_grid_batch(
        ts, power, [0, 2, 4], [0, 0], grid, max_gap_ns=100, hold_ns=100
    )
    np.testing.assert_allclose(energy * 1e9 / 100, [[400, 600]])
    np.testing.assert_allclose(covered * 1e9, [[200, 200]])


@pytest.mark.parametrize(
    ("ts", "offsets", "groups", "error", "match"),
    [
        ([0, 5, 3, 1], [0, 2, 4], [0, 0], SchemaError, r"sorted ascending \(run 1\)"),
        ([0, 5, 3, 4], [0, 2, 3], [0, 0], SchemaError, "end at the number of samples"),
        ([0, 5, 3, 4], [0, 3, 2, 4], [0, 0, 0], SchemaError, "non-decreasing"),
        ([0, 5, 3, 4], [0, 2, 4], [0, 2], SchemaError, r"\[0, 2\)"),
        ([0, 5, 3, 4], [0, 2, 4], [0], SchemaError, "describes 2 GPUs but group_of_gpu has 1"),
    ],
)
def test_batch_rejects_bad_input(ts, offsets, groups, error, match):
    with pytest.raises(error, match=match):
        accumulate_grid_batch(
            np.asarray(ts), np.ones(len(ts)), np.asarray(offsets), np.asarray(groups),
            time_grid(0, 1, 10), max_gap_ns=1, hold_ns=1, n_groups=2,
        )


def test_batch_may_restart_time_at_each_gpu():
    energy, _ = accumulate_grid_batch(
        np.array([5, 6, 0, 1]), np.ones(4), [0, 2, 4], [0, 0], time_grid(0, 10, 1), max_gap_ns=1, hold_ns=1
    )
    assert energy[0, 0] == pytest.approx(4e-9)


def test_rejects_bad_single_gpu_input():
    grid = time_grid(0, 1, 3)
    with pytest.raises(SchemaError, match="sorted ascending; sample 1"):
        accumulate_grid(np.array([2, 1]), np.ones(2), grid, max_gap_ns=1, hold_ns=1)
    with pytest.raises(SchemaError, match="float32 or float64"):
        accumulate_grid(np.array([1, 2]), np.ones(2, np.int32), grid, max_gap_ns=1, hold_ns=1)
    with pytest.raises(ParameterError, match="hold_ns"):
        accumulate_grid(np.array([1, 2]), np.ones(2), grid, max_gap_ns=1, hold_ns=-1)
    with pytest.raises(SchemaError, match="shape"):
        accumulate_grid(np.array([1, 2]), np.ones(2), grid, max_gap_ns=1, hold_ns=1, energy_j=np.zeros(4))
    with pytest.raises(ParameterError, match="step_ns"):
        time_grid(0, 0, 3)
    with pytest.raises(ParameterError, match="TimeGrid"):
        accumulate_grid(np.array([1, 2]), np.ones(2), (0, 1), max_gap_ns=1, hold_ns=1)


def test_accumulator_rejects_chunks_out_of_time_order():
    acc = GridAccumulator(time_grid(0, 1, 3), [0, 0], max_gap_ns=1, hold_ns=1)
    acc.add_gpu(1, np.array([5, 6]), np.ones(2))
    with pytest.raises(SchemaError, match="GPU 1's chunk starts at 4 ns"):
        acc.add_gpu(1, np.array([4]), np.ones(1))
    acc.add_gpu(0, np.array([0]), np.ones(1))  # other GPUs keep their own clocks
    acc.finish()
    with pytest.raises(ParameterError, match="finished"):
        acc.add_gpu(0, np.array([9]), np.ones(1))
