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


def print_analysis(summary: dict, console: Console | None = None) -> None:
    """Human summary of ``tracekit analyze``."""
    console = console or Console()
    d = summary["dataset"]
    q = summary["data_quality"]
    console.print(
        f"[bold]{d['gpus']} GPUs[/bold] on {d['hosts']} hosts, {d['samples']:,} samples, {d['duration_s']:.1f} s; "
        f"sampling {_fmt(d['sample_period_ms'])} ms, effective {_fmt(d['effective_period_ms'])} ms, "
        f"grid {_fmt(d.get('resolution_ms'))} ms; workload [bold]{summary['workload']}[/bold]; "
        f"rows {q['rows_read']:,} read / {q['rows_used']:,} used"
    )
    t = Table(title="phases", header_style="bold")
    for col in ("phase", "time share", "mean W", "p99 W", "segments", "mean duration ms"):
        t.add_column(col, justify="right" if col != "phase" else "left")
    for name, p in summary["phases"].items():
        share = f"{100 * p['fraction']:.1f} %" if p["fraction"] is not None else "-"
        t.add_row(name, share, _fmt(p["mean_w"], 1), _fmt(p["p99_w"], 1), _fmt(p["count"]),
                  _fmt(p["mean_duration_ms"], 1))
    console.print(t)
    it = summary.get("iterations")
    if it:
        strag = ", ".join(it["stragglers"]) or "none"
        console.print(f"iterations: {it['count']} of {it['period_s'] * 1e3:.1f} ms "
                      f"(median compute {_fmt(it['median_compute_s'] * 1e3 if it['median_compute_s'] else None, 1)} ms); "
                      f"stragglers: {strag}")
    t = Table(title="power by level", header_style="bold")
    for col in ("level", "group", "peak kW", "mean kW", "min kW", "peak/TDP", "swing 1s kW", "ramp up kW/s",
                "coincidence"):
        t.add_column(col, justify="left" if col in ("level", "group") else "right")
    previous, blocks = None, []
    for level, groups in reversed(list(summary["levels"].items())):
        items = list(groups.items())
        peaks = [m["peak_w"] for _, m in items]
        if previous is not None and peaks == previous and level != "cluster":
            continue  # same groups as the level below (e.g. rack = host without a topology)
        previous = peaks
        blocks.append((level, items))
    for level, items in reversed(blocks):
        for group, m in items[:8]:
            sw1 = m["swing"].get("1s", {}).get("max_w")
            t.add_row(level, group, _kw(m["peak_w"]), _kw(m["mean_w"]), _kw(m["min_w"]), _fmt(m.get("peak_over_tdp")),
                      _kw(sw1), _kw(m.get("ramp_up_w_per_s")), _fmt(m.get("coincidence_factor")))
        if len(items) > 8:
            t.add_row(level, f"... {len(items) - 8} more", "", "", "", "", "", "", "")
    console.print(t)
    c = summary["levels"]["cluster"]["cluster"]
    sw = "  ".join(f"{w}: {_kw(v['max_w'])} kW" for w, v in c["swing"].items())
    console.print(f"cluster swing (max): {sw}")
    if c.get("dominant_hz") is not None:
        console.print(f"spectrum: dominant {c['dominant_hz']} Hz, {100 * c['band_share']:.1f} % of swing energy in "
                      f"0.1-20 Hz, largest component {100 * c['largest_component_share']:.1f} % of the band")
    for e in summary["events"][:10]:
        console.print(f"event: {e['kind']} {e['start']} .. {e['end']} ({e['duration_s']:.2f} s), "
                      f"depth {_kw(e['depth_w'])} kW")
    for v in summary["violations"][:20]:
        console.print(f"[red]rule breached[/red] {v['rule']} ({v['level']} {v['group']}): {v['value']} > {v['limit']}"
                      f" at {v['start']}")
    for w in summary["warnings"]:
        console.print(f"[yellow]warning[/yellow] {w}")


def _kw(v) -> str:
    return "-" if v is None else f"{v / 1e3:,.2f}"
