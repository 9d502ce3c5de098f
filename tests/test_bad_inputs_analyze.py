"""The bad-input catalogue through ``tracekit analyze``: the same clear error, or the
same counted repair, as ``tracekit info`` (tests/data/bad/<case>/expected.json)."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_bad_inputs import CASES, copy_case, one_line_error, run_cli

#: What analyze may say instead of a result when too little survives cleaning.
TOO_LITTLE = re.compile(r"no samples to analyze|single sample")


@pytest.mark.parametrize("case", CASES)
def test_analyze_outcome(case, tmp_path, monkeypatch, capfd):
    target, exp = copy_case(case, tmp_path, monkeypatch)
    code, out, err = run_cli(["analyze", str(target), "--json", *exp["args"]], capfd)
    if "error" in exp:
        message = one_line_error(code, out, err, exp["exit_code"])
        assert re.search(exp["error"], message), f"{message!r} does not match {exp['error']!r}"
        return
    if exp["rows_used"] < 2 or code == 2:
        # nothing (or one sample per GPU) left to analyze: one clear line, exit 2
        message = one_line_error(code, out, err, 2)
        assert TOO_LITTLE.search(message), message
        return
    assert code in (0, 1), err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["schema"] == "tracekit.analyze/1"
    dq = summary["data_quality"]
    assert dq["rows_read"] == exp["rows_read"]
    assert dq["rows_used"] == exp["rows_used"]
    assert dq["rows_excluded"] == exp["rows_excluded"]
    assert dq["rows_read"] == dq["rows_used"] + sum(dq["rows_excluded"].values())
    assert summary["dataset"]["gpus"] == exp["gpus"]
    # a folder with one broken file: the rest is analyzed and the broken one named
    patterns = exp.get("files_failed_match", [])
    assert len(dq["files_failed"]) == len(patterns)
    for pattern, failed in zip(patterns, dq["files_failed"]):
        assert re.search(pattern, failed["error"]), failed
