"""Generic CSV / Parquet / Arrow IPC readers, and the time helpers every text reader shares.

Generic files
-------------
A generic file is a table with a time column and a power column, and optionally a GPU
column, a host column and the optional canonical columns (``sm_clock_mhz`` ...).  Columns
come from ``opts.columns`` (``{canonical_name: source_column}``) or are guessed by name
(case-insensitive; ``.``, ``-`` and spaces count as ``_``):

=========  ==================================================================
canonical  names tried, in order
=========  ==================================================================
ts         ts, time, timestamp, datetime, time_s, time_ms, epoch_ms, unix_time...
power_w    power_w, power, watts, power_watts, power_mw, power_kw, pwr, gpu_power...
gpu        gpu, gpu_id, gpu_index, device, device_id, index, idx, uuid, gpu_uuid
host       host, hostname, node, node_name, nodename, machine
=========  ==================================================================

GPU ids: with a host column ``gpu = f"{host}/{gpu}"``; without one, a bare integer index
becomes ``f"{default_host}/{index}"`` (other ids, e.g. UUIDs or ``node1/0``, are kept);
without a GPU column the file is one GPU, ``f"{default_host}/0"``.

Units: power from ``opts.power_unit`` when given, else from the column name (a
``[mW]``-style bracket or a suffix: ``_mw`` mW, ``_kw`` kW, ``_w`` or none W); a value
that carries its own unit (``208.36 W``, ``0.2 kW``) wins.  Time: Datetime columns; ISO
8601 strings (with a zone -> that zone; without -> local time per ``opts.utc_offset_s`` /
``opts.tz``, or UTC with a warning when neither is given); or epoch numbers in
``opts.time_unit``, else the column name suffix (``_s``, ``_ms``, ``_us``, ``_ns``), else
inferred from magnitude (see :func:`infer_epoch_unit`).  Decimal epoch strings are read
exactly (``1719000000.1`` is 100 ms past the second, not 99.999905 ms).  When a file is
read as a generic CSV by force (``--format generic_csv``), nvidia-smi query names
(``power.draw [W]``, ``utilization.gpu [%]``...) are understood too; they do not make a
file *look* generic, since the nvidia-smi reader owns them.

Parquet and Arrow files that already hold canonical columns (``gpu``, ``ts`` as a UTC
Datetime, ``power_w``, ...) take a fast path: select and cast only, no parsing (measured
at 93-99 % of a bare ``pl.read_parquet`` of the same file).  A truncated or corrupt
file raises InputError naming it.  Parquet files up to
:data:`PYARROW_PARQUET_MAX_BYTES` are decoded by pyarrow, which reports corrupt pages as
errors, where Polars' faster decoder can abort the whole process (it allocates what a
damaged page header claims); Arrow IPC is always validated by pyarrow before Polars
sees it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zoneinfo
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl

from tracekit.errors import InputError, ParameterError
from tracekit.io.base import (
    GZIP_MAGIC,
    SNIFF_BYTES,
    ZSTD_MAGIC,
    ReadOptions,
    SourceFrame,
    decode_text,
    default_host,
    loc,
    power_scale,
    read_bytes,
)
from tracekit.quality import MAX_EXAMPLES, DataQuality
from tracekit.schema import (
    LINE_COLUMN,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TS_DTYPE,
    PowerSemantics,
    canonical_samples,
)
from tracekit.specs import find_gpu_spec
from tracekit.units import iso_to_ns

# ---------------------------------------------------------------------------------------
# Shared helpers for the text readers (dmon, dcgmi, dcgm-exporter, Zeus, CSV)
# ---------------------------------------------------------------------------------------

#: Tokens that mean "no value" in GPU telemetry logs.
NULL_TOKENS = ("", "-", "N/A", "[N/A]", "n/a", "NA", "nan", "NaN", "NAN", "null", "NULL", "None",
               "[Not Supported]", "Not Supported", "[Unknown Error]")

_EPOCH_SCALE_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}

_ISO_RE = (
    r"^\s*\[?(\d{4})[-/](\d{2})[-/](\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?\]?\s*$"
)
_ZONE_RE = r"^([+-])(\d{2}):?(\d{2})?$"


def read_lines(data: bytes, path: Path | str) -> pl.DataFrame:
    """Split text into one row per line, natively (no per-line Python).

    Parameters
    ----------
    data
        The file's (decompressed) bytes.
    path
        For error messages.

    Returns
    -------
    pl.DataFrame
        ``line`` (UInt32, 1-based) and ``text`` (String without the line break; blank
        lines are empty strings).
    """
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    if not data.strip():
        raise InputError("empty file", path=str(path))
    if b"\x00" in data[:SNIFF_BYTES]:
        raise InputError("binary data (NUL bytes) in a text file", path=str(path))
    try:
        # \x1f (unit separator) never occurs in these logs: every line is one field.
        raw = pl.read_csv(
            data,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            infer_schema=False,
            truncate_ragged_lines=True,
            empty_string_is_null=False,
        )
    except Exception as exc:  # invalid UTF-8 and other decode failures
        decode_text(data, path)  # raises the precise error (with line) when it is UTF-8
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot split the file into lines ({reason})", path=str(path)) from None
    text = raw.to_series(0).fill_null("").alias("text")
    return pl.DataFrame(
        {LINE_COLUMN: pl.int_range(1, len(text) + 1, dtype=pl.UInt32, eager=True), "text": text}
    )


def exclude_lines(quality: DataQuality, kind: str, lines: pl.Series, path: Path | str) -> None:
    """Count excluded rows of one kind with their first ``file:line`` examples."""
    n = len(lines)
    if n:
        quality.exclude(kind, n, [loc(path, int(x)) for x in lines.head(MAX_EXAMPLES).to_list()])


def parse_number(tok: pl.Expr, *, strip: bool = True) -> tuple[pl.Expr, pl.Expr]:
    """A token as Float64 and a flag for tokens that are neither numbers nor null markers.

    ``-``, ``N/A`` and the other :data:`NULL_TOKENS` (and NaN) give null and are not bad;
    text such as ``abc`` gives null and is bad.  ``inf`` stays infinite (cleaning excludes
    it as ``implausible_power``).  ``strip=False`` skips trimming
    blanks (for tokens already split on whitespace).
    """
    stripped = tok.str.strip_chars() if strip else tok
    num = stripped.cast(pl.Float64, strict=False)
    bad = num.is_null() & stripped.is_not_null() & ~stripped.is_in(list(NULL_TOKENS))
    num = pl.when(num.is_nan()).then(None).otherwise(num)
    return num, bad


def infer_epoch_unit(values: pl.Series) -> str:
    """The unit of epoch numbers from their magnitude.

    The median absolute value decides: below 1e11 seconds (1e11 s is the year 5138),
    below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds.  Any date after
    1973 is told apart this way.
    """
    med = values.abs().median()
    if med is None or not math.isfinite(float(med)):
        return "s"
    med = float(med)
    if med < 1e11:
        return "s"
    if med < 1e14:
        return "ms"
    if med < 1e17:
        return "us"
    return "ns"


def epoch_to_utc(values: pl.Series, unit: str, path: Path | str) -> pl.Series:
    """Epoch numbers (Int or Float, in ``unit``) as Datetime(ns, UTC), keeping sub-unit digits."""
    if unit not in _EPOCH_SCALE_NS:
        raise ParameterError(f"unknown time unit {unit!r} (use s, ms, us or ns)")
    scale = _EPOCH_SCALE_NS[unit]
    if values.dtype.is_integer():
        ns = values.cast(pl.Int64) * scale
    else:
        v = values.cast(pl.Float64)
        v = pl.select(pl.when(v.is_finite()).then(v).otherwise(None)).to_series()
        whole = v.floor()
        frac_ns = ((v - whole) * scale).round(0)
        # Outside the int64-nanosecond range (years 1677..2262) there is no timestamp.
        whole = pl.select(pl.when(whole.abs() < 9.2e18 / scale).then(whole).otherwise(None)).to_series()
        ns = whole.cast(pl.Int64) * scale + frac_ns.cast(pl.Int64)
    return ns.cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts")


def epoch_strings_to_utc(texts: pl.Series, unit: str, path: Path | str) -> pl.Series:
    """Decimal epoch strings (``1719000000.1``) as Datetime(ns, UTC), exactly.

    The integer and fraction digits are read separately, so ``.1`` s is exactly 100 ms
    (a float would give 99.999905 ms).  Other numeric forms (``1.7e9``) go through
    :func:`epoch_to_utc`.
    """
    if unit not in _EPOCH_SCALE_NS:
        raise ParameterError(f"unknown time unit {unit!r} (use s, ms, us or ns)")
    scale = _EPOCH_SCALE_NS[unit]
    digits = len(str(scale)) - 1
    frame = pl.DataFrame({"s": texts.cast(pl.String).str.strip_chars()})
    parts = frame.select(pl.col("s").str.extract_groups(r"^([+-]?)(\d+)(?:\.(\d*))?$").alias("g")).unnest("g")
    parts.columns = ["sign", "whole", "frac"]
    whole = parts["whole"].str.slice(0, 19).cast(pl.Int64, strict=False)
    whole = pl.select(pl.when(whole.abs() < 9_200_000_000_000_000_000 // scale).then(whole)).to_series()
    if digits:
        frac = parts["frac"].fill_null("").str.slice(0, digits).str.pad_end(digits, "0").cast(pl.Int64)
    else:
        frac = pl.repeat(0, len(parts), dtype=pl.Int64, eager=True)
    sign = pl.select(pl.when(parts["sign"] == "-").then(-1).otherwise(1)).to_series()
    ns = sign * (whole * scale + frac)
    exact = ns.cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    other = parts["whole"].is_null() & frame["s"].is_not_null()
    if other.any():
        floats = frame["s"].cast(pl.Float64, strict=False)
        approx = epoch_to_utc(floats, unit, path)
        exact = pl.select(pl.when(other).then(approx).otherwise(exact)).to_series()
    return exact.cast(TS_DTYPE).alias("ts")


#: A backward step of local time larger than this inside an ambiguous (repeated)
#: hour is the fall-back: rows after it are in the second pass.
DST_STEP_NS = 10 * 60 * 1_000_000_000


def check_time_options(opts: ReadOptions) -> None:
    """Reject contradictory local-time options."""
    if opts.utc_offset_s is not None and opts.tz:
        raise ParameterError("give either --utc-offset or --tz, not both")
    if opts.tz:
        try:
            zoneinfo.ZoneInfo(opts.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ParameterError(f"unknown time zone {opts.tz!r} (use an IANA name such as America/Los_Angeles)") from None


def naive_to_utc(
    naive: pl.Series,
    opts: ReadOptions,
    quality: DataQuality,
    path: Path | str,
    lines: pl.Series,
) -> tuple[pl.Series, pl.Series]:
    """Local wall-clock times without a zone as UTC.

    ``opts.utc_offset_s`` shifts by a fixed offset; ``opts.tz`` applies a zone with DST:
    an ambiguous time (the repeated hour when clocks go back) is read as the first pass
    until local time steps back by more than 10 minutes inside the ambiguous run (then
    it is the second pass), and each is counted as a ``dst_ambiguous`` repair; a
    time that does not exist (the skipped hour) becomes null and is flagged in the
    returned mask so the caller can exclude it as ``nonexistent_local_time``.  With
    neither option the times are read as UTC and a warning says so.

    Returns
    -------
    (ts, nonexistent)
        Datetime(ns, UTC) series and a Boolean mask of non-existent local times.
    """
    check_time_options(opts)
    naive = naive.cast(pl.Datetime("ns"))
    nonexistent = pl.repeat(False, len(naive), dtype=pl.Boolean, eager=True).alias("nonexistent")
    if naive.null_count() == len(naive):
        return naive.dt.replace_time_zone("UTC"), nonexistent
    if opts.utc_offset_s is not None:
        shift = timedelta(microseconds=round(float(opts.utc_offset_s) * 1e6))
        return (naive - shift).dt.replace_time_zone("UTC"), nonexistent
    if opts.tz:
        earliest = naive.dt.replace_time_zone(opts.tz, ambiguous="earliest", non_existent="null")
        latest = naive.dt.replace_time_zone(opts.tz, ambiguous="latest", non_existent="null")
        ambiguous = (earliest != latest).fill_null(False)
        # Order decides: inside a run of ambiguous rows, the rows after a backward step
        # of local time (the fall-back) take the later offset.
        frame = pl.DataFrame({"naive": naive, "amb": ambiguous}).with_columns(
            (pl.col("amb") != pl.col("amb").shift(1)).fill_null(True).cum_sum().alias("_run"),
            (pl.col("naive").diff().dt.total_nanoseconds() < -DST_STEP_NS).fill_null(False).alias("_step"),
        )
        use_late = frame.select(
            (pl.col("_step").cast(pl.Int64).cum_sum().over("_run") > 0) & pl.col("amb")
        ).to_series()
        chosen = pl.select(pl.when(pl.lit(use_late)).then(pl.lit(latest)).otherwise(pl.lit(earliest))).to_series()
        amb_lines = lines.filter(ambiguous)
        if len(amb_lines):
            quality.repair(
                "dst_ambiguous", len(amb_lines), [loc(path, int(x)) for x in amb_lines.head(MAX_EXAMPLES)]
            )
        nonexistent = (earliest.is_null() & naive.is_not_null()).alias("nonexistent")
        return chosen.dt.convert_time_zone("UTC").alias("ts"), nonexistent
    quality.warn(f"{path}: timestamps have no time zone; read as UTC (pass --utc-offset or --tz)")
    return naive.dt.replace_time_zone("UTC"), nonexistent


def parse_time_strings(
    texts: pl.Series,
    opts: ReadOptions,
    quality: DataQuality,
    path: Path | str,
    lines: pl.Series,
    *,
    epoch_unit: str | None = None,
) -> tuple[pl.Series, pl.Series]:
    """Parse time strings: epoch numbers, ISO 8601 with or without a zone, and (as a
    fallback) any single format Polars can infer.

    Epoch numbers use ``epoch_unit`` (or ``opts.time_unit``, or :func:`infer_epoch_unit`).
    ISO strings may use ``T`` or a space, ``-`` or ``/`` in the date, ``.`` or ``,`` before
    fractional seconds (up to ns) and a zone ``Z``/``UTC``/``+HH:MM``/``+HHMM``; strings
    without a zone are local time (see :func:`naive_to_utc`).

    Returns
    -------
    (ts, nonexistent)
        Datetime(ns, UTC) (null where unparsable or non-existent) and the
        non-existent-local-time mask.
    """
    texts = texts.cast(pl.String).str.strip_chars()
    frame = pl.DataFrame({"s": texts})
    num = frame.select(pl.col("s").cast(pl.Float64, strict=False)).to_series()
    is_num = num.is_not_null()
    ts_epoch = None
    if is_num.any():
        unit = epoch_unit or opts.time_unit or infer_epoch_unit(num.filter(is_num))
        ts_epoch = epoch_strings_to_utc(texts, unit, path)
        if is_num.sum() == texts.is_not_null().sum():
            return ts_epoch, pl.repeat(False, len(texts), dtype=pl.Boolean, eager=True).alias("nonexistent")

    g = frame.select(pl.col("s").str.extract_groups(_ISO_RE).alias("g")).unnest("g")
    g.columns = ["y", "mo", "d", "h", "mi", "sec", "frac", "zone"]
    naive = g.select(
        pl.concat_str(
            [
                pl.col("y"), pl.lit("-"), pl.col("mo"), pl.lit("-"), pl.col("d"), pl.lit(" "),
                pl.col("h").fill_null("00"), pl.lit(":"), pl.col("mi").fill_null("00"), pl.lit(":"),
                pl.col("sec").fill_null("00"), pl.lit("."),
                pl.col("frac").fill_null("0").str.slice(0, 9).str.pad_end(9, "0"),
            ]
        ).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ns", strict=False)
    ).to_series()
    zone = g["zone"]
    has_zone = zone.is_not_null()
    zparts = pl.DataFrame({"z": zone}).select(pl.col("z").str.extract_groups(_ZONE_RE).alias("g")).unnest("g")
    zparts.columns = ["sign", "hh", "mm"]
    offset_s = zparts.select(
        (
            pl.when(pl.col("sign") == "-").then(-1).otherwise(1)
            * (pl.col("hh").cast(pl.Int64) * 3600 + pl.col("mm").fill_null("0").cast(pl.Int64) * 60)
        ).fill_null(0)
    ).to_series()
    zoned = (naive - pl.Series(offset_s * 1_000_000_000).cast(pl.Duration("ns"))).dt.replace_time_zone("UTC")
    local_naive = pl.select(pl.when(has_zone).then(None).otherwise(naive)).to_series()
    local_utc, nonexistent = naive_to_utc(local_naive, opts, quality, path, lines)
    ts_iso = pl.select(pl.when(has_zone).then(zoned).otherwise(local_utc)).to_series()

    ts = ts_iso if ts_epoch is None else pl.select(pl.when(is_num).then(ts_epoch).otherwise(ts_iso)).to_series()
    todo = ts.is_null() & texts.is_not_null() & ~texts.is_in(list(NULL_TOKENS)) & ~nonexistent
    if todo.any() and ts.is_not_null().sum() == 0:
        # No ISO or epoch value at all: let Polars infer one format from the data.
        try:
            inferred = frame.select(pl.col("s").str.to_datetime(time_unit="ns", strict=False)).to_series()
        except pl.exceptions.ComputeError:  # no format fits
            inferred = pl.Series([None] * len(texts), dtype=pl.Datetime("ns"))
        if inferred.is_not_null().any():
            if inferred.dtype.time_zone is None:  # type: ignore[union-attr]
                ts, nonexistent = naive_to_utc(inferred, opts, quality, path, lines)
            else:
                ts = inferred.dt.convert_time_zone("UTC")
    return ts.cast(TS_DTYPE).alias("ts"), nonexistent.alias("nonexistent")


def parse_start(opts: ReadOptions) -> int:
    """``opts.start`` (ISO 8601, UTC unless it carries an offset; or epoch seconds) in ns."""
    text = str(opts.start).strip()
    if re.fullmatch(r"[+-]?\d+(\.\d*)?", text):
        return int(Decimal(text) * 1_000_000_000)
    ns = iso_to_ns(text)
    if ns is None:
        raise ParameterError(
            f"--start {opts.start!r} is not an ISO 8601 time (e.g. 2025-07-26T23:32:09Z) or epoch seconds")
    return ns


def sweep_times(sweep: pl.Series, opts: ReadOptions, path: Path | str, what: str) -> pl.Series:
    """Timestamps for untimed logs: ``opts.start + sweep * opts.interval_s``.

    Raises InputError naming the file when --start or --interval is missing (unless
    there are no rows to time).
    """
    if not len(sweep):
        return pl.Series("ts", [], dtype=TS_DTYPE)
    if opts.start is None or opts.interval_s is None:
        raise InputError(
            f"{what} has no timestamps; pass --start (time of the first sample, ISO 8601) "
            "and --interval (seconds between samples) to time it",
            path=str(path),
        )
    interval = float(opts.interval_s)
    if not math.isfinite(interval) or interval <= 0:
        raise ParameterError(f"--interval must be a positive number of seconds, got {opts.interval_s!r}")
    start_ns = parse_start(opts)
    interval_ns = round(interval * 1e9)
    ns = sweep.cast(pl.Int64) * interval_ns + start_ns
    return ns.cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts")


def nvml_power_semantics(models: Iterable[str | None], field: str, default_kind: str) -> PowerSemantics:
    """Semantics of an NVML power-usage reading (nvidia-smi dmon ``pwr``, DCGM field 155).

    NVML power usage is a 1 s average on Ampere-and-newer GPUs except GA100 and an
    instantaneous reading on A100 and older (``GpuSpec.instant_power_draw``).  When every
    model named is in the spec table and they agree, that decides; otherwise
    ``default_kind``.
    """
    names = [m for m in models if m]
    specs = [find_gpu_spec(m) for m in names]
    if specs and all(s is not None for s in specs):
        kinds = {s.instant_power_draw for s in specs}  # type: ignore[union-attr]
        if kinds == {True}:
            return PowerSemantics(kind="instant", window_s=None, field=field)
        if kinds == {False}:
            return PowerSemantics(kind="average", window_s=1.0, field=field)
    return PowerSemantics(kind=default_kind, window_s=None, field=field)  # type: ignore[arg-type]


def finish_samples(df: pl.DataFrame) -> pl.DataFrame:
    """Canonical columns and dtypes plus ``line`` (UInt32), in file order."""
    return canonical_samples(df, keep_line=True)


# ---------------------------------------------------------------------------------------
# Column guessing
# ---------------------------------------------------------------------------------------

TIME_NAMES = (
    "ts", "time", "timestamp", "datetime", "date_time", "time_s", "time_ms", "time_us", "time_ns",
    "timestamp_s", "timestamp_ms", "timestamp_us", "timestamp_ns", "ts_s", "ts_ms", "ts_us", "ts_ns",
    "epoch", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "unix_time", "unix_ts", "unix_timestamp",
    "time_utc", "timestamp_utc", "t", "t_s",
)
POWER_NAMES = (
    "power_w", "power", "watts", "power_watts", "power_mw", "power_kw", "power_milliwatts",
    "power_kilowatts", "pwr", "pwr_w", "gpu_power", "gpu_power_w", "gpu_power_mw", "gpu_power_kw",
    "power_usage", "power_usage_w",
)
GPU_NAMES = ("gpu", "gpu_id", "gpu_index", "gpu_idx", "device", "device_id", "index", "idx", "uuid", "gpu_uuid")
HOST_NAMES = ("host", "hostname", "node", "node_name", "nodename", "machine")
OPTIONAL_NAMES = {
    "sm_clock_mhz": ("sm_clock_mhz", "sm_clock", "clocks_sm", "sm_mhz"),
    "mem_clock_mhz": ("mem_clock_mhz", "mem_clock", "memory_clock", "clocks_mem"),
    "gpu_util": ("gpu_util", "utilization_gpu", "gpu_utilization"),
    "mem_util": ("mem_util", "utilization_memory", "mem_utilization"),
    "temp_c": ("temp_c", "temperature", "temp", "gpu_temp", "temperature_gpu"),
    "energy_j": ("energy_j",),
}
_GUESSES = {"ts": TIME_NAMES, "power_w": POWER_NAMES, "gpu": GPU_NAMES, "host": HOST_NAMES, **OPTIONAL_NAMES}
#: nvidia-smi query names (with their ``[unit]`` removed), understood when a file is read
#: as a generic CSV (``--format generic_csv``) but not used to detect one: files with
#: these names are nvidia-smi CSVs, which have their own reader.
NVSMI_NAMES = {
    "power_w": ("power_draw", "power_draw_instant", "power_draw_average"),
    "sm_clock_mhz": ("clocks_current_sm", "clocks_gr", "clocks_current_graphics"),
    "mem_clock_mhz": ("clocks_current_memory", "clocks_memory"),
}
_MAPPING_ALIASES = {"time": "ts", "timestamp": "ts", "power": "power_w"}
_BRACKET_UNIT = re.compile(r"\s*\[([^\]]*)\]\s*$")


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _base(name: str) -> str:
    """The normalized name without a trailing ``[unit]`` (``power.draw [W]`` -> ``power_draw``)."""
    return _norm(_BRACKET_UNIT.sub("", name))


def guess_columns(names: list[str], mapping: dict[str, str] | None = None, *, loose: bool = True) -> dict[str, str]:
    """Map canonical names (ts, power_w, gpu, host, optional columns) to source columns.

    ``mapping`` (``opts.columns``) wins; the rest are guessed by name (with and without a
    trailing ``[unit]``).  ``loose`` also accepts nvidia-smi query names
    (:data:`NVSMI_NAMES`).  Columns the file does not have are left out.
    """
    chosen: dict[str, str] = {}
    used: set[str] = set()
    for key, src in (mapping or {}).items():
        canon = _MAPPING_ALIASES.get(key, key)
        if canon not in _GUESSES:
            raise ParameterError(
                f"unknown canonical column {key!r} in the column mapping; known: {', '.join(_GUESSES)}"
            )
        chosen[canon] = src
        used.add(src)
    by_norm: dict[str, str] = {}
    for n in names:
        by_norm.setdefault(_norm(n), n)
    for n in names:
        by_norm.setdefault(_base(n), n)
    for canon, candidates in _GUESSES.items():
        if canon in chosen:
            continue
        if loose:
            candidates = (*candidates, *NVSMI_NAMES.get(canon, ()))
        for cand in candidates:
            src = by_norm.get(cand)
            if src is not None and src not in used:
                chosen[canon] = src
                used.add(src)
                break
    return chosen


def _unit_from_name(name: str, units: tuple[str, ...]) -> str | None:
    bracket = _BRACKET_UNIT.search(name)
    if bracket:
        for unit in units:
            if bracket.group(1).strip().lower() == unit.lower():
                return unit
    n = _norm(_BRACKET_UNIT.sub("", name))
    for unit in sorted(units, key=len, reverse=True):
        if n == unit.lower() or n.endswith("_" + unit.lower()):
            return unit
    if "milliwatt" in n:
        return "mW"
    if "kilowatt" in n:
        return "kW"
    return None


# ---------------------------------------------------------------------------------------
# Sniffers
# ---------------------------------------------------------------------------------------


def sniff_parquet(head: str, path: Path) -> bool:
    """Parquet is detected by its magic bytes in the registry; text never is Parquet."""
    return False


def sniff_arrow(head: str, path: Path) -> bool:
    """Arrow IPC is detected by its magic bytes in the registry; text never is Arrow."""
    return False


def _header_fields(line: str) -> list[str]:
    delim = max((",", ";", "\t"), key=line.count)
    if line.count(delim) == 0:
        return []
    return next(csv.reader([line], delimiter=delim))


def sniff_csv(head: str, path: Path) -> bool:
    """True for a delimited text table whose header names a time and a power column."""
    lines = [ln for ln in head.splitlines() if ln.strip()]
    if not lines:
        return False
    first = lines[0].lstrip("\ufeff").strip()
    if first[:1] in "#{[<":
        return False
    fields = _header_fields(first)
    if len(fields) < 2:
        return False
    guess = guess_columns(fields, loose=False)
    return "ts" in guess and "power_w" in guess


# ---------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------


def read_csv(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read a generic delimited table (``,``, ``;`` or tab; plain, .gz or .zst).

    Parameters
    ----------
    path
        The file.
    opts
        ``columns`` (mapping), ``power_unit``, ``time_unit``, ``utc_offset_s``/``tz``,
        ``host``.

    Returns
    -------
    SourceFrame
        ``line`` is the 1-based line of the row (the header is line 1; one record per
        line is assumed).  ``quality.rows_read`` is the number of data rows; rows whose
        time, GPU or power cannot be parsed are excluded as ``unparsable_row``; a garbled
        optional field becomes null (``null_field`` repair).
    """
    path = Path(path)
    data = read_bytes(path)
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    if not data.strip():
        raise InputError("empty file", path=str(path))
    first = data[: data.find(b"\n")] if b"\n" in data else data
    delim = max((",", ";", "\t"), key=lambda d: first.count(d.encode()))
    try:
        df = pl.read_csv(
            data, separator=delim, infer_schema=False, has_header=True, empty_string_is_null=True,
            truncate_ragged_lines=True, quote_char='"',
        )
    except Exception as exc:
        decode_text(data, path)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot parse CSV ({reason})", path=str(path)) from None
    df = df.with_columns(pl.int_range(2, df.height + 2, dtype=pl.UInt32).alias("__line"))
    # A line with more or fewer fields than the header is unparsable (Polars pads or cuts
    # it).  Checked on the raw lines when they map 1:1 to rows (no quoted line breaks).
    lines = read_lines(data, path).slice(1)
    lines = lines.filter(pl.col(LINE_COLUMN) <= df.height + 1)
    if lines.height == df.height and df.height:
        n_fields = len(df.columns) - 1
        ragged = lines.select(
            (pl.col("text").str.count_matches(delim, literal=True) + 1 != n_fields)
            & ~pl.col("text").str.contains('"', literal=True)
            & (pl.col("text").str.strip_chars() != "")
        ).to_series()
        df = df.with_columns(__ragged=ragged)
    # Blank lines are not rows.
    values = [c for c in df.columns if not c.startswith("__")]
    if values:
        df = df.filter(~pl.all_horizontal([pl.col(c).is_null() for c in values]))
    return _table_to_source(df, path, opts, "generic_csv", "__line")


def _open_binary(path: Path) -> Path | io.BytesIO:
    """The path itself, or the decompressed bytes when the file is .gz/.zst."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=str(path)) from None
    if magic[:2] == GZIP_MAGIC or magic == ZSTD_MAGIC:
        return io.BytesIO(read_bytes(path))
    return path


def read_parquet(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read a Parquet file: canonical columns fast, any other table through the mapping.

    ``line`` is the 1-based row number (or the file's own ``line`` column when it has one,
    as canonical datasets written from raw logs do).  A truncated or corrupt file raises
    InputError naming it.
    """
    return _read_binary(Path(path), opts, "parquet")


def read_arrow(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read an Arrow IPC file (or stream) like :func:`read_parquet`."""
    return _read_binary(Path(path), opts, "arrow")


def _binary_error(kind: str, exc: Exception, path: Path) -> InputError:
    name = "Parquet" if kind == "parquet" else "Arrow IPC"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"truncated or corrupt {name} file: {path} ({reason})", path=str(path))


#: Errors a corrupt binary file can raise inside Polars/pyarrow (a Rust panic is a
#: BaseException, so it is named explicitly).
_DECODE_ERRORS = (Exception, pl.exceptions.PanicException)
#: Errors Polars raises on values it cannot convert (not bugs of ours to hide).
_VALUE_ERRORS = (pl.exceptions.PanicException, pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError)


#: Parquet files up to this size are decoded with pyarrow, larger ones with Polars.
#: Polars is ~4x faster, but on some corrupt page headers it aborts the process (it
#: allocates what the header claims); pyarrow reports those as errors.  Below this size
#: the safer decoder costs milliseconds; above it, speed wins (see the module notes).
PYARROW_PARQUET_MAX_BYTES = 32 * 1024 * 1024


def _read_binary(path: Path, opts: ReadOptions, kind: str) -> SourceFrame:
    source = _open_binary(path)
    size = len(source.getbuffer()) if isinstance(source, io.BytesIO) else path.stat().st_size
    if kind == "parquet" and size > PYARROW_PARQUET_MAX_BYTES:
        try:
            schema = dict(pl.read_parquet_schema(source))
        except _DECODE_ERRORS as exc:
            raise _binary_error(kind, exc, path) from None
        if isinstance(source, io.BytesIO):
            source.seek(0)
        table = None
    else:
        table = _read_parquet_checked(source, path) if kind == "parquet" else _read_ipc(source, path)
        schema = dict(table.schema)

    fast = (
        not opts.columns
        and all(c in schema for c in REQUIRED_COLUMNS)
        and isinstance(schema["ts"], pl.Datetime)
        and schema["ts"].time_zone in ("UTC", "Etc/UTC", "+00:00")  # type: ignore[union-attr]
        and (opts.power_unit is None or power_scale(opts.power_unit, path) == 1.0)
    )
    has_line = fast and LINE_COLUMN in schema and schema[LINE_COLUMN].is_integer()
    cols = None
    if fast:
        cols = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in schema]
        if has_line:
            cols.append(LINE_COLUMN)
    if table is None:
        try:
            df = pl.read_parquet(
                source, columns=cols,
                row_index_name=LINE_COLUMN if fast and not has_line else None, row_index_offset=1,
            )
        except _DECODE_ERRORS as exc:
            raise _binary_error(kind, exc, path) from None
    else:
        df = table.select(cols) if cols else table
        if fast and not has_line:
            df = df.with_row_index(LINE_COLUMN, offset=1)
    try:
        if fast:
            return _fast_source(df, path, kind)
        df = df.with_columns(pl.int_range(1, df.height + 1, dtype=pl.UInt32).alias("__line"))
        return _table_to_source(df, path, opts, kind, "__line")
    except _VALUE_ERRORS as exc:
        # e.g. timestamps out of the datetime[ns] range in a damaged or odd file
        raise _binary_error(kind, exc, path) from None


def _read_parquet_checked(source: Path | io.BytesIO, path: Path) -> pl.DataFrame:
    """A (small) Parquet file decoded by pyarrow, which reports corrupt pages as errors."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(source)
        table.validate(full=True)
        df = pl.from_arrow(table, rechunk=False)
    except _DECODE_ERRORS as exc:
        raise _binary_error("parquet", exc, path) from None
    if not isinstance(df, pl.DataFrame):  # pragma: no cover - from_arrow of a Table is a frame
        raise _binary_error("parquet", TypeError("not a table"), path)
    return df


def _read_ipc(source: Path | io.BytesIO, path: Path) -> pl.DataFrame:
    """An Arrow IPC file (or stream), fully validated before Polars sees it.

    pyarrow checks every buffer (``validate(full=True)``), so a flipped byte becomes an
    InputError instead of a crash in the decoder.
    """
    import pyarrow as pa
    import pyarrow.ipc

    data = source.getvalue() if isinstance(source, io.BytesIO) else None

    def buffer():
        return pa.py_buffer(data) if data is not None else pa.memory_map(str(source), "r")

    try:
        try:
            table = pa.ipc.open_file(buffer()).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_stream(buffer()).read_all()
        table.validate(full=True)
        df = pl.from_arrow(table, rechunk=False)
    except _DECODE_ERRORS as exc:
        raise _binary_error("arrow", exc, path) from None
    if not isinstance(df, pl.DataFrame):  # pragma: no cover - from_arrow of a Table is a frame
        raise _binary_error("arrow", TypeError("not a table"), path)
    return df


def _fast_source(df: pl.DataFrame, path: Path, kind: str) -> SourceFrame:
    quality = DataQuality(rows_read=df.height)
    casts = []
    for name, dtype in (*REQUIRED_COLUMNS.items(), *OPTIONAL_COLUMNS.items()):
        if name in df.columns:
            casts.append(pl.col(name) if df.schema[name] == dtype else pl.col(name).cast(dtype))
    casts.append(pl.col(LINE_COLUMN).cast(pl.UInt32))
    df = df.select(casts)
    if df["ts"].null_count() or df["gpu"].null_count():
        bad = df["ts"].is_null() | df["gpu"].is_null()
        exclude_lines(quality, "unparsable_row", df.filter(bad)[LINE_COLUMN], path)
        df = df.filter(~bad)
    return SourceFrame(
        path=str(path), format=kind, samples=df, quality=quality,
        power=PowerSemantics(kind="unknown", field="power_w"),
        notes=["canonical columns read directly"],
    )


def _show_names(names: list[str], limit: int = 20) -> str:
    """Column names for a one-line message (repr'd, so odd characters stay visible)."""
    shown = ", ".join(repr(n) if len(n) <= 40 else repr(n[:37] + "...") for n in names[:limit])
    return shown + (f", ... ({len(names)} columns)" if len(names) > limit else "")


def _table_to_source(df: pl.DataFrame, path: Path, opts: ReadOptions, fmt: str, line_col: str) -> SourceFrame:
    """Map a loaded table (String columns from CSV, typed from Parquet/Arrow) to samples."""
    quality = DataQuality(rows_read=df.height)
    ragged = df["__ragged"] if "__ragged" in df.columns else None
    df = df.drop("__ragged", strict=False)
    names = [c for c in df.columns if c != line_col]
    cols = guess_columns(names, opts.columns)
    missing = [c for c, src in cols.items() if src not in df.columns]
    if missing:
        raise InputError(
            f"mapped column(s) {_show_names([cols[c] for c in missing])} not in the file; "
            f"columns: {_show_names(names)}",
            path=str(path),
        )
    for need, flag in (("ts", "--column ts=NAME"), ("power_w", "--column power_w=NAME")):
        if need not in cols:
            raise InputError(
                f"no {'time' if need == 'ts' else 'power'} column found among {_show_names(names)}; "
                f"name it with {flag}",
                path=str(path),
            )
    lines = df[line_col]
    notes: list[str] = []

    # -- time
    ts_src = df[cols["ts"]]
    ts, nonexistent = _column_time(ts_src, cols["ts"], opts, quality, path, lines)

    ts_min = ts.min()
    if ts_min is not None and ts_min < datetime(2000, 1, 1, tzinfo=timezone.utc):  # type: ignore[operator]
        quality.warn(
            f"{path}: column {cols['ts']!r} gives times before 2000 (first {ts_min}); "
            "are they relative seconds rather than epoch times?"
        )

    # -- power
    power_col = cols["power_w"]
    unit = opts.power_unit or _unit_from_name(power_col, ("W", "mW", "kW")) or "W"
    if opts.power_unit and _unit_from_name(power_col, ("mW", "kW")) not in (None, opts.power_unit):
        quality.warn(f"{path}: column {power_col!r} is read in {opts.power_unit} as --power-unit says")
    scale = power_scale(unit, path)
    power, power_bad, value_unit = _column_number(df[power_col])
    if value_unit is None:
        power = power * scale
    else:  # values that carry their unit ("208.36 W", "0.3 kW") win over the column's
        unit_scale = value_unit.str.to_lowercase().replace_strict(
            {"w": 1.0, "mw": 1e-3, "kw": 1e3}, default=None, return_dtype=pl.Float64
        )
        frame_ = pl.DataFrame({"p": power, "u": value_unit, "k": unit_scale})
        power = frame_.select(
            pl.when(pl.col("u").is_null()).then(pl.col("p") * scale).otherwise(pl.col("p") * pl.col("k"))
        ).to_series()
        power_bad = power_bad | (value_unit.is_not_null() & unit_scale.is_null())
    if unit != "W":
        notes.append(f"power column {power_col!r} converted from {unit} to W")

    # -- gpu / host
    host = default_host(path, opts)
    if "gpu" in cols:
        gpu_raw = _column_id(df[cols["gpu"]])
        if "host" in cols:
            host_raw = _column_id(df[cols["host"]]).fill_null(host)
            gpu = pl.select(pl.concat_str([host_raw, pl.lit("/"), gpu_raw])).to_series()
        else:
            gpu = pl.select(
                pl.when(gpu_raw.str.contains(r"^\d+$"))
                .then(pl.concat_str([pl.lit(host + "/"), gpu_raw]))
                .otherwise(gpu_raw)
            ).to_series()
    else:
        gpu = pl.Series([f"{host}/0"] * df.height, dtype=pl.String)
        if "host" in cols:
            gpu = pl.select(
                pl.concat_str([_column_id(df[cols["host"]]).fill_null(host), pl.lit("/0")])
            ).to_series()

    out = {"gpu": gpu.alias("gpu"), "ts": ts, "power_w": power.alias("power_w"), LINE_COLUMN: lines}
    null_field = pl.repeat(False, df.height, dtype=pl.Boolean, eager=True)
    for name in OPTIONAL_COLUMNS:
        if name in cols:
            values, bad, _ = _column_number(df[cols[name]])
            out[name] = values.alias(name)
            null_field = null_field | bad
    frame = pl.DataFrame(out)

    unparsable = (ts.is_null() & ~nonexistent) | gpu.is_null() | power_bad
    if ragged is not None:
        unparsable = unparsable | ragged
    exclude_lines(quality, "unparsable_row", frame.filter(unparsable)[LINE_COLUMN], path)
    exclude_lines(quality, "nonexistent_local_time", frame.filter(nonexistent & ~unparsable)[LINE_COLUMN], path)
    keep = ~unparsable & ~nonexistent
    fixed = frame.filter(null_field & keep)[LINE_COLUMN]
    if len(fixed):
        quality.repair("null_field", len(fixed), [loc(path, int(x)) for x in fixed.head(MAX_EXAMPLES)])
    samples = finish_samples(frame.filter(keep))
    return SourceFrame(
        path=str(path), format=fmt, samples=samples, quality=quality,
        power=PowerSemantics(kind="unknown", field=power_col), notes=notes,
    )


_VALUE_WITH_UNIT = r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z%]+)\s*$"


def _column_number(s: pl.Series) -> tuple[pl.Series, pl.Series, pl.Series | None]:
    """A column as Float64, the flag of garbled values, and each value's unit suffix
    (``208.36 W`` -> 208.36, ``W``; None when no value has one)."""
    no_flags = pl.repeat(False, len(s), dtype=pl.Boolean, eager=True)
    if s.dtype == pl.String:
        frame = pl.DataFrame({"s": s})
        num, bad = parse_number(pl.col("s"))
        out = frame.select(num.alias("v"), bad.alias("b"))
        if not out["b"].any():
            return out["v"], out["b"], None
        parts = frame.select(pl.col("s").str.extract_groups(_VALUE_WITH_UNIT).alias("g")).unnest("g")
        parts.columns = ["num", "unit"]
        with_unit = out["b"] & parts["num"].is_not_null()
        both = pl.DataFrame({"v": out["v"], "b": out["b"], "n": parts["num"].cast(pl.Float64), "u": parts["unit"],
                             "w": with_unit})
        res = both.select(
            pl.when(pl.col("w")).then(pl.col("n")).otherwise(pl.col("v")).alias("v"),
            (pl.col("b") & ~pl.col("w")).alias("b"),
            pl.when(pl.col("w")).then(pl.col("u")).alias("u"),
        )
        return res["v"], res["b"], res["u"]
    if s.dtype.is_numeric():
        v = s.cast(pl.Float64)
        v = pl.select(pl.when(v.is_nan()).then(None).otherwise(v)).to_series()
        return v, no_flags, None
    if s.dtype == pl.Boolean or s.dtype == pl.Null:
        return s.cast(pl.Float64), no_flags, None
    return _column_number(s.cast(pl.String))


def _column_id(s: pl.Series) -> pl.Series:
    if s.dtype.is_float():
        as_int = s.cast(pl.Int64, strict=False)
        s = pl.select(pl.when(as_int.cast(pl.Float64) == s).then(as_int.cast(pl.String)).otherwise(s.cast(pl.String))).to_series()
    return s.cast(pl.String).str.strip_chars()


def _column_time(
    s: pl.Series, name: str, opts: ReadOptions, quality: DataQuality, path: Path, lines: pl.Series
) -> tuple[pl.Series, pl.Series]:
    unit_hint = opts.time_unit or _unit_from_name(name, ("s", "ms", "us", "ns"))
    if isinstance(s.dtype, pl.Datetime):
        if s.dtype.time_zone is None:
            return naive_to_utc(s, opts, quality, path, lines)
        return s.dt.convert_time_zone("UTC").cast(TS_DTYPE).alias("ts"), pl.repeat(False, len(s), dtype=pl.Boolean, eager=True)
    if s.dtype == pl.Date:
        return naive_to_utc(s.cast(pl.Datetime("ns")), opts, quality, path, lines)
    if s.dtype.is_numeric():
        nonnull = s.drop_nulls()
        unit = unit_hint or (infer_epoch_unit(nonnull.cast(pl.Float64)) if len(nonnull) else "s")
        return epoch_to_utc(s, unit, path), pl.repeat(False, len(s), dtype=pl.Boolean, eager=True)
    return parse_time_strings(s.cast(pl.String), opts, quality, path, lines, epoch_unit=unit_hint)


__all__ = [
    "NULL_TOKENS",
    "epoch_strings_to_utc",
    "epoch_to_utc",
    "exclude_lines",
    "finish_samples",
    "guess_columns",
    "infer_epoch_unit",
    "naive_to_utc",
    "nvml_power_semantics",
    "parse_number",
    "parse_start",
    "parse_time_strings",
    "read_arrow",
    "read_csv",
    "read_lines",
    "read_parquet",
    "sniff_arrow",
    "sniff_csv",
    "sniff_parquet",
    "sweep_times",
]
