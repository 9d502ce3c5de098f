"""tracekit: GPU power traces of LLM clusters — phases, cluster swings, what-if replay.

Library entry points (imported lazily so ``import tracekit`` stays cheap)::

    ts = tracekit.open("traces/")          # TraceSet: samples, topology, data quality
    ts.info()                              # the `tracekit info --json` object
"""

from __future__ import annotations

from tracekit.errors import (  # noqa: F401
    InputError,
    ParameterError,
    PolicyError,
    SchemaError,
    StrictError,
    TracekitError,
)

__version__ = "0.1.0"


def open(path, **options):  # noqa: A001 - the documented library entry point
    """Read a trace (raw file, folder, or canonical dataset); see :func:`tracekit.traceset.open_trace`."""
    from tracekit.traceset import open_trace

    return open_trace(path, **options)


def __getattr__(name):
    if name == "synth":
        import importlib

        return importlib.import_module("tracekit.synth")
    if name == "replay":
        from tracekit.replay import replay

        return replay
    if name == "TraceSet":
        from tracekit.traceset import TraceSet

        return TraceSet
    raise AttributeError(f"module 'tracekit' has no attribute {name!r}")
