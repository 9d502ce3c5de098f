"""Streaming at scale: 100 M and 1 B samples under a memory limit, and Dask 1 vs 2 workers.

Usage::

    python benches/bench_stream.py [--quick] [--json FILE] [--data-dir benches/bench_data]

Data: ``tracekit synth training --gpus 1024 --seconds S --rate 1000 --seed 1`` for
S = 100 (102.4 M samples) and S = 1000 (1.024 B samples, ~2.8 GB of Parquet), generated
once into the git-ignored ``benches/bench_data/`` and reused while its manifest has the
expected row count (``--quick``: 256 GPUs x 40 s and x 400 s).

Cases, each ``tracekit analyze DIR --json [FLAGS]`` as a fresh process (wall time and
the child's own peak RSS, ``ru_maxrss`` printed by the child at exit):

1. both sets with the default ``--memory-limit`` (2 GiB), ``--repeat`` runs each
   (medians of wall time and peak RSS, every run listed), and the large set once with
   ``--memory-limit 1GiB``: the targets are <= 60 s and <= 2 GiB for 1 B samples, and
   peak RSS flat within 25 % from 100 M to 1 B samples;
2. the large set on a ``dask.distributed.LocalCluster`` (worker processes with one
   thread each, loopback) through ``--scheduler``: 1 worker vs 2 workers (target: 2
   workers >= 1.6x the speed of 1), both summaries equal to the local one (up to
   float summation order, rel. 1e-9).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _util import emit, load_avg

REPO = Path(__file__).resolve().parent.parent
TRACEKIT = str(Path(sys.executable).with_name("tracekit"))


def ensure(data_dir: Path, gpus: int, seconds: int) -> tuple[Path, int, float | None]:
    out = data_dir / f"train_{gpus}x{seconds}s"
    rows = gpus * seconds * 1000
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("rows") == rows:
        return out, rows, None
    t = time.perf_counter()
    subprocess.run([TRACEKIT, "synth", "training", "-o", str(out), "--gpus", str(gpus), "--seconds", str(seconds),
                    "--rate", "1000", "--seed", "1", "--force"], check=True, stdout=subprocess.DEVNULL)
    return out, rows, round(time.perf_counter() - t, 3)


#: Runs ``tracekit`` (its ``main``) in this interpreter and prints the process's own
#: peak RSS (``ru_maxrss``, KiB on Linux) to stderr at exit.
_WRAPPER = ("import atexit, resource, sys\n"
            "atexit.register(lambda: sys.stderr.write('PEAK_RSS_KIB=%d\\n' % "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
            "from tracekit.cli import main\n"
            "sys.argv = ['tracekit'] + sys.argv[1:]\n"
            "main()\n")


def run_analyze(path: Path, flags: list[str]) -> dict:
    """One analyze as a child process: wall s, the child's own peak RSS MiB, its summary."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, "analyze", str(path), "--json", *flags],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"analyze {path} {flags} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    rss = [int(line.split("=")[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KIB=")]
    return {"wall_s": round(wall, 3), "summary": json.loads(proc.stdout), "peak_rss_mib": round(rss[-1] / 1024, 1)}


def timed(path: Path, flags: list[str], rows: int, repeat: int = 1) -> dict:
    """``repeat`` runs: the median wall time and peak RSS (a run's peak varies with how
    the threads' batches overlap), with every run's figures."""
    runs = [run_analyze(path, flags) for _ in range(repeat)]
    s = runs[-1]["summary"]
    if s["dataset"]["samples"] != rows:
        raise SystemExit(f"{path}: analyzed {s['dataset']['samples']} samples, expected {rows}")
    wall = statistics.median(r["wall_s"] for r in runs)
    return {"flags": flags, "wall_s": round(wall, 3), "samples": rows, "samples_per_s": round(rows / wall),
            "peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in runs), 1),
            "runs_wall_s": [r["wall_s"] for r in runs], "runs_peak_rss_mib": [r["peak_rss_mib"] for r in runs],
            "engine": s["dataset"].get("engine"), "summary": s}


def _close(a, b, path="") -> list[str]:
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys differ"]
        return [d for k in a if k != "engine" for d in _close(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        ok = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
        return [] if ok else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--data-dir", type=Path, default=REPO / "benches" / "bench_data")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each default case (medians reported)")
    args = ap.parse_args(argv)
    gpus, small_s, large_s = (256, 40, 400) if args.quick else (1024, 100, 1000)
    load0 = load_avg()
    t0 = time.perf_counter()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    small, small_rows, gen_small = ensure(args.data_dir, gpus, small_s)
    large, large_rows, gen_large = ensure(args.data_dir, gpus, large_s)
    # warm the Numba cache and the page cache of the files
    run_analyze(small, [])
    cases = {
        "small_default": timed(small, [], small_rows, args.repeat),
        "large_default": timed(large, [], large_rows, args.repeat),
    }
    cases["large_1gib"] = timed(large, ["--memory-limit", "1GiB"], large_rows)
    out = {
        "meta": {"cpus": os.cpu_count(), "load_avg_start": load0, "quick": args.quick,
                 "generation_s": {"small": gen_small, "large": gen_large}},
        "datasets": {"small": {"path": str(small), "samples": small_rows},
                     "large": {"path": str(large), "samples": large_rows}},
    }
    ref = cases["large_default"]["summary"]
    out["cases"] = {k: {kk: vv for kk, vv in v.items() if kk != "summary"} for k, v in cases.items()}
    out["checks"] = {
        "large_within_60s": cases["large_default"]["wall_s"] <= 60,
        "large_rss_within_2gib": cases["large_default"]["peak_rss_mib"] <= 2048,
        "rss_large_over_small": round(cases["large_default"]["peak_rss_mib"] / cases["small_default"]["peak_rss_mib"], 3),
        "1gib_equals_default": not _close(ref, cases["large_1gib"]["summary"]),
    }
    if not args.no_dask:
        from distributed import LocalCluster

        dask = {}
        for n in (1, 2):
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None, silence_logs=40) as cluster:
                run_analyze(small, ["--scheduler", cluster.scheduler_address])  # warm the workers
                r = run_analyze(large, ["--scheduler", cluster.scheduler_address])
                diffs = _close(ref, r["summary"])
                dask[f"{n}_worker"] = {"wall_s": r["wall_s"], "samples_per_s": round(large_rows / r["wall_s"]),
                                       "engine": r["summary"]["dataset"].get("engine"),
                                       "equals_local": not diffs, "first_diffs": diffs[:3]}
        dask["speedup_2_vs_1"] = round(dask["1_worker"]["wall_s"] / dask["2_worker"]["wall_s"], 3)
        out["dask"] = dask
    out["meta"]["load_avg_end"] = load_avg()
    out["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
