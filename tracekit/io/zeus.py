"""Reader for Zeus / ML.ENERGY JSON power timelines.

::

    {"0": [[1719000000.00, 70.5], [1719000000.31, 412.0], ...], "1": [...]}

A GPU index (string, int-like or float-like key) maps to ``[unix_ts_s, watts]`` pairs.
Zeus keeps only the samples where the power changed, so a timeline is a step function:
each value holds until the next timestamp.  Wrappers are accepted: Zeus'
``PowerMonitor.get_all_power_timelines()`` dump ``{"device_instant": {...},
"device_average": {...}, "memory_average": {...}}`` (``device_instant`` is used, else
``device_average``), and ``{"power": {...}}``, ``{"gpu_power": {...}}``, ``{"timeline":
{...}}``.

``line`` is the 1-based ordinal of the ``[ts, W]`` pair in the file (GPUs in file order),
since JSON has no row lines.  ``quality.rows_read`` is the number of pairs; a pair that is
not ``[number, number-or-null]`` is excluded as ``unparsable_row``.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from pathlib import Path

import polars as pl

from tracekit.errors import InputError
from tracekit.io.base import ReadOptions, SourceFrame, decode_text, default_host, read_bytes
from tracekit.io.generic import exclude_lines, finish_samples
from tracekit.quality import DataQuality
from tracekit.schema import LINE_COLUMN, PowerSemantics

#: Wrapper keys holding ``{gpu: timeline}``, in order of preference.
WRAPPER_KEYS = ("device_instant", "gpu_power", "power", "power_timeline", "power_timelines",
                "timeline", "timelines", "gpu_power_timeline", "device_average")

_SNIFF_RE = re.compile(
    r'^\s*\{.*?"\s*:\s*\[\s*\[\s*-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\s*,\s*(?:-?\d|null)', re.S
)


SNIFF_CHARS = 4096


def sniff(head: str, path: Path) -> bool:
    """True for a JSON object whose first list value is a list of ``[number, number]``."""
    return bool(_SNIFF_RE.match(head[:SNIFF_CHARS]))


def _gpu_key(key: str) -> str:
    try:
        f = float(key)
    except ValueError:
        return key.strip()
    return str(int(f)) if math.isfinite(f) and f == int(f) else key.strip()


def _is_number(x) -> bool:
    return isinstance(x, (int, float, Decimal)) and not isinstance(x, bool)


#: Unix seconds representable as int64 nanoseconds (years 1677..2262).
_MAX_ABS_S = 9_200_000_000


def _ts_ns(x) -> int | None:
    """Unix seconds (int, float or Decimal) as int nanoseconds; None when not a time."""
    if not _is_number(x):
        return None
    if isinstance(x, float):
        if not math.isfinite(x) or abs(x) >= _MAX_ABS_S:
            return None
        return round(x * 1e9) if abs(x) < 1e6 else int(x) * 1_000_000_000 + round((x - int(x)) * 1e9)
    if isinstance(x, Decimal) and not x.is_finite():
        return None
    if abs(x) >= _MAX_ABS_S:
        return None
    return int(Decimal(x) * 1_000_000_000)


def _timelines(doc, path: Path) -> tuple[dict, str | None, list[str]]:
    """The ``{gpu: [[ts, W], ...]}`` mapping, the wrapper key used, ignored keys."""
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object {gpu: [[unix_ts, watts], ...]}", path=str(path))
    if doc and all(isinstance(v, list) for v in doc.values()):
        return doc, None, []
    for key in WRAPPER_KEYS:
        inner = doc.get(key)
        if isinstance(inner, dict) and all(isinstance(v, list) for v in inner.values()):
            return inner, key, [k for k in doc if k != key]
    raise InputError(
        "no GPU power timeline: expected {gpu: [[unix_ts, watts], ...]} or a wrapper with one of "
        f"{', '.join(WRAPPER_KEYS)}; found keys {', '.join(repr(str(k))[:40] for k in list(doc)[:10]) or 'none'}",
        path=str(path),
    )


def read(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read a Zeus power timeline JSON.

    Parameters
    ----------
    path
        The JSON file (plain, .gz or .zst).
    opts
        ``host`` (default: the file name) for GPU ids ``f"{host}/{index}"``.

    Returns
    -------
    SourceFrame
        Power semantics ``instant`` (field ``zeus``), or ``average`` for a
        ``device_average`` timeline; a note says the timeline is de-duplicated (a step
        function).
    """
    path = Path(path)
    text = decode_text(read_bytes(path), path)
    if not text.strip():
        raise InputError("empty file", path=str(path))
    try:
        # Decimal keeps the logged digits: 1719000000.1 s is exactly ...100 ms.
        doc = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    timelines, wrapper, ignored = _timelines(doc, path)
    host = default_host(path, opts)

    gpus: list[str] = []
    ts_ns: list[int] = []
    watts: list[float | None] = []
    lines: list[int] = []
    bad_lines: list[int] = []
    n = 0
    for key, timeline in timelines.items():
        gpu = f"{host}/{_gpu_key(str(key))}"
        for entry in timeline:
            n += 1
            ns = _ts_ns(entry[0]) if isinstance(entry, (list, tuple)) and len(entry) >= 2 else None
            if ns is not None and (entry[1] is None or _is_number(entry[1])):
                gpus.append(gpu)
                ts_ns.append(ns)
                w = entry[1]
                watts.append(None if w is None or (isinstance(w, float) and math.isnan(w)) else float(w))
                lines.append(n)
            else:
                bad_lines.append(n)

    quality = DataQuality(rows_read=n)
    exclude_lines(quality, "unparsable_row", pl.Series(bad_lines, dtype=pl.UInt32), path)
    frame = pl.DataFrame(
        {
            "gpu": pl.Series(gpus, dtype=pl.String),
            "ts": pl.Series(ts_ns, dtype=pl.Int64).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
            "power_w": pl.Series(watts, dtype=pl.Float64),
            LINE_COLUMN: pl.Series(lines, dtype=pl.UInt32),
        }
    )

    notes = ["Zeus timelines keep only power changes: each value holds until the next sample (step function)"]
    if wrapper:
        notes.append(f"timeline read from {wrapper!r}")
    if ignored:
        notes.append(f"ignored keys: {', '.join(map(str, ignored))}")
    if wrapper == "device_average":
        power = PowerSemantics(kind="average", window_s=None, field="zeus device_average")
    else:
        power = PowerSemantics(kind="instant", field="zeus")
    return SourceFrame(
        path=str(path),
        format="zeus_json",
        samples=finish_samples(frame),
        quality=quality,
        power=power,
        notes=notes,
    )
