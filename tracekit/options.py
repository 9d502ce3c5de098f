"""Options dataclasses with keyword overrides, as the library entry points take them."""

from __future__ import annotations

import dataclasses

from tracekit.errors import ParameterError


def with_overrides(options, cls, overrides: dict, what: str):
    """A copy of ``options`` (default ``cls()``) with ``overrides`` applied; the caller's
    object is not changed.  An unknown name is a ParameterError listing the known ones."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    for name in overrides:
        if name not in known:
            raise ParameterError(f"unknown {what} option {name!r}; known: {known}")
    return dataclasses.replace(options or cls(), **overrides)
