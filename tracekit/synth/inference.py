"""Synthetic LLM-inference (serving) traces with ground truth.

Model (DESIGN.md, "Facts"): each replica (a tensor-parallel group of ``tp`` GPUs that
share phases) serves its own request stream with continuous batching
(:func:`tracekit.kernels.synth.simulate_replica`).  A *prompt* (prefill) step admits
waiting requests and lasts ``prefill_overhead_s + prompt_tokens / prefill_tokens_per_s``
at the prompt level (near TDP), so prompt bursts grow with prompt length.  *Token*
(decode) steps last ``decode_base_s + decode_per_seq_s * batch`` (30-70 ms) and draw
the token level, growing mildly with the batch:
``token_w * (1 + token_batch_gain * (batch - 1) / (max_batch - 1))``.
With nothing to do the replica idles.

Levels per model (simulator constants cited in DESIGN.md): H100 idle 75 W, prompt
700 W, token 380 W; A100 63 / 400 / 250 W.  Other models: idle from the spec table,
prompt = TDP, token = halfway between idle and TDP.

Requests come from a Poisson process per replica (``arrival_rate_hz``, log-normal
prompt and output lengths) or from a request log (``arrival_s, prompt_tokens,
output_tokens`` and optionally ``replica``; without it requests go to replicas
round-robin in arrival order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from tracekit.errors import InputError, ParameterError
from tracekit.kernels import synth as K
from tracekit.specs import gpu_spec
from tracekit.synth import _common as C

PHASE_CODES = {K.INFER_IDLE: "idle", K.INFER_PROMPT: "prompt", K.INFER_TOKEN: "token"}

#: (idle, prompt, token) watts from the simulator constants in DESIGN.md.
INFERENCE_LEVELS_W = {
    "H100-SXM": (75.0, 700.0, 380.0),
    "H200": (75.0, 700.0, 380.0),
    "A100-SXM-80GB": (63.0, 400.0, 250.0),
    "A100-SXM-40GB": (63.0, 400.0, 250.0),
}

#: Prefill throughput (prompt tokens/s per replica) by model; others use 8000.
PREFILL_TOKENS_PER_S = {"H100-SXM": 16000.0, "H200": 18000.0, "B200": 30000.0, "GB200": 32000.0}
DEFAULT_PREFILL_TOKENS_PER_S = 8000.0

_PROMPT_SIGMA = 1.0
_OUTPUT_SIGMA = 0.8
_MAX_PROMPT_TOKENS = 32768
_MAX_OUTPUT_TOKENS = 4096


def default_levels_w(model: str) -> dict[str, float]:
    """Default idle / prompt / token levels (W) of a GPU model."""
    spec = gpu_spec(model)
    if spec.name in INFERENCE_LEVELS_W:
        idle, prompt, token = INFERENCE_LEVELS_W[spec.name]
    else:
        idle, prompt, token = spec.idle_w, spec.tdp_w, 0.5 * (spec.idle_w + spec.tdp_w)
    return {"idle": idle, "prompt": prompt, "token": token}


def _lognormal_tokens(gen: np.random.Generator, mean: float, sigma: float, n: int, cap: int) -> np.ndarray:
    mu = np.log(mean) - 0.5 * sigma * sigma
    return np.clip(np.round(np.exp(gen.normal(mu, sigma, n))), 1, cap).astype(np.int64)


def _read_request_log(request_log, seconds: float, n_replicas: int) -> pl.DataFrame:
    """The request log as a frame (arrival_s, prompt_tokens, output_tokens, replica)."""
    where = None
    if isinstance(request_log, (str, Path)):
        where = str(request_log)
        try:
            if str(request_log).endswith(".parquet"):
                df = pl.read_parquet(request_log)
            else:
                df = pl.read_csv(request_log, infer_schema_length=10000)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise InputError(f"cannot read request log ({exc})", path=where) from None
    elif isinstance(request_log, pl.DataFrame):
        df = request_log
    else:
        raise ParameterError(
            f"request_log must be a Polars DataFrame or a CSV/Parquet path, not {type(request_log).__name__}"
        )

    def bad(msg: str):
        if where is not None:
            raise InputError(msg, path=where)
        raise ParameterError(f"request_log: {msg}")

    missing = [c for c in ("arrival_s", "prompt_tokens", "output_tokens") if c not in df.columns]
    if missing:
        bad(f"missing column(s) {missing}; need arrival_s, prompt_tokens, output_tokens (and optionally replica)")
    cols = ["arrival_s", "prompt_tokens", "output_tokens"] + (["replica"] if "replica" in df.columns else [])
    try:
        df = df.select(
            pl.col("arrival_s").cast(pl.Float64),
            pl.col("prompt_tokens").cast(pl.Int64),
            pl.col("output_tokens").cast(pl.Int64),
            *([pl.col("replica").cast(pl.Int64)] if "replica" in cols else []),
        )
    except pl.exceptions.PolarsError as exc:
        bad(f"columns are not numeric ({str(exc).splitlines()[0]})")
    if df.null_count().sum_horizontal().item() > 0:
        bad("has empty values")
    if df.height and (df["arrival_s"].min() < 0 or not np.isfinite(df["arrival_s"].to_numpy()).all()):
        bad("arrival_s must be finite and >= 0 (seconds after the trace start)")
    if df.height and (df["prompt_tokens"].min() < 1 or df["output_tokens"].min() < 1):
        bad("prompt_tokens and output_tokens must be >= 1")
    df = df.with_row_index("request").filter(pl.col("arrival_s") < seconds).sort("arrival_s", "request", maintain_order=True)
    if "replica" in df.columns:
        if df.height and (df["replica"].min() < 0 or df["replica"].max() >= n_replicas):
            bad(f"replica must be in [0, {n_replicas - 1}] (gpus / tp replicas)")
    else:
        df = df.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) % n_replicas).alias("replica"))
    return df.drop("request")


def inference(
    out_dir=None,
    *,
    gpus: int = 8,
    seconds: float = 60.0,
    rate_hz: float = 1000.0,
    gpu_model: str = "A100",
    tp: int = 1,
    gpus_per_host: int = 8,
    hosts_per_rack: int = 4,
    racks_per_row: int = 4,
    arrival_rate_hz: float = 0.25,
    request_log=None,
    prompt_tokens_mean: float = 1024.0,
    output_tokens_mean: float = 128.0,
    max_batch: int = 32,
    max_prefill_tokens: int = 8192,
    idle_w: float | None = None,
    prompt_w: float | None = None,
    token_w: float | None = None,
    token_batch_gain: float = 0.15,
    level_spread: float = 0.02,
    prefill_tokens_per_s: float | None = None,
    prefill_overhead_s: float = 0.01,
    decode_base_s: float = 0.03,
    decode_per_seq_s: float = 0.0005,
    noise_w: float | None = None,
    host_offset_ms: float = 0.0,
    drop_fraction: float = 0.0,
    gaps: int = 0,
    gap_s: float = 0.7,
    average_window_s: float | None = None,
    update_period_s: float | None = None,
    start: str = C.DEFAULT_START,
    job: str = "infer0",
    seed: int = 0,
    overwrite: bool = False,
) -> C.SynthResult:
    """Generate an LLM-serving trace (prompt bursts, token plateaus, idle) with ground truth.

    Parameters
    ----------
    out_dir
        Dataset folder to write (streamed, bounded memory); None returns samples in memory.
    gpus, seconds, rate_hz
        Number of GPUs, trace length (s), sampling rate (Hz).
    gpu_model
        GPU model (``A100``, ``H100``...); sets the default levels.
    tp
        Tensor-parallel group size: the GPUs of a group form one replica and share
        its phases; ``gpus`` must be a multiple of ``tp``.
    gpus_per_host, hosts_per_rack, racks_per_row
        Topology; GPU ids are ``node<h>/<i>``.
    arrival_rate_hz
        Mean Poisson request arrivals per second at each replica (ignored with a log).
    request_log
        Polars DataFrame or CSV/Parquet path with ``arrival_s`` (s after start),
        ``prompt_tokens``, ``output_tokens`` and optionally ``replica``.
    prompt_tokens_mean, output_tokens_mean
        Means of the log-normal prompt and output lengths of generated requests.
    max_batch, max_prefill_tokens
        Most sequences decoded together; most prompt tokens in one prefill step.
    idle_w, prompt_w, token_w
        Levels (W); default per model (see :func:`default_levels_w`).  ``token_w`` is
        the level of a batch of one.
    token_batch_gain
        Relative rise of the token level from a batch of one to ``max_batch``.
    level_spread
        Relative standard deviation of each GPU's above-idle power.
    prefill_tokens_per_s, prefill_overhead_s
        Prefill speed (default per model) and fixed cost per prefill step (s).
    decode_base_s, decode_per_seq_s
        Decode step time: ``decode_base_s + decode_per_seq_s * batch`` (s).
    noise_w
        Standard deviation of per-sample noise at TDP (W), default 1.5 % of TDP;
        noise is proportional to the level (idle is quieter than compute).
    host_offset_ms, drop_fraction, gaps, gap_s, average_window_s, update_period_s
        Telemetry effects, as in :func:`tracekit.synth.training`.
    start, job, seed, overwrite
        Time of the first sample (ISO), job name, random seed, replace ``out_dir``.

    Returns
    -------
    SynthResult
        With ``truth["requests"]`` (per request: replica, arrival_s, prompt_tokens,
        output_tokens, prefill_start_s, first_token_s, finish_s; null when not reached).

    Notes
    -----
    ``truth_phase`` codes: 0 idle, 1 prompt, 2 token.  ``truth_batch`` is the number of
    running sequences (0 when idle).
    """
    gpus = C.check_int("gpus", gpus, 1)
    seconds = C.check_positive("seconds", seconds)
    rate_hz = C.check_positive("rate_hz", rate_hz)
    spec = gpu_spec(gpu_model)
    tp = C.check_int("tp", tp, 1)
    if gpus % tp:
        raise ParameterError(f"gpus ({gpus}) must be a multiple of tp ({tp})")
    gpus_per_host = C.check_int("gpus_per_host", gpus_per_host, 1)
    hosts_per_rack = C.check_int("hosts_per_rack", hosts_per_rack, 1)
    racks_per_row = C.check_int("racks_per_row", racks_per_row, 1)
    arrival_rate_hz = C.check_nonneg("arrival_rate_hz", arrival_rate_hz)
    prompt_tokens_mean = C.check_positive("prompt_tokens_mean", prompt_tokens_mean)
    output_tokens_mean = C.check_positive("output_tokens_mean", output_tokens_mean)
    max_batch = C.check_int("max_batch", max_batch, 1)
    max_prefill_tokens = C.check_int("max_prefill_tokens", max_prefill_tokens, 1)
    levels = default_levels_w(spec.name)
    for name, value in (("idle", idle_w), ("prompt", prompt_w), ("token", token_w)):
        if value is not None:
            levels[name] = C.check_nonneg(f"{name}_w", value)
    token_batch_gain = C.check_nonneg("token_batch_gain", token_batch_gain)
    level_spread = C.check_fraction("level_spread", level_spread, low_open=False, high=0.2)
    if prefill_tokens_per_s is None:
        prefill_tokens_per_s = PREFILL_TOKENS_PER_S.get(spec.name, DEFAULT_PREFILL_TOKENS_PER_S)
    prefill_tokens_per_s = C.check_positive("prefill_tokens_per_s", prefill_tokens_per_s)
    prefill_overhead_s = C.check_nonneg("prefill_overhead_s", prefill_overhead_s)
    decode_base_s = C.check_positive("decode_base_s", decode_base_s)
    decode_per_seq_s = C.check_nonneg("decode_per_seq_s", decode_per_seq_s)
    noise_w = 0.015 * spec.tdp_w if noise_w is None else C.check_nonneg("noise_w", noise_w)
    host_offset_ms = C.check_nonneg("host_offset_ms", host_offset_ms)
    drop_fraction = C.check_fraction("drop_fraction", drop_fraction, low_open=False, high_open=True)
    gaps = C.check_int("gaps", gaps, 0)
    gap_s = C.check_nonneg("gap_s", gap_s)
    average_window_s = C.optional_positive("average_window_s", average_window_s)
    update_period_s = C.optional_positive("update_period_s", update_period_s)
    start_dt = C.parse_start(start)
    seed = C.check_seed(seed)
    n_samples = int(round(seconds * rate_hz))
    if n_samples < 1:
        raise ParameterError(f"seconds * rate_hz must give at least one sample, got {seconds} s at {rate_hz} Hz")

    n_replicas = gpus // tp
    layout = C.make_layout(gpus, gpus_per_host, hosts_per_rack, racks_per_row, spec.name, spec.tdp_w, job)
    keys = K.stream_keys(seed, C.STREAM_GPU_KEYS, gpus)

    # requests per replica
    if request_log is not None:
        log = _read_request_log(request_log, seconds, n_replicas)
        per_replica = []
        for r in range(n_replicas):
            sub = log.filter(pl.col("replica") == r)
            per_replica.append(
                (sub["arrival_s"].to_numpy().astype(np.float64),
                 sub["prompt_tokens"].to_numpy().astype(np.int64),
                 sub["output_tokens"].to_numpy().astype(np.int64))
            )
    else:
        per_replica = []
        for r in range(n_replicas):
            gen = C.rng(seed, C.STREAM_REQUESTS, r)
            n = int(gen.poisson(arrival_rate_hz * seconds))
            arrivals = np.sort(gen.uniform(0.0, seconds, n))
            prompts = _lognormal_tokens(gen, prompt_tokens_mean, _PROMPT_SIGMA, n, _MAX_PROMPT_TOKENS)
            outputs = _lognormal_tokens(gen, output_tokens_mean, _OUTPUT_SIGMA, n, _MAX_OUTPUT_TOKENS)
            per_replica.append((arrivals, prompts, outputs))

    qparams = np.zeros(K.N_REPLICA_PARAMS)
    qparams[K.Q_SECONDS] = seconds
    qparams[K.Q_MAX_BATCH] = max_batch
    qparams[K.Q_PREFILL_OVERHEAD_S] = prefill_overhead_s
    qparams[K.Q_PREFILL_TOKENS_PER_S] = prefill_tokens_per_s
    qparams[K.Q_DECODE_BASE_S] = decode_base_s
    qparams[K.Q_DECODE_PER_SEQ_S] = decode_per_seq_s
    qparams[K.Q_MAX_PREFILL_TOKENS] = max_prefill_tokens
    replica_segments = []
    request_cols: dict[str, list] = {
        k: [] for k in ("replica", "arrival_s", "prompt_tokens", "output_tokens", "prefill_start_s", "first_token_s", "finish_s")
    }
    for r, (arrivals, prompts, outputs) in enumerate(per_replica):
        n = arrivals.shape[0]
        cap = 4 * n + 4
        seg_start = np.empty(cap)
        seg_phase = np.empty(cap, dtype=np.uint8)
        seg_batch = np.empty(cap, dtype=np.int32)
        times = np.empty((n, 3))
        n_seg = K.simulate_replica(arrivals, prompts.astype(np.float64), outputs, qparams, seg_start, seg_phase, seg_batch, times)
        replica_segments.append((seg_start[:n_seg].copy(), seg_phase[:n_seg].copy(), seg_batch[:n_seg].copy()))
        request_cols["replica"].extend([r] * n)
        request_cols["arrival_s"].extend(arrivals.tolist())
        request_cols["prompt_tokens"].extend(prompts.tolist())
        request_cols["output_tokens"].extend(outputs.tolist())
        request_cols["prefill_start_s"].extend(times[:, 0].tolist())
        request_cols["first_token_s"].extend(times[:, 1].tolist())
        request_cols["finish_s"].extend(times[:, 2].tolist())

    z = np.clip(C.rng(seed, C.STREAM_LEVELS).standard_normal(gpus), -3.0, 3.0)
    factor = 1.0 + level_spread * z
    idle_level = levels["idle"]
    gain = token_batch_gain / max(max_batch - 1, 1)

    def segments(g: int) -> C.Segments:
        seg_start, seg_phase, seg_batch = replica_segments[g // tp]
        token_level = levels["token"] * (1.0 + gain * (seg_batch - 1))
        w = np.where(seg_phase == K.INFER_PROMPT, levels["prompt"], token_level)
        w = np.where(seg_phase == K.INFER_IDLE, idle_level, idle_level + (w - idle_level) * factor[g])
        return seg_start, w, w, seg_phase, seg_batch

    offsets = C.host_offsets_ns(seed, len(layout.hosts), host_offset_ms)
    gaps_by_host = C.host_gaps(seed, len(layout.hosts), gaps, gap_s, seconds)
    fparams = np.zeros((gpus, K.N_RENDER_PARAMS))
    fparams[:, K.P_RATE_HZ] = rate_hz
    fparams[:, K.P_NOISE_REL] = noise_w / spec.tdp_w
    fparams[:, K.P_AVERAGE_WINDOW_S] = average_window_s
    fparams[:, K.P_UPDATE_PERIOD_S] = update_period_s
    fparams[:, K.P_UPDATE_PHASE_S] = C.update_phases_s(seed, gpus, update_period_s)
    fparams[:, K.P_DROP_FRACTION] = drop_fraction

    params = dict(
        gpus=gpus, seconds=seconds, rate_hz=rate_hz, gpu_model=spec.name, tp=tp, gpus_per_host=gpus_per_host,
        hosts_per_rack=hosts_per_rack, racks_per_row=racks_per_row, arrival_rate_hz=arrival_rate_hz,
        request_log=str(request_log) if isinstance(request_log, (str, Path)) else (
            "DataFrame" if request_log is not None else None),
        prompt_tokens_mean=prompt_tokens_mean, output_tokens_mean=output_tokens_mean, max_batch=max_batch,
        max_prefill_tokens=max_prefill_tokens, idle_w=levels["idle"], prompt_w=levels["prompt"],
        token_w=levels["token"], token_batch_gain=token_batch_gain, level_spread=level_spread,
        prefill_tokens_per_s=prefill_tokens_per_s, prefill_overhead_s=prefill_overhead_s,
        decode_base_s=decode_base_s, decode_per_seq_s=decode_per_seq_s, noise_w=noise_w,
        host_offset_ms=host_offset_ms, drop_fraction=drop_fraction, gaps=gaps, gap_s=gap_s,
        average_window_s=average_window_s or None, update_period_s=update_period_s or None,
        start=start_dt.isoformat(), job=job, seed=seed,
    )
    truth = {
        "generator": "tracekit.synth.inference",
        "version": C.TRUTH_VERSION,
        "workload": "inference",
        "seed": seed,
        "params": params,
        "start": start_dt.isoformat(),
        "samples_per_gpu": n_samples,
        "phase_codes": {str(k): v for k, v in PHASE_CODES.items()},
        "truth_columns": {
            "truth_phase": "true phase code at the sample's true time (see phase_codes)",
            "truth_batch": "running sequences in the replica's batch (0 when idle)",
        },
        "levels_w": levels,
        "gpu_level_factor": factor.tolist(),
        "replicas": [layout.gpu_ids[r * tp:(r + 1) * tp] for r in range(n_replicas)],
        "requests": request_cols,
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
        ts0_ns=C.datetime_ns(start_dt) + offsets[layout.host_of_gpu],
        fparams=fparams,
        gaps=gaps_by_host,
        segments=segments,
        tag_column="truth_batch",
        truth=truth,
        power=C.power_semantics(average_window_s),
    )
    return C.finish(plan, out_dir, overwrite=overwrite)
