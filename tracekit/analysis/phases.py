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
from tracekit.kernels.phases import HysteresisLabeler, SegmentBuilder, segment_mean_w
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
        seg = self.segments  # one column at a time: a long trace has millions of segments
        ms = (seg.get_column("end") - seg.get_column("start")).dt.total_nanoseconds() / 1e6
        total = float(seg.get_column("covered_s").sum()) if seg.height else 0.0
        phase = seg.get_column("phase")
        out = {}
        for code, name in enumerate(self.names):
            mask = phase == name
            count = int(mask.sum())
            covered = float(seg.get_column("covered_s").filter(mask).sum()) if count else 0.0
            energy = float(seg.get_column("energy_j").filter(mask).sum()) if count else 0.0
            p99 = _quantile_from_hist(self.phase_hist[code], 0.99, BIN_W)
            out[name] = {
                "fraction": round(covered / total, 6) if total > 0 else None,
                "mean_w": round(energy / covered, 3) if covered > 0 else None,
                "p99_w": round(p99, 1) if p99 is not None else None,
                "count": count,
                "mean_duration_ms": round(float(ms.filter(mask).mean()), 3) if count else None,
            }
        return out


def _histogram(power: np.ndarray, hi_w: float) -> tuple[np.ndarray, np.ndarray]:
    n_bins = int(np.ceil(hi_w / BIN_W)) + 1
    counts = power_histogram(power, bin_w=BIN_W, n_bins=n_bins)
    return counts, histogram_bin_centers(bin_w=BIN_W, n_bins=n_bins)


def pooled_histogram(power: np.ndarray) -> np.ndarray:
    """Counts of ``power`` in 1 W bins from 0 up to 1 % above its finite maximum
    (histograms of parts add up after zero-padding to the longest)."""
    return histogram_and_max(power)[0]


def histogram_and_max(power: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`pooled_histogram` of ``power`` and its finite maximum (NaN if none)."""
    finite_max = np.fmax.reduce(power) if len(power) else np.nan  # NaN (no warning) when all NaN
    if not np.isfinite(finite_max):
        return np.zeros(0, dtype=np.int64), np.nan
    return _histogram(power, float(finite_max) * 1.01 + BIN_W)[0], float(finite_max)


def gpu_histograms(arrays: GpuArrays) -> tuple[list[np.ndarray], np.ndarray]:
    """Each GPU's :func:`histogram_and_max` on threads: (histograms, finite maxima).
    Pooled (:func:`pool_histograms`) they choose the workload; alone each gives its
    GPU's levels (any range covering the GPU's samples gives the same levels)."""
    from tracekit.engine.local import map_ranges

    def part(lo: int, hi: int):
        return [histogram_and_max(arrays.gpu(i)[1]) for i in range(lo, hi)]

    per_gpu = [h for batch in map_ranges(part, np.diff(arrays.offsets)) for h in batch]
    return [h for h, _ in per_gpu], np.array([m for _, m in per_gpu], dtype=np.float64)


def pool_histograms(hists) -> np.ndarray:
    """Sum of 1 W histograms of any lengths (one allocation)."""
    out = np.zeros(max((len(h) for h in hists), default=0), dtype=np.int64)
    for h in hists:
        out[: len(h)] += h
    return out


def workload_from_histogram(counts: np.ndarray) -> str:
    """``training`` or ``inference`` from a pooled 1 W power histogram.

    Three-level fit on all GPUs' samples: inference shows a populated middle (token)
    level distinct from both idle and prompt, and its highest level holds a small
    share of the time; training's power sits at two levels (the high one holding
    most of the time) with the rest in transitions.
    """
    keep = counts > 0
    if keep.sum() < 3:  # also an empty histogram (no finite power at all)
        return "training"
    centers = histogram_bin_centers(bin_w=BIN_W, n_bins=len(counts))
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


@dataclass(slots=True)
class GpuSegments:
    """One GPU's segments in time order, kept compact while a long analysis collects
    them: each ends where the next starts (the last at ``last_end``), and ``mean_w``
    is ``energy_j / covered_s``, so neither is stored.  :func:`assemble` consumes the
    arrays (sets them to None) as it copies them into the frame."""

    start: np.ndarray  # int64 ns
    label: np.ndarray  # int8 phase code, -1 = not labelled
    peak_w: np.ndarray
    energy_j: np.ndarray
    covered_s: np.ndarray
    last_end: int  # ns

    @property
    def end(self) -> np.ndarray:
        return np.append(self.start[1:], np.int64(self.last_end))

    @property
    def mean_w(self) -> np.ndarray:
        return segment_mean_w(self.energy_j, self.covered_s)


class GpuPhases(NamedTuple):
    """One GPU's detection: labels, segments, level row, p99, per-phase histogram."""

    gpu: int
    labels: np.ndarray
    segments: GpuSegments
    levels: dict
    p99_w: float | None
    hist: np.ndarray


def detect_gpu(ts: np.ndarray, power: np.ndarray, params: DetectParams, gpu_index: int,
               keep_labels: bool = True, check_sorted: bool = True, counts: np.ndarray | None = None,
               phase_hist: bool = True) -> GpuPhases | None:
    """Levels, labels and segments of one GPU (None when it has no finite sample);
    ``counts``: its 1 W histogram when already known (:func:`gpu_histograms`)."""
    if len(ts) == 0:
        return None
    if counts is None:
        counts = _histogram(power, params.hi_w)[0]
    det = GpuDetector(params, counts, gpu_index, keep_labels=keep_labels, phase_hist=phase_hist,
                      check_sorted=check_sorted)
    if det.levels is None:
        return None
    det.push(ts, power)
    return det.finish()


class GpuDetector:
    """One GPU's detection fed in time-ordered chunks (streaming time windows).

    Levels come from the GPU's whole 1 W histogram (``counts``, from a first pass);
    labels from :class:`HysteresisLabeler` (samples whose label is not final yet wait
    in a small buffer), segments from :class:`SegmentBuilder`.  Any chunking gives
    what one chunk gives.
    """

    def __init__(self, params: DetectParams, counts: np.ndarray, gpu_index: int, keep_labels: bool = False,
                 phase_hist: bool = True, check_sorted: bool = True):
        self.params = params
        self.phase_hist = phase_hist
        self.check_sorted = check_sorted
        self.gpu = gpu_index
        k = params.k
        keep = counts > 0
        self.levels = None
        if not keep.any():
            return
        centers = histogram_bin_centers(bin_w=BIN_W, n_bins=len(counts))
        kk = min(k, int(keep.sum()))
        lv = kmeans_1d(centers[keep], counts[keep].astype(np.float64), kk)
        self.levels = lv
        self.shift = k - kk  # fewer distinct values than levels: map onto the top levels
        self.p99_w = _quantile_from_hist(counts, 0.99, BIN_W)
        self.row = {}
        for j, name in enumerate(params.names):
            jj = j - self.shift
            self.row[f"level_{name}_w"] = float(lv.centers_w[jj]) if jj >= 0 else None
        self.labeler = HysteresisLabeler(lv.centers_w, hysteresis=HYSTERESIS, min_dwell_ns=params.min_dwell_ns)
        self.builder = SegmentBuilder(last_hold_ns=params.last_hold_ns)
        self.hist = np.zeros((k, params.n_bins), dtype=np.int64)
        self.pending_ts = np.zeros(0, dtype=np.int64)
        self.pending_power = np.zeros(0, dtype=np.float32)
        self.labels = [] if keep_labels else None
        self.segments: list = []
        self.starts: list = []
        self.open_ts = None  # start time of the open segment
        self.prev_last_ts = None  # time of the builder's carried sample
        self.last_ts = None

    def push(self, ts: np.ndarray, power: np.ndarray) -> None:
        if len(ts) == 0:
            return
        lab = self.labeler.push(ts, power, check_sorted=self.check_sorted)
        if len(self.pending_ts):
            ts = np.concatenate([self.pending_ts, ts])
            power = np.concatenate([self.pending_power, power])
        n = len(lab)
        self._consume(ts[:n], power[:n], lab)
        self.pending_ts, self.pending_power = ts[n:], power[n:]
        self.last_ts = int(ts[-1])

    def _consume(self, ts: np.ndarray, power: np.ndarray, lab: np.ndarray) -> None:
        if len(ts) == 0:
            return
        if self.shift:
            lab = np.where(lab >= 0, lab + self.shift, lab).astype(np.int8)
        if self.labels is not None:
            self.labels.append(lab)
        if self.phase_hist:
            label_histogram(power, lab, self.hist, bin_w=BIN_W)
        base = self.builder.n_seen
        seg = self.builder.push(ts, power, lab, check_sorted=False)  # the labeler checked these times
        self._closed(seg, ts, base)
        self.prev_last_ts = int(ts[-1])

    def _time_of(self, idx: int, ts: np.ndarray, base: int) -> int:
        if idx == base - 1:
            return self.prev_last_ts
        return int(ts[idx - base])

    def _start_times(self, start_idx: np.ndarray, ts: np.ndarray, base: int) -> np.ndarray:
        """Times of segment starts given as stream indices: in this push's ``ts``
        (from ``base``), its carried sample (``base - 1``), or earlier (the open segment)."""
        out = ts[np.clip(start_idx - base, 0, max(len(ts) - 1, 0))] if len(ts) else np.zeros(len(start_idx),
                                                                                                dtype=np.int64)
        carried, earlier = start_idx == base - 1, start_idx < base - 1
        if carried.any() and self.prev_last_ts is None or earlier.any() and self.open_ts is None:
            raise RuntimeError(f"GPU {self.gpu}: a phase segment starts at a sample whose time was not kept")
        out = np.where(carried, self.prev_last_ts or 0, out)  # (0: not used, np.where takes both sides)
        return np.where(earlier, self.open_ts or 0, out).astype(np.int64)

    def _closed(self, seg, ts: np.ndarray, base: int) -> None:
        if len(seg.label):
            self.starts.append(self._start_times(seg.start_idx, ts, base))
            self.segments.append(seg)
        o = self.builder.open_start_idx
        if o >= 0 and o >= base - 1:
            self.open_ts = self._time_of(o, ts, base)

    def finish(self) -> GpuPhases:
        tail = self.labeler.finish()
        self._consume(self.pending_ts, self.pending_power, tail)
        base = self.builder.n_seen
        last_seg = self.builder.finish()  # the open segment, if any
        # it may start at the carried last sample (base - 1) or earlier
        self.starts.append(self._start_times(last_seg.start_idx, np.zeros(0, dtype=np.int64), base))
        self.segments.append(last_seg)
        cat = {f: np.concatenate([getattr(x, f) for x in self.segments])
               for f in ("label", "peak_w", "energy_j", "covered_s")}
        starts = np.concatenate(self.starts) if self.starts else np.zeros(0, dtype=np.int64)
        segments = GpuSegments(starts, cat["label"].astype(np.int8, copy=False), cat["peak_w"], cat["energy_j"],
                               cat["covered_s"], int(self.last_ts + self.params.last_hold_ns))
        labels = np.concatenate(self.labels) if self.labels else None
        return GpuPhases(self.gpu, labels, segments, self.row, self.p99_w, self.hist)


def detect(arrays: GpuArrays, *, workload: str, effective_period_s: float, sample_period_s: float,
           min_dwell_s: float | None = None, phase_hist: bool = True) -> Detection:
    """Levels, labels and segments for every GPU (``min_dwell_s`` defaults to
    :func:`default_min_dwell_s`); ``phase_hist=False`` skips the per-phase power
    histograms (``Detection.phase_hist`` stays zero: no phase p99)."""
    from tracekit.engine.local import map_ranges

    # each GPU's 1 W histogram once: pooled it picks the workload, alone it gives the
    # GPU's levels (as the streaming pass 1 does)
    hists, maxima = gpu_histograms(arrays)
    if workload == "auto":
        workload = workload_from_histogram(pool_histograms(hists))
    maxima = maxima[np.isfinite(maxima)]
    finite_max = float(maxima.max()) if len(maxima) else 0.0
    params = detect_params(workload, max_power_w=finite_max, effective_period_s=effective_period_s,
                           sample_period_s=sample_period_s, min_dwell_s=min_dwell_s)
    labels = np.full(len(arrays.ts_ns), -1, dtype=np.int8)

    def one_gpu(i: int):
        ts, power = arrays.gpu(i)
        res = detect_gpu(ts, power, params, i, check_sorted=False,  # GpuArrays are sorted per GPU
                         counts=hists[i], phase_hist=phase_hist)
        if res is not None:
            labels[arrays.offsets[i]: arrays.offsets[i + 1]] = res.labels
        return res

    batches = map_ranges(lambda lo, hi: [one_gpu(i) for i in range(lo, hi)], np.diff(arrays.offsets))
    results = [r for batch in batches for r in batch]
    det = assemble(params, arrays.gpus, results, effective_period_s)
    det.labels = labels
    return det


SEGMENT_SCHEMA = {"gpu": pl.String, "start": pl.Datetime("ns", "UTC"), "end": pl.Datetime("ns", "UTC"),
                  "phase": pl.String, "mean_w": pl.Float64, "peak_w": pl.Float64, "energy_j": pl.Float64,
                  "covered_s": pl.Float64}


def _segments_frame(names: tuple[str, ...], gpus: list[str], results: list[GpuPhases]) -> pl.DataFrame:
    """Every GPU's segments as one frame (:data:`SEGMENT_SCHEMA`), column by column;
    each GPU's arrays are released as soon as they are copied, so the compact
    arrays and the frame are not both held whole."""
    counts = np.array([len(r.segments.start) for r in results], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return pl.DataFrame(schema=SEGMENT_SCHEMA)
    bounds = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])

    def take(field: str, dtype) -> np.ndarray:
        out = np.empty(total, dtype=dtype)
        for r, a, b in zip(results, bounds[:-1], bounds[1:]):
            out[a:b] = getattr(r.segments, field)
            setattr(r.segments, field, None)
        return out

    start = take("start", np.int64)
    end = np.empty(total, dtype=np.int64)
    end[:-1] = start[1:]
    has = counts > 0
    end[bounds[1:][has] - 1] = [r.segments.last_end for r, h in zip(results, has) if h]  # each GPU's last
    label = take("label", np.int8)
    phase_idx = np.where(label >= 0, label, len(names)).astype(np.uint32)  # -1: not labelled
    del label
    gpu_idx = np.repeat(np.array([r.gpu for r in results], dtype=np.uint32), counts)
    peak, energy, covered = take("peak_w", np.float64), take("energy_j", np.float64), take("covered_s", np.float64)
    return pl.DataFrame({
        "gpu": pl.Series("gpu", gpus, dtype=pl.String).gather(gpu_idx),
        "start": pl.Series("start", start).cast(pl.Datetime("ns", "UTC")),
        "end": pl.Series("end", end).cast(pl.Datetime("ns", "UTC")),
        "phase": pl.Series("phase", [*names, "unlabelled"], dtype=pl.String).gather(phase_idx),
        "mean_w": segment_mean_w(energy, covered),
        "peak_w": peak,
        "energy_j": energy,
        "covered_s": covered,
    })


def assemble(params: DetectParams, gpus: list[str], results: list[GpuPhases | None],
             effective_period_s: float, phase_hist: np.ndarray | None = None) -> Detection:
    """One :class:`Detection` from per-GPU results (in GPU order; ``gpus`` names the
    indices used in their segment frames).  ``labels`` is left empty.  The results'
    segment arrays are consumed (moved into the frame, not copied twice).  Results
    whose ``hist`` is None were already added into ``phase_hist``."""
    names, k = params.names, params.k
    if phase_hist is None:
        phase_hist = np.zeros((k, params.n_bins), dtype=np.int64)
    level_rows, p99_rows = [], []
    for res in results:
        if res is None:
            continue
        gpu = gpus[res.gpu]
        level_rows.append({"gpu": gpu, **res.levels})
        p99_rows.append((gpu, res.p99_w))
        if res.hist is not None:
            phase_hist[:, : res.hist.shape[1]] += res.hist[:, : params.n_bins]
    segments = _segments_frame(names, gpus, [res for res in results if res is not None])
    gpu_levels = pl.DataFrame(level_rows) if level_rows else pl.DataFrame(schema={"gpu": pl.String})
    gpu_p99 = pl.DataFrame(p99_rows, schema={"gpu": pl.String, "p99_w": pl.Float64}, orient="row")
    # resolution: phases shorter than the data can resolve
    warnings: list[str] = []
    durations = (segments.get_column("end") - segments.get_column("start")).dt.total_nanoseconds() / 1e9
    phase = segments.get_column("phase")
    for name in names:
        d = durations.filter(phase == name)
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
