"""Per-GPU sampling statistics over CSR-packed samples (GPU ``g`` owns
``[offsets[g], offsets[g+1])``).

* sampling period: median time between consecutive samples;
* effective update period: median time between *changes* of the power value
  (counters logged faster than they update repeat their value; DESIGN.md);
* power moments: time-agnostic mean, min and max of the finite samples.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tracekit.kernels._jit import kernel
from tracekit.errors import SchemaError
from tracekit.kernels._validate import float_array, int_array, ts_array


@kernel
def _median_of_diffs(t):
    # Median of t[i+1] - t[i] (t sorted, len >= 2).  Sampling intervals cluster
    # tightly, so a counting pass over the range of the differences finds the exact
    # median in O(n) without a copy; a wide range falls back to np.median.
    n = t.shape[0] - 1
    lo = t[1] - t[0]
    hi = lo
    for i in range(1, n):
        d = t[i + 1] - t[i]
        if d < lo:
            lo = d
        if d > hi:
            hi = d
    span = hi - lo + 1
    if span <= 4 * n + 65536:
        counts = np.zeros(span, dtype=np.int64)
        for i in range(n):
            counts[t[i + 1] - t[i] - lo] += 1
        k1 = (n - 1) // 2
        k2 = n // 2
        seen = 0
        v1 = -1
        for v in range(span):
            seen += counts[v]
            if v1 < 0 and seen > k1:
                v1 = v
            if seen > k2:
                return lo + (v1 + v) / 2.0
    dt = np.empty(n, dtype=np.int64)
    for i in range(n):
        dt[i] = t[i + 1] - t[i]
    return np.median(dt)


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
        # one pass: the times where the power value changes, and the moments
        # of finite power
        change = np.empty(n, dtype=np.int64)
        m = 0
        last = power_w[a]
        s = 0.0
        cnt = 0
        lo = np.inf
        hi = -np.inf
        for i in range(a, b):
            p = power_w[i]
            if i > a and p != last and not (np.isnan(p) and np.isnan(last)):
                change[m] = ts_ns[i]
                m += 1
                last = p
            if np.isfinite(p):
                s += p
                cnt += 1
                if p < lo:
                    lo = p
                if p > hi:
                    hi = p
        # sampling period: median time between consecutive samples
        if n > 1:
            out_f[g, 0] = _median_of_diffs(ts_ns[a:b]) / 1e6
        else:
            out_f[g, 0] = np.nan
        # effective update period: median time between value changes
        if m > 1:
            out_f[g, 1] = _median_of_diffs(change[:m]) / 1e6
        else:
            out_f[g, 1] = np.nan
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
