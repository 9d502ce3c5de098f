"""Phase labels by hysteresis with a minimum dwell, and run-length segments.

Rules (one GPU, samples in time order; ``K`` ascending level centres
``c_0 < ... < c_{K-1}``, hysteresis fraction ``h``):

* Between adjacent levels ``j`` and ``j+1`` lies a band around their midpoint
  ``m_j = (c_j + c_{j+1})/2`` of half-width ``h*(c_{j+1} - c_j)/2``:
  ``lower_j <= p <= upper_j``.  A sample *is in the region of level l* when it is
  above ``upper_{l-1}`` (if ``l > 0``) and below ``lower_l`` (if ``l < K-1``);
  a sample inside a band is in no region.
* A *run* for level ``l`` (not the current label) starts at a sample in ``l``'s
  region and continues while the following non-NaN samples stay in that region;
  any non-NaN sample outside it (in a band, another region, or the current
  level's region) ends the run.
* Dwell is the time the run has held its level under zero-order hold: each
  non-NaN sample of the run counts from its own time to the next sample's time.
  The run is *confirmed* at the first of its samples where dwell >= ``min_dwell_ns``
  (with ``min_dwell_ns = 0`` the first sample confirms: plain hysteresis).  The
  run's samples, from its start, take the new label retroactively.
* NaN samples keep the current label (they are relabelled only when they lie
  inside a run that is later confirmed), never confirm a run and add no dwell
  (the interval a NaN sample holds is not counted).
* Before the first confirmed run there is no current label; all samples before
  it take the first confirmed label (short blips at the start are absorbed, as
  they are everywhere else).  If no run is ever confirmed the labels are -1.

Labelling is streaming: :class:`HysteresisLabeler` carries a small state array
and the not-yet-final tail of labels between chunks, so any chunking gives the
labels of one call to :func:`label_phases`.

Segments (:func:`phase_segments`, :class:`SegmentBuilder`) are maximal runs of
one label with energy by zero-order hold: sample ``i`` holds its power until
sample ``i+1``; the last sample holds for ``last_hold_ns``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels._jit import kernel
from tracekit.kernels._validate import (
    float64_array,
    float_array,
    float_param,
    int_param,
    same_length,
    ts_array,
)

#: Label of samples before any level is confirmed.
UNLABELLED = -1

# Layout of the hysteresis state array (int64).
_H_CUR, _H_CAND, _H_CAND_START, _H_DWELL, _H_PREV_TS, _H_PREV_VALID, _H_N_SEEN = range(7)
_H_SIZE = 7

# Layouts of the segment state arrays.
_S_HAS_PENDING, _S_PENDING_TS, _S_PENDING_LABEL, _S_OPEN_LABEL, _S_OPEN_START, _S_COVERED, _S_N_SEEN = range(7)
_S_SIZE_I = 7
_S_PENDING_POWER, _S_ENERGY, _S_PEAK = range(3)
_S_SIZE_F = 3


# --------------------------------------------------------------------------- hysteresis

#: Samples the hysteresis labeling tests at once for "all keep the current label".
_STAY_BLOCK = 32


def hysteresis_thresholds(
    levels_w: NDArray[np.floating], hysteresis: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper band edges between adjacent levels.

    Parameters
    ----------
    levels_w : array of float, shape (K,)
        Level centres, strictly ascending, W (``Levels.centers_w``).
    hysteresis : float
        Band width as a fraction of the gap between adjacent levels, in [0, 1).

    Returns
    -------
    lower_w, upper_w : ndarray of float64, shape (K - 1,)
        ``midpoint -+ hysteresis * gap / 2``.
    """
    func = "hysteresis_thresholds"
    levels = float64_array(func, "levels_w", levels_w)
    if levels.size == 0 or not np.isfinite(levels).all():
        raise ParameterError(f"{func}: levels_w must hold at least one finite level")
    if levels.size > 127:
        raise ParameterError(f"{func}: at most 127 levels (int8 labels), got {levels.size}")
    if (np.diff(levels) <= 0).any():
        raise ParameterError(f"{func}: levels_w must be strictly ascending, got {levels.tolist()}")
    h = float_param(func, "hysteresis", hysteresis, minimum=0.0, maximum=1.0, strict_max=True)
    mid = (levels[:-1] + levels[1:]) / 2.0
    half = h * np.diff(levels) / 2.0
    return mid - half, mid + half


@kernel(inline="always")
def _stay_range(cur, lower_w, upper_w):
    """(lo, hi): the power a sample may have and keep label ``cur`` when no change is
    pending (empty while unlabelled)."""
    if cur < 0:
        return np.inf, -np.inf
    lo = lower_w[cur - 1] if cur > 0 else -np.inf
    hi = upper_w[cur] if cur < lower_w.shape[0] else np.inf
    return lo, hi


@kernel
def _hysteresis_kernel(ts_ns, power_w, lower_w, upper_w, min_dwell_ns, state, labels, offset):
    # labels[offset:] receive this chunk; labels[:offset] are the previous chunks'
    # not-yet-final labels, which a confirmed run may still overwrite.
    n_bounds = lower_w.shape[0]
    cur = state[_H_CUR]
    cand = state[_H_CAND]
    cand_start = state[_H_CAND_START]
    dwell = state[_H_DWELL]
    prev_ts = state[_H_PREV_TS]
    prev_valid = state[_H_PREV_VALID]
    n_seen = state[_H_N_SEEN]
    base = n_seen - offset  # stream index of labels[0]
    n = ts_ns.shape[0]
    # Without a candidate, a sample from the lower edge of the band below level cur to
    # the upper edge of the band above it changes nothing: it keeps label cur.
    stay_lo, stay_hi = _stay_range(cur, lower_w, upper_w)
    i0 = 0
    while i0 < n:
        # A block of samples that all stay (the common case: a phase lasts hundreds of
        # samples) is labelled at once.  The test is a branch-free count over a fixed
        # number of samples, which vectorizes (a variable trip count did not); the
        # per-sample test below branches on every sample.
        if cand < 0 and i0 + _STAY_BLOCK <= n:
            block = power_w[i0: i0 + _STAY_BLOCK]  # views indexed from 0: LLVM then sees
            stays = 0                               # no negative index, and no gathers
            for q in range(_STAY_BLOCK):  # NaN keeps the label too while no change is pending
                v = block[q]
                stays += ((v >= stay_lo) & (v <= stay_hi)) | (v != v)
            if stays == _STAY_BLOCK:
                labels[offset + i0: offset + i0 + _STAY_BLOCK] = cur
                i0 += _STAY_BLOCK
                continue
        i1 = min(i0 + _STAY_BLOCK, n)
        pb = power_w[i0:i1]
        lb = labels[offset + i0: offset + i1]
        for i in range(i1 - i0):  # one sample at a time
            j = offset + i0 + i
            p = pb[i]
            if cand < 0 and p >= stay_lo and p <= stay_hi:  # the common case (NaN fails it)
                lb[i] = cur
                continue
            t = ts_ns[i0 + i]
            if np.isnan(p):
                lb[i] = cur
                if cand >= 0 and prev_valid == 1:
                    dwell += t - prev_ts  # the previous run sample holds until now
                    prev_valid = 0
                continue
            z = 0
            while z < n_bounds and p > upper_w[z]:
                z += 1
            if z < n_bounds and p >= lower_w[z]:
                z = -1  # inside the hysteresis band around boundary z
            if cand >= 0 and z == cand:
                if prev_valid == 1:
                    dwell += t - prev_ts
                prev_ts = t
                prev_valid = 1
            else:
                cand = -1
                if z >= 0 and z != cur:
                    cand = z
                    cand_start = base + j
                    dwell = 0
                    prev_ts = t
                    prev_valid = 1
            if cand >= 0 and dwell >= min_dwell_ns:
                start = 0 if cur < 0 else cand_start - base
                for q in range(start, j + 1):
                    labels[q] = cand
                cur = cand
                cand = -1
                stay_lo, stay_hi = _stay_range(cur, lower_w, upper_w)
            else:
                labels[j] = cur
        i0 = i1
    state[_H_CUR] = cur
    state[_H_CAND] = cand
    state[_H_CAND_START] = cand_start
    state[_H_DWELL] = dwell
    state[_H_PREV_TS] = prev_ts
    state[_H_PREV_VALID] = prev_valid
    state[_H_N_SEEN] = n_seen + n
    if cur < 0:
        return 0
    if cand >= 0:
        return cand_start - base
    return offset + n


def _new_hysteresis_state() -> np.ndarray:
    state = np.zeros(_H_SIZE, dtype=np.int64)
    state[_H_CUR] = UNLABELLED
    state[_H_CAND] = -1
    return state


def _dwell_param(func: str, min_dwell_ns: object) -> int:
    return int_param(func, "min_dwell_ns", min_dwell_ns, minimum=0)


def label_phases(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    levels_w: NDArray[np.floating],
    *,
    hysteresis: float = 0.2,
    min_dwell_ns: int = 0,
) -> NDArray[np.int8]:
    """Label each sample with a power level by hysteresis and minimum dwell.

    Parameters
    ----------
    ts_ns : array of int64 (ns) or datetime64, shape (n,)
        Sample times, non-decreasing.
    power_w : array of float32 or float64, shape (n,)
        Power, W; NaN = missing.
    levels_w : array of float, shape (K,)
        Ascending level centres, W (from :func:`tracekit.kernels.levels.kmeans_1d`).
    hysteresis : float
        Band width around each midpoint as a fraction of the level gap, in [0, 1).
    min_dwell_ns : int
        Time a run must hold a new level before the label changes, ns (>= 0).

    Returns
    -------
    ndarray of int8, shape (n,)
        Level index per sample (0 = lowest level), -1 where no level was ever
        confirmed.  The rules are in the module docstring.
    """
    func = "label_phases"
    ts = ts_array(func, "ts_ns", ts_ns)
    power = float_array(func, "power_w", power_w)
    n = same_length(func, ts_ns=ts, power_w=power)
    lower, upper = hysteresis_thresholds(levels_w, hysteresis)
    dwell = _dwell_param(func, min_dwell_ns)
    labels = np.empty(n, dtype=np.int8)
    _hysteresis_kernel(ts, power, lower, upper, dwell, _new_hysteresis_state(), labels, 0)
    return labels


class HysteresisLabeler:
    """Streaming :func:`label_phases`: feed chunks of one GPU in time order.

    ``push`` returns the labels that became final (in stream order, possibly
    fewer or more than the chunk holds); ``finish`` returns the rest.  The
    concatenation of all returned arrays equals ``label_phases`` on the whole
    series, whatever the chunking.

    Parameters
    ----------
    levels_w, hysteresis, min_dwell_ns
        As in :func:`label_phases`.
    """

    def __init__(
        self, levels_w: NDArray[np.floating], *, hysteresis: float = 0.2, min_dwell_ns: int = 0
    ):
        self.lower_w, self.upper_w = hysteresis_thresholds(levels_w, hysteresis)
        self.min_dwell_ns = _dwell_param("HysteresisLabeler", min_dwell_ns)
        self.state = _new_hysteresis_state()
        self._tail = np.empty(0, dtype=np.int8)  # labels not final yet
        self._last_ts: int | None = None
        self._finished = False

    @property
    def n_seen(self) -> int:
        """Samples pushed so far."""
        return int(self.state[_H_N_SEEN])

    @property
    def n_pending(self) -> int:
        """Samples whose label may still change."""
        return len(self._tail)

    def push(self, ts_ns: NDArray[np.int64], power_w: NDArray[np.floating],
             check_sorted: bool = True) -> NDArray[np.int8]:
        """Label the next chunk; return the labels that are now final (``check_sorted``
        False: the times are known to be sorted, e.g. a TraceSet's)."""
        func = "HysteresisLabeler.push"
        if self._finished:
            raise ParameterError(f"{func}: the labeler is finished; create a new one")
        ts = ts_array(func, "ts_ns", ts_ns, check_sorted=check_sorted)
        power = float_array(func, "power_w", power_w)
        n = same_length(func, ts_ns=ts, power_w=power)
        if n and self._last_ts is not None and ts[0] < self._last_ts:
            raise SchemaError(
                f"{func}: chunk starts at {ts[0]} ns, before the previous chunk's last sample "
                f"({self._last_ts} ns); push chunks in time order"
            )
        if n:
            self._last_ts = int(ts[-1])
        offset = len(self._tail)
        buf = np.empty(offset + n, dtype=np.int8)
        buf[:offset] = self._tail
        n_final = _hysteresis_kernel(
            ts, power, self.lower_w, self.upper_w, self.min_dwell_ns, self.state, buf, offset
        )
        self._tail = buf[n_final:].copy()
        return buf[:n_final]

    def finish(self) -> NDArray[np.int8]:
        """End of stream: the remaining labels (pending runs were not confirmed)."""
        self._finished = True
        tail, self._tail = self._tail, np.empty(0, dtype=np.int8)
        return tail


# --------------------------------------------------------------------------- segments


class Segments(NamedTuple):
    """Maximal runs of one label.

    Attributes
    ----------
    start_idx, end_idx : ndarray of int64
        Sample index range ``[start_idx, end_idx)`` of each segment (stream
        indices: counted from the first sample ever pushed).
    label : ndarray of int8
        The segment's label.
    mean_w : ndarray of float64
        Time-weighted mean power, ``energy_j / covered_s`` (NaN if no valid sample).
    peak_w : ndarray of float64
        Largest sample (NaN if none is valid).
    energy_j : ndarray of float64
        Energy of the zero-order-hold signal, J (NaN samples contribute nothing).
    covered_s : ndarray of float64
        Time held by the segment's non-NaN samples, s.
    """

    start_idx: NDArray[np.int64]
    end_idx: NDArray[np.int64]
    label: NDArray[np.int8]
    mean_w: NDArray[np.float64]
    peak_w: NDArray[np.float64]
    energy_j: NDArray[np.float64]
    covered_s: NDArray[np.float64]


@kernel(inline="always")
def _write_segment(seg_i, seg_f, n_out, start, end, label, covered, energy, peak):
    """A finished segment as row ``n_out``; returns the next row."""
    seg_i[n_out, 0] = start
    seg_i[n_out, 1] = end
    seg_i[n_out, 2] = label
    seg_i[n_out, 3] = covered
    seg_f[n_out, 0] = energy
    seg_f[n_out, 1] = peak
    return n_out + 1


@kernel
def _segment_sample(seg_i, seg_f, n_out, idx, lab, p, dt, open_start, open_label, covered, energy, peak):
    """Sample ``idx`` (label ``lab``, power ``p`` held ``dt`` ns) added to the open
    segment, which it closes first (written as row ``n_out``) when its label differs.
    Returns the new (n_out, open_start, open_label, covered, energy, peak)."""
    if lab != open_label or open_start < 0:
        if open_start >= 0:
            n_out = _write_segment(seg_i, seg_f, n_out, open_start, idx, open_label, covered, energy, peak)
        open_start = idx
        open_label = lab
        covered = 0
        energy = 0.0
        peak = np.nan
    if p == p:  # not NaN
        energy += p * (dt * 1e-9)
        covered += dt
        if not p <= peak:  # p above the peak, or the first finite p (peak NaN)
            peak = p
    return n_out, open_start, open_label, covered, energy, peak


@kernel
def _segments_kernel(ts_ns, power_w, labels, last_hold_ns, final, state_i, state_f, seg_i, seg_f):
    # Virtual sequence: the carried pending sample (if any), then this chunk.  Every
    # sample but the last of the sequence holds until the next one; the last holds
    # ``last_hold_ns`` when ``final``, else it becomes the new pending sample.  The
    # chunk's samples followed by one of the chunk take a plain loop, which adds a
    # sample inline while the label holds (a call returning the state tuple per
    # sample was 10x slower); the rest go through _segment_sample.
    has_pending = state_i[_S_HAS_PENDING]
    open_label = state_i[_S_OPEN_LABEL]
    open_start = state_i[_S_OPEN_START]
    covered = state_i[_S_COVERED]
    n_seen = state_i[_S_N_SEEN]
    energy = state_f[_S_ENERGY]
    peak = state_f[_S_PEAK]
    n = ts_ns.shape[0]
    m = has_pending + n
    first_abs = n_seen - has_pending  # stream index of virtual sample 0
    # the helper's arguments keep one type at every call (int64 counts, float64 power:
    # a literal 0 or a float32 sample compiles another version of it)
    n_out = np.int64(0)
    stop = m if final else m - 1
    if has_pending and stop > 0:  # the carried sample holds until the chunk's first
        t = state_i[_S_PENDING_TS]
        dt = ts_ns[0] - t if n > 0 else last_hold_ns
        n_out, open_start, open_label, covered, energy, peak = _segment_sample(
            seg_i, seg_f, n_out, first_abs, state_i[_S_PENDING_LABEL], state_f[_S_PENDING_POWER], dt,
            open_start, open_label, covered, energy, peak)
    base = first_abs + has_pending  # stream index of ts_ns[0]
    for i in range(min(stop, m - 1) - has_pending):  # the chunk's samples followed by one of the chunk
        lab = np.int64(labels[i])
        if lab != open_label or open_start < 0:
            n_out, open_start, open_label, covered, energy, peak = _segment_sample(
                seg_i, seg_f, n_out, base + i, lab, np.float64(power_w[i]), ts_ns[i + 1] - ts_ns[i],
                open_start, open_label, covered, energy, peak)
            continue
        p = np.float64(power_w[i])
        if p == p:  # as in _segment_sample
            dt = ts_ns[i + 1] - ts_ns[i]
            energy += p * (dt * 1e-9)
            covered += dt
            if not p <= peak:
                peak = p
    if final and n > 0:  # the last sample holds last_hold_ns
        n_out, open_start, open_label, covered, energy, peak = _segment_sample(
            seg_i, seg_f, n_out, base + n - 1, np.int64(labels[n - 1]), np.float64(power_w[n - 1]), last_hold_ns,
            open_start, open_label, covered, energy, peak)
    if final:
        if open_start >= 0:
            n_out = _write_segment(seg_i, seg_f, n_out, open_start, first_abs + m, open_label, covered, energy, peak)
            open_start = -1
        has_pending = 0
    elif n > 0:  # the chunk's last sample waits for the next chunk's first time
        state_i[_S_PENDING_TS] = ts_ns[n - 1]
        state_f[_S_PENDING_POWER] = power_w[n - 1]
        state_i[_S_PENDING_LABEL] = labels[n - 1]
        has_pending = 1
    state_i[_S_HAS_PENDING] = has_pending
    state_i[_S_OPEN_LABEL] = open_label
    state_i[_S_OPEN_START] = open_start
    state_i[_S_COVERED] = covered
    state_i[_S_N_SEEN] = n_seen + n
    state_f[_S_ENERGY] = energy
    state_f[_S_PEAK] = peak
    return n_out


def segment_mean_w(energy_j: np.ndarray, covered_s: np.ndarray) -> np.ndarray:
    """Time-weighted mean power of segments, ``energy_j / covered_s`` (NaN where no
    valid sample covers the segment)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(covered_s > 0, energy_j / np.where(covered_s > 0, covered_s, 1.0), np.nan)


def _segments_result(seg_i: np.ndarray, seg_f: np.ndarray, n_out: int) -> Segments:
    covered_s = seg_i[:n_out, 3] * 1e-9
    energy = seg_f[:n_out, 0].copy()
    return Segments(
        start_idx=seg_i[:n_out, 0].copy(),
        end_idx=seg_i[:n_out, 1].copy(),
        label=seg_i[:n_out, 2].astype(np.int8),
        mean_w=segment_mean_w(energy, covered_s),
        peak_w=seg_f[:n_out, 1].copy(),
        energy_j=energy,
        covered_s=covered_s,
    )


def _label_array(func: str, labels: object) -> np.ndarray:
    arr = np.asarray(labels.to_numpy() if hasattr(labels, "to_numpy") else labels)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise SchemaError(f"{func}: labels must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int8)


class SegmentBuilder:
    """Streaming :func:`phase_segments`: feed chunks of one GPU in time order.

    The last sample of each chunk is carried (its hold ends at the next chunk's
    first sample) together with the open segment, so the segments returned by
    all ``push`` calls and ``finish`` equal ``phase_segments`` on the whole series.

    Parameters
    ----------
    last_hold_ns : int
        How long the final sample of the stream holds its power, ns (>= 0),
        typically the sampling period.
    """

    def __init__(self, *, last_hold_ns: int):
        self.last_hold_ns = int_param("SegmentBuilder", "last_hold_ns", last_hold_ns, minimum=0)
        self.state_i = np.zeros(_S_SIZE_I, dtype=np.int64)
        self.state_i[_S_OPEN_START] = -1
        self.state_f = np.zeros(_S_SIZE_F, dtype=np.float64)
        self.state_f[_S_PEAK] = np.nan
        self._last_ts: int | None = None
        self._finished = False
        self._power_dtype = np.dtype(np.float32)  # the pushes' (the empty last chunk's: one compiled kernel)

    def _run(self, func: str, ts_ns, power_w, labels, final: bool, check_sorted: bool = True) -> Segments:
        if self._finished:
            raise ParameterError(f"{func}: the builder is finished; create a new one")
        ts = ts_array(func, "ts_ns", ts_ns, check_sorted=check_sorted)
        power = float_array(func, "power_w", power_w)
        lab = _label_array(func, labels)
        n = same_length(func, ts_ns=ts, power_w=power, labels=lab)
        if n and self._last_ts is not None and ts[0] < self._last_ts:
            raise SchemaError(
                f"{func}: chunk starts at {ts[0]} ns, before the previous chunk's last sample "
                f"({self._last_ts} ns); push chunks in time order"
            )
        if n:
            self._last_ts = int(ts[-1])
            self._power_dtype = power.dtype
        cap = n + 2
        seg_i = np.empty((cap, 4), dtype=np.int64)
        seg_f = np.empty((cap, 2), dtype=np.float64)
        n_out = _segments_kernel(
            ts, power, lab, self.last_hold_ns, final, self.state_i, self.state_f, seg_i, seg_f
        )
        self._finished = final
        return _segments_result(seg_i, seg_f, n_out)

    @property
    def open_start_idx(self) -> int:
        """Stream index where the open segment starts (-1: none open)."""
        return int(self.state_i[_S_OPEN_START])

    @property
    def n_seen(self) -> int:
        """Samples pushed so far."""
        return int(self.state_i[_S_N_SEEN])

    def push(self, ts_ns, power_w, labels, *, check_sorted: bool = True) -> Segments:
        """Add a chunk (times, power, labels); return the segments that closed.

        ``check_sorted=False`` skips the scan for decreasing times when the caller
        has made it already (the same times went through :class:`HysteresisLabeler`).
        """
        return self._run("SegmentBuilder.push", ts_ns, power_w, labels, False, check_sorted)

    def finish(self) -> Segments:
        """End of stream: close the open segment."""
        empty = np.empty(0, dtype=np.int64)
        return self._run("SegmentBuilder.finish", empty, np.empty(0, dtype=self._power_dtype), empty, True)


def phase_segments(
    ts_ns: NDArray[np.int64],
    power_w: NDArray[np.floating],
    labels: NDArray[np.integer],
    *,
    last_hold_ns: int,
) -> Segments:
    """Run-length segments of a label series with ZOH energy, mean and peak.

    Parameters
    ----------
    ts_ns : array of int64 (ns) or datetime64, shape (n,)
        Sample times, non-decreasing.
    power_w : array of float32 or float64, shape (n,)
        Power, W; NaN = missing.
    labels : array of int, shape (n,)
        Label per sample (from :func:`label_phases`).
    last_hold_ns : int
        How long the last sample holds its power, ns.

    Returns
    -------
    Segments
        One row per maximal run of equal labels.  Sample ``i`` holds until
        ``ts[i+1]``; energy sums ``power * hold`` over non-NaN samples, and
        ``mean_w = energy_j / covered_s`` is time-weighted over them.
    """
    builder = SegmentBuilder(last_hold_ns=last_hold_ns)
    return builder._run("phase_segments", ts_ns, power_w, labels, True)
