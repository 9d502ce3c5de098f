"""Numba kernels of the synthetic-trace generator (:mod:`tracekit.synth`).

Arrays in, arrays out; no I/O, no Polars.

Randomness is *counter based*: every random number is a hash (SplitMix64 finalizer)
of a 64-bit key and a counter (the sample or iteration index).  A GPU's samples
therefore depend only on the seed, the GPU's index and the sample index, never on
how GPUs are batched or how many threads render them.

Per-sample noise is an Irwin-Hall approximation of a standard normal: the sum of
the four 16-bit quarters of one hash, centred and scaled to unit variance.  Its
support is bounded (|z| <= 2*sqrt(3) ~ 3.46), which suits sensor noise and keeps
jittered durations positive.
"""

from __future__ import annotations

import numpy as np

from tracekit.kernels._jit import kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S16 = np.uint64(16)
_S32 = np.uint64(32)
_S48 = np.uint64(48)
_LOW16 = np.uint64(0xFFFF)
_TWO_M53 = 1.0 / 9007199254740992.0
_SQRT3 = np.sqrt(3.0)

#: Salts that separate the random streams drawn from one GPU key.
SALT_NOISE = np.uint64(0x6E6F697365000001)
SALT_DROP = np.uint64(0x64726F7000000002)
SALT_JITTER = np.uint64(0x6A69747465720003)

#: Phase codes of the segment tables (they are also the ``truth_phase`` values).
TRAIN_COMMUNICATION = 0
TRAIN_COMPUTE = 1
TRAIN_CHECKPOINT = 2
TRAIN_IDLE = 3
TRAIN_RAMP = 4
INFER_IDLE = 0
INFER_PROMPT = 1
INFER_TOKEN = 2

#: Layout of the float parameter vector of :func:`render_gpu`.
P_RATE_HZ = 0
P_NOISE_REL = 1
P_AVERAGE_WINDOW_S = 2
P_UPDATE_PERIOD_S = 3
P_UPDATE_PHASE_S = 4
P_DROP_FRACTION = 5
N_RENDER_PARAMS = 6

#: Layout of the float parameter vector of :func:`simulate_replica`.
Q_SECONDS = 0
Q_MAX_BATCH = 1
Q_PREFILL_OVERHEAD_S = 2
Q_PREFILL_TOKENS_PER_S = 3
Q_DECODE_BASE_S = 4
Q_DECODE_PER_SEQ_S = 5
Q_MAX_PREFILL_TOKENS = 6
N_REPLICA_PARAMS = 7


@kernel
def mix64(z):
    """SplitMix64 finalizer: a bijective 64-bit hash."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@kernel
def hash2(key, counter):
    """Hash of (key, counter) as uint64."""
    return mix64(key + np.uint64(counter) * _GOLDEN)


@kernel
def uniform(key, counter):
    """Uniform float in [0, 1) from (key, counter)."""
    return float(hash2(key, counter) >> _S11) * _TWO_M53


@kernel
def normal(key, counter):
    """Approximately standard-normal float from (key, counter) (Irwin-Hall n=4)."""
    h = hash2(key, counter)
    s = (
        float(h & _LOW16)
        + float((h >> _S16) & _LOW16)
        + float((h >> _S32) & _LOW16)
        + float(h >> _S48)
    )
    # each quarter + 0.5 is uniform on (0, 65536): mean 32768 each, sum mean 131072 - 2
    return ((s + 2.0) / 65536.0 - 2.0) * _SQRT3


@kernel
def stream_keys(seed, stream, n):
    """``n`` per-item keys (one per GPU or replica) of random stream ``stream``."""
    base = mix64(mix64(np.uint64(seed) ^ _GOLDEN) + np.uint64(stream) * _MIX1)
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = mix64(base + np.uint64(i) * _GOLDEN)
    return out


@kernel
def compute_times_s(key, base_s, jitter, n_iter):
    """One GPU's compute time per iteration: ``base_s * (1 + jitter * z_k)``.

    ``base_s`` already includes the GPU's straggler slowdown.
    """
    out = np.empty(n_iter, dtype=np.float64)
    k2 = key ^ SALT_JITTER
    for k in range(n_iter):
        out[k] = base_s * (1.0 + jitter * normal(k2, k))
    return out


@kernel
def max_compute_times_s(keys, base_s, jitter, n_iter):
    """Per iteration, the largest compute time over the GPUs (``base_s`` per GPU)."""
    out = np.zeros(n_iter, dtype=np.float64)
    for g in range(keys.shape[0]):
        k2 = keys[g] ^ SALT_JITTER
        b = base_s[g]
        for k in range(n_iter):
            c = b * (1.0 + jitter * normal(k2, k))
            if c > out[k]:
                out[k] = c
    return out


@kernel
def render_gpu(
    seg_start_s,
    seg_w0,
    seg_w1,
    seg_phase,
    seg_tag,
    gap_start_s,
    gap_end_s,
    fparams,
    n_samples,
    ts0_ns,
    key,
    out_ts,
    out_power_w,
    out_phase,
    out_tag,
):
    """Render one GPU's samples from its segment table; returns the number written.

    Segments are contiguous: segment ``j`` covers ``[seg_start_s[j], seg_start_s[j+1])``
    (the last one has no end) with power going linearly from ``seg_w0[j]`` to
    ``seg_w1[j]`` (flat when equal), phase ``seg_phase[j]`` and tag ``seg_tag[j]``
    (iteration or batch size).  Sample ``i`` is at true time ``i / rate_hz``.

    Steps per sample: true level times ``1 + noise_rel * z`` (noise proportional to the
    level, clipped at 0) -> optional trailing moving
    average over ``average_window_s`` -> optional hold between counter updates every
    ``update_period_s`` (first update at ``update_phase_s``) -> dropped when inside a
    gap ``[gap_start_s, gap_end_s)`` (sorted, disjoint) or with probability
    ``drop_fraction``.  Kept samples are written compactly with time stamp
    ``ts0_ns + round(i * 1e9 / rate_hz)`` and the *true* phase and tag.
    """
    rate_hz = fparams[P_RATE_HZ]
    noise_rel = fparams[P_NOISE_REL]
    average_window_s = fparams[P_AVERAGE_WINDOW_S]
    update_period_s = fparams[P_UPDATE_PERIOD_S]
    update_phase_s = fparams[P_UPDATE_PHASE_S]
    drop_fraction = fparams[P_DROP_FRACTION]
    period_ns = 1e9 / rate_hz
    n_seg = seg_start_s.shape[0]
    n_gaps = gap_start_s.shape[0]

    window = 0
    if average_window_s > 0.0:
        window = int(np.round(average_window_s * rate_hz))
    ring = np.zeros(max(window, 1), dtype=np.float64)
    ring_sum = 0.0

    key_noise = key ^ SALT_NOISE
    key_drop = key ^ SALT_DROP

    j = 0
    seg_end = seg_start_s[1] if n_seg > 1 else np.inf
    s0 = seg_start_s[0]
    w0 = seg_w0[0]
    slope = 0.0
    if seg_w1[0] != w0 and seg_end > s0:
        slope = (seg_w1[0] - w0) / (seg_end - s0)
    gi = 0
    held = 0.0
    next_update_s = update_phase_s
    n_out = 0
    for i in range(n_samples):
        t = i / rate_hz
        if t >= seg_end:
            while t >= seg_end:
                j += 1
                seg_end = seg_start_s[j + 1] if j + 1 < n_seg else np.inf
            s0 = seg_start_s[j]
            w0 = seg_w0[j]
            slope = 0.0
            if seg_w1[j] != w0 and seg_end > s0:
                slope = (seg_w1[j] - w0) / (seg_end - s0)
        level = w0 + slope * (t - s0)
        p = level * (1.0 + noise_rel * normal(key_noise, i))
        if p < 0.0:
            p = 0.0
        v = p
        if window > 1:
            slot = i % window
            ring_sum += p - ring[slot]
            ring[slot] = p
            v = ring_sum / min(i + 1, window)
        if update_period_s > 0.0:
            if i == 0 or t >= next_update_s:
                held = v
                if t >= next_update_s:
                    next_update_s = update_phase_s + (np.floor((t - update_phase_s) / update_period_s) + 1.0) * update_period_s
            v = held
        while gi < n_gaps and t >= gap_end_s[gi]:
            gi += 1
        if gi < n_gaps and t >= gap_start_s[gi]:
            continue
        if drop_fraction > 0.0 and uniform(key_drop, i) < drop_fraction:
            continue
        out_ts[n_out] = ts0_ns + np.int64(np.round(i * period_ns))
        out_power_w[n_out] = v
        out_phase[n_out] = seg_phase[j]
        out_tag[n_out] = seg_tag[j]
        n_out += 1
    return n_out


@kernel
def simulate_replica(
    arrival_s,
    prompt_tokens,
    output_tokens,
    qparams,
    seg_start_s,
    seg_phase,
    seg_batch,
    req_times_s,
):
    """Continuous-batching serving loop of one replica; returns the number of segments.

    Requests (sorted by ``arrival_s``) are admitted first-come first-served.  While
    requests wait and the batch has room, one *prefill* step admits as many as fit
    (``max_batch`` sequences, ``max_prefill_tokens`` prompt tokens, at least one) and
    lasts ``prefill_overhead_s + tokens / prefill_tokens_per_s``; it yields each
    admitted request's first token.  Otherwise one *decode* step of
    ``decode_base_s + decode_per_seq_s * batch`` yields one token for every running
    request.  With nothing running and nothing waiting the replica idles until the
    next arrival.

    Outputs: segments (start, phase code, batch size; consecutive equal
    (phase, batch) merged) and per request ``[prefill_start, first_token, finish]``
    (NaN when not reached before ``seconds``).  Capacity needed: ``4 * n + 4``.
    """
    seconds = qparams[Q_SECONDS]
    max_batch = int(qparams[Q_MAX_BATCH])
    prefill_overhead_s = qparams[Q_PREFILL_OVERHEAD_S]
    prefill_tokens_per_s = qparams[Q_PREFILL_TOKENS_PER_S]
    decode_base_s = qparams[Q_DECODE_BASE_S]
    decode_per_seq_s = qparams[Q_DECODE_PER_SEQ_S]
    max_prefill_tokens = qparams[Q_MAX_PREFILL_TOKENS]
    n = arrival_s.shape[0]
    req_times_s[:, :] = np.nan
    run_id = np.empty(max(max_batch, 1), dtype=np.int64)
    run_left = np.empty(max(max_batch, 1), dtype=np.int64)
    n_run = 0
    nxt = 0
    n_seg = 0
    t = 0.0
    while t < seconds:
        if n_run == 0 and (nxt >= n or arrival_s[nxt] > t):
            phase, batch = INFER_IDLE, 0
            if n_seg == 0 or seg_phase[n_seg - 1] != phase or seg_batch[n_seg - 1] != batch:
                seg_start_s[n_seg] = t
                seg_phase[n_seg] = phase
                seg_batch[n_seg] = batch
                n_seg += 1
            if nxt >= n:
                break
            t = arrival_s[nxt]
            continue
        if nxt < n and arrival_s[nxt] <= t and n_run < max_batch:
            first = n_run
            tokens = 0.0
            while nxt < n and arrival_s[nxt] <= t and n_run < max_batch:
                if n_run > first and tokens + prompt_tokens[nxt] > max_prefill_tokens:
                    break
                tokens += prompt_tokens[nxt]
                run_id[n_run] = nxt
                run_left[n_run] = output_tokens[nxt]
                req_times_s[nxt, 0] = t
                n_run += 1
                nxt += 1
            phase, batch = INFER_PROMPT, n_run
            if n_seg == 0 or seg_phase[n_seg - 1] != phase or seg_batch[n_seg - 1] != batch:
                seg_start_s[n_seg] = t
                seg_phase[n_seg] = phase
                seg_batch[n_seg] = batch
                n_seg += 1
            t += prefill_overhead_s + tokens / prefill_tokens_per_s
            if t >= seconds:
                break
            for r in range(first, n_run):
                req_times_s[run_id[r], 1] = t
                run_left[r] -= 1
        else:
            phase, batch = INFER_TOKEN, n_run
            if n_seg == 0 or seg_phase[n_seg - 1] != phase or seg_batch[n_seg - 1] != batch:
                seg_start_s[n_seg] = t
                seg_phase[n_seg] = phase
                seg_batch[n_seg] = batch
                n_seg += 1
            t += decode_base_s + decode_per_seq_s * n_run
            if t >= seconds:
                break
            for r in range(n_run):
                run_left[r] -= 1
        # retire finished requests (swap-remove; batch order does not matter)
        r = 0
        while r < n_run:
            if run_left[r] <= 0:
                req_times_s[run_id[r], 2] = t
                n_run -= 1
                run_id[r] = run_id[n_run]
                run_left[r] = run_left[n_run]
            else:
                r += 1
    return n_seg
