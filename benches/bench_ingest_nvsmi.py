"""Ingest speed of the nvidia-smi CSV reader against plain ``polars.read_csv``.

Usage::

    python benches/bench_ingest_nvsmi.py [FILE ...] [--synthetic-rows N] [--repeat K]

For each file (default: the real 8-GPU H100 trace beside the repo, if present, and two
synthetic 8-GPU files of ``--synthetic-rows`` rows written to a temp folder: one
index-less with units like the H100 trace, one ``nounits`` with an index column like
the A100 trace) it times ``polars.read_csv(path)`` (every column as it infers them)
and ``tracekit.io.nvsmi.read(path)`` in the same run, alternating, best of
``--repeat``, and prints one JSON document: rows, seconds, rows/s and the ratio of
the rates (tracekit / polars; 1.0 = as fast as the plain read), with the machine's
load average before and after (the ratio moves with the load on small shared
machines).  The first read of each file warms the JIT (the byte-level kernel of
:mod:`tracekit.kernels.csvparse`) and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from tracekit.io import nvsmi
from tracekit.io.base import ReadOptions

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real_traces" / "training_profile" / "h100-8gpu-gpt-training_100ms.csv"


def synthetic_file(path: Path, rows: int, gpus: int = 8, seed: int = 0) -> Path:
    """An index-less nvidia-smi log like the real H100 one: 100 ms sweeps, units."""
    rng = np.random.default_rng(seed)
    sweeps = rows // gpus
    # GPUs 0..n-1 a few ms apart inside a sweep, sweeps 100 ms apart, 1 % of them late
    within = np.cumsum(rng.integers(0, 2, (sweeps, gpus)), axis=1)
    within[:, 0] = 0
    late = rng.random(sweeps) < 0.01
    within[late, 1:] += rng.integers(300, 1500, late.sum())[:, None]
    start_ms = np.concatenate([[0], np.cumsum(100 + within[:-1, -1])])
    ms = (start_ms[:, None] + within).ravel()
    start = np.datetime64("2025-07-26T23:32:09.703", "ms")
    ts = pl.Series((start + ms.astype("timedelta64[ms]")).astype("datetime64[ms]"))
    power = rng.uniform(60, 700, sweeps * gpus)
    util = rng.integers(0, 101, sweeps * gpus)
    frame = pl.DataFrame({"ts": ts, "p": power, "u": util}).select(
        pl.col("ts").dt.strftime("%Y/%m/%d %H:%M:%S%.3f").alias("timestamp"),
        pl.format(" {} W", pl.col("p").round(2)).alias(" power.draw [W]"),
        pl.format(" {} %", pl.col("u")).alias(" utilization.gpu [%]"),
        pl.lit(" 17 MiB").alias(" memory.used [MiB]"),
    )
    frame.write_csv(path, quote_style="never")
    return path


def synthetic_index_file(path: Path, rows: int, gpus: int = 8, seed: int = 1) -> Path:
    """A ``nounits`` log with an index column and ``,`` separators (like the A100 one):
    every value a plain number, which ``polars.read_csv`` parses itself."""
    rng = np.random.default_rng(seed)
    sweeps = rows // gpus
    ms = (np.arange(sweeps)[:, None] * 250 + np.arange(gpus)[None, :] // 4).ravel()
    start = np.datetime64("2026-07-18T16:09:47.503", "ms")
    frame = pl.DataFrame({
        "ts": pl.Series((start + ms.astype("timedelta64[ms]")).astype("datetime64[ms]")),
        "index": np.tile(np.arange(gpus), sweeps),
        "power.draw [W]": rng.uniform(60, 500, sweeps * gpus).round(2),
        "clocks.sm [MHz]": rng.integers(210, 1411, sweeps * gpus),
        "utilization.gpu [%]": rng.integers(0, 101, sweeps * gpus),
        "temperature.gpu": rng.integers(30, 80, sweeps * gpus),
    }).with_columns(pl.col("ts").dt.strftime("%Y/%m/%d %H:%M:%S%.3f").alias("timestamp")).drop("ts")
    frame.select("timestamp", pl.exclude("timestamp")).write_csv(path, quote_style="never")
    return path


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_file(path: Path, repeat: int) -> dict:
    opts = ReadOptions(utc_offset_s=0)
    nvsmi.read(path, opts)  # warm caches (file system, imports)
    t_pl = t_tk = float("inf")
    for _ in range(repeat):  # alternate, so both see the same machine load
        t, raw = best_of(lambda: pl.read_csv(path), 1)
        t_pl = min(t_pl, t)
        t, src = best_of(lambda: nvsmi.read(path, opts), 1)
        t_tk = min(t_tk, t)
    rows = raw.height
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "rows": rows,
        "gpus": src.samples.get_column("gpu").n_unique(),
        "rows_excluded": src.quality.n_excluded,
        "polars_read_csv_s": round(t_pl, 4),
        "tracekit_read_s": round(t_tk, 4),
        "polars_rows_per_s": round(rows / t_pl),
        "tracekit_rows_per_s": round(src.quality.rows_read / t_tk),
        "ratio": round(t_pl / t_tk, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--synthetic-rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    files = list(args.files)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        if not files:
            if REAL.is_file():
                files.append(REAL)
            if args.synthetic_rows > 0:
                files.append(synthetic_file(Path(tmp) / "synthetic_sweeps_units.csv", args.synthetic_rows))
                files.append(synthetic_index_file(Path(tmp) / "synthetic_index_nounits.csv", args.synthetic_rows))
        results = [bench_file(f, args.repeat) for f in files]
    print(json.dumps({
        "benchmark": "ingest_nvsmi",
        "polars": pl.__version__,
        "cpus": os.cpu_count(),
        "load_avg_1_5_15_before": load_before,
        "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
