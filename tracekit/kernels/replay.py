"""Kernels of ``tracekit replay``: clocks per controller window, synchronous waits, the
stretched time axis, power smoothing, rack storage and zero-order-hold energy.

Conventions shared by every kernel here (they match :mod:`tracekit.kernels.grid`):

* Samples of many GPUs are concatenated; GPU ``g`` owns ``[offsets[g], offsets[g+1])``,
  sorted by time.
* Zero-order hold: sample ``k`` holds its power from ``ts[k]`` to ``ts[k+1]``.  When
  that interval is longer than ``max_gap_ns`` the sample holds for ``hold_ns`` only
  and the rest of the interval (its *gap remainder*) is missing; the last sample of a
  GPU holds for ``hold_ns``.  The held part is the sample's *covered* time ``c_k``.
* Power/clock model (DESIGN.md, Replay): at clock ratio ``x = f / f0`` a sample
  observed at ``p`` draws ``p' = idle + (p - idle) * r(x)`` when ``p > idle`` (samples
  at or below idle are unchanged), ``r(x) = a*x + (1-a)*x**g``; its covered time
  stretches by ``s = 1 + beta*(1/x - 1)``, ``beta`` per phase label.  The hold after
  the last sample and before a gap is never stretched, nor is a gap remainder; NaN
  samples are never stretched and stay NaN.
* Controller windows are fixed on the *original* time axis: window ``w`` holds the
  samples with ``floor(ts / window_ns) == w`` (aligned to multiples of the window
  since the epoch, the same for every GPU).  Within a window the clock ratio is one
  value ``x``.  The window's *replayed image* is the contiguous replayed span of its
  samples, and its mean replayed power is ``sum(p'_k * c'_k) / sum(c'_k)`` over its
  non-NaN samples, ``c'_k = c_k * s_k * m_k`` with ``m_k`` the wait multiplier below
  (1 outside waits).

With a cap ``C`` the window's ``x`` is the largest ratio (not above the lock's) whose
mean replayed power is ``<= C``, found by bisection.  The mean depends on the window's
samples only through a few sums (covered time and power below / above idle, plain and
weighted by ``beta``), so each bisection step costs O(1) per wait in the window.

Synchronous waits (*rows*): a row is one GPU's span ``[a, n)`` of one iteration: its
compute part ``[a, z)`` and its wait ``[z, n)`` (the communication after compute,
until its next compute starts).  Wait samples are not stretched by the clock; they
are scaled together by ``m = max(avail - el * e' - gap, 0) / tail_c`` where ``e'`` is
the row's replayed compute time (stretched covered times plus gap remainders),
``tail_c`` and ``gap`` the wait's covered time and gap remainders, ``avail`` the
replayed length the row must fill and ``el`` 1 (the wait absorbs the compute's
stretch) or 0 (a fixed wait, ``avail``).  Every wait sample of a row is in a window
at or after the last compute sample of the row, so ``m`` is known, or depends on the
clock of the window being solved, when its first wait sample is reached: the clock
and the waits of a window are solved together, exactly.

Group (aggregate) caps (:func:`solve_group_windows`): a cap on the summed power of a
group of GPUs (a rack, a row, the cluster).  Windows have the same epoch index on
every GPU, so window ``w`` of a group is window ``w`` of each of its GPUs; its *group
power* is the sum of the GPUs' window means, and one clock ratio for the whole group
(every sample above idle throttled) is solved as above on that sum.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels._jit import kernel
from tracekit.kernels._validate import (
    check_sorted_runs,
    float64_array,
    float_array,
    int_array,
    int_param,
    out_array,
    same_length,
    ts_array,
)

# Columns of the per-GPU parameter array (float64, shape (n_gpus, N_GPU_PARAMS)).
G_IDLE_W, G_CAP_W, G_LOCK_MHZ, G_F0_MHZ, G_A, G_EXP = range(6)
N_GPU_PARAMS = 6

# Columns of the per-window output (float64, shape (n_windows, N_WINDOW_COLUMNS)).
W_X, W_F0_MHZ, W_COVERED_NS, W_FIRST, W_MEAN_W = range(5)
N_WINDOW_COLUMNS = 5

# Columns of the row arrays: int64 (a, z, n); float64 inputs (avail, el, tail_c, gap);
# float64 outputs (e', m); float64 scratch (E, C0, C1, TB, TQ, TD, TN).
R_A, R_Z, R_N = range(3)
RF_AVAIL, RF_EL, RF_TAIL_C, RF_GAP = range(4)
RO_E, RO_M = range(2)
_RW_E, _RW_C0, _RW_C1, _RW_TB, _RW_TQ, _RW_TD, _RW_TN = range(7)
_N_RW = 7

#: Bisection steps for the window clock (the bracket shrinks to 2**-60 of its width).
BISECT_STEPS = 60


# --------------------------------------------------------------------------- helpers


@kernel
def _covered(ts_ns, k, b, max_gap_ns, hold_ns):
    """(covered ns, stretchable, gap remainder ns) of sample k of a GPU ending at b."""
    if k + 1 < b:
        d = ts_ns[k + 1] - ts_ns[k]
        if d <= max_gap_ns:
            return float(d), True, 0.0
        if d > hold_ns:
            return float(hold_ns), False, float(d - hold_ns)
        return float(d), False, 0.0
    return float(hold_ns), False, 0.0


@kernel
def _ratio(x, a, g):
    return a * x + (1.0 - a) * x ** g


@kernel
def _row_m(r, y, rows_f, row_w):
    tail_c = rows_f[r, RF_TAIL_C]
    if tail_c <= 0.0:
        return 1.0
    e = row_w[r, _RW_E] + row_w[r, _RW_C0] + y * row_w[r, _RW_C1]
    v = (rows_f[r, RF_AVAIL] - rows_f[r, RF_EL] * e - rows_f[r, RF_GAP]) / tail_c
    return v if v > 0.0 else 0.0


@kernel
def _window_mean(x, a, g, sums, rows_f, row_w, r_first, r_last):
    """Mean replayed power of a window whose throttled samples run at ratio ``x``:
    ``sums`` holds the throttled samples' six sums and the fixed samples' energy and
    time; waits of the rows ``r_first..r_last`` scale with their multiplier."""
    y = 1.0 / x - 1.0
    r = _ratio(x, a, g)
    num = sums[2] + y * sums[3] + r * (sums[4] + y * sums[5]) + sums[6]
    den = sums[0] + y * sums[1] + sums[7]
    for q in range(r_first, r_last + 1):
        td = row_w[q, _RW_TD]
        if td > 0.0:
            m = _row_m(q, y, rows_f, row_w)
            num += (row_w[q, _RW_TB] + r * row_w[q, _RW_TQ]) * m
            den += td * m
    if den <= 0.0:
        return 0.0
    return num / den


@kernel
def _row_of(k, rp, r_hi, rows_i):
    """(row pointer, row, role) of sample k: role 0 outside rows, 1 compute, 2 wait."""
    while rp < r_hi and k >= rows_i[rp, R_N]:
        rp += 1
    if rp < r_hi and k >= rows_i[rp, R_A]:
        if k < rows_i[rp, R_Z]:
            return rp, rp, 1
        return rp, rp, 2
    return rp, -1, 0


# --------------------------------------------------------------------------- clocks


@kernel
def _illinois_mid(it, lo, f_lo, hi, f_hi):
    """The next point of the Illinois root solvers below (``f_lo <= 0 < f_hi``): the
    secant point, or the midpoint every 8th step and where the secant leaves the
    bracket."""
    if it % 8 == 7:
        return 0.5 * (lo + hi)
    mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
    if not (lo < mid < hi):
        return 0.5 * (lo + hi)
    return mid


@kernel
def _illinois_update(lo, f_lo, hi, f_hi, side, mid, f_mid):
    """The bracket after evaluating ``f(mid)``; the end kept twice in a row has its
    value halved (Illinois).  Returns (lo, f_lo, hi, f_hi, side)."""
    if f_mid > 0.0:
        if side == 1:
            f_lo *= 0.5
        return lo, f_lo, mid, f_mid, 1
    if side == -1:
        f_hi *= 0.5
    return mid, f_mid, hi, f_hi, -1


@kernel
def _solve_clock(hi, f_hi, cap, a, g, sums, rows_f, row_w, r_first, r_last):
    """The clock ratio in (0, hi) where the window mean meets the cap, from below:
    Illinois (modified regula falsi) on ``mean(x) - cap`` with the bracket kept, so
    the result's mean is <= cap; bisection steps where the secant stalls."""
    lo = hi * 1e-9
    f_lo = _window_mean(lo, a, g, sums, rows_f, row_w, r_first, r_last) - cap
    if f_lo > 0.0:  # no clock meets the cap (cannot happen above idle): the lowest
        return lo
    side = 0
    for it in range(BISECT_STEPS):
        if hi - lo <= 1e-13 * hi or f_lo > -1e-12 * cap:
            break
        mid = _illinois_mid(it, lo, f_lo, hi, f_hi)
        f_mid = _window_mean(mid, a, g, sums, rows_f, row_w, r_first, r_last) - cap
        lo, f_lo, hi, f_hi, side = _illinois_update(lo, f_lo, hi, f_hi, side, mid, f_mid)
    return lo


@kernel
def _window_clock(xl, cap, has_cap, a, g, sums, rows_f, row_w, r_first, r_last):
    """The window's clock ratio: the lock's, or lower where the cap needs it."""
    x = xl
    if has_cap:
        f_hi = _window_mean(x, a, g, sums, rows_f, row_w, r_first, r_last) - cap
        if f_hi > 0.0:
            x = _solve_clock(x, f_hi, cap, a, g, sums, rows_f, row_w, r_first, r_last)
    return x


@kernel
def _fold_rows(y, rows_f, row_w, row_out, r_first, r_last):
    """After a window: its compute joins its rows' replayed compute time; the rows'
    window sums are cleared."""
    for q in range(r_first, r_last + 1):
        if row_w[q, _RW_TN] > 0.0:
            row_out[q, RO_M] = _row_m(q, y, rows_f, row_w)
        row_w[q, _RW_E] += row_w[q, _RW_C0] + y * row_w[q, _RW_C1]
        row_out[q, RO_E] = row_w[q, _RW_E]
        for c in range(_RW_C0, _N_RW):
            row_w[q, c] = 0.0


@kernel
def _write_window(ts_ns, power_w, labels, betas, gparams, g, i, j, b, x, xl, rp, r_hi, rows_i, row_out,
                  max_gap_ns, hold_ns, t0, acc, out_power, out_ts, out_win, slot, phase_ns):
    """Replayed power and times of the samples ``i..j-1`` of a window of GPU ``g``
    whose throttled samples run at ``x`` and the others at ``xl``; waits last their
    row's multiplier (``row_out[:, RO_M]``).  Records the window's replayed mean;
    returns the replayed time elapsed since the GPU's first sample."""
    idle = gparams[g, G_IDLE_W]
    cap = gparams[g, G_CAP_W]
    has_cap = np.isfinite(cap)
    ca = gparams[g, G_A]
    ge = gparams[g, G_EXP]
    has_rows = rows_i.shape[0] > 0
    r_clk = _ratio(x, ca, ge)
    rl = _ratio(xl, ca, ge)
    y = 1.0 / x - 1.0
    yl = 1.0 / xl - 1.0
    e_w = 0.0
    t_w = 0.0
    for k in range(i, j):
        c, ok, gap = _covered(ts_ns, k, b, max_gap_ns, hold_ns)
        role = 0
        r = -1
        if has_rows:
            rp, r, role = _row_of(k, rp, r_hi, rows_i)
        p = power_w[k]
        lab = labels[k] + 1
        s = 1.0
        if xl == 1.0 and x == 1.0 or np.isnan(p):
            out_power[k] = p
        else:
            if p > idle:
                pl = p if xl == 1.0 else idle + (p - idle) * rl
                if has_cap and pl > cap:
                    out_power[k] = idle + (p - idle) * r_clk
                    s = 1.0 + betas[g, lab] * y
                else:
                    out_power[k] = pl
                    s = 1.0 + betas[g, lab] * yl
            else:
                out_power[k] = p
                s = 1.0 + betas[g, lab] * yl
            if not ok:
                s = 1.0
        d = c * s
        phase_ns[g, lab, 0] += c
        if role == 2:  # a wait: not stretched by the clock, scaled to fill
            phase_ns[g, lab, 1] += c
            d = c * row_out[r, RO_M]
        else:
            phase_ns[g, lab, 1] += d
        if not np.isnan(p):
            e_w += np.float64(out_power[k]) * d
            t_w += d
        out_ts[k] = t0 + np.int64(acc + 0.5)  # acc >= 0: truncation rounds
        acc += d + gap
    out_win[slot, W_MEAN_W] = e_w / t_w if t_w > 0.0 else np.nan
    return acc


@kernel
def _clock_windows_kernel(ts_ns, power_w, labels, clock_mhz, offsets, gparams, betas, iparams, win_offsets,
                          row_offsets, rows_i, rows_f, row_w, g_lo, g_hi,
                          out_power, out_ts, out_win, phase_ns, row_out, summ, summ_i, pairs):
    window_ns = iparams[0]
    max_gap_ns = iparams[1]
    hold_ns = iparams[2]
    write = iparams[3] != 0
    solve = iparams[4] != 0
    has_clock = clock_mhz.shape[0] > 0
    has_rows = rows_i.shape[0] > 0
    keep = summ.shape[0] > 0
    sums = np.zeros(8)
    for g in range(g_lo, g_hi):
        a0 = offsets[g]
        b = offsets[g + 1]
        pair = win_offsets[g] + (row_offsets[g] if has_rows else 0)
        r_lo = 0
        r_hi = 0
        if has_rows:
            r_lo = row_offsets[g]
            r_hi = row_offsets[g + 1]
            for q in range(r_lo, r_hi):
                for c in range(_N_RW):
                    row_w[q, c] = 0.0
        if b <= a0:
            continue
        idle = gparams[g, G_IDLE_W]
        cap = gparams[g, G_CAP_W]
        has_cap = np.isfinite(cap)
        lock = gparams[g, G_LOCK_MHZ]
        f0 = gparams[g, G_F0_MHZ]
        ca = gparams[g, G_A]
        ge = gparams[g, G_EXP]
        w_first = ts_ns[a0] // window_ns
        slot0 = win_offsets[g]
        rp = r_lo
        t0 = ts_ns[a0]
        acc = 0.0
        i = a0
        while i < b:
            wid = ts_ns[i] // window_ns
            t_end = (wid + 1) * window_ns
            j = i
            while j < b and ts_ns[j] < t_end:
                j += 1
            # the lock: one ratio for every sample of the window
            f0w = f0
            if has_clock:
                clk_w = 0.0
                clk_s = 0.0
                for k in range(i, j):
                    f = clock_mhz[k]
                    if power_w[k] > idle and f > 0.0 and np.isfinite(f):
                        c, ok, gap = _covered(ts_ns, k, b, max_gap_ns, hold_ns)
                        clk_w += c
                        clk_s += f * c
                if clk_w > 0.0:
                    f0w = clk_s / clk_w
            xl = 1.0
            if np.isfinite(lock) and lock < f0w:
                xl = lock / f0w
            rl = _ratio(xl, ca, ge)
            yl = 1.0 / xl - 1.0
            # pass 1: sums of the throttled samples (above the cap after the lock), of
            # the fixed ones, and of the waits (per row)
            for c in range(8):
                sums[c] = 0.0
            s_c = 0.0
            r_first = -1
            r_last = -2
            rp0 = rp
            for k in range(i, j):
                c, ok, gap = _covered(ts_ns, k, b, max_gap_ns, hold_ns)
                s_c += c
                role = 0
                r = -1
                if has_rows:
                    rp, r, role = _row_of(k, rp, r_hi, rows_i)
                    if role > 0:
                        if r_first < 0:
                            r_first = r
                        r_last = r
                p = power_w[k]
                nan = np.isnan(p)
                if p > idle:
                    bb = idle
                    q = p - idle
                else:
                    bb = p
                    q = 0.0
                pl = p if xl == 1.0 else bb + q * rl
                hot = has_cap and pl > cap
                if role == 2:
                    row_w[r, _RW_TN] += 1.0
                    if not nan:
                        if hot:
                            row_w[r, _RW_TB] += bb * c
                            row_w[r, _RW_TQ] += q * c
                        else:
                            row_w[r, _RW_TB] += pl * c
                        row_w[r, _RW_TD] += c
                    continue
                beta = betas[g, labels[k] + 1] if ok and not nan else 0.0
                if hot:
                    if role == 1:
                        row_w[r, _RW_C0] += c + gap
                        row_w[r, _RW_C1] += c * beta
                    sums[0] += c
                    sums[1] += c * beta
                    sums[2] += bb * c
                    sums[3] += bb * c * beta
                    sums[4] += q * c
                    sums[5] += q * c * beta
                else:
                    d = c * (1.0 + beta * yl)
                    if role == 1:
                        row_w[r, _RW_C0] += d + gap
                    if not nan:
                        sums[6] += pl * d
                        sums[7] += d
            slot = slot0 + (wid - w_first)
            if keep:  # the window as a few numbers, for solve_windows
                for c in range(8):
                    summ[slot, c] = sums[c]
                summ[slot, 8] = xl
                summ[slot, 9] = f0w
                summ[slot, 10] = s_c
                summ[slot, 11] = i
                summ_i[slot, 0] = r_first
                summ_i[slot, 1] = r_last
                summ_i[slot, 2] = pair
                for q in range(r_first, r_last + 1):
                    for c in range(_N_RW - 1):
                        pairs[pair, c] = row_w[q, _RW_C0 + c]
                    pair += 1
            x = _window_clock(xl, cap, has_cap, ca, ge, sums, rows_f, row_w, r_first, r_last) if solve else xl
            out_win[slot, W_X] = x
            out_win[slot, W_F0_MHZ] = f0w
            out_win[slot, W_COVERED_NS] = s_c
            out_win[slot, W_FIRST] = i
            # pass 2: replayed power, replayed times, the window's replayed mean
            y = 1.0 / x - 1.0
            for q in range(r_first, r_last + 1):  # the waits' multipliers
                if row_w[q, _RW_TN] > 0.0:
                    row_out[q, RO_M] = _row_m(q, y, rows_f, row_w)
            if write:
                acc = _write_window(ts_ns, power_w, labels, betas, gparams, g, i, j, b, x, xl, rp0, r_hi, rows_i,
                                    row_out, max_gap_ns, hold_ns, t0, acc, out_power, out_ts, out_win, slot,
                                    phase_ns)
            _fold_rows(y, rows_f, row_w, row_out, r_first, r_last)
            i = j


@kernel
def _summary_solve_kernel(summ, summ_i, pairs, win_offsets, row_offsets, gparams, rows_f, row_w, g_lo, g_hi,
                          out_win, row_out):
    has_rows = rows_f.shape[0] > 0
    for g in range(g_lo, g_hi):
        if has_rows:
            for q in range(row_offsets[g], row_offsets[g + 1]):
                for c in range(_N_RW):
                    row_w[q, c] = 0.0
        cap = gparams[g, G_CAP_W]
        has_cap = np.isfinite(cap)
        ca = gparams[g, G_A]
        ge = gparams[g, G_EXP]
        for w in range(win_offsets[g], win_offsets[g + 1]):
            p0 = summ_i[w, 2]
            if p0 < 0:
                continue
            r_first = summ_i[w, 0]
            r_last = summ_i[w, 1]
            for q in range(r_first, r_last + 1):
                for c in range(_N_RW - 1):
                    row_w[q, _RW_C0 + c] = pairs[p0 + q - r_first, c]
            x = _window_clock(summ[w, 8], cap, has_cap, ca, ge, summ[w, :8], rows_f, row_w, r_first, r_last)
            out_win[w, W_X] = x
            out_win[w, W_F0_MHZ] = summ[w, 9]
            out_win[w, W_COVERED_NS] = summ[w, 10]
            out_win[w, W_FIRST] = summ[w, 11]
            _fold_rows(1.0 / x - 1.0, rows_f, row_w, row_out, r_first, r_last)


class ClockWindows(NamedTuple):
    """Result of :func:`clock_windows`.

    Attributes
    ----------
    power_w : ndarray of float32, shape (n,)
        Replayed power per sample (bitwise the input where the window's ``x`` is 1).
    ts_ns : ndarray of int64, shape (n,)
        Replayed sample times: each GPU starts at its first sample, and each sample
        lasts its replayed covered time (``c * s``, a wait ``c * m``) plus its gap
        remainder, rounded to the ns (bitwise the input where nothing stretched).
    windows : ndarray of float64, shape (n_windows, 5)
        Per controller window (CSR by ``win_offsets``): clock ratio ``x`` (NaN for a
        window without samples), reference clock ``f0`` (MHz), original covered time
        (ns), index of its first sample, and mean replayed power of its replayed
        image (W, from the float32 replayed power).
    win_offsets : ndarray of int64, shape (n_gpus + 1,)
        GPU ``g``'s windows are rows ``[win_offsets[g], win_offsets[g+1])``.
    phase_ns : ndarray of float64, shape (n_gpus, n_labels + 1, 2)
        Original and clock-stretched covered time per GPU and label (row 0 = label -1).
    rows : ndarray of float64, shape (n_rows, 2)
        Per row: replayed compute time ``e'`` (ns, with gap remainders) and the wait
        multiplier ``m``.
    summary : WindowSummary or None
        The windows' sums (``keep_summary=True``), for :func:`solve_windows`.
    """

    power_w: NDArray[np.float32]
    ts_ns: NDArray[np.int64]
    windows: NDArray[np.float64]
    win_offsets: NDArray[np.int64]
    phase_ns: NDArray[np.float64]
    rows: NDArray[np.float64]
    summary: "WindowSummary | None" = None


class WindowSummary(NamedTuple):
    """What the clock of every window depends on, once the samples are read: the
    throttled and fixed samples' sums, the lock's ratio, and per row the window's
    compute and wait sums.  Valid for one trace, labels, lock and cap, and one row
    layout (rows ``a, z, n``); the rows' ``avail`` and ``el`` may change."""

    sums: NDArray[np.float64]  # (n_windows, 12): 8 sums, lock ratio, f0, covered ns, first sample
    index: NDArray[np.int64]  # (n_windows, 3): first row, last row, first pair (-1: no samples)
    pairs: NDArray[np.float64]  # (n_windows + n_rows, 6): C0, C1, TB, TQ, TD, TN per window and row
    win_offsets: NDArray[np.int64]
    row_offsets: NDArray[np.int64]
    n_rows: int
    first_window: NDArray[np.int64] | None = None  # per GPU: epoch index of its first window


def window_offsets(ts_ns: NDArray[np.int64], offsets: NDArray[np.int64], window_ns: int) -> NDArray[np.int64]:
    """CSR offsets of the controller windows of each GPU (first to last window)."""
    n_gpus = len(offsets) - 1
    counts = np.zeros(n_gpus, dtype=np.int64)
    nonempty = offsets[1:] > offsets[:-1]
    if nonempty.any():
        first = ts_ns[offsets[:-1][nonempty]] // window_ns
        last = ts_ns[offsets[1:][nonempty] - 1] // window_ns
        counts[nonempty] = last - first + 1
    out = np.zeros(n_gpus + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _check_csr(func: str, offsets: object, n: int, name: str = "offsets") -> np.ndarray:
    off = int_array(func, name, offsets)
    if off.size < 1 or off[0] != 0 or off[-1] != n or (np.diff(off) < 0).any():
        raise SchemaError(f"{func}: {name} must start at 0, be non-decreasing and end at {n}")
    return off


def _buffer(func: str, name: str, buf, n: int, dtype) -> np.ndarray:
    if buf is None:
        return np.empty(n, dtype=dtype)
    return out_array(func, name, buf, (n,), dtype)


def _run_ranges(fn, offsets: np.ndarray, workers: int | None) -> None:
    from tracekit.engine.local import map_ranges

    costs = np.diff(offsets).astype(np.float64)
    if len(costs) == 0:
        return
    map_ranges(fn, costs, workers)


class Rows(NamedTuple):
    """Synchronous waits for :func:`clock_windows` (see the module docstring).

    Attributes
    ----------
    offsets : int64, shape (n_gpus + 1,)
        GPU ``g``'s rows are ``[offsets[g], offsets[g+1])``, in time order, not
        overlapping.
    azn : int64, shape (n_rows, 3)
        Global sample indices ``a <= z < n`` within the row's GPU.
    params : float64, shape (n_rows, 4)
        ``avail`` (ns), ``el`` (0 or 1), ``tail_c`` and ``gap`` (ns).
    """

    offsets: NDArray[np.int64]
    azn: NDArray[np.int64]
    params: NDArray[np.float64]


def _check_rows(func: str, rows: Rows, offsets: np.ndarray) -> Rows:
    n_gpus = offsets.size - 1
    azn = np.ascontiguousarray(rows.azn, dtype=np.int64)
    params = float64_array(func, "rows.params", rows.params, ndim=2)
    n_rows = azn.shape[0] if azn.ndim == 2 else -1
    if azn.ndim != 2 or azn.shape[1] != 3 or params.shape != (n_rows, 4):
        raise SchemaError(f"{func}: rows.azn must have shape (n_rows, 3) and rows.params (n_rows, 4)")
    roff = _check_csr(func, rows.offsets, n_rows, "rows.offsets")
    if roff.size != n_gpus + 1:
        raise SchemaError(f"{func}: rows.offsets must have one entry per GPU plus one ({n_gpus + 1})")
    if n_rows:
        gpu = np.repeat(np.arange(n_gpus), np.diff(roff))
        a, z, n = azn[:, 0], azn[:, 1], azn[:, 2]
        inside = (a >= offsets[gpu]) & (n <= offsets[gpu + 1]) & (a <= z) & (z < n)
        ordered = np.ones(n_rows, dtype=bool)
        same = gpu[1:] == gpu[:-1]
        ordered[1:] = ~same | (a[1:] >= n[:-1])
        if not (inside & ordered).all():
            raise SchemaError(f"{func}: rows must satisfy a <= z < n within their GPU, in time order, "
                              "without overlap")
        if not np.isfinite(params).all() or not np.isin(params[:, RF_EL], (0.0, 1.0)).all():
            raise ParameterError(f"{func}: row parameters must be finite with el 0 or 1")
    return Rows(roff, azn, params)


def clock_windows(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    labels: NDArray[np.int8],
    offsets: NDArray[np.int64],
    gpu_params: NDArray[np.float64],
    betas: NDArray[np.float64],
    *,
    window_ns: int,
    max_gap_ns: int,
    hold_ns: int,
    clock_mhz: NDArray[np.floating] | None = None,
    rows: Rows | None = None,
    workers: int | None = None,
    out_power: NDArray[np.float32] | None = None,
    out_ts: NDArray[np.int64] | None = None,
    write: bool = True,
    check_sorted: bool = True,
    keep_summary: bool = False,
    solve: bool = True,
) -> ClockWindows:
    """Clock ratio per controller window under a lock and/or cap, with synchronous
    waits solved in the same pass; replayed power and time of every sample (rules in
    the module docstring).

    Parameters
    ----------
    ts_ns : array of int64, shape (n,)
        Sample times, sorted within each GPU.
    power_w : array of float32 or float64, shape (n,)
        Observed power, W (NaN = missing).
    labels : array of int8, shape (n,)
        Phase label per sample (-1 = unlabelled), indexes ``betas[:, label + 1]``.
    offsets : array of int64, shape (n_gpus + 1,)
        CSR offsets of the GPUs.
    gpu_params : array of float64, shape (n_gpus, 6)
        Per GPU: idle W, cap W (NaN = none), lock MHz (NaN = none), reference clock
        ``f0`` MHz, ``a`` and ``g`` of ``r(x)``.
    betas : array of float64, shape (n_gpus, n_labels + 1)
        Stretch sensitivity per GPU and label (column 0 for label -1).
    window_ns, max_gap_ns, hold_ns : int
        Controller window, longest bridged gap and hold after a gap / the last sample.
    clock_mhz : array of float, shape (n,), optional
        Observed SM clock per sample; a window's ``f0`` is then the covered-time mean
        of its finite clocks above idle (the spec clock where none is finite).
    rows : Rows, optional
        Synchronous waits; none without.
    workers : int, optional
        Threads (GPU ranges balanced by sample count); default all cores.
    out_power, out_ts : ndarray, optional
        Buffers (float32 / int64, shape (n,)) to write into instead of new arrays
        (repeated calls on large traces then skip the page faults of fresh memory).
    write : bool
        False solves clocks and waits only (windows, phase times and rows are
        filled; ``power_w`` and ``ts_ns`` are empty and the window means NaN): about
        half the work, for the rounds of synchronous training.
    check_sorted : bool
        Check that times are sorted within each GPU (skip only for arrays already
        checked, e.g. the same trace again).
    keep_summary : bool
        Also return the windows' sums (:class:`WindowSummary`): :func:`solve_windows`
        then solves the clocks and waits again for other row parameters without
        reading the samples, with bitwise the same arithmetic.
    solve : bool
        False keeps every window at the lock's clock (no cap is solved) and treats
        the caps as throttle thresholds only, which may then equal the idle power:
        the summary for :func:`solve_group_windows` (needs ``write=False`` and
        ``keep_summary=True``).

    Returns
    -------
    ClockWindows
    """
    func = "clock_windows"
    ts = ts_array(func, "ts_ns", ts_ns, check_sorted=False)
    power = float_array(func, "power_w", power_w)
    lab = np.ascontiguousarray(labels)
    if lab.dtype != np.int8:
        raise SchemaError(f"{func}: labels must be int8, got {lab.dtype}")
    n = same_length(func, ts_ns=ts, power_w=power, labels=lab)
    off = _check_csr(func, offsets, n)
    if check_sorted:
        check_sorted_runs(func, "ts_ns", ts, off)
    n_gpus = off.size - 1
    gp = float64_array(func, "gpu_params", gpu_params, ndim=2)
    if gp.shape != (n_gpus, N_GPU_PARAMS):
        raise SchemaError(f"{func}: gpu_params must have shape ({n_gpus}, {N_GPU_PARAMS}), got {gp.shape}")
    bt = float64_array(func, "betas", betas, ndim=2)
    if bt.shape[0] != n_gpus or bt.shape[1] < 1:
        raise SchemaError(f"{func}: betas must have shape ({n_gpus}, n_labels + 1), got {bt.shape}")
    if n and (lab.min() < -1 or lab.max() + 1 >= bt.shape[1]):
        raise SchemaError(f"{func}: labels must lie in [-1, {bt.shape[1] - 2}] for betas of shape {bt.shape}")
    if not (np.isfinite(gp[:, [G_IDLE_W, G_F0_MHZ, G_A, G_EXP]]).all() and (gp[:, G_F0_MHZ] > 0).all()
            and (gp[:, G_EXP] > 0).all() and ((gp[:, G_A] >= 0) & (gp[:, G_A] <= 1)).all()):
        raise ParameterError(f"{func}: idle, f0 > 0, 0 <= a <= 1 and g > 0 must be finite for every GPU")
    caps = gp[:, G_CAP_W]
    has_cap = np.isfinite(caps)
    if not solve and (write or not keep_summary):
        raise ParameterError(f"{func}: solve=False only builds a summary (write=False, keep_summary=True)")
    # a threshold (solve=False) may sit at idle: every sample above idle is throttled
    below = caps[has_cap] <= gp[has_cap, G_IDLE_W] if solve else caps[has_cap] < gp[has_cap, G_IDLE_W]
    if below.any():
        raise ParameterError(f"{func}: every cap must lie above the GPU's idle power")
    if (bt < 0).any() or not np.isfinite(bt).all():
        raise ParameterError(f"{func}: betas must be finite and >= 0")
    window = int_param(func, "window_ns", window_ns, minimum=1)
    max_gap = int_param(func, "max_gap_ns", max_gap_ns, minimum=0)
    hold = int_param(func, "hold_ns", hold_ns, minimum=0)
    clk = np.empty(0, dtype=np.float32) if clock_mhz is None else float_array(func, "clock_mhz", clock_mhz)
    if clk.size not in (0, n):
        raise SchemaError(f"{func}: clock_mhz must have {n} values, got {clk.size}")
    if rows is None:
        rows = Rows(np.zeros(n_gpus + 1, dtype=np.int64), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 4)))
    rows = _check_rows(func, rows, off)
    n_rows = rows.azn.shape[0]
    win_off = window_offsets(ts, off, window)
    if write:
        out_power = _buffer(func, "out_power", out_power, n, np.float32)
        out_ts = _buffer(func, "out_ts", out_ts, n, np.int64)
    else:
        out_power = np.empty(0, dtype=np.float32)
        out_ts = np.empty(0, dtype=np.int64)
    out_win = np.full((int(win_off[-1]), N_WINDOW_COLUMNS), np.nan)
    phase_ns = np.zeros((n_gpus, bt.shape[1], 2))
    row_w = np.zeros((n_rows, _N_RW))
    row_out = np.zeros((n_rows, 2))
    row_out[:, RO_M] = 1.0
    iparams = np.array([window, max_gap, hold, int(bool(write)), int(bool(solve))], dtype=np.int64)
    n_win = int(win_off[-1])
    if keep_summary:
        summ = np.zeros((n_win, 12))
        summ_i = np.full((n_win, 3), -1, dtype=np.int64)
        pairs = np.zeros((n_win + n_rows, _N_RW - 1))
    else:
        summ, summ_i, pairs = np.zeros((0, 12)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, _N_RW - 1))

    def run(lo: int, hi: int) -> None:
        _clock_windows_kernel(ts, power, lab, clk, off, gp, bt, iparams, win_off, rows.offsets, rows.azn,
                              rows.params, row_w, lo, hi, out_power, out_ts, out_win, phase_ns, row_out,
                              summ, summ_i, pairs)

    _run_ranges(run, off, workers)
    summary = None
    if keep_summary:
        first = np.zeros(n_gpus, dtype=np.int64)
        nonempty = off[1:] > off[:-1]
        first[nonempty] = ts[off[:-1][nonempty]] // window
        summary = WindowSummary(summ, summ_i, pairs, win_off, rows.offsets, n_rows, first)
    return ClockWindows(out_power, out_ts, out_win, win_off, phase_ns, row_out, summary)


@kernel
def _write_kernel(ts_ns, power_w, labels, offsets, gparams, betas, iparams, win_offsets, win_x, win_xl,
                  row_offsets, rows_i, row_out, g_lo, g_hi, out_power, out_ts, out_win, phase_ns):
    window_ns = iparams[0]
    max_gap_ns = iparams[1]
    hold_ns = iparams[2]
    has_rows = rows_i.shape[0] > 0
    for g in range(g_lo, g_hi):
        a0 = offsets[g]
        b = offsets[g + 1]
        if b <= a0:
            continue
        r_lo = row_offsets[g] if has_rows else 0
        r_hi = row_offsets[g + 1] if has_rows else 0
        w_first = ts_ns[a0] // window_ns
        slot0 = win_offsets[g]
        rp = r_lo
        t0 = ts_ns[a0]
        acc = 0.0
        i = a0
        while i < b:
            wid = ts_ns[i] // window_ns
            t_end = (wid + 1) * window_ns
            j = i
            while j < b and ts_ns[j] < t_end:
                j += 1
            slot = slot0 + (wid - w_first)
            acc = _write_window(ts_ns, power_w, labels, betas, gparams, g, i, j, b, win_x[slot], win_xl[slot], rp,
                                r_hi, rows_i, row_out, max_gap_ns, hold_ns, t0, acc, out_power, out_ts, out_win,
                                slot, phase_ns)
            while rp < r_hi and rows_i[rp, R_N] <= j:
                rp += 1
            i = j


def write_windows(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    labels: NDArray[np.int8],
    offsets: NDArray[np.int64],
    gpu_params: NDArray[np.float64],
    betas: NDArray[np.float64],
    summary: WindowSummary,
    windows: NDArray[np.float64],
    rows_out: NDArray[np.float64],
    *,
    window_ns: int,
    max_gap_ns: int,
    hold_ns: int,
    azn: NDArray[np.int64] | None = None,
    workers: int | None = None,
    out_power: NDArray[np.float32] | None = None,
    out_ts: NDArray[np.int64] | None = None,
) -> ClockWindows:
    """The replayed samples of a solution from :func:`solve_windows` (its ``windows``
    and ``rows_out``): bitwise the output of :func:`clock_windows` with the same row
    parameters, reading each sample once without solving again.

    ``ts_ns`` ... ``betas`` and ``window_ns``, ``max_gap_ns``, ``hold_ns`` must be
    those the summary was made from (the samples are not checked again); ``azn`` the
    rows' ``a, z, n``.
    """
    func = "write_windows"
    n = len(ts_ns)
    off = _check_csr(func, offsets, n)
    win_off = summary.win_offsets
    n_win = int(win_off[-1])
    if windows.shape != (n_win, N_WINDOW_COLUMNS) or rows_out.shape != (summary.n_rows, 2):
        raise SchemaError(f"{func}: windows and rows_out must come from solve_windows on this summary")
    rows_i = np.zeros((0, 3), dtype=np.int64) if azn is None else np.ascontiguousarray(azn, dtype=np.int64)
    if rows_i.shape[0] != summary.n_rows:
        raise SchemaError(f"{func}: azn must hold the summary's {summary.n_rows} rows")
    roff = summary.row_offsets if summary.n_rows else np.zeros(off.size, dtype=np.int64)
    out_power = _buffer(func, "out_power", out_power, n, np.float32)
    out_ts = _buffer(func, "out_ts", out_ts, n, np.int64)
    out_win = windows.copy()
    phase_ns = np.zeros((off.size - 1, betas.shape[1], 2))
    win_x = np.ascontiguousarray(windows[:, W_X])
    win_xl = np.ascontiguousarray(summary.sums[:, 8])
    iparams = np.array([window_ns, max_gap_ns, hold_ns, 1], dtype=np.int64)

    def run(lo: int, hi: int) -> None:
        _write_kernel(ts_ns, power_w, labels, off, gpu_params, betas, iparams, win_off, win_x, win_xl, roff, rows_i,
                      rows_out, lo, hi, out_power, out_ts, out_win, phase_ns)

    _run_ranges(run, off, workers)
    return ClockWindows(out_power, out_ts, out_win, win_off, phase_ns, rows_out, summary)


def solve_windows(summary: WindowSummary, gpu_params: NDArray[np.float64], rows: Rows, *,
                  workers: int | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Clocks and waits again from a :class:`WindowSummary`, for new row parameters
    (or a new cap): the ``windows`` and ``rows`` outputs of :func:`clock_windows`
    with ``write=False``, bitwise, in O(windows + rows) instead of O(samples).

    ``rows`` must have the layout (offsets, ``a, z, n``) the summary was made with.
    """
    func = "solve_windows"
    n_gpus = summary.win_offsets.size - 1
    gp = float64_array(func, "gpu_params", gpu_params, ndim=2)
    if gp.shape != (n_gpus, N_GPU_PARAMS):
        raise SchemaError(f"{func}: gpu_params must have shape ({n_gpus}, {N_GPU_PARAMS}), got {gp.shape}")
    params = float64_array(func, "rows.params", rows.params, ndim=2)
    if params.shape != (summary.n_rows, 4) or not np.array_equal(rows.offsets, summary.row_offsets):
        raise SchemaError(f"{func}: rows must have the layout the summary was made with ({summary.n_rows} rows)")
    caps = gp[:, G_CAP_W]
    if (caps[np.isfinite(caps)] <= gp[np.isfinite(caps), G_IDLE_W]).any():
        raise ParameterError(f"{func}: every cap must lie above the GPU's idle power")
    n_win = int(summary.win_offsets[-1])
    out_win = np.full((n_win, N_WINDOW_COLUMNS), np.nan)
    row_w = np.zeros((summary.n_rows, _N_RW))
    row_out = np.zeros((summary.n_rows, 2))
    row_out[:, RO_M] = 1.0
    roff = summary.row_offsets if summary.n_rows else np.zeros(n_gpus + 1, dtype=np.int64)

    def run(lo: int, hi: int) -> None:
        _summary_solve_kernel(summary.sums, summary.index, summary.pairs, summary.win_offsets, roff, gp, params,
                              row_w, lo, hi, out_win, row_out)

    _run_ranges(run, summary.win_offsets, workers)
    return out_win, row_out


# --------------------------------------------------------------------------- group (aggregate) caps


@kernel
def _group_mean(x, n_mem, mem_g, mem_slot, gparams, summ, summ_i, rows_f, row_w):
    """Group power of one controller window at group clock ratio ``x``: the sum over
    its GPUs of each one's window mean (see :func:`_window_mean`) at ``min(x, lock's
    ratio)``."""
    total = 0.0
    for k in range(n_mem):
        w = mem_slot[k]
        g = mem_g[k]
        xl = summ[w, 8]
        total += _window_mean(x if x < xl else xl, gparams[g, G_A], gparams[g, G_EXP], summ[w, :8], rows_f, row_w,
                              summ_i[w, 0], summ_i[w, 1])
    return total


@kernel
def _solve_group_clock(hi, f_hi, cap, n_mem, mem_g, mem_slot, gparams, summ, summ_i, rows_f, row_w):
    """:func:`_solve_clock` on the group power: the highest ratio in (0, hi) whose
    group power is <= ``cap`` (Illinois with the bracket kept, bisection every 8th
    step)."""
    lo = hi * 1e-9
    f_lo = _group_mean(lo, n_mem, mem_g, mem_slot, gparams, summ, summ_i, rows_f, row_w) - cap
    if f_lo > 0.0:  # no clock meets the cap (cannot happen above the summed idle): the lowest
        return lo
    side = 0
    for it in range(BISECT_STEPS):
        if hi - lo <= 1e-13 * hi or f_lo > -1e-12 * cap:
            break
        mid = _illinois_mid(it, lo, f_lo, hi, f_hi)
        f_mid = _group_mean(mid, n_mem, mem_g, mem_slot, gparams, summ, summ_i, rows_f, row_w) - cap
        lo, f_lo, hi, f_hi, side = _illinois_update(lo, f_lo, hi, f_hi, side, mid, f_mid)
    return lo


@kernel
def _group_solve_kernel(summ, summ_i, pairs, win_offsets, first_window, row_offsets, gparams, rows_f, row_w,
                        grp_offsets, grp_gpus, grp_cap, q_lo, q_hi, out_win, row_out):
    has_rows = rows_f.shape[0] > 0
    biggest = 1
    for q in range(q_lo, q_hi):
        biggest = max(biggest, grp_offsets[q + 1] - grp_offsets[q])
    mem_g = np.empty(biggest, dtype=np.int64)
    mem_slot = np.empty(biggest, dtype=np.int64)
    for q in range(q_lo, q_hi):
        m0 = grp_offsets[q]
        m1 = grp_offsets[q + 1]
        cap = grp_cap[q]
        has_cap = np.isfinite(cap)
        w_lo = np.iinfo(np.int64).max
        w_hi = np.iinfo(np.int64).min
        for k in range(m0, m1):
            g = grp_gpus[k]
            if has_rows:
                for r in range(row_offsets[g], row_offsets[g + 1]):
                    for c in range(_N_RW):
                        row_w[r, c] = 0.0
            nw = win_offsets[g + 1] - win_offsets[g]
            if nw > 0:
                w_lo = min(w_lo, first_window[g])
                w_hi = max(w_hi, first_window[g] + nw - 1)
        wid = w_lo
        while wid <= w_hi:
            n_mem = 0
            hi = 0.0
            for k in range(m0, m1):
                g = grp_gpus[k]
                rel = wid - first_window[g]
                if rel < 0 or rel >= win_offsets[g + 1] - win_offsets[g]:
                    continue
                w = win_offsets[g] + rel
                p0 = summ_i[w, 2]
                if p0 < 0:
                    continue
                r_first = summ_i[w, 0]
                for r in range(r_first, summ_i[w, 1] + 1):
                    for c in range(_N_RW - 1):
                        row_w[r, _RW_C0 + c] = pairs[p0 + r - r_first, c]
                mem_g[n_mem] = g
                mem_slot[n_mem] = w
                n_mem += 1
                if summ[w, 8] > hi:
                    hi = summ[w, 8]
            if n_mem > 0:
                x = hi
                if has_cap:
                    f_hi = _group_mean(x, n_mem, mem_g, mem_slot, gparams, summ, summ_i, rows_f, row_w) - cap
                    if f_hi > 0.0:
                        x = _solve_group_clock(hi, f_hi, cap, n_mem, mem_g, mem_slot, gparams, summ, summ_i,
                                               rows_f, row_w)
                for k in range(n_mem):
                    w = mem_slot[k]
                    xg = x if x < summ[w, 8] else summ[w, 8]
                    out_win[w, W_X] = xg
                    out_win[w, W_F0_MHZ] = summ[w, 9]
                    out_win[w, W_COVERED_NS] = summ[w, 10]
                    out_win[w, W_FIRST] = summ[w, 11]
                    _fold_rows(1.0 / xg - 1.0, rows_f, row_w, row_out, summ_i[w, 0], summ_i[w, 1])
            wid += 1


def solve_group_windows(summary: WindowSummary, gpu_params: NDArray[np.float64], group_of_gpu: NDArray[np.int64],
                        group_cap_w: NDArray[np.float64], rows: Rows | None = None, *,
                        workers: int | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Clocks and waits under caps on the *summed* power of groups of GPUs (a rack, a
    row, the cluster): the ``windows`` and ``rows`` outputs of :func:`clock_windows`
    (``write=False``), from a summary made with ``solve=False``; write the samples
    with :func:`write_windows`.

    In each controller window the GPUs of group ``q`` run their throttled samples
    (those above ``gpu_params[:, G_CAP_W]``, the threshold the summary was made with:
    the idle power, so every sample above idle) at one clock ratio ``x``, or at their
    lock's ratio where that is lower: the highest ``x`` whose *group power* (the sum
    over the group's GPUs with samples in the window of each one's mean replayed
    power over its replayed window, the quantity a per-GPU cap bounds) is at most
    ``group_cap_w[q]``.  Windows whose group power at the lock's clocks is within the
    cap keep them (bitwise the input where there is no lock).

    Parameters
    ----------
    summary : WindowSummary
        From :func:`clock_windows` with ``keep_summary=True, solve=False``.
    gpu_params : array of float64, shape (n_gpus, 6)
        As for :func:`clock_windows`; caps are the summary's throttle thresholds.
    group_of_gpu : array of int64, shape (n_gpus,)
        Group of each GPU, ``0..n_groups-1``, or -1 for a GPU in no capped group (it
        keeps the lock's clock).
    group_cap_w : array of float64, shape (n_groups,)
        Cap on each group's power, W (> 0).
    rows : Rows, optional
        Synchronous waits, with the layout the summary was made with.
    workers : int, optional
        Threads (groups balanced by window count); default all cores.
    """
    func = "solve_group_windows"
    win_off = summary.win_offsets
    n_gpus = win_off.size - 1
    if summary.first_window is None:
        raise SchemaError(f"{func}: the summary must come from clock_windows(keep_summary=True)")
    gp = float64_array(func, "gpu_params", gpu_params, ndim=2)
    if gp.shape != (n_gpus, N_GPU_PARAMS):
        raise SchemaError(f"{func}: gpu_params must have shape ({n_gpus}, {N_GPU_PARAMS}), got {gp.shape}")
    of = int_array(func, "group_of_gpu", group_of_gpu)
    caps = float64_array(func, "group_cap_w", group_cap_w)
    n_groups = caps.size
    if of.size != n_gpus or (of < -1).any() or (of >= n_groups).any():
        raise SchemaError(f"{func}: group_of_gpu must hold one group in [-1, {n_groups - 1}] per GPU ({n_gpus})")
    if not (np.isfinite(caps) & (caps > 0)).all():
        raise ParameterError(f"{func}: group caps must be finite and > 0 W")
    if rows is None:
        rows = Rows(np.zeros(n_gpus + 1, dtype=np.int64), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 4)))
    params = float64_array(func, "rows.params", rows.params, ndim=2)
    if params.shape != (summary.n_rows, 4) or (summary.n_rows and not np.array_equal(rows.offsets,
                                                                                        summary.row_offsets)):
        raise SchemaError(f"{func}: rows must have the layout the summary was made with ({summary.n_rows} rows)")
    # capped groups first, then every other GPU alone and uncapped
    alone = np.flatnonzero(of < 0)
    key = np.where(of < 0, n_groups + np.cumsum(of < 0) - 1, of)
    grp_gpus = np.argsort(key, kind="stable").astype(np.int64)
    sizes = np.concatenate([np.bincount(of[of >= 0], minlength=n_groups), np.ones(len(alone), dtype=np.int64)])
    grp_off = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=grp_off[1:])
    grp_cap = np.concatenate([caps, np.full(len(alone), np.nan)])
    n_win = int(win_off[-1])
    out_win = np.full((n_win, N_WINDOW_COLUMNS), np.nan)
    row_w = np.zeros((summary.n_rows, _N_RW))
    row_out = np.zeros((summary.n_rows, 2))
    row_out[:, RO_M] = 1.0
    roff = summary.row_offsets if summary.n_rows else np.zeros(n_gpus + 1, dtype=np.int64)
    first = np.ascontiguousarray(summary.first_window, dtype=np.int64)
    win_per_gpu = np.diff(win_off).astype(np.float64)
    costs = np.array([win_per_gpu[grp_gpus[a:b]].sum() + 1 for a, b in zip(grp_off[:-1], grp_off[1:])])

    def run(lo: int, hi: int) -> None:
        _group_solve_kernel(summary.sums, summary.index, summary.pairs, win_off, first, roff, gp, params, row_w,
                            grp_off, grp_gpus, grp_cap, lo, hi, out_win, row_out)

    if len(costs):
        from tracekit.engine.local import map_ranges

        map_ranges(run, costs, workers)
    return out_win, row_out


def group_window_power(windows: NDArray[np.float64], win_offsets: NDArray[np.int64],
                       first_window: NDArray[np.int64], group_of_gpu: NDArray[np.int64],
                       n_groups: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Group power per controller window from replayed window means (the
    ``W_MEAN_W`` column of :func:`write_windows`): for each group, the epoch indices
    of its windows and the sum of its GPUs' means there (W).  Returns (group, window,
    power) triplets as ``(keys (m, 2) int64, power (m,) float64)``, sorted."""
    n_gpus = win_offsets.size - 1
    gpu = np.repeat(np.arange(n_gpus), np.diff(win_offsets))
    wid = first_window[gpu] + (np.arange(len(gpu)) - win_offsets[gpu])
    grp = np.asarray(group_of_gpu)[gpu]
    means = windows[:, W_MEAN_W]
    ok = (grp >= 0) & np.isfinite(means)
    if not ok.any() or n_groups == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    g, w = grp[ok].astype(np.int64), wid[ok].astype(np.int64)
    w0 = int(w.min())
    span = int(w.max()) - w0 + 1
    # one int64 key per (group, window), ordered as the pairs (a 1-D unique is far
    # faster than a unique of rows)
    key_u, inv = np.unique(g * span + (w - w0), return_inverse=True)
    uniq = np.stack([key_u // span, key_u % span + w0], axis=1)
    power = np.zeros(len(uniq))
    np.add.at(power, inv.ravel(), means[ok])
    return uniq, power


# --------------------------------------------------------------------------- row sums


@kernel
def _row_tails_kernel(ts_ns, offsets, gpu_of_row, azn, max_gap_ns, hold_ns, r_lo, r_hi, out):
    for r in range(r_lo, r_hi):
        b = offsets[gpu_of_row[r] + 1]
        tc = 0.0
        tg = 0.0
        for k in range(azn[r, R_Z], azn[r, R_N]):
            c, ok, gap = _covered(ts_ns, k, b, max_gap_ns, hold_ns)
            tc += c
            tg += gap
        out[r, 0] = tc
        out[r, 1] = tg


def row_tails(ts_ns: NDArray[np.int64], offsets: NDArray[np.int64], rows_offsets: NDArray[np.int64],
              azn: NDArray[np.int64], *, max_gap_ns: int, hold_ns: int) -> NDArray[np.float64]:
    """Per row: covered time and gap remainders of its wait ``[z, n)`` (ns)."""
    func = "row_tails"
    ts = ts_array(func, "ts_ns", ts_ns, check_sorted=False)
    off = _check_csr(func, offsets, len(ts))
    azn = np.ascontiguousarray(azn, dtype=np.int64)
    roff = _check_csr(func, rows_offsets, azn.shape[0], "rows_offsets")
    gpu = np.repeat(np.arange(off.size - 1), np.diff(roff)).astype(np.int64)
    out = np.zeros((azn.shape[0], 2))
    max_gap = int_param(func, "max_gap_ns", max_gap_ns, minimum=0)
    hold = int_param(func, "hold_ns", hold_ns, minimum=0)

    def run(lo: int, hi: int) -> None:  # GPUs lo..hi-1: their rows
        _row_tails_kernel(ts, off, gpu, azn, max_gap, hold, roff[lo], roff[hi], out)

    _run_ranges(run, off, None)
    return out


# --------------------------------------------------------------------------- energy


@kernel
def _zoh_energy_kernel(ts_ns, power_w, offsets, max_gap_ns, hold_ns, g_lo, g_hi, out_j, out_s):
    for g in range(g_lo, g_hi):
        b = offsets[g + 1]
        e = 0.0
        t = 0.0
        for k in range(offsets[g], b):
            p = power_w[k]
            if np.isnan(p):
                continue
            c, ok, gap = _covered(ts_ns, k, b, max_gap_ns, hold_ns)
            e += p * (c * 1e-9)
            t += c * 1e-9
        out_j[g] = e
        out_s[g] = t


def zoh_energy(
    ts_ns: NDArray[np.int64], power_w: NDArray[np.floating], offsets: NDArray[np.int64], *,
    max_gap_ns: int, hold_ns: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Energy (J) and covered time (s) per GPU of the zero-order-hold signal (the
    integral that :mod:`tracekit.kernels.grid` conserves)."""
    func = "zoh_energy"
    ts = ts_array(func, "ts_ns", ts_ns, check_sorted=False)
    power = float_array(func, "power_w", power_w)
    n = same_length(func, ts_ns=ts, power_w=power)
    off = _check_csr(func, offsets, n)
    out_j = np.zeros(off.size - 1)
    out_s = np.zeros(off.size - 1)
    max_gap = int_param(func, "max_gap_ns", max_gap_ns, minimum=0)
    hold = int_param(func, "hold_ns", hold_ns, minimum=0)

    def run(lo: int, hi: int) -> None:
        _zoh_energy_kernel(ts, power, off, max_gap, hold, lo, hi, out_j, out_s)

    _run_ranges(run, off, None)
    return out_j, out_s


# --------------------------------------------------------------------------- smoothing


@kernel
def _smooth_kernel(ts_ns, power_w, offsets, floor_w, up_w_per_s, down_w_per_s, g_lo, g_hi, out32):
    # one GPU at a time in a float64 buffer (the backward pass reads the forward
    # pass's unrounded values), then rounded once into the float32 output
    longest = 0
    for g in range(g_lo, g_hi):
        longest = max(longest, offsets[g + 1] - offsets[g])
    buf = np.empty(longest, dtype=np.float64)
    for g in range(g_lo, g_hi):
        a = offsets[g]
        b = offsets[g + 1]
        if b <= a:
            continue
        out = buf[:b - a]
        fl = floor_w[g]
        up = up_w_per_s[g]
        down = down_w_per_s[g]
        # forward: floor and the ramp-down limit (power falls at most `down` W/s)
        prev = np.nan
        prev_t = 0
        for k in range(a, b):
            p = power_w[k]
            if np.isnan(p):
                out[k - a] = p
                continue
            v = p if p > fl else fl
            if not np.isnan(prev) and np.isfinite(down):
                lim = prev - down * ((ts_ns[k] - prev_t) * 1e-9)
                if lim > v:
                    v = lim
            out[k - a] = v
            prev = v
            prev_t = ts_ns[k]
        # backward: the ramp-up limit (power rises at most `up` W/s, so it starts early);
        # a sample is final once this pass has passed it, so it is rounded into the
        # output right there
        if np.isfinite(up):
            nxt = np.nan
            nxt_t = 0
            for k in range(b - 1, a - 1, -1):
                v = out[k - a]
                if not np.isnan(v):
                    if not np.isnan(nxt):
                        lim = nxt - up * ((nxt_t - ts_ns[k]) * 1e-9)
                        if lim > v:
                            v = lim
                    nxt = v
                    nxt_t = ts_ns[k]
                out32[k] = v
        else:
            for k in range(a, b):
                out32[k] = out[k - a]


def smooth_power(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    offsets: NDArray[np.int64],
    *,
    floor_w: NDArray[np.float64],
    up_w_per_s: NDArray[np.float64],
    down_w_per_s: NDArray[np.float64],
    workers: int | None = None,
    check_sorted: bool = True,
) -> NDArray[np.float32]:
    """GPU power smoothing: the least signal at or above both the power and the floor
    whose sample-to-sample rise is at most ``up_w_per_s`` and fall at most
    ``down_w_per_s`` (W per second of the interval).  The GPU burns the difference, so
    no phase is delayed.  ``inf`` turns a limit off; NaN samples stay NaN and are
    skipped (the limit spans the time across them).

    Parameters are per GPU (shape (n_gpus,)).  Returns float32 power.
    """
    func = "smooth_power"
    ts = ts_array(func, "ts_ns", ts_ns, check_sorted=False)
    power = float_array(func, "power_w", power_w)
    n = same_length(func, ts_ns=ts, power_w=power)
    off = _check_csr(func, offsets, n)
    if check_sorted:  # skip only for times already checked (a TraceSet's, or replayed from them)
        check_sorted_runs(func, "ts_ns", ts, off)
    n_gpus = off.size - 1
    fl = float64_array(func, "floor_w", floor_w)
    up = float64_array(func, "up_w_per_s", up_w_per_s)
    down = float64_array(func, "down_w_per_s", down_w_per_s)
    for name, arr in (("floor_w", fl), ("up_w_per_s", up), ("down_w_per_s", down)):
        if arr.size != n_gpus:
            raise SchemaError(f"{func}: {name} must have one value per GPU ({n_gpus}), got {arr.size}")
    if (~np.isfinite(fl)).any() or (fl < 0).any() or (up <= 0).any() or (down <= 0).any() or \
            np.isnan(up).any() or np.isnan(down).any():
        raise ParameterError(f"{func}: floor_w must be finite and >= 0, ramp limits > 0 (inf = off)")
    out = np.empty(n, dtype=np.float32)

    def run(lo: int, hi: int) -> None:
        _smooth_kernel(ts, power, off, fl, up, down, lo, hi, out)

    _run_ranges(run, off, workers)
    return out


# --------------------------------------------------------------------------- storage


@kernel
def _storage_kernel(power_w, target_w, step_s, energy_j, power_max_w, efficiency, soc0, out_grid, out_soc):
    soc = soc0 * energy_j
    for c in range(power_w.shape[0]):
        p = power_w[c]
        t = target_w[c]
        if np.isnan(p):
            out_grid[c] = p
            out_soc[c] = soc / energy_j
            continue
        want = p - t if not np.isnan(t) else 0.0
        bat = want
        if bat > power_max_w:
            bat = power_max_w
        if bat < -power_max_w:
            bat = -power_max_w
        if bat > 0.0:
            avail = soc / step_s
            if bat > avail:
                bat = avail
            soc -= bat * step_s
        elif bat < 0.0:
            room = (energy_j - soc) / (step_s * efficiency)
            if -bat > room:
                bat = -room
            soc += -bat * step_s * efficiency
        if soc < 0.0:
            soc = 0.0
        if soc > energy_j:
            soc = energy_j
        out_grid[c] = p - bat
        out_soc[c] = soc / energy_j


def storage_dispatch(
    power_w: NDArray[np.floating],
    target_w: NDArray[np.floating],
    *,
    step_s: float,
    energy_j: float,
    power_max_w: float,
    efficiency: float = 1.0,
    soc0: float = 0.5,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A battery between a rack and the grid, shaving the rack draw toward ``target_w``.

    Each grid cell the battery delivers ``b = clip(power - target, -power_max_w,
    power_max_w)``, limited by its state of charge (never below empty or above full);
    discharging ``b > 0`` removes ``b * step_s`` J, charging stores ``efficiency`` of
    what it draws.  The grid sees ``power - b``.

    Returns
    -------
    grid_w, soc : ndarray of float64, shape (n_cells,)
        Grid draw (W; NaN where the rack power is missing) and state of charge (0..1)
        at the end of each cell.
    """
    func = "storage_dispatch"
    p = float64_array(func, "power_w", power_w)
    t = float64_array(func, "target_w", target_w)
    same_length(func, power_w=p, target_w=t)
    for name, v in (("step_s", step_s), ("energy_j", energy_j), ("power_max_w", power_max_w)):
        if not (np.isfinite(v) and v > 0):
            raise ParameterError(f"{func}: {name} must be > 0, got {v}")
    if not 0 < efficiency <= 1:
        raise ParameterError(f"{func}: efficiency must be in (0, 1], got {efficiency}")
    if not 0 <= soc0 <= 1:
        raise ParameterError(f"{func}: soc0 must be in [0, 1], got {soc0}")
    grid = np.empty(len(p))
    soc = np.empty(len(p))
    _storage_kernel(p, t, float(step_s), float(energy_j), float(power_max_w), float(efficiency), float(soc0),
                    grid, soc)
    return grid, soc
