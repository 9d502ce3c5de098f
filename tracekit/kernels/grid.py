"""Alignment of per-GPU power series onto one time grid, conserving energy.

Each GPU's samples define a zero-order-hold (ZOH) signal: sample ``i`` holds its
power from ``ts[i]`` until ``ts[i+1]`` when the gap ``ts[i+1] - ts[i]`` is at
most ``max_gap_ns``; across a longer gap it holds for ``hold_ns`` (the typical
sampling period) and the rest of the gap is missing.  The last sample of a
series holds for ``hold_ns``.  NaN samples hold "missing" over their interval.

For every grid cell ``[t0 + c*step, t0 + (c+1)*step)`` the kernels add the
signal's energy (W*s = J) and the time it covers (s) into accumulator arrays.
The time-weighted cell mean is ``energy_j / covered_s``; coverage is
``covered_s / step_s``.  Because only sums are accumulated:

* energy is conserved exactly: the cells' energy is the integral of the ZOH
  signal over the grid span;
* GPUs add into host / rack / cluster rows directly (``group_of_gpu``), in any
  order (append / combine = addition);
* chunks of one GPU combine exactly when the last sample of each chunk is
  carried into the next (:class:`GridAccumulator` does this with a small carry
  array per GPU).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels._jit import kernel
from tracekit.kernels._validate import (
    NO_TS,
    check_sorted_runs,
    float_array,
    int_array,
    int_param,
    out_array,
    same_length,
    ts_array,
)

_INT64_MAX = np.iinfo(np.int64).max

# Layout of the params array (int64) given to the kernel.
_P_T0, _P_STEP, _P_N_CELLS, _P_MAX_GAP, _P_HOLD = range(5)


class TimeGrid(NamedTuple):
    """A regular time grid: cells ``[t0_ns + c*step_ns, t0_ns + (c+1)*step_ns)``."""

    t0_ns: int
    step_ns: int
    n_cells: int

    @property
    def end_ns(self) -> int:
        """End of the last cell, ns."""
        return self.t0_ns + self.step_ns * self.n_cells

    @property
    def step_s(self) -> float:
        """Cell width, s."""
        return self.step_ns * 1e-9

    def cell_starts_ns(self) -> NDArray[np.int64]:
        """Start time of every cell, int64 ns."""
        return self.t0_ns + self.step_ns * np.arange(self.n_cells, dtype=np.int64)


def time_grid(t0_ns: int, step_ns: int, n_cells: int) -> TimeGrid:
    """A validated :class:`TimeGrid` (step > 0, n_cells >= 0, end within int64)."""
    func = "time_grid"
    t0 = int_param(func, "t0_ns", t0_ns)
    step = int_param(func, "step_ns", step_ns, minimum=1)
    n = int_param(func, "n_cells", n_cells, minimum=0)
    if not (np.iinfo(np.int64).min < t0 <= _INT64_MAX - step * n):
        raise ParameterError(f"{func}: t0_ns + step_ns * n_cells leaves the int64 ns range")
    return TimeGrid(t0, step, n)


def _grid_param(func: str, grid: object) -> TimeGrid:
    if not isinstance(grid, tuple) or len(grid) != 3:
        raise ParameterError(f"{func}: grid must be a TimeGrid(t0_ns, step_ns, n_cells), got {grid!r}")
    return time_grid(*grid)


@kernel(inline="always")
def _heat_enter(heat_e, heat_c, g, c, heat_per, hb, he, hc, started):
    """Cell ``c`` has left heatmap bin ``hb`` of GPU ``g`` (bins of ``heat_per``
    cells): write that bin's running sums ``he`` / ``hc`` back (when ``started``) and
    return the new bin, its end and its sums so far.  Between calls the current bin
    is summed in registers, not with a read-modify-write of the array per cell."""
    if started:
        heat_e[g, hb] = he
        heat_c[g, hb] = hc
    hb = c // heat_per
    return hb, (hb + 1) * heat_per, heat_e[g, hb], heat_c[g, hb]


@kernel(inline="always")
def _whole_cells(er, cr, c, cell_start, b, p, step, cell_means, peak, heat_per, heat_e, heat_c, g, hb, hb_end, he, hc):
    """A hold at power ``p`` covers cells ``c``, ``c + 1``... whole until the cell
    holding time ``b``: add them (mean ``p``, or energy ``p * step``).  Returns (c,
    cell_start, peak, hb, hb_end, he, hc) of the cell holding ``b``."""
    step_s = step * 1e-9
    whole = p if cell_means else p * step_s
    while b > cell_start + step:
        er[c] += whole
        cr[c] += step_s
        if cell_means:
            peak = p if p > peak else peak
            if heat_per > 0:
                if c >= hb_end:
                    hb, hb_end, he, hc = _heat_enter(heat_e, heat_c, g, c, heat_per, hb, he, hc, hb_end > 0)
                he += p * step_s
                hc += step_s
        c += 1
        cell_start += step
    return c, cell_start, peak, hb, hb_end, he, hc


@kernel(inline="always")
def _close_cell(er, cr, c, acc_e, acc_ns, cell_means, peak, heat_per, heat_e, heat_c, g, hb, hb_end, he, hc):
    """GPU ``g`` has finished cell ``c`` with ``acc_e`` W*ns over ``acc_ns`` ns: add it
    into its row (``er``, ``cr``: the row's views), and with ``cell_means`` into its
    peak and heatmap bin.  Returns (peak, hb, hb_end, he, hc)."""
    v = acc_e / acc_ns if cell_means else acc_e * 1e-9
    er[c] += v
    cr[c] += acc_ns * 1e-9
    if cell_means:
        peak = v if v > peak else peak
        if heat_per > 0:
            if c >= hb_end:
                hb, hb_end, he, hc = _heat_enter(heat_e, heat_c, g, c, heat_per, hb, he, hc, hb_end > 0)
            he += acc_e * 1e-9
            hc += acc_ns * 1e-9
    return peak, hb, hb_end, he, hc


@kernel
def _add_hold(a, b, p, t0, step, c, cell_start, acc_e, acc_ns, er, cr, cell_means, peak, heat_per, heat_e, heat_c,
              g, hb, hb_end, he, hc):
    """GPU ``g``'s power ``p`` held over ``[a, b)`` (t0 <= a < b <= the grid's end,
    a at or after the open cell's start), added to the open cell ``c`` (its sums
    ``acc_e``, ``acc_ns``) and the cells after it: cells it leaves are written.
    Returns the state (c, cell_start, acc_e, acc_ns, peak, hb, hb_end, he, hc).  The
    general step of _accumulate_grid_kernel; _common_run writes the same inline."""
    cell_end = cell_start + step
    if a >= cell_end:  # leave the open cell: write its sums, find a's cell
        if acc_ns > 0:
            peak, hb, hb_end, he, hc = _close_cell(er, cr, c, acc_e, acc_ns, cell_means, peak, heat_per, heat_e,
                                                   heat_c, g, hb, hb_end, he, hc)
        acc_e = 0.0
        acc_ns = 0
        if a - cell_end < step:
            c += 1
            cell_start = cell_end
        else:
            c = (a - t0) // step
            cell_start = t0 + c * step
        cell_end = cell_start + step
    if b <= cell_end:  # the hold stays in one cell
        acc_e += p * (b - a)
        acc_ns += b - a
        return c, cell_start, acc_e, acc_ns, peak, hb, hb_end, he, hc
    # the hold crosses cell ends: finish this cell, whole cells, then the rest
    acc_e += p * (cell_end - a)
    acc_ns += cell_end - a
    peak, hb, hb_end, he, hc = _close_cell(er, cr, c, acc_e, acc_ns, cell_means, peak, heat_per, heat_e, heat_c, g,
                                           hb, hb_end, he, hc)
    c += 1
    cell_start = cell_end
    if b > cell_start + step:
        c, cell_start, peak, hb, hb_end, he, hc = _whole_cells(er, cr, c, cell_start, b, p, step, cell_means, peak,
                                                               heat_per, heat_e, heat_c, g, hb, hb_end, he, hc)
    return c, cell_start, p * (b - cell_start), b - cell_start, peak, hb, hb_end, he, hc


@kernel
def _common_run(ts, pw, t0, step, max_gap, grid_end, c, cell_start, acc_e, acc_ns, er, cr, cell_means, peak,
                heat_per, heat_e, heat_c, g, hb, hb_end, he, hc):
    # The common samples, from ts[0] / pw[0] on (views: every sample but the last has
    # its next one): finite, held until the next sample (no gap), inside the grid,
    # starting in the open cell; and those that add nothing (NaN, a zero or
    # out-of-grid hold; the general step skips them too).  Stops at the first other
    # sample; returns how many it took and the state.  The same arithmetic as the general step of
    # _accumulate_grid_kernel, in a function of its own: inside that loop, beside
    # the general cases, the same code ran 1.5-2x slower.  (Written out, not through
    # _close_cell / _whole_cells: a helper with array arguments costs reference
    # counting on every call, inlined or not, which made this loop 2-4x slower.)
    i = 0
    n = pw.shape[0]
    step_s = step * 1e-9
    while i < n:
        a = ts[i]
        t_next = ts[i + 1]
        p = np.float64(pw[i])
        d = t_next - a
        if (p != p) | (d == 0) | (t_next <= t0) | (a >= grid_end):  # adds nothing (NaN, or no time in the grid)
            i += 1
            continue
        if not ((d <= max_gap) & (a >= t0) & (t_next <= grid_end)):
            break
        cell_end = cell_start + step
        if a >= cell_end:  # leave the open cell (after a skipped sample): write it, find a's cell
            if acc_ns > 0:
                v = acc_e / acc_ns if cell_means else acc_e * 1e-9
                er[c] += v
                cr[c] += acc_ns * 1e-9
                if cell_means:
                    peak = v if v > peak else peak
                    if heat_per > 0:
                        if c >= hb_end:
                            hb, hb_end, he, hc = _heat_enter(heat_e, heat_c, g, c, heat_per, hb, he, hc, hb_end > 0)
                        he += acc_e * 1e-9
                        hc += acc_ns * 1e-9
            acc_e = 0.0
            acc_ns = 0
            if a - cell_end < step:
                c += 1
                cell_start = cell_end
            else:
                c = (a - t0) // step
                cell_start = t0 + c * step
            cell_end = cell_start + step
        if t_next <= cell_end:  # the hold stays in the open cell
            acc_e += p * d
            acc_ns += d
            i += 1
            continue
        # it ends in a later cell: finish this one, whole cells, then the rest
        acc_e += p * (cell_end - a)
        acc_ns += cell_end - a
        v = acc_e / acc_ns if cell_means else acc_e * 1e-9
        er[c] += v
        cr[c] += acc_ns * 1e-9
        if cell_means:
            peak = v if v > peak else peak
            if heat_per > 0:
                if c >= hb_end:
                    hb, hb_end, he, hc = _heat_enter(heat_e, heat_c, g, c, heat_per, hb, he, hc, hb_end > 0)
                he += acc_e * 1e-9
                hc += acc_ns * 1e-9
        c += 1
        cell_start = cell_end
        while t_next > cell_start + step:  # whole cells (as _whole_cells, written out: see above)
            er[c] += p if cell_means else p * step_s
            cr[c] += step_s
            if cell_means:
                peak = p if p > peak else peak
                if heat_per > 0:
                    if c >= hb_end:
                        hb, hb_end, he, hc = _heat_enter(heat_e, heat_c, g, c, heat_per, hb, he, hc, hb_end > 0)
                    he += p * step_s
                    hc += step_s
            c += 1
            cell_start += step
        acc_e = p * (t_next - cell_start)
        acc_ns = t_next - cell_start
        i += 1
    return i, c, cell_start, acc_e, acc_ns, peak, hb, hb_end, he, hc


@kernel
def _accumulate_grid_kernel(
    ts_ns, power_w, gpu_offsets, group_of_gpu, params, final, carry_ts, carry_power, carry_cell, carry_acc_e,
    carry_acc_ns, energy_j, covered_s, cell_means, heat_per, peaks, heat_e, heat_c,
):
    # One pass per GPU over its time-ordered samples, preceded by the carried last
    # sample of its previous chunk.  The current cell's sums stay in registers
    # (acc_e in W*ns, acc_ns in ns) and are written once per cell: many samples
    # share a cell, and a read-modify-write per sample would chain through memory.
    # Cells are found by stepping, dividing only after a jump.  Runs of common
    # samples go through _common_run; the general step below takes the rest (a gap,
    # NaN, clipping, the carried and the last sample).  (Helpers with array
    # arguments cost reference counting per call: none runs per sample.)
    #
    # With ``cell_means`` each GPU's finished cell adds its time-weighted mean (W)
    # instead of its energy (J) into ``energy_j``, and the GPU's running peak cell
    # mean (``peaks``, start at -inf) and its energy/covered time in bins of
    # ``heat_per`` cells are recorded.  A GPU finishes each cell exactly once (cells
    # only move forward), so the division is exact.  Between chunks (not ``final``)
    # the open cell is carried (carry_cell >= 0: its index, with its sums) instead of
    # written, so any chunking writes the same cells as one pass.
    t0 = params[_P_T0]
    step = params[_P_STEP]
    n_cells = params[_P_N_CELLS]
    max_gap = params[_P_MAX_GAP]
    hold = params[_P_HOLD]
    grid_end = t0 + step * n_cells
    n_gpus = gpu_offsets.shape[0] - 1
    for g in range(n_gpus):
        row = group_of_gpu[g]
        lo = gpu_offsets[g]
        hi = gpu_offsets[g + 1]
        has_carry = carry_ts[g] != NO_TS
        if hi == lo and not final:
            continue  # nothing new for this GPU: keep carrying
        first = lo - 1 if has_carry else lo  # k = lo - 1 stands for the carried sample
        stop = hi if final else hi - 1  # when not final, sample hi - 1 becomes the carry
        # the state keeps one type from the start (an int literal here compiled the
        # helpers a second time, for the literal)
        c = np.int64(0)
        cell_start = t0
        acc_e = 0.0
        acc_ns = np.int64(0)
        if carry_cell[g] >= 0:  # the open cell of the previous chunk
            c = carry_cell[g]
            cell_start = t0 + c * step
            acc_e = carry_acc_e[g]
            acc_ns = carry_acc_ns[g]
            carry_cell[g] = -1
        peak = peaks[g] if cell_means else -np.inf
        hb = np.int64(0)  # the heatmap bin being summed in he, hc (see _heat_enter)
        hb_end = np.int64(0)
        he = 0.0
        hc = 0.0
        er = energy_j[row]
        cr = covered_s[row]
        fast_stop = min(stop, hi - 1)  # the samples before it have a next one
        k = first
        retry = lo  # the next sample to try the common run at
        while k < stop:
            if retry <= k < fast_stop:
                taken, c, cell_start, acc_e, acc_ns, peak, hb, hb_end, he, hc = _common_run(
                    ts_ns[k: fast_stop + 1], power_w[k: fast_stop], t0, step, max_gap, grid_end, c, cell_start,
                    acc_e, acc_ns, er, cr, cell_means, peak, heat_per, heat_e, heat_c, g, hb, hb_end, he, hc)
                k += taken
                # a run that took nothing: not again for 16 samples (bounds the calls
                # where no sample is common, e.g. all before the grid)
                retry = k + 1 if taken else k + 16
                if k >= stop:
                    break
            # the general step: sample k
            if k < lo:
                a = carry_ts[g]
                p = np.float64(carry_power[g])
            else:
                a = ts_ns[k]
                p = np.float64(power_w[k])
            k += 1
            if k < hi:  # the next sample, ts_ns[k]
                t_next = ts_ns[k]
                if t_next - a <= max_gap:
                    b = t_next
                else:
                    b = a + hold
                    if b > t_next:
                        b = t_next
            else:
                b = a + hold
            if np.isnan(p):
                continue
            if a < t0:
                a = t0
            if b > grid_end:
                b = grid_end
            if b <= a:
                continue
            c, cell_start, acc_e, acc_ns, peak, hb, hb_end, he, hc = _add_hold(
                a, b, p, t0, step, c, cell_start, acc_e, acc_ns, er, cr, cell_means, peak, heat_per, heat_e, heat_c,
                g, hb, hb_end, he, hc)
        if not final and acc_ns > 0:  # keep the open cell for the next chunk
            carry_cell[g] = c
            carry_acc_e[g] = acc_e
            carry_acc_ns[g] = acc_ns
        elif acc_ns > 0:  # the last open cell
            peak, hb, hb_end, he, hc = _close_cell(er, cr, c, acc_e, acc_ns, cell_means, peak, heat_per, heat_e,
                                                   heat_c, g, hb, hb_end, he, hc)
        if hb_end > 0:  # the heatmap bin being summed
            heat_e[g, hb] = he
            heat_c[g, hb] = hc
        if cell_means:
            peaks[g] = peak
        if final or hi > lo:
            carry_ts[g] = NO_TS
        if not final and hi > lo:
            carry_ts[g] = ts_ns[hi - 1]
            carry_power[g] = power_w[hi - 1]


_NO_PEAKS = np.zeros(0, dtype=np.float64)
_NO_HEAT = np.zeros((0, 0), dtype=np.float64)


def _hold_params(func: str, max_gap_ns: object, hold_ns: object) -> tuple[int, int]:
    max_gap = int_param(func, "max_gap_ns", max_gap_ns, minimum=0)
    hold = int_param(func, "hold_ns", hold_ns, minimum=0)
    return max_gap, hold


def _params(grid: TimeGrid, max_gap: int, hold: int) -> np.ndarray:
    return np.array([grid.t0_ns, grid.step_ns, grid.n_cells, max_gap, hold], dtype=np.int64)


def _check_offsets(func: str, gpu_offsets: object, n_samples: int) -> np.ndarray:
    offsets = int_array(func, "gpu_offsets", gpu_offsets)
    if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != n_samples:
        raise SchemaError(
            f"{func}: gpu_offsets must start at 0 and end at the number of samples ({n_samples}), "
            f"got {offsets[:1].tolist()}..{offsets[-1:].tolist()}"
        )
    if (np.diff(offsets) < 0).any():
        raise SchemaError(f"{func}: gpu_offsets must be non-decreasing")
    return offsets


def _check_groups(func: str, group_of_gpu: object, n_gpus: int, n_groups: int) -> np.ndarray:
    groups = int_array(func, "group_of_gpu", group_of_gpu)
    if groups.size != n_gpus:
        raise SchemaError(
            f"{func}: group_of_gpu needs one entry per GPU ({n_gpus}), got {groups.size}"
        )
    if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
        raise SchemaError(
            f"{func}: group_of_gpu values must lie in [0, {n_groups}), "
            f"got {groups.min()}..{groups.max()}"
        )
    return groups


def _accumulators(
    func: str, grid: TimeGrid, n_groups: int, energy_j: object, covered_s: object
) -> tuple[np.ndarray, np.ndarray]:
    shape = (n_groups, grid.n_cells)
    if energy_j is None:
        energy_j = np.zeros(shape, dtype=np.float64)
    if covered_s is None:
        covered_s = np.zeros(shape, dtype=np.float64)
    out_array(func, "energy_j", energy_j, shape, np.float64)
    out_array(func, "covered_s", covered_s, shape, np.float64)
    return energy_j, covered_s


def accumulate_grid(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    grid: TimeGrid,
    *,
    max_gap_ns: int,
    hold_ns: int,
    energy_j: NDArray[np.float64] | None = None,
    covered_s: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Add one GPU's ZOH power series into per-cell energy and covered time.

    Parameters
    ----------
    ts_ns : array of int64 (ns) or datetime64, shape (n,)
        Sample times, non-decreasing.
    power_w : array of float32 or float64, shape (n,)
        Power, W; NaN = missing.
    grid : TimeGrid
        The common grid (see :func:`time_grid`).
    max_gap_ns : int
        Longest gap bridged by holding the previous sample, ns.
    hold_ns : int
        How long a sample before a longer gap (and the last sample) holds, ns.
    energy_j, covered_s : ndarray of float64, shape (n_cells,), optional
        Accumulators to add into (modified in place); new zeros when omitted.

    Returns
    -------
    energy_j, covered_s : ndarray of float64, shape (n_cells,)
        Energy in J and covered time in s per cell.
    """
    func = "accumulate_grid"
    ts = ts_array(func, "ts_ns", ts_ns)
    power = float_array(func, "power_w", power_w)
    n = same_length(func, ts_ns=ts, power_w=power)
    grid = _grid_param(func, grid)
    max_gap, hold = _hold_params(func, max_gap_ns, hold_ns)
    if energy_j is None:
        energy_j = np.zeros(grid.n_cells, dtype=np.float64)
    if covered_s is None:
        covered_s = np.zeros(grid.n_cells, dtype=np.float64)
    out_array(func, "energy_j", energy_j, (grid.n_cells,), np.float64)
    out_array(func, "covered_s", covered_s, (grid.n_cells,), np.float64)
    _accumulate_grid_kernel(
        ts,
        power,
        np.array([0, n], dtype=np.int64),
        np.zeros(1, dtype=np.int64),
        _params(grid, max_gap, hold),
        True,
        np.full(1, NO_TS, dtype=np.int64),
        np.zeros(1, dtype=np.float64),
        np.full(1, -1, dtype=np.int64),
        np.zeros(1, dtype=np.float64),
        np.zeros(1, dtype=np.int64),
        energy_j.reshape(1, -1),
        covered_s.reshape(1, -1),
        False, 0, _NO_PEAKS, _NO_HEAT, _NO_HEAT,
    )
    return energy_j, covered_s


def accumulate_grid_batch(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    gpu_offsets: NDArray[np.integer],
    group_of_gpu: NDArray[np.integer],
    grid: TimeGrid,
    *,
    max_gap_ns: int,
    hold_ns: int,
    n_groups: int | None = None,
    energy_j: NDArray[np.float64] | None = None,
    covered_s: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Add many GPUs' series into per-group cell energy and covered time.

    Parameters
    ----------
    ts_ns, power_w : arrays, shape (n,)
        All GPUs' samples concatenated; GPU ``g`` owns
        ``[gpu_offsets[g], gpu_offsets[g+1])``, sorted by time within the GPU.
    gpu_offsets : array of int, shape (n_gpus + 1,)
        CSR offsets: starts at 0, non-decreasing, ends at n.
    group_of_gpu : array of int, shape (n_gpus,)
        Row of the accumulators each GPU adds into (host, rack or cluster index).
    grid, max_gap_ns, hold_ns
        As in :func:`accumulate_grid`.
    n_groups : int, optional
        Number of rows; defaults to the accumulators' rows or ``max(group) + 1``.
    energy_j, covered_s : ndarray of float64, shape (n_groups, n_cells), optional
        Accumulators to add into (modified in place).

    Returns
    -------
    energy_j, covered_s : ndarray of float64, shape (n_groups, n_cells)
    """
    func = "accumulate_grid_batch"
    acc = GridAccumulator(
        grid,
        group_of_gpu,
        max_gap_ns=max_gap_ns,
        hold_ns=hold_ns,
        n_groups=n_groups,
        energy_j=energy_j,
        covered_s=covered_s,
        _func=func,
    )
    acc._add(func, ts_ns, power_w, gpu_offsets, final=True)
    return acc.energy_j, acc.covered_s


class GridAccumulator:
    """Streaming grid accumulation over chunks (time windows x GPU batches).

    Holds the ``(n_groups, n_cells)`` energy and covered-time accumulators and,
    per GPU, the last sample of its previous chunk (whose hold ends at the
    GPU's next sample).  After :meth:`finish` the arrays equal one
    :func:`accumulate_grid_batch` call on the whole data, whatever the chunking.

    Parameters
    ----------
    grid : TimeGrid
    group_of_gpu : array of int, shape (n_gpus,)
        Accumulator row of each GPU.
    max_gap_ns, hold_ns : int
        As in :func:`accumulate_grid`.
    n_groups : int, optional
        Number of rows (default ``max(group_of_gpu) + 1``).
    energy_j, covered_s : ndarray of float64, shape (n_groups, n_cells), optional
        Accumulators to add into.
    cell_means : bool
        Add each GPU's time-weighted cell mean (W) instead of its energy (J) (see
        :func:`grid_cell_means`), and keep each GPU's peak cell mean (``peaks_w``).
    heat_per : int
        With ``cell_means``: also each GPU's energy and covered time in bins of this
        many cells (``heat_energy_j``, ``heat_covered_s``; 0 = none).
    """

    def __init__(
        self,
        grid: TimeGrid,
        group_of_gpu: NDArray[np.integer],
        *,
        max_gap_ns: int,
        hold_ns: int,
        n_groups: int | None = None,
        energy_j: NDArray[np.float64] | None = None,
        covered_s: NDArray[np.float64] | None = None,
        cell_means: bool = False,
        heat_per: int = 0,
        _func: str = "GridAccumulator",
    ):
        func = _func
        self.grid = _grid_param(func, grid)
        max_gap, hold = _hold_params(func, max_gap_ns, hold_ns)
        groups = int_array(func, "group_of_gpu", group_of_gpu)
        if n_groups is None:
            if isinstance(energy_j, np.ndarray) and energy_j.ndim == 2:
                n_groups = energy_j.shape[0]
            else:
                n_groups = int(groups.max()) + 1 if groups.size else 1
        n_groups = int_param(func, "n_groups", n_groups, minimum=1)
        self.group_of_gpu = _check_groups(func, groups, groups.size, n_groups)
        self.n_gpus = groups.size
        self.energy_j, self.covered_s = _accumulators(func, self.grid, n_groups, energy_j, covered_s)
        self.params = _params(self.grid, max_gap, hold)
        self.carry_ts = np.full(self.n_gpus, NO_TS, dtype=np.int64)
        self.carry_power = np.zeros(self.n_gpus, dtype=np.float64)
        self.carry_cell = np.full(self.n_gpus, -1, dtype=np.int64)
        self.carry_acc_e = np.zeros(self.n_gpus, dtype=np.float64)
        self.carry_acc_ns = np.zeros(self.n_gpus, dtype=np.int64)
        self.cell_means = bool(cell_means)
        self.heat_per = int_param(func, "heat_per", heat_per, minimum=0) if cell_means else 0
        n_heat = -(-self.grid.n_cells // self.heat_per) if self.heat_per else 0
        self.peaks = np.full(self.n_gpus if cell_means else 0, -np.inf)
        self.heat_energy_j = np.zeros((self.n_gpus if self.heat_per else 0, n_heat))
        self.heat_covered_s = np.zeros((self.n_gpus if self.heat_per else 0, n_heat))
        self._finished = False

    @property
    def peaks_w(self) -> NDArray[np.float64]:
        """Each GPU's peak cell mean so far (NaN if none; ``cell_means`` only)."""
        return np.where(np.isfinite(self.peaks), self.peaks, np.nan)

    def _add(self, func: str, ts_ns, power_w, gpu_offsets, *, final: bool, check_sorted: bool = True) -> None:
        if self._finished:
            raise ParameterError(f"{func}: the accumulator is finished; create a new one")
        ts = ts_array(func, "ts_ns", ts_ns, check_sorted=False)
        power = float_array(func, "power_w", power_w)
        n = same_length(func, ts_ns=ts, power_w=power)
        offsets = _check_offsets(func, gpu_offsets, n)
        if offsets.size != self.n_gpus + 1:
            raise SchemaError(
                f"{func}: gpu_offsets describes {offsets.size - 1} GPUs but group_of_gpu has "
                f"{self.n_gpus}; give n_gpus + 1 offsets (empty ranges for GPUs without samples)"
            )
        if check_sorted:
            check_sorted_runs(func, "ts_ns", ts, offsets)
        has = (np.diff(offsets) > 0) & (self.carry_ts != NO_TS)
        if has.any():
            first = ts[offsets[:-1][has]]
            late = first < self.carry_ts[has]
            if late.any():
                g = int(np.flatnonzero(has)[np.argmax(late)])
                raise SchemaError(
                    f"{func}: GPU {g}'s chunk starts at {ts[offsets[g]]} ns, before its previous "
                    f"chunk's last sample ({self.carry_ts[g]} ns); push chunks in time order"
                )
        _accumulate_grid_kernel(
            ts,
            power,
            offsets,
            self.group_of_gpu,
            self.params,
            final,
            self.carry_ts,
            self.carry_power,
            self.carry_cell,
            self.carry_acc_e,
            self.carry_acc_ns,
            self.energy_j,
            self.covered_s,
            self.cell_means,
            self.heat_per,
            self.peaks if self.cell_means else _NO_PEAKS,
            self.heat_energy_j if self.heat_per else _NO_HEAT,
            self.heat_covered_s if self.heat_per else _NO_HEAT,
        )
        self._finished = final

    def cell_means_result(self) -> "CellMeans":
        """The accumulators as :class:`CellMeans` (``cell_means`` mode)."""
        return CellMeans(self.energy_j, self.covered_s, self.peaks_w, self.heat_energy_j, self.heat_covered_s)

    def add(self, ts_ns, power_w, gpu_offsets, *, check_sorted: bool = True) -> None:
        """Add a chunk holding the next samples of every GPU (CSR ``gpu_offsets``).

        A GPU with no samples in the chunk has an empty range.  ``check_sorted=False``
        skips the check that each GPU's times are sorted (for arrays already checked,
        e.g. :class:`tracekit.traceset.GpuArrays`).
        """
        self._add("GridAccumulator.add", ts_ns, power_w, gpu_offsets, final=False, check_sorted=check_sorted)

    def add_gpu(self, gpu: int, ts_ns, power_w) -> None:
        """Add the next samples of GPU ``gpu`` only."""
        func = "GridAccumulator.add_gpu"
        gpu = int_param(func, "gpu", gpu, minimum=0)
        if gpu >= self.n_gpus:
            raise ParameterError(f"{func}: gpu must be < n_gpus ({self.n_gpus}), got {gpu}")
        n = len(ts_ns)
        offsets = np.zeros(self.n_gpus + 1, dtype=np.int64)
        offsets[gpu + 1 :] = n
        self._add(func, ts_ns, power_w, offsets, final=False)

    def finish(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Flush the carried samples (each holds ``hold_ns``) and return the accumulators."""
        empty_offsets = np.zeros(self.n_gpus + 1, dtype=np.int64)
        self._add(
            "GridAccumulator.finish",
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.float32),
            empty_offsets,
            final=True,
        )
        return self.energy_j, self.covered_s


class CellMeans(NamedTuple):
    """Sums of per-GPU cell means on a grid (see :func:`grid_cell_means`)."""

    mean_sum_w: NDArray[np.float64]
    gpu_time_s: NDArray[np.float64]
    peak_w: NDArray[np.float64]
    heat_energy_j: NDArray[np.float64]
    heat_covered_s: NDArray[np.float64]


def grid_cell_means(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    gpu_offsets: NDArray[np.integer],
    row_of_gpu: NDArray[np.integer],
    grid: TimeGrid,
    *,
    n_rows: int,
    max_gap_ns: int,
    hold_ns: int,
    heat_per: int = 0,
    mean_sum_w: NDArray[np.float64] | None = None,
    gpu_time_s: NDArray[np.float64] | None = None,
    check_sorted: bool = True,
) -> CellMeans:
    """Each GPU's time-weighted cell means on the grid, summed into rows.

    For GPU ``g`` and cell ``c`` the mean is ``energy / covered`` of its ZOH signal
    (the same intervals as :func:`accumulate_grid`); it is added into
    ``mean_sum_w[row_of_gpu[g], c]`` and its covered seconds into
    ``gpu_time_s[row, c]``.  Also returns each GPU's peak cell mean and, with
    ``heat_per > 0``, its energy and covered time in bins of ``heat_per`` cells
    (``heat_*`` shape ``(n_gpus, ceil(n_cells / heat_per))``).

    This is the fused form of "accumulate each GPU, divide, add into its group" (the
    same kernel as :func:`accumulate_grid` in its cell-means mode): the per-GPU cell
    arrays are never materialised.  ``mean_sum_w`` / ``gpu_time_s`` (float64, shape
    ``(n_rows, n_cells)``, e.g. row slices of a larger array) are added into instead of
    new arrays.  ``check_sorted=False`` skips the check that each GPU's times are
    sorted (for arrays already checked, e.g. :class:`tracekit.traceset.GpuArrays`).
    """
    func = "grid_cell_means"
    n_rows = int_param(func, "n_rows", n_rows, minimum=1)
    acc = GridAccumulator(grid, row_of_gpu, max_gap_ns=max_gap_ns, hold_ns=hold_ns, n_groups=n_rows,
                          cell_means=True, heat_per=heat_per, energy_j=mean_sum_w, covered_s=gpu_time_s,
                          _func=func)
    acc._add(func, ts_ns, power_w, gpu_offsets, final=True, check_sorted=check_sorted)
    return acc.cell_means_result()
