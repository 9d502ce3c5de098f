"""What the training and inference generators share: parameter checks, topology,
the render plan, batch rendering on threads, in-memory and streaming output."""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from tracekit.errors import InputError, ParameterError
from tracekit.kernels import synth as K
from tracekit.schema import PowerSemantics, canonical_topology

#: Default time of the first sample.
DEFAULT_START = "2025-01-01T00:00:00+00:00"

#: Samples rendered per batch when streaming to disk (bounds memory, ~20 bytes/sample).
BATCH_SAMPLES = 4 * 1024 * 1024

#: Version of the ``synth`` block in manifest.json.
TRUTH_VERSION = 1

# Random streams (numpy Generators seeded by SeedSequence([seed, stream]); counter-based
# kernel streams use stream_keys(seed, stream, n)).
STREAM_GPU_KEYS = 1
STREAM_LEVELS = 2
STREAM_STRAGGLERS = 3
STREAM_OFFSETS = 4
STREAM_GAPS = 5
STREAM_UPDATE_PHASE = 6
STREAM_REQUESTS = 7


# -- parameter checks ----------------------------------------------------------------
def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else ParameterError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_float(name: str, value) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    return out


def check_positive(name: str, value) -> float:
    """``value`` as a finite float > 0, else ParameterError."""
    out = _as_float(name, value)
    if out <= 0:
        raise ParameterError(f"{name} must be > 0, got {value!r}")
    return out


def check_nonneg(name: str, value) -> float:
    """``value`` as a finite float >= 0, else ParameterError."""
    out = _as_float(name, value)
    if out < 0:
        raise ParameterError(f"{name} must be >= 0, got {value!r}")
    return out


def check_fraction(name: str, value, *, low_open: bool = True, high: float = 1.0, high_open: bool = False) -> float:
    """``value`` in (0, high] (or [0, ...) when not ``low_open``), else ParameterError."""
    out = _as_float(name, value)
    low_ok = out > 0 if low_open else out >= 0
    high_ok = out < high if high_open else out <= high
    if not (low_ok and high_ok):
        lo = "(0" if low_open else "[0"
        hi = f"{high:g})" if high_open else f"{high:g}]"
        raise ParameterError(f"{name} must be in {lo}, {hi}, got {value!r}")
    return out


def optional_positive(name: str, value) -> float:
    """None or 0 -> 0.0 (feature off); else a float > 0."""
    if value is None:
        return 0.0
    out = _as_float(name, value)
    if out < 0:
        raise ParameterError(f"{name} must be > 0 (or None/0 to turn it off), got {value!r}")
    return out


def check_seed(seed) -> int:
    seed = check_int("seed", seed, 0)
    if seed >= 2**63:
        raise ParameterError(f"seed must be < 2**63, got {seed}")
    return seed


def parse_start(start) -> datetime:
    """The time of the first sample as an aware UTC datetime (naive input = UTC)."""
    if isinstance(start, datetime):
        dt = start
    else:
        try:
            dt = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        except ValueError:
            raise ParameterError(f"start must be an ISO time like 2025-01-01T00:00:00Z, got {start!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def datetime_ns(dt: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime, exactly."""
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    """A numpy Generator for one named stream of the seed (independent of other streams)."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *more]))


# -- topology --------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each GPU sits: ids sorted in generation order, host index per GPU."""

    gpu_ids: list[str]
    hosts: list[str]
    host_of_gpu: np.ndarray
    index_in_host: np.ndarray
    topology: pl.DataFrame


def make_layout(
    gpus: int, gpus_per_host: int, hosts_per_rack: int, racks_per_row: int, model: str, tdp_w: float, job: str
) -> Layout:
    """GPU ids ``node<h>/<i>`` (zero-padded so string order = generation order) and topology."""
    n_hosts = -(-gpus // gpus_per_host)
    n_racks = -(-n_hosts // hosts_per_rack)
    n_rows = -(-n_racks // racks_per_row)
    wh = max(2, len(str(n_hosts - 1)))
    wi = len(str(gpus_per_host - 1))
    wr = max(2, len(str(n_racks - 1)))
    ww = max(2, len(str(n_rows - 1)))
    hosts = [f"node{h:0{wh}d}" for h in range(n_hosts)]
    g = np.arange(gpus)
    host_of_gpu = g // gpus_per_host
    index_in_host = g % gpus_per_host
    gpu_ids = [f"{hosts[h]}/{i:0{wi}d}" for h, i in zip(host_of_gpu.tolist(), index_in_host.tolist())]
    rack_of_host = np.arange(n_hosts) // hosts_per_rack
    racks = [f"rack{r:0{wr}d}" for r in rack_of_host.tolist()]
    rows = [f"row{r // racks_per_row:0{ww}d}" for r in rack_of_host.tolist()]
    topo = pl.DataFrame(
        {
            "gpu": gpu_ids,
            "host": [hosts[h] for h in host_of_gpu.tolist()],
            "rack": [racks[h] for h in host_of_gpu.tolist()],
            "row": [rows[h] for h in host_of_gpu.tolist()],
            "model": [model] * gpus,
            "tdp_w": [float(tdp_w)] * gpus,
            "job": [job] * gpus,
        }
    )
    return Layout(gpu_ids, hosts, host_of_gpu, index_in_host, canonical_topology(topo))


def host_offsets_ns(seed: int, n_hosts: int, host_offset_ms: float) -> np.ndarray:
    """Per-host clock offsets (ns), normal with standard deviation ``host_offset_ms``."""
    if host_offset_ms <= 0:
        return np.zeros(n_hosts, dtype=np.int64)
    draws = rng(seed, STREAM_OFFSETS).normal(0.0, host_offset_ms, n_hosts)
    return np.round(draws * 1e6).astype(np.int64)


def host_gaps(seed: int, n_hosts: int, gaps: int, gap_s: float, seconds: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per host, sorted disjoint gap intervals (start_s, end_s) where its logger is silent."""
    empty = (np.zeros(0), np.zeros(0))
    if gaps <= 0 or gap_s <= 0:
        return [empty] * n_hosts
    gen = rng(seed, STREAM_GAPS)
    out = []
    for _ in range(n_hosts):
        starts = np.sort(gen.uniform(0.0, max(seconds - gap_s, 0.0), gaps))
        ends = starts + gap_s
        # merge overlaps so the intervals are disjoint and sorted
        ms, me = [float(starts[0])], [float(ends[0])]
        for s, e in zip(starts[1:].tolist(), ends[1:].tolist()):
            if s <= me[-1]:
                me[-1] = max(me[-1], e)
            else:
                ms.append(s)
                me.append(e)
        out.append((np.array(ms), np.array(me)))
    return out


def update_phases_s(seed: int, n_gpus: int, update_period_s: float) -> np.ndarray:
    """Per GPU, the time of its counter's first update, uniform in [0, period)."""
    if update_period_s <= 0:
        return np.zeros(n_gpus)
    return rng(seed, STREAM_UPDATE_PHASE).uniform(0.0, update_period_s, n_gpus)


def power_semantics(average_window_s: float) -> PowerSemantics:
    if average_window_s > 0:
        return PowerSemantics(kind="average", window_s=average_window_s, field="synthetic")
    return PowerSemantics(kind="instant", window_s=None, field="synthetic")


def json_clean(obj):
    """Floats NaN/inf -> None, numpy scalars/arrays -> Python, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- the plan and its rendering --------------------------------------------------------
Segments = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Plan:
    """Everything needed to render any GPU independently of the others."""

    layout: Layout
    n_samples: int
    keys: np.ndarray  # uint64 per GPU
    ts0_ns: np.ndarray  # int64 per GPU: start + host offset
    fparams: np.ndarray  # float64 (n_gpus, N_RENDER_PARAMS)
    gaps: list[tuple[np.ndarray, np.ndarray]]  # per host
    segments: Callable[[int], Segments]  # GPU index -> segment table
    tag_column: str
    truth: dict
    power: PowerSemantics
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def n_gpus(self) -> int:
        return len(self.layout.gpu_ids)


def render_one(plan: Plan, g: int, out_ts, out_power, out_phase, out_tag) -> int:
    """Render GPU ``g`` into the given buffers (length n_samples); returns rows kept."""
    seg_start, w0, w1, phase, tag = plan.segments(g)
    gap_start, gap_end = plan.gaps[int(plan.layout.host_of_gpu[g])]
    return K.render_gpu(
        seg_start, w0, w1, phase, tag, gap_start, gap_end,
        plan.fparams[g], plan.n_samples, plan.ts0_ns[g], plan.keys[g],
        out_ts, out_power, out_phase, out_tag,
    )


@dataclass
class Batch:
    """Rendered samples of GPUs ``lo..hi-1``: compact arrays plus the GPU of each row."""

    lo: int
    hi: int
    counts: np.ndarray  # rows per GPU
    ts_ns: np.ndarray
    power_w: np.ndarray
    phase: np.ndarray
    tag: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.counts.sum())


def render_batch(plan: Plan, lo: int, hi: int, pool: ThreadPoolExecutor | None = None) -> Batch:
    """Render GPUs ``lo..hi-1`` (threads over GPUs; kernels release the GIL)."""
    n = plan.n_samples
    k = hi - lo
    ts = np.empty(k * n, dtype=np.int64)
    pw = np.empty(k * n, dtype=np.float32)
    ph = np.empty(k * n, dtype=np.uint8)
    tg = np.empty(k * n, dtype=np.int32)

    def work(i: int) -> int:
        a = i * n
        return render_one(plan, lo + i, ts[a:a + n], pw[a:a + n], ph[a:a + n], tg[a:a + n])

    if pool is not None and k > 1:
        counts = np.array(list(pool.map(work, range(k))), dtype=np.int64)
    else:
        counts = np.array([work(i) for i in range(k)], dtype=np.int64)
    if (counts != n).any():
        keep = np.concatenate([np.arange(i * n, i * n + c) for i, c in enumerate(counts.tolist())])
        ts, pw, ph, tg = ts[keep], pw[keep], ph[keep], tg[keep]
    return Batch(lo, hi, counts, ts, pw, ph, tg)


def batch_bounds(plan: Plan, batch_samples: int = BATCH_SAMPLES) -> list[tuple[int, int]]:
    per = max(1, batch_samples // max(plan.n_samples, 1))
    return [(lo, min(lo + per, plan.n_gpus)) for lo in range(0, plan.n_gpus, per)]


def iter_batches(plan: Plan, batch_samples: int = BATCH_SAMPLES):
    """Rendered batches of whole GPUs, in GPU order."""
    with ThreadPoolExecutor(max_workers=max(1, plan.threads)) as pool:
        for lo, hi in batch_bounds(plan, batch_samples):
            yield render_batch(plan, lo, hi, pool)


def batch_frame(plan: Plan, b: Batch) -> pl.DataFrame:
    """A batch as a canonical sample frame with the truth columns."""
    ids = pl.Series("gpu", plan.layout.gpu_ids[b.lo:b.hi], dtype=pl.String)
    idx = np.repeat(np.arange(b.hi - b.lo, dtype=np.uint32), b.counts)
    return pl.DataFrame(
        [
            ids.gather(idx),
            pl.Series("ts", b.ts_ns).cast(pl.Datetime("ns", "UTC")),
            pl.Series("power_w", b.power_w),
            pl.Series("truth_phase", b.phase),
            pl.Series(plan.tag_column, b.tag),
        ]
    )


def batch_table(plan: Plan, b: Batch) -> pa.Table:
    """A batch as an Arrow table (gpu dictionary-encoded) for the dataset writer."""
    idx = np.repeat(np.arange(b.hi - b.lo, dtype=np.int32), b.counts)
    gpu = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(plan.layout.gpu_ids[b.lo:b.hi], pa.string()))
    return pa.table(
        {
            "gpu": gpu,
            "ts": pa.array(b.ts_ns).cast(pa.timestamp("ns", tz="UTC")),
            "power_w": pa.array(b.power_w),
            "truth_phase": pa.array(b.phase),
            plan.tag_column: pa.array(b.tag),
        }
    )


# -- results -----------------------------------------------------------------------------
@dataclass
class SynthResult:
    """A generated trace with its ground truth.

    Attributes
    ----------
    samples
        Canonical samples (gpu, ts, power_w) plus ``truth_phase`` (UInt8) and
        ``truth_iteration`` (training) or ``truth_batch`` (inference), sorted by
        (gpu, ts); None when the trace was written to disk.
    topology
        gpu, host, rack, row, model, tdp_w, job.
    truth
        The injected events and parameters (also ``manifest.json["synth"]``).
    power
        Power semantics (instant, or a moving average over ``window_s``).
    path
        The dataset folder when written to disk, else None.
    """

    samples: pl.DataFrame | None
    topology: pl.DataFrame
    truth: dict
    power: PowerSemantics
    path: Path | None = None

    @property
    def phase_names(self) -> dict[int, str]:
        """``truth_phase`` code -> phase name."""
        return {int(k): v for k, v in self.truth["phase_codes"].items()}


#: Passed as ``out_dir`` (benchmarks, tests), makes a generator return its :class:`Plan`.
PLAN_ONLY = object()


def finish(plan: Plan, out_dir, *, overwrite: bool = False, batch_samples: int = BATCH_SAMPLES) -> SynthResult:
    """Render the plan in memory (``out_dir`` None) or stream it into a dataset folder."""
    if out_dir is PLAN_ONLY:
        return plan
    truth = json_clean(plan.truth)
    if out_dir is None:
        frames = [batch_frame(plan, b) for b in iter_batches(plan, batch_samples)]
        samples = pl.concat(frames, rechunk=True) if frames else None
        return SynthResult(samples, plan.layout.topology, truth, plan.power, None)
    from tracekit.io.dataset import DatasetWriter

    extra = {"synth": truth}
    rows = 0
    with DatasetWriter(
        out_dir, topology=plan.layout.topology, power=plan.power, manifest_extra=extra, overwrite=overwrite,
        sources=[{"path": None, "format": "synthetic", "generator": truth["generator"]}],
    ) as writer:
        for b in iter_batches(plan, batch_samples):
            writer.write(batch_table(plan, b))
            rows += b.rows
        truth["rows"] = rows
    return SynthResult(None, plan.layout.topology, truth, plan.power, Path(out_dir))


def read_truth(path) -> dict:
    """The generator's ground truth of a synthetic dataset.

    Parameters
    ----------
    path
        A dataset folder written by :func:`tracekit.synth.training` or
        :func:`tracekit.synth.inference`, or its ``manifest.json``.

    Returns
    -------
    dict
        ``manifest.json["synth"]``: generator, seed, params, phase_codes, levels_w and
        the injected events (iterations, checkpoints, stragglers, host offsets, gaps,
        requests).  ``pl.DataFrame(truth["requests"])`` gives the inference requests.
    """
    p = Path(path)
    manifest_path = p / "manifest.json" if p.is_dir() else p
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable manifest ({exc})", path=str(manifest_path)) from None
    if not isinstance(manifest, dict) or "synth" not in manifest:
        raise InputError("manifest has no 'synth' block: not a synthetic dataset", path=str(manifest_path))
    return manifest["synth"]
