"""The bad-input catalogue: one golden folder per bad or odd input (``tests/data/bad/``).

Each folder holds the input file(s) and an ``expected.json`` with the outcome decided
by design (DESIGN.md "Bad input", the cleaning rules of :mod:`tracekit.io.clean`), not
copied from what the code prints:

``why``
    One line: what the input is and why the outcome is right.
``input``
    The file or folder (relative to the case folder) given to ``tracekit info``.
``args``
    Extra CLI arguments.
``error``, ``exit_code``
    For inputs that must fail: a regex searched in the one-line message (the text
    after ``tracekit: error: ``) and the exit code (2).
``rows_read``, ``rows_used``, ``rows_excluded``, ``repairs``, ``gpus``
    For inputs that are read: the exact accounting.  ``repairs`` is exact too, except
    that ``null_field`` (an optional field that was garbled) is only compared where the
    case names it.
``strict_error``
    Regex the one-line error must match when the same input is read with ``--strict``.
``files_failed_match``
    One regex per file that must be listed in ``files_failed`` (none when absent).
``warnings_match``
    Regexes that must each match one of the warnings.
``dataset``, ``models``
    A subset of ``info["dataset"]`` (nested dicts compared as subsets) and the exact
    ``info["models"]``.
``samples_check``
    Checks on the samples through ``tracekit.open(input, **options)``: ``power_w_min``,
    ``power_w_max``, ``gpu_ids`` (sorted unique), ``gpu_rows`` ({gpu: rows}),
    ``gpu_power_w`` ({gpu: [min, max]}), ``null_counts`` ({column: nulls}).

Every case runs the real CLI in-process (``tracekit.cli.main``) on a copy of the case
folder, from an empty working directory, and checks that ``info`` writes no file.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

import tracekit
from tracekit.cli import main

CASES_DIR = Path(__file__).resolve().parent / "data" / "bad"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "expected.json").is_file())
ERROR_PREFIX = "tracekit: error: "
#: What tracekit.open writes when a reader raised a bare (non-tracekit) exception.
READER_BUG_MARK = "could not parse ("

KNOWN_KEYS = {
    "why", "input", "args", "error", "exit_code", "rows_read", "rows_used", "rows_excluded", "repairs",
    "gpus", "strict_error", "files_failed_match", "warnings_match", "dataset", "models", "samples_check",
}
SAMPLES_CHECK_KEYS = {"options", "power_w_min", "power_w_max", "gpu_ids", "gpu_rows", "gpu_power_w", "null_counts"}
#: Repairs compared only where a case names them.
OPTIONAL_REPAIRS = {"null_field"}


def load_case(case: str) -> dict:
    return json.loads((CASES_DIR / case / "expected.json").read_text())


def cases_with(key: str) -> list[str]:
    return [c for c in CASES if key in load_case(c)]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime_ns)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def copy_case(case: str, tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    """Copy the case folder under tmp_path, chdir to an empty folder beside it."""
    exp = load_case(case)
    work = tmp_path / case
    shutil.copytree(CASES_DIR / case, work)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return work / exp["input"], exp


def run_cli(argv: list[str], capfd) -> tuple[int, str, str]:
    """``tracekit.cli.main(argv)``: (exit code, stdout, stderr).

    Captured at the file-descriptor level, so what native code (a Rust panic hook)
    writes to stderr counts too.
    """
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capfd.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def one_line_error(code: int, out: str, err: str, expected_code: int = 2) -> str:
    """Assert the CLI failed with one ``tracekit: error:`` line; return its message."""
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code == expected_code, f"exit {code}, stderr: {err!r}, stdout: {out[:300]!r}"
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    message = lines[0][len(ERROR_PREFIX):]
    assert READER_BUG_MARK not in message, f"a reader raised a non-tracekit exception: {message}"
    return message


def assert_subset(expected, actual, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        for k, v in expected.items():
            assert k in actual, f"{where}: no key {k!r} in {sorted(actual)}"
            assert_subset(v, actual[k], f"{where}.{k}")
    elif isinstance(expected, float) and isinstance(actual, (int, float)):
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


# -- the catalogue itself -------------------------------------------------------------------


def test_catalogue_is_complete_and_well_formed():
    assert len(CASES) >= 24
    for case in CASES:
        exp = load_case(case)
        assert set(exp) <= KNOWN_KEYS, (case, set(exp) - KNOWN_KEYS)
        assert exp.get("why"), case
        assert (CASES_DIR / case / exp["input"]).exists(), case
        is_error = "error" in exp
        has_counts = {"rows_read", "rows_used", "rows_excluded", "gpus"} <= set(exp)
        assert is_error != has_counts, f"{case}: give either error or the full accounting"
        if is_error:
            re.compile(exp["error"])
            assert exp["exit_code"] == 2
        else:
            assert exp["rows_read"] == exp["rows_used"] + sum(exp["rows_excluded"].values()), case
        for key in ("strict_error",):
            if key in exp:
                re.compile(exp[key])
        assert set(exp.get("samples_check", {})) <= SAMPLES_CHECK_KEYS, case


# -- the outcome of `tracekit info --json` ---------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_info_outcome(case, tmp_path, monkeypatch, capfd):
    target, exp = copy_case(case, tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    code, out, err = run_cli(["info", str(target), "--json", *exp["args"]], capfd)
    assert snapshot(tmp_path) == before, "`tracekit info` wrote or changed a file"

    if "error" in exp:
        message = one_line_error(code, out, err, exp["exit_code"])
        assert re.search(exp["error"], message), f"{message!r} does not match {exp['error']!r}"
        return

    assert "Traceback" not in err
    assert code == 0, f"exit {code}: {err}"
    assert err == ""
    info = json.loads(out)
    assert info["schema"] == "tracekit.info/1"
    dq = info["data_quality"]
    assert dq["rows_read"] == dq["rows_used"] + sum(dq["rows_excluded"].values()), dq
    got = {
        "rows_read": dq["rows_read"],
        "rows_used": dq["rows_used"],
        "rows_excluded": {k: v for k, v in dq["rows_excluded"].items() if v},
        "repairs": {k: v for k, v in dq["repairs"].items()
                    if v and (k not in OPTIONAL_REPAIRS or k in exp["repairs"])},
        "gpus": info["dataset"]["gpus"],
    }
    want = {k: exp[k] for k in got}
    assert got == want, f"examples: {dq['examples']}, failed: {dq['files_failed']}"
    assert info["dataset"]["samples"] == exp["rows_used"]

    failed = dq["files_failed"]
    patterns = exp.get("files_failed_match", [])
    assert len(failed) == len(patterns), failed
    for pattern in patterns:
        assert any(re.search(pattern, f["file"] + ": " + f["error"]) for f in failed), (pattern, failed)
    for f in failed:
        assert READER_BUG_MARK not in f["error"], f"a reader raised a non-tracekit exception: {f}"
    for pattern in exp.get("warnings_match", []):
        assert any(re.search(pattern, w) for w in dq["warnings"]), (pattern, dq["warnings"])
    if "dataset" in exp:
        assert_subset(exp["dataset"], info["dataset"], "dataset")
    if "models" in exp:
        assert info["models"] == exp["models"]


@pytest.mark.parametrize("case", cases_with("strict_error"))
def test_strict_makes_the_anomaly_an_error(case, tmp_path, monkeypatch, capfd):
    target, exp = copy_case(case, tmp_path, monkeypatch)
    code, out, err = run_cli(["info", str(target), "--json", "--strict", *exp["args"]], capfd)
    message = one_line_error(code, out, err)
    assert re.search(exp["strict_error"], message), f"{message!r} does not match {exp['strict_error']!r}"


CLEAN_CASES = [
    c for c in cases_with("rows_read")
    if not load_case(c)["rows_excluded"] and not load_case(c)["repairs"]
    and not load_case(c).get("files_failed_match")
]


@pytest.mark.parametrize("case", CLEAN_CASES)
def test_strict_accepts_inputs_without_anomalies(case, tmp_path, monkeypatch, capfd):
    """Odd but clean inputs (CRLF, gzip, BOM, aliases...) have nothing for --strict to reject."""
    target, exp = copy_case(case, tmp_path, monkeypatch)
    code, out, err = run_cli(["info", str(target), "--json", "--strict", *exp["args"]], capfd)
    assert code == 0, err
    assert json.loads(out)["data_quality"]["rows_used"] == exp["rows_used"]


# -- the samples behind the counts ---------------------------------------------------------------


def _close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=1e-5, abs_tol=1e-4)  # float32 power


@pytest.mark.parametrize("case", cases_with("samples_check"))
def test_samples(case, tmp_path, monkeypatch):
    target, exp = copy_case(case, tmp_path, monkeypatch)
    check = exp["samples_check"]
    ts = tracekit.open(target, **check.get("options", {}))
    samples = ts.samples
    assert samples.height == exp["rows_used"]
    power = samples.get_column("power_w")
    if "power_w_min" in check:
        assert _close(power.min(), check["power_w_min"]), power.min()
    if "power_w_max" in check:
        assert _close(power.max(), check["power_w_max"]), power.max()
    if "gpu_ids" in check:
        assert samples.get_column("gpu").unique().sort().to_list() == sorted(check["gpu_ids"])
    if "gpu_rows" in check:
        rows = dict(samples.group_by("gpu").len().iter_rows())
        assert rows == check["gpu_rows"]
    for gpu, (lo, hi) in check.get("gpu_power_w", {}).items():
        p = samples.filter(pl.col("gpu") == gpu).get_column("power_w")
        assert len(p), f"no samples for {gpu}; have {samples.get_column('gpu').unique().to_list()}"
        assert _close(p.min(), lo) and _close(p.max(), hi), (gpu, p.min(), p.max())
    for column, nulls in check.get("null_counts", {}).items():
        assert column in samples.columns, f"no {column} in {samples.columns}"
        assert samples.get_column(column).null_count() == nulls, column
