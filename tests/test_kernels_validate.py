"""The sortedness check every reader and kernel relies on vs a plain loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.errors import SchemaError
from tracekit.kernels._validate import _DECREASE_BLOCK, check_sorted_runs, first_decrease


def naive_first_decrease(ts, offsets):
    for g in range(len(offsets) - 1):
        for i in range(int(offsets[g]), int(offsets[g + 1]) - 1):
            if ts[i + 1] < ts[i]:
                return i, g
    return -1, -1


@st.composite
def runs_with_decreases(draw):
    """(ts, offsets): runs of 0..3 blocks of samples, sorted, then a few samples
    lowered (at block edges too) so that some runs decrease once or more, some not."""
    lengths = draw(st.lists(st.integers(0, 3 * _DECREASE_BLOCK + 2), min_size=1, max_size=5))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ts = np.cumsum(rng.integers(0, 3, n)).astype(np.int64)  # ties (0 steps) are not decreases
    starts = offsets[:-1][np.asarray(lengths) > 0]
    ts[starts[1:]] = 0  # a run starts below the last one's end: no decrease within a run
    edges = [k for k in (_DECREASE_BLOCK - 1, _DECREASE_BLOCK, _DECREASE_BLOCK + 1, 2 * _DECREASE_BLOCK) if k < n]
    picks = draw(st.lists(st.one_of(st.integers(0, max(n - 1, 0)), st.sampled_from(edges or [0])), max_size=3))
    for p in picks:
        if n:
            ts[p] -= draw(st.integers(1, 5))
    return ts, offsets


@settings(max_examples=300, deadline=None)
@given(runs_with_decreases())
def test_first_decrease_equals_a_plain_loop(case):
    ts, offsets = case
    assert first_decrease(ts, offsets) == naive_first_decrease(ts, offsets)
    one = np.array([0, len(ts)], dtype=np.int64)
    assert first_decrease(ts, None) == naive_first_decrease(ts, one)


@pytest.mark.parametrize("at", [0, 1, _DECREASE_BLOCK - 2, _DECREASE_BLOCK - 1, _DECREASE_BLOCK,
                                _DECREASE_BLOCK + 1, 3 * _DECREASE_BLOCK - 1, 4 * _DECREASE_BLOCK - 2])
def test_a_single_decrease_is_found_at_every_block_position(at):
    ts = np.arange(4 * _DECREASE_BLOCK, dtype=np.int64)
    ts[at + 1] = ts[at] - 1
    assert first_decrease(ts, None) == (at, 0)
    with pytest.raises(SchemaError, match=rf"sample {at + 1} .* comes before sample {at}"):
        check_sorted_runs("f", "ts", ts, None)


def test_the_step_between_runs_is_not_a_decrease():
    ts = np.concatenate([np.arange(3000), np.arange(5)]).astype(np.int64)
    assert first_decrease(ts, np.array([0, 3000, 3005], dtype=np.int64)) == (-1, -1)
    assert first_decrease(ts, None) == (2999, 0)
