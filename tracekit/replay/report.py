"""Outputs of ``tracekit replay``: the terminal table, the output folder (summary,
tables, replayed traces as canonical datasets, HTML report with a Pareto plot)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from tracekit.report.htmlkit import decimate, page_head, png, pyplot, table
import polars as pl
import pyarrow as pa



# --------------------------------------------------------------------------- terminal


def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def print_replay(summary: dict, console=None) -> None:
    """Human summary of ``tracekit replay``: one row per policy, baseline first."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    d = summary["dataset"]
    it = summary.get("iterations")
    sync = f", synchronous iterations {it['mean_iteration_s']:.3f} s (coupled)" if it and summary.get("sync") else ""
    console.print(f"[bold]{d['gpus']} GPUs[/bold], {d['samples']:,} samples, {d['duration_s']:.1f} s; workload "
                  f"[bold]{summary['workload']}[/bold]; cap window {summary['cap_window_s']:g} s{sync}")
    t = Table(title="replay (cluster)", header_style="bold")
    swing_key = "1s" if any("1s" in p["swing"] for p in summary["policies"]) else None
    cols = ["policy", "peak kW", "cut", "mean kW", "energy", f"swing {swing_key} kW" if swing_key else "swing",
            "slowdown"]
    for c in cols:
        t.add_column(c, justify="left" if c == "policy" else "right")
    for p in summary["policies"]:
        swing = p["swing"].get(swing_key, {}).get("max_w") if swing_key else None
        t.add_row(
            p["name"],
            _fmt(p["peak_w"] / 1e3 if p["peak_w"] is not None else None, 2),
            f"{100 * p['peak_cut']:.1f}%" if p.get("peak_cut") is not None else "-",
            _fmt(p["mean_w"] / 1e3 if p["mean_w"] is not None else None, 2),
            f"{100 * p['energy_change']:+.1f}%" if p.get("energy_change") is not None else "-",
            _fmt(swing / 1e3 if swing is not None else None, 2),
            f"{p['slowdown']:.4f}" if p.get("slowdown") is not None else "-",
        )
    console.print(t)
    for p in summary["policies"][1:]:
        notes = []
        stretch = ", ".join(f"{k} x{v:.3f}" for k, v in p["phase_stretch"].items() if v is not None and v != 1.0)
        if stretch:
            notes.append(f"phases stretch {stretch}")
        if p.get("ttft_factor") is not None:
            notes.append(f"TTFT x{p['ttft_factor']:.3f}, time per output token x{p['tpot_factor']:.3f}")
        if p.get("iterations"):
            notes.append(f"iteration {p['iterations']['base_period_s']:.4f} s -> {p['iterations']['period_s']:.4f} s")
        if p.get("smoothing"):
            s = p["smoothing"]
            notes.append(f"smoothing burns {s['energy_overhead_j'] / 1e6:.3f} MJ extra "
                         f"({_fmt(s['energy_overhead_pct'], 2)} % of the GPUs' energy); smallest per-GPU swing "
                         f"{_fmt(s['min_gpu_swing_w'], 1)} W ({_fmt(s['min_gpu_swing_pct_of_tdp'], 1)} % of TDP)")
        if p.get("storage"):
            s = p["storage"]
            notes.append(f"storage state of charge {100 * s['soc_min']:.1f}..{100 * s['soc_max']:.1f} % "
                         f"(range {100 * s['soc_range']:.1f} %) on {len(s['racks'])} rack(s)")
        if p.get("aggregate_cap"):
            a = p["aggregate_cap"]
            groups = a["groups"]
            caps = sorted({g["cap_w"] for g in groups.values()})
            tops = [g["max_window_w"] for g in groups.values() if g["max_window_w"] is not None]
            cap_txt = f"{caps[0] / 1e3:.3g} kW" if len(caps) == 1 else f"{caps[0] / 1e3:.3g}..{caps[-1] / 1e3:.3g} kW"
            notes.append(f"{a['level']} cap {cap_txt} on {len(groups)} {a['level']}(s), highest window power "
                         f"{_fmt(max(tops) / 1e3 if tops else None, 3)} kW")
        if p.get("mean_clock_mhz") is not None:
            notes.append(f"mean SM clock {p['mean_clock_mhz']:.0f} MHz, capped/locked in "
                         f"{100 * p.get('capped_share', 0):.1f} % of the time")
        if notes:
            console.print(f"[bold]{p['name']}[/bold]: " + "; ".join(notes))
    if summary.get("pareto"):
        console.print("Pareto front (peak, slowdown, energy): " + ", ".join(summary["pareto"]))
    for w in summary.get("warnings", []):
        console.print(f"[yellow]warning[/yellow] {w}")


# --------------------------------------------------------------------------- folder


def safe_name(name: str) -> str:
    """A folder name for a policy (``cap=50%@rack=r3`` -> ``cap_50pct_at_rack_r3``)."""
    s = name.replace("%", "pct").replace("@", "_at_").replace("+", "__")
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")
    return s or "policy"


def write_trace(dst: Path | str, arrays, traceset, name: str, policy: dict | None) -> Path:
    """A replayed trace as a canonical dataset (``tracekit analyze`` reads it)."""
    from tracekit.io.dataset import DatasetWriter
    from tracekit.schema import PowerSemantics

    sem = traceset.power_semantics()
    power = PowerSemantics(kind=sem["kind"] if sem["kind"] in ("instant", "average") else "unknown",
                           window_s=sem.get("window_s"), field="replay")
    order = sorted(range(len(arrays.gpus)), key=lambda i: arrays.gpus[i])
    extra = {"replay": {"policy": name, "params": policy, "source": traceset.path}}
    with DatasetWriter(dst, topology=arrays.topology, power=power, manifest_extra=extra, overwrite=True,
                       sources=[{"path": traceset.path, "format": "replay", "policy": name}]) as writer:
        batch: list[int] = []
        rows = 0
        for i in order + [None]:
            if i is not None:
                batch.append(i)
                rows += int(arrays.offsets[i + 1] - arrays.offsets[i])
            if batch and (i is None or rows >= 4 * 1024 * 1024):
                writer.write(_batchtable(arrays, batch))
                batch, rows = [], 0
    return Path(dst)


def _batchtable(arrays, gpus: list[int]) -> pa.Table:
    spans = [(int(arrays.offsets[i]), int(arrays.offsets[i + 1])) for i in gpus]
    idx = np.concatenate([np.full(b - a, k, dtype=np.int32) for k, (a, b) in enumerate(spans)])
    ts = np.concatenate([arrays.ts_ns[a:b] for a, b in spans])
    power = np.concatenate([arrays.power_w[a:b] for a, b in spans])
    gpu = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array([arrays.gpus[i] for i in gpus], pa.string()))
    return pa.table({"gpu": gpu, "ts": pa.array(ts).cast(pa.timestamp("ns", tz="UTC")),
                     "power_w": pa.array(power.astype(np.float32))})


def write_outputs(result, dst: Path | str) -> Path:
    """summary.json, policies.parquet, cluster_power.parquet, groups.parquet,
    storage.parquet (with storage) and report.html into ``dst`` (an existing folder;
    the CLI gives a temporary one that is renamed into place)."""
    from tracekit.report.outputs import write_json

    dst = Path(dst)
    write_json(dst / "summary.json", result.summary())
    result.table().write_parquet(dst / "policies.parquet")
    pl.concat([r.cluster_power.with_columns(pl.lit(r.name).alias("policy")).select("policy", "ts", "power_w",
                                                                                    "coverage")
               for r in result.results]).write_parquet(dst / "cluster_power.parquet")
    pl.concat([r.groups.with_columns(pl.lit(r.name).alias("policy")) for r in result.results]) \
        .select("policy", "level", "group", "peak_w", "mean_w", "min_w", "p99_w").write_parquet(dst / "groups.parquet")
    storage = [r.storage.with_columns(pl.lit(r.name).alias("policy")) for r in result.results if r.storage is not None]
    if storage:
        pl.concat(storage).write_parquet(dst / "storage.parquet")
    (dst / "report.html").write_text(replay_report(result), encoding="utf-8")
    return dst


# --------------------------------------------------------------------------- html


def _plots(result) -> list[tuple[str, str]]:
    plt = pyplot()

    out = []
    policies = [r.figures for r in result.results]
    if len(policies) > 2:  # a sweep: the Pareto plot
        fig, ax = plt.subplots(figsize=(7, 4.2))
        pts = [p for p in policies[1:] if p["peak_w"] is not None]
        x = np.array([p["slowdown"] for p in pts])
        y = np.array([100 * p["peak_cut"] for p in pts])
        e = np.array([100 * p["energy_change"] for p in pts])
        sc = ax.scatter(x, y, c=e, cmap="viridis", s=50, zorder=3)
        front = set(result.summary().get("pareto", []))
        for p, xi, yi in zip(pts, x, y):
            ax.annotate(p["name"], (xi, yi), fontsize=7, xytext=(4, 3), textcoords="offset points",
                        weight="bold" if p["name"] in front else "normal")
        fr = sorted((p["slowdown"], 100 * p["peak_cut"]) for p in pts if p["name"] in front)
        if fr:
            ax.plot([a for a, _ in fr], [b for _, b in fr], color="#d62728", lw=1, zorder=2, label="Pareto front")
            ax.legend(loc="lower right")
        fig.colorbar(sc, ax=ax, label="energy change (%)")
        ax.set_xlabel("slowdown (x)")
        ax.set_ylabel("cluster peak cut (%)")
        ax.set_title("Sweep: peak cut vs slowdown vs energy")
        out.append(("Pareto plot", png(fig)))
    fig, ax = plt.subplots(figsize=(11, 3.6))
    t0 = None
    for r in result.results[:8]:
        cp = r.cluster_power
        t = cp.get_column("ts").to_numpy()
        if t0 is None and len(t):
            t0 = t[0]
        ts_s = (t - t0) / np.timedelta64(1, "s")
        y = cp.get_column("power_w").to_numpy() / 1e3
        tx, yx = decimate(ts_s, y)
        ax.plot(tx, yx, lw=0.6, label=r.name, color="black" if r.name == "baseline" else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cluster power (kW)")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("Cluster power, baseline and replayed" + (" (first 7 policies)" if len(result.results) > 8 else ""))
    out.append(("Cluster power", png(fig)))
    storage = [r for r in result.results if r.storage is not None]
    if storage:
        fig, ax = plt.subplots(figsize=(11, 3))
        for r in storage[:4]:
            for rack, part in r.storage.group_by("rack", maintain_order=True):
                t = part.get_column("ts").to_numpy()
                ts_s = (t - t[0]) / np.timedelta64(1, "s")
                tx, yx = decimate(ts_s, 100 * part.get_column("soc").to_numpy())
                ax.plot(tx, yx, lw=0.7, label=f"{r.name} {rack[0]}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("state of charge (%)")
        ax.legend(fontsize=7)
        ax.set_title("Rack storage state of charge")
        out.append(("Storage", png(fig)))
    return out


def replay_report(result) -> str:
    """A self-contained HTML report of a :class:`~tracekit.replay.engine.Replay`."""
    s = result.summary()
    d = s["dataset"]
    parts = [
        page_head("tracekit replay"),
        f"<p>{d['gpus']} GPUs, {d['samples']:,} samples over {d['duration_s']:.1f} s; workload "
        f"<b>{html.escape(s['workload'])}</b>; cap controller window {s['cap_window_s']:g} s; synchronous "
        f"coupling {'on' if s['sync'] else 'off'}.</p>",
    ]
    swing_keys = sorted({w for p in s["policies"] for w in p["swing"]}, key=lambda w: _window_s(w))
    rows = []
    for p in s["policies"]:
        cut = p.get("peak_cut")
        rows.append([p["name"], _fmt(p["peak_w"], 0), "-" if cut is None else f"{100 * cut:.2f} %", _fmt(p["p99_w"], 0),
                     _fmt(p["min_w"], 0), _fmt(p["mean_w"], 0), _fmt(p["energy_j"] / 1e6, 3),
                     _pct(p.get("energy_change")),
                     *[_fmt(p["swing"].get(w, {}).get("max_w"), 0) for w in swing_keys],
                     f"{p['slowdown']:.4f}" if p.get("slowdown") is not None else "-",
                     ", ".join(f"{k} {v:.3f}" for k, v in p["phase_stretch"].items() if v is not None)])
    parts.append("<h2>Policies (cluster)</h2>" + table(
        rows, ["policy", "peak W", "peak cut", "p99 W", "min W", "mean W", "energy MJ", "energy change",
               *[f"swing {w} W" for w in swing_keys], "slowdown", "phase stretch"]))
    extra = []
    for p in s["policies"][1:]:
        for key in ("ttft_factor", "tpot_factor", "mean_clock_mhz", "capped_share", "cap_excess_w", "runtime_ratio"):
            if p.get(key) is not None:
                extra.append([p["name"], key, p[key]])
        for key in ("smoothing", "storage", "iterations"):
            if p.get(key):
                for k, v in p[key].items():
                    extra.append([p["name"], f"{key}.{k}", v])
    if extra:
        parts.append("<h2>Details</h2>" + table(extra, ["policy", "figure", "value"]))
    parts.append("<h2>Model</h2>" + table(
        [[m, v["idle_w"], v["f0_mhz"], v["tdp_w"], v["a"], v["g"],
          ", ".join(f"{k} {b:g}" for k, b in v["beta"].items())] for m, v in s["models"].items()],
        ["model", "idle W", "f0 MHz", "TDP W", "a", "g", "beta"]))
    for w in s["warnings"]:
        parts.append(f"<p class='warn'>warning: {html.escape(w)}</p>")
    for title, img in _plots(result):
        parts.append(f"<h2>{html.escape(title)}</h2>{img}")
    parts.append("</body></html>")
    return "\n".join(parts)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:+.2f} %"


def _window_s(label: str) -> float:
    return float(label[:-2]) / 1e3 if label.endswith("ms") else float(label[:-1])
