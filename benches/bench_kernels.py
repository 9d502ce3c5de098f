"""Speed of the analysis kernels against the memory-bandwidth bound, in one run.

Usage::

    python benches/bench_kernels.py [--samples 30000000] [--gpus 100] [--period-ms 1] [--repeat 3]
                                    [--json FILE]

Data: ``--gpus`` GPUs x (samples / gpus) samples every ``--period-ms`` (1 ms: the
1 kHz traces analyze is built for), a training-like square wave (compute ~680 W for
0.6 s, communication ~120 W for 0.4 s) with Gaussian noise and 0.1 % NaN; timestamps
int64 ns with jitter below a tenth of the period, power float32.  Generated with NumPy.

Measured after warming the JIT on tiny inputs (the warm-up time, which is the cache
load or the compile, is reported separately as ``warmup_s``); each kernel is timed
best of ``--repeat`` on the whole data, single-threaded:

- ``gpu_sampling`` (ts + power, 12 B/sample): per-GPU sample count, median period,
  effective update period and power moments (``tracekit.open``'s statistics), all GPUs;
- ``power_histogram`` (power, 4 B/sample), per GPU;
- ``kmeans_1d`` on a 4000-bin histogram, k = 3 (not per sample: time only);
- ``label_phases`` (ts + power, 12 B/sample), per GPU, 50 ms dwell: the hysteresis
  labeling;
- ``label_histogram`` (power + labels, 5 B/sample), per GPU;
- ``phase_segments`` (ts + power + labels, 13 B/sample), per GPU;
- ``accumulate_grid_batch`` (ts + power, 12 B/sample): all GPUs onto a 100 ms grid,
  into one cluster row and into per-host rows (8 GPUs per host);
- ``grid_cell_means`` (ts + power, 12 B/sample): what analyze's aggregation runs, the
  fused per-GPU cell means summed into host rows on a grid of one sample period, with
  a 600-column per-GPU heatmap;
- ``window_swing``, ``ramp_rates``, ``rolling_median``, ``threshold_events`` on one
  regular float32 series of ``--samples`` cells (4 B/cell; median window 31 cells).

Every kernel runs on one thread (they are called directly, not through analyze's
thread pool), so items/s is also items/s per core.  The bound: the time NumPy takes
to sum the same bytes (``ts.sum()``, ``power.sum()``, the int8 labels summed as int64
words; one core),
measured in the same run.  ``bound_ratio`` = kernel time / bound time (1.0 = as fast
as streaming the input once); ``bound_fraction`` = bound time / kernel time, the
share of the memory-bandwidth bound reached.  ``main_kernels`` checks issue 6's
target (>= 30 % of the bound) for grid accumulation (``grid_cell_means``,
``accumulate_grid_hosts``), hysteresis labeling, the histogram, window swing and
gpu_sampling.  Prints one JSON document.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _util import emit
import os
import platform
import time

import numpy as np

from tracekit.engine.memory import peak_rss_mib

#: Share of the memory-bandwidth bound each main kernel should reach (issue 6).
TARGET_BOUND_FRACTION = 0.30
MAIN_KERNELS = ("grid_cell_means_hosts", "accumulate_grid_hosts", "label_phases", "power_histogram",
                "window_swing_w50", "window_swing_w600", "gpu_sampling")


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def make_data(n_samples: int, n_gpus: int, seed: int = 0, period_ns: int = 1_000_000):
    rng = np.random.default_rng(seed)
    per_gpu = n_samples // n_gpus
    ts_list, power_list = [], []
    t0 = 1_700_000_000_000_000_000
    for g in range(n_gpus):
        ts = t0 + np.arange(per_gpu, dtype=np.int64) * period_ns
        ts += rng.integers(0, max(period_ns // 10, 1), per_gpu)  # jitter < 1/10 period keeps order
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
    ap.add_argument("--period-ms", type=float, default=1.0, help="sampling period of the data")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    from tracekit.kernels import grid, levels, phases, stats, windows

    # ---- warm the JIT (cache load or compile), timed separately
    t = time.perf_counter()
    small_ts = np.arange(64, dtype=np.int64) * 10
    small_p = np.linspace(100, 700, 64).astype(np.float32)
    counts = levels.power_histogram(small_p, bin_w=1.0, n_bins=4000)
    levels.kmeans_1d(levels.histogram_bin_centers(bin_w=1.0, n_bins=4000), counts, 3)
    lab = phases.label_phases(small_ts, small_p, [120.0, 680.0], min_dwell_ns=5)
    levels.label_histogram(small_p, lab, np.zeros((2, 4000), dtype=np.int64), bin_w=0.25)
    phases.phase_segments(small_ts, small_p, lab, last_hold_ns=10)
    g_small = grid.time_grid(0, 100, 8)
    grid.accumulate_grid_batch(small_ts, small_p, [0, 64], [0], g_small, max_gap_ns=50, hold_ns=10)
    grid.grid_cell_means(small_ts, small_p, [0, 64], [0], g_small, n_rows=1, max_gap_ns=50, hold_ns=10, heat_per=2)
    stats.gpu_sampling(small_ts, small_p, np.array([0, 64]))
    windows.window_swing(small_p, 5)
    windows.ramp_rates(small_p, 5, cell_s=0.1)
    windows.rolling_median(small_p, 5)
    windows.threshold_events(small_p, windows.rolling_median(small_p, 5), threshold=10.0)
    stats.quantiles(np.linspace(0.0, 1.0, 2 * stats._QUANTILE_MIN_N), [0.5, 0.99])
    warmup_s = time.perf_counter() - t

    period_ns = int(round(args.period_ms * 1e6))
    ts, power, offsets = make_data(args.samples, args.gpus, period_ns=period_ns)
    n = len(ts)
    n_gpus = len(offsets) - 1
    results: dict[str, dict] = {}

    # ---- the bandwidth bound: NumPy summing the same bytes
    bw = {
        "ts": best_of(lambda: ts.sum(), args.repeat),
        "power": best_of(lambda: power.sum(), args.repeat),
    }
    labels_all = np.zeros(n, dtype=np.int8)
    words = labels_all[: n - n % 8].view(np.int64)  # the same bytes summed as int64 (int8 sums upcast)
    bw["labels"] = best_of(lambda: words.sum(), args.repeat)
    bytes_read = ts.nbytes + power.nbytes
    bandwidth_gib_s = bytes_read / (bw["ts"] + bw["power"]) / 2**30

    def record(name: str, seconds: float, items: int, bound_s: float | None, **extra) -> None:
        entry = {"s": seconds, "items": items, "items_per_s": items / seconds if seconds else None}
        if bound_s is not None:
            entry["bound_s"] = bound_s
            entry["bound_ratio"] = seconds / bound_s
            entry["bound_fraction"] = bound_s / seconds
        entry.update(extra)
        results[name] = entry

    def per_gpu(fn):
        def run():
            for g in range(n_gpus):
                fn(g, slice(offsets[g], offsets[g + 1]))
        return run

    # sampling statistics (tracekit.open)
    record("gpu_sampling", best_of(lambda: stats.gpu_sampling(ts, power, offsets), args.repeat), n,
           bw["ts"] + bw["power"])

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
    label_counts = np.zeros((2, 4000), dtype=np.int64)

    def label_hist(g, s):
        levels.label_histogram(power[s], labels_all[s], label_counts, bin_w=0.25)

    record("label_histogram", best_of(per_gpu(label_hist), args.repeat), n, bw["power"] + bw["labels"])

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
    fine = grid.time_grid(int(ts.min()), period_ns, span // period_ns + 1)
    heat_per = -(-fine.n_cells // 600)
    n_hosts = int(hosts.max()) + 1

    def cell_means():
        return grid.grid_cell_means(ts, power, offsets, hosts, fine, n_rows=n_hosts, max_gap_ns=5_000_000_000,
                                    hold_ns=period_ns, heat_per=heat_per)

    record("grid_cell_means_hosts", best_of(cell_means, args.repeat), n, bw["ts"] + bw["power"],
           n_cells=fine.n_cells, n_rows=n_hosts, heat_per=heat_per)

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

    # exact quantiles (the swing metrics' p50 and p99) vs NumPy's, on the finite power
    # values as float64 (the metrics take the finite cells: NaN makes both NaN)
    x64 = power[np.isfinite(power)].astype(np.float64)
    bound64 = best_of(lambda: x64.sum(), args.repeat)
    qs = [0.5, 0.99]
    same = stats.quantiles(x64, qs).tobytes() == np.quantile(x64, qs).tobytes()
    record("quantiles_p50_p99", best_of(lambda: stats.quantiles(x64, qs), args.repeat), len(x64), bound64,
           equal_to_numpy=same)
    record("np_quantile_p50_p99 (reference)", best_of(lambda: np.quantile(x64, qs), args.repeat), len(x64), bound64)
    del x64

    main_kernels = {
        k: {"bound_fraction": results[k]["bound_fraction"], "samples_per_s_per_core": results[k]["items_per_s"],
            "met": results[k]["bound_fraction"] >= TARGET_BOUND_FRACTION}
        for k in MAIN_KERNELS if k in results
    }
    report = {
        "benchmark": "kernels",
        "samples": n,
        "gpus": n_gpus,
        "period_ms": args.period_ms,
        "repeat": args.repeat,
        "threads_per_kernel": 1,
        "warmup_s": warmup_s,
        "bandwidth_bound": {"sum_s": bw, "gib_per_s": bandwidth_gib_s,
                            "samples_per_s_ts_power": n / (bw["ts"] + bw["power"])},
        "label_share_high": label_share,
        "kernels": results,
        "target_bound_fraction": TARGET_BOUND_FRACTION,
        "main_kernels": main_kernels,
        "main_kernels_all_met": all(v["met"] for v in main_kernels.values()),
        "peak_rss_mib": peak_rss_mib(),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
    }
    emit(report, Path(args.json) if args.json else None)
    return report


if __name__ == "__main__":
    main()
