"""Readers of every input format except the nvidia-smi query CSV.

Each test writes a small realistic file inline and checks the exact samples (GPU ids,
UTC timestamps, power), the power semantics and the row accounting
(``rows_read == len(samples) + excluded``).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.errors import InputError, ParameterError
from tracekit.io import dmon, generic, prometheus, zeus
from tracekit.io.base import ReadOptions, SourceFrame
from tracekit.io.registry import detect_format
from tracekit.quality import DataQuality
from tracekit.schema import TS_DTYPE

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def check_frame(sf: SourceFrame) -> None:
    """Canonical dtypes and the accounting invariant."""
    schema = sf.samples.schema
    assert schema["gpu"] == pl.String
    assert schema["ts"] == TS_DTYPE
    assert schema["power_w"] == pl.Float32
    assert schema["line"] == pl.UInt32
    assert sf.quality.rows_read == sf.samples.height + sf.quality.n_excluded
    assert sf.samples["ts"].null_count() == 0


def rows(sf: SourceFrame, *cols: str) -> list[tuple]:
    return sf.samples.select(cols or ("gpu", "ts", "power_w", "line")).rows()


# ---------------------------------------------------------------------------------------
# Examples of each format (also used by the detection tests)
# ---------------------------------------------------------------------------------------

NVSMI_DMON_DT = """\
#Date       Time        gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk   pclk
#YYYYMMDD   HH:MM:SS    Idx      W      C      C      %      %      %      %    MHz    MHz
 20250726   23:32:09      0     69     33      -      0      1      0      0   2619   1980
 20250726   23:32:09      1      -     31      -      0      0      0      0   2619    345
 20250726   23:32:10      0    412     35      -     98     40      0      0   2619   1980
 20250726   23:32:10      1    405     34      -     97     41      0      0   2619   1980
#Date       Time        gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk   pclk
#YYYYMMDD   HH:MM:SS    Idx      W      C      C      %      %      %      %    MHz    MHz
 20250726   23:32:11      0    abc     35      -     98     40      0      0   2619   1980
 20250726   23:32:11      1    410     34
 20250726   23:32:12      0    415     xx      -     99     40      0      0   2619   1980
"""

NVSMI_DMON_PLAIN = """\
# gpu    pwr  gtemp  mtemp     sm    mem    enc    dec    jpg    ofa   mclk   pclk
# Idx      W      C      C      %      %      %      %      %      %    MHz    MHz
    0     69     33     42      0      0      0      0      0      0   2619   1980
    1     70     31     40      0      0      0      0      0      0   2619   1980
    0    690     63     70    100     55      0      0      0      0   2619   1980
    1    688     61     69    100     54      0      0      0      0   2619   1980
"""

DCGMI = """\
#Entity   POWER             TMPTR       SMCLK       TOTEC
ID        W                 C                       mJ
GPU 0     68.437            30          1980        123456789
GPU 1     N/A               31          1980        9223372036854775794
GPU-I 0   N/A               N/A         N/A         N/A
GPU 0     412.500           33          1980        123460000
GPU 1     410.250           2147483632  1975        123470000
#Entity   POWER             TMPTR       SMCLK       TOTEC
ID        W                 C                       mJ
GPU 0     415.000           34          1980        123470000
GPU 1     400.000           33
Error: lost connection to host engine
"""

PROM = """\
# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-aaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 1980 1719000000000
DCGM_FI_DEV_SM_CLOCK{gpu="1",UUID="GPU-bbb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 1980 1719000000000
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-aaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 266.17 1719000000000
DCGM_FI_DEV_POWER_USAGE{UUID="GPU-bbb",pod="",gpu="1",hostname="node1",device="nvidia1",modelName="NVIDIA H100 80GB HBM3"} 9223372036854775794 1719000000000
# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).
# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-aaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 5000000000 1719000000000
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-aaa",Hostname="node1"} 1234 1719000000000
# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-aaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 1410 1719000001000
DCGM_FI_DEV_SM_CLOCK{gpu="1",UUID="GPU-bbb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 2147483647 1719000001000
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-aaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 512.5 1719000001005
DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-bbb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 140737488355328 1719000001000
DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-bbb",device="nvid
"""

ZEUS = json.dumps(
    {"0": [[1719000000.0, 70.5], [1719000000.25, 412.0], [1719000001.5, None]],
     "1.0": [[1719000000.0, 68], ["x", 1], [1719000000.75, 400.125]]}
)

GENERIC_CSV = """\
timestamp_ms,gpu,hostname,power_mw,sm_clock_mhz
1719000000000,0,nodeA,266170,1980
1719000000100,1,nodeA,,1980
1719000000200,0,nodeA,abc,1980
1719000000300,1,nodeA,300000,zz
"""

NVSMI_CSV = """\
timestamp, index, power.draw [W], clocks.sm [MHz]
2025/07/26 23:32:09.703, 0, 69.32 W, 1980 MHz
2025/07/26 23:32:09.703, 1, 70.10 W, 1980 MHz
"""


# ---------------------------------------------------------------------------------------
# nvidia-smi dmon
# ---------------------------------------------------------------------------------------


def test_nvsmi_dmon_date_time_columns(tmp_path):
    path = write(tmp_path, "node7.dmon", NVSMI_DMON_DT)
    sf = dmon.read_nvsmi(path, ReadOptions(utc_offset_s=-7 * 3600))
    check_frame(sf)
    # local 23:32:09 at UTC-7 is 06:32:09 UTC the next day
    assert rows(sf) == [
        ("node7/0", utc(2025, 7, 27, 6, 32, 9), 69.0, 3),
        ("node7/1", utc(2025, 7, 27, 6, 32, 9), None, 4),
        ("node7/0", utc(2025, 7, 27, 6, 32, 10), 412.0, 5),
        ("node7/1", utc(2025, 7, 27, 6, 32, 10), 405.0, 6),
        ("node7/0", utc(2025, 7, 27, 6, 32, 12), 415.0, 11),
    ]
    assert rows(sf, "sm_clock_mhz", "mem_clock_mhz", "gpu_util", "mem_util", "temp_c")[:2] == [
        (1980.0, 2619.0, 0.0, 1.0, 33.0),
        (345.0, 2619.0, 0.0, 0.0, 31.0),
    ]
    # line 11: garbled temperature -> null, counted as a repair, row kept
    assert sf.samples["temp_c"][-1] is None
    assert sf.quality.repairs == {"null_field": 1}
    # line 9: 'abc' power, line 10: too few fields
    assert sf.quality.rows_read == 7
    assert dict(sf.quality.rows_excluded) == {"unparsable_row": 2}
    assert sf.quality.examples["unparsable_row"] == [f"{path}:9", f"{path}:10"]
    assert sf.power.kind == "unknown" and "dmon" in sf.power.field
    assert sf.quality.warnings == []


def test_nvsmi_dmon_local_time_without_zone_warns(tmp_path):
    sf = dmon.read_nvsmi(write(tmp_path, "n.dmon", NVSMI_DMON_DT), ReadOptions())
    assert sf.samples["ts"][0] == utc(2025, 7, 26, 23, 32, 9)
    assert any("--utc-offset" in w for w in sf.quality.warnings)


def test_nvsmi_dmon_power_semantics_from_model(tmp_path):
    path = write(tmp_path, "n.dmon", NVSMI_DMON_DT)
    h100 = dmon.read_nvsmi(path, ReadOptions(utc_offset_s=0, gpu_model="H100"))
    a100 = dmon.read_nvsmi(path, ReadOptions(utc_offset_s=0, gpu_model="A100"))
    assert (h100.power.kind, h100.power.window_s) == ("average", 1.0)
    assert (a100.power.kind, a100.power.window_s) == ("instant", None)


def test_nvsmi_dmon_untimed_needs_start_and_interval(tmp_path):
    path = write(tmp_path, "gpu-host.log", NVSMI_DMON_PLAIN)
    with pytest.raises(InputError, match=r"gpu-host\.log: .*--start.*--interval"):
        dmon.read_nvsmi(path, ReadOptions())
    sf = dmon.read_nvsmi(path, ReadOptions(start="2025-07-26T23:32:09Z", interval_s=1.0, host="h"))
    check_frame(sf)
    assert rows(sf) == [
        ("h/0", utc(2025, 7, 26, 23, 32, 9), 69.0, 3),
        ("h/1", utc(2025, 7, 26, 23, 32, 9), 70.0, 4),
        ("h/0", utc(2025, 7, 26, 23, 32, 10), 690.0, 5),
        ("h/1", utc(2025, 7, 26, 23, 32, 10), 688.0, 6),
    ]
    assert any("--start" in n for n in sf.notes)


def test_nvsmi_dmon_comma_format_and_no_power_column(tmp_path):
    text = "#gpu, pwr, gtemp\n#Idx, W, C\n 0, 61, 30\n 1, -, 31\n"
    sf = dmon.read_nvsmi(write(tmp_path, "c.log", text), ReadOptions(start="1719000000", interval_s=0.5))
    assert rows(sf, "gpu", "power_w", "temp_c") == [("c/0", 61.0, 30.0), ("c/1", None, 31.0)]
    with pytest.raises(InputError, match="no 'pwr' column"):
        dmon.read_nvsmi(write(tmp_path, "u.log", "# gpu sm mem\n# Idx % %\n 0 1 2\n"), ReadOptions())


# ---------------------------------------------------------------------------------------
# dcgmi dmon
# ---------------------------------------------------------------------------------------


def test_dcgmi_untimed_with_start_and_interval(tmp_path):
    path = write(tmp_path, "node2.dcgmi", DCGMI)
    sf = dmon.read_dcgmi(path, ReadOptions(start="2025-07-26T23:32:09Z", interval_s=0.1))
    check_frame(sf)
    t0 = utc(2025, 7, 26, 23, 32, 9)
    ms = timedelta(milliseconds=100)
    assert rows(sf, "gpu", "ts", "power_w", "temp_c", "sm_clock_mhz", "energy_j", "line") == [
        ("node2/0", t0, pytest.approx(68.437), 30.0, 1980.0, pytest.approx(123456.789), 3),
        ("node2/1", t0, None, 31.0, 1980.0, None, 4),  # N/A power, int64 blank energy
        ("node2/0", t0 + ms, 412.5, 33.0, 1980.0, 123460.0, 6),
        ("node2/1", t0 + ms, 410.25, None, 1975.0, 123470.0, 7),  # int32 blank temperature
        ("node2/0", t0 + 2 * ms, 415.0, 34.0, 1980.0, 123470.0, 10),
    ]
    # line 11 has too few fields, line 12 is not a table row; the GPU-I row is not a GPU sample
    assert sf.quality.rows_read == 7
    assert dict(sf.quality.rows_excluded) == {"unparsable_row": 2}
    assert sf.quality.examples["unparsable_row"] == [f"{path}:11", f"{path}:12"]
    assert any("GPU-I" in n for n in sf.notes)
    assert sf.power.kind == "instant" and "155" in sf.power.field


def test_dcgmi_untimed_without_options_is_an_error(tmp_path):
    path = write(tmp_path, "node2.dcgmi", DCGMI)
    with pytest.raises(InputError) as err:
        dmon.read_dcgmi(path, ReadOptions())
    msg = str(err.value)
    assert "node2.dcgmi" in msg and "--start" in msg and "--interval" in msg and "\n" not in msg
    with pytest.raises(InputError, match="--interval"):
        dmon.read_dcgmi(path, ReadOptions(start="2025-07-26T23:32:09Z"))
    with pytest.raises(ParameterError):
        dmon.read_dcgmi(path, ReadOptions(start="not a time", interval_s=0.1))


def test_dcgmi_logger_timestamps_iso_and_epoch(tmp_path):
    iso_lines, epoch_lines = [], []
    for k, line in enumerate(DCGMI.splitlines()):
        t = utc(2025, 7, 26, 23, 32, 9) + timedelta(milliseconds=100 * (k // 4))
        iso_lines.append(t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z " + line)
        epoch_lines.append(f"{t.timestamp():.3f} {line}")
    a = dmon.read_dcgmi(write(tmp_path, "a.log", "\n".join(iso_lines)), ReadOptions())
    b = dmon.read_dcgmi(write(tmp_path, "a.dcgmi", "\n".join(epoch_lines)), ReadOptions())
    for sf in (a, b):
        check_frame(sf)
        # lines 3, 4 logged at +0 ms, lines 6, 7 at +100 ms, line 10 at +200 ms
        assert sf.samples["ts"].to_list() == [
            utc(2025, 7, 26, 23, 32, 9),
            utc(2025, 7, 26, 23, 32, 9),
            utc(2025, 7, 26, 23, 32, 9, 100000),
            utc(2025, 7, 26, 23, 32, 9, 100000),
            utc(2025, 7, 26, 23, 32, 9, 200000),
        ]
        assert sf.samples["power_w"].to_list()[2:] == [412.5, 410.25, 415.0]
        assert sf.quality.rows_read == 7 and sf.quality.n_excluded == 2
    # a zone-less logger time is local: --utc-offset applies
    naive = "\n".join(s.replace("Z ", " ", 1) for s in iso_lines)
    c = dmon.read_dcgmi(write(tmp_path, "c.log", naive), ReadOptions(utc_offset_s=3600))
    assert c.samples["ts"][0] == utc(2025, 7, 26, 22, 32, 9)


def test_dcgmi_instant_power_field_and_missing_power(tmp_path):
    text = "#Entity   POWINST           GPUTL\nID        W\nGPU 3     701.5             99\n"
    sf = dmon.read_dcgmi(write(tmp_path, "p.log", text), ReadOptions(start="2025-01-01T00:00:00", interval_s=1))
    assert rows(sf, "gpu", "power_w", "gpu_util") == [("p/3", 701.5, 99.0)]
    assert sf.power.kind == "instant" and "157" in sf.power.field
    with pytest.raises(InputError, match="no power field.*-e 155"):
        dmon.read_dcgmi(write(tmp_path, "q.log", "#Entity SMCLK\nID\nGPU 0 1980\n"), ReadOptions())


# ---------------------------------------------------------------------------------------
# dcgm-exporter (Prometheus text)
# ---------------------------------------------------------------------------------------


def test_prometheus_scrapes_with_timestamps(tmp_path):
    path = write(tmp_path, "scrape.prom", PROM)
    sf = prometheus.read(path, ReadOptions())
    check_frame(sf)
    t0 = utc(2024, 6, 21, 20, 0, 0)
    assert rows(sf, "gpu", "ts", "power_w", "sm_clock_mhz", "energy_j", "line") == [
        ("node1/0", t0, pytest.approx(266.17), 1980.0, 5_000_000.0, 3),
        ("node1/1", t0, None, 1980.0, None, 4),  # int64 blank power; 'hostname' label
        # the row takes its power sample's time (1 s + 5 ms)
        ("node1/0", t0 + timedelta(seconds=1, milliseconds=5), 512.5, 1410.0, None, 15),
        ("node1/1", t0 + timedelta(seconds=1), None, None, None, 16),  # fp64 / int32 blanks
    ]
    # one row per (gpu, scrape) + one truncated line
    assert sf.quality.rows_read == 5
    assert dict(sf.quality.rows_excluded) == {"unparsable_row": 1}
    assert sf.quality.examples["unparsable_row"] == [f"{path}:21"]
    assert sf.gpu_models == {"node1/0": "NVIDIA H100 80GB HBM3", "node1/1": "NVIDIA H100 80GB HBM3"}
    # DCGM 155 is NVML power usage: a 1 s average on H100
    assert (sf.power.kind, sf.power.window_s) == ("average", 1.0)


def test_prometheus_scrape_ts_comments_and_default_host(tmp_path):
    text = (
        "# scrape_ts=1719000000.5\n"
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a"} 100.0\n'
        'DCGM_FI_DEV_POWER_USAGE{UUID="GPU-b"} 200.0\n'
        "# scrape_ts=2024-06-21T20:00:01.500Z\n"
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a"} 110.0\n'
        'DCGM_FI_DEV_POWER_USAGE{UUID="GPU-b"} NaN\n'
    )
    sf = prometheus.read(write(tmp_path, "rack3-node9.txt", text), ReadOptions())
    check_frame(sf)
    t = utc(2024, 6, 21, 20, 0, 0, 500000)
    assert rows(sf, "gpu", "ts", "power_w") == [
        ("rack3-node9/0", t, 100.0),
        ("rack3-node9/GPU-b", t, 200.0),  # no gpu label: the UUID
        ("rack3-node9/0", t + timedelta(seconds=1), 110.0),
        ("rack3-node9/GPU-b", t + timedelta(seconds=1), None),
    ]
    # no model known: DCGM 155 read as instantaneous
    assert sf.power.kind == "instant"


def test_prometheus_untimed_scrapes(tmp_path):
    scrape = (
        "# HELP DCGM_FI_DEV_GPU_TEMP x\n# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",Hostname="n"} 40\nDCGM_FI_DEV_GPU_TEMP{gpu="1",Hostname="n"} 41\n'
        "# HELP DCGM_FI_DEV_POWER_USAGE x\n# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n"} {p0}\nDCGM_FI_DEV_POWER_USAGE{gpu="1",Hostname="n"} {p1}\n'
    )
    text = "".join(scrape.replace("{p0}", str(100 + k)).replace("{p1}", str(200 + k)) for k in range(3))
    path = write(tmp_path, "u.prom", text)
    with pytest.raises(InputError, match=r"u\.prom: .*--start.*--interval"):
        prometheus.read(path, ReadOptions())
    sf = prometheus.read(path, ReadOptions(start="2024-06-21T20:00:00Z", interval_s=15))
    check_frame(sf)
    t0 = utc(2024, 6, 21, 20)
    assert rows(sf, "gpu", "ts", "power_w", "temp_c") == [
        (g, t0 + timedelta(seconds=15 * k), float(100 * (g == "n/0") + 200 * (g == "n/1") + k), 40.0 + (g == "n/1"))
        for k in range(3)
        for g in ("n/0", "n/1")
    ]
    assert sf.quality.rows_read == 6 and sf.quality.n_excluded == 0


def test_prometheus_power_filtered_log_is_one_scrape_per_line(tmp_path):
    """A log grepped down to the power metric: repeated samples are successive scrapes."""
    text = "".join(f'DCGM_FI_DEV_POWER_USAGE{{gpu="0"}} {100 + k}\n' for k in range(4))
    sf = prometheus.read(write(tmp_path, "g.prom", text), ReadOptions(start="2024-01-01", interval_s=1))
    assert sf.samples["power_w"].to_list() == [100.0, 101.0, 102.0, 103.0]
    assert sf.samples["ts"].diff().drop_nulls().to_list() == [timedelta(seconds=1)] * 3


def test_prometheus_garbage_lines_are_counted(tmp_path):
    text = (
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n"} 100 1719000000000\n'
        "!!! not a metric line\n"
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n"} abc 1719000001000\n'
        'DCGM_FI_DEV_POWER_USAGE{Hostname="n"} 5 1719000001000\n'
        "{broken\n"
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n"} 1e21 1719000002000\n'
    )
    path = write(tmp_path, "x.prom", text)
    sf = prometheus.read(path, ReadOptions())
    check_frame(sf)
    assert rows(sf, "power_w", "line") == [(100.0, 1), (None, 6)]
    assert sf.quality.rows_read == 6
    assert sf.quality.examples["unparsable_row"] == [f"{path}:{n}" for n in (2, 3, 4, 5)]
    with pytest.raises(InputError, match="no power metric"):
        prometheus.read(write(tmp_path, "t.prom", 'DCGM_FI_DEV_GPU_TEMP{gpu="0"} 40\n'), ReadOptions())


def test_dcgm_blank_sentinels():
    vals = pl.Series([266.0, 9223372036854775794.0, 140737488355328.0, 140737488355333.0, 1e20,
                      2147483632.0, 2147483647.0, 2147483631.0, 5_000_000_000.0])
    def run(ftype):
        return pl.select(prometheus.dcgm_blank_to_null(pl.lit(vals), ftype)).to_series().to_list()
    assert run("double") == [266.0, None, None, None, None, 2147483632.0, 2147483647.0, 2147483631.0, 5e9]
    assert run("int32") == [266.0, None, 140737488355328.0, 140737488355333.0, None, None, None, 2147483631.0, 5e9]
    # the energy counter legitimately passes 2**31 mJ
    assert run("int64")[-4:] == [2147483632.0, 2147483647.0, 2147483631.0, 5e9]


# ---------------------------------------------------------------------------------------
# Zeus JSON
# ---------------------------------------------------------------------------------------


def test_zeus_timeline(tmp_path):
    path = write(tmp_path, "run42.json", ZEUS)
    sf = zeus.read(path, ReadOptions())
    check_frame(sf)
    assert rows(sf) == [
        ("run42/0", utc(2024, 6, 21, 20), 70.5, 1),
        ("run42/0", utc(2024, 6, 21, 20, 0, 0, 250000), 412.0, 2),
        ("run42/0", utc(2024, 6, 21, 20, 0, 1, 500000), None, 3),
        ("run42/1", utc(2024, 6, 21, 20), 68.0, 4),
        ("run42/1", utc(2024, 6, 21, 20, 0, 0, 750000), 400.125, 6),
    ]
    assert sf.quality.rows_read == 6
    assert sf.quality.examples["unparsable_row"] == [f"{path}:5"]
    assert (sf.power.kind, sf.power.field) == ("instant", "zeus")
    assert any("step function" in n for n in sf.notes)


def test_zeus_wrappers(tmp_path):
    inner = {"0": [[1719000000.0, 70.0], [1719000000.5, 300.0]]}
    doc = {"device_instant": inner, "device_average": {"0": [[1719000000.0, 1.0]]}, "memory_average": {}}
    sf = zeus.read(write(tmp_path, "z.json", json.dumps(doc)), ReadOptions(host="h"))
    assert rows(sf, "gpu", "power_w") == [("h/0", 70.0), ("h/0", 300.0)]
    assert sf.power.kind == "instant"
    assert any("device_average" in n for n in sf.notes)
    avg = zeus.read(write(tmp_path, "a.json", json.dumps({"device_average": inner})), ReadOptions(host="h"))
    assert avg.power.kind == "average"
    gp = zeus.read(
        write(tmp_path, "g.json", '{"gpu_power": {"2": [[1719000000, 5], [1719000000.1, 6]]}}'), ReadOptions(host="h")
    )
    # decimal seconds are read exactly: .1 s is 100 ms, not 99.999905 ms
    assert rows(gp, "gpu", "ts", "power_w") == [
        ("h/2", utc(2024, 6, 21, 20), 5.0),
        ("h/2", utc(2024, 6, 21, 20, 0, 0, 100000), 6.0),
    ]
    assert gp.samples["ts"].dt.epoch("ns")[1] == 1_719_000_000_100_000_000
    with pytest.raises(InputError, match="no GPU power timeline"):
        zeus.read(write(tmp_path, "b.json", '{"foo": {"bar": 1}}'), ReadOptions())
    with pytest.raises(InputError, match=r"c\.json:2: invalid JSON"):
        zeus.read(write(tmp_path, "c.json", '{"0": [[1, 2],\n  [3, ]]}'), ReadOptions())


# ---------------------------------------------------------------------------------------
# Generic CSV / Parquet / Arrow
# ---------------------------------------------------------------------------------------


def test_generic_csv_epoch_ms_and_milliwatts(tmp_path):
    path = write(tmp_path, "g.csv", GENERIC_CSV)
    sf = generic.read_csv(path, ReadOptions())
    check_frame(sf)
    assert rows(sf, "gpu", "ts", "power_w", "sm_clock_mhz", "line") == [
        ("nodeA/0", utc(2024, 6, 21, 20), pytest.approx(266.17), 1980.0, 2),
        ("nodeA/1", utc(2024, 6, 21, 20, 0, 0, 100000), None, 1980.0, 3),
        ("nodeA/1", utc(2024, 6, 21, 20, 0, 0, 300000), 300.0, None, 5),
    ]
    assert sf.quality.rows_read == 4
    assert sf.quality.examples["unparsable_row"] == [f"{path}:4"]
    assert sf.quality.repairs == {"null_field": 1}
    assert any("mW" in n for n in sf.notes)


def test_generic_csv_iso_times(tmp_path):
    text = (
        "time;power;gpu_uuid\n"
        "2025-07-26T23:32:09.703Z;300;GPU-1\n"
        "2025-07-26 23:32:10+02:00;301;GPU-1\n"
        "2025-07-26T23:32:11.5;302;GPU-1\n"
        "not a time;303;GPU-1\n"
        "\n"
    )
    path = write(tmp_path, "iso.csv", text)
    sf = generic.read_csv(path, ReadOptions(utc_offset_s=-25200))
    check_frame(sf)
    assert rows(sf, "gpu", "ts", "power_w") == [
        ("GPU-1", utc(2025, 7, 26, 23, 32, 9, 703000), 300.0),
        ("GPU-1", utc(2025, 7, 26, 21, 32, 10), 301.0),
        ("GPU-1", utc(2025, 7, 27, 6, 32, 11, 500000), 302.0),  # naive: local UTC-7
    ]
    assert sf.quality.rows_read == 4 and sf.quality.examples["unparsable_row"] == [f"{path}:5"]
    warned = generic.read_csv(path, ReadOptions())
    assert warned.samples["ts"][2] == utc(2025, 7, 26, 23, 32, 11, 500000)
    assert any("UTC" in w for w in warned.quality.warnings)


def test_generic_csv_dst_with_tz(tmp_path):
    text = "ts,power_w\n" + "".join(
        f"{t},{p}\n"
        for t, p in [
            ("2024-11-03 01:30:00", 1),  # first pass (EDT)
            ("2024-11-03 01:59:59", 2),
            ("2024-11-03 01:00:00", 3),  # clocks went back: second pass (EST)
            ("2024-11-03 01:30:00", 4),
            ("2024-03-10 02:30:00", 5),  # does not exist
        ]
    )
    path = write(tmp_path, "dst.csv", text)
    sf = generic.read_csv(path, ReadOptions(tz="America/New_York"))
    check_frame(sf)
    assert rows(sf, "ts", "power_w") == [
        (utc(2024, 11, 3, 5, 30), 1.0),
        (utc(2024, 11, 3, 5, 59, 59), 2.0),
        (utc(2024, 11, 3, 6, 0), 3.0),
        (utc(2024, 11, 3, 6, 30), 4.0),
    ]
    assert sf.quality.repairs == {"dst_ambiguous": 4}
    assert dict(sf.quality.rows_excluded) == {"nonexistent_local_time": 1}
    assert sf.quality.examples["nonexistent_local_time"] == [f"{path}:6"]
    with pytest.raises(ParameterError):
        generic.read_csv(path, ReadOptions(tz="America/New_York", utc_offset_s=0))


def test_generic_csv_forced_on_nvidia_smi_names_and_value_units(tmp_path):
    """--format generic_csv on an nvidia-smi-like table: bracket units and '208.36 W' values."""
    text = (
        "timestamp; index; power.draw [W]; utilization.gpu [%]\n"
        "2025/07/26 23:32:09.703; 0; 208.36 W; 87 %\n"
        "2025/07/26 23:32:09.803; 0; 0.21 kW; 88 %\n"
        "2025/07/26 23:32:09.903; 0; 211500 mW; 88\n"
        "2025/07/26 23:32:10.003; 0; 12 %; 88\n"
    )
    path = write(tmp_path, "semi.csv", text)
    sf = generic.read_csv(path, ReadOptions(utc_offset_s=0))
    check_frame(sf)
    assert rows(sf, "gpu", "ts", "power_w", "gpu_util") == [
        ("semi/0", utc(2025, 7, 26, 23, 32, 9, 703000), pytest.approx(208.36), 87.0),
        ("semi/0", utc(2025, 7, 26, 23, 32, 9, 803000), pytest.approx(210.0), 88.0),
        ("semi/0", utc(2025, 7, 26, 23, 32, 9, 903000), pytest.approx(211.5), 88.0),
    ]
    assert sf.quality.examples["unparsable_row"] == [f"{path}:5"]  # a power value in %
    # the bracket unit of the header scales unit-less values
    mw = generic.read_csv(write(tmp_path, "mw.csv", "ts,power [mW]\n1719000000,250000\n"), ReadOptions())
    assert mw.samples["power_w"].to_list() == [250.0]
    # nvidia-smi names do not make a file look like a generic CSV
    assert not generic.sniff_csv(text, path)


def test_generic_csv_column_mapping_and_units(tmp_path):
    text = "when,draw,node,card\n1719000000,0.3,n1,0\n1719000001,0.31,n1,1\n"
    path = write(tmp_path, "m.csv", text)
    with pytest.raises(InputError, match="no time column"):
        generic.read_csv(path, ReadOptions())
    opts = ReadOptions(columns={"ts": "when", "power_w": "draw", "host": "node", "gpu": "card"}, power_unit="kW")
    sf = generic.read_csv(path, opts)
    assert rows(sf, "gpu", "ts", "power_w") == [
        ("n1/0", utc(2024, 6, 21, 20), 300.0),
        ("n1/1", utc(2024, 6, 21, 20, 0, 1), pytest.approx(310.0)),
    ]
    with pytest.raises(InputError, match="'nope'.*not in the file"):
        generic.read_csv(path, ReadOptions(columns={"ts": "nope", "power_w": "draw"}))


@pytest.mark.parametrize(
    ("values", "unit"),
    [([1.7e9, 1.7e9 + 0.5], "s"), ([1.7e12, 1.7e12 + 500], "ms"), ([1.7e15, 1.7e15 + 5e5], "us"), ([1.7e18, 1.7e18 + 5e8], "ns")],
)
def test_epoch_unit_inferred_from_magnitude(values, unit):
    assert generic.infer_epoch_unit(pl.Series(values)) == unit
    ts = generic.epoch_to_utc(pl.Series(values), unit, "x")
    assert ts.to_list() == [
        datetime.fromtimestamp(1.7e9, UTC),
        datetime.fromtimestamp(1.7e9, UTC) + timedelta(milliseconds=500),
    ]


def test_generic_csv_compressed(tmp_path):
    plain = generic.read_csv(write(tmp_path, "g.csv", GENERIC_CSV), ReadOptions(host="h"))
    gz = write(tmp_path, "g.csv.gz", gzip.compress(GENERIC_CSV.encode()))
    zst = write(tmp_path, "g.csv.zst", zstandard.ZstdCompressor().compress(GENERIC_CSV.encode()))
    for path in (gz, zst):
        sf = generic.read_csv(path, ReadOptions(host="h"))
        assert sf.samples.equals(plain.samples)
        assert detect_format(path).name == "generic_csv"
    # compressed text formats too
    dm = write(tmp_path, "d.dmon.zst", zstandard.ZstdCompressor().compress(NVSMI_DMON_DT.encode()))
    assert dmon.read_nvsmi(dm, ReadOptions(utc_offset_s=0)).samples.height == 5


def test_crlf_line_endings(tmp_path):
    cases = [
        (dmon.read_nvsmi, NVSMI_DMON_DT, ReadOptions(utc_offset_s=0, host="h")),
        (dmon.read_dcgmi, DCGMI, ReadOptions(start="2025-01-01", interval_s=1, host="h")),
        (prometheus.read, PROM, ReadOptions(host="h")),
        (generic.read_csv, GENERIC_CSV, ReadOptions(host="h")),
    ]
    for read, text, opts in cases:
        lf = read(write(tmp_path, "lf.txt", text), opts)
        crlf = read(write(tmp_path, "crlf.txt", text.replace("\n", "\r\n")), opts)
        assert crlf.samples.equals(lf.samples), read
        assert crlf.quality.to_dict()["rows_excluded"] == lf.quality.to_dict()["rows_excluded"]


def test_generic_csv_relative_times_warn(tmp_path):
    sf = generic.read_csv(write(tmp_path, "rel.csv", "time_s,power_w\n0.0,100\n0.1,101\n"), ReadOptions())
    assert sf.samples["ts"].to_list() == [utc(1970, 1, 1), utc(1970, 1, 1, 0, 0, 0, 100000)]
    assert any("relative" in w for w in sf.quality.warnings)


def test_generic_csv_ragged_lines(tmp_path):
    text = "ts,gpu,power_w\n2025-07-26T23:32:09Z,0,301\n2025-07-26T23:32:10Z,0,302,9\n2025-07-26T23:32:11Z\n"
    path = write(tmp_path, "r.csv", text)
    sf = generic.read_csv(path, ReadOptions())
    assert rows(sf, "power_w", "line") == [(301.0, 2)]
    assert sf.quality.examples["unparsable_row"] == [f"{path}:3", f"{path}:4"]


def canonical_frame(n: int = 6) -> pl.DataFrame:
    t0 = utc(2025, 7, 26, 23, 32, 9)
    return pl.DataFrame(
        {
            "gpu": [f"node1/{i % 2}" for i in range(n)],
            "ts": pl.Series([t0 + timedelta(milliseconds=100 * (i // 2)) for i in range(n)]).cast(TS_DTYPE),
            "power_w": pl.Series([300.0 + i for i in range(n)], dtype=pl.Float64),
            "temp_c": pl.Series([40 + i for i in range(n)], dtype=pl.Int64),
        }
    )


def test_parquet_canonical_fast_path(tmp_path):
    df = canonical_frame()
    path = tmp_path / "canon.parquet"
    df.write_parquet(path)
    sf = generic.read_parquet(path, ReadOptions())
    check_frame(sf)
    assert sf.notes == ["canonical columns read directly"]
    assert sf.samples.columns == ["gpu", "ts", "power_w", "temp_c", "line"]
    assert sf.samples["temp_c"].dtype == pl.Float32
    assert sf.samples.drop("line").equals(df.with_columns(pl.col("power_w", "temp_c").cast(pl.Float32)))
    assert sf.samples["line"].to_list() == [1, 2, 3, 4, 5, 6]
    assert sf.quality.rows_read == 6 and sf.quality.n_excluded == 0
    # a canonical file that keeps its source lines keeps them
    df.with_columns(line=pl.Series([10, 11, 12, 13, 14, 15], dtype=pl.UInt32)).write_parquet(path)
    assert generic.read_parquet(path, ReadOptions()).samples["line"].to_list() == [10, 11, 12, 13, 14, 15]
    # Arrow IPC
    df.write_ipc(tmp_path / "canon.arrow")
    sa = generic.read_arrow(tmp_path / "canon.arrow", ReadOptions())
    assert sa.samples.equals(sf.samples.with_columns(line=pl.Series([1, 2, 3, 4, 5, 6], dtype=pl.UInt32)))
    assert detect_format(path).name == "parquet" and detect_format(tmp_path / "canon.arrow").name == "arrow"


def test_parquet_with_mapping_epoch_and_kilowatts(tmp_path):
    path = tmp_path / "raw.parquet"
    pl.DataFrame(
        {"t_ns": [1_719_000_000_000_000_000, 1_719_000_000_100_000_000], "pwr_kw": [0.25, None], "device": [0, 1]}
    ).write_parquet(path)
    sf = generic.read_parquet(path, ReadOptions(columns={"ts": "t_ns", "power_w": "pwr_kw"}, host="h"))
    check_frame(sf)
    assert rows(sf) == [("h/0", utc(2024, 6, 21, 20), 250.0, 1), ("h/1", utc(2024, 6, 21, 20, 0, 0, 100000), None, 2)]


def test_truncated_or_corrupt_binary_files(tmp_path):
    good = tmp_path / "good.parquet"
    canonical_frame(200).write_parquet(good)
    data = good.read_bytes()
    bad = write(tmp_path, "cut.parquet", data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.parquet: truncated or corrupt Parquet file"):
        generic.read_parquet(bad, ReadOptions())
    canonical_frame(200).write_ipc(tmp_path / "good.arrow")
    arrow = (tmp_path / "good.arrow").read_bytes()
    cut = write(tmp_path, "cut.arrow", arrow[: len(arrow) // 2])
    with pytest.raises(InputError, match=r"cut\.arrow: truncated or corrupt Arrow IPC file"):
        generic.read_arrow(cut, ReadOptions())


# ---------------------------------------------------------------------------------------
# Time parsing against Python's datetime (property)
# ---------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    when=st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2200, 1, 1)),
    offset_min=st.integers(-12 * 60, 14 * 60),
    digits=st.integers(0, 9),
    sep=st.sampled_from(["T", " "]),
)
def test_parse_time_strings_matches_python(when, offset_min, digits, sep):
    ns = when.microsecond * 1000 + 7 * (digits > 6)
    frac = f"{ns:09d}"[:digits]
    base = when.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (f".{frac}" if digits else "")
    sign = "+" if offset_min >= 0 else "-"
    zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    quality = DataQuality()
    ts, nonexistent = generic.parse_time_strings(
        pl.Series([base + zone, base + "Z"]), ReadOptions(), quality, "x", pl.Series([1, 2])
    )
    local = when.replace(microsecond=0, tzinfo=UTC)
    frac_ns = int(frac.ljust(9, "0")) if digits else 0
    expect_z = int(local.timestamp()) * 10**9 + frac_ns
    expect_off = expect_z - offset_min * 60 * 10**9
    assert ts.dt.epoch("ns").to_list() == [expect_off, expect_z]
    assert not nonexistent.any() and quality.warnings == []


# ---------------------------------------------------------------------------------------
# Detection by content
# ---------------------------------------------------------------------------------------

TEXT_EXAMPLES = {
    "nvsmi_dmon": NVSMI_DMON_DT,
    "dcgmi_dmon": DCGMI,
    "dcgm_exporter": PROM,
    "zeus_json": ZEUS,
    "generic_csv": GENERIC_CSV,
}
SNIFFERS = {
    "nvsmi_dmon": dmon.sniff_nvsmi,
    "dcgmi_dmon": dmon.sniff_dcgmi,
    "dcgm_exporter": prometheus.sniff,
    "zeus_json": zeus.sniff,
    "generic_csv": generic.sniff_csv,
}


@pytest.mark.parametrize("sniffer", list(SNIFFERS))
def test_each_sniffer_accepts_only_its_format(sniffer):
    sniff = SNIFFERS[sniffer]
    for fmt, text in {**TEXT_EXAMPLES, "nvsmi_csv": NVSMI_CSV}.items():
        assert sniff(text, Path("x")) is (fmt == sniffer), (sniffer, fmt)
    assert generic.sniff_parquet("PAR1", Path("x")) is False and generic.sniff_arrow("ARROW1", Path("x")) is False


@pytest.mark.skipif(importlib.util.find_spec("tracekit.io.nvsmi") is None, reason="nvsmi reader not present yet")
@pytest.mark.parametrize("fmt", list(TEXT_EXAMPLES))
def test_detect_format_by_content(fmt, tmp_path):
    path = write(tmp_path, "trace.log", TEXT_EXAMPLES[fmt])  # the name says nothing
    assert detect_format(path).name == fmt
