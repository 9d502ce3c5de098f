"""One-pass tokenizer for nvidia-smi ``--query-gpu`` CSV rows: bytes in, arrays out.

:func:`scan_rows` walks the lines of a byte range once.  A line is *clean* when it
has exactly the expected number of fields, only ASCII bytes, no empty field, a
timestamp spelled exactly ``YYYY/MM/DD HH:MM:SS.fff`` (a valid date and time, years
1700-2200), and in every numeric column either a null token or a plain number
(``-?digits[.digits]``, after the column's strip rule, see below) small enough to be
converted exactly.  For clean lines it writes the line number, the local timestamp
(ns since 1970-01-01, no zone) and the values; every other line (blank, repeated header, garbage, odd
spellings such as ``1e3``, too many digits) is only listed as *odd*, by byte range,
for the caller to parse with its exact (slower) rules.  The kernel never guesses:
anything outside this small grammar is odd.

Values are converted exactly as a correctly rounded decimal parser would (the
nvidia-smi reader's reference is Polars' string cast): ``m / 10**k`` with ``m`` and
``10**k`` exactly representable, one division in the target precision (Clinger's
fast path): float32 for ``m < 2**24, k <= 10``, float64 for ``m < 2**53, k <= 22``.

Numeric field grammar (:func:`parse_number`, applied while the field is read):
leading blanks; then ``[...`` or ``N/A`` (a null token, value NaN) or
``-?digits[.digits]``; then only bytes of the column's *strip set* (blank, tab and the
characters of its unit, e.g. `` W``) up to the ``,`` or newline (a CR only as part of
a CRLF).  Timestamps of the same second as the line before reuse its seconds.
This equals the reader's exact rule (strip the set from the end and blanks from the
front, then match; ``_stripped_expr`` in :mod:`tracekit.io.nvsmi`) as long as the
strip set holds no digit, ``.``, ``-``, ``+``, ``[``, ``N``, ``/`` or ``A``, which the
caller checks.  Integer columns (the GPU ``index``) take ``digits`` only, with
blanks around.
"""

from __future__ import annotations

import numpy as np

from tracekit.kernels._jit import kernel

#: Column roles (``roles`` argument): not parsed, the timestamp.  Numeric columns have
#: their slot (>= 0) in ``kinds``.
ROLE_IGNORED = -1
ROLE_TIMESTAMP = -2
#: Numeric kinds (``kinds[:, 0]``), each with its own output array.
KIND_F32 = 0
KIND_F64 = 1
KIND_I64 = 2

#: Length of ``YYYY/MM/DD HH:MM:SS.fff``.
TS_LENGTH = 23

_POW10_F32 = np.array([10.0**k for k in range(11)], dtype=np.float32)
_POW10_F64 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53
_MAX_DIGITS = 18  # an int64 holds any 18-digit mantissa
#: Years whose times fit int64 nanoseconds with room to spare (others: exact path).
_MIN_YEAR = 1700
_MAX_YEAR = 2200


@kernel(inline="always")
def parse_timestamp_ns(data, a, b):
    """``YYYY/MM/DD HH:MM:SS.fff`` in ``data[a:b]`` as ns since 1970 (no zone), or
    ``(False, 0)`` when the field is not exactly that with a valid date and time."""
    if b - a != TS_LENGTH:
        return False, np.int64(0)
    if data[a + 4] != 47 or data[a + 7] != 47 or data[a + 10] != 32:
        return False, np.int64(0)
    if data[a + 13] != 58 or data[a + 16] != 58 or data[a + 19] != 46:
        return False, np.int64(0)
    # digit values; any non-digit makes ``bad`` negative (d < 0 or 9 - d < 0)
    bad = np.int64(0)
    d0 = np.int64(data[a]) - 48
    d1 = np.int64(data[a + 1]) - 48
    d2 = np.int64(data[a + 2]) - 48
    d3 = np.int64(data[a + 3]) - 48
    d5 = np.int64(data[a + 5]) - 48
    d6 = np.int64(data[a + 6]) - 48
    d8 = np.int64(data[a + 8]) - 48
    d9 = np.int64(data[a + 9]) - 48
    d11 = np.int64(data[a + 11]) - 48
    d12 = np.int64(data[a + 12]) - 48
    d14 = np.int64(data[a + 14]) - 48
    d15 = np.int64(data[a + 15]) - 48
    d17 = np.int64(data[a + 17]) - 48
    d18 = np.int64(data[a + 18]) - 48
    d20 = np.int64(data[a + 20]) - 48
    d21 = np.int64(data[a + 21]) - 48
    d22 = np.int64(data[a + 22]) - 48
    bad = (d0 | d1 | d2 | d3 | d5 | d6 | d8 | d9 | d11 | d12 | d14 | d15 | d17 | d18 | d20 | d21 | d22)
    bad |= (9 - d0) | (9 - d1) | (9 - d2) | (9 - d3) | (9 - d5) | (9 - d6) | (9 - d8) | (9 - d9)
    bad |= (9 - d11) | (9 - d12) | (9 - d14) | (9 - d15) | (9 - d17) | (9 - d18) | (9 - d20)
    bad |= (9 - d21) | (9 - d22)
    if bad < 0:
        return False, np.int64(0)
    year = ((d0 * 10 + d1) * 10 + d2) * 10 + d3
    month = d5 * 10 + d6
    day = d8 * 10 + d9
    hour = d11 * 10 + d12
    minute = d14 * 10 + d15
    second = d17 * 10 + d18
    milli = (d20 * 10 + d21) * 10 + d22
    if year < _MIN_YEAR or year > _MAX_YEAR or month < 1 or month > 12 or day < 1 or hour > 23 or minute > 59 or second > 59:
        return False, np.int64(0)
    if month == 2:
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        last = 29 if leap else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        last = 30
    else:
        last = 31
    if day > last:
        return False, np.int64(0)
    # days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant's algorithm)
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doe = yoe * 365 + yoe // 4 - yoe // 100 + (153 * mp + 2) // 5 + day - 1
    days = era * 146097 + doe - 719468
    secs = ((days * 24 + hour) * 60 + minute) * 60 + second
    return True, secs * 1_000_000_000 + milli * 1_000_000


#: :func:`parse_number` outcomes.
NUMBER = 0
NULL = 1
ODD = 2


@kernel(inline="always")
def _field_end(data, i, stop):
    """Index of the ``,`` or newline (or ``stop``) that ends a field whose content ends
    at ``i``, allowing one CR right before the newline or at ``stop`` (CRLF); -1 when
    ``data[i]`` is something else."""
    if i >= stop:
        return stop
    c = data[i]
    if c == 44 or c == 10:
        return i
    if c == 13:
        if i + 1 == stop:
            return stop
        if data[i + 1] == 10:
            return i + 1
    return -1


@kernel(inline="always")
def parse_number(data, a, stop, strip_sets, slot):
    """The numeric field starting at ``data[a]``: leading blanks, then a null token
    (``[...``, ``N/A``) or ``-?digits[.digits]`` (at most 18 digits), then only bytes of
    the slot's strip set ``strip_sets[slot]`` up to the field's ``,`` or newline (see
    the module notes; a CR only as a CRLF's).

    Returns (outcome, negative, mantissa, fraction digits, end), outcome one of
    ``NUMBER``, ``NULL``, ``ODD``; ``end`` is the index of the ``,`` or newline that
    ends the field (or ``stop``), -1 for ``ODD``.
    """
    zero = np.int64(0)
    i = a
    while i < stop and (data[i] == 32 or data[i] == 9 or data[i] == 11 or data[i] == 12):
        i += 1
    if i >= stop:
        return ODD, False, zero, 0, -1
    c = data[i]
    if c == 91:  # '[': [N/A], [Not Supported], ... whatever follows
        while i < stop:
            c = data[i]
            if c == 44 or c == 10 or c == 13 or c >= 128:
                break
            i += 1
        e = _field_end(data, i, stop)
        return (NULL if e >= 0 else ODD), False, zero, 0, e
    if c == 78:  # N/A
        if stop - i < 3 or data[i + 1] != 47 or data[i + 2] != 65:
            return ODD, False, zero, 0, -1
        i += 3
        while i < stop and data[i] != 13 and data[i] != 10 and data[i] != 44 and strip_sets[slot, data[i]]:
            i += 1
        e = _field_end(data, i, stop)
        return (NULL if e >= 0 else ODD), False, zero, 0, e
    neg = c == 45
    if neg:
        i += 1
    m = zero
    start = i
    while i < stop:
        d = np.uint64(data[i]) - np.uint64(48)  # wraps for bytes below '0'
        if d > 9:
            break
        m = m * 10 + np.int64(d)
        i += 1
    nd = i - start
    k = 0
    if nd > 0 and i < stop and data[i] == 46:
        i += 1
        fstart = i
        while i < stop:
            d = np.uint64(data[i]) - np.uint64(48)
            if d > 9:
                break
            m = m * 10 + np.int64(d)
            i += 1
        k = i - fstart
        if k == 0:
            return ODD, neg, m, 0, -1
        nd += k
    if nd == 0 or nd > _MAX_DIGITS:
        return ODD, neg, m, 0, -1
    while i < stop and data[i] != 13 and data[i] != 10 and data[i] != 44 and strip_sets[slot, data[i]]:
        i += 1
    e = _field_end(data, i, stop)
    return (NUMBER if e >= 0 else ODD), neg, m, k, e


@kernel
def scan_rows(data, start, stop, n_fields, roles, kinds, strip_sets, header_first,
              line_out, ts_out, f32_out, f64_out, i64_out, odd_out):
    """Parse the lines of ``data[start:stop]`` (``start`` at a line start).

    Parameters
    ----------
    data
        uint8 file bytes.
    start, stop
        Byte range; ``stop`` is the file end or just after a newline.
    n_fields
        Fields per line (commas + 1).
    roles
        int64 per field: ``ROLE_IGNORED``, ``ROLE_TIMESTAMP`` or the numeric slot.
    kinds
        int64 (slots, 2): (``KIND_*``, row in that kind's output array).
    strip_sets
        uint8 (slots, 256): 1 for bytes stripped from the end of the slot's values.
    header_first
        uint8 bytes of the header's first field; a line whose first field equals it
        is a repeated header (odd, and counted).  Empty when the file has none.
    line_out, ts_out
        int64 (capacity,): per clean line, its index in the range (0-based) and its
        local timestamp (ns).
    f32_out, f64_out, i64_out
        (rows of that kind, capacity): values of clean lines (NaN for null tokens).
    odd_out
        int64 (odd capacity, 3): per odd line, byte start, byte end (without the
        newline) and its index in the range.

    Returns
    -------
    (clean, odd, lines, headers)
        Clean lines written, odd lines seen (may exceed the odd capacity, then only
        the first ones are listed), lines in the range, repeated headers seen.
    """
    cap = line_out.shape[0]
    odd_cap = odd_out.shape[0]
    n_head = header_first.shape[0]
    n = 0
    n_odd = 0
    n_headers = 0
    line = 0
    pos = start
    prev_ts = -1  # start of the last timestamp parsed in full, and its whole seconds
    prev_secs_ns = np.int64(0)
    while pos < stop:
        ok = n < cap
        field = 0
        fs = pos
        ls = pos
        while True:
            fe = -1
            if ok and field < n_fields and roles[field] >= 0:  # a number: parsed in place
                role = roles[field]
                kind = kinds[role, 0]
                row = kinds[role, 1]
                outcome, neg, m, k, end = parse_number(data, fs, stop, strip_sets, role)
                if outcome == NULL:
                    if kind == KIND_F32:
                        f32_out[row, n] = np.float32(np.nan)
                        fe = end
                    elif kind == KIND_F64:
                        f64_out[row, n] = np.nan
                        fe = end
                elif outcome == NUMBER:
                    if kind == KIND_F32:
                        if m < _F32_EXACT and k <= 10:
                            v32 = np.float32(m) / _POW10_F32[k]
                            f32_out[row, n] = -v32 if neg else v32
                            fe = end
                    elif kind == KIND_F64:
                        if m < _F64_EXACT and k <= 22:
                            v64 = np.float64(m) / _POW10_F64[k]
                            f64_out[row, n] = -v64 if neg else v64
                            fe = end
                    elif not neg and k == 0:
                        i64_out[row, n] = m
                        fe = end
                if fe < 0:
                    ok = False
            scanned = fe < 0
            special = False  # CR or non-ASCII in the field
            if scanned:
                fe = fs
                while fe < stop:
                    c = data[fe]
                    if c == 44 or c == 10:
                        break
                    if c == 13 or c >= 128:
                        special = True
                    fe += 1
            end_line = fe >= stop or data[fe] == 10
            ce = fe
            if end_line and ce > fs and data[ce - 1] == 13:
                ce -= 1  # CRLF
            if field == 0 and n_head > 0 and ce - fs == n_head:
                same = True
                for j in range(n_head):
                    if data[fs + j] != header_first[j]:
                        same = False
                        break
                if same:
                    n_headers += 1
                    ok = False
            if ok and scanned and special:
                for j in range(fs, ce):
                    if data[j] == 13 or data[j] >= 128:
                        ok = False
                        break
            if ok and scanned and (ce == fs or field >= n_fields):
                ok = False
            if ok and scanned:
                role = roles[field]
                if role == ROLE_TIMESTAMP:
                    # most lines share the second with the previous one: reuse it
                    same = prev_ts >= 0 and ce - fs == TS_LENGTH
                    if same:
                        for j in range(19):
                            if data[fs + j] != data[prev_ts + j]:
                                same = False
                                break
                    if same:
                        d20 = np.int64(data[fs + 20]) - 48
                        d21 = np.int64(data[fs + 21]) - 48
                        d22 = np.int64(data[fs + 22]) - 48
                        if data[fs + 19] == 46 and (d20 | d21 | d22 | (9 - d20) | (9 - d21) | (9 - d22)) >= 0:
                            ts_out[n] = prev_secs_ns + ((d20 * 10 + d21) * 10 + d22) * 1_000_000
                        else:
                            ok = False
                    else:
                        good, ts = parse_timestamp_ns(data, fs, ce)
                        if good:
                            ts_out[n] = ts
                            prev_ts = fs
                            prev_secs_ns = ts - ts % 1_000_000_000
                        else:
                            ok = False
                elif role >= 0:  # a number that did not parse in place
                    ok = False
            field += 1
            if end_line:
                break
            fs = fe + 1
        if field != n_fields:
            ok = False
        if ok:
            line_out[n] = line
            n += 1
        else:
            if n_odd < odd_cap:
                odd_out[n_odd, 0] = ls
                odd_out[n_odd, 1] = fe
                odd_out[n_odd, 2] = line
            n_odd += 1
        line += 1
        pos = fe + 1
    return n, n_odd, line, n_headers
