"""Phase detection: tracekit (histogram levels + hysteresis) against ruptures PELT (L2 cost).

Usage::

    python benches/bench_phases_pelt.py [--gpus 4] [--seconds 40] [--pelt-rate 100]
                                        [--pen-factors 1,2,8,32,128] [--full-rate-seconds 10]
                                        [--repeat 3] [--quick] [--json FILE]

Traces: ``tracekit.synth`` at 1 kHz with ground truth, ``--gpus`` GPUs x
``--seconds`` each: ``training`` (defaults, seed 1), ``training_noisy``
(``noise_w=25``, seed 1) and ``inference`` (A100, seed 3).

- tracekit: ``tracekit.analysis.phases.detect(gpu_arrays(samples, topology),
  workload=..., effective_period_s=0.001, sample_period_s=0.001)`` on all GPUs at
  once (its threads), best of ``--repeat`` after a JIT warm-up.
- PELT: ``ruptures.Pelt(model="l2", min_size=2, jump=1)`` per GPU on the power
  **downsampled to ``--pelt-rate`` Hz** (block means of 1 kHz samples; PELT in
  ruptures is pure Python and too slow for 40 k points per GPU), penalty
  ``pen = factor x sigma^2 x ln(n)`` with sigma the noise estimated from the
  downsampled series (MAD of first differences / sqrt 2).  Factor 2 (BIC-like) is
  the headline; the other factors show the best PELT could do with its penalty
  tuned against the truth (an oracle tuning tracekit does not get).  Each PELT
  segment is labelled by the nearest of the GPU's k-means levels
  (``tracekit.kernels.levels.kmeans_1d`` on the GPU's 1 W histogram at 1 kHz, k = 2
  training / 3 inference), and each 1 kHz sample takes its block's label.
- PELT at full rate (``--full-rate-seconds`` > 0): the first N seconds of the first
  GPU at 1 kHz with ``min_size=5, jump=5``, factor 2, both methods scored on that
  slice.

Scoring as in tests/test_analysis.py: sample-level accuracy against
``truth_phase``; training maps checkpoint and idle to communication and skips
ramp samples; inference scores idle / token / prompt.  Also per-phase recall, and
per GPU: truth runs of scored phases, tracekit label runs, PELT segments (change
points + 1) and PELT label runs (adjacent segments with the same level merged).  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from _util import emit

import numpy as np

from tracekit.engine.memory import peak_rss_mib

CASES = {
    "training": ("training", {"seed": 1}),
    "training_noisy": ("training", {"seed": 1, "noise_w": 25.0}),
    "inference": ("inference", {"seed": 3, "gpu_model": "A100"}),
}
RATE_HZ = 1000.0
HEADLINE_PEN = 2.0


def make_case(workload: str, gpus: int, seconds: float, params: dict):
    import tracekit.synth as synth

    gen = synth.training if workload == "training" else synth.inference
    return gen(gpus=gpus, seconds=seconds, rate_hz=RATE_HZ, **params)


def truth_names(result, workload: str, names: tuple[str, ...]) -> np.ndarray:
    """Per-sample true phase name, mapped to the detector's names; '' = not scored."""
    codes = result.phase_names
    table = np.array([codes.get(c, "") for c in range(max(codes) + 1)], dtype=object)
    truth = table[result.samples.get_column("truth_phase").to_numpy()]
    if workload == "training":  # checkpoint and idle sit at the low level; ramps are transitions
        truth = np.where(np.isin(truth, ["checkpoint", "idle"]), "communication", truth)
    return np.where(np.isin(truth, list(names)), truth, "")


def score(pred: np.ndarray, truth: np.ndarray, names: tuple[str, ...]) -> dict:
    scored = truth != ""
    out = {"accuracy": float(np.mean(pred[scored] == truth[scored])), "scored_share": float(scored.mean())}
    out["recall"] = {n: (float(np.mean(pred[truth == n] == n)) if np.any(truth == n) else None) for n in names}
    return out


def runs(labels: np.ndarray) -> int:
    return int(np.count_nonzero(labels[1:] != labels[:-1]) + 1) if len(labels) else 0


def gpu_levels(power: np.ndarray, k: int) -> np.ndarray:
    """The GPU's k-means levels (ascending), as tracekit computes them (1 W histogram)."""
    from tracekit.kernels.levels import histogram_bin_centers, kmeans_1d, power_histogram

    hi = float(np.nanmax(power)) * 1.01 + 1.0
    n_bins = int(np.ceil(hi)) + 1
    counts = power_histogram(power, bin_w=1.0, n_bins=n_bins)
    centers = histogram_bin_centers(bin_w=1.0, n_bins=n_bins)
    keep = counts > 0
    return kmeans_1d(centers[keep], counts[keep].astype(np.float64), min(k, int(keep.sum()))).centers_w


def noise_sigma(x: np.ndarray) -> float:
    d = np.diff(x)
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2.0)) or 1.0


def pelt_labels(power: np.ndarray, levels_w: np.ndarray, *, factor: int, pen_factor: float, min_size: int,
                jump: int) -> tuple[np.ndarray, int, float]:
    """Per-sample level index from PELT on block means of ``factor`` samples.

    Returns (labels at the input rate, number of segments, penalty used).
    """
    import ruptures as rpt

    n_blocks = len(power) // factor
    x = power[: n_blocks * factor].astype(np.float64).reshape(n_blocks, factor).mean(axis=1)
    sigma = noise_sigma(x)
    pen = pen_factor * sigma**2 * np.log(len(x))
    bkps = rpt.Pelt(model="l2", min_size=min_size, jump=jump).fit(x.reshape(-1, 1)).predict(pen=pen)
    block_labels = np.empty(n_blocks, dtype=np.int8)
    start = 0
    for end in bkps:
        m = x[start:end].mean()
        block_labels[start:end] = int(np.argmin(np.abs(levels_w - m)))
        start = end
    labels = np.repeat(block_labels, factor)
    if len(labels) < len(power):  # the tail that did not fill a block takes the last label
        labels = np.concatenate([labels, np.full(len(power) - len(labels), block_labels[-1], dtype=np.int8)])
    return labels, len(bkps), float(pen)


def bench_case(name: str, workload: str, params: dict, args) -> dict:
    import polars as pl

    from tracekit.analysis.phases import PHASE_NAMES, detect
    from tracekit.traceset import gpu_arrays

    t = time.perf_counter()
    result = make_case(workload, args.gpus, args.seconds, params)
    gen_s = time.perf_counter() - t
    samples = result.samples.drop([c for c in result.samples.columns if c.startswith("truth")])
    arrays = gpu_arrays(samples, result.topology)
    names = PHASE_NAMES[workload]
    truth = truth_names(result, workload, names)
    n = arrays.n_samples

    # --- tracekit
    def run_tk():
        return detect(arrays, workload=workload, effective_period_s=1.0 / RATE_HZ, sample_period_s=1.0 / RATE_HZ)

    best_tk = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        det = run_tk()
        best_tk = min(best_tk, time.perf_counter() - t)
    tk_names = np.array(list(det.names) + ["none"], dtype=object)
    tk_pred = tk_names[det.labels]
    tk_runs = [runs(det.labels[arrays.offsets[i]: arrays.offsets[i + 1]]) for i in range(len(arrays.gpus))]

    # --- PELT (downsampled), one run per penalty factor, per GPU
    factor = max(1, int(round(RATE_HZ / args.pelt_rate)))
    pen_factors = sorted({float(f) for f in args.pen_factors.split(",")} | {HEADLINE_PEN})
    per_pen: dict[str, dict] = {}
    truth_runs = []
    level_rows = []
    for i in range(len(arrays.gpus)):
        a, b = arrays.offsets[i], arrays.offsets[i + 1]
        t_gpu = truth[a:b]
        truth_runs.append(runs(t_gpu[t_gpu != ""]))
    for pf in pen_factors:
        pred = np.empty(n, dtype=object)
        seconds = 0.0
        seg = []
        label_runs = []
        pens = []
        for i in range(len(arrays.gpus)):
            a, b = arrays.offsets[i], arrays.offsets[i + 1]
            power = arrays.power_w[a:b]
            t = time.perf_counter()
            lv = gpu_levels(power, len(names))
            labels, n_seg, pen = pelt_labels(power, lv, factor=factor, pen_factor=pf, min_size=2, jump=1)
            seconds += time.perf_counter() - t
            # level index -> name (fewer levels than names: the top ones, as tracekit does)
            pred[a:b] = np.array(names[len(names) - len(lv):], dtype=object)[labels]
            seg.append(n_seg)
            label_runs.append(runs(labels))
            pens.append(round(pen, 1))
            if pf == HEADLINE_PEN:
                level_rows.append([round(float(v), 1) for v in lv])
        per_pen[f"{pf:g}"] = {"s": seconds, "samples_per_s": n / seconds, **score(pred, truth, names),
                              "segments_per_gpu": float(np.mean(seg)), "label_runs_per_gpu": float(np.mean(label_runs)),
                              "pen": pens}
    best_pf = max(per_pen, key=lambda k: (per_pen[k]["accuracy"], float(k) == HEADLINE_PEN))  # ties: headline
    head = per_pen[f"{HEADLINE_PEN:g}"]

    out = {
        "workload": workload,
        "params": params,
        "gpus": len(arrays.gpus),
        "seconds": args.seconds,
        "samples": n,
        "generate_s": gen_s,
        "truth_segments_per_gpu": float(np.mean(truth_runs)),
        "tracekit": {"s": best_tk, "samples_per_s": n / best_tk, **score(tk_pred, truth, names),
                     "segments_per_gpu": float(np.mean(tk_runs))},
        "pelt": {"rate_hz": RATE_HZ / factor, "min_size": 2, "jump": 1, "pen_factor": HEADLINE_PEN,
                 "levels_w": level_rows, **head},
        "pelt_best_pen": {"pen_factor": float(best_pf), **per_pen[best_pf]},
        "pelt_by_pen_factor": {k: {"accuracy": v["accuracy"], "segments_per_gpu": v["segments_per_gpu"],
                                   "label_runs_per_gpu": v["label_runs_per_gpu"], "s": v["s"]}
                               for k, v in per_pen.items()},
        "speedup_vs_pelt": head["s"] / best_tk,
    }

    # --- PELT at full rate on a slice of one GPU
    if args.full_rate_seconds > 0:
        a = int(arrays.offsets[0])
        m = min(int(arrays.offsets[1]) - a, int(args.full_rate_seconds * RATE_HZ))
        power = arrays.power_w[a: a + m]
        t_slice = truth[a: a + m]
        lv = gpu_levels(arrays.power_w[a: int(arrays.offsets[1])], len(names))
        t = time.perf_counter()
        labels, n_seg, pen = pelt_labels(power, lv, factor=1, pen_factor=HEADLINE_PEN, min_size=5, jump=5)
        pelt_s = time.perf_counter() - t
        pred = np.array(names[len(names) - len(lv):], dtype=object)[labels]
        one = pl.DataFrame({"gpu": samples.get_column("gpu").slice(a, m), "ts": samples.get_column("ts").slice(a, m),
                            "power_w": samples.get_column("power_w").slice(a, m)})
        one_arrays = gpu_arrays(one, result.topology)
        t = time.perf_counter()
        det1 = detect(one_arrays, workload=workload, effective_period_s=1.0 / RATE_HZ, sample_period_s=1.0 / RATE_HZ)
        tk_s = time.perf_counter() - t
        out["full_rate_slice"] = {
            "gpu": arrays.gpus[0], "seconds": m / RATE_HZ, "samples": m, "truth_segments": runs(t_slice[t_slice != ""]),
            "pelt": {"min_size": 5, "jump": 5, "pen_factor": HEADLINE_PEN, "pen": pen, "s": pelt_s,
                     "samples_per_s": m / pelt_s, "segments": n_seg, "label_runs": runs(labels), **score(pred, t_slice, names)},
            "tracekit": {"s": tk_s, "samples_per_s": m / tk_s, "segments": runs(det1.labels),
                         **score(tk_names[det1.labels], t_slice, names)},
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--pelt-rate", type=float, default=100.0, help="PELT input rate (Hz), block means")
    ap.add_argument("--pen-factors", default="1,2,8,32,128")
    ap.add_argument("--full-rate-seconds", type=float, default=10.0)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2 GPUs x 20 s, penalty factors 2,32, 5 s full-rate slice")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.gpus, args.seconds, args.pen_factors, args.full_rate_seconds, args.repeat = 2, 20.0, "2,32", 5.0, 2
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    load_start = [round(x, 2) for x in os.getloadavg()]
    t = time.perf_counter()
    import ruptures as rpt

    from tracekit.analysis.phases import detect
    from tracekit.traceset import gpu_arrays

    warm = make_case("inference", 1, 2.0, {"seed": 0})
    w_arr = gpu_arrays(warm.samples.drop([c for c in warm.samples.columns if c.startswith("truth")]), warm.topology)
    for wl in ("training", "inference"):
        detect(w_arr, workload=wl, effective_period_s=0.001, sample_period_s=0.001)
    gpu_levels(w_arr.power_w, 3)
    warmup_s = time.perf_counter() - t

    results = {c: bench_case(c, *CASES[c], args) for c in cases}
    report = {
        "benchmark": "phases_pelt",
        "gpus": args.gpus,
        "seconds": args.seconds,
        "rate_hz": RATE_HZ,
        "pelt_rate_hz": args.pelt_rate,
        "warmup_s": warmup_s,
        "cases": results,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ruptures": rpt.__version__,
                    "load_avg_start": load_start, "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
    }
    emit(report, Path(args.json) if args.json else None)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
