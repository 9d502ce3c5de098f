"""Shared fixtures: where the real traces live (skip cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_TRACES = SHARED / "real_traces"
SAMPLE_TRACES = REPO / "sample_traces"


@pytest.fixture
def real_traces() -> Path:
    """The folder of public real traces beside the repo; skips when it is absent."""
    if not REAL_TRACES.is_dir():
        pytest.skip("../shared/real_traces is not beside this checkout")
    return REAL_TRACES
