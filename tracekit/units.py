"""Parsing of durations and offsets as users type them (``100ms``, ``1s``, ``-7h``)."""

from __future__ import annotations

import re

from tracekit.errors import ParameterError

_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*([a-zµ]*)\s*$", re.IGNORECASE)
_HHMM = re.compile(r"^\s*([+-])(\d{1,2}):(\d{2})\s*$")


def parse_duration_s(text: str | float | int, *, what: str = "duration", default_unit: str = "s") -> float:
    """Seconds from ``"100ms"``, ``"1.5s"``, ``"-7h"``, ``"+05:30"`` or a plain number.

    A plain number is in ``default_unit``.  Raises ParameterError naming ``what``.
    """
    if isinstance(text, (int, float)):
        return float(text) * _UNITS_S[default_unit]
    m = _HHMM.match(text)
    if m:
        sign = -1.0 if m.group(1) == "-" else 1.0
        return sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)
    m = _DURATION.match(text)
    if not m:
        raise ParameterError(f"cannot read {what} {text!r}; write e.g. 100ms, 1s, 5m, -7h or +05:30")
    unit = (m.group(2) or default_unit).lower()
    if unit not in _UNITS_S:
        raise ParameterError(f"unknown unit {m.group(2)!r} in {what} {text!r}; use ns, us, ms, s, m, h or d")
    return float(m.group(1)) * _UNITS_S[unit]
