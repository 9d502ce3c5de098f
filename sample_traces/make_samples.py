"""Regenerate every bundled sample trace, deterministically.

Usage::

    python sample_traces/make_samples.py [--out sample_traces]

Same tracekit version -> same samples (the Parquet bytes also depend on the pyarrow
version that writes them).  See README.md beside this script for what each is.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import polars as pl

import tracekit.synth as synth

HERE = Path(__file__).resolve().parent

#: Canonical datasets: name -> (generator, parameters).
DATASETS = {
    "h100_training": (
        synth.training,
        dict(gpus=64, seconds=30.0, rate_hz=1000.0, gpu_model="H100", iteration_s=1.0, compute_fraction=0.75,
             stragglers=1, straggler_slowdown=0.2, checkpoint_every_s=15.0, checkpoint_s=1.5, ramp_s=1.0,
             host_offset_ms=2.0, drop_fraction=0.001, seed=1),
    ),
    "a100_inference": (
        synth.inference,
        dict(gpus=8, seconds=60.0, rate_hz=250.0, gpu_model="A100", tp=2, arrival_rate_hz=0.3, seed=1),
    ),
}

#: Raw files: name -> (generator, its parameters, write_raw format, write_raw options).
RAW = {
    "nvsmi_csv_h100_4gpu_100ms.csv": (
        synth.training,
        dict(gpus=4, seconds=10.0, rate_hz=10.0, gpu_model="H100", average_window_s=1.0, seed=2),
        "nvsmi_csv",
        dict(utc_offset_s=-7 * 3600),
    ),
    "nvsmi_csv_noindex_h100_8gpu_100ms.csv": (
        synth.training,
        dict(gpus=8, seconds=10.0, rate_hz=10.0, gpu_model="H100", average_window_s=1.0, gaps=1, gap_s=0.7, seed=3),
        "nvsmi_csv_noindex",
        dict(utc_offset_s=2 * 3600, sweep_skew_ms=1.5),
    ),
    "dcgmi_dmon_h100_4gpu_100ms.txt": (
        synth.training,
        dict(gpus=4, seconds=6.0, rate_hz=10.0, gpu_model="H100", checkpoint_every_s=None, seed=4),
        "dcgmi_dmon",
        dict(header_every=40),
    ),
    "dcgm_exporter_a100_2hosts_1s.prom": (
        synth.inference,
        dict(gpus=4, gpus_per_host=2, seconds=10.0, rate_hz=1.0, gpu_model="A100", arrival_rate_hz=0.5,
             host_offset_ms=5.0, seed=5),
        "dcgm_exporter",
        {},
    ),
    "zeus_a100_2gpu_20ms.json": (
        synth.inference,
        dict(gpus=2, seconds=10.0, rate_hz=50.0, gpu_model="A100", arrival_rate_hz=0.5, update_period_s=0.1,
             seed=6),
        "zeus_json",
        {},
    ),
}


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, (gen, params) in DATASETS.items():
        gen(out / name, overwrite=True, **params)
        print(f"wrote {out / name}")
    raw = out / "raw"
    expected = raw / "expected"
    if raw.exists():
        shutil.rmtree(raw)
    expected.mkdir(parents=True)
    for name, (gen, params, fmt, opts) in RAW.items():
        result = gen(**params)
        synth.write_raw(result, raw / name, fmt, **opts)
        # what a reader should recover (generator gpu ids; the file's own ids are per host)
        stem = name.rsplit(".", 1)[0]
        result.samples.select("gpu", "ts", "power_w", pl.col("truth_phase")).write_parquet(
            expected / f"{stem}.parquet", statistics=False
        )
        print(f"wrote {raw / name}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    make(args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
