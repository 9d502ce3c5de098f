"""Slow, obvious twins of the Numba kernels: plain Python loops over lists.

Each function follows the written rule of its kernel as literally as possible,
with no streaming state, deques or prefix sums, so that a disagreement points
at the kernel.  Only for tiny inputs.
"""

from __future__ import annotations

import itertools
import math


def _isnan(v: float) -> bool:
    return v != v


# --------------------------------------------------------------------------- levels


def naive_power_histogram(power_w, *, lo_w: float, bin_w: float, n_bins: int) -> list[int]:
    """Counts per bin; values outside the range go to the edge bins; non-finite skipped."""
    counts = [0] * n_bins
    for p in power_w:
        p = float(p)
        if not math.isfinite(p):
            continue
        q = (p - lo_w) / bin_w  # may overflow to +-inf for a finite p: an edge bin
        b = n_bins - 1 if q >= n_bins else 0 if q < 0 else math.floor(q)
        counts[b] += 1
    return counts


def _sse(values, weights) -> float:
    total = sum(weights)
    mean = sum(w * x for x, w in zip(values, weights)) / total
    return sum(w * (x - mean) ** 2 for x, w in zip(values, weights))


def naive_kmeans_sse(values, weights, k: int) -> float:
    """Smallest weighted SSE over every split of the (sorted) values into k contiguous groups."""
    pairs = [(float(x), float(w)) for x, w in zip(values, weights) if w > 0]
    n = len(pairs)
    best = math.inf
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = (0, *cuts, n)
        total = 0.0
        for a, b in zip(bounds[:-1], bounds[1:]):
            xs = [x for x, _ in pairs[a:b]]
            ws = [w for _, w in pairs[a:b]]
            total += _sse(xs, ws)
        best = min(best, total)
    return best


def naive_kmeans_dp_sse(values, weights, k: int) -> float:
    """Smallest SSE by the textbook O(k n^2) dynamic programme (for n too big to enumerate)."""
    pairs = [(float(x), float(w)) for x, w in zip(values, weights) if w > 0]
    n = len(pairs)
    cost = [[0.0] * (n + 1) for _ in range(n + 1)]
    for a in range(n):
        sw = swx = swxx = 0.0
        for b in range(a + 1, n + 1):
            x, w = pairs[b - 1]
            sw += w
            swx += w * x
            swxx += w * x * x
            cost[a][b] = max(swxx - swx * swx / sw, 0.0)
    best = [cost[0][j] for j in range(n + 1)]
    for _ in range(2, k + 1):
        best = [
            min((best[i] + cost[i][j] for i in range(1, j)), default=math.inf) for j in range(n + 1)
        ]
    return best[n]


def nearest_center_sse(values, weights, centers) -> float:
    """SSE when every value goes to its nearest centre."""
    total = 0.0
    for x, w in zip(values, weights):
        total += float(w) * min((float(x) - c) ** 2 for c in centers)
    return total


# --------------------------------------------------------------------------- phases


def naive_label_phases(ts_ns, power_w, levels_w, *, hysteresis: float, min_dwell_ns: int) -> list[int]:
    """Hysteresis labels with minimum dwell, from the rules in tracekit.kernels.phases."""
    ts = [int(t) for t in ts_ns]
    power = [float(p) for p in power_w]
    levels = [float(c) for c in levels_w]
    k = len(levels)
    lower, upper = [], []
    for j in range(k - 1):
        mid = (levels[j] + levels[j + 1]) / 2
        half = hysteresis * (levels[j + 1] - levels[j]) / 2
        lower.append(mid - half)
        upper.append(mid + half)

    def region(p):
        for level in range(k):
            above = level == 0 or p > upper[level - 1]
            below = level == k - 1 or p < lower[level]
            if above and below:
                return level
        return None  # inside a hysteresis band

    n = len(ts)
    labels = [-1] * n
    cur = -1
    run_level = None
    run_start = None
    for i in range(n):
        if _isnan(power[i]):
            labels[i] = cur
            continue
        z = region(power[i])
        if run_level is not None and z != run_level:
            run_level = None
        if run_level is None and z is not None and z != cur:
            run_level, run_start = z, i
        if run_level is not None:
            dwell = sum(ts[j + 1] - ts[j] for j in range(run_start, i) if not _isnan(power[j]))
            if dwell >= min_dwell_ns:
                first = 0 if cur == -1 else run_start
                for q in range(first, i + 1):
                    labels[q] = run_level
                cur = run_level
                run_level = None
                continue
        labels[i] = cur
    return labels


def naive_segments(ts_ns, power_w, labels, *, last_hold_ns: int) -> list[tuple]:
    """(start, end, label, mean_w, peak_w, energy_j, covered_s) per run of equal labels."""
    ts = [int(t) for t in ts_ns]
    power = [float(p) for p in power_w]
    labels = [int(v) for v in labels]
    n = len(ts)
    out = []
    start = 0
    for i in range(1, n + 1):
        if i < n and labels[i] == labels[start]:
            continue
        energy = 0.0
        covered_ns = 0
        peak = math.nan
        for j in range(start, i):
            hold = ts[j + 1] - ts[j] if j + 1 < n else last_hold_ns
            if _isnan(power[j]):
                continue
            energy += power[j] * (hold * 1e-9)
            covered_ns += hold
            if _isnan(peak) or power[j] > peak:
                peak = power[j]
        covered_s = covered_ns * 1e-9
        mean = energy / covered_s if covered_ns > 0 else math.nan
        out.append((start, i, labels[start], mean, peak, energy, covered_s))
        start = i
    return out


# --------------------------------------------------------------------------- grid


def naive_hold_intervals(ts_ns, power_w, *, max_gap_ns: int, hold_ns: int) -> list[tuple]:
    """(start_ns, end_ns, power_w) of each sample's zero-order hold."""
    ts = [int(t) for t in ts_ns]
    n = len(ts)
    out = []
    for i in range(n):
        if i + 1 < n:
            gap = ts[i + 1] - ts[i]
            end = ts[i + 1] if gap <= max_gap_ns else min(ts[i] + hold_ns, ts[i + 1])
        else:
            end = ts[i] + hold_ns
        out.append((ts[i], end, float(power_w[i])))
    return out


def naive_grid(ts_ns, power_w, *, t0_ns, step_ns, n_cells, max_gap_ns, hold_ns):
    """Per-cell energy (J) and covered time (s): every interval against every cell."""
    energy = [0.0] * n_cells
    covered = [0.0] * n_cells
    for a, b, p in naive_hold_intervals(ts_ns, power_w, max_gap_ns=max_gap_ns, hold_ns=hold_ns):
        if _isnan(p):
            continue
        for c in range(n_cells):
            cs = t0_ns + c * step_ns
            ce = cs + step_ns
            overlap = min(b, ce) - max(a, cs)
            if overlap > 0:
                energy[c] += p * overlap * 1e-9
                covered[c] += overlap * 1e-9
    return energy, covered


def naive_zoh_energy(ts_ns, power_w, *, lo_ns, hi_ns, max_gap_ns, hold_ns) -> float:
    """Integral of the ZOH signal over [lo_ns, hi_ns), J."""
    total = 0.0
    for a, b, p in naive_hold_intervals(ts_ns, power_w, max_gap_ns=max_gap_ns, hold_ns=hold_ns):
        overlap = min(b, hi_ns) - max(a, lo_ns)
        if overlap > 0 and not _isnan(p):
            total += p * overlap * 1e-9
    return total


# --------------------------------------------------------------------------- windows


def naive_window_swing(x, w: int) -> list[float]:
    out = []
    for i in range(len(x) - w + 1):
        vals = [float(v) for v in x[i : i + w] if not _isnan(float(v))]
        out.append(max(vals) - min(vals) if vals else math.nan)
    return out


def naive_ramp(x, w: int) -> tuple[float, int, float, int]:
    """(largest rise, its i, largest fall, its i) of x[i+w] - x[i], raw units."""
    up, up_idx, down, down_idx = math.nan, -1, math.nan, -1
    for i in range(len(x) - w):
        a, b = float(x[i]), float(x[i + w])
        if _isnan(a) or _isnan(b):
            continue
        if up_idx < 0 or b - a > up:
            up, up_idx = b - a, i
        if down_idx < 0 or a - b > down:
            down, down_idx = a - b, i
    return up, up_idx, down, down_idx


def naive_rolling_median(x, w: int) -> list[float]:
    out = []
    for i in range(len(x)):
        vals = sorted(float(v) for v in x[max(0, i - w + 1) : i + 1] if not _isnan(float(v)))
        m = len(vals)
        if m == 0:
            out.append(math.nan)
        elif m % 2:
            out.append(vals[m // 2])
        else:
            out.append((vals[m // 2 - 1] + vals[m // 2]) / 2)
    return out


def naive_events(x, baseline, *, threshold: float, min_cells: int, kind: str) -> list[tuple]:
    """(start, end, depth, extreme_idx) of runs with deviation > threshold."""
    sign = -1.0 if kind == "dip" else 1.0
    inside = []
    for v, b in zip(x, baseline):
        dev = sign * (float(v) - float(b))
        inside.append((dev > threshold, dev))
    out = []
    i = 0
    n = len(inside)
    while i < n:
        if not inside[i][0]:
            i += 1
            continue
        j = i
        while j < n and inside[j][0]:
            j += 1
        if j - i >= min_cells:
            devs = [inside[q][1] for q in range(i, j)]
            best = max(devs)
            out.append((i, j, best, i + devs.index(best)))
        i = j
    return out


def naive_iteration_table(rows, period_s: float, compute_phase: str = "compute") -> list[tuple]:
    """(iteration, gpu, compute_start, compute_end, compute_s) from (gpu, start_ns,
    end_ns, phase) rows, grouped in a dict, sorted by iteration then GPU name."""
    period_ns = period_s * 1e9
    comp = [r for r in rows if r[3] == compute_phase and (r[2] - r[1]) > 0.2 * period_ns]
    if not comp:
        return []
    t0 = min(r[1] for r in comp)
    groups: dict = {}
    for gpu, s, e, _ in comp:
        key = (int(round((s - t0) / period_ns)), gpu)  # half to even, as Polars' round
        lo, hi, dur = groups.get(key, (s, e, 0))
        groups[key] = (min(lo, s), max(hi, e), dur + (e - s))
    return [(k, g, lo, hi, dur / 1e9) for (k, g), (lo, hi, dur) in sorted(groups.items())]
