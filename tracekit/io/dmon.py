"""Readers for ``nvidia-smi dmon`` and ``dcgmi dmon`` whitespace tables.

nvidia-smi dmon
---------------
::

    #Date       Time        gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk   pclk
    #YYYYMMDD   HH:MM:SS    Idx      W      C      C      %      %      %      %    MHz    MHz
     20250726   23:32:09      0     69     33      -      0      0      0      0   2619   1980

A ``#`` header naming the columns (``gpu`` among the first three), a ``#`` units line,
``-`` for missing values, the header repeated periodically.  ``Date``/``Time`` columns
(``-o DT``) are local wall-clock time (see ``--utc-offset``/``--tz``).  Without both (plain
``dmon``, ``-o T`` or ``-o D``) rows are timed as ``opts.start + k * opts.interval_s`` for
the k-th row of each GPU, and without those options the reader raises InputError.
Columns used: ``pwr`` -> power_w, ``gtemp`` -> temp_c, ``sm`` -> gpu_util, ``mem`` ->
mem_util, ``mclk`` -> mem_clock_mhz, ``pclk`` -> sm_clock_mhz.  Commas between fields
(``--format csv``) are accepted.

dcgmi dmon
----------
::

    #Entity   POWER             TMPTR       SMCLK
    ID        W                 C
    GPU 0     68.437            30          1980
    GPU 1     N/A               31          1980

``dcgmi dmon -e 155,150,100 -d 100``: a ``#Entity`` header of DCGM short names, a units
line starting with ``ID``, two-token entity ids, the header repeated every 14 sweeps,
``N/A`` and DCGM blank sentinels for missing values.  dcgmi prints no time: rows are timed
only when a logger prefixed each line with an ISO 8601 time or epoch number
(``2025-07-26T23:32:09.703Z GPU 0 ...``, ``1753572729.703 GPU 0 ...``); otherwise as for
untimed dmon above.  Fields used: POWER (155) -> power_w, POWINST (157) -> power_w when
155 is absent, TOTEC (156, mJ) -> energy_j (J), SMCLK (100), MMCLK (101), TMPTR (150),
GPUTL (203), MCUTL (204).  Rows of other entities (``GPU-I``, ``Switch``...) are not GPU
power samples: they are skipped and counted in ``SourceFrame.notes``.

Accounting (both): ``quality.rows_read`` is the number of data lines (non-blank lines that
are not headers, units lines or comments; for dcgmi, minus the skipped non-GPU entity
rows).  A data line whose GPU, power or time cannot be parsed, or whose field count does
not match its header, is excluded as ``unparsable_row``; a garbled optional field is set to
null and counted as a ``null_field`` repair.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from tracekit.errors import InputError
from tracekit.io.base import ReadOptions, SourceFrame, default_host, loc, read_bytes
from tracekit.io.generic import (
    exclude_lines,
    finish_samples,
    naive_to_utc,
    nvml_power_semantics,
    parse_number,
    parse_time_strings,
    read_lines,
    sweep_times,
)
from tracekit.io.prometheus import dcgm_blank_to_null
from tracekit.quality import MAX_EXAMPLES, DataQuality
from tracekit.schema import LINE_COLUMN, PowerSemantics

#: nvidia-smi dmon column -> canonical column.
NVSMI_FIELDS = {
    "pwr": "power_w",
    "gtemp": "temp_c",
    "sm": "gpu_util",
    "mem": "mem_util",
    "mclk": "mem_clock_mhz",
    "pclk": "sm_clock_mhz",
}
_NVSMI_KNOWN = {"pwr", "gtemp", "mtemp", "sm", "mem", "enc", "dec", "jpg", "ofa", "mclk", "pclk",
                "pviol", "tviol", "fb", "bar1", "ccpm", "sbecc", "dbecc", "pci", "rxpci", "txpci"}

#: dcgmi dmon short name -> (internal column, DCGM field type for blank sentinels).
DCGMI_FIELDS = {
    "POWER": ("power155", "double"),
    "POWINST": ("power157", "double"),
    "TOTEC": ("energy_mj", "int64"),
    "SMCLK": ("sm_clock_mhz", "int32"),
    "MMCLK": ("mem_clock_mhz", "int32"),
    "TMPTR": ("temp_c", "int32"),
    "GPUTL": ("gpu_util", "int32"),
    "MCUTL": ("mem_util", "int32"),
}
_NON_GPU_ENTITIES = ["vGPU", "Switch", "GPU-I", "GPU-CI", "CPU", "CPU_CORE", "Link", "ConnectX", "CX",
                     "NvSwitch", "NVSWITCH", "UNKNOWN"]

_ISO_PREFIX = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|z|[+-]\d{2}:?\d{2})?"
_EPOCH_PREFIX = r"\d{9,19}(?:\.\d+)?"
_PREFIX_RE = rf"^\s*\[?({_ISO_PREFIX}|{_EPOCH_PREFIX})\]?[\s,;|]+(.*)$"

_SNIFF_LINES = 200


# ---------------------------------------------------------------------------------------
# Sniffers
# ---------------------------------------------------------------------------------------


def sniff_nvsmi(head: str, path: Path) -> bool:
    """True when a ``#`` header line names ``gpu`` (among its first three columns) and a
    known dmon metric (``pwr``, ``sm``, ``mclk``...)."""
    for raw in head.splitlines()[:_SNIFF_LINES]:
        line = raw.strip()
        if not line.startswith("#"):
            continue
        toks = re.split(r"[\s,]+", line.lstrip("#").strip().lower())
        if "gpu" in toks[:3] and _NVSMI_KNOWN.intersection(toks):
            return True
    return False


def sniff_dcgmi(head: str, path: Path) -> bool:
    """True when a line (possibly after a logger's timestamp) starts with ``#Entity``."""
    pat = re.compile(rf"^(?:\s*\[?(?:{_ISO_PREFIX}|{_EPOCH_PREFIX})\]?[\s,;|]+)?\s*#\s*Entity\b", re.I)
    return any(pat.match(line) for line in head.splitlines()[:_SNIFF_LINES])


# ---------------------------------------------------------------------------------------
# Shared table mechanics
# ---------------------------------------------------------------------------------------


def _split_logger_prefix(df: pl.DataFrame) -> pl.DataFrame:
    """Move a logger's leading timestamp (ISO 8601 or epoch) from ``body`` to ``ts_text``.

    Only lines starting with a digit or ``[`` are matched against the prefix pattern.
    """
    maybe = df.select(pl.col("body").str.slice(0, 1).is_in(list("0123456789[")).arg_true()).to_series()
    ts_text = pl.repeat(None, df.height, dtype=pl.String, eager=True).alias("ts_text")
    if not len(maybe):
        return df.with_columns(ts_text=ts_text)
    pre = df[maybe].select(pl.col("body").str.extract_groups(_PREFIX_RE).alias("g")).unnest("g")
    pre.columns = ["ts", "rest"]
    hit = pre["ts"].is_not_null()
    idx = maybe.filter(hit)
    if not len(idx):
        return df.with_columns(ts_text=ts_text)
    ts_text = ts_text.scatter(idx, pre["ts"].filter(hit))
    body = df["body"].scatter(idx, pre["rest"].filter(hit).str.strip_chars())
    return df.with_columns(ts_text=ts_text, body=body)


def _split_tokens(body: pl.Expr) -> pl.Expr:
    return body.str.strip_chars().str.replace_all(r"[\s,]+", " ").str.split(" ")


def _extract(data: pl.DataFrame, want: dict[str, str], n_lead: int) -> pl.DataFrame:
    """Pick named fields out of token lists, per header.

    ``data`` has ``tok`` (list of tokens of a data line) and ``hdr`` (space-joined column
    names of the header in force).  For each header the wanted columns are taken by
    position (after ``n_lead`` leading tokens); ``count_ok`` says whether the line has as
    many tokens as its header has columns.
    """
    def columns(names: list[str]) -> list[pl.Expr]:
        exprs = [(pl.col("tok").list.len() == n_lead + len(names)).alias("count_ok")]
        for src, dst in want.items():
            if src in names:
                exprs.append(pl.col("tok").list.get(n_lead + names.index(src), null_on_oob=True).alias(dst))
            else:
                exprs.append(pl.lit(None, dtype=pl.String).alias(dst))
        return exprs

    headers = data["hdr"].unique(maintain_order=True).to_list()
    if len(headers) <= 1:
        return data.with_columns(columns(headers[0].split(" ") if headers and headers[0] else []))
    parts = [
        data.filter(pl.col("hdr") == hdr).with_columns(columns(hdr.split(" ") if hdr else []))
        for hdr in headers
    ]
    return pl.concat(parts, how="vertical").sort(LINE_COLUMN)


def _header_of(lines: pl.Series, header_lines: pl.Series, header_names: pl.Series) -> pl.Series:
    """For each data line, the names of the header in force (the last one before it; the
    first header for lines before any header)."""
    idx = header_lines.search_sorted(lines, side="right").cast(pl.Int64) - 1
    idx = idx.clip(lower_bound=0)
    return header_names.gather(idx).alias("hdr")


def _repair_null_fields(quality: DataQuality, frame: pl.DataFrame, flag: str, path: Path) -> None:
    fixed = frame.filter(pl.col(flag))[LINE_COLUMN]
    if len(fixed):
        quality.repair("null_field", len(fixed), [loc(path, int(x)) for x in fixed.head(MAX_EXAMPLES)])


def _finish(
    frame: pl.DataFrame,
    quality: DataQuality,
    path: Path,
    opts: ReadOptions,
    *,
    timed: bool,
    what: str,
    stray: pl.Series | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Time the rows (parsed or by sweep), account for exclusions, build samples.

    ``frame`` has line, gpu (null when unparsable), power_w, power_bad, count_ok,
    opt_bad, ts_text (when timed) and optional canonical columns.
    """
    notes: list[str] = []
    if timed and "naive_ts" in frame.columns:
        ts, nonexistent = naive_to_utc(frame["naive_ts"], opts, quality, path, frame[LINE_COLUMN])
    elif timed:
        ts, nonexistent = parse_time_strings(frame["ts_text"], opts, quality, path, frame[LINE_COLUMN])
    else:
        sweep = frame.select(pl.int_range(pl.len()).over("gpu").alias("k"))["k"]
        ts = sweep_times(sweep, opts, path, what)
        nonexistent = pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
        notes.append(f"untimed {what}: timestamps are --start + k * --interval ({opts.interval_s} s)")
    frame = frame.with_columns(ts=ts, nonexistent=nonexistent)
    unparsable = (
        ~pl.col("count_ok") | pl.col("gpu").is_null() | pl.col("power_bad")
        | (pl.col("ts").is_null() & ~pl.col("nonexistent"))
    )
    frame = frame.with_columns(unparsable=unparsable)
    bad = frame.filter(pl.col("unparsable"))[LINE_COLUMN]
    if stray is not None and len(stray):
        bad = pl.concat([bad, stray.cast(pl.UInt32)]).sort()
    exclude_lines(quality, "unparsable_row", bad, path)
    exclude_lines(
        quality, "nonexistent_local_time",
        frame.filter(pl.col("nonexistent") & ~pl.col("unparsable"))[LINE_COLUMN], path,
    )
    kept = frame.filter(~pl.col("unparsable") & ~pl.col("nonexistent"))
    _repair_null_fields(quality, kept, "opt_bad", path)
    return finish_samples(kept), notes


# ---------------------------------------------------------------------------------------
# nvidia-smi dmon
# ---------------------------------------------------------------------------------------


def read_nvsmi(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read an ``nvidia-smi dmon`` log.

    Parameters
    ----------
    path
        The log (plain, .gz or .zst).
    opts
        ``host`` (default: the file name), ``utc_offset_s``/``tz`` for ``-o DT`` logs,
        ``start``/``interval_s`` for logs without date and time columns, ``gpu_model``
        (decides the power semantics).

    Returns
    -------
    SourceFrame
        GPU ids ``f"{host}/{idx}"``; ``line`` is the 1-based line in the file.  Power
        semantics: NVML power usage (a 1 s average on Ampere-and-newer except GA100) when
        ``opts.gpu_model`` says which, else ``unknown``.
    """
    path = Path(path)
    quality = DataQuality()
    lines = read_lines(read_bytes(path), path)
    df = lines.with_columns(body=pl.col("text").str.strip_chars()).filter(pl.col("body") != "")
    df = df.with_columns(is_hash=pl.col("body").str.starts_with("#"))
    hashes = df.filter(pl.col("is_hash")).with_columns(
        names=pl.col("body").str.strip_chars_start("#").str.strip_chars().str.to_lowercase()
        .str.replace_all(r"[\s,]+", " ")
    )
    hashes = hashes.filter(pl.col("names").str.split(" ").list.head(3).list.contains("gpu"))
    if not hashes.height:
        raise InputError("no '# gpu ...' header line: not an nvidia-smi dmon log", path=str(path))
    headers = hashes["names"].unique().to_list()
    if not any("pwr" in h.split(" ") for h in headers):
        raise InputError(
            "the dmon header has no 'pwr' column; record power with `nvidia-smi dmon -s p` "
            "(or the default metric set)",
            path=str(path),
        )
    data = df.filter(~pl.col("is_hash"))
    data = data.with_columns(
        tok=_split_tokens(pl.col("body")),
        hdr=_header_of(data[LINE_COLUMN], hashes[LINE_COLUMN], hashes["names"]),
    )
    quality.rows_read = data.height
    host = default_host(path, opts)
    want = {"gpu": "gpu_tok", "date": "date_tok", "time": "time_tok", **{k: f"{v}_tok" for k, v in NVSMI_FIELDS.items()}}
    data = _extract(data, want, 0)

    idx = pl.col("gpu_tok").cast(pl.Int64, strict=False)
    power, power_bad = parse_number(pl.col("power_w_tok"), strip=False)
    cols = [
        pl.col(LINE_COLUMN),
        pl.when(idx.is_not_null()).then(pl.lit(host + "/") + idx.cast(pl.String)).alias("gpu"),
        power.alias("power_w"),
        power_bad.fill_null(False).alias("power_bad"),
        pl.col("count_ok"),
        pl.concat_str([pl.col("date_tok"), pl.col("time_tok")], separator=" ").alias("dt_text"),
    ]
    opt_bad = pl.lit(False)
    present = {f for h in headers for f in h.split(" ")}
    for name, canon in NVSMI_FIELDS.items():
        if canon == "power_w" or name not in present:
            continue
        val, bad = parse_number(pl.col(f"{canon}_tok"), strip=False)
        cols.append(val.alias(canon))
        opt_bad = opt_bad | bad.fill_null(False)
    cols.append(opt_bad.alias("opt_bad"))
    frame = data.select(cols)

    timed = any({"date", "time"} <= set(h.split(" ")) for h in headers)
    notes = ["nvidia-smi dmon reports pwr in whole watts (1 W resolution)"]
    if timed:
        frame = frame.with_columns(
            naive_ts=pl.col("dt_text").str.to_datetime("%Y%m%d %H:%M:%S", time_unit="ns", strict=False)
        )
    elif any(("time" in h.split(" ") or "date" in h.split(" ")) for h in headers):
        notes.append("dmon log has a Date or Time column but not both (-o D / -o T): rows timed by sweep")
    samples, more = _finish(frame, quality, path, opts, timed=timed, what="nvidia-smi dmon log (no -o DT date and time columns)")
    return SourceFrame(
        path=str(path),
        format="nvsmi_dmon",
        samples=samples,
        quality=quality,
        power=nvml_power_semantics([opts.gpu_model], "nvidia-smi dmon pwr", "unknown"),
        notes=notes + more,
    )


# ---------------------------------------------------------------------------------------
# dcgmi dmon
# ---------------------------------------------------------------------------------------


def read_dcgmi(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read a ``dcgmi dmon`` log.

    Parameters
    ----------
    path
        The log (plain, .gz or .zst).
    opts
        ``host`` (default: the file name), ``utc_offset_s``/``tz`` for zone-less logger
        timestamps, ``start``/``interval_s`` for logs without timestamps, ``gpu_model``.

    Returns
    -------
    SourceFrame
        GPU ids ``f"{host}/{entity id}"``; ``line`` is the 1-based line in the file.
        Power semantics: field 157 is instantaneous; field 155 is NVML power usage (a 1 s
        average on Ampere-and-newer except GA100 when ``opts.gpu_model`` says so, else
        read as instantaneous).
    """
    path = Path(path)
    quality = DataQuality()
    lines = read_lines(read_bytes(path), path)
    df = lines.with_columns(body=pl.col("text").str.strip_chars()).filter(pl.col("body") != "")
    df = _split_logger_prefix(df)
    is_hash = pl.col("body").str.starts_with("#")
    is_gpu = pl.col("body").str.starts_with("GPU ") | pl.col("body").str.starts_with("GPU\t")
    hashes = df.filter(is_hash).filter(pl.col("body").str.contains(r"(?i)^#\s*entity\b"))
    if not hashes.height:
        raise InputError("no '#Entity' header line: not a dcgmi dmon log", path=str(path))
    hashes = hashes.with_columns(
        names=pl.col("body").str.replace(r"(?i)^#\s*entity\b", "").str.strip_chars().str.to_uppercase()
        .str.replace_all(r"\s+", " ")
    )
    headers = hashes["names"].unique().to_list()
    fields = {f for h in headers for f in h.split(" ") if f}
    if "POWER" in fields:
        power_src, power_sem = "power155", nvml_power_semantics(
            [opts.gpu_model], "DCGM_FI_DEV_POWER_USAGE (155)", "instant"
        )
    elif "POWINST" in fields:
        power_src, power_sem = "power157", PowerSemantics(kind="instant", field="DCGM_FI_DEV_POWER_USAGE_INSTANT (157)")
    else:
        raise InputError(
            f"the dcgmi dmon header has no power field (fields: {', '.join(sorted(fields)[:20]) or 'none'}); "
            "record with -e 155 (power) or -e 157 (instant power)",
            path=str(path),
        )

    # Lines that are neither headers nor GPU rows: units lines, the stop message, rows of
    # other entities (skipped), and anything else (unparsable data rows).
    others = df.filter(~is_hash & ~is_gpu).with_columns(tok0=pl.col("body").str.extract(r"^(\S+)"))
    skip = (
        pl.col("body").str.contains(r"^ID(\s|$)") | pl.col("body").str.contains("dmon was stopped", literal=True)
    )
    non_gpu = others.filter(~skip & pl.col("tok0").is_in(_NON_GPU_ENTITIES))
    stray = others.filter(~skip & ~pl.col("tok0").is_in(_NON_GPU_ENTITIES))[LINE_COLUMN]
    data = df.filter(is_gpu)
    data = data.with_columns(
        tok=_split_tokens(pl.col("body")),
        hdr=_header_of(data[LINE_COLUMN], hashes[LINE_COLUMN], hashes["names"]),
    )
    quality.rows_read = data.height + len(stray)
    notes: list[str] = []
    if non_gpu.height:
        kinds = ", ".join(sorted(set(non_gpu["tok0"].to_list())))
        notes.append(f"skipped {non_gpu.height} rows of non-GPU entities ({kinds})")
    want = {name: col for name, (col, _) in DCGMI_FIELDS.items()}
    data = _extract(data, want, 2)

    host = default_host(path, opts)
    entity_id = pl.col("tok").list.get(1, null_on_oob=True).cast(pl.Int64, strict=False)
    cols = [
        pl.col(LINE_COLUMN),
        pl.when(entity_id.is_not_null()).then(pl.lit(host + "/") + entity_id.cast(pl.String)).alias("gpu"),
        pl.col("count_ok"),
        pl.col("ts_text"),
    ]
    opt_bad = pl.lit(False)
    for name, (col, ftype) in DCGMI_FIELDS.items():
        val, bad = parse_number(pl.col(col), strip=False)
        val = dcgm_blank_to_null(val, ftype)
        if col.startswith("power"):
            if col == power_src:
                cols += [val.alias("power_w"), bad.fill_null(False).alias("power_bad")]
            continue
        if col == "energy_mj":
            if "TOTEC" not in fields:
                continue
            val, col = val / 1000.0, "energy_j"
        elif name not in fields:
            continue
        cols.append(val.alias(col))
        opt_bad = opt_bad | bad.fill_null(False)
    cols.append(opt_bad.alias("opt_bad"))
    frame = data.select(cols)

    timed = bool(frame["ts_text"].is_not_null().any())
    samples, more = _finish(frame, quality, path, opts, timed=timed, what="dcgmi dmon log", stray=stray)
    if "TOTEC" in fields:
        notes.append("TOTEC (field 156, mJ) converted to energy_j in J")
    return SourceFrame(
        path=str(path),
        format="dcgmi_dmon",
        samples=samples,
        quality=quality,
        power=power_sem,
        notes=notes + more,
    )
