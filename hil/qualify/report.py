"""The run report: one self-contained HTML page a person reads instead of logs.

Written for a kernel engineer opening it the morning after a nightly: the verdict and why at the
top, then each failure with its crash title (new, or known since which run), the guest console
around it and links to the evidence, then flaky tests, every crash of the run, trend plots over
the profile's last runs, the latency histograms and the lab timeline.

Everything is inline (CSS, SVG, a few lines of JavaScript that scroll each console excerpt to its
crash), so the page opens from a CI artifact or a mail attachment as it is.  Every string that
came from a test (names, messages, console text, crash titles) goes through :func:`_esc`.
Stable hooks for tools and tests (:class:`hil.qualify.browser.PageLoad` reads some): ``id="verdict"``
with ``data-verdict``, ``id="reason"``, ``data-count="<outcome>"`` (and ``total``), ``data-fact``
on the run's facts, ``data-driver``, ``data-outcome`` on each failure, ``data-flaky``, ``data-crash``
on each crash row, ``data-crash-state`` (``new``/``known``) on each crash badge, ``data-trend`` and
``data-points`` on each plot.
"""

from __future__ import annotations

import html
import math
import os
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from hil.crash.linux import match_header
from hil.qualify.model import (
    ERROR,
    FAILED,
    FLAKY,
    PASSED,
    SKIPPED,
    CrashSignature,
    Run,
    TestResult,
    TrendPoint,
)
from hil.qualify.verdict import Verdict, plural, run_crashes, verdict
from hil.report import histogram
from hil.report.histogram import _fmt as fmt_number  # the histograms' number style, on the plots too

CONSOLE_LINES = 400  # a longer excerpt is cut from the top: the crash is at its end
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# --- escaping and small formatting -------------------------------------------------------------


def _clean(text: str) -> str:
    """Terminal colour codes removed, other control characters shown as U+FFFD, CR as newline."""
    text = _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("\ufffd", text)


def _esc(value: object) -> str:
    """Any string from a test, made inert in HTML text and in quoted attributes."""
    return html.escape(_clean(str(value)), quote=True)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f" {t.tzname()}" if t.tzinfo else "")


def _value(v: float) -> str:
    return "n/a" if v != v else fmt_number(v)


class _Links:
    """Hrefs from the report to files of the run folder (paths as the model stores them)."""

    def __init__(self, run: Run, out: Path):
        self.base = Path(run.folder) if run.folder else out.parent
        self.here = out.parent

    def href(self, path: str | Path) -> str:
        """``path``: a Path as it is, or a string relative to the run folder."""
        rel = os.path.relpath(path if isinstance(path, Path) else self.base / path, self.here)
        return _esc(quote(rel.replace(os.sep, "/"), safe="/"))  # quote: "#", "?" and "x:" stay a path


# --- sections ----------------------------------------------------------------------------------


def _badge(title: str, expected: bool, known: dict[str, CrashSignature]) -> str:
    sig = known.get(title)
    if sig is None:
        state = '<span class="badge new" data-crash-state="new">new</span>'
    else:
        state = (
            f'<span class="badge known" data-crash-state="known" title="last seen {_esc(sig.last_run)}">'
            f"known (first seen {_esc(sig.first_run)}, seen {plural(sig.count, 'time')})</span>"
        )
    return state + (' <span class="badge expected">expected</span>' if expected else "")


def _console(text: str) -> str:
    """The console excerpt, crash headers marked (the page's script scrolls to the first)."""
    lines = _clean(text).rstrip("\n").split("\n")
    cut = len(lines) - CONSOLE_LINES
    lines = lines[-CONSOLE_LINES:] if cut > 0 else lines
    out = [f'<span class="cut">[{plural(cut, "earlier line")} in the console log]</span>'] if cut > 0 else []
    for line in lines:
        escaped = html.escape(line)
        out.append(f'<mark class="crash-line">{escaped}</mark>' if match_header(line) else escaped)
    return "\n".join(out)


def _artifact_links(r: TestResult, links: _Links) -> str:
    if not r.artifacts:
        return ""
    items = " · ".join(f'<a href="{links.href(p)}">{_esc(name)}</a>' for name, p in r.artifacts.items())
    return f'<p class="artifacts">artifacts: {items}</p>'


def _attempts(r: TestResult) -> str:
    return " → ".join(_esc(a) for a in r.attempts) if r.attempts else _esc(r.outcome)


def _crash_line(r: TestResult, known: dict[str, CrashSignature]) -> str:
    if not r.crash_title:
        return ""
    kind = f' <span class="kind">{_esc(r.crash_kind)}</span>' if r.crash_kind else ""
    return (
        f'<p class="crash">crash: <b>{_esc(r.crash_title)}</b> '
        f"{_badge(r.crash_title, r.crash_expected, known)}{kind}</p>"
    )


def _console_block(r: TestResult, summary: str, open_: bool) -> str:
    if not r.console_excerpt.strip():
        return ""
    return (
        f"<details{' open' if open_ else ''}><summary>{summary}</summary>"
        f'<pre class="console">{_console(r.console_excerpt)}</pre></details>'
    )


def _failure(i: int, r: TestResult, known: dict[str, CrashSignature], links: _Links) -> str:
    message = f'<pre class="message">{_esc(r.message)}</pre>' if r.message and r.message != r.crash_title else ""
    outcome = _esc(r.outcome)
    return (
        f'<section class="failure" id="failure-{i}" data-nodeid="{_esc(r.nodeid)}" data-outcome="{outcome}">'
        f'<h3><span class="outcome {outcome}">{outcome}</span> <code>{_esc(r.nodeid)}</code></h3>'
        f'<p class="muted">attempts: {_attempts(r)} · {r.duration_s:.1f} s</p>'
        f"{_crash_line(r, known)}{message}"
        f"{_console_block(r, 'guest console', True) or '<p class=muted>no guest console captured</p>'}"
        f"{_artifact_links(r, links)}</section>"
    )


def _failures(run: Run, known: dict[str, CrashSignature], links: _Links) -> str:
    failures = run.product_failures
    body = "".join(_failure(i, r, known, links) for i, r in enumerate(failures, 1)) or '<p class="muted">none</p>'
    return f'<h2 id="failures">Failures ({len(failures)})</h2>{body}'


def _flaky(run: Run, known: dict[str, CrashSignature], links: _Links) -> str:
    flaky = [r for r in run.results if r.outcome == FLAKY]
    rows = "".join(
        f'<tr data-flaky="{_esc(r.nodeid)}"><td><code>{_esc(r.nodeid)}</code></td><td>{_attempts(r)}</td>'
        f'<td><pre class="message">{_esc(r.message)}</pre>{_crash_line(r, known)}'
        f"{_console_block(r, 'guest console of the failed attempt', False)}"
        f"{_artifact_links(r, links)}</td></tr>"
        for r in flaky
    )
    body = (
        f"<table><tr><th>test</th><th>attempts</th><th>first failure</th></tr>{rows}</table>"
        if flaky
        else '<p class="muted">none</p>'
    )
    return f'<h2 id="flaky">Flaky tests ({len(flaky)})</h2>{body}'


def _crash_table(run: Run, known: dict[str, CrashSignature]) -> str:
    crashes = run_crashes(run)
    rows = "".join(
        f'<tr data-crash="{_esc(c.title)}" data-expected="{str(c.expected).lower()}">'
        f"<td><b>{_esc(c.title)}</b></td><td>{_esc(c.kind)}</td><td><code>{_esc(c.nodeid)}</code></td>"
        f"<td>{_badge(c.title, c.expected, known)}</td></tr>"
        for c in crashes
    )
    body = (
        f"<table><tr><th>title</th><th>kind</th><th>test</th><th>history</th></tr>{rows}</table>"
        if crashes
        else '<p class="muted">no guest crashed</p>'
    )
    return f'<h2 id="crashes">Crashes ({len(crashes)})</h2>{body}'


def _header(run: Run, v: Verdict) -> str:
    counts = "".join(
        f'<div class="count {o}{" zero" if not run.count(o) else ""}">'
        f'<span class="n" data-count="{o}">{run.count(o)}</span><span class="label">{o}</span></div>'
        for o in (PASSED, FAILED, ERROR, FLAKY, SKIPPED)
    )
    facts = [
        ("run", run.run_id),
        ("profile", run.profile),
        ("host", run.host),
        ("kernel-hil", run.version),
        ("guest kernel", run.guest_kernel or "no Linux guest"),
        ("started", _when(run.started)),
        ("duration", _duration((run.ended - run.started).total_seconds())),
    ]
    dl = "".join(f'<div><dt>{k}</dt><dd data-fact="{k}">{_esc(val)}</dd></div>' for k, val in facts)
    return (
        f'<header class="{"pass" if v.passed else "fail"}">'
        f'<div id="verdict" data-verdict="{v.word}">{v.word}</div>'
        f'<div><div id="reason">{_esc(v.reason)}</div><div class="sub">{_esc(run.profile)} on {_esc(run.host)}'
        f" · {_esc(_when(run.started))} · {_esc(run.run_id)}</div></div></header>"
        f'<div class="counts">{counts}<div class="count total"><span class="n" data-count="total">'
        f'{len(run.results)}</span><span class="label">total</span></div></div><dl class="facts">{dl}</dl>'
    )


def _drivers(run: Run) -> str:
    rows = [(a.name, a.path, a.sha256, a.origin) for a in run.artifacts]
    if not rows:  # the runner gave none at run level: what the tests say they deployed
        seen: dict[str, tuple[str, str]] = {}
        for r in run.results:
            seen.update(r.deployed)
        rows = [(name, path, sha, "") for name, (path, sha) in sorted(seen.items())]
    if not rows:
        return '<p id="drivers" class="muted">no driver deployed</p>'
    body = "".join(
        f'<tr data-driver="{_esc(n)}"><td>{_esc(n)}</td><td><code>{_esc(p)}</code></td>'
        f'<td><code title="{_esc(sha)}">{_esc(sha[:12])}</code></td><td>{_esc(o)}</td></tr>'
        for n, p, sha, o in rows
    )
    return (
        f'<table id="drivers" class="drivers"><tr><th>deployed driver</th><th>path</th><th>sha256</th>'
        f"<th>origin</th></tr>{body}</table>"
    )


# --- trend plots -------------------------------------------------------------------------------

PLOT_W, PLOT_H = 380, 180
P_LEFT, P_RIGHT, P_TOP, P_BOTTOM = 46, 34, 34, 30


def _nice_ceiling(v: float) -> float:
    if not v > 0:
        return 1.0
    base = 10 ** math.floor(math.log10(v))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= v * (1 - 1e-9))


def _plot(
    key: str,
    title: str,
    unit: str,
    trends: list[TrendPoint],
    values: list[float | None],
    *,
    top: float | None = None,
    bars: bool = False,
) -> str:
    """An inline SVG of one value over the runs, oldest left, this run (the last) marked."""
    n = len(values)
    present = [v for v in values if v is not None]
    y_max = top if top is not None else _nice_ceiling(max(present, default=0.0))
    plot_w, plot_h = PLOT_W - P_LEFT - P_RIGHT, PLOT_H - P_TOP - P_BOTTOM
    base_y = P_TOP + plot_h

    def x_of(i: int) -> float:
        return P_LEFT + (plot_w / 2 if n == 1 else plot_w * (0.04 + 0.92 * i / (n - 1)))

    def y_of(v: float) -> float:
        return base_y - min(max(v / y_max, 0.0), 1.0) * plot_h

    last = values[-1]
    now = f"this run: {fmt_number(last)} {unit}".rstrip() if last is not None else "this run: not measured"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" data-trend="{_esc(key)}" '
        f'data-points="{len(present)}" width="{PLOT_W}" height="{PLOT_H}" font-family="sans-serif" font-size="11">',
        f'<text x="{P_LEFT}" y="14" font-weight="bold">{_esc(title)}</text>',
        f'<text x="{PLOT_W - P_RIGHT}" y="14" text-anchor="end" fill="#555">{_esc(now)}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = base_y - frac * plot_h
        out.append(
            f'<line x1="{P_LEFT}" y1="{y:.1f}" x2="{PLOT_W - P_RIGHT}" y2="{y:.1f}" '
            f'stroke="{"#999" if frac == 0 else "#eee"}"/>'
            f'<text x="{P_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#666">'
            f"{fmt_number(frac * y_max)}</text>"
        )
    if unit:
        out.append(f'<text x="4" y="{P_TOP - 8}" fill="#666">{_esc(unit)}</text>')
    step = max(1, math.ceil(n / 6))
    for i, p in enumerate(trends):
        if i % step == 0 or i == n - 1:
            if i != n - 1 and n - 1 - i < step:  # too close to the last label
                continue
            out.append(
                f'<text x="{x_of(i):.1f}" y="{base_y + 16}" text-anchor="middle" fill="#666">'
                f"{_esc(p.started.strftime('%m-%d %H:%M'))}</text>"
            )
    if bars:
        width = max(3.0, min(26.0, plot_w / max(n, 1) * 0.6))
        for i, v in enumerate(values):
            if v is None:
                continue
            h = max(base_y - y_of(v), 1.0 if v else 0.0)
            colour = "#d62728" if i == n - 1 else "#9467bd"
            out.append(
                f'<rect x="{x_of(i) - width / 2:.1f}" y="{base_y - h:.1f}" width="{width:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{_esc(trends[i].run_id)}: {fmt_number(v)}</title></rect>'
            )
            if n <= 15:
                out.append(
                    f'<text x="{x_of(i):.1f}" y="{base_y - h - 3:.1f}" text-anchor="middle" fill="#333">'
                    f"{fmt_number(v)}</text>"
                )
    else:
        segment: list[str] = []
        for i, v in enumerate(values + [None]):  # a missing value breaks the line
            if v is not None:
                segment.append(f"{x_of(i):.1f},{y_of(v):.1f}")
            elif segment:
                if len(segment) > 1:
                    out.append(
                        f'<polyline points="{" ".join(segment)}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
                    )
                segment = []
        for i, v in enumerate(values):
            if v is None:
                continue
            mine = i == n - 1
            out.append(
                f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="{4.5 if mine else 3}" '
                f'fill="{"#ff7f0e" if mine else "#1f77b4"}"><title>{_esc(trends[i].run_id)}: '
                f"{fmt_number(v)} {_esc(unit)}</title></circle>"
            )
    if len(present) == 1:
        out.append(
            f'<text x="{P_LEFT + 6}" y="{base_y - 6}" fill="#999">'
            f"{'only this run so far' if n == 1 else 'one run measured this'}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _is_p99(name: str) -> bool:
    return bool(re.search(r"(^|_)p99(_|$)", name))


def _is_restore(name: str) -> bool:
    return bool(re.search(r"(^|_)restore_s(_|$)", name))


def _unit(name: str) -> str:
    return next((u for suffix, u in (("_ms", "ms"), ("_us", "µs"), ("_s", "s")) if name.endswith(suffix)), "")


def _figure_values(trends: list[TrendPoint], name: str) -> list[float | None]:
    out: list[float | None] = []
    for p in trends:
        v = p.figures.get(name)
        out.append(float(v) if v is not None and v == v and not math.isinf(v) else None)
    return out


def trend_plots(trends: list[TrendPoint]) -> list[str]:
    """Pass rate, crash titles per run, every p99 figure and the restore time, as SVG plots."""
    if not trends:
        return []
    plots = [
        _plot("pass_rate", "pass rate", "%", trends, [p.pass_rate * 100 for p in trends], top=100.0),
        _plot("crash_titles", "crash titles per run", "", trends, [float(p.crash_titles) for p in trends], bars=True),
    ]
    names = sorted({name for p in trends for name in p.figures})
    for name in [n for n in names if _is_p99(n)] + [n for n in names if _is_restore(n)]:
        values = _figure_values(trends, name)
        if any(v is not None for v in values):
            plots.append(_plot(name, name.replace("_", " "), _unit(name), trends, values))
    return plots


def _trends(trends: list[TrendPoint]) -> str:
    plots = trend_plots(trends)
    body = f'<div class="plots">{"".join(plots)}</div>' if plots else '<p class="muted">no history yet</p>'
    span = f" (last {plural(len(trends), 'run')} of this profile)" if trends else ""
    return f'<h2 id="trends">Trends{span}</h2>{body}'


# --- latency, figures, timeline, the rest ------------------------------------------------------


def _latency(run: Run, latency: Path | None, links: _Links) -> str:
    """Every ``*.latency.svg`` of the run folder inline (found as ``histogram.render_index``
    finds them; the run folder is this run's own), captioned with the test that drew it."""
    folder = latency.parent if latency else Path(run.folder) if run.folder else None
    found = sorted(folder.rglob(f"*{histogram.SUFFIX}")) if folder and folder.is_dir() else []
    by_folder = {str(Path(p).parent): r.nodeid for r in run.results for p in r.artifacts.values()}
    figures = []
    for svg in found:
        assert folder is not None  # nothing is found without a folder
        text = svg.read_text(errors="replace")
        if not text.lstrip().startswith("<svg"):
            continue
        rel = svg.parent.relative_to(folder)
        caption = by_folder.get(str(rel), str(rel))
        figures.append(
            f'<figure class="latency"><figcaption><code>{_esc(caption)}</code> · '
            f'<a href="{links.href(svg)}">{_esc(svg.name)}</a></figcaption>{text}</figure>'
        )
    page = f' · <a href="{links.href(latency)}">latency.html</a>' if latency and latency.exists() else ""
    body = "".join(figures) or '<p class="muted">no latency histogram in this run</p>'
    return f'<h2 id="latency">Latency histograms{page}</h2><div class="plots">{body}</div>'


def _figures(run: Run) -> str:
    if not run.figures:
        return '<h2 id="figures">Figures</h2><p class="muted">no figure recorded</p>'
    rows = "".join(
        f'<tr data-figure="{_esc(f.name)}"><td>{_esc(f.name)}</td><td class="num">{_value(f.value)}</td>'
        f"<td><code>{_esc(f.nodeid)}</code></td></tr>"
        for f in run.figures
    )
    return f'<h2 id="figures">Figures</h2><table><tr><th>figure</th><th>value</th><th>test</th></tr>{rows}</table>'


def _coverage(index: Path | None, links: _Links) -> str:
    """``--hil-coverage``: each source's line coverage over the run, and the link to gcovr's
    report (``coverage/index.html`` in the artifacts, :mod:`hil.deploy.coverage`)."""
    if index is None:
        return ""
    from hil.deploy.coverage import read_summary

    rows = "".join(
        f'<tr data-coverage="{_esc(f.module)}/{_esc(f.file)}"><td><code>{_esc(f.module)}/{_esc(f.file)}</code></td>'
        f'<td class="num" data-percent="{f.percent:.1f}">{f.percent:.1f}%</td>'
        f'<td class="num">{f.covered}/{f.total}</td></tr>'
        for f in read_summary(index.parent)
    )
    body = (
        f"<table><tr><th>source</th><th>lines</th><th>covered/total</th></tr>{rows}</table>"
        if rows
        else '<p class="muted">no source in the coverage report</p>'
    )
    link = f'<a id="coverage-report" href="{links.href(index)}">coverage/index.html</a>'
    return f'<h2 id="coverage">Line coverage · {link}</h2>{body}'


def _timeline(timeline: Path | None, links: _Links) -> str:
    """The lab timeline's picture and table, taken from its page (``hil.report.timeline``
    writes them after its ``<h1>``); a link only when the page is not one of those."""
    if timeline is None or not timeline.exists():
        return '<h2 id="timeline">Lab timeline</h2><p class="muted">no timeline recorded</p>'
    link = f'<a href="{links.href(timeline)}">timeline.html</a>'
    text = timeline.read_text(errors="replace")
    head_end = text.find("</h1>")
    content = text[head_end + 5 :] if head_end >= 0 else ""
    content = re.sub(r"</body>\s*(</html>)?\s*$", "", content.strip())
    content = re.sub(r"<(/?)h2\b", r"<\1h3", content)  # its headings sit below this section's
    body = f'<div class="timeline">{content}</div>' if "<svg" in content else f"<p>open {link}</p>"
    return f'<h2 id="timeline">Lab timeline · {link}</h2>{body}'


def _all_tests(run: Run) -> str:
    order = {o: i for i, o in enumerate((ERROR, FAILED, FLAKY, PASSED, SKIPPED))}
    results = sorted(run.results, key=lambda r: (order.get(r.outcome, len(order)), r.nodeid))
    rows = "".join(
        f'<tr data-nodeid="{_esc(r.nodeid)}"><td><code>{_esc(r.nodeid)}</code></td>'
        f'<td><span class="outcome {_esc(r.outcome)}">{_esc(r.outcome)}</span></td>'
        f'<td>{_attempts(r)}</td><td class="num">{r.duration_s:.1f}</td>'
        f"<td>{_esc(r.message) if r.outcome == SKIPPED else ''}</td></tr>"
        for r in results
    )
    return (
        f'<h2 id="tests">All tests ({len(results)})</h2><details><summary>show every test</summary>'
        f"<table><tr><th>test</th><th>outcome</th><th>attempts</th><th>s</th><th>skip reason</th></tr>"
        f"{rows}</table></details>"
    )


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:0 auto;max-width:1320px;
  padding:0 16px 40px}
header{display:flex;gap:20px;align-items:center;color:#fff;padding:14px 20px;border-radius:0 0 8px 8px}
header.pass{background:#2e7d32}header.fail{background:#c62828}
#verdict{font-size:40px;font-weight:800;letter-spacing:2px}#reason{font-size:22px;font-weight:600}
header .sub{opacity:.85;margin-top:2px}
.counts{display:flex;gap:10px;margin:14px 0}
.count{border:1px solid #ddd;border-radius:6px;padding:6px 14px;min-width:70px;text-align:center}
.count .n{display:block;font-size:26px;font-weight:700}.count .label{color:#555;font-size:12px}
.count.failed:not(.zero),.count.error:not(.zero){background:#fdecea;border-color:#e57373}
.count.flaky:not(.zero){background:#fff8e1;border-color:#ffb300}.count.zero .n{color:#aaa}
dl.facts{display:flex;flex-wrap:wrap;gap:6px 26px;margin:0 0 8px}dl.facts dt{color:#666;font-size:12px}
dl.facts dd{margin:0;font-family:ui-monospace,monospace}
nav{position:sticky;top:0;background:#fafafa;border-bottom:1px solid #ddd;padding:6px 0;z-index:1}
nav a{margin-right:14px;color:#1565c0;text-decoration:none}
h2{border-bottom:2px solid #eee;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:6px 0}table.drivers{font-size:13px;margin-bottom:10px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,monospace;font-size:12.5px;word-break:break-all}
.failure{border:1px solid #e57373;border-left:6px solid #c62828;border-radius:6px;padding:4px 14px 10px;margin:14px 0}
.failure h3{margin:8px 0 2px}
.outcome{font-size:12px;padding:1px 6px;border-radius:3px;color:#fff;background:#777}
.outcome.failed,.outcome.error{background:#c62828}.outcome.flaky{background:#ef6c00}.outcome.passed{background:#2e7d32}
.badge{font-size:12px;padding:1px 6px;border-radius:3px}.badge.new{background:#c62828;color:#fff;font-weight:700}
.badge.known{background:#e0e0e0}.badge.expected{background:#bbdefb}
.kind{color:#666;font-size:12px}.muted{color:#888}
pre{white-space:pre-wrap;word-break:break-word;margin:6px 0}
pre.message{background:#fff3f3;padding:6px 8px;max-height:14em;overflow:auto;font-size:12.5px}
pre.console{background:#15171a;color:#d8d8d8;padding:8px;max-height:26em;overflow:auto;font-size:12px;line-height:1.35}
mark.crash-line{background:#7a1f1f;color:#fff;font-weight:700}.cut{color:#888}
summary{cursor:pointer;color:#1565c0}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots svg{border:1px solid #eee;border-radius:4px}
figure.latency{margin:0}figcaption{font-size:12px;color:#555}
.timeline{overflow-x:auto}
"""

# Scroll each console excerpt to its first crash line (else to its end) when it is shown.
JS = """
function hilScroll(pre) {
  var mark = pre.querySelector("mark");
  pre.scrollTop = mark ? Math.max(0, mark.offsetTop - pre.offsetTop - 40) : pre.scrollHeight;
}
document.querySelectorAll("details").forEach(function (d) {
  d.addEventListener("toggle", function () { if (d.open) d.querySelectorAll("pre.console").forEach(hilScroll); });
});
document.querySelectorAll("pre.console").forEach(hilScroll);
"""


def write_report(
    run: Run,
    out: Path,
    *,
    known_crashes: dict[str, CrashSignature],
    trends: list[TrendPoint],
    timeline: Path | None = None,
    latency: Path | None = None,
    verdict_: Verdict | None = None,
    coverage: Path | None = None,
) -> Path:
    """Write the run's report to ``out`` and return it.

    ``known_crashes``: each crash title as the history saw it before this run (absent = new).
    ``trends``: the profile's last runs, oldest first, this run included.
    ``timeline`` / ``latency``: the run folder's ``timeline.html`` / ``latency.html``, if drawn.
    ``verdict_``: the run's verdict as ``hil qualify`` decided it (default: :func:`verdict`).
    ``coverage``: the run's line coverage report (``coverage/index.html``), with ``--hil-coverage``.
    """
    v = verdict_ or verdict(run, known_crashes)
    links = _Links(run, out)
    sections = [
        ("failures", f"Failures ({len(run.product_failures)})"),
        ("crashes", f"Crashes ({len(run_crashes(run))})"),
        ("flaky", f"Flaky ({run.count(FLAKY)})"),
        ("trends", "Trends"),
        ("latency", "Latency"),
        ("figures", "Figures"),
        *([("coverage", "Coverage")] if coverage is not None else []),
        ("timeline", "Timeline"),
        ("tests", "All tests"),
    ]
    nav = "".join(f'<a href="#{a}">{label}</a>' for a, label in sections)
    page = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width'>",
        f"<title>{v.word} · {_esc(run.profile)} · {_esc(run.run_id)}</title><style>{CSS}</style></head><body>",
        _header(run, v),
        _drivers(run),
        f"<nav>{nav}</nav>",
        _failures(run, known_crashes, links),
        _crash_table(run, known_crashes),
        _flaky(run, known_crashes, links),
        _trends(trends),
        _latency(run, latency, links),
        _figures(run),
        _coverage(coverage, links),
        _timeline(timeline, links),
        _all_tests(run),
        f'<p class="muted">kernel-hil {_esc(run.version)} · '
        f"run folder <code>{_esc(run.folder or out.parent)}</code></p>",
        f"<script>{JS}</script></body></html>",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(page), encoding="utf-8", errors="replace")
    return out
