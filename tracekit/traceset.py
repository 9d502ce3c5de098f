"""TraceSet: the samples of one dataset, its topology, sources and data quality.

``tracekit.open(path)`` reads a raw file, a folder of raw files (every file under it,
auto-detected by content), or a canonical dataset folder written by ``convert``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl

from tracekit.engine.stream import DEFAULT_MEMORY_LIMIT
from tracekit.errors import InputError, ParameterError, SchemaError, TracekitError, UnindexedError
from tracekit.io.base import ReadOptions
from tracekit.quality import DataQuality
from tracekit.schema import LINE_COLUMN, TS_DTYPE, canonical_topology, empty_samples, host_from_gpu
from tracekit.specs import find_gpu_spec

#: A canonical dataset whose samples would take more than this in memory (see
#: :func:`in_memory_bytes`) is never loaded whole by ``info``: its per-GPU statistics
#: are streamed.  (The rule of ``analyze --engine auto`` with its default
#: ``--memory-limit``.)
STREAM_ABOVE_BYTES = DEFAULT_MEMORY_LIMIT
IN_MEMORY_BYTES_PER_SAMPLE = 40
#: Held whatever the batching: interpreter, libraries, compiled kernels.
IN_MEMORY_BASE_BYTES = 400 * 2**20


def in_memory_bytes(n_samples: int) -> int:
    """What holding a trace whole takes: ts + power (12 B), labels and temporaries
    (~28 B) per sample, and the fixed base."""
    return n_samples * IN_MEMORY_BYTES_PER_SAMPLE + IN_MEMORY_BASE_BYTES


#: Files in a trace folder that are not traces.
SKIP_SUFFIXES = {".md", ".txt", ".rst", ".json.schema", ".py", ".toml", ".yaml", ".yml", ".html", ".png"}
TOPOLOGY_NAMES = {"topology.csv", "topology.parquet"}


@dataclass
class GpuArrays:
    """Samples of all GPUs as flat arrays: GPU ``i`` owns ``[offsets[i], offsets[i+1])``,
    sorted by time.  This is what the kernels consume.  The order is checked where the
    arrays are built (:func:`gpu_arrays`, the dataset readers), so the analysis passes
    them to the kernels without checking it again."""

    gpus: list[str]
    offsets: np.ndarray
    ts_ns: np.ndarray
    power_w: np.ndarray
    topology: pl.DataFrame

    @property
    def n_samples(self) -> int:
        return int(self.offsets[-1])

    def gpu(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.ts_ns[a:b], self.power_w[a:b]

    def groups(self, level: str) -> tuple[list[str], np.ndarray, list[list[str]]]:
        """(group names, group index of each GPU, member GPUs of each group)."""
        return level_groups(self.gpus, self.topology, level)

    def shifted(self, offsets_s: dict[str, float]) -> "GpuArrays":
        """A copy with each host's clock offset subtracted from its GPUs' timestamps."""
        host_of = dict(zip(self.topology.get_column("gpu").to_list(), self.topology.get_column("host").to_list()))
        ts = self.ts_ns.copy()
        for i, g in enumerate(self.gpus):
            off = offsets_s.get(host_of.get(g), 0.0)
            if off:
                ts[self.offsets[i]: self.offsets[i + 1]] -= int(round(off * 1e9))
        return GpuArrays(self.gpus, self.offsets, ts, self.power_w, self.topology)

    def to_frame(self) -> pl.DataFrame:
        counts = np.diff(self.offsets)
        gpu = pl.Series("gpu", self.gpus, dtype=pl.String).gather(np.repeat(np.arange(len(self.gpus)), counts))
        return pl.DataFrame({
            "gpu": gpu,
            "ts": pl.Series("ts", self.ts_ns).cast(pl.Datetime("ns", "UTC")),
            "power_w": pl.Series("power_w", self.power_w, dtype=pl.Float32),
        })


def slice_by_time(traceset: "TraceSet", since, until) -> tuple["TraceSet", dict]:
    """(``traceset`` restricted to ``since <= ts < until``, the ``time_range`` report).

    ``since``/``until``: an ISO 8601 time (UTC unless it has an offset), ``+DURATION``
    after the first sample, ns since the epoch, a datetime, or None (open).  The
    report's ``_total`` is the sample count before slicing."""
    import datetime as dt

    from tracekit.units import ns_in_range, parse_time_ns

    origin = traceset.first_ts_ns() or 0

    def ns(value, what: str):
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return parse_time_ns(value.isoformat(), origin_ns=origin, what=what)
        if isinstance(value, (int, np.integer)):
            return ns_in_range(int(value), value, what)
        return parse_time_ns(value, origin_ns=origin, what=what)

    s, e = ns(since, "--since"), ns(until, "--until")
    iso = (lambda v: None if v is None else np.datetime64(v, "ns").astype(str) + "Z")
    if s is not None and e is not None and e <= s:
        raise ParameterError(f"--until {iso(e)} is not after --since {iso(s)}")
    total = traceset.n_samples
    return traceset.time_slice(s, e), {"since": iso(s), "until": iso(e), "_total": total}


def level_groups(gpus: list[str], topology: pl.DataFrame, level: str) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """(group names sorted, group index of each GPU, member GPUs of each group) at
    ``level`` (cluster, row, rack, host or gpu) for GPUs in the given order."""
    if level == "cluster":
        return ["cluster"], np.zeros(len(gpus), dtype=np.int64), [list(gpus)]
    if level == "gpu":
        return list(gpus), np.arange(len(gpus)), [[g] for g in gpus]
    col = dict(zip(topology.get_column("gpu").to_list(), topology.get_column(level).to_list()))
    names = sorted({str(col.get(g)) for g in gpus})
    index = {n: i for i, n in enumerate(names)}
    of = np.array([index[str(col.get(g))] for g in gpus], dtype=np.int64)
    members = [[] for _ in names]
    for g, i in zip(gpus, of):
        members[i].append(g)
    return names, of, members


def periods_frame(gpus: list[str], st: dict) -> pl.DataFrame:
    """The :meth:`TraceSet.gpu_periods` frame from :func:`tracekit.kernels.stats.gpu_sampling` output."""
    return pl.DataFrame({
        "gpu": pl.Series(gpus, dtype=pl.String),
        "samples": st["samples"],
        "start": pl.Series(st["start_ns"]).cast(pl.Datetime("ns", "UTC")),
        "end": pl.Series(st["end_ns"]).cast(pl.Datetime("ns", "UTC")),
        "sample_period_ms": st["sample_period_ms"],
        "effective_period_ms": st["effective_period_ms"],
        "mean_w": st["mean_w"],
        "min_w": st["min_w"],
        "peak_w": st["peak_w"],
    }).with_columns(pl.col(c).fill_nan(None) for c in ("sample_period_ms", "effective_period_ms"))


def gpu_arrays(samples: pl.DataFrame, topology: pl.DataFrame) -> GpuArrays:
    """Flat arrays of a sample frame sorted by (gpu, ts); SchemaError when a GPU's
    times are not sorted (the kernels then take the arrays as they are)."""
    from tracekit.kernels._validate import first_decrease

    counts = samples.group_by("gpu", maintain_order=True).len()
    gpus = counts.get_column("gpu").to_list()
    offsets = np.zeros(len(gpus) + 1, dtype=np.int64)
    np.cumsum(counts.get_column("len").to_numpy(), out=offsets[1:])
    ts = np.ascontiguousarray(samples.get_column("ts").dt.epoch("ns").to_numpy())
    i, run = first_decrease(ts, offsets)
    if i >= 0:
        raise SchemaError(f"samples must be sorted by (gpu, ts): GPU {gpus[run]}'s row {i + 1} is earlier than row {i}")
    power = samples.get_column("power_w").cast(pl.Float32).to_numpy()
    return GpuArrays(gpus, offsets, ts, np.ascontiguousarray(power), topology)


class TraceSet:
    """Samples (canonical, sorted by gpu, ts), topology, sources and data quality.

    The samples are held either as a Polars frame (``samples``) or as flat arrays
    (``arrays()``, what the kernels use; canonical datasets are read straight into
    them); each is built from the other on first use.
    """

    def __init__(self, samples: pl.DataFrame | None, topology: pl.DataFrame, quality: DataQuality,
                 sources: list[dict] | None = None, path: str = "", manifest: dict | None = None,
                 arrays: GpuArrays | None = None, index=None):
        if samples is None and arrays is None and index is None:
            raise ValueError("TraceSet needs samples, arrays or a dataset index")
        self._samples = samples
        self._arrays = arrays
        self.topology = topology
        self.quality = quality
        self.sources = sources or []
        self.path = path
        self.manifest = manifest
        #: :class:`tracekit.io.dataset.DatasetIndex` of a canonical dataset whose
        #: samples are read on first use (or streamed by GPU batch, never all at once)
        self.index = index
        self._periods: pl.DataFrame | None = None
        #: ``[start_ns, end_ns)`` of a :meth:`time_slice` (None = open), applied to
        #: :attr:`samples` when they are read from the dataset's files
        self._time_range: tuple[int | None, int | None] = (None, None)

    @property
    def samples(self) -> pl.DataFrame:
        """All canonical columns (for a canonical dataset read lazily from its files,
        so optional columns such as clocks and utilization are kept)."""
        if self._samples is None:
            if self.manifest is not None and self.sources and self.sources[0].get("format") == "canonical":
                from tracekit.io.dataset import read_dataset_samples

                samples = read_dataset_samples(self.sources[0]["path"])
                lo, hi = self._time_range
                if lo is not None or hi is not None:  # a time slice: its rows only, as its arrays
                    ts = pl.col("ts").dt.epoch("ns")
                    samples = samples.filter((ts >= lo) if hi is None else (ts < hi) if lo is None
                                             else (ts >= lo) & (ts < hi))
                self._samples = samples
            else:
                self._samples = self._arrays.to_frame()
        return self._samples

    def arrays(self) -> GpuArrays:
        if self._arrays is None:
            if self._samples is None:
                self._arrays = _load_index_arrays(self.index, self.topology)
            else:
                self._arrays = gpu_arrays(self._samples, self.topology)
        return self._arrays

    @property
    def loaded(self) -> bool:
        """Whether the samples are in memory (else they are read from the dataset on use)."""
        return self._arrays is not None or self._samples is not None

    @property
    def n_samples(self) -> int:
        if self._arrays is not None:
            return self._arrays.n_samples
        if self._samples is not None:
            return self._samples.height
        return int(self.index.gpu_rows.sum())

    # -- derived facts ---------------------------------------------------------------
    @property
    def gpus(self) -> list[str]:
        return self.topology.get_column("gpu").to_list()

    def gpu_periods(self) -> pl.DataFrame:
        """Per GPU: samples, start, end, median sampling period and effective update
        period (median time between changes of the power value, ms), and mean, min
        and peak power of its finite samples."""
        if self._periods is None and not self.loaded and self.index is not None \
                and in_memory_bytes(self.n_samples) > STREAM_ABOVE_BYTES:
            self._periods = self._streamed_periods()
        if self._periods is None:
            from tracekit.kernels.stats import gpu_sampling

            from tracekit.engine.local import map_ranges

            a = self.arrays()

            def part(lo: int, hi: int) -> dict:
                s0, s1 = a.offsets[lo], a.offsets[hi]
                return gpu_sampling(a.ts_ns[s0:s1], a.power_w[s0:s1], a.offsets[lo: hi + 1] - s0)

            parts = map_ranges(part, np.diff(a.offsets)) or [gpu_sampling(a.ts_ns, a.power_w, a.offsets)]
            st = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            self._periods = periods_frame(a.gpus, st)
        return self._periods

    def first_ts_ns(self) -> int | None:
        """Time of the earliest sample (from the row-group statistics when not loaded)."""
        if not self.loaded and self.index is not None:
            return int(self.index.rg_t0.min()) if len(self.index.rg_t0) else None
        a = self.arrays()
        has = a.offsets[1:] > a.offsets[:-1]  # each GPU's times are sorted: its first sample
        return int(a.ts_ns[a.offsets[:-1][has]].min()) if has.any() else None

    def time_slice(self, start_ns: int | None, end_ns: int | None) -> "TraceSet":
        """The samples with ``start_ns <= ts < end_ns`` (None = open), as a new TraceSet
        with the same topology and sources; a dataset not in memory stays lazy (its
        row groups outside the range are never read)."""
        from tracekit.io.dataset import intersect_ranges

        lo, hi = intersect_ranges(self._time_range, start_ns, end_ns)  # a slice of a slice: the intersection
        if not self.loaded and self.index is not None:
            out = TraceSet(None, self.topology, self.quality, self.sources, self.path, self.manifest,
                           index=self.index.restrict(start_ns, end_ns))
            out._time_range = (lo, hi)
            return out
        from tracekit.io.dataset import csr_time_range

        a = self.arrays()
        offsets, ts, power = csr_time_range(a.offsets, a.ts_ns, a.power_w, start_ns, end_ns)
        arrays = GpuArrays(a.gpus, offsets, ts, power, a.topology)
        out = TraceSet(None, self.topology, self.quality, self.sources, self.path, self.manifest, arrays=arrays)
        out._time_range = (lo, hi)
        return out

    def _streamed_periods(self, budget_bytes: float = 256 * 2**20) -> pl.DataFrame:
        """:meth:`gpu_periods` of a dataset too large to load: pass 1 of the streaming
        analysis (GPU batches, time windows for long GPUs) without keeping the samples."""
        from tracekit.analysis.partial import run_sampling

        st, _ = run_sampling(self.index, budget_bytes, histograms=False)
        st.pop("gpu_hist")
        return periods_frame(self.index.gpus, st)

    def set_periods(self, periods: pl.DataFrame) -> None:
        """Use per-GPU sampling statistics computed elsewhere (the streaming pass)."""
        self._periods = periods

    def median_periods_s(self, verb: str = "analyze") -> tuple[float, float]:
        """(sampling period, effective update period) in seconds, medians over GPUs.

        Raises ParameterError when no GPU has two samples (nothing to ``verb``)."""
        from tracekit.errors import ParameterError

        periods = self.gpu_periods() if self.n_samples else None
        if periods is None or int(periods.get_column("samples").sum()) == 0:
            raise ParameterError(f"no samples to {verb} (every row was excluded; see tracekit info)")
        sample_s = float(periods.get_column("sample_period_ms").median() or 0) / 1e3
        effective_s = float(periods.get_column("effective_period_ms").median() or 0) / 1e3
        if not sample_s > 0:
            raise ParameterError(f"cannot {verb}: every GPU has a single sample (no sampling period)")
        return sample_s, effective_s

    def power_semantics(self) -> dict:
        kinds = {(s["power"]["kind"], s["power"].get("window_s")) for s in self.sources if s.get("power")}
        if len(kinds) == 1:
            kind, window = kinds.pop()
            return {"kind": kind, "window_s": window}
        return {"kind": "mixed" if kinds else "unknown", "window_s": None}

    def dataset_summary(self) -> dict:
        """The ``dataset`` object of the JSON contract."""
        n = self.n_samples
        periods = self.gpu_periods() if n else None
        if periods is not None:  # exact (a lazily restricted dataset's count is an upper bound)
            n = int(periods.get_column("samples").sum())
        if n:
            present = periods.filter(pl.col("samples") > 0)
            start = present.get_column("start").min()
            end = present.get_column("end").max()
            duration_s = (end - start).total_seconds()
            start, end = start.isoformat(), end.isoformat()
        else:
            duration_s, start, end = 0.0, None, None
        # hosts, like GPUs, that have samples (in a time slice: in the slice)
        hosts = self.topology.filter(pl.col("gpu").is_in(present.get_column("gpu").implode())) \
            .get_column("host").n_unique() if n else 0

        def _median(col: str):
            if periods is None or periods.height == 0:
                return None
            v = periods.get_column(col).median()
            return None if v is None else round(float(v), 3)

        return {
            "gpus": int((periods.get_column("samples") > 0).sum()) if n else 0,
            "hosts": int(hosts),
            "samples": int(n),
            "duration_s": round(duration_s, 6),
            "start": start,
            "end": end,
            "sample_period_ms": _median("sample_period_ms"),
            "effective_period_ms": _median("effective_period_ms"),
            "power_semantics": self.power_semantics(),
        }

    def info(self) -> dict:
        """The ``tracekit info --json`` object."""
        return {
            "schema": "tracekit.info/1",
            "path": self.path,
            "formats": sorted({s["format"] for s in self.sources}),
            "sources": self.sources,
            "dataset": self.dataset_summary(),
            "data_quality": self.quality.to_dict(),
            "models": sorted({m for m in self.topology.get_column("model").to_list() if m}),
        }


# -- opening ---------------------------------------------------------------------------
def _read_options(options: dict) -> ReadOptions:
    names = {f.name for f in fields(ReadOptions)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown option(s) for tracekit.open: {unknown}; known: {sorted(names)}")
    opts = ReadOptions(**options)
    if opts.utc_offset_s is not None and opts.tz:
        from tracekit.errors import ParameterError

        raise ParameterError("give either a UTC offset or a time zone, not both (--utc-offset / --tz)")
    return opts


def _trace_files(root: Path) -> tuple[list[Path], list[Path], Path | None]:
    """(raw files, dataset folders, topology file) under a folder, sorted."""
    from tracekit.io.dataset import is_dataset

    files, datasets, topology = [], [], None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if is_dataset(here):
            datasets.append(here)
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = here / name
            if name.lower() in TOPOLOGY_NAMES:
                topology = p
                continue
            if p.suffix.lower() in SKIP_SUFFIXES or name.lower().startswith("readme"):
                continue
            files.append(p)
    return files, datasets, topology


def _read_raw(path: Path, opts: ReadOptions):
    from tracekit.io.clean import clean_source
    from tracekit.io.registry import detect_format

    fmt = detect_format(path, opts)
    src = fmt.read_file(path, opts)
    samples, q = clean_source(src, opts)
    source = {
        "path": str(path),
        "format": fmt.name,
        "rows_read": q.rows_read,
        "rows_used": q.rows_used,
        "gpus": samples.get_column("gpu").n_unique() if samples.height else 0,
        "power": src.power.to_dict(),
        "notes": list(src.notes),
    }
    return samples, q, source, src.gpu_models


def _canonical_quality(manifest: dict, n_rows: int) -> DataQuality:
    q = DataQuality()
    if manifest.get("quality"):
        q = DataQuality.from_dict(manifest["quality"])
        if q.rows_used != n_rows:  # a dataset edited by hand: account for it as is
            q = DataQuality(rows_read=n_rows, rows_used=n_rows)
    else:
        q.rows_read = q.rows_used = n_rows
    return q


def _canonical_source(path: Path, manifest: dict, q: DataQuality, n_gpus: int) -> dict:
    return {
        "path": str(path),
        "format": "canonical",
        "rows_read": q.rows_read,
        "rows_used": q.rows_used,
        "gpus": n_gpus,
        "power": manifest.get("power") or {"kind": "unknown", "window_s": None, "field": ""},
        "notes": [],
    }


def _read_canonical(path: Path):
    from tracekit.io.dataset import read_dataset

    samples, topology, manifest = read_dataset(path)
    q = _canonical_quality(manifest, samples.height)
    source = _canonical_source(path, manifest, q, samples.get_column("gpu").n_unique() if samples.height else 0)
    return samples, q, source, topology, manifest


def _open_canonical_arrays(path: Path, topology, strict: bool) -> TraceSet:
    """One canonical dataset: its footers indexed now, its samples read on first use
    (straight into arrays), or streamed by GPU batch by ``analyze``."""
    from tracekit.io.dataset import DatasetIndex, read_dataset_arrays, read_manifest, read_topology

    manifest = read_manifest(path)
    try:
        index = DatasetIndex(path)
    except UnindexedError:
        index = None  # not one GPU per row group: read it whole now
    arrays_args = None
    if index is None:
        gpus, offsets, ts, power, manifest = read_dataset_arrays(path)
        arrays_args, n_rows = (offsets, ts, power), len(ts)
    else:
        gpus, n_rows = index.gpus, int(index.gpu_rows.sum())
    topo = read_topology(path)
    if topology is not None:
        topo = topology if isinstance(topology, pl.DataFrame) else _load_topology_file(Path(topology))
        topo = canonical_topology(topo)
        missing = sorted(set(gpus) - set(topo.get_column("gpu").to_list()))
        if missing:
            raise InputError(f"GPUs of the dataset missing from the topology: {missing[:5]}", path=str(path))
    q = _canonical_quality(manifest, n_rows)
    if strict:
        q.raise_if_strict(str(path))
    topo = topo.filter(pl.col("gpu").is_in(gpus))
    arrays = GpuArrays(gpus, *arrays_args, topo) if arrays_args else None
    return TraceSet(None, topo, q, [_canonical_source(path, manifest, q, len(gpus))], path=str(path),
                    manifest=manifest, arrays=arrays, index=index)


def _load_index_arrays(index, topology: pl.DataFrame) -> GpuArrays:
    """The indexed row groups (of a time slice: its groups only, filtered), read on
    every core from the footers the index already holds."""
    from tracekit.engine.memory import release_freed_memory

    offsets, ts, power = index.read(range(len(index.gpus)))
    release_freed_memory()  # what the row-group reads freed
    return GpuArrays(index.gpus, offsets, ts, power, topology)


def _load_topology_file(path: Path) -> pl.DataFrame:
    try:
        df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise InputError(f"unreadable topology file ({exc})", path=str(path)) from None
    return canonical_topology(df)


def _derive_topology(samples: pl.DataFrame, gpu_models: dict[str, str], model: str | None) -> pl.DataFrame:
    gpus = samples.get_column("gpu").unique().sort()
    topo = pl.DataFrame({"gpu": gpus}).with_columns(host_from_gpu(pl.col("gpu")).alias("host"))
    names = [gpu_models.get(g) or model for g in gpus.to_list()]
    spec_names, tdps = [], []
    for n in names:
        spec = find_gpu_spec(n) if n else None
        spec_names.append(spec.name if spec else n)
        tdps.append(spec.tdp_w if spec else None)
    topo = topo.with_columns(
        pl.Series("model", spec_names, dtype=pl.String), pl.Series("tdp_w", tdps, dtype=pl.Float64)
    )
    return canonical_topology(topo)


def open_trace(path, *, topology=None, debug: bool = False, **options) -> TraceSet:
    """Read a trace: a raw file, a folder of raw files, or a canonical dataset folder.

    Parameters
    ----------
    path
        File or folder (or a list of them).
    topology
        Optional topology file (CSV/Parquet with gpu, host, rack, row, model, tdp_w,
        job) or frame; GPUs missing from it are excluded as ``unknown_gpu``.
    **options
        Fields of :class:`tracekit.io.base.ReadOptions` (``utc_offset_s``, ``tz``,
        ``gpus_per_host``, ``gpu_model``, ``power_unit``, ``strict``...).

    Returns
    -------
    TraceSet
        Every row read is accounted for in ``TraceSet.quality``.  A file that cannot
        be read is listed in ``quality.files_failed`` (or raises with ``strict``).
    """
    opts = _read_options(options)
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    from tracekit.io.dataset import is_dataset

    if len(paths) == 1 and paths[0].is_dir() and is_dataset(paths[0]):
        return _open_canonical_arrays(paths[0], topology, opts.strict)
    raw_files, datasets, topo_file = [], [], None
    from tracekit.io.dataset import is_dataset

    for p in paths:
        if not p.exists():
            raise InputError("no such file or folder", path=str(p))
        if p.is_dir():
            if is_dataset(p):
                datasets.append(p)
            else:
                f, d, t = _trace_files(p)
                raw_files += f
                datasets += d
                topo_file = topo_file or t
        else:
            raw_files.append(p)
    if not raw_files and not datasets:
        raise InputError("no trace files found in folder", path=str(paths[0]))

    quality = DataQuality()
    frames: list[pl.DataFrame] = []
    sources: list[dict] = []
    gpu_models: dict[str, str] = {}
    topologies: list[pl.DataFrame] = []
    manifest = None
    for ds in datasets:
        samples, q, source, topo, manifest = _read_canonical(ds)
        frames.append(samples)
        quality.merge(q)
        sources.append(source)
        topologies.append(topo)
    for f in raw_files:
        try:
            samples, q, source, models = _read_raw(f, opts)
        except TracekitError as exc:
            if opts.strict or debug:
                raise
            quality.fail(str(f), str(exc))
            continue
        except Exception as exc:  # a reader bug must still name the file
            if debug:
                raise
            err = InputError(f"could not parse ({type(exc).__name__}: {exc})", path=str(f))
            if opts.strict:
                raise err from exc
            quality.fail(str(f), str(err))
            continue
        frames.append(samples)
        quality.merge(q)
        sources.append(source)
        gpu_models.update(models)

    if not frames:
        first = quality.files_failed[0]
        more = f" (and {len(quality.files_failed) - 1} more file(s))" if len(quality.files_failed) > 1 else ""
        raise InputError(f"no readable trace files: {first['error']}{more}")

    samples = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    if len(frames) > 1:
        samples = samples.sort(["gpu", "ts"], maintain_order=True)
        dup = pl.struct("gpu", "ts").is_first_distinct().not_()
        n_dup = samples.select(dup.sum()).item()
        if n_dup:
            if opts.strict:
                raise InputError(f"--strict: {n_dup} row(s) repeat a (gpu, ts) already read from another file")
            ex = []
            quality.exclude("duplicate_ts", n_dup, ex)
            quality.rows_used -= n_dup
            quality.warn(f"{n_dup} row(s) repeated a (gpu, ts) of another file and were dropped")
            samples = samples.filter(~dup)

    # Topology: explicit file/frame > one found in the folder > from datasets > derived.
    topo = None
    if topology is not None:
        topo = topology if isinstance(topology, pl.DataFrame) else _load_topology_file(Path(topology))
        topo = canonical_topology(topo)
    elif topo_file is not None:
        topo = _load_topology_file(topo_file)
    if topo is not None:
        known = topo.get_column("gpu")
        unknown = ~pl.col("gpu").is_in(known.implode())
        n_unknown = samples.select(unknown.sum()).item()
        if n_unknown:
            ex = []
            if LINE_COLUMN in samples.columns:
                ex = [f"gpu {g}" for g in samples.filter(unknown).get_column("gpu").unique().head(5).to_list()]
            if opts.strict:
                raise InputError(f"--strict: {n_unknown} row(s) of GPUs not in the topology ({', '.join(ex)})")
            quality.exclude("unknown_gpu", n_unknown, ex)
            quality.rows_used -= n_unknown
            samples = samples.filter(~unknown)
        topo = topo.filter(pl.col("gpu").is_in(samples.get_column("gpu").unique().implode()))
    elif topologies and not raw_files:
        topo = pl.concat(topologies).unique("gpu", keep="first").sort("gpu")
    else:
        derived = _derive_topology(samples, gpu_models, opts.gpu_model)
        if topologies:
            derived = pl.concat([*topologies, derived]).unique("gpu", keep="first").sort("gpu")
        topo = derived
    if LINE_COLUMN in samples.columns:
        samples = samples.drop(LINE_COLUMN)
    if samples.height == 0:
        samples = empty_samples()
    samples = samples.with_columns(pl.col("ts").cast(TS_DTYPE))
    quality.check_balance()
    return TraceSet(
        samples=samples,
        topology=topo,
        quality=quality,
        sources=sources,
        path=", ".join(str(p) for p in paths),
        manifest=manifest,
    )
