"""Streaming executor: any GPU batching (and threads, and Dask) gives the one-shot answer.

The reference is ``analyze(..., engine="memory")`` with one batch per GPU range; the
streamed runs read GPU batches from the dataset files (two passes).  Equal means:
identical per-GPU results (segments, levels, sampling statistics) and summaries equal
up to the order of floating-point additions (rel. 1e-9).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracekit
from tracekit import synth
from tracekit.analysis.analyze import analyze
from tracekit.analysis.rules import Rule
from tracekit.engine.stream import boundary_levels, plan_batches, run_ordered
from tracekit.errors import InputError, ParameterError
from tracekit.io.dataset import DatasetIndex, read_dataset_arrays


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "train"
    # 3 rows x 2 racks x 2 hosts x 4 GPUs = 48 GPUs; a gap and dropped samples
    synth.training(out, gpus=40, seconds=6, rate_hz=500, gpus_per_host=4, hosts_per_rack=2, racks_per_row=2,
                   iteration_s=0.5, checkpoint_every_s=3, checkpoint_s=0.5, gaps=2, drop_fraction=0.01,
                   host_offset_ms=3, seed=3)
    return out


@pytest.fixture(scope="module")
def small_groups(training, tmp_path_factory):
    """The training samples rewritten with 400-row row groups (6-7 per GPU) and files of
    30 000 rows, so time windows and GPUs spanning files are exercised."""
    from tracekit.io.dataset import DatasetWriter
    from tracekit.schema import PowerSemantics

    ts = tracekit.open(training)
    out = tmp_path_factory.mktemp("stream") / "small_groups"
    with DatasetWriter(out, topology=ts.topology, power=PowerSemantics(**ts.manifest["power"]), row_group_rows=400,
                       file_rows=30_000) as w:
        w.write(ts.samples)
    return out


@pytest.fixture(scope="module")
def inference(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "infer"
    synth.inference(out, gpus=6, seconds=20, rate_hz=250, tp=2, gpus_per_host=2, hosts_per_rack=1,
                    arrival_rate_hz=1.0, seed=5)
    return out


class _Quiet:
    """A fixture value with a short repr (hypothesis prints its arguments)."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return "<reference analysis>"


@pytest.fixture(scope="module")
def reference(training):
    return _Quiet(analyze(tracekit.open(training), engine="memory"))


def _close(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), (path, a, b)
    else:
        assert a == b, (path, a, b)


def assert_same(ref, got) -> None:
    sa, sb = ref.summary(), got.summary()
    sa["dataset"] = {k: v for k, v in sa["dataset"].items() if k != "engine"}
    sb["dataset"] = {k: v for k, v in sb["dataset"].items() if k != "engine"}
    _close(sa, sb)
    assert ref.phases.equals(got.phases)
    assert ref.gpu_stats.equals(got.gpu_stats)
    np.testing.assert_allclose(got.cluster_power["power_w"].to_numpy(), ref.cluster_power["power_w"].to_numpy(),
                               rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(got.cluster_power["coverage"].to_numpy(), ref.cluster_power["coverage"].to_numpy(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.gpu_heatmap["power_w"], ref.gpu_heatmap["power_w"], rtol=1e-9)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_gpus=st.integers(1, 48), workers=st.sampled_from([1, 2]), read_rows=st.sampled_from([None, 1, 3000, 7000]))
def test_any_batching_gives_the_one_shot_answer(training, reference, batch_gpus, workers, read_rows):
    got = analyze(tracekit.open(training), engine="stream", batch_gpus=batch_gpus, workers=workers,
                  read_rows=read_rows)
    assert got.dataset["engine"]["mode"] == "stream"
    assert got.dataset["engine"]["batches"] >= math.ceil(40 / batch_gpus)
    assert_same(reference.value, got)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window_groups=st.integers(1, 8), batch_gpus=st.sampled_from([None, 1, 5, 16]),
       workers=st.sampled_from([1, 2]))
def test_time_windows_give_the_one_shot_answer(small_groups, reference, window_groups, batch_gpus, workers):
    index = DatasetIndex(small_groups)
    assert len(index.files) > 1 and len(index.gpu_groups(0)) >= 6
    got = analyze(tracekit.open(small_groups), engine="stream", window_groups=window_groups,
                  batch_gpus=batch_gpus, workers=workers)
    assert got.dataset["engine"]["windowed_batches"] == got.dataset["engine"]["batches"]
    assert_same(reference.value, got)


def test_memory_limit_windows_long_gpus(small_groups, reference, monkeypatch):
    # a batch budget below one GPU's rows (~2300 rows, ~55 kB): batches are read in
    # time windows chosen by the planner
    import tracekit.analysis.analyze as A

    monkeypatch.setattr(A, "_batch_budget", lambda *a: 40_000.0)
    got = analyze(tracekit.open(small_groups), engine="stream")
    assert got.dataset["engine"]["mode"] == "stream"
    assert got.dataset["engine"]["windowed_batches"] > 0
    assert_same(reference.value, got)


@pytest.mark.parametrize("batch_gpus", [1, 3])
def test_in_memory_batches_give_the_same_answer(training, reference, batch_gpus):
    got = analyze(tracekit.open(training), engine="memory", batch_gpus=batch_gpus, workers=2)
    assert got.dataset["engine"]["batches"] >= 40 // batch_gpus
    assert_same(reference.value, got)


def test_memory_limit_switches_to_streaming(training, reference):
    got = analyze(tracekit.open(training), memory_limit_bytes=64 * 2**20)
    assert got.dataset["engine"]["mode"] == "stream"
    assert_same(reference.value, got)
    small = analyze(tracekit.open(training))
    assert small.dataset["engine"]["mode"] == "memory"


def test_inference_streams_the_same(inference):
    ref = analyze(tracekit.open(inference), engine="memory")
    assert ref.workload == "inference"
    got = analyze(tracekit.open(inference), engine="stream", batch_gpus=1)
    assert_same(ref, got)


def _spy_same_groups(monkeypatch) -> list:
    """The groups :func:`partial.same_groups` finds, one dict per analysis."""
    from tracekit.analysis import partial

    found, real = [], partial.same_groups
    monkeypatch.setattr(partial, "same_groups", lambda ctx: found.append(real(ctx)) or found[-1])
    return found


@pytest.mark.parametrize("engine,batch_gpus", [("memory", None), ("stream", 1), ("stream", 3)])
def test_groups_with_the_same_gpus_copy_the_higher_groups_metrics(inference, monkeypatch, engine, batch_gpus):
    """The inference set's row is the whole cluster and each rack one host: those
    groups' metrics are copied from the cluster's and the racks' (the same sums), and
    equal, bit for bit, the metrics computed for them on their own."""
    from tracekit.analysis import partial

    found = _spy_same_groups(monkeypatch)
    copied = analyze(tracekit.open(inference), engine=engine, batch_gpus=batch_gpus).summary()
    assert found[-1] == {("row", 0): ("cluster", 0), **{("host", i): ("rack", i) for i in range(3)}}
    monkeypatch.setattr(partial, "same_groups", lambda ctx: {})
    computed = analyze(tracekit.open(inference), engine=engine, batch_gpus=batch_gpus).summary()
    assert copied["levels"] == computed["levels"]
    assert copied["levels"]["row"]["row00"]["dominant_hz"] is None  # the spectrum is the cluster's alone
    assert copied["levels"]["cluster"]["cluster"]["dominant_hz"] is not None


def test_a_level_with_rules_computes_its_groups(inference, monkeypatch):
    found = _spy_same_groups(monkeypatch)
    rule = Rule(name="any 1 s change", kind="window_change", level="host", window_s=1.0, limit_w=1.0)
    a = analyze(tracekit.open(inference), rules=[rule])
    assert found[-1] == {("row", 0): ("cluster", 0)}
    assert {v.group for v in a.violations} == set(a.levels["host"])


def test_offsets_and_rules_stream_the_same(training):
    ts = tracekit.open(training)
    hosts = sorted(set(ts.topology.get_column("host").to_list()))
    offsets = {h: 0.001 * i for i, h in enumerate(hosts)}
    rules = [Rule(name="host-swing", kind="window_change", level="host", window_s=0.1, limit_w=500.0),
             Rule(name="rack-ramp", kind="ramp", level="rack", window_s=0.1, limit_w_per_s=2e4)]
    ref = analyze(tracekit.open(training), engine="memory", align=offsets, rules=rules)
    got = analyze(tracekit.open(training), engine="stream", batch_gpus=5, align=offsets, rules=rules)
    assert ref.violations, "the rules were chosen to be violated"
    assert [v.to_dict() for v in ref.violations] == [v.to_dict() for v in got.violations]
    assert_same(ref, got)


@pytest.mark.parametrize("max_cells", [None, 1200])
def test_align_auto_streams_the_same(training, monkeypatch, max_cells):
    """--align auto on a streamed trace: the host series come from GPU batches read
    from the files (here also a few GPUs at a time), on the whole trace or, past
    ``MAX_CELLS``, on the middle slice, which the in-memory run uses too."""
    from tracekit.analysis import align

    if max_cells:
        monkeypatch.setattr(align, "MAX_CELLS", max_cells)
    ref = analyze(tracekit.open(training), engine="memory", align="auto")
    got = analyze(tracekit.open(training), engine="stream", batch_gpus=5, read_rows=2000, align="auto")
    assert len(ref.offsets_s) == 10 and any(v != 0 for v in ref.offsets_s.values())
    assert got.offsets_s == ref.offsets_s
    assert_same(ref, got)


def test_streaming_needs_a_dataset(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("timestamp, index, power.draw [W]\n2025/01/01 00:00:00.000, 0, 100.0 W\n"
                   "2025/01/01 00:00:00.100, 0, 110.0 W\n")
    with pytest.raises(ParameterError, match="need a canonical dataset"):
        analyze(tracekit.open(raw), engine="stream")


# -- the pieces ----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_index_reads_gpu_batches_and_time_ranges(training, data):
    gpus, offsets, ts, power, _ = read_dataset_arrays(training)
    index = DatasetIndex(training)
    assert index.gpus == gpus
    pick = data.draw(st.lists(st.integers(0, len(gpus) - 1), min_size=1, max_size=6, unique=True))
    t_lo, t_hi = int(ts.min()), int(ts.max())
    a = data.draw(st.one_of(st.none(), st.integers(t_lo - 10**9, t_hi)))
    b = data.draw(st.one_of(st.none(), st.integers(t_lo, t_hi + 10**9)))
    o, t, p = index.read(pick, a, b)
    for j, g in enumerate(pick):
        seg_t = ts[offsets[g]: offsets[g + 1]]
        seg_p = power[offsets[g]: offsets[g + 1]]
        keep = np.ones(len(seg_t), dtype=bool)
        if a is not None:
            keep &= seg_t >= a
        if b is not None:
            keep &= seg_t < b
        np.testing.assert_array_equal(t[o[j]: o[j + 1]], seg_t[keep])
        np.testing.assert_array_equal(p[o[j]: o[j + 1]], seg_p[keep])


def test_time_range_skips_row_groups(tmp_path):
    out = tmp_path / "long"
    synth.training(out, gpus=2, seconds=600, rate_hz=1000, seed=1)  # 600 k rows per GPU: 5 row groups each
    index = DatasetIndex(out)
    assert len(index.rg_rows) >= 10
    start = int(index.rg_t0.min()) + 10 * 10**9
    chosen = index.groups_of([0, 1], start, start + 10**9)
    assert len(chosen) == 2  # one group per GPU holds that second


def test_index_rejects_mixed_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tracekit.io.dataset import read_manifest

    out = tmp_path / "mixed"
    synth.training(out, gpus=2, seconds=3, rate_hz=100, seed=1)
    manifest = read_manifest(out)
    f = out / manifest["files"][0]["file"]
    table = pq.read_table(f)
    pq.write_table(table.cast(pa.schema([fld if fld.name != "gpu" else pa.field("gpu", pa.string())
                                         for fld in table.schema])), f, row_group_size=200)
    with pytest.raises(InputError, match="does not hold exactly one GPU"):
        DatasetIndex(out)
    # still analyzable: read whole into memory
    assert tracekit.open(out).n_samples == 600


def test_boundary_levels():
    keys = np.array([[0, 0], [0, 0], [0, 1], [1, 2], [1, 2]])
    assert boundary_levels(keys).tolist() == [3, 0, 1, 2, 0, 3]


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(st.integers(1, 100), min_size=1, max_size=60), budget=st.integers(1, 400),
       hosts_per_rack=st.integers(1, 4), gpus_per_host=st.integers(1, 4))
def test_plan_batches_covers_each_gpu_once_within_budget(costs, budget, hosts_per_rack, gpus_per_host):
    n = len(costs)
    host = np.arange(n) // gpus_per_host
    rack = host // hosts_per_rack
    keys = np.stack([rack, host], axis=1)
    batches = plan_batches(np.array(costs, float), keys, budget)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))
    c = np.array(costs)
    for b in batches:
        assert len(b) == 1 or c[b].sum() <= budget


def test_plan_batches_cuts_at_rack_boundaries():
    # 4 racks of 2 hosts of 2 GPUs, cost 1 each; budget 5: whole racks (4 GPUs) per batch
    n = 16
    host = np.arange(n) // 2
    keys = np.stack([host // 2, host], axis=1)
    batches = plan_batches(np.ones(n), keys, 5)
    assert [len(b) for b in batches] == [4, 4, 4, 4]
    assert all(len(set((b // 4).tolist())) == 1 for b in batches)


def test_run_ordered_keeps_order_with_threads():
    import time

    def slow(i):
        time.sleep(0.01 * (5 - i % 5))
        return i

    assert list(run_ordered(slow, [(i,) for i in range(12)], workers=3)) == list(range(12))


def _pool_sizes(monkeypatch) -> list[int]:
    """Thread counts of every thread pool map started (engine.local's shared pools and
    run_ordered's own)."""
    import concurrent.futures

    from tracekit.engine import local

    sizes: list[int] = []
    pool_map = local._pool_map
    def spy(fn, items, threads):
        if not getattr(local._LOCAL, "in_pool", False):  # (a pool thread's maps run inline)
            sizes.append(threads)
        return pool_map(fn, items, threads)

    monkeypatch.setattr(local, "_pool_map", spy)
    executor = concurrent.futures.ThreadPoolExecutor

    class Spy(executor):
        def __init__(self, max_workers=None, *a, **k):
            sizes.append(max_workers)
            super().__init__(max_workers, *a, **k)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", Spy)
    return sizes


@pytest.fixture(scope="module")
def unindexed(training, tmp_path_factory):
    """The training dataset in row groups of 7000 rows that mix GPUs: not indexable,
    so read whole (on threads, several groups) when it is opened."""
    import shutil

    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("stream") / "unindexed"
    shutil.copytree(training, out)
    for entry in json.loads((out / "manifest.json").read_text())["files"]:
        f = out / entry["file"]
        table = pq.read_table(f)
        pq.write_table(table, f, row_group_size=7000)
    return out


@pytest.mark.parametrize("engine", ["memory", "stream"])
def test_one_worker_starts_no_thread_pool(training, unindexed, engine, monkeypatch):
    """workers=1 reaches every threaded step (the read at open of a path, histograms,
    sampling statistics, reads, replay's per-GPU passes), not only the batch executor;
    and workers=3 is used (this machine's default may be 2)."""
    sizes = _pool_sizes(monkeypatch)
    analyze(tracekit.open(training), engine=engine, workers=1)
    tracekit.replay(tracekit.open(training), cap=500, workers=1)
    if engine == "memory":  # a path, opened (and here read whole) inside the call
        analyze(unindexed, workers=1)
        tracekit.replay(unindexed, cap=500, workers=1)
    assert sizes == []
    analyze(tracekit.open(training), engine=engine, workers=3)
    tracekit.replay(tracekit.open(training), cap=500, workers=3)
    assert sizes and set(sizes) == {3}


def test_cli_threads_reach_reading_and_replay(unindexed, capfd, monkeypatch):
    """--threads 1 holds from the read at open (of a dataset read whole) to the end of
    the command, and the scope ends with it."""
    from tracekit.engine.local import default_workers

    before = default_workers()
    sizes = _pool_sizes(monkeypatch)
    for cmd in (["analyze"], ["replay", "--cap", "500"]):
        code, _, _ = _main([*cmd, str(unindexed), "--threads", "1", "--json"], capfd)
        assert code == 0
    assert sizes == [] and default_workers() == before
    code, _, err = _main(["replay", str(unindexed), "--cap", "500", "--threads", "0"], capfd)
    assert code == 2 and err.strip() == "tracekit: error: --threads must be at least 1, got 0"
    code, _, _ = _main(["analyze", str(unindexed), "--threads", "1", "--until", "garbage"], capfd)
    assert code == 2 and default_workers() == before  # a later option's error leaves no scope behind


def _main(argv, capfd):
    from tracekit.cli import main

    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capfd.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_cli_memory_limit_and_engine(training, capfd):
    import json

    code, _, err = _main(["analyze", str(training), "--memory-limit", "lots"], capfd)
    assert code == 2
    assert err.strip() == "tracekit: error: cannot read --memory-limit 'lots'; write e.g. 2GiB, 1.5GB or 512MiB"
    code, _, err = _main(["analyze", str(training), "--threads", "0"], capfd)
    assert code == 2 and err.strip() == "tracekit: error: --threads must be at least 1, got 0"
    code, out, _ = _main(["analyze", str(training), "--memory-limit", "64MiB", "--json"], capfd)
    assert code == 0
    assert json.loads(out)["dataset"]["engine"]["mode"] == "stream"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_gpu_detector_any_chunking_equals_one_pass_kernels(inference, data):
    """GpuDetector fed in pieces = label_phases + phase_segments on the whole GPU."""
    from tracekit.analysis import phases as ph
    from tracekit.kernels.levels import kmeans_1d
    from tracekit.kernels.phases import label_phases, phase_segments

    gpus, offsets, ts_all, power_all, _ = read_dataset_arrays(inference)
    i = data.draw(st.integers(0, len(gpus) - 1))
    ts, power = ts_all[offsets[i]: offsets[i + 1]], power_all[offsets[i]: offsets[i + 1]]
    params = ph.detect_params("inference", max_power_w=float(np.nanmax(power_all)), effective_period_s=0.004,
                              sample_period_s=0.004, min_dwell_s=data.draw(st.sampled_from([0.0, 0.008, 0.05])))
    counts, centers = ph._histogram(power, params.hi_w)
    keep = counts > 0
    lv = kmeans_1d(centers[keep], counts[keep].astype(np.float64), 3)
    labels = label_phases(ts, power, lv.centers_w, hysteresis=ph.HYSTERESIS, min_dwell_ns=params.min_dwell_ns)
    seg = phase_segments(ts, power, labels, last_hold_ns=params.last_hold_ns)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ts)), max_size=8)))
    det = ph.GpuDetector(params, counts, i, keep_labels=True)
    for a, b in zip([0, *cuts], [*cuts, len(ts)]):
        det.push(ts[a:b], power[a:b])
    got = det.finish()
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.segments.start, ts[seg.start_idx])
    ends = np.where(seg.end_idx < len(ts), ts[np.minimum(seg.end_idx, len(ts) - 1)], ts[-1] + params.last_hold_ns)
    np.testing.assert_array_equal(got.segments.end, ends)
    for key in ("mean_w", "peak_w", "energy_j", "covered_s"):
        np.testing.assert_array_equal(getattr(got.segments, key), getattr(seg, key))
    np.testing.assert_array_equal(got.segments.label, seg.label)


# -- time ranges (--since / --until) --------------------------------------------------------
def _sliced_dataset(src, out, since_ns, until_ns):
    """The samples of ``src`` in [since, until) written as their own dataset (the oracle)."""
    import polars as pl

    from tracekit.io.dataset import DatasetWriter
    from tracekit.schema import PowerSemantics

    ts = tracekit.open(src)
    frame = ts.samples.filter((pl.col("ts").dt.epoch("ns") >= since_ns) & (pl.col("ts").dt.epoch("ns") < until_ns))
    with DatasetWriter(out, topology=ts.topology, power=PowerSemantics(**ts.manifest["power"])) as w:
        w.write(frame)
    return out


@pytest.mark.parametrize("engine, window_groups", [("memory", None), ("stream", None), ("stream", 1)])
def test_time_range_equals_the_sliced_dataset(small_groups, tmp_path, engine, window_groups):
    first = tracekit.open(small_groups).first_ts_ns()
    since, until = first + 1_500_000_000, first + 4_200_000_000
    oracle = analyze(tracekit.open(_sliced_dataset(small_groups, tmp_path / "cut", since, until)), engine="memory")
    got = analyze(tracekit.open(small_groups), since="+1.5s", until=int(until), engine=engine,
                  window_groups=window_groups)
    tr = got.dataset["time_range"]
    assert tr["since"].startswith(np.datetime64(since, "ns").astype(str))
    assert got.dataset["samples"] == oracle.dataset["samples"] > 0
    total = tracekit.open(small_groups).n_samples
    assert tr["samples_outside"] + got.dataset["samples"] == total
    assert got.data_quality["rows_read"] == total  # the input's accounting, whole
    got.dataset.pop("time_range")
    got.data_quality = oracle.data_quality
    assert_same(oracle, got)


def test_time_range_skips_row_groups_when_streaming(small_groups):
    index = DatasetIndex(small_groups)
    first = int(index.rg_t0.min())
    sub = index.restrict(first + 4_000_000_000, None)
    assert 0 < len(sub.rg_rows) < len(index.rg_rows) / 2
    o, t, p = sub.read(range(len(sub.gpus)))
    assert (t >= first + 4_000_000_000).all() and len(t) > 0


@pytest.mark.parametrize("args, message", [
    (["--since", "+3s", "--until", "+1s"], r"tracekit: error: --until \S+Z is not after --since \S+Z"),
    (["--since", "2030-01-01T00:00:00Z"], r"tracekit: error: no samples between --since 2030-01-01T00:00:00.000000000Z "
                                          r"and --until \(open\)"),
    (["--until", "noon"], r"tracekit: error: cannot read --until 'noon'; write an ISO time"),
])
def test_time_range_errors(training, capfd, args, message):
    import re

    code, _, err = _main(["analyze", str(training), *args], capfd)
    assert code == 2
    assert err.count("\n") == 1 and re.match(message, err), err


def test_uneven_gpus_stream_the_same(training, tmp_path):
    """GPUs that end early, hold one sample, or only NaN power: streamed in windows
    and batches exactly as in memory."""
    import polars as pl

    from tracekit.io.dataset import DatasetWriter
    from tracekit.schema import PowerSemantics

    ts = tracekit.open(training)
    s = ts.samples
    gpus = sorted(s.get_column("gpu").unique().to_list())
    t0 = s.get_column("ts").min()
    frame = pl.concat([
        s.filter(pl.col("gpu") == gpus[0]).head(1),  # a single sample
        s.filter((pl.col("gpu") == gpus[1]) & (pl.col("ts") < t0 + pl.duration(seconds=2))),  # ends early
        s.filter(pl.col("gpu") == gpus[2]).with_columns(pl.lit(float("nan"), dtype=pl.Float32).alias("power_w")),
        s.filter(~pl.col("gpu").is_in(gpus[:3])),
    ])
    out = tmp_path / "uneven"
    with DatasetWriter(out, topology=ts.topology, power=PowerSemantics(**ts.manifest["power"]),
                       row_group_rows=300) as w:
        w.write(frame)
    ref = analyze(tracekit.open(out), engine="memory")
    for kw in ({"batch_gpus": 3}, {"window_groups": 1, "batch_gpus": 7}, {"window_groups": 2, "read_rows": 500}):
        assert_same(ref, analyze(tracekit.open(out), engine="stream", **kw))


def test_info_streams_the_statistics_of_a_large_dataset(small_groups, monkeypatch):
    """``info`` of a dataset over the in-memory threshold streams pass 1 (time windows
    included) instead of loading it, with the same per-GPU statistics."""
    import tracekit.traceset as T

    want = tracekit.open(small_groups).gpu_periods()
    monkeypatch.setattr(T, "STREAM_ABOVE_BYTES", 1)
    ts = tracekit.open(small_groups)
    got = ts._streamed_periods(budget_bytes=20_000)  # below one GPU's rows: windows
    assert got.equals(want)
    assert ts.info()["dataset"] == tracekit.open(small_groups).info()["dataset"]
    assert not ts.loaded


def test_engine_memory_refuses_what_would_not_fit(training, monkeypatch):
    import tracekit.engine.memory as M

    monkeypatch.setattr(M, "ram_bytes", lambda: 2**20)
    with pytest.raises(ParameterError, match=r"--engine memory would hold ~\S+ \S+ for 92,142 samples, over 80 % "
                                             r"of this machine's 1 MiB; use --engine auto \(streams it\)"):
        analyze(tracekit.open(training), engine="memory")
    assert analyze(tracekit.open(training), engine="auto").dataset["engine"]["mode"] == "memory"  # 2 GiB limit


def test_keyword_options_leave_the_callers_options_alone(training):
    from tracekit.analysis.analyze import AnalyzeOptions

    opts = AnalyzeOptions()
    got = analyze(tracekit.open(training), opts, windows_s=(1.0,), engine="stream")
    assert list(got.levels["cluster"]["cluster"]["swing"]) == ["1s"]
    assert opts.windows_s == AnalyzeOptions().windows_s and opts.engine == "auto"
    with pytest.raises(ParameterError, match=r"unknown analyze option 'bogus'; known: \['align', "):
        analyze(tracekit.open(training), bogus=1)


@pytest.mark.parametrize("command", [["analyze"], ["replay", "--cap", "500"]])
def test_bad_time_fails_before_the_trace_is_read(tmp_path, capfd, command):
    """A --since/--until that cannot be read is the error even when the trace itself
    would fail: the time is checked before anything is opened."""
    bad = tmp_path / "broken.csv"
    bad.write_text("not,a,trace\n")
    code, _, err = _main([*command, str(bad), "--since", "noon"], capfd)
    assert code == 2
    assert err.strip() == ("tracekit: error: cannot read --since 'noon'; write an ISO time such as "
                           "2025-01-01T00:05:00Z or +DURATION after the first sample such as +5m")


def test_cli_threads_size_polars_pool(training):
    """--threads also sizes Polars' pool (set before the command imports Polars)."""
    import os
    import subprocess
    import sys

    code = ("from tracekit.cli import main\n"
            f"try:\n    main(['analyze', {str(training)!r}, '--json', '--threads', '1'])\n"
            "except SystemExit:\n    pass\n"
            "import polars\nprint('pool', polars.thread_pool_size())\n")
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "pool 1"
