"""The pytest plugin's crash handling, end to end: an inner pytest session on real guests
(its own lab: one cold boot, then a restore per test) and its JUnit XML.

- a test blocked in a guest command when the guest panics fails at once, the title its message;
- the next test gets a clean guest and passes;
- a test that passes by itself but made the kernel WARN fails, with the WARNING's title;
- a crash in a fixture is an error, not a failure;
- ``@pytest.mark.expect_crash`` fails a test whose guest did not crash;
- evidence: crash.txt and the hil_crash_* properties.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil_linux

INNER = """
import time
import pytest
from hil.deploy import reference as kmods


@pytest.fixture
def crashmod(linux_guest, kmod):
    kmod.load(kmods.build_crashmod(linux_guest.kbuild_dir))
    return linux_guest


@pytest.fixture
def crashing_fixture(crashmod):
    crashmod.run("echo bug > /proc/hil_crash")
    crashmod.run("true")
    return crashmod


def test_a_blocked_when_it_panics(linux_guest):
    t0 = time.monotonic()
    try:
        linux_guest.run("echo c > /proc/sysrq-trigger; sleep 100", timeout=120)
    finally:
        print(f"BLOCKED_FOR {time.monotonic() - t0:.2f}")


def test_b_next_guest_is_clean(linux_guest):
    assert linux_guest.run("echo ok").check().text.strip() == "ok"
    assert linux_guest.crash is None


def test_c_passes_but_warned(crashmod):
    crashmod.run("echo warn > /proc/hil_crash").check()


def test_d_crash_in_fixture(crashing_fixture):
    pass


@pytest.mark.expect_crash(kind="BUG", timeout=3)
def test_e_expected_crash_never_comes(linux_guest):
    linux_guest.run("true").check()


def test_f_warning_only_in_dmesg(crashmod):
    crashmod.run("dmesg -n 1").check()  # from here on the console shows emergencies only
    crashmod.run("echo warn > /proc/hil_crash").check()
"""


@pytest.fixture(scope="module")
def inner(tmp_path_factory):
    d = tmp_path_factory.mktemp("inner")
    (d / "test_inner.py").write_text(INNER)
    junit = d / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            f"--basetemp={d / '.tmp'}",  # not the user's numbered folders: pytest keeps only 3
            f"--junitxml={junit}",
            f"--hil-artifacts={d / 'artifacts'}",
            str(d / "test_inner.py"),
        ],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    cases = {tc.get("name"): tc for tc in ET.parse(junit).getroot().iter("testcase")}
    return proc, cases, d


def _props(tc) -> dict:
    return {p.get("name"): p.get("value") for p in tc.iter("property")}


def test_blocked_test_fails_at_once_with_the_title(inner):
    proc, cases, _ = inner
    tc = cases["test_a_blocked_when_it_panics"]
    fail = tc.find("failure")
    assert fail is not None, proc.stdout[-3000:]
    assert fail.get("message") == "kernel panic: sysrq triggered crash"
    blocked = float(proc.stdout.split("BLOCKED_FOR ")[1].split()[0])
    assert blocked < 20, f"the test stayed blocked {blocked}s on a panicked guest"
    props = _props(tc)
    assert props["hil_crash_kind"] == "PANIC" and props["hil_crash_expected"] == "False"
    text = Path(props["hil_crash_txt"]).read_text()
    assert "title: kernel panic: sysrq triggered crash" in text and "sysrq_handle_crash" in text
    assert Path(props["hil_console_log"]).is_file()


def test_next_test_gets_a_clean_guest(inner):
    _, cases, _ = inner
    tc = cases["test_b_next_guest_is_clean"]
    assert tc.find("failure") is None and tc.find("error") is None


def test_warning_fails_a_passing_test(inner):
    _, cases, _ = inner
    tc = cases["test_c_passes_but_warned"]
    bad = tc.find("failure") if tc.find("failure") is not None else tc.find("error")
    assert bad is not None
    assert bad.get("message") == "WARNING in hil_crash_warn"
    props = _props(tc)
    assert props["hil_crash_function"] == "hil_crash_warn"
    # the kmod fixture names what it loaded: path and SHA-256 of the very file
    ko = Path(props["hil_deployed_hil_crash"])
    assert props["hil_deployed_hil_crash_sha256"] == hashlib.sha256(ko.read_bytes()).hexdigest()
    assert props["hil_deployed_hil_crash_origin"] == "file"


def test_a_report_only_dmesg_shows_fails_the_test_the_same_way(inner):
    """Below the console log level a WARNING never reaches the console; the kmod fixture's
    teardown finds it in dmesg and hands it to the crash monitor: the same title and evidence,
    through the same path, in the teardown phase."""
    proc, cases, _ = inner
    tc = cases["test_f_warning_only_in_dmesg"]
    bad = tc.find("error")  # found at teardown, so pytest reports it as a teardown error
    assert bad is not None, proc.stdout[-3000:]
    assert bad.get("message") == 'failed on teardown with "WARNING in hil_crash_warn"'
    text = Path(_props(tc)["hil_crash_txt"]).read_text()
    assert "source: dmesg" in text


def test_crash_in_a_fixture_is_an_error(inner):
    _, cases, _ = inner
    tc = cases["test_d_crash_in_fixture"]
    err = tc.find("error")
    assert err is not None and tc.find("failure") is None
    assert "kernel BUG in hil_crash_bug" in err.get("message")


def test_expect_crash_marker_without_a_crash_fails(inner):
    _, cases, _ = inner
    fail = cases["test_e_expected_crash_never_comes"].find("failure")
    assert fail is not None and "did not crash" in fail.get("message")
