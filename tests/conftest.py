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


def _import_hypothesis_patcher() -> None:
    """Hypothesis's pytest plugin imports its patch writer only after a test fails,
    and that import warns (DeprecationWarning from a dependency); with
    ``filterwarnings = error`` the warning turns a clean failure into an INTERNALERROR
    that stops the run.  Import it once here, warnings silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import hypothesis.extra._patching  # noqa: F401
        except ImportError:  # libcst missing: the plugin writes no patches
            pass


_import_hypothesis_patcher()
