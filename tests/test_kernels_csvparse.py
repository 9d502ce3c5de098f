"""Byte-level nvidia-smi CSV tokenizer (tracekit.kernels.csvparse) against a plain
Python twin written from the reader's exact rules, Polars' string cast as the oracle
for number conversion, and the nvidia-smi reader's fast path against its exact path."""

from __future__ import annotations

import re
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tracekit.io import nvsmi
from tracekit.io.base import ReadOptions
from tracekit.kernels import csvparse as cp

BLANKS = b" \t\n\v\f\r"
EPOCH = datetime(1970, 1, 1)


# -- the twin ---------------------------------------------------------------------------


def _f32_exact(value: Fraction) -> float:
    """``value`` rounded once to float32 (ties to even)."""
    x = np.float32(float(value))
    below, above = np.nextafter(x, np.float32(-np.inf)), np.nextafter(x, np.float32(np.inf))
    best = min((below, x, above), key=lambda c: (abs(Fraction(float(c)) - value), int(np.float32(c).view(np.int32)) & 1))
    return float(best)


def naive_line(line: bytes, n_fields: int, roles: list[int], kinds: list[tuple[int, int]],
               strip: list[bytes], header_first: bytes) -> tuple[str, int | None, list[float]]:
    """("clean", ts ns, values by slot) | ("odd"/"header", None, []), by the reader's
    rules: split at commas after removing one CR of a CRLF, strip each numeric value of
    its strip set from the end and of blanks from the front, then match."""
    if line.endswith(b"\r"):
        line = line[:-1]
    fields = line.split(b",")
    if header_first and fields[0] == header_first:
        return "header", None, []
    if len(fields) != n_fields or any(not f for f in fields) or any(b >= 128 or b == 13 for b in line):
        return "odd", None, []
    ts = None
    values = [0.0] * len(kinds)
    for f, role in zip(fields, roles):
        if role == cp.ROLE_TIMESTAMP:
            m = re.fullmatch(rb"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3})", f)
            if not m:
                return "odd", None, []
            try:
                t = datetime(*(int(g) for g in m.groups()[:6]))
            except ValueError:
                return "odd", None, []
            if not 1700 <= t.year <= 2200:  # outside int64 ns with margin: exact path
                return "odd", None, []
            secs = (t - EPOCH).days * 86400 + (t - EPOCH).seconds
            ts = secs * 1_000_000_000 + int(m.group(7)) * 1_000_000
        elif role >= 0:
            kind = kinds[role][0]
            if kind == cp.KIND_I64:
                s = f.strip(BLANKS)
                if not re.fullmatch(rb"\d{1,18}", s):
                    return "odd", None, []
                values[role] = int(s)
                continue
            s = f.rstrip(strip[role]).lstrip(b" \t\v\f\r")
            if s.startswith(b"[") or s == b"N/A":
                values[role] = float("nan")
                continue
            m = re.fullmatch(rb"-?(\d+)(?:\.(\d+))?", s)
            if not m:
                return "odd", None, []
            digits = m.group(1) + (m.group(2) or b"")
            k = len(m.group(2) or b"")
            mantissa = int(digits)
            if len(digits) > 18:
                return "odd", None, []
            if kind == cp.KIND_F32 and (mantissa >= 1 << 24 or k > 10):
                return "odd", None, []
            if kind == cp.KIND_F64 and (mantissa >= 1 << 53 or k > 22):
                return "odd", None, []
            exact = Fraction(mantissa, 10**k) * (-1 if s.startswith(b"-") else 1)
            v = _f32_exact(exact) if kind == cp.KIND_F32 else float(exact)
            values[role] = -0.0 if (v == 0 and s.startswith(b"-")) else v
    return "clean", ts, values


# -- kernel harness ------------------------------------------------------------------


# field layout used by the property tests: ts, power [W], util [%], memory (ignored),
# energy (float64, mJ), temperature (no unit), index
ROLES = [cp.ROLE_TIMESTAMP, 0, 1, cp.ROLE_IGNORED, 2, 3, 4]
KINDS = [(cp.KIND_F32, 0), (cp.KIND_F32, 1), (cp.KIND_F64, 0), (cp.KIND_F32, 2), (cp.KIND_I64, 0)]
STRIP = [b" \t\rW", b" \t\r%", b" \t\rmJ", BLANKS, BLANKS]
HEADER = b"timestamp"


def _strip_table(strip: list[bytes]) -> np.ndarray:
    table = np.zeros((len(strip), 256), dtype=np.uint8)
    for slot, chars in enumerate(strip):
        table[slot, list(chars)] = 1
    return table


def run_kernel(data: bytes, start: int = 0, stop: int | None = None, roles=ROLES, kinds=KINDS,
               strip=STRIP, header=HEADER, odd_cap: int = 1000):
    buf = np.frombuffer(data, dtype=np.uint8)
    stop = len(buf) if stop is None else stop
    kinds_a = np.array(kinds, dtype=np.int64).reshape(-1, 2)
    n_kind = [int((kinds_a[:, 0] == k).sum()) for k in range(3)]
    cap = (stop - start) // (cp.TS_LENGTH + 2 * (len(roles) - 1)) + 1
    out = (
        np.zeros(cap, dtype=np.int64),
        np.zeros(cap, dtype=np.int64),
        np.zeros((n_kind[0], cap), dtype=np.float32),
        np.zeros((n_kind[1], cap), dtype=np.float64),
        np.zeros((n_kind[2], cap), dtype=np.int64),
        np.zeros((odd_cap, 3), dtype=np.int64),
    )
    counts = cp.scan_rows(buf, start, stop, len(roles), np.array(roles, dtype=np.int64), kinds_a,
                          _strip_table(strip), np.frombuffer(header, dtype=np.uint8), *out)
    return counts, out


def kernel_rows(data: bytes, **kw) -> tuple[dict[int, tuple], dict[int, bytes], tuple]:
    """Per line index: clean (ts, values by slot) and odd (line bytes)."""
    (n, n_odd, lines, headers), (line, ts, f32, f64, i64, odd) = run_kernel(data, **kw)
    kinds = kw.get("kinds", KINDS)
    out = {"f32": f32, "f64": f64, "i64": i64}
    clean = {}
    for j in range(n):
        values = []
        for kind, row in kinds:
            arr = out[("f32", "f64", "i64")[kind]]
            values.append(arr[row, j].item())
        clean[int(line[j])] = (int(ts[j]), values)
    odd_lines = {int(i): data[a:b] for a, b, i in odd[:n_odd].tolist()}
    return clean, odd_lines, (n, n_odd, lines, headers)


def _same(a: float, b: float) -> bool:
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return a == b and np.copysign(1.0, a) == np.copysign(1.0, b)


def check_against_twin(data: bytes) -> None:
    clean, odd, (n, n_odd, n_lines, headers) = kernel_rows(data)
    lines = data.split(b"\n") if data else []
    if data.endswith(b"\n"):
        lines = lines[:-1]
    assert n_lines == len(lines)
    want_headers = 0
    for i, raw in enumerate(lines):
        status, ts, values = naive_line(raw, len(ROLES), ROLES, KINDS, STRIP, HEADER)
        want_headers += status == "header"
        if status == "clean":
            assert i in clean, raw
            got_ts, got_values = clean[i]
            assert got_ts == ts, raw
            for g, w in zip(got_values, values):
                assert _same(g, w), (raw, got_values, values)
        else:
            assert odd.get(i) == raw, raw
    assert headers == want_headers
    assert n + n_odd == len(lines)


# -- strategies -------------------------------------------------------------------------


def _ts(draw) -> str:
    kind = draw(st.sampled_from(["ok"] * 6 + ["date", "time", "shape", "junk"]))
    year = draw(st.one_of(st.integers(1, 9999), st.integers(1990, 2030)))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, 31))
    text = f"{year:04d}/{month:02d}/{day:02d} {draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:" \
        f"{draw(st.integers(0, 59)):02d}.{draw(st.integers(0, 999)):03d}"
    if kind == "date":
        text = f"{year:04d}/{draw(st.integers(0, 13)):02d}/{draw(st.integers(0, 32)):02d}" + text[10:]
    elif kind == "time":
        text = text[:11] + f"{draw(st.integers(0, 25)):02d}:{draw(st.integers(0, 61)):02d}:{draw(st.integers(0, 61)):02d}" + text[19:]
    elif kind == "shape":
        text = draw(st.sampled_from([text.replace("/", "-"), text.replace(" ", "T"), text[:-1], text + "0",
                                     " " + text, text + " ", text[:19]]))
    elif kind == "junk":
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(["x", "9", "/", " ", "é", ","])) + text[i + 1 :]
    return text


def _number(draw, unit: str) -> str:
    kind = draw(st.sampled_from(["plain"] * 5 + ["long", "token", "odd"]))
    if kind == "plain":
        text = draw(st.sampled_from(["", "-"])) + str(draw(st.integers(0, 99999)))
        if draw(st.booleans()):
            text += "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=4)))
    elif kind == "long":
        text = str(draw(st.integers(0, 10**20))) + "." + str(draw(st.integers(0, 10**12)))
    elif kind == "token":
        text = draw(st.sampled_from(["[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "[", "N/", "N/AA"]))
    else:
        text = draw(st.sampled_from(["1e3", "inf", "nan", ".5", "5.", "+5", "--1", "1.2.3", "W 5", "", " ", "0x10",
                                     "١٢", "5\r", "\t7", "\v8"]))
    pre = draw(st.sampled_from(["", " ", "  ", "\t"]))
    post = draw(st.sampled_from(["", f" {unit}", f"{unit}", f" {unit} ", f" {unit}{unit}", " ", " X"])) if unit else \
        draw(st.sampled_from(["", " ", " C", "\t"]))
    return pre + text + post


@st.composite
def csv_lines(draw) -> bytes:
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["row"] * 6 + ["blank", "header", "short", "long", "bytes"]))
        if kind == "blank":
            rows.append(draw(st.sampled_from(["", " ", "\r", ",,,,,,"])))
            continue
        if kind == "header":
            rows.append(draw(st.sampled_from(["timestamp, power.draw [W]", "timestamp", "timestamp\r"])))
            continue
        ts = _ts(draw)
        if rows and draw(st.booleans()):  # the same second as the line before
            tail = draw(st.sampled_from([".", ",", "x"])) + "".join(draw(st.lists(st.sampled_from("0123456789x"), min_size=3, max_size=3)))
            ts = rows[-1][:19] + (tail if draw(st.booleans()) else "." + tail[1:].replace("x", "7"))
        fields = [
            ts,
            _number(draw, "W"),
            _number(draw, "%"),
            draw(st.sampled_from([" 17 MiB", "x", "", " é", "a\rb"])),
            _number(draw, "mJ"),
            _number(draw, ""),
            draw(st.sampled_from(["0", " 3", "7 ", "12", "-1", "1.0", "", "[N/A]", "99999999999999999999"])),
        ]
        if kind == "short":
            fields = fields[: draw(st.integers(1, 6))]
        elif kind == "long":
            fields.append("extra")
        sep = draw(st.sampled_from([",", ", "]))
        line = fields[0] + "".join(sep + f if not f.startswith(" ") else "," + f for f in fields[1:])
        if kind == "bytes":
            i = draw(st.integers(0, len(line)))
            line = line[:i] + draw(st.sampled_from(["\r", "\x00", "ÿ", ","])) + line[i:]
        rows.append(line + draw(st.sampled_from(["", "\r"])))
    text = "\n".join(rows)
    if rows and draw(st.booleans()):
        text += "\n"
    return text.encode("utf-8")


# -- kernel tests ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=csv_lines())
def test_scan_rows_matches_twin(data):
    check_against_twin(data)


@settings(max_examples=50, deadline=None)
@given(data=csv_lines(), cut=st.floats(0, 1))
def test_split_ranges_agree_with_one_scan(data, cut):
    """Two ranges cut after a newline give the same rows as one scan (line indices
    offset by the first range's line count)."""
    clean, odd, (n, n_odd, lines, headers) = kernel_rows(data)
    at = data.find(b"\n", int(cut * len(data)))
    at = len(data) if at < 0 else at + 1
    first = kernel_rows(data, stop=at)
    second = kernel_rows(data, start=at)
    shift = first[2][2]
    merged_clean = {**first[0], **{i + shift: v for i, v in second[0].items()}}
    assert merged_clean.keys() == clean.keys()
    for i, (ts, values) in clean.items():
        assert merged_clean[i][0] == ts
        assert all(_same(a, b) for a, b in zip(merged_clean[i][1], values))
    merged_odd = {**first[1], **{i + shift: v for i, v in second[1].items()}}
    assert merged_odd == odd
    assert shift + second[2][2] == lines
    assert first[2][3] + second[2][3] == headers


def test_examples_by_hand():
    data = (
        b"2025/07/26 23:32:09.703, 69.32 W, 0 %, 132 MiB, 1234.5 mJ, 45, 0\n"
        b"2024/02/29 00:00:00.000, [N/A], N/A, x, [Not Supported], 7 , 3\r\n"
        b"2023/02/29 00:00:00.000, 1 W, 0 %, x, 1, 1, 0\n"  # not a leap year
        b"2025/07/26 23:32:09.703, 1e3 W, 0 %, x, 1, 1, 0\n"  # exponent: exact path
        b"\n"
        b"timestamp,a,b,c,d,e,f\n"
        b"2025/07/26 23:32:09.703,-0.0,99999.5,x,-12.25,0.1,12"  # no newline at the end
    )
    clean, odd, (n, n_odd, lines, headers) = kernel_rows(data)
    assert (n, n_odd, lines, headers) == (3, 4, 7, 1)
    assert clean[0][0] == int((datetime(2025, 7, 26, 23, 32, 9) - EPOCH).total_seconds()) * 10**9 + 703 * 10**6
    assert clean[0][1] == [np.float32(69.32).item(), 0.0, 1234.5, 45.0, 0]
    assert clean[1][0] == int((datetime(2024, 2, 29) - EPOCH).total_seconds()) * 10**9
    assert all(np.isnan(v) for v in clean[1][1][:3]) and clean[1][1][3:] == [7.0, 3]
    assert np.copysign(1.0, clean[6][1][0]) == -1.0 and clean[6][1][1:] == [99999.5, -12.25, np.float32(0.1).item(), 12]
    assert sorted(odd) == [2, 3, 4, 5]
    assert odd[4] == b"" and odd[5] == b"timestamp,a,b,c,d,e,f"


def test_odd_capacity_overflow_still_counts():
    data = b"\n" * 50 + b"2025/07/26 23:32:09.703, 1 W, 0 %, x, 1, 1, 0\n"
    (n, n_odd, lines, headers), out = run_kernel(data, odd_cap=10)
    assert (n, n_odd, lines) == (1, 50, 51)
    assert out[5][:, 2].tolist() == list(range(10))


def test_full_clean_capacity_makes_lines_odd_not_corrupt():
    row = b"2025/07/26 23:32:09.703, 1 W, 0 %, x, 1, 1, 0\n"
    (n, n_odd, lines, headers), out = run_kernel(row * 3, odd_cap=10)
    assert (n, n_odd) == (3, 0)
    # a range the caller sized for fewer rows: the rest are listed as odd
    buf = np.frombuffer(row * 3, dtype=np.uint8)
    small = [np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros((3, 2), np.float32),
             np.zeros((1, 2)), np.zeros((1, 2), np.int64), np.zeros((10, 3), np.int64)]
    counts = cp.scan_rows(buf, 0, len(buf), len(ROLES), np.array(ROLES), np.array(KINDS), _strip_table(STRIP),
                          np.frombuffer(HEADER, np.uint8), *small)
    assert counts[:3] == (2, 1, 3) and small[5][0].tolist() == [2 * len(row), 3 * len(row) - 1, 2]


@settings(max_examples=50, deadline=None)
@given(strings=st.lists(
    st.tuples(st.sampled_from(["", "-"]), st.integers(0, 99_999_999), st.integers(0, 10)).map(
        lambda t: f"{t[0]}{str(t[1])[: max(1, len(str(t[1])) - t[2])]}"
        + (f".{str(t[1])[len(str(t[1])) - t[2]:]}" if 0 < t[2] < len(str(t[1])) else "")
    ),
    min_size=1, max_size=40,
))
def test_numbers_equal_polars_cast(strings):
    """The reader's reference for values is Polars' string cast (float32 and float64)."""
    rows = b"".join(f"2025/01/01 00:00:00.000,{s},{s},x,{s},{s},0\n".encode() for s in strings)
    clean, odd, _ = kernel_rows(rows)
    f32 = pl.Series(strings).cast(pl.Float32).to_list()
    f64 = pl.Series(strings).cast(pl.Float64).to_list()
    for i, s in enumerate(strings):
        if i not in clean:  # too many digits for the exact fast conversion
            assert len(s.replace("-", "").replace(".", "")) > 7
            continue
        values = clean[i][1]
        assert _same(values[0], f32[i]) and _same(values[1], f32[i]) and _same(values[3], f32[i]), s
        assert _same(values[2], f64[i]), s


# -- reader: fast path == exact path ---------------------------------------------------


def _read_both(path: Path, **opts) -> tuple:
    """(fast-path result, exact-path result, per fast read: whether the kernel path
    applied); a result is the SourceFrame or the exception raised."""
    opts.setdefault("utc_offset_s", 0)
    calls = []
    fast_parse = nvsmi._fast_parse

    def spy(*args, **kw):
        out = fast_parse(*args, **kw)
        calls.append(out is not None)
        return out

    results = []
    for mode in ("fast", "exact"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(nvsmi, "_fast_parse", spy if mode == "fast" else (lambda *a, **k: None))
            mp.setattr(nvsmi, "KERNEL_FOR_PLAIN_NUMBERS", mode == "fast")
            try:
                results.append(nvsmi.read(path, ReadOptions(**opts)))
            except Exception as exc:  # noqa: BLE001 - both paths must fail alike
                results.append(exc)
    return results[0], results[1], calls


def _assert_same_source(fast, exact) -> None:
    if isinstance(exact, Exception):
        assert type(fast) is type(exact) and str(fast) == str(exact)
        return
    assert not isinstance(fast, Exception), fast
    assert_frame_equal(fast.samples, exact.samples)
    for attr in ("rows_read", "rows_used", "rows_excluded", "repairs", "examples", "warnings"):
        if hasattr(exact.quality, attr):
            assert getattr(fast.quality, attr) == getattr(exact.quality, attr), attr
    assert fast.notes == exact.notes and fast.power == exact.power and fast.gpu_models == exact.gpu_models


HEADERS = {
    "units": "timestamp, power.draw [W], utilization.gpu [%], memory.used [MiB]",
    "index": "timestamp,index,power.draw [W],clocks.sm [MHz],utilization.gpu [%],temperature.gpu,"
             "total_energy_consumption [mJ]",
    "uuid": "timestamp, index, uuid, power.draw [W]",
}


@st.composite
def nvsmi_files(draw) -> tuple[str, str]:
    layout = draw(st.sampled_from(sorted(HEADERS)))
    gpus = draw(st.integers(1, 3))
    lines = [HEADERS[layout]]
    t_ms = 0
    for sweep in range(draw(st.integers(0, 30))):
        t_ms += 100
        for g in range(gpus):
            stamp = datetime(2025, 3, 30, 1, 59, 58) + np.timedelta64(t_ms + g, "ms").item()
            ts = stamp.strftime("%Y/%m/%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"
            kind = draw(st.sampled_from(["ok"] * 10 + ["odd"]))
            num = lambda unit: _number(draw, unit) if kind == "odd" else f"{draw(st.integers(0, 70000)) / 100:.2f}" + (
                f" {unit}" if unit and layout != "index" else "")
            if layout == "units":
                fields = [ts, " " + num("W"), " " + num("%"), " 17 MiB"]
            elif layout == "index":
                fields = [ts, str(g), num(""), str(draw(st.integers(210, 1410))), num(""), num(""), num("")]
            else:
                fields = [ts, f" {g}", f" GPU-{g:04d}", " " + num("W")]
            line = ",".join(fields)
            if kind == "odd" and draw(st.booleans()):
                line = draw(st.sampled_from(["", line + ",extra", line.rsplit(",", 1)[0], "garbage", line.replace("/", "-")]))
            lines.append(line + draw(st.sampled_from(["", "", "", "\r"])))
    return layout, "\n".join(lines) + "\n"


@settings(max_examples=50, deadline=None)
@given(file=nvsmi_files(), tz=st.sampled_from([None, "Europe/Berlin"]))
def test_reader_fast_path_equals_exact_path(tmp_path_factory, file, tz):
    layout, text = file
    path = tmp_path_factory.mktemp("fast") / "node.csv"
    path.write_text(text)
    opts = {"tz": tz, "utc_offset_s": None} if tz else {}
    fast, exact, calls = _read_both(path, **opts)
    _assert_same_source(fast, exact)


def test_reader_fast_path_used_and_equal_on_a_threaded_file(tmp_path):
    """A file over the split size is scanned in parallel ranges; odd rows in both."""
    rng = np.random.default_rng(3)
    rows = [HEADERS["units"]]
    for i in range(40_000):
        ms = i // 4 * 100 + i % 4
        stamp = f"2025/07/26 {(ms // 3_600_000) % 24:02d}:{(ms // 60_000) % 60:02d}:{(ms // 1000) % 60:02d}.{ms % 1000:03d}"
        rows.append(f"{stamp}, {rng.uniform(60, 700):.2f} W, {rng.integers(0, 101)} %, 17 MiB")
    for i in (7, 20_001, 39_000):
        rows[i] = rows[i].replace(" W", " Watt")  # garbage power: unparsable rows
    rows[30_000] = ""
    path = tmp_path / "big.csv"
    path.write_text("\n".join(rows) + "\n")
    assert path.stat().st_size > nvsmi.FAST_SPLIT_BYTES
    fast, exact, calls = _read_both(path)
    assert calls == [True]
    _assert_same_source(fast, exact)
    assert fast.quality.rows_excluded["unparsable_row"] == 3


def test_reader_fast_path_on_real_traces(real_traces):
    for name in ("training_profile/h100-8gpu-gpt-training_100ms.csv",
                 "training_profile/titanx-2gpu-training_100ms.csv",
                 "powertrace-sim/a100-qwen3-8b-vllm-burstgpt_power_250ms.csv"):
        fast, exact, calls = _read_both(real_traces / name)
        assert calls == [True], name
        _assert_same_source(fast, exact)


@pytest.mark.parametrize("unit", ["5%", "%.", "-", "N", "A", "/s", "[%"])
def test_units_that_could_change_a_number_take_the_exact_path(tmp_path, unit):
    path = tmp_path / "odd_unit.csv"
    path.write_text(f"timestamp, power.draw [W], utilization.gpu [{unit}]\n"
                    f"2025/07/26 23:32:09.703, 15 W, 15 {unit}\n"
                    "2025/07/26 23:32:09.803, 16 W, N/A\n"
                    "2025/07/26 23:32:09.903, 17 W, 5\n")
    fast, exact, calls = _read_both(path)
    assert calls == [False]
    _assert_same_source(fast, exact)
    assert fast.samples.height == 3


def test_unit_guard_is_needed():
    """Why the reader keeps units with digits (and ``.``, ``-``, ``[``, ``N/A``) away
    from the kernel: with ``5`` in the strip set the forward grammar reads ``15 5%`` as
    15, while the exact rule strips every trailing 5 and reads 1."""
    table = _strip_table([b" \t\r5%"])
    buf = np.frombuffer(b"15 5%", dtype=np.uint8)
    assert cp.parse_number(buf, 0, len(buf), table, 0)[:3] == (cp.NUMBER, False, 15)
    assert b"15 5%".rstrip(b" \t\r5%").lstrip() == b"1"


def test_large_plain_number_files_take_polars_typed_path_by_default(real_traces):
    """nounits files (the A100 log) over the size limit go to Polars' typed reader
    unless asked otherwise; files with units, and small files, to the kernel."""
    calls = []
    fast_parse = nvsmi._fast_parse
    a100 = real_traces / "powertrace-sim/a100-qwen3-8b-vllm-burstgpt_power_250ms.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nvsmi, "_fast_parse", lambda *a, **k: calls.append(1) or fast_parse(*a, **k))
        nvsmi.read(a100, ReadOptions(utc_offset_s=0))
        assert calls == [1]
        mp.setattr(nvsmi, "KERNEL_PLAIN_MAX_BYTES", 1000)
        nvsmi.read(a100, ReadOptions(utc_offset_s=0))
        assert calls == [1]
        nvsmi.read(real_traces / "training_profile/h100-8gpu-gpt-training_100ms.csv", ReadOptions(utc_offset_s=0))
        assert calls == [1, 1]
