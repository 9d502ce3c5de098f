"""Options dataclasses with keyword overrides, as the library entry points take them."""

from __future__ import annotations

import dataclasses

import numpy as np

from tracekit.errors import ParameterError


def with_overrides(options, cls, overrides: dict, what: str):
    """A copy of ``options`` (default ``cls()``) with ``overrides`` applied; the caller's
    object is not changed.  An unknown name is a ParameterError listing the known ones."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    for name in overrides:
        if name not in known:
            raise ParameterError(f"unknown {what} option {name!r}; known: {known}")
    return dataclasses.replace(options or cls(), **overrides)


def check_choice(opts, name: str, choices: tuple[str, ...]) -> None:
    """ParameterError unless option ``name`` is one of ``choices``."""
    v = getattr(opts, name)
    if v not in choices:
        raise ParameterError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got {v!r}")


def check_positive_ints(opts, names: tuple[str, ...]) -> None:
    """ParameterError unless each option in ``names`` is None or an integer >= 1."""
    for name in names:
        v = getattr(opts, name)
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
            raise ParameterError(f"{name} must be a positive integer, got {v!r}")
