"""Per-host clock offsets: from a file, or estimated by bounded cross-correlation.

Hosts log with their own clocks.  In synchronous training every GPU changes phase
at the same true time, so a host whose clock runs ahead shows its edges early.
``--align auto`` estimates each host's offset by cross-correlating the derivative
(rising edges) of the host's gridded power with that of the rest of the cluster, searching only
lags within +- ``max_offset_s`` (bounded), with parabolic refinement to a fraction
of a grid cell.  The offsets are then subtracted from the host's timestamps.

The estimate uses at most :data:`MAX_CELLS` grid cells (and :data:`MAX_SAMPLES`
sampling periods) from the middle of the trace (:func:`window`): a minute at 1 ms is
dozens of iterations, and it bounds the host series' memory and the correlation's
cost whatever the trace's length, so a trace larger than memory is aligned from a
slice read from its files, the same slice the in-memory run uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from scipy.fft import irfft, next_fast_len, rfft

from tracekit.analysis.spectrum import fill_missing
from tracekit.errors import InputError, ParameterError


def estimate_offsets(host_power_w: np.ndarray, step_s: float, max_offset_s: float) -> np.ndarray:
    """Clock offset of each host (seconds; positive = the host's clock runs ahead).

    Parameters
    ----------
    host_power_w
        2-D array (hosts x cells) of gridded host power on the common grid, NaN =
        missing.
    step_s
        Grid step in seconds.
    max_offset_s
        Largest offset searched (the search is bounded to +- this).

    Returns
    -------
    ndarray of float64, shape (hosts,)
        Offsets relative to the cluster, re-centred so their median is zero; 0 for a
        host whose series has no rising edge (nothing to align), left out of the median.
    """
    x = np.asarray(host_power_w, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(f"host_power_w must be 2-D (hosts x cells), got shape {x.shape}")
    if step_s <= 0 or max_offset_s < 0:
        raise ParameterError("step_s must be positive and max_offset_s non-negative")
    n_hosts, n = x.shape
    offsets = np.zeros(n_hosts)
    if n_hosts < 2 or n < 4:
        return offsets
    # Rising edges only: compute starts right after the collective that ends each
    # iteration, on every GPU at the same true time, while compute ends differ
    # (stragglers, jitter).  Row by row: one (hosts x cells) array, not a copy per step.
    d = np.empty((n_hosts, n - 1))
    for h in range(n_hosts):
        filled = np.nan_to_num(fill_missing(x[h]), nan=0.0, posinf=0.0, neginf=0.0)  # a copy: x stays as given
        np.subtract(filled[1:], filled[:-1], out=d[h])
    del filled
    np.maximum(d, 0.0, out=d)
    max_lag = int(min(n // 4, round(max_offset_s / step_s)))
    nfft = next_fast_len(n + max_lag, real=True)
    # A first estimate against a coherent reference: the host with the most edges,
    # then each host against the sum of those already aligned (against the whole
    # misaligned cluster, pairs of hosts can settle on each other instead).
    cells = np.zeros(n_hosts, dtype=np.int64)
    order = np.argsort(-d.sum(axis=1), kind="stable")
    ref = d[order[0]].copy()
    for h in order[1:]:
        cells[h], _ = _best_lag(d[h], ref, max_lag, nfft)
        ref += _shift(d[h], -cells[h])
    del ref
    # Then each host against the rest of the cluster, shifting each host by its
    # estimate before the next round.
    aligned = np.empty_like(d)
    for _ in range(ROUNDS):
        for h in range(n_hosts):
            _shift(d[h], -cells[h], out=aligned[h])
        total = aligned.sum(axis=0)
        step_cells = np.zeros(n_hosts, dtype=np.int64)
        for h in range(n_hosts):
            lag, frac = _best_lag(aligned[h], total - aligned[h], max_lag, nfft)
            step_cells[h] = lag
            offsets[h] = (cells[h] + lag + frac) * step_s
        if not step_cells.any():
            break
        cells = np.clip(cells + step_cells, -max_lag, max_lag)
    # a host without a rising edge (no samples, flat power) has nothing to align: 0,
    # and left out of the centring
    seen = d.any(axis=1)
    out = offsets - (np.median(offsets[seen]) if seen.any() else 0.0)
    out[~seen] = 0.0
    return out


ROUNDS = 6


def _shift(x: np.ndarray, k: int, out: np.ndarray | None = None) -> np.ndarray:
    """x moved by k cells (positive: later), zero-filled (into ``out`` if given)."""
    out = np.zeros_like(x) if out is None else out
    if k > 0:
        out[k:] = x[:-k]
        out[:k] = 0.0
    elif k < 0:
        out[:k] = x[-k:]
        out[k:] = 0.0
    else:
        out[:] = x
    return out


def window(n_cells: int, step_ns: int, sample_period_ns: float) -> tuple[int, int] | None:
    """(first cell, cells) of a grid of ``n_cells`` the offsets are estimated on: at
    most :data:`MAX_CELLS` cells and :data:`MAX_SAMPLES` sampling periods from the
    middle of the trace; None: the whole grid (it is no longer)."""
    span = int(min(MAX_CELLS, MAX_SAMPLES * max(float(sample_period_ns), 1.0) // step_ns))
    span = max(span, 4)
    if n_cells <= span:
        return None
    return (n_cells - span) // 2, span


#: The estimate's window: at most this many grid cells (65.5 s at 1 ms) ...
MAX_CELLS = 65_536
#: ... and this many sampling periods (so a coarse --resolution does not read hours per GPU).
MAX_SAMPLES = 1_048_576


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int, nfft: int | None = None) -> tuple[int, float]:
    """Integer lag (a later than b by lag cells) maximising the cross-correlation
    ``sum_i a[i + lag] b[i]`` over ``|lag| <= max_lag``, and a parabolic sub-cell
    refinement.  The correlation of every lag comes from one FFT product, zero-padded
    to ``nfft >= len(a) + max_lag`` so no lag wraps round."""
    if not a.any() or not b.any():
        return 0, 0.0
    n = len(a)
    nfft = nfft or next_fast_len(n + max_lag, real=True)
    c = irfft(rfft(a, nfft) * np.conj(rfft(b, nfft)), nfft)
    corr = np.concatenate([c[nfft - max_lag:], c[: max_lag + 1]]) if max_lag else c[:1]
    lags = np.arange(-max_lag, max_lag + 1)
    k = int(np.argmax(corr))
    frac = 0.0
    if 0 < k < len(lags) - 1:
        y0, y1, y2 = corr[k - 1], corr[k], corr[k + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    return int(lags[k]), float(frac)


def load_offsets(path: Path | str) -> dict[str, float]:
    """Host clock offsets from a CSV/Parquet with columns host, offset_s (or offset_ms)."""
    p = Path(path)
    try:
        df = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p)
    except Exception as exc:  # noqa: BLE001 - the user's file
        raise InputError(f"unreadable clock-offset file ({exc})", path=str(p)) from None
    if "host" not in df.columns or not ({"offset_s", "offset_ms"} & set(df.columns)):
        raise InputError(f"clock-offset file needs columns host and offset_s (or offset_ms); has {df.columns}",
                         path=str(p))
    col = pl.col("offset_s") if "offset_s" in df.columns else pl.col("offset_ms") / 1e3
    df = df.select(pl.col("host").cast(pl.String), col.cast(pl.Float64).alias("offset_s"))
    if df.get_column("offset_s").is_null().any():
        raise InputError("clock-offset file has empty offsets", path=str(p))
    return dict(df.iter_rows())


def apply_offsets(samples: pl.DataFrame, topology: pl.DataFrame, offsets_s: dict[str, float]) -> pl.DataFrame:
    """Subtract each host's clock offset from its GPUs' timestamps."""
    if not offsets_s:
        return samples
    table = pl.DataFrame({"host": list(offsets_s), "_off_ns": [int(round(v * 1e9)) for v in offsets_s.values()]})
    host_of = topology.select("gpu", "host").join(table, on="host", how="left")
    out = samples.join(host_of.select("gpu", "_off_ns"), on="gpu", how="left", maintain_order="left")
    return out.with_columns(
        (pl.col("ts") - pl.duration(nanoseconds=pl.col("_off_ns").fill_null(0))).alias("ts")
    ).drop("_off_ns")
