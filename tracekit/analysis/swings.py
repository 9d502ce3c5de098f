"""Swing metrics, events and grid-rule checks on aggregate power series.

Per aggregate: mean/min/p50/p99/max; peak over provisioned power (sum of TDP);
swing = max - min within sliding windows; ramp rates; Welch spectrum; coincidence
factor (peak of the sum / sum of the GPUs' peaks); dips and spikes.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tracekit.analysis.rules import Rule, Violation
from tracekit.analysis.spectrum import fill_missing, welch_spectrum
from tracekit.kernels.stats import quantiles
from tracekit.kernels.windows import ramp_rates, window_swing


def window_label(window_s: float) -> str:
    return f"{window_s * 1e3:g}ms" if window_s < 1 else f"{window_s:g}s"


#: Share of a grid cell's GPU-time that must be covered for the cell to count as full.
FULL_COVERAGE = 0.999


def full_cells(power_w: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Cells an aggregate's figures use: finite, and fully covered when at least half
    of the finite cells (and two) are.  A cell that only some of the group's GPUs
    cover (the trace's first and last cells when GPUs start and stop logging at
    different times, a host's logger gap) holds the sum of those present: it would
    read as a dip or a swing that the cluster never drew."""
    keep = np.isfinite(power_w)
    full = coverage >= FULL_COVERAGE
    if full.sum() >= max(2, 0.5 * keep.sum()):
        keep &= full
    return keep


def masked_partial_cells(power_w: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """``power_w`` (a float64 copy) with NaN outside :func:`full_cells`."""
    return np.where(full_cells(power_w, coverage), power_w, np.nan)


def _cells(window_s: float, step_s: float) -> int:
    return max(1, int(round(window_s / step_s)))


def metrics(power_w: np.ndarray, coverage: np.ndarray, step_s: float, *, windows_s, ramp_window_s: float,
            provisioned_w: float | None, sum_of_peaks_w: float | None, with_spectrum: bool) -> dict:
    """The per-aggregate object of the JSON contract (``levels[level][group]``)."""
    x = np.asarray(power_w, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return {"peak_w": None, "mean_w": None, "min_w": None, "p50_w": None, "p99_w": None, "swing": {},
                "coverage": 0.0}
    v = x if ok.all() else x[ok]
    peak, mean, low = float(v.max()), float(v.mean()), float(v.min())
    q50, q99 = quantiles(v, [0.5, 0.99])
    del v
    out = {
        "peak_w": round(peak, 3),
        "mean_w": round(mean, 3),
        "min_w": round(low, 3),
        "p50_w": round(float(q50), 3),
        "p99_w": round(float(q99), 3),
        "provisioned_w": provisioned_w,
        "peak_over_tdp": round(peak / provisioned_w, 4) if provisioned_w else None,
        "coverage": round(float(np.mean(coverage)), 4),
        "swing": {},
    }
    n = len(x)
    for w in windows_s:
        cells = _cells(w, step_s)
        if cells > n or cells < 2:  # a window must span at least two grid cells
            continue
        s = window_swing(x, cells)
        finite = np.isfinite(s)
        if not finite.all():
            s = s[finite]
        del finite
        if len(s) == 0:
            continue
        mx = float(s.max())
        out["swing"][window_label(w)] = {
            "max_w": round(mx, 3),
            "p99_w": round(float(quantiles(s, [0.99])[0]), 3),
            "max_pct_of_peak": round(100 * mx / peak, 3) if peak > 0 else None,
        }
    rc = _cells(ramp_window_s, step_s)
    if rc < n:
        ramp = ramp_rates(x, rc, cell_s=step_s)
        out["ramp_up_w_per_s"] = _r(ramp.up_per_s)
        out["ramp_down_w_per_s"] = _r(ramp.down_per_s)
    else:
        out["ramp_up_w_per_s"] = out["ramp_down_w_per_s"] = None
    out["ramp_window_s"] = ramp_window_s
    out["coincidence_factor"] = round(peak / sum_of_peaks_w, 4) if sum_of_peaks_w else None
    if with_spectrum:
        spec = welch_spectrum(x, step_s)
        out["dominant_hz"] = _r(spec.dominant_hz, 4)
        out["band_share"] = _r(spec.band_share, 4)
        out["largest_component_share"] = _r(spec.largest_component_share, 4)
        out["_spectrum"] = spec
    else:
        out["dominant_hz"] = out["band_share"] = out["largest_component_share"] = None
    return out


def _r(v, digits: int = 3):
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def moving_average(x: np.ndarray, cells: int) -> np.ndarray:
    """Centred moving average over ``cells`` cells (NaN interpolated first)."""
    y = fill_missing(x)
    if cells <= 1 or len(y) < cells:
        return y
    c = np.empty(len(y) + 1)  # running sums from 0, without a concatenated copy
    c[0] = 0.0
    np.cumsum(y, out=c[1:])
    del y
    ma = c[cells:] - c[:-cells]
    del c
    ma /= cells
    lead = (cells - 1) // 2
    out = np.full(len(ma) + cells - 1, np.nan)
    out[lead: lead + len(ma)] = ma
    return out


def events(power_w: np.ndarray, grid, *, smooth_s: float, threshold: float, level: str, group: str) -> pl.DataFrame:
    """Dips and spikes of an aggregate.

    The series is smoothed over ``smooth_s`` (one iteration, so the normal
    compute/communication swing averages out); the baseline is the median of the
    smoothed series.  A dip (spike) is a run where the smoothed power is below
    (above) the baseline by more than ``threshold`` x the baseline, lasting at least
    ``smooth_s``.  ``depth_w`` is the largest deviation from the baseline in the run.
    """
    cells = _cells(smooth_s, grid.step_s)
    sm = moving_average(np.asarray(power_w, dtype=np.float64), cells)
    ok = np.isfinite(sm)
    schema = {"kind": pl.String, "level": pl.String, "group": pl.String, "start": pl.Datetime("ns", "UTC"),
              "end": pl.Datetime("ns", "UTC"), "duration_s": pl.Float64, "depth_w": pl.Float64,
              "baseline_w": pl.Float64}
    if not ok.any():
        return pl.DataFrame(schema=schema)
    base = float(np.median(sm[ok]))
    rows = []
    for kind in ("dip", "spike"):
        dev = base - sm if kind == "dip" else sm - base
        hit = np.where(ok, dev > threshold * abs(base), False)
        edges = np.diff(np.concatenate([[0], hit.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for a, b in zip(starts, ends):
            if b - a < cells:
                continue
            rows.append({
                "kind": kind, "level": level, "group": group,
                "start": grid.t0_ns + a * grid.step_ns, "end": grid.t0_ns + b * grid.step_ns,
                "duration_s": (b - a) * grid.step_s, "depth_w": float(np.nanmax(dev[a:b])), "baseline_w": base,
            })
    if not rows:
        return pl.DataFrame(schema=schema)
    df = pl.DataFrame(rows).with_columns(pl.col("start").cast(pl.Datetime("ns", "UTC")),
                                         pl.col("end").cast(pl.Datetime("ns", "UTC")))
    return df.select(list(schema)).sort("start")


def check_rule(rule: Rule, series: dict, grid) -> list[Violation]:
    """Violations of one grid rule on every group of its level (times in UTC ISO)."""
    if rule.level not in series:
        return []
    s = series[rule.level]
    return [v for gi, group in enumerate(s.groups) for v in check_group_rule(rule, group, s.power_w[gi], grid)]


def check_group_rule(rule: Rule, group: str, x: np.ndarray, grid) -> list[Violation]:
    """Violations of one grid rule on one group's series ``x`` (on ``grid``)."""
    out: list[Violation] = []

    def iso(cell: int) -> str:
        return np.datetime64(grid.t0_ns + int(cell) * grid.step_ns, "ns").astype(str) + "Z"

    if rule.kind in ("window_change", "ramp"):
        cells = _cells(rule.window_s, grid.step_s)
        if cells >= len(x):
            return out
        if rule.kind == "window_change":
            vals = window_swing(x, cells)
            limit = rule.limit_w
        else:
            f = fill_missing(x)
            vals = np.abs(f[cells:] - f[:-cells]) / (cells * grid.step_s)
            limit = rule.limit_w_per_s
        hit = np.where(np.isfinite(vals), vals > limit, False)
        edges = np.diff(np.concatenate([[0], hit.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            out.append(Violation(rule.name, rule.level, group, iso(a), iso(b - 1 + cells),
                                 round(float(np.nanmax(vals[a:b])), 3), limit))
    else:
        spec = welch_spectrum(x, grid.step_s, band_hz=(rule.low_hz, rule.high_hz))
        if spec.largest_component_share is not None and spec.largest_component_share > rule.max_component_share:
            in_band = (spec.freq_hz >= rule.low_hz) & (spec.freq_hz <= rule.high_hz)
            f_peak = float(spec.freq_hz[in_band][np.argmax(spec.psd_w2_per_hz[in_band])])
            out.append(Violation(rule.name, rule.level, group, None, None,
                                 round(spec.largest_component_share, 4), rule.max_component_share,
                                 {"frequency_hz": round(f_peak, 4)}))
    return out
