"""Fuzzing every input reader: the only exceptions allowed are tracekit errors.

Random bytes, random CSV-ish text, and random mutations and truncations of a small
valid file of each format (built below) are fed

- to ``tracekit.open(file, debug=True)`` (``debug`` re-raises what a reader raised, so a
  bare Python exception is not hidden behind ``files_failed``), and
- to each registered format's reader directly (``fmt.read_file(path, opts)``), followed
  by the shared cleaning.

Allowed: a :class:`tracekit.errors.TracekitError` whose message is one line.  Not
allowed: any other exception, a warning (pytest turns them into errors), a hang (each
example runs under a wall-clock alarm), or a result that breaks the accounting
(``rows_read == rows_used + sum(rows_excluded)``) or the canonical invariants of clean
samples.

``TRACEKIT_FUZZ_EXAMPLES`` raises the number of examples for a longer local run.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import signal
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracekit
from tracekit.errors import TracekitError
from tracekit.io.base import ReadOptions, SourceFrame
from tracekit.io.registry import FORMATS, FORMATS_BY_NAME, detect_format
from tracekit.schema import LINE_COLUMN, TS_DTYPE

# Hypothesis' pytest plugin imports its patch writer (libcst -> mypy_extensions) only
# after a failure; under `filterwarnings = error` the DeprecationWarning of that import
# turns every falsified example into an INTERNALERROR that stops the whole run.  Import
# it once here with warnings silenced so a failure is reported as a failure.
N_EXAMPLES = int(os.environ.get("TRACEKIT_FUZZ_EXAMPLES", "100"))
N_EXAMPLES_PER_READER = N_EXAMPLES
#: Wall-clock limit of one example (a reader that loops forever fails instead of hanging CI).
EXAMPLE_LIMIT_S = 10.0

FUZZ = settings(
    max_examples=N_EXAMPLES,
    deadline=None,  # timing on a shared 2-core machine is noisy; hangs are caught by the alarm
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
FUZZ_PER_READER = settings(FUZZ, max_examples=N_EXAMPLES_PER_READER)


# -- small valid files of every format ------------------------------------------------------------

T0 = datetime(2025, 7, 26, 23, 32, 9, 703000, tzinfo=timezone.utc)


def _nvsmi_csv(index: bool) -> bytes:
    head = "timestamp, index, power.draw [W], clocks.sm [MHz], utilization.gpu [%], temperature.gpu\n"
    if not index:
        head = "timestamp, power.draw [W], utilization.gpu [%], memory.used [MiB]\n"
    rows = []
    # index-less logs need 8 sweeps before the sweep size is inferred from the timing
    for s in range(4 if index else 10):
        for g in range(2):
            t = (T0 + timedelta(milliseconds=100 * s + 3 * g)).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
            if index:
                rows.append(f"{t}, {g}, {300 + 40 * g + 7 * s:.2f} W, 1980 MHz, {80 + s} %, {45 + g}\n")
            else:
                rows.append(f"{t}, {70 + g + s:.2f}, {s} %, 17 MiB\n")
    return (head + "".join(rows)).encode()


def _generic_csv() -> bytes:
    rows = ["ts,gpu,power_w,temp_c\n"]
    for s in range(4):
        for g in range(2):
            t = (T0 + timedelta(milliseconds=100 * s)).isoformat().replace("+00:00", "Z")
            rows.append(f"{t},{g},{301.5 + 10 * g + s},{45 + g}\n")
    return "".join(rows).encode()


def _dcgm_exporter() -> bytes:
    out = []
    for k in range(2):
        ms = 1753572729000 + 1000 * k
        out.append("# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).\n# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n")
        for g in range(2):
            out.append(
                f'DCGM_FI_DEV_POWER_USAGE{{gpu="{g}",UUID="GPU-{g}aa",device="nvidia{g}",'
                f'modelName="NVIDIA H100 80GB HBM3",Hostname="node1"}} {266.17 + g + k} {ms}\n'
            )
        out.append("# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).\n# TYPE DCGM_FI_DEV_SM_CLOCK gauge\n")
        for g in range(2):
            out.append(f'DCGM_FI_DEV_SM_CLOCK{{gpu="{g}",UUID="GPU-{g}aa",Hostname="node1"}} 1980 {ms}\n')
    return "".join(out).encode()


def _zeus() -> bytes:
    t = T0.timestamp()
    doc = {str(g): [[round(t + 0.1 * i, 3), 200.0 + 50 * g + i] for i in range(4)] for g in range(2)}
    return json.dumps(doc).encode()


def _dcgmi() -> bytes:
    lines = ["#Entity   POWER        TMPTR        SMCLK\n", "ID        W            C            MHZ\n"]
    for s in range(3):
        for g in range(2):
            lines.append(f"GPU {g}     {266.17 + g + s:.3f}      {45 + g}           1980\n")
    return "".join(lines).encode()


def _nvsmi_dmon() -> bytes:
    head = (
        "#Date       Time        gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk   pclk\n"
        "#YYYYMMDD   HH:MM:SS    Idx      W      C      C      %      %      %      %    MHz    MHz\n"
    )
    rows = [f" 20250726   23:32:{9 + s:02d}      {g}    {300 + s + g:3d}     45      -     87     35"
            "      0      0   2619   1980\n" for s in range(3) for g in range(2)]
    return (head + "".join(rows)).encode()


def _canonical_frame() -> pl.DataFrame:
    n = 8
    return pl.DataFrame(
        {
            "gpu": [f"node1/{i % 2}" for i in range(n)],
            "ts": [T0 + timedelta(milliseconds=100 * (i // 2)) for i in range(n)],
            "power_w": [300.0 + i for i in range(n)],
        },
        schema={"gpu": pl.String, "ts": TS_DTYPE, "power_w": pl.Float32},
    )


def _parquet(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def _arrow(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_ipc(buf)
    return buf.getvalue()


_UNTIMED = {"interval_s": 0.1, "start": "2025-07-26T23:32:09Z"}

#: (format name, label, file suffix, bytes, ReadOptions fields that make it readable)
EXAMPLES: list[tuple[str, str, str, bytes, dict]] = [
    ("nvsmi_csv", "index", ".csv", _nvsmi_csv(True), {}),
    ("nvsmi_csv", "no_index", ".csv", _nvsmi_csv(False), {}),
    ("generic_csv", "iso", ".csv", _generic_csv(), {}),
    ("dcgm_exporter", "scrapes", ".prom", _dcgm_exporter(), {}),
    ("zeus_json", "timeline", ".json", _zeus(), {}),
    ("dcgmi_dmon", "untimed", ".log", _dcgmi(), _UNTIMED),
    ("nvsmi_dmon", "dt", ".log", _nvsmi_dmon(), {}),
    ("parquet", "canonical", ".parquet", _parquet(_canonical_frame()), {}),
    ("parquet", "mapped", ".parquet", _parquet(
        _canonical_frame().select(pl.col("ts").dt.epoch("ms").alias("time_ms"), pl.col("gpu"), "power_w")), {}),
    ("arrow", "canonical", ".arrow", _arrow(_canonical_frame()), {}),
]
EXAMPLE_IDS = [f"{fmt}-{label}" for fmt, label, *_ in EXAMPLES]
FORMAT_NAMES = [f.name for f in FORMATS]


# -- running one input -------------------------------------------------------------------------


class Hang(Exception):
    """An example ran past EXAMPLE_LIMIT_S."""


@contextmanager
def time_limit(seconds: float = EXAMPLE_LIMIT_S):
    if not hasattr(signal, "setitimer"):  # pragma: no cover - not on POSIX
        yield
        return

    def _alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def write_input(folder: Path, data: bytes, suffix: str, gz: bool = False) -> Path:
    for old in folder.iterdir():
        old.unlink()
    path = folder / (f"input{suffix}.gz" if gz else f"input{suffix}")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def assert_clear_error(exc: TracekitError) -> None:
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} without a message"
    assert "\n" not in message, f"error message is not one line: {message!r}"


def assert_clean_samples(samples: pl.DataFrame) -> None:
    """What cleaning guarantees about the samples it keeps."""
    assert samples.schema["gpu"] == pl.String
    assert samples.schema["ts"] == TS_DTYPE
    assert samples.schema["power_w"] == pl.Float32
    if samples.height == 0:
        return
    assert samples.get_column("gpu").null_count() == 0
    assert samples.get_column("ts").null_count() == 0
    power = samples.get_column("power_w")
    assert power.null_count() == 0 and power.is_finite().all(), "null/NaN/inf power kept"
    assert float(power.min()) >= 0.0, "negative power kept"
    assert samples.select(pl.struct("gpu", "ts").is_duplicated().any()).item() is False, "duplicate (gpu, ts) kept"
    order = samples.select(["gpu", "ts"])
    assert order.equals(order.sort(["gpu", "ts"])), "samples not sorted by (gpu, ts)"


def check_open(path: Path, options: dict) -> None:
    """tracekit.open on one file: a TracekitError, or a TraceSet whose books balance."""
    try:
        with time_limit():
            ts = tracekit.open(path, debug=True, **options)
            info = ts.info()
    except TracekitError as exc:
        assert_clear_error(exc)
        return
    q = ts.quality
    assert q.rows_read == q.rows_used + sum(q.rows_excluded.values()), q.to_dict()
    assert ts.samples.height == q.rows_used
    assert_clean_samples(ts.samples)
    json.dumps(info, default=str)
    assert info["dataset"]["samples"] == q.rows_used


def check_reader(fmt_name: str, path: Path, opts: ReadOptions) -> None:
    """One reader, then the shared cleaning, on one file."""
    from tracekit.io.clean import clean_source

    fmt = FORMATS_BY_NAME[fmt_name]
    try:
        with time_limit():
            src = fmt.read_file(path, opts)
            assert isinstance(src, SourceFrame)
            q = src.quality
            for column in ("gpu", "ts", "power_w"):
                assert column in src.samples.columns, f"reader output lacks {column}: {src.samples.columns}"
            # Every data row is in samples or counted as excluded (tracekit.io.base).
            assert q.rows_read == src.samples.height + sum(q.rows_excluded.values()), (
                q.rows_read, src.samples.height, dict(q.rows_excluded))
            samples, q = clean_source(src, opts)
    except TracekitError as exc:
        assert_clear_error(exc)
        return
    assert q.rows_read == q.rows_used + sum(q.rows_excluded.values())
    assert samples.height == q.rows_used
    assert_clean_samples(samples.drop(LINE_COLUMN) if LINE_COLUMN in samples.columns else samples)


# -- strategies -------------------------------------------------------------------------------

#: Tokens that stress value parsing when spliced into a field.
NASTY_TOKENS = [
    b"", b"-", b"N/A", b"[N/A]", b"[Not Supported]", b"nan", b"NaN", b"inf", b"-inf", b"+Inf", b"-1",
    b"0", b"1e309", b"-1e309", b"99999999999999999999999", b"9223372036854775794", b"140737488355328",
    b"2025/13/45 25:61:61.000", b"1970/01/01 00:00:00.000", b"9999-12-31T23:59:59Z", b"0000-00-00",
    b"GPU 99", b"GPU", b'"', b"'", b",", b";", b"\t", b"\r", b"\r\n", b"\n", b"#", b"[", b"]", b"{", b"}",
    b"\x00", b"\xff", b"\xc3\xa9", b"\xef\xbb\xbf", b"W", b"208.36 W", b"1e-320", b"null", b"true",
    b'{"gpu": [[1, 2]]}', b"[[1753572729.0, 1e400]]", b"1753572729.703", b"17535727297030000000000",
]

CSVISH_ALPHABET = st.sampled_from(
    list("0123456789., :/-WMHz%[]#\n") + ["GPU", "N/A", "power.draw", "timestamp", "index", "\r\n", "pwr", "gpu"]
)


@st.composite
def random_input(draw) -> bytes:
    """Raw random bytes, or random text made of CSV-ish pieces."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=1024))
    return "".join(draw(st.lists(CSVISH_ALPHABET, max_size=300))).encode()


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` after 1-4 random edits: truncation, deletion, insertion, byte flips,
    token splices, and line duplication / deletion / swapping."""
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        op = draw(st.sampled_from(
            ["truncate", "delete", "insert", "flip", "token", "dup_line", "drop_line", "swap_lines"]))
        pos = draw(st.integers(0, n))
        if op == "truncate":
            data = data[:pos]
        elif op == "delete":
            data = data[:pos] + data[pos + draw(st.integers(1, 64)):]
        elif op == "insert":
            data = data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]
        elif op == "flip" and n:
            i = min(pos, n - 1)
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        elif op == "token":
            end = pos + draw(st.integers(0, 12))
            data = data[:pos] + draw(st.sampled_from(NASTY_TOKENS)) + data[end:]
        else:
            lines = data.split(b"\n")
            if len(lines) < 2:
                continue
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(j, lines[i])
            elif op == "drop_line":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
    return data


@st.composite
def mutated_example(draw, examples=tuple(EXAMPLES)):
    fmt, label, suffix, data, options = draw(st.sampled_from(examples))
    return fmt, suffix, draw(mutated(data)), options, draw(st.booleans()) and suffix != ".parquet"


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "label", "suffix", "data", "options"), EXAMPLES, ids=EXAMPLE_IDS)
def test_examples_are_detected_and_read(fmt, label, suffix, data, options, tmp_path):
    """The seeds of the mutations are valid: detected as their format, read completely."""
    path = write_input(tmp_path, data, suffix)
    assert detect_format(path).name == fmt
    ts = tracekit.open(path, debug=True, **options)
    assert ts.quality.rows_read == ts.quality.rows_used > 0, ts.quality.to_dict()
    assert ts.samples.get_column("gpu").n_unique() == 2
    check_reader(fmt, path, ReadOptions(**options))


def test_every_registered_format_has_an_example():
    assert set(FORMAT_NAMES) == {fmt for fmt, *_ in EXAMPLES}


@FUZZ
@given(data=random_input(), gz=st.booleans())
def test_open_random_input(data, gz, tmp_path):
    check_open(write_input(tmp_path, data, ".csv", gz=gz), {})


@FUZZ
@given(case=mutated_example())
def test_open_mutated_examples(case, tmp_path):
    fmt, suffix, data, options, gz = case
    check_open(write_input(tmp_path, data, suffix, gz=gz), options)


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
@FUZZ_PER_READER
@given(data=random_input())
def test_reader_random_input(fmt_name, data, tmp_path):
    check_reader(fmt_name, write_input(tmp_path, data, ".dat"), ReadOptions())


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
@FUZZ_PER_READER
@given(data=st.data())
def test_reader_mutated_own_examples(fmt_name, data, tmp_path):
    own = tuple(e for e in EXAMPLES if e[0] == fmt_name)
    _, suffix, mutated_bytes, options, gz = data.draw(mutated_example(own))
    check_reader(fmt_name, write_input(tmp_path, mutated_bytes, suffix, gz=gz), ReadOptions(**options))


def example_bytes(fmt: str, label: str) -> bytes:
    return next(data for f, lab, _, data, _ in EXAMPLES if (f, lab) == (fmt, label))


def _corrupt(data: bytes, at: int, delete: int = 0, put: bytes = b"") -> bytes:
    return data[:at] + put + data[at + delete:]


#: Minimal inputs the fuzzer found crashing a reader (kept so they stay fixed).
KNOWN_CRASHERS = [
    # dcgmi dmon header without data rows: polars InvalidOperationError (Null dtype)
    pytest.param("dcgmi_dmon", b"#Entity   POWER", _UNTIMED, id="dcgmi-header-only"),
    # generic CSV header without data rows: InvalidOperationError (`bitand`/`bitor` on Null)
    pytest.param("generic_csv", b"ts,gpu,power_w,", {}, id="generic-csv-header-only"),
    pytest.param("generic_csv", b"ts,gpu,power_w,temp_c\n", {}, id="generic-csv-header-only-optional"),
    # a stray quote swallows the file into the header: the error echoed it over many lines
    pytest.param("generic_csv", b'"gpu,power_w\n2025-07-26T23:32:09Z,1\n', {}, id="generic-csv-stray-quote"),
    # Parquet with an intact footer and one byte lost in a data page: polars panics
    pytest.param("parquet", _corrupt(example_bytes("parquet", "canonical"), 96, delete=1), {}, id="parquet-page-byte-lost"),
    # Arrow IPC file with one byte flipped in a buffer: polars panics
    pytest.param("arrow", _corrupt(example_bytes("arrow", "canonical"), 287, delete=1, put=b"\xff"), {}, id="arrow-byte-flipped"),
]


@pytest.mark.parametrize(("fmt_name", "data", "options"), KNOWN_CRASHERS)
def test_known_crashers(fmt_name, data, options, tmp_path):
    path = write_input(tmp_path, data, ".dat")
    check_reader(fmt_name, path, ReadOptions(**options))
    check_open(path, {**options, "format": fmt_name})


def test_time_limit_stops_a_hang():
    """The alarm that guards every example really interrupts a stuck reader."""
    with pytest.raises(Hang):
        with time_limit(0.05):
            while True:
                math.sqrt(2.0)
