"""nvidia-smi --query-gpu CSV reader: real traces, odd inputs, sweeps, time zones."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.errors import InputError, ParameterError
from tracekit.io import nvsmi
from tracekit.io.base import ReadOptions

UTC = timezone.utc
H100 = "training_profile/h100-8gpu-gpt-training_100ms.csv"
TITANX = "training_profile/titanx-2gpu-training_100ms.csv"
A100 = "powertrace-sim/a100-qwen3-8b-vllm-burstgpt_power_250ms.csv"


def _write(tmp_path: Path, text: str, name: str = "node1.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _read(path: Path, **opts) -> nvsmi.SourceFrame:
    opts.setdefault("utc_offset_s", 0)
    src = nvsmi.read(path, ReadOptions(**opts))
    q = src.quality
    assert q.rows_read == src.samples.height + q.n_excluded  # every row accounted for
    return src


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _stamp(t: datetime) -> str:
    return t.strftime("%Y/%m/%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


# -- real traces ----------------------------------------------------------------------


def test_h100_eight_gpus_without_index(real_traces):
    src = _read(real_traces / H100, gpu_model="H100", utc_offset_s=None)
    s = src.samples
    q = src.quality
    assert q.rows_read == 45632
    assert s.height == 45632 and q.n_excluded == 0
    host = "h100-8gpu-gpt-training_100ms"
    assert sorted(s.get_column("gpu").unique()) == [f"{host}/{i}" for i in range(8)]
    per_gpu = s.group_by("gpu").agg(
        pl.len().alias("n"), pl.col("ts").diff().dt.total_milliseconds().median().alias("period_ms")
    )
    assert per_gpu.get_column("n").to_list() == [5704] * 8
    assert all(99 <= p <= 101 for p in per_gpu.get_column("period_ms"))
    assert src.power.kind == "average" and src.power.window_s == 1.0 and src.power.field == "power.draw"
    assert s.columns == ["gpu", "ts", "power_w", "gpu_util", "line"]
    # first sweep: lines 2..9 are GPUs 0..7 in order (units stripped: '69.32 W')
    first = s.head(8)
    assert first.get_column("line").to_list() == list(range(2, 10))
    assert first.get_column("gpu").to_list() == [f"{host}/{i}" for i in range(8)]
    assert first.get_column("power_w").to_list() == pytest.approx(
        [69.32, 72.45, 72.11, 72.03, 72.22, 72.00, 70.35, 71.55], abs=1e-4
    )
    assert first.get_column("ts")[0] == _utc(2025, 7, 26, 23, 32, 9, 703000)
    assert any("no time zone" in w for w in q.warnings)
    assert any("8 GPU(s) per sweep" in n for n in src.notes)


def test_h100_late_sweeps_keep_gpu_order(real_traces):
    # A late sweep: GPU 0 on time (line 138), GPUs 1..7 0.68 s later (lines 139..145).
    s = _read(real_traces / H100).samples
    late = s.filter(pl.col("line").is_between(138, 145))
    assert _gpu_index(late) == list(range(8))
    assert (late.get_column("ts")[1] - late.get_column("ts")[0]).total_seconds() == pytest.approx(0.682)
    # idle GPUs keep their own level through it, and GPU 0 (which starts working right
    # after it) ramps smoothly: each GPU's series is continuous
    idle = s.filter(pl.col("line") < 138).group_by("gpu").agg(pl.col("power_w").std())
    assert idle.get_column("power_w").max() < 0.5  # GPU levels differ by up to 3 W
    ramp = s.filter(pl.col("line").is_between(130, 300), pl.col("gpu").str.ends_with("/0"))
    assert ramp.height == 22 and ramp.get_column("power_w").diff().drop_nulls().min() >= 0
    assert ramp.get_column("power_w")[-1] > 116


def test_titanx_units_only_on_util(real_traces):
    src = _read(real_traces / TITANX)
    s = src.samples
    assert src.quality.rows_read == 1244 and s.height == 1244
    assert s.group_by("gpu").len().sort("gpu").get_column("len").to_list() == [622, 622]
    assert s.head(4).get_column("power_w").to_list() == pytest.approx([17.76, 16.29, 17.76, 16.29], abs=1e-4)
    assert s.head(2).get_column("gpu").to_list() == ["titanx-2gpu-training_100ms/0", "titanx-2gpu-training_100ms/1"]
    util = s.get_column("gpu_util")
    assert util.null_count() == 0 and util.max() > 50
    assert src.power.kind == "unknown"  # no name column, no --gpu-model
    assert _read(real_traces / TITANX, gpu_model="TitanX").power.kind == "instant"


def test_a100_index_utc_offset(real_traces):
    src = _read(real_traces / A100, utc_offset_s=-25200, gpu_model="A100")
    s = src.samples
    assert s.get_column("gpu").unique().to_list() == ["a100-qwen3-8b-vllm-burstgpt_power_250ms/0"]
    assert s.height == 452 and src.quality.rows_read == 452
    assert s.get_column("ts")[0] == _utc(2026, 7, 18, 23, 9, 47, 503000)
    assert s.get_column("sm_clock_mhz")[0] == 1410
    assert s.get_column("mem_clock_mhz")[0] == 1593
    assert s.row(1, named=True)["power_w"] == pytest.approx(498.03)
    assert s.row(1, named=True)["temp_c"] == 46
    assert src.power.kind == "instant" and src.power.window_s is None
    assert not src.quality.warnings
    assert set(s.columns) == {
        "gpu", "ts", "power_w", "sm_clock_mhz", "mem_clock_mhz", "gpu_util", "mem_util", "temp_c", "line"
    }


def test_real_headers_sniffed(real_traces):
    for name in (H100, TITANX, A100):
        path = real_traces / name
        assert nvsmi.sniff(path.read_text()[:65536], path)
    engine = real_traces / "powertrace-sim/a100-qwen3-8b-vllm-burstgpt_engine.csv"
    assert not nvsmi.sniff(engine.read_text()[:65536], engine)


# -- values -----------------------------------------------------------------------------

HEADER = "timestamp, index, power.draw [W], utilization.gpu [%], clocks.sm [MHz]\n"


def test_mixed_units_and_separators(tmp_path):
    text = HEADER + (
        "2025/01/01 00:00:00.000, 0, 208.36 W, 5 %, 1410 MHz\n"
        "2025/01/01 00:00:00.100,0,210.50,7,1400\n"
        "2025/01/01 00:00:00.200, 0, 99 W, 9, 1395 MHz\n"
        "2025/01/01 00:00:00.300,0, 100.25 W,10 %,1380\n"
    )
    s = _read(_write(tmp_path, text)).samples
    assert s.get_column("power_w").to_list() == pytest.approx([208.36, 210.5, 99.0, 100.25])
    assert s.get_column("gpu_util").to_list() == [5, 7, 9, 10]
    assert s.get_column("sm_clock_mhz").to_list() == [1410, 1400, 1395, 1380]
    assert s.get_column("line").to_list() == [2, 3, 4, 5]


def test_comma_and_comma_space_read_the_same(tmp_path):
    rows = [("2025/01/01 00:00:00.000", "0", "208.36 W", "5 %", "1410 MHz"),
            ("2025/01/01 00:00:00.250", "1", "99.5 W", "0 %", "210 MHz")]
    a = _read(_write(tmp_path, HEADER + "".join(", ".join(r) + "\n" for r in rows), "a.csv"), host="h")
    b = _read(_write(tmp_path, HEADER.replace(", ", ",") + "".join(",".join(r) + "\n" for r in rows), "b.csv"), host="h")
    assert a.samples.equals(b.samples)
    assert a.samples.get_column("gpu").to_list() == ["h/0", "h/1"]


def test_odd_spacing_never_misread(tmp_path):
    # mostly ', ' but one row with ',' (a value without its leading space must not lose
    # a digit), double spaces, a tab, a truncated last line from a killed logger
    text = HEADER + (
        "2025/01/01 00:00:00.000, 0, 208.36 W, 5 %, 1410 MHz\n"
        "2025/01/01 00:00:00.100,0,15,7,1400\n"
        "2025/01/01 00:00:00.200, 0,  99 W , 9 %,\t1395 MHz\n"
        "2025/01/01 00:00:00.300, 0, 12"
    )
    path = _write(tmp_path, text)
    src = _read(path)
    s = src.samples
    assert s.get_column("power_w").to_list() == pytest.approx([208.36, 15, 99])
    assert s.get_column("gpu_util").to_list() == [5, 7, 9]
    assert s.get_column("sm_clock_mhz").to_list() == [1410, 1400, 1395]
    assert src.quality.rows_excluded == {"unparsable_row": 1}
    assert src.quality.examples["unparsable_row"] == [f"{path}:5"]


def test_index_not_first_and_bad_index(tmp_path):
    text = (
        "index, timestamp, power.draw [W]\n"
        "0, 2025/01/01 00:00:00.000, 100 W\n"
        "1, 2025/01/01 00:00:00.000, 200 W\n"
        "x, 2025/01/01 00:00:00.100, 300 W\n"
        "1, 2025/01/01 00:00:00.100, 210 W\n"
    )
    path = _write(tmp_path, text)
    src = _read(path, gpus_per_host=4)  # an index column wins over --gpus-per-host
    assert src.samples.get_column("gpu").to_list() == ["node1/0", "node1/1", "node1/1"]
    assert src.samples.get_column("power_w").to_list() == [100, 200, 210]
    assert src.quality.rows_excluded == {"unknown_gpu": 1}
    assert src.quality.examples["unknown_gpu"] == [f"{path}:4"]


NOUNITS = "timestamp,index,power.draw [W],clocks.sm [MHz],utilization.gpu [%],temperature.gpu\n"


def _nounits_rows(n: int) -> list[str]:
    t0 = datetime(2026, 7, 18, 16, 9, 47, 503000)
    return [
        f"{_stamp(t0 + timedelta(milliseconds=250 * i))},0,{85 + i}.5,1410,{i % 100},{30 + i % 50}" for i in range(n)
    ]


def test_nounits_typed_read_matches_text_read(tmp_path, monkeypatch):
    # plain numbers are parsed by the CSV reader; the result must equal the text path
    path = _write(tmp_path, NOUNITS + "\n".join(_nounits_rows(300)) + "\n")
    typed = _read(path)
    monkeypatch.setattr(nvsmi, "_typed_columns", lambda *a, **k: {})
    text = _read(path)
    assert typed.samples.equals(text.samples)
    assert typed.samples.height == 300
    assert typed.samples.get_column("power_w")[3] == pytest.approx(88.5)
    assert typed.samples.get_column("temp_c")[3] == 33


def test_nounits_odd_rows_fall_back_to_text(tmp_path, monkeypatch):
    calls = []
    read_table = nvsmi._read_table
    monkeypatch.setattr(nvsmi, "_read_table", lambda *a: calls.append(bool(a[3])) or read_table(*a))
    rows = _nounits_rows(300)
    rows[250] = rows[250].replace(",335.5,", ",[N/A],")     # line 252: null power, kept
    rows[260] = rows[260].replace(",345.5,", ",lots,")      # line 262: garbage power
    rows[270] = rows[270].replace(",1410,", ",[Unknown Error],")  # line 272: null clock
    body = rows[:280] + [""] + [NOUNITS.rstrip("\n")] + rows[280:]  # blank line 282, header 283
    path = _write(tmp_path, NOUNITS + "\n".join(body) + "\n")
    src = _read(path)
    q = src.quality
    assert q.rows_read == 300
    assert q.rows_excluded == {"unparsable_row": 1}
    assert q.examples["unparsable_row"] == [f"{path}:262"]
    assert not q.repairs
    s = src.samples
    assert s.filter(pl.col("line") == 252).get_column("power_w").to_list() == [None]
    assert s.filter(pl.col("line") == 272).get_column("sm_clock_mhz").to_list() == [None]
    assert s.get_column("line").to_list()[-20:] == list(range(284, 304))
    assert s.get_column("power_w")[-1] == pytest.approx(384.5)
    assert calls == [True, False]  # typed first (clean first rows), then as text


def test_null_tokens_keep_rows(tmp_path):
    text = HEADER + "".join(
        f"2025/01/01 00:00:0{i}.000, 0, {p}, {u}, 1410 MHz\n"
        for i, (p, u) in enumerate(
            [("[N/A]", "1 %"), ("N/A", "2 %"), ("[Not Supported]", "[N/A]"), ("[Unknown Error]", "N/A"),
             ("50 W", "[Not Supported]")]
        )
    )
    src = _read(_write(tmp_path, text))
    s = src.samples
    assert s.height == 5 and src.quality.n_excluded == 0  # nulls stay: cleaning counts them
    assert s.get_column("power_w").to_list()[:4] == [None] * 4
    assert s.get_column("power_w")[4] == 50
    assert s.get_column("gpu_util").to_list() == [1, 2, None, None, None]
    assert not src.quality.repairs  # a null token is not garbage


def test_unparsable_rows_counted_with_lines(tmp_path):
    text = (
        "\n"                                                    # 1 blank
        + HEADER                                                 # 2
        + "2025/01/01 00:00:00.000, 0, 100 W, 1 %, 1410 MHz\n"  # 3 ok
        + "2025/01/01 00:00:00.100, 0, 101 W, 1 %\n"            # 4 too few fields
        + "\n"                                                   # 5 blank
        + "2025/01/01 00:00:00.200, 0, W 208.36, 1 %, 1410 MHz\n"  # 6 unit in front
        + "yesterday, 0, 102 W, 1 %, 1410 MHz\n"                 # 7 bad timestamp
        + "2025/01/01 00:00:00.300, 0, 103 W, 1 %, 1410 MHz\n"  # 8 ok
        + "2025/01/01 00:00:00.400, 0, lots, 1 %, 1410 MHz\n"   # 9 garbage power
        + "2025/01/01 00:00:00.500, 0, 104 W, x %, 1410 MHz\n"  # 10 garbage util: kept, null
        + "2025/01/01 00:00:00.600, 0, 105 W, 1 %, 1410 MHz\r\n"  # 11 ok (CRLF)
    )
    path = _write(tmp_path, text)
    src = _read(path)
    q = src.quality
    assert q.rows_read == 8
    assert q.rows_excluded == {"unparsable_row": 4}
    assert q.examples["unparsable_row"] == [f"{path}:{n}" for n in (4, 6, 7, 9)]
    assert q.repairs == {"null_field": 1}
    assert q.examples["null_field"] == [f"{path}:10"]
    s = src.samples
    assert s.get_column("line").to_list() == [3, 8, 10, 11]
    assert s.get_column("power_w").to_list() == [100, 103, 104, 105]
    assert s.get_column("gpu_util").to_list() == [1, 1, None, 1]


def test_too_many_fields_is_unparsable(tmp_path):
    text = HEADER + (
        "2025/01/01 00:00:00.000, 0, 100 W, 1 %, 1410 MHz\n"
        "2025/01/01 00:00:00.100, 0, 101 W, 1 %, 1410 MHz, extra\n"
        "2025/01/01 00:00:00.200, 0, 102 W, 1 %, 1410 MHz\n"
    )
    path = _write(tmp_path, text)
    src = _read(path)
    assert src.quality.rows_excluded == {"unparsable_row": 1}
    assert src.quality.examples["unparsable_row"] == [f"{path}:3"]
    assert src.samples.get_column("power_w").to_list() == [100, 102]


def test_repeated_header_skipped(tmp_path):
    body = "2025/01/01 00:00:0{}.000, 0, 10{} W, 1 %, 1410 MHz\n"
    text = HEADER + body.format(0, 0) + body.format(1, 1) + HEADER + body.format(2, 2)
    src = _read(_write(tmp_path, text))
    assert src.quality.rows_read == 3 and src.quality.n_excluded == 0
    assert src.samples.get_column("line").to_list() == [2, 3, 5]


def test_header_changing_mid_file_is_an_error(tmp_path):
    body = "2025/01/01 00:00:00.000, 0, 100 W, 1 %, 1410 MHz\n"
    other = "timestamp, index, power.draw [W], temperature.gpu, clocks.sm [MHz]\n"
    path = _write(tmp_path, HEADER + body + other + body)
    with pytest.raises(InputError, match=r"node1.csv:3: the header changes mid-file"):
        nvsmi.read(path, ReadOptions())


def test_header_only_is_empty_not_an_error(tmp_path):
    src = _read(_write(tmp_path, HEADER))
    assert src.quality.rows_read == 0 and src.samples.height == 0
    assert {"gpu", "ts", "power_w", "line"} <= set(src.samples.columns)
    assert src.samples.schema["ts"] == pl.Datetime("ns", "UTC")


def test_compressed_copies_read_identically(tmp_path):
    text = HEADER + "".join(
        f"2025/01/01 00:00:{i // 2:02d}.{(i % 2) * 500:03d}, {i % 2}, {100 + i} W, {i} %, 1410 MHz\n"
        for i in range(40)
    )
    plain = _write(tmp_path, text, "n.csv")
    (tmp_path / "n.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "n.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    ref = _read(plain)
    for name in ("n.csv.gz", "n.csv.zst"):
        got = _read(tmp_path / name)
        assert got.samples.equals(ref.samples), name
        assert got.quality.rows_read == 40
    assert ref.samples.get_column("gpu").unique().sort().to_list() == ["n/0", "n/1"]


def test_bom_and_leading_blank_lines(tmp_path):
    text = "\ufeff\n\n" + HEADER + "2025/01/01 00:00:00.000, 3, 100 W, 1 %, 1410 MHz\n"
    s = _read(_write(tmp_path, text)).samples
    assert s.get_column("line").to_list() == [4]
    assert s.get_column("gpu").to_list() == ["node1/3"]


def test_power_field_preference_and_semantics(tmp_path):
    head = "timestamp, index, name, power.draw [W], power.draw.average [W], power.draw.instant [W]\n"
    row = "2025/01/01 00:00:00.000, 0, NVIDIA H100 80GB HBM3, 300 W, 310 W, 420 W\n"
    src = _read(_write(tmp_path, head + row, "a.csv"))
    assert src.power.kind == "instant" and src.power.field == "power.draw.instant"
    assert src.samples.get_column("power_w").to_list() == [420]
    assert src.gpu_models == {"a/0": "NVIDIA H100 80GB HBM3"}

    head2 = "timestamp, index, name, power.draw [W], power.draw.average [W]\n"
    h100 = "2025/01/01 00:00:00.000, 0, NVIDIA H100 80GB HBM3, 300 W, 310 W\n"
    src = _read(_write(tmp_path, head2 + h100, "b.csv"))
    assert (src.power.kind, src.power.window_s, src.power.field) == ("average", 1.0, "power.draw.average")
    assert src.samples.get_column("power_w").to_list() == [310]
    # on an A100 power.draw is instantaneous: preferred over the average
    a100 = "2025/01/01 00:00:00.000, 0, NVIDIA A100-SXM4-80GB, 300 W, 310 W\n"
    src = _read(_write(tmp_path, head2 + a100, "c.csv"), gpu_model="H100")  # the file's name wins
    assert (src.power.kind, src.power.field) == ("instant", "power.draw")
    assert src.samples.get_column("power_w").to_list() == [300]


def test_power_draw_semantics_by_model(tmp_path):
    path = _write(tmp_path, HEADER + "2025/01/01 00:00:00.000, 0, 100 W, 1 %, 1410 MHz\n")
    assert _read(path, gpu_model="H100").power.kind == "average"
    assert _read(path, gpu_model="H100").power.window_s == 1.0
    assert _read(path, gpu_model="A100").power.kind == "instant"
    assert _read(path, gpu_model="no-such-gpu").power.kind == "unknown"
    assert _read(path).power.kind == "unknown"


def test_power_units_mw_and_option(tmp_path):
    mw = "timestamp, index, power.draw [mW]\n2025/01/01 00:00:00.000, 0, 250000 mW\n"
    assert _read(_write(tmp_path, mw, "a.csv")).samples.get_column("power_w").to_list() == [250]
    bare = "timestamp, index, power.draw\n2025/01/01 00:00:00.000, 0, 250000\n"
    assert _read(_write(tmp_path, bare, "b.csv"), power_unit="mW").samples.get_column("power_w").to_list() == [250]
    assert _read(_write(tmp_path, bare, "c.csv")).samples.get_column("power_w").to_list() == [250000]
    # the header's unit wins over the option, with a warning
    src = _read(_write(tmp_path, mw, "d.csv"), power_unit="W")
    assert src.samples.get_column("power_w").to_list() == [250]
    assert any("--power-unit W ignored" in w for w in src.quality.warnings)


def test_aliases_and_energy(tmp_path):
    text = (
        "timestamp, index, power.draw.instant [W], clocks.current.sm [MHz], clocks.current.memory [MHz], "
        "temperature.gpu, utilization.memory [%], total_energy_consumption [mJ], memory.used [MiB]\n"
        "2025/01/01 00:00:00.000, 0, 300.5 W, 1980 MHz, 2619 MHz, 45, 12 %, 123456789 mJ, 1000 MiB\n"
    )
    src = _read(_write(tmp_path, text))
    row = src.samples.row(0, named=True)
    assert row["sm_clock_mhz"] == 1980 and row["mem_clock_mhz"] == 2619
    assert row["temp_c"] == 45 and row["mem_util"] == 12
    assert row["energy_j"] == pytest.approx(123456.789)
    assert src.samples.schema["energy_j"] == pl.Float64
    assert "memory.used" not in src.samples.columns and len(src.samples.columns) == 9
    assert src.power.kind == "instant"


def test_uuid_identity(tmp_path):
    text = (
        "timestamp, uuid, power.draw [W]\n"
        "2025/01/01 00:00:00.000, GPU-aaaa, 100 W\n"
        "2025/01/01 00:00:00.001, GPU-bbbb, 200 W\n"
        "2025/01/01 00:00:00.002, [N/A], 300 W\n"
    )
    path = _write(tmp_path, text)
    src = _read(path)
    assert src.samples.get_column("gpu").to_list() == ["node1/GPU-aaaa", "node1/GPU-bbbb"]
    assert src.quality.rows_excluded == {"unknown_gpu": 1}
    assert src.quality.examples["unknown_gpu"] == [f"{path}:4"]


# -- errors -----------------------------------------------------------------------------


def test_missing_power_column(tmp_path):
    path = _write(tmp_path, "timestamp, index, utilization.gpu [%]\n2025/01/01 00:00:00.000, 0, 5 %\n")
    with pytest.raises(InputError) as err:
        nvsmi.read(path, ReadOptions())
    msg = str(err.value)
    assert msg.startswith(f"{path}:1: no power column")
    assert "expected power.draw, power.draw.instant or power.draw.average" in msg
    assert "found: timestamp, index, utilization.gpu" in msg


def test_semicolon_delimiter(tmp_path):
    path = _write(tmp_path, "timestamp; power.draw [W]\n2025/01/01 00:00:00.000; 100 W\n")
    assert nvsmi.sniff(path.read_text(), path)
    with pytest.raises(InputError, match=r"node1.csv:1: header is separated by ';' \(semicolon\), not ','"):
        nvsmi.read(path, ReadOptions())


def test_every_row_unit_in_front_is_a_clear_error(tmp_path):
    text = "timestamp, power.draw [W]\n" + "".join(f"2025/01/01 00:00:0{i}.000, W 20{i}.5\n" for i in range(3))
    with pytest.raises(InputError, match=r"node1.csv:2: none of the 3 data row\(s\) could be parsed.*W 200.5"):
        nvsmi.read(_write(tmp_path, text), ReadOptions())


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(HEADER.encode() + b"2025/01/01 00:00:00.000, 0, 100 W, 1 %, 1410 MHz\n" + b"\xff\xfe, 1\n")
    with pytest.raises(InputError, match=r"bad.csv:3: not UTF-8"):
        nvsmi.read(path, ReadOptions())


def test_no_timestamp_column_and_empty_file(tmp_path):
    with pytest.raises(InputError, match="no timestamp column"):
        nvsmi.read(_write(tmp_path, "index, power.draw [W]\n0, 100 W\n", "a.csv"), ReadOptions())
    with pytest.raises(InputError, match="empty file"):
        nvsmi.read(_write(tmp_path, "\n\n", "b.csv"), ReadOptions())
    with pytest.raises(InputError, match="cannot read file"):
        nvsmi.read(tmp_path / "missing.csv", ReadOptions())


def test_offset_and_tz_together_is_an_error(tmp_path):
    path = _write(tmp_path, HEADER)
    with pytest.raises(InputError, match="not both"):
        nvsmi.read(path, ReadOptions(utc_offset_s=3600, tz="Europe/Berlin"))
    with pytest.raises(ParameterError, match="unknown time zone"):
        nvsmi.read(_write(tmp_path, HEADER + "2025/01/01 00:00:00.000, 0, 1 W, 1 %, 1 MHz\n", "x.csv"),
                   ReadOptions(tz="Mars/Olympus"))


# -- time zones -------------------------------------------------------------------------


def test_utc_offset_and_no_zone_warning(tmp_path):
    path = _write(tmp_path, HEADER + "2026/07/18 16:09:47.503, 0, 100 W, 1 %, 1410 MHz\n")
    assert _read(path, utc_offset_s=-25200).samples.get_column("ts")[0] == _utc(2026, 7, 18, 23, 9, 47, 503000)
    assert _read(path, utc_offset_s=3600).samples.get_column("ts")[0] == _utc(2026, 7, 18, 15, 9, 47, 503000)
    src = _read(path, utc_offset_s=None)
    assert src.samples.get_column("ts")[0] == _utc(2026, 7, 18, 16, 9, 47, 503000)
    assert src.quality.warnings == [
        f"{path}: timestamps have no time zone; read as UTC (pass --utc-offset or --tz)"
    ]


def test_tz_fall_back_resolved_by_order(tmp_path):
    local = ["00:59:00.000", "01:30:00.000", "01:59:00.000", "01:00:30.000", "01:30:00.000", "02:00:00.000"]
    text = HEADER + "".join(f"2025/11/02 {t}, 0, {100 + i} W, 1 %, 1 MHz\n" for i, t in enumerate(local))
    path = _write(tmp_path, text)
    src = _read(path, utc_offset_s=None, tz="America/Los_Angeles")
    assert src.samples.get_column("ts").to_list() == [
        _utc(2025, 11, 2, 7, 59),        # PDT (UTC-7)
        _utc(2025, 11, 2, 8, 30),        # first 01:30: PDT
        _utc(2025, 11, 2, 8, 59),
        _utc(2025, 11, 2, 9, 0, 30),     # after the step back: PST (UTC-8)
        _utc(2025, 11, 2, 9, 30),        # second 01:30: PST
        _utc(2025, 11, 2, 10, 0),
    ]
    assert src.quality.repairs == {"dst_ambiguous": 4}
    assert src.quality.examples["dst_ambiguous"] == [f"{path}:{n}" for n in (3, 4, 5, 6)]
    assert not src.quality.warnings


def test_tz_spring_forward_gap_excluded(tmp_path):
    local = ["01:59:00.000", "02:30:00.000", "03:00:00.000"]
    text = HEADER + "".join(f"2025/03/09 {t}, 0, 100 W, 1 %, 1 MHz\n" for t in local)
    path = _write(tmp_path, text)
    src = _read(path, utc_offset_s=None, tz="America/Los_Angeles")
    assert src.quality.rows_excluded == {"nonexistent_local_time": 1}
    assert src.quality.examples["nonexistent_local_time"] == [f"{path}:3"]
    assert src.samples.get_column("ts").to_list() == [_utc(2025, 3, 9, 9, 59), _utc(2025, 3, 9, 10, 0)]


# -- sweeps without an index column ---------------------------------------------------------


def _sweep_log(sweeps: list[list[tuple[int, float]]], t0: datetime = datetime(2025, 1, 1)) -> str:
    """A log without index: each sweep is [(gpu, ms offset from the sweep start)];
    power = 100 + gpu so the assignment can be checked; sweeps 100 ms after the
    previous one ended."""
    lines = ["timestamp, power.draw [W], utilization.gpu [%]"]
    t = t0
    for sweep in sweeps:
        last = 0.0
        for gpu, offset in sweep:
            lines.append(f"{_stamp(t + timedelta(milliseconds=offset))}, {100 + gpu}.00 W, 0 %")
            last = offset
        t += timedelta(milliseconds=last + 100)
    return "\n".join(lines) + "\n"


def _full(n: int, late_ms: float = 0.0) -> list[tuple[int, float]]:
    return [(g, g * 1.0 + (late_ms if g else 0.0)) for g in range(n)]


def _gpu_index(s: pl.DataFrame) -> list[int]:
    return s.get_column("gpu").str.extract(r"/(\d+)$").cast(int).to_list()


def test_sweeps_late_incomplete_and_truncated(tmp_path):
    n = 8
    sweeps = [_full(n) for _ in range(30)]
    sweeps[5] = _full(n, late_ms=700)                           # late: 1 + 7 rows
    sweeps[12] = [(g, g * 1.0) for g in range(n) if g != 3]      # GPU 3 lost: 7 rows
    sweeps[20] = _full(n, late_ms=1200)
    sweeps.append([(0, 0.0), (1, 1.0), (2, 2.0)])                # logger stopped mid-sweep
    path = _write(tmp_path, _sweep_log(sweeps))
    src = _read(path)
    s = src.samples
    q = src.quality
    assert q.rows_read == 29 * n + 7 + 3
    assert q.rows_excluded == {"unknown_gpu": 7}
    sweep12_lines = list(range(2 + 12 * n, 2 + 12 * n + 7))
    assert q.examples["unknown_gpu"] == [f"{path}:{ln}" for ln in sweep12_lines[:5]]
    # every attributed row went to the GPU that wrote it
    assert _gpu_index(s) == [int(p) - 100 for p in s.get_column("power_w")]
    assert s.height == 29 * n + 3
    assert any("8 GPU(s) per sweep" in note for note in src.notes)


def test_lost_row_next_to_a_late_sweep(tmp_path):
    # runs 7 | 1 | 7: the lost-row sweep stays alone (unknown), the late sweep is whole;
    # joining 7 + 1 across an ordinary 100 ms boundary would also make 8 rows
    n = 8
    sweeps = [_full(n) for _ in range(20)]
    sweeps[9] = [(g, g * 1.0) for g in range(n) if g != 5]
    sweeps[10] = _full(n, late_ms=650)
    path = _write(tmp_path, _sweep_log(sweeps))
    src = _read(path)
    assert src.quality.rows_excluded == {"unknown_gpu": 7}
    assert src.quality.examples["unknown_gpu"][0] == f"{path}:{2 + 9 * n}"
    assert _gpu_index(src.samples) == [int(p) - 100 for p in src.samples.get_column("power_w")]
    assert src.samples.height == 19 * n


def test_unparsable_row_keeps_its_slot(tmp_path):
    n = 4
    text = _sweep_log([_full(n) for _ in range(20)])
    lines = text.splitlines()
    lines[1 + 4 * n + 2] = lines[1 + 4 * n + 2].replace("102.00 W", "garbage")  # sweep 4, GPU 2
    path = _write(tmp_path, "\n".join(lines) + "\n")
    src = _read(path)
    assert src.quality.rows_excluded == {"unparsable_row": 1}
    assert src.quality.examples["unparsable_row"] == [f"{path}:{2 + 4 * n + 2}"]
    assert _gpu_index(src.samples) == [int(p) - 100 for p in src.samples.get_column("power_w")]


def test_gpus_per_host_option_and_repeated_header(tmp_path):
    n = 4
    first = _sweep_log([_full(n) for _ in range(10)])
    # a second logger run, appended with its header, starting with a truncated sweep
    # of the first run would shift positions if runs were not counted separately
    second = _sweep_log([_full(n) for _ in range(10)], t0=datetime(2025, 1, 1, 1))
    text = first.rstrip("\n").rsplit("\n", 1)[0] + "\n" + second  # last row of run 1 lost
    path = _write(tmp_path, text)
    for opts in ({}, {"gpus_per_host": n}):
        src = _read(path, **opts)
        assert src.quality.rows_read == 10 * n - 1 + 10 * n
        assert src.quality.n_excluded == 0  # run 1's last sweep is truncated, not lost
        assert _gpu_index(src.samples) == [int(p) - 100 for p in src.samples.get_column("power_w")]


def test_single_gpu_without_index(tmp_path):
    text = "timestamp, power.draw [W]\n" + "".join(
        f"2025/01/01 00:00:{i // 10:02d}.{(i % 10) * 100:03d}, {100 + i % 7} W\n" for i in range(200)
    )
    s = _read(_write(tmp_path, text)).samples
    assert s.get_column("gpu").unique().to_list() == ["node1/0"]


def test_noheader_with_units(tmp_path):
    text = _sweep_log([_full(2) for _ in range(20)]).split("\n", 1)[1]
    path = _write(tmp_path, text)
    assert nvsmi.sniff(text, path)
    src = _read(path)
    assert src.quality.rows_read == 40 and src.samples.height == 40
    assert _gpu_index(src.samples) == [int(p) - 100 for p in src.samples.get_column("power_w")]
    assert src.samples.get_column("line")[0] == 1
    nounits = "2025/01/01 00:00:00.000, 0, 100.0, 5\n"
    assert not nvsmi.sniff(nounits, path)
    with pytest.raises(InputError, match="cannot tell which column is power"):
        nvsmi.read(_write(tmp_path, nounits, "nounits.csv"), ReadOptions(format="nvsmi_csv"))


def test_registry_detects_nvsmi(real_traces, tmp_path):
    from tracekit.io.registry import FORMATS, detect_format

    for fmt in FORMATS[: [f.name for f in FORMATS].index("nvsmi_csv")]:
        pytest.importorskip(fmt.module)  # readers tried earlier must exist to be tried
    for name in (H100, TITANX, A100):
        assert detect_format(real_traces / name).name == "nvsmi_csv"
    semi = _write(tmp_path, "timestamp; power.draw [W]\n2025/01/01 00:00:00.000; 100 W\n", "semi.csv")
    assert detect_format(semi).name == "nvsmi_csv"  # so that read() can name the delimiter


def test_sniff_rejects_other_formats(tmp_path):
    p = tmp_path / "x"
    assert not nvsmi.sniff("time,power\n1,2\n", p)
    assert not nvsmi.sniff("# gpu   pwr  gtemp\n# Idx     W      C\n    0   69     30\n", p)
    assert not nvsmi.sniff('{"0": [[1.0, 2.0]]}', p)
    assert nvsmi.sniff("timestamp, index, power.draw.instant [W]\n", p)
    assert nvsmi.sniff("timestamp,utilization.gpu [%],memory.used [MiB]\n", p)
    # same column names, epoch timestamps: a generic CSV, not nvidia-smi's
    assert not nvsmi.sniff("timestamp,power.draw\n1784416187.46,85.5\n1784416187.71,90.1\n", p)
    assert nvsmi.sniff("timestamp,power.draw\n\n2026/07/18 16:09:47.503,85.5\n", p)


@settings(max_examples=50, deadline=None)
@given(
    n=st.sampled_from([1, 2, 3, 4, 6, 8, 16, 24, 32]),
    period_ms=st.sampled_from([50, 100, 250, 1000]),
    sweeps=st.integers(20, 120),
    seed=st.integers(0, 2**32 - 1),
)
def test_sweep_inference_property(n, period_ms, sweeps, seed):
    rng = np.random.default_rng(seed)
    within = np.cumsum(rng.integers(0, 3, (sweeps, n)), axis=1)
    within[:, 0] = 0
    late = rng.random(sweeps) < 0.05
    if n > 1:
        within[late, 1:] += rng.integers(300, 2000, int(late.sum()))[:, None]
    # the next sweep starts a period after this one ended
    start = np.concatenate([[0], np.cumsum(period_ms + within[:-1, -1] + rng.integers(0, 3, sweeps - 1))])
    ts_ns = ((start[:, None] + within).ravel() * 1_000_000).astype(np.int64)
    structure = nvsmi.infer_sweep_structure(ts_ns)
    assert structure.gpus_per_sweep == n
    pos = nvsmi.sweep_positions(ts_ns, structure)
    assert pos.tolist() == np.tile(np.arange(n), sweeps).tolist()


def test_short_log_needs_gpus_per_host(tmp_path):
    path = _write(tmp_path, _sweep_log([_full(8) for _ in range(2)]))
    src = _read(path)
    assert src.samples.get_column("gpu").unique().to_list() == ["node1/0"]
    assert any("pass --gpus-per-host" in w for w in src.quality.warnings)
    src = _read(path, gpus_per_host=8)
    assert _gpu_index(src.samples) == list(range(8)) * 2
    assert not any("gpus-per-host" in w for w in src.quality.warnings)


# -- against a plain line-by-line parser ------------------------------------------------

_TOKENS = ["[N/A]", "N/A", "[Not Supported]", "[Unknown Error]"]


def _naive_read(text: str, host: str) -> tuple[list[tuple], dict[str, list[int]]]:
    """The obvious reader: one line at a time with Python's str and datetime."""
    rows, bad = [], {"unparsable_row": [], "unknown_gpu": []}
    header = None
    for line_no, raw in enumerate(text.split("\n")[:-1], start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(",")
        if header is None or fields[0].strip() == "timestamp":
            header = header or [f.strip() for f in fields]
            continue
        if len(fields) != len(header):
            bad["unparsable_row"].append(line_no)
            continue
        ts_text, index, power, util = (f.strip() for f in fields)
        try:
            ts = datetime.strptime(ts_text, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=UTC)
        except ValueError:
            bad["unparsable_row"].append(line_no)
            continue

        def number(v: str, unit: str):
            v = v[: -len(unit)].strip() if v.endswith(unit) else v
            if v in _TOKENS or v.startswith("["):
                return None, True
            try:
                return float(v), True
            except ValueError:
                return None, False

        power_w, ok = number(power, "W")
        if not ok:
            bad["unparsable_row"].append(line_no)
            continue
        if not index.isdigit():
            bad["unknown_gpu"].append(line_no)
            continue
        rows.append((f"{host}/{int(index)}", ts, power_w, number(util, "%")[0], line_no))
    return rows, bad


_VALUE = st.one_of(
    st.floats(0, 1000, allow_nan=False).map(lambda x: f"{x:.2f}"),
    st.integers(0, 100).map(str),
)


@st.composite
def _messy_log(draw):
    lines = ["timestamp, index, power.draw [W], utilization.gpu [%]"]
    t0 = datetime(2025, 3, 1, 12, 0, 0)
    for i in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(["ok"] * 8 + ["blank", "header", "short", "long", "badts", "token", "garbage"]))
        sep = draw(st.sampled_from([", ", ","]))
        ts = _stamp(t0 + timedelta(milliseconds=100 * i))
        power = draw(_VALUE) + draw(st.sampled_from([" W", "", " W "]))
        util = draw(_VALUE) + draw(st.sampled_from([" %", ""]))
        index = str(draw(st.integers(0, 3)))
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", "  ", "\r"])))
            continue
        if kind == "header":
            lines.append(lines[0])
            continue
        if kind == "badts":
            ts = draw(st.sampled_from(["yesterday", "2025/13/01 00:00:00.000", ""]))
        if kind == "token":
            power = draw(st.sampled_from(_TOKENS))
        if kind == "garbage":
            power = draw(st.sampled_from(["W 12.5", "lots", "1.2.3", "--"]))
        fields = [ts, index, power, util]
        if kind == "short":
            fields = fields[: draw(st.integers(1, 3))]
        if kind == "long":
            fields = fields + ["extra"]
        lines.append(sep.join(fields))
    return "\n".join(lines) + "\n"


@settings(max_examples=50, deadline=None)
@given(text=_messy_log())
def test_reader_matches_naive_parser(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("messy") / "h.csv"
    path.write_text(text)
    want, bad = _naive_read(text, "h")
    if not want and bad["unparsable_row"] and not bad["unknown_gpu"]:
        # rows but none readable: not a damaged log but not nvidia-smi data at all
        with pytest.raises(InputError, match=r"none of the \d+ data row\(s\) could be parsed"):
            _read(path)
        return
    src = _read(path)
    got = src.samples.select("gpu", "ts", "power_w", "gpu_util", "line").rows()
    assert [r[0] for r in got] == [r[0] for r in want]
    assert [r[1] for r in got] == [r[1] for r in want]
    assert [r[4] for r in got] == [r[4] for r in want]
    for g, w in zip(got, want):
        for a, b in ((g[2], w[2]), (g[3], w[3])):
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6)
    q = src.quality
    assert q.rows_read == len(want) + sum(len(v) for v in bad.values())
    assert {k: v for k, v in q.rows_excluded.items()} == {k: len(v) for k, v in bad.items() if v}
    for kind, lines in bad.items():
        assert q.examples.get(kind, []) == [f"{path}:{n}" for n in lines[:5]]
