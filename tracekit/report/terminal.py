"""Terminal rendering with rich: one function per command's summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def quality_table(q: dict) -> Table:
    t = Table(title="data quality", show_header=True, header_style="bold")
    t.add_column("what")
    t.add_column("rows", justify="right")
    t.add_column("examples")
    t.add_row("read", _fmt(q["rows_read"]), "")
    t.add_row("used", _fmt(q["rows_used"]), "")
    for kind, n in q["rows_excluded"].items():
        t.add_row(f"excluded: {kind}", _fmt(n), ", ".join(q["examples"].get(kind, [])[:2]))
    for kind, n in q.get("repairs", {}).items():
        t.add_row(f"repaired: {kind}", _fmt(n), ", ".join(q["examples"].get(kind, [])[:2]))
    return t


def print_info(info: dict, console: Console | None = None) -> None:
    """Human summary of ``tracekit info``."""
    console = console or Console()
    d = info["dataset"]
    t = Table(title=f"tracekit info: {info['path']}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("formats", ", ".join(info["formats"]))
    t.add_row("GPUs / hosts", f"{d['gpus']} / {d['hosts']}")
    if info.get("models"):
        t.add_row("GPU models", ", ".join(info["models"]))
    t.add_row("samples", _fmt(d["samples"]))
    t.add_row("time range (UTC)", f"{d['start']} .. {d['end']}  ({_fmt(d['duration_s'])} s)")
    t.add_row("sampling period", f"{_fmt(d['sample_period_ms'])} ms (median over GPUs)")
    t.add_row("effective update period", f"{_fmt(d['effective_period_ms'])} ms (median time between value changes)")
    ps = d["power_semantics"]
    sem = ps["kind"] + (f", {ps['window_s']:g} s window" if ps.get("window_s") else "")
    t.add_row("power semantics", sem)
    console.print(t)
    console.print(quality_table(info["data_quality"]))
    q = info["data_quality"]
    for f in q["files_failed"]:
        console.print(f"[red]failed[/red] {f['error']}")
    for w in q["warnings"]:
        console.print(f"[yellow]warning[/yellow] {w}")
