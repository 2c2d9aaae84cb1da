"""The collector against a hostile peer (any unprivileged process in a guest reaches it through
10.0.2.2): memory bounded by bytes, records of one agent safe from another's flood, connections,
identities and capture files capped, and an optional shared token in HELLO."""

from __future__ import annotations

import gc
import logging
import socket
import sys
import time
import tracemalloc

import pytest

from hil.collector import Collector, RecordsEvicted
from hil.collector.agent_client import ReferenceAgent
from hil.collector.connection import ARENA_POOL, READ_BUFFER, AgentConnection
from hil.collector.store import AgentId, AgentStats, RecordStore
from hil.protocol import (
    MAX_PAYLOAD,
    Records,
    StreamDecoder,
    encode_end,
    encode_frame,
    encode_hello,
    encode_process_record,
    encode_raw_record,
)
from hil.protocol.codec import RECORDS, RunRecords

MiB = 1 << 20


def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def retained_bytes(records) -> int:
    """Memory a frame's records keep alive: the container and every buffer it refers to."""
    total = sys.getsizeof(records)
    for ref in gc.get_referents(records):
        total += ref.obj.__sizeof__() if isinstance(ref, memoryview) else sys.getsizeof(ref)
    return total


class RawAgent:
    """A hand-driven agent socket: HELLO, then answer REQUESTs with whatever bytes a test says."""

    def __init__(self, address, host: str, kind: str = "raw", token: bytes = b"", source: str | None = None):
        self.sock = socket.create_connection(address, timeout=10, source_address=(source, 0) if source else None)
        self.sock.sendall(encode_hello(kind, "linux", host, token=token))  # an empty token is left out
        self.next_id = 1

    def expect_request(self) -> int:
        hdr = self._recv_exact(12)
        assert hdr[:4] == b"KH\x01\x02", hdr
        rid = int.from_bytes(hdr[8:12], "little")
        return rid

    def answer(self, body: bytes, count: int) -> None:
        rid = self.expect_request()
        self.sock.sendall(body + encode_end(rid, count))

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def _recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            data = self.sock.recv(n - len(out))
            if not data:
                raise ConnectionError("collector closed the connection")
            out += data
        return out

    def close(self) -> None:
        self.sock.close()


def next_request(c: Collector, agent: RawAgent, host: str) -> int:
    """Once the agent's previous batch is in, have the collector ask again; the REQUEST's id."""
    done = c.stats(host).batches
    wait_until(
        lambda: (
            not any(conn.outstanding for conn in list(c._conns) if conn.agent is not None and conn.agent.host == host)
        ),
        what=f"{host}'s batch {done} to end",
    )
    c._poke()
    return agent.expect_request()


def minimal_records_frame(first_pid: int, n: int) -> bytes:
    return encode_frame(RECORDS, b"".join(encode_process_record("created", first_pid + i, "") for i in range(n)))


# ------------------------------------------------------------------------ memory held per frame


def _nine_records_in_a_big_read() -> tuple[bytes, bytes]:
    """9 records (504 bytes) in the middle of a ~1 MiB read padded with records of an unknown
    type (skipped, never stored)."""
    frame = minimal_records_frame(1, 9)
    filler = encode_frame(RECORDS, encode_raw_record(99, bytes(MAX_PAYLOAD - 4)))
    return frame, filler * 7 + frame + filler * 8


@pytest.mark.parametrize("as_view", [False, True], ids=["bytes", "reused-buffer"])
def test_a_small_frame_does_not_keep_its_big_read_alive(as_view):
    frame, read = _nine_records_in_a_big_read()
    assert len(frame) - 8 == 504 and len(read) > 983_000
    data = memoryview(bytearray(read)) if as_view else read  # the collector reads into a buffer
    got = [f for f in StreamDecoder(native=True).feed(data) if isinstance(f, Records) and f.records]
    (records,) = [f.records for f in got]
    assert len(records) == 9 and all(type(r) is bytes for r in records)
    assert retained_bytes(records) < 2 * 504 + 1024, "the records keep the whole read alive"
    if as_view:  # nothing refers to the reused read buffer any more
        data[:] = bytes(len(data))
        assert [int.from_bytes(r[6:10], "little") for r in records] == list(range(1, 10))


def test_collector_memory_does_not_grow_with_reads_holding_a_few_records(tmp_path):
    _, read = _nine_records_in_a_big_read()
    groups = 64
    with Collector(interval=3600, reply_timeout=3600) as c:
        agent = RawAgent(c.address, "retainer")
        c.wait_for_agent(host="retainer")
        agent.answer(b"", 0)  # the REQUEST sent right after HELLO
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            rid = next_request(c, agent, "retainer")
            for _ in range(groups):
                agent.sock.sendall(read)
            agent.sock.sendall(encode_end(rid, groups * 24))  # 9 process + 15 skipped records
            wait_until(lambda: c.stats("retainer").batches == 2, timeout=60, what="the batch")
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        st = c.stats("retainer")
        assert st.records == groups * 9 and st.protocol_errors == 0
        agent.close()
    # 64 * 9 records of 56 bytes are ~32 KiB; the reads that carried them were ~64 MiB
    assert grown < 4 * MiB, f"{grown / MiB:.1f} MiB held for {groups * 9} small records"


# ------------------------------------------------------------------------ the store, by bytes


def test_store_is_capped_by_bytes_and_the_cap_is_what_memory_shows():
    cap = 4 * MiB
    with Collector(interval=3600, reply_timeout=3600, max_bytes=cap) as c:
        agent = RawAgent(c.address, "big-paths")
        c.wait_for_agent(host="big-paths")
        agent.answer(b"", 0)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            rec = encode_process_record("created", 7, "/" + "p" * 4000)
            frame = encode_frame(RECORDS, rec * (MAX_PAYLOAD // len(rec)))
            frames = 40 * MiB // len(frame)
            rid = next_request(c, agent, "big-paths")
            agent.sock.sendall(frame * frames)
            agent.sock.sendall(encode_end(rid, frames * (MAX_PAYLOAD // len(rec))))
            wait_until(lambda: c.stats("big-paths").batches == 2, timeout=60, what="the batch")
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        st = c.stats("big-paths")
        assert st.evicted > 0 and st.records == st.stored + st.evicted
        assert 0 < st.stored_bytes <= cap
        agent.close()
    assert grown < cap + 2 * MiB, f"{grown / MiB:.1f} MiB held with a {cap / MiB:.0f} MiB cap"


# ------------------------------------------------------------------------ reads kept whole


class HandTransport:
    """What an AgentConnection needs of its asyncio transport, for a connection fed by hand."""

    def get_extra_info(self, key):
        return ("127.0.0.1", 40000)

    def write(self, data):
        pass

    def abort(self):
        pass

    def close(self):
        pass


def read_into(conn: AgentConnection, data: bytes, most: int = READ_BUFFER) -> list[object]:
    """Bytes arriving the way the event loop reads them: each read fills the buffer it is
    given, up to ``most`` bytes (what the socket holds). The buffers read into."""
    view = memoryview(data)
    buffers: list[object] = []
    while view:
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(view), most)
        buf[:n] = view[:n]
        conn.buffer_updated(n)
        view = view[n:]
        buffers.append(buf.obj)
    return buffers


def test_dense_reads_are_kept_whole_charged_in_full_and_their_buffers_reused():
    c = Collector(interval=3600, max_records=150_000)  # not started: one connection fed by hand
    conn = AgentConnection(c, 1)
    conn.connection_made(HandTransport())
    read_into(conn, encode_hello("k", "linux", "dense") + encode_end(1, 0))  # the REQUEST after HELLO
    recs = [encode_process_record("created", pid, "") for pid in range(300_000)]  # 56 bytes each
    stream = b"".join(encode_frame(RECORDS, b"".join(recs[i : i + 1000])) for i in range(0, len(recs), 1000))
    rid = conn.request()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        buffers = read_into(conn, stream[: 4 * READ_BUFFER])  # (alive: their ids are theirs)
        held = c._store.batches()[0][3]  # a reader holds an early batch while it is evicted
        early = list(held)
        buffers += read_into(conn, stream[4 * READ_BUFFER :] + encode_end(rid, len(recs)))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    st = c._store.stats[conn.agent]
    assert not conn.closed and st.records == len(recs) and st.batches == 2 and st.evicted > 0
    batches = c._store.batches()
    # no copies: every batch lives in a read buffer (a frame cut by the end of one read goes
    # first in the next buffer), each buffer charged in full
    assert all(isinstance(b[3], RunRecords) and b[3].owner is not None for b in batches)
    owners = {id(b[3].owner) for b in batches}
    assert len(owners) == len(batches)  # full reads: one batch each
    assert [r for b in batches for r in b[3]] == recs[-st.stored :]  # every record, in order
    assert st.stored <= 150_000 and st.stored + st.evicted == len(recs)
    assert c._store.stored_bytes >= len(owners) * READ_BUFFER > 7 * READ_BUFFER
    assert isinstance(held, RunRecords) and list(held) == early  # its buffer not reused while held
    # the buffers of evicted reads are reused: no more than the store, the held one and one more
    assert len({id(b) for b in buffers}) <= len(owners) + 3 < len(buffers)
    pooled = len(c._arena_pool)
    del held  # the last view of that read: its buffer goes to the pool for a later read
    assert len(c._arena_pool) == pooled + 1 <= ARENA_POOL
    limit = c._store.stored_bytes + (ARENA_POOL + 2) * READ_BUFFER + MiB
    assert grown < limit, f"{grown / MiB:.1f} MiB held; the store says {c._store.stored_bytes / MiB:.1f} MiB"


def test_reads_go_on_into_a_kept_buffer_which_is_charged_once():
    c = Collector(interval=3600, max_records=150_000)
    conn = AgentConnection(c, 1)
    conn.connection_made(HandTransport())
    read_into(conn, encode_hello("k", "linux", "medium") + encode_end(1, 0))
    recs = [encode_process_record("exited", pid, "/x") for pid in range(400_000)]  # 58 bytes each
    stream = b"".join(encode_frame(RECORDS, b"".join(recs[i : i + 999])) for i in range(0, len(recs), 999))
    rid = conn.request()
    for at in range(0, len(stream), 300_000):  # a quarter of the buffer and more: kept, then read on
        read_into(conn, stream[at : at + 300_000], most=300_000)
        live = [b for b in c._store._order if b.raws is not None]
        owners = {id(b.raws.owner): b.raws.owner for b in live if isinstance(b.raws, RunRecords) and b.raws.owner}
        # every buffer holding records is charged once, to the oldest batch in it
        assert sum(b.shared for b in live) == sum(o.nbytes for o in owners.values())
        assert sum(b.cost for b in live) == c._store.stored_bytes
    read_into(conn, encode_end(rid, len(recs)))
    st = c._store.stats[conn.agent]
    assert not conn.closed and st.records == len(recs) and st.evicted > 0
    batches = c._store.batches()
    assert [r for b in batches for r in b[3]] == recs[-st.stored :]
    owners = {id(b[3].owner) for b in batches if isinstance(b[3], RunRecords) and b[3].owner is not None}
    assert len(batches) > 2 * len(owners) > 10  # several reads in each buffer: no copies


def test_a_trickle_after_a_kept_read_is_not_replayed_read_after_read():
    c = Collector(interval=3600, max_records=150_000)
    conn = AgentConnection(c, 1)
    conn.connection_made(HandTransport())
    read_into(conn, encode_hello("k", "linux", "trickle") + encode_end(1, 0))
    recs = [encode_process_record("exited", pid, "/x") for pid in range(20_000)]
    stream = b"".join(encode_frame(RECORDS, b"".join(recs[i : i + 999])) for i in range(0, len(recs), 999))
    rid = conn.request()
    read_into(conn, stream[:300_000], most=300_000)  # kept: the connection reads on into it
    assert conn.arena is not None and conn.decoder.pending
    replays = []
    data_received = conn.data_received

    def spy(data, arena=None, replay=0):
        replays.append(replay)
        data_received(data, arena, replay)

    conn.data_received = spy
    for at in range(300_000, 330_000, 100):  # then 100 bytes a read
        read_into(conn, stream[at : at + 100])
    assert len(replays) == 300 and sum(map(bool, replays)) <= 1  # an incomplete frame replayed once at most
    read_into(conn, stream[330_000:] + encode_end(rid, len(recs)))
    assert not conn.closed and [r for b in c._store.batches() for r in b[3]] == recs


def test_a_buffer_is_charged_to_the_oldest_batch_in_it_until_the_last_goes():
    class Owner:  # a read buffer, as the store sees it
        nbytes, used = 10_000, True

    store = RecordStore(max_records=None)
    agent = AgentId("k", "linux", "h")
    store.stats[agent] = AgentStats(agent)
    owner, rec = Owner(), encode_process_record("created", 1, "/x")
    data = rec * 30
    runs = [RunRecords(data, 0, [k * len(rec) for k in range(10)], owner, 10_000 if i == 0 else 0) for i in range(3)]
    store.add_frames(agent, [Records(r, []) for r in runs], 0.0, 0.0)
    costs = [b.cost for b in store._order]
    assert costs[0] > 10_000 > costs[1] == costs[2] and store.stored_bytes == sum(costs)
    queue = store._by_agent[agent]
    store._evict_oldest(queue)  # the buffer stays: the next batch in it carries it
    assert store.stored_bytes == costs[1] + costs[2] + 10_000 and queue[0].shared == 10_000 and owner.used
    store._evict_oldest(queue)
    store._evict_oldest(queue)  # the last one: the buffer is charged to no one, and free
    assert store.stored_bytes == 0 and not store._owned and not owner.used


def test_a_stream_over_tcp_keeps_every_byte_and_record(tmp_path):
    """However the event loop's reads cut it (kept, read on, carried or copied), every byte is
    captured and every record stored once, in order."""
    with Collector(interval=3600, reply_timeout=3600, capture_dir=tmp_path, max_records=400_000) as c:
        agent = RawAgent(c.address, "bulk")
        c.wait_for_agent(host="bulk")
        agent.answer(b"", 0)
        recs = [encode_process_record("created", pid, f"/usr/bin/p{pid}") for pid in range(150_000)]
        sizes = [1, 7, 300, 900]  # records per frame (up to 64 KiB)
        frames, i = [], 0
        while i < len(recs):
            n = sizes[len(frames) % 4]
            frames.append(encode_frame(RECORDS, b"".join(recs[i : i + n])))
            i += n
        rid = next_request(c, agent, "bulk")
        sent = b"".join(frames) + encode_end(rid, len(recs))
        for at in range(0, len(sent), 3 * MiB):
            agent.sock.sendall(sent[at : at + 3 * MiB])
        wait_until(lambda: c.stats("bulk").batches == 2, timeout=60, what="the batch")
        st = c.stats("bulk")
        assert st.records == len(recs) and st.protocol_errors == 0 and st.evicted == 0
        assert [r for b in c._store.batches() for r in b[3]] == recs
        agent.close()
        wait_until(lambda: not c.stats("bulk").connected, what="disconnect")
        (path,) = c.stats("bulk").capture_files
    assert path.read_bytes() == encode_hello("raw", "linux", "bulk") + encode_end(1, 0) + sent


def test_small_caps_keep_copies_not_whole_reads():
    c = Collector(interval=3600, max_bytes=4 * MiB)  # a read kept whole would be a quarter of it
    conn = AgentConnection(c, 1)
    conn.connection_made(HandTransport())
    read_into(conn, encode_hello("k", "linux", "small") + encode_end(1, 0))
    rid = conn.request()
    recs = [encode_process_record("created", pid, "") for pid in range(20_000)]
    read_into(conn, b"".join(encode_frame(RECORDS, b"".join(recs[i : i + 1000])) for i in range(0, 20_000, 1000)))
    read_into(conn, encode_end(rid, 20_000))
    batches = c._store.batches()
    assert not conn.closed and not any(isinstance(b[3], RunRecords) for b in batches)
    assert [r for b in batches for r in b[3]] == recs


# ------------------------------------------------------------------------ one agent's flood


def test_a_flooding_agent_evicts_only_its_own_records():
    with Collector(interval=3600, reply_timeout=3600) as c:  # default caps: 1,000,000 records
        with ReferenceAgent("honest").connect(c.address) as honest:
            c.wait_for_agent(host="honest")
            for pid in range(100):
                honest.created(pid=pid, image_path=f"/usr/bin/h{pid}")
            c.flush()
            flood = RawAgent(c.address, "flood")
            c.wait_for_agent(host="flood")
            flood.answer(b"", 0)
            per_frame = MAX_PAYLOAD // 56
            frame = minimal_records_frame(1 << 20, per_frame)
            frames = 1_000_000 // per_frame + 2  # a million minimal records, and some more
            rid = next_request(c, flood, "flood")
            flood.sock.sendall(frame * frames + encode_end(rid, frames * per_frame))
            wait_until(lambda: c.stats("flood").batches == 2, timeout=120, what="the flood")
            flood.close()  # flush() below asks connected agents only
            wait_until(lambda: not c.stats("flood").connected, what="the flood to disconnect")
            honest.created(pid=100, image_path="/usr/bin/h100")
            c.flush()
            h, f = c.stats("honest"), c.stats("flood")
            assert f.evicted > 0 and h.evicted == 0
            assert [r.pid for r in c.records(agent="honest")] == list(range(101))
            c.assert_none(agent="honest", pid=4242)  # the honest agent's records are all there
            with pytest.raises(RecordsEvicted, match="(?s)evicted.*flood.*lost 2340.*fix:"):
                c.assert_none(agent="flood", pid=4242)
            with pytest.raises(RecordsEvicted, match="evicted"):
                c.assert_none(pid=4242)  # over every agent: one lost records
            with pytest.raises(RecordsEvicted, match="(?s)no record matching.*flood"):
                c.wait_for(agent="flood", pid=7, timeout=0.3)  # may have been evicted
            assert c.wait_for(agent="flood", pid=1 << 20, timeout=1)  # found: no complaint
            assert c.wait_for(agent="honest", pid=0, timeout=1).image_path == "/usr/bin/h0"


def test_per_agent_quota():
    with Collector(interval=3600, reply_timeout=3600, agent_max_records=500) as c:
        with ReferenceAgent("a").connect(c.address) as a, ReferenceAgent("b").connect(c.address) as b:
            c.wait_for_agent(host="a")
            c.wait_for_agent(host="b")
            for pid in range(2000):
                a.created(pid=pid, image_path="/x")
                if pid % 10 == 0:
                    b.created(pid=pid, image_path="/y")
                if pid % 300 == 299:
                    c.flush()
            c.flush()
            sa, sb = c.stats("a"), c.stats("b")
            assert sa.stored <= 500 and sa.evicted == 2000 - sa.stored
            assert sb.evicted == 0 and sb.stored == 200


# ------------------------------------------------------------------------ connections


def test_connections_are_capped_per_peer_and_in_total(caplog):
    caplog.set_level(logging.WARNING, logger="hil.collector")
    with Collector(interval=3600, max_connections=3, max_connections_per_peer=2) as c:
        a1 = RawAgent(c.address, "p1-a")
        a2 = RawAgent(c.address, "p1-b")
        c.wait_for_agent(host="p1-b")
        over_peer = socket.create_connection(c.address, timeout=10)
        b1 = RawAgent(c.address, "p2-a", source="127.0.0.2")
        c.wait_for_agent(host="p2-a")
        over_total = socket.create_connection(c.address, timeout=10, source_address=("127.0.0.3", 0))
        for s in (over_peer, over_total):
            s.settimeout(10)
            assert s.recv(100) == b"", "a connection over the cap is closed at once"
        counts = c.error_counts()
        assert counts.get("ResourceLimit") == 2
        msgs = [e.message for e in c.errors() if e.error == "ResourceLimit"]
        assert any("127.0.0.1" in m and "per peer" in m for m in msgs)
        assert any("in total" in m for m in msgs)
        assert "ResourceLimit" in caplog.text
        a1.close()
        wait_until(lambda: len(c._conns) == 2, what="a1's connection to end")
        again = RawAgent(c.address, "p1-c")  # room again
        c.wait_for_agent(host="p1-c")
        for s in (a2, b1, again, over_peer, over_total):
            s.close()


def test_idle_connections_do_not_each_hold_a_read_buffer():
    with Collector(interval=3600) as c:  # the default caps allow 31 connections from one peer
        warm = RawAgent(c.address, "warm")
        c.wait_for_agent(host="warm")
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            agents = [RawAgent(c.address, f"idle-{i}") for i in range(30)]
            wait_until(lambda: len(c.agents()) == 31, what="30 agents")
            for a in agents:
                a.answer(b"", 0)
            wait_until(lambda: all(c.stats(f"idle-{i}").batches for i in range(30)), what="30 empty batches")
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        for a in [warm, *agents]:
            a.close()
    assert grown < 4 * MiB, f"{grown / MiB:.1f} MiB for 30 idle connections"


def test_identities_are_forgotten_when_disconnected_and_empty():
    with Collector(interval=0.2, max_agents=10) as c:
        with ReferenceAgent("keeper").connect(c.address) as keeper:
            keeper.created(pid=1, image_path="/kept")
            c.wait_for(pid=1, timeout=10)
            for i in range(50):
                with ReferenceAgent(f"churn-{i}").connect(c.address):
                    c.wait_for_agent(host=f"churn-{i}")
            wait_until(
                lambda: not any(conn.agent and conn.agent.host.startswith("churn") for conn in list(c._conns)),
                what="churn to end",
            )
            assert len(c.agents()) <= 10
            assert c.stats("keeper").records == 1  # an identity with records is kept
            assert c.protocol_errors == 0


def test_a_full_identity_table_refuses_new_identities():
    with Collector(interval=3600, max_agents=2) as c:
        with ReferenceAgent("one").connect(c.address), ReferenceAgent("two").connect(c.address):
            c.wait_for_agent(host="one")
            c.wait_for_agent(host="two")
            third = RawAgent(c.address, "three")
            assert third.closed_by_peer()
            assert c.error_counts() == {"ResourceLimit": 1}
            assert "three" in c.errors()[0].message
            assert sorted(a.host for a in c.agents()) == ["one", "two"]
            third.close()


# ------------------------------------------------------------------------ capture files


@pytest.mark.parametrize("budget,files", [(10_000, 100), (1 << 30, 5)], ids=["bytes", "files"])
def test_capture_files_have_a_global_budget(tmp_path, budget, files):
    with Collector(
        interval=3600, capture_dir=tmp_path, max_capture_bytes=4000, capture_budget=budget, max_capture_files=files
    ) as c:
        for i in range(8):
            a = RawAgent(c.address, f"cap-{i}")
            c.wait_for_agent(host=f"cap-{i}")
            a.answer(minimal_records_frame(i * 100, 60), 60)  # ~3.4 KB each
            wait_until(lambda i=i: c.stats(f"cap-{i}").batches == 1, what="the batch")
            a.close()
            wait_until(lambda i=i: not c.stats(f"cap-{i}").connected, what="the disconnect")
        written = c.capture_files()
        assert len(written) == (3 if budget == 10_000 else files)  # 3 * ~3.4 KB use up 10 KB
        assert sorted(written) == sorted(tmp_path.iterdir())
        assert sum(p.stat().st_size for p in written) <= budget
        dropped = sum(c.stats(f"cap-{i}").capture_dropped_bytes for i in range(8))
        assert dropped > 0
        assert len(c.records()) == 8 * 60  # decoding goes on without capture


# ------------------------------------------------------------------------ shared token


def test_a_collector_with_a_token_refuses_hellos_without_it(caplog):
    caplog.set_level(logging.WARNING, logger="hil.collector")
    with Collector(interval=0.2, token="s3cret") as c:
        none = RawAgent(c.address, "no-token")
        wrong = RawAgent(c.address, "wrong-token", token=b"guess")
        assert none.closed_by_peer() and wrong.closed_by_peer()
        good = ReferenceAgent("good", token="s3cret").connect(c.address)
        good.created(pid=5, image_path="/ok")
        assert c.wait_for(pid=5, timeout=10).host == "good"
        assert [a.host for a in c.agents()] == ["good"]  # refused ones leave no identity
        assert c.error_counts() == {"Unauthorized": 2}
        msgs = sorted(e.message for e in c.errors())
        assert "no token" in msgs[0] or "no token" in msgs[1]
        assert all("s3cret" not in m for m in msgs) and "s3cret" not in caplog.text
        assert "Unauthorized" in caplog.text
        good.close()
        none.close()
        wrong.close()


def test_a_collector_without_a_token_accepts_agents_that_send_one():
    with Collector(interval=0.2) as c:
        with ReferenceAgent("tokened", token="anything").connect(c.address) as a:
            a.created(pid=9, image_path="/t")
            assert c.wait_for(pid=9, timeout=10).host == "tokened"


def test_token_must_fit_the_protocol():
    from hil.errors import HilError

    with pytest.raises(HilError, match="token"):
        Collector(token="x" * 256)
    with pytest.raises(HilError, match="token"):
        Collector(token="")
