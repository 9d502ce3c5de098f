"""What-if replay of GPU power traces: power caps, SM clock locks, power smoothing and
rack storage, with synchronous-training coupling and sweeps.

``tracekit.replay(ts, cap=350)`` (this package is callable) is
:func:`tracekit.replay.engine.replay`; the model is in :mod:`tracekit.replay.model`,
the policies in :mod:`tracekit.replay.policy`, the outputs in
:mod:`tracekit.replay.report`.
"""

from __future__ import annotations

import sys
import types

from tracekit.replay.engine import PolicyResult, Replay, ReplayOptions, replay
from tracekit.replay.model import PowerModel
from tracekit.replay.policy import Cap, Policy, Scope, Smoothing, Storage

__all__ = ["Cap", "Policy", "PolicyResult", "PowerModel", "Replay", "ReplayOptions", "Scope", "Smoothing",
           "Storage", "replay"]


class _CallableModule(types.ModuleType):
    """Lets ``tracekit.replay(...)`` call :func:`replay` even after this package was
    imported (the import system then binds ``tracekit.replay`` to the package)."""

    def __call__(self, *args, **kwargs):
        return replay(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
