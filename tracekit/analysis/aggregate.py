"""Alignment and aggregation: every GPU onto one time grid, summed per level.

A cell's value for one GPU is the time-weighted mean of the GPU's zero-order-hold
signal over the part of the cell it covers, so energy is conserved exactly (sample
``i`` holds its power until sample ``i+1``; across a gap longer than ``max_gap_s``,
or after a GPU's last sample, it holds for one sampling period and the rest is
missing).  A group's value in a cell is the sum over its GPUs present in that cell;
its coverage is the share of the group's GPU-time covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracekit.traceset import GpuArrays
from tracekit.errors import ParameterError
from tracekit.kernels.grid import accumulate_grid, time_grid

HEATMAP_COLUMNS = 600


@dataclass
class Grid:
    t0_ns: int
    step_ns: int
    n_cells: int
    hold_ns: int

    @property
    def step_s(self) -> float:
        return self.step_ns / 1e9

    def times(self) -> np.ndarray:
        """Cell start times as datetime64[ns]."""
        return (self.t0_ns + np.arange(self.n_cells, dtype=np.int64) * self.step_ns).astype("datetime64[ns]")


@dataclass
class LevelSeries:
    level: str
    groups: list[str]
    members: list[list[str]]
    power_w: np.ndarray  # groups x cells
    coverage: np.ndarray  # groups x cells, 0..1


def make_grid(arrays: GpuArrays, resolution_s: float, hold_s: float | None = None) -> Grid:
    """The common grid: from the first sample (floored to the step) to the last
    sample's end (each GPU's times are sorted: its first and last sample suffice)."""
    has = arrays.offsets[1:] > arrays.offsets[:-1]
    if not has.any():
        raise ParameterError("no samples to put on a grid")
    first = arrays.ts_ns[arrays.offsets[:-1][has]]
    last = arrays.ts_ns[arrays.offsets[1:][has] - 1]
    return grid_over(int(first.min()), int(last.max()), resolution_s, hold_s)


def grid_over(first_ns: int, last_ns: int, resolution_s: float, hold_s: float | None = None) -> Grid:
    """The grid from ``first_ns`` (floored to the step) to ``last_ns`` plus the hold."""
    if resolution_s <= 0:
        raise ParameterError(f"resolution must be positive, got {resolution_s} s")
    step_ns = max(1, int(round(resolution_s * 1e9)))
    hold_ns = int(round((hold_s if hold_s is not None else resolution_s) * 1e9))
    t_min = int(first_ns)
    t_max = int(last_ns) + hold_ns
    t0 = (t_min // step_ns) * step_ns
    n_cells = int(-(-(t_max - t0) // step_ns))
    if n_cells > 2_000_000_000:
        raise ParameterError(f"grid of {n_cells:,} cells at {resolution_s} s is too large; raise --resolution")
    return Grid(t0, step_ns, max(n_cells, 1), hold_ns)


def gpu_cells(arrays: GpuArrays, i: int, grid: Grid, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(energy J, covered s) per cell for GPU ``i``."""
    energy = np.zeros(grid.n_cells)
    covered = np.zeros(grid.n_cells)
    ts, power = arrays.gpu(i)
    accumulate_grid(ts, power, time_grid(grid.t0_ns, grid.step_ns, grid.n_cells), max_gap_ns=int(max_gap_s * 1e9),
                    hold_ns=grid.hold_ns, energy_j=energy, covered_s=covered)
    return energy, covered


def aggregate(arrays: GpuArrays, grid: Grid, max_gap_s: float, *, level: str) -> LevelSeries:
    """Sum of GPU cell means per group of one ``level`` (cluster, row, rack, host)."""
    series, _, _ = aggregate_all(arrays, grid, max_gap_s, levels=(level,), heatmap_columns=0)
    return series[level]


def _finest_rows(arrays: GpuArrays, levels) -> tuple[np.ndarray, int, dict]:
    """Row of each GPU in the finest partition that nests every level (the distinct
    combinations of the GPU's groups), and for each level the group of each row."""
    groupings = {lv: arrays.groups(lv) for lv in levels}
    keys = list(zip(*[groupings[lv][1] for lv in levels])) if levels else [()] * len(arrays.gpus)
    index: dict = {}
    row_of_gpu = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
    group_of_row = {lv: np.zeros(len(index), dtype=np.int64) for lv in levels}
    for k, r in index.items():
        for j, lv in enumerate(levels):
            group_of_row[lv][r] = k[j]
    return row_of_gpu, len(index), group_of_row


def aggregate_all(
    arrays: GpuArrays, grid: Grid, max_gap_s: float, *, levels=("cluster",), heatmap_columns: int = HEATMAP_COLUMNS
) -> tuple[dict[str, LevelSeries], dict[str, float], dict | None]:
    """One pass over the GPUs: every level's group sums, each GPU's peak cell mean
    (for coincidence factors and peak/TDP), and a per-GPU heatmap of at most
    ``heatmap_columns`` time bins (energy-weighted means).

    The fused kernel :func:`tracekit.kernels.grid.grid_cell_means` adds each GPU's
    cell means into the rows of the finest partition nesting all levels; each level
    is then a sum of rows.  GPUs are split into cost-balanced batches run on threads
    (the kernel releases the GIL); batches are merged in order.
    """
    from tracekit.engine.local import default_workers, map_ranges
    from tracekit.kernels.grid import grid_cell_means

    levels = tuple(levels)
    groupings = {lv: arrays.groups(lv) for lv in levels}
    row_of_gpu, n_rows, group_of_row = _finest_rows(arrays, levels)
    tg = time_grid(grid.t0_ns, grid.step_ns, grid.n_cells)
    per = 0
    if heatmap_columns:
        cols = min(heatmap_columns, grid.n_cells)
        per = int(np.ceil(grid.n_cells / cols))

    costs = np.diff(arrays.offsets)
    mean_sum = np.zeros((n_rows, grid.n_cells))
    time_sum = np.zeros((n_rows, grid.n_cells))
    common = dict(max_gap_ns=int(max_gap_s * 1e9), hold_ns=grid.hold_ns, heat_per=per)
    if n_rows >= 2 * default_workers() and bool(np.all(np.diff(row_of_gpu) >= 0)):
        # rows are runs of GPUs (topology order): batches of whole rows add straight
        # into their slices of the sums (no per-batch copies, nothing to merge)
        gpu_start = np.searchsorted(row_of_gpu, np.arange(n_rows + 1))

        def row_batch(r0: int, r1: int):
            lo, hi = gpu_start[r0], gpu_start[r1]
            s0, s1 = arrays.offsets[lo], arrays.offsets[hi]
            return grid_cell_means(arrays.ts_ns[s0:s1], arrays.power_w[s0:s1], arrays.offsets[lo: hi + 1] - s0,
                                   row_of_gpu[lo:hi] - r0, tg, n_rows=r1 - r0, mean_sum_w=mean_sum[r0:r1],
                                   gpu_time_s=time_sum[r0:r1], check_sorted=False, **common)

        parts = map_ranges(row_batch, np.add.reduceat(costs, gpu_start[:-1]))
    else:
        def batch(lo: int, hi: int):
            # only the batch's own rows: a batch never holds (or zeroes) every row's cells
            rows, local = np.unique(row_of_gpu[lo:hi], return_inverse=True)
            s0, s1 = arrays.offsets[lo], arrays.offsets[hi]
            return rows, grid_cell_means(arrays.ts_ns[s0:s1], arrays.power_w[s0:s1],
                                         arrays.offsets[lo: hi + 1] - s0, local.reshape(-1), tg,
                                         n_rows=len(rows), check_sorted=False, **common)

        parts = map_ranges(batch, costs)
        for rows, part in parts:  # in GPU order: the sums do not depend on the batching
            if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # the usual case: a slice, added in place
                mean_sum[rows[0]: rows[-1] + 1] += part.mean_sum_w
                time_sum[rows[0]: rows[-1] + 1] += part.gpu_time_s
            else:
                mean_sum[rows] += part.mean_sum_w
                time_sum[rows] += part.gpu_time_s
        parts = [part for _, part in parts]
    peak_w = np.concatenate([p.peak_w for p in parts])
    peaks = dict(zip(arrays.gpus, peak_w.tolist()))
    heatmap = None
    if per:
        e = np.concatenate([p.heat_energy_j for p in parts])
        c = np.concatenate([p.heat_covered_s for p in parts])
        with np.errstate(invalid="ignore", divide="ignore"):
            heat = np.where(c > 0, e / c, np.nan)
        t = grid.t0_ns + np.arange(heat.shape[1], dtype=np.int64) * per * grid.step_ns
        heatmap = {"gpus": list(arrays.gpus), "t_ns": t, "power_w": heat}
    # a level whose groups are the rows themselves (hosts, usually) takes the row sums
    # in place; it comes last, after the coarser levels have summed them
    finest = [lv for lv in levels if len(groupings[lv][0]) == n_rows
              and np.array_equal(group_of_row[lv], np.arange(n_rows))][:1]
    series = {}
    for lv in [lv for lv in levels if lv not in finest] + finest:
        names, _, members = groupings[lv]
        if lv in finest:
            power, gpu_time = mean_sum, time_sum
        else:
            power = np.zeros((len(names), grid.n_cells))
            gpu_time = np.zeros((len(names), grid.n_cells))
            for r in range(n_rows):
                g = group_of_row[lv][r]
                power[g] += mean_sum[r]
                gpu_time[g] += time_sum[r]
        power[gpu_time <= 0] = np.nan
        sizes = np.array([len(m) for m in members], dtype=np.float64)[:, None]
        coverage = np.divide(gpu_time, sizes * grid.step_s, out=gpu_time)  # in place: GPU-seconds not kept
        np.minimum(coverage, 1.0, out=coverage)  # >= 0; np.clip is several times slower
        series[lv] = LevelSeries(lv, names, members, power, coverage)
    series = {lv: series[lv] for lv in levels}
    return series, peaks, heatmap
