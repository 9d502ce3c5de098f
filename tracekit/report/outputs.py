"""Writing results to a folder atomically: everything goes into a temporary sibling
folder that is renamed into place at the end (a crash never leaves half a result)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tracekit.errors import InputError


@contextmanager
def atomic_dir(dst: Path | str, *, overwrite: bool = True):
    """Yield a temporary folder; on success it replaces ``dst``, on error it is removed."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise InputError("output path exists and is not a folder", path=str(dst))
    if dst.exists() and not overwrite:
        raise InputError("output folder already exists (pass --force)", path=str(dst))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.rename(dst, old)
        os.rename(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dst)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def write_analysis(analysis, dst: Path | str) -> Path:
    """summary.json, Parquet tables and report.html of an :class:`Analysis`."""
    from tracekit.report.html import analysis_report

    with atomic_dir(dst) as tmp:
        write_json(tmp / "summary.json", analysis.summary())
        analysis.gpu_stats.write_parquet(tmp / "gpu_stats.parquet")
        analysis.phases.write_parquet(tmp / "phases.parquet")
        if analysis.iterations is not None:
            analysis.iterations.write_parquet(tmp / "iterations.parquet")
        analysis.cluster_power.write_parquet(tmp / "cluster_power.parquet")
        analysis.swings.write_parquet(tmp / "swings.parquet")
        analysis.events.write_parquet(tmp / "events.parquet")
        (tmp / "report.html").write_text(analysis_report(analysis), encoding="utf-8")
    return Path(dst)
