"""Core: cleaning rules and accounting, canonical dataset round trip, open(), CLI errors."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import tracekit
from tracekit.cli import cli
from tracekit.errors import InputError, ParameterError, SchemaError, StrictError
from tracekit.io.base import ReadOptions, SourceFrame
from tracekit.io.clean import clean_source
from tracekit.io.dataset import DatasetWriter, read_dataset, scan_dataset
from tracekit.quality import DataQuality
from tracekit.specs import find_gpu_spec, gpu_spec
from tracekit.units import parse_duration_s

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
SAMPLE_RAW = Path(__file__).resolve().parents[1] / "sample_traces" / "raw"


def _frame(gpu, ts_ms, power, start_line=2):
    n = len(ts_ms)
    return pl.DataFrame(
        {
            "gpu": gpu if isinstance(gpu, list) else [gpu] * n,
            "ts": [None if t is None else int(t * 1_000_000) for t in ts_ms],
            "power_w": power,
            "line": list(range(start_line, start_line + n)),
        },
        schema={"gpu": pl.String, "ts": pl.Int64, "power_w": pl.Float32, "line": pl.UInt32},
    ).with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")))


def _src(df, rows_read=None, path="f.csv"):
    q = DataQuality(rows_read=df.height if rows_read is None else rows_read)
    return SourceFrame(path=path, format="test", samples=df, quality=q)


def test_clean_counts_every_rule_once():
    df = _frame(
        "h/0",
        [0, 100, 200, 300, 250, 400, 400, 500, 600, None, -60_000, 700, 20_000],
        [100, None, float("nan"), 110, 120, 130, 131, 1e6, float("inf"), 100, 100, -5, 140],
    )
    out, q = clean_source(_src(df), ReadOptions(max_gap_s=5, max_reorder_s=5))
    assert q.rows_excluded == {
        "missing_value": 2,          # None and NaN
        "negative_power": 1,
        "implausible_power": 2,      # 1e6 W and inf
        "unparsable_row": 1,         # null ts
        "clock_jump": 1,             # -60 s, beyond max_reorder
        "duplicate_ts": 1,           # second 400 ms
    }
    assert q.repairs["non_monotonic_ts"] == 1  # 250 ms after 300 ms, re-sorted
    assert q.repairs["gap"] == 1               # 400 ms -> 20 s
    assert q.rows_read == q.rows_used + q.n_excluded == 13
    assert out.get_column("power_w").to_list() == [100, 120, 110, 130, 140]
    assert out.get_column("ts").is_sorted()
    assert q.examples["negative_power"] == ["f.csv:13"]
    assert q.examples["duplicate_ts"] == ["f.csv:8"]


def test_clean_strict_raises_first_anomaly_with_location():
    df = _frame("h/0", [0, 100, 100], [100, 110, 120])
    with pytest.raises(StrictError, match=r"f.csv: --strict: 1 row\(s\) with duplicate_ts \(first at f.csv:4\)"):
        clean_source(_src(df), ReadOptions(strict=True))


def test_clean_milliwatts_is_a_clear_error():
    df = _frame("h/0", [0, 100, 200], [250_000, 260_000, 255_000])
    with pytest.raises(InputError, match="look like milliwatts"):
        clean_source(_src(df), ReadOptions())


def test_clean_plausible_limit_uses_model_tdp():
    df = _frame("h/0", [0, 100, 200], [300, 900, 1100])
    _, q = clean_source(_src(df), ReadOptions(gpu_model="A100"))  # 2.5 x 400 W = 1000 W
    assert q.rows_excluded == {"implausible_power": 1}


def _canonical(n_gpus=3, n=500, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(n_gpus):
        frames.append(
            pl.DataFrame(
                {
                    "gpu": [f"node{g // 2}/{g % 2}"] * n,
                    "ts": (np.arange(n, dtype=np.int64) * 1_000_000 + g),
                    "power_w": rng.uniform(60, 700, n).astype(np.float32),
                    "truth_phase": rng.integers(0, 2, n).astype(np.uint8),
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))).sort(["gpu", "ts"])


def test_dataset_round_trip_and_row_groups(tmp_path):
    df = _canonical()
    dst = tmp_path / "ds"
    with DatasetWriter(dst, row_group_rows=100, manifest_extra={"synth": {"seed": 0}}) as w:
        w.write(df.filter(pl.col("gpu") < "node1"))
        w.write(df.filter(pl.col("gpu") >= "node1"))
    samples, topo, manifest = read_dataset(dst)
    assert samples.equals(df.drop("truth_phase"))
    assert manifest["rows"] == df.height and manifest["synth"] == {"seed": 0}
    assert topo.get_column("host").to_list() == ["node0", "node0", "node1"]
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(dst / "part-00000.parquet").metadata
    assert meta.num_row_groups == 15  # 3 GPUs x 500 rows / 100 rows per group
    # extra columns survive and are readable on request
    truth = scan_dataset(dst, columns=["gpu", "ts", "truth_phase"]).collect()
    assert truth.get_column("truth_phase").to_list() == df.get_column("truth_phase").to_list()
    assert not list(tmp_path.glob(".ds.tmp-*"))


def test_dataset_writer_refuses_out_of_order_gpus_and_leaves_nothing(tmp_path):
    df = _canonical()
    dst = tmp_path / "ds"
    with pytest.raises(SchemaError, match="ascending order"):
        with DatasetWriter(dst) as w:
            w.write(df.filter(pl.col("gpu") == "node1/0"))
            w.write(df.filter(pl.col("gpu") == "node0/0"))
    assert not dst.exists() and not list(tmp_path.iterdir())


def test_open_dataset_info_and_accounting(tmp_path):
    df = _canonical()
    with DatasetWriter(tmp_path / "ds") as w:
        w.write(df)
    ts = tracekit.open(tmp_path / "ds")
    info = ts.info()
    assert info["schema"] == "tracekit.info/1"
    assert info["dataset"]["gpus"] == 3 and info["dataset"]["hosts"] == 2
    assert info["dataset"]["samples"] == 1500
    assert info["dataset"]["sample_period_ms"] == 1.0
    assert info["data_quality"]["rows_read"] == info["data_quality"]["rows_used"] == 1500


def test_open_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        tracekit.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no trace files"):
        tracekit.open(tmp_path / "empty")


def test_open_folder_with_broken_file_names_it(tmp_path):
    df = _canonical(n_gpus=1)
    df.select("ts", "power_w").with_columns(pl.col("ts").dt.epoch("ms").alias("time_ms")).select(
        "time_ms", "power_w"
    ).write_parquet(tmp_path / "good.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 10)
    ts = tracekit.open(tmp_path)
    failed = ts.quality.files_failed
    assert len(failed) == 1 and failed[0]["file"].endswith("bad.parquet")
    assert "bad.parquet" in failed[0]["error"]
    assert ts.dataset_summary()["samples"] == 500
    with pytest.raises(InputError, match="bad.parquet"):
        tracekit.open(tmp_path, strict=True)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    from tracekit.cli import main

    p = tmp_path / "x.csv"
    p.write_text("")
    runner = CliRunner()
    result = runner.invoke(cli, ["info", str(p)], standalone_mode=False, catch_exceptions=True)
    assert isinstance(result.exception, InputError)
    with pytest.raises(SystemExit) as exc:
        main(["info", str(p)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["info", str(p), "--gpu-model", "Z999"])
    assert exc.value.code == 2


def test_cli_main_prints_one_line(tmp_path, capsys):
    from tracekit.cli import main

    p = tmp_path / "x.csv"
    p.write_text("")
    with pytest.raises(SystemExit):
        main(["info", str(p)])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tracekit: error:") and "x.csv" in err


def test_cli_convert_then_info_json(tmp_path):
    df = _canonical()
    with DatasetWriter(tmp_path / "ds") as w:
        w.write(df)
    runner = CliRunner()
    r = runner.invoke(cli, ["convert", str(tmp_path / "ds"), str(tmp_path / "ds2")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["info", str(tmp_path / "ds2"), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["dataset"]["samples"] == 1500
    r = runner.invoke(cli, ["convert", str(tmp_path / "ds"), str(tmp_path / "ds2")])
    assert r.exit_code != 0  # exists, no --force


@pytest.mark.parametrize(
    "text,seconds",
    [("100ms", 0.1), ("1s", 1.0), ("-7h", -25200.0), ("+05:30", 19800.0), ("-25200", -25200.0), ("5m", 300.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


def test_parse_duration_rejects_garbage():
    with pytest.raises(ParameterError, match="cannot read"):
        parse_duration_s("soon")


def test_spec_lookup():
    assert find_gpu_spec("NVIDIA H100 80GB HBM3").name == "H100-SXM"
    assert find_gpu_spec("NVIDIA A100-SXM4-80GB").name == "A100-SXM-80GB"
    assert gpu_spec("a100").tdp_w == 400
    assert find_gpu_spec("H100 PCIe").tdp_w == 350
    with pytest.raises(ParameterError, match="known models"):
        gpu_spec("Z999")


def test_convert_raw_then_analyze_equals_raw(tmp_path):
    """A converted dataset carries the same samples and accounting as its raw source."""
    from tracekit.analysis.analyze import analyze

    raw = SAMPLE_RAW / "nvsmi_csv_noindex_h100_8gpu_100ms.csv"
    runner = CliRunner()
    r = runner.invoke(cli, ["convert", str(raw), str(tmp_path / "ds"), "--utc-offset", "2h"])
    assert r.exit_code == 0, r.output
    direct = tracekit.open(raw, utc_offset_s=7200.0)
    converted = tracekit.open(tmp_path / "ds")
    assert converted.samples.equals(direct.samples)
    assert converted.quality.to_dict() == direct.quality.to_dict()
    a, b = analyze(direct).summary(), analyze(converted).summary()
    assert a["levels"] == b["levels"] and a["phases"] == b["phases"]


def test_summary_of_a_slice_counts_the_hosts_with_samples_in_it():
    """A time slice's summary counts GPUs and hosts alike: those with samples in it."""
    from tracekit.quality import DataQuality
    from tracekit.schema import canonical_topology
    from tracekit.traceset import GpuArrays, TraceSet

    gpus = ["h0/0", "h0/1", "h1/0"]
    t = 1_700_000_000_000_000_000 + np.arange(100, dtype=np.int64) * 10**6
    series = [t, t, t[60:]]  # host h1 logs only from 60 ms
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in series])]).astype(np.int64)
    ts = np.concatenate(series)
    topo = canonical_topology(pl.DataFrame({"gpu": gpus}))
    whole = TraceSet(None, topo, DataQuality(rows_read=len(ts), rows_used=len(ts)), [],
                     arrays=GpuArrays(gpus, offsets, ts, np.full(len(ts), 300.0, np.float32), topo))
    assert (whole.dataset_summary()["gpus"], whole.dataset_summary()["hosts"]) == (3, 2)
    early = whole.time_slice(None, int(t[50])).dataset_summary()
    assert (early["gpus"], early["hosts"], early["samples"]) == (2, 1, 100)
