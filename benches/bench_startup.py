"""Cold and warm start: ``tracekit --help``, ``import tracekit`` and the first ``tracekit analyze``.

Usage::

    python benches/bench_startup.py [--path sample_traces/h100_training] [--repeat 5]
                                    [--analyze-repeat 3] [--quick] [--json FILE]

Every measurement is one fresh subprocess, timed by wall clock from this (light,
stdlib-only) parent; the peak RSS of a child is its ``ru_maxrss`` from ``os.wait4``:

- ``python -c pass``: the interpreter alone (the floor under everything else);
- ``import tracekit``, ``import tracekit.cli`` and ``import tracekit.analysis.analyze``:
  in-process ``perf_counter`` around the import (best of ``--repeat``), and which heavy
  modules (numba, polars, pyarrow, numpy, scipy, rich) each loaded;
- ``tracekit --help`` warm (after one untimed run), best of ``--repeat``: the console
  script in the interpreter's ``bin`` folder, and the ``tracekit`` found on ``PATH``
  (a pyenv shim here, which adds a bash start) — target <= 0.3 s; and a check that
  ``--help`` imports no Numba;
- ``tracekit analyze PATH --json`` with ``NUMBA_CACHE_DIR`` pointing at a fresh empty
  folder: ``cold`` (the JIT compiles every kernel analyze calls; target <= 15 s), then
  the same command again with that cache, best of ``--analyze-repeat``: ``warm``
  (target <= 2 s).  The size of the Numba cache folder after the cold run is reported
  (bytes, files).  Python's own bytecode caches are not emptied (a pip install writes
  them), nor the OS page cache.

The sample count that ``analyze`` reports (``dataset.samples``) is checked to be the
same in every run.  ``--quick``: ``--repeat 3``, ``--analyze-repeat 1``.  Prints one
JSON document (and writes it to ``--json`` if given).
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

from _util import emit, load_avg, peak_rss_mib, tracekit_script

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("numba", "polars", "pyarrow", "numpy", "scipy", "rich")
TARGETS_S = {"help_warm": 0.3, "analyze_cold": 15.0, "analyze_warm": 2.0}


def run_child(cmd: list[str], env: dict | None = None, capture: bool = False) -> dict:
    """Run ``cmd`` once; wall seconds, exit code, peak RSS (``os.wait4``), stdout (if
    ``capture``) and the end of stderr.  Output goes to temporary files, so ``wait4``
    cannot deadlock on a full pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out if capture else subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = {"wall_s": wall, "rc": proc.returncode, "max_rss_mib": usage.ru_maxrss / 1024.0,
                  "stderr": err.read().decode(errors="replace")[-2000:]}
        if capture:
            result["stdout"] = out.read().decode(errors="replace")
    if result["rc"] != 0:
        raise SystemExit(f"bench_startup: {' '.join(cmd)} failed (exit {result['rc']}): {result['stderr'].strip()}")
    return result


def best_of(cmd: list[str], repeat: int, env: dict | None = None, capture: bool = False) -> dict:
    """Best wall time of ``repeat`` runs, all times, and the peak RSS of the best run."""
    runs = [run_child(cmd, env, capture) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["wall_s"])
    return {"best_s": best["wall_s"], "runs_s": [round(r["wall_s"], 4) for r in runs],
            "max_rss_mib": best["max_rss_mib"], "last": runs[-1]}


def child_json(stderr: str) -> dict:
    return json.loads(stderr.strip().splitlines()[-1])


IMPORT_SNIPPET = """
import importlib, json, sys, time
t = time.perf_counter()
importlib.import_module(sys.argv[1])
dt = time.perf_counter() - t
sys.stderr.write(json.dumps({"import_s": dt, "heavy": [m for m in %r if m in sys.modules]}) + "\\n")
""" % (HEAVY,)

#: Modules whose import is timed: the package, the CLI (what ``--help`` loads), and
#: the analysis entry point (what ``analyze`` loads before any kernel runs).
IMPORTS = ("tracekit", "tracekit.cli", "tracekit.analysis.analyze")

HELP_SNIPPET = f"""
import json, sys
sys.argv = ["tracekit", "--help"]
from tracekit.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules]}}) + "\\n")
"""


def dir_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def analyze_samples(stdout: str) -> int:
    return int(json.loads(stdout)["dataset"]["samples"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="sample_traces/h100_training", help="what `tracekit analyze` reads")
    ap.add_argument("--repeat", type=int, default=5, help="runs of --help / import (best of)")
    ap.add_argument("--analyze-repeat", type=int, default=3, help="warm analyze runs (best of)")
    ap.add_argument("--quick", action="store_true", help="--repeat 3 --analyze-repeat 1")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.analyze_repeat = 3, 1

    load_start = load_avg()
    script = tracekit_script("bench_startup")
    path_cmd = shutil.which("tracekit")
    py = sys.executable
    result: dict = {"benchmark": "startup", "path": args.path, "tracekit_script": script, "repeat": args.repeat,
                    "analyze_repeat": args.analyze_repeat}

    # -- interpreter, import, --help (warm: one untimed run first) ----------------------
    run_child([py, "-c", "import tracekit.cli"])
    result["python_pass"] = best_of([py, "-c", "pass"], args.repeat)
    result["imports"] = {}
    for module in IMPORTS:
        imp = [child_json(run_child([py, "-c", IMPORT_SNIPPET, module])["stderr"]) for _ in range(args.repeat)]
        result["imports"][module] = {"best_s": min(x["import_s"] for x in imp), "heavy_modules": imp[-1]["heavy"]}
    run_child([script, "--help"])
    result["help"] = best_of([script, "--help"], args.repeat)
    if path_cmd and Path(path_cmd).resolve() != Path(script).resolve():
        result["help_path_command"] = {"command": path_cmd, **best_of([path_cmd, "--help"], args.repeat)}
    result["help_heavy_modules"] = child_json(run_child([py, "-c", HELP_SNIPPET])["stderr"])["heavy"]

    # -- analyze: cold (empty Numba cache), then warm with that cache ------------------
    cmd = [script, "analyze", args.path, "--json"]
    cache = Path(tempfile.mkdtemp(prefix="tracekit-bench-startup-numba-", dir="/tmp"))
    try:
        env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
        cold = run_child(cmd, env, capture=True)
        cache_bytes, cache_files = dir_size(cache)
        warm = best_of(cmd, args.analyze_repeat, env, capture=True)
        cache_bytes_after, _ = dir_size(cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    samples = [analyze_samples(cold["stdout"]), analyze_samples(warm["last"]["stdout"])]
    if len(set(samples)) != 1:
        raise SystemExit(f"bench_startup: dataset.samples differs between cold and warm analyze: {samples}")
    result["analyze_cold"] = {"s": cold["wall_s"], "max_rss_mib": cold["max_rss_mib"]}
    result["analyze_warm"] = {k: v for k, v in warm.items() if k != "last"}
    result["analyze_samples"] = samples[0]
    result["numba_cache"] = {"bytes": cache_bytes, "mib": cache_bytes / 2**20, "files": cache_files,
                             "grew_on_warm_runs": cache_bytes_after != cache_bytes}
    for key in ("python_pass", "help", "help_path_command"):
        if key in result:
            result[key].pop("last", None)

    measured = {"help_warm": result["help"]["best_s"], "analyze_cold": cold["wall_s"],
                "analyze_warm": warm["best_s"]}
    result["targets"] = {k: {"target_s": TARGETS_S[k], "measured_s": round(v, 4), "met": v <= TARGETS_S[k]}
                         for k, v in measured.items()}
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": load_start,
                         "load_avg_end": load_avg(), "parent_peak_rss_mib": peak_rss_mib()}
    return emit(result, args.json)


if __name__ == "__main__":
    main(sys.argv[1:])
