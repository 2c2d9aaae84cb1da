"""Collector integration tests: real asyncio sockets on 127.0.0.1, the Python reference agent."""

from __future__ import annotations

import hashlib
import socket
import struct
import time

import pytest

from hil.collector import Collector, RecordTimeout, UnexpectedRecord
from hil.collector.agent_client import ReferenceAgent
from hil.errors import HilError
from hil.protocol import (
    encode_batch,
    encode_end,
    encode_frame,
    encode_hello,
    encode_process_record,
    encode_raw_record,
)
from hil.protocol.codec import RECORDS

SHA = hashlib.sha256(b"notepad").digest()


def wait_until(cond, timeout=10.0, what="condition"):
    """Poll a cheap condition with a deadline (for state owned by another thread)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def error_names(collector):
    return [e.error for e in collector.errors()]


@pytest.fixture
def agent(collector):
    with ReferenceAgent("guest-a", kind="py-ref", os="linux").connect(collector.address) as a:
        collector.wait_for_agent(host="guest-a", timeout=10)
        yield a


def test_wait_for_created_record(collector, agent):
    t0, w0 = time.monotonic(), time.time()
    agent.created(pid=4242, image_path="C:\\Windows\\notepad.exe", image_size=201216, sha256=SHA)
    rec = collector.wait_for(kind="created", pid=4242, timeout=10)
    assert rec.image_path == "C:\\Windows\\notepad.exe"
    assert rec.image_size == 201216 and rec.sha256 == SHA
    assert rec.host == "guest-a" and rec.agent.kind == "py-ref"
    assert rec.mono >= t0 and rec.wall >= w0 - 1
    st = collector.stats("guest-a")
    assert st.records == 1 and st.protocol_errors == 0 and st.reconnects == 0
    assert st.bytes > 0


def test_flush_brings_every_saved_record(collector, agent):
    for pid in range(500):
        agent.created(pid=pid, image_path=f"/usr/bin/p{pid}")
    collector.flush(timeout=10)
    got = collector.records(agent="guest-a", kind="created")
    assert [r.pid for r in got] == list(range(500))
    assert agent.saved == 0


def test_field_predicates_and_sha_hex(collector, agent):
    agent.created(pid=1, image_path="/bin/a")
    agent.exited(pid=2, image_path="/usr/lib/thing.so", image_size=9, sha256=SHA)
    rec = collector.wait_for(image_path=lambda p: p.endswith(".so"), sha256=SHA.hex(), timeout=10)
    assert rec.pid == 2 and rec.kind == "exited"
    rec = collector.wait_for(lambda r: r.pid == 1 and r.kind == "created", timeout=10)
    assert rec.image_path == "/bin/a"


def test_wait_for_timeout_names_nearest_records(collector, agent):
    agent.created(pid=10, image_path="/bin/true")
    agent.created(pid=11, image_path="/bin/false")
    collector.flush()
    with pytest.raises(RecordTimeout) as info:
        collector.wait_for(kind="created", pid=12, image_path="/bin/false", timeout=0.3)
    msg = str(info.value)
    assert "pid=12" in msg and "nearest records" in msg
    nearest = msg.split("nearest records", 1)[1]
    # the record matching 2 of 3 fields is listed before the one matching 1 of 3
    assert nearest.index("[2/3]") < nearest.index("[1/3]")
    assert "/bin/false" in nearest.splitlines()[1]
    assert "fix:" in msg


def test_assert_none(collector, agent):
    agent.created(pid=7, image_path="/bin/ok")
    collector.assert_none(kind="created", pid=8)
    with pytest.raises(UnexpectedRecord, match="pid=7"):
        collector.assert_none(kind="created", pid=7)


def test_reconnect_counts_same_identity(collector):
    a = ReferenceAgent("guest-r").connect(collector.address)
    a.created(pid=1, image_path="/one")
    collector.wait_for(pid=1, timeout=10)
    a.close()
    wait_until(lambda: not collector.stats("guest-r").connected, what="disconnect seen")
    a.connect(collector.address)
    a.created(pid=2, image_path="/two")
    collector.wait_for(pid=2, host="guest-r", timeout=10)
    st = collector.stats("guest-r")
    assert st.reconnects == 1 and st.connections == 2 and st.records == 2
    assert len(st.capture_files) == 2
    a.close()


def test_wait_for_agent_timeout_message(collector):
    with pytest.raises(RecordTimeout, match="no agent.*host='nobody'"):
        collector.wait_for_agent(host="nobody", timeout=0.2)


def test_unknown_host_in_query_is_named(collector):
    with pytest.raises(HilError, match="no agent with host name 'ghost'"):
        collector.stats("ghost")


def test_bad_frame_closes_only_that_connection(collector, agent):
    agent.created(pid=1, image_path="/good/before")
    collector.flush()
    with ReferenceAgent("guest-b").connect(collector.address) as bad:
        bad.created(pid=50, image_path="/bad/before")
        collector.wait_for(pid=50, timeout=10)
        bad.send_raw(b"GET / HTTP/1.1\r\n\r\n")
        assert bad.closed.wait(10), "collector did not close the bad connection"
    assert error_names(collector) == ["BadMagic"]
    assert collector.stats("guest-b").protocol_errors == 1
    assert collector.stats("guest-a").protocol_errors == 0
    # the good agent keeps working; records received before the error are kept
    agent.created(pid=2, image_path="/good/after")
    collector.wait_for(pid=2, timeout=10)
    assert [r.pid for r in collector.records(agent="guest-b")] == [50]
    assert not agent.closed.is_set()


def test_oversized_frame_rejected_from_header(collector):
    with ReferenceAgent("big").connect(collector.address) as a:
        collector.wait_for_agent(host="big")
        a.send_raw(b"KH" + struct.pack("<BBI", 1, RECORDS, 10 << 20))  # 10 MiB announced
        assert a.closed.wait(10)
    assert error_names(collector) == ["FrameTooLarge"]


def test_records_before_hello_rejected(collector):
    with ReferenceAgent("nohello").connect(collector.address, hello=False) as a:
        a.send_raw(encode_batch(1, [encode_process_record("created", 1, "/x")]))
        assert a.closed.wait(10)
    assert error_names(collector) == ["UnexpectedFrame"]
    assert collector.agents() == []
    assert collector.records() == []


def test_unsolicited_and_miscounted_batches_rejected(collector):
    rec = encode_process_record("created", 1, "/x")
    with socket.create_connection(collector.address) as s:
        s.sendall(encode_hello("raw", "linux", "raw-1"))
        s.settimeout(10)
        s.recv(12)  # REQUEST 1, sent at once after HELLO
        s.sendall(encode_frame(RECORDS, rec) + encode_end(1, 2))  # END says 2, 1 was sent
        assert s.recv(100) == b""  # closed by the collector
    ev = collector.errors()
    assert [e.error for e in ev] == ["UnexpectedFrame"] and "says 2 records" in ev[0].message
    assert [r.pid for r in collector.records()] == [1]  # the valid RECORDS frame is kept


def test_unknown_record_types_are_skipped_and_counted(collector):
    with socket.create_connection(collector.address) as s:
        s.sendall(encode_hello("raw", "linux", "raw-2"))
        s.settimeout(10)
        s.recv(12)
        body = encode_raw_record(77, b"future") + encode_process_record("exited", 3, "/y")
        s.sendall(encode_frame(RECORDS, body) + encode_end(1, 2))
        collector.wait_for(pid=3, timeout=10)
        st = collector.stats("raw-2")
        assert st.skipped == 1 and st.records == 1 and st.protocol_errors == 0


def test_agent_buffer_overflow_is_reported(collector):
    with ReferenceAgent("small", buffer_bytes=300).connect(collector.address) as a:
        collector.wait_for_agent(host="small")  # flush() asks agents that said HELLO
        kept = [a.created(pid=i, image_path="/p" * 10) for i in range(10)]
        collector.flush()
        assert collector.stats("small").dropped_by_agent == kept.count(False) > 0
        assert len(collector.records(agent="small")) == kept.count(True)


def test_capture_file_holds_every_raw_byte(collector, agent):
    agent.created(pid=5, image_path="/cap")
    collector.flush()
    agent.close()
    wait_until(lambda: not collector.stats("guest-a").connected, what="disconnect")
    (path,) = collector.stats("guest-a").capture_files
    data = path.read_bytes()
    assert data.startswith(encode_hello("py-ref", "linux", "guest-a"))
    assert encode_process_record("created", 5, "/cap") in data


def test_stalled_peers_are_dropped(tmp_path):
    with Collector(interval=5, frame_timeout=0.3, hello_timeout=0.3, reply_timeout=0.3, capture_dir=tmp_path) as c:
        silent = socket.create_connection(c.address)  # never says HELLO
        half = ReferenceAgent("half").connect(c.address)
        c.wait_for_agent(host="half")
        wait_until(lambda: half.requests_answered >= 1, what="reply to the first REQUEST")
        half.send_raw(encode_batch(1, [encode_process_record("created", 1, "/x")])[:20])
        mute = socket.create_connection(c.address)  # says HELLO, never answers REQUEST
        mute.sendall(encode_hello("raw", "linux", "mute"))
        assert half.closed.wait(10)
        silent.settimeout(10)
        mute.settimeout(10)
        assert silent.recv(10) == b""
        assert mute.recv(100)[:2] == b"KH"  # the REQUEST
        assert mute.recv(100) == b""
        wait_until(lambda: len(c.errors()) == 3, what="3 stalled-peer errors")
        assert sorted(e.error for e in c.errors()) == ["StalledPeer"] * 3
        silent.close()
        mute.close()
        half.close()


def test_capture_cap_and_record_cap(tmp_path):
    with Collector(interval=5, capture_dir=tmp_path, max_capture_bytes=1000, max_records=100) as c:
        with ReferenceAgent("capped").connect(c.address) as a:
            c.wait_for_agent(host="capped")
            for batch in range(3):
                for i in range(80):
                    a.created(pid=batch * 100 + i, image_path="/x" * 20)
                c.flush()
        st = c.stats("capped")
        assert st.records == 240 and st.evicted >= 140
        assert 0 < len(c.records()) <= 100  # whole oldest batches evicted
        assert st.capture_dropped_bytes > 0
        wait_until(lambda: not c.stats("capped").connected, what="disconnect")
        assert st.capture_files[0].stat().st_size == 1000


def test_collector_port_in_use_is_a_named_error():
    with Collector() as first:
        with pytest.raises(HilError, match="(?s)could not listen.*fix:"):
            Collector(port=first.port).start()
