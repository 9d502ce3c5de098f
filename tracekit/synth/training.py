"""Synthetic synchronous-training traces with ground truth.

Model (DESIGN.md, "Facts"): every iteration has a compute phase near (often above)
TDP and a communication phase near idle.  Iterations are synchronous: iteration ``k``
starts at the same true time ``T_k`` on every GPU, GPU ``g`` computes for
``c[g, k] = compute_fraction * iteration_s * (1 + slowdown_g) * (1 + jitter * z[g, k])``
and then communicates; the iteration ends for all GPUs at
``T_{k+1} = T_k + max_g c[g, k] + (1 - compute_fraction) * iteration_s``, so fast GPUs
wait at communication power for the slowest (stragglers stretch every iteration).
Every ``checkpoint_every_s`` a checkpoint (all GPUs near idle for ``checkpoint_s``) is
inserted between two iterations.  The job ramps linearly from idle to the compute
level over ``ramp_s`` at the start and back down at the end, optionally framed by
``idle_s`` of idle.

Telemetry effects are applied after the true signal: Gaussian-like noise, an
optional trailing moving average (``average_window_s=1`` mimics NVML ``power.draw``
on Hopper), an optional hold between counter updates (``update_period_s``), dropped
samples, per-host logger gaps, and per-host clock offsets added to the time stamps
(``logged ts = true time + offset``).  The truth columns always describe the *true*
phase at the sample's true time.

References: the facts in DESIGN.md (compute near TDP / communication near idle,
checkpoint and start/stop dips, 1 s NVML averaging on Hopper).
"""

from __future__ import annotations

import math

import numpy as np

from tracekit.errors import ParameterError
from tracekit.kernels import synth as K
from tracekit.specs import gpu_spec
from tracekit.synth import _common as C

PHASE_CODES = {
    K.TRAIN_COMMUNICATION: "communication",
    K.TRAIN_COMPUTE: "compute",
    K.TRAIN_CHECKPOINT: "checkpoint",
    K.TRAIN_IDLE: "idle",
    K.TRAIN_RAMP: "ramp",
}

#: Irwin-Hall n=4 normal approximation is bounded by 2*sqrt(3).
_Z_MAX = 2.0 * math.sqrt(3.0)


def default_levels_w(model: str) -> dict[str, float]:
    """Default power levels of a GPU model from the spec table.

    compute = TDP; communication = idle + 10 % of (TDP - idle); checkpoint = idle +
    2 % of (TDP - idle); idle = the spec's typical idle.
    """
    spec = gpu_spec(model)
    span = spec.tdp_w - spec.idle_w
    return {
        "idle": spec.idle_w,
        "communication": spec.idle_w + 0.10 * span,
        "compute": spec.tdp_w,
        "checkpoint": spec.idle_w + 0.02 * span,
    }


def training(
    out_dir=None,
    *,
    gpus: int = 64,
    seconds: float = 30.0,
    rate_hz: float = 1000.0,
    gpu_model: str = "H100",
    gpus_per_host: int = 8,
    hosts_per_rack: int = 4,
    racks_per_row: int = 4,
    iteration_s: float = 1.0,
    compute_fraction: float = 0.75,
    compute_w: float | None = None,
    communication_w: float | None = None,
    checkpoint_w: float | None = None,
    level_spread: float = 0.02,
    noise_w: float | None = None,
    jitter: float = 0.02,
    stragglers: int = 1,
    straggler_slowdown: float = 0.15,
    checkpoint_every_s: float | None = 10.0,
    checkpoint_s: float = 1.5,
    ramp_s: float = 1.0,
    idle_s: float = 0.0,
    host_offset_ms: float = 0.0,
    drop_fraction: float = 0.0,
    gaps: int = 0,
    gap_s: float = 0.7,
    average_window_s: float | None = None,
    update_period_s: float | None = None,
    start: str = C.DEFAULT_START,
    job: str = "train0",
    seed: int = 0,
    overwrite: bool = False,
) -> C.SynthResult:
    """Generate a synchronous data-parallel training trace with ground truth.

    Parameters
    ----------
    out_dir
        Dataset folder to write (streamed GPU batch by GPU batch, bounded memory);
        None returns the samples in memory.
    gpus, seconds, rate_hz
        Number of GPUs, trace length (s) and sampling rate (Hz).
    gpu_model
        GPU model name (``H100``, ``A100``, ``B200``... see :mod:`tracekit.specs`);
        sets TDP and idle power and hence the default levels.
    gpus_per_host, hosts_per_rack, racks_per_row
        Topology; GPU ids are ``node<h>/<i>``.
    iteration_s
        Nominal iteration time (s) without jitter or stragglers.
    compute_fraction
        Share of the nominal iteration spent computing, in (0, 1].
    compute_w, communication_w, checkpoint_w
        Power levels (W); default from the spec table (see :func:`default_levels_w`).
    level_spread
        Relative standard deviation of each GPU's compute and communication level.
    noise_w
        Standard deviation of per-sample noise at TDP (W), default 1.5 % of TDP;
        noise is proportional to the level (idle is quieter than compute).
    jitter
        Relative standard deviation of each compute phase's duration, in [0, 0.25).
    stragglers, straggler_slowdown
        Number of straggler GPUs, and their largest relative compute slowdown (each
        straggler draws its slowdown uniformly in [0.5, 1] x this).
    checkpoint_every_s, checkpoint_s
        Checkpoint period and duration (s); None or 0 turns checkpoints off.
    ramp_s, idle_s
        Length of the linear start/stop ramps, and of the idle time before the start
        ramp and after the stop ramp (s).
    host_offset_ms
        Standard deviation of per-host clock offsets (ms) added to time stamps.
    drop_fraction
        Probability that a sample is dropped, in [0, 1).
    gaps, gap_s
        Number of logger gaps per host and their length (s).
    average_window_s
        Report a trailing moving average over this window (1.0 = NVML ``power.draw``
        on H100); None = instantaneous power.
    update_period_s
        The counter updates only every this many seconds (values repeat in between);
        None = every sample is fresh.
    start
        ISO time of the first sample (UTC unless it carries a zone).
    job
        Job name in the topology.
    seed
        Random seed; same seed and parameters give identical samples and files.
    overwrite
        Replace an existing ``out_dir``.

    Returns
    -------
    SynthResult
        ``samples`` (None when written), ``topology``, ``truth`` (also
        ``manifest.json["synth"]``), ``power``, ``path``.

    Notes
    -----
    ``truth_phase`` codes: 0 communication, 1 compute, 2 checkpoint, 3 idle, 4 ramp.
    ``truth_iteration`` is the iteration index during compute and communication and
    -1 elsewhere.  Both describe the true phase at the sample's true time, before
    averaging, holding or clock offsets.
    """
    gpus = C.check_int("gpus", gpus, 1)
    seconds = C.check_positive("seconds", seconds)
    rate_hz = C.check_positive("rate_hz", rate_hz)
    spec = gpu_spec(gpu_model)
    gpus_per_host = C.check_int("gpus_per_host", gpus_per_host, 1)
    hosts_per_rack = C.check_int("hosts_per_rack", hosts_per_rack, 1)
    racks_per_row = C.check_int("racks_per_row", racks_per_row, 1)
    iteration_s = C.check_positive("iteration_s", iteration_s)
    compute_fraction = C.check_fraction("compute_fraction", compute_fraction)
    levels = default_levels_w(spec.name)
    if compute_w is not None:
        levels["compute"] = C.check_positive("compute_w", compute_w)
    if communication_w is not None:
        levels["communication"] = C.check_nonneg("communication_w", communication_w)
    if checkpoint_w is not None:
        levels["checkpoint"] = C.check_nonneg("checkpoint_w", checkpoint_w)
    level_spread = C.check_fraction("level_spread", level_spread, low_open=False, high=0.2)
    noise_w = 0.015 * spec.tdp_w if noise_w is None else C.check_nonneg("noise_w", noise_w)
    jitter = C.check_fraction("jitter", jitter, low_open=False, high=0.25, high_open=True)
    stragglers = C.check_int("stragglers", stragglers, 0)
    if stragglers > gpus:
        raise ParameterError(f"stragglers ({stragglers}) cannot exceed gpus ({gpus})")
    straggler_slowdown = C.check_nonneg("straggler_slowdown", straggler_slowdown)
    checkpoint_every_s = C.optional_positive("checkpoint_every_s", checkpoint_every_s)
    checkpoint_s = C.check_nonneg("checkpoint_s", checkpoint_s)
    ramp_s = C.check_nonneg("ramp_s", ramp_s)
    idle_s = C.check_nonneg("idle_s", idle_s)
    host_offset_ms = C.check_nonneg("host_offset_ms", host_offset_ms)
    drop_fraction = C.check_fraction("drop_fraction", drop_fraction, low_open=False, high_open=True)
    gaps = C.check_int("gaps", gaps, 0)
    gap_s = C.check_nonneg("gap_s", gap_s)
    average_window_s = C.optional_positive("average_window_s", average_window_s)
    update_period_s = C.optional_positive("update_period_s", update_period_s)
    start_dt = C.parse_start(start)
    seed = C.check_seed(seed)
    t_iter0 = idle_s + ramp_s
    t_stop = seconds - idle_s - ramp_s
    if t_stop <= t_iter0:
        raise ParameterError(
            f"seconds ({seconds}) leaves no time for iterations after idle_s ({idle_s}) and "
            f"ramp_s ({ramp_s}) at both ends; need seconds > 2 * (idle_s + ramp_s)"
        )
    n_samples = int(round(seconds * rate_hz))
    if n_samples < 1:
        raise ParameterError(f"seconds * rate_hz must give at least one sample, got {seconds} s at {rate_hz} Hz")

    layout = C.make_layout(gpus, gpus_per_host, hosts_per_rack, racks_per_row, spec.name, spec.tdp_w, job)
    keys = K.stream_keys(seed, C.STREAM_GPU_KEYS, gpus)

    # per-GPU levels and stragglers
    z = np.clip(C.rng(seed, C.STREAM_LEVELS).standard_normal((2, gpus)), -3.0, 3.0)
    compute_gpu_w = levels["compute"] * (1.0 + level_spread * z[0])
    comm_gpu_w = levels["communication"] * (1.0 + level_spread * z[1])
    slowdown = np.zeros(gpus)
    gen = C.rng(seed, C.STREAM_STRAGGLERS)
    straggler_idx = np.sort(gen.choice(gpus, size=stragglers, replace=False)) if stragglers else np.zeros(0, int)
    slowdown[straggler_idx] = straggler_slowdown * gen.uniform(0.5, 1.0, stragglers)

    # the common schedule: iteration start/end times and checkpoints
    compute_s = compute_fraction * iteration_s
    comm_s = iteration_s - compute_s
    base_s = compute_s * (1.0 + slowdown)
    min_iter_s = compute_s * (1.0 - _Z_MAX * jitter) + comm_s
    n_iter_max = int(math.ceil((t_stop - t_iter0) / min_iter_s)) + 2
    max_c = K.max_compute_times_s(keys, base_s, jitter, n_iter_max)
    iter_start, iter_end, ckpts = [], [], []
    t = t_iter0
    next_ckpt = t_iter0 + checkpoint_every_s if checkpoint_every_s > 0 else math.inf
    k = 0
    while t < t_stop:
        if k >= n_iter_max:  # pragma: no cover - bounded above by construction
            raise RuntimeError("iteration bound exceeded")
        end = t + max_c[k] + comm_s
        iter_start.append(t)
        iter_end.append(min(end, t_stop))
        k += 1
        t = end
        if t >= next_ckpt and t < t_stop and checkpoint_s > 0:
            ce = min(t + checkpoint_s, t_stop)
            ckpts.append((t, ce))
            t = ce
            while next_ckpt <= t:
                next_ckpt += checkpoint_every_s
    n_iter = len(iter_start)
    iter_start_a = np.array(iter_start)
    iter_end_a = np.array(iter_end)

    # fixed (GPU-independent) slots, and where iterations go between them
    idle_w = levels["idle"]
    ckpt_w = levels["checkpoint"]

    def segments(g: int) -> C.Segments:
        c = K.compute_times_s(keys[g], base_s[g], jitter, n_iter)
        comp_end = np.minimum(iter_start_a + c, iter_end_a)
        cw, mw = compute_gpu_w[g], comm_gpu_w[g]
        starts = [np.array([0.0])]
        w0 = [np.array([idle_w])]
        w1 = [np.array([idle_w])]
        ph = [np.array([K.TRAIN_IDLE])]
        tg = [np.array([-1])]
        if ramp_s > 0:
            starts.append(np.array([idle_s]))
            w0.append(np.array([idle_w]))
            w1.append(np.array([cw]))
            ph.append(np.array([K.TRAIN_RAMP]))
            tg.append(np.array([-1]))
        # iterations: compute then communication, interleaved with checkpoints
        it_starts = np.column_stack([iter_start_a, comp_end]).ravel()
        it_w = np.tile([cw, mw], n_iter)
        it_ph = np.tile([K.TRAIN_COMPUTE, K.TRAIN_COMMUNICATION], n_iter)
        it_tag = np.repeat(np.arange(n_iter), 2)
        if ckpts:
            ck = np.array(ckpts)
            it_starts = np.concatenate([it_starts, ck[:, 0]])
            it_w = np.concatenate([it_w, np.full(len(ckpts), ckpt_w)])
            it_ph = np.concatenate([it_ph, np.full(len(ckpts), K.TRAIN_CHECKPOINT)])
            it_tag = np.concatenate([it_tag, np.full(len(ckpts), -1)])
            order = np.argsort(it_starts, kind="stable")
            it_starts, it_w, it_ph, it_tag = it_starts[order], it_w[order], it_ph[order], it_tag[order]
        starts.append(it_starts)
        w0.append(it_w)
        w1.append(it_w)
        ph.append(it_ph)
        tg.append(it_tag)
        if ramp_s > 0:
            starts.append(np.array([t_stop]))
            w0.append(np.array([cw]))
            w1.append(np.array([idle_w]))
            ph.append(np.array([K.TRAIN_RAMP]))
            tg.append(np.array([-1]))
        starts.append(np.array([t_stop + ramp_s]))
        w0.append(np.array([idle_w]))
        w1.append(np.array([idle_w]))
        ph.append(np.array([K.TRAIN_IDLE]))
        tg.append(np.array([-1]))
        seg_start = np.concatenate(starts)
        seg_w0 = np.concatenate(w0).astype(np.float64)
        seg_w1 = np.concatenate(w1).astype(np.float64)
        seg_ph = np.concatenate(ph).astype(np.uint8)
        seg_tag = np.concatenate(tg).astype(np.int32)
        if idle_s <= 0:  # the leading idle segment has zero length: drop it
            seg_start, seg_w0, seg_w1, seg_ph, seg_tag = (
                seg_start[1:], seg_w0[1:], seg_w1[1:], seg_ph[1:], seg_tag[1:]
            )
        return seg_start, seg_w0, seg_w1, seg_ph, seg_tag

    offsets = C.host_offsets_ns(seed, len(layout.hosts), host_offset_ms)
    gaps_by_host = C.host_gaps(seed, len(layout.hosts), gaps, gap_s, seconds)
    phases = C.update_phases_s(seed, gpus, update_period_s)
    start_ns = C.datetime_ns(start_dt)
    fparams = np.zeros((gpus, K.N_RENDER_PARAMS))
    fparams[:, K.P_RATE_HZ] = rate_hz
    fparams[:, K.P_NOISE_REL] = noise_w / spec.tdp_w
    fparams[:, K.P_AVERAGE_WINDOW_S] = average_window_s
    fparams[:, K.P_UPDATE_PERIOD_S] = update_period_s
    fparams[:, K.P_UPDATE_PHASE_S] = phases
    fparams[:, K.P_DROP_FRACTION] = drop_fraction

    # mean length of the iterations not cut by the stop (checkpoints are not part of it)
    periods = [e - s for s, e in zip(iter_start, iter_end) if e < t_stop]
    params = dict(
        gpus=gpus, seconds=seconds, rate_hz=rate_hz, gpu_model=spec.name, gpus_per_host=gpus_per_host,
        hosts_per_rack=hosts_per_rack, racks_per_row=racks_per_row, iteration_s=iteration_s,
        compute_fraction=compute_fraction, compute_w=levels["compute"], communication_w=levels["communication"],
        checkpoint_w=levels["checkpoint"], level_spread=level_spread, noise_w=noise_w, jitter=jitter,
        stragglers=stragglers, straggler_slowdown=straggler_slowdown, checkpoint_every_s=checkpoint_every_s,
        checkpoint_s=checkpoint_s, ramp_s=ramp_s, idle_s=idle_s, host_offset_ms=host_offset_ms,
        drop_fraction=drop_fraction, gaps=gaps, gap_s=gap_s, average_window_s=average_window_s or None,
        update_period_s=update_period_s or None, start=start_dt.isoformat(), job=job, seed=seed,
    )
    truth = {
        "generator": "tracekit.synth.training",
        "version": C.TRUTH_VERSION,
        "workload": "training",
        "seed": seed,
        "params": params,
        "start": start_dt.isoformat(),
        "samples_per_gpu": n_samples,
        "phase_codes": {str(k): v for k, v in PHASE_CODES.items()},
        "truth_columns": {
            "truth_phase": "true phase code at the sample's true time (see phase_codes)",
            "truth_iteration": "iteration index during compute/communication, -1 elsewhere",
        },
        "levels_w": levels,
        "gpu_levels_w": {"compute": compute_gpu_w.tolist(), "communication": comm_gpu_w.tolist()},
        "iteration_s": iteration_s,
        "compute_s": compute_s,
        "communication_s": comm_s,
        "iteration_period_s": float(np.mean(periods)) if periods else None,
        "iterations": {"start_s": iter_start, "end_s": iter_end},
        "checkpoints": [{"start_s": a, "end_s": b} for a, b in ckpts],
        "ramps": (
            [{"kind": "start", "start_s": idle_s, "end_s": t_iter0}, {"kind": "stop", "start_s": t_stop, "end_s": t_stop + ramp_s}]
            if ramp_s > 0 else []
        ),
        "stragglers": [
            {"gpu": layout.gpu_ids[i], "slowdown": float(slowdown[i]), "delay_s": float(compute_s * slowdown[i])}
            for i in straggler_idx.tolist()
        ],
        "host_offsets_ms": {h: int(o) / 1e6 for h, o in zip(layout.hosts, offsets.tolist())},
        "gaps": [
            {"host": h, "start_s": float(a), "end_s": float(b)}
            for h, (sa, ea) in zip(layout.hosts, gaps_by_host)
            for a, b in zip(sa.tolist(), ea.tolist())
        ],
        "drop_fraction": drop_fraction,
        "average_window_s": average_window_s or None,
        "update_period_s": update_period_s or None,
    }
    plan = C.Plan(
        layout=layout,
        n_samples=n_samples,
        keys=keys,
        ts0_ns=start_ns + offsets[layout.host_of_gpu],
        fparams=fparams,
        gaps=gaps_by_host,
        segments=segments,
        tag_column="truth_iteration",
        truth=truth,
        power=C.power_semantics(average_window_s),
    )
    return C.finish(plan, out_dir, overwrite=overwrite)
