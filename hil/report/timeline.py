"""A timeline of lab steps (boots, restores, saves, file moves) as one self-contained HTML page.

Every xdist worker dumps its :data:`hil.steps.TIMELINE` as JSON at the end of its session;
the controller merges them into ``timeline.html``: one lane per worker, one bar per step,
hover for the step's arguments and duration.  No JavaScript, no external assets.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from hil.steps import StepRecord

COLOURS = {
    "boot": "#d62728",
    "cold-boot-ready": "#ff9896",
    "wait-ready": "#ffbb78",
    "save": "#9467bd",
    "restore": "#2ca02c",
    "destroy": "#7f7f7f",
    "put": "#1f77b4",
    "get": "#aec7e8",
    "image-build": "#8c564b",
    "lab-start": "#bcbd22",
}


def dump(records: list[StepRecord], worker: str, path: Path) -> None:
    rows = [
        {
            "name": r.name,
            "args": {k: str(v) for k, v in r.args.items()},
            "start": r.start,
            "duration": r.duration or 0.0,
            "error": r.error,
        }
        for r in records
    ]
    path.write_text(json.dumps({"worker": worker, "steps": rows}))


def render(dumps: list[Path], out: Path) -> Path | None:
    lanes = []
    for p in sorted(dumps):
        try:
            lanes.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    steps = [s for lane in lanes for s in lane["steps"]]
    if not steps:
        return None
    t0 = min(s["start"] for s in steps)
    t1 = max(s["start"] + s["duration"] for s in steps)
    span = max(t1 - t0, 1e-3)
    width, lane_h, left = 1100, 34, 70
    scale = (width - left - 10) / span
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{lane_h * len(lanes) + 40}" '
        'font-family="sans-serif" font-size="11">'
    ]
    for tick in range(0, int(span) + 1, max(1, int(span / 10))):
        x = left + tick * scale
        svg.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{lane_h * len(lanes)}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{lane_h * len(lanes) + 14}" fill="#666">{tick}s</text>'
        )
    for i, lane in enumerate(lanes):
        y = i * lane_h
        svg.append(f'<text x="4" y="{y + 21}">{html.escape(lane["worker"])}</text>')
        for s in lane["steps"]:
            x = left + (s["start"] - t0) * scale
            w = max(s["duration"] * scale, 1.0)
            colour = "#000" if s["error"] else COLOURS.get(s["name"], "#17becf")
            args = ", ".join(f"{k}={v}" for k, v in s["args"].items())
            tip = f"{s['name']} {s['duration']:.3f}s {args}" + (f" ERROR {s['error']}" if s["error"] else "")
            svg.append(
                f'<rect x="{x:.1f}" y="{y + 6}" width="{w:.1f}" height="{lane_h - 12}" '
                f'fill="{colour}" opacity="0.85"><title>{html.escape(tip)}</title></rect>'
            )
    svg.append("</svg>")
    legend = " ".join(f'<span style="background:{c};color:#fff;padding:1px 5px">{n}</span>' for n, c in COLOURS.items())
    totals: dict[str, list[float]] = {}
    for s in steps:
        totals.setdefault(s["name"], []).append(s["duration"])
    table = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{len(d)}</td><td>{sum(d):.1f}</td>"
        f"<td>{sorted(d)[len(d) // 2]:.3f}</td><td>{max(d):.3f}</td></tr>"
        for n, d in sorted(totals.items(), key=lambda kv: -sum(kv[1]))
    )
    out.write_text(
        "<!doctype html><meta charset='utf-8'><title>kernel-hil timeline</title>"
        "<body style='font-family:sans-serif'><h1>kernel-hil lab timeline</h1>"
        f"<p>{len(steps)} steps on {len(lanes)} worker(s) over {span:.1f} s. Hover a bar for details.</p>"
        f"<p>{legend}</p>{''.join(svg)}"
        "<h2>Time per step kind</h2><table border=1 cellpadding=3 style='border-collapse:collapse'>"
        f"<tr><th>step</th><th>count</th><th>total s</th><th>median s</th><th>max s</th></tr>{table}</table>"
    )
    return out
