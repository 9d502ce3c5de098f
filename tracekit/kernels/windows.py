"""Sliding-window metrics on a regular series (one grid cell per value, NaN = missing).

Functions
---------
window_swing     max - min within every window of ``w`` cells (van Herk / Gil-Werman, O(n))
SwingStream      the same over chunks (carries the last ``w - 1`` cells)
ramp_rates       largest rise and fall of ``x[i+w] - x[i]`` per second
RampStream       the same over chunks (carries the last ``w`` cells)
rolling_median   trailing median over ``w`` cells, a baseline for events
threshold_events dips below / spikes above a baseline by more than a threshold

Grid operators state limits on such quantities: ramp rates in MW/s and the
change within sliding windows (e.g. no repeated change > 10 MW within any 5 s
window); see DESIGN.md, "Facts the product is built on".
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels._jit import kernel
from tracekit.kernels._validate import float_array, float_param, int_param

EventKind = Literal["dip", "spike"]


# --------------------------------------------------------------------------- swing


@kernel
def _window_swing_kernel(x, w, out):
    # van Herk / Gil-Werman: cut x into blocks of w cells; a window starting at i
    # inside block k is a suffix of block k plus a prefix of block k+1, so its
    # max is max(suffix_max[i], prefix_max[i+w-1]).  About 3 comparisons per cell
    # per extreme, no data-dependent branches, O(w) memory.  NaN is skipped by the
    # selects themselves (``v > hi`` is false for NaN), so the extremes stay numbers;
    # a window whose max stays -inf holds no value (or only -inf) and gives NaN.
    n = x.shape[0]
    n_out = n - w + 1
    suf_max = np.empty(w, dtype=np.float64)
    suf_min = np.empty(w, dtype=np.float64)
    for start in range(0, n_out, w):
        # Loops over views from literal bounds: indices offset by ``start`` get a
        # negative-index wraparound at every access (10-25 % slower).
        xb = x[start: min(start + w, n)]
        hi = -np.inf
        lo = np.inf
        for j in range(xb.shape[0] - 1, -1, -1):
            v = np.float64(xb[j])
            hi = v if v > hi else hi  # selects, not branches: noise defeats prediction
            lo = v if v < lo else lo
            suf_max[j] = hi
            suf_min[j] = lo
        ob = out[start: min(start + w, n_out)]
        ob[0] = suf_max[0] - suf_min[0] if suf_max[0] > -np.inf else np.nan
        hi = -np.inf  # prefix extremes of the next block: xn[q] = x[start + q + w - 1]
        lo = np.inf
        xn = x[start + w - 1: start + w - 1 + ob.shape[0]]
        for q in range(1, ob.shape[0]):
            v = np.float64(xn[q])
            hi = v if v > hi else hi
            lo = v if v < lo else lo
            a = suf_max[q]
            b = suf_min[q]
            top = a if a > hi else hi
            bottom = b if b < lo else lo
            ob[q] = top - bottom if top > -np.inf else np.nan
    return out


def _series(func: str, x: object) -> np.ndarray:
    return float_array(func, "x", x)


def _window(func: str, window_cells: object) -> int:
    return int_param(func, "window_cells", window_cells, minimum=1)


def window_swing(x: NDArray[np.floating], window_cells: int) -> NDArray[np.float64]:
    """Swing (max - min) within every window of ``window_cells`` consecutive cells.

    Parameters
    ----------
    x : array of float32 or float64, shape (n,)
        A regular series (e.g. cluster power per grid cell, W); NaN = missing.
    window_cells : int
        Window length in cells (>= 1), e.g. ``round(window_s / step_s)``.

    Returns
    -------
    ndarray of float64, shape (max(n - window_cells + 1, 0),)
        ``swing[i] = max(x[i:i+w]) - min(x[i:i+w])`` over the non-NaN values; NaN
        when the window holds none.  Take ``np.nanmax`` / ``np.nanpercentile(.., 99)``.

    Notes
    -----
    van Herk / Gil-Werman block algorithm (M. van Herk, Pattern Recognit. Lett.
    13(7), 1992; J. Gil & M. Werman, IEEE TPAMI 15(5), 1993): O(n) whatever the
    window, about three comparisons per cell for each of max and min, and no
    data-dependent branching (monotonic deques, Lemire 2006, were 5x slower on
    noisy power).
    """
    func = "window_swing"
    xs = _series(func, x)
    w = _window(func, window_cells)
    out = np.empty(max(len(xs) - w + 1, 0), dtype=np.float64)
    if out.size:
        _window_swing_kernel(xs, w, out)
    return out


class SwingStream:
    """Streaming :func:`window_swing`: push consecutive chunks of one series.

    Each ``push`` returns the swings of the windows that end inside the chunk;
    their concatenation equals ``window_swing`` of the whole series.  The last
    ``window_cells - 1`` cells are carried between chunks.
    """

    def __init__(self, window_cells: int):
        self.window_cells = _window("SwingStream", window_cells)
        self._tail = np.empty(0, dtype=np.float64)

    def push(self, x: NDArray[np.floating]) -> NDArray[np.float64]:
        """Swings of the windows ending in this chunk."""
        xs = _series("SwingStream.push", x)
        joined = np.concatenate([self._tail, xs.astype(np.float64, copy=False)])
        w = self.window_cells
        out = np.empty(max(len(joined) - w + 1, 0), dtype=np.float64)
        if out.size:
            _window_swing_kernel(joined, w, out)
        self._tail = joined[len(joined) - min(len(joined), w - 1) :].copy()
        return out


# --------------------------------------------------------------------------- ramps


class Ramp(NamedTuple):
    """Largest changes over a fixed lag.

    Attributes
    ----------
    up_per_s, down_per_s : float
        Largest ``(x[i+w] - x[i]) / window_s`` and largest ``(x[i] - x[i+w]) / window_s``
        (units of x per second, e.g. W/s); NaN without a valid pair.  Either may
        be negative when the series only moves the other way.
    up_idx, down_idx : int
        The ``i`` where each occurs (the earliest on ties), -1 without a valid pair.
    """

    up_per_s: float
    up_idx: int
    down_per_s: float
    down_idx: int


@kernel
def _ramp_rates_kernel(x, w):
    # A pair with a NaN end gives d = NaN, and NaN > anything is False: skipped
    # without a branch of its own.  Strict > keeps the earliest index on ties.
    n = x.shape[0]
    up = -np.inf
    up_idx = -1
    down = -np.inf
    down_idx = -1
    for i in range(n - w):
        d = np.float64(x[i + w]) - np.float64(x[i])
        if d > up:
            up = d
            up_idx = i
        if -d > down:
            down = -d
            down_idx = i
    if up_idx < 0:
        up = np.nan
        down = np.nan
    return up, up_idx, down, down_idx


def ramp_rates(x: NDArray[np.floating], window_cells: int, *, cell_s: float) -> Ramp:
    """Largest rise and fall of the series over ``window_cells`` cells, per second.

    Parameters
    ----------
    x : array of float32 or float64, shape (n,)
        Regular series; NaN = missing (pairs with a NaN end are skipped).  Values
        must be finite otherwise (a pair whose change is -inf is never reported).
    window_cells : int
        Lag ``w`` in cells (>= 1).
    cell_s : float
        Cell length, s; the window is ``w * cell_s`` seconds.

    Returns
    -------
    Ramp
    """
    func = "ramp_rates"
    xs = _series(func, x)
    w = _window(func, window_cells)
    cell_s = float_param(func, "cell_s", cell_s, minimum=0.0, strict_min=True)
    up, up_idx, down, down_idx = _ramp_rates_kernel(xs, w)
    window_s = w * cell_s
    return Ramp(up / window_s, int(up_idx), down / window_s, int(down_idx))


class RampStream:
    """Streaming :func:`ramp_rates` over consecutive chunks (carries the last ``w`` cells).

    :meth:`result` equals ``ramp_rates`` of the whole series, indices included.
    """

    def __init__(self, window_cells: int, *, cell_s: float):
        self.window_cells = _window("RampStream", window_cells)
        self.cell_s = float_param("RampStream", "cell_s", cell_s, minimum=0.0, strict_min=True)
        self._tail = np.empty(0, dtype=np.float64)
        self._tail_start = 0  # stream index of _tail[0]
        self._up, self._up_idx = np.nan, -1
        self._down, self._down_idx = np.nan, -1

    def push(self, x: NDArray[np.floating]) -> None:
        """Add the next cells."""
        xs = _series("RampStream.push", x)
        joined = np.concatenate([self._tail, xs.astype(np.float64, copy=False)])
        up, up_idx, down, down_idx = _ramp_rates_kernel(joined, self.window_cells)
        # Pairs seen in an earlier push start before the carried tail, so the
        # earlier result wins ties (earliest index), as in one pass.
        if up_idx >= 0 and (self._up_idx < 0 or up > self._up):
            self._up, self._up_idx = up, self._tail_start + up_idx
        if down_idx >= 0 and (self._down_idx < 0 or down > self._down):
            self._down, self._down_idx = down, self._tail_start + down_idx
        keep = min(len(joined), self.window_cells)
        self._tail_start += len(joined) - keep
        self._tail = joined[len(joined) - keep :].copy()

    def result(self) -> Ramp:
        """The largest rise and fall so far."""
        window_s = self.window_cells * self.cell_s
        return Ramp(self._up / window_s, int(self._up_idx), self._down / window_s, int(self._down_idx))


# --------------------------------------------------------------------------- baseline


@kernel
def _rolling_median_kernel(x, w, out):
    # Sorted buffer of the window's non-NaN values; insert / remove by binary
    # search and shift: O(n w) worst case, fine for baseline windows of ~1e3 cells.
    n = x.shape[0]
    buf = np.empty(w, dtype=np.float64)
    cnt = 0
    for i in range(n):
        if i >= w:
            old = np.float64(x[i - w])
            if not np.isnan(old):
                lo = 0
                hi = cnt
                while lo < hi:  # first position with buf >= old
                    mid = (lo + hi) // 2
                    if buf[mid] < old:
                        lo = mid + 1
                    else:
                        hi = mid
                for q in range(lo, cnt - 1):
                    buf[q] = buf[q + 1]
                cnt -= 1
        v = np.float64(x[i])
        if not np.isnan(v):
            lo = 0
            hi = cnt
            while lo < hi:  # first position with buf > v
                mid = (lo + hi) // 2
                if buf[mid] <= v:
                    lo = mid + 1
                else:
                    hi = mid
            for q in range(cnt, lo, -1):
                buf[q] = buf[q - 1]
            buf[lo] = v
            cnt += 1
        if cnt == 0:
            out[i] = np.nan
        elif cnt % 2 == 1:
            out[i] = buf[cnt // 2]
        else:
            out[i] = (buf[cnt // 2 - 1] + buf[cnt // 2]) / 2.0
    return out


def rolling_median(x: NDArray[np.floating], window_cells: int) -> NDArray[np.float64]:
    """Trailing median over ``window_cells`` cells, skipping NaN.

    ``out[i]`` is the median of the non-NaN values in ``x[max(0, i-w+1) : i+1]``
    (the mean of the two middle values for an even count), NaN if there are
    none.  Trailing, so it can be computed as the data arrive; use a window much
    longer than the dips to detect so the baseline does not follow them.
    """
    func = "rolling_median"
    xs = _series(func, x)
    w = _window(func, window_cells)
    out = np.empty(len(xs), dtype=np.float64)
    _rolling_median_kernel(xs, w, out)
    return out


# --------------------------------------------------------------------------- events


class Events(NamedTuple):
    """Runs where the series leaves its baseline by more than a threshold.

    Attributes
    ----------
    start_idx, end_idx : ndarray of int64
        Cell range ``[start_idx, end_idx)`` of each event.
    depth : ndarray of float64
        Largest deviation from the baseline within the event (positive, units of x).
    extreme_idx : ndarray of int64
        Cell of the largest deviation (the earliest on ties).
    """

    start_idx: NDArray[np.int64]
    end_idx: NDArray[np.int64]
    depth: NDArray[np.float64]
    extreme_idx: NDArray[np.int64]


@kernel
def _threshold_events_kernel(x, baseline, threshold, min_cells, sign, out_i, out_depth):
    n = x.shape[0]
    n_out = 0
    start = -1
    best = 0.0
    best_idx = -1
    for i in range(n + 1):
        inside = False
        dev = 0.0
        if i < n:
            dev = sign * (np.float64(x[i]) - np.float64(baseline[i]))
            inside = dev > threshold  # False for NaN
        if inside:
            if start < 0:
                start = i
                best = dev
                best_idx = i
            elif dev > best:
                best = dev
                best_idx = i
        elif start >= 0:
            if i - start >= min_cells:
                out_i[n_out, 0] = start
                out_i[n_out, 1] = i
                out_i[n_out, 2] = best_idx
                out_depth[n_out] = best
                n_out += 1
            start = -1
    return n_out


def threshold_events(
    x: NDArray[np.floating],
    baseline: NDArray[np.floating] | float,
    *,
    threshold: float,
    min_cells: int = 1,
    kind: EventKind = "dip",
) -> Events:
    """Dips below (or spikes above) a baseline by more than ``threshold``.

    Parameters
    ----------
    x : array of float32 or float64, shape (n,)
        Regular series; NaN = missing.
    baseline : array of float, shape (n,), or float
        Reference level per cell (e.g. :func:`rolling_median`) or a constant.
    threshold : float
        Deviation that counts, in units of x (>= 0).  A cell is in an event when
        ``baseline - x > threshold`` (dip) or ``x - baseline > threshold`` (spike).
    min_cells : int
        Shortest event kept, cells (>= 1).
    kind : {"dip", "spike"}

    Returns
    -------
    Events
        A cell where x or the baseline is NaN ends an event.
    """
    func = "threshold_events"
    xs = _series(func, x)
    if np.ndim(baseline) == 0:
        base = np.full(len(xs), float_param(func, "baseline", baseline), dtype=np.float64)
    else:
        base = float_array(func, "baseline", baseline)
        if len(base) != len(xs):
            raise SchemaError(
                f"{func}: baseline must have the length of x ({len(xs)}), got {len(base)}"
            )
    threshold = float_param(func, "threshold", threshold, minimum=0.0)
    min_cells = int_param(func, "min_cells", min_cells, minimum=1)
    if kind not in ("dip", "spike"):
        raise ParameterError(f"{func}: kind must be 'dip' or 'spike', got {kind!r}")
    sign = -1.0 if kind == "dip" else 1.0
    cap = (len(xs) + 1) // 2 + 1
    out_i = np.empty((cap, 3), dtype=np.int64)
    out_depth = np.empty(cap, dtype=np.float64)
    n_out = _threshold_events_kernel(xs, base, threshold, min_cells, sign, out_i, out_depth)
    return Events(
        start_idx=out_i[:n_out, 0].copy(),
        end_idx=out_i[:n_out, 1].copy(),
        depth=out_depth[:n_out].copy(),
        extreme_idx=out_i[:n_out, 2].copy(),
    )
