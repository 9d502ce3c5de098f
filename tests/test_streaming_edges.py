"""Edge cases of the streaming analyze executor: GPU batches x time windows x time
slices x clock offsets on odd datasets (uneven GPUs, holes, NaN runs, GPUs split
across files, one GPU, odd topologies) give the in-memory answer; bad input gives a
one-line tracekit error.

The oracle is ``analyze(..., engine="memory")`` on the same dataset and options.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracekit
from tracekit import synth
from tracekit.analysis.analyze import analyze
from tracekit.analysis.rules import Rule
from tracekit.engine.stream import plan_batches
from tracekit.errors import ParameterError
from tracekit.io.dataset import DatasetIndex, DatasetWriter, read_dataset_arrays
from tracekit.schema import PowerSemantics

from tests.test_streaming import _main, assert_same

MEMORY_OPTIONS = ("since", "until", "align", "rules", "max_gap_s", "resolution_s", "workload")
RULES = [Rule(name="host-swing", kind="window_change", level="host", window_s=0.1, limit_w=100.0),
         Rule(name="rack-ramp", kind="ramp", level="rack", window_s=0.1, limit_w_per_s=2e3)]


def _tie_free(a):
    """Stragglers with equal lateness in GPU order (find_stragglers leaves ties in
    hash order: see test_stragglers_with_equal_lateness_are_ordered)."""
    a.stragglers = a.stragglers.sort(["median_late_ms", "gpu"], descending=[True, False])
    if a.iteration_summary:
        a.iteration_summary["stragglers"] = a.stragglers.get_column("gpu").to_list()
    return a


def _same_as_memory(path, **kw):
    """The streamed analysis equals the in-memory one, or both raise the same error."""
    try:
        ref = analyze(tracekit.open(path), engine="memory", **{k: v for k, v in kw.items() if k in MEMORY_OPTIONS})
    except ParameterError as exc:  # e.g. no samples in the slice
        with pytest.raises(ParameterError) as streamed:
            analyze(tracekit.open(path), engine="stream", **kw)
        if not str(exc).startswith("no samples between"):  # see test_empty_slice_message_when_streaming
            assert str(streamed.value) == str(exc)
        return None, None
    got = analyze(tracekit.open(path), engine="stream", **kw)
    assert got.dataset["engine"]["mode"] == "stream"
    assert_same(_tie_free(ref), _tie_free(got))
    return ref, got


def _rewrite(src, out, *, row_group_rows, file_rows, transform=None, topology=None):
    ts = tracekit.open(src)
    samples = transform(ts.samples) if transform else ts.samples
    with DatasetWriter(out, topology=ts.topology if topology is None else topology,
                       power=PowerSemantics(**ts.manifest["power"]), row_group_rows=row_group_rows,
                       file_rows=file_rows) as w:
        w.write(samples)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("edges") / "train"
    # 2 hosts of 4 GPUs, each host its own rack; 4 s at 200 Hz, gaps and drops
    synth.training(out, gpus=8, seconds=4, rate_hz=200, gpus_per_host=4, hosts_per_rack=1, racks_per_row=2,
                   iteration_s=0.5, checkpoint_every_s=None, gaps=2, drop_fraction=0.01, host_offset_ms=3, seed=3)
    return out


@pytest.fixture(scope="module")
def grouped(base, tmp_path_factory):
    """97-row row groups (~8 per GPU), 1500-row files."""
    return _rewrite(base, tmp_path_factory.mktemp("edges") / "grouped", row_group_rows=97, file_rows=1500)


def _uneven(s: pl.DataFrame) -> pl.DataFrame:
    """GPU 0 ends at 0.9 s, GPU 1 starts at 3.5 s, GPU 2 has a 1.2 s NaN run, GPU 3 a
    1.6 s hole, GPU 4 holds three samples; the others are whole."""
    gpus = sorted(s.get_column("gpu").unique().to_list())
    t0 = s.get_column("ts").min()
    ms = (lambda v: t0 + pl.duration(milliseconds=v))
    parts = []
    for i, g in enumerate(gpus):
        f = s.filter(pl.col("gpu") == g)
        if i == 0:
            f = f.filter(pl.col("ts") < ms(900))
        elif i == 1:
            f = f.filter(pl.col("ts") > ms(3500))
        elif i == 2:
            nan_run = (pl.col("ts") > ms(1200)) & (pl.col("ts") < ms(2400))
            f = f.with_columns(pl.when(nan_run).then(float("nan")).otherwise(pl.col("power_w"))
                               .cast(pl.Float32).alias("power_w"))
        elif i == 3:
            f = f.filter((pl.col("ts") < ms(1500)) | (pl.col("ts") > ms(3100)))
        elif i == 4:
            f = f.head(3)
        parts.append(f)
    return pl.concat(parts)


@pytest.fixture(scope="module")
def uneven(base, tmp_path_factory):
    return _rewrite(base, tmp_path_factory.mktemp("edges") / "uneven", row_group_rows=53, file_rows=700,
                    transform=_uneven)


def _first_ns(path) -> int:
    return tracekit.open(path).first_ts_ns()


# -- any batching x windows x slices x offsets -----------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_plans_slices_and_offsets_stream_as_in_memory(grouped, uneven, data):
    path = data.draw(st.sampled_from([grouped, uneven]), label="dataset")
    kw = {
        "batch_gpus": data.draw(st.sampled_from([None, 1, 2, 3, 8])),
        "window_groups": data.draw(st.sampled_from([None, 1, 2, 100])),
        "read_rows": data.draw(st.sampled_from([None, 1, 40])),
        "workers": data.draw(st.sampled_from([1, 2])),
        "max_gap_s": data.draw(st.sampled_from([5.0, 0.3, 0.02])),
    }
    first = _first_ns(path)
    since = data.draw(st.one_of(st.none(), st.integers(first - 10**9, first + 3 * 10**9)))
    if since is not None:
        kw["since"] = since
    if data.draw(st.booleans()):
        kw["until"] = (since or first) + data.draw(st.integers(10**8, 4 * 10**9))
    if data.draw(st.booleans()):
        kw["align"] = {h: data.draw(st.sampled_from([0.0, 0.0017, -0.3, 2.5, -7.0]))
                       for h in ("node00", "node01")}
    _same_as_memory(path, **kw)


@pytest.mark.parametrize("kw", [
    {"window_groups": 1, "batch_gpus": 1},
    {"window_groups": 3, "batch_gpus": 5, "workers": 2},
    {"batch_gpus": 2, "read_rows": 10},
])
@pytest.mark.parametrize("span", [None, ("+1s", "+3s"), ("+1.6s", "+3.05s")])
def test_uneven_gpus_sliced_and_windowed(uneven, kw, span):
    """GPUs with no sample inside the slice (ended before, started after, a hole over
    it), a NaN run and a hole across window and slice edges, a 3-sample GPU."""
    since, until = span or (None, None)
    ref, _ = _same_as_memory(uneven, max_gap_s=0.3, since=since, until=until, **kw)
    if span == ("+1.6s", "+3.05s"):  # GPU 3's hole covers the slice: no segment, no samples
        stats = ref.gpu_stats.filter(pl.col("gpu") == "node00/3")
        assert stats.get_column("samples").item() == 0


@pytest.mark.parametrize("workload", ["auto", "inference"])
def test_slice_with_only_nan_power(base, tmp_path, workload):
    """Regression: a slice whose samples are all NaN crashed in workload_from_histogram
    ("histogram_bin_centers: n_bins must be >= 1, got 0"), in memory and streamed."""
    t0 = tracekit.open(base).first_ts_ns()

    def nan_run(s):
        ns = pl.col("ts").dt.epoch("ns")
        run = (ns >= t0 + 1_300_000_000) & (ns < t0 + 2_300_000_000)
        return s.with_columns(pl.when(run).then(float("nan")).otherwise(pl.col("power_w")).cast(pl.Float32)
                              .alias("power_w"))

    path = _rewrite(base, tmp_path / "nan", row_group_rows=53, file_rows=700, transform=nan_run)
    ref, _ = _same_as_memory(path, since="+1.5s", until="+2s", workload=workload, window_groups=1, batch_gpus=3)
    assert ref.dataset["samples"] > 0 and ref.phases.height == 0
    assert ref.workload == ("training" if workload == "auto" else workload)


def test_slice_cutting_inside_row_groups(grouped):
    index = DatasetIndex(grouped)
    g = index.gpu_groups(2)
    assert len(g) >= 5
    # inside groups, and exactly on a group's first and last sample
    inside = (int(index.rg_t0[g[1]]) + 1_234_567, int(index.rg_t1[g[4]]) - 7_654_321)
    edges = (int(index.rg_t1[g[1]]), int(index.rg_t0[g[4]]))
    for since, until in (inside, edges):
        sub = index.restrict(since, until)
        assert 0 < len(sub.rg_rows) < len(index.rg_rows)
        _same_as_memory(grouped, since=since, until=until, window_groups=1, batch_gpus=1)
        _same_as_memory(grouped, since=since, until=until, batch_gpus=3, read_rows=50)


def test_offsets_windows_and_rules_on_partial_hosts(grouped):
    """Hosts cut across batches (host-level rules finished by the merger), clock offsets
    larger than a window's span, and windows of one row group."""
    ref, got = _same_as_memory(grouped, rules=RULES, align={"node00": 0.0123, "node01": -0.75}, batch_gpus=3,
                               window_groups=1, workers=2)
    assert got.dataset["engine"]["batches"] >= 3
    assert ref.violations
    assert [v.to_dict() for v in ref.violations] == [v.to_dict() for v in got.violations]


def test_window_groups_larger_than_any_gpu(grouped):
    assert max(len(DatasetIndex(grouped).gpu_groups(g)) for g in range(8)) < 1000
    _, got = _same_as_memory(grouped, window_groups=1000, batch_gpus=3)
    assert got.dataset["engine"]["windowed_batches"] == got.dataset["engine"]["batches"]


def test_one_gpu(base, tmp_path):
    topo = tracekit.open(base).topology.filter(pl.col("gpu") == "node01/2")
    one = _rewrite(base, tmp_path / "one", row_group_rows=61, file_rows=10**6, topology=topo,
                   transform=lambda s: s.filter(pl.col("gpu") == "node01/2"))
    _same_as_memory(one, window_groups=2)
    _same_as_memory(one, window_groups=1, since="+0.5s", until="+1.01s")


@pytest.mark.parametrize("topology", ["rack_is_host", "one_rack", "interleaved"])
def test_odd_topologies(base, tmp_path, topology):
    topo = tracekit.open(base).topology
    n = topo.height
    topo = {
        "rack_is_host": topo.with_columns(pl.col("host").alias("rack")),
        "one_rack": topo.with_columns(pl.lit("rackX").alias("rack"), pl.lit("rowX").alias("row")),
        # hosts and racks not in GPU-name order: groups span non-adjacent batches
        "interleaved": topo.with_columns(pl.Series("host", [f"h{i % 3}" for i in range(n)]),
                                         pl.Series("rack", [f"r{i % 2}" for i in range(n)])),
    }[topology]
    path = _rewrite(base, tmp_path / topology, row_group_rows=97, file_rows=1500, topology=topo)
    ref, _ = _same_as_memory(path, rules=RULES, batch_gpus=3, window_groups=2)
    _same_as_memory(path, rules=RULES, batch_gpus=1, workers=2)
    batched = analyze(tracekit.open(path), engine="memory", rules=RULES, batch_gpus=2, workers=2)
    assert_same(_tie_free(ref), _tie_free(batched))


def test_gpus_split_across_files(grouped, tmp_path):
    """Files cut in the middle of GPUs (one row group per GPU piece): a GPU's groups
    come from two files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = DatasetIndex(grouped)
    table = pa.concat_tables([pq.read_table(f) for f in index.files])
    out = tmp_path / "split"
    shutil.copytree(grouped, out)
    for f in os.listdir(out):
        if f.startswith("part-"):
            os.remove(out / f)
    manifest = json.loads((out / "manifest.json").read_text())
    gpu = np.array(table.column("gpu").to_pylist())
    files = []
    for fi, pos in enumerate(range(0, table.num_rows, 1234)):
        end = min(table.num_rows, pos + 1234)
        name = f"part-{fi:05d}.parquet"
        with pq.ParquetWriter(out / name, table.schema) as w:
            p = pos
            while p < end:
                q = p + 1
                while q < end and gpu[q] == gpu[p] and q - p < 97:
                    q += 1
                w.write_table(table.slice(p, q - p), row_group_size=97)
                p = q
        files.append({"file": name, "rows": end - pos, "gpus": 0, "ts_min": None, "ts_max": None})
    manifest["files"] = files
    (out / "manifest.json").write_text(json.dumps(manifest))
    split = DatasetIndex(out)
    assert max(len(set(split.rg_file[split.rg_gpu == g].tolist())) for g in range(len(split.gpus))) == 2
    ref = analyze(tracekit.open(grouped), engine="memory")
    for kw in ({"window_groups": 1, "batch_gpus": 3}, {"batch_gpus": 2, "read_rows": 100}):
        got = analyze(tracekit.open(out), engine="stream", **kw)
        assert_same(_tie_free(ref), _tie_free(got))
    _same_as_memory(out, window_groups=2, batch_gpus=1, since="+1.1s", until="+2.9s")


def test_inference_in_windows_and_slices(tmp_path):
    synth.inference(tmp_path / "inf", gpus=4, seconds=12, rate_hz=100, tp=2, gpus_per_host=2, hosts_per_rack=1,
                    arrival_rate_hz=1.0, seed=5)
    path = _rewrite(tmp_path / "inf", tmp_path / "infg", row_group_rows=77, file_rows=900)
    ref, _ = _same_as_memory(path, window_groups=1, batch_gpus=1)
    assert ref.workload == "inference"
    _same_as_memory(path, window_groups=2, batch_gpus=3, since="+2.5s", until="+9s")


def test_arrays_after_time_slice(grouped):
    """A lazy dataset sliced then read equals the loaded trace sliced."""
    first = _first_ns(grouped)
    lo, hi = first + 1_111_111_111, first + 2_222_222_222
    lazy = tracekit.open(grouped).time_slice(lo, hi).arrays()
    loaded = tracekit.open(grouped)
    loaded.arrays()
    eager = loaded.time_slice(lo, hi).arrays()
    assert lazy.gpus == eager.gpus
    np.testing.assert_array_equal(lazy.offsets, eager.offsets)
    np.testing.assert_array_equal(lazy.ts_ns, eager.ts_ns)
    np.testing.assert_array_equal(lazy.power_w, eager.power_w)
    assert lazy.ts_ns.min() >= lo and lazy.ts_ns.max() < hi
    # a slice of a slice is the intersection
    twice = tracekit.open(grouped).time_slice(lo, None).time_slice(None, hi).arrays()
    np.testing.assert_array_equal(twice.ts_ns, eager.ts_ns)


# -- the planner -----------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(costs=st.lists(st.sampled_from([0.0, 0.0, 1.0, 50.0]), min_size=1, max_size=40),
       budget=st.sampled_from([1.0, 3.0, 100.0]), max_gpus=st.sampled_from([None, 1, 2, 7]),
       gpus_per_host=st.integers(1, 4))
def test_plan_batches_with_zero_cost_gpus(costs, budget, max_gpus, gpus_per_host):
    n = len(costs)
    host = np.arange(n) // gpus_per_host
    keys = np.stack([np.zeros(n, dtype=np.int64), host], axis=1)
    batches = plan_batches(np.array(costs), keys, budget, max_gpus=max_gpus)
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    c = np.array(costs)
    for b in batches:
        assert len(b) >= 1
        assert len(b) == 1 or c[b].sum() <= budget
        assert max_gpus is None or len(b) <= max_gpus


# -- bad input: one tracekit line ----------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--since", ""], r"tracekit: error: cannot read --since ''"),
    (["--until", " "], r"tracekit: error: cannot read --until ' '"),
    (["--since", "+"], r"tracekit: error: cannot read --since"),
    (["--since", "2020-13-01"], r"tracekit: error: cannot read --since '2020-13-01'"),
    (["--until", "+0s"], r"tracekit: error: no samples between --since \(open\) and --until"),
    (["--memory-limit", "0"], r"tracekit: error: --memory-limit must be positive"),
    (["--memory-limit", ""], r"tracekit: error: cannot read --memory-limit ''"),
])
def test_cli_odd_values(grouped, capfd, args, message):
    code, _, err = _main(["analyze", str(grouped), *args], capfd)
    assert code == 2
    assert err.count("\n") == 1 and re.match(message, err), err


@pytest.mark.parametrize("args", [["--memory-limit", "1B"], ["--memory-limit", "1KiB", "--threads", "1"]])
def test_cli_tiny_memory_limit_streams_the_same(grouped, capfd, args):
    code, out, err = _main(["analyze", str(grouped), "--json", *args], capfd)
    assert code == 0, err
    got = json.loads(out)
    assert got["dataset"]["engine"]["mode"] == "stream"
    ref = _tie_free(analyze(tracekit.open(grouped), engine="memory")).summary()
    for key in ("phases", "levels", "workload"):
        assert json.dumps(got[key], sort_keys=True) == json.dumps(ref[key], sort_keys=True, default=str)


@pytest.mark.parametrize("args", [["--since", "9999-12-31T23:59:59"], ["--until", "0001-01-01T00:00:00"],
                                  ["--since", "+999999999d"]])
def test_cli_times_out_of_range(grouped, capfd, args):
    code, _, err = _main(["analyze", str(grouped), *args], capfd)
    assert code == 2 and err.count("\n") == 1 and err.startswith("tracekit: error:"), err


@pytest.mark.parametrize("option, kw", [
    ("batch_gpus", {"engine": "stream", "batch_gpus": -1}),  # ValueError in plan_batches
    ("batch_gpus", {"engine": "memory", "batch_gpus": -1}),  # AttributeError: no batch, no cluster series
    ("workers", {"engine": "stream", "workers": -2}),  # ValueError: negative batch budget
    ("window_groups", {"engine": "stream", "window_groups": -1}),  # "no samples to analyze": no window read
    ("memory", {"memory_limit_bytes": -1}),  # streams with a negative limit
    ("engine", {"engine": "bogus"}),  # runs in memory
])
def test_bad_analyze_options(grouped, option, kw):
    with pytest.raises(ParameterError, match=option):
        analyze(tracekit.open(grouped), **kw)


def test_empty_slice_message_when_streaming(grouped):
    last = int(DatasetIndex(grouped).rg_t1.max())
    with pytest.raises(ParameterError, match="no samples between --since"):
        analyze(tracekit.open(grouped), engine="stream", since=last + 10**9)


def test_stragglers_with_equal_lateness_are_ordered():
    from tracekit.analysis.iterations import find_stragglers

    n, late = 30, 8  # 8 GPUs late by the same 100 ms in every iteration
    frame = pl.DataFrame({
        "iteration": np.repeat(np.arange(5), n),
        "gpu": np.tile([f"g{i:02d}" for i in range(n)], 5),
        "compute_end": pl.Series(np.repeat(np.arange(5), n) * 10**9
                                 + np.tile(np.r_[np.zeros(n - late, dtype=np.int64), [10**8] * late], 5))
        .cast(pl.Datetime("ns", "UTC")),
    })
    assert find_stragglers(frame).get_column("gpu").to_list() == [f"g{i:02d}" for i in range(n - late, n)]


# -- rows out of time order inside a row group -------------------------------------------------
def _swap_rows_in_first_group(src, out, layout: str = "indexed"):
    """A copy of dataset ``src`` whose first file has rows 5 and 6 of its first row group
    swapped (the group statistics, the index and the manifest stay valid).  ``layout``:
    ``indexed`` (one GPU per row group), ``one_group`` (the first file one row group of
    several GPUs: not indexable, read whole by its footers), ``no_gpu_rows`` (that, and
    no ``gpu_rows`` in the manifest: read whole by the gpu column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(src, out)
    manifest = json.loads((out / "manifest.json").read_text())
    first = out / manifest["files"][0]["file"]
    pf = pq.ParquetFile(first)
    groups = [pf.read_row_group(r) for r in range(pf.metadata.num_row_groups)]
    idx = list(range(groups[0].num_rows))
    idx[5], idx[6] = 6, 5
    groups[0] = groups[0].take(pa.array(idx))
    if layout != "indexed":
        groups = [pa.concat_tables(groups)]
    with pq.ParquetWriter(first, groups[0].schema) as w:
        for g in groups:
            w.write_table(g, row_group_size=len(g))
    if layout == "no_gpu_rows":
        manifest.pop("gpu_rows", None)
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out, first.name


@pytest.mark.parametrize("engine, layout", [("memory", "indexed"), ("stream", "indexed"), ("memory", "one_group"),
                                            ("memory", "no_gpu_rows")])
def test_rows_out_of_order_in_a_row_group_are_a_one_line_error(grouped, tmp_path, engine, layout):
    """The dataset readers check each row group's order (the kernels then trust it):
    analyze and replay stop with an InputError naming the file (or the dataset when
    the GPUs are found from the gpu column)."""
    from tracekit.errors import InputError

    path, name = _swap_rows_in_first_group(grouped, tmp_path / "swapped", layout)
    assert ("gpu_rows" in json.loads((path / "manifest.json").read_text())) == (layout != "no_gpu_rows")
    where = "swapped" if layout == "no_gpu_rows" else re.escape(name)
    with pytest.raises(InputError, match=rf"{where}: ts (of GPU \S+ )?is not sorted .*row 6 is earlier than row 5"):
        analyze(tracekit.open(path), engine=engine)
    if engine == "memory":
        with pytest.raises(InputError, match=r"is not sorted"):
            tracekit.replay(tracekit.open(path), cap=500)


def test_unsorted_sample_frame_is_refused():
    from tracekit.errors import SchemaError
    from tracekit.traceset import gpu_arrays

    samples = pl.DataFrame({"gpu": ["a", "a", "a", "b"], "ts": [0, 2, 1, 0], "power_w": [1.0, 2.0, 3.0, 4.0]})
    samples = samples.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")))
    with pytest.raises(SchemaError, match=r"GPU a's row 2 is earlier than row 1"):
        gpu_arrays(samples, pl.DataFrame({"gpu": ["a", "b"]}))


@pytest.mark.parametrize("loaded", [False, True])
def test_samples_of_a_time_slice_are_the_slice(grouped, loaded):
    """``samples`` of a sliced dataset (read back from its files, all columns) holds the
    slice's rows only, the same as its arrays."""
    first = _first_ns(grouped)
    lo, hi = first + 1_111_111_111, first + 2_222_222_222
    ts = tracekit.open(grouped)
    if loaded:
        ts.arrays()
    part = ts.time_slice(lo, None).time_slice(None, hi)
    a = part.arrays()
    s = part.samples
    assert s.height == a.n_samples
    t = s.get_column("ts").dt.epoch("ns").to_numpy()
    assert t.min() >= lo and t.max() < hi
    np.testing.assert_array_equal(np.sort(t), np.sort(a.ts_ns))


def test_row_groups_out_of_time_order_are_a_one_line_error(grouped, tmp_path):
    """A GPU whose row groups are not in time order is refused at once, naming the file
    and row group, from the groups' ts statistics (the index's own error: it used to be
    taken for an unindexable dataset and read whole first); the whole read finds it too."""
    import pyarrow.parquet as pq

    from tracekit.errors import InputError

    out = tmp_path / "swapped_groups"
    shutil.copytree(grouped, out)
    first = out / json.loads((out / "manifest.json").read_text())["files"][0]["file"]
    pf = pq.ParquetFile(first)
    groups = [pf.read_row_group(r) for r in range(pf.metadata.num_row_groups)]
    assert groups[0].column("gpu")[0] == groups[1].column("gpu")[0]  # both of the first GPU
    groups[0], groups[1] = groups[1], groups[0]
    with pq.ParquetWriter(first, groups[0].schema) as w:
        for g in groups:
            w.write_table(g)
    msg = rf"{re.escape(first.name)}: ts is not sorted: row group 1 \(GPU \S+\) starts before the previous rows"
    with pytest.raises(InputError, match=msg):
        tracekit.open(out)
    with pytest.raises(InputError, match=msg):
        DatasetIndex(out)
    with pytest.raises(InputError, match=rf"{re.escape(first.name)}: ts is not sorted: row group 1 starts before"):
        read_dataset_arrays(out)


@pytest.mark.parametrize("change", ["fewer_rows", "no_power"])
def test_files_changed_after_open_are_a_one_line_error(grouped, tmp_path, change):
    """The index's footers are what the read places each row group by: a group that
    now holds fewer rows (it used to leave the rest of its place unwritten), or a file
    that lost its power column (an internal KeyError), is refused, naming the file."""
    import pyarrow.parquet as pq

    from tracekit.errors import InputError

    out = tmp_path / "changed"
    shutil.copytree(grouped, out)
    ts = tracekit.open(out)  # footers indexed, samples not read yet
    first = out / json.loads((out / "manifest.json").read_text())["files"][0]["file"]
    pf = pq.ParquetFile(first)
    groups = [pf.read_row_group(r) for r in range(pf.metadata.num_row_groups)]
    if change == "fewer_rows":
        groups[1] = groups[1].slice(0, groups[1].num_rows - 5)
        msg = r"row group 1 holds 92 rows, not the 97 of its footer when the dataset was opened \(the files changed\?\)"
    else:
        groups = [g.drop_columns(["power_w"]) for g in groups]
        msg = "sample file lacks the power_w column"
    with pq.ParquetWriter(first, groups[0].schema) as w:
        for g in groups:
            w.write_table(g)
    with pytest.raises(InputError, match=rf"{re.escape(first.name)}: {msg}"):
        ts.arrays()
