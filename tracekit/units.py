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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
               "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40,
               "tib": 2**40}


def parse_size_bytes(text: str | int | float, *, what: str = "size") -> int:
    """Bytes from ``"2GiB"``, ``"1.5GB"``, ``"512MiB"``, ``"800M"`` or a plain number of bytes.

    Raises ParameterError naming ``what``.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _SIZE.match(text)
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise ParameterError(f"cannot read {what} {text!r}; write e.g. 2GiB, 1.5GB or 512MiB")
        value = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if not value > 0:
        raise ParameterError(f"{what} must be positive, got {text!r}")
    return int(value)


def parse_time_ns(text: str, *, origin_ns: int, what: str = "time") -> int:
    """Nanoseconds since the epoch from an ISO 8601 time (UTC unless it carries an
    offset; ``Z`` allowed) or ``+DURATION`` after ``origin_ns`` (e.g. ``+10m``).

    Raises ParameterError naming ``what``.
    """
    s = str(text).strip()
    if s.startswith("+"):
        offset_s = parse_duration_s(s[1:], what=what)
        if offset_s < 0:
            raise ParameterError(f"{what} {text!r}: +DURATION must not be negative")
        return ns_in_range(origin_ns + round(offset_s * 1e9), text, what)
    ns = iso_to_ns(s)
    if ns is None:
        raise ParameterError(f"cannot read {what} {text!r}; write an ISO time such as 2025-01-01T00:05:00Z "
                             "or +DURATION after the first sample such as +5m")
    return ns_in_range(ns, text, what)


def iso_to_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 time (UTC unless it carries an offset;
    ``Z`` allowed), or None when ``text`` is not one."""
    import datetime as dt

    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


#: Nanosecond timestamps are int64: 1677-09-21 .. 2262-04-11.
_NS_MIN, _NS_MAX = -(2**63) + 1, 2**63 - 1


def ns_in_range(ns: int, text, what: str) -> int:
    if not _NS_MIN <= ns <= _NS_MAX:
        raise ParameterError(f"{what} {text!r} is outside the times a nanosecond timestamp holds "
                             "(1677-09-21 .. 2262-04-11)")
    return int(ns)


def format_size(n_bytes: float) -> str:
    """``1.2 GiB``, ``95 MiB``, ``12 KiB`` (binary units)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}" if unit == "GiB" else f"{n_bytes / scale:.0f} {unit}"
    return f"{n_bytes:.0f} B"
