"""The canonical sample and topology model.

Samples are long form, one row per sample, sorted by (gpu, ts):

======================  =====================  ======================================
column                  type                   meaning
======================  =====================  ======================================
gpu                     string                 ``<host>/<index>`` (UUID if no host)
ts                      datetime[ns, UTC]      sample time
power_w                 float32                power draw, watts
sm_clock_mhz ...        float32, optional      as the source has them
energy_j                float64, optional      cumulative energy counter
======================  =====================  ======================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import polars as pl

from tracekit.errors import SchemaError

TS_DTYPE = pl.Datetime("ns", "UTC")

REQUIRED_COLUMNS: dict[str, pl.DataType] = {
    "gpu": pl.String(),
    "ts": TS_DTYPE,
    "power_w": pl.Float32(),
}

OPTIONAL_COLUMNS: dict[str, pl.DataType] = {
    "sm_clock_mhz": pl.Float32(),
    "mem_clock_mhz": pl.Float32(),
    "gpu_util": pl.Float32(),
    "mem_util": pl.Float32(),
    "temp_c": pl.Float32(),
    "energy_j": pl.Float64(),
}

SAMPLE_COLUMNS: dict[str, pl.DataType] = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}

#: Source row number (1-based line in a text file, row index in a binary one),
#: carried from the readers through cleaning so anomalies can name file:line.
LINE_COLUMN = "line"

TOPOLOGY_COLUMNS: dict[str, pl.DataType] = {
    "gpu": pl.String(),
    "host": pl.String(),
    "rack": pl.String(),
    "row": pl.String(),
    "model": pl.String(),
    "tdp_w": pl.Float64(),
    "job": pl.String(),
}

PowerKind = Literal["instant", "average", "unknown"]


@dataclass(frozen=True)
class PowerSemantics:
    """What a source's power number means.

    ``kind`` is ``instant`` (a reading at the sample time), ``average`` (a moving
    average over ``window_s`` seconds, e.g. NVML ``power.draw`` on Hopper) or
    ``unknown``.  ``field`` names the source field (``power.draw``, DCGM 155...).
    """

    kind: PowerKind = "unknown"
    window_s: float | None = None
    field: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def canonical_samples(df: pl.DataFrame, *, keep_line: bool = False) -> pl.DataFrame:
    """Cast a frame to the canonical sample schema, in canonical column order.

    Raises SchemaError when a required column is missing.  Unknown columns are dropped
    (``line`` is kept when ``keep_line``).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"samples lack required column(s) {missing}; have {df.columns}")
    exprs = []
    for name, dtype in SAMPLE_COLUMNS.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype))
    if keep_line and LINE_COLUMN in df.columns:
        exprs.append(pl.col(LINE_COLUMN).cast(pl.UInt32))
    return df.select(exprs)


def empty_samples(columns: list[str] | None = None) -> pl.DataFrame:
    names = columns or list(REQUIRED_COLUMNS)
    return pl.DataFrame(schema={n: SAMPLE_COLUMNS[n] for n in names})


def canonical_topology(df: pl.DataFrame) -> pl.DataFrame:
    """Cast a topology frame to the canonical columns, filling what is derivable.

    host defaults to the part of ``gpu`` before the last ``/``; rack defaults to host;
    row defaults to rack.
    """
    if "gpu" not in df.columns:
        raise SchemaError(f"topology lacks a 'gpu' column; have {df.columns}")
    out = df
    if "host" not in out.columns:
        out = out.with_columns(host_from_gpu(pl.col("gpu")).alias("host"))
    if "rack" not in out.columns:
        out = out.with_columns(pl.col("host").alias("rack"))
    if "row" not in out.columns:
        out = out.with_columns(pl.col("rack").alias("row"))
    for name, dtype in TOPOLOGY_COLUMNS.items():
        if name not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=dtype).alias(name))
    return out.select([pl.col(n).cast(t) for n, t in TOPOLOGY_COLUMNS.items()]).sort("gpu")


def host_from_gpu(gpu: pl.Expr) -> pl.Expr:
    """``host/3`` -> ``host``; an id without ``/`` is its own host."""
    return (
        pl.when(gpu.str.contains("/", literal=True))
        .then(gpu.str.replace(r"/[^/]*$", ""))
        .otherwise(gpu)
    )
