"""Standard-library helpers shared by the benchmark scripts whose parent process must
stay light (they time ``tracekit`` in child processes)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    """Peak RSS of this process in MiB (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def tracekit_script(bench: str) -> str:
    """The ``tracekit`` console script installed beside this interpreter (no shim)."""
    exe = Path(sys.executable).parent / "tracekit"
    if exe.is_file():
        return str(exe)
    found = shutil.which("tracekit")
    if found is None:
        raise SystemExit(f"{bench}: no `tracekit` command found (pip install -e .)")
    return found


def emit(report: dict, json_path: Path | None) -> dict:
    """Print the report as JSON (what the runner parses) and write it to ``json_path``."""
    text = json.dumps(report, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")
    return report
