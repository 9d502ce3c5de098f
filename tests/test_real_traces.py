"""analyze on the public real traces in ../shared/real_traces (skipped when absent).

The A100 vLLM trace has an independent record: the engine's own counters.  The share
of time the engine had a request running must match the share of time tracekit
labels prompt or token.
"""

from __future__ import annotations

import polars as pl
import pytest

import tracekit
from tracekit.analysis.analyze import analyze


def test_h100_training_blocks(real_traces):
    ts = tracekit.open(real_traces / "training_profile" / "h100-8gpu-gpt-training_100ms.csv", gpu_model="H100")
    info = ts.info()
    assert info["dataset"]["gpus"] == 8
    q = info["data_quality"]
    assert q["rows_read"] == 45632 == q["rows_used"] + sum(q["rows_excluded"].values())
    s = analyze(ts).summary()
    assert s["workload"] == "training"
    # eight ~47 s compute blocks separated by ~20 s low-power phases: a ~68 s cycle
    assert s["iterations"]["period_s"] == pytest.approx(68.5, rel=0.05)
    assert 0.5 < s["phases"]["compute"]["fraction"] < 0.6
    assert s["levels"]["cluster"]["cluster"]["peak_over_tdp"] < 1.0
    # the ~110 s warm-up at ~0.9 kW is the one long dip
    assert [e["kind"] for e in s["events"]] == ["dip"]


def test_a100_inference_busy_share_matches_engine_counters(real_traces):
    d = real_traces / "powertrace-sim"
    ts = tracekit.open(d / "a100-qwen3-8b-vllm-burstgpt_power_250ms.csv", utc_offset_s=-7 * 3600)
    s = analyze(ts).summary()
    assert s["workload"] == "inference"
    busy = s["phases"]["prompt"]["fraction"] + s["phases"]["token"]["fraction"]
    engine = pl.read_csv(d / "a100-qwen3-8b-vllm-burstgpt_engine.csv")
    t0 = pl.Series([s["dataset"]["start"]]).str.to_datetime().dt.epoch("us")[0] / 1e6
    t1 = pl.Series([s["dataset"]["end"]]).str.to_datetime().dt.epoch("us")[0] / 1e6
    window = engine.filter((pl.col("timestamp") >= t0) & (pl.col("timestamp") <= t1))
    assert window.height > 400  # the clocks line up once the power log is shifted by +7 h
    engine_busy = float((window.get_column("num_requests_running") > 0).mean())
    assert busy == pytest.approx(engine_busy, abs=0.05)
    assert any("cannot be resolved" in w for w in s["warnings"])
