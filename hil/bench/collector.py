"""``hil bench collector``: decode throughput of the collector against a plain socket reader.

A sender process streams one large batch of valid process records over loopback, twice: once
to a plain socket reader that reads and discards the bytes (``raw_read_bytes_per_s``), once
to a running :class:`~hil.collector.Collector` as the reply to one REQUEST
(``decode_records_per_s``: from REQUEST to the END being checked, every record validated and
stored). ``decode_over_raw`` is the ratio of the two byte rates. Memory (RSS) is sampled as
the stream grows; the collector keeps at most ``--keep`` records (oldest batches evicted), so
RSS should stay flat however long the stream.

Targets: decode_records_per_s >= 1,000,000 and decode_over_raw >= 0.5 on one core.
``native_codec`` says whether the collector indexed the records with the drivers' C codec
(:mod:`hil.protocol.native`; ``HIL_NATIVE_CODEC=0`` measures the pure Python codec). On a
shared host wall-clock rates swing with other load; ``decode_records_per_cpu_s`` (records per
CPU second of the collector thread) is the steadier figure.
"""

from __future__ import annotations

import os
import socket
import time

HELP = "stream valid records into the collector over loopback; records/s vs a raw reader"


def add_arguments(parser) -> None:
    parser.add_argument("--records", type=int, default=3_000_000, help="records to stream (default 3,000,000)")
    parser.add_argument(
        "--path-len", type=int, default=40, help="image path length in bytes (default 40, a typical Windows path)"
    )
    parser.add_argument(
        "--keep", type=int, default=200_000, help="records the collector keeps in memory (default 200,000)"
    )


# ---------------------------------------------------------------------------- sender process


def _records_frame(path_len: int) -> tuple[bytes, int]:
    import hashlib

    from hil.protocol import MAX_PAYLOAD, encode_frame, encode_process_record
    from hil.protocol.codec import RECORDS

    recs, size, pid = [], 0, 1000
    while True:
        path = (f"C:\\Windows\\System32\\p{pid}-" + "x" * path_len)[:path_len]
        rec = encode_process_record(
            "created" if pid % 2 else "exited", pid, path, pid * 7, hashlib.sha256(str(pid).encode()).digest()
        )
        if size + len(rec) > MAX_PAYLOAD:
            break
        recs.append(rec)
        size += len(rec)
        pid += 1
    return encode_frame(RECORDS, b"".join(recs)), len(recs)


def _send_stream(sock: socket.socket, frame: bytes, n_frames: int) -> None:
    reps = max(1, (1 << 20) // len(frame))
    block = frame * reps
    left = n_frames
    while left >= reps:
        sock.sendall(block)
        left -= reps
    if left:
        sock.sendall(frame * left)


def _sender(port: int, mode: str, path_len: int, n_frames: int) -> None:
    from hil.protocol import Request, StreamDecoder, encode_end, encode_hello

    frame, per_frame = _records_frame(path_len)
    sock = socket.create_connection(("127.0.0.1", port))
    if mode == "raw":
        _send_stream(sock, frame, n_frames)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
        sock.close()
        return
    sock.sendall(encode_hello("bench", "loopback", "bench-sender"))
    dec = StreamDecoder()
    answered = 0
    while answered < 2:
        data = sock.recv(4096)
        if not data:
            return
        for f in dec.feed(data):
            if type(f) is Request:
                if answered == 0:  # the REQUEST sent right after HELLO: nothing saved yet
                    sock.sendall(encode_end(f.request_id, 0))
                else:
                    _send_stream(sock, frame, n_frames)
                    sock.sendall(encode_end(f.request_id, n_frames * per_frame))
                answered += 1
    sock.recv(1)  # until the collector closes
    sock.close()


# ---------------------------------------------------------------------------- measuring


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_CPU: dict[str, float] = {}


def _thread_cpu(thread) -> float:
    """CPU seconds used so far by another thread (Linux), or nan."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError):
        return float("nan")


def _raw_read(ctx, path_len: int, n_frames: int, expected: int) -> float:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    proc = ctx.Process(target=_sender, args=(port, "raw", path_len, n_frames))
    proc.start()
    conn, _ = srv.accept()
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    got = conn.recv_into(view)
    t0 = time.perf_counter()
    c0 = time.thread_time()
    while got < expected:
        n = conn.recv_into(view)
        if not n:
            break
        got += n
    dt = time.perf_counter() - t0
    _CPU["raw"] = time.thread_time() - c0
    conn.close()
    srv.close()
    proc.join(30)
    if got != expected:
        raise RuntimeError(f"raw reader got {got} bytes, expected {expected}")
    return dt


def _raw_read_asyncio(ctx, path_len: int, n_frames: int, expected: int) -> float:
    """The same bytes read and discarded by an asyncio protocol: the event loop's own ceiling."""
    import asyncio

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        state = {"got": 0, "t0": 0.0}

        class Discard(asyncio.Protocol):
            def data_received(self, data):
                if not state["got"]:
                    state["t0"] = time.perf_counter()
                state["got"] += len(data)
                if state["got"] >= expected and not done.done():
                    done.set_result(time.perf_counter() - state["t0"])

        srv = await loop.create_server(Discard, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        proc = ctx.Process(target=_sender, args=(port, "raw", path_len, n_frames))
        proc.start()
        dt = await asyncio.wait_for(done, 600)
        srv.close()
        await loop.run_in_executor(None, proc.join, 30)
        return dt

    return asyncio.run(main())


def run(args) -> int:
    import multiprocessing
    import threading

    from hil.collector import Collector
    from hil.protocol import decode_record

    ctx = multiprocessing.get_context("spawn")
    frame, per_frame = _records_frame(args.path_len)
    n_frames = max(1, args.records // per_frame)
    total_records = n_frames * per_frame
    total_bytes = n_frames * len(frame)
    from hil.protocol import native

    print(f"native_codec: {native.status()}")
    print(f"records: {total_records}")
    print(f"record_bytes: {(len(frame) - 8) / per_frame:.1f}")
    print(f"stream_bytes: {total_bytes}")

    raw_s = _raw_read(ctx, args.path_len, n_frames, total_bytes)
    raw_async_s = _raw_read_asyncio(ctx, args.path_len, n_frames, total_bytes)

    rss0 = _rss_mib()
    with Collector(interval=3600, reply_timeout=3600, max_records=args.keep) as c:
        proc = ctx.Process(target=_sender, args=(c.port, "collector", args.path_len, n_frames))
        proc.start()
        agent = c.wait_for_agent(host="bench-sender", timeout=60)
        deadline = time.monotonic() + 60
        while c.stats(agent).batches < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # the first (empty) reply, before timing starts
        samples: dict[int, float] = {}
        stop = threading.Event()

        def sample():
            marks = [0, 25, 50, 75, 100]
            while not stop.is_set() and marks:
                done = c.stats(agent).records * 100 // total_records
                while marks and done >= marks[0]:
                    samples[marks.pop(0)] = _rss_mib()
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        cpu0 = _thread_cpu(c._thread)
        c.flush(timeout=600)
        dec_s = time.perf_counter() - t0
        dec_cpu = _thread_cpu(c._thread) - cpu0
        stop.set()
        sampler.join()
        samples.setdefault(100, _rss_mib())
        st = c.stats(agent)
        kept = c._store.stored
        raws = [raw for b in list(c._store._batches)[:200] for raw in b[3]][:100_000]
        proc.join(30)
    if st.records != total_records or st.protocol_errors:
        print(f"error: collector received {st.records} records, {st.protocol_errors} errors")
        return 1
    t1 = time.perf_counter()
    for raw in raws:
        decode_record(raw)
    mat_s = time.perf_counter() - t1

    rate = total_records / dec_s
    raw_rate = total_bytes / raw_s
    print(f"decode_seconds: {dec_s:.3f}")
    print(f"decode_records_per_s: {rate:.0f}")
    print(f"decode_bytes_per_s: {total_bytes / dec_s:.0f}")
    print(f"decode_cpu_seconds: {dec_cpu:.3f}  # CPU of the collector thread (shared host)")
    print(f"decode_records_per_cpu_s: {total_records / dec_cpu:.0f}")
    print(f"raw_read_seconds: {raw_s:.3f}")
    print(f"raw_read_cpu_seconds: {_CPU.get('raw', float('nan')):.3f}")
    print(f"raw_read_bytes_per_s: {raw_rate:.0f}")
    print(f"decode_over_raw: {raw_s / dec_s:.3f}")
    print(
        f"raw_asyncio_read_bytes_per_s: {total_bytes / raw_async_s:.0f}  "
        "# same bytes, asyncio protocol that discards them"
    )
    print(f"decode_over_raw_asyncio: {raw_async_s / dec_s:.3f}")
    print(f"records_kept_in_memory: {kept}")
    print(f"records_evicted: {st.evicted}")
    print(f"rss_mib_before: {rss0:.1f}")
    for mark in sorted(samples):
        print(f"rss_mib_at_{mark}pct: {samples[mark]:.1f}")
    print(f"peak_rss_mib: {_peak_rss_mib():.1f}")
    print(f"materialize_records_per_s: {len(raws) / mat_s:.0f}  # Record objects built on query, not on receive")
    print(f"target_records_per_s_met: {rate >= 1_000_000}")
    print(f"target_decode_over_raw_met: {raw_s / dec_s >= 0.5}")
    return 0
