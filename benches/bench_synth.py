"""Speed and memory of the synthetic-trace generator.

Usage::

    python benches/bench_synth.py [--gpus 1024] [--seconds 100] [--rate 1000] [--repeat 3]
                                  [--frame-gpus 64] [--write] [--write-gpus 64]
                                  [--write-seconds 300] [--out DIR] [--json FILE]

Measured in one run, after warming the JIT (compile time reported separately):

- ``generate``: rendering the samples of ``--gpus`` x ``--seconds`` x ``--rate`` into
  NumPy arrays batch by batch on all cores (the generator's own work; no frame, no
  I/O), best of ``--repeat``.  Baseline: NumPy doing the least comparable work on
  the same sizes (one ``Generator.normal`` draw per sample plus a level per sample
  with ``np.repeat``), single-threaded.
- ``in_memory``: ``tracekit.synth.training(out_dir=None, ...)`` end to end on
  ``--frame-gpus`` GPUs (Polars frame with string gpu ids included).
- ``write`` (with ``--write``): streaming a ``--write-gpus`` x ``--write-seconds``
  dataset to ``--out`` (default a temp folder under /tmp, deleted afterwards) with the
  peak RSS of this process (``resource.getrusage``), and the bytes written.

Prints one JSON document (and writes it to ``--json`` if given).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import emit

import numpy as np

from tracekit.engine.memory import peak_rss_mib


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_only(args) -> dict:
    """Stream one dataset to disk and report time, size and this process's peak RSS."""
    import tracekit.synth as synth

    tmp_root = None
    if args.out is None:
        tmp_root = Path(tempfile.mkdtemp(prefix="tracekit-bench-synth-", dir="/tmp"))
        out = tmp_root / "ds"
    else:
        out = args.out
    synth.training(gpus=1, seconds=1.0, rate_hz=100.0, ramp_s=0.1)  # JIT warm-up (cached)
    rss_before = peak_rss_mib()
    t = time.perf_counter()
    synth.training(out, gpus=args.write_gpus, seconds=args.write_seconds, rate_hz=args.rate, overwrite=True)
    dt = time.perf_counter() - t
    samples = args.write_gpus * int(round(args.write_seconds * args.rate))
    size = dir_bytes(out)
    report = {
        "gpus": args.write_gpus, "seconds": args.write_seconds, "rate_hz": args.rate, "samples": samples,
        "s": dt, "samples_per_s": samples / dt, "bytes": size, "bytes_per_sample": size / samples,
        "peak_rss_mib_before_write": rss_before, "peak_rss_mib": peak_rss_mib(),
    }
    if tmp_root is not None:
        shutil.rmtree(tmp_root, ignore_errors=True)
    print(json.dumps(report))
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=100.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--frame-gpus", type=int, default=64)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--write-gpus", type=int, default=64)
    ap.add_argument("--write-seconds", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_only:
        return write_only(args)

    rss_start = peak_rss_mib()
    t0 = time.perf_counter()
    import tracekit.synth as synth
    from tracekit.synth import _common as C

    warm = synth.training(C.PLAN_ONLY, gpus=2, seconds=2.0, rate_hz=100.0, ramp_s=0.2)
    C.render_batch(warm, 0, 2)
    synth.inference(gpus=1, seconds=1.0, rate_hz=100.0)
    compile_s = time.perf_counter() - t0
    result: dict = {"compile_and_import_s": compile_s}

    # -- generation into arrays ----------------------------------------------------
    plan = synth.training(C.PLAN_ONLY, gpus=args.gpus, seconds=args.seconds, rate_hz=args.rate)
    samples = plan.n_gpus * plan.n_samples
    best = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        rows = 0
        for b in C.iter_batches(plan):
            rows += b.rows
        best = min(best, time.perf_counter() - t)
    gen = {"gpus": args.gpus, "seconds": args.seconds, "rate_hz": args.rate, "samples": samples,
           "rows": rows, "threads": plan.threads, "best_s": best, "samples_per_s": samples / best}

    # NumPy baseline on one batch's worth of samples per GPU, extrapolated per sample
    n = plan.n_samples
    per = max(1, C.BATCH_SAMPLES // n)
    gpus_np = min(per, args.gpus)
    np_rng = np.random.default_rng(0)
    levels = np.array([700.0, 137.5])
    t = time.perf_counter()
    for _ in range(gpus_np):
        idx = np.repeat(np.arange(int(args.seconds)) % 2, int(args.rate))[:n]
        power = (levels[idx] + 10.0 * np_rng.standard_normal(idx.shape[0])).astype(np.float32)
        ts = np.int64(1_735_689_600_000_000_000) + np.arange(idx.shape[0], dtype=np.int64) * 1_000_000
        del power, ts
    np_s = time.perf_counter() - t
    gen["numpy_baseline_samples_per_s"] = gpus_np * n / np_s
    gen["ratio_vs_numpy"] = gen["samples_per_s"] / gen["numpy_baseline_samples_per_s"]
    result["generate"] = gen

    # -- in-memory frame end to end ------------------------------------------------
    t = time.perf_counter()
    res = synth.training(gpus=args.frame_gpus, seconds=args.seconds, rate_hz=args.rate)
    dt = time.perf_counter() - t
    result["in_memory"] = {"gpus": args.frame_gpus, "samples": res.samples.height, "s": dt,
                           "samples_per_s": res.samples.height / dt}
    del res

    # -- streaming write, in a fresh process so its peak RSS is its own ----------------
    if args.write:
        cmd = [sys.executable, __file__, "--write-only", "--write-gpus", str(args.write_gpus),
               "--write-seconds", str(args.write_seconds), "--rate", str(args.rate)]
        if args.out is not None:
            cmd += ["--out", str(args.out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result["write"] = json.loads(proc.stdout)
    result["peak_rss_mib"] = peak_rss_mib()
    result["rss_at_start_mib"] = rss_start
    emit(result, Path(args.json) if args.json else None)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
