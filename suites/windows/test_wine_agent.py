"""hilagent under Wine against the real collector on 127.0.0.1.

The agent under test is ``[drivers] windows_agent`` from hil.toml when set (the team's own
build), else the reference test build ``hilagent_test.sys`` (:func:`hil.deploy.artifacts.resolve`);
each test names it, with its SHA-256, in its JUnit properties.  Wine never calls process-notify
routines, so records come from the test build's injection IOCTL (hilagentctl.exe), which feeds
the same queue the callback feeds; a release build has no such device, so the tests that need
it skip with that reason and the others (load, HELLO, REQUEST/END, spill file, unload, ksock
leaks) run on it.  Hashing, encoding, storing, spilling and the collector session are the real
driver code.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from hil.collector import Collector
from hil.deploy import artifacts
from hil.deploy.artifacts import Deployed
from hil.protocol.records import encode_process_record

pytestmark = [pytest.mark.windows, pytest.mark.wine]

SERVICE = "hilagent"
CTL = r"C:\hil\hilagentctl.exe"
INJECTION_DEVICE = "HilAgentTest".encode("utf-16-le")  # \Device\HilAgentTest: test builds only


def has_injection_device(agent: Deployed) -> bool:
    return INJECTION_DEVICE in agent.path.read_bytes()


@pytest.fixture
def agent(hil_config, win_build) -> Deployed:
    """The agent to qualify: ``[drivers] windows_agent``, else the reference test build."""
    return artifacts.resolve(hil_config.drivers, "windows_agent", lambda: win_build["hilagent_test.sys"])


@pytest.fixture
def injectable_agent(agent) -> Deployed:
    """The agent, if it has the test build's injection device (else the test is skipped)."""
    if not has_injection_device(agent):
        pytest.skip(
            f"{_named(agent)} is a release build without the injection IOCTL, and Wine never "
            "calls process-notify routines: this test needs a HIL_TEST_BUILD agent"
        )
    return agent


@pytest.fixture
def release_agent(hil_config, win_build) -> Deployed:
    """The release agent: ``[drivers] windows_agent``, else the reference ``hilagent.sys``."""
    agent = artifacts.resolve(hil_config.drivers, "windows_agent", lambda: win_build["hilagent.sys"])
    if has_injection_device(agent):
        pytest.skip(f"{_named(agent)} is a test build (it has the injection IOCTL): no release build to check")
    return agent


def _named(agent: Deployed) -> str:
    return f"drivers.windows_agent ({agent.path.name})" if agent.origin == "configured" else agent.path.name


@pytest.fixture
def load_agent(wine_driver):
    """``load_agent(agent, port, **params) -> WineDriver``: start it reporting to
    127.0.0.1:port and wait for its "loaded" line."""

    def load(agent: Deployed, port: int, **params):
        drv = wine_driver(agent, SERVICE, CollectorPort=port, **params)
        drv.guest.wait_for_log(r"\[hilagent\] loaded", timeout=20, start=drv.log_start)
        return drv

    return load


def stop_agent(drv):
    drv.stop()
    drv.guest.wait_for_log(r"\[hilagent\] unloaded", timeout=20, start=drv.log_start)
    assert_no_ksock_leaks(drv.guest)


def assert_no_ksock_leaks(guest):
    """ksock logs its live IRP/MDL/buffer/socket counters at cleanup: all must be zero."""
    last = [dl.text for dl in guest.dbgprint_lines() if dl.text.startswith("[ksock] cleanup:")][-1]
    assert last == "[ksock] cleanup: irps=0 mdls=0 buffers=0 sockets=0", last


def inject(guest, kind, pid, path=None):
    args = [CTL, "inject", kind, str(pid)] + ([path] if path else [])
    guest.run(args, timeout=30).check()


def test_agent_loads_identifies_answers_and_unloads(wine_guest, agent, load_agent, collector):
    drv = load_agent(agent, collector.port, BackoffMaxMs=500)
    aid = collector.wait_for_agent(kind="win-wdm", timeout=20)
    assert aid.os.startswith("windows-")
    assert aid.host
    # Every REQUEST gets exactly one END, on demand too.
    collector.flush(timeout=10)
    collector.flush(timeout=10)
    stats = collector.stats(aid)
    assert stats.batches >= 3  # the one after HELLO + two flushes
    assert stats.protocol_errors == 0 and collector.protocol_errors == 0
    assert stats.records == 0

    stop_agent(drv)
    texts = [dl.text for dl in wine_guest.dbgprint_lines()]
    assert "[hilagent] network stopped" in texts and "[hilagent] worker stopped" in texts
    assert not wine_guest.crashed()


def test_injected_records_arrive_byte_exact(wine_guest, injectable_agent, load_agent, collector):
    payload = bytes(range(256)) * 1000 + b"tail"
    wine_guest.write_file(r"C:\hil\payload.exe", payload)
    wine_guest.write_file("C:\\hil\\d\u00e4t\u00e4 \u6d4b\u8bd5.exe", b"MZ unicode path")
    drv = load_agent(injectable_agent, collector.port)
    aid = collector.wait_for_agent(kind="win-wdm", timeout=20)

    notepad = r"C:\windows\system32\notepad.exe"
    cases = [
        (4101, r"C:\hil\payload.exe", payload),
        (4102, notepad, wine_guest.read_file(notepad)),
        (4103, "C:\\hil\\d\u00e4t\u00e4 \u6d4b\u8bd5.exe", b"MZ unicode path"),
    ]
    for pid, path, _ in cases:
        inject(wine_guest, "created", pid, path)
    inject(wine_guest, "exited", 4101)

    for pid, path, content in cases:
        rec = collector.wait_for(kind="created", pid=pid, timeout=15)
        assert rec.image_path == "\\??\\" + path
        assert rec.image_size == len(content)
        assert rec.sha256 == hashlib.sha256(content).digest()
    exited = collector.wait_for(kind="exited", pid=4101, timeout=15)
    assert exited.image_size == 0 and exited.image_path == "" and exited.sha256 == bytes(32)

    assert len(collector.records(agent=aid, pid=4101, kind="created")) == 1
    assert collector.stats(aid).protocol_errors == 0
    stop_agent(drv)

    # Byte-exact on the wire: the capture of the agent's connection (complete once the agent
    # closed it) holds each record exactly as the reference encoder produces it.
    wire = wait_for_capture(collector, expected=len(cases))
    for pid, path, content in cases:
        want = encode_process_record(
            "created", pid, ("\\??\\" + path).encode("utf-8"), len(content), hashlib.sha256(content).digest()
        )
        assert want in wire, f"record for pid {pid} not found byte-exact in the capture"


def wait_for_capture(collector, expected: int, timeout: float = 10.0) -> bytes:
    """The concatenated capture files once they hold at least ``expected`` RECORDS frames."""
    deadline = time.monotonic() + timeout
    while True:
        wire = b"".join(p.read_bytes() for p in collector.capture_files() if p.exists())
        if wire.count(b"KH\x01\x03") >= 1 and wire.count(b"\x00\\??\\C:") >= expected:
            return wire
        if time.monotonic() > deadline:
            return wire
        time.sleep(0.05)


def test_agent_keeps_records_across_collector_restart(wine_guest, injectable_agent, load_agent, tmp_path, free_port):
    port = free_port
    first = Collector(port=port, interval=0.3, capture_dir=tmp_path / "c1").start()
    try:
        drv = load_agent(injectable_agent, port, SpillAfterMs=400, BackoffMaxMs=300, SpillId=7)
        first.wait_for_agent(kind="win-wdm", timeout=20)
        inject(wine_guest, "created", 5001, r"C:\windows\system32\notepad.exe")
        first.wait_for(kind="created", pid=5001, timeout=15)
    finally:
        first.stop()

    mark = len(wine_guest.dbgprint_lines())
    wine_guest.wait_for_log(r"\[hilagent\] connection lost", timeout=15)
    # Saved while nobody listens; they wait long enough to be spilled to disk.
    for pid in (5002, 5003):
        inject(wine_guest, "created", pid, r"C:\windows\system32\notepad.exe")
    inject(wine_guest, "exited", 5001)
    wine_guest.wait_for_log(r"\[hilagent\] spilled \d+ records", timeout=15, start=mark)
    assert wine_guest.exists(r"C:\windows\hilagent-7.spill")
    inject(wine_guest, "created", 5004, r"C:\windows\system32\notepad.exe")  # stays in memory

    second = Collector(port=port, interval=0.3, capture_dir=tmp_path / "c2").start()
    try:
        aid = second.wait_for_agent(kind="win-wdm", timeout=20)
        for pid in (5002, 5003, 5004):
            second.wait_for(kind="created", pid=pid, timeout=15)
        second.wait_for(kind="exited", pid=5001, timeout=15)
        second.flush()
        assert second.stats(aid).protocol_errors == 0
        # Delivered records leave the agent: no duplicates on later polls, spill file gone.
        assert len(second.records(pid=5002)) == 1
        assert not wine_guest.exists(r"C:\windows\hilagent-7.spill")
        stop_agent(drv)
    finally:
        second.stop()


def test_unload_spills_undelivered_records_and_next_load_sends_them(
    wine_guest, injectable_agent, load_agent, tmp_path, free_port
):
    port = free_port  # no collector yet: the agent keeps retrying with backoff
    drv = load_agent(injectable_agent, port, SpillAfterMs=600000, BackoffMaxMs=200, SpillId=9)
    inject(wine_guest, "created", 6001, r"C:\windows\system32\notepad.exe")
    wine_guest.wait_for_log(r"\[hilagent\] saved created pid=6001", timeout=15)
    stop_agent(drv)
    assert wine_guest.exists(r"C:\windows\hilagent-9.spill")

    with Collector(port=port, interval=0.3, capture_dir=tmp_path / "c") as c:
        drv = load_agent(injectable_agent, port, SpillAfterMs=600000, BackoffMaxMs=200, SpillId=9)
        rec = c.wait_for(kind="created", pid=6001, timeout=20)
        assert rec.image_size > 0
        stop_agent(drv)


def test_release_build_has_no_injection_device(wine_guest, release_agent, load_agent, collector):
    drv = load_agent(release_agent, collector.port)
    collector.wait_for_agent(kind="win-wdm", timeout=20)
    res = wine_guest.run([CTL, "inject", "created", "1", r"C:\windows\system32\notepad.exe"])
    assert res.exit_code != 0 and b"open: error" in res.stdout
    assert not any("TEST BUILD" in dl.text for dl in wine_guest.dbgprint_lines())
    stop_agent(drv)


def _read_frames(conn, dec, want, timeout=15.0):
    """Read from a raw socket until ``want(frames)`` holds; returns all frames decoded."""
    frames = []
    deadline = time.monotonic() + timeout
    while not want(frames):
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        data = conn.recv(65536)
        if not data:
            break
        frames += dec.feed_all(data)
        if time.monotonic() > deadline:
            break
    return frames


def test_agent_drops_a_bad_collector_and_keeps_records(wine_guest, injectable_agent, load_agent, free_port):
    """A peer that answers HELLO with garbage: the agent closes that connection, reconnects
    with HELLO, and still delivers every saved record, in a well-formed batch."""
    import socket

    from hil.protocol import codec

    srv = socket.socket()
    srv.bind(("127.0.0.1", free_port))
    srv.listen(2)
    srv.settimeout(30)
    try:
        drv = load_agent(injectable_agent, free_port, BackoffMaxMs=200)
        inject(wine_guest, "created", 7001, r"C:\windows\system32\notepad.exe")
        wine_guest.wait_for_log(r"\[hilagent\] saved created pid=7001", timeout=15)

        bad, _ = srv.accept()
        with bad:
            frames = _read_frames(bad, codec.StreamDecoder(), lambda f: len(f) >= 1)
            assert isinstance(frames[0], codec.Hello) and frames[0].kind == "win-wdm"
            bad.sendall(b"HTTP/1.1 200 OK\r\n\r\n")  # not our protocol
            wine_guest.wait_for_log(r"protocol error from collector: BadMagic", timeout=15)

        good, _ = srv.accept()
        with good:
            dec = codec.StreamDecoder()
            assert isinstance(_read_frames(good, dec, lambda f: len(f) >= 1)[0], codec.Hello)
            good.sendall(codec.encode_request(41))
            frames = _read_frames(good, dec, lambda f: any(isinstance(x, codec.End) for x in f))
            end = frames[-1]
            assert isinstance(end, codec.End) and (end.request_id, end.count) == (41, 1)
            records = [r for f in frames if isinstance(f, codec.Records) for r in f.records]
            assert len(records) == 1
            # an oversized REQUEST is a protocol error: the agent hangs up again
            good.sendall(b"KH\x01\x02" + (4096).to_bytes(4, "little"))
            wine_guest.wait_for_log(r"protocol error from collector: UnexpectedFrame", timeout=15)
        stop_agent(drv)
    finally:
        srv.close()


def test_spill_file_written_by_reference_encoder_is_sent_and_torn_tail_ignored(
    wine_guest, agent, load_agent, collector
):
    """The spill file is records in wire encoding: one written by the Python reference encoder
    (plus a torn record, as a crash in the middle of an append leaves) is delivered at the next
    load; the torn tail is skipped with a log line, not sent."""
    good = encode_process_record("created", 8001, b"\\??\\C:\\spilled\\by\\python.exe", 1234, bytes(range(32)))
    torn = encode_process_record("exited", 8002, b"")[:-5]
    wine_guest.write_file(r"C:\windows\hilagent-11.spill", good + torn)
    drv = load_agent(agent, collector.port, SpillId=11)
    rec = collector.wait_for(kind="created", pid=8001, timeout=20)
    assert (rec.image_path, rec.image_size, rec.sha256) == ("\\??\\C:\\spilled\\by\\python.exe", 1234, bytes(range(32)))
    wine_guest.wait_for_log(r"spill file: ignoring \d+ bytes", timeout=10)
    collector.flush()
    collector.assert_none(pid=8002, flush=False)
    assert not wine_guest.exists(r"C:\windows\hilagent-11.spill")
    stop_agent(drv)
