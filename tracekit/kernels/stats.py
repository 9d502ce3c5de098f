"""Per-GPU sampling statistics over CSR-packed samples (GPU ``g`` owns
``[offsets[g], offsets[g+1])``).

* sampling period: median time between consecutive samples;
* effective update period: median time between *changes* of the power value
  (counters logged faster than they update repeat their value; DESIGN.md);
* power moments: time-agnostic mean, min and max of the finite samples;
* :func:`quantiles`: NumPy's quantiles of a long series without partitioning it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tracekit.kernels._jit import kernel
from tracekit.errors import SchemaError
from tracekit.kernels._validate import float64_array, float_array, int_array, ts_array


@kernel
def _median_of_diffs(t, lo, hi, also_without_first):
    # (median of t[i+1] - t[i], the same median without the first difference when
    # ``also_without_first``, else NaN); t sorted, len >= 2, every difference in
    # [lo, hi].  Sampling intervals cluster tightly, so a counting pass over the
    # range of the differences finds the exact medians in O(n) without a copy, both
    # from one table; a wide range (a trace with gaps) counts into coarse buckets
    # first (:func:`_wide_medians`).
    n = t.shape[0] - 1
    span = hi - lo + 1
    other = np.nan
    if span == 1:  # a regular clock: no pass (counting one value would chain its increments)
        if also_without_first and n > 1:
            other = lo + 0.0
        return lo + 0.0, other
    if span <= 4 * n + 65536 and n < 2**31:  # int32 counts: half the table to miss the cache with
        counts = np.zeros(span, dtype=np.int32)
        for i in range(n):
            counts[t[i + 1] - t[i] - lo] += 1
        whole = _median_of_counts(counts, lo, n)
        if also_without_first and n > 1:
            counts[t[1] - t[0] - lo] -= 1
            other = _median_of_counts(counts, lo, n - 1)
        return whole, other
    return _wide_medians(t, lo, span, also_without_first)


#: Buckets of each counting pass of :func:`_wide_medians` (at most), and the fewest
#: values it counts again instead of selecting among them.
_WIDE_BUCKETS = 16384


@kernel
def _wide_medians(t, lo, span, also_without_first):
    # _median_of_diffs over a wide range (a trace with gaps: a few long intervals).
    # Count the differences into at most _WIDE_BUCKETS buckets (a small table), keep
    # the values of the buckets that hold the middle ranks, and repeat on those over
    # their narrower range while many are left; then select the ranks among them.
    # Both medians (with and without the first difference) are among ranks
    # (n - 2) // 2 .. n // 2 + 1.
    n = t.shape[0] - 1
    cur = np.empty(n, dtype=np.int64)  # cur[:m]: the values in [v_lo, v_lo + span)
    for i in range(n):
        cur[i] = t[i + 1] - t[i]
    m = n
    r_lo = max((n - 2) // 2, 0)
    r_hi = min(n // 2 + 1, n - 1)
    below = 0  # values below v_lo, left out
    v_lo = lo
    while m > _WIDE_BUCKETS and span > 1:
        shift = 0
        while ((span - 1) >> shift) >= _WIDE_BUCKETS:
            shift += 1
        coarse = np.zeros(((span - 1) >> shift) + 1, dtype=np.int64)
        for i in range(m):
            coarse[(cur[i] - v_lo) >> shift] += 1
        skip = 0  # values in the buckets before b_lo
        b_lo = 0
        while below + skip + coarse[b_lo] <= r_lo:
            skip += coarse[b_lo]
            b_lo += 1
        b_hi = b_lo
        seen = below + skip + coarse[b_lo]
        while seen <= r_hi:
            b_hi += 1
            seen += coarse[b_hi]
        new_lo = v_lo + (b_lo << shift)
        new_span = min((b_hi - b_lo + 1) << shift, v_lo + span - new_lo)
        if new_span >= span:  # the middle ranks straddle the whole range: select
            break
        hi_v = new_lo + new_span - 1
        k = 0
        for i in range(m):  # compaction in place (k <= i): every value is stored,
            d = cur[i]      # the position moves on past a kept one (no branch)
            cur[k] = d
            k += (d >= new_lo) & (d <= hi_v)
        m = seen - below - skip
        below += skip
        v_lo = new_lo
        span = new_span
    other = np.nan
    if also_without_first and n > 1:
        rest = np.empty(m, dtype=np.int64)
        for i in range(m):
            rest[i] = cur[i]
        d0 = t[1] - t[0]
        m2 = m
        below2 = below
        if d0 < v_lo:
            below2 -= 1
        elif d0 < v_lo + span:  # drop one copy of d0
            j = 0
            while rest[j] != d0:
                j += 1
            rest[j] = rest[m2 - 1]
            m2 -= 1
        other = _ranks_mean(rest, m2, (n - 2) // 2 - below2, (n - 1) // 2 - below2)
    return _ranks_mean(cur, m, (n - 1) // 2 - below, n // 2 - below), other


@kernel
def _select(x, m, k):
    """Permute ``x[:m]`` (int64) so that x[:k] <= x[k] <= x[k + 1:m] (Hoare
    quickselect, pivot the median of three); returns x[k]."""
    lo = 0
    hi = m - 1
    while lo < hi:
        a = x[lo]
        b = x[(lo + hi) >> 1]
        c = x[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i = lo
        j = hi
        while i <= j:
            while x[i] < pivot:
                i += 1
            while x[j] > pivot:
                j -= 1
            if i <= j:
                v = x[i]
                x[i] = x[j]
                x[j] = v
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break  # j < k < i: x[k] is the pivot, in place
    return x[k]


@kernel
def _ranks_mean(x, m, k1, k2):
    """The mean of the values of ranks ``k1`` and ``k2`` (``k2`` is k1 or k1 + 1) of
    int64 ``x[:m]`` (permuted in place), as np.median takes it for the middle ranks;
    by selection, not a sort (np.median itself compiles for seconds)."""
    first = _select(x, m, k1)
    if k2 == k1:
        return first + 0.0
    second = x[k1 + 1]
    for i in range(k1 + 2, m):
        second = min(second, x[i])
    return (np.float64(first) + np.float64(second)) / 2  # as np.median: no int64 overflow


@kernel
def _median_of_counts(counts, lo, n):
    """Median (the mean of the two middle values) of n values counted from ``lo``."""
    k1 = (n - 1) // 2
    k2 = n // 2
    seen = 0
    v1 = -1
    for v in range(counts.shape[0]):
        seen += counts[v]
        if v1 < 0 and seen > k1:
            v1 = v
        if seen > k2:
            return lo + (v1 + v) / 2.0
    return np.nan


@kernel
def _diff_range(t):
    """(min, max) of t[i+1] - t[i] (len >= 2)."""
    lo = t[1] - t[0]
    hi = lo
    for i in range(1, t.shape[0] - 1):
        d = t[i + 1] - t[i]
        lo = min(lo, d)
        hi = max(hi, d)
    return lo, hi


@kernel
def _add_moment(p, s, cnt, lo, hi):
    """(sum, count, min, max) with sample ``p`` added when finite (scalars: inlined).
    Selects, not branches (NaN runs defeat prediction); adding 0.0 leaves a sum that
    starts at 0.0 as it is, bit for bit."""
    fin = np.abs(p) < np.inf
    s += p if fin else 0.0
    cnt += 1.0 if fin else 0.0
    lo = p if fin and p < lo else lo
    hi = p if fin and p > hi else hi
    return s, cnt, lo, hi


@kernel
def _moments_kernel(power_w, out):
    # out = [sum, count, min, max], continued in the same order as the one-pass kernel
    s = out[0]
    cnt = out[1]
    lo = out[2]
    hi = out[3]
    for i in range(power_w.shape[0]):
        s, cnt, lo, hi = _add_moment(power_w[i], s, cnt, lo, hi)
    out[0] = s
    out[1] = cnt
    out[2] = lo
    out[3] = hi


@kernel(inline="always")
def _is_change(p, q):
    """1 when sample value ``p`` differs from the previous one ``q`` (NaN to NaN is no
    change; ``p != q`` is true when either is NaN), else 0: no branch."""
    return np.int64((p != q) & ((p == p) | (q == q)))


@kernel
def _gpu_sampling_kernel(ts_ns, power_w, offsets, out_f, out_i):
    n_gpus = len(offsets) - 1
    for g in range(n_gpus):
        a = offsets[g]
        b = offsets[g + 1]
        n = b - a
        out_i[g, 0] = n
        if n == 0:
            out_i[g, 1] = 0
            out_i[g, 2] = 0
            for k in range(out_f.shape[1]):
                out_f[g, k] = np.nan
            continue
        out_i[g, 1] = ts_ns[a]
        out_i[g, 2] = ts_ns[b - 1]
        # The moments and the range of the sampling intervals in one pass, then the
        # changes of the power value in passes of their own, without branches: in one
        # loop with the moments the change test's branches made the pass several
        # times slower.  A sample is a change when it differs from the previous one
        # (NaN to NaN is not).  While every sample changes the value (noisy power)
        # the change times are the sample times and are not copied: the change
        # intervals are then the sampling intervals but the first.
        # (Loops over views of the GPU's samples from literal bounds: with bounds read
        # from ``offsets`` every index gets a negative-index wraparound, which made
        # these loops 1.6-2x slower.)
        t = ts_ns[a:b]
        pw = power_w[a:b]
        s, cnt, lo, hi = _add_moment(pw[0], 0.0, 0.0, np.inf, -np.inf)
        d_lo = np.int64(0)
        d_hi = np.int64(0)
        if n > 1:
            d_lo = t[1] - t[0]
            d_hi = d_lo
        for i in range(1, n):
            s, cnt, lo, hi = _add_moment(pw[i], s, cnt, lo, hi)
            d = t[i] - t[i - 1]
            d_lo = min(d_lo, d)
            d_hi = max(d_hi, d)
        m = 0
        for i in range(1, n):
            m += _is_change(pw[i], pw[i - 1])
        every = m == n - 1
        change = np.empty(m + 1 if m > 1 and not every else 0, dtype=np.int64)
        if change.shape[0]:
            j = 0
            for i in range(1, n):  # compaction: the slot after the last change takes the rest
                change[j] = t[i]
                j += _is_change(pw[i], pw[i - 1])
        # sampling period: median time between consecutive samples; effective update
        # period: median time between value changes
        out_f[g, 0] = np.nan
        out_f[g, 1] = np.nan
        every_change = every and m > 1
        if n > 1:
            whole, but_first = _median_of_diffs(t, d_lo, d_hi, every_change)
            out_f[g, 0] = whole / 1e6
            if every_change:
                out_f[g, 1] = but_first / 1e6
        if m > 1 and not every:
            c_lo, c_hi = _diff_range(change[:m])
            # every_change is False here: a bool variable, not the literal, so the
            # helper is compiled once (a literal argument compiles a second version)
            out_f[g, 1] = _median_of_diffs(change[:m], c_lo, c_hi, every_change)[0] / 1e6
        out_f[g, 2] = s / cnt if cnt else np.nan
        out_f[g, 3] = lo if cnt else np.nan
        out_f[g, 4] = hi if cnt else np.nan


def gpu_sampling(
    ts_ns: NDArray[np.int64], power_w: NDArray[np.floating], offsets: NDArray[np.int64]
) -> dict[str, np.ndarray]:
    """Per GPU: samples, first/last ts (ns), median sampling period and effective
    update period (ms), and mean/min/max power of finite samples (W).

    Parameters
    ----------
    ts_ns : int64 array, shape (n,)
        Timestamps, sorted within each GPU.
    power_w : float array, shape (n,)
        Power; NaN = missing (NaN to NaN is not a change).
    offsets : int array, shape (n_gpus + 1,)
        CSR offsets (start at 0, non-decreasing, end at n).
    """
    func = "gpu_sampling"
    power = float_array(func, "power_w", power_w)
    ts = ts_array(func, "ts_ns", ts_ns, check_sorted=False)
    offs = int_array(func, "offsets", offsets)

    if len(ts) != len(power):
        raise SchemaError(f"{func}: ts_ns and power_w differ in length ({len(ts)} vs {len(power)})")
    if len(offs) < 1 or offs[0] != 0 or offs[-1] != len(ts) or (np.diff(offs) < 0).any():
        raise SchemaError(f"{func}: offsets must start at 0, not decrease and end at {len(ts)}")
    n_gpus = len(offs) - 1
    out_f = np.empty((n_gpus, 5), dtype=np.float64)
    out_i = np.empty((n_gpus, 3), dtype=np.int64)
    _gpu_sampling_kernel(ts, power, offs, out_f, out_i)
    return {
        "samples": out_i[:, 0],
        "start_ns": out_i[:, 1],
        "end_ns": out_i[:, 2],
        "sample_period_ms": out_f[:, 0],
        "effective_period_ms": out_f[:, 1],
        "mean_w": out_f[:, 2],
        "min_w": out_f[:, 3],
        "peak_w": out_f[:, 4],
    }


def _value_counts(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, counts) of an int64 array: counting over the range
    when it is narrow (sampling intervals), sorting otherwise."""
    if len(d) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo, hi = int(d.min()), int(d.max())
    if hi - lo <= 4 * len(d) + 65536:
        c = np.bincount(d - lo)
        nz = np.flatnonzero(c)
        return nz.astype(np.int64) + lo, c[nz].astype(np.int64)
    return np.unique(d, return_counts=True)


def _median_from_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Exact median (NumPy's: mean of the two middle values) of a multiset given as
    (values, counts) parts."""
    vals = np.concatenate([v for v, _ in parts]) if parts else np.zeros(0, dtype=np.int64)
    if len(vals) == 0:
        return np.nan
    counts = np.concatenate([c for _, c in parts])
    uniq, inv = np.unique(vals, return_inverse=True)
    cum = np.cumsum(np.bincount(inv.reshape(-1), weights=counts).astype(np.int64))
    n = int(cum[-1])
    v1 = uniq[np.searchsorted(cum, (n - 1) // 2, side="right")]
    v2 = uniq[np.searchsorted(cum, n // 2, side="right")]
    return (int(v1) + int(v2)) / 2.0


class SamplingAccumulator:
    """Streaming :func:`gpu_sampling`: push each GPU's samples in time-ordered chunks.

    Sampling and change intervals are kept as exact value counts (few distinct
    values for logged counters), so ``finish`` returns what ``gpu_sampling`` gives on
    the whole series, whatever the chunking.

    Parameters
    ----------
    n_gpus : int
        GPUs ``0..n_gpus-1``.
    """

    def __init__(self, n_gpus: int):
        self.n_gpus = int(n_gpus)
        self.samples = np.zeros(n_gpus, dtype=np.int64)
        self.first_ns = np.zeros(n_gpus, dtype=np.int64)
        self.last_ns = np.zeros(n_gpus, dtype=np.int64)
        self.last_power = np.full(n_gpus, np.nan, dtype=np.float32)
        self.last_change_ns = np.full(n_gpus, -1, dtype=np.int64)
        self.has_change = np.zeros(n_gpus, dtype=bool)
        self.moments = np.zeros((n_gpus, 4))  # sum, finite count, min, max
        self.moments[:, 2] = np.inf
        self.moments[:, 3] = -np.inf
        self.periods: list[list] = [[] for _ in range(n_gpus)]
        self.changes: list[list] = [[] for _ in range(n_gpus)]

    def push(self, g: int, ts_ns: np.ndarray, power_w: np.ndarray) -> None:
        """Add the next samples of GPU ``g`` (sorted, after its previous chunk)."""
        n = len(ts_ns)
        if n == 0:
            return
        ts = np.asarray(ts_ns, dtype=np.int64)
        p = np.asarray(power_w, dtype=np.float32)
        started = self.samples[g] > 0
        if started and ts[0] < self.last_ns[g]:
            raise SchemaError(f"SamplingAccumulator.push: GPU {g}'s chunk starts before its previous chunk ends")
        t_all = np.concatenate([[self.last_ns[g]], ts]) if started else ts
        if len(t_all) > 1:
            self.periods[g].append(_value_counts(np.diff(t_all)))
        prev = np.concatenate([[self.last_power[g]], p[:-1]]) if started else p[:-1]
        cur = p if started else p[1:]
        t_cur = ts if started else ts[1:]
        changed = (cur != prev) & ~(np.isnan(cur) & np.isnan(prev))
        ct = t_cur[changed]
        if len(ct):
            c_all = np.concatenate([[self.last_change_ns[g]], ct]) if self.has_change[g] else ct
            if len(c_all) > 1:
                self.changes[g].append(_value_counts(np.diff(c_all)))
            self.last_change_ns[g] = ct[-1]
            self.has_change[g] = True
        _moments_kernel(p, self.moments[g])
        if not started:
            self.first_ns[g] = ts[0]
        self.samples[g] += n
        self.last_ns[g] = ts[-1]
        self.last_power[g] = p[-1]

    def finish(self) -> dict[str, np.ndarray]:
        """The :func:`gpu_sampling` dictionary."""
        has = self.samples > 0
        total, finite, lo, hi = self.moments.T
        ok = finite > 0
        mean = np.where(ok, total / np.maximum(finite, 1), np.nan)
        return {
            "samples": self.samples.copy(),
            "start_ns": np.where(has, self.first_ns, 0),
            "end_ns": np.where(has, self.last_ns, 0),
            "sample_period_ms": np.array([_median_from_counts(x) / 1e6 for x in self.periods]),
            "effective_period_ms": np.array([_median_from_counts(x) / 1e6 for x in self.changes]),
            "mean_w": mean,
            "min_w": np.where(ok, lo, np.nan),
            "peak_w": np.where(ok, hi, np.nan),
        }


# -- exact quantiles of a long series ----------------------------------------------------
#: values in the systematic sample that brackets the order statistics
QUANTILE_SAMPLE = 4096
#: below this length :func:`quantiles` is plain ``np.quantile``
_QUANTILE_MIN_N = 16 * QUANTILE_SAMPLE


@kernel
def _band_counts(x, lo, hi):
    # (values < lo, values > hi, NaN values): branch-free, so it vectorizes
    below = 0
    above = 0
    nan = 0
    for i in range(x.shape[0]):
        v = x[i]
        below += v < lo
        above += v > hi
        nan += v != v
    return below, above, nan


@kernel
def _band_gather(x, lo, hi, out):
    # the values in [lo, hi] in order into out (its last slot is scratch: every value
    # is stored, the position moves on only past a kept one, so no branch mispredicts)
    k = 0
    for i in range(x.shape[0]):
        v = x[i]
        out[k] = v
        k += (v >= lo) & (v <= hi)
    return k


@kernel
def _band_order_stats(x, r_lo, r_hi, out):
    # out[2b], out[2b+1]: the values of ranks r_lo[b] and r_hi[b] (0-based, of x
    # sorted).  Floyd-Rivest's idea: a systematic sample of x, sorted, brackets each
    # band's ranks with values [lo, hi] (a margin of 4 binomial standard deviations);
    # one counting pass checks the bracket holds them, one pass gathers the values
    # inside it, and a partition of those few finds them.  False when a bracket
    # missed or x has NaN: the caller falls back to np.quantile.
    n = x.shape[0]
    m = QUANTILE_SAMPLE
    stride = n // m
    s = np.empty(m)
    for i in range(m):
        s[i] = x[i * stride + stride // 2]
    s.sort()
    for b in range(r_lo.shape[0]):
        p0 = r_lo[b] / (n - 1)
        p1 = r_hi[b] / (n - 1)
        a = int(np.floor(p0 * (m - 1) - 4.0 * np.sqrt(m * p0 * (1.0 - p0)) - 4.0))
        c = int(np.ceil(p1 * (m - 1) + 4.0 * np.sqrt(m * p1 * (1.0 - p1)) + 4.0))
        lo = s[a] if a >= 1 else -np.inf
        hi = s[c] if c <= m - 2 else np.inf
        below, above, nan = _band_counts(x, lo, hi)
        inside = n - below - above - nan
        if nan > 0 or below > r_lo[b] or below + inside <= r_hi[b]:
            return False
        band = np.empty(inside + 1)
        _band_gather(x, lo, hi, band)
        band = np.partition(band[:inside], np.array([r_lo[b] - below, r_hi[b] - below]))
        out[2 * b] = band[r_lo[b] - below]
        out[2 * b + 1] = band[r_hi[b] - below]
    return True


def quantiles(x: NDArray[np.floating], qs) -> np.ndarray:
    """``np.quantile(x, qs)`` (linear interpolation), bitwise, at a few passes over ``x``
    instead of a copy and a partition: each quantile's two order statistics are found
    by :func:`_band_order_stats` and interpolated by NumPy itself.

    Parameters
    ----------
    x : float array, shape (n,)
        The values (not modified).  With NaN the result is NumPy's (NaN).
    qs : sequence of float in [0, 1]
        The quantiles.

    Returns
    -------
    float64 array, shape (len(qs),)
    """
    func = "quantiles"
    v = float64_array(func, "x", x)
    q = np.asarray(qs, dtype=np.float64).reshape(-1)
    n = len(v)
    virtual = (n - 1) * q
    # short series, and q = 1 (NumPy takes the last value its own way), stay NumPy's;
    # so do q outside [0, 1] (its error)
    if n < _QUANTILE_MIN_N or not ((q >= 0) & (virtual < n - 1)).all():
        return np.quantile(v, q)
    prev = np.floor(virtual).astype(np.int64)
    nxt = np.minimum(prev + 1, n - 1)
    order = np.argsort(prev, kind="stable")
    pairs = np.empty(2 * len(q))
    if not _band_order_stats(v, prev[order], nxt[order], pairs):
        return np.quantile(v, q)
    out = np.empty(len(q))
    for i, k in enumerate(order):
        # NumPy's own interpolation between the two (a two-value array: index 0 and 1,
        # at the same fraction as in the whole array)
        out[k] = np.quantile(pairs[2 * i: 2 * i + 2], virtual[k] - prev[k])
    return out
