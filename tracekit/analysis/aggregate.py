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
    sample's end."""
    if resolution_s <= 0:
        raise ParameterError(f"resolution must be positive, got {resolution_s} s")
    step_ns = max(1, int(round(resolution_s * 1e9)))
    hold_ns = int(round((hold_s if hold_s is not None else resolution_s) * 1e9))
    t_min = int(arrays.ts_ns.min())
    t_max = int(arrays.ts_ns.max()) + hold_ns
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


def aggregate_all(
    arrays: GpuArrays, grid: Grid, max_gap_s: float, *, levels=("cluster",), heatmap_columns: int = HEATMAP_COLUMNS
) -> tuple[dict[str, LevelSeries], dict[str, float], dict | None]:
    """One pass over the GPUs: every level's group sums, each GPU's peak cell mean
    (for coincidence factors and peak/TDP), and a per-GPU heatmap of at most
    ``heatmap_columns`` time bins (energy-weighted means).

    GPUs are split into cost-balanced batches run on threads (kernels release the
    GIL); each batch adds into its own accumulators, merged in batch order.
    """
    from tracekit.engine.local import map_ranges

    groupings = {lv: arrays.groups(lv) for lv in levels}
    peaks: dict[str, float] = {}
    heat = None
    cols = per = pad = 0
    if heatmap_columns:
        cols = min(heatmap_columns, grid.n_cells)
        per = int(np.ceil(grid.n_cells / cols))
        cols = int(np.ceil(grid.n_cells / per))
        pad = cols * per - grid.n_cells
        heat = np.full((len(arrays.gpus), cols), np.nan)

    def batch(lo: int, hi: int):
        power = {lv: np.zeros((len(g[0]), grid.n_cells)) for lv, g in groupings.items()}
        gpu_time = {lv: np.zeros((len(g[0]), grid.n_cells)) for lv, g in groupings.items()}
        for i in range(lo, hi):
            energy, covered = gpu_cells(arrays, i, grid, max_gap_s)
            ok = covered > 0
            mean = np.zeros(grid.n_cells)
            np.divide(energy, covered, out=mean, where=ok)
            peaks[arrays.gpus[i]] = float(mean[ok].max()) if ok.any() else float("nan")
            for lv, (_, group_of, _) in groupings.items():
                g = group_of[i]
                power[lv][g] += mean
                gpu_time[lv][g] += covered
            if heat is not None:
                e = np.pad(energy, (0, pad)).reshape(cols, per).sum(axis=1)
                c = np.pad(covered, (0, pad)).reshape(cols, per).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    heat[i] = np.where(c > 0, e / c, np.nan)
        return power, gpu_time

    parts = map_ranges(batch, np.diff(arrays.offsets))
    power, gpu_time = parts[0]
    for p_more, t_more in parts[1:]:
        for lv in groupings:
            power[lv] += p_more[lv]
            gpu_time[lv] += t_more[lv]
    series = {}
    for lv, (names, _, members) in groupings.items():
        sizes = np.array([len(m) for m in members], dtype=np.float64)[:, None]
        coverage = np.clip(gpu_time[lv] / (sizes * grid.step_s), 0.0, 1.0)
        p = power[lv]
        p[gpu_time[lv] <= 0] = np.nan
        series[lv] = LevelSeries(lv, names, members, p, coverage)
    heatmap = None
    if heat is not None:
        t = grid.t0_ns + np.arange(heat.shape[1], dtype=np.int64) * per * grid.step_ns
        heatmap = {"gpus": list(arrays.gpus), "t_ns": t, "power_w": heat}
    return series, peaks, heatmap
