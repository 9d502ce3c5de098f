"""``tracekit replay``: the trace under what-if power caps, clock locks, smoothing and
storage.

The flow, for a :class:`~tracekit.traceset.TraceSet`:

1. What every policy shares (:class:`Context`): the sample arrays, phase labels by
   :func:`tracekit.analysis.phases.detect`, the power model of each GPU
   (:mod:`tracekit.replay.model`), and for training the iterations
   (:mod:`tracekit.analysis.iterations`).
2. Per policy, in the order lock -> cap -> smoothing -> storage:

   - *lock and cap* (:func:`tracekit.kernels.replay.clock_windows`): one clock per
     controller window (``cap_window_s`` of original time, default 1 s), the
     highest one (not above the lock) whose window mean replayed power is at most
     the cap; power scales by the model, each phase stretches by its ``beta``;
   - *aggregate caps* (``rack:40kW``; :func:`tracekit.kernels.replay.solve_group_windows`
     on the windows' sums): one clock per group and window for every sample above
     idle of the group's GPUs, the highest whose group power (the sum of the GPUs'
     window means) is at most the cap;
   - *synchronous training*: per iteration every GPU ends at the latest stretched
     compute end plus the communication time; the others wait (or wait less) at
     communication power, by scaling the duration of their communication after
     compute.  Because a shorter wait raises a window's mean, clocks and waits are
     solved together: clocks with the waits fixed, then waits with the clocks fixed,
     until every window is within the cap (``max_rounds``);
   - the replayed time axis (in the same kernel): each GPU starts at its first
     sample and every sample lasts its stretched covered time (a wait: its scaled
     time);
   - *smoothing* on the replayed per-GPU trace (floor and ramp limits, extra energy,
     no delay), then *storage* on each rack's grid series.
3. Figures per policy on one grid per trace (:mod:`tracekit.analysis.aggregate`,
   :mod:`tracekit.analysis.swings`): cluster peak, p99, min, mean, swings, spectrum
   band share; energy is the exact zero-order-hold integral of the replayed power;
   slowdown is the iteration-time ratio (training with iterations), else the
   busy-time stretch (inference: prompt and token time) or the run-time ratio.

Grid cells where some GPU has no sample (a GPU that finished earlier in the replay,
a gap) are left out of the cluster figures, so a replay that shifts GPUs apart does
not report the missing GPUs as a power dip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import polars as pl

from tracekit.engine.local import map_items, map_ranges, workers_scope
from tracekit.engine.memory import ram_limit_bytes, release_freed_memory
from tracekit.traceset import slice_by_time
from tracekit.units import format_size
from tracekit.errors import ParameterError, PolicyError
from tracekit.options import check_choice, check_positive_ints, with_overrides
from tracekit.kernels import replay as K
from tracekit.kernels.stats import quantiles
from tracekit.replay.model import PowerModel, gpu_models
from tracekit.replay.policy import Policy, build_policies
from tracekit.traceset import GpuArrays

DEFAULT_WINDOWS_S = (0.1, 1.0, 2.0, 5.0, 60.0)
#: Relative tolerance of the cap over the controller window (float32 power output).
CAP_RTOL = 1e-6
#: Synchronous iterations have settled when no extra iteration length moves by more
#: than this share of the sampling period (the data do not resolve finer times).
SYNC_TOL = 0.5

Sync = Literal["auto", "on", "off"]


@dataclass
class ReplayOptions:
    """Options of :func:`replay` (the CLI flags of ``tracekit replay``).

    Attributes
    ----------
    cap_window_s
        Controller window of caps, s of original time (default 1 s, like NVML's
        power averaging).  Windows are aligned to multiples of it since the epoch.
    workload
        ``auto``, ``training`` or ``inference`` (phase names and betas).
    sync
        Synchronous-training coupling: ``auto`` (training with iterations), ``on``,
        ``off``.
    resolution_s
        Grid step of the figures (default: median sampling period).
    max_gap_s
        Longer sampling gaps are missing data (not held, not stretched).
    windows_s, ramp_window_s
        Swing windows and ramp window of the figures.
    model_params
        Power-model overrides (see :mod:`tracekit.replay.model`).
    max_rounds
        Rounds of the clock / wait solution of synchronous training.
    workers
        Threads for the per-GPU kernels (default: all cores).
    """

    cap_window_s: float = 1.0
    workload: Literal["auto", "training", "inference"] = "auto"
    sync: Sync = "auto"
    resolution_s: float | None = None
    max_gap_s: float = 5.0
    windows_s: tuple[float, ...] = DEFAULT_WINDOWS_S
    ramp_window_s: float = 1.0
    model_params: dict | None = None
    max_rounds: int = 12
    workers: int | None = None
    since: str | int | None = None
    until: str | int | None = None
    memory_limit_bytes: int | None = None


@dataclass
class Iterations:
    """Synchronous-training spans matched across GPUs, as rows of
    :class:`tracekit.kernels.replay.Rows`: one per GPU and coupled iteration (compute
    part ``[a, z)``, wait ``[z, n)`` until its next compute), plus per GPU a start-up
    row (its samples before the first iteration, the last of them the wait).

    Rows are sorted by GPU then time; ``group`` numbers the coupled iterations
    ``0..count-1`` and the start-up is group ``count``.
    """

    offsets: np.ndarray  # CSR of rows per GPU
    azn: np.ndarray  # (n_rows, 3) global sample indices a, z, n
    group: np.ndarray  # per row
    lag_ns: np.ndarray  # per row: start minus the earliest start of its group
    span_ns: np.ndarray  # per row: original length ts[n] - ts[a]
    tails: np.ndarray  # per row: (covered time, gap remainders) of the wait
    base_end_ns: np.ndarray  # per group: max(lag + compute) in the original
    crit: np.ndarray  # per group: the row whose compute ends last in the original
    period_ns: np.ndarray  # per coupled iteration: original length
    period_s: float

    @property
    def count(self) -> int:
        return len(self.period_ns)


@dataclass
class Context:
    """What every policy of one replay shares."""

    arrays: GpuArrays
    labels: np.ndarray
    names: tuple[str, ...]
    workload: str
    models: list[PowerModel]
    clock_mhz: np.ndarray | None
    sample_period_s: float
    resolution_s: float
    hold_ns: int
    max_gap_ns: int
    options: ReplayOptions
    iterations: Iterations | None
    tdp_w: np.ndarray  # per GPU, NaN when unknown
    warnings: list[str] = field(default_factory=list)


@dataclass
class PolicyResult:
    """One replayed policy (or the baseline).

    Attributes
    ----------
    name
        ``baseline`` or the policy's label (``cap=350W``, ``lock=1410MHz+cap=80%``...).
    policy
        The :class:`~tracekit.replay.policy.Policy` (None for the baseline).
    figures
        The policy's entry of the JSON summary.
    arrays
        The replayed samples (None unless kept).
    cluster_power
        Cluster power per grid cell (ts, power_w, coverage) after storage.
    groups
        Peak, mean, min and p99 per rack and host (level, group, ...).
    storage
        Per rack with storage: ts, rack_w, grid_w, soc (None without storage).
    """

    name: str
    policy: Policy | None
    figures: dict
    arrays: GpuArrays | None
    cluster_power: pl.DataFrame
    groups: pl.DataFrame
    storage: pl.DataFrame | None = None


# --------------------------------------------------------------------------- context


def _observed_clock(traceset, n: int) -> np.ndarray | None:
    """Per-sample observed SM clock (MHz) aligned with the arrays, if the trace has it."""
    frame = getattr(traceset, "_samples", None)  # never build a frame just to look
    if frame is not None and "sm_clock_mhz" in frame.columns and frame.height == n:
        clock = frame.get_column("sm_clock_mhz").cast(pl.Float32).to_numpy()
    else:
        manifest = traceset.manifest or {}
        if "sm_clock_mhz" not in (manifest.get("columns") or []) or not traceset.path:
            return None
        from tracekit.io.dataset import read_dataset_samples

        try:
            clock = read_dataset_samples(traceset.path, columns=["sm_clock_mhz"]).get_column(
                "sm_clock_mhz").cast(pl.Float32).to_numpy()
        except Exception:  # noqa: BLE001 - the clock is optional: fall back to the spec clock
            return None
        if len(clock) != n:
            return None
    clock = np.ascontiguousarray(clock, dtype=np.float32)
    return clock if np.isfinite(clock).any() else None


def _iterations(arrays: GpuArrays, segments: pl.DataFrame, period_s: float, max_gap_ns: int,
                hold_ns: int) -> Iterations | None:
    from tracekit.analysis.iterations import iteration_table

    table = iteration_table(segments, period_s)
    if table.height == 0:
        return None
    index = {g: i for i, g in enumerate(arrays.gpus)}
    t = table.with_columns(
        pl.col("compute_start").dt.epoch("ns").alias("cs"),
        pl.col("compute_end").dt.epoch("ns").alias("ce"),
    ).sort("gpu", "iteration")
    gi = np.array([index[g] for g in t.get_column("gpu").to_list()], dtype=np.int64)
    k = t.get_column("iteration").to_numpy().astype(np.int64)
    order = np.lexsort((k, gi))
    gi, k = gi[order], k[order]
    cs = t.get_column("cs").to_numpy()[order]
    ce = t.get_column("ce").to_numpy()[order]
    a = np.empty(len(gi), dtype=np.int64)
    z = np.empty(len(gi), dtype=np.int64)
    cuts = np.flatnonzero(np.diff(gi)) + 1  # gi is sorted: each GPU's rows are one slice
    for r0, r1 in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(gi)]])):
        lo, hi = arrays.offsets[gi[r0]], arrays.offsets[gi[r0] + 1]
        ts = arrays.ts_ns[lo:hi]
        a[r0:r1] = lo + np.searchsorted(ts, cs[r0:r1], side="left")
        z[r0:r1] = lo + np.searchsorted(ts, ce[r0:r1], side="left")
    same_next = np.zeros(len(gi), dtype=bool)
    same_next[:-1] = gi[1:] == gi[:-1]
    nxt_a = np.full(len(gi), -1, dtype=np.int64)
    nxt_k = np.full(len(gi), -1, dtype=np.int64)
    nxt_a[same_next] = a[1:][same_next[:-1]]
    nxt_k[same_next] = k[1:][same_next[:-1]]
    ok = same_next & (z > a) & (nxt_a > z)
    if not ok.any():
        return None
    cand = pl.DataFrame({"row": np.flatnonzero(ok), "k": k[ok], "next": nxt_k[ok]})
    # the GPUs of an iteration agree on the next one (a GPU that missed an iteration
    # in detection is left uncoupled for that span)
    mode = cand.group_by("k", "next").len().sort("k", "len", "next", descending=[False, True, False]) \
        .unique("k", keep="first").select("k", pl.col("next").alias("mode"))
    cand = cand.join(mode, on="k").filter(pl.col("next") == pl.col("mode"))
    if cand.height == 0:
        return None
    sel = np.sort(cand.get_column("row").to_numpy())
    uniq, group = np.unique(k[sel], return_inverse=True)
    row_g, row_a, row_z, row_n = gi[sel], a[sel], z[sel], nxt_a[sel]
    n_iter = len(uniq)
    # start-up rows: a GPU's samples before its first coupled iteration
    first = np.ones(len(row_g), dtype=bool)
    first[1:] = row_g[1:] != row_g[:-1]
    su_g = row_g[first]
    su_a = arrays.offsets[su_g]
    su_n = row_a[first]
    keep = su_n - 1 > su_a
    su_g, su_a, su_n = su_g[keep], su_a[keep], su_n[keep]
    all_g = np.concatenate([row_g, su_g])
    all_a = np.concatenate([row_a, su_a])
    all_z = np.concatenate([row_z, su_n - 1])
    all_n = np.concatenate([row_n, su_n])
    all_group = np.concatenate([group, np.full(len(su_g), n_iter)])
    order = np.lexsort((all_a, all_g))
    all_g, all_a, all_z, all_n, all_group = (x[order] for x in (all_g, all_a, all_z, all_n, all_group))
    ts = arrays.ts_ns
    n_groups = n_iter + 1
    t0 = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(t0, all_group, ts[all_a])
    t1 = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(t1, all_group, ts[all_n])
    lag = (ts[all_a] - t0[all_group]).astype(np.float64)
    compute = (ts[all_z] - ts[all_a]).astype(np.float64)
    base_end = np.full(n_groups, -np.inf)
    np.maximum.at(base_end, all_group, lag + compute)
    crit = critical_rows(all_group, lag + compute, n_groups)
    offsets = np.zeros(len(arrays.gpus) + 1, dtype=np.int64)
    np.cumsum(np.bincount(all_g, minlength=len(arrays.gpus)), out=offsets[1:])
    azn = np.stack([all_a, all_z, all_n], axis=1)
    tails = K.row_tails(ts, arrays.offsets, offsets, azn, max_gap_ns=max_gap_ns, hold_ns=hold_ns)
    has_startup = bool((all_group == n_iter).any())
    if not has_startup:
        base_end = base_end[:n_iter]
        crit = crit[:n_iter]
    return Iterations(offsets=offsets, azn=azn, group=all_group, lag_ns=lag,
                      span_ns=(ts[all_n] - ts[all_a]).astype(np.float64), tails=tails, base_end_ns=base_end,
                      crit=crit, period_ns=(t1[:n_iter] - t0[:n_iter]).astype(np.float64), period_s=period_s)


def build_context(traceset, options: ReplayOptions, progress: Callable[[str], None]) -> tuple[Context, dict]:
    """Labels, models, iterations and the baseline grid inputs of a trace."""
    from tracekit.analysis import aggregate as agg
    from tracekit.analysis import phases as ph
    from tracekit.analysis.iterations import autocorr_period_s

    progress("resolution")
    if not options.cap_window_s > 0:
        raise ParameterError(f"--cap-window must be positive, got {options.cap_window_s}")
    if not options.max_gap_s > 0:
        raise ParameterError(f"--max-gap must be positive, got {options.max_gap_s}")
    arrays = traceset.arrays()  # first: the periods then come from it, not from a streamed pass over the files
    sample_period_s, effective_period_s = traceset.median_periods_s("replay")
    resolution_s = options.resolution_s or sample_period_s
    if not resolution_s > 0:
        raise ParameterError(f"resolution must be positive, got {resolution_s}")

    progress("phases")
    det = ph.detect(arrays, workload=options.workload, effective_period_s=max(effective_period_s, sample_period_s),
                    sample_period_s=sample_period_s, phase_hist=False)
    lowest = {}
    if det.gpu_levels.height and f"level_{det.names[0]}_w" in det.gpu_levels.columns:
        for gpu, v in zip(det.gpu_levels.get_column("gpu").to_list(),
                          det.gpu_levels.get_column(f"level_{det.names[0]}_w").to_list()):
            if v is not None:
                lowest[gpu] = v
    models, warnings = gpu_models(arrays.topology, arrays.gpus, options.model_params, lowest)
    clock = _observed_clock(traceset, arrays.n_samples)
    tdp = np.array([m.tdp_w if m.tdp_w is not None else np.nan for m in models], dtype=np.float64)
    ctx = Context(
        arrays=arrays, labels=det.labels, names=det.names, workload=det.workload, models=models,
        clock_mhz=clock, sample_period_s=sample_period_s, resolution_s=resolution_s,
        hold_ns=int(round(sample_period_s * 1e9)), max_gap_ns=int(round(options.max_gap_s * 1e9)),
        options=options, iterations=None, tdp_w=tdp, warnings=list(traceset.quality.warnings) + warnings,
    )
    progress("baseline")
    grid = agg.make_grid(arrays, resolution_s)
    series, peaks = level_series(arrays, grid, options.max_gap_s)
    if options.sync == "on" and det.workload != "training":
        raise PolicyError("--sync on couples synchronous training iterations; this trace is inference")
    if det.workload == "training" and options.sync != "off":
        period_s, corr = autocorr_period_s(series["cluster"].power_w[0], grid.step_s)
        if period_s is not None:
            ctx.iterations = _iterations(arrays, det.segments, period_s, ctx.max_gap_ns, ctx.hold_ns)
        if ctx.iterations is None:
            msg = ("no synchronous iterations found in the cluster power: GPUs are replayed independently "
                   "(not coupled)")
            if options.sync == "on":
                raise PolicyError(f"--sync on: {msg}")
            ctx.warnings.append(msg)
    return ctx, {"grid": grid, "series": series, "peaks": peaks}


# --------------------------------------------------------------------------- resolution per GPU


@dataclass
class Resolved:
    """A policy resolved to per-GPU arrays."""

    policy: Policy
    selected: np.ndarray
    cap_w: np.ndarray
    lock_mhz: np.ndarray
    floor_w: np.ndarray
    up_w_per_s: np.ndarray
    down_w_per_s: np.ndarray
    storage_racks: list[str]
    group_of: np.ndarray | None = None  # aggregate cap: capped group of each GPU (-1: none)
    group_cap_w: np.ndarray | None = None  # aggregate cap per capped group, W
    group_names: list[str] = field(default_factory=list)

    @property
    def aggregate(self) -> bool:
        return self.group_cap_w is not None

    @property
    def clocks(self) -> bool:
        return bool(np.isfinite(self.cap_w).any() or np.isfinite(self.lock_mhz).any() or self.aggregate)

    @property
    def smoothing(self) -> bool:
        return self.policy.smoothing is not None and bool(self.selected.any())


def resolve(policy: Policy, ctx: Context) -> Resolved:
    """Per-GPU caps, locks and smoothing limits; PolicyError for impossible or
    contradicting policies (cap at or below idle, lock above the max clock, a floor
    above the cap, a % without a known TDP, unknown scope names)."""
    arrays = ctx.arrays
    n = len(arrays.gpus)
    sel = policy.scope.select(arrays.topology, arrays.gpus)
    if not sel.any():
        raise PolicyError(f"--scope {policy.scope.level}: selects no GPU")
    cap = np.full(n, np.nan)
    lock = np.full(n, np.nan)
    floor = np.zeros(n)
    up = np.full(n, np.inf)
    down = np.full(n, np.inf)
    for i in np.flatnonzero(sel):
        m = ctx.models[i]
        gpu = arrays.gpus[i]
        model = m.model or "unknown model"
        if policy.cap is not None and not policy.cap.aggregate:
            c = policy.cap.watts(m.tdp_w)
            if c is None:
                raise PolicyError(f"--cap {policy.cap.label} is a share of TDP, but the TDP of {gpu} ({model}) is "
                                  "unknown; give the cap in W, --gpu-model, or --model-param tdp_w=")
            if c <= m.idle_w:
                raise PolicyError(f"--cap {policy.cap.label} ({c:g} W) is not above the idle power of {gpu} "
                                  f"({model}, {m.idle_w:g} W): a GPU cannot draw less than idle; raise the cap")
            cap[i] = c
        if policy.lock_mhz is not None:
            if m.f0_mhz is None and ctx.clock_mhz is None:
                raise PolicyError(f"--lock-mhz needs the max SM clock of {gpu} ({model}); pass --gpu-model or "
                                  "--model-param f0_mhz=")
            if m.f0_mhz is not None and policy.lock_mhz > m.f0_mhz:
                raise PolicyError(f"--lock-mhz {policy.lock_mhz:g} is above the max SM clock of {gpu} "
                                  f"({model}, {m.f0_mhz:g} MHz)")
            lock[i] = policy.lock_mhz
        if policy.smoothing is not None:
            fl, u, d = policy.smoothing.resolve(m.tdp_w)
            if fl is None or u is None or d is None:
                raise PolicyError(f"--smooth {policy.smoothing.label} uses % of TDP, but the TDP of {gpu} "
                                  f"({model}) is unknown; give W, --gpu-model, or --model-param tdp_w=")
            if np.isfinite(cap[i]) and fl > cap[i]:
                raise PolicyError(f"contradicting policies: the power floor {fl:g} W is above the cap "
                                  f"{cap[i]:g} W on {gpu}; lower the floor or raise the cap")
            floor[i], up[i], down[i] = fl, u, d
    racks: list[str] = []
    if policy.storage is not None:
        names, of, _ = arrays.groups("rack")
        racks = sorted({names[of[i]] for i in np.flatnonzero(sel)})
    res = Resolved(policy, sel, cap, lock, floor, up, down, racks)
    if policy.cap is not None and policy.cap.aggregate:
        _resolve_groups(res, ctx)
    return res


def _resolve_groups(res: Resolved, ctx: Context) -> None:
    """The groups of an aggregate cap (those holding selected GPUs), their caps in W,
    and the checks: whole groups only, a known TDP for %, a cap above the group's
    summed idle power and not below its summed power floor."""
    cap = res.policy.cap
    level = cap.level
    names, of, members = ctx.arrays.groups(level)
    touched = np.unique(of[res.selected])
    group_of = np.full(len(of), -1, dtype=np.int64)
    caps = np.empty(len(touched))
    for q, gi in enumerate(touched):
        idx = np.flatnonzero(of == gi)
        name = names[gi]
        if not res.selected[idx].all():
            raise PolicyError(f"--cap {cap.label}: --scope selects {int(res.selected[idx].sum())} of the "
                              f"{len(idx)} GPUs of {level} {name}; an aggregate cap covers whole {level}s")
        tdp = ctx.tdp_w[idx]
        if cap.unit == "%" and not np.isfinite(tdp).all():
            gpu = ctx.arrays.gpus[idx[~np.isfinite(tdp)][0]]
            raise PolicyError(f"--cap {cap.label} is a share of the summed TDP of {level} {name}, but the TDP of "
                              f"{gpu} is unknown; give the cap in W, --gpu-model, or --model-param tdp_w=")
        c = float(cap.watts(float(tdp.sum())))
        idle = float(sum(ctx.models[i].idle_w for i in idx))
        if c <= idle:
            raise PolicyError(f"--cap {cap.label} ({c:g} W) is not above the summed idle power of {level} {name} "
                              f"({len(idx)} GPUs, {idle:g} W): GPUs cannot draw less than idle; raise the cap")
        floor = float(res.floor_w[idx].sum())
        if floor > c:
            raise PolicyError(f"contradicting policies: the summed power floor {floor:g} W of {level} {name} is "
                              f"above its cap {c:g} W; lower the floor or raise the cap")
        group_of[idx] = q
        caps[q] = c
    res.group_of = group_of
    res.group_cap_w = caps
    res.group_names = [names[gi] for gi in touched]


# --------------------------------------------------------------------------- clocks and coupling


def _gpu_params(ctx: Context, res: Resolved) -> tuple[np.ndarray, np.ndarray]:
    n = len(ctx.arrays.gpus)
    gp = np.empty((n, K.N_GPU_PARAMS))
    betas = np.zeros((n, len(ctx.names) + 1))
    for i, m in enumerate(ctx.models):
        gp[i, K.G_IDLE_W] = m.idle_w
        # an aggregate cap throttles every sample above idle of its groups' GPUs
        gp[i, K.G_CAP_W] = m.idle_w if res.aggregate and res.group_of[i] >= 0 else res.cap_w[i]
        gp[i, K.G_LOCK_MHZ] = res.lock_mhz[i]
        gp[i, K.G_F0_MHZ] = m.f0_mhz if m.f0_mhz is not None else 1.0
        gp[i, K.G_A] = m.a
        gp[i, K.G_EXP] = m.g
        for j, name in enumerate(ctx.names):
            betas[i, j + 1] = m.beta.get(name, 0.0)
    return gp, betas


class Workspace:
    """Per-sample buffers reused across rounds and policies (fresh memory costs page
    faults that dominate a pass over a large trace)."""

    def __init__(self, n: int):
        self.n = n
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, dtype) -> np.ndarray:
        buf = self._bufs.get(name)
        if buf is None:
            buf = self._bufs[name] = np.empty(self.n, dtype=dtype)
        return buf


def _row_params(it: Iterations, d_len: np.ndarray, crit: np.ndarray) -> np.ndarray:
    """Row inputs of the kernel: every wait fills its span plus its iteration's extra
    length ``d_len`` minus its own replayed compute, except the critical row of each
    iteration, whose wait keeps the original time from the latest compute end to the
    next iteration (so the iteration's length follows from its compute)."""
    params = np.empty((len(it.group), 4))
    params[:, K.RF_AVAIL] = it.span_ns + d_len[it.group]
    params[:, K.RF_EL] = 1.0
    params[:, K.RF_TAIL_C] = it.tails[:, 0]
    params[:, K.RF_GAP] = it.tails[:, 1]
    g = it.group[crit]
    params[crit, K.RF_AVAIL] = np.maximum(it.span_ns[crit] + it.lag_ns[crit] - it.base_end_ns[g], 0.0)
    params[crit, K.RF_EL] = 0.0
    return params


def _extra_length(it: Iterations, e_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(extra length per group, critical row per group) of replayed compute times."""
    end = it.lag_ns + e_new
    n_groups = len(it.base_end_ns)
    new_end = np.full(n_groups, -np.inf)
    np.maximum.at(new_end, it.group, end)
    return new_end - it.base_end_ns, critical_rows(it.group, end, n_groups)


def critical_rows(group: np.ndarray, end: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the row that ends last, as the last row in a stable sort by end
    would be: of equal ends the last row, a NaN end after every number; -1 for a
    group without rows."""
    crit = np.full(n_groups, -1, dtype=np.int64)
    nan = np.isnan(end)
    ok = ~nan
    latest = np.full(n_groups, -np.inf)
    np.maximum.at(latest, group[ok], end[ok])
    last = ok & (end == latest[group])  # the rows at their group's latest end
    np.maximum.at(crit, group[last], np.flatnonzero(last))
    if nan.any():  # a group with NaN ends: its last NaN row
        nan_crit = np.full(n_groups, -1, dtype=np.int64)
        np.maximum.at(nan_crit, group[nan], np.flatnonzero(nan))
        crit = np.where(nan_crit >= 0, nan_crit, crit)
    return crit


def _clock_excess(res: Resolved, cw: K.ClockWindows) -> float:
    """Largest (window mean - cap) over the capped GPUs' controller windows, W, less a
    relative slack of ``CAP_RTOL`` for the float32 rounding of the power."""
    if not np.isfinite(res.cap_w).any():
        return 0.0
    means = cw.windows[:, K.W_MEAN_W]
    caps = np.repeat(res.cap_w, np.diff(cw.win_offsets))
    ok = np.isfinite(means) & np.isfinite(caps)
    if not ok.any():
        return 0.0
    return float((means[ok] - caps[ok] * (1 + CAP_RTOL)).max())


def group_power(res: Resolved, cw: K.ClockWindows) -> tuple[np.ndarray, np.ndarray]:
    """Per (capped group, controller window): the group's power, the sum of its GPUs'
    replayed window means (W); as ``(keys (m, 2) [group, epoch window], power (m,))``."""
    if not res.aggregate or cw.summary is None:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    return K.group_window_power(cw.windows, cw.win_offsets, cw.summary.first_window, res.group_of,
                                len(res.group_cap_w))


def _group_excess(res: Resolved, cw: K.ClockWindows) -> float:
    """Largest (group power - cap) over the capped groups' windows, W, less the
    relative slack ``CAP_RTOL``."""
    keys, power = group_power(res, cw)
    if not len(power):
        return 0.0
    return float((power - res.group_cap_w[keys[:, 0]] * (1 + CAP_RTOL)).max())


@dataclass
class ClockReplay:
    power_w: np.ndarray
    ts_ns: np.ndarray
    windows: K.ClockWindows | None
    rounds: int
    excess_w: float
    iteration_ns: np.ndarray | None


def replay_clocks(ctx: Context, res: Resolved, ws: Workspace, keep: bool) -> ClockReplay:
    """Lock and cap (with synchronous coupling): replayed power and time axis.

    Without iterations one pass of :func:`tracekit.kernels.replay.clock_windows`
    does it.  With them each pass solves clocks and waits exactly for given extra
    iteration lengths and critical GPUs; the extra lengths then follow from the
    critical GPUs' replayed compute, and passes repeat until they no longer change
    (by more than ``SYNC_TOL`` of the sampling period), usually two to five.  Only
    the first pass and the last (which writes the replayed samples) read the samples;
    the others work on the windows' sums (:func:`tracekit.kernels.replay.solve_windows`).
    """
    arrays = ctx.arrays
    if not res.clocks:
        return ClockReplay(arrays.power_w, arrays.ts_ns, None, 0, 0.0, None)
    gp, betas = _gpu_params(ctx, res)
    window_ns = int(round(ctx.options.cap_window_s * 1e9))
    common = dict(window_ns=window_ns, max_gap_ns=ctx.max_gap_ns, hold_ns=ctx.hold_ns, clock_mhz=ctx.clock_mhz,
                  workers=ctx.options.workers, out_power=None if keep else ws.get("power", np.float32),
                  out_ts=None if keep else ws.get("ts", np.int64),
                  check_sorted=False)  # a TraceSet's arrays are sorted per GPU
    it = ctx.iterations
    workers = ctx.options.workers

    def summarize(rows):
        """The windows' sums: an aggregate cap solves them per group afterwards."""
        return K.clock_windows(arrays.ts_ns, arrays.power_w, ctx.labels, arrays.offsets, gp, betas, rows=rows,
                               write=False, keep_summary=True, solve=False, **common).summary

    def solve(summary, rows):
        if res.aggregate:
            return K.solve_group_windows(summary, gp, res.group_of, res.group_cap_w, rows, workers=workers)
        return K.solve_windows(summary, gp, rows, workers=workers)

    if it is None and not res.aggregate:
        cw = K.clock_windows(arrays.ts_ns, arrays.power_w, ctx.labels, arrays.offsets, gp, betas, **common)
        rounds, iteration_ns, settled = 1, None, True
    elif it is None:
        summary = summarize(None)
        windows, row_out = solve(summary, None)
        cw = K.write_windows(arrays.ts_ns, arrays.power_w, ctx.labels, arrays.offsets, gp, betas, summary, windows,
                             row_out, window_ns=window_ns, max_gap_ns=ctx.max_gap_ns, hold_ns=ctx.hold_ns,
                             workers=workers, out_power=common["out_power"], out_ts=common["out_ts"])
        rounds, iteration_ns, settled = 1, None, True
    else:
        d_len = np.zeros(len(it.base_end_ns))
        crit = it.crit.copy()
        settled = False
        summary = None
        for rounds in range(1, max(1, ctx.options.max_rounds) + 1):
            rows = K.Rows(it.offsets, it.azn, _row_params(it, d_len, crit))
            if summary is None and res.aggregate:  # read the samples once; later rounds work on the sums
                summary = summarize(rows)
                _, row_out = solve(summary, rows)
            elif summary is None:
                cw = K.clock_windows(arrays.ts_ns, arrays.power_w, ctx.labels, arrays.offsets, gp, betas,
                                     rows=rows, write=False, keep_summary=True, **common)
                summary, row_out = cw.summary, cw.rows
            else:
                _, row_out = solve(summary, rows)
            new_len, new_crit = _extra_length(it, row_out[:, K.RO_E])
            moved = float(np.abs(new_len - d_len).max())
            done = np.array_equal(new_crit, crit) and moved <= SYNC_TOL * ctx.hold_ns
            d_len, crit = new_len, new_crit
            if done:
                settled = True
                break
        rows = K.Rows(it.offsets, it.azn, _row_params(it, d_len, crit))
        windows, row_out = solve(summary, rows)
        cw = K.write_windows(arrays.ts_ns, arrays.power_w, ctx.labels, arrays.offsets, gp, betas, summary, windows,
                             row_out, window_ns=window_ns, max_gap_ns=ctx.max_gap_ns, hold_ns=ctx.hold_ns,
                             azn=it.azn, workers=ctx.options.workers, out_power=common["out_power"],
                             out_ts=common["out_ts"])
        iteration_ns = it.period_ns + d_len[:it.count]
    x = cw.windows[:, K.W_X]
    if not (x[np.isfinite(x)] < 1.0).any():  # nothing lowered: the input, exactly
        return ClockReplay(arrays.power_w, arrays.ts_ns, cw, rounds, 0.0, None)
    excess = max(_clock_excess(res, cw), _group_excess(res, cw), 0.0)
    if not settled:
        ctx.warnings.append(f"{res.policy.label()}: synchronous iterations did not settle in {rounds} passes; GPUs "
                            f"may be misaligned by up to {moved / 1e6:.3g} ms")
    if excess > 0:
        ctx.warnings.append(f"{res.policy.label()}: a controller window exceeds its cap by up to {excess:.3g} W")
    return ClockReplay(cw.power_w, cw.ts_ns, cw, rounds, excess, iteration_ns)


# --------------------------------------------------------------------------- figures


#: Levels a replay reports (groups and swings): hosts, racks and the cluster.
LEVELS = ("host", "rack", "cluster")


def level_series(arrays: GpuArrays, grid, max_gap_s: float) -> tuple[dict, dict]:
    """Host, rack and cluster series on ``grid`` and each GPU's peak cell mean."""
    from tracekit.analysis import aggregate as agg

    series, peaks, _ = agg.aggregate_all(arrays, grid, max_gap_s, levels=LEVELS, heatmap_columns=0)
    return series, peaks


def _stats(x: np.ndarray, keep: np.ndarray | None = None) -> dict:
    """Peak, mean, min and p99 of the finite cells of ``x`` (or of its ``keep`` cells)."""
    v = np.asarray(x[np.isfinite(x)] if keep is None else x[keep], dtype=np.float64)
    if len(v) == 0:
        return {"peak_w": None, "mean_w": None, "min_w": None, "p99_w": None}
    return {"peak_w": round(float(v.max()), 3), "mean_w": round(float(v.mean()), 3),
            "min_w": round(float(v.min()), 3), "p99_w": round(float(quantiles(v, [0.99])[0]), 3)}


def _max_sample(arrays: GpuArrays, workers: int | None) -> float | None:
    """Largest finite sample of all GPUs (None without samples), on threads."""
    if not arrays.n_samples:
        return None
    o = arrays.offsets
    parts = map_ranges(lambda lo, hi: float(np.fmax.reduce(arrays.power_w[o[lo]: o[hi]])) if o[hi] > o[lo] else np.nan,
                       np.diff(o), workers=workers)
    return float(np.fmax.reduce(np.array(parts, dtype=np.float64)))


def measure(ctx: Context, arrays: GpuArrays, storage=None, grid_inputs: dict | None = None,
            gpu_energy_j: np.ndarray | None = None) -> dict:
    """Cluster figures, per-rack/host stats, and the cluster series of a (replayed) trace
    (``gpu_energy_j``: each GPU's energy, when already computed)."""
    from tracekit.analysis import aggregate as agg
    from tracekit.analysis import swings as sw

    if grid_inputs is None:
        grid = agg.make_grid(arrays, ctx.resolution_s)
        series, peaks = level_series(arrays, grid, ctx.options.max_gap_s)
    else:
        grid, series, peaks = grid_inputs["grid"], grid_inputs["series"], grid_inputs["peaks"]
    cluster = series["cluster"]
    cluster_w = np.array(cluster.power_w[0], dtype=np.float64)
    coverage = cluster.coverage[0]
    racks = series["rack"]
    rack_w = {g: (racks.power_w[i], racks.coverage[i]) for i, g in enumerate(racks.groups)}  # series, coverage
    storage_frame = None
    storage_out = None
    if storage is not None:
        spec, names = storage
        from tracekit.analysis.swings import moving_average

        cells = max(1, int(round(spec.window_s / grid.step_s)))
        frames, soc_min, soc_max, net_j, moved_j = [], 1.0, 0.0, 0.0, 0.0
        for name in names:
            i = racks.groups.index(name)
            p = np.array(racks.power_w[i], dtype=np.float64)
            target = moving_average(p, cells)
            grid_w, soc = K.storage_dispatch(p, np.where(np.isfinite(target), target, p), step_s=grid.step_s,
                                             energy_j=spec.energy_j, power_max_w=spec.power_w,
                                             efficiency=spec.efficiency, soc0=spec.soc0)
            bat = np.where(np.isfinite(p), p - grid_w, 0.0)
            cluster_w = cluster_w - bat
            net_j -= float(bat.sum()) * grid.step_s
            moved_j += float(np.abs(bat).sum()) * grid.step_s
            soc_min = min(soc_min, float(np.nanmin(soc)), spec.soc0)
            soc_max = max(soc_max, float(np.nanmax(soc)), spec.soc0)
            rack_w[name] = (grid_w, racks.coverage[i])
            frames.append(pl.DataFrame({"rack": [name] * len(p), "ts": grid.times(), "rack_w": p,
                                        "grid_w": grid_w, "soc": soc}))
        storage_frame = pl.concat(frames) if frames else None
        storage_out = {"racks": names, "soc_min": round(soc_min, 6), "soc_max": round(soc_max, 6),
                       "soc_range": round(soc_max - soc_min, 6), "grid_energy_change_j": round(net_j, 3),
                       "battery_throughput_j": round(moved_j, 3)}
    masked = sw.masked_partial_cells(cluster_w, coverage)
    provisioned = float(np.nansum(ctx.tdp_w)) if np.isfinite(ctx.tdp_w).all() else None
    m = sw.metrics(masked, coverage, grid.step_s, windows_s=ctx.options.windows_s,
                   ramp_window_s=ctx.options.ramp_window_s, provisioned_w=provisioned,
                   sum_of_peaks_w=float(sum(peaks.values())) if peaks else None, with_spectrum=True)
    m.pop("_spectrum", None)
    hosts = series["host"]
    items = [("rack", name, x, cov) for name, (x, cov) in rack_w.items()]
    items += [("host", name, hosts.power_w[i], hosts.coverage[i]) for i, name in enumerate(hosts.groups)]
    group_rows = map_items(lambda it: {"level": it[0], "group": it[1], **_stats(it[2], sw.full_cells(it[2], it[3]))},
                           items, workers=ctx.options.workers)
    groups = pl.DataFrame(group_rows, schema={"level": pl.String, "group": pl.String, "peak_w": pl.Float64,
                                              "mean_w": pl.Float64, "min_w": pl.Float64, "p99_w": pl.Float64})
    energy_j = gpu_energy_j
    if energy_j is None:
        energy_j, _ = K.zoh_energy(arrays.ts_ns, arrays.power_w, arrays.offsets, max_gap_ns=ctx.max_gap_ns,
                                   hold_ns=ctx.hold_ns)
    starts = arrays.ts_ns[arrays.offsets[:-1][np.diff(arrays.offsets) > 0]]
    ends = arrays.ts_ns[arrays.offsets[1:][np.diff(arrays.offsets) > 0] - 1] + ctx.hold_ns
    cluster_power = pl.DataFrame({"ts": grid.times(), "power_w": cluster_w, "coverage": coverage})
    return {
        "metrics": m,
        "gpu_energy_j": energy_j,
        "runtime_s": (int(ends.max()) - int(starts.min())) / 1e9,
        "groups": groups,
        "cluster_power": cluster_power,
        "storage": storage_out,
        "storage_frame": storage_frame,
        "max_gpu_peak_w": _max_sample(arrays, ctx.options.workers),
    }


def _r(v, digits: int = 6):
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def _entry(name: str, meas: dict, extra: dict, ctx: Context) -> dict:
    m = meas["metrics"]
    energy = float(meas["gpu_energy_j"].sum()) + (meas["storage"]["grid_energy_change_j"] if meas["storage"] else 0)
    entry = {
        "name": name,
        "peak_w": m["peak_w"],
        "p99_w": m["p99_w"],
        "min_w": m["min_w"],
        "mean_w": m["mean_w"],
        "energy_j": round(energy, 3),
        "swing": {w: {"max_w": v["max_w"], "p99_w": v["p99_w"]} for w, v in m["swing"].items()},
        "slowdown": 1.0,
        "phase_stretch": {p: 1.0 for p in ctx.names},
        "band_share": m.get("band_share"),
        "dominant_hz": m.get("dominant_hz"),
        "ramp_up_w_per_s": m.get("ramp_up_w_per_s"),
        "ramp_down_w_per_s": m.get("ramp_down_w_per_s"),
        "peak_over_tdp": m.get("peak_over_tdp"),
        "max_gpu_peak_w": _r(meas["max_gpu_peak_w"], 3),
        "runtime_s": round(meas["runtime_s"], 6),
        "levels": {"rack": {row["group"]: {k: row[k] for k in ("peak_w", "mean_w", "min_w", "p99_w")}
                            for row in meas["groups"].filter(pl.col("level") == "rack").to_dicts()}},
    }
    entry.update(extra)
    return entry


def _clock_figures(ctx: Context, res: Resolved, cr: ClockReplay) -> dict:
    """Phase stretch, slowdown parts, clocks and cap state of a clock replay."""
    out: dict = {}
    names = ctx.names
    sel = res.selected
    if cr.windows is not None:
        ph = cr.windows.phase_ns[sel].sum(axis=0)  # (labels + 1, 2)
        stretch = {}
        for j, name in enumerate(names):
            orig, new = ph[j + 1]
            stretch[name] = round(float(new / orig), 6) if orig > 0 else None
        out["phase_stretch"] = stretch
        w = cr.windows.windows
        rows = np.repeat(np.arange(len(ctx.arrays.gpus)), np.diff(cr.windows.win_offsets))
        use = np.isfinite(w[:, K.W_X]) & sel[rows] & (w[:, K.W_COVERED_NS] > 0)
        if use.any():
            cov = w[use, K.W_COVERED_NS]
            out["capped_share"] = round(float(cov[w[use, K.W_X] < 1].sum() / cov.sum()), 6)
            known = np.array([ctx.models[r].f0_mhz is not None or ctx.clock_mhz is not None for r in rows[use]])
            if known.any():
                clk = (w[use, K.W_X] * w[use, K.W_F0_MHZ])[known]
                out["mean_clock_mhz"] = round(float((clk * cov[known]).sum() / cov[known].sum()), 3)
                out["min_clock_mhz"] = round(float(clk.min()), 3)
        if res.aggregate:
            keys, power = group_power(res, cr.windows)
            top = np.full(len(res.group_cap_w), np.nan)
            if len(power):
                np.fmax.at(top, keys[:, 0], power)
            out["aggregate_cap"] = {
                "level": res.policy.cap.level,
                "groups": {name: {"cap_w": round(float(res.group_cap_w[q]), 3),
                                  "max_window_w": _r(top[q], 3)} for q, name in enumerate(res.group_names)},
            }
        out["cap_excess_w"] = round(cr.excess_w, 6)
        out["sync_rounds"] = cr.rounds
    return out


def _slowdown(ctx: Context, res: Resolved, cr: ClockReplay, meas: dict, base: dict, entry: dict) -> None:
    entry["runtime_ratio"] = round(meas["runtime_s"] / base["runtime_s"], 6) if base["runtime_s"] > 0 else None
    it = ctx.iterations
    if it is not None and it.count:
        base_s = float(it.period_ns.sum())
        new_s = float(cr.iteration_ns.sum()) if cr.iteration_ns is not None else base_s
        entry["iterations"] = {"count": it.count, "period_s": round(new_s / it.count / 1e9, 6),
                               "base_period_s": round(base_s / it.count / 1e9, 6)}
        entry["slowdown"] = round(new_s / base_s, 6) if base_s > 0 else 1.0
        return
    if ctx.workload == "inference" and cr.windows is not None:
        ph = cr.windows.phase_ns[res.selected].sum(axis=0)
        busy = [j + 1 for j, n in enumerate(ctx.names) if n != "idle"]
        orig, new = ph[busy, 0].sum(), ph[busy, 1].sum()
        entry["slowdown"] = round(float(new / orig), 6) if orig > 0 else 1.0
        return
    entry["slowdown"] = entry["runtime_ratio"] or 1.0


def _inference_factors(ctx: Context, entry: dict) -> None:
    if ctx.workload == "inference":
        st = entry["phase_stretch"]
        entry["ttft_factor"] = st.get("prompt")
        entry["tpot_factor"] = st.get("token")


def _run_policy(ctx: Context, res: Resolved, base_meas: dict, base_entry: dict, keep: bool,
                on_trace, ws: Workspace) -> PolicyResult:
    arrays = ctx.arrays
    cr = replay_clocks(ctx, res, ws, keep)
    power = cr.power_w
    ts = cr.ts_ns
    smooth = None
    energy_j = None
    if res.smoothing:
        if power is arrays.power_w:  # no clock policy: the baseline's energy
            before = base_meas["gpu_energy_j"]
        else:
            before, _ = K.zoh_energy(ts, power, arrays.offsets, max_gap_ns=ctx.max_gap_ns, hold_ns=ctx.hold_ns)
        power = K.smooth_power(ts, power, arrays.offsets, floor_w=res.floor_w, up_w_per_s=res.up_w_per_s,
                               down_w_per_s=res.down_w_per_s, workers=ctx.options.workers, check_sorted=False)
        after, _ = K.zoh_energy(ts, power, arrays.offsets, max_gap_ns=ctx.max_gap_ns, hold_ns=ctx.hold_ns)
        energy_j = after
        sel = res.selected
        extra_j = float(after[sel].sum() - before[sel].sum())
        smooth = {"energy_overhead_j": round(extra_j, 3),
                  "energy_overhead_pct": round(100 * extra_j / float(before[sel].sum()), 4)
                  if before[sel].sum() > 0 else None}
    out = GpuArrays(arrays.gpus, arrays.offsets, ts, power, arrays.topology)
    storage = (res.policy.storage, res.storage_racks) if res.policy.storage is not None else None
    meas = measure(ctx, out, storage, gpu_energy_j=energy_j)
    entry = _entry(res.policy.label(), meas, {}, ctx)
    entry.update(_clock_figures(ctx, res, cr))
    _slowdown(ctx, res, cr, meas, base_meas, entry)
    _inference_factors(ctx, entry)
    if smooth is not None:
        per_gpu = _per_gpu_swing(ctx, out, res.selected)
        smooth.update(per_gpu)
        entry["smoothing"] = smooth
    if meas["storage"] is not None:
        entry["storage"] = meas["storage"]
    base_peak = base_entry["peak_w"]
    entry["peak_cut"] = round(1 - entry["peak_w"] / base_peak, 6) if base_peak and entry["peak_w"] is not None \
        else None
    entry["energy_change"] = round(entry["energy_j"] / base_entry["energy_j"] - 1, 6) \
        if base_entry["energy_j"] else None
    entry["policy"] = res.policy.to_dict()
    if on_trace is not None:
        on_trace(entry["name"], out)
    return PolicyResult(entry["name"], res.policy, entry, out if keep else None, meas["cluster_power"],
                        meas["groups"], meas["storage_frame"])


def _per_gpu_swing(ctx: Context, arrays: GpuArrays, sel: np.ndarray, window_s: float = 2.0) -> dict:
    """Smallest per-GPU swing (max - min over ``window_s`` windows of the GPU's own
    samples, largest window) as W and % of TDP, over the selected GPUs."""
    from tracekit.kernels.windows import window_swing

    def largest_swing(i: int) -> float | None:
        ts, p = arrays.gpu(i)
        if len(ts) < 3:
            return None
        step = float(np.median(np.diff(ts))) / 1e9
        cells = max(2, int(round(window_s / step))) if step > 0 else 2
        if cells >= len(p):
            cells = len(p) - 1
        top = float(np.fmax.reduce(window_swing(np.asarray(p, dtype=np.float64), cells)))  # NaN: none finite
        return top if np.isfinite(top) else None

    chosen = np.flatnonzero(sel)
    swings = [x for part in map_ranges(lambda lo, hi: [largest_swing(i) for i in chosen[lo:hi]],
                                       np.diff(arrays.offsets)[chosen]) for x in part]
    lows, pct = [], []
    for i, top in zip(chosen, swings):
        if top is None:
            continue
        lows.append(top)
        if np.isfinite(ctx.tdp_w[i]) and ctx.tdp_w[i] > 0:
            pct.append(float(100 * top / ctx.tdp_w[i]))
    return {"min_gpu_swing_w": round(min(lows), 3) if lows else None,
            "min_gpu_swing_pct_of_tdp": round(min(pct), 3) if pct else None,
            "gpu_swing_window_s": window_s}




# --------------------------------------------------------------------------- result


@dataclass
class Replay:
    """Everything ``replay`` computed: the baseline first, then one result per policy."""

    dataset: dict
    workload: str
    options: ReplayOptions
    models: dict
    iterations: dict | None
    results: list[PolicyResult]
    warnings: list[str]
    _ctx: Context | None = None

    @property
    def baseline(self) -> PolicyResult:
        return self.results[0]

    def __getitem__(self, name: str) -> PolicyResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no policy {name!r}; have {[r.name for r in self.results]}")

    def summary(self) -> dict:
        """The ``tracekit replay --json`` object (schema ``tracekit.replay/1``)."""
        policies = [r.figures for r in self.results]
        out = {
            "schema": "tracekit.replay/1",
            "dataset": self.dataset,
            "workload": self.workload,
            "cap_window_s": self.options.cap_window_s,
            "hold": {"hold_ns": self._ctx.hold_ns, "max_gap_ns": self._ctx.max_gap_ns} if self._ctx else None,
            "sync": self._ctx.iterations is not None if self._ctx else False,
            "iterations": self.iterations,
            "models": self.models,
            "policies": policies,
            "warnings": self.warnings,
        }
        if len(self.results) > 2:
            out["pareto"] = pareto_front(policies[1:])
        return out

    def table(self) -> pl.DataFrame:
        """One row per policy (baseline first): peak, p99, min, mean, energy, swings,
        slowdown, peak cut, energy change, phase stretches."""
        rows = []
        for r in self.results:
            f = r.figures
            row = {k: f.get(k) for k in ("name", "peak_w", "p99_w", "min_w", "mean_w", "energy_j", "slowdown",
                                         "runtime_s", "peak_cut", "energy_change", "band_share")}
            for w, v in f["swing"].items():
                row[f"swing_{w}_max_w"] = v["max_w"]
            for p, x in f["phase_stretch"].items():
                row[f"stretch_{p}"] = x
            rows.append(row)
        return pl.DataFrame(rows, infer_schema_length=None)

    def trace(self, name: str) -> GpuArrays:
        """The replayed samples of a policy (``baseline``: the input)."""
        r = self[name]
        if r.arrays is None:
            raise ParameterError(f"the samples of {name!r} were not kept (replay(..., keep_traces=True))")
        return r.arrays

    def traceset(self, name: str):
        """A :class:`~tracekit.traceset.TraceSet` of a policy's replayed samples, e.g.
        for :func:`tracekit.analysis.analyze.analyze`."""
        from tracekit.quality import DataQuality
        from tracekit.traceset import TraceSet

        a = self.trace(name)
        q = DataQuality(rows_read=a.n_samples, rows_used=a.n_samples)
        return TraceSet(None, a.topology, q, [{"path": None, "format": "replay", "policy": name}],
                        path=f"replay:{name}", arrays=a)


def pareto_front(entries: list[dict]) -> list[str]:
    """Names of the policies no other policy beats on all of peak (lower), slowdown
    (lower) and energy (lower) while being strictly better on one."""
    pts = [(e["name"], e["peak_w"], e["slowdown"], e["energy_j"]) for e in entries
           if e["peak_w"] is not None and e["slowdown"] is not None]
    front = []
    for name, p, s, e in pts:
        dominated = any(p2 <= p and s2 <= s and e2 <= e and (p2 < p or s2 < s or e2 < e)
                        for n2, p2, s2, e2 in pts if n2 != name)
        if not dominated:
            front.append(name)
    return front


#: Bytes a replay holds per sample (input, labels, replayed trace, grid and per-window
#: temporaries; measured ~55 B/sample at 30.7 M samples, benches/bench_replay.py).
REPLAY_BYTES_PER_SAMPLE = 60


def _check_memory(traceset, limit_bytes: int | None) -> None:
    """Refuse a replay that would not fit in memory (it holds the whole trace; unlike
    analyze it does not stream): one line naming the size and the ways out."""
    if limit_bytes is None:
        limit_bytes = ram_limit_bytes()
        if limit_bytes is None:
            return
    need = traceset.n_samples * REPLAY_BYTES_PER_SAMPLE
    if need > limit_bytes:
        raise ParameterError(
            f"replay holds the whole trace in memory: ~{format_size(need)} for {traceset.n_samples:,} samples, "
            f"over the limit of {format_size(limit_bytes)}; replay a time slice (--since/--until) or raise "
            "--memory-limit")


def replay(traceset, *, cap=None, lock_mhz=None, smoothing=None, storage=None, scope=None,
           options: ReplayOptions | None = None, keep_traces: bool = True,
           on_trace: Callable[[str, GpuArrays], None] | None = None,
           progress: Callable[[str], None] | None = None, **kw) -> Replay:
    """Replay a trace under what-if policies.

    Parameters
    ----------
    traceset
        A :class:`~tracekit.traceset.TraceSet` from :func:`tracekit.open`, or a path.
    cap
        Power cap per GPU: W (``350``), ``"350W"``, ``"50%"`` of TDP, a sweep
        ``"300:700:50"``, or a list of them; or a cap on the summed power of each
        host, rack, row or the cluster: ``"rack:40kW"``, ``"cluster:0.5MW"``,
        ``"rack:80%"`` (of the summed TDP), ``"rack:30kW:50kW:5kW"`` (see
        :mod:`tracekit.replay.policy`).
    lock_mhz
        SM clock lock, MHz, a sweep ``"1000:1900:100"``, or a list.
    smoothing
        ``"floor=90%,up=2000,down=500"`` (floor W or % of TDP, ramps W/s or %/s), a
        dict of the same keys, or a :class:`~tracekit.replay.policy.Smoothing`.
    storage
        ``"energy_j=...,power_w=...[,window=30s,efficiency=0.9,soc0=0.5]"`` per rack.
    scope
        ``"cluster"`` (default), ``"rack=rack03"``, ``"host=a,b"``, ``"gpu=node00/0"``.
    options
        :class:`ReplayOptions`; keyword arguments override its fields
        (``cap_window_s=0.01``, ``sync="off"``, ``model_params={...}``...).
    keep_traces
        Keep each policy's replayed samples (``Replay.trace(name)``).
    on_trace
        Called as ``on_trace(name, arrays)`` with each policy's replayed samples.
    progress
        Optional callable ``progress(step_name)``.

    Returns
    -------
    Replay
        ``summary()`` is the JSON of ``tracekit replay --json``; ``table()`` a Polars
        frame; the first result is the baseline.  With no policy only the baseline
        is returned, and its trace is the input.

    Notes
    -----
    The model and its sources are in :mod:`tracekit.replay.model`; facts from
    DESIGN.md: caps cut peaks and leave troughs, locks lower power everywhere, both
    stretch compute-bound phases only (Splitwise, Patel et al. ISCA 2024; POLCA, Patel
    et al. ASPLOS 2024); a 90 % power floor on GB200-class GPUs costs energy and still
    leaves a swing (Choukse et al., "Power Stabilization for AI Training
    Datacenters", 2025).
    """
    opts = with_overrides(options, ReplayOptions, kw, "replay")
    check_choice(opts, "sync", ("auto", "on", "off"))
    check_choice(opts, "workload", ("auto", "training", "inference"))
    check_positive_ints(opts, ("workers", "memory_limit_bytes"))
    with workers_scope(opts.workers):  # the input's reading included
        if not hasattr(traceset, "arrays"):
            from tracekit.traceset import open_trace

            traceset = open_trace(traceset)
        return _replay(traceset, opts, dict(cap=cap, lock_mhz=lock_mhz, smoothing=smoothing, storage=storage,
                                            scope=scope), keep_traces, on_trace, progress)


def _replay(traceset, opts: ReplayOptions, policy_args: dict, keep_traces: bool, on_trace, progress) -> Replay:
    step = progress or (lambda name: None)
    time_range = None
    if opts.since is not None or opts.until is not None:
        traceset, time_range = slice_by_time(traceset, opts.since, opts.until)
    _check_memory(traceset, opts.memory_limit_bytes)
    any_policy = any(policy_args[k] is not None for k in ("cap", "lock_mhz", "smoothing", "storage"))
    policies = build_policies(**policy_args) if any_policy else []
    ctx, base_grid = build_context(traceset, opts, step)
    resolved = [resolve(p, ctx) for p in policies]  # every error before any work
    base_meas = measure(ctx, ctx.arrays, None, base_grid)
    del base_grid  # the baseline's grid series (hosts x cells) are not needed again
    release_freed_memory()
    base_entry = _entry("baseline", base_meas, {"runtime_ratio": 1.0, "peak_cut": 0.0, "energy_change": 0.0}, ctx)
    if ctx.iterations is not None:
        it = ctx.iterations
        base_entry["iterations"] = {"count": it.count, "period_s": round(float(it.period_ns.mean()) / 1e9, 6),
                                    "base_period_s": round(float(it.period_ns.mean()) / 1e9, 6)}
    _inference_factors(ctx, base_entry)
    results = [PolicyResult("baseline", None, base_entry, ctx.arrays if keep_traces else None,
                            base_meas["cluster_power"], base_meas["groups"])]
    names_seen = {"baseline"}
    ws = Workspace(ctx.arrays.n_samples)
    for i, res in enumerate(resolved):
        step(f"policy {i + 1}/{len(resolved)}: {res.policy.label()}")
        r = _run_policy(ctx, res, base_meas, base_entry, keep_traces, on_trace, ws)
        release_freed_memory()
        if r.name in names_seen:
            raise PolicyError(f"two policies are both named {r.name!r}")
        names_seen.add(r.name)
        results.append(r)
    models = {}
    for m in ctx.models:
        models.setdefault(m.model or "unknown", m.to_dict())
    iterations = None
    if ctx.iterations is not None:
        iterations = {"count": ctx.iterations.count, "period_s": round(ctx.iterations.period_s, 6),
                      "mean_iteration_s": round(float(ctx.iterations.period_ns.mean()) / 1e9, 6)}
    dataset = traceset.dataset_summary()
    if time_range is not None:
        time_range["samples_outside"] = time_range.pop("_total") - dataset["samples"]
        dataset["time_range"] = time_range
    dataset["resolution_ms"] = round(ctx.resolution_s * 1e3, 6)
    return Replay(dataset=dataset, workload=ctx.workload, options=opts, models=models, iterations=iterations,
                  results=results, warnings=list(dict.fromkeys(ctx.warnings)), _ctx=ctx)



