#!/usr/bin/env python3
"""A hostile process against the kernel-hil collector: what any unprivileged process of a guest
can do, since the collector is reachable from the guest at 10.0.2.2 (QEMU user networking).

    python3 hostile_agent.py HOST PORT ATTACK [ARG...]

Standard library only (it runs inside the guest, without kernel-hil). Each attack prints one
JSON line: what it sent, and what the collector did (took it, or closed the connection).
Attacks (drivers/protocol/PROTOCOL.md section 5 names the bounds they test):

    retain GROUPS          one agent; GROUPS reads of ~1 MiB, each 9 records amid records of
                           an unknown type (skipped): a stored frame pinning its whole read
    flood RECORDS          one agent; RECORDS minimal records in one batch: evicting others
    identities N           N connections, each a new identity, HELLO then close
    connections N HOLD_S   N connections held open HOLD_S seconds (half say HELLO)
    claim KIND OS HOST [TOKEN_HEX]   HELLO as someone else's identity
    steal                  read the agent's token from /sys/module
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

MAX_PAYLOAD = 65528
HELLO, REQUEST, RECORDS, END = 1, 2, 3, 4


def frame(ftype: int, payload: bytes) -> bytes:
    return b"KH" + struct.pack("<BBI", 1, ftype, len(payload)) + payload


def hello(kind: str, os_: str, host: str, token: bytes = b"") -> bytes:
    def s16(raw: bytes) -> bytes:
        return struct.pack("<H", len(raw)) + raw

    payload = struct.pack("<H", 1) + s16(kind.encode()) + s16(os_.encode()) + s16(host.encode())
    return frame(HELLO, payload + (s16(token) if token else b""))


def record(pid: int) -> bytes:
    """A minimal PROCESS_CREATED record: empty path, 56 bytes."""
    return struct.pack("<HHHIHQH32sH", 1, 52, 4, pid, 8, 0, 32, bytes(32), 0)


def end(request_id: int, count: int) -> bytes:
    return frame(END, struct.pack("<III", request_id, count, 0))


class Peer:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def request(self, timeout: float = 30.0) -> int | None:
        """The next REQUEST's id, or None when the collector closed the connection."""
        self.sock.settimeout(timeout)
        got = b""
        try:
            while len(got) < 12:
                data = self.sock.recv(12 - len(got))
                if not data:
                    return None
                got += data
        except (ConnectionResetError, BrokenPipeError):
            return None
        return struct.unpack_from("<I", got, 8)[0]

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False

    def close(self) -> None:
        self.sock.close()


def retain(host: str, port: int, groups: int) -> dict:
    nine = frame(RECORDS, b"".join(record(i) for i in range(9)))
    filler = frame(RECORDS, struct.pack("<HH", 99, MAX_PAYLOAD - 4) + bytes(MAX_PAYLOAD - 4))
    group = filler * 7 + nine + filler * 8
    p = Peer(host, port)
    p.send(hello("hostile", "guest", "hostile-retain"))
    rid = p.request()
    sent = 0
    for _ in range(groups):
        if rid is None or not p.send(group):
            break
        sent += 1
    ok = rid is not None and p.send(end(rid, sent * 24))
    accepted = ok and p.request() is not None  # the next poll's REQUEST: the batch was taken
    p.close()
    return {"attack": "retain", "groups": sent, "bytes": sent * len(group), "records": sent * 9, "accepted": accepted}


def flood(host: str, port: int, records: int) -> dict:
    per_frame = MAX_PAYLOAD // 56
    full = frame(RECORDS, record(7) * per_frame)
    p = Peer(host, port)
    p.send(hello("hostile", "guest", "hostile-flood"))
    rid = p.request()
    sent = 0
    block = full * 16
    while rid is not None and sent + 16 * per_frame <= records:
        if not p.send(block):
            rid = None
            break
        sent += 16 * per_frame
    while rid is not None and sent + per_frame <= records:
        if not p.send(full):
            rid = None
            break
        sent += per_frame
    ok = rid is not None and p.send(end(rid, sent))
    accepted = ok and p.request() is not None
    p.close()
    return {"attack": "flood", "records": sent, "bytes": sent * 56, "accepted": accepted}


def identities(host: str, port: int, n: int) -> dict:
    accepted = refused = 0
    for i in range(n):
        try:
            p = Peer(host, port, timeout=10)
        except OSError:
            refused += 1
            continue
        p.send(hello("hostile", "guest", f"hostile-id-{i}"))
        if p.request(timeout=10) is None:
            refused += 1
        else:
            accepted += 1
        p.close()
    return {"attack": "identities", "tried": n, "accepted": accepted, "refused": refused}


def connections(host: str, port: int, n: int, hold_s: float) -> dict:
    peers = []
    for i in range(n):
        try:
            p = Peer(host, port, timeout=10)
        except OSError:
            continue
        if i % 2:
            p.send(hello("hostile", "guest", f"hostile-hold-{i}"))
        peers.append((i, p))
    time.sleep(hold_s)
    open_, closed = 0, 0
    for _i, p in peers:
        p.sock.settimeout(0.2)
        try:
            data = p.sock.recv(64)
            alive = bool(data)  # a REQUEST (identified and kept), or b"" (closed)
        except TimeoutError:
            alive = True  # silent and open: not said HELLO, not yet timed out
        except (ConnectionResetError, BrokenPipeError):
            alive = False
        open_ += alive
        closed += not alive
        p.close()
    return {"attack": "connections", "opened": len(peers), "still_open": open_, "closed_by_collector": closed}


def claim(host: str, port: int, kind: str, os_: str, who: str, token_hex: str = "") -> dict:
    p = Peer(host, port)
    p.send(hello(kind, os_, who, bytes.fromhex(token_hex)))
    rid = p.request(timeout=15)
    sent_records = False
    if rid is not None:  # taken for the agent: report a record in its name
        sent_records = p.send(frame(RECORDS, record(666)) + end(rid, 1))
        rid = p.request(timeout=15) if sent_records else None
    p.close()
    return {
        "attack": "claim",
        "identity": [kind, os_, who],
        "with_token": bool(token_hex),
        "accepted": rid is not None,
        "sent_records": sent_records,
    }


def steal() -> dict:
    where = "/sys/module/hil_agent/parameters"
    try:
        params = sorted(os.listdir(where))
    except OSError as exc:
        params = [f"error: {exc}"]
    try:
        with open(os.path.join(where, "token"), "rb") as f:
            token = f.read().hex()
    except OSError as exc:
        token = None
        why = type(exc).__name__
    else:
        why = "read"
    return {"attack": "steal", "uid": os.getuid(), "params": params, "token": token, "outcome": why}


def main(argv: list[str]) -> int:
    host, port, attack, args = argv[1], int(argv[2]), argv[3], argv[4:]
    t0 = time.monotonic()
    if attack == "retain":
        out = retain(host, port, int(args[0]))
    elif attack == "flood":
        out = flood(host, port, int(args[0]))
    elif attack == "identities":
        out = identities(host, port, int(args[0]))
    elif attack == "connections":
        out = connections(host, port, int(args[0]), float(args[1]))
    elif attack == "claim":
        out = claim(host, port, *args)
    elif attack == "steal":
        out = steal()
    else:
        print(f"unknown attack {attack!r}", file=sys.stderr)
        return 2
    out["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
