"""``tracekit analyze``: phases, time-aligned aggregate power, swings, events, rules.

The flow, each step in its own module:

1. effective resolution per GPU (:meth:`TraceSet.gpu_periods`);
2. phase detection per GPU (:mod:`tracekit.analysis.phases`): histogram levels by
   exact 1-D k-means, hysteresis labels with a minimum dwell, segments;
3. alignment and aggregation (:mod:`tracekit.analysis.aggregate`): every GPU onto one
   grid (time-weighted mean of the zero-order hold), summed per host, rack, row and
   cluster, with coverage;
4. swing metrics, spectrum, events (:mod:`tracekit.analysis.swings`), iterations and
   stragglers (:mod:`tracekit.analysis.iterations`), grid rules
   (:mod:`tracekit.analysis.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from tracekit.analysis import aggregate as agg
from tracekit.analysis import phases as ph
from tracekit.analysis import swings as sw
from tracekit.analysis.iterations import autocorr_period_s, find_stragglers, iteration_table
from tracekit.analysis.rules import Rule, Violation
from tracekit.analysis.partial import (
    PASS2_BYTES_PER_SAMPLE,
    ArraySource,
    Context,
    Merger,
    analysis_task,
    balanced_budget,
    plan_groups,
    run_sampling,
    window_groups,
)
from tracekit.engine.local import cost_ranges, default_workers, workers_scope
from tracekit.engine.memory import release_freed_memory
from tracekit.engine.stream import DEFAULT_MEMORY_LIMIT, plan_batches, run_ordered
from tracekit.errors import ParameterError
from tracekit.options import check_choice, check_positive_ints, with_overrides
from tracekit.traceset import IN_MEMORY_BASE_BYTES, in_memory_bytes, periods_frame, slice_by_time

Workload = Literal["auto", "training", "inference"]
DEFAULT_WINDOWS_S = (0.1, 1.0, 2.0, 5.0, 60.0)
LEVEL_ORDER = ("cluster", "row", "rack", "host")


@dataclass
class AnalyzeOptions:
    """Options of :func:`analyze` (the CLI flags of ``tracekit analyze``)."""

    workload: Workload = "auto"
    resolution_s: float | None = None
    max_gap_s: float = 5.0
    windows_s: tuple[float, ...] = DEFAULT_WINDOWS_S
    ramp_window_s: float = 1.0
    align: Literal["none", "auto"] | dict = "none"
    max_offset_s: float = 0.5
    rules: list[Rule] = field(default_factory=list)
    event_threshold: float = 0.25
    levels: tuple[str, ...] = LEVEL_ORDER
    #: memory the analysis may use (bytes; default 2 GiB): larger datasets are streamed
    memory_limit_bytes: int | None = None
    #: "auto" (stream when over the limit), "memory" or "stream"
    engine: Literal["auto", "memory", "stream"] = "auto"
    #: at most this many GPUs per batch (tests and tuning; default: by memory)
    batch_gpus: int | None = None
    #: worker threads (default: every core, or TRACEKIT_THREADS)
    workers: int | None = None
    #: analyze only ``since <= ts < until``: ISO 8601 time (UTC unless it has an offset),
    #: ``+DURATION`` after the first sample, ns since the epoch, or None (open)
    since: str | int | None = None
    until: str | int | None = None
    #: streaming: read at most this many samples at once within a batch (tests and
    #: tuning; default: a quarter of the batch budget in pass 1, an eighth in pass 2)
    read_rows: int | None = None
    #: streaming: read every batch in time windows of this many row groups per GPU
    #: (tests and tuning; default: only batches over the memory budget)
    window_groups: int | None = None


@dataclass
class Analysis:
    """Everything ``analyze`` found, as Polars frames, plus the JSON summary."""

    dataset: dict
    data_quality: dict
    workload: str
    gpu_stats: pl.DataFrame
    phases: pl.DataFrame
    phase_summary: dict
    iterations: pl.DataFrame | None
    iteration_summary: dict | None
    stragglers: pl.DataFrame
    cluster_power: pl.DataFrame
    swings: pl.DataFrame
    levels: dict
    events: pl.DataFrame
    violations: list[Violation]
    offsets_s: dict[str, float]
    warnings: list[str]
    spectrum: dict
    gpu_heatmap: dict

    def summary(self) -> dict:
        """The ``tracekit analyze --json`` object (schema ``tracekit.analyze/1``)."""
        return {
            "schema": "tracekit.analyze/1",
            "dataset": self.dataset,
            "data_quality": self.data_quality,
            "workload": self.workload,
            "phases": self.phase_summary,
            "iterations": self.iteration_summary,
            "stragglers": self.stragglers.to_dicts(),
            "levels": self.levels,
            "events": [_event_dict(e) for e in self.events.to_dicts()],
            "violations": [v.to_dict() for v in self.violations],
            "clock_offsets_s": self.offsets_s,
            "warnings": self.warnings,
        }

    @property
    def breached(self) -> bool:
        return bool(self.violations)


def _event_dict(e: dict) -> dict:
    out = dict(e)
    for k in ("start", "end"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    return out


def analyze(traceset, options: AnalyzeOptions | None = None, progress=None, client=None, **kw) -> Analysis:
    """Analyze a :class:`tracekit.traceset.TraceSet` (or a path, opened with defaults).

    Parameters
    ----------
    traceset
        A TraceSet from :func:`tracekit.open`, or a path.
    options
        :class:`AnalyzeOptions`; keyword arguments override its fields.
    progress
        Optional callable ``progress(step_name)`` for progress display.
    client
        Optional ``dask.distributed.Client``: the batch tasks run on its workers
        (the trace must be a canonical dataset the workers can read at its path).

    Returns
    -------
    Analysis

    Notes
    -----
    A canonical dataset larger than ``memory_limit`` (estimated) is streamed: two
    passes over GPU batches read from its files (sampling statistics, then
    detection and aggregation), never the whole trace at once.  Otherwise the
    samples are read once and the same batch tasks run on slices of them.
    """
    from tracekit.traceset import TraceSet, open_trace

    opts = with_overrides(options, AnalyzeOptions, kw, "analyze")
    _check_options(opts)
    with workers_scope(None if client is not None else opts.workers):  # the input's reading included
        if not isinstance(traceset, TraceSet):
            traceset = open_trace(traceset)
        return _analyze(traceset, opts, progress, client)


def _analyze(traceset, opts: AnalyzeOptions, progress, client) -> Analysis:

    def step(name: str) -> None:
        # the last step's temporaries go back to the OS before the next step's peak
        release_freed_memory()
        if progress is not None:
            progress(name)

    warnings: list[str] = list(traceset.quality.warnings)
    time_range = None
    if opts.since is not None or opts.until is not None:
        traceset, time_range = slice_by_time(traceset, opts.since, opts.until)
    topology = traceset.topology
    gpus = traceset.index.gpus if not traceset.loaded and traceset.index is not None else traceset.arrays().gpus
    memory_limit = opts.memory_limit_bytes or DEFAULT_MEMORY_LIMIT
    streaming = _streaming(traceset, opts, client, memory_limit)
    workers = None if client is not None else opts.workers

    step("resolution")
    pooled = None
    if not streaming:  # held whole anyway: read it first, so its periods are not streamed from the files
        traceset.arrays()
    if streaming:
        source = traceset.index
        if traceset.n_samples == 0:
            raise _no_samples(time_range)
        budget = _batch_budget(memory_limit, workers, client)
        st, pooled = run_sampling(source, budget, workers=workers, client=client, batch_gpus=opts.batch_gpus,
                                  forced_windows=opts.window_groups, read_rows=opts.read_rows)
        gpu_hist = st.pop("gpu_hist")
        traceset.set_periods(periods_frame(gpus, st))
    if time_range is not None:
        analyzed = int(traceset.gpu_periods().get_column("samples").sum()) if traceset.n_samples else 0
        if analyzed == 0:
            raise _no_samples(time_range)
        time_range["samples_outside"] = time_range.pop("_total") - analyzed
    sample_period_s, effective_period_s = traceset.median_periods_s("analyze")
    periods = traceset.gpu_periods()
    resolution_s = opts.resolution_s or sample_period_s
    if resolution_s <= 0:
        raise ParameterError(f"--resolution must be positive, got {resolution_s}")
    semantics = traceset.power_semantics()

    # clock offsets -------------------------------------------------------------------
    offsets: dict[str, float] = {}
    if isinstance(opts.align, dict):
        offsets = dict(opts.align)
    step("phases")
    if opts.align == "auto":
        offsets, unseen = _auto_offsets(traceset, periods, gpus, resolution_s, sample_period_s, opts,
                                        streaming=streaming, budget=budget if streaming else None, workers=workers,
                                        client=client)
        if unseen:
            warnings.append(f"--align auto: no samples of host(s) {', '.join(unseen)} in the cells the offsets are "
                            "estimated on (the middle of the trace); their offset is 0")
    host_of = dict(zip(topology.get_column("gpu").to_list(), topology.get_column("host").to_list()))
    shift_ns = np.array([int(round(offsets.get(host_of.get(g), 0.0) * 1e9)) for g in gpus], dtype=np.int64)

    if not streaming:  # each GPU's histogram on threads: pooled the workload, alone its levels
        hists, _ = ph.gpu_histograms(traceset.arrays())
        gpu_hist = dict(enumerate(hists))
        pooled = ph.pool_histograms(hists)
    workload = opts.workload
    if workload == "auto":
        workload = ph.workload_from_histogram(pooled)
    detect_effective_s = max(effective_period_s, sample_period_s)
    peak = periods.get_column("peak_w").to_numpy().astype(np.float64)
    peak = peak[np.isfinite(peak)]
    dparams = ph.detect_params(workload, max_power_w=float(peak.max()) if len(peak) else np.nan,
                               effective_period_s=detect_effective_s, sample_period_s=sample_period_s)

    step("aggregate")
    grid = _trace_grid(periods, resolution_s, shift_ns)
    levels = tuple(lv for lv in LEVEL_ORDER if lv in opts.levels or lv == "cluster")
    ctx = _context(dparams, grid, opts, gpus, topology, shift_ns, levels)
    windows = [None]
    ctx.gpu_hist = gpu_hist
    if streaming:
        ctx.max_rows = _pass2_read_rows(opts, budget)
        keys = np.stack([ctx.group_of[lv] for lv in levels], axis=1)
        host_size = np.bincount(ctx.group_of["host"] if "host" in levels else np.zeros(len(gpus), dtype=np.int64))
        per_gpu_grid = grid.n_cells * 32.0 / host_size[ctx.group_of["host"] if "host" in levels else 0]
        cost2 = np.minimum(source.gpu_rows * PASS2_BYTES_PER_SAMPLE, budget / 8) + per_gpu_grid
        batches = plan_batches(cost2, keys, balanced_budget(budget, cost2, workers, client), max_gpus=opts.batch_gpus)
        grid_bytes = [float(per_gpu_grid[b].sum()) for b in batches]
        windows = [window_groups(source, [b], budget - gb, PASS2_BYTES_PER_SAMPLE, opts.window_groups)[0]
                   for b, gb in zip(batches, grid_bytes)]
        # the grid series are held per open group whatever the batching: warn when they
        # alone would pass the limit (a long trace at a fine resolution)
        in_flight = 1 if client is not None else (workers or default_workers())
        series_bytes = grid.n_cells * 16.0
        fixed = series_bytes * (2 + sum(len(ctx.group_names[lv]) > 1 for lv in levels) + 4 * in_flight)
        if fixed > memory_limit / 2:
            warnings.append(f"the {grid.n_cells:,}-cell grid at {resolution_s * 1e3:g} ms needs about "
                            f"{fixed / 2**20:,.0f} MiB for the aggregate series alone, over half of --memory-limit "
                            f"({memory_limit / 2**20:,.0f} MiB): use a coarser --resolution or a larger limit")
    else:
        source = ArraySource(traceset.arrays())
        ranges = cost_ranges(source.gpu_rows, (workers or default_workers()) * (2 if opts.batch_gpus else 1))
        batches = [np.arange(a, b) for a, b in ranges]
        if opts.batch_gpus:
            batches = [b[i: i + opts.batch_gpus] for b in batches for i in range(0, len(b), opts.batch_gpus)]
        windows = [None] * len(batches)
    plan_groups(ctx, batches)
    # streamed: the spanning groups' metrics one at a time (their series are the
    # longest arrays left at the end); in memory: on every core
    # the cluster series' own work (period, events) runs beside the spanning groups'
    # metrics as soon as the cluster is complete
    min_period_s = max(0.05, 2 * effective_period_s, 2 * grid.step_s)

    def cluster_work(power_w: np.ndarray):
        period_s, corr = None, 0.0
        if workload == "training":
            # a period shorter than two effective update periods cannot be resolved
            period_s, corr = autocorr_period_s(power_w, grid.step_s, min_period_s=min_period_s)
            release_freed_memory()  # the FFT's buffers (a long trace: tens of MB each)
        smooth_s = round(period_s, 6) if period_s is not None else 1.0  # one iteration, else 1 s
        events = sw.events(power_w, grid, smooth_s=smooth_s, threshold=opts.event_threshold, level="cluster",
                           group="cluster")
        return period_s, corr, events

    merger = Merger(ctx, len(gpus), workers=1 if streaming else workers, cluster_work=cluster_work)
    for res in run_ordered(analysis_task, [(source, b, i, w) for i, (b, w) in enumerate(zip(batches, windows))],
                           workers=workers, client=client, shared=(ctx,)):
        merger.add(res)
    merger.finish()
    phases, merger.phases = sorted(merger.phases, key=lambda r: r.gpu), []
    detection = ph.assemble(dparams, gpus, phases, detect_effective_s, phase_hist=merger.phase_hist)
    del phases  # their arrays are in the frame now; the next step() hands the heap back
    warnings += detection.warnings

    step("swings")
    levels_out, swings, spectrum_out = merger.levels_out()

    step("iterations")
    cluster = merger.cluster
    phase_summary = detection.summary()
    iterations = None
    iteration_summary = None
    stragglers = find_stragglers(pl.DataFrame())
    period_s, corr, events = merger.cluster_result
    if workload == "training":
        if period_s is not None:
            per_gpu_iter = iteration_table(detection.segments, period_s)
            release_freed_memory()  # its per-segment temporaries
            stragglers = find_stragglers(per_gpu_iter)
            iterations = (
                per_gpu_iter.group_by("iteration")
                .agg(
                    pl.col("compute_start").min().alias("start"),
                    pl.col("compute_end").max().alias("compute_end"),
                    pl.col("compute_s").median().alias("median_compute_s"),
                    pl.len().alias("gpus"),
                )
                .sort("iteration")
            )
            iteration_summary = {
                "count": int(iterations.height),
                "period_s": round(period_s, 6),
                "autocorrelation": round(corr, 4),
                "median_compute_s": _round(per_gpu_iter.get_column("compute_s").median()),
                "stragglers": stragglers.get_column("gpu").to_list(),
            }
            del per_gpu_iter
        else:
            warnings.append("no periodic iteration structure found in the cluster power (autocorrelation peak "
                            f"{corr:.4f} < 0.3); iterations not reported")

    step("events")  # found with the cluster series (cluster_work)

    cluster_power = pl.DataFrame({
        "ts": grid.times(),
        "power_w": cluster.power_w[0],
        "coverage": cluster.coverage[0],
    })
    gpu_stats = _gpu_stats(periods, topology, detection)

    dataset = traceset.dataset_summary()
    dataset["resolution_ms"] = round(grid.step_s * 1e3, 6)
    if time_range is not None:
        dataset["time_range"] = time_range
    dataset["engine"] = {"mode": "dask" if client is not None else ("stream" if streaming else "memory"),
                         "batches": len(batches), "windowed_batches": sum(w is not None for w in windows)}
    return Analysis(
        dataset=dataset,
        data_quality=traceset.quality.to_dict(),
        workload=workload,
        gpu_stats=gpu_stats,
        phases=detection.segments,
        phase_summary=phase_summary,
        iterations=iterations,
        iteration_summary=iteration_summary,
        stragglers=stragglers,
        cluster_power=cluster_power,
        swings=swings,
        levels=levels_out,
        events=events,
        violations=merger.sorted_violations(),
        offsets_s=offsets,
        warnings=list(dict.fromkeys(warnings + _semantics_warning(semantics, phase_summary))),
        spectrum=spectrum_out,
        gpu_heatmap=merger.heatmap(gpus),
    )


def _no_samples(time_range: dict | None) -> ParameterError:
    if time_range is None:
        return ParameterError("no samples to analyze (every row was excluded; see tracekit info)")
    return ParameterError(f"no samples between --since {time_range['since'] or '(open)'} and --until "
                          f"{time_range['until'] or '(open)'}")


def _check_options(opts: AnalyzeOptions) -> None:
    """One-line errors for option values no analysis can use (the CLI checks its own)."""
    check_choice(opts, "workload", ("auto", "training", "inference"))
    check_choice(opts, "engine", ("auto", "memory", "stream"))
    check_positive_ints(opts, ("batch_gpus", "workers", "window_groups", "read_rows", "memory_limit_bytes"))


def _streaming(traceset, opts: AnalyzeOptions, client, memory_limit: int) -> bool:
    """Stream from the dataset's files rather than read the whole trace?"""
    can = traceset.index is not None and not traceset.loaded
    if client is not None or opts.engine == "stream":
        if traceset.index is None:
            raise ParameterError("streaming and --scheduler need a canonical dataset: convert the trace first "
                                 "(tracekit convert SRC DST)")
        return True
    if opts.engine == "memory" and can:
        from tracekit.engine.memory import RAM_SHARE, ram_bytes, ram_limit_bytes
        from tracekit.units import format_size

        need, limit = in_memory_bytes(traceset.n_samples), ram_limit_bytes()
        if limit is not None and need > limit:
            raise ParameterError(f"--engine memory would hold ~{format_size(need)} for {traceset.n_samples:,} "
                                 f"samples, over {RAM_SHARE * 100:g} % of this machine's {format_size(ram_bytes())}; "
                                 "use --engine auto (streams it)")
    if opts.engine == "memory" or not can:
        return False
    return in_memory_bytes(traceset.n_samples) > memory_limit


def _batch_budget(memory_limit: int, workers: int | None, client) -> float:
    if client is not None:  # the limit holds per worker process: its threads run a task each
        in_flight = max(client.nthreads().values(), default=1)
    else:  # the threads' batches and one finished batch waiting to be merged
        in_flight = (workers or default_workers()) + 1
    return max(memory_limit - IN_MEMORY_BASE_BYTES, 64 * 2**20) * 0.7 / in_flight


def _pass2_read_rows(opts: AnalyzeOptions, budget: float) -> int:
    """Samples a streamed pass-2 task reads at a time: an eighth of its batch budget."""
    return opts.read_rows or max(1, int(budget / 8 / PASS2_BYTES_PER_SAMPLE))


def _trace_grid(periods: pl.DataFrame, resolution_s: float, shift_ns: np.ndarray | None = None) -> agg.Grid:
    """The grid over every GPU's first to last sample (from the per-GPU periods; each
    GPU's times less its clock offset ``shift_ns``)."""
    has = periods.get_column("samples").to_numpy() > 0
    first = periods.get_column("start").dt.epoch("ns").to_numpy()[has]
    last = periods.get_column("end").dt.epoch("ns").to_numpy()[has]
    if shift_ns is not None:
        first, last = first - shift_ns[has], last - shift_ns[has]
    return agg.grid_over(int(first.min()), int(last.max()), resolution_s)


def _auto_offsets(traceset, periods: pl.DataFrame, gpus: list[str], resolution_s: float, sample_period_s: float,
                  opts: AnalyzeOptions, *, streaming: bool, budget: float | None, workers, client
                  ) -> tuple[dict[str, float], list[str]]:
    """``--align auto``: (each host's clock offset, the hosts without a sample to
    estimate it from), on the grid cells of :func:`tracekit.analysis.align.window`
    (the middle of a long trace).  The host series come from GPU batches, read from the
    dataset's files when streaming (memory bounded by the batch budget), else sliced
    from the arrays in memory."""
    from tracekit.analysis.align import estimate_offsets, window
    from tracekit.analysis.partial import host_cells_task
    from tracekit.traceset import level_groups

    grid = _trace_grid(periods, resolution_s)
    win = window(grid.n_cells, grid.step_ns, sample_period_s * 1e9)
    part = traceset
    if win is not None:
        grid = agg.Grid(grid.t0_ns + win[0] * grid.step_ns, grid.step_ns, win[1], grid.hold_ns)
        part = traceset.time_slice(grid.t0_ns, grid.t0_ns + grid.n_cells * grid.step_ns)
    hosts, host_of, _ = level_groups(gpus, traceset.topology, "host")
    if len(hosts) < 2:
        return {h: 0.0 for h in hosts}, []
    source = part.index if streaming else ArraySource(part.arrays())
    rows = np.asarray(source.gpu_rows, dtype=np.float64)
    parts = workers or default_workers()
    max_rows = None
    if streaming:  # a batch's samples and its hosts' grid rows within the batch budget
        grid_bytes = grid.n_cells * 16.0 * len(hosts) / len(gpus)
        parts = max(parts, int(np.ceil(float((rows * PASS2_BYTES_PER_SAMPLE + grid_bytes).sum()) / budget)))
        max_rows = _pass2_read_rows(opts, budget)
    batches = [np.arange(a, b) for a, b in cost_ranges(rows + 1.0, parts)]
    power = np.zeros((len(hosts), grid.n_cells))
    gpu_time = np.zeros_like(power)
    for got, mean_sum, covered in run_ordered(host_cells_task, [(source, b, host_of[b]) for b in batches],
                                              workers=workers, client=client,
                                              shared=(grid, int(opts.max_gap_s * 1e9), max_rows)):
        power[got] += mean_sum
        gpu_time[got] += covered
    power[gpu_time <= 0] = np.nan
    unseen = [h for h, seen in zip(hosts, (gpu_time > 0).any(axis=1)) if not seen]
    del gpu_time
    est = estimate_offsets(power, grid.step_s, opts.max_offset_s)
    return {h: round(float(o), 6) for h, o in zip(hosts, est)}, unseen


def _context(dparams, grid, opts: AnalyzeOptions, gpus: list[str], topology: pl.DataFrame, shift_ns: np.ndarray,
             levels: tuple[str, ...]) -> Context:
    from tracekit.traceset import level_groups

    tdp_of = dict(zip(topology.get_column("gpu").to_list(), topology.get_column("tdp_w").to_list()))
    tdp = np.array([np.nan if tdp_of.get(g) is None else float(tdp_of[g]) for g in gpus], dtype=np.float64)
    group_of, names, sizes, provisioned = {}, {}, {}, {}
    for lv in levels:
        n, of, _ = level_groups(gpus, topology, lv)
        group_of[lv], names[lv] = of, n
        sizes[lv] = np.bincount(of, minlength=len(n))
        provisioned[lv] = np.bincount(of, weights=np.nan_to_num(tdp, nan=0.0), minlength=len(n))
        unknown = np.bincount(of, weights=np.isnan(tdp).astype(np.float64), minlength=len(n)) > 0
        provisioned[lv][unknown] = np.nan
    heat_per = int(np.ceil(grid.n_cells / min(agg.HEATMAP_COLUMNS, grid.n_cells)))
    return Context(dparams, grid, int(opts.max_gap_s * 1e9), heat_per, shift_ns, levels, group_of, names, sizes,
                   provisioned, tdp, windows_s=tuple(opts.windows_s), ramp_window_s=opts.ramp_window_s,
                   rules=list(opts.rules))


def _round(v, digits: int = 6):
    return None if v is None else round(float(v), digits)


def _semantics_warning(semantics: dict, phase_summary: dict) -> list[str]:
    if semantics.get("kind") == "average" and semantics.get("window_s"):
        w = semantics["window_s"]
        short = [name for name, s in phase_summary.items()
                 if s["mean_duration_ms"] is not None and s["mean_duration_ms"] < 2e3 * w]
        if short:
            return [f"power is a {w:g} s moving average (e.g. NVML power.draw on Hopper): phases "
                    f"{', '.join(short)} are shorter than 2 windows, so their levels are smeared and "
                    "their durations uncertain"]
    return []


def _gpu_stats(periods: pl.DataFrame, topology: pl.DataFrame, detection) -> pl.DataFrame:
    out = (
        periods.join(topology.select("gpu", "host", "rack", "model", "tdp_w"), on="gpu", how="left")
        .join(detection.gpu_p99, on="gpu", how="left")
        .with_columns((pl.col("peak_w") / pl.col("tdp_w")).alias("peak_over_tdp"))
    )
    return out.join(detection.gpu_levels, on="gpu", how="left").sort("gpu")
