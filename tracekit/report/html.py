"""Self-contained HTML report: plots rendered with matplotlib and embedded as PNG."""

from __future__ import annotations

import html

import numpy as np

from tracekit.report.htmlkit import decimate, page_head, png, pyplot, table

PHASE_COLORS = {"compute": "#d62728", "communication": "#1f77b4", "prompt": "#d62728", "token": "#ff7f0e",
                "idle": "#1f77b4"}


def _plots(a) -> list[tuple[str, str]]:
    plt = pyplot()

    out = []
    cp = a.cluster_power
    t = cp.get_column("ts").to_numpy()
    t0 = t[0]
    ts_s = (t - t0) / np.timedelta64(1, "s")
    y = cp.get_column("power_w").to_numpy() / 1e3
    fig, ax = plt.subplots(figsize=(11, 3.4))
    tx, yx = decimate(ts_s, y)
    ax.plot(tx, yx, lw=0.6, color="black")
    # shade the phase of the first GPU (the cluster moves together in training)
    if a.phases.height:
        first = a.phases.get_column("gpu")[0]
        seg = a.phases.filter(a.phases.get_column("gpu") == first)
        starts = (seg.get_column("start").to_numpy() - t0) / np.timedelta64(1, "s")
        ends = (seg.get_column("end").to_numpy() - t0) / np.timedelta64(1, "s")
        for s, e, ph in zip(starts, ends, seg.get_column("phase").to_list()):
            ax.axvspan(s, e, color=PHASE_COLORS.get(ph, "#999999"), alpha=0.12, lw=0)
    for ev in a.events.to_dicts():
        s = (np.datetime64(ev["start"].replace(tzinfo=None)) - t0) / np.timedelta64(1, "s")
        e = (np.datetime64(ev["end"].replace(tzinfo=None)) - t0) / np.timedelta64(1, "s")
        ax.axvspan(s, e, color="purple", alpha=0.15, lw=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cluster power (kW)")
    ax.set_title(f"Cluster power, phases of {a.phases.get_column('gpu')[0] if a.phases.height else ''} shaded, "
                 "events in purple")
    out.append(("Cluster power", png(fig)))

    sw = a.swings.filter(a.swings.get_column("level") == "cluster")
    if sw.height:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        labels = sw.get_column("window").to_list()
        ax.bar(labels, sw.get_column("max_w").to_numpy() / 1e3, label="max", color="#d62728")
        ax.bar(labels, sw.get_column("p99_w").to_numpy() / 1e3, label="p99", color="#1f77b4", alpha=0.8)
        ax.set_ylabel("swing (kW)")
        ax.set_xlabel("sliding window")
        ax.legend()
        ax.set_title("Cluster swing (max - min) by window")
        out.append(("Swing by window", png(fig)))

    if a.spectrum:
        f, p = a.spectrum["freq_hz"], a.spectrum["psd"]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ok = f > 0
        ax.semilogy(f[ok], p[ok], lw=0.8)
        ax.axvspan(0.1, 20, color="green", alpha=0.1, label="grid band 0.1-20 Hz")
        ax.set_xscale("log")
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("PSD (W²/Hz)")
        ax.legend()
        ax.set_title("Cluster power spectrum (Welch)")
        out.append(("Spectrum", png(fig)))

    hm = a.gpu_heatmap
    if hm is not None and len(hm["gpus"]):
        fig, ax = plt.subplots(figsize=(11, min(8, 1 + 0.06 * len(hm["gpus"]) + 2)))
        dur = (hm["t_ns"][-1] - hm["t_ns"][0]) / 1e9 if len(hm["t_ns"]) > 1 else 1
        im = ax.imshow(hm["power_w"], aspect="auto", interpolation="nearest", cmap="inferno",
                       extent=[0, dur, len(hm["gpus"]), 0])
        fig.colorbar(im, ax=ax, label="W")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("GPU")
        ax.set_title("Per-GPU power")
        out.append(("Per-GPU heatmap", png(fig)))
    return out


def analysis_report(a) -> str:
    s = a.summary()
    d = s["dataset"]
    c = s["levels"]["cluster"]["cluster"]
    parts = [
        page_head("tracekit analyze"),
        f"<p>{d['gpus']} GPUs on {d['hosts']} hosts, {d['samples']:,} samples over {d['duration_s']:.1f} s; "
        f"sampling {d['sample_period_ms']} ms, effective update {d['effective_period_ms']} ms; "
        f"workload <b>{html.escape(s['workload'])}</b>.</p>",
    ]
    parts.append("<h2>Cluster</h2>" + table(
        [[k, v] for k, v in c.items() if k != "swing"], ["metric", "value"]))
    parts.append("<h2>Phases</h2>" + table(
        [[name, *[v[k] for k in ("fraction", "mean_w", "p99_w", "count", "mean_duration_ms")]]
         for name, v in s["phases"].items()],
        ["phase", "time fraction", "mean W", "p99 W", "segments", "mean duration ms"]))
    if s["iterations"]:
        parts.append("<h2>Iterations</h2>" + table([[k, v] for k, v in s["iterations"].items()], ["", ""]))
    if s["events"]:
        parts.append("<h2>Events</h2>" + table(
            [[e["kind"], e["start"], e["end"], f"{e['duration_s']:.2f}", f"{e['depth_w']:.0f}"] for e in s["events"]],
            ["kind", "start", "end", "duration s", "depth W"]))
    if s["violations"]:
        parts.append("<h2>Grid rule violations</h2>" + table(
            [[v["rule"], v["group"], v["start"], v["end"], v["value"], v["limit"]] for v in s["violations"]],
            ["rule", "group", "start", "end", "value", "limit"]))
    for w in s["warnings"]:
        parts.append(f"<p class='warn'>warning: {html.escape(w)}</p>")
    for title, img in _plots(a):
        parts.append(f"<h2>{html.escape(title)}</h2>{img}")
    parts.append("</body></html>")
    return "\n".join(parts)
