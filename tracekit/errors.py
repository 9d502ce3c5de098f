"""The one place for tracekit's exceptions.

Every error a user can cause is a :class:`TracekitError`; the CLI maps it to a
one-line message and exit code 2.  Messages say what was found and how to fix it.
"""

from __future__ import annotations


class TracekitError(Exception):
    """Base class of every error tracekit raises on purpose."""

    exit_code = 2


class InputError(TracekitError):
    """A file cannot be read or parsed (names the file, and the line where it applies)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class UnindexedError(InputError):
    """A canonical dataset's row groups do not each hold one GPU with ``ts`` statistics
    (not written by ``tracekit convert``): it cannot be indexed, only read whole."""


class SchemaError(TracekitError):
    """Columns, types or units do not match what a reader or function needs."""


class StrictError(InputError):
    """An anomaly that would be repaired or excluded, raised because of ``--strict``."""


class PolicyError(TracekitError):
    """A replay policy is impossible or contradicts another (cap below idle, ...)."""


class ParameterError(TracekitError):
    """A parameter value is out of range (0 GPUs, negative period, ...)."""
