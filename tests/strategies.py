"""Hypothesis strategies shared by the kernel tests: small traces, series, chunkings."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

NAN = float("nan")

# Power values around three levels (100 / 400 / 700 W) plus arbitrary values and NaN,
# so runs, bands and blips all occur in short traces.
_level_power = st.one_of(
    st.sampled_from([100.0, 110.0, 400.0, 390.0, 700.0, 650.0, 250.0, 550.0]),
    st.floats(0.0, 800.0, allow_nan=False, width=32),
    st.just(NAN),
)


@st.composite
def timestamps(draw, n: int) -> np.ndarray:
    """``n`` non-decreasing int64 ns times with steps 0..300 (repeats and gaps)."""
    t0 = draw(st.integers(-1_000, 1_000))
    steps = draw(
        st.lists(
            st.one_of(st.integers(0, 30), st.sampled_from([10, 10, 10, 100, 300])),
            min_size=n,
            max_size=n,
        )
    )
    return t0 + np.cumsum(np.asarray(steps, dtype=np.int64)) if n else np.empty(0, np.int64)


@st.composite
def power_traces(draw, max_n: int = 40, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns int64, power_w float32|float64) with NaN gaps."""
    n = draw(st.integers(0, max_n))
    ts = draw(timestamps(n))
    power = draw(st.lists(_level_power, min_size=n, max_size=n))
    dt = dtype or draw(st.sampled_from([np.float32, np.float64]))
    return ts, np.asarray(power, dtype=dt)


@st.composite
def split_points(draw, n: int, max_splits: int = 5) -> list[int]:
    """Sorted chunk boundaries in [0, n] (repeats give empty chunks)."""
    cuts = draw(st.lists(st.integers(0, n), max_size=max_splits))
    return sorted(cuts)


def chunks(n: int, cuts: list[int]) -> list[slice]:
    """Slices covering range(n) split at ``cuts``."""
    bounds = [0, *cuts, n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@st.composite
def histograms(draw, max_bins: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres ascending, counts) with some empty bins."""
    n = draw(st.integers(1, max_bins))
    counts = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    width = draw(st.sampled_from([1.0, 5.0, 12.5]))
    lo = draw(st.sampled_from([0.0, 50.0]))
    centers = lo + (np.arange(n) + 0.5) * width
    return centers, np.asarray(counts, dtype=np.int64)


@st.composite
def regular_series(draw, max_n: int = 40) -> np.ndarray:
    """A regular series (cluster power per cell) with NaN gaps; float32 or float64."""
    n = draw(st.integers(0, max_n))
    vals = draw(
        st.lists(
            st.one_of(
                st.floats(-1e3, 1e4, allow_nan=False, width=32),
                st.sampled_from([0.0, 500.0, 500.0, 1000.0]),
                st.just(NAN),
            ),
            min_size=n,
            max_size=n,
        )
    )
    return np.asarray(vals, dtype=draw(st.sampled_from([np.float32, np.float64])))


@st.composite
def gpu_batches(draw, max_gpus: int = 4, max_n: int = 15):
    """Several GPUs' traces: list of (ts_ns, power_w float32) plus a group per GPU."""
    n_gpus = draw(st.integers(1, max_gpus))
    traces = [draw(power_traces(max_n=max_n, dtype=np.float32)) for _ in range(n_gpus)]
    n_groups = draw(st.integers(1, 3))
    groups = draw(st.lists(st.integers(0, n_groups - 1), min_size=n_gpus, max_size=n_gpus))
    return traces, np.asarray(groups, dtype=np.int64), n_groups


@st.composite
def grids_for(draw, ts: np.ndarray, max_cells: int = 300):
    """A (t0_ns, step_ns, n_cells) grid over (most of) the span of ``ts``."""
    start = int(ts.min()) if len(ts) else 0
    span = int(ts.max()) - start + 300 if len(ts) else 300
    step = draw(st.sampled_from([1, 3, 7, 50, 100, 333]))
    t0 = start + draw(st.integers(-60, 60))
    n_cells = min(max_cells, span // step + draw(st.integers(-3, 3)))
    return t0, step, max(n_cells, 0)
