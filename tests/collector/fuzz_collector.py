"""Fuzz a live collector with mutated frames; check it survives and loses no valid record.

    python tests/collector/fuzz_collector.py --frames 1000000 [--seed N]

test_fuzz.py runs a bounded fuzz; this is the long run, from a checkout (it is a test of the
collector, not part of the installed framework).

Each fuzz connection says HELLO as ``fuzz-N`` and sends ``--per-conn`` frames as the answer
to the REQUEST the collector sends after HELLO: value-mutated RECORDS frames (pid, size,
sha256, path bytes, record type changed; unknown records inserted; future fields appended:
structure valid, so every one must be accepted), then one arbitrarily mutated frame (bit
flips, header bytes, truncation, insertion, length fields, record fields, garbage,
duplication, or left intact), and closes. One connection in ten has its HELLO mutated.
Meanwhile reference agents keep recording and being polled. At the end:

- every record of every value-mutated frame is stored, byte for byte, in order;
- every record the reference agents made is stored exactly once, in order;
- the collector still accepts a new agent; its memory stayed bounded.

Prints ``key: value`` lines; exits 1 if a check failed.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from hil.protocol import (
    encode_end,
    encode_frame,
    encode_hello,
    encode_process_record,
    encode_raw_record,
    encode_request,
)
from hil.protocol.codec import RECORDS

HELP = "fuzz a live collector with mutated frames (no crash, no valid record lost)"


def add_arguments(parser) -> None:
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames to send (default 1,000,000)")
    parser.add_argument("--per-conn", type=int, default=50, help="frames per fuzz connection (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--clean-agents", type=int, default=2, help="well-behaved reference agents running meanwhile (default 2)"
    )


# ---------------------------------------------------------------------------- generation


def random_record(rng: random.Random, pid: int) -> tuple[bytes, tuple]:
    kind = rng.choice(("created", "exited"))
    path = "/fz/" + "".join(rng.choice("abcdefé/") for _ in range(rng.randrange(0, 60)))
    size = rng.randrange(0, 1 << 40)
    sha = hashlib.sha256(str(pid).encode()).digest()
    return encode_process_record(kind, pid, path, size, sha), (kind, pid, path, size, sha)


def random_frame(rng: random.Random, pid0: int) -> bytes:
    roll = rng.random()
    if roll < 0.6:
        recs = [random_record(rng, pid0 + i)[0] for i in range(rng.randrange(0, 6))]
        if rng.random() < 0.2:
            odd = encode_raw_record(rng.randrange(3, 0xFFFF), rng.randbytes(rng.randrange(20)))
            recs.insert(rng.randrange(len(recs) + 1), odd)
        return encode_frame(RECORDS, b"".join(recs))
    if roll < 0.8:
        return encode_end(rng.randrange(4), rng.randrange(8), rng.randrange(3))
    if roll < 0.9:
        return encode_hello("fz", "os", f"h{rng.randrange(10)}")
    return encode_request(rng.randrange(10))


_LENGTHS = (0, 1, 3, 52, 55, 56, 4095, 4096, 4097, 65528, 65529, 0xFFFF, 0xFFFFFFFF)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random mutation (or none) of a frame."""
    op = rng.randrange(10)
    b = bytearray(data)
    if op == 0 or not b:
        return data
    if op == 1:  # bit flips
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 2:  # a header byte
        b[rng.randrange(min(8, len(b)))] = rng.randrange(256)
    elif op == 3:  # truncation
        del b[rng.randrange(len(b)) :]
    elif op == 4:  # insertion
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = rng.randbytes(rng.randrange(1, 17))
    elif op == 5 and len(b) >= 8:  # frame length
        b[4:8] = struct.pack("<I", rng.choice(_LENGTHS + (rng.randrange(1 << 32),)) & 0xFFFFFFFF)
    elif op == 6 and len(b) > 10:  # a u16 inside the payload (record type/len/field len)
        pos = rng.randrange(8, len(b) - 1)
        b[pos : pos + 2] = struct.pack("<H", rng.choice(_LENGTHS[:-1]) & 0xFFFF)
    elif op == 7:  # garbage
        return rng.randbytes(rng.randrange(1, 100))
    elif op == 8:  # duplication of a piece
        b += b[: rng.randrange(len(b) + 1)]
    else:  # a mutated frame that is still valid
        return data
    return bytes(b)


# ---------------------------------------------------------------------------- running


@dataclass
class FuzzResult:
    frames_sent: int = 0
    value_mutated_frames: int = 0  # structure kept: must be accepted, every record stored
    arbitrary_mutated_frames: int = 0  # anything goes: one per connection, last
    connections: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    frames_decoded: int = 0  # valid frames the collector decoded (it stops at a bad one)
    protocol_errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    records_expected: int = 0  # records of the value-mutated frames
    records_missing: int = 0
    clean_records_expected: int = 0
    clean_records_missing: int = 0
    clean_records_duplicated: int = 0
    alive_after: bool = False
    records_stored: int = 0
    failures: list[str] = field(default_factory=list)


class _ValidMutator:
    """RECORDS frames whose *values* are mutated but whose structure stays valid: pid, size,
    sha256 and path bytes (not necessarily UTF-8) changed, created/exited swapped, unknown-type
    records inserted, future fields appended to record bodies."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.pool = [random_record(rng, i)[0] for i in range(300)]
        self.pid = 1

    def frame(self) -> tuple[bytes, list[bytes]]:
        rng = self.rng
        recs: list[bytes] = []
        parts: list[bytes] = []
        for _ in range(rng.randrange(0, 4)):
            r = bytearray(rng.choice(self.pool))
            struct.pack_into("<I", r, 6, self.pid)
            self.pid = (self.pid + 1) & 0xFFFFFFFF
            roll = rng.random()
            if roll < 0.3:
                struct.pack_into("<Q", r, 12, rng.getrandbits(64))
            if roll < 0.2:
                r[22:54] = rng.randbytes(32)
            if roll < 0.15 and len(r) > 56:
                r[rng.randrange(56, len(r))] = rng.randrange(256)
            if roll < 0.1:
                r[0] ^= 3  # created <-> exited
            if roll < 0.05:  # future fields after the path
                extra = rng.randbytes(rng.randrange(1, 12))
                struct.pack_into("<H", r, 2, len(r) - 4 + len(extra))
                r += extra
            recs.append(bytes(r))
            parts.append(recs[-1])
        if rng.random() < 0.1:
            odd = encode_raw_record(rng.randrange(3, 0xFFFF), rng.randbytes(rng.randrange(9)))
            parts.insert(rng.randrange(len(parts) + 1), odd)
        return encode_frame(RECORDS, b"".join(parts)), recs


def fuzz(
    collector, frames: int, *, per_conn: int = 50, seed: int = 1, clean_agents: int = 2, deadline_s: float | None = None
) -> FuzzResult:
    """Run the fuzz against a started collector; returns what happened (see FuzzResult).

    Each connection: HELLO, ``per_conn - 1`` value-mutated RECORDS frames (all must be
    accepted), then one arbitrarily mutated frame (bit flips, truncation, lengths, garbage,
    ...). One connection in ten has its HELLO mutated instead.
    """
    from hil.collector.agent_client import ReferenceAgent

    rng = random.Random(seed)
    valid = _ValidMutator(rng)
    res = FuzzResult()
    t0 = time.monotonic()
    clean = [
        ReferenceAgent(f"clean-{i}", kind="py-ref", os="fuzz").connect(collector.address) for i in range(clean_agents)
    ]
    clean_made: list[list[int]] = [[] for _ in clean]
    expected: dict[str, list[bytes]] = {}
    pid = 1 << 31
    conn_no = 0
    try:
        while res.frames_sent < frames:
            if deadline_s is not None and time.monotonic() - t0 > deadline_s:
                res.failures.append(f"deadline of {deadline_s} s reached")
                break
            conn_no += 1
            # a mutated HELLO can turn "fuzz-1970" into "fuzz-1972" (one bit): such
            # connections get names that cannot collide with the checked ones
            mutate_hello = rng.random() < 0.1
            host = f"{'mut' if mutate_hello else 'fuzz'}-{conn_no}"
            n = min(per_conn, frames - res.frames_sent)
            parts = [encode_hello("fuzz", "any", host)]
            recs: list[bytes] = []
            for _ in range(n - 1):
                frame, frame_recs = valid.frame()
                parts.append(frame)
                recs += frame_recs
            parts.append(mutate(rng, random_frame(rng, 1 << 30)))
            if mutate_hello:
                parts[0] = mutate(rng, parts[0])
            elif recs:
                expected[host] = recs
            data = b"".join(parts)
            _send_and_close(collector.address, data)
            res.frames_sent += n
            res.value_mutated_frames += n - 1
            res.arbitrary_mutated_frames += 1
            res.bytes_sent += len(data)
            res.connections += 1
            for i, agent in enumerate(clean):  # the well-behaved agents keep working
                if rng.random() < 0.3:
                    agent.created(pid, f"/clean/{i}/{pid}")
                    clean_made[i].append(pid)
                    pid += 1
        res.seconds = time.monotonic() - t0
        _wait_quiet(collector, timeout=60)
        collector.flush(timeout=30)
        res.alive_after = _alive(collector)
        _check(collector, res, expected, clean, clean_made)
    finally:
        for agent in clean:
            agent.close()
    res.protocol_errors = collector.protocol_errors
    res.error_kinds = collector.error_counts()
    res.frames_decoded = collector.frames_decoded
    return res


def _send_and_close(address, data: bytes) -> None:
    """Send, half-close, and read until the collector closes: closing with unread bytes (its
    REQUEST) would send a reset that can discard what the collector has not read yet."""
    s = socket.create_connection(address, timeout=60)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except TimeoutError:
        raise
    except OSError:
        pass  # the collector closed on a bad frame before we finished: expected
    finally:
        s.close()


def _wait_quiet(collector, timeout: float) -> None:
    """Until only the clean agents' connections remain open (every fuzz one processed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(conn.agent is not None and conn.agent.host.startswith("clean-") for conn in list(collector._conns)):
            return
        time.sleep(0.05)


def _alive(collector) -> bool:
    from hil.collector.agent_client import ReferenceAgent

    with ReferenceAgent("after-fuzz").connect(collector.address) as a:
        a.created(424242, "/after")
        try:
            collector.wait_for(pid=424242, host="after-fuzz", timeout=10)
            return True
        except AssertionError:
            return False


def _check(collector, res: FuzzResult, expected, clean, clean_made) -> None:
    by_host: dict[str, list[bytes]] = {}
    with collector._store.cond:  # raw records, without building a Record for each
        for agent, _, _, raws in collector._store._batches:
            by_host.setdefault(agent.host, []).extend(raws)
    res.records_stored = sum(len(v) for v in by_host.values())
    for host, want in expected.items():
        got = by_host.get(host, [])[: len(want)]
        res.records_expected += len(want)
        if got != want:
            lost = len(set(want) - set(got)) or 1
            res.records_missing += lost
            if len(res.failures) < 5:
                why = [
                    f"{e.error}: {e.message}"
                    for e in collector.errors()
                    if e.agent is not None and e.agent.host == host
                ]
                res.failures.append(
                    f"{host}: {lost} valid record(s) lost or reordered; collector said: {why or 'nothing'}"
                )
    for agent, made in zip(clean, clean_made, strict=True):
        got = [r.pid for r in collector.records(agent=agent.host)]
        res.clean_records_expected += len(made)
        res.clean_records_missing += len(set(made) - set(got))
        res.clean_records_duplicated += len(got) - len(set(got))
        if got != made:
            res.failures.append(f"{agent.host}: {len(made)} records made, {len(got)} stored (or out of order)")
    if not res.alive_after:
        res.failures.append("collector did not accept a new agent after the fuzz")


def run(args) -> int:
    import logging
    import resource

    from hil.collector import Collector

    logging.getLogger("hil.collector").setLevel(logging.ERROR)
    with Collector(interval=0.2, max_records=None) as c:
        res = fuzz(c, args.frames, per_conn=args.per_conn, seed=args.seed, clean_agents=args.clean_agents)
    for key in (
        "frames_sent",
        "value_mutated_frames",
        "arbitrary_mutated_frames",
        "connections",
        "bytes_sent",
        "frames_decoded",
        "protocol_errors",
        "records_expected",
        "records_missing",
        "clean_records_expected",
        "clean_records_missing",
        "clean_records_duplicated",
        "records_stored",
        "alive_after",
    ):
        print(f"{key}: {getattr(res, key)}")
    print(f"seconds: {res.seconds:.1f}")
    print(f"frames_per_s: {res.frames_sent / max(res.seconds, 1e-9):.0f}")
    for name, count in sorted(res.error_kinds.items()):
        print(f"errors_{name}: {count}")
    print(f"peak_rss_mib: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
    for failure in res.failures:
        print(f"failure: {failure}")
    return 1 if res.failures else 0


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python tests/collector/fuzz_collector.py", description=HELP)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
