"""Speed of ``tracekit replay`` against ``tracekit analyze`` on the same data.

Usage::

    python benches/bench_replay.py [--gpus 256] [--seconds 120] [--rate 1000]
                                   [--out /tmp/tracekit_bench_replay] [--repeat 3]
                                   [--scenarios all] [--json FILE]

Generates (once; kept in ``--out``) a synthetic H100 training dataset and an H100
inference dataset of ``--gpus`` x ``--seconds`` x ``--rate`` samples each (30.7 M by
default) with :mod:`tracekit.synth`, opens each with :func:`tracekit.open` (the
canonical fast path, timed), and in one run, after a warm-up call of each step on the
full data (its time reported as ``first_call_s``: JIT cache loading and page faults),
times the best of ``--repeat``:

- ``analyze``: :func:`tracekit.analysis.analyze.analyze` with defaults (the reference);
- ``replay`` scenarios (library defaults, replayed samples kept):

  - ``train_cap500``: cap 500 W per GPU over 1 s windows with synchronous coupling;
  - ``train_cap500_rack``: the same cap on one rack only (the others wait);
  - ``train_lock1410``: SM clock lock at 1410 MHz;
  - ``train_cap500_nosync``: the cap without synchronous coupling;
  - ``train_rack16kw``: an aggregate cap of 16 kW on each rack's power (32 GPUs);
  - ``train_smooth90``: a 90 % power floor with ramp limits;
  - ``infer_cap350``: inference, cap 350 W over 1 s windows.

For each: seconds, samples per second, ``speed_vs_analyze`` = best analyze seconds /
best replay seconds (the target is >= 0.5), the median of the same ratio over
back-to-back pairs (robust to a machine shared with other work: page faults and
scheduling vary several-fold there), the passes of the synchronous solution, and the
peak RSS of its timed replay calls (``peak_rss_mib``: VmHWM, reset before each call
through ``/proc/self/clear_refs`` where Linux allows it, else null; it includes the
loaded dataset, ``loaded_rss_mib``, and ``rss_before_mib`` is the resident set when
the scenario started).  Each call's result is released before the next call starts,
so a peak is one call's.  ``analyze_peak_rss_mib`` is the same for analyze.  Also the
peak RSS of the whole process.  Prints one JSON document (and writes it to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _util import emit

SCENARIOS = {
    "train_cap500": ("train", dict(cap=500)),
    "train_cap500_rack": ("train", dict(cap=500, scope="rack=rack01")),
    "train_lock1410": ("train", dict(lock_mhz=1410)),
    "train_cap500_nosync": ("train", dict(cap=500, sync="off")),
    "train_rack16kw": ("train", dict(cap="rack:16kW")),
    "train_smooth90": ("train", dict(smoothing="floor=90%,up=2000,down=2000")),
    "infer_cap350": ("infer", dict(cap=350)),
}


def rss_mib() -> float | None:
    """Resident set now (VmRSS), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _mib(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_data(out: Path, gpus: int, seconds: float, rate: float) -> dict[str, Path]:
    import tracekit.synth as synth

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in ("train", "infer"):
        p = out / f"{kind}_{gpus}g_{seconds:g}s_{rate:g}hz"
        if not (p / "manifest.json").is_file():
            t = time.perf_counter()
            if kind == "train":
                synth.training(p, gpus=gpus, seconds=seconds, rate_hz=rate, gpu_model="H100", seed=1,
                               overwrite=True)
            else:
                synth.inference(p, gpus=gpus, seconds=seconds, rate_hz=rate, gpu_model="H100", tp=8,
                                arrival_rate_hz=0.5, seed=1, overwrite=True)
            print(f"generated {p} in {time.perf_counter() - t:.1f} s", flush=True)
        paths[kind] = p
    return paths


def best_of(fn, repeat: int) -> tuple[float, object, float | None]:
    """(best seconds, last result, peak RSS MiB over the calls or None): the previous
    result is released before each call, so a call's peak is its own."""
    from tracekit.engine.memory import peak_rss_mib

    best, result, peak = float("inf"), None, None
    for _ in range(repeat):
        result = None
        reset = reset_peak_rss()
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
        if reset:
            peak = max(peak or 0.0, peak_rss_mib())
    return best, result, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--out", default="/tmp/tracekit_bench_replay")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenarios", default="all", help="comma-separated names or 'all': " + ", ".join(SCENARIOS))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import tracekit
    from tracekit.analysis.analyze import analyze
    from tracekit.engine.memory import peak_rss_mib

    names = list(SCENARIOS) if args.scenarios == "all" else args.scenarios.split(",")
    paths = make_data(Path(args.out), args.gpus, args.seconds, args.rate)
    results: dict = {"gpus": args.gpus, "seconds": args.seconds, "rate_hz": args.rate, "repeat": args.repeat,
                     "datasets": {}, "scenarios": {}}
    for kind in ("train", "infer"):
        todo = [n for n in names if SCENARIOS[n][0] == kind]
        if not todo:
            continue
        t = time.perf_counter()
        ts = tracekit.open(paths[kind])
        open_s = time.perf_counter() - t
        n = ts.n_samples
        t = time.perf_counter()
        analyze(ts)
        analyze_first = time.perf_counter() - t
        loaded_rss = rss_mib()
        analyze_s, _, analyze_peak = best_of(lambda: analyze(ts), args.repeat)
        results["datasets"][kind] = {"path": str(paths[kind]), "samples": n, "open_s": round(open_s, 3),
                                     "analyze_s": round(analyze_s, 3), "analyze_first_call_s": round(analyze_first, 3),
                                     "analyze_samples_per_s": round(n / analyze_s),
                                     "loaded_rss_mib": _mib(loaded_rss), "analyze_peak_rss_mib": _mib(analyze_peak)}
        for name in todo:
            kw = SCENARIOS[name][1]
            rss_before = rss_mib()
            t = time.perf_counter()
            tracekit.replay(ts, **kw)
            first = time.perf_counter() - t
            # paired runs: analyze and replay back to back, so both see the same load
            pairs = []
            r = None
            replay_peak = None
            for _ in range(args.repeat):
                a_s, _, _ = best_of(lambda: analyze(ts), 1)
                r = None  # the previous result is not held while the next one is built
                r_s, r, peak = best_of(lambda: tracekit.replay(ts, **kw), 1)
                pairs.append((a_s, r_s))
                analyze_s = min(analyze_s, a_s)
                replay_peak = max(replay_peak or 0.0, peak) if peak is not None else None
            replay_s = min(p[1] for p in pairs)
            paired = sorted(a / b for a, b in pairs)
            pol = r.summary()["policies"][1]
            results["scenarios"][name] = {
                "dataset": kind,
                "policy": pol["name"],
                "samples": n,
                "replay_s": round(replay_s, 3),
                "first_call_s": round(first, 3),
                "samples_per_s": round(n / replay_s),
                "analyze_s": round(analyze_s, 3),
                "speed_vs_analyze": round(analyze_s / replay_s, 3),
                "speed_vs_analyze_paired_median": round(paired[len(paired) // 2], 3),
                "sync_passes": pol.get("sync_rounds"),
                "slowdown": pol["slowdown"],
                "peak_cut": pol["peak_cut"],
                "rss_before_mib": _mib(rss_before),
                "peak_rss_mib": _mib(replay_peak),
            }
            print(json.dumps({name: results["scenarios"][name]}), flush=True)
            del r
        del ts
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    emit(results, Path(args.json) if args.json else None)


if __name__ == "__main__":
    main()
