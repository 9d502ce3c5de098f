"""Canonical Parquet ingest: ``tracekit.open(dataset)`` against plain
``polars.read_parquet`` and ``pyarrow.parquet.read_table`` of the same files, in one run.

Usage::

    python benches/bench_ingest_parquet.py [--gpus 64] [--seconds 480] [--repeat 3]

The dataset is generated once with ``tracekit.synth.training`` under
``/tmp/tracekit_bench/`` (kept between runs).  tracekit reads the samples straight into
its CSR arrays (``ts``, ``power_w``; GPU offsets from the manifest).  The baselines read
``gpu, ts, power_w`` into a frame/table.  Prints one JSON document with samples/s and
ratios (goal: tracekit >= 90 % of raw ``read_parquet``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

import tracekit
from tracekit import synth

CACHE = Path(os.environ.get("TRACEKIT_BENCH_DIR", "/tmp/tracekit_bench"))


def dataset(gpus: int, seconds: float) -> Path:
    path = CACHE / f"training_{gpus}x{int(seconds)}s"
    if not (path / "manifest.json").is_file():
        synth.training(path, gpus=gpus, seconds=seconds, rate_hz=1000.0, seed=1, overwrite=True)
    return path


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=480.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    path = dataset(args.gpus, args.seconds)
    files = sorted(glob.glob(str(path / "part-*.parquet")))
    n = tracekit.open(path).n_samples  # also warms imports
    cols = ["gpu", "ts", "power_w"]
    t_tk = best(lambda: tracekit.open(path).arrays(), args.repeat)
    t_pl = best(lambda: pl.read_parquet(files, columns=cols), args.repeat)
    t_pa = best(lambda: [pq.read_table(f, columns=cols) for f in files], args.repeat)
    out = {
        "bench": "ingest_parquet",
        "samples": n,
        "load_average": os.getloadavg()[0],
        "seconds": {"tracekit_open": t_tk, "polars_read_parquet": t_pl, "pyarrow_read_table": t_pa},
        "samples_per_s": {"tracekit_open": n / t_tk, "polars_read_parquet": n / t_pl, "pyarrow_read_table": n / t_pa},
        "ratio_tracekit_over_polars": t_pl / t_tk,
        "ratio_tracekit_over_pyarrow": t_pa / t_tk,
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
