"""Speed of the analysis kernels against the memory-bandwidth bound, in one run.

Usage::

    python benches/bench_kernels.py [--samples 30000000] [--gpus 100] [--repeat 3] [--json FILE]

Data: ``--gpus`` GPUs x (samples / gpus) samples at 20 ms, a training-like square
wave (compute ~680 W for 0.6 s, communication ~120 W for 0.4 s) with Gaussian noise
and 0.1 % NaN; timestamps int64 ns with jitter, power float32.  Generated with NumPy.

Measured after warming the JIT on tiny inputs (the warm-up time, which is the cache
load or the compile, is reported separately as ``warmup_s``); each kernel is timed
best of ``--repeat`` on the whole data, single-threaded:

- ``power_histogram`` (power, 4 B/sample), per GPU;
- ``kmeans_1d`` on a 4000-bin histogram, k = 3 (not per sample: time only);
- ``label_phases`` (ts + power, 12 B/sample), per GPU, 50 ms dwell;
- ``phase_segments`` (ts + power + labels, 13 B/sample), per GPU;
- ``accumulate_grid_batch`` (ts + power, 12 B/sample): all GPUs onto a 100 ms grid,
  into one cluster row and into per-host rows (8 GPUs per host);
- ``window_swing``, ``ramp_rates``, ``rolling_median``, ``threshold_events`` on one
  regular float32 series of ``--samples`` cells (4 B/cell; median window 31 cells).

The bound: the time NumPy takes to sum the same bytes (``ts.sum()`` and/or
``power.sum()``), measured in the same run.  ``bound_ratio`` = kernel time / bound
time (1.0 = as fast as streaming the input once).  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def make_data(n_samples: int, n_gpus: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    per_gpu = n_samples // n_gpus
    period_ns = 20_000_000
    ts_list, power_list = [], []
    t0 = 1_700_000_000_000_000_000
    for g in range(n_gpus):
        ts = t0 + np.arange(per_gpu, dtype=np.int64) * period_ns
        ts += rng.integers(0, 2_000_000, per_gpu)  # jitter < 1/10 period keeps order
        phase = ((ts - t0 + g * 3_000_000) % 1_000_000_000) < 600_000_000
        power = np.where(phase, 680.0, 120.0) + rng.normal(0, 15, per_gpu)
        power = power.astype(np.float32)
        power[rng.random(per_gpu) < 0.001] = np.nan
        ts_list.append(ts)
        power_list.append(power)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in ts_list])]).astype(np.int64)
    return np.concatenate(ts_list), np.concatenate(power_list), offsets


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=30_000_000)
    ap.add_argument("--gpus", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    from tracekit.kernels import grid, levels, phases, windows

    # ---- warm the JIT (cache load or compile), timed separately
    t = time.perf_counter()
    small_ts = np.arange(64, dtype=np.int64) * 10
    small_p = np.linspace(100, 700, 64).astype(np.float32)
    counts = levels.power_histogram(small_p, bin_w=1.0, n_bins=4000)
    levels.kmeans_1d(levels.histogram_bin_centers(bin_w=1.0, n_bins=4000), counts, 3)
    lab = phases.label_phases(small_ts, small_p, [120.0, 680.0], min_dwell_ns=5)
    phases.phase_segments(small_ts, small_p, lab, last_hold_ns=10)
    g_small = grid.time_grid(0, 100, 8)
    grid.accumulate_grid_batch(small_ts, small_p, [0, 64], [0], g_small, max_gap_ns=50, hold_ns=10)
    windows.window_swing(small_p, 5)
    windows.ramp_rates(small_p, 5, cell_s=0.1)
    windows.rolling_median(small_p, 5)
    windows.threshold_events(small_p, windows.rolling_median(small_p, 5), threshold=10.0)
    warmup_s = time.perf_counter() - t

    ts, power, offsets = make_data(args.samples, args.gpus)
    n = len(ts)
    n_gpus = len(offsets) - 1
    results: dict[str, dict] = {}

    # ---- the bandwidth bound: NumPy summing the same bytes
    bw = {
        "ts": best_of(lambda: ts.sum(), args.repeat),
        "power": best_of(lambda: power.sum(), args.repeat),
    }
    labels_all = np.empty(n, dtype=np.int8)
    bw["labels"] = best_of(lambda: labels_all.sum(), args.repeat)
    bytes_read = ts.nbytes + power.nbytes
    bandwidth_gib_s = bytes_read / (bw["ts"] + bw["power"]) / 2**30

    def record(name: str, seconds: float, items: int, bound_s: float | None, **extra) -> None:
        entry = {"s": seconds, "items": items, "items_per_s": items / seconds if seconds else None}
        if bound_s is not None:
            entry["bound_s"] = bound_s
            entry["bound_ratio"] = seconds / bound_s
        entry.update(extra)
        results[name] = entry

    def per_gpu(fn):
        def run():
            for g in range(n_gpus):
                fn(g, slice(offsets[g], offsets[g + 1]))
        return run

    # levels
    counts = np.zeros(4000, dtype=np.int64)

    def hist(g, s):
        levels.power_histogram(power[s], bin_w=0.25, lo_w=0.0, counts=counts)

    record("power_histogram", best_of(per_gpu(hist), args.repeat), n, bw["power"])
    centers = levels.histogram_bin_centers(bin_w=0.25, n_bins=4000)
    record("kmeans_1d_4000_bins_k3", best_of(lambda: levels.kmeans_1d(centers, counts, 3), args.repeat), 4000, None)

    # phases
    def label(g, s):
        labels_all[s] = phases.label_phases(ts[s], power[s], [120.0, 680.0], hysteresis=0.2, min_dwell_ns=50_000_000)

    record("label_phases", best_of(per_gpu(label), args.repeat), n, bw["ts"] + bw["power"])
    label_share = float(np.mean(labels_all == 1))

    n_segments = [0]

    def segments(g, s):
        seg = phases.phase_segments(ts[s], power[s], labels_all[s], last_hold_ns=20_000_000)
        n_segments[0] += len(seg.start_idx)

    record(
        "phase_segments",
        best_of(per_gpu(segments), args.repeat),
        n,
        bw["ts"] + bw["power"] + bw["labels"],
        segments_per_gpu=n_segments[0] / n_gpus / args.repeat,
    )

    # grid
    span = int(ts.max() - ts.min()) + 1
    the_grid = grid.time_grid(int(ts.min()), 100_000_000, span // 100_000_000 + 1)
    one_row = np.zeros(n_gpus, dtype=np.int64)
    hosts = np.arange(n_gpus, dtype=np.int64) // 8

    def grid_run(groups):
        return lambda: grid.accumulate_grid_batch(
            ts, power, offsets, groups, the_grid, max_gap_ns=100_000_000, hold_ns=20_000_000
        )

    record("accumulate_grid_cluster", best_of(grid_run(one_row), args.repeat), n, bw["ts"] + bw["power"],
           n_cells=the_grid.n_cells)
    record("accumulate_grid_hosts", best_of(grid_run(hosts), args.repeat), n, bw["ts"] + bw["power"],
           n_cells=the_grid.n_cells, n_groups=int(hosts.max()) + 1)

    # windows on one long regular series
    x = power
    for w in (50, 600):
        record(f"window_swing_w{w}", best_of(lambda: windows.window_swing(x, w), args.repeat), n, bw["power"])
    record("ramp_rates_w50", best_of(lambda: windows.ramp_rates(x, 50, cell_s=0.1), args.repeat), n, bw["power"])
    record("rolling_median_w31", best_of(lambda: windows.rolling_median(x, 31), 1), n, bw["power"])
    baseline = np.full(n, 680.0)
    record(
        "threshold_events",
        best_of(lambda: windows.threshold_events(x, baseline, threshold=200.0, min_cells=3), args.repeat),
        n,
        bw["power"],
    )

    report = {
        "benchmark": "kernels",
        "samples": n,
        "gpus": n_gpus,
        "repeat": args.repeat,
        "warmup_s": warmup_s,
        "bandwidth_bound": {"sum_s": bw, "gib_per_s": bandwidth_gib_s},
        "label_share_high": label_share,
        "kernels": results,
        "peak_rss_mib": peak_rss_mib(),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
