"""Latency histograms as self-contained SVG, and one page that shows every histogram of a run.

Latencies of kernel paths spread over decades (a 30 µs exec next to a 400 ms stall behind a
TCG vCPU), so bins are log-spaced: the shape of the bulk and the tail are both visible.  The
median, p99 and maximum are drawn as lines; hover a bar for its range and count.  No
JavaScript, no external assets: the SVG opens from a CI artifact as it is.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from hil.stats import percentile

SUFFIX = ".latency.svg"
WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 60, 36


def _ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (both > 0)."""
    out = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            t = m * 10.0**exp
            if lo <= t <= hi:
                out.append(t)
    return out


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def render_svg(samples: list[float], title: str, unit: str = "ms", bins: int = 40) -> str:
    """An SVG histogram of ``samples`` (in ``unit``) on a logarithmic axis."""
    values = [v for v in samples if v == v]  # drop NaN
    esc = html.escape
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="11">'
    )
    if not values:
        return head + f'<text x="{LEFT}" y="20">{esc(title)}: no samples</text></svg>'
    p50, p99, top = percentile(values, 50), percentile(values, 99), max(values)
    positive = [v for v in values if v > 0]
    lo = min(positive) if positive else 1.0
    hi = max(top, lo * 1.0001)
    lo_log, hi_log = math.log10(lo), math.log10(hi)
    span = max(hi_log - lo_log, 1e-9)
    counts = [0] * bins
    for v in values:
        k = 0 if v <= lo else min(bins - 1, int((math.log10(v) - lo_log) / span * bins))
        counts[k] += 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max(counts)

    def x_of(v: float) -> float:
        return LEFT + (math.log10(max(v, lo)) - lo_log) / span * plot_w

    out = [
        head,
        f'<text x="{LEFT}" y="14" font-weight="bold">{esc(title)}</text>',
        f'<text x="{LEFT}" y="28" fill="#555">n={len(values)}  p50={_fmt(p50)} {unit}  '
        f"p99={_fmt(p99)} {unit}  max={_fmt(top)} {unit}</text>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#999"/>',
    ]
    for t in _ticks(lo, hi):
        x = x_of(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" fill="#666">{_fmt(t)}</text>'
        )
    out.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end" fill="#666">{unit} (log)</text>'
        f'<text x="4" y="{TOP + 8}" fill="#666">{peak}</text>'
        f'<text x="4" y="{TOP + plot_h}" fill="#666">0</text>'
    )
    bar_w = plot_w / bins
    for k, c in enumerate(counts):
        if not c:
            continue
        h = c / peak * plot_h
        a, b = 10 ** (lo_log + k * span / bins), 10 ** (lo_log + (k + 1) * span / bins)
        out.append(
            f'<rect x="{LEFT + k * bar_w:.1f}" y="{TOP + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
            f'height="{h:.1f}" fill="#1f77b4"><title>{_fmt(a)}–{_fmt(b)} {unit}: {c}</title></rect>'
        )
    row, last_x = 0, -1e9
    for name, v, colour in (("p50", p50, "#2ca02c"), ("p99", p99, "#ff7f0e"), ("max", top, "#d62728")):
        x = x_of(v)
        row = row + 1 if x - last_x < 30 else 0  # lines close together: labels on rows below
        last_x = x
        right = x > WIDTH - RIGHT - 40  # near the right edge: label to the left of the line
        label_x, anchor = (x - 3, "end") if right else (x + 3, "start")
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP - 22}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="{colour}" '
            f'stroke-dasharray="4 3"/><text x="{label_x:.1f}" y="{TOP - 15 + 12 * row}" '
            f'text-anchor="{anchor}" fill="{colour}">{name}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def write(folder: Path, name: str, samples: list[float], title: str, unit: str = "ms") -> Path:
    """Write ``<folder>/<name>.latency.svg``; the run's ``latency.html`` will show it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX}"
    path.write_text(render_svg(samples, title, unit))
    return path


def render_index(folder: Path, out: Path, since: float = 0.0) -> Path | None:
    """One page with every histogram written below ``folder`` since ``since`` (epoch seconds:
    this run's, not a folder left by an earlier run), by test."""
    found = sorted(p for p in folder.rglob(f"*{SUFFIX}") if p.stat().st_mtime >= since)
    if not found:
        return None
    parts = [
        "<!doctype html><meta charset='utf-8'><title>kernel-hil latencies</title>",
        "<body style='font-family:sans-serif'><h1>Latency histograms</h1>",
    ]
    for p in found:
        parts.append(f"<h3>{html.escape(str(p.parent.relative_to(folder)))}</h3>{p.read_text()}")
    parts.append("</body>")
    out.write_text("\n".join(parts))
    return out
