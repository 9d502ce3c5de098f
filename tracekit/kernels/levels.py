"""Power levels: a fixed-width power histogram and exact 1-D k-means on it.

Phase detection starts from the power levels a GPU dwells at (compute near TDP
and communication near idle in training; prompt, token and idle in inference).
The levels are found on a histogram, so they cost O(bins) per GPU however long
the trace is, and histograms of chunks or GPUs combine by adding their counts.

Functions
---------
power_histogram        add finite power samples into a carried ``counts`` array
histogram_bin_centers  the power value at the middle of each bin
kmeans_1d              optimal weighted k-means of sorted values (e.g. bin centres)
choose_levels          k-means with k chosen by the relative drop of the SSE
"""

from __future__ import annotations

import math

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
    out_array,
    same_length,
)


class Levels(NamedTuple):
    """Power levels found by :func:`kmeans_1d` or :func:`choose_levels`.

    Attributes
    ----------
    centers_w : ndarray of float64, shape (k,)
        Level centres (weighted means of the clusters), ascending.
    boundaries_w : ndarray of float64, shape (k - 1,)
        Midpoints between adjacent centres: the nearest-centre decision
        boundaries, which the optimal partition respects.
    weights : ndarray of float64, shape (k,)
        Total weight (sample count for a histogram) of each level.
    sse_w2 : float
        Within-level weighted sum of squared deviations of the chosen solution, W^2
        times weight units.
    sse_by_k : ndarray of float64, shape (kmax,)
        Optimal SSE for 1 .. kmax levels (``sse_by_k[k - 1] == sse_w2`` up to
        rounding).
    """

    centers_w: NDArray[np.float64]
    boundaries_w: NDArray[np.float64]
    weights: NDArray[np.float64]
    sse_w2: float
    sse_by_k: NDArray[np.float64]


# --------------------------------------------------------------------------- histogram


#: Samples whose bins :func:`_power_histogram_kernel` computes at once.
_HIST_BLOCK = 128


@kernel
def _power_histogram_kernel(power_w, lo_w, bin_w, exact, counts, sub):
    # Per block of samples, first their bins without a branch (vectorized): b =
    # floor((p - lo) / bin_w) clamped into [0, n_bins - 1] for a finite sample (an
    # overflow too: +-inf clamps), the extra column n_bins for one that is not
    # (NaN, +-inf); then their counts.  Four partial histograms are taken in turn:
    # consecutive samples in one bin would otherwise wait on each other's increment
    # (a store-to-load chain).  A bin width that is a power of two is applied as an
    # exact multiplication by its inverse (``exact``), not a division; two loops, as a
    # select would run both.  ``sub``: (4, n_bins + 1).
    n_bins = counts.shape[0]
    top = n_bins - 1.0
    inv = 1.0 / bin_w
    sub[:, :] = 0
    bins = np.empty(_HIST_BLOCK, dtype=np.int32)
    n = power_w.shape[0]
    for i0 in range(0, n, _HIST_BLOCK):
        m = min(_HIST_BLOCK, n - i0)
        block = power_w[i0: i0 + m]
        if exact:
            for q in range(m):
                p = np.float64(block[q])
                f = np.floor((p - lo_w) * inv)
                c = f if f < top else top  # NaN goes to top here, and to n_bins below
                c = c if c > 0.0 else 0.0
                bins[q] = np.int32(c) if np.abs(p) < np.inf else n_bins
        else:
            for q in range(m):
                p = np.float64(block[q])
                f = np.floor((p - lo_w) / bin_w)
                c = f if f < top else top
                c = c if c > 0.0 else 0.0
                bins[q] = np.int32(c) if np.abs(p) < np.inf else n_bins
        for q in range(m):
            sub[q & 3, bins[q]] += 1
    for k in range(4):
        for j in range(n_bins):
            counts[j] += sub[k, j]
    return counts


def _exact_inverse(bin_w: float) -> bool:
    """Whether ``1 / bin_w`` is exact (and finite): a power of two, not subnormal, so
    that ``p * (1 / bin_w)`` rounds as ``p / bin_w``."""
    return math.frexp(bin_w)[0] == 0.5 and bin_w >= 2.0**-1022


def power_histogram(
    power_w: NDArray[np.floating],
    *,
    bin_w: float,
    n_bins: int | None = None,
    lo_w: float = 0.0,
    counts: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Count power samples into fixed-width bins, adding into ``counts``.

    Parameters
    ----------
    power_w : array of float32 or float64
        Power samples, W.  NaN and infinite values are skipped.
    bin_w : float
        Bin width, W (> 0).  Bin ``b`` holds ``lo_w + b*bin_w <= p < lo_w + (b+1)*bin_w``.
    n_bins : int, optional
        Number of bins; required when ``counts`` is not given.
    lo_w : float
        Lower edge of bin 0, W.
    counts : ndarray of int64, optional
        Counts to add into (modified in place and returned).  Histograms of chunks
        or of GPUs combine by adding, so pass the previous chunk's counts here.

    Returns
    -------
    ndarray of int64, shape (n_bins,)
        The (updated) counts.

    Notes
    -----
    Values below ``lo_w`` are counted in bin 0 and values at or above the top
    edge in the last bin, so ``counts.sum()`` equals the number of finite samples;
    choose the range to cover the GPU's power (e.g. 0 to 1.5 x TDP).
    """
    func = "power_histogram"
    power = float_array(func, "power_w", power_w)
    bin_w = float_param(func, "bin_w", bin_w, minimum=0.0, strict_min=True)
    lo_w = float_param(func, "lo_w", lo_w)
    if counts is None and n_bins is None:
        raise ParameterError(f"{func}: give n_bins (or a counts array to add into)")
    if n_bins is None:
        n_bins = len(counts) if isinstance(counts, np.ndarray) else 0
    n_bins = int_param(func, "n_bins", n_bins, minimum=1)
    if n_bins >= 2**31 - 1:  # the kernel's bins are int32
        raise ParameterError(f"{func}: n_bins must be below 2**31 - 1, got {n_bins}")
    if counts is None:
        counts = np.zeros(n_bins, dtype=np.int64)
    else:
        out_array(func, "counts", counts, (n_bins,), np.int64)
    _power_histogram_kernel(power, lo_w, bin_w, _exact_inverse(bin_w), counts, np.empty((4, n_bins + 1), dtype=np.int64))
    return counts


def histogram_bin_centers(*, bin_w: float, n_bins: int, lo_w: float = 0.0) -> NDArray[np.float64]:
    """Power at the middle of each bin of a :func:`power_histogram`, W."""
    func = "histogram_bin_centers"
    bin_w = float_param(func, "bin_w", bin_w, minimum=0.0, strict_min=True)
    n_bins = int_param(func, "n_bins", n_bins, minimum=1)
    lo_w = float_param(func, "lo_w", lo_w)
    return lo_w + (np.arange(n_bins, dtype=np.float64) + 0.5) * bin_w


# --------------------------------------------------------------------------- k-means


@kernel
def _segment_cost(s0, s1, s2, i, j):
    """Weighted SSE of values[i:j] from prefix sums of w, w*x, w*x^2."""
    w = s0[j] - s0[i]
    if w <= 0.0:
        return 0.0
    m = s1[j] - s1[i]
    c = (s2[j] - s2[i]) - m * m / w
    return c if c > 0.0 else 0.0


@kernel
def _kmeans_1d_kernel(values_w, weights, kmax, sse_by_k, starts):
    # Exact weighted 1-D k-means (Wang & Song 2011, Ckmeans.1d.dp): optimal clusters
    # are contiguous in sorted order, so D[m, j] = min_i D[m-1, i] + cost(i, j).
    # The cost is Monge, so the leftmost argmin is monotone in j and each layer is
    # filled by divide and conquer in O(n log n).
    n = values_w.shape[0]
    total_w = 0.0
    total_wx = 0.0
    for i in range(n):
        total_w += weights[i]
        total_wx += weights[i] * values_w[i]
    mean = total_wx / total_w  # centring keeps the prefix sums well conditioned
    s0 = np.zeros(n + 1)
    s1 = np.zeros(n + 1)
    s2 = np.zeros(n + 1)
    for i in range(n):
        d = values_w[i] - mean
        s0[i + 1] = s0[i] + weights[i]
        s1[i + 1] = s1[i] + weights[i] * d
        s2[i + 1] = s2[i] + weights[i] * d * d
    dp = np.full((kmax + 1, n + 1), np.inf)
    arg = np.zeros((kmax + 1, n + 1), dtype=np.int64)
    for j in range(1, n + 1):
        dp[1, j] = _segment_cost(s0, s1, s2, np.int64(0), j)  # int64, not a literal 0: one compiled version
    stack = np.empty((256, 4), dtype=np.int64)
    for m in range(2, kmax + 1):
        top = 0
        stack[0, 0] = m
        stack[0, 1] = n
        stack[0, 2] = m - 1
        stack[0, 3] = n - 1
        top = 1
        while top > 0:
            top -= 1
            jlo = stack[top, 0]
            jhi = stack[top, 1]
            olo = stack[top, 2]
            ohi = stack[top, 3]
            if jlo > jhi:
                continue
            jm = (jlo + jhi) // 2
            best = np.inf
            best_i = olo
            hi = min(ohi, jm - 1)
            for i in range(olo, hi + 1):
                c = dp[m - 1, i] + _segment_cost(s0, s1, s2, i, jm)
                if c < best:
                    best = c
                    best_i = i
            dp[m, jm] = best
            arg[m, jm] = best_i
            stack[top, 0] = jm + 1
            stack[top, 1] = jhi
            stack[top, 2] = best_i
            stack[top, 3] = ohi
            top += 1
            stack[top, 0] = jlo
            stack[top, 1] = jm - 1
            stack[top, 2] = olo
            stack[top, 3] = best_i
            top += 1
    for m in range(1, kmax + 1):
        sse_by_k[m - 1] = dp[m, n]
        j = n
        for c in range(m - 1, 0, -1):
            i = arg[c + 1, j]
            starts[m - 1, c] = i
            j = i
        starts[m - 1, 0] = 0
    return sse_by_k


def _prepare_values(func: str, values_w: object, weights: object) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values with positive weight (zero-weight entries dropped)."""
    values = float64_array(func, "values_w", values_w)
    w = float64_array(func, "weights", weights)
    same_length(func, values_w=values, weights=w)
    if not (np.isfinite(values).all() and np.isfinite(w).all()):
        raise SchemaError(f"{func}: values_w and weights must be finite (no NaN/inf)")
    if (w < 0).any():
        raise SchemaError(f"{func}: weights must be >= 0, found {w.min()}")
    if values.size > 1 and (np.diff(values) <= 0).any():
        raise SchemaError(f"{func}: values_w must be strictly ascending (e.g. histogram bin centres)")
    keep = w > 0
    return np.ascontiguousarray(values[keep]), np.ascontiguousarray(w[keep])


def _solve(values: np.ndarray, w: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    sse_by_k = np.empty(kmax, dtype=np.float64)
    starts = np.zeros((kmax, kmax), dtype=np.int64)
    _kmeans_1d_kernel(values, w, kmax, sse_by_k, starts)
    return sse_by_k, starts


def _levels_from_starts(
    values: np.ndarray, w: np.ndarray, starts: np.ndarray, sse_by_k: np.ndarray
) -> Levels:
    bounds = np.append(starts, len(values))
    centers = np.empty(len(starts))
    level_w = np.empty(len(starts))
    sse = 0.0
    for j in range(len(starts)):
        x = values[bounds[j] : bounds[j + 1]]
        ww = w[bounds[j] : bounds[j + 1]]
        level_w[j] = ww.sum()
        centers[j] = float(np.dot(ww, x) / level_w[j])
        sse += float(np.dot(ww, (x - centers[j]) ** 2))  # two-pass: exact, no cancellation
    return Levels(
        centers_w=centers,
        boundaries_w=(centers[:-1] + centers[1:]) / 2.0,
        weights=level_w,
        sse_w2=sse,
        sse_by_k=np.maximum(sse_by_k, 0.0),
    )


def kmeans_1d(
    values_w: NDArray[np.floating], weights: NDArray[np.floating], k: int
) -> Levels:
    """Optimal weighted k-means of sorted 1-D values (exact, not Lloyd's heuristic).

    Parameters
    ----------
    values_w : array of float, shape (n,)
        Strictly ascending values, W (histogram bin centres from
        :func:`histogram_bin_centers`).
    weights : array of float or int, shape (n,)
        Non-negative weights (histogram counts).  Zero-weight values are ignored.
    k : int
        Number of levels, 1 <= k <= number of values with positive weight.

    Returns
    -------
    Levels
        Centres ascending, boundaries, per-level weight, SSE, and the optimal SSE
        for every count up to ``k``.

    Notes
    -----
    Dynamic programming over contiguous partitions of the sorted values, as in
    Ckmeans.1d.dp (Wang & Song, The R Journal 3(2), 2011), with each layer filled
    by divide and conquer: O(k n log n).  Among partitions with equal SSE (ties)
    any one may be returned; compare solutions by SSE.
    """
    func = "kmeans_1d"
    values, w = _prepare_values(func, values_w, weights)
    k = int_param(func, "k", k, minimum=1)
    if k > len(values):
        raise ParameterError(
            f"{func}: k={k} levels need at least {k} distinct values with positive weight, "
            f"got {len(values)}"
        )
    sse_by_k, starts = _solve(values, w, k)
    return _levels_from_starts(values, w, starts[k - 1, :k], sse_by_k)


def choose_levels(
    values_w: NDArray[np.floating],
    weights: NDArray[np.floating],
    *,
    kmax: int = 3,
    min_rel_drop: float = 0.8,
) -> Levels:
    """Optimal k-means with the number of levels chosen by the relative SSE drop.

    The relative drop of step ``m`` is ``(SSE(m-1) - SSE(m)) / SSE(m-1)``: the share
    of the remaining within-level sum of squares that an m-th level removes.  The
    chosen k is the largest ``m`` in ``2 .. kmax`` whose drop is at least
    ``min_rel_drop``, or 1 if none is.  (Not "stop at the first small drop": with
    three equally spaced, equally common levels the step 1 -> 2 removes only 75 %
    while 2 -> 3 removes nearly all the rest.)  Steps from an SSE that is already
    zero (to rounding) never count.

    Parameters
    ----------
    values_w, weights : array of float, shape (n,)
        As in :func:`kmeans_1d` (histogram bin centres and counts).
    kmax : int
        Largest number of levels tried (3 covers idle / token / prompt); clipped
        to the number of distinct values with positive weight.
    min_rel_drop : float
        Share of SSE, in (0, 1], a step must remove to count.

    Returns
    -------
    Levels

    Notes
    -----
    Why 0.8: splitting one Gaussian level in two at its mean removes 1 - 2/pi ~ 64 %
    of its SSE, and splitting a uniform (ramp-like) level removes 75 %, so noise
    within the levels stays below the threshold, while a real extra level well
    separated from its neighbours removes far more.  A level holding only a few
    percent of the samples (e.g. rare prompt phases) may fall below it; pass the
    workload's k to :func:`kmeans_1d` in that case.
    """
    func = "choose_levels"
    values, w = _prepare_values(func, values_w, weights)
    kmax = int_param(func, "kmax", kmax, minimum=1)
    min_rel_drop = float_param(
        func, "min_rel_drop", min_rel_drop, minimum=0.0, maximum=1.0, strict_min=True
    )
    if len(values) == 0:
        raise ParameterError(f"{func}: no values with positive weight (no finite power samples)")
    kmax = min(kmax, len(values))
    sse_by_k, starts = _solve(values, w, kmax)
    k = 1
    for m in range(2, kmax + 1):
        prev, nxt = sse_by_k[m - 2], sse_by_k[m - 1]
        if prev > 1e-12 * sse_by_k[0] and (prev - nxt) / prev >= min_rel_drop:
            k = m
    return _levels_from_starts(values, w, starts[k - 1, :k], sse_by_k)


@kernel
def _label_histogram_kernel(power_w, labels, bin_w, exact, counts):
    # A bin width that is a power of two is applied as an exact multiplication by its
    # inverse (``exact``: the same bins as the division, which costs several times
    # more); two loops, as a select would run both.
    n_labels, n_bins = counts.shape
    top = n_bins - 1.0
    inv = 1.0 / bin_w
    if exact:
        for i in range(power_w.shape[0]):
            lab = labels[i]
            p = power_w[i]
            if lab < 0 or lab >= n_labels or not np.isfinite(p):
                continue
            x = p * inv  # clamped before the int conversion (a value past int64 is undefined there)
            x = x if x < top else top
            b = int(x) if x > 0.0 else 0
            counts[lab, b] += 1
    else:
        for i in range(power_w.shape[0]):
            lab = labels[i]
            p = power_w[i]
            if lab < 0 or lab >= n_labels or not np.isfinite(p):
                continue
            x = p / bin_w
            x = x if x < top else top
            b = int(x) if x > 0.0 else 0
            counts[lab, b] += 1


def label_histogram(
    power_w: NDArray[np.floating], labels: NDArray[np.integer], counts: NDArray[np.int64], *, bin_w: float
) -> NDArray[np.int64]:
    """Add each finite sample into row ``labels[i]`` of ``counts`` (bins of ``bin_w``
    from 0 W; out-of-range values go to the edge bins; labels outside the rows,
    e.g. -1 = unlabelled, are skipped).  Returns ``counts`` (modified in place)."""
    func = "label_histogram"
    power = float_array(func, "power_w", power_w)
    labs = np.ascontiguousarray(labels)
    if labs.dtype.kind not in "iu" or labs.shape != power.shape:
        raise SchemaError(f"{func}: labels must be integers shaped like power_w, got {labs.dtype} {labs.shape}")
    bin_w = float_param(func, "bin_w", bin_w, minimum=0.0, strict_min=True)
    if not isinstance(counts, np.ndarray) or counts.dtype != np.int64 or counts.ndim != 2:
        raise SchemaError(f"{func}: counts must be a 2-D int64 array (labels x bins)")
    _label_histogram_kernel(power, labs, bin_w, _exact_inverse(bin_w), counts)
    return counts
