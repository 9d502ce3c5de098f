"""Reader for dcgm-exporter Prometheus text scrapes, many scrapes concatenated.

::

    # HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
    # TYPE DCGM_FI_DEV_POWER_USAGE gauge
    DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-...",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node1"} 266.17 1719000000000

Metrics used (others are ignored): ``DCGM_FI_DEV_POWER_USAGE`` (155) -> power_w
(``..._POWER_USAGE_INSTANT`` (157) when 155 is absent), ``SM_CLOCK`` -> sm_clock_mhz,
``MEM_CLOCK`` -> mem_clock_mhz, ``GPU_TEMP`` -> temp_c, ``GPU_UTIL`` -> gpu_util,
``MEM_COPY_UTIL`` -> mem_util, ``TOTAL_ENERGY_CONSUMPTION`` (mJ) -> energy_j (J).  The
dcgm-exporter 1.x names (``dcgm_power_usage``...) are read too.  DCGM blank sentinels
(:func:`dcgm_blank_to_null`), ``NaN`` and ``+Inf`` become null.

Labels may come in any order, with extra labels; the GPU id is ``f"{host}/{gpu}"`` with
the host from ``Hostname`` or ``hostname`` (else the default host) and ``gpu`` from the
``gpu`` label (else ``UUID``); ``modelName`` fills ``SourceFrame.gpu_models``.

Time: a sample's own timestamp (ms since the epoch); else the latest preceding comment
``# scrape_ts=<epoch or ISO 8601>`` that a logger wrote before each scrape; else, when
the file has no time at all, ``opts.start + k * opts.interval_s`` for the k-th scrape
(InputError when those are not given).  A file with some time but none for a scrape
excludes that scrape's rows as unparsable.

Rows and accounting: one output row per (GPU, scrape), pivoting the metrics into
columns.  A new scrape starts at a ``# scrape_ts`` comment or where the file's first
metric starts again after other metrics; repeated (GPU, metric) samples inside one such
block (e.g. a log filtered to the power metric) are successive scrapes.  With sample
timestamps, a row takes the power sample's time (else the earliest of its samples).
``quality.rows_read`` = output rows + unparsable lines, where an unparsable line is a
non-comment line that is not a valid sample line, or a sample of a used metric whose
value or GPU label cannot be read; each counts as one excluded ``unparsable_row``.  So
``rows_read == len(samples) + quality.n_excluded``.  A row whose power metric is missing
or blank keeps a null power (later excluded as ``missing_value``).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from tracekit.errors import InputError
from tracekit.io.base import ReadOptions, SourceFrame, default_host, read_bytes
from tracekit.io.generic import (
    epoch_strings_to_utc,
    exclude_lines,
    finish_samples,
    nvml_power_semantics,
    parse_number,
    parse_time_strings,
    read_lines,
    sweep_times,
)
from tracekit.quality import DataQuality
from tracekit.schema import LINE_COLUMN, PowerSemantics

#: metric name -> (output column, DCGM field type, scale to canonical units)
METRICS: dict[str, tuple[str, str, float]] = {
    "DCGM_FI_DEV_POWER_USAGE": ("power155", "double", 1.0),
    "DCGM_FI_DEV_POWER_USAGE_INSTANT": ("power157", "double", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", "int32", 1.0),
    "DCGM_FI_DEV_MEM_CLOCK": ("mem_clock_mhz", "int32", 1.0),
    "DCGM_FI_DEV_GPU_TEMP": ("temp_c", "int32", 1.0),
    "DCGM_FI_DEV_GPU_UTIL": ("gpu_util", "int32", 1.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("mem_util", "int32", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_j", "int64", 1e-3),
    # dcgm-exporter 1.x
    "dcgm_power_usage": ("power155", "double", 1.0),
    "dcgm_sm_clock": ("sm_clock_mhz", "int32", 1.0),
    "dcgm_memory_clock": ("mem_clock_mhz", "int32", 1.0),
    "dcgm_gpu_temp": ("temp_c", "int32", 1.0),
    "dcgm_gpu_utilization": ("gpu_util", "int32", 1.0),
    "dcgm_mem_copy_utilization": ("mem_util", "int32", 1.0),
    "dcgm_total_energy_consumption": ("energy_j", "int64", 1e-3),
}
_OUTPUT_ORDER = ("sm_clock_mhz", "mem_clock_mhz", "gpu_util", "mem_util", "temp_c", "energy_j")

_SAMPLE_RE = r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+(?:\.\d+)?))?\s*$"
_SCRAPE_TS_RE = r"(?i)^#\s*scrape_ts\s*[=:]\s*(\S+)"
_NAME_RE = r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{|\s)"


def _label(name: str) -> str:
    return rf'(?:^|,)\s*{name}\s*=\s*"((?:[^"\\]|\\.)*)"'


#: DCGM_FP64_BLANK (2**47); blank doubles are this value plus 0..5.
DCGM_FP64_BLANK = 140737488355328.0
#: DCGM_INT32_BLANK 0x7ffffff0; blank int32 fields are 2147483632..2147483647.
DCGM_INT32_BLANK = 2147483632


def dcgm_blank_to_null(value: pl.Expr, field_type: str) -> pl.Expr:
    """DCGM "no value" sentinels as null.

    All fields: values >= 9.2e18 (``DCGM_INT64_BLANK`` = 9223372036854775792 and the
    other int64 blanks such as 9223372036854775794) and >= 1e20.  Doubles (``double``):
    also ``DCGM_FP64_BLANK`` 2**47 .. 2**47 + 15.  32-bit integer fields (``int32``:
    clocks, temperature, utilization): also 2147483632 .. 2147483647.  ``int64`` fields
    (the energy counter, which legitimately exceeds 2**31 mJ) only the first rule.
    """
    blank = value >= 9.2e18
    if field_type == "double":
        blank = blank | ((value >= DCGM_FP64_BLANK) & (value < DCGM_FP64_BLANK + 16))
    elif field_type == "int32":
        blank = blank | ((value >= DCGM_INT32_BLANK) & (value <= 2147483647))
    return pl.when(blank.fill_null(False)).then(None).otherwise(value)


def _split_samples(used: pl.DataFrame) -> pl.DataFrame:
    """Split sample lines into name, labels, value and timestamp; ``ok`` marks valid ones.

    Fast path: split at the first ``{`` and ``}`` (literal splits, no regex over the
    whole line); lines it does not fit (no labels, a ``}`` inside a label value) are
    matched against the full sample grammar instead.
    """
    head_tail = used.select(pl.col("body").str.split_exact("}", 1).struct.rename_fields(["head", "tail"])).unnest("body")
    name_labels = head_tail.select(
        pl.col("head").str.split_exact("{", 1).struct.rename_fields(["name2", "labels"])
    ).unnest("head")
    vt = head_tail.select(
        pl.col("tail").str.extract_groups(r"^\s+(\S+)(?:\s+(-?\d+(?:\.\d+)?))?\s*$")
        .struct.rename_fields(["value", "ts_ms"])
    ).unnest("tail")
    fast = pl.concat([used, name_labels, vt], how="horizontal").with_columns(
        ok=(pl.col("name2") == pl.col("name")) & pl.col("labels").is_not_null() & pl.col("value").is_not_null()
    )
    if fast["ok"].all():
        return fast.drop("name2")
    slow = fast.filter(~pl.col("ok")).select(LINE_COLUMN, "name", "body")
    parts = slow.select(pl.col("body").str.extract_groups(_SAMPLE_RE).alias("g")).unnest("g")
    parts.columns = ["name2", "labels", "value", "ts_ms"]
    slow = pl.concat([slow, parts], how="horizontal").with_columns(ok=pl.col("name2").is_not_null())
    cols = [LINE_COLUMN, "name", "labels", "value", "ts_ms", "ok"]
    return pl.concat([fast.filter(pl.col("ok")).select(cols), slow.select(cols)]).sort(LINE_COLUMN)


def _label_table(labels: pl.Series, host: str) -> pl.DataFrame:
    """GPU id and model for each distinct label set (a scrape log repeats a few of them)."""
    u = pl.DataFrame({"labels": labels.unique()})
    gpu_label = pl.col("labels").str.extract(_label("gpu"))
    uuid_label = pl.col("labels").str.extract(_label("(?i:uuid)"))
    host_label = pl.col("labels").str.extract(_label("(?i:hostname)"))
    gpu_id = pl.when(gpu_label.str.len_chars() > 0).then(gpu_label).otherwise(
        pl.when(uuid_label.str.len_chars() > 0).then(uuid_label)
    )
    host_expr = pl.when(host_label.str.len_chars() > 0).then(host_label).otherwise(pl.lit(host))
    return u.with_columns(
        gpu=pl.when(gpu_id.is_not_null()).then(pl.concat_str([host_expr, pl.lit("/"), gpu_id])),
        model=pl.col("labels").str.extract(_label("modelName")),
    )


def sniff(head: str, path: Path) -> bool:
    """True when a line is a DCGM metric sample or its ``# HELP``/``# TYPE`` line."""
    pat = re.compile(
        r"^(?:#\s*(?:HELP|TYPE)\s+)?(?:DCGM_FI_[A-Z0-9_]+|dcgm_[a-z0-9_]+)(?:\{|\s)", re.M
    )
    return bool(pat.search(head))


def read(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read concatenated dcgm-exporter scrapes into one row per (GPU, scrape).

    Parameters
    ----------
    path
        The scrape log (plain, .gz or .zst).
    opts
        ``host`` (for samples without a Hostname label), ``start``/``interval_s`` (for
        files without any time), ``utc_offset_s``/``tz`` (zone-less ``# scrape_ts``),
        ``gpu_model`` (when no ``modelName`` label).

    Returns
    -------
    SourceFrame
        ``line`` is the first line of the row's samples.  Power semantics: field 157 is
        instantaneous; field 155 is NVML power usage, a 1 s average on
        Ampere-and-newer GPUs except GA100 when the models (``modelName`` or
        ``opts.gpu_model``) say so, else read as instantaneous.
    """
    path = Path(path)
    quality = DataQuality()
    lines = read_lines(read_bytes(path), path)
    df = lines.with_columns(body=pl.col("text").str.strip_chars()).filter(pl.col("body") != "")
    is_comment = pl.col("body").str.starts_with("#")
    comments = (
        df.filter(is_comment)
        .select(LINE_COLUMN, pl.col("body").str.extract(_SCRAPE_TS_RE).alias("cts_text"))
        .filter(pl.col("cts_text").is_not_null())
    )
    samp = df.filter(~is_comment).select(LINE_COLUMN, "body", pl.col("body").str.extract(_NAME_RE).alias("name"))
    bad_grammar = samp.filter(pl.col("name").is_null())[LINE_COLUMN]
    used = _split_samples(samp.filter(pl.col("name").is_in(list(METRICS))))
    bad_grammar = pl.concat([bad_grammar, used.filter(~pl.col("ok"))[LINE_COLUMN]]).sort()
    used = used.filter(pl.col("ok")).select(LINE_COLUMN, "name", "labels", "value", "ts_ms")
    ev = pl.concat(
        [
            used.with_columns(cts_text=pl.lit(None, dtype=pl.String)),
            comments.with_columns(
                name=pl.lit(None, dtype=pl.String), labels=pl.lit(None, dtype=pl.String),
                value=pl.lit(None, dtype=pl.String), ts_ms=pl.lit(None, dtype=pl.String),
            ).select(used.columns + ["cts_text"]),
        ],
        how="vertical",
    ).sort(LINE_COLUMN)
    names_present = set(ev["name"].drop_nulls().unique().to_list())
    targets = {METRICS[n][0] for n in names_present}
    if "power155" in targets:
        power_src = "power155"
    elif "power157" in targets:
        power_src = "power157"
    else:
        raise InputError(
            "no power metric (DCGM_FI_DEV_POWER_USAGE or DCGM_FI_DEV_POWER_USAGE_INSTANT) in the scrape",
            path=str(path),
        )

    # -- scrape blocks
    first_metric = ev["name"].drop_nulls().item(0)
    prev_name = pl.col("name").forward_fill().shift(1)
    ev = ev.with_columns(
        boundary=pl.col("cts_text").is_not_null()
        | ((pl.col("name") == first_metric) & (prev_name.is_null() | (prev_name != first_metric))).fill_null(False)
    ).with_columns(block=pl.col("boundary").cast(pl.Int64).cum_sum())
    has_comment_ts = bool(ev["cts_text"].is_not_null().any())
    if has_comment_ts:
        cts, _ = parse_time_strings(
            ev["cts_text"], opts, quality, path, ev[LINE_COLUMN]
        )
        ev = ev.with_columns(block_ts=cts).with_columns(
            block_ts=pl.when(pl.col("cts_text").is_not_null()).then(pl.col("block_ts")).forward_fill()
        )
    else:
        ev = ev.with_columns(block_ts=pl.lit(None, dtype=pl.Datetime("ns", "UTC")))

    # -- sample lines
    host = default_host(path, opts)
    s = ev.filter(pl.col("name").is_not_null())
    target_map = {n: METRICS[n][0] for n in METRICS}
    ftype_map = {n: METRICS[n][1] for n in METRICS}
    scale_map = {n: METRICS[n][2] for n in METRICS}
    val, bad = parse_number(pl.col("value"), strip=False)
    s = s.join(_label_table(s["labels"], host), on="labels", how="left", maintain_order="left")
    s = s.with_columns(
        target=pl.col("name").replace_strict(target_map, return_dtype=pl.String),
        ftype=pl.col("name").replace_strict(ftype_map, return_dtype=pl.String),
        scale=pl.col("name").replace_strict(scale_map, return_dtype=pl.Float64),
        val=val,
        bad=bad.fill_null(False),
        ts_line=epoch_strings_to_utc(s["ts_ms"], "ms", path),
    )
    value = pl.col("val")
    for ftype in ("double", "int32", "int64"):
        value = pl.when(pl.col("ftype") == ftype).then(dcgm_blank_to_null(pl.col("val"), ftype)).otherwise(value)
    s = s.with_columns(val=value * pl.col("scale"))
    line_bad = pl.col("bad") | pl.col("gpu").is_null()
    bad_lines = s.filter(line_bad)[LINE_COLUMN]
    s = s.filter(~line_bad)

    # -- pivot to one row per (gpu, block, occurrence)
    s = s.with_columns(occ=pl.int_range(pl.len()).over("gpu", "name", "block"))
    out_cols = [c for c in _OUTPUT_ORDER if c in targets]
    aggs = [
        pl.col(LINE_COLUMN).min(),
        pl.col("val").filter(pl.col("target") == power_src).first().alias("power_w"),
        *[pl.col("val").filter(pl.col("target") == c).first().alias(c) for c in out_cols],
        pl.col("ts_line").filter(pl.col("target") == power_src).first().alias("ts_power"),
        pl.col("ts_line").min().alias("ts_min"),
        pl.col("block_ts").first(),
        pl.col("model").drop_nulls().first(),
    ]
    rows = s.group_by("gpu", "block", "occ", maintain_order=True).agg(aggs).sort(LINE_COLUMN)

    timed = has_comment_ts or bool(s["ts_line"].is_not_null().any())
    notes: list[str] = []
    if timed:
        rows = rows.with_columns(ts=pl.coalesce("ts_power", "ts_min", "block_ts"))
    else:
        key = pl.col("block") * (pl.col("occ").max() + 1) + pl.col("occ")
        scrape = rows.select((key.rank("dense") - 1).alias("k"))["k"]
        rows = rows.with_columns(
            ts=sweep_times(scrape, opts, path, "dcgm-exporter scrape log")
        )
        notes.append(f"untimed scrapes: timestamps are --start + k * --interval ({opts.interval_s} s)")

    untimed_rows = rows.filter(pl.col("ts").is_null())[LINE_COLUMN]
    quality.rows_read = rows.height + len(bad_grammar) + len(bad_lines)
    all_bad = pl.concat([bad_grammar, bad_lines, untimed_rows]).sort()
    exclude_lines(quality, "unparsable_row", all_bad, path)
    rows = rows.filter(pl.col("ts").is_not_null())

    models: dict[str, str] = {}
    for gpu, model in rows.filter(pl.col("model").is_not_null()).unique("gpu", keep="first", maintain_order=True).select(
        "gpu", "model"
    ).iter_rows():
        models[gpu] = model
    if power_src == "power155":
        names = set(models.values()) or {opts.gpu_model}
        power = nvml_power_semantics(names, "DCGM_FI_DEV_POWER_USAGE (155)", "instant")
        if "power157" in targets:
            notes.append("DCGM_FI_DEV_POWER_USAGE_INSTANT ignored: DCGM_FI_DEV_POWER_USAGE is used for power_w")
    else:
        power = PowerSemantics(kind="instant", field="DCGM_FI_DEV_POWER_USAGE_INSTANT (157)")
    if "energy_j" in targets:
        notes.append("TOTAL_ENERGY_CONSUMPTION (mJ) converted to energy_j in J")
    samples = finish_samples(rows)
    return SourceFrame(
        path=str(path),
        format="dcgm_exporter",
        samples=samples,
        quality=quality,
        power=power,
        gpu_models=models,
        notes=notes,
    )
