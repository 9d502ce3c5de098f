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

import polars as pl

from tracekit.analysis import aggregate as agg
from tracekit.analysis import phases as ph
from tracekit.analysis import swings as sw
from tracekit.analysis.iterations import autocorr_period_s, find_stragglers, iteration_table
from tracekit.analysis.rules import Rule, Violation
from tracekit.errors import ParameterError

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


def analyze(traceset, options: AnalyzeOptions | None = None, progress=None, **kw) -> Analysis:
    """Analyze a :class:`tracekit.traceset.TraceSet` (or a path, opened with defaults).

    Parameters
    ----------
    traceset
        A TraceSet from :func:`tracekit.open`, or a path.
    options
        :class:`AnalyzeOptions`; keyword arguments override its fields.
    progress
        Optional callable ``progress(step_name)`` for progress display.

    Returns
    -------
    Analysis
    """
    from tracekit.traceset import TraceSet, open_trace

    if not isinstance(traceset, TraceSet):
        traceset = open_trace(traceset)
    opts = options or AnalyzeOptions()
    for k, v in kw.items():
        if not hasattr(opts, k):
            raise ParameterError(f"unknown analyze option {k!r}")
        setattr(opts, k, v)
    step = progress or (lambda name: None)
    warnings: list[str] = list(traceset.quality.warnings)

    topology = traceset.topology
    step("resolution")
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
    arrays = traceset.arrays()
    if offsets:
        arrays = arrays.shifted(offsets)

    step("phases")
    if opts.align == "auto":
        grid0 = agg.make_grid(arrays, resolution_s)
        host_series = agg.aggregate(arrays, grid0, opts.max_gap_s, level="host")
        from tracekit.analysis.align import estimate_offsets

        est = estimate_offsets(host_series.power_w, grid0.step_s, opts.max_offset_s)
        offsets = {h: round(float(o), 6) for h, o in zip(host_series.groups, est)}
        arrays = arrays.shifted(offsets)

    detection = ph.detect(arrays, workload=opts.workload, effective_period_s=max(effective_period_s, sample_period_s),
                          sample_period_s=sample_period_s)
    warnings += detection.warnings
    workload = detection.workload

    step("aggregate")
    grid = agg.make_grid(arrays, resolution_s)
    levels = tuple(lv for lv in LEVEL_ORDER if lv in opts.levels or lv == "cluster")
    series, gpu_grid_peaks, heatmap = agg.aggregate_all(arrays, grid, opts.max_gap_s, levels=levels)

    step("swings")
    tdp_by_gpu = dict(zip(topology.get_column("gpu").to_list(), topology.get_column("tdp_w").to_list()))
    levels_out: dict = {}
    swing_rows: list[dict] = []
    spectrum_out: dict = {}
    def group_metrics(job: tuple[str, int]) -> dict:
        level, gi = job
        s = series[level]
        members = s.members[gi]
        tdps = [tdp_by_gpu.get(g) for g in members]
        provisioned = float(sum(tdps)) if tdps and all(t is not None for t in tdps) else None
        sum_of_peaks = float(sum(gpu_grid_peaks[g] for g in members if g in gpu_grid_peaks))
        m = sw.metrics(
            s.power_w[gi], s.coverage[gi], grid.step_s,
            windows_s=opts.windows_s, ramp_window_s=opts.ramp_window_s,
            provisioned_w=provisioned, sum_of_peaks_w=sum_of_peaks,
            with_spectrum=(level == "cluster"),
        )
        per_gpu = [gpu_grid_peaks[g] / tdp_by_gpu[g] for g in members if tdp_by_gpu.get(g) and g in gpu_grid_peaks]
        m["max_gpu_peak_over_tdp"] = round(max(per_gpu), 4) if per_gpu else None
        return m

    from tracekit.engine.local import map_items

    jobs = [(level, gi) for level, s in series.items() for gi in range(len(s.groups))]
    for (level, gi), m in zip(jobs, map_items(group_metrics, jobs)):
        group = series[level].groups[gi]
        spec = m.pop("_spectrum", None)
        if spec is not None:
            spectrum_out = {"freq_hz": spec.freq_hz, "psd": spec.psd_w2_per_hz}
        levels_out.setdefault(level, {})[group] = m
        for window, v in m["swing"].items():
            swing_rows.append({"level": level, "group": group, "window": window, **v})
    swings = pl.DataFrame(swing_rows, schema={"level": pl.String, "group": pl.String, "window": pl.String,
                                              "max_w": pl.Float64, "p99_w": pl.Float64,
                                              "max_pct_of_peak": pl.Float64})

    step("iterations")
    cluster = series["cluster"]
    phase_summary = detection.summary()
    iterations = None
    iteration_summary = None
    stragglers = find_stragglers(pl.DataFrame())
    if workload == "training":
        # a period shorter than two effective update periods cannot be resolved
        period_s, corr = autocorr_period_s(cluster.power_w[0], grid.step_s,
                                           min_period_s=max(0.05, 2 * effective_period_s, 2 * grid.step_s))
        if period_s is not None:
            per_gpu_iter = iteration_table(detection.segments, period_s)
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
        else:
            warnings.append("no periodic iteration structure found in the cluster power (autocorrelation peak "
                            f"{corr:.2f} < 0.3); iterations not reported")

    step("events")
    smooth_s = iteration_summary["period_s"] if iteration_summary else 1.0
    events = sw.events(cluster.power_w[0], grid, smooth_s=smooth_s, threshold=opts.event_threshold,
                       level="cluster", group="cluster")

    violations: list[Violation] = []
    for rule in opts.rules:
        violations += sw.check_rule(rule, series, grid)

    cluster_power = pl.DataFrame({
        "ts": grid.times(),
        "power_w": cluster.power_w[0],
        "coverage": cluster.coverage[0],
    })
    gpu_stats = _gpu_stats(periods, topology, detection)

    dataset = traceset.dataset_summary()
    dataset["resolution_ms"] = round(grid.step_s * 1e3, 6)
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
        violations=violations,
        offsets_s=offsets,
        warnings=list(dict.fromkeys(warnings + _semantics_warning(semantics, detection))),
        spectrum=spectrum_out,
        gpu_heatmap=heatmap,
    )


def _round(v, digits: int = 6):
    return None if v is None else round(float(v), digits)


def _semantics_warning(semantics: dict, detection) -> list[str]:
    if semantics.get("kind") == "average" and semantics.get("window_s"):
        w = semantics["window_s"]
        short = [name for name, s in detection.summary().items()
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
