"""Scaling of ``tracekit analyze``: wall time and peak RSS from 64 to 4096 GPUs and 10 s to 1000 s.

Usage::

    python benches/bench_scaling.py [--gpus-axis 64,256,1024,4096] [--seconds-axis 10,100,1000]
                                    [--fixed-seconds 10] [--fixed-gpus 64] [--rate 1000]
                                    [--gpu-model H100] [--seed 1] [--repeat 3]
                                    [--data-dir benches/bench_data/scaling]
                                    [--analyze-args="--memory-limit 2GiB"] [--quick] [--json FILE]

Data: ``tracekit synth training -o DIR --gpus G --seconds S --rate 1000 --gpu-model H100
--seed 1`` (canonical Parquet, every GPU reports every 1 ms cell), generated once per
(G, S, rate, model, seed) into ``--data-dir`` (git-ignored ``bench_data/``) and reused
while its manifest has the expected row count.  Generation time is reported but not
part of the measurement.

Cases: the GPU axis at ``--fixed-seconds`` (64, 256, 1024, 4096 GPUs x 10 s) and the
time axis at ``--fixed-gpus`` (64 GPUs x 10, 100, 1000 s); ``--quick``: 64, 256 GPUs
and 10, 100 s, one run each.  Each case runs ``tracekit analyze DIR --json [FLAGS]``
as a fresh process (the console script beside this interpreter), ``--repeat`` times, and
reports the best wall time, samples/s, the peak RSS of the child (``ru_maxrss`` from
``os.wait4``; this parent imports only the standard library, so the RSS a child
inherits at ``vfork`` is negligible, see ``parent_peak_rss_mib``) and RSS per sample.
Before the cases, one analyze of an 8 GPU x 4 s dataset warms the Numba cache and
the imports; its wall time is the fixed start-up cost (interpreter, imports, cache
load), reported as ``overhead.best_s``; ``wall_minus_overhead_s`` subtracts it.

Extra analyze flags (for instance the streaming executor's ``--memory-limit``) come
from ``--analyze-args=FLAGS`` (with ``=``: the value starts with ``--``) or, when that
is not given, the ``TRACEKIT_BENCH_ANALYZE_ARGS`` environment variable; the flags
used are recorded in the output.  Every run's
``dataset.samples`` must equal the generated sample count (G x S x rate), else the
benchmark fails.  Prints one JSON document (and writes it to ``--json`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import emit, load_avg, peak_rss_mib, tracekit_script

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO / "benches" / "bench_data" / "scaling"
ENV_ARGS = "TRACEKIT_BENCH_ANALYZE_ARGS"


def run_child(cmd: list[str], capture: bool = False) -> dict:
    """Run ``cmd`` once: wall seconds, peak RSS (``os.wait4``), stdout if ``capture``.
    Output goes to temporary files, so ``wait4`` cannot deadlock on a full pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out if capture else subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        rc = os.waitstatus_to_exitcode(status)
        proc.returncode = rc
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        if rc != 0:
            raise SystemExit(f"bench_scaling: {' '.join(cmd)} failed (exit {rc}): {stderr.strip()[-2000:]}")
        res = {"wall_s": wall, "max_rss_mib": usage.ru_maxrss / 1024.0,
               "user_s": usage.ru_utime, "sys_s": usage.ru_stime}
        if capture:
            out.seek(0)
            res["stdout"] = out.read().decode(errors="replace")
    return res


def dataset_dir(root: Path, gpus: int, seconds: float, rate_hz: float, model: str, seed: int) -> Path:
    return root / f"training_g{gpus}_s{seconds:g}_r{rate_hz:g}_{model}_seed{seed}"


def ensure_dataset(script: str, root: Path, gpus: int, seconds: float, rate_hz: float, model: str,
                   seed: int) -> dict:
    """Generate the dataset with ``tracekit synth training`` unless a complete one is there."""
    path = dataset_dir(root, gpus, seconds, rate_hz, model, seed)
    expected = gpus * int(round(seconds * rate_hz))
    info = {"path": str(path), "samples": expected}
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("rows") == expected:
                return {**info, "generated": False, "bytes": dir_bytes(path)}
        except ValueError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [script, "synth", "training", "-o", str(path), "--gpus", str(gpus), "--seconds", f"{seconds:g}",
           "--rate", f"{rate_hz:g}", "--gpu-model", model, "--seed", str(seed), "--force"]
    r = run_child(cmd)
    rows = json.loads(manifest.read_text()).get("rows")
    if rows != expected:
        raise SystemExit(f"bench_scaling: {path}: synth wrote {rows} rows, expected {expected}")
    return {**info, "generated": True, "generate_s": round(r["wall_s"], 3),
            "generate_peak_rss_mib": round(r["max_rss_mib"], 1), "bytes": dir_bytes(path)}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def analyze_case(script: str, path: str, flags: list[str], repeat: int, expected: int) -> dict:
    """``tracekit analyze PATH --json FLAGS`` ``repeat`` times: best wall, peak RSS, checks."""
    cmd = [script, "analyze", path, "--json", *flags]
    runs = []
    for _ in range(repeat):
        r = run_child(cmd, capture=True)
        samples = int(json.loads(r.pop("stdout"))["dataset"]["samples"])
        if samples != expected:
            raise SystemExit(f"bench_scaling: {path}: analyze reports dataset.samples = {samples:,}, "
                             f"the dataset has {expected:,}")
        runs.append(r)
    best = min(runs, key=lambda r: r["wall_s"])
    return {"best_s": best["wall_s"], "runs_s": [round(r["wall_s"], 3) for r in runs],
            "user_s": best["user_s"], "sys_s": best["sys_s"],
            "peak_rss_mib": max(r["max_rss_mib"] for r in runs), "samples_checked": True}


def parse_axis(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus-axis", default="64,256,1024,4096")
    ap.add_argument("--seconds-axis", default="10,100,1000")
    ap.add_argument("--fixed-seconds", type=float, default=10.0, help="trace length on the GPU axis")
    ap.add_argument("--fixed-gpus", type=int, default=64, help="GPUs on the time axis")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--gpu-model", default="H100")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--analyze-args", default=None,
                    help=f"extra `tracekit analyze` flags (default: ${ENV_ARGS}, else none)")
    ap.add_argument("--quick", action="store_true", help="64, 256 GPUs and 10, 100 s, --repeat 1")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.gpus_axis, args.seconds_axis, args.repeat = "64,256", "10,100", 1
    flags_text = args.analyze_args if args.analyze_args is not None else os.environ.get(ENV_ARGS, "")
    flags = shlex.split(flags_text)

    load_start = load_avg()
    script = tracekit_script("bench_scaling")
    cases: list[tuple[str, int, float]] = [("gpus", g, args.fixed_seconds) for g in parse_axis(args.gpus_axis, int)]
    cases += [("seconds", args.fixed_gpus, s) for s in parse_axis(args.seconds_axis, float)]

    # -- data (generated once, cached) -----------------------------------------------
    datasets: dict[tuple[int, float], dict] = {}
    for _, g, s in cases:
        if (g, s) not in datasets:
            print(f"[scaling] data {g} GPUs x {s:g} s", file=sys.stderr, flush=True)
            datasets[(g, s)] = ensure_dataset(script, args.data_dir, g, s, args.rate, args.gpu_model, args.seed)
    warm = ensure_dataset(script, args.data_dir, 8, 4.0, args.rate, args.gpu_model, args.seed)

    # -- warm-up / fixed overhead ------------------------------------------------------
    analyze_case(script, warm["path"], flags, 1, warm["samples"])
    overhead = analyze_case(script, warm["path"], flags, 3, warm["samples"])

    # -- the cases (a dataset shared by both axes is analyzed once) ---------------------
    measured: dict[tuple[int, float], dict] = {}
    rows = []
    for axis, g, s in cases:
        d = datasets[(g, s)]
        if (g, s) not in measured:
            print(f"[scaling] analyze {g} GPUs x {s:g} s ({d['samples']:,} samples)", file=sys.stderr, flush=True)
            load_before = load_avg()
            m = analyze_case(script, d["path"], flags, args.repeat, d["samples"])
            m["load_avg_before"] = load_before
            measured[(g, s)] = m
        m = measured[(g, s)]
        n = d["samples"]
        rows.append({
            "axis": axis, "gpus": g, "seconds": s, "samples": n, "dataset_bytes": d["bytes"],
            "best_s": round(m["best_s"], 4), "runs_s": m["runs_s"],
            "wall_minus_overhead_s": round(m["best_s"] - overhead["best_s"], 4),
            "samples_per_s": round(n / m["best_s"]),
            "samples_per_s_minus_overhead": round(n / max(m["best_s"] - overhead["best_s"], 1e-9)),
            "cpu_s": round(m["user_s"] + m["sys_s"], 3),
            "peak_rss_mib": round(m["peak_rss_mib"], 1),
            "rss_bytes_per_sample": round(m["peak_rss_mib"] * 2**20 / n, 2),
            "rss_over_overhead_bytes_per_sample": round((m["peak_rss_mib"] - overhead["peak_rss_mib"]) * 2**20 / n, 2),
            "samples_checked": m["samples_checked"], "load_avg_before": m["load_avg_before"],
        })

    report = {
        "benchmark": "scaling",
        "analyze_command": f"tracekit analyze PATH --json {flags_text}".strip(),
        "analyze_flags": flags,
        "rate_hz": args.rate, "gpu_model": args.gpu_model, "seed": args.seed, "repeat": args.repeat,
        "data_dir": str(args.data_dir),
        "overhead": {"gpus": 8, "seconds": 4.0, "samples": warm["samples"], "best_s": round(overhead["best_s"], 4),
                     "runs_s": overhead["runs_s"], "peak_rss_mib": round(overhead["peak_rss_mib"], 1)},
        "cases": rows,
        "datasets": [{"gpus": g, "seconds": s, **d} for (g, s), d in datasets.items()],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": load_start,
                    "load_avg_end": load_avg(), "parent_peak_rss_mib": round(peak_rss_mib(), 1)},
    }
    return emit(report, args.json)


if __name__ == "__main__":
    main(sys.argv[1:])
