"""Per-host clock offsets: from a file, or estimated by bounded cross-correlation.

Hosts log with their own clocks.  In synchronous training every GPU changes phase
at the same true time, so a host whose clock runs ahead shows its edges early.
``--align auto`` estimates each host's offset by cross-correlating the derivative
(rising edges) of the host's gridded power with that of the rest of the cluster, searching only
lags within +- ``max_offset_s`` (bounded), with parabolic refinement to a fraction
of a grid cell.  The offsets are then subtracted from the host's timestamps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

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
        Offsets relative to the cluster, re-centred so their median is zero.
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
    filled = np.vstack([fill_missing(row) for row in x])
    filled = np.where(np.isfinite(filled), filled, 0.0)
    # Rising edges only: compute starts right after the collective that ends each
    # iteration, on every GPU at the same true time, while compute ends differ
    # (stragglers, jitter).
    d = np.clip(np.diff(filled, axis=1), 0.0, None)
    total = d.sum(axis=0)
    max_lag = int(min(n // 4, round(max_offset_s / step_s)))
    # Hosts are aligned to the rest of the cluster, which is itself misaligned at
    # first: iterate, shifting each host by its estimate before the next round.
    cells = np.zeros(n_hosts, dtype=np.int64)
    for _ in range(ROUNDS):
        aligned = np.vstack([_shift(d[h], -cells[h]) for h in range(n_hosts)])
        total = aligned.sum(axis=0)
        step_cells = np.zeros(n_hosts, dtype=np.int64)
        for h in range(n_hosts):
            lag, frac = _best_lag(aligned[h], total - aligned[h], max_lag)
            step_cells[h] = lag
            offsets[h] = (cells[h] + lag + frac) * step_s
        if not step_cells.any():
            break
        cells = np.clip(cells + step_cells, -max_lag, max_lag)
    return offsets - np.median(offsets)


ROUNDS = 6


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    """x moved by k cells (positive: later), zero-filled."""
    out = np.zeros_like(x)
    if k > 0:
        out[k:] = x[:-k]
    elif k < 0:
        out[:k] = x[-k:]
    else:
        out[:] = x
    return out


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Integer lag (a later than b by lag cells) maximising the cross-correlation,
    and a parabolic sub-cell refinement."""
    if not a.any() or not b.any():
        return 0, 0.0
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.empty(len(lags))
    for j, lag in enumerate(lags):
        if lag >= 0:
            corr[j] = np.dot(a[lag:], b[: len(b) - lag])
        else:
            corr[j] = np.dot(a[: len(a) + lag], b[-lag:])
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
