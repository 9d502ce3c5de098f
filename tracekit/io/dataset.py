"""The canonical on-disk dataset: ``manifest.json``, ``topology.parquet`` and Parquet
sample files sorted by (gpu, ts).

Encodings are chosen for decode speed (DESIGN.md, Data model): timestamps
``DELTA_BINARY_PACKED``, power ``BYTE_STREAM_SPLIT``, gpu ids dictionary-encoded, and
row groups of at most ``ROW_GROUP_ROWS`` rows, each holding one GPU's contiguous time
range, so a time-range read skips most groups by their ``ts`` statistics.

Everything is written into a temporary sibling folder and renamed into place at the
end: a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.engine.local import default_workers, map_ranges
from tracekit.engine.memory import release_freed_memory
from tracekit.errors import InputError, SchemaError, UnindexedError
from tracekit.quality import DataQuality
from tracekit.schema import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SAMPLE_COLUMNS,
    PowerSemantics,
    canonical_topology,
)

SCHEMA_VERSION = "tracekit.dataset/1"
MANIFEST = "manifest.json"
TOPOLOGY = "topology.parquet"
ROW_GROUP_ROWS = 128 * 1024
FILE_ROWS = 32 * 1024 * 1024

_ARROW_TYPES = {
    "gpu": pa.dictionary(pa.int32(), pa.string()),
    "ts": pa.timestamp("ns", tz="UTC"),
    "power_w": pa.float32(),
    "sm_clock_mhz": pa.float32(),
    "mem_clock_mhz": pa.float32(),
    "gpu_util": pa.float32(),
    "mem_util": pa.float32(),
    "temp_c": pa.float32(),
    "energy_j": pa.float64(),
}


def is_dataset(path: Path | str) -> bool:
    """True when ``path`` is a canonical dataset folder (has a tracekit manifest)."""
    p = Path(path) / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("schema") == SCHEMA_VERSION
    except (OSError, ValueError):
        return False


def _gpu_dictionary(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """gpu ids as one dictionary<int32, string> shared by every chunk (no string
    round trip when they already are a dictionary)."""
    if pa.types.is_dictionary(col.type):
        try:
            col = col.cast(target)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            col = col.cast(pa.string()).dictionary_encode().cast(target)
    else:
        col = col.cast(pa.string()).dictionary_encode().cast(target)
    return col.unify_dictionaries()


def _gpu_runs(col: pa.ChunkedArray) -> list[tuple[str, int, int]]:
    """(gpu, first row, row count) of each run of equal gpu ids; SchemaError when a
    GPU appears in two runs (rows not grouped by gpu)."""
    if col.num_chunks == 0:
        return []
    dictionary = col.chunk(0).dictionary
    indices = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks])
    starts = np.concatenate([[0], np.flatnonzero(np.diff(indices)) + 1])
    counts = np.diff(np.concatenate([starts, [len(indices)]]))
    names = dictionary.take(pa.array(indices[starts])).to_pylist()
    if len(set(names)) != len(names):
        seen, dup = set(), None
        for n in names:
            if n in seen:
                dup = n
                break
            seen.add(n)
        raise SchemaError(f"DatasetWriter.write: rows of GPU {dup!r} are not contiguous; sort by (gpu, ts)")
    return [(n, int(a), int(c)) for n, a, c in zip(names, starts, counts)]


def _to_arrow(frame) -> pa.Table:
    if isinstance(frame, pl.DataFrame):
        table = frame.to_arrow()
    elif isinstance(frame, pa.Table):
        table = frame
    else:
        raise SchemaError(f"DatasetWriter.write takes a Polars DataFrame or Arrow Table, not {type(frame).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise SchemaError(f"samples lack required column(s) {missing}; have {table.column_names}")
    cols, names = [], []
    for name in table.column_names:
        col = table.column(name)
        if name in _ARROW_TYPES:
            target = _ARROW_TYPES[name]
            if name == "gpu":
                col = _gpu_dictionary(col, target)
            else:
                col = col.cast(target)
        cols.append(col)
        names.append(name)
    # canonical columns first, in canonical order, then extras (e.g. truth columns)
    order = [n for n in SAMPLE_COLUMNS if n in names] + [n for n in names if n not in SAMPLE_COLUMNS]
    by_name = dict(zip(names, cols))
    return pa.table({n: by_name[n] for n in order})


class DatasetWriter:
    """Streams sorted sample batches into a canonical dataset folder.

    Parameters
    ----------
    dst
        Output folder; must not exist unless ``overwrite``.
    topology
        Topology frame (any subset of gpu, host, rack, row, model, tdp_w, job).
    power
        Power semantics of the samples.
    quality
        Data-quality accounting of the source (kept in the manifest so ``info`` on a
        converted dataset still shows what the raw input held).
    sources
        Descriptions of the raw sources (path, format, rows...).
    manifest_extra
        Extra keys merged into manifest.json (e.g. the generator's ground truth).

    Call :meth:`write` with successive frames sorted by (gpu, ts), whole GPUs at a time
    and GPUs in ascending order.
    """

    def __init__(
        self,
        dst: Path | str,
        *,
        topology: pl.DataFrame | None = None,
        power: PowerSemantics | None = None,
        quality: DataQuality | None = None,
        sources: list[dict] | None = None,
        manifest_extra: dict | None = None,
        overwrite: bool = False,
        row_group_rows: int = ROW_GROUP_ROWS,
        file_rows: int = FILE_ROWS,
        compression: str = "zstd",
    ):
        self.dst = Path(dst)
        if self.dst.exists() and not overwrite:
            raise InputError("output folder already exists (pass overwrite / --force)", path=str(self.dst))
        self.topology = topology
        self.power = power or PowerSemantics()
        self.quality = quality
        self.sources = sources or []
        self.manifest_extra = manifest_extra or {}
        self.overwrite = overwrite
        self.row_group_rows = int(row_group_rows)
        self.file_rows = int(file_rows)
        self.compression = compression
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.dst.name}.tmp-", dir=self.dst.parent))
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._files: list[dict] = []
        self._cur: dict | None = None
        self._gpus_seen: list[str] = []
        self._gpu_rows: list[int] = []
        self._closed = False

    # -- writing ---------------------------------------------------------------------
    def _open_file(self, schema: pa.Schema) -> None:
        name = f"part-{len(self._files):05d}.parquet"
        encodings = {"ts": "DELTA_BINARY_PACKED"}
        for field in schema:
            if pa.types.is_floating(field.type):
                encodings[field.name] = "BYTE_STREAM_SPLIT"
        self._writer = pq.ParquetWriter(
            self._tmp / name,
            schema,
            compression=self.compression,
            use_dictionary=["gpu"],
            column_encoding=encodings,
            write_statistics=True,
        )
        self._cur = {"file": name, "rows": 0, "gpus": 0, "ts_min": None, "ts_max": None}
        self._files.append(self._cur)

    def write(self, frame) -> None:
        """Append samples sorted by (gpu, ts); whole GPUs, GPUs in ascending order."""
        table = _to_arrow(frame)
        if table.num_rows == 0:
            return
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.select(self._schema.names).cast(self._schema)
        # one row group per GPU range (split into row_group_rows chunks)
        for gpu, a, n in _gpu_runs(table.column("gpu")):
            b = a + n - 1
            if self._gpus_seen and gpu <= self._gpus_seen[-1]:
                raise SchemaError(
                    f"DatasetWriter.write: GPU {gpu!r} arrives after {self._gpus_seen[-1]!r}; "
                    "write whole GPUs in ascending order"
                )
            self._gpus_seen.append(gpu)
            self._gpu_rows.append(int(b - a + 1))
            part = table.slice(a, b - a + 1)
            if self._writer is None or (self._cur["rows"] and self._cur["rows"] + part.num_rows > self.file_rows):
                self._close_file()
                self._open_file(self._schema)
            for start in range(0, part.num_rows, self.row_group_rows):
                chunk = part.slice(start, self.row_group_rows)
                self._writer.write_table(chunk, row_group_size=self.row_group_rows)
            ts = part.column("ts")
            lo, hi = ts[0].value, ts[part.num_rows - 1].value
            cur = self._cur
            cur["rows"] += part.num_rows
            cur["gpus"] += 1
            cur["ts_min"] = lo if cur["ts_min"] is None else min(cur["ts_min"], lo)
            cur["ts_max"] = hi if cur["ts_max"] is None else max(cur["ts_max"], hi)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- finishing -------------------------------------------------------------------
    def close(self) -> Path:
        """Write topology and manifest, then move the folder into place atomically."""
        if self._closed:
            return self.dst
        self._close_file()
        if self.topology is not None:
            topo = canonical_topology(self.topology)
        else:
            topo = canonical_topology(pl.DataFrame({"gpu": self._gpus_seen}, schema={"gpu": pl.String}))
        topo.write_parquet(self._tmp / TOPOLOGY)
        manifest = {
            "schema": SCHEMA_VERSION,
            "rows": sum(f["rows"] for f in self._files),
            "gpus": len(self._gpus_seen),
            # rows per GPU in file order: readers build CSR offsets without decoding gpu
            "gpu_rows": [[g, n] for g, n in zip(self._gpus_seen, self._gpu_rows)],
            "power": self.power.to_dict(),
            "files": self._files,
            "sources": self.sources,
            "quality": self.quality.to_dict() if self.quality is not None else None,
            "columns": list(self._schema.names) if self._schema is not None else list(REQUIRED_COLUMNS),
            **self.manifest_extra,
        }
        (self._tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if self.dst.exists():
            if not self.overwrite:
                raise InputError("output folder appeared while writing", path=str(self.dst))
            backup = self.dst.with_name(f".{self.dst.name}.old-{os.getpid()}")
            os.rename(self.dst, backup)
            os.rename(self._tmp, self.dst)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(self._tmp, self.dst)
        self._closed = True
        return self.dst

    def abort(self) -> None:
        self._close_file()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# -- reading -------------------------------------------------------------------------
def read_manifest(path: Path | str) -> dict:
    p = Path(path) / MANIFEST
    try:
        manifest = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable manifest ({exc})", path=str(p)) from None
    if manifest.get("schema") != SCHEMA_VERSION:
        raise InputError(f"not a tracekit dataset manifest (schema {manifest.get('schema')!r})", path=str(p))
    return manifest


def dataset_files(path: Path | str) -> list[Path]:
    manifest = read_manifest(path)
    files = [Path(path) / f["file"] for f in manifest["files"]]
    for f in files:
        if not f.is_file():
            raise InputError("sample file listed in manifest.json is missing", path=str(f))
    return files


def _files_and_columns(path: Path | str, columns: list[str] | None) -> tuple[list[Path], list[str]]:
    """The dataset's sample files and the columns to read (default: its canonical ones)."""
    files = dataset_files(path)
    have = read_manifest(path).get("columns") or list(REQUIRED_COLUMNS)
    return files, columns or [c for c in have if c in SAMPLE_COLUMNS]


def scan_dataset(path: Path | str, columns: list[str] | None = None) -> pl.LazyFrame:
    """A lazy scan of a dataset's samples (canonical columns, ``gpu`` as String)."""
    files, wanted = _files_and_columns(path, columns)
    if not files:
        return pl.DataFrame(schema={c: SAMPLE_COLUMNS[c] for c in wanted}).lazy()
    lf = pl.scan_parquet([str(f) for f in files])
    return lf.select([pl.col(c).cast(SAMPLE_COLUMNS[c]) if c in SAMPLE_COLUMNS else pl.col(c) for c in wanted])


def read_dataset_samples(path: Path | str, columns: list[str] | None = None) -> pl.DataFrame:
    """All samples of a dataset (sorted by gpu, ts as written)."""
    files, wanted = _files_and_columns(path, columns)
    if not files:
        return pl.DataFrame(schema={c: SAMPLE_COLUMNS[c] for c in wanted})
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f, columns=wanted, use_threads=default_workers() > 1))
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"truncated or corrupt Parquet file ({exc})", path=str(f)) from None
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    df = pl.from_arrow(table)
    return df.with_columns([pl.col(c).cast(SAMPLE_COLUMNS[c]) for c in wanted if c in SAMPLE_COLUMNS])


def _copy_column(table: pa.Table, name: str, out: np.ndarray, pos: int, path: Path) -> int:
    """Copy a non-null numeric/timestamp column into ``out[pos:]``; returns rows copied."""
    if name not in table.column_names:
        raise InputError(f"sample file lacks the {name} column", path=str(path))
    col = table.column(name)
    if col.null_count:
        raise InputError(f"column {name} has {col.null_count} null value(s); canonical datasets have none",
                         path=str(path))
    for chunk in col.chunks:
        if pa.types.is_timestamp(chunk.type):
            if chunk.type.unit != "ns":
                chunk = chunk.cast(pa.timestamp("ns", tz=chunk.type.tz))
            chunk = chunk.view(pa.int64())
        values = chunk.to_numpy(zero_copy_only=False)
        n = len(values)
        if pos + n > len(out):
            raise InputError("the files hold more rows than manifest.json says", path=str(path))
        out[pos: pos + n] = values
        pos += n
    return pos


def read_dataset_arrays(path: Path | str):
    """(gpus, offsets, ts_ns, power_w, manifest) of a dataset, read with pyarrow
    straight into preallocated NumPy arrays (one copy; Arrow's buffers are released
    after each row group).  With ``gpu_rows`` in the manifest the ``gpu`` column is
    not decoded at all (the CSR offsets come from the manifest) and the row groups
    are read on every core, each copied into its place as soon as it is decoded."""
    manifest = read_manifest(path)
    files = dataset_files(path)
    gpu_rows = manifest.get("gpu_rows")
    n_rows = int(manifest.get("rows") or sum(int(f["rows"]) for f in manifest["files"]))
    ts = np.empty(n_rows, dtype=np.int64)
    power = np.empty(n_rows, dtype=np.float32)
    if gpu_rows:
        gpus = [g for g, _ in gpu_rows]
        counts = np.array([n for _, n in gpu_rows], dtype=np.int64)
        if counts.sum() != n_rows:
            raise InputError(f"manifest.json gpu_rows add up to {counts.sum()}, not {n_rows}", path=str(path))
        offsets = np.zeros(len(gpus) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        _read_row_groups(path, files, offsets, ts, power)
    else:
        gpus, counts = _read_with_gpu_column(path, files, n_rows, ts, power)
        offsets = np.zeros(len(gpus) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
    release_freed_memory()  # what the row-group reads freed
    return gpus, offsets, ts, power, manifest


def _read_row_groups(path, files: list[Path], offsets: np.ndarray, ts: np.ndarray, power: np.ndarray) -> None:
    """Every row group of ``files`` (found from their footers) into its place in ``ts`` /
    ``power`` (see :func:`_read_groups_into`)."""
    groups: list[tuple[Path, int, int, int]] = []  # (file, row group, output position, rows)
    pos = 0
    for f in files:
        try:
            md = pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"truncated or corrupt Parquet file ({exc})", path=str(f)) from None
        for r in range(md.num_row_groups):
            groups.append((Path(f), r, pos, md.row_group(r).num_rows))
            pos += groups[-1][3]
    n_rows = int(offsets[-1])
    if pos != n_rows:
        raise InputError(f"manifest.json counts {n_rows} rows but the files hold {pos}", path=str(path))
    _read_groups_into(groups, offsets, ts, power)


def _read_groups_into(groups: list[tuple[Path, int, int, int]], offsets: np.ndarray, ts: np.ndarray,
                      power: np.ndarray) -> None:
    """Row groups ``(file, group, output position, rows)`` decoded (``ts``, ``power_w``)
    into their places in ``ts`` / ``power``, on a thread pool (each thread decodes its
    groups single-threaded and copies each into place at once), checking that each
    GPU's times (``offsets``: CSR rows per GPU of the output) are sorted: within each
    group, and across the joins of a GPU's consecutive groups."""

    def read(lo: int, hi: int) -> None:
        with contextlib.ExitStack() as files:  # each file opened once per thread, closed at the end
            opened: dict[Path, pq.ParquetFile] = {}
            for f, r, at, n in groups[lo:hi]:
                try:
                    if f not in opened:
                        opened[f] = files.enter_context(pq.ParquetFile(f))
                    table = opened[f].read_row_group(r, columns=["ts", "power_w"], use_threads=False)
                except (pa.ArrowInvalid, OSError, IndexError) as exc:
                    raise InputError(f"truncated or corrupt Parquet file ({exc})", path=str(f)) from None
                _place_group(table, f, r, at, n)

    def _place_group(table, f: Path, r: int, at: int, n: int) -> None:
        if table.num_rows != n:
            raise InputError(f"row group {r} holds {table.num_rows} rows, not the {n} of its footer when the "
                             "dataset was opened (the files changed?)", path=str(f))
        end = _copy_column(table, "ts", ts, at, f)
        _copy_column(table, "power_w", power, at, f)
        # the GPUs starting inside the group (a group may hold the end of one GPU and
        # the start of the next)
        inner = offsets[np.searchsorted(offsets, at, side="right"): np.searchsorted(offsets, end, side="left")]
        _check_sorted_group(ts[at:end], f, r, np.concatenate([[at], inner, [end]]).astype(np.int64) - at)

    map_ranges(read, np.array([g[3] for g in groups], dtype=np.float64))
    at = np.array([g[2] for g in groups], dtype=np.int64)
    joins = np.flatnonzero((at > 0) & (at < len(ts)) & ~np.isin(at, offsets))
    back = joins[ts[at[joins] - 1] > ts[at[joins]]]
    if len(back):
        f, r, _, _ = groups[int(back[0])]
        raise _groups_out_of_order(f, r)


def _groups_out_of_order(path, group: int, gpu: str | None = None) -> InputError:
    """The error for a row group that starts before its GPU's previous rows end (found
    from the index's statistics, which name the GPU, or from the rows read)."""
    of = f" (GPU {gpu})" if gpu is not None else ""
    return InputError(f"ts is not sorted: row group {group}{of} starts before the previous rows of its GPU end; "
                      "canonical datasets are sorted by (gpu, ts)", path=str(path))


def _check_sorted_group(ts: np.ndarray, path: Path, group: int, runs: np.ndarray | None = None) -> None:
    """InputError unless a row group's times are non-decreasing within each GPU's
    ``runs`` (CSR offsets in the group; None: one GPU).  The index checks the order of
    a GPU's groups."""
    from tracekit.kernels._validate import first_decrease

    i, _ = first_decrease(ts, runs)
    if i >= 0:
        raise InputError(f"ts is not sorted in row group {group} (row {i + 1} is earlier than row {i}); canonical "
                         "datasets are sorted by (gpu, ts)", path=str(path))


def _read_with_gpu_column(path, files: list[Path], n_rows: int, ts: np.ndarray,
                          power: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Files read one after the other with their ``gpu`` column: (GPUs in order,
    rows per GPU); the rows of a GPU must be contiguous."""
    gpu_parts = []
    pos = 0
    for f in files:
        try:
            table = pq.read_table(f, columns=["gpu", "ts", "power_w"], use_threads=default_workers() > 1)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"truncated or corrupt Parquet file ({exc})", path=str(f)) from None
        end = _copy_column(table, "ts", ts, pos, f)
        _copy_column(table, "power_w", power, pos, f)
        pos = end
        gpu_parts.append(table.column("gpu").cast(pa.string()))
        del table
    if pos != n_rows:
        raise InputError(f"manifest.json counts {n_rows} rows but the files hold {pos}", path=str(path))
    names = pl.from_arrow(pa.chunked_array([c for part in gpu_parts for c in part.chunks], type=pa.string()))
    runs = pl.DataFrame({"gpu": names}).group_by("gpu", maintain_order=True).len()
    if len(runs) != names.n_unique():
        raise InputError("samples are not grouped by gpu (not a canonical dataset)", path=str(path))
    counts = runs.get_column("len").to_numpy().astype(np.int64)
    from tracekit.kernels._validate import first_decrease

    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    i, run = first_decrease(ts, offsets)
    if i >= 0:
        g = runs.get_column("gpu")[run]
        raise InputError(f"ts of GPU {g} is not sorted (row {i + 1} is earlier than row {i}); canonical datasets are "
                         "sorted by (gpu, ts)", path=str(path))
    return runs.get_column("gpu").to_list(), counts


# -- reading by GPU batch and time range (the streaming executor's input) -------------
def intersect_ranges(t_range: tuple, start_ns: int | None, end_ns: int | None) -> tuple:
    """``[start, end)`` ranges intersected (None = open)."""
    lo, hi = t_range
    if start_ns is not None:
        lo = start_ns if lo is None else max(lo, start_ns)
    if end_ns is not None:
        hi = end_ns if hi is None else min(hi, end_ns)
    return lo, hi


class DatasetIndex:
    """Where each GPU's rows live: one entry per row group (file, group, GPU, rows,
    first/last ts), from the Parquet footers only (no data is decoded).

    Row groups of a canonical dataset each hold one GPU's contiguous time range, so
    a batch of GPUs reads exactly its groups, and a time range skips the groups
    whose ``ts`` statistics fall outside it.  Picklable (paths and small arrays):
    Dask tasks carry it to their workers.
    """

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.t_range: tuple[int | None, int | None] = (None, None)  # see restrict()
        manifest = read_manifest(path)
        self.files = [str(f) for f in dataset_files(path)]
        gpu_of: dict[str, int] = {}
        rg_file, rg_index, rg_gpu, rg_rows, rg_t0, rg_t1 = [], [], [], [], [], []
        for fi, f in enumerate(self.files):
            try:
                md = pq.ParquetFile(f).metadata
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"truncated or corrupt Parquet file ({exc})", path=f) from None
            names = md.schema.names
            if "gpu" not in names or "ts" not in names:
                raise InputError("sample file lacks the gpu or ts column", path=f)
            col_gpu, col_ts = names.index("gpu"), names.index("ts")
            for r in range(md.num_row_groups):
                rg = md.row_group(r)
                if rg.num_rows == 0:
                    continue
                sg, st = rg.column(col_gpu).statistics, rg.column(col_ts).statistics
                if sg is None or not sg.has_min_max or sg.min != sg.max or st is None or not st.has_min_max:
                    raise UnindexedError(f"row group {r} does not hold exactly one GPU with statistics "
                                     "(not written by tracekit convert); convert it again to stream it", path=f)
                gpu = sg.min.decode() if isinstance(sg.min, bytes) else str(sg.min)
                rg_file.append(fi)
                rg_index.append(r)
                rg_gpu.append(gpu_of.setdefault(gpu, len(gpu_of)))
                rg_rows.append(rg.num_rows)
                rg_t0.append(int(st.min_raw))
                rg_t1.append(int(st.max_raw))
        self.gpus = list(gpu_of)
        self.rg_file = np.array(rg_file, dtype=np.int64)
        self.rg_index = np.array(rg_index, dtype=np.int64)
        self.rg_gpu = np.array(rg_gpu, dtype=np.int64)
        self.rg_rows = np.array(rg_rows, dtype=np.int64)
        self.rg_t0 = np.array(rg_t0, dtype=np.int64)
        self.rg_t1 = np.array(rg_t1, dtype=np.int64)
        self.gpu_rows = np.bincount(self.rg_gpu, weights=self.rg_rows, minlength=len(self.gpus)).astype(np.int64)
        n_rows = int(manifest.get("rows") or sum(int(f["rows"]) for f in manifest["files"]))
        if int(self.rg_rows.sum()) != n_rows:
            raise InputError(f"manifest.json counts {n_rows} rows but the files hold {int(self.rg_rows.sum())}",
                             path=self.path)
        # a GPU's groups must be in time order (file order within each GPU)
        order = np.argsort(self.rg_gpu, kind="stable")
        g_sorted = self.rg_gpu[order]
        overlap = (g_sorted[1:] == g_sorted[:-1]) & (self.rg_t0[order][1:] < self.rg_t1[order][:-1])
        if overlap.any():
            e = int(order[1:][overlap][0])
            raise _groups_out_of_order(self.files[int(self.rg_file[e])], int(self.rg_index[e]),
                                       self.gpus[int(self.rg_gpu[e])])

    def gpu_groups(self, g: int) -> np.ndarray:
        """Row-group entries of GPU ``g`` in time order."""
        if not hasattr(self, "_by_gpu"):
            order = np.argsort(self.rg_gpu, kind="stable")
            cuts = np.searchsorted(self.rg_gpu[order], np.arange(len(self.gpus) + 1))
            self._by_gpu = [order[cuts[i]: cuts[i + 1]] for i in range(len(self.gpus))]
        return self._by_gpu[g]

    def n_windows(self, gpus, groups_per_window: int) -> int:
        """Time windows of ``groups_per_window`` row groups per GPU a batch needs."""
        return max(-(-len(self.gpu_groups(int(g))) // groups_per_window) for g in gpus) if len(gpus) else 0

    def read_window(self, gpus, window: int, groups_per_window: int):
        """(offsets, ts_ns, power_w) of time window ``window``: each GPU's row groups
        ``[window * groups_per_window, (window + 1) * groups_per_window)`` (GPUs end
        at different windows; a GPU past its end has an empty range)."""
        lo = window * groups_per_window
        return self._read_entries(*self._joined([self.gpu_groups(int(g))[lo: lo + groups_per_window]
                                                 for g in gpus]))

    def _per_gpu_groups(self, gpus, start_ns: int | None, end_ns: int | None) -> list[np.ndarray]:
        sel = []
        for g in gpus:
            idx = self.gpu_groups(int(g))
            if start_ns is not None:
                idx = idx[self.rg_t1[idx] >= start_ns]
            if end_ns is not None:
                idx = idx[self.rg_t0[idx] < end_ns]
            sel.append(idx)
        return sel

    def _joined(self, per_gpu: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(entries in order, rows per GPU) of per-GPU entry lists."""
        entries = np.concatenate(per_gpu) if per_gpu else np.zeros(0, dtype=np.int64)
        return entries, np.array([int(self.rg_rows[e].sum()) for e in per_gpu], dtype=np.int64)

    def groups_of(self, gpus, start_ns: int | None = None, end_ns: int | None = None) -> np.ndarray:
        """Row-group entries of the given GPU indices (in GPU order, then time order)
        that may hold samples in ``[start_ns, end_ns)``."""
        return self._joined(self._per_gpu_groups(gpus, start_ns, end_ns))[0]

    def read(self, gpus, start_ns: int | None = None, end_ns: int | None = None):
        """(offsets, ts_ns, power_w) of the given GPU indices, CSR in the given order,
        only samples with ``start_ns <= ts < end_ns`` when a range is given (row
        groups outside it are not read at all)."""
        return self._read_entries(*self._joined(self._per_gpu_groups(gpus, start_ns, end_ns)), start_ns, end_ns)

    def restrict(self, start_ns: int | None, end_ns: int | None) -> "DatasetIndex":
        """The index of the samples with ``start_ns <= ts < end_ns``: row groups wholly
        outside are dropped by their statistics, the rest filtered when read.
        ``gpu_rows`` then counts the kept groups' rows (an upper bound)."""
        import copy

        out = copy.copy(self)
        keep = np.ones(len(self.rg_rows), dtype=bool)
        if start_ns is not None:
            keep &= self.rg_t1 >= start_ns
        if end_ns is not None:
            keep &= self.rg_t0 < end_ns
        for name in ("rg_file", "rg_index", "rg_gpu", "rg_rows", "rg_t0", "rg_t1"):
            setattr(out, name, getattr(self, name)[keep])
        out.gpu_rows = np.bincount(out.rg_gpu, weights=out.rg_rows, minlength=len(self.gpus)).astype(np.int64)
        out.t_range = intersect_ranges(self.t_range, start_ns, end_ns)
        out.__dict__.pop("_by_gpu", None)
        return out

    def _read_entries(self, entries: np.ndarray, counts: np.ndarray, start_ns: int | None = None,
                      end_ns: int | None = None):
        """Read row-group entries (in order) into CSR arrays with ``counts`` rows per GPU,
        keeping the samples in ``[start_ns, end_ns)`` and in the index's own range."""
        rows = self.rg_rows[entries]
        ts = np.empty(int(rows.sum()), dtype=np.int64)
        power = np.empty(len(ts), dtype=np.float32)
        starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        _read_groups_into([(Path(self.files[int(self.rg_file[e])]), int(self.rg_index[e]), int(pos), int(n))
                           for e, pos, n in zip(entries, starts, rows)], offsets, ts, power)
        return csr_time_range(offsets, ts, power, *intersect_ranges(self.t_range, start_ns, end_ns))


def csr_time_range(offsets: np.ndarray, ts: np.ndarray, power: np.ndarray, lo: int | None,
                   hi: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples with ``lo <= ts < hi`` (None = open) of CSR arrays whose runs are
    sorted by time: (offsets, ts, power); the inputs themselves when nothing is cut.
    Each run's range comes from a binary search, so no per-sample mask is built."""
    if lo is None and hi is None:
        return offsets, ts, power
    a, b = offsets[:-1], offsets[1:]
    first = a.copy() if lo is None else np.array([x + np.searchsorted(ts[x:y], lo, side="left")
                                                  for x, y in zip(a, b)], dtype=np.int64)
    last = b.copy() if hi is None else np.array([x + np.searchsorted(ts[x:y], hi, side="left")
                                                 for x, y in zip(a, b)], dtype=np.int64)
    last = np.maximum(last, first)
    if np.array_equal(first, a) and np.array_equal(last, b):
        return offsets, ts, power
    out = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(last - first, out=out[1:])
    ts_out = np.empty(int(out[-1]), dtype=ts.dtype)
    power_out = np.empty(int(out[-1]), dtype=power.dtype)
    for g, (x, y) in enumerate(zip(first, last)):
        ts_out[out[g]: out[g + 1]] = ts[x:y]
        power_out[out[g]: out[g + 1]] = power[x:y]
    return out, ts_out, power_out


def read_topology(path: Path | str) -> pl.DataFrame:
    p = Path(path) / TOPOLOGY
    if not p.is_file():
        raise InputError("dataset has no topology.parquet", path=str(path))
    return canonical_topology(pl.read_parquet(p))


def read_dataset(path: Path | str, columns: list[str] | None = None):
    """(samples, topology, manifest) of a canonical dataset folder."""
    manifest = read_manifest(path)
    return read_dataset_samples(path, columns), read_topology(path), manifest


__all__ = [
    "DatasetIndex",
    "DatasetWriter",
    "is_dataset",
    "read_dataset",
    "read_dataset_samples",
    "read_manifest",
    "read_topology",
    "scan_dataset",
    "OPTIONAL_COLUMNS",
]
