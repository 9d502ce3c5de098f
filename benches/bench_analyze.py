"""``tracekit analyze`` against a Polars-only and a DuckDB pipeline, and the decode floor.

Usage::

    python benches/bench_analyze.py [--gpus 64] [--seconds 480] [--rate 1000] [--seed 1]
                                    [--repeat 3] [--data-dir /tmp/tracekit_bench]
                                    [--parts compile,tracekit,tracekit_cluster,polars,duckdb,decode]
                                    [--quick] [--json FILE]

Data: ``tracekit.synth.training(DIR, gpus=64, seconds=480, rate_hz=1000, seed=1)``
(30.72 M samples, no dropped samples, no clock offsets), generated once and cached
under ``--data-dir``.  ``--quick`` uses 16 GPUs x 60 s instead.

Each part runs in its own subprocess (so its peak RSS, VmHWM, is its own) and is
timed best of ``--repeat`` after its own warm-up:

- ``compile``: the JIT compile of everything ``analyze`` calls, with an empty
  ``NUMBA_CACHE_DIR`` (one run: the cost a user pays once per install).
- ``tracekit``: warm-up (``analyze`` on a tiny dataset: Numba cache load), then
  ``tracekit.open(path)`` + ``tracekit.analysis.analyze.analyze(ts)`` with default
  options (phases, host/rack/row/cluster aggregation on the 1 ms grid, swings for
  100 ms .. 60 s, ramps, spectrum, iterations, events).  tracekit does strictly
  more work than the baselines, which compute only the cluster series and swings.
- ``tracekit_cluster``: only what the baselines compute, with tracekit's own
  functions (``tracekit.open``, ``analysis.aggregate.make_grid`` /
  ``aggregate(level="cluster")``, ``analysis.swings.metrics`` without spectrum).
- ``polars``: ``scan_parquet`` (gpu, ts, power_w) -> sum of power per ts -> sort ->
  ``rolling_max - rolling_min`` over each window's cell count -> max and p99.
- ``duckdb``: the same in SQL (``GROUP BY ts`` ``SUM``, then ``MAX``/``MIN`` ``OVER
  (ORDER BY ts ROWS BETWEEN w-1 PRECEDING AND CURRENT ROW)``, full windows only).
- ``decode``: ``pyarrow.parquet.read_table`` of (ts, power_w) — what tracekit's
  reader decodes — and of (gpu, ts, power_w), plus a NumPy sum over the decoded
  ts and power arrays (the memory-bandwidth bound of one pass).

The samples lie on a 1 ms grid and every GPU reports every cell, so the per-ts sum
equals tracekit's cluster series (sum of per-GPU time-weighted cell means); the
parent checks cluster peak and swing max / p99 per window agree within
``0.01 W + 1e-7 x value`` and reports samples/s and speedups.  Prints one JSON
document (and writes it to ``--json`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import emit, load_avg

from tracekit.engine.memory import peak_rss_mib

WINDOWS = (("100ms", 0.1), ("1s", 1.0), ("2s", 2.0), ("5s", 5.0), ("60s", 60.0))
PARTS = ("compile", "tracekit", "tracekit_cluster", "polars", "duckdb", "decode")
ABS_TOL_W = 0.01
REL_TOL = 1e-7


def rss_mib() -> float:
    """Current RSS of this process (MiB), VmRSS."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def dataset_dir(data_dir: Path, gpus: int, seconds: float, rate_hz: float, seed: int) -> Path:
    return data_dir / f"training_g{gpus}_s{seconds:g}_r{rate_hz:g}_seed{seed}"


def ensure_dataset(path: Path, gpus: int, seconds: float, rate_hz: float, seed: int) -> dict:
    """Generate the dataset unless a complete one (manifest with the right row count) is there."""
    expected = gpus * int(round(seconds * rate_hz))
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("rows") == expected:
                return {"generated": False, "rows": expected}
        except ValueError:
            pass
    import tracekit.synth as synth

    t = time.perf_counter()
    synth.training(path, gpus=gpus, seconds=seconds, rate_hz=rate_hz, seed=seed, overwrite=True)
    return {"generated": True, "rows": expected, "generate_s": round(time.perf_counter() - t, 3)}


def dataset_files(path: Path) -> list[str]:
    return [str(path / f["file"]) for f in json.loads((path / "manifest.json").read_text())["files"]]


def tiny_dataset(root: Path) -> Path:
    """A tiny dataset for JIT warm-up (same code paths as the big one)."""
    import tracekit.synth as synth

    p = root / "warmup_g8_s12"
    if not (p / "manifest.json").is_file():
        synth.training(p, gpus=8, seconds=12, rate_hz=1000, seed=2, overwrite=True)
    return p


FIRST_RUN_RSS: list[float] = []


def best_of(fn, repeat: int):
    """(best seconds, last result); the previous result is dropped before each call,
    and the peak RSS after the first call is noted in ``FIRST_RUN_RSS``."""
    best, out = float("inf"), None
    for i in range(repeat):
        out = None
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
        if i == 0:
            FIRST_RUN_RSS.append(peak_rss_mib())
    return best, out


# ----------------------------------------------------------------------------- parts


def part_compile(args) -> dict:
    """Cold JIT: analyze the tiny dataset with an empty Numba cache (env set by the parent)."""
    t = time.perf_counter()
    import tracekit
    from tracekit.analysis.analyze import analyze

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    analyze(tracekit.open(tiny_dataset(Path(args.data_dir))))
    return {"import_s": import_s, "compile_and_first_analyze_s": time.perf_counter() - t,
            "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR")}


def part_tracekit(args) -> dict:
    t = time.perf_counter()
    import tracekit
    from tracekit.analysis.analyze import analyze

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    analyze(tracekit.open(tiny_dataset(Path(args.data_dir))))
    warmup_s = time.perf_counter() - t

    runs = []
    summary = None
    for _ in range(args.repeat):
        steps: list[tuple[str, float]] = []
        t0 = time.perf_counter()
        ts = tracekit.open(args.path)
        t1 = time.perf_counter()
        a = analyze(ts, progress=lambda name: steps.append((name, time.perf_counter())))
        t2 = time.perf_counter()
        marks = steps + [("end", t2)]
        step_s = {marks[i][0]: round(marks[i + 1][1] - marks[i][1], 4) for i in range(len(marks) - 1)}
        runs.append({"open_s": t1 - t0, "analyze_s": t2 - t1, "total_s": t2 - t0, "steps_s": step_s})
        summary = a.summary()
        n = ts.n_samples
        del a, ts
        if not FIRST_RUN_RSS:
            FIRST_RUN_RSS.append(peak_rss_mib())
    best = min(runs, key=lambda r: r["total_s"])
    cl = summary["levels"]["cluster"]["cluster"]
    return {
        "samples": n,
        "import_s": import_s,
        "warmup_s": warmup_s,
        "best_s": best["total_s"],
        "best_open_s": min(r["open_s"] for r in runs),
        "best_analyze_s": min(r["analyze_s"] for r in runs),
        "best_run": best,
        "runs_total_s": [round(r["total_s"], 4) for r in runs],
        "workload": summary["workload"],
        "iteration_period_s": (summary["iterations"] or {}).get("period_s"),
        "resolution_ms": summary["dataset"].get("resolution_ms"),
        "cluster_peak_w": cl["peak_w"],
        "swing": {w: {"max_w": cl["swing"][w]["max_w"], "p99_w": cl["swing"][w]["p99_w"]}
                  for w, _ in WINDOWS if w in cl["swing"]},
    }


def tracekit_cluster_swings(path, windows_s) -> dict:
    """Only what the baselines compute, with tracekit's own functions: open, the
    1 ms grid, the cluster sum of GPU cell means, swing metrics (no spectrum)."""
    import numpy as np

    import tracekit
    from tracekit.analysis import aggregate as agg
    from tracekit.analysis import swings as sw

    ts = tracekit.open(path)
    arrays = ts.arrays()
    step_s = float(np.median(np.diff(arrays.ts_ns[arrays.offsets[0]: arrays.offsets[1]]))) / 1e9
    grid = agg.make_grid(arrays, step_s)
    cluster = agg.aggregate(arrays, grid, 5.0, level="cluster")
    m = sw.metrics(cluster.power_w[0], cluster.coverage[0], grid.step_s, windows_s=windows_s, ramp_window_s=1.0,
                   provisioned_w=None, sum_of_peaks_w=None, with_spectrum=False)
    return {"samples": ts.n_samples, "cells": grid.n_cells, "cluster_peak_w": m["peak_w"],
            "swing": {w: {"max_w": v["max_w"], "p99_w": v["p99_w"]} for w, v in m["swing"].items()}}


def part_tracekit_cluster(args) -> dict:
    import tracekit  # noqa: F401

    windows_s = [w for _, w in WINDOWS]
    tracekit_cluster_swings(tiny_dataset(Path(args.data_dir)), windows_s)  # warm-up
    best, out = best_of(lambda: tracekit_cluster_swings(args.path, windows_s), args.repeat)
    return {"best_s": best, **out}


def polars_pipeline(files: list[str], step_s: float) -> dict:
    """Cluster series and swing windows with Polars only."""
    import polars as pl

    cluster = (
        pl.scan_parquet(files)
        .select("gpu", "ts", pl.col("power_w").cast(pl.Float64))
        .group_by("ts")
        .agg(pl.col("power_w").sum(), pl.col("gpu").len().alias("n_gpus"))
        .sort("ts")
        .collect()
    )
    p = cluster.get_column("power_w")
    exprs = [pl.col("power_w").max().alias("peak_w"), pl.col("n_gpus").min().alias("min_gpus"),
             pl.col("n_gpus").max().alias("max_gpus"), pl.len().alias("cells")]
    swings = []
    for label, w_s in WINDOWS:
        cells = max(1, int(round(w_s / step_s)))
        if cells < 2 or cells > len(p):
            continue
        s = pl.col("power_w").rolling_max(cells) - pl.col("power_w").rolling_min(cells)
        exprs += [s.max().alias(f"{label}_max"), s.quantile(0.99, interpolation="linear").alias(f"{label}_p99")]
        swings.append(label)
    row = cluster.select(exprs).row(0, named=True)
    return {
        "cells": row["cells"], "min_gpus_per_cell": row["min_gpus"], "max_gpus_per_cell": row["max_gpus"],
        "cluster_peak_w": row["peak_w"],
        "swing": {w: {"max_w": row[f"{w}_max"], "p99_w": row[f"{w}_p99"]} for w in swings},
    }


def part_polars(args) -> dict:
    import polars as pl

    files = dataset_files(Path(args.path))
    polars_pipeline([tiny_dataset_files(args)[0]], 0.001)  # warm-up (imports, thread pool)
    best, out = best_of(lambda: polars_pipeline(files, 1.0 / args.rate), args.repeat)
    return {"best_s": best, "threads": pl.thread_pool_size(), "polars": pl.__version__, **out}


def duckdb_pipeline(con, files: list[str], step_s: float) -> dict:
    """Cluster series and swing windows in DuckDB SQL."""
    wins = [(label, max(1, int(round(w_s / step_s)))) for label, w_s in WINDOWS]
    cols = ",\n".join(
        f"MAX(power_w) OVER (ORDER BY ts ROWS BETWEEN {c - 1} PRECEDING AND CURRENT ROW)"
        f" - MIN(power_w) OVER (ORDER BY ts ROWS BETWEEN {c - 1} PRECEDING AND CURRENT ROW) AS s_{label}"
        for label, c in wins if c >= 2
    )
    aggs = ",\n".join(
        f"MAX(CASE WHEN rn >= {c} THEN s_{label} END) AS max_{label},"
        f" quantile_cont(CASE WHEN rn >= {c} THEN s_{label} END, 0.99) AS p99_{label}"
        for label, c in wins if c >= 2
    )
    sql = f"""
    WITH cluster AS (
        SELECT ts, SUM(CAST(power_w AS DOUBLE)) AS power_w, COUNT(*) AS n_gpus
        FROM read_parquet({files!r})
        GROUP BY ts
    ), swings AS (
        SELECT power_w, n_gpus, ROW_NUMBER() OVER (ORDER BY ts) AS rn,
        {cols}
        FROM cluster
    )
    SELECT COUNT(*) AS cells, MIN(n_gpus) AS min_gpus, MAX(n_gpus) AS max_gpus, MAX(power_w) AS peak_w,
    {aggs}
    FROM swings
    """
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    row = dict(zip(names, cur.fetchone()))
    swing = {label: {"max_w": row[f"max_{label}"], "p99_w": row[f"p99_{label}"]}
             for label, c in wins if c >= 2 and row[f"max_{label}"] is not None}
    return {"cells": row["cells"], "min_gpus_per_cell": row["min_gpus"], "max_gpus_per_cell": row["max_gpus"],
            "cluster_peak_w": row["peak_w"], "swing": swing}


def part_duckdb(args) -> dict:
    import duckdb

    con = duckdb.connect()
    files = dataset_files(Path(args.path))
    duckdb_pipeline(con, [tiny_dataset_files(args)[0]], 0.001)  # warm-up
    best, out = best_of(lambda: duckdb_pipeline(con, files, 1.0 / args.rate), args.repeat)
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    return {"best_s": best, "threads": threads, "duckdb": duckdb.__version__, **out}


def part_decode(args) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    files = dataset_files(Path(args.path))

    def read(columns):
        return [pq.read_table(f, columns=columns) for f in files]

    read(["ts", "power_w"])  # page cache, imports
    t_tp, tables = best_of(lambda: read(["ts", "power_w"]), args.repeat)
    n = sum(t.num_rows for t in tables)
    ts = np.concatenate([t.column("ts").to_numpy().view(np.int64) for t in tables])
    power = np.concatenate([t.column("power_w").to_numpy() for t in tables])
    del tables
    t_sum, _ = best_of(lambda: (ts.sum(), power.sum()), args.repeat)
    nbytes = ts.nbytes + power.nbytes
    del ts, power
    t_all, tables = best_of(lambda: read(["gpu", "ts", "power_w"]), args.repeat)
    del tables
    return {
        "samples": n,
        "file_bytes": sum(Path(f).stat().st_size for f in files),
        "read_ts_power_s": t_tp,
        "read_gpu_ts_power_s": t_all,
        "numpy_sum_ts_power_s": t_sum,
        "decoded_bytes_ts_power": nbytes,
        "numpy_sum_gib_per_s": nbytes / t_sum / 2**30,
    }


def tiny_dataset_files(args) -> list[str]:
    return dataset_files(tiny_dataset(Path(args.data_dir)))


PART_FUNCS = {"compile": part_compile, "tracekit": part_tracekit, "tracekit_cluster": part_tracekit_cluster,
              "polars": part_polars, "duckdb": part_duckdb, "decode": part_decode}


def run_part(name: str, args, path: Path) -> dict:
    """One part in a fresh interpreter; its JSON report with wall time, peak RSS and load."""
    cmd = [sys.executable, __file__, "--part", name, "--path", str(path), "--repeat", str(args.repeat),
           "--rate", str(args.rate), "--data-dir", str(args.data_dir)]
    env = dict(os.environ)
    tmp_cache = None
    if name == "compile":
        tmp_cache = tempfile.mkdtemp(prefix="tracekit-bench-numba-", dir="/tmp")
        env["NUMBA_CACHE_DIR"] = tmp_cache
    load_before = load_avg()
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        if tmp_cache:
            shutil.rmtree(tmp_cache, ignore_errors=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}",
                "stderr_tail": proc.stderr[-2000:], "wall_s": wall}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update({"wall_s": round(wall, 3), "load_avg_before": load_before, "load_avg_after": load_avg()})
    return out


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= ABS_TOL_W + REL_TOL * abs(b)


def compare(tk: dict, other: dict) -> dict:
    """Agreement of cluster peak and swing max / p99 per window (tracekit vs a baseline)."""
    checks = {"cluster_peak_w": [tk["cluster_peak_w"], other["cluster_peak_w"]]}
    for w, _ in WINDOWS:
        a, b = tk["swing"].get(w), other["swing"].get(w)
        checks[f"swing_{w}_max_w"] = [a and a["max_w"], b and b["max_w"]]
        checks[f"swing_{w}_p99_w"] = [a and a["p99_w"], b and b["p99_w"]]
    diffs = {k: (None if x is None or y is None else round(abs(x - y), 6)) for k, (x, y) in checks.items()}
    ok = all(_close(x, y) for x, y in checks.values())
    return {"agree": ok, "max_abs_diff_w": max((d for d in diffs.values() if d is not None), default=None),
            "abs_diff_w": diffs, "every_cell_has_all_gpus": other["min_gpus_per_cell"] == other["max_gpus_per_cell"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=480.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/tracekit_bench"))
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--quick", action="store_true", help="16 GPUs x 60 s, best of 2")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.part:  # child: one part, one JSON line
        out = PART_FUNCS[args.part](args)
        out["peak_rss_mib"] = round(peak_rss_mib(), 1)
        if FIRST_RUN_RSS:
            out["peak_rss_first_run_mib"] = round(FIRST_RUN_RSS[0], 1)
        print(json.dumps(out))
        return out

    if args.quick:
        args.gpus, args.seconds, args.repeat = 16, 60.0, 2
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = dataset_dir(args.data_dir, args.gpus, args.seconds, args.rate, args.seed)
    load_start = load_avg()
    data = ensure_dataset(path, args.gpus, args.seconds, args.rate, args.seed)
    tiny_dataset(args.data_dir)
    samples = data["rows"]
    results = {name: run_part(name, args, path) for name in parts}

    report: dict = {
        "benchmark": "analyze",
        "dataset": {"path": str(path), "gpus": args.gpus, "seconds": args.seconds, "rate_hz": args.rate,
                    "seed": args.seed, "samples": samples, **data},
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": load_start,
                    "load_avg_end": load_avg()},
        "parts": results,
    }
    summary: dict = {}
    for name in ("tracekit", "tracekit_cluster", "polars", "duckdb"):
        r = results.get(name, {})
        if "best_s" in r:
            summary[f"{name}_s"] = round(r["best_s"], 4)
            summary[f"{name}_samples_per_s"] = round(samples / r["best_s"])
            summary[f"{name}_peak_rss_mib"] = r.get("peak_rss_first_run_mib", r["peak_rss_mib"])
    dec = results.get("decode", {})
    if "read_ts_power_s" in dec:
        summary["decode_ts_power_s"] = round(dec["read_ts_power_s"], 4)
        summary["decode_samples_per_s"] = round(samples / dec["read_ts_power_s"])
        summary["decode_gpu_ts_power_s"] = round(dec["read_gpu_ts_power_s"], 4)
        summary["decode_peak_rss_mib"] = dec.get("peak_rss_first_run_mib", dec["peak_rss_mib"])
    for tk_name in ("tracekit", "tracekit_cluster"):
        tk = results.get(tk_name, {})
        if "best_s" not in tk:
            continue
        for name in ("polars", "duckdb"):
            r = results.get(name, {})
            if "best_s" in r:
                summary[f"{tk_name}_speedup_vs_{name}"] = round(r["best_s"] / tk["best_s"], 3)
                summary[f"{tk_name}_agreement_vs_{name}"] = compare(tk, r)
        if "read_ts_power_s" in dec:
            summary[f"{tk_name}_over_decode_floor"] = round(tk["best_s"] / dec["read_ts_power_s"], 3)
    comp = results.get("compile", {})
    if "compile_and_first_analyze_s" in comp:
        summary["cold_compile_s"] = round(comp["compile_and_first_analyze_s"], 3)
    tk = results.get("tracekit", {})
    if "warmup_s" in tk:
        summary["warm_cache_load_s"] = round(tk["warmup_s"], 3)
    report["summary"] = summary
    emit(report, Path(args.json) if args.json else None)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
