"""Render samples in the raw formats users hold, so readers are exercised end to end.

Formats (DESIGN.md, "Inputs real users hold"):

``nvsmi_csv``
    ``nvidia-smi --query-gpu=timestamp,index,uuid,power.draw,clocks.sm,utilization.gpu
    --format=csv -lms N``: header ``power.draw [W]``, values with units (``208.36 W``),
    local-time ``YYYY/MM/DD HH:MM:SS.fff`` stamps without zone, one row per GPU per sweep.
``nvsmi_csv_noindex``
    The same logger without ``index``/``uuid`` (``timestamp, power.draw [W],
    utilization.gpu [%], memory.used [MiB]``): GPUs interleaved one row each per sweep,
    identity only from the position in the sweep.
``dcgmi_dmon``
    ``dcgmi dmon -e 155,100``: ``#Entity POWER SMCLK`` header and ``ID W MHZ`` units
    line, ``GPU 0`` entity ids, header repeated every ``header_every`` rows, every
    line prefixed by a logger's ISO time stamp (local time with its UTC offset).
``dcgm_exporter``
    Prometheus text scrapes: ``# HELP``/``# TYPE`` and
    ``DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-...",Hostname="node00",modelName="NVIDIA
    H100 80GB HBM3"} 266.170 <ms epoch>`` (and ``DCGM_FI_DEV_SM_CLOCK``), one block per
    host and scrape time.
``zeus_json``
    Zeus / ML.ENERGY timeline ``{"0": [[unix_ts, watts], ...]}``, de-duplicated (a
    point only where the value changes), keyed by GPU index on the host.

Per-host formats (all but ``dcgm_exporter``) hold one host: pass ``host`` when the
samples span several.  A path ending in ``.gz`` or ``.zst`` is compressed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from tracekit.errors import ParameterError, SchemaError
from tracekit.schema import host_from_gpu
from tracekit.specs import find_gpu_spec
from tracekit.synth._common import SynthResult

RawFormat = Literal["nvsmi_csv", "nvsmi_csv_noindex", "dcgmi_dmon", "dcgm_exporter", "zeus_json"]
RAW_FORMATS: tuple[str, ...] = ("nvsmi_csv", "nvsmi_csv_noindex", "dcgmi_dmon", "dcgm_exporter", "zeus_json")
_PER_HOST = {"nvsmi_csv", "nvsmi_csv_noindex", "dcgmi_dmon", "zeus_json"}

#: Names the driver reports (nvidia-smi ``name``, dcgm-exporter ``modelName``).
DRIVER_NAMES = {
    "H100-SXM": "NVIDIA H100 80GB HBM3",
    "H100-PCIe": "NVIDIA H100 PCIe",
    "H200": "NVIDIA H200",
    "A100-SXM-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-SXM-80GB": "NVIDIA A100-SXM4-80GB",
    "A100-PCIe-80GB": "NVIDIA A100 80GB PCIe",
    "B200": "NVIDIA B200",
    "GB200": "NVIDIA GB200",
    "L40S": "NVIDIA L40S",
    "MI300X": "AMD Instinct MI300X",
    "V100-SXM2": "Tesla V100-SXM2-32GB",
    "TitanX": "NVIDIA TITAN X (Pascal)",
}

#: Memory used (MiB) written in nvidia-smi files (a loaded model; constant).
_MEMORY_USED_MIB = 61234


def gpu_uuid(gpu: str) -> str:
    """A stable fake NVML UUID for a GPU id (``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``)."""
    h = hashlib.sha1(gpu.encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _prepare(source, gpu_model: str | None) -> tuple[pl.DataFrame, str]:
    """Samples with host and per-host index columns, and the model name."""
    topology = None
    if isinstance(source, SynthResult):
        if source.samples is None:
            raise ParameterError("write_raw needs samples in memory: generate with out_dir=None")
        df, topology = source.samples, source.topology
    elif isinstance(source, pl.DataFrame):
        df = source
    else:
        raise ParameterError(f"write_raw takes a SynthResult or a Polars DataFrame, not {type(source).__name__}")
    missing = [c for c in ("gpu", "ts", "power_w") if c not in df.columns]
    if missing:
        raise SchemaError(f"write_raw: samples lack column(s) {missing}; have {df.columns}")
    if gpu_model is None and topology is not None and topology.height:
        gpu_model = topology["model"][0]
    if gpu_model is None:
        raise ParameterError("write_raw: pass gpu_model= for samples without a topology")
    if find_gpu_spec(gpu_model) is None:
        raise ParameterError(f"write_raw: unknown GPU model {gpu_model!r}")
    cols = [pl.col("gpu").cast(pl.String), pl.col("ts").cast(pl.Datetime("ns", "UTC")), pl.col("power_w").cast(pl.Float64)]
    if "sm_clock_mhz" in df.columns:
        cols.append(pl.col("sm_clock_mhz").cast(pl.Float64))
    if topology is not None:
        hosts = topology.select("gpu", "host")
        out = df.select(cols).join(hosts, on="gpu", how="left", maintain_order="left")
        out = out.with_columns(pl.coalesce("host", host_from_gpu(pl.col("gpu"))).alias("host"))
    else:
        out = df.select(cols).with_columns(host_from_gpu(pl.col("gpu")).alias("host"))
    # index on the host: the numeric suffix of the id, else the rank within the host
    suffix = pl.col("gpu").str.extract(r"/(\d+)$", 1).cast(pl.Int64, strict=False)
    rank = pl.col("gpu").rank("dense").over("host").cast(pl.Int64) - 1
    out = out.with_columns(pl.coalesce(suffix, rank).alias("index"))
    return out, gpu_model


def _one_host(df: pl.DataFrame, host: str | None, fmt: str) -> pl.DataFrame:
    hosts = df["host"].unique(maintain_order=True).to_list()
    if host is None:
        if len(hosts) > 1:
            shown = ", ".join(hosts[:5]) + (" ..." if len(hosts) > 5 else "")
            raise ParameterError(f"{fmt} logs one host; the samples hold {len(hosts)} ({shown}): pass host=")
        return df
    if host not in hosts:
        raise ParameterError(f"host {host!r} is not in the samples (have {', '.join(hosts[:5])})")
    return df.filter(pl.col("host") == host)


def _derived(df: pl.DataFrame, model: str) -> pl.DataFrame:
    """SM clock (from the data or derived from power) and utilization columns."""
    spec = find_gpu_spec(model)
    busy = pl.col("power_w") > spec.idle_w + 0.05 * (spec.tdp_w - spec.idle_w)
    idle_clock = float(round(0.175 * spec.max_sm_mhz))
    derived_clock = pl.when(busy).then(pl.lit(spec.max_sm_mhz)).otherwise(pl.lit(idle_clock))
    clock = pl.coalesce(pl.col("sm_clock_mhz"), derived_clock) if "sm_clock_mhz" in df.columns else derived_clock
    util = ((pl.col("power_w") - spec.idle_w) / (spec.tdp_w - spec.idle_w) * 100.0).clip(0.0, 100.0).round(0)
    return df.with_columns(clock.alias("clock"), util.cast(pl.Int64).alias("util"))


def _sweeps(df: pl.DataFrame, sweep_skew_ms: float) -> pl.DataFrame:
    """Rows ordered sweep by sweep (time, then index), with ``pos`` in the sweep and the
    logged time ``log_ts`` (``ts + pos * sweep_skew_ms``)."""
    out = df.sort("ts", "index").with_columns(pl.col("ts").rank("ordinal").over("ts").cast(pl.Int64).alias("pos") - 1)
    skew_ns = int(round(sweep_skew_ms * 1e6))
    return out.with_columns((pl.col("ts") + pl.duration(nanoseconds=pl.col("pos") * skew_ns)).alias("log_ts"))


def _local(expr: pl.Expr, utc_offset_s: float) -> pl.Expr:
    return (expr + pl.duration(nanoseconds=int(round(utc_offset_s * 1e9)))).dt.replace_time_zone(None)


def _offset_suffix(utc_offset_s: float) -> str:
    sign = "-" if utc_offset_s < 0 else "+"
    minutes = int(round(abs(utc_offset_s) / 60))
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _nvsmi(df: pl.DataFrame, with_index: bool, utc_offset_s: float, sweep_skew_ms: float) -> str:
    df = _sweeps(df, sweep_skew_ms)
    stamps = df.select(_local(pl.col("log_ts"), utc_offset_s).dt.strftime("%Y/%m/%d %H:%M:%S%.3f"))[:, 0].to_list()
    power = df["power_w"].to_list()
    util = df["util"].to_list()
    if with_index:
        lines = ["timestamp, index, uuid, power.draw [W], clocks.sm [MHz], utilization.gpu [%]"]
        uuids = [gpu_uuid(g) for g in df["gpu"].to_list()]
        for s, i, u, p, c, ut in zip(stamps, df["index"].to_list(), uuids, power, df["clock"].to_list(), util):
            lines.append(f"{s}, {i}, {u}, {p:.2f} W, {int(c)} MHz, {ut} %")
    else:
        lines = ["timestamp, power.draw [W], utilization.gpu [%], memory.used [MiB]"]
        for s, p, ut in zip(stamps, power, util):
            lines.append(f"{s}, {p:.2f} W, {ut} %, {_MEMORY_USED_MIB} MiB")
    return "\n".join(lines) + "\n"


def _dcgmi(df: pl.DataFrame, utc_offset_s: float, header_every: int) -> str:
    df = df.sort("ts", "index")
    suffix = _offset_suffix(utc_offset_s)
    stamps = df.select(_local(pl.col("ts"), utc_offset_s).dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"))[:, 0].to_list()
    lines = []
    for n, (s, i, p, c) in enumerate(zip(stamps, df["index"].to_list(), df["power_w"].to_list(), df["clock"].to_list())):
        prefix = f"{s}{suffix} "
        if n % header_every == 0:
            lines.append(f"{prefix}#Entity   POWER              SMCLK")
            lines.append(f"{prefix}ID        W                  MHZ")
        lines.append(f"{prefix}GPU {i:<5d} {p:<18.3f} {int(c)}")
    return "\n".join(lines) + "\n"


def _exporter(df: pl.DataFrame, model: str) -> str:
    name = DRIVER_NAMES.get(find_gpu_spec(model).name, model)
    df = df.sort("ts", "host", "index").with_columns((pl.col("ts").dt.epoch("ns") // 1_000_000).alias("ms"))
    labels = {
        g: f'gpu="{i}",UUID="{gpu_uuid(g)}",Hostname="{h}",modelName="{name}"'
        for g, i, h in df.select("gpu", "index", "host").unique().iter_rows()
    }
    out = []
    keys = df.select((pl.col("ts").dt.epoch("ns").cast(pl.String) + "|" + pl.col("host")).alias("k"))["k"].to_list()
    gpus = df["gpu"].to_list()
    ms = df["ms"].to_list()
    power = df["power_w"].to_list()
    clock = df["clock"].to_list()
    a = 0
    n = len(keys)
    while a < n:
        b = a
        while b < n and keys[b] == keys[a]:
            b += 1
        out.append("# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).")
        out.append("# TYPE DCGM_FI_DEV_SM_CLOCK gauge")
        out.extend(f"DCGM_FI_DEV_SM_CLOCK{{{labels[gpus[j]]}}} {int(clock[j])} {ms[j]}" for j in range(a, b))
        out.append("# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).")
        out.append("# TYPE DCGM_FI_DEV_POWER_USAGE gauge")
        out.extend(f"DCGM_FI_DEV_POWER_USAGE{{{labels[gpus[j]]}}} {power[j]:.3f} {ms[j]}" for j in range(a, b))
        a = b
    return "\n".join(out) + "\n"


def _zeus(df: pl.DataFrame) -> str:
    timeline: dict[str, list] = {}
    for (idx,), part in df.sort("index", "ts").group_by("index", maintain_order=True):
        ts_s = (part["ts"].dt.epoch("ns").to_numpy() / 1e9).round(6)
        watts = part["power_w"].to_numpy().round(3)
        keep = np.ones(watts.shape[0], dtype=bool)
        keep[1:] = watts[1:] != watts[:-1]
        timeline[str(idx)] = [[float(t), float(w)] for t, w in zip(ts_s[keep], watts[keep])]
    return json.dumps(timeline, separators=(",", ":")) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    data = text.encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_raw(
    source,
    out_path,
    fmt: RawFormat,
    *,
    host: str | None = None,
    gpu_model: str | None = None,
    utc_offset_s: float = 0.0,
    sweep_skew_ms: float = 0.0,
    header_every: int = 40,
) -> Path:
    """Write samples as one raw telemetry file.

    Parameters
    ----------
    source
        A :class:`~tracekit.synth.SynthResult` generated in memory, or a canonical
        sample frame (gpu, ts, power_w[, sm_clock_mhz]).
    out_path
        File to write (atomically; ``.gz`` / ``.zst`` suffix compresses).
    fmt
        One of :data:`RAW_FORMATS`.
    host
        The host to write, for per-host formats when the samples span several hosts.
    gpu_model
        Model for frames without topology (sets clocks, utilization, ``modelName``).
    utc_offset_s
        Offset of the local wall time written by nvidia-smi and the dcgmi logger
        (``local = UTC + offset``; UTC-7 -> -25200).
    sweep_skew_ms
        nvidia-smi only: the k-th row of a sweep is stamped ``k * sweep_skew_ms`` later
        (real loggers' rows in one sweep differ by a few ms).
    header_every
        dcgmi only: repeat the header every this many data rows.

    Returns
    -------
    Path
        ``out_path``.

    Notes
    -----
    SM clock comes from ``sm_clock_mhz`` when present, else the model's max SM clock
    when power is above idle + 5 % of (TDP - idle) and 17.5 % of it otherwise;
    utilization is (power - idle) / (TDP - idle) in percent.  Power is written with 2
    decimals (nvidia-smi), 3 (dcgmi, dcgm-exporter, Zeus); time stamps to the ms
    (nvidia-smi, dcgmi, dcgm-exporter) or µs (Zeus).
    """
    if fmt not in RAW_FORMATS:
        raise ParameterError(f"unknown raw format {fmt!r}; known: {', '.join(RAW_FORMATS)}")
    utc_offset_s = float(utc_offset_s)
    if sweep_skew_ms < 0:
        raise ParameterError(f"sweep_skew_ms must be >= 0, got {sweep_skew_ms}")
    if int(header_every) < 1:
        raise ParameterError(f"header_every must be >= 1, got {header_every}")
    df, model = _prepare(source, gpu_model)
    if fmt in _PER_HOST:
        df = _one_host(df, host, fmt)
    elif host is not None:
        df = _one_host(df, host, fmt)
    df = _derived(df, model)
    if fmt == "nvsmi_csv":
        text = _nvsmi(df, True, utc_offset_s, sweep_skew_ms)
    elif fmt == "nvsmi_csv_noindex":
        text = _nvsmi(df, False, utc_offset_s, sweep_skew_ms)
    elif fmt == "dcgmi_dmon":
        text = _dcgmi(df, utc_offset_s, int(header_every))
    elif fmt == "dcgm_exporter":
        text = _exporter(df, model)
    else:
        text = _zeus(df)
    path = Path(out_path)
    _write_atomic(path, text)
    return path
