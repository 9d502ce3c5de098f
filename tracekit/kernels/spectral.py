"""Welch's power spectral density of a regular series (Hann window, constant detrend).

:func:`welch_psd` gives what ``scipy.signal.welch(x, fs, nperseg=L,
detrend="constant", scaling="density")`` gives (its defaults: a periodic Hann window,
50 % overlap, one-sided, the mean over segments), without importing
``scipy.signal`` (most of a second of start-up on its own) and without the
temporaries of its segment arrays: one kernel writes each segment detrended and
windowed, NumPy's FFT transforms them, a second kernel sums their power.  The
segment means (``np.mean`` of the same strided segments) and the window are SciPy's
bit for bit; the FFT and the sum over segments are NumPy's and this kernel's, so the
result equals SciPy's up to floating-point rounding (tests:
``tests/test_kernels_spectral.py``).  A flat series, whose PSD is rounding residue
in either, is left to the caller (:func:`tracekit.analysis.spectrum.welch_spectrum`
reports no spectrum for it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tracekit.errors import ParameterError
from tracekit.kernels._jit import kernel
from tracekit.kernels._validate import float64_array, int_param

#: Segments transformed at once (bounds the segment buffer: 64 x L float64).
_SEGMENTS_AT_ONCE = 64


def hann_periodic(n: int) -> NDArray[np.float64]:
    """The periodic Hann window of ``n`` points, bit for bit
    ``scipy.signal.get_window("hann", n)``: the first ``n`` of ``n + 1`` points of
    ``0.5 + 0.5 cos(t)``, ``t`` from -pi to pi, summed in SciPy's order (on a flat
    series the window's last bits decide the rounding residue SciPy reports)."""
    if n <= 1:
        return np.ones(n)
    t = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    w += 0.5 * np.cos(0.0 * t)
    w += 0.5 * np.cos(t)
    return w[:n]


@kernel
def _windowed_segments(x, window, means, first, step, out):
    # out[k] = (x[s:s+L] - means[first + k]) * window, s = (first + k) * step
    seg_len = window.shape[0]
    for k in range(out.shape[0]):
        seg = x[(first + k) * step: (first + k) * step + seg_len]
        m = means[first + k]
        row = out[k]
        for i in range(seg_len):
            row[i] = (seg[i] - m) * window[i]


@kernel
def _add_power(spec, out):
    # out[j] += sum over segments of |spec[k, j]|^2
    for k in range(spec.shape[0]):
        row = spec[k]
        for j in range(row.shape[0]):
            v = row[j]
            out[j] += v.real * v.real + v.imag * v.imag


def welch_psd(x: NDArray[np.floating], fs: float, nperseg: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(freq_hz, psd)``: Welch's one-sided power spectral density of ``x``.

    Parameters
    ----------
    x : array of float, shape (n,)
        A regular, finite series (n >= 1).
    fs : float
        Sampling rate, Hz.
    nperseg : int
        Segment length, 1 <= nperseg <= n; segments overlap by ``nperseg // 2``, and
        the samples after the last whole segment are not used (as SciPy).

    Returns
    -------
    freq_hz : ndarray of float64, shape (nperseg // 2 + 1,)
    psd : ndarray of float64, same shape
        Units of ``x`` squared per Hz (density scaling, each segment detrended by its mean).
    """
    func = "welch_psd"
    xs = float64_array(func, "x", x)
    seg_len = int_param(func, "nperseg", nperseg, minimum=1)
    if seg_len > len(xs):
        raise ParameterError(f"{func}: nperseg ({seg_len}) must not exceed the series length ({len(xs)})")
    if not fs > 0:
        raise ParameterError(f"{func}: fs must be positive, got {fs}")
    step = seg_len - seg_len // 2
    n_seg = (len(xs) - seg_len // 2) // step
    window = hann_periodic(seg_len)
    # NumPy's pairwise sums, as SciPy's detrend (a running sum rounds otherwise)
    means = np.lib.stride_tricks.sliding_window_view(xs, seg_len)[::step][:n_seg].mean(axis=1)
    psd = np.zeros(seg_len // 2 + 1)
    buf = np.empty((min(n_seg, _SEGMENTS_AT_ONCE), seg_len))
    for first in range(0, n_seg, len(buf)):
        part = buf[: min(len(buf), n_seg - first)]
        _windowed_segments(xs, window, means, first, step, part)
        _add_power(np.fft.rfft(part, axis=1), psd)
    psd *= 1.0 / (fs * float((window * window).sum()) * n_seg)
    if seg_len % 2:
        psd[1:] *= 2.0
    else:
        psd[1:-1] *= 2.0
    return np.fft.rfftfreq(seg_len, 1.0 / fs), psd
