"""Reader for ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` logs.

What the logger writes, warts included (see ``../shared/real_traces``):

- a header ``timestamp, power.draw [W], utilization.gpu [%], ...`` (units in
  brackets), values with or without unit suffix (``208.36 W``, ``0 %``), even mixed
  in one file; ``, `` or ``,`` separators;
- local wall-clock timestamps without a zone, ``2025/07/26 23:32:09.703``;
- ``N/A``, ``[N/A]``, ``[Not Supported]``, ``[Unknown Error]`` for missing values;
- the header repeated mid-file when logs were concatenated;
- with ``-lms N`` and no ``index`` column, the GPUs come one row each per sweep in a
  fixed order (see :func:`infer_sweep_structure`).

Values with units (``69.32 W``) are parsed in one pass over the bytes by a Numba
kernel (:func:`tracekit.kernels.csvparse.scan_rows`, threads over byte ranges of large
files): it fills line numbers, local timestamps and values for the clean rows and
lists every other line (blank, repeated header, garbage, odd spellings), which goes
through the exact path below on a small buffer of just those lines; the two are merged
by line number.  The kernel accepts only a small grammar whose values provably equal
the exact path's (tests compare both on generated files); where it does not apply
(GPU names or uuids identify the GPUs, a repeated header, many odd lines, a unit with
digits) the exact path reads the whole file.

The exact path is vectorized.  Polars' CSV reader splits every line into columns (blank
lines kept as rows, so a row's position gives its line number); columns whose first
rows are plain numbers (``nounits``) it parses itself, the others stay String; large
such files take this path even when the kernel applies, as Polars' typed,
multi-threaded reader is the faster there.  Cheap
expressions with ``strict=False`` then parse the common spellings (fixed-width
timestamp, one leading space, `` W`` suffix); only the rows they leave null are
re-parsed exactly, and a value that is neither a number nor a null token marks the
row unparsable (or, outside the power column, becomes null).  A file whose typed
columns turn out to hold anything else is read again as text.  No Python loop runs
per row; the only Python loop is over irregular stretches of sweeps (late or
incomplete ones), which are rare.

Rows stay in file order (the common cleaning step sorts and counts reorders).
"""

from __future__ import annotations

import mmap
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from tracekit.errors import InputError, ParameterError
from tracekit.engine.local import default_workers
from tracekit.io.base import (
    GZIP_MAGIC,
    POWER_UNIT_SCALE,
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
from tracekit.schema import LINE_COLUMN, TS_DTYPE, PowerSemantics
from tracekit.specs import find_gpu_spec

FORMAT = "nvsmi_csv"

#: nvidia-smi's CSV timestamp, local time without zone.
TS_FORMAT = "%Y/%m/%d %H:%M:%S%.f"
#: The same with exactly three fraction digits, which Polars parses on a fast path.
TS_FORMAT_FAST = "%Y/%m/%d %H:%M:%S.%3f"
#: Other spellings tried for rows the nvidia-smi format does not parse.
TS_FALLBACK_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")

#: Power fields, in order of preference when several are present.
POWER_FIELDS = ("power.draw.instant", "power.draw", "power.draw.average")

#: Source field -> (canonical column, default unit of its values, dtype).
VALUE_FIELDS: dict[str, tuple[str, str | None, pl.DataType]] = {
    "clocks.sm": ("sm_clock_mhz", "MHz", pl.Float32()),
    "clocks.current.sm": ("sm_clock_mhz", "MHz", pl.Float32()),
    "clocks.mem": ("mem_clock_mhz", "MHz", pl.Float32()),
    "clocks.current.memory": ("mem_clock_mhz", "MHz", pl.Float32()),
    "utilization.gpu": ("gpu_util", "%", pl.Float32()),
    "utilization.memory": ("mem_util", "%", pl.Float32()),
    "temperature.gpu": ("temp_c", None, pl.Float32()),
    "total_energy_consumption": ("energy_j", "mJ", pl.Float64()),
}
ENERGY_UNIT_SCALE_J = {"mj": 1e-3, "j": 1.0, "kj": 1e3}

IDENTITY_FIELDS = {
    "index": "index",
    "uuid": "uuid",
    "gpu_uuid": "uuid",
    "pci.bus_id": "bus_id",
    "gpu_bus_id": "bus_id",
    "name": "name",
    "gpu_name": "name",
}

#: Field names that only nvidia-smi's query CSV has (used by the sniffer).
KNOWN_FIELDS = frozenset(
    {"timestamp", *POWER_FIELDS, *VALUE_FIELDS, *IDENTITY_FIELDS, "memory.used", "memory.total",
     "memory.free", "power.limit", "enforced.power.limit", "pstate", "clocks.gr", "driver_version",
     "fan.speed", "temperature.memory", "clocks_throttle_reasons.active"}
)

_HEADER_FIELD = re.compile(r"^(?P<name>.*?)\s*(?:\[(?P<unit>[^\]]*)\])?\s*$")
_TS_START = re.compile(r"^\s*\d{4}[/-]\d{2}[/-]\d{2}[ T]\d{2}:\d{2}:\d{2}")
_WATTS_VALUE = re.compile(r"^\s*[-+]?\d+(?:\.\d*)?\s*W\s*$")
_PLAIN_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_PLAIN_INT = re.compile(r"^\d+$")
#: Rows looked at to decide which columns the CSV reader may parse as numbers.
TYPED_SAMPLE_ROWS = 200

#: GPUs per sweep tried when inferring the sweep structure (sizes up to the common
#: one first; larger ones only when none of those fits).
MAX_GPUS_PER_SWEEP = 64
COMMON_GPUS_PER_SWEEP = 16
#: Boundary gaps must be this many times the within-sweep gaps to trust the structure.
MIN_SEPARATION = 3.0
#: Gaps are floored at the timestamps' resolution (1 ms) when compared.
GAP_FLOOR_NS = 1_000_000
#: Sweeps per window, and windows (overlapping, spread over the run), used to score a
#: candidate sweep size.
SWEEPS_PER_WINDOW = 4
SWEEP_WINDOWS = 17
#: A backward step of local time larger than this is a DST fall-back (or a restart).

_PREFIX = "c"  # polars column names c0, c1, ...
UTF8_BOM = b"\xef\xbb\xbf"
#: Byte-level fast path: threads at most, bytes per thread at least, odd lines (not
#: clean data rows) handed to the exact path at most (or 1 in 20 rows, if more).
FAST_MAX_THREADS = 4
FAST_SPLIT_BYTES = 1 << 20
FAST_ODD_LINES = 4096
#: Use the kernel also for large files whose value columns all hold plain numbers
#: (``nounits``); off because Polars' typed CSV reader is faster there (same results;
#: tests turn it on).  Files up to ``KERNEL_PLAIN_MAX_BYTES`` take the kernel anyway
#: (the typed reader's fixed costs dominate there).
KERNEL_FOR_PLAIN_NUMBERS = False
KERNEL_PLAIN_MAX_BYTES = 16 << 20
#: Bytes of the head whose rows decide that (values with units show in the first rows).
TYPED_PROBE_BYTES = 4096
#: Bytes read to find the header and name the columns of noheader files.
HEAD_BYTES = 256 * 1024


# -- detection --------------------------------------------------------------------------


def _split_header(line: str) -> list[tuple[str, str | None]]:
    out = []
    for raw in line.split(","):
        m = _HEADER_FIELD.match(raw.strip())
        name = (m.group("name") if m else raw).strip().lower()
        unit = m.group("unit").strip() if m and m.group("unit") is not None else None
        out.append((name, unit))
    return out


def _first_lines(head: str, n: int) -> list[str]:
    lines = []
    for line in head.splitlines():
        if line.strip():
            lines.append(line)
            if len(lines) >= n:
                break
    return lines


def _is_noheader_row(line: str) -> bool:
    fields = line.split(",")
    return len(fields) >= 2 and bool(_TS_START.match(fields[0])) and any(
        _WATTS_VALUE.match(f) for f in fields[1:]
    )


def sniff(head: str, path: Path) -> bool:
    """True when ``head`` looks like an nvidia-smi ``--query-gpu`` CSV.

    Parameters
    ----------
    head
        The first ~64 KiB of the decoded file.
    path
        The file (unused: detection is by content).

    Returns
    -------
    bool
        A header naming a power field (``power.draw [W]``, ``power.draw.instant``,
        ``power.draw.average``) or ``timestamp`` with another nvidia-smi field, whose
        first rows (if any) carry nvidia-smi timestamps (``2025/07/26 23:32:09.703``);
        the header may use a wrong delimiter (``;``, tab) so that :func:`read` can say
        so.  Also ``noheader`` files whose first row is
        ``<timestamp>, ..., <number> W, ...``.
    """
    lines = _first_lines(head, 6)
    if not lines:
        return False
    first = lines[0].lstrip("\ufeff")
    if _is_noheader_row(first):
        return True
    names = [n for n, _ in _split_header(re.sub(r"[;\t]", ",", first))]
    if not (set(names) & set(POWER_FIELDS)) and not ("timestamp" in names and len(set(names) & KNOWN_FIELDS) >= 2):
        return False
    # a generic CSV may name its columns alike: nvidia-smi's rows carry its timestamps
    rows = [re.split(r"[,;\t]", line) for line in lines[1:]]
    if "timestamp" not in names or not rows:
        return True
    i = names.index("timestamp")
    return any(len(r) > i and _TS_START.match(r[i]) for r in rows)


# -- header ------------------------------------------------------------------------------


@dataclass
class _Layout:
    """Where things are in the file: header fields and the line the data starts after."""

    names: list[str]
    units: list[str | None]
    header_text: str | None  # None for noheader files
    skip_lines: int  # raw lines before the header (or the first data row)
    header_line: int | None  # 1-based line number of the header


def _locate_start(data: bytes, path: Path) -> tuple[int, int]:
    """(lines to skip, byte offset) of the first non-blank line."""
    pos = 0
    skipped = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        end = n if end < 0 else end
        if data[pos:end].strip():
            return skipped, pos
        skipped += 1
        pos = end + 1
    if n >= HEAD_BYTES:
        raise InputError(f"no text in the first {HEAD_BYTES // 1024} KiB", path=str(path))
    raise InputError("empty file", path=str(path))


def _layout(data: bytes, path: Path) -> _Layout:
    skip, start = _locate_start(data, path)
    end = data.find(b"\n", start)
    first = decode_text(data[start : (len(data) if end < 0 else end)], path).rstrip("\r")
    line_no = skip + 1
    if _TS_START.match(first.split(",")[0]):
        return _noheader_layout(data, start, skip, path)
    if "," not in first:
        for sep, word in ((";", "';' (semicolon)"), ("\t", "tab")):
            if sep in first:
                raise InputError(
                    f"header is separated by {word}, not ','; nvidia-smi --format=csv writes "
                    f"comma-separated values (re-export with commas, or pass --format generic_csv): "
                    f"{first[:80]!r}",
                    path=str(path),
                    line=line_no,
                )
    fields = _split_header(first)
    names = [n for n, _ in fields]
    units = [u for _, u in fields]
    if "timestamp" not in names:
        raise InputError(
            f"no timestamp column in the nvidia-smi header (found: {', '.join(names)}); "
            "log with --query-gpu=timestamp,...",
            path=str(path),
            line=line_no,
        )
    return _Layout(names, units, first, skip, line_no)


def _noheader_layout(data: bytes, start: int, skip: int, path: Path) -> _Layout:
    """Name the columns of a ``noheader`` file from its first rows.

    Needs: the timestamp first and power values WITH their unit (``69.32 W``, i.e. not
    ``nounits``), in one column; a ``GPU-...`` column is taken as the uuid.  Other
    columns are ignored (they cannot be told apart without a header).
    """
    chunk = data[start : start + 64 * 1024]
    if len(data) > start + len(chunk) and b"\n" in chunk:  # cut at a line end
        chunk = chunk[: chunk.rfind(b"\n")]
    text = decode_text(chunk, path)
    rows = [r.rstrip("\r") for r in text.splitlines() if r.strip()][:200]
    k = len(rows[0].split(","))
    watts: set[int] = set()
    uuid: set[int] = set()
    for r in rows:
        fields = r.split(",")
        if len(fields) != k:
            continue
        for i, f in enumerate(fields[1:], start=1):
            if _WATTS_VALUE.match(f):
                watts.add(i)
            elif f.strip().startswith("GPU-"):
                uuid.add(i)
    if len(watts) != 1:
        raise InputError(
            "noheader nvidia-smi file: cannot tell which column is power "
            f"({'no' if not watts else len(watts)} column(s) with values like '69.32 W'); "
            "log with a header, or with units (not nounits)",
            path=str(path),
            line=skip + 1,
        )
    names = [f"_field{i}" for i in range(k)]
    units: list[str | None] = [None] * k
    names[0] = "timestamp"
    (p,) = watts
    names[p], units[p] = "power.draw", "W"
    if len(uuid) == 1:
        names[next(iter(uuid))] = "uuid"
    return _Layout(names, units, None, skip, None)


# -- value parsing ----------------------------------------------------------------------


def _null_token(s: pl.Expr) -> pl.Expr:
    """nvidia-smi's spellings of "no value": ``[N/A]``, ``[Not Supported]``, ``N/A``, ``""``."""
    return s.str.starts_with("[") | (s == "N/A") | (s == "")


def _stripped_expr(s: pl.Expr, unit: str | None) -> pl.Expr:
    """Text of a value without surrounding blanks and without its unit suffix.

    Only a trailing unit is removed (``208.36 W``); one in front (``W 208.36``) stays
    and makes the cast fail."""
    if unit:
        return s.str.strip_chars_end(" \t\r" + unit).str.strip_chars_start()
    return s.str.strip_chars()


# -- sweeps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepStructure:
    """How rows of a file without an index column group into sweeps.

    Attributes
    ----------
    gpus_per_sweep
        Rows (GPUs) per sweep.
    threshold_ns
        A gap at least this long between consecutive rows starts a new sweep; None
        where the timing shows no structure (rows are then assigned by position
        modulo ``gpus_per_sweep``).
    separation
        Typical boundary gap over typical within-sweep gap (1.0 when unknown).
    inferred
        True when ``gpus_per_sweep`` came from the timing, not from the user.
    boundary_ns
        Typical gap between the last row of a sweep and the first of the next (about
        the logging period); None when unknown.
    """

    gpus_per_sweep: int
    threshold_ns: float | None
    separation: float
    inferred: bool
    boundary_ns: float | None = None


def _window_scores(gaps_ns: NDArray[np.int64], n: int) -> NDArray[np.float64]:
    """Per window: (separation, boundary gap, within-sweep gap) for ``n`` GPUs.

    ``gaps_ns`` holds one window of gaps per row.  Each window's gaps are laid out in
    ``n`` columns; the boundary column is the one with the largest lower quartile, the
    within-sweep gap is the largest median of the other columns (floored at
    :data:`GAP_FLOOR_NS`).
    """
    count, size = gaps_ns.shape
    rows = size // n
    table = gaps_ns[:, : rows * n].reshape(count, rows, n)
    k25, k50 = (rows - 1) // 4, (rows - 1) // 2
    part = np.partition(table, (k25, k50), axis=1)
    q25, q50 = part[:, k25, :], part[:, k50, :].copy()
    phase = np.argmax(q25, axis=1)
    boundary = q25[np.arange(count), phase].astype(np.float64)
    q50[np.arange(count), phase] = 0
    within = np.maximum(q50.max(axis=1), GAP_FLOOR_NS).astype(np.float64)
    return np.column_stack([boundary / within, boundary, within])


def infer_sweep_structure(ts_ns: NDArray[np.int64], gpus_per_sweep: int | None = None) -> SweepStructure:
    """Infer how many GPUs one sweep of an index-less nvidia-smi log holds.

    Parameters
    ----------
    ts_ns
        Timestamps (any epoch, ns) of consecutive rows of one logger run, in file order.
    gpus_per_sweep
        Known GPUs per sweep (``--gpus-per-host``); only the gap threshold is inferred.

    Returns
    -------
    SweepStructure

    Notes
    -----
    ``nvidia-smi -lms P`` queries the GPUs one after the other (a few ms apart),
    then sleeps ``P``.  For a candidate sweep size ``n`` the row-to-row gaps are laid
    out in a table of ``n`` columns (one per position in the sweep).  With the right
    ``n`` one column holds the sweep boundaries: its lower quartile is about ``P``,
    while the median of every other column is a few ms.  Their ratio is the
    *separation*.  Quantiles make this robust to late sweeps (a delay inside a sweep
    affects a few percent of one column) and to jitter.  A divisor of the true ``n``
    mixes boundary and within-sweep gaps in its boundary column (low lower quartile);
    a multiple has a second boundary column (high median); a size that is neither
    spreads the boundaries over all columns.  Only the true size separates.
    Each window of four sweeps finds its own phase, and the score is the median over
    up to 17 windows spread over the run, so a lost row (which shifts the phase)
    spoils only the windows around it.  The smallest size whose
    separation is at least half the best is taken; with no size above
    :data:`MIN_SEPARATION` the rows are one GPU.  The gap that starts a new sweep is
    the geometric mean of the boundary and within-sweep gaps.  Sizes up to
    :data:`COMMON_GPUS_PER_SWEEP` are tried first, larger ones up to
    :data:`MAX_GPUS_PER_SWEEP` only when none of those separates; a size is tried only
    where the run holds two windows of sweeps (eight sweeps), so that a few late rows
    cannot fake a boundary column.  Shorter
    logs read as one GPU (with a warning when the gaps say otherwise): pass
    ``--gpus-per-host`` there.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    n_gaps = len(ts) - 1
    if gpus_per_sweep is not None and gpus_per_sweep < 1:
        raise ParameterError(f"gpus_per_host must be >= 1, got {gpus_per_sweep}")
    if n_gaps < 2:
        return SweepStructure(gpus_per_sweep or 1, None, 1.0, gpus_per_sweep is None)

    def score(n: int) -> tuple[float, float, float]:
        """Median over windows of (separation, boundary gap, within-sweep gap)."""
        size = min(n * SWEEPS_PER_WINDOW, n_gaps)
        count = min(SWEEP_WINDOWS, max(1, 2 * n_gaps // size - 1))
        starts = np.linspace(0, n_gaps - size, count).astype(np.int64)
        windows = ts[starts[:, None] + np.arange(size + 1)]
        scores = _window_scores(np.abs(np.diff(windows, axis=1)), n)
        sep, boundary, within = scores[np.argsort(scores[:, 0], kind="stable")[count // 2]]
        return float(sep), float(boundary), float(within)

    if gpus_per_sweep is not None:
        if gpus_per_sweep == 1 or gpus_per_sweep > n_gaps:
            return SweepStructure(gpus_per_sweep, None, 1.0, False)
        sep, boundary, within = score(gpus_per_sweep)
        if sep < MIN_SEPARATION:
            return SweepStructure(gpus_per_sweep, None, sep, False)
        return SweepStructure(gpus_per_sweep, float(np.sqrt(boundary * within)), sep, False, boundary)

    largest = min(MAX_GPUS_PER_SWEEP, n_gaps // (2 * SWEEPS_PER_WINDOW))
    # common sizes first; larger ones only when none of those separates
    scores = {n: score(n) for n in range(2, min(largest, COMMON_GPUS_PER_SWEEP) + 1)}
    if not scores or max(s[0] for s in scores.values()) < MIN_SEPARATION:
        scores.update({n: score(n) for n in range(COMMON_GPUS_PER_SWEEP + 1, largest + 1)})
    if not scores or max(s[0] for s in scores.values()) < MIN_SEPARATION:
        return SweepStructure(1, None, 1.0, True)
    best = max(s[0] for s in scores.values())
    n = min(c for c, s in scores.items() if s[0] >= 0.5 * best)
    sep, boundary, within = scores[n]
    return SweepStructure(n, float(np.sqrt(boundary * within)), sep, True, boundary)


def _group_runs(lengths: list[int], regular_gap: list[bool], n: int, at_end: bool) -> list[tuple[int, bool]]:
    """Partition an irregular stretch of runs into sweeps.

    ``regular_gap[r]`` says the gap before run ``r`` looks like an ordinary sweep
    boundary (about the logging period) rather than a delay inside a late sweep.
    Returns, per group of consecutive runs, (rows in the group, attributable).  Groups
    hold at most ``n`` rows (or one run); the partition maximizes complete sweeps
    (exactly ``n`` rows), then avoids joining runs across ordinary boundaries, then
    prefers fewer groups.  A group is attributable when it is complete, or when it is
    the block's last and incomplete (the logger stopped mid-sweep: its rows are the
    first GPUs in order).
    """
    k = len(lengths)
    best: list[tuple[int, int, int]] = [(0, 0, 0)] + [(-1, 0, 0)] * k
    back = [0] * (k + 1)
    for j in range(1, k + 1):
        total = 0
        joins = 0
        for i in range(j - 1, -1, -1):
            total += lengths[i]
            if i < j - 1:
                if total > n:
                    break
                joins += regular_gap[i + 1]
            cand = (best[i][0] + (1 if total == n else 0), best[i][1] - joins, best[i][2] - 1)
            if cand > best[j]:
                best[j], back[j] = cand, i
    groups = []
    j = k
    while j > 0:
        i = back[j]
        total = sum(lengths[i:j])
        groups.append((total, total == n or (at_end and j == k and total < n)))
        j = i
    return groups[::-1]


def sweep_positions(ts_ns: NDArray[np.int64], structure: SweepStructure) -> NDArray[np.int16]:
    """Position of each row in its sweep (the GPU's place in nvidia-smi's order).

    Parameters
    ----------
    ts_ns
        Timestamps of consecutive rows of one logger run, file order (ns).
    structure
        From :func:`infer_sweep_structure`.

    Returns
    -------
    numpy.ndarray
        int16 positions ``0 .. gpus_per_sweep - 1``; ``-1`` for rows of an incomplete
        sweep that cannot be attributed.

    Notes
    -----
    Gaps of at least ``threshold_ns`` (or backward steps as large) split the rows into
    runs.  A run of ``n`` rows (or a multiple) is complete.  Stretches of other runs
    (a late sweep split in two by a delay, a lost row, a truncated end) are grouped
    by :func:`_group_runs`; rows of incomplete groups get ``-1``, except a last,
    truncated sweep, whose rows are the first GPUs in order.
    """
    n = structure.gpus_per_sweep
    size = len(ts_ns)
    if n == 1:
        return np.zeros(size, dtype=np.int16)
    if structure.threshold_ns is None:
        return (np.arange(size, dtype=np.int64) % n).astype(np.int16)
    thr = int(np.ceil(structure.threshold_ns))
    boundary = structure.boundary_ns or structure.threshold_ns
    gaps = np.diff(np.asarray(ts_ns, dtype=np.int64))
    is_start = np.empty(size, dtype=bool)
    is_start[:1] = True
    np.greater_equal(np.abs(gaps), thr, out=is_start[1:])
    starts = np.flatnonzero(is_start)
    lengths = np.diff(np.append(starts, size))
    irregular = lengths % n != 0
    cycle = np.tile(np.arange(n, dtype=np.int16), size // n + 2)
    if not irregular.any():  # every run whole sweeps: the position cycles from row 0
        return cycle[:size].copy()
    # stretches of consecutive irregular runs
    idx = np.flatnonzero(irregular)
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    first_runs = idx[np.concatenate([[0], cut])]
    last_runs = idx[np.concatenate([cut - 1, [len(idx) - 1]])]
    # the usual case, a late sweep split in two runs that add up to n, is whole too
    pair = (last_runs - first_runs == 1) & (lengths[first_runs] + lengths[np.minimum(first_runs + 1, len(lengths) - 1)] == n)
    pos = np.empty(size, dtype=np.int16)
    row = 0  # rows before the next odd stretch are whole sweeps: the cycle restarts
    for first_run, last_run in zip(first_runs[~pair].tolist(), last_runs[~pair].tolist()):
        start = int(starts[first_run])
        pos[row:start] = cycle[: start - row]
        row = start
        # the gap before each run (a lone row has none; the first run's gap is unused)
        run_gaps = gaps[np.maximum(starts[first_run : last_run + 1] - 1, 0)] if len(gaps) else np.zeros(1, dtype=np.int64)
        regular = (np.abs(np.abs(run_gaps) - boundary) <= 0.2 * boundary).tolist()
        groups = _group_runs(lengths[first_run : last_run + 1].tolist(), regular, n, last_run == len(starts) - 1)
        for total, ok in groups:
            pos[row : row + total] = cycle[:total] if ok else -1
            row += total
    pos[row:] = cycle[: size - row]
    return pos


# -- time zones -------------------------------------------------------------------------


def _to_utc(
    ts_local: pl.Series, opts: ReadOptions, path: Path, lines: pl.Series, quality: DataQuality
) -> tuple[pl.Series, pl.Series | None]:
    """Local naive timestamps -> UTC (the shared rules of
    :func:`tracekit.io.generic.naive_to_utc`).  Returns (ts UTC, non-existent mask or
    None)."""
    from tracekit.io.generic import naive_to_utc

    ts, nonexistent = naive_to_utc(ts_local, opts, quality, path, lines)
    return ts.alias("ts"), nonexistent if bool(nonexistent.any()) else None


# -- power semantics --------------------------------------------------------------------


def _semantics(field: str, model: str | None) -> PowerSemantics:
    if field == "power.draw.instant":
        return PowerSemantics("instant", None, field)
    if field == "power.draw.average":
        return PowerSemantics("average", 1.0, field)
    spec = find_gpu_spec(model)
    if spec is None:
        return PowerSemantics("unknown", None, field)
    if spec.instant_power_draw:
        return PowerSemantics("instant", None, field)
    return PowerSemantics("average", 1.0, field)


def _pick_power(names: list[str], model: str | None) -> str | None:
    present = [f for f in POWER_FIELDS if f in names]
    if not present:
        return None
    if "power.draw.instant" in present:
        return "power.draw.instant"
    if "power.draw" in present and _semantics("power.draw", model).kind == "instant":
        return "power.draw"
    if "power.draw.average" in present:
        return "power.draw.average"
    return "power.draw"


# -- reading ----------------------------------------------------------------------------


def _open_source(path: Path) -> tuple[bytes | Path, bytes]:
    """(what Polars reads, the first bytes of the text).

    A plain file is handed to Polars by path (memory-mapped, no copy); a gzip or zstd
    file, or one with a UTF-8 byte-order mark, is decompressed into memory first."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=str(path)) from None
    if raw[:2] == GZIP_MAGIC or raw[:4] == ZSTD_MAGIC or raw[:3] == UTF8_BOM:
        data = read_bytes(path)
        if data[:3] == UTF8_BOM:
            data = data[3:]
        return data, data[:HEAD_BYTES]
    return path, raw


def _all_bytes(source: bytes | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    data = read_bytes(source)
    return data[3:] if data[:3] == UTF8_BOM else data


def _read_table(
    data: bytes | Path, layout: _Layout, path: Path, typed: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, bool]:
    """All lines from the header (or first row) on, split into columns c0, c1, ...:
    String, except the ``typed`` ones, which the CSV reader parses itself (a value that
    does not parse is null there).

    Returns (frame, ragged): ``ragged`` when some line has more fields than the header
    (the extra fields were dropped; field counts must then be checked line by line).
    """
    schema = {f"{_PREFIX}{i}": typed.get(f"{_PREFIX}{i}", pl.String()) for i in range(len(layout.names))}
    kwargs = dict(
        has_header=False, skip_lines=layout.skip_lines, schema=schema, quote_char=None,
        empty_string_is_null=False, infer_schema=False, raise_if_empty=False, ignore_errors=bool(typed),
    )
    try:
        return pl.read_csv(data, truncate_ragged_lines=False, **kwargs), False
    except pl.exceptions.PolarsError as exc:
        msg = str(exc)
        if "more fields" not in msg:
            _raise_csv_error(data, path, msg)
    try:
        return pl.read_csv(data, truncate_ragged_lines=True, **kwargs), True
    except pl.exceptions.PolarsError as exc:
        _raise_csv_error(data, path, str(exc))
    raise AssertionError("unreachable")


def _raise_csv_error(data: bytes | Path, path: Path, msg: str) -> None:
    if "utf-8" in msg.lower() or "utf8" in msg.lower():
        decode_text(_all_bytes(data), path)  # raises naming the line
    raise InputError(f"cannot split the file into CSV fields ({msg.splitlines()[0]})", path=str(path))


def _field_counts_ok(data: bytes | Path, layout: _Layout, height: int, path: Path) -> pl.Series:
    """Per line: exactly as many fields as the header (slow path for ragged files)."""
    lines = pl.read_csv(
        data, has_header=False, skip_lines=layout.skip_lines, schema={"l": pl.String},
        separator="\x1f", quote_char=None, truncate_ragged_lines=True, raise_if_empty=False,
    ).get_column("l")
    if len(lines) != height:  # should not happen; fall back to Python's view of lines
        text = decode_text(_all_bytes(data), path)
        raw = text.split("\n")[layout.skip_lines :]
        raw = raw[:height] + [""] * max(0, height - len(raw))
        lines = pl.Series("l", raw)
    return lines.fill_null("").str.count_matches(",", literal=True) == (len(layout.names) - 1)


def read(path: Path, opts: ReadOptions) -> SourceFrame:
    """Read an nvidia-smi ``--query-gpu`` CSV log into canonical samples.

    Parameters
    ----------
    path
        The file; gzip or zstd compressed files are read transparently.
    opts
        ``utc_offset_s`` or ``tz`` (local timestamps), ``gpus_per_host`` (index-less
        logs), ``host``, ``gpu_model`` (power semantics of ``power.draw``),
        ``power_unit`` (where the header gives no unit).

    Returns
    -------
    SourceFrame
        ``samples`` in file order with gpu, ts, power_w, the optional canonical columns
        the file has, and ``line``.  Rows that cannot be parsed (wrong field count,
        bad timestamp, garbage power) are counted as ``unparsable_row``; rows of
        sweeps that cannot be attributed to a GPU as ``unknown_gpu``; local times
        skipped by a DST change as ``nonexistent_local_time``.

    Raises
    ------
    InputError
        No power or timestamp column, a wrong delimiter, non-UTF-8 text, a header that
        changes mid-file, or no parsable row at all; the message names the file.
    """
    path = Path(path)
    if opts.utc_offset_s is not None and opts.tz:
        raise InputError("give either a UTC offset or a time zone, not both (--utc-offset / --tz)", path=str(path))
    data, head = _open_source(path)
    layout = _layout(head, path)
    names = layout.names
    col = {name: f"{_PREFIX}{i}" for i, name in reversed(list(enumerate(names)))}  # first wins
    if not any(f in col for f in POWER_FIELDS):
        raise InputError(
            "no power column (expected power.draw, power.draw.instant or power.draw.average); "
            f"found: {', '.join(n for n in names if n)}",
            path=str(path),
            line=layout.header_line,
        )
    quality = DataQuality()

    # -- which power column: power.draw means instant or 1 s average by GPU model ----
    frame = None
    model = opts.gpu_model
    if "name" in col:  # the first row's model name decides (read with the exact path)
        frame = _data_rows(data, layout, path, _typed_columns(head, layout, _wanted_types(col)))
        if frame.height:
            first_name = (frame.get_column(col["name"])[0] or "").strip()
            model = (first_name if find_gpu_spec(first_name) else None) or opts.gpu_model
    power_field = _pick_power(names, model) or "power.draw"

    p_unit = layout.units[names.index(power_field)]
    # canonical name -> (source column, unit suffix of its values, dtype)
    numbers: dict[str, tuple[str, str | None, pl.DataType]] = {
        "power_w": (col[power_field], p_unit or "W", pl.Float32())
    }
    energy_scale = 1.0
    for field, (canon, default_unit, dtype) in VALUE_FIELDS.items():
        if field in col and canon not in numbers:
            unit = layout.units[names.index(field)] or default_unit
            numbers[canon] = (col[field], unit, dtype)
            if canon == "energy_j":
                energy_scale = ENERGY_UNIT_SCALE_J.get((unit or "mJ").lower(), 1e-3)
    optional = [c for c in numbers if c != "power_w"]

    # -- parse: one-pass kernel for clean rows, exact expressions for the rest -------
    # (large files whose values are all plain numbers, nounits, parse faster in Polars'
    # own multi-threaded typed CSV reader; the kernel takes values with units)
    wanted = _wanted_types(col)
    size = len(data) if isinstance(data, bytes) else data.stat().st_size
    use_kernel = frame is None and (
        KERNEL_FOR_PLAIN_NUMBERS
        or size <= KERNEL_PLAIN_MAX_BYTES
        or len(_typed_columns(head[:TYPED_PROBE_BYTES], layout, wanted)) < len(wanted)
    )
    fast = _fast_parse(data, head, layout, col, numbers, path) if use_kernel else None
    if fast is not None:
        parsed, garbage, rows_read = fast
    else:
        if frame is None:
            frame = _data_rows(data, layout, path, _typed_columns(head, layout, wanted))
        rows_read = frame.height
        parsed, garbage = _parse_values(frame, col, numbers)
    quality.rows_read = rows_read
    scale = _power_scale(p_unit, opts, path, quality)
    if energy_scale != 1.0 and "energy_j" in parsed.columns:
        parsed = parsed.with_columns(pl.col("energy_j") * energy_scale)

    lines = parsed.get_column(LINE_COLUMN)
    unparsable = parsed.get_column("_local").is_null()
    if "power_w" in garbage:
        unparsable = unparsable | garbage.pop("power_w")
    if "_fields_ok" in parsed.columns:
        unparsable = unparsable | ~parsed.get_column("_fields_ok")
    n_bad = int(unparsable.sum())
    if rows_read and n_bad == rows_read:
        first = int(lines[0])
        raise InputError(
            f"none of the {rows_read} data row(s) could be parsed (expected a timestamp like "
            f"2025/07/26 23:32:09.703, a number in '{power_field}', {len(names)} fields per row); "
            f"first: {_line_text(data, head, first)!r}",
            path=str(path),
            line=first,
        )
    quality.exclude("unparsable_row", n_bad, _examples(path, lines, unparsable))

    # garbage in an optional column: the value becomes null, the row stays
    opt_bad = None
    for bad in garbage.values():
        opt_bad = bad if opt_bad is None else (opt_bad | bad)
    if opt_bad is not None:
        opt_bad = opt_bad & ~unparsable
        quality.repair("null_field", int(opt_bad.sum()), _examples(path, lines, opt_bad))
    del frame

    # -- GPU identity ------------------------------------------------------------------
    notes: list[str] = []
    gpu, unknown = _gpu_ids(parsed, default_host(path, opts), opts, notes, quality, path)
    if unknown is not None:
        unknown = unknown & ~unparsable
        quality.exclude("unknown_gpu", int(unknown.sum()), _examples(path, lines, unknown))

    # -- time -------------------------------------------------------------------------
    ts, nonexistent = _to_utc(parsed.get_column("_local"), opts, path, lines, quality)
    drop = unparsable if unknown is None else (unparsable | unknown)
    if nonexistent is not None:
        nonexistent = nonexistent & ~drop
        quality.exclude("nonexistent_local_time", int(nonexistent.sum()), _examples(path, lines, nonexistent))
        drop = drop | nonexistent

    power_w = parsed.get_column("power_w")
    if scale != 1.0:
        power_w = (power_w.cast(pl.Float64) * scale).cast(pl.Float32)
    columns = [gpu.alias("gpu"), ts.cast(TS_DTYPE), power_w.alias("power_w")]
    columns += [parsed.get_column(c) for c in optional] + [lines]
    if "_name" in parsed.columns:
        columns.append(parsed.get_column("_name"))
    out = pl.DataFrame(columns)
    samples = out.filter(~drop) if bool(drop.any()) else out

    gpu_models: dict[str, str] = {}
    if "_name" in samples.columns:
        named = (
            samples.lazy()
            .select("gpu", "_name")
            .filter(pl.col("_name").is_not_null() & ~_null_token(pl.col("_name")))
            .unique("gpu", keep="first", maintain_order=True)
            .collect()
        )
        gpu_models = dict(zip(named.get_column("gpu").to_list(), named.get_column("_name").to_list()))
        samples = samples.drop("_name")
    return SourceFrame(
        path=str(path),
        format=FORMAT,
        samples=samples,
        quality=quality,
        power=_semantics(power_field, model),
        gpu_models=gpu_models,
        notes=notes,
    )


def _source_bytes(data: bytes | Path) -> tuple[NDArray[np.uint8], mmap.mmap | None]:
    """The file's bytes as a uint8 array (a read-only memory map for plain files)."""
    if isinstance(data, bytes):
        return np.frombuffer(data, dtype=np.uint8), None
    try:
        with open(data, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return np.frombuffer(_all_bytes(data), dtype=np.uint8), None
    return np.frombuffer(mapped, dtype=np.uint8), mapped


def _line_start(head: bytes, line: int) -> int | None:
    """Byte offset where 0-based ``line`` starts, if it starts within ``head``."""
    pos = 0
    for _ in range(line):
        pos = head.find(b"\n", pos) + 1
        if pos <= 0:
            return None
    return pos if pos < len(head) else None


def _kernel_layout(
    layout: _Layout, col: dict[str, str], numbers: dict[str, tuple[str, str | None, pl.DataType]]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8], list[str]] | None:
    """(roles, kinds, strip sets, slot names) for :func:`tracekit.kernels.csvparse.scan_rows`;
    None where a unit could change what a number or null token reads (digits, ``.``,
    signs, ``[``, ``N``, ``/``, ``A`` or non-ASCII in it), so the exact path must parse."""
    from tracekit.kernels import csvparse

    roles = np.full(len(layout.names), csvparse.ROLE_IGNORED, dtype=np.int64)
    roles[int(col["timestamp"][len(_PREFIX) :])] = csvparse.ROLE_TIMESTAMP
    slots: list[tuple[str, int, str | None, bool]] = []  # name, field, unit, integer
    for canon, (src, unit, dtype) in numbers.items():
        slots.append((canon, int(src[len(_PREFIX) :]), unit, False))
    if "index" in col:
        slots.append(("_index", int(col["index"][len(_PREFIX) :]), None, True))
    kinds = np.zeros((len(slots), 2), dtype=np.int64)
    strip = np.zeros((len(slots), 256), dtype=np.uint8)
    counts = {csvparse.KIND_F32: 0, csvparse.KIND_F64: 0, csvparse.KIND_I64: 0}
    for slot, (canon, field, unit, integer) in enumerate(slots):
        if roles[field] != csvparse.ROLE_IGNORED:
            return None
        roles[field] = slot
        if integer:
            kind = csvparse.KIND_I64
        else:
            kind = csvparse.KIND_F64 if numbers[canon][2] == pl.Float64 else csvparse.KIND_F32
        kinds[slot] = (kind, counts[kind])
        counts[kind] += 1
        if unit and not integer:
            if not unit.isascii() or any(c in unit for c in "0123456789.+-[N/A"):
                return None
            chars = " \t\r" + unit
        else:  # stripped of blanks on both sides
            chars = " \t\n\v\f\r"
        strip[slot, np.frombuffer(chars.encode(), dtype=np.uint8)] = 1
    return roles, kinds, strip, [s[0] for s in slots]


def _split_ranges(buf: NDArray[np.uint8], start: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges of about equal size from ``start``, cut after newlines."""
    n = len(buf)
    cuts = [start]
    for i in range(1, parts):
        at = max(start + (n - start) * i // parts, cuts[-1])
        newlines = np.flatnonzero(buf[at : at + (64 << 10)] == 10)
        if not len(newlines):
            break
        cuts.append(at + int(newlines[0]) + 1)
    cuts.append(n)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _fast_parse(
    data: bytes | Path,
    head: bytes,
    layout: _Layout,
    col: dict[str, str],
    numbers: dict[str, tuple[str, str | None, pl.DataType]],
    path: Path,
) -> tuple[pl.DataFrame, dict[str, pl.Series], int] | None:
    """What :func:`_parse_values` gives (and rows read), from one pass of the
    byte-level kernel over the file; odd lines (anything but a clean data row) go
    through the exact path on a small buffer of just those lines.

    None where this path does not apply and the exact path must read the whole file:
    identity columns other than ``index`` in use, a repeated header, many odd lines, a
    unit that could change a number, or an error on the odd lines (the exact path
    then reports it with the right line).
    """
    from tracekit.kernels import csvparse

    if "name" in col or ("index" not in col and any(f in col for f in ("uuid", "gpu_uuid", "pci.bus_id", "gpu_bus_id"))):
        return None
    spec = _kernel_layout(layout, col, numbers)
    if spec is None:
        return None
    roles, kinds, strip, slot_names = spec
    has_header = layout.header_text is not None
    start = _line_start(head, layout.skip_lines + has_header)
    if start is None:
        return None
    header_first = (layout.header_text.split(",")[0] if has_header else "").encode()
    first_line = layout.skip_lines + 1 + has_header
    k = len(layout.names)
    n_kind = np.bincount(kinds[:, 0], minlength=3) if len(kinds) else np.zeros(3, dtype=np.int64)
    buf, mapped = _source_bytes(data)
    try:
        parts = min(FAST_MAX_THREADS, default_workers(), max(1, (len(buf) - start) // FAST_SPLIT_BYTES))
        ranges = _split_ranges(buf, start, parts)

        def scan(rng: tuple[int, int]) -> tuple:
            a, b = rng
            cap = (b - a) // (csvparse.TS_LENGTH + 2 * (k - 1)) + 1
            out = (
                np.empty(cap, dtype=np.int64),
                np.empty(cap, dtype=np.int64),
                np.empty((n_kind[csvparse.KIND_F32], cap), dtype=np.float32),
                np.empty((n_kind[csvparse.KIND_F64], cap), dtype=np.float64),
                np.empty((n_kind[csvparse.KIND_I64], cap), dtype=np.int64),
                np.empty((FAST_ODD_LINES + cap // 64, 3), dtype=np.int64),
            )
            counts = csvparse.scan_rows(buf, a, b, k, roles, kinds, strip, np.frombuffer(header_first, dtype=np.uint8), *out)
            return counts, out

        if len(ranges) == 1:
            results = [scan(ranges[0])]
        else:
            with ThreadPoolExecutor(len(ranges)) as pool:
                results = list(pool.map(scan, ranges))
        n_clean = sum(r[0][0] for r in results)
        n_odd = sum(r[0][1] for r in results)
        if any(r[0][3] for r in results) or any(r[0][1] > len(r[1][5]) for r in results):
            return None  # repeated header, or more odd lines than listed
        if n_clean == 0 or n_odd > max(FAST_ODD_LINES, n_clean // 20):
            return None
        line_base = first_line
        line_parts, odd_parts = [], []
        for (clean, odd, lines, _), out in results:
            line_parts.append(out[0][:clean] + line_base)
            odd_rows = out[5][:odd].copy()
            odd_rows[:, 2] += line_base
            odd_parts.append(odd_rows)
            line_base += lines

        def joined(i: int, row: int | None = None) -> np.ndarray:
            arrays = [out[i][:clean] if row is None else out[i][row, :clean] for (clean, *_), out in results]
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

        columns = [
            pl.Series(LINE_COLUMN, np.concatenate(line_parts).astype(np.uint32)),
            pl.Series("_local", joined(1)).cast(pl.Datetime("ns")),
        ]
        output = {csvparse.KIND_F32: 2, csvparse.KIND_F64: 3, csvparse.KIND_I64: 4}
        for name, (kind, row) in zip(slot_names, kinds.tolist()):
            values = pl.Series(name, joined(output[kind], row))
            if kind != csvparse.KIND_I64 and values.is_nan().any():
                values = values.fill_nan(None)  # null tokens
            columns.append(values)
        fast = pl.DataFrame(columns)
        odd = np.concatenate(odd_parts)
        if not len(odd):
            return fast, {}, fast.height
        odd_text = b"\n".join(buf[a:b].tobytes() for a, b in odd[:, :2].tolist())
    finally:
        del buf
        if mapped is not None:
            mapped.close()
    return _merge_odd_rows(fast, odd_text, odd[:, 2], head, start, layout, col, numbers, path)


def _merge_odd_rows(
    fast: pl.DataFrame,
    odd_text: bytes,
    odd_lines: NDArray[np.int64],
    head: bytes,
    start: int,
    layout: _Layout,
    col: dict[str, str],
    numbers: dict[str, tuple[str, str | None, pl.DataType]],
    path: Path,
) -> tuple[pl.DataFrame, dict[str, pl.Series], int] | None:
    """Parse the odd lines with the exact path (after the header, so they read as in
    the whole file) and merge them with the kernel's rows by line number."""
    has_header = layout.header_text is not None
    prefix = b""
    if has_header:
        header_start = _line_start(head, layout.skip_lines) or 0
        prefix = head[header_start:start]  # the header line with its newline
    sub_layout = _Layout(layout.names, layout.units, layout.header_text, 0, 1 if has_header else None)
    try:
        frame = _data_rows(prefix + odd_text, sub_layout, path)
    except InputError:
        return None  # the exact path on the whole file says where
    if "_block" in frame.columns:
        return None
    parsed, garbage = _parse_values(frame, col, numbers)
    sub_lines = odd_lines[parsed.get_column(LINE_COLUMN).to_numpy().astype(np.int64) - (1 + has_header)]
    parsed = parsed.with_columns(pl.Series(LINE_COLUMN, sub_lines.astype(np.uint32)))
    if "_index" in fast.columns:
        parsed = parsed.drop([c for c in ("_uuid", "_bus_id") if c in parsed.columns])
        parsed = parsed.with_columns(pl.col("_index").cast(pl.Int64, strict=False))
    n_fast, n_odd = fast.height, parsed.height
    if "_fields_ok" in parsed.columns:  # clean rows have all their fields
        fast = fast.with_columns(pl.lit(True).alias("_fields_ok"))
    merged = pl.concat([fast, parsed], how="diagonal")
    fast_lines = fast.get_column(LINE_COLUMN).to_numpy()
    odd_pos = np.searchsorted(fast_lines, sub_lines) + np.arange(n_odd)
    fast_pos = np.ones(n_fast + n_odd, dtype=bool)
    fast_pos[odd_pos] = False
    order = np.empty(n_fast + n_odd, dtype=np.int64)
    order[fast_pos] = np.arange(n_fast)
    order[odd_pos] = n_fast + np.arange(n_odd)
    merged = merged[order]
    full_garbage = {}
    for canon, bad in garbage.items():
        mask = np.zeros(n_fast + n_odd, dtype=bool)
        mask[odd_pos] = bad.to_numpy()
        full_garbage[canon] = pl.Series(mask)
    return merged, full_garbage, n_fast + frame.height


def _wanted_types(col: dict[str, str]) -> dict[str, pl.DataType]:
    """Source column -> dtype of the columns the CSV reader may parse itself."""
    wanted: dict[str, pl.DataType] = {}
    for name, column in col.items():
        if name in POWER_FIELDS:
            wanted[column] = pl.Float32()
        elif name in VALUE_FIELDS:
            wanted[column] = VALUE_FIELDS[name][2]
        elif name == "index":
            wanted[column] = pl.Int64()
    return wanted


def _parse_values(
    frame: pl.DataFrame, col: dict[str, str], numbers: dict[str, tuple[str, str | None, pl.DataType]]
) -> tuple[pl.DataFrame, dict[str, pl.Series]]:
    """The exact path: split rows (:func:`_data_rows`) -> ``line``, ``_local`` (naive
    local time), the canonical number columns, identity columns (``_index``, ...) and
    ``_fields_ok`` / ``_block`` where present; and per number column where its text is
    garbage (absent when nowhere)."""
    ts_col = col["timestamp"]
    exprs: list[pl.Expr] = [
        pl.col(LINE_COLUMN),
        pl.col(ts_col).str.strptime(pl.Datetime("ns"), TS_FORMAT_FAST, strict=False, cache=False).alias("_local"),
    ]
    for canon, (src, unit, dtype) in numbers.items():
        if frame.schema[src].is_numeric():  # parsed by the CSV reader already
            exprs.append(pl.col(src).cast(dtype).alias(canon))
        else:
            exprs.append(_fast_number(src, unit, dtype).alias(canon))
    for name, key in IDENTITY_FIELDS.items():
        if name in col and f"_{key}" not in {e.meta.output_name() for e in exprs}:
            ident = pl.col(col[name])
            exprs.append((ident if frame.schema[col[name]].is_numeric() else ident.str.strip_chars()).alias(f"_{key}"))
    exprs += [pl.col(c) for c in ("_fields_ok", "_block") if c in frame.columns]
    parsed = frame.lazy().select(exprs).collect()

    # values the fast paths missed: exact parsing on those rows only
    parsed = _retry_timestamps(parsed, frame.get_column(ts_col))
    garbage: dict[str, pl.Series] = {}
    for canon, (src, unit, dtype) in numbers.items():
        parsed, bad = _retry_numbers(parsed, frame.get_column(src), canon, unit, dtype)
        if bad is not None:
            garbage[canon] = bad
    return parsed, garbage


def _data_rows(
    data: bytes | Path, layout: _Layout, path: Path, typed: dict[str, pl.DataType] | None = None
) -> pl.DataFrame:
    """The data rows (columns c0..), with ``line`` and, where they apply, ``_fields_ok``
    (exactly as many fields as the header) and ``_block`` (logger run, counted by
    repeated headers).

    Blank lines and repeated headers are dropped.  Both are found among the few rows
    whose second field is empty or whose first field equals the header's, so the
    common path is a slice, not a filter.  With ``typed`` columns (plain numbers in
    the first rows) the file must turn out clean: no null in a typed column outside
    blank and header lines, no repeated header, no ragged line; otherwise it is read
    again with String columns.
    """
    typed = typed or {}
    table, ragged = _read_table(data, layout, path, typed)
    if typed and ragged:
        return _data_rows(data, layout, path)
    offset = layout.skip_lines + 1
    k = len(layout.names)
    height = table.height
    table = table.with_row_index(LINE_COLUMN, offset=offset)
    c0 = table.get_column(f"{_PREFIX}0")

    def empty(i: int) -> pl.Expr:  # a field that was not there (or empty)
        name = f"{_PREFIX}{i}"
        return pl.col(name).is_null() if name in typed else (pl.col(name) == "")

    special = table.select(empty(1)).to_series() if k > 1 else pl.Series(np.ones(height, dtype=bool))
    is_header = None
    if layout.header_text is not None:
        is_header = c0 == layout.header_text.split(",")[0]
        special = special | is_header
    idx = special.arg_true().to_numpy()
    drop = np.zeros(0, dtype=np.int64)
    if typed:
        nulls = table.select(pl.col(c).null_count() for c in typed).row(0)
        if max(nulls) > len(idx):  # a value the reader could not parse: read as text
            return _data_rows(data, layout, path)
    if len(idx):
        sub = table[idx]
        blank = sub.select(
            (pl.col(f"{_PREFIX}0").str.strip_chars() == "")
            & pl.all_horizontal([empty(i) for i in range(1, k)] or [pl.lit(True)])
        ).to_series().to_numpy()
        headers = sub.get_column(f"{_PREFIX}0") == layout.header_text.split(",")[0] if is_header is not None else None
        keep_out = blank | (headers.to_numpy() if headers is not None else False)
        drop = idx[keep_out]
        if typed and (len(drop) < len(idx) or (headers is not None and int(headers.sum()) > 1)):
            return _data_rows(data, layout, path)  # odd rows among the typed: read as text
        if headers is not None and int(headers.sum()) > 1:
            _check_repeated_headers(sub.filter(headers), layout, path)
            table = table.with_columns(is_header.cast(pl.Int32).cum_sum().alias("_block"))
    if ragged:
        table = table.with_columns(_field_counts_ok(data, layout, height, path).alias("_fields_ok"))
    if len(drop) == 0:
        frame = table
    elif np.array_equal(drop, np.arange(len(drop))):
        frame = table.slice(len(drop))
    else:
        mask = np.ones(height, dtype=bool)
        mask[drop] = False
        frame = table.filter(pl.Series(mask))
    if not ragged:
        last = max((i for i, n in enumerate(layout.names) if n), default=0)
        if last > 0 and f"{_PREFIX}{last}" not in typed:  # typed: nulls were ruled out
            frame = frame.with_columns((pl.col(f"{_PREFIX}{last}") != "").alias("_fields_ok"))
    return frame


def _typed_columns(head: bytes, layout: _Layout, wanted: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The ``wanted`` columns whose values in the first rows are all plain numbers
    (``85.59``: no blank, no unit), which the CSV reader can parse itself."""
    if not wanted:
        return {}
    text = head.decode("utf-8", errors="replace")
    lines = text.split("\n")[layout.skip_lines + (layout.header_text is not None) :][:TYPED_SAMPLE_ROWS + 1]
    rows = [ln.rstrip("\r").split(",") for ln in lines[:-1] if ln.strip()]  # the last may be cut
    k = len(layout.names)
    if not rows or any(len(r) != k for r in rows):
        return {}
    out = {}
    for name, dtype in wanted.items():
        i = int(name[len(_PREFIX) :])
        pattern = _PLAIN_INT if dtype.is_integer() else _PLAIN_NUMBER
        if all(pattern.match(r[i]) for r in rows):
            out[name] = dtype
    return out


def _fast_number(column: str, unit: str | None, dtype: pl.DataType) -> pl.Expr:
    """The common spellings parsed cheaply: one leading space (nvidia-smi's ``, ``
    separator) and a `` <unit>`` suffix are removed where present.  Anything else
    (more blanks, ``15W``, a unit in front, garbage) is null here and re-parsed exactly
    by :func:`_retry_numbers`."""
    s = pl.col(column).str.strip_prefix(" ")
    if unit:
        s = s.str.strip_suffix(f" {unit}")
    return s.cast(dtype, strict=False)


def _retry_numbers(
    parsed: pl.DataFrame, text: pl.Series, canon: str, unit: str | None, dtype: pl.DataType
) -> tuple[pl.DataFrame, pl.Series | None]:
    """Re-parse the values the fast path left null; return the frame and where the text
    is garbage (neither a number nor a null token), or None when there is none."""
    nulls = parsed.get_column(canon).is_null()
    if not bool(nulls.any()):
        return parsed, None
    idx = nulls.arg_true()
    cleaned = pl.select(_stripped_expr(pl.lit(text.gather(idx)), unit).alias("s")).to_series()
    value = cleaned.cast(dtype, strict=False)
    if value.null_count() < len(value):
        parsed = parsed.with_columns(parsed.get_column(canon).scatter(idx, value))
    bad = (value.is_null() & ~pl.select(_null_token(pl.lit(cleaned))).to_series()).to_numpy()
    if not bad.any():
        return parsed, None
    out = np.zeros(parsed.height, dtype=bool)
    out[idx.to_numpy()[bad]] = True
    return parsed, pl.Series(out)


def _power_scale(unit: str | None, opts: ReadOptions, path: Path, quality: DataQuality) -> float:
    if unit is None:
        return power_scale(opts.power_unit, path)
    for name, scale in POWER_UNIT_SCALE.items():
        if unit.lower() == name.lower():
            if opts.power_unit is not None and power_scale(opts.power_unit, path) != scale:
                quality.warn(f"{path}: the header gives power in [{unit}]; --power-unit {opts.power_unit} ignored")
            return scale
    raise InputError(f"power column unit [{unit}] is not W, mW or kW", path=str(path))


def _examples(path: Path, lines: pl.Series, mask: pl.Series) -> list[str]:
    if not bool(mask.any()):
        return []
    return [loc(path, int(x)) for x in lines.filter(mask).head(MAX_EXAMPLES)]


def _line_text(source: bytes | Path, head: bytes, line: int) -> str:
    """Text of one line (for error messages)."""
    data = head if head.count(b"\n") >= line else _all_bytes(source)
    pos = 0
    for _ in range(line - 1):
        pos = data.find(b"\n", pos) + 1
        if pos <= 0:
            return ""
    end = data.find(b"\n", pos)
    return data[pos : (len(data) if end < 0 else end)].decode("utf-8", errors="replace").rstrip("\r")[:120]


def _check_repeated_headers(headers: pl.DataFrame, layout: _Layout, path: Path) -> None:
    """A header repeated mid-file is skipped; one with other columns is an error."""
    want = list(zip(layout.names, layout.units))
    fields = [c for c in headers.columns if c.startswith(_PREFIX)]
    for row in headers.select([*fields, LINE_COLUMN]).iter_rows():
        got = _split_header(",".join(v or "" for v in row[:-1]).rstrip(","))
        got += [("", None)] * (len(want) - len(got))
        if got != want:
            raise InputError(
                "the header changes mid-file (concatenated logs with different --query-gpu "
                "fields); split the file at this line",
                path=str(path),
                line=int(row[-1]),
            )


def _retry_timestamps(parsed: pl.DataFrame, text: pl.Series) -> pl.DataFrame:
    """Re-parse timestamps the fixed-width format missed (other fraction lengths, ISO
    spellings), on those rows only."""
    nulls = parsed.get_column("_local").is_null()
    if not bool(nulls.any()):
        return parsed
    idx = nulls.arg_true()
    raw = text.gather(idx).str.strip_chars()
    fixed = pl.select(
        pl.coalesce([pl.lit(raw).str.strptime(pl.Datetime("ns"), f, strict=False) for f in (TS_FORMAT, *TS_FALLBACK_FORMATS)])
    ).to_series()
    if fixed.null_count() == len(fixed):
        return parsed
    local = parsed.get_column("_local").scatter(idx, fixed)
    return parsed.with_columns(local)


def _gpu_ids(
    parsed: pl.DataFrame, host: str, opts: ReadOptions, notes: list[str], quality: DataQuality, path: Path
) -> tuple[pl.Series, pl.Series | None]:
    """(gpu id per row, rows whose GPU is unknown)."""
    for key in ("index", "uuid", "bus_id"):
        column = f"_{key}"
        if column not in parsed.columns:
            continue
        raw = parsed.get_column(column)
        if key == "index":
            number = raw.cast(pl.Int64, strict=False)
            ok = (number >= 0).fill_null(False)
            top = number.max() if ok.any() else 0
            if isinstance(top, int) and top < 4096:  # small ids: gather labels, no string concat
                labels = pl.Series([f"{host}/{i}" for i in range(top + 1)])
                return labels.gather(number.cast(pl.UInt32, strict=False)), ~ok
            value = number.cast(pl.String)
        else:
            ok = pl.select((~_null_token(pl.lit(raw))).fill_null(False)).to_series()
            value = raw
        gpu = pl.select(pl.lit(host + "/") + pl.lit(value)).to_series()
        return gpu, ~ok

    # No identity column: the position in the sweep, counted per logger run (a
    # repeated header starts a new run).
    local = parsed.get_column("_local")
    all_timed = local.null_count() == 0
    ts_all = local.to_numpy().view(np.int64)
    ok_idx = None if all_timed else np.flatnonzero(local.is_not_null().to_numpy())
    ts_ok = ts_all if ok_idx is None else ts_all[ok_idx]
    if "_block" in parsed.columns:
        block_ok = parsed.get_column("_block").to_numpy()
        block_ok = block_ok if ok_idx is None else block_ok[ok_idx]
        bounds = np.flatnonzero(np.diff(block_ok)) + 1
    else:
        bounds = np.array([], dtype=np.int64)
    edges = np.concatenate([[0], bounds, [len(ts_ok)]])
    spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    a, b = max(spans, key=lambda s: s[1] - s[0])
    structure = infer_sweep_structure(ts_ok[a:b], opts.gpus_per_host)
    if structure.inferred and structure.gpus_per_sweep == 1 and b - a > 2:
        # one GPU: most gaps are about the mean gap; several: most are much shorter
        gaps = np.abs(np.diff(ts_ok[a:b]))
        if np.median(gaps) < 0.25 * np.mean(gaps):
            quality.warn(
                f"{path}: no index column and the timing does not show how many GPUs each sweep "
                "holds; rows read as one GPU (pass --gpus-per-host)"
            )
    if structure.inferred and len(ts_ok) > 1:
        notes.append(
            f"no index column: {structure.gpus_per_sweep} GPU(s) per sweep inferred from the timing "
            f"(separation {structure.separation:.0f}x); pass --gpus-per-host to override"
        )
    elif structure.threshold_ns is None and structure.gpus_per_sweep > 1:
        notes.append("no index column and no clear sweep timing: GPUs assigned by row position")
    if len(spans) == 1:
        pos_ok = sweep_positions(ts_ok, structure)
    else:
        pos_ok = np.empty(len(ts_ok), dtype=np.int16)
        for a, b in spans:
            pos_ok[a:b] = sweep_positions(ts_ok[a:b], structure)
    if ok_idx is None:
        pos = pos_ok
    else:  # untimed rows (unparsable anyway) get -1 but are not "unknown GPU"
        pos = np.full(len(ts_all), -1, dtype=np.int16)
        pos[ok_idx] = pos_ok
    labels = pl.Series([f"{host}/{i}" for i in range(structure.gpus_per_sweep)])
    if pos_ok.min(initial=0) >= 0:  # every timed row attributed
        codes = pl.Series(pos.astype(np.uint32)) if ok_idx is None else pl.Series(pos).cast(pl.UInt32, strict=False)
        return labels.gather(codes), None
    gpu = labels.gather(pl.Series(pos).cast(pl.UInt32, strict=False))
    unknown = pos < 0
    if ok_idx is not None:
        unknown &= local.is_not_null().to_numpy()
    return gpu, pl.Series(unknown)
