"""The synthetic-trace generator: determinism, truth vs power, schedule, telemetry
effects, streaming == in memory, raw formats, bad parameters.

The slow twins of the generator kernels live here (plain Python loops)."""

from __future__ import annotations

import gzip
import json
import math
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import tracekit.synth as synth
from tracekit.errors import InputError, ParameterError
from tracekit.io.dataset import read_dataset_samples, read_manifest
from tracekit.kernels import synth as K
from tracekit.specs import find_gpu_spec
from tracekit.synth import _common as C
from tracekit.synth.raw import DRIVER_NAMES

from .conftest import SAMPLE_TRACES

T0_NS = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
TRAIN_COLS = ["gpu", "ts", "power_w", "truth_phase", "truth_iteration"]
INFER_COLS = ["gpu", "ts", "power_w", "truth_phase", "truth_batch"]

# small, quick defaults for the tests
SMALL = dict(gpus=4, seconds=6.0, rate_hz=500.0, ramp_s=0.5, checkpoint_every_s=2.0, checkpoint_s=0.4)


def _train(out_dir=None, **kw):
    return synth.training(out_dir, **{**SMALL, **kw})


# ----------------------------------------------------------------- slow twins (naive)
def naive_render(seg_start, w0, w1, phase, tag, gaps, fp, n, ts0, key):
    """render_gpu as literally as possible: a window average recomputed from scratch."""
    rate, noise_rel, avg, upd, upd_phase, drop = fp
    window = int(round(avg * rate)) if avg > 0 else 0
    seg_end = list(seg_start[1:]) + [math.inf]
    inst, rows = [], []
    held = 0.0
    next_upd = upd_phase
    for i in range(n):
        t = i / rate
        j = max(k for k in range(len(seg_start)) if seg_start[k] <= t and t < seg_end[k])
        level = w0[j] + ((w1[j] - w0[j]) / (seg_end[j] - seg_start[j]) * (t - seg_start[j]) if w1[j] != w0[j] else 0.0)
        p = max(level * (1.0 + noise_rel * K.normal(key ^ K.SALT_NOISE, i)), 0.0)
        inst.append(p)
        v = p
        if window > 1:
            last = inst[-window:]
            v = sum(last) / len(last)
        if upd > 0:
            if i == 0 or t >= next_upd:
                held = v
                if t >= next_upd:  # the first update time after t
                    next_upd = upd_phase + (math.floor((t - upd_phase) / upd) + 1) * upd
            v = held
        if any(a <= t < b for a, b in gaps):
            continue
        if drop > 0 and K.uniform(key ^ K.SALT_DROP, i) < drop:
            continue
        rows.append((ts0 + round(i * 1e9 / rate), v, phase[j], tag[j]))
    return rows


def naive_replica(arrivals, prompts, outputs, seconds, max_batch, overhead, tps, base, per_seq, max_tokens):
    """The serving loop with Python lists: (segments, per-request times)."""
    n = len(arrivals)
    times = [[math.nan] * 3 for _ in range(n)]
    segs = []
    running = []  # [request, tokens left]
    nxt, t = 0, 0.0

    def emit(ph, b):
        if not segs or segs[-1][1:] != (ph, b):
            segs.append((t, ph, b))

    while t < seconds:
        if not running and (nxt >= n or arrivals[nxt] > t):
            emit(0, 0)
            if nxt >= n:
                break
            t = arrivals[nxt]
            continue
        if nxt < n and arrivals[nxt] <= t and len(running) < max_batch:
            admitted, tokens = [], 0
            while nxt < n and arrivals[nxt] <= t and len(running) < max_batch:
                if admitted and tokens + prompts[nxt] > max_tokens:
                    break
                tokens += prompts[nxt]
                times[nxt][0] = t
                item = [nxt, outputs[nxt]]
                running.append(item)
                admitted.append(item)
                nxt += 1
            emit(1, len(running))
            t += overhead + tokens / tps
            if t >= seconds:
                break
            for item in admitted:
                times[item[0]][1] = t
                item[1] -= 1
        else:
            emit(2, len(running))
            t += base + per_seq * len(running)
            if t >= seconds:
                break
            for item in running:
                item[1] -= 1
        for item in [it for it in running if it[1] <= 0]:
            times[item[0]][2] = t
            running.remove(item)
    return segs, times


# ---------------------------------------------------------------------------- kernels
def test_normal_noise_has_unit_variance_and_is_bounded():
    key = K.stream_keys(7, 1, 1)[0]
    z = np.array([K.normal(key, i) for i in range(200_000)])
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1.0) < 0.01
    assert np.abs(z).max() <= 2 * math.sqrt(3) + 1e-12
    u = np.array([K.uniform(key, i) for i in range(100_000)])
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01


@pytest.mark.parametrize(
    "fp, gaps",
    [
        ((100.0, 0.05, 0.0, 0.0, 0.0, 0.0), []),
        ((100.0, 0.05, 0.1, 0.0, 0.0, 0.0), []),
        ((100.0, 1.5, 0.05, 0.07, 0.03, 0.2), [(0.3, 0.45), (1.0, 1.02)]),
        ((250.0, 0.0, 0.0, 0.1, 0.0, 0.0), [(0.0, 0.1)]),
    ],
)
def test_render_gpu_matches_naive_twin(fp, gaps):
    seg_start = np.array([0.0, 0.2, 0.5, 0.5, 0.9, 1.3])
    w0 = np.array([60.0, 60.0, 700.0, 650.0, 120.0, 300.0])
    w1 = np.array([60.0, 700.0, 700.0, 650.0, 120.0, 60.0])
    phase = np.array([3, 4, 1, 1, 0, 4], dtype=np.uint8)
    tag = np.array([-1, -1, 0, 5, 0, -1], dtype=np.int32)
    n = int(1.6 * fp[0])
    key = K.stream_keys(3, 1, 2)[1]
    ts0 = T0_NS + 1234
    out = (np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.uint8), np.empty(n, np.int32))
    ga = np.array([a for a, _ in gaps], dtype=np.float64)
    gb = np.array([b for _, b in gaps], dtype=np.float64)
    m = K.render_gpu(seg_start, w0, w1, phase, tag, ga, gb, np.array(fp), n, ts0, key, *out)
    expect = naive_render(seg_start, w0, w1, phase, tag, gaps, fp, n, ts0, key)
    assert m == len(expect)
    assert out[0][:m].tolist() == [r[0] for r in expect]
    np.testing.assert_allclose(out[1][:m], [r[1] for r in expect], rtol=1e-6, atol=1e-3)
    assert out[2][:m].tolist() == [r[2] for r in expect]
    assert out[3][:m].tolist() == [r[3] for r in expect]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 25),
    seconds=st.floats(1.0, 30.0),
    max_batch=st.integers(1, 5),
    max_tokens=st.sampled_from([1, 300, 5000]),
    seed=st.integers(0, 10_000),
)
def test_simulate_replica_matches_naive_twin(n, seconds, max_batch, max_tokens, seed):
    gen = np.random.default_rng(seed)
    arrivals = np.sort(gen.uniform(0, seconds, n))
    if n > 2:
        arrivals[1] = arrivals[0]  # simultaneous arrivals
    prompts = gen.integers(1, 2000, n)
    outputs = gen.integers(1, 40, n)
    q = np.zeros(K.N_REPLICA_PARAMS)
    q[[K.Q_SECONDS, K.Q_MAX_BATCH, K.Q_PREFILL_OVERHEAD_S, K.Q_PREFILL_TOKENS_PER_S, K.Q_DECODE_BASE_S,
       K.Q_DECODE_PER_SEQ_S, K.Q_MAX_PREFILL_TOKENS]] = [seconds, max_batch, 0.01, 8000.0, 0.03, 0.001, max_tokens]
    cap = 4 * n + 4
    ss, sp, sb = np.empty(cap), np.empty(cap, np.uint8), np.empty(cap, np.int32)
    times = np.empty((n, 3))
    m = K.simulate_replica(arrivals, prompts.astype(float), outputs, q, ss, sp, sb, times)
    segs, expect = naive_replica(arrivals.tolist(), prompts.tolist(), outputs.tolist(), seconds, max_batch,
                                 0.01, 8000.0, 0.03, 0.001, max_tokens)
    assert m == len(segs)
    np.testing.assert_allclose(ss[:m], [s[0] for s in segs], rtol=0, atol=1e-9)
    assert sp[:m].tolist() == [s[1] for s in segs]
    assert sb[:m].tolist() == [s[2] for s in segs]
    np.testing.assert_allclose(times, np.array(expect).reshape(n, 3), rtol=0, atol=1e-9)
    assert (sb[:m] <= max_batch).all()


def test_single_request_timing_is_exact():
    q = np.zeros(K.N_REPLICA_PARAMS)
    q[[K.Q_SECONDS, K.Q_MAX_BATCH, K.Q_PREFILL_OVERHEAD_S, K.Q_PREFILL_TOKENS_PER_S, K.Q_DECODE_BASE_S,
       K.Q_DECODE_PER_SEQ_S, K.Q_MAX_PREFILL_TOKENS]] = [100.0, 8, 0.01, 1000.0, 0.03, 0.002, 8192]
    ss, sp, sb = np.empty(8), np.empty(8, np.uint8), np.empty(8, np.int32)
    times = np.empty((1, 3))
    m = K.simulate_replica(np.array([2.0]), np.array([500.0]), np.array([11]), q, ss, sp, sb, times)
    first = 2.0 + 0.01 + 0.5
    finish = first + 10 * 0.032
    np.testing.assert_allclose(times[0], [2.0, first, finish])
    np.testing.assert_allclose(ss[:m], [0.0, 2.0, first, finish])
    assert sp[:m].tolist() == [0, 1, 2, 0] and sb[:m].tolist() == [0, 1, 1, 0]


# ------------------------------------------------------------------------ determinism
def test_same_seed_same_frame_other_seed_differs():
    a = _train(seed=5, host_offset_ms=2.0, drop_fraction=0.05)
    b = _train(seed=5, host_offset_ms=2.0, drop_fraction=0.05)
    c = _train(seed=6, host_offset_ms=2.0, drop_fraction=0.05)
    assert a.samples.columns == TRAIN_COLS
    assert_frame_equal(a.samples, b.samples)
    assert a.truth == b.truth
    assert not a.samples["power_w"].equals(c.samples["power_w"])
    ia, ib = synth.inference(gpus=2, seconds=10, seed=3), synth.inference(gpus=2, seconds=10, seed=3)
    assert_frame_equal(ia.samples, ib.samples)
    assert ia.truth == ib.truth


def test_written_files_are_byte_identical(tmp_path):
    for i in (1, 2):
        _train(tmp_path / f"run{i}", seed=11, host_offset_ms=3.0, gaps=1)
    files = sorted(p.name for p in (tmp_path / "run1").iterdir())
    assert "manifest.json" in files and "topology.parquet" in files
    assert any(f.endswith(".parquet") and f.startswith("part-") for f in files)
    for name in files:
        assert (tmp_path / "run1" / name).read_bytes() == (tmp_path / "run2" / name).read_bytes(), name


def test_streaming_equals_in_memory_and_batching_does_not_matter(tmp_path):
    kw = dict(seed=2, host_offset_ms=2.0, drop_fraction=0.02, gaps=1, gap_s=0.3, stragglers=1)
    mem = _train(**kw)
    disk = _train(tmp_path / "ds", **kw)
    assert disk.samples is None and disk.path == tmp_path / "ds"
    back = read_dataset_samples(tmp_path / "ds", columns=TRAIN_COLS)
    assert_frame_equal(back, mem.samples)
    assert synth.read_truth(tmp_path / "ds") == mem.truth | {"rows": mem.samples.height}
    assert read_manifest(tmp_path / "ds")["power"]["kind"] == "instant"
    plan = synth.training(C.PLAN_ONLY, **{**SMALL, **kw})
    one_gpu_batches = C.finish(plan, None, batch_samples=1)
    assert_frame_equal(one_gpu_batches.samples, mem.samples)
    plan.threads = 1
    assert_frame_equal(C.finish(plan, None).samples, mem.samples)


@settings(max_examples=10, deadline=None)
@given(lo=st.integers(0, 5), width=st.integers(1, 6))
def test_any_gpu_range_renders_the_same_rows(lo, width):
    plan = synth.inference(C.PLAN_ONLY, gpus=6, tp=2, seconds=4.0, rate_hz=200.0, arrival_rate_hz=2.0, seed=4,
                           drop_fraction=0.1)
    full = C.render_batch(plan, 0, 6)
    hi = min(6, lo + width)
    part = C.render_batch(plan, lo, hi)
    start = int(full.counts[:lo].sum())
    stop = start + int(part.counts.sum())
    assert np.array_equal(part.ts_ns, full.ts_ns[start:stop])
    assert np.array_equal(part.power_w, full.power_w[start:stop])
    assert np.array_equal(part.phase, full.phase[start:stop])


# ------------------------------------------------------------------ truth vs the power
def test_training_labels_match_levels():
    r = synth.training(gpus=8, seconds=12.0, rate_hz=1000.0, seed=1, checkpoint_every_s=5.0)
    t = r.truth
    means = r.samples.group_by("truth_phase").agg(pl.col("power_w").mean()).sort("truth_phase")
    m = dict(zip(means["truth_phase"].to_list(), means["power_w"].to_list()))
    lv = t["levels_w"]
    assert lv == {"idle": 75.0, "communication": 137.5, "compute": 700.0, "checkpoint": 87.5}  # H100 spec
    assert m[1] == pytest.approx(np.mean(t["gpu_levels_w"]["compute"]), rel=0.01)
    assert m[0] == pytest.approx(np.mean(t["gpu_levels_w"]["communication"]), rel=0.02)
    assert m[2] == pytest.approx(lv["checkpoint"], rel=0.02)
    assert m[4] == pytest.approx((lv["idle"] + np.mean(t["gpu_levels_w"]["compute"])) / 2, rel=0.02)
    # compute near TDP, communication near idle
    assert m[1] > 0.95 * 700 and m[0] < 75 + 0.2 * (700 - 75)
    # per-GPU compute level as recorded
    per_gpu = r.samples.filter(pl.col("truth_phase") == 1).group_by("gpu", maintain_order=True).agg(pl.col("power_w").mean())
    np.testing.assert_allclose(per_gpu["power_w"].to_numpy(), t["gpu_levels_w"]["compute"], rtol=0.005)


@pytest.mark.parametrize("model, levels", [("A100", (63.0, 400.0, 250.0)), ("H100", (75.0, 700.0, 380.0))])
def test_inference_labels_match_levels(model, levels):
    r = synth.inference(gpus=4, seconds=40.0, rate_hz=1000.0, gpu_model=model, arrival_rate_hz=0.4, seed=2,
                        level_spread=0.0)
    t = r.truth
    assert (t["levels_w"]["idle"], t["levels_w"]["prompt"], t["levels_w"]["token"]) == levels
    s = r.samples
    gain = t["params"]["token_batch_gain"] / (t["params"]["max_batch"] - 1)
    expected_token = levels[2] * (1 + gain * (s.filter(pl.col("truth_phase") == 2)["truth_batch"].cast(pl.Float64) - 1))
    got = {p: s.filter(pl.col("truth_phase") == p)["power_w"].mean() for p in (0, 1, 2)}
    assert got[0] == pytest.approx(levels[0], rel=0.02)
    assert got[1] == pytest.approx(levels[1], rel=0.01)
    assert got[2] == pytest.approx(expected_token.mean(), rel=0.01)
    assert all(s.filter(pl.col("truth_phase") == p).height > 1000 for p in (0, 1, 2))
    assert (s.filter(pl.col("truth_phase") == 0)["truth_batch"] == 0).all()


def test_prompt_bursts_grow_with_prompt_tokens_and_tp_groups_share_phases():
    log = pl.DataFrame({"arrival_s": [1.0, 5.0], "prompt_tokens": [500, 4000], "output_tokens": [20, 20]})
    r = synth.inference(gpus=4, tp=2, seconds=10.0, rate_hz=1000.0, request_log=log, gpu_model="A100",
                        prefill_tokens_per_s=8000.0, prefill_overhead_s=0.01, seed=0)
    req = pl.DataFrame(r.truth["requests"])
    assert req["replica"].to_list() == [0, 1]  # round-robin
    ttft = (req["first_token_s"] - req["arrival_s"]).to_list()
    assert ttft == pytest.approx([0.01 + 500 / 8000, 0.01 + 4000 / 8000])
    prompt_ms = (r.samples.filter(pl.col("truth_phase") == 1).group_by("gpu", maintain_order=True).len())
    assert prompt_ms["len"].to_list() == pytest.approx([72.5, 72.5, 510, 510], abs=1.5)
    by_gpu = {g: d for (g,), d in r.samples.group_by("gpu", maintain_order=True)}
    gpus = list(by_gpu)
    assert by_gpu[gpus[0]]["truth_phase"].equals(by_gpu[gpus[1]]["truth_phase"])
    assert not by_gpu[gpus[0]]["truth_phase"].equals(by_gpu[gpus[2]]["truth_phase"])


def test_request_log_from_csv_with_replica_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,replica\n0.5,100,5,1\n0.2,100,5,1\n9.0,50,3,0\n99,1,1,0\n")
    r = synth.inference(gpus=2, seconds=10.0, rate_hz=100.0, request_log=str(path), seed=0)
    req = pl.DataFrame(r.truth["requests"])
    assert req.select("replica", "arrival_s").rows() == [(0, 9.0), (1, 0.2), (1, 0.5)]
    assert r.truth["params"]["request_log"] == str(path)
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival,prompt_tokens\n1,2\n")
    with pytest.raises(InputError, match="bad.csv: missing column"):
        synth.inference(gpus=2, request_log=bad)
    with pytest.raises(ParameterError, match="replica must be in"):
        synth.inference(gpus=2, request_log=pl.DataFrame({"arrival_s": [1.0], "prompt_tokens": [1],
                                                          "output_tokens": [1], "replica": [2]}))
    with pytest.raises(ParameterError, match="output_tokens must be >= 1"):
        synth.inference(gpus=2, request_log=pl.DataFrame({"arrival_s": [1.0], "prompt_tokens": [1], "output_tokens": [0]}))


# --------------------------------------------------------------------- the schedule
def _iteration_starts(df: pl.DataFrame) -> pl.DataFrame:
    """Per GPU, the true time (s) of the first sample of each iteration."""
    return (
        df.filter(pl.col("truth_iteration") >= 0)
        .with_columns(((pl.col("ts").dt.epoch("ns") - T0_NS) / 1e9).alias("t"))
        .group_by("gpu", "truth_iteration")
        .agg(pl.col("t").min())
        .sort("gpu", "truth_iteration")
    )


def test_iteration_period_matches_parameter():
    r = _train(gpus=3, seconds=10.0, rate_hz=1000.0, iteration_s=0.4, jitter=0.0, stragglers=0,
               checkpoint_every_s=None)
    assert r.truth["iteration_period_s"] == pytest.approx(0.4, abs=1e-12)
    starts = _iteration_starts(r.samples)
    for (_,), d in starts.group_by("gpu"):
        np.testing.assert_allclose(np.diff(d["t"].to_numpy()), 0.4, atol=1.01e-3)
    # compute / communication split per iteration (samples per phase per iteration)
    per = r.samples.filter(pl.col("truth_iteration").is_between(0, 5)).group_by("truth_phase").len().sort("truth_phase")
    assert per["len"].to_list() == pytest.approx([3 * 6 * 100, 3 * 6 * 300], abs=3 * 6)


def test_stragglers_stretch_iterations_and_others_wait():
    r = _train(gpus=6, seconds=12.0, rate_hz=1000.0, iteration_s=1.0, compute_fraction=0.6, jitter=0.0,
               stragglers=1, straggler_slowdown=0.3, checkpoint_every_s=None)
    (strag,) = r.truth["stragglers"]
    delay = strag["delay_s"]
    assert 0.5 * 0.3 * 0.6 <= delay <= 0.3 * 0.6
    assert r.truth["iteration_period_s"] == pytest.approx(1.0 + delay, abs=1e-9)
    mid = r.samples.filter(pl.col("truth_iteration").is_between(1, 8))
    compute = mid.filter(pl.col("truth_phase") == 1).group_by("gpu").len()
    comm = mid.filter(pl.col("truth_phase") == 0).group_by("gpu").len()
    c = dict(compute.iter_rows())
    w = dict(comm.iter_rows())
    for gpu in c:
        if gpu == strag["gpu"]:
            assert c[gpu] == pytest.approx(8 * 600 * (1 + strag["slowdown"]), abs=10)
            assert w[gpu] == pytest.approx(8 * 400, abs=10)
        else:
            assert c[gpu] == pytest.approx(8 * 600, abs=10)
            assert w[gpu] == pytest.approx(8 * (400 + delay * 1000), abs=10)  # waiting at communication power


def test_iterations_are_synchronous_across_gpus():
    r = _train(gpus=5, seconds=8.0, rate_hz=1000.0, jitter=0.05, stragglers=2)
    starts = _iteration_starts(r.samples)
    spread = starts.group_by("truth_iteration").agg((pl.col("t").max() - pl.col("t").min()).alias("d"))
    assert spread["d"].max() < 1e-9
    truth_starts = np.array(r.truth["iterations"]["start_s"])
    got = starts.filter(pl.col("gpu") == starts["gpu"][0])["t"].to_numpy()
    assert np.all((got >= truth_starts[: got.size] - 1e-9) & (got < truth_starts[: got.size] + 1e-3))


def test_checkpoint_dips_where_the_manifest_says():
    r = synth.training(gpus=4, seconds=20.0, rate_hz=1000.0, checkpoint_every_s=6.0, checkpoint_s=1.0, seed=3)
    ck = r.truth["checkpoints"]
    assert len(ck) == 2
    assert ck[0]["start_s"] >= 1.0 + 6.0 and ck[0]["end_s"] == pytest.approx(ck[0]["start_s"] + 1.0)
    t = r.samples.with_columns(((pl.col("ts").dt.epoch("ns") - T0_NS) / 1e9).alias("t"))
    for c in ck:
        inside = t.filter((pl.col("t") >= c["start_s"] + 1e-9) & (pl.col("t") < c["end_s"] - 1e-9))
        assert (inside["truth_phase"] == 2).all() and inside.height == pytest.approx(4 * 1000, abs=8)
        assert inside["power_w"].mean() == pytest.approx(r.truth["levels_w"]["checkpoint"], rel=0.02)
        before = t.filter((pl.col("t") >= c["start_s"] - 1.0) & (pl.col("t") < c["start_s"]))
        assert before["power_w"].mean() > 3 * inside["power_w"].mean()
    assert t.filter(pl.col("truth_phase") == 2).height == pytest.approx(2 * 4 * 1000, abs=16)


def test_ramps_and_idle_frame_the_job():
    r = _train(gpus=2, seconds=10.0, rate_hz=100.0, ramp_s=1.0, idle_s=2.0)
    one = r.samples.filter(pl.col("gpu") == r.samples["gpu"][0])
    ph = one["truth_phase"].to_list()
    assert ph[:200] == [3] * 200 and ph[200:300] == [4] * 100 and ph[-200:] == [3] * 200
    assert ph[-300:-200] == [4] * 100
    assert r.truth["ramps"] == [{"kind": "start", "start_s": 2.0, "end_s": 3.0}, {"kind": "stop", "start_s": 7.0, "end_s": 8.0}]


# ------------------------------------------------------------------ telemetry effects
def test_host_offsets_shift_timestamps():
    r = _train(gpus=16, gpus_per_host=4, host_offset_ms=5.0, seed=9)
    offsets = r.truth["host_offsets_ms"]
    assert len(offsets) == 4 and len(set(offsets.values())) == 4
    first = r.samples.group_by("gpu", maintain_order=True).agg(pl.col("ts").first().dt.epoch("ns") - T0_NS)
    topo = dict(r.topology.select("gpu", "host").iter_rows())
    for gpu, off_ns in first.iter_rows():
        assert off_ns == round(offsets[topo[gpu]] * 1e6)


def test_drops_and_gaps():
    r = _train(gpus=8, gpus_per_host=4, seconds=10.0, drop_fraction=0.1, gaps=2, gap_s=0.5, seed=1)
    full = 8 * 5000
    gap_rows = sum(e["end_s"] - e["start_s"] for e in r.truth["gaps"]) * 500 * 4
    assert r.samples.height == pytest.approx((full - gap_rows) * 0.9, rel=0.02)
    topo = dict(r.topology.select("gpu", "host").iter_rows())
    t = r.samples.with_columns(((pl.col("ts").dt.epoch("ns") - T0_NS) / 1e9).alias("t"),
                               pl.col("gpu").replace_strict(topo).alias("host"))
    assert len(r.truth["gaps"]) >= 2
    for g in r.truth["gaps"]:
        inside = t.filter((pl.col("host") == g["host"]) & (pl.col("t") >= g["start_s"]) & (pl.col("t") < g["end_s"]))
        assert inside.height == 0
    # ts strictly increasing per GPU
    assert r.samples.group_by("gpu").agg((pl.col("ts").diff() > 0).all().alias("ok"))["ok"].all()


def test_average_window_is_a_trailing_mean_of_the_instant_trace():
    kw = dict(gpus=2, seconds=5.0, rate_hz=200.0, seed=4)
    inst = _train(**kw).samples
    avg = _train(**kw, average_window_s=0.5)
    assert avg.power == C.PowerSemantics(kind="average", window_s=0.5, field="synthetic")
    expect = inst.with_columns(
        pl.col("power_w").cast(pl.Float64).rolling_mean(100, min_samples=1).over("gpu").alias("power_w")
    )
    np.testing.assert_allclose(avg.samples["power_w"].to_numpy(), expect["power_w"].to_numpy(), rtol=1e-5)
    assert avg.samples["truth_phase"].equals(inst["truth_phase"])


def test_update_period_repeats_values():
    r = _train(gpus=2, seconds=6.0, rate_hz=1000.0, update_period_s=0.1, seed=0)
    for (_,), d in r.samples.group_by("gpu"):
        changes = int((d["power_w"].diff().fill_null(1.0) != 0).sum())
        assert changes == pytest.approx(60, abs=1)


# --------------------------------------------------------------- topology and truth
def test_topology_ids_sort_in_generation_order():
    r = _train(gpus=20, gpus_per_host=8, hosts_per_rack=2, racks_per_row=1, gpu_model="A100", seconds=4.0)
    topo = r.topology
    assert topo["gpu"].to_list() == sorted(topo["gpu"].to_list()) == r.samples["gpu"].unique(maintain_order=True).to_list()
    assert topo.row(0, named=True) == {"gpu": "node00/0", "host": "node00", "rack": "rack00", "row": "row00",
                                       "model": "A100-SXM-80GB", "tdp_w": 400.0, "job": "train0"}
    assert topo["host"].n_unique() == 3 and topo["rack"].n_unique() == 2 and topo["row"].n_unique() == 2


def test_read_truth_errors(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "tracekit.dataset/1"}))
    with pytest.raises(InputError, match="no 'synth' block"):
        synth.read_truth(tmp_path)
    with pytest.raises(InputError, match="unreadable manifest"):
        synth.read_truth(tmp_path / "nope")


def test_truth_is_strict_json():
    r = synth.inference(gpus=2, seconds=5.0, rate_hz=100.0, arrival_rate_hz=3.0, seed=1)
    text = json.dumps(r.truth, allow_nan=False)
    assert "requests" in json.loads(text)
    req = pl.DataFrame(r.truth["requests"])
    done = req.filter(pl.col("finish_s").is_not_null())
    assert (done["first_token_s"] >= done["arrival_s"]).all() and (done["finish_s"] >= done["first_token_s"]).all()


# ------------------------------------------------------------------------ bad params
@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(gpus=0), "gpus must be >= 1"),
        (dict(iteration_s=-1.0), "iteration_s must be > 0"),
        (dict(compute_fraction=1.5), r"compute_fraction must be in \(0, 1\]"),
        (dict(compute_fraction=0.0), r"compute_fraction must be in \(0, 1\]"),
        (dict(gpu_model="X100"), "unknown GPU model 'X100'"),
        (dict(rate_hz=0), "rate_hz must be > 0"),
        (dict(seconds=0), "seconds must be > 0"),
        (dict(seconds=-3.0), "seconds must be > 0"),
        (dict(seconds=float("nan")), "seconds must be finite"),
        (dict(seconds=1.0, ramp_s=1.0), "no time for iterations"),
        (dict(jitter=0.3), r"jitter must be in \[0, 0.25\)"),
        (dict(stragglers=9), r"stragglers \(9\) cannot exceed gpus \(4\)"),
        (dict(drop_fraction=1.0), r"drop_fraction must be in \[0, 1\)"),
        (dict(gpus=2.5), "gpus must be an integer"),
        (dict(start="yesterday"), "start must be an ISO time"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(average_window_s=-1), "average_window_s must be > 0"),
    ],
)
def test_training_bad_parameters(kw, message):
    with pytest.raises(ParameterError, match=message):
        _train(**kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(gpus=0), "gpus must be >= 1"),
        (dict(gpus=6, tp=4), r"gpus \(6\) must be a multiple of tp \(4\)"),
        (dict(max_batch=0), "max_batch must be >= 1"),
        (dict(arrival_rate_hz=-1), "arrival_rate_hz must be >= 0"),
        (dict(gpu_model="nope"), "unknown GPU model"),
        (dict(request_log=[1, 2]), "request_log must be a Polars DataFrame"),
        (dict(rate_hz=-5), "rate_hz must be > 0"),
    ],
)
def test_inference_bad_parameters(kw, message):
    with pytest.raises(ParameterError, match=message):
        synth.inference(**{"seconds": 2.0, **kw})


# ----------------------------------------------------------------------- raw formats
@pytest.fixture(scope="module")
def small_result():
    return synth.training(gpus=3, seconds=3.0, rate_hz=10.0, ramp_s=0.5, checkpoint_every_s=None, seed=1)


def test_nvsmi_csv_with_index(tmp_path, small_result):
    p = synth.write_raw(small_result, tmp_path / "a.csv", "nvsmi_csv", utc_offset_s=-7 * 3600)
    lines = p.read_text().splitlines()
    assert lines[0] == "timestamp, index, uuid, power.draw [W], clocks.sm [MHz], utilization.gpu [%]"
    assert len(lines) == 1 + 3 * 30
    first = lines[1].split(", ")
    assert first[0] == "2024/12/31 17:00:00.000" and first[1] == "0" and first[2].startswith("GPU-")
    assert [ln.split(", ")[1] for ln in lines[1:4]] == ["0", "1", "2"]  # one sweep
    s = small_result.samples
    assert first[3] == f"{s['power_w'][0]:.2f} W" and first[4].endswith(" MHz") and first[5].endswith(" %")
    df = pl.read_csv(p, separator=",")
    watts = df[" power.draw [W]"].str.strip_chars().str.strip_suffix(" W").cast(pl.Float64)
    expect = s.sort("ts", "gpu")["power_w"].cast(pl.Float64)
    np.testing.assert_allclose(watts.to_numpy(), expect.to_numpy(), atol=0.006)


def test_nvsmi_csv_noindex_interleaves_sweeps(tmp_path, small_result):
    p = synth.write_raw(small_result, tmp_path / "b.csv", "nvsmi_csv_noindex", sweep_skew_ms=2.0)
    lines = p.read_text().splitlines()
    assert lines[0] == "timestamp, power.draw [W], utilization.gpu [%], memory.used [MiB]"
    stamps = [ln.split(", ")[0] for ln in lines[1:7]]
    assert stamps == ["2025/01/01 00:00:00.000", "2025/01/01 00:00:00.002", "2025/01/01 00:00:00.004",
                      "2025/01/01 00:00:00.100", "2025/01/01 00:00:00.102", "2025/01/01 00:00:00.104"]
    assert all(ln.split(", ")[1].endswith(" W") for ln in lines[1:])


def test_dcgmi_dmon_layout(tmp_path, small_result):
    p = synth.write_raw(small_result, tmp_path / "c.txt", "dcgmi_dmon", header_every=40)
    lines = p.read_text().splitlines()
    assert lines[0].split()[1:] == ["#Entity", "POWER", "SMCLK"] and lines[1].split()[1:] == ["ID", "W", "MHZ"]
    assert lines[0].split()[0] == "2025-01-01T00:00:00.000+00:00"
    data = [ln for ln in lines if ln.split()[1] == "GPU"]
    assert len(data) == 90 and len(lines) == 90 + 2 * 3  # headers at rows 0, 40, 80
    assert data[4].split()[1:3] == ["GPU", "1"]
    s = small_result.samples.sort("ts", "gpu")
    np.testing.assert_allclose([float(ln.split()[3]) for ln in data], s["power_w"].to_numpy(), atol=6e-4)


def test_dcgm_exporter_lines(tmp_path):
    r = synth.training(gpus=4, gpus_per_host=2, seconds=2.0, rate_hz=5.0, ramp_s=0.2, host_offset_ms=1.0,
                       checkpoint_every_s=None, seed=1)
    p = synth.write_raw(r, tmp_path / "d.prom", "dcgm_exporter")
    lines = p.read_text().splitlines()
    assert lines[0] == "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz)."
    power = [ln for ln in lines if ln.startswith("DCGM_FI_DEV_POWER_USAGE{")]
    assert len(power) == 4 * 10
    head, value, ms = power[0].rsplit(" ", 2)
    assert head.startswith('DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-') and 'Hostname="node0' in head
    assert head.endswith('modelName="NVIDIA H100 80GB HBM3"}')
    offsets = r.truth["host_offsets_ms"]
    host = head.split('Hostname="')[1].split('"')[0]
    assert int(ms) == (T0_NS + round(offsets[host] * 1e6)) // 1_000_000
    assert float(value) == pytest.approx(float(r.samples.filter(pl.col("gpu") == f"{host}/0")["power_w"][0]), abs=6e-4)
    assert find_gpu_spec(DRIVER_NAMES["H100-SXM"]).name == "H100-SXM"


def test_zeus_json_keeps_only_changes(tmp_path):
    r = synth.training(gpus=2, seconds=3.0, rate_hz=50.0, ramp_s=0.5, update_period_s=0.2, checkpoint_every_s=None)
    p = synth.write_raw(r, tmp_path / "e.json.gz", "zeus_json")
    data = json.loads(gzip.decompress(p.read_bytes()))
    assert sorted(data) == ["0", "1"]
    pts = data["0"]
    assert 14 <= len(pts) <= 16  # 3 s / 0.2 s updates, not 150 samples
    assert pts[0][0] == pytest.approx(T0_NS / 1e9)
    assert all(a[1] != b[1] for a, b in zip(pts, pts[1:]))


def test_write_raw_errors(tmp_path, small_result):
    multi = synth.training(gpus=4, gpus_per_host=2, seconds=2.0, rate_hz=5.0, ramp_s=0.2, checkpoint_every_s=None)
    with pytest.raises(ParameterError, match="logs one host; the samples hold 2"):
        synth.write_raw(multi, tmp_path / "x.csv", "nvsmi_csv")
    one = synth.write_raw(multi, tmp_path / "x.csv", "nvsmi_csv", host="node01")
    assert len(one.read_text().splitlines()) == 1 + 2 * 10
    with pytest.raises(ParameterError, match="unknown raw format"):
        synth.write_raw(small_result, tmp_path / "y", "csv")
    with pytest.raises(ParameterError, match="pass gpu_model="):
        synth.write_raw(small_result.samples, tmp_path / "y", "zeus_json")
    with pytest.raises(ParameterError, match="samples in memory"):
        synth.write_raw(synth.training(tmp_path / "ds", gpus=1, seconds=3, rate_hz=10, ramp_s=0.2), tmp_path / "z", "zeus_json")
    assert not (tmp_path / "y").exists()


# ----------------------------------------------------------------- bundled samples
def test_bundled_training_sample_regenerates_from_its_truth():
    path = SAMPLE_TRACES / "h100_training"
    if not (path / "manifest.json").is_file():
        pytest.skip("sample_traces/h100_training not generated")
    truth = synth.read_truth(path)
    params = dict(truth["params"])
    again = synth.training(**params)
    back = read_dataset_samples(path, columns=TRAIN_COLS)
    assert_frame_equal(back, again.samples)
    assert truth["checkpoints"] and truth["stragglers"]


def test_bundled_inference_sample_regenerates_from_its_truth():
    path = SAMPLE_TRACES / "a100_inference"
    if not (path / "manifest.json").is_file():
        pytest.skip("sample_traces/a100_inference not generated")
    truth = synth.read_truth(path)
    params = {k: v for k, v in truth["params"].items() if k != "request_log"}
    again = synth.inference(**params)
    assert_frame_equal(read_dataset_samples(path, columns=INFER_COLS), again.samples)


def test_start_accepts_datetimes_and_zones():
    a = _train(gpus=1, start=datetime(2025, 1, 1, 1, tzinfo=timezone.utc))
    b = _train(gpus=1, start="2025-01-01T02:00:00+01:00")
    c = _train(gpus=1, start="2025-01-01T01:00:00")
    assert a.samples["ts"][0] == b.samples["ts"][0] == c.samples["ts"][0]


def test_bundled_raw_files_regenerate_byte_identically(tmp_path):
    import importlib.util

    script = SAMPLE_TRACES / "make_samples.py"
    if not script.is_file() or not (SAMPLE_TRACES / "raw").is_dir():
        pytest.skip("sample_traces/raw not generated")
    spec = importlib.util.spec_from_file_location("make_samples", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert set(mod.RAW) == {p.name for p in (SAMPLE_TRACES / "raw").iterdir() if p.is_file()}
    assert {f for _, _, f, _ in mod.RAW.values()} == set(synth.RAW_FORMATS)
    for name, (gen, params, fmt, opts) in mod.RAW.items():
        out = synth.write_raw(gen(**params), tmp_path / name, fmt, **opts)
        assert out.read_bytes() == (SAMPLE_TRACES / "raw" / name).read_bytes(), name
