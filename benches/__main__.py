"""Run the benchmarks: ``python -m benches [names...] [--quick] [--list]``.

Every ``benches/bench_<name>.py`` that defines ``main()`` is a benchmark called
``<name>`` (``analyze``, ``phases_pelt``, ``kernels``, ``synth``, ``ingest_nvsmi``...).
Each runs as its own subprocess (``python benches/bench_<name>.py ARGS``: a fresh
interpreter, so timings and peak RSS are its own; each script warms the JIT before
timing), one after the other.  Its JSON output is stored with the command, wall
time, load average before/after and git commit in ``benches/results/<name>.json``
(``benches/results/quick/`` with ``--quick``, so a smoke run never overwrites a full
result), and ``README.md`` in that folder is rebuilt from all stored results as
markdown tables.

``--quick`` runs each benchmark on small sizes (seconds, not minutes): for checking
that the benchmarks work, not for numbers.  Without names, all benchmarks run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

#: Arguments per benchmark: (full run, quick run).  Unknown benchmarks get no
#: arguments (and ``--quick`` when their source mentions it).
ARGS: dict[str, tuple[list[str], list[str]]] = {
    "analyze": ([], ["--quick"]),
    "phases_pelt": ([], ["--quick"]),
    "kernels": ([], ["--samples", "2000000", "--gpus", "20", "--repeat", "1"]),
    "synth": (["--write"], ["--gpus", "64", "--seconds", "10", "--repeat", "1", "--frame-gpus", "8"]),
    "ingest_nvsmi": ([], ["--synthetic-rows", "200000", "--repeat", "1"]),
    "startup": ([], ["--quick"]),
    "scaling": ([], ["--quick"]),
}
ORDER = ("analyze", "phases_pelt", "kernels", "synth", "ingest_nvsmi", "startup", "scaling", "stream")


def discover() -> dict[str, Path]:
    """Benchmark name -> script, for every ``bench_*.py`` here that defines ``main()``."""
    found = {}
    for path in sorted(HERE.glob("bench_*.py")):
        if re.search(r"^def main\(", path.read_text(), flags=re.M):
            found[path.stem[len("bench_"):]] = path
    ordered = [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)
    return {n: found[n] for n in ordered}


def parse_json_output(stdout: str):
    """The JSON document a benchmark printed (the whole output, else the last block
    that starts with ``{`` at the start of a line)."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    starts = [m.start() for m in re.finditer(r"^\{", text, flags=re.M)]
    for start in reversed(starts):
        try:
            return json.loads(text[start:])
        except ValueError:
            continue
    return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def run_one(name: str, script: Path, quick: bool, timeout_s: float | None) -> dict:
    full, small = ARGS.get(name, ([], ["--quick"] if "--quick" in script.read_text() else []))
    args = small if quick else full
    cmd = [sys.executable, str(script.relative_to(REPO)), *args]
    record = {
        "benchmark": name,
        "command": " ".join(cmd[1:]),
        "quick": quick,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"[benches] {name}: {record['command']}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = None, exc.stdout or "", f"timed out after {timeout_s} s"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    record["wall_s"] = round(time.perf_counter() - t, 3)
    record["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    record["returncode"] = rc
    record["result"] = parse_json_output(stdout) if rc == 0 else None
    if rc != 0 or record["result"] is None:
        record["stderr_tail"] = stderr[-3000:]
        record["stdout_tail"] = stdout[-1000:]
    status = "ok" if rc == 0 and record["result"] is not None else "FAILED"
    print(f"[benches] {name}: {status} in {record['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return record


# ----------------------------------------------------------------------------- markdown


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        text = f"{v:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(v)


def _rate(v) -> str:
    return "–" if v is None else f"{v / 1e6:,.3g} M"


def _s(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def _acc(x: dict) -> str:
    v = x.get("accuracy")
    return "–" if v is None else f"{v:.4f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return out


def md_analyze(r: dict) -> list[str]:
    d, s, parts = r.get("dataset", {}), r.get("summary", {}), r.get("parts", {})
    n = d.get("samples")
    lines = [f"Dataset: `synth.training(gpus={d.get('gpus')}, seconds={d.get('seconds'):g}, "
             f"rate_hz={d.get('rate_hz'):g}, seed={d.get('seed')})`, {_f(n)} samples; best of {r.get('repeat')}; "
             "each part in its own process (peak RSS = VmHWM after the first timed run).", ""]
    rows = []
    spec = [
        ("tracekit", "tracekit `open` + `analyze` (full analysis)"),
        ("tracekit_cluster", "tracekit `open` + cluster grid + swings only"),
        ("polars", "Polars: scan, group-by ts sum, rolling max-min"),
        ("duckdb", "DuckDB: GROUP BY ts, window MAX/MIN"),
    ]
    tk = parts.get("tracekit", {}).get("best_s")
    for key, label in spec:
        p = parts.get(key, {})
        if "best_s" not in p:
            continue
        rss = p.get("peak_rss_first_run_mib", p.get("peak_rss_mib"))
        rows.append([label, _s(p["best_s"]), _rate(n / p["best_s"] if n else None), rss,
                     round(p["best_s"] / tk, 2) if tk else None])
    dec = parts.get("decode", {})
    if "read_ts_power_s" in dec:
        rows.append(["pyarrow read (ts, power_w): decode floor", _s(dec["read_ts_power_s"]),
                     _rate(n / dec["read_ts_power_s"]), dec.get("peak_rss_first_run_mib", dec.get("peak_rss_mib")),
                     round(dec["read_ts_power_s"] / tk, 2) if tk else None])
        rows.append(["pyarrow read (gpu, ts, power_w)", _s(dec["read_gpu_ts_power_s"]),
                     _rate(n / dec["read_gpu_ts_power_s"]), None, None])
    lines += _table(["pipeline", "s", "samples/s", "peak RSS MiB", "time / tracekit full"], rows)
    lines.append("")
    for tk_name in ("tracekit", "tracekit_cluster"):
        for other in ("polars", "duckdb"):
            a = s.get(f"{tk_name}_agreement_vs_{other}")
            if a:
                lines.append(f"- {tk_name} vs {other}: cluster peak and swing max/p99 (100 ms..60 s) agree: "
                             f"{_f(a.get('agree'))} (max |diff| {_f(a.get('max_abs_diff_w'))} W)")
    best = parts.get("tracekit", {}).get("best_run", {})
    if best:
        steps = ", ".join(f"{k} {v:.3f}" for k, v in best.get("steps_s", {}).items())
        lines.append(f"- tracekit best run: open {best.get('open_s', 0):.3f} s, analyze {best.get('analyze_s', 0):.3f} s "
                     f"({steps})")
    if "cold_compile_s" in s or "warm_cache_load_s" in s:
        lines.append(f"- JIT: cold compile + first tiny analyze {_f(s.get('cold_compile_s'))} s; "
                     f"with the Numba cache {_f(s.get('warm_cache_load_s'))} s")
    if "numpy_sum_gib_per_s" in dec:
        lines.append(f"- memory-bandwidth bound: NumPy sums ts + power at {dec['numpy_sum_gib_per_s']:.1f} GiB/s "
                     f"({dec.get('numpy_sum_ts_power_s', 0) * 1e3:.1f} ms for the decoded arrays)")
    m = r.get("machine", {})
    lines.append(f"- machine: {m.get('cpus')} CPUs, load average {m.get('load_avg_start')} at start, "
                 f"{m.get('load_avg_end')} at end")
    return lines


def md_phases_pelt(r: dict) -> list[str]:
    lines = [f"{r.get('gpus')} GPUs x {_f(r.get('seconds'))} s at {_f(r.get('rate_hz'))} Hz per case; PELT "
             f"(ruptures, L2, min_size 2, jump 1) on block means at {_f(r.get('pelt_rate_hz'))} Hz, "
             "pen = factor x sigma^2 x ln n; PELT segments labelled by the nearest k-means level.", ""]
    rows = []
    for case, c in r.get("cases", {}).items():
        tk, pe, best = c.get("tracekit", {}), c.get("pelt", {}), c.get("pelt_best_pen", {})

        def rec(x):
            return ", ".join(f"{k} {v:.4f}" for k, v in x.get("recall", {}).items() if v is not None)

        truth = c.get("truth_segments_per_gpu")
        rows.append([case, "tracekit detect", _acc(tk), rec(tk), _s(tk.get("s")),
                     _rate(tk.get("samples_per_s")), f"{_f(tk.get('segments_per_gpu'))} (truth {_f(truth)})"])
        rows.append([case, f"PELT factor {_f(pe.get('pen_factor'))}", _acc(pe), rec(pe), _s(pe.get("s")),
                     _rate(pe.get("samples_per_s")),
                     f"{_f(pe.get('segments_per_gpu'))} seg / {_f(pe.get('label_runs_per_gpu'))} runs"])
        if best and best.get("pen_factor") != pe.get("pen_factor"):
            rows.append([case, f"PELT factor {_f(best.get('pen_factor'))} (best)", _acc(best), rec(best),
                         _s(best.get("s")), _rate(best.get("samples_per_s")),
                         f"{_f(best.get('segments_per_gpu'))} seg / {_f(best.get('label_runs_per_gpu'))} runs"])
        f = c.get("full_rate_slice")
        if f:
            for key, label in (("tracekit", "tracekit, 1 kHz slice"), ("pelt", "PELT 1 kHz jump 5, slice")):
                x = f[key]
                segs = f"{_f(x.get('segments'))}" + (f" seg / {_f(x.get('label_runs'))} runs" if "label_runs" in x
                                                     else "")
                rows.append([case, f"{label} ({_f(f.get('seconds'))} s, 1 GPU)", _acc(x), rec(x), _s(x.get("s")),
                             _rate(x.get("samples_per_s")),
                             f"{segs} (truth {_f(f.get('truth_segments'))})"])
    lines += _table(["case", "method", "accuracy", "recall", "s", "samples/s", "segments per GPU"], rows)
    m = r.get("machine", {})
    lines += ["", f"- machine: {m.get('cpus')} CPUs, load average {m.get('load_avg_start')} at start, "
                  f"{m.get('load_avg_end')} at end; peak RSS {_f(r.get('peak_rss_mib'))} MiB"]
    return lines


def md_kernels(r: dict) -> list[str]:
    target = r.get("target_bound_fraction")
    main = r.get("main_kernels", {})

    def share(k, v):
        f = v.get("bound_fraction")
        if f is None:
            return "–"
        mark = (" (met)" if main[k]["met"] else " (MISSED)") if k in main else ""
        return f"{100 * f:.1f} %{mark}"

    rows = [[k, v.get("s"), _rate(v.get("items_per_s")), v.get("bound_ratio"), share(k, v)]
            for k, v in r.get("kernels", {}).items()]
    bw = r.get("bandwidth_bound", {})
    head = [f"{_f(r.get('samples'))} samples, {r.get('gpus')} GPUs"
            + (f" every {_f(r.get('period_ms'))} ms" if r.get("period_ms") else "")
            + f", one thread per kernel, warm-up {_f(r.get('warmup_s'))} s, NumPy sum (one core) "
            f"{_f(bw.get('gib_per_s'))} GiB/s"
            + (f"; target: main kernels >= {100 * target:.0f} % of the bound" if target else ""), ""]
    return head + _table(["kernel", "s", "items/s (per core)", "time / bound", "% of bound"], rows)


def md_synth(r: dict) -> list[str]:
    rows = []
    g = r.get("generate", {})
    if g:
        rows.append(["generate (arrays)", g.get("samples"), g.get("best_s"), _rate(g.get("samples_per_s")),
                     f"x{_f(g.get('ratio_vs_numpy'))} vs NumPy"])
    m = r.get("in_memory", {})
    if m:
        rows.append(["in-memory frame", m.get("samples"), m.get("s"), _rate(m.get("samples_per_s")), ""])
    w = r.get("write", {})
    if w:
        rows.append(["write dataset", w.get("samples"), w.get("s"), _rate(w.get("samples_per_s")),
                     f"{_f(w.get('bytes_per_sample'))} B/sample, peak RSS {_f(w.get('peak_rss_mib'))} MiB"])
    return _table(["step", "samples", "s", "samples/s", "note"], rows)


def md_ingest_nvsmi(r: dict) -> list[str]:
    rows = [[Path(x.get("file", "")).name, x.get("rows"), x.get("polars_read_csv_s"), x.get("tracekit_read_s"),
             x.get("ratio")] for x in r.get("results", [])]
    return _table(["file", "rows", "polars read_csv s", "tracekit read s", "polars / tracekit"], rows)


def md_startup(r: dict) -> list[str]:
    t = r.get("targets", {})

    def target(key):
        x = t.get(key)
        return "" if not x else f"<= {_f(x['target_s'])} s: {'met' if x['met'] else 'MISSED'}"

    rows = [["`python -c pass` (interpreter alone)", _s(r["python_pass"]["best_s"]),
             _f(r["python_pass"].get("max_rss_mib"), 1), ""]]
    for module, x in r.get("imports", {}).items():
        rows.append([f"`import {module}` (in process)", _s(x["best_s"]), "–",
                     "loads " + (", ".join(x["heavy_modules"]) or "no numba/polars/pyarrow/numpy")])
    rows.append([f"`tracekit --help` warm, best of {r.get('repeat')}", _s(r["help"]["best_s"]),
                 _f(r["help"].get("max_rss_mib"), 1), target("help_warm")])
    if "help_path_command" in r:
        x = r["help_path_command"]
        rows.append([f"`{x['command']} --help` (PATH)", _s(x["best_s"]), _f(x.get("max_rss_mib"), 1), ""])
    rows.append([f"`tracekit analyze {r.get('path')} --json`, empty Numba cache (cold)",
                 _s(r["analyze_cold"]["s"]), _f(r["analyze_cold"]["max_rss_mib"], 1), target("analyze_cold")])
    rows.append([f"same, with that cache (warm), best of {r.get('analyze_repeat')}", _s(r["analyze_warm"]["best_s"]),
                 _f(r["analyze_warm"]["max_rss_mib"], 1), target("analyze_warm")])
    c = r.get("numba_cache", {})
    m = r.get("machine", {})
    return _table(["command (fresh process each)", "s", "peak RSS MiB", "target"], rows) + [
        "",
        f"- `--help` imports: {', '.join(r.get('help_heavy_modules') or []) or 'no numba/polars/pyarrow/numpy'}",
        f"- analyze reads {_f(r.get('analyze_samples'))} samples; Numba cache after the cold run: "
        f"{_f(c.get('mib'), 2)} MiB in {_f(c.get('files'))} files "
        f"(grew on warm runs: {_f(c.get('grew_on_warm_runs'))})",
        f"- machine: {m.get('cpus')} CPUs, load average {m.get('load_avg_start')} at start, "
        f"{m.get('load_avg_end')} at end",
    ]


def md_scaling(r: dict) -> list[str]:
    o = r.get("overhead", {})
    lines = [f"`{r.get('analyze_command')}` on `tracekit synth training --rate {_f(r.get('rate_hz'))} "
             f"--gpu-model {r.get('gpu_model')} --seed {r.get('seed')}` data, one fresh process per run, best of "
             f"{r.get('repeat')}; peak RSS = the child's ru_maxrss.  Fixed start-up cost (analyze of "
             f"{o.get('gpus')} GPUs x {_f(o.get('seconds'))} s): {_s(o.get('best_s'))} s, "
             f"{_f(o.get('peak_rss_mib'), 1)} MiB.  Extra analyze flags: "
             f"{' '.join(r.get('analyze_flags') or []) or 'none'}.", ""]
    rows = [[c["axis"], c["gpus"], _f(c["seconds"]), c["samples"], _s(c["best_s"]), _s(c["wall_minus_overhead_s"]),
             _rate(c["samples_per_s"]), _rate(c["samples_per_s_minus_overhead"]), _f(c["peak_rss_mib"], 1),
             _f(c["rss_bytes_per_sample"], 1), _f(c["rss_over_overhead_bytes_per_sample"], 1),
             _f(c.get("samples_checked"))] for c in r.get("cases", [])]
    m = r.get("machine", {})
    return lines + _table(["axis", "GPUs", "s", "samples", "wall s", "minus start-up s", "samples/s",
                           "samples/s minus start-up", "peak RSS MiB", "RSS B/sample",
                           "(RSS - start-up RSS) B/sample", "samples checked"], rows) + [
        "", f"- machine: {m.get('cpus')} CPUs, load average {m.get('load_avg_start')} at start, "
            f"{m.get('load_avg_end')} at end"]


def md_generic(r) -> list[str]:
    rows = []

    def walk(prefix, v, depth):
        if isinstance(v, dict) and depth < 2:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x, depth + 1)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append([prefix, v])

    walk("", r, 0)
    return _table(["key", "value"], rows[:60])


def md_stream(r: dict) -> list[str]:
    d = r.get("datasets", {})
    lines = [f"`tracekit analyze DIR --json [flags]` as a fresh process (peak RSS = the child's own ru_maxrss) on "
             f"`tracekit synth training` data: small {d.get('small', {}).get('samples'):,} samples, large "
             f"{d.get('large', {}).get('samples'):,} samples.", ""]
    def runs(c: dict, key: str) -> str:
        vals = c.get(key) or []
        return f" ({', '.join(_f(v, 1) for v in vals)})" if len(vals) > 1 else ""

    rows = [[k, " ".join(c["flags"]) or "(default: --memory-limit 2GiB)", f"{c['samples']:,}",
             _s(c["wall_s"]) + runs(c, "runs_wall_s"), _rate(c["samples_per_s"]),
             _f(c["peak_rss_mib"], 1) + runs(c, "runs_peak_rss_mib"), f"{c['engine']['mode']}, {c['engine']['batches']}"]
            for k, c in r.get("cases", {}).items()]
    lines += _table(["case", "flags", "samples", "wall s (median; runs)", "samples/s", "peak RSS MiB (median; runs)",
                     "engine, batches"], rows)
    ck = r.get("checks", {})
    lines += ["", f"- 1 B samples within 60 s: {ck.get('large_within_60s')}; within 2 GiB: "
                  f"{ck.get('large_rss_within_2gib')}; peak RSS large / small: {ck.get('rss_large_over_small')}; "
                  f"--memory-limit 1GiB gives the same summary: {ck.get('1gib_equals_default')}"]
    dk = r.get("dask")
    if dk:
        lines += ["", "Dask LocalCluster (worker processes, 1 thread each) via `--scheduler`, large set:", ""]
        lines += _table(["workers", "wall s", "samples/s", "batches", "summary equals local"],
                        [[n.split("_")[0], _s(dk[n]["wall_s"]), _rate(dk[n]["samples_per_s"]),
                          dk[n]["engine"]["batches"], dk[n]["equals_local"]] for n in ("1_worker", "2_worker")])
        lines += ["", f"- speed-up 2 workers vs 1: {dk.get('speedup_2_vs_1')}x"]
    m = r.get("meta", {})
    return lines + ["", f"- machine: {m.get('cpus')} CPUs, load average {m.get('load_avg_start')} at start, "
                        f"{m.get('load_avg_end')} at end"]


MARKDOWN = {"analyze": md_analyze, "stream": md_stream, "phases_pelt": md_phases_pelt, "kernels": md_kernels, "synth": md_synth,
            "ingest_nvsmi": md_ingest_nvsmi, "startup": md_startup, "scaling": md_scaling}


def write_readme(folder: Path, quick: bool) -> Path:
    records = []
    for p in sorted(folder.glob("*.json")):
        try:
            records.append(json.loads(p.read_text()))
        except ValueError:
            continue
    order = {n: i for i, n in enumerate(ORDER)}
    records.sort(key=lambda r: (order.get(r.get("benchmark"), len(order)), r.get("benchmark", "")))
    lines = ["# Benchmark results" + (" (quick smoke run: small sizes, not for numbers)" if quick else ""), "",
             "Written by `python -m benches" + (" --quick" if quick else "") + "` from the JSON files in this "
             "folder; each benchmark's script documents what it measures.  Timings are wall-clock on a shared "
             "machine: read the load average beside them.", ""]
    for r in records:
        name = r.get("benchmark", "?")
        lines += [f"## {name}", "",
                  f"`python {r.get('command')}` — {r.get('started')}, commit {r.get('git_commit')}, "
                  f"{r.get('cpus')} CPUs, load average {r.get('load_avg_before')} -> {r.get('load_avg_after')}, "
                  f"wall {_f(r.get('wall_s'))} s", ""]
        if r.get("result") is None:
            tail = (r.get("stderr_tail") or "").strip().splitlines()[-1:] or ["no output"]
            lines += [f"FAILED (exit {r.get('returncode')}): `{tail[0]}`", ""]
            continue
        try:
            lines += MARKDOWN.get(name, md_generic)(r["result"])
        except Exception as exc:  # noqa: BLE001 - a changed output format must not lose the others
            lines += [f"(table not rendered: {type(exc).__name__}: {exc}; see {name}.json)"]
        lines.append("")
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    benches = discover()
    ap = argparse.ArgumentParser(prog="python -m benches", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {', '.join(benches)}")
    ap.add_argument("--quick", action="store_true", help="small sizes; results go to benches/results/quick/")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default none)")
    args = ap.parse_args(argv)
    if args.list:
        for n, p in benches.items():
            print(f"{n}\t{p.relative_to(REPO)}")
        return 0
    unknown = [n for n in args.names if n not in benches]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {list(benches)}")
    folder = RESULTS / "quick" if args.quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in args.names or list(benches):
        record = run_one(name, benches[name], args.quick, args.timeout)
        (folder / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        failed += record["result"] is None
    readme = write_readme(folder, args.quick)
    print(readme.read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
