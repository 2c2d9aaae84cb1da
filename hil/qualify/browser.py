"""Open a page in headless Chromium and tell what a person would see: the DOM after its
scripts ran, every console error, and a screenshot.

``hil qualify`` screenshots its report with it, and the report's tests prove the page loads
cleanly in a real browser.  It speaks the DevTools protocol over ``--remote-debugging-pipe``
(NUL-terminated JSON: Chromium reads fd 3, writes fd 4) rather than reading
``--enable-logging=stderr``: that log prints ``console.log`` and ``console.error`` alike as
``INFO:CONSOLE``, while the protocol gives each message its level, reports uncaught exceptions
and failed loads, and returns the DOM and the screenshot of that same load.  Standard library
only; one browser process per :func:`load`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from hil.errors import EnvironmentProblem, HilError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "apt-get install -y chromium"
# --no-sandbox: CI and the lab run as root, where Chromium's sandbox refuses to start.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-sync",
    "--mute-audio",
    "--remote-debugging-pipe",
)

SETTLE = "new Promise(done => requestAnimationFrame(() => setTimeout(done, 0)))"


@dataclass(frozen=True)
class ConsoleMessage:
    """One console line: ``level`` is ``error``/``warning``/``info``/``debug``/``verbose``;
    ``source`` says who emitted it (``console-api``, ``exception``, ``network``...)."""

    level: str
    text: str
    source: str = ""
    url: str = ""
    line: int = 0

    def __str__(self) -> str:
        where = f" ({self.url}:{self.line})" if self.line > 0 else f" ({self.url})" if self.url else ""
        return f"{self.level} [{self.source}] {self.text}{where}"


class _Reading(HTMLParser):
    """The text of a DOM (scripts and styles left out) and what the run report's stable hooks
    say (see :mod:`hil.qualify.report`): ``data-verdict``, ``data-count``, ``data-crash-state``,
    the pass-rate plot's ``data-points``."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, dom: str):
        super().__init__()
        self.text: list[str] = []
        self.verdict = ""
        self.counts: dict[str, int] = {}
        self.crash_marks: list[str] = []
        self.trend_points = 0
        self.stack: list[tuple[str, dict, list[str]]] = []
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.verdict = a.get("data-verdict", self.verdict)
        if tag == "svg" and a.get("data-trend") == "pass_rate":
            self.trend_points = int(a.get("data-points", "0") or 0)
        if tag not in self.VOID:
            self.stack.append((tag, a, []))

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, a, parts = self.stack.pop()
            text = "".join(parts).strip()
            if "data-count" in a and text.isdigit():
                self.counts[a["data-count"]] = int(text)
            if "data-crash-state" in a:
                self.crash_marks.append(text)
            if open_tag == tag:
                return

    def handle_data(self, data):
        if not any(t in ("script", "style") for t, _, _ in self.stack):
            self.text.append(data)
            for _, _, parts in self.stack:
                parts.append(data)


@dataclass
class PageLoad:
    """What one load of a page produced: the DOM after its scripts ran, every console message,
    the screenshot; and, read from that DOM, its text and the run report's verdict and counts."""

    url: str
    dom: str = ""
    console: list[ConsoleMessage] = field(default_factory=list)
    screenshot: Path | None = None
    text: str = ""
    verdict: str = ""  # PASS / FAIL (``data-verdict``)
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> tests (``data-count``)
    crash_marks: list[str] = field(default_factory=list)  # "new", "known (first seen ...)" per crash shown
    trend_points: int = 0  # runs on the pass-rate plot

    @property
    def errors(self) -> list[ConsoleMessage]:
        """Console errors, uncaught exceptions, unhandled rejections and failed loads."""
        return [m for m in self.console if m.level == "error"]

    console_errors = errors

    def read_dom(self, dom: str) -> None:
        reading = _Reading(dom)
        self.dom, self.text, self.verdict = dom, "".join(reading.text), reading.verdict
        self.counts, self.crash_marks, self.trend_points = reading.counts, reading.crash_marks, reading.trend_points


def find_chromium() -> str:
    """The Chromium (or Chrome) executable: ``$HIL_CHROMIUM``, else the first on ``PATH``."""
    env = os.environ.get("HIL_CHROMIUM", "")
    if env:
        path = shutil.which(env)
        if path is None:
            raise EnvironmentProblem(f"HIL_CHROMIUM={env!r} is not an executable", INSTALL)
        return path
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise EnvironmentProblem("headless Chromium not found (the run report is checked and screenshotted in it)", INSTALL)


class _Pipe:
    """The DevTools protocol on two pipes: commands with ids, events kept in order."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float):
        self.to_browser, self.from_browser, self.deadline = to_browser, from_browser, deadline
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def _read_message(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise ConnectionError("Chromium closed its DevTools pipe")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self.to_browser, data) :]
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            message = self._read_message()
            if "method" in message:
                self.events.append(message)


def _remote_text(args: list[dict]) -> str:
    parts = []
    for a in args:
        if "value" in a:
            parts.append(a["value"] if isinstance(a["value"], str) else json.dumps(a["value"]))
        else:
            parts.append(a.get("description") or a.get("unserializableValue") or a.get("type", ""))
    return " ".join(parts)


def _console(events: list[dict], session: str) -> list[ConsoleMessage]:
    """Console messages from the page's events, in order (levels as Chromium's Log domain)."""
    out = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled":
            level = {"error": "error", "assert": "error", "warning": "warning", "debug": "debug"}.get(
                p.get("type", ""), "info"
            )
            frame = (p.get("stackTrace") or {}).get("callFrames") or [{}]
            out.append(
                ConsoleMessage(
                    level,
                    _remote_text(p.get("args", [])),
                    "console-api",
                    frame[0].get("url", ""),
                    frame[0].get("lineNumber", -1) + 1,
                )
            )
        elif e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = (d.get("exception") or {}).get("description") or d.get("text", "exception")
            out.append(ConsoleMessage("error", text, "exception", d.get("url", ""), d.get("lineNumber", -1) + 1))
        elif e["method"] == "Log.entryAdded":  # failed loads, CSP and other browser-side reports
            entry = p.get("entry", {})
            out.append(
                ConsoleMessage(
                    entry.get("level", "info"),
                    entry.get("text", ""),
                    entry.get("source", ""),
                    entry.get("url", ""),
                    entry.get("lineNumber", 0),
                )
            )
    return out


def _above_4(fd: int) -> int:
    """``fd`` moved to a number above 4, so the shell's ``3<&N 4>&M`` cannot clobber it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class _Chromium:
    """One headless Chromium with a fresh profile, driven over the DevTools pipe; a context
    manager that always ends the process and removes the profile."""

    def __init__(self, exe: str, width: int, height: int, timeout: float):
        self.exe, self.width, self.height, self.timeout = exe, width, height, timeout

    def __enter__(self) -> _Chromium:
        self.profile = tempfile.TemporaryDirectory(prefix="hil-chromium-")
        self.log = tempfile.TemporaryFile()  # its chatter (D-Bus, GPU): read only on failure
        to_r, to_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        from_r, from_w = os.pipe()  # Chromium writes replies on fd 4, we read them
        to_r, from_w = _above_4(to_r), _above_4(from_w)
        # bash puts the pipe ends on fds 3 and 4 (subprocess cannot renumber descriptors; dash
        # cannot name one above 9)
        argv = [
            "/bin/bash",
            "-c",
            f'exec "$0" "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-',
            self.exe,
            *FLAGS,
            f"--user-data-dir={self.profile.name}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, pass_fds=(to_r, from_w)
            )
        except OSError:
            for fd in (to_r, to_w, from_r, from_w):
                os.close(fd)
            self.log.close()
            self.profile.cleanup()
            raise
        os.close(to_r)
        os.close(from_w)
        self.pipe = _Pipe(to_w, from_r, time.monotonic() + self.timeout)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.pipe.call("Browser.close")
        except (OSError, TimeoutError, RuntimeError):
            pass  # already gone: the wait below reaps it
        os.close(self.pipe.to_browser)
        os.close(self.pipe.from_browser)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.profile.cleanup()

    def log_tail(self, lines: int = 15) -> list[str]:
        self.log.seek(0)
        return self.log.read().decode(errors="replace").splitlines()[-lines:]

    def open_page(self) -> str:
        """A new blank tab listening to its console; returns its session id."""
        target = self.pipe.call("Target.createTarget", {"url": "about:blank"})
        session = self.pipe.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        sid = session["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.pipe.call(f"{domain}.enable", session=sid)
        self.pipe.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=sid,
        )
        return sid

    def navigate(self, sid: str, url: str) -> str:
        """Load ``url`` and let the work it deferred past its load event run (a frame and a
        task: ``requestAnimationFrame``, ``setTimeout(0)``); returns the navigation error, if any."""
        nav = self.pipe.call("Page.navigate", {"url": url}, session=sid)
        if nav.get("errorText"):
            return nav["errorText"]
        self.pipe.wait_event("Page.loadEventFired", sid)
        self.pipe.call("Runtime.evaluate", {"expression": SETTLE, "awaitPromise": True}, session=sid)
        return ""

    def dom(self, sid: str) -> str:
        reply = self.pipe.call(
            "Runtime.evaluate", {"expression": "document.documentElement.outerHTML", "returnByValue": True}, session=sid
        )
        return reply["result"].get("value", "")

    def screenshot(self, sid: str, out: Path, full_page: bool) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            size = self.pipe.call("Page.getLayoutMetrics", session=sid)["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": max(size["width"], 1), "height": max(size["height"], 1), "scale": 1},
            )
        shot = self.pipe.call("Page.captureScreenshot", params, session=sid)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return out


def load(
    page: Path | str,
    *,
    screenshot: Path | None = None,
    width: int = 1400,
    height: int = 1000,
    full_page: bool = True,
    timeout: float = 60.0,
) -> PageLoad:
    """Load ``page`` (a file or a URL) in a fresh headless Chromium and return its rendered DOM,
    its console messages and, if ``screenshot`` is given, a PNG of it there (the whole page
    when ``full_page``, else the ``width`` x ``height`` viewport)."""
    url = page if isinstance(page, str) and "://" in page else Path(page).resolve().as_uri()
    result = PageLoad(url)
    with _Chromium(find_chromium(), width, height, timeout) as browser:
        try:
            sid = browser.open_page()
            failed = browser.navigate(sid, url)
            result.read_dom(browser.dom(sid))
            if screenshot is not None:
                result.screenshot = browser.screenshot(sid, screenshot, full_page)
        except OSError as e:  # the pipe broke: Chromium did not start or died
            raise EnvironmentProblem(
                "\n".join([f"{browser.exe} died loading {url}: {e}", *browser.log_tail()]),
                f"does `{browser.exe} --headless --no-sandbox --dump-dom about:blank` run? else {INSTALL}",
            ) from None
        except TimeoutError:
            raise HilError(f"{url} did not finish loading in {timeout:.0f} s in {browser.exe}") from None
        except RuntimeError as e:  # the browser refused a command
            raise HilError(f"{browser.exe} loading {url}: {e}") from None
        result.console = _console(browser.pipe.events, sid)
        if failed:
            result.console.append(ConsoleMessage("error", f"navigation failed: {failed}", "network", url))
    return result


def dump_dom(page: Path | str) -> str:
    """The page's DOM after its scripts ran (what ``chromium --dump-dom`` prints)."""
    return load(page).dom


def console_errors(page: Path | str) -> list[ConsoleMessage]:
    """Console errors, uncaught exceptions and failed loads while ``page`` loads."""
    return load(page).errors


def screenshot(page: Path | str, out: Path, *, width: int = 1400, height: int = 1000, full_page: bool = True) -> Path:
    """A PNG of ``page`` at ``out``."""
    load(page, screenshot=out, width=width, height=height, full_page=full_page)
    return out
