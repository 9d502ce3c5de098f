"""What every reader shares: options, the per-file result, compressed-file opening.

A reader is a module in ``tracekit/io/`` with two functions, registered in
:mod:`tracekit.io.registry`:

``sniff(head: str, path: Path) -> bool``
    True when the first ~64 KiB of decoded text (``head``) look like its format.
    Detection is by content; the file name is only a tie-breaker.
``read(path: Path, opts: ReadOptions) -> SourceFrame``
    Parse the whole file.  Every data row is either in ``SourceFrame.samples``
    (possibly with null power, which :mod:`tracekit.io.clean` then excludes as
    ``missing_value``) or counted in ``SourceFrame.quality.rows_excluded`` (e.g.
    ``unparsable_row`` with ``file:line`` examples).  Raise :class:`InputError`
    naming the file (and line) when the file as a whole cannot be read.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from tracekit.errors import InputError
from tracekit.quality import DataQuality
from tracekit.schema import PowerSemantics

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
ARROW_MAGIC = b"ARROW1"

SNIFF_BYTES = 64 * 1024


@dataclass
class ReadOptions:
    """Options that change how raw files are read.

    Parameters
    ----------
    utc_offset_s
        Offset of local-time timestamps from UTC in seconds (UTC-7 -> -25200).
        Mutually exclusive with ``tz``.
    tz
        IANA zone name of local-time timestamps (handles DST).
    gpus_per_host
        GPUs per sweep in nvidia-smi files without an index column (inferred if None).
    host
        Host name to use where the file has none (default: from the file name).
    gpu_model
        GPU model for the topology (a name in :data:`tracekit.specs.GPU_SPECS`).
    power_unit
        Unit of power values where the source does not say: ``W``, ``mW`` or ``kW``.
    time_unit
        Unit of epoch timestamps in generic files: ``s``, ``ms``, ``us`` or ``ns``.
    columns
        Generic files: mapping canonical name -> source column name.
    strict
        Turn every anomaly into an error.
    format
        Force a format by name (see :data:`tracekit.io.registry.FORMATS`).
    interval_s, start
        For formats that log no timestamps (``dcgmi dmon`` without a logger prefix):
        the sampling interval and the time of the first sweep.
    max_gap_s
        Gaps longer than this are counted (and later treated as missing data).
    max_reorder_s
        Timestamps going backwards by at most this are re-sorted (``non_monotonic_ts``);
        further back is a ``clock_jump`` and the rows are excluded.
    """

    utc_offset_s: float | None = None
    tz: str | None = None
    gpus_per_host: int | None = None
    host: str | None = None
    gpu_model: str | None = None
    power_unit: str | None = None
    time_unit: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    strict: bool = False
    max_gap_s: float = 5.0
    max_reorder_s: float = 5.0
    format: str | None = None
    #: sampling interval for formats that log no timestamps (dcgmi dmon -d N)
    interval_s: float | None = None
    #: start time (ISO 8601, UTC unless it carries an offset) for untimed formats
    start: str | None = None


@dataclass
class SourceFrame:
    """One file read into canonical columns, before cleaning.

    ``samples`` has at least gpu, ts, power_w and ``line`` (source row number); ts may
    be null only for rows the reader could not time (they are then counted as
    unparsable and should not be in ``samples``).
    """

    path: str
    format: str
    samples: pl.DataFrame
    quality: DataQuality
    power: PowerSemantics = field(default_factory=PowerSemantics)
    #: per-GPU model names where the source says (gpu -> driver model name)
    gpu_models: dict[str, str] = field(default_factory=dict)
    #: per-GPU host names where known (gpu -> host)
    notes: list[str] = field(default_factory=list)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is gzip or zstd (by magic bytes)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=str(path)) from None
    return decompress(raw, path)


def decompress(raw: bytes, path: Path | str) -> bytes:
    try:
        if raw[:2] == GZIP_MAGIC:
            return gzip.decompress(raw)
        if raw[:4] == ZSTD_MAGIC:
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)) as reader:
                return reader.read()
    except Exception as exc:  # corrupt or truncated archives
        raise InputError(f"corrupt compressed file ({type(exc).__name__}: {exc})", path=str(path)) from None
    return raw


def decode_text(data: bytes, path: Path | str) -> str:
    """Decode text as UTF-8; invalid bytes raise an InputError naming the line."""
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    if b"\x00" in data[:SNIFF_BYTES]:
        raise InputError("binary data (NUL bytes) in a text file", path=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8",
            path=str(path),
            line=line,
        ) from None


def default_host(path: Path | str, opts: ReadOptions) -> str:
    """Host name for a file whose format has none: ``opts.host``, else the file name
    without its extensions (``node07.csv.gz`` -> ``node07``)."""
    if opts.host:
        return opts.host
    name = Path(path).name
    for suffix in (".gz", ".zst", ".zstd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def loc(path: str | Path, line: int) -> str:
    """An example location ``file:line``."""
    return f"{path}:{line}"


POWER_UNIT_SCALE = {"W": 1.0, "mW": 1e-3, "kW": 1e3}


def power_scale(unit: str | None, path: str | Path) -> float:
    if unit is None:
        return 1.0
    for name, scale in POWER_UNIT_SCALE.items():
        if unit.strip().lower() == name.lower():
            return scale
    raise InputError(f"unknown power unit {unit!r} (use W, mW or kW)", path=str(path))
