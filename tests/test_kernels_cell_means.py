"""grid_cell_means (fused per-GPU cell means into rows) vs the naive grid twin."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.naive import naive_grid
from tests.strategies import gpu_batches
from tracekit.kernels.grid import grid_cell_means, time_grid


@settings(max_examples=60, deadline=None)
@given(gpu_batches(max_gpus=4, max_n=15), st.sampled_from([1, 7, 50, 100]), st.integers(1, 4), st.integers(0, 3))
def test_cell_means_equal_naive_per_gpu_division(batch, step, heat_per, lead):
    traces, rows, n_rows = batch
    all_ts = np.concatenate([t for t, _ in traces]) if traces else np.empty(0, np.int64)
    t0 = (int(all_ts.min()) if len(all_ts) else 0) - lead * step
    span = (int(all_ts.max()) if len(all_ts) else 0) - t0 + 300
    n_cells = max(1, span // step)
    max_gap, hold = 120, 40
    ts = np.concatenate([t for t, _ in traces]).astype(np.int64)
    power = np.concatenate([p for _, p in traces]).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t, _ in traces])]).astype(np.int64)
    got = grid_cell_means(ts, power, offsets, rows, time_grid(t0, step, n_cells), n_rows=n_rows,
                          max_gap_ns=max_gap, hold_ns=hold, heat_per=heat_per)
    want_mean = np.zeros((n_rows, n_cells))
    want_time = np.zeros((n_rows, n_cells))
    n_heat = -(-n_cells // heat_per)
    for g, (t, p) in enumerate(traces):
        e, c = naive_grid(t, p, t0_ns=t0, step_ns=step, n_cells=n_cells, max_gap_ns=max_gap, hold_ns=hold)
        e, c = np.array(e), np.array(c)
        ok = c > 0
        want_mean[rows[g], ok] += e[ok] / c[ok]
        want_time[rows[g]] += c
        peak = (e[ok] / c[ok]).max() if ok.any() else np.nan
        np.testing.assert_allclose(got.peak_w[g], peak, rtol=1e-9, equal_nan=True)
        he = np.pad(e, (0, n_heat * heat_per - n_cells)).reshape(n_heat, heat_per).sum(axis=1)
        hc = np.pad(c, (0, n_heat * heat_per - n_cells)).reshape(n_heat, heat_per).sum(axis=1)
        np.testing.assert_allclose(got.heat_energy_j[g], he, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(got.heat_covered_s[g], hc, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got.mean_sum_w, want_mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.gpu_time_s, want_time, rtol=1e-9, atol=1e-15)


@settings(max_examples=80, deadline=None)
@given(gpu_batches(max_gpus=4, max_n=25), st.sampled_from([1, 7, 50]), st.integers(0, 3), st.data())
def test_chunked_cell_means_equal_one_shot(batch, step, heat_per, data):
    """Time windows: each GPU's samples pushed in pieces (the open cell and the last
    sample carried) give the one-pass cell means, peaks and heatmap."""
    from tracekit.kernels.grid import GridAccumulator

    traces, rows, n_rows = batch
    all_ts = np.concatenate([t for t, _ in traces])
    t0 = int(all_ts.min()) if len(all_ts) else 0
    n_cells = max(1, ((int(all_ts.max()) if len(all_ts) else 0) - t0 + 300) // step)
    grid = time_grid(t0, step, n_cells)
    ts = all_ts.astype(np.int64)
    power = np.concatenate([p for _, p in traces]).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t, _ in traces])]).astype(np.int64)
    one = grid_cell_means(ts, power, offsets, rows, grid, n_rows=n_rows, max_gap_ns=120, hold_ns=40,
                          heat_per=heat_per)
    acc = GridAccumulator(grid, rows, max_gap_ns=120, hold_ns=40, n_groups=n_rows, cell_means=True,
                          heat_per=heat_per)
    n_rounds = 4
    cuts = [sorted(data.draw(st.lists(st.integers(0, len(t)), min_size=n_rounds - 1, max_size=n_rounds - 1)))
            for t, _ in traces]
    for r in range(n_rounds):
        parts = []
        for (t, p), c in zip(traces, cuts):
            edges = [0, *c, len(t)]
            parts.append((t[edges[r]: edges[r + 1]], p[edges[r]: edges[r + 1]]))
        o = np.concatenate([[0], np.cumsum([len(t) for t, _ in parts])]).astype(np.int64)
        acc.add(np.concatenate([t for t, _ in parts]).astype(np.int64),
                np.concatenate([p for _, p in parts]).astype(np.float32), o)
    acc.finish()
    got = acc.cell_means_result()
    np.testing.assert_allclose(got.mean_sum_w, one.mean_sum_w, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.gpu_time_s, one.gpu_time_s, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got.peak_w, one.peak_w, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got.heat_energy_j, one.heat_energy_j, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got.heat_covered_s, one.heat_covered_s, rtol=1e-9, atol=1e-15)
