"""Pieces every HTML report shares: embedded PNG figures, min/max decimation,
tables, and the page frame."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

MAX_POINTS = 20_000

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
    "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
    "img{max-width:100%}.warn{color:#a15c00}"
)


def png(fig) -> str:
    """A matplotlib figure as an ``<img>`` with the PNG inlined (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return '<img src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '"/>'


def decimate(t: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS):
    """Min/max decimation so peaks and dips survive the downsampling (blocks that
    are all NaN are dropped)."""
    n = len(y)
    if n <= max_points:
        return t, y
    per = int(np.ceil(n / (max_points // 2)))
    m = (n // per) * per
    yy = np.where(np.isfinite(y[:m]), y[:m], np.nan).reshape(-1, per)
    tt = t[:m].reshape(-1, per)
    ok = np.isfinite(yy).any(axis=1)
    yy, tt = yy[ok], tt[ok]
    lo = np.nanargmin(yy, axis=1)
    hi = np.nanargmax(yy, axis=1)
    idx = np.sort(np.stack([lo, hi], axis=1), axis=1)
    rows = np.arange(len(yy))[:, None]
    return tt[rows, idx].ravel(), yy[rows, idx].ravel()


def table(rows: list[list], header: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def page_head(title: str) -> str:
    """Doctype, head with the shared style, and the page's <h1>."""
    t = html.escape(title)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>"
