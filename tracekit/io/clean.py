"""Cleaning shared by every reader: the same rules and counts for every format.

Order of the rules (each row is counted once, by the first rule that excludes it):

1. ``unparsable_row``: no timestamp.
2. ``missing_value``: power null or NaN.
3. ``implausible_power``: power infinite or above the plausible limit
   (``PLAUSIBLE_TDP_FACTOR`` x TDP where the model is known, else ``MAX_PLAUSIBLE_W``).
4. ``negative_power``: power below zero.
5. ``clock_jump``: a timestamp more than ``max_reorder_s`` before the latest one seen
   for that GPU (the logger's clock stepped back); excluded, since it would overlap
   data already read.  Smaller reorders are repaired by sorting
   (``non_monotonic_ts``, rows kept).
6. ``duplicate_ts``: a second row for the same (gpu, ts); the first is kept.

Gaps longer than ``max_gap_s`` are counted as repairs (``gap``): no row is dropped,
later stages treat the span as missing.  A whole file whose power looks like
milliwatts (median above ``MW_SUSPECT_W``) is an error suggesting ``--power-unit mW``.
"""

from __future__ import annotations

import polars as pl

from tracekit.errors import InputError
from tracekit.io.base import ReadOptions, SourceFrame, loc
from tracekit.quality import DataQuality
from tracekit.schema import LINE_COLUMN, canonical_samples
from tracekit.specs import find_gpu_spec

MAX_PLAUSIBLE_W = 3000.0
PLAUSIBLE_TDP_FACTOR = 2.5
MW_SUSPECT_W = 5000.0


def _examples(df: pl.DataFrame, mask: pl.Expr, path: str, n: int = 5) -> list[str]:
    if LINE_COLUMN not in df.columns:
        return []
    lines = df.filter(mask).get_column(LINE_COLUMN).head(n).to_list()
    return [loc(path, line) for line in lines]


def plausible_limit_w(model: str | None) -> float:
    spec = find_gpu_spec(model) if model else None
    return PLAUSIBLE_TDP_FACTOR * spec.tdp_w if spec else MAX_PLAUSIBLE_W


def clean_source(src: SourceFrame, opts: ReadOptions) -> tuple[pl.DataFrame, DataQuality]:
    """Apply the cleaning rules to one file's samples.

    Returns the canonical samples sorted by (gpu, ts) (with the ``line`` column kept)
    and the file's accounting with ``rows_used`` set.  Under ``opts.strict`` the first
    anomaly raises :class:`tracekit.errors.StrictError`.
    """
    path = src.path
    q = src.quality
    df = canonical_samples(src.samples, keep_line=True)
    if LINE_COLUMN not in df.columns:
        df = df.with_row_index(LINE_COLUMN, offset=1).with_columns(pl.col(LINE_COLUMN).cast(pl.UInt32))

    p = pl.col("power_w")
    rules: list[tuple[str, pl.Expr]] = [
        ("unparsable_row", pl.col("ts").is_null()),
        ("missing_value", p.is_null() | p.is_nan()),
    ]
    # A file of milliwatts read as watts: one clear error instead of 100 % exclusions.
    valid = df.filter(p.is_not_null() & p.is_finite() & (p > 0)).get_column("power_w")
    if len(valid) and opts.power_unit is None and float(valid.median()) > MW_SUSPECT_W:
        raise InputError(
            f"power values look like milliwatts (median {float(valid.median()):.0f} 'W'); "
            "pass --power-unit mW",
            path=path,
        )
    model = opts.gpu_model
    if model is None and src.gpu_models:
        model = next(iter(src.gpu_models.values()))
    limit = plausible_limit_w(model)
    rules.append(("implausible_power", p.is_infinite() | (p > limit)))
    rules.append(("negative_power", p < 0))

    keep = pl.lit(True)
    for kind, bad in rules:
        hit = keep & bad.fill_null(False)
        n = df.select(hit.sum()).item()
        if n:
            q.exclude(kind, n, _examples(df, hit, path))
        keep = keep & ~bad.fill_null(False)
    df = df.filter(keep)

    # Time order per GPU, in file order.
    if df.height:
        max_reorder_ns = int(opts.max_reorder_s * 1e9)
        df = df.with_columns(
            (pl.col("ts").cum_max().shift(1).over("gpu") - pl.col("ts"))
            .dt.total_nanoseconds()
            .fill_null(0)
            .alias("_back_ns")
        )
        jump = pl.col("_back_ns") > max_reorder_ns
        n_jump = df.select(jump.sum()).item()
        if n_jump:
            q.exclude("clock_jump", n_jump, _examples(df, jump, path))
            df = df.filter(~jump)
        back = pl.col("_back_ns") > 0
        n_back = df.select(back.sum()).item()
        if n_back:
            q.repair("non_monotonic_ts", n_back, _examples(df, back, path))
        df = df.drop("_back_ns").sort(["gpu", "ts"], maintain_order=True)

        dup = pl.struct("gpu", "ts").is_first_distinct().not_()
        n_dup = df.select(dup.sum()).item()
        if n_dup:
            q.exclude("duplicate_ts", n_dup, _examples(df, dup, path))
            df = df.filter(~dup)

        max_gap_ns = int(opts.max_gap_s * 1e9)
        gap = (pl.col("ts").diff().over("gpu").dt.total_nanoseconds() > max_gap_ns).fill_null(False)
        n_gap = df.select(gap.sum()).item()
        if n_gap:
            q.repair("gap", n_gap, _examples(df, gap, path))

    q.rows_used = df.height
    q.check_balance(path)
    if opts.strict:
        q.raise_if_strict(path)
    return df, q
