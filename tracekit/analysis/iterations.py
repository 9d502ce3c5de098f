"""Training iterations: period by autocorrelation, per-iteration timing, stragglers.

Synchronous data-parallel training repeats compute (near TDP) then communication
(near idle) every iteration, on every GPU at once; the period is the lag of the first
strong peak of the autocorrelation of the cluster power.  Stragglers are GPUs whose
compute phases end consistently later than the others' in the same iteration.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tracekit.analysis.spectrum import fill_missing

MIN_PERIOD_S = 0.05
MAX_PERIOD_S = 120.0
MIN_PEAK_CORR = 0.3
#: the first peak reaching this share of the best one wins (harmonics and slow
#: checkpoint cycles must not)
PEAK_SHARE = 0.5


def autocorr_period_s(power_w: np.ndarray, step_s: float, *, min_period_s: float = MIN_PERIOD_S,
                      max_period_s: float = MAX_PERIOD_S) -> tuple[float | None, float]:
    """(period_s, peak correlation) of the strongest early autocorrelation peak.

    The autocorrelation is computed with an FFT over the mean-removed series.  The
    first local maximum whose correlation is at least half the best one within the
    search range is taken (so a 2x harmonic does not win), refined by parabolic
    interpolation to a fraction of a cell.  None when no peak reaches ``MIN_PEAK_CORR``.
    """
    x = fill_missing(np.asarray(power_w, dtype=np.float64))
    n = len(x)
    if n < 16 or not np.isfinite(x).all():
        return None, 0.0
    lo = max(1, int(min_period_s / step_s))
    hi = min(n // 2, int(max_period_s / step_s) + 1)
    if hi <= lo + 2:
        return None, 0.0
    ac = autocorrelation(x, hi)
    if ac is None:
        return None, 0.0
    seg = ac[lo:hi]
    peaks = np.flatnonzero((seg[1:-1] >= seg[:-2]) & (seg[1:-1] > seg[2:])) + 1
    if len(peaks) == 0:
        return None, 0.0
    best = seg[peaks].max()
    if best < MIN_PEAK_CORR:
        return None, float(best)
    first = peaks[np.argmax(seg[peaks] >= PEAK_SHARE * best)]
    i = lo + first
    y0, y1, y2 = ac[i - 1], ac[i], ac[i + 1]
    denom = y0 - 2 * y1 + y2
    shift = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    return float((i + shift) * step_s), float(y1)


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray | None:
    """Autocorrelation of the mean-removed ``x`` at lags ``0..max_lag`` (1 at lag 0;
    None for a constant series), by FFT.  ``len(x) + max_lag`` zero-padded points keep
    those lags free of the circular wrap-around, at a length the FFT factors fast."""
    from scipy.fft import irfft, next_fast_len, rfft

    x = x - x.mean()
    var = float(np.dot(x, x))
    if var <= 0:
        return None
    nfft = next_fast_len(len(x) + max_lag, real=True)
    spec = rfft(x, nfft)
    del x
    power = spec.real ** 2 + spec.imag ** 2  # |spec|^2 = spec * conj(spec), without complex temporaries
    del spec
    return irfft(power, nfft)[:max_lag + 1] / var


def iteration_table(segments: pl.DataFrame, period_s: float, compute_phase: str = "compute") -> pl.DataFrame:
    """Per iteration and GPU: compute start/end and compute / communication time.

    Iterations are numbered by the cluster-wide order of compute segments: each GPU's
    compute segments longer than 20 % of the period are matched to iteration
    ``round((start - t0) / period)`` where t0 is the earliest compute start.
    """
    # NumPy on the frame's own buffers, GPU names as codes in name order: a long trace
    # has millions of segments, and Polars' filters and hash group-bys of them would
    # hold several times more (and its allocator keeps what they free)
    period_ns = period_s * 1e9
    time_type = segments.schema["start"]
    empty = pl.DataFrame(schema={"iteration": pl.Int64, "gpu": pl.String, "compute_start": time_type,
                                 "compute_end": time_type, "compute_s": pl.Float64})
    if segments.height == 0:
        return empty
    start = segments.get_column("start").to_physical().to_numpy()
    end = segments.get_column("end").to_physical().to_numpy()
    keep = (segments.get_column("phase") == compute_phase).to_numpy()
    keep &= (end - start) > 0.2 * period_ns
    if not keep.any():
        return empty
    gpu_col = segments.get_column("gpu")
    run = gpu_col.rle_id().to_numpy()  # runs of one GPU (a segments frame holds each GPU's rows together)
    run_first = np.flatnonzero(np.concatenate([[True], run[1:] != run[:-1]]))
    names, run_code = np.unique(np.array(gpu_col.gather(run_first).to_list(), dtype=object), return_inverse=True)
    gpu = run_code.reshape(-1).astype(np.int32)[run][keep]
    start, end = start[keep], end[keep]
    iteration = np.rint((start - start.min()) / period_ns).astype(np.int64)  # half to even, as Polars' round
    # (GPU, start) order makes every (iteration, GPU) a run: the iteration grows with the start
    if len(gpu) > 1 and not ((gpu[1:] > gpu[:-1]) | ((gpu[1:] == gpu[:-1]) & (start[1:] >= start[:-1]))).all():
        order = np.lexsort((start, gpu))
        gpu, start, end, iteration = gpu[order], start[order], end[order], iteration[order]
    first = np.flatnonzero(np.concatenate([[True], (gpu[1:] != gpu[:-1]) | (iteration[1:] != iteration[:-1])]))
    out = {
        "iteration": iteration[first],
        "gpu": gpu[first],
        "compute_start": np.minimum.reduceat(start, first),
        "compute_end": np.maximum.reduceat(end, first),
        "compute_s": np.add.reduceat(end - start, first) / 1e9,  # whole ns summed, then seconds
    }
    order = np.lexsort((out["gpu"], out["iteration"]))
    return pl.DataFrame({
        "iteration": out["iteration"][order],
        "gpu": pl.Series("gpu", names.tolist(), dtype=pl.String).gather(out["gpu"][order]),
        "compute_start": pl.Series(out["compute_start"][order]).cast(time_type),
        "compute_end": pl.Series(out["compute_end"][order]).cast(time_type),
        "compute_s": out["compute_s"][order],
    })


def find_stragglers(per_gpu_iter: pl.DataFrame, *, min_late_s: float | None = None,
                    min_share: float = 0.5) -> pl.DataFrame:
    """GPUs whose compute ends late in most iterations.

    Lateness is the compute end minus the median compute end of the same iteration.
    A GPU is a straggler when it is late by more than ``min_late_s`` (default: 3x the
    median absolute lateness of all GPUs, at least 2 ms) in at least ``min_share`` of
    the iterations it takes part in.
    """
    if per_gpu_iter.height == 0:
        return pl.DataFrame(schema={"gpu": pl.String, "iterations": pl.UInt32, "late_share": pl.Float64,
                                    "median_late_ms": pl.Float64})
    lat = per_gpu_iter.with_columns(
        ((pl.col("compute_end") - pl.col("compute_end").median().over("iteration")).dt.total_nanoseconds() / 1e9)
        .alias("late_s")
    )
    if min_late_s is None:
        mad = float(lat.get_column("late_s").abs().median() or 0.0)
        min_late_s = max(3 * mad, 0.002)
    per_gpu = lat.group_by("gpu").agg(
        pl.len().cast(pl.UInt32).alias("iterations"),
        (pl.col("late_s") > min_late_s).mean().alias("late_share"),
        (pl.col("late_s").median() * 1e3).alias("median_late_ms"),
    )
    return (per_gpu.filter(pl.col("late_share") >= min_share)
            .sort(["median_late_ms", "gpu"], descending=[True, False]))  # ties by name: deterministic
