"""Welch's PSD kernel vs scipy.signal.welch (the outside oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import get_window, welch

from tracekit.errors import ParameterError
from tracekit.kernels.spectral import _SEGMENTS_AT_ONCE, hann_periodic, welch_psd


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), seg_share=st.floats(0.0, 1.0), fs=st.sampled_from([1.0, 10.0, 1000.0]),
       kind=st.sampled_from(["noise", "square", "constant", "ramp"]), seed=st.integers(0, 2**32 - 1))
def test_welch_psd_equals_scipy(n, seg_share, fs, kind, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    x = {"noise": rng.normal(500.0, 40.0, n),
         "square": 300.0 + 400.0 * (np.sin(2 * np.pi * 0.9 * t) > 0) + rng.normal(0.0, 5.0, n),
         "constant": np.full(n, 700.0),
         "ramp": np.linspace(100.0, 700.0, n)}[kind]
    nperseg = max(1, int(round(seg_share * n)))
    f_ref, p_ref = welch(x, fs=fs, nperseg=nperseg, detrend="constant", scaling="density")
    f, p = welch_psd(x, fs, nperseg)
    np.testing.assert_array_equal(f, f_ref)
    scale = max(float(np.abs(p_ref).max()), 1e-300)
    np.testing.assert_allclose(p, p_ref, rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize("level", [0.1, 350.7, 1234.56789, 8.0 / 3.0, 1e6 / 7.0, 700.0])
@pytest.mark.parametrize("n,nperseg", [(8, 8), (250, 200), (600, 200), (4001, 1000)])
def test_a_flat_series_has_no_spectrum(level, n, nperseg):
    """A constant that is not exact in binary leaves a rounding residue after each
    segment's mean is taken off (SciPy's too, another one): its PSD is noise at
    1e-16 of the level, and the spectrum of a flat series reports no dominant
    frequency and no shares (a band rule then finds nothing to flag)."""
    from tracekit.analysis.rules import Rule
    from tracekit.analysis.spectrum import welch_spectrum
    from tracekit.analysis.swings import check_group_rule

    x = np.full(n, level)
    _, p_ref = welch(x, fs=10.0, nperseg=nperseg, detrend="constant", scaling="density")
    _, p = welch_psd(x, 10.0, nperseg)
    assert p.max() <= 1e-20 * level**2 and p_ref.max() <= 1e-20 * level**2
    spec = welch_spectrum(x, 0.1, segment_s=nperseg / 10.0)
    assert (spec.dominant_hz, spec.band_share, spec.largest_component_share) == (None, 0.0, None)
    assert not spec.psd_w2_per_hz.any()

    class _Grid:
        step_s, t0_ns, step_ns = 0.1, 0, 100_000_000

    rule = Rule(name="band", kind="band", max_component_share=0.1)
    assert check_group_rule(rule, "cluster", x, _Grid()) == []


def test_many_segments_are_summed_in_parts():
    """More segments than one buffer holds (the bench's 480 k cells at 20 s segments are 47)."""
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, 200 * 64 + 32)
    n_seg = (len(x) - 32) // 32
    assert n_seg > 2 * _SEGMENTS_AT_ONCE
    f_ref, p_ref = welch(x, fs=2.0, nperseg=64, detrend="constant", scaling="density")
    np.testing.assert_allclose(welch_psd(x, 2.0, 64)[1], p_ref, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1001, 20000])
def test_hann_is_scipys_periodic_window(n):
    np.testing.assert_array_equal(hann_periodic(n), get_window("hann", n))


def test_bad_parameters_are_errors():
    with pytest.raises(ParameterError, match="nperseg .* must not exceed"):
        welch_psd(np.ones(10), 1.0, 11)
    with pytest.raises(ParameterError, match="fs must be positive"):
        welch_psd(np.ones(10), 0.0, 4)
