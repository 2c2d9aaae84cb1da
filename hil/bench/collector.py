"""``hil bench collector``: decode throughput of the collector against a plain socket reader.

A sender process streams one large batch of valid process records over loopback to a plain
socket reader that reads and discards the bytes (``raw_read_bytes_per_s``), to an asyncio
protocol that does the same (``raw_asyncio_read_bytes_per_s``), and to a running
:class:`~hil.collector.Collector` as the reply to one REQUEST (``decode_records_per_s``: from
REQUEST to the END being checked, every record validated and stored). The raw readers' clocks
start the same way: they send the sender a byte that starts the stream. ``decode_over_raw``
is the ratio of the two byte rates.

The host is shared, and one stream takes a fraction of a second, so one measurement of each
says little: the three are measured side by side in each of ``--rounds`` rounds (their order
alternating from round to round), and the figures are medians over the rounds;
``decode_over_raw`` is the median of each round's own ratio, and ``decode_over_raw_rounds``
lists them all. Memory (RSS) is sampled as the stream grows over all rounds; the collector
keeps at most ``--keep`` records (oldest batches evicted), so RSS should stay flat however long
the stream.

Targets: decode_records_per_s >= 1,000,000 and decode_over_raw >= 0.5 on one core.
``native_codec`` says whether the collector indexed the records with the drivers' C codec
(:mod:`hil.protocol.native`; ``HIL_NATIVE_CODEC=0`` measures the pure Python codec). On a
shared host wall-clock rates swing with other load; ``decode_records_per_cpu_s`` (records per
CPU second of the collector thread) and ``decode_over_raw_cpu`` (the raw reader's CPU seconds
over the collector thread's, per round) are the steadier figures.
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
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of the three side-by-side measurements (default 5; medians)"
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
        sock.recv(1)  # the reader's go, as the collector's REQUEST: both clocks start there
        _send_stream(sock, frame, n_frames)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
        sock.close()
        return
    sock.sendall(encode_hello("bench", "loopback", "bench-sender"))
    dec = StreamDecoder()
    answered = 0
    while True:  # every REQUEST until the collector closes
        data = sock.recv(4096)
        if not data:
            break
        for f in dec.feed(data):
            if type(f) is Request:
                if answered == 0:  # the REQUEST sent right after HELLO: nothing saved yet
                    sock.sendall(encode_end(f.request_id, 0))
                else:
                    _send_stream(sock, frame, n_frames)
                    sock.sendall(encode_end(f.request_id, n_frames * per_frame))
                answered += 1
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
    got = 0
    t0 = time.perf_counter()
    c0 = time.thread_time()
    conn.sendall(b"g")  # go
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
            def connection_made(self, transport):
                state["t0"] = time.perf_counter()
                transport.write(b"g")  # go

            def data_received(self, data):
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


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


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
    rounds = max(1, args.rounds)
    from hil.protocol import native

    print(f"native_codec: {native.status()}")
    print(f"records: {total_records}")
    print(f"record_bytes: {(len(frame) - 8) / per_frame:.1f}")
    print(f"stream_bytes: {total_bytes}")
    print(f"rounds: {rounds}  # raw, asyncio raw and collector measured side by side in each; medians below")

    raw_s: list[float] = []
    raw_cpu: list[float] = []
    raw_async_s: list[float] = []
    dec_s: list[float] = []
    dec_cpu: list[float] = []
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
                done = c.stats(agent).records * 100 // (rounds * total_records)
                while marks and done >= marks[0]:
                    samples[marks.pop(0)] = _rss_mib()
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def decode() -> None:
            t0 = time.perf_counter()
            cpu0 = _thread_cpu(c._thread)
            c.flush(timeout=600)
            dec_s.append(time.perf_counter() - t0)
            dec_cpu.append(_thread_cpu(c._thread) - cpu0)

        def raw_reads() -> None:
            raw_s.append(_raw_read(ctx, args.path_len, n_frames, total_bytes))
            raw_cpu.append(_CPU["raw"])
            raw_async_s.append(_raw_read_asyncio(ctx, args.path_len, n_frames, total_bytes))

        for i in range(rounds):  # the order alternates: neither side always goes first
            for step in (raw_reads, decode) if i % 2 == 0 else (decode, raw_reads):
                step()
        stop.set()
        sampler.join()
        samples.setdefault(100, _rss_mib())
        st = c.stats(agent)
        kept = c._store.stored
        raws = [rec for b in list(c._store._batches)[:200] for rec in b[3]][:100_000]
    proc.join(30)
    if st.records != rounds * total_records or st.protocol_errors:
        print(f"error: collector received {st.records} records, {st.protocol_errors} errors")
        return 1
    t1 = time.perf_counter()
    for rec in raws:
        decode_record(rec)
    mat_s = time.perf_counter() - t1

    dec, raw_t, raw_async = _median(dec_s), _median(raw_s), _median(raw_async_s)
    ratios = [r / d for r, d in zip(raw_s, dec_s, strict=True)]
    ratio = _median(ratios)
    rate = total_records / dec
    print(f"decode_seconds: {dec:.3f}  # rounds: {' '.join(f'{x:.3f}' for x in dec_s)}")
    print(f"decode_records_per_s: {rate:.0f}")
    print(f"decode_bytes_per_s: {total_bytes / dec:.0f}")
    print(f"decode_cpu_seconds: {_median(dec_cpu):.3f}  # CPU of the collector thread (shared host)")
    print(f"decode_records_per_cpu_s: {total_records / _median(dec_cpu):.0f}")
    print(f"raw_read_seconds: {raw_t:.3f}  # rounds: {' '.join(f'{x:.3f}' for x in raw_s)}")
    print(f"raw_read_cpu_seconds: {_median(raw_cpu):.3f}")
    print(f"raw_read_bytes_per_s: {total_bytes / raw_t:.0f}")
    print(f"decode_over_raw: {ratio:.3f}  # median of the rounds' ratios")
    print(f"decode_over_raw_rounds: {' '.join(f'{x:.3f}' for x in ratios)}")
    print(
        f"decode_over_raw_cpu: {_median([r / d for r, d in zip(raw_cpu, dec_cpu, strict=True)]):.3f}  "
        "# raw reader CPU / collector thread CPU"
    )
    print(
        f"raw_asyncio_read_bytes_per_s: {total_bytes / raw_async:.0f}  "
        "# same bytes, asyncio protocol that discards them"
    )
    print(f"decode_over_raw_asyncio: {_median([r / d for r, d in zip(raw_async_s, dec_s, strict=True)]):.3f}")
    print(f"records_kept_in_memory: {kept}")
    print(f"records_evicted: {st.evicted}")
    print(f"rss_mib_before: {rss0:.1f}")
    for mark in sorted(samples):
        print(f"rss_mib_at_{mark}pct: {samples[mark]:.1f}")
    print(f"peak_rss_mib: {_peak_rss_mib():.1f}")
    print(f"materialize_records_per_s: {len(raws) / mat_s:.0f}  # Record objects built on query, not on receive")
    print(f"target_records_per_s_met: {rate >= 1_000_000}")
    print(f"target_decode_over_raw_met: {ratio >= 0.5}")
    return 0
