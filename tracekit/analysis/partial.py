"""``analyze`` as map tasks over GPU batches, merged in order.

The same tasks serve the three executors (:mod:`tracekit.engine.stream`): one batch
per thread over arrays already in memory, batches read from a canonical dataset with
memory bounded by ``--memory-limit``, and Dask tasks on other machines.

1. :func:`sampling_task` (pass 1, streaming only): per-GPU sampling statistics and
   power histograms; merged they fix the sampling period, the workload, the
   histogram range, every GPU's levels and the grid (:class:`Context`).
2. :func:`analysis_task` (pass 2): per GPU detection (levels, labels, segments),
   cell means on the grid summed into the batch's groups, and every group whose GPUs
   all lie in the batch finished on the spot (metrics, rule checks); groups that
   span batches (always the cluster) come back as partial sums.  A batch over its
   memory budget is read in time windows of row groups per GPU, each GPU's state
   (labeler, open segment, open grid cell) carried from one window to the next.
3. :class:`Merger` appends per-GPU results, adds partial sums in batch order and
   finishes a group as soon as the batch holding its last GPU is merged, so only the
   cluster and the groups spanning the batch in progress are held.

Partial sums combine by addition, so any batching gives the same answer up to the
order of floating-point additions (tests: any split equals the one-batch run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from tracekit.analysis import phases as ph
from tracekit.analysis import swings as sw
from tracekit.analysis.aggregate import Grid, LevelSeries
from tracekit.analysis.rules import Rule, Violation
from tracekit.engine.local import map_items
from tracekit.engine.memory import release_freed_memory
from tracekit.kernels.grid import GridAccumulator, grid_cell_means, time_grid
from tracekit.kernels.stats import SamplingAccumulator, gpu_sampling


class ArraySource:
    """Batches sliced from :class:`tracekit.traceset.GpuArrays` in memory."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.gpus = arrays.gpus
        self.gpu_rows = np.diff(arrays.offsets)

    def read(self, gpus):
        a = self.arrays
        gpus = np.asarray(gpus, dtype=np.int64)
        if len(gpus) and np.array_equal(gpus, np.arange(gpus[0], gpus[0] + len(gpus))):
            s0, s1 = a.offsets[gpus[0]], a.offsets[gpus[-1] + 1]
            return a.offsets[gpus[0]: gpus[-1] + 2] - s0, a.ts_ns[s0:s1], a.power_w[s0:s1]
        counts = a.offsets[gpus + 1] - a.offsets[gpus]
        offsets = np.zeros(len(gpus) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        idx = np.concatenate([np.arange(a.offsets[g], a.offsets[g + 1]) for g in gpus]) if len(gpus) else []
        return offsets, a.ts_ns[idx], a.power_w[idx]


def gpu_reads(source, gpus: np.ndarray, max_rows: int | None):
    """Read a batch's GPUs a few at a time: yields ``(lo, hi, offsets, ts, power)`` for
    consecutive ranges ``gpus[lo:hi]`` of at most ``max_rows`` samples (a GPU over it
    alone), so a batch's sample memory is bounded apart from its size."""
    rows = np.asarray(source.gpu_rows)[np.asarray(gpus, dtype=np.int64)]
    lo = 0
    while lo < len(gpus):
        hi = lo + 1
        if max_rows:
            total = rows[lo]
            while hi < len(gpus) and total + rows[hi] <= max_rows:
                total += rows[hi]
                hi += 1
        else:
            hi = len(gpus)
        yield (lo, hi, *source.read(gpus[lo:hi]))
        lo = hi


# -- pass 1 ----------------------------------------------------------------------------
def sampling_task(source, gpus, window_groups: int | None = None, max_rows: int | None = None,
                  histograms: bool = True) -> dict:
    """Per-GPU sampling statistics (:func:`gpu_sampling`) and the pooled 1 W power
    histogram of a batch of GPUs, and each GPU's own histogram (``gpu_hist``: the
    levels of GPUs that pass 2 reads in time windows); with ``window_groups`` the
    batch is read in time windows of that many row groups per GPU, else a few GPUs
    (``max_rows`` samples) at a time.  ``histograms=False``: the statistics only
    (``hist`` and ``gpu_hist`` empty)."""
    gpus = np.asarray(gpus, dtype=np.int64)
    if not window_groups:
        parts, hists = [], []
        for _, _, offsets, ts, power in gpu_reads(source, gpus, max_rows):
            parts.append(gpu_sampling(ts, power, offsets))
            if histograms:
                hists += [ph.pooled_histogram(power[offsets[j]: offsets[j + 1]]) for j in range(len(offsets) - 1)]
        st = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        acc = SamplingAccumulator(len(gpus))
        hists = [np.zeros(0, dtype=np.int64) for _ in gpus] if histograms else []
        for w in range(source.n_windows(gpus, window_groups)):
            offsets, ts, power = source.read_window(gpus, w, window_groups)
            for j in range(len(gpus)):
                a, b = offsets[j], offsets[j + 1]
                if b > a:
                    acc.push(j, ts[a:b], power[a:b])
                    if histograms:
                        hists[j] = ph.pool_histograms([hists[j], ph.pooled_histogram(power[a:b])])
        st = acc.finish()
    st["hist"] = ph.pool_histograms(hists)
    st["gpu_hist"] = dict(zip((int(g) for g in gpus), hists))
    st["gpu_index"] = np.asarray(gpus, dtype=np.int64)
    return st


#: Estimated bytes held per sample of a batch: pass 1 (ts, power, Arrow buffers while
#: copying) and pass 2 (plus per-GPU labels, detection temporaries, shifted times).
PASS1_BYTES_PER_SAMPLE = 16.0
PASS2_BYTES_PER_SAMPLE = 24.0


def balanced_budget(budget: float, costs: np.ndarray, workers: int | None = None, client=None) -> float:
    """The batch budget, lowered so every worker thread gets about four batches
    (load balance: the last batches do not leave threads idle)."""
    from tracekit.engine.local import default_workers

    threads = sum(client.nthreads().values()) if client is not None else (workers or default_workers())
    return min(budget, max(float(np.sum(costs)) / (4 * max(threads, 1)), 1.0))


def window_groups(index, batches, budget: float, bytes_per_sample: float, forced: int | None = None) -> list:
    """Per batch: row groups per GPU per time window, or None to read the batch at once
    (when it fits in ``budget``)."""
    out = []
    rows_per_group = float(index.rg_rows.max()) if len(index.rg_rows) else 1.0
    for b in batches:
        if forced:
            out.append(int(forced))
        elif index.gpu_rows[b].sum() * bytes_per_sample <= budget:
            out.append(None)
        else:
            out.append(max(1, int(budget // (len(b) * rows_per_group * bytes_per_sample))))
    return out


def run_sampling(index, budget: float, *, workers: int | None = None, client=None, batch_gpus: int | None = None,
                 forced_windows: int | None = None, read_rows: int | None = None,
                 histograms: bool = True) -> tuple[dict, np.ndarray]:
    """Pass 1 over a dataset (:class:`tracekit.io.dataset.DatasetIndex`) in batches of
    about ``budget`` bytes: :func:`merge_sampling` of the :func:`sampling_task` parts
    (``forced_windows``, ``read_rows``: see :class:`tracekit.analysis.analyze.AnalyzeOptions`;
    ``histograms=False``: the sampling statistics only)."""
    from tracekit.engine.stream import plan_batches, run_ordered

    costs = np.minimum(index.gpu_rows * PASS1_BYTES_PER_SAMPLE, budget / 8)
    batches = plan_batches(costs, np.zeros((len(index.gpus), 0), dtype=np.int64),
                           balanced_budget(budget, costs, workers, client), max_gpus=batch_gpus)
    windows = window_groups(index, batches, budget, PASS1_BYTES_PER_SAMPLE, forced_windows)
    rows = read_rows or max(1, int(budget / 4 / PASS1_BYTES_PER_SAMPLE))
    parts = []
    for part in run_ordered(sampling_task, [(index, b, w, rows, histograms) for b, w in zip(batches, windows)],
                            workers=workers, client=client):
        parts.append(part)
        release_freed_memory()  # the batch's arrays, freed on worker threads
    return merge_sampling(parts, len(index.gpus))


def merge_sampling(parts: list[dict], n_gpus: int) -> tuple[dict, np.ndarray]:
    """Per-GPU statistics in GPU order (with ``gpu_hist``: each GPU's histogram) and
    the pooled histogram from pass-1 parts."""
    keys = [k for k in parts[0] if k not in ("gpu_index", "hist", "gpu_hist")]
    st = {k: np.empty(n_gpus, dtype=parts[0][k].dtype) for k in keys}
    gpu_hist: dict = {}
    for p in parts:
        for k in keys:
            st[k][p["gpu_index"]] = p[k]
        gpu_hist.update(p.get("gpu_hist", {}))
    hist = ph.pool_histograms([p["hist"] for p in parts])
    st["gpu_hist"] = gpu_hist
    return st, hist


# -- clock alignment (--align auto) --------------------------------------------------------
def host_cells_task(source, gpus, rows, grid: Grid, max_gap_ns: int, max_rows: int | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each GPU's cell means on ``grid`` summed into its row (``rows``: the row of each
    GPU of the batch, e.g. its host): ``(rows present, sums W, GPU-seconds)``, only the
    batch's own rows.  Rows split between batches add up."""
    uniq, local = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    tg = time_grid(grid.t0_ns, grid.step_ns, grid.n_cells)
    mean_sum = np.zeros((len(uniq), grid.n_cells))
    gpu_time = np.zeros_like(mean_sum)
    local = local.reshape(-1)
    for lo, hi, offsets, ts, power in gpu_reads(source, gpus, max_rows):
        grid_cell_means(ts, power, offsets, local[lo:hi], tg, n_rows=len(uniq), max_gap_ns=max_gap_ns,
                        hold_ns=grid.hold_ns, mean_sum_w=mean_sum, gpu_time_s=gpu_time, check_sorted=False)
    return uniq, mean_sum, gpu_time


# -- the plan every batch shares ---------------------------------------------------------
@dataclass
class Context:
    """Everything a batch task needs from the whole trace (decided after pass 1)."""

    detect: ph.DetectParams
    grid: Grid
    max_gap_ns: int
    heat_per: int
    shift_ns: np.ndarray  # per GPU: host clock offset subtracted from its timestamps
    levels: tuple[str, ...]
    group_of: dict[str, np.ndarray]  # level -> group index of each GPU
    group_names: dict[str, list[str]]
    group_size: dict[str, np.ndarray]
    provisioned_w: dict[str, np.ndarray]  # NaN where a member's TDP is unknown
    tdp_w: np.ndarray  # per GPU, NaN = unknown
    last_batch: dict[str, np.ndarray] = field(default_factory=dict)  # level -> batch holding each group's last GPU
    windows_s: tuple[float, ...] = ()
    ramp_window_s: float = 1.0
    rules: list[Rule] = field(default_factory=list)
    gpu_hist: dict = field(default_factory=dict)  # GPU -> its 1 W histogram (its levels)
    max_rows: int | None = None  # samples read at once within a batch (None: the whole batch)
    #: (level, group) -> (level, group) of a higher level with the same GPUs: its
    #: series is the same sums, so its metrics are copied, not computed again
    alias: dict = field(default_factory=dict)

    def finished_in(self, level: str, batch_no: int) -> np.ndarray:
        """Groups of ``level`` whose every GPU is in batch ``batch_no`` alone."""
        return np.flatnonzero(self.last_batch[level] == batch_no)


def plan_groups(ctx: Context, batches: list[np.ndarray]) -> None:
    """Fill ``ctx.last_batch``: per level and group, the batch that completes it when
    the group lies in one batch, else the last batch holding one of its GPUs (as a
    negative number minus one, so the group is merged before it is finished)."""
    for lv in ctx.levels:
        of = ctx.group_of[lv]
        n = len(ctx.group_names[lv])
        first = np.full(n, -1, dtype=np.int64)
        last = np.full(n, -1, dtype=np.int64)
        for b, gpus in enumerate(batches):
            gs = np.unique(of[gpus])
            first[gs] = np.where(first[gs] < 0, b, first[gs])
            last[gs] = b
        # >= 0: finished inside that batch; < 0: spans batches, finished when batch -x-1 is merged
        ctx.last_batch[lv] = np.where((first == last) & (lv != "cluster"), last, -last - 1)
    ctx.alias = same_groups(ctx)


def same_groups(ctx: Context) -> dict:
    """Groups whose GPUs are exactly those of a group of a higher level (a row that
    is the whole cluster, a rack of one host): ``(level, group) -> (level, group)``
    of the highest such group.  Their series are the same sums of the same rows in
    the same order, so equal bit for bit.  A level with rules of its own keeps its
    groups (its violations name them)."""
    ruled = {r.level for r in ctx.rules}
    first: dict[bytes, tuple[str, int]] = {}
    alias = {}
    for lv in ctx.levels:  # highest level first
        of = ctx.group_of[lv]
        order = np.argsort(of, kind="stable")
        cuts = np.searchsorted(of[order], np.arange(len(ctx.group_names[lv]) + 1))
        for gi in range(len(cuts) - 1):
            members = order[cuts[gi]: cuts[gi + 1]].tobytes()
            if members in first and lv not in ruled:
                alias[(lv, gi)] = first[members]
            else:
                first.setdefault(members, (lv, gi))
    return alias


def alias_metrics(m: dict) -> dict:
    """The metrics of a group copied from ``m``, those of a higher group with the same
    GPUs (the spectrum is the cluster's alone)."""
    out = {k: v for k, v in m.items() if k != "_spectrum"}
    out["swing"] = {w: dict(v) for w, v in m["swing"].items()}
    if "_spectrum" in m:
        out["dominant_hz"] = out["band_share"] = out["largest_component_share"] = None
    return out


# -- pass 2 ----------------------------------------------------------------------------
@dataclass
class BatchResult:
    batch_no: int
    gpus: np.ndarray
    phases: list  # GpuPhases (labels and histogram dropped) per GPU with samples
    phase_hist: np.ndarray  # (phases, 1 W bins): the batch's per-phase power histogram
    peaks_w: np.ndarray  # per GPU of the batch: peak cell mean
    heat_e: np.ndarray
    heat_c: np.ndarray
    finished: dict  # (level, group index) -> metrics
    violations: list[Violation]
    partial: dict  # (level, group index) -> (sum of cell means W, GPU-seconds per cell)


def group_power(mean_sum: np.ndarray, gpu_time: np.ndarray) -> np.ndarray:
    """A finished group's power per cell (W): the sum of its GPUs' cell means, NaN
    where no GPU covered the cell."""
    return np.where(gpu_time > 0, mean_sum, np.nan)


def group_metrics(ctx: Context, level: str, gi: int, mean_sum: np.ndarray, gpu_time: np.ndarray,
                  member_peaks_w: np.ndarray, power: np.ndarray | None = None
                  ) -> tuple[dict, np.ndarray, np.ndarray, list[Violation]]:
    """Metrics of one finished group: (metrics, power W per cell, coverage, rule violations).
    The metrics and rules see the fully covered cells only (:func:`swings.full_cells`);
    the series returned keeps every cell with its coverage.  ``power``: the group's
    :func:`group_power` when already computed."""
    grid = ctx.grid
    size = float(ctx.group_size[level][gi])
    coverage = gpu_time / (size * grid.step_s)  # >= 0; np.clip is several times slower
    np.minimum(coverage, 1.0, out=coverage)
    if power is None:
        power = group_power(mean_sum, gpu_time)
    full = sw.masked_partial_cells(power, coverage)
    provisioned = float(ctx.provisioned_w[level][gi])
    members = np.flatnonzero(ctx.group_of[level] == gi)
    peaks = member_peaks_w[members]
    finite = np.isfinite(peaks)
    m = sw.metrics(full, coverage, grid.step_s, windows_s=ctx.windows_s, ramp_window_s=ctx.ramp_window_s,
                   provisioned_w=provisioned if np.isfinite(provisioned) else None,
                   sum_of_peaks_w=float(peaks[finite].sum()), with_spectrum=(level == "cluster"))
    tdp = ctx.tdp_w[members]
    ok = finite & np.isfinite(tdp) & (tdp > 0)
    m["max_gpu_peak_over_tdp"] = round(float((peaks[ok] / tdp[ok]).max()), 4) if ok.any() else None
    name = ctx.group_names[level][gi]
    violations = [v for r in ctx.rules if r.level == level for v in sw.check_group_rule(r, name, full, grid)]
    del full
    return m, power, coverage, violations


def analysis_task(source, gpus, batch_no: int, window_groups: int | None, ctx: Context) -> BatchResult:
    """Pass 2 over one batch of GPUs (global indices ``gpus``), in one read or in time
    windows of ``window_groups`` row groups per GPU.  The sources hand out times
    already checked to be sorted per GPU (GpuArrays, dataset reads), so the kernels
    do not check them again."""
    gpus = np.asarray(gpus, dtype=np.int64)
    keys = np.stack([ctx.group_of[lv][gpus] for lv in ctx.levels], axis=1)
    uniq, row_of_gpu = np.unique(keys, axis=0, return_inverse=True)
    grid = ctx.grid
    acc = GridAccumulator(time_grid(grid.t0_ns, grid.step_ns, grid.n_cells), row_of_gpu.reshape(-1),
                          max_gap_ns=ctx.max_gap_ns, hold_ns=grid.hold_ns, n_groups=len(uniq), cell_means=True,
                          heat_per=ctx.heat_per)
    shift = ctx.shift_ns[gpus]
    phases = []
    if not window_groups:
        for lo, hi, offsets, ts, power in gpu_reads(source, gpus, ctx.max_rows):
            if shift[lo:hi].any():
                ts = ts - np.repeat(shift[lo:hi], np.diff(offsets))
            for j in range(hi - lo):
                a, b = offsets[j], offsets[j + 1]
                g = int(gpus[lo + j])
                res = ph.detect_gpu(ts[a:b], power[a:b], ctx.detect, g, keep_labels=False, check_sorted=False,
                                    counts=ctx.gpu_hist.get(g))
                if res is not None:
                    phases.append(res)
            full = np.zeros(len(gpus) + 1, dtype=np.int64)  # the other GPUs: empty ranges
            full[lo + 1: hi + 1] = offsets[1:]
            full[hi + 1:] = offsets[-1]
            acc.add(ts, power, full, check_sorted=False)
            del ts, power
    else:
        dets = [ph.GpuDetector(ctx.detect, ctx.gpu_hist.get(int(g), np.zeros(0, dtype=np.int64)), int(g),
                               check_sorted=False) for g in gpus]
        for w in range(source.n_windows(gpus, window_groups)):
            offsets, ts, power = source.read_window(gpus, w, window_groups)
            if shift.any():
                ts = ts - np.repeat(shift, np.diff(offsets))
            for j, det in enumerate(dets):
                if det.levels is not None:
                    det.push(ts[offsets[j]: offsets[j + 1]], power[offsets[j]: offsets[j + 1]])
            acc.add(ts, power, offsets, check_sorted=False)
            del ts, power
        phases = [det.finish() for det in dets if det.levels is not None]
    # per-phase histograms only add up: one per batch, not one per GPU
    phase_hist = np.zeros((ctx.detect.k, ctx.detect.n_bins), dtype=np.int64)
    for i, res in enumerate(phases):
        phase_hist += res.hist
        phases[i] = res._replace(hist=None)
    acc.finish()
    cm = acc.cell_means_result()
    all_peaks = np.full(len(ctx.tdp_w), np.nan)
    all_peaks[gpus] = cm.peak_w
    finished, violations, partial = {}, [], {}
    for j, lv in enumerate(ctx.levels):
        for gi in np.unique(uniq[:, j]):
            if (lv, int(gi)) in ctx.alias:
                continue
            rows = np.flatnonzero(uniq[:, j] == gi)
            mean_sum, gpu_time = _row_sum(cm.mean_sum_w, rows), _row_sum(cm.gpu_time_s, rows)
            if ctx.last_batch[lv][gi] == batch_no:
                m, _, _, v = group_metrics(ctx, lv, int(gi), mean_sum, gpu_time, all_peaks)
                finished[(lv, int(gi))] = m
                violations += v
            else:
                partial[(lv, int(gi))] = (mean_sum, gpu_time)
    return BatchResult(batch_no, gpus, phases, phase_hist, cm.peak_w, cm.heat_energy_j, cm.heat_covered_s,
                       finished, violations, partial)


def _row_sum(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The sum of rows ``rows`` (ascending) of ``a``: one row is a view (no copy; the
    merger copies what it accumulates into), consecutive rows (a group's hosts: the
    rows are sorted by level) are summed from a view, others from a copy."""
    if len(rows) == 1:
        return a[rows[0]]
    if rows[-1] - rows[0] == len(rows) - 1:
        return a[rows[0]: rows[-1] + 1].sum(axis=0)
    return a[rows].sum(axis=0)


# -- merge -----------------------------------------------------------------------------
class Merger:
    """Adds batch results in batch order; finishes spanning groups once complete.

    ``cluster_work(power_w)``, when given, runs on the cluster's power series (W per
    cell) beside the spanning groups' metrics as soon as the cluster is complete (the
    analysis' work on the cluster series alone: iterations, events); its result is
    ``cluster_result``.
    """

    def __init__(self, ctx: Context, n_gpus: int, workers: int | None = None,
                 cluster_work: Callable[[np.ndarray], object] | None = None):
        self.ctx = ctx
        self.workers = workers  # threads for the spanning groups' metrics (1: one at a time, the least memory)
        self.cluster_work = cluster_work
        self.cluster_result = None
        self.phases: list = []
        self.phase_hist = np.zeros((ctx.detect.k, ctx.detect.n_bins), dtype=np.int64)
        self.peaks_w = np.full(n_gpus, np.nan)
        n_heat = -(-ctx.grid.n_cells // ctx.heat_per) if ctx.heat_per else 0
        self.heat_e = np.zeros((n_gpus if ctx.heat_per else 0, n_heat))
        self.heat_c = np.zeros_like(self.heat_e)
        self.metrics: dict = {}
        self.violations: list[Violation] = []
        self.partial: dict = {}
        self.cluster: LevelSeries | None = None
        self.next_batch = 0
        self.aliases: dict[tuple, list] = {}  # group -> the groups with the same GPUs (ctx.alias)
        for other, src in ctx.alias.items():
            self.aliases.setdefault(src, []).append(other)

    def add(self, res: BatchResult) -> None:
        if res.batch_no != self.next_batch:
            raise RuntimeError(f"batch {res.batch_no} merged out of order (expected {self.next_batch})")
        self.next_batch += 1
        self.phases += res.phases
        self.phase_hist += res.phase_hist
        self.peaks_w[res.gpus] = res.peaks_w
        if self.ctx.heat_per:
            self.heat_e[res.gpus] = res.heat_e
            self.heat_c[res.gpus] = res.heat_c
        for key, m in res.finished.items():
            self._put(key, m)
        self.violations += res.violations
        for key, (mean_sum, gpu_time) in res.partial.items():
            if key in self.partial:
                self.partial[key][0][:] += mean_sum
                self.partial[key][1][:] += gpu_time
            else:  # a copy: a batch's groups may share one row's arrays
                self.partial[key] = (mean_sum.copy(), gpu_time.copy())
        self._finish([key for key in self.partial if self.ctx.last_batch[key[0]][key[1]] == -res.batch_no - 1])
        release_freed_memory()  # the batch's arrays, freed on worker threads

    def _finish(self, keys: list) -> None:
        """Metrics of the spanning groups ``keys``, now complete (the last batch
        completes several, the cluster among them: on ``self.workers`` threads)."""
        # the cluster first, and its series' own work before it: the longest items
        # start first on the threads
        parts = [(key, *self.partial.pop(key), None) for key in sorted(keys, key=lambda k: k[0] != "cluster")]
        if parts and parts[0][0][0] == "cluster":
            key, mean_sum, gpu_time, _ = parts[0]
            parts[0] = (key, mean_sum, gpu_time, group_power(mean_sum, gpu_time))
            if self.cluster_work is not None:
                parts.insert(0, (None, None, None, parts[0][3]))

        def one(part):
            key, mean_sum, gpu_time, power = part
            if key is None:
                return self.cluster_work(power)
            return group_metrics(self.ctx, *key, mean_sum, gpu_time, self.peaks_w, power=power)

        results = map_items(one, parts, self.workers)
        if parts and parts[0][0] is None:
            self.cluster_result = results.pop(0)
            parts.pop(0)
        for (key, _, _, _), (m, power, coverage, v) in zip(parts, results):
            self._put(key, m)
            self.violations += v
            if key[0] == "cluster":
                self.cluster = LevelSeries("cluster", ["cluster"], [], power[None, :], coverage[None, :])

    def _put(self, key: tuple, m: dict) -> None:
        """A finished group's metrics, and those of the groups with the same GPUs."""
        self.metrics[key] = m
        for other in self.aliases.get(key, ()):
            self.metrics[other] = alias_metrics(m)

    def finish(self) -> None:
        """Finish the groups still open (none after the last batch's merge)."""
        self._finish(list(self.partial))

    def heatmap(self, gpus: list[str]) -> dict | None:
        ctx = self.ctx
        if not ctx.heat_per:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            heat = np.where(self.heat_c > 0, self.heat_e / self.heat_c, np.nan)
        t = ctx.grid.t0_ns + np.arange(heat.shape[1], dtype=np.int64) * ctx.heat_per * ctx.grid.step_ns
        return {"gpus": list(gpus), "t_ns": t, "power_w": heat}

    def levels_out(self) -> tuple[dict, pl.DataFrame, dict]:
        """(levels of the JSON, the swings frame, the cluster spectrum) in level then group order."""
        levels_out: dict = {}
        swing_rows: list[dict] = []
        spectrum: dict = {}
        for lv in self.ctx.levels:
            for gi, group in enumerate(self.ctx.group_names[lv]):
                m = self.metrics.get((lv, gi))
                if m is None:
                    continue
                spec = m.pop("_spectrum", None)
                if spec is not None:
                    spectrum = {"freq_hz": spec.freq_hz, "psd": spec.psd_w2_per_hz}
                levels_out.setdefault(lv, {})[group] = m
                for window, v in m["swing"].items():
                    swing_rows.append({"level": lv, "group": group, "window": window, **v})
        swings = pl.DataFrame(swing_rows, schema={"level": pl.String, "group": pl.String, "window": pl.String,
                                                  "max_w": pl.Float64, "p99_w": pl.Float64,
                                                  "max_pct_of_peak": pl.Float64})
        return levels_out, swings, spectrum

    def sorted_violations(self) -> list[Violation]:
        """Violations by rule (as given), level, group and start."""
        rule_index = {r.name: i for i, r in enumerate(self.ctx.rules)}
        group_index = {(lv, g): i for lv in self.ctx.levels for i, g in enumerate(self.ctx.group_names[lv])}
        return sorted(self.violations, key=lambda v: (rule_index.get(v.rule, 0), group_index.get((v.level, v.group), 0),
                                                      v.start or ""))
