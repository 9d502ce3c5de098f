"""Swing spectrum of an aggregate power series (Welch's method).

Grid operators look at the 0.1-20 Hz band: one proposed rule is that no single
spectral component holds more than 20 % of the energy in that band (DESIGN.md;
training swings sit mostly in 0.2-3 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracekit.errors import ParameterError

GRID_BAND_HZ = (0.1, 20.0)
SEGMENT_S = 20.0


@dataclass
class Spectrum:
    freq_hz: np.ndarray
    psd_w2_per_hz: np.ndarray
    dominant_hz: float | None
    band_share: float | None
    largest_component_share: float | None


def fill_missing(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN cells (edges held); all-NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x)
    if not bad.any() or bad.all():
        return x
    idx = np.arange(len(x))
    out = x.copy()
    out[bad] = np.interp(idx[bad], idx[~bad], x[~bad])
    return out


def welch_spectrum(
    power_w: np.ndarray, step_s: float, *, segment_s: float = SEGMENT_S, band_hz: tuple[float, float] = GRID_BAND_HZ
) -> Spectrum:
    """Welch power spectral density of a regular series, and the band metrics.

    Parameters
    ----------
    power_w
        Regular series (NaN = missing, interpolated over).
    step_s
        Grid step in seconds.
    segment_s
        Welch segment length (Hann window, 50 % overlap); shorter series use one
        segment of their whole length.
    band_hz
        The band for ``band_share`` (share of the non-DC energy inside the band) and
        ``largest_component_share`` (largest single bin's share of the in-band energy).

    Notes
    -----
    :func:`tracekit.kernels.spectral.welch_psd` (what :func:`scipy.signal.welch` gives
    with constant detrending); the DC bin is excluded from every share and from the
    dominant frequency.
    """
    from tracekit.kernels.spectral import welch_psd

    if step_s <= 0:
        raise ParameterError(f"step_s must be positive, got {step_s}")
    x = fill_missing(power_w)
    n = len(x)
    empty = Spectrum(np.zeros(0), np.zeros(0), None, None, None)
    if n < 8 or not np.isfinite(x).all():
        return empty
    fs = 1.0 / step_s
    nperseg = int(min(n, max(8, round(segment_s * fs))))
    if x.min() == x.max():
        # a flat series has no swing: what its segments keep after their mean is taken
        # off is rounding residue (none when the level is exact in binary), whose
        # "spectrum" would name a dominant frequency and shares of noise
        freq = np.fft.rfftfreq(nperseg, step_s)
        return Spectrum(freq, np.zeros(len(freq)), None, 0.0, None)
    freq, psd = welch_psd(x, fs, nperseg)
    nondc = freq > 0
    total = float(psd[nondc].sum())
    if total <= 0:
        return Spectrum(freq, psd, None, 0.0, None)
    dominant = float(freq[nondc][np.argmax(psd[nondc])])
    in_band = (freq >= band_hz[0]) & (freq <= band_hz[1])
    band = float(psd[in_band].sum())
    largest = float(psd[in_band].max() / band) if band > 0 else None
    return Spectrum(freq, psd, dominant, band / total, largest)
