"""Phase detection per GPU: histogram levels, hysteresis labels, segments.

1. Levels: each GPU's power histogram (1 W bins) clustered by exact 1-D k-means
   (k = 2 for training: communication / compute; k = 3 for inference: idle / token
   / prompt).
2. Labels: hysteresis around the level midpoints (20 % of the gap) with a minimum
   dwell scaled to the effective update period, so a phase shorter than what the
   data resolves is not invented.
3. Segments: maximal runs of one label with start, end, mean, peak and energy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import polars as pl

from tracekit.kernels.levels import histogram_bin_centers, kmeans_1d, label_histogram, power_histogram
from tracekit.kernels.phases import label_phases, phase_segments
from tracekit.traceset import GpuArrays

PHASE_NAMES = {
    "training": ("communication", "compute"),
    "inference": ("idle", "token", "prompt"),
}
HYSTERESIS = 0.2
BIN_W = 1.0


def _quantile_from_hist(counts: np.ndarray, q: float, bin_w: float) -> float | None:
    total = counts.sum()
    if total <= 0:
        return None
    idx = int(np.searchsorted(np.cumsum(counts), q * total))
    return (min(idx, len(counts) - 1) + 0.5) * bin_w


@dataclass
class Detection:
    """Per-sample labels (aligned with the GPU arrays), segments, per-GPU levels,
    and per-phase histograms (1 W bins) for percentiles."""

    workload: str
    names: tuple[str, ...]
    labels: np.ndarray
    segments: pl.DataFrame
    gpu_levels: pl.DataFrame
    gpu_p99: pl.DataFrame
    phase_hist: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """``phases`` of the JSON contract: per phase fraction (of covered time),
        time-weighted mean_w, p99_w (to 1 W), count (segments) and mean_duration_ms."""
        seg = self.segments.with_columns(((pl.col("end") - pl.col("start")).dt.total_nanoseconds() / 1e6)
                                         .alias("_ms"))
        total = float(seg.get_column("covered_s").sum()) if seg.height else 0.0
        out = {}
        for code, name in enumerate(self.names):
            s = seg.filter(pl.col("phase") == name)
            covered = float(s.get_column("covered_s").sum()) if s.height else 0.0
            energy = float(s.get_column("energy_j").sum()) if s.height else 0.0
            p99 = _quantile_from_hist(self.phase_hist[code], 0.99, BIN_W)
            out[name] = {
                "fraction": round(covered / total, 6) if total > 0 else None,
                "mean_w": round(energy / covered, 3) if covered > 0 else None,
                "p99_w": round(p99, 1) if p99 is not None else None,
                "count": int(s.height),
                "mean_duration_ms": round(float(s.get_column("_ms").mean()), 3) if s.height else None,
            }
        return out


def _histogram(power: np.ndarray, hi_w: float) -> tuple[np.ndarray, np.ndarray]:
    n_bins = int(np.ceil(hi_w / BIN_W)) + 1
    counts = power_histogram(power, bin_w=BIN_W, n_bins=n_bins)
    return counts, histogram_bin_centers(bin_w=BIN_W, n_bins=n_bins)


def pooled_histogram(power: np.ndarray) -> np.ndarray:
    """Counts of ``power`` in 1 W bins from 0 up to 1 % above its finite maximum
    (histograms of parts add up after zero-padding to the longest)."""
    finite_max = np.nanmax(power) if len(power) else np.nan
    if not np.isfinite(finite_max):
        return np.zeros(0, dtype=np.int64)
    return _histogram(power, float(finite_max) * 1.01 + BIN_W)[0]


def add_histograms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of two 1 W histograms of different lengths."""
    if len(a) < len(b):
        a, b = b, a
    out = a.copy()
    out[: len(b)] += b
    return out


def choose_workload(arrays: GpuArrays) -> str:
    """``training`` or ``inference`` from the pooled power histogram of all GPUs
    (see :func:`workload_from_histogram`)."""
    return workload_from_histogram(pooled_histogram(arrays.power_w))


def workload_from_histogram(counts: np.ndarray) -> str:
    """``training`` or ``inference`` from a pooled 1 W power histogram.

    Three-level fit on all GPUs' samples: inference shows a populated middle (token)
    level distinct from both idle and prompt, and its highest level holds a small
    share of the time; training's power sits at two levels (the high one holding
    most of the time) with the rest in transitions.
    """
    centers = histogram_bin_centers(bin_w=BIN_W, n_bins=len(counts))
    keep = counts > 0
    if keep.sum() < 3:
        return "training"
    lv = kmeans_1d(centers[keep], counts[keep].astype(np.float64), 3)
    share = lv.weights / lv.weights.sum()
    c = lv.centers_w
    span = c[2] - c[0]
    middle_distinct = span > 0 and (c[1] - c[0]) > 0.2 * span and (c[2] - c[1]) > 0.2 * span
    if middle_distinct and share[1] > 0.1 and share[2] < share[1]:
        return "inference"
    return "training"


#: Sampling periods at or above this are coarse: every sample is a reading of tens
#: of ms of work, and one sample may be a whole phase.
COARSE_PERIOD_S = 0.05


def default_min_dwell_s(sample_period_s: float, effective_period_s: float) -> float:
    """Minimum dwell before a phase change is accepted.

    Fine sampling (< 50 ms): two samples and at least one effective update period,
    so one noisy sample cannot switch phase and values repeated by a slowly updating
    counter count once.  Coarse sampling (>= 50 ms): no dwell (plain hysteresis), so
    a single reading can be a phase (a 250 ms sample of a prompt burst is real); the
    analysis then warns that such phases are at the resolution limit.
    """
    if sample_period_s >= COARSE_PERIOD_S:
        return 0.0
    return max(2 * sample_period_s, effective_period_s)


class DetectParams(NamedTuple):
    """What every GPU's detection needs from the whole trace (decided once)."""

    workload: str
    names: tuple[str, ...]
    hi_w: float
    n_bins: int
    min_dwell_ns: int
    last_hold_ns: int

    @property
    def k(self) -> int:
        return len(self.names)


def detect_params(workload: str, *, max_power_w: float, effective_period_s: float, sample_period_s: float,
                  min_dwell_s: float | None = None) -> DetectParams:
    """:class:`DetectParams` for a resolved ``workload`` (training or inference)."""
    if min_dwell_s is None:
        min_dwell_s = default_min_dwell_s(sample_period_s, effective_period_s)
    hi_w = (max_power_w if np.isfinite(max_power_w) else 0.0) * 1.01 + BIN_W
    return DetectParams(workload, PHASE_NAMES[workload], hi_w, int(np.ceil(hi_w / BIN_W)) + 1,
                        int(min_dwell_s * 1e9), int(sample_period_s * 1e9))


class GpuPhases(NamedTuple):
    """One GPU's detection: labels, segment columns, level row, p99, per-phase histogram."""

    gpu: int
    labels: np.ndarray
    segments: dict
    levels: dict
    p99_w: float | None
    hist: np.ndarray


def detect_gpu(ts: np.ndarray, power: np.ndarray, params: DetectParams, gpu_index: int) -> GpuPhases | None:
    """Levels, labels and segments of one GPU (None when it has no finite sample)."""
    if len(ts) == 0:
        return None
    k = params.k
    counts, centers = _histogram(power, params.hi_w)
    keep = counts > 0
    if not keep.any():
        return None
    kk = min(k, int(keep.sum()))
    lv = kmeans_1d(centers[keep], counts[keep].astype(np.float64), kk)
    labels = label_phases(ts, power, lv.centers_w, hysteresis=HYSTERESIS, min_dwell_ns=params.min_dwell_ns)
    if kk < k:  # fewer distinct values than levels: map onto the top levels
        labels = np.where(labels >= 0, labels + (k - kk), labels).astype(np.int8)
    hist = label_histogram(power, labels, np.zeros((k, params.n_bins), dtype=np.int64), bin_w=BIN_W)
    seg = phase_segments(ts, power, labels, last_hold_ns=params.last_hold_ns)
    end_idx = np.minimum(seg.end_idx, len(ts) - 1)
    end_ts = np.where(seg.end_idx < len(ts), ts[end_idx], ts[-1] + params.last_hold_ns)
    frame = {
        "gpu": np.full(len(seg.label), gpu_index, dtype=np.int64),
        "start": ts[seg.start_idx],
        "end": end_ts,
        "label": seg.label.astype(np.int8),
        "mean_w": seg.mean_w,
        "peak_w": seg.peak_w,
        "energy_j": seg.energy_j,
        "covered_s": seg.covered_s,
    }
    row = {}
    for j, name in enumerate(params.names):
        jj = j - (k - kk)
        row[f"level_{name}_w"] = float(lv.centers_w[jj]) if jj >= 0 else None
    return GpuPhases(gpu_index, labels, frame, row, _quantile_from_hist(counts, 0.99, BIN_W), hist)


def detect(arrays: GpuArrays, *, workload: str, effective_period_s: float, sample_period_s: float,
           min_dwell_s: float | None = None) -> Detection:
    """Levels, labels and segments for every GPU (``min_dwell_s`` defaults to
    :func:`default_min_dwell_s`)."""
    if workload == "auto":
        workload = choose_workload(arrays)
    finite_max = float(np.nanmax(arrays.power_w)) if len(arrays.power_w) else 0.0
    params = detect_params(workload, max_power_w=finite_max, effective_period_s=effective_period_s,
                           sample_period_s=sample_period_s, min_dwell_s=min_dwell_s)
    labels = np.full(len(arrays.ts_ns), -1, dtype=np.int8)

    def one_gpu(i: int):
        ts, power = arrays.gpu(i)
        res = detect_gpu(ts, power, params, i)
        if res is not None:
            labels[arrays.offsets[i]: arrays.offsets[i + 1]] = res.labels
        return res

    from tracekit.engine.local import map_ranges

    batches = map_ranges(lambda lo, hi: [one_gpu(i) for i in range(lo, hi)], np.diff(arrays.offsets))
    results = [r for batch in batches for r in batch]
    det = assemble(params, arrays.gpus, results, effective_period_s)
    det.labels = labels
    return det


def assemble(params: DetectParams, gpus: list[str], results: list[GpuPhases | None],
             effective_period_s: float) -> Detection:
    """One :class:`Detection` from per-GPU results (in GPU order; ``gpus`` names the
    indices used in their segment frames).  ``labels`` is left empty."""
    names, k = params.names, params.k
    phase_hist = np.zeros((k, params.n_bins), dtype=np.int64)
    seg_frames, level_rows, p99_rows = [], [], []
    for res in results:
        if res is None:
            continue
        gpu = gpus[res.gpu]
        seg_frames.append(res.segments)
        level_rows.append({"gpu": gpu, **res.levels})
        p99_rows.append((gpu, res.p99_w))
        h = res.hist
        phase_hist[:, : h.shape[1]] += h[:, : params.n_bins]
    phase_of = pl.DataFrame({"label": np.arange(k, dtype=np.int8), "phase": list(names)})
    seg_schema = {"gpu": pl.String, "start": pl.Datetime("ns", "UTC"), "end": pl.Datetime("ns", "UTC"),
                  "phase": pl.String, "mean_w": pl.Float64, "peak_w": pl.Float64, "energy_j": pl.Float64,
                  "covered_s": pl.Float64}
    if seg_frames:
        columns = {key: np.concatenate([f[key] for f in seg_frames]) for key in seg_frames[0]}
        gpu_names = pl.Series("gpu", gpus, dtype=pl.String)
        segments = (
            pl.DataFrame(columns)
            .with_columns(gpu_names.gather(columns["gpu"]).alias("gpu"))
            .join(phase_of, on="label", how="left")
            .with_columns(
                pl.col("start").cast(pl.Datetime("ns", "UTC")),
                pl.col("end").cast(pl.Datetime("ns", "UTC")),
                pl.col("phase").fill_null("unlabelled"),
            )
            .select(list(seg_schema))
        )
    else:
        segments = pl.DataFrame(schema=seg_schema)
    gpu_levels = pl.DataFrame(level_rows) if level_rows else pl.DataFrame(schema={"gpu": pl.String})
    gpu_p99 = pl.DataFrame(p99_rows, schema={"gpu": pl.String, "p99_w": pl.Float64}, orient="row")
    # resolution: phases shorter than the data can resolve
    warnings: list[str] = []
    durations = segments.with_columns(((pl.col("end") - pl.col("start")).dt.total_nanoseconds() / 1e9).alias("d"))
    for name in names:
        d = durations.filter(pl.col("phase") == name).get_column("d")
        if len(d) and float(d.median()) < 3 * effective_period_s:
            warnings.append(
                f"{name} phases last {float(d.median()) * 1e3:.0f} ms (median), under 3 effective update periods "
                f"({effective_period_s * 1e3:.0f} ms): the data cannot resolve them reliably"
            )
    if params.workload == "inference" and effective_period_s >= 0.03:
        warnings.append(
            f"effective update period {effective_period_s * 1e3:.0f} ms: individual decode steps (30-70 ms) "
            "cannot be resolved; token phases are reported as plateaus"
        )
    return Detection(params.workload, names, np.zeros(0, dtype=np.int8), segments, gpu_levels, gpu_p99, phase_hist,
                     warnings)
