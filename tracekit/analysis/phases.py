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

import numpy as np
import polars as pl

from tracekit.kernels.levels import histogram_bin_centers, kmeans_1d, power_histogram
from tracekit.kernels.phases import label_phases, phase_segments

PHASE_NAMES = {
    "training": ("communication", "compute"),
    "inference": ("idle", "token", "prompt"),
}
HYSTERESIS = 0.2
BIN_W = 1.0


@dataclass
class GpuArrays:
    """Samples of all GPUs as flat arrays, GPU ``i`` in ``[offsets[i], offsets[i+1])``."""

    gpus: list[str]
    offsets: np.ndarray
    ts_ns: np.ndarray
    power_w: np.ndarray
    topology: pl.DataFrame

    def gpu(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.ts_ns[a:b], self.power_w[a:b]

    def groups(self, level: str) -> tuple[list[str], np.ndarray, list[list[str]]]:
        """(group names, group index of each GPU, member GPUs of each group)."""
        if level == "cluster":
            return ["cluster"], np.zeros(len(self.gpus), dtype=np.int64), [list(self.gpus)]
        if level == "gpu":
            return list(self.gpus), np.arange(len(self.gpus)), [[g] for g in self.gpus]
        col = dict(zip(self.topology.get_column("gpu").to_list(), self.topology.get_column(level).to_list()))
        names = sorted({str(col.get(g)) for g in self.gpus})
        index = {n: i for i, n in enumerate(names)}
        of = np.array([index[str(col.get(g))] for g in self.gpus], dtype=np.int64)
        members = [[] for _ in names]
        for g, i in zip(self.gpus, of):
            members[i].append(g)
        return names, of, members


def gpu_arrays(samples: pl.DataFrame, topology: pl.DataFrame) -> GpuArrays:
    """Flat arrays of samples sorted by (gpu, ts)."""
    counts = samples.group_by("gpu", maintain_order=True).len()
    gpus = counts.get_column("gpu").to_list()
    offsets = np.zeros(len(gpus) + 1, dtype=np.int64)
    np.cumsum(counts.get_column("len").to_numpy(), out=offsets[1:])
    ts = samples.get_column("ts").dt.epoch("ns").to_numpy()
    power = samples.get_column("power_w").cast(pl.Float32).to_numpy()
    return GpuArrays(gpus, offsets, np.ascontiguousarray(ts), np.ascontiguousarray(power), topology)


@dataclass
class Detection:
    workload: str
    names: tuple[str, ...]
    labels: np.ndarray
    segments: pl.DataFrame
    gpu_levels: pl.DataFrame
    power_w: np.ndarray
    hold_s: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """``phases`` of the JSON contract: per phase fraction (of time), mean_w,
        p99_w, count (segments) and mean_duration_ms."""
        out = {}
        total = float(self.hold_s.sum())
        seg = self.segments.with_columns(((pl.col("end") - pl.col("start")).dt.total_nanoseconds() / 1e6)
                                         .alias("_ms"))
        for code, name in enumerate(self.names):
            mask = self.labels == code
            p = self.power_w[mask]
            p = p[np.isfinite(p)]
            held = float(self.hold_s[mask].sum())
            ok = mask & np.isfinite(self.power_w)
            held_ok = float(self.hold_s[ok].sum())
            s = seg.filter(pl.col("phase") == name)
            out[name] = {
                "fraction": round(held / total, 6) if total > 0 else None,
                "mean_w": round(float((self.power_w[ok] * self.hold_s[ok]).sum() / held_ok), 3) if held_ok > 0 else None,
                "p99_w": round(float(np.quantile(p, 0.99)), 3) if len(p) else None,
                "count": int(s.height),
                "mean_duration_ms": round(float(s.get_column("_ms").mean()), 3) if s.height else None,
            }
        return out


def hold_times_s(arrays: GpuArrays, last_hold_ns: int, max_gap_ns: int | None = None) -> np.ndarray:
    """Seconds each sample holds its value (to the next sample; ``last_hold_ns`` for
    a GPU's last sample and, when ``max_gap_ns`` is given, across longer gaps)."""
    dt = np.empty(len(arrays.ts_ns), dtype=np.int64)
    dt[:-1] = np.diff(arrays.ts_ns)
    ends = arrays.offsets[1:] - 1
    dt[ends[ends >= 0]] = last_hold_ns
    if max_gap_ns is not None:
        dt[dt > max_gap_ns] = last_hold_ns
    return dt / 1e9


def choose_workload(arrays: GpuArrays) -> str:
    """``training`` or ``inference`` from the pooled power histogram.

    Three-level fit on all GPUs' samples: inference shows a populated middle (token)
    level distinct from both idle and prompt, and its highest level holds a small
    share of the time; training's power sits at two levels (the high one holding
    most of the time) with the rest in transitions.
    """
    p = arrays.power_w[np.isfinite(arrays.power_w)]
    if len(p) == 0:
        return "training"
    hi = float(np.max(p)) * 1.01 + BIN_W
    n_bins = int(np.ceil(hi / BIN_W))
    counts = power_histogram(p, bin_w=BIN_W, n_bins=n_bins)
    centers = histogram_bin_centers(bin_w=BIN_W, n_bins=n_bins)
    keep = counts > 0
    if keep.sum() < 3:
        return "training"
    lv = kmeans_1d(centers[keep], counts[keep].astype(np.float64), 3)
    share = lv.weights / lv.weights.sum()
    c = lv.centers_w
    span = c[2] - c[0]
    middle_distinct = span > 0 and (c[1] - c[0]) > 0.2 * span and (c[2] - c[1]) > 0.2 * span
    if middle_distinct and share[1] > 0.2 and share[2] < share[1]:
        return "inference"
    return "training"


def detect(arrays: GpuArrays, *, workload: str, effective_period_s: float, sample_period_s: float) -> Detection:
    """Levels, labels and segments for every GPU."""
    if workload == "auto":
        workload = choose_workload(arrays)
    names = PHASE_NAMES[workload]
    k = len(names)
    min_dwell_ns = int(max(3 * sample_period_s, 2 * effective_period_s) * 1e9)
    last_hold_ns = int(sample_period_s * 1e9)
    labels = np.full(len(arrays.ts_ns), -1, dtype=np.int8)
    seg_frames = []
    level_rows = []
    warnings: list[str] = []
    for i, gpu in enumerate(arrays.gpus):
        ts, power = arrays.gpu(i)
        finite = power[np.isfinite(power)]
        if len(finite) == 0:
            continue
        hi = float(finite.max()) * 1.01 + BIN_W
        n_bins = int(np.ceil(hi / BIN_W))
        counts = power_histogram(finite, bin_w=BIN_W, n_bins=n_bins)
        centers = histogram_bin_centers(bin_w=BIN_W, n_bins=n_bins)
        keep = counts > 0
        kk = min(k, int(keep.sum()))
        lv = kmeans_1d(centers[keep], counts[keep].astype(np.float64), kk)
        gpu_labels = label_phases(ts, power, lv.centers_w, hysteresis=HYSTERESIS, min_dwell_ns=min_dwell_ns)
        if kk < k:  # fewer distinct values than levels: map onto the top levels
            gpu_labels = np.where(gpu_labels >= 0, gpu_labels + (k - kk), gpu_labels).astype(np.int8)
        a, b = arrays.offsets[i], arrays.offsets[i + 1]
        labels[a:b] = gpu_labels
        seg = phase_segments(ts, power, gpu_labels, last_hold_ns=last_hold_ns)
        end_idx = np.minimum(seg.end_idx, len(ts) - 1)
        end_ts = np.where(seg.end_idx < len(ts), ts[end_idx], ts[-1] + last_hold_ns)
        seg_frames.append(
            pl.DataFrame({
                "gpu": [gpu] * len(seg.label),
                "start": ts[seg.start_idx],
                "end": end_ts,
                "label": seg.label.astype(np.int8),
                "mean_w": seg.mean_w,
                "peak_w": seg.peak_w,
                "energy_j": seg.energy_j,
            })
        )
        row = {"gpu": gpu}
        for j, name in enumerate(names):
            jj = j - (k - kk)
            row[f"level_{name}_w"] = float(lv.centers_w[jj]) if jj >= 0 else None
        level_rows.append(row)
    phase_of = pl.DataFrame({"label": np.arange(k, dtype=np.int8), "phase": list(names)})
    if seg_frames:
        segments = (
            pl.concat(seg_frames)
            .join(phase_of, on="label", how="left")
            .with_columns(
                pl.col("start").cast(pl.Datetime("ns", "UTC")),
                pl.col("end").cast(pl.Datetime("ns", "UTC")),
                pl.col("phase").fill_null("unlabelled"),
            )
            .select("gpu", "start", "end", "phase", "mean_w", "peak_w", "energy_j")
        )
    else:
        segments = pl.DataFrame(schema={"gpu": pl.String, "start": pl.Datetime("ns", "UTC"),
                                        "end": pl.Datetime("ns", "UTC"), "phase": pl.String,
                                        "mean_w": pl.Float64, "peak_w": pl.Float64, "energy_j": pl.Float64})
    gpu_levels = pl.DataFrame(level_rows) if level_rows else pl.DataFrame({"gpu": []}, schema={"gpu": pl.String})
    # resolution: phases shorter than the data can resolve
    durations = segments.with_columns(((pl.col("end") - pl.col("start")).dt.total_nanoseconds() / 1e9).alias("d"))
    for name in names:
        d = durations.filter(pl.col("phase") == name).get_column("d")
        if len(d) and float(d.median()) < 3 * effective_period_s:
            warnings.append(
                f"{name} phases last {float(d.median()) * 1e3:.0f} ms (median), under 3 effective update periods "
                f"({effective_period_s * 1e3:.0f} ms): the data cannot resolve them reliably"
            )
    if workload == "inference" and effective_period_s >= 0.03:
        warnings.append(
            f"effective update period {effective_period_s * 1e3:.0f} ms: individual decode steps (30-70 ms) "
            "cannot be resolved; token phases are reported as plateaus"
        )
    return Detection(workload, names, labels, segments, gpu_levels, arrays.power_w,
                     hold_times_s(arrays, last_hold_ns), warnings)
