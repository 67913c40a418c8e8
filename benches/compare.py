#!/usr/bin/env python3
"""Python multiprocessing side of `cargo bench --bench compare`.

One function per row, named like the Rust rows (`pipe.pingpong.small` is
`pipe_pingpong_small`), each returning (value, unit) in the Rust row's
unit. Prints one TSV line per row: `<row>.<mode>.python<TAB>value<TAB>unit`.

    python3 benches/compare.py [--pinned|--unpinned] [--quick] [row ...]

--pinned restricts the process (and its children) to CPU 0 first.
--quick (or MULTIPROC_BENCH_QUICK=1) makes a short smoke run, as on the
Rust side.

Rows without a Python counterpart (marked `python: false` on the Rust
side) are not here: `sync.value.fetch_add_2proc`, since Python has no
lock-free counter on a shared Value (counting from several processes
takes the lock: `sync.value.locked_inc_2proc`); `queue.memory.*`, since a
Python queue's memory is a pipe's buffer in the kernel.
"""

import multiprocessing as mp
import os
import statistics
import sys
import time

QUICK = os.environ.get("MULTIPROC_BENCH_QUICK", "") not in ("", "0")

SMALL = 16
BIG = 1 << 20


def pick(quick, full):
    return quick if QUICK else full


# ---- process start + join ----


def noop():
    pass


def start_join(method, warmup, reps):
    ctx = mp.get_context(method)
    samples = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{method} child exited with {p.exitcode}")
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6, "us"


def process_spawn():
    return start_join("spawn", 1, pick(2, 11))


def process_fork():
    return start_join("fork", pick(2, 10), pick(10, 201))


# ---- children of the pipe rows (fork context; startup is not measured) ----


def echo_bytes(conn):
    while True:
        m = conn.recv_bytes()
        if not m:
            return
        conn.send_bytes(m)


def echo_typed(conn):
    while True:
        m = conn.recv()
        if m is None:
            return
        conn.send(m)


def blast(conn, kind):
    """For each go message (a count; 0 = stop) sends that many messages,
    then a terminator."""
    small = b"\x07" * SMALL
    big = b"\x5a" * (BIG if kind == "big" else 0)
    while True:
        n = conn.recv()
        if n == 0:
            return
        if kind == "small":
            for _ in range(n):
                conn.send_bytes(small)
            conn.send_bytes(b"")
        elif kind == "typed":
            payload = b"\x07" * 8
            for i in range(n):
                conn.send((i, payload))
            conn.send(None)
        else:
            for _ in range(n):
                conn.send_bytes(big)
            conn.send_bytes(b"")


class Peer:
    """A child on the other end of a duplex Pipe."""

    def __init__(self, target, *args):
        self.conn, theirs = mp.Pipe(True)
        self.proc = mp.get_context("fork").Process(target=target, args=(theirs, *args))
        self.proc.start()
        theirs.close()


def batches(warmup, reps, batch):
    vals = []
    for i in range(warmup + reps):
        v = batch()
        if i >= warmup:
            vals.append(v)
    return statistics.median(vals)


# ---- ping-pong ----


def pingpong_sizes():
    return 1, pick(3, 9), pick(200, 2000)


def pipe_pingpong_small():
    peer = Peer(echo_bytes)
    c = peer.conn
    ping = b"\x07" * SMALL
    warm, reps, n = pingpong_sizes()

    def batch():
        t0 = time.perf_counter()
        for _ in range(n):
            c.send_bytes(ping)
            if len(c.recv_bytes()) != SMALL:
                raise RuntimeError("bad echo")
        return (time.perf_counter() - t0) * 1e6 / n

    v = batches(warm, reps, batch)
    c.send_bytes(b"")
    peer.proc.join()
    return v, "us"


def pipe_pingpong_small_typed():
    peer = Peer(echo_typed)
    c = peer.conn
    payload = b"\x07" * 8
    warm, reps, n = pingpong_sizes()

    def batch():
        t0 = time.perf_counter()
        for i in range(n):
            c.send((i, payload))
            if c.recv()[0] != i:
                raise RuntimeError("bad echo")
        return (time.perf_counter() - t0) * 1e6 / n

    v = batches(warm, reps, batch)
    c.send(None)
    peer.proc.join()
    return v, "us"


# ---- throughput ----


def small_sizes():
    return 1, pick(2, 5), pick(5_000, 100_000)


def pipe_throughput_small():
    peer = Peer(blast, "small")
    c = peer.conn
    warm, reps, n = small_sizes()

    def batch():
        t0 = time.perf_counter()
        c.send(n)
        got = 0
        while c.recv_bytes():
            got += 1
        secs = time.perf_counter() - t0
        if got != n:
            raise RuntimeError(f"{got} of {n} messages")
        return n / secs

    v = batches(warm, reps, batch)
    c.send(0)
    peer.proc.join()
    return v, "msgs/s"


def pipe_throughput_small_typed():
    peer = Peer(blast, "typed")
    c = peer.conn
    warm, reps, n = small_sizes()

    def batch():
        t0 = time.perf_counter()
        c.send(n)
        got = 0
        while c.recv() is not None:
            got += 1
        secs = time.perf_counter() - t0
        if got != n:
            raise RuntimeError(f"{got} of {n} messages")
        return n / secs

    v = batches(warm, reps, batch)
    c.send(0)
    peer.proc.join()
    return v, "msgs/s"


def big_sizes():
    return 1, pick(2, 5), pick(32, 256)


def big_stream(into):
    peer = Peer(blast, "big")
    c = peer.conn
    warm, reps, n = big_sizes()
    buf = bytearray(BIG)

    def batch():
        t0 = time.perf_counter()
        c.send(n)
        total = 0
        while True:
            got = c.recv_bytes_into(buf) if into else len(c.recv_bytes())
            if got == 0:
                break
            total += got
        secs = time.perf_counter() - t0
        if total != n * BIG:
            raise RuntimeError(f"{total} of {n * BIG} bytes")
        return total / secs / 1e9

    v = batches(warm, reps, batch)
    c.send(0)
    peer.proc.join()
    return v, "GB/s"


def pipe_throughput_1mib():
    return big_stream(False)


def pipe_throughput_1mib_into():
    return big_stream(True)


# ---- shared values and synchronization ----


def inc_locked(v, ready, go, n, ends, i):
    ready.release()
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    ends[i] = time.monotonic_ns()


def sync_value_locked_inc_2proc():
    """Two children add 1 to a shared Value n times each, under its lock;
    ns per increment over both, from the start signal to the last child's
    last increment (CLOCK_MONOTONIC, as on the Rust side)."""
    ctx = mp.get_context("fork")
    warm, reps, n = 1, pick(1, 5), pick(2_000, 20_000)

    def batch():
        v = ctx.Value("q", 0)
        ready, go = ctx.Semaphore(0), ctx.Event()
        ends = ctx.RawArray("q", 2)
        ps = [
            ctx.Process(target=inc_locked, args=(v, ready, go, n, ends, i))
            for i in range(2)
        ]
        for p in ps:
            p.start()
        for _ in ps:
            if not ready.acquire(timeout=60):
                raise RuntimeError("children not ready")
        t0 = time.monotonic_ns()
        go.set()
        for p in ps:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"child exited with {p.exitcode}")
        if v.value != 2 * n:
            raise RuntimeError(f"counter is {v.value}, wanted {2 * n}")
        return (max(ends) - t0) / (2 * n)

    return batches(warm, reps, batch), "ns"


def uncontended_sizes():
    return 1, pick(3, 9), pick(10_000, 200_000)


def sync_value_locked_inc_uncontended():
    v = mp.Value("q", 0)
    # A tenth of the lock row's loop: each increment costs over a microsecond.
    warm, reps, n = uncontended_sizes()
    n //= 10

    def batch():
        t0 = time.perf_counter()
        for _ in range(n):
            with v.get_lock():
                v.value += 1
        return (time.perf_counter() - t0) * 1e9 / n

    return batches(warm, reps, batch), "ns"


def sync_lock_uncontended():
    lock = mp.Lock()
    warm, reps, n = uncontended_sizes()

    def batch():
        acquire, release = lock.acquire, lock.release
        t0 = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        return (time.perf_counter() - t0) * 1e9 / n

    return batches(warm, reps, batch), "ns"


def event_echo(ping, pong, stop):
    while True:
        ping.wait()
        ping.clear()
        if stop.is_set():
            return
        pong.set()


def sync_event_pingpong():
    ctx = mp.get_context("fork")
    ping, pong, stop = ctx.Event(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=event_echo, args=(ping, pong, stop))
    p.start()
    # Fewer round trips than the pipe rows: a cross-process Event round
    # trip costs hundreds of microseconds here.
    warm, reps, n = 1, pick(3, 9), pick(50, 300)

    def batch():
        t0 = time.perf_counter()
        for _ in range(n):
            ping.set()
            pong.wait()
            pong.clear()
        return (time.perf_counter() - t0) * 1e6 / n

    v = batches(warm, reps, batch)
    stop.set()
    ping.set()
    p.join()
    return v, "us"


def sync_array_sum_1m():
    """Sum of a 1M-element shared Array of doubles under one lock. (Plain
    `sum(arr)` takes the lock once per element, some 50x slower.)"""
    n = 1_000_000
    arr = mp.Array("d", n)
    with arr.get_lock():
        arr.get_obj()[:] = [float(i) for i in range(n)]
    want = float(n * (n - 1) // 2)
    warm, reps = pick(0, 1), pick(1, 5)

    def batch():
        t0 = time.perf_counter()
        with arr.get_lock():
            s = sum(arr.get_obj())
        us = (time.perf_counter() - t0) * 1e6
        if s != want:
            raise RuntimeError(f"sum is {s}, wanted {want}")
        return us

    return batches(warm, reps, batch), "us"


# ---- queues (children forked; startup is not measured) ----


def queue_put_n(q, n):
    for i in range(n):
        q.put(i)


def queue_1p1c_small():
    """A child puts n ints; messages/s from the first received to the last."""
    ctx = mp.get_context("fork")
    warm, reps, n = 0, pick(1, 3), pick(5_000, 200_000)

    def batch():
        q = ctx.Queue()
        p = ctx.Process(target=queue_put_n, args=(q, n))
        p.start()
        if q.get() != 0:
            raise RuntimeError("bad first message")
        t0 = time.perf_counter()
        for i in range(1, n):
            if q.get() != i:
                raise RuntimeError("out of order")
        secs = time.perf_counter() - t0
        p.join()
        return (n - 1) / secs

    return batches(warm, reps, batch), "msgs/s"


def queue_produce_after_go(q, ready, go, n):
    ready.release()
    go.wait()
    for i in range(n):
        q.put(i)
    q.put(None)


def queue_consume_until_stop(q, ready, out):
    ready.release()
    count = 0
    while q.get() is not None:
        count += 1
    out.put((count, time.monotonic_ns()))


def queue_2p2c_small():
    """Two producers put n ints each then a sentinel; two consumers get
    until their first sentinel and stamp the time (CLOCK_MONOTONIC, as on
    the Rust side); messages/s from the start signal to the last stamp."""
    ctx = mp.get_context("fork")
    warm, reps, n = 0, pick(1, 3), pick(5_000, 100_000)

    def batch():
        q, out = ctx.Queue(), ctx.Queue()
        ready, go = ctx.Semaphore(0), ctx.Event()
        consumers = [
            ctx.Process(target=queue_consume_until_stop, args=(q, ready, out))
            for _ in range(2)
        ]
        producers = [
            ctx.Process(target=queue_produce_after_go, args=(q, ready, go, n))
            for _ in range(2)
        ]
        for p in consumers + producers:
            p.start()
        for _ in range(4):
            if not ready.acquire(timeout=60):
                raise RuntimeError("children not ready")
        t0 = time.monotonic_ns()
        go.set()
        got = [out.get() for _ in range(2)]
        for p in consumers + producers:
            p.join()
        total = sum(c for c, _ in got)
        if total != 2 * n:
            raise RuntimeError(f"{total} of {2 * n} messages")
        return total / ((max(t for _, t in got) - t0) / 1e9)

    return batches(warm, reps, batch), "msgs/s"


def queue_put_mib(q, n):
    msg = b"\x5a" * BIG
    for _ in range(n):
        q.put(msg)


def queue_1mib(maxsize):
    ctx = mp.get_context("fork")
    warm, reps, n = 0, pick(1, 3), pick(16, 256)

    def batch():
        q = ctx.Queue(maxsize)
        p = ctx.Process(target=queue_put_mib, args=(q, n))
        p.start()
        if len(q.get()) != BIG:
            raise RuntimeError("bad message")
        t0 = time.perf_counter()
        for _ in range(n - 1):
            if len(q.get()) != BIG:
                raise RuntimeError("bad message")
        secs = time.perf_counter() - t0
        p.join()
        return (n - 1) * BIG / secs / 1e9

    return batches(warm, reps, batch), "GB/s"


def queue_throughput_1mib():
    return queue_1mib(0)


def queue_throughput_1mib_maxsize4():
    return queue_1mib(4)


def queue_echo(ping, pong):
    while True:
        v = ping.get()
        pong.put(v)
        if v is None:
            return


def queue_pingpong():
    ctx = mp.get_context("fork")
    ping, pong = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=queue_echo, args=(ping, pong))
    p.start()
    warm, reps, n = 1, pick(3, 9), pick(200, 2000)

    def batch():
        t0 = time.perf_counter()
        for i in range(n):
            ping.put(i)
            if pong.get() != i:
                raise RuntimeError("bad echo")
        return (time.perf_counter() - t0) * 1e6 / n

    v = batches(warm, reps, batch)
    ping.put(None)
    pong.get()
    p.join()
    return v, "us"


# ---- pool (Python's default context) ----


def square(x):
    return x * x


def pool_map_sizes():
    return pick(5_000, 100_000)


def pool_map_chunksize1_100k():
    """One run: it takes seconds."""
    n = pool_map_sizes()
    with mp.Pool(2) as p:
        p.map(square, range(1000))
        t0 = time.perf_counter()
        p.map(square, range(n), chunksize=1)
        return (time.perf_counter() - t0) * 1e9 / n, "ns"


def pool_map_default_100k():
    n = pool_map_sizes()
    with mp.Pool(2) as p:
        p.map(square, range(1000))

        def batch():
            t0 = time.perf_counter()
            p.map(square, range(n))
            return (time.perf_counter() - t0) * 1e9 / n

        return batches(1, pick(1, 3), batch), "ns"


def pool_apply_async_roundtrip():
    k = pick(200, 1000)
    with mp.Pool(2) as p:
        p.map(square, range(1000))

        def batch():
            t0 = time.perf_counter()
            for i in range(k):
                if p.apply_async(square, (i,)).get() != i * i:
                    raise RuntimeError("bad answer")
            return (time.perf_counter() - t0) * 1e6 / k

        return batches(1, pick(2, 5), batch), "us"


def pool_pool2_start_shutdown():
    def batch():
        t0 = time.perf_counter()
        p = mp.Pool(2)
        p.close()
        p.join()
        return (time.perf_counter() - t0) * 1e6

    return batches(1, pick(2, 5), batch), "us"


ROWS = {
    "process.spawn": process_spawn,
    "process.fork": process_fork,
    "pipe.pingpong.small": pipe_pingpong_small,
    "pipe.pingpong.small_typed": pipe_pingpong_small_typed,
    "pipe.throughput.small": pipe_throughput_small,
    "pipe.throughput.small_typed": pipe_throughput_small_typed,
    "pipe.throughput.1mib": pipe_throughput_1mib,
    "pipe.throughput.1mib_into": pipe_throughput_1mib_into,
    "sync.value.locked_inc_2proc": sync_value_locked_inc_2proc,
    "sync.value.locked_inc_uncontended": sync_value_locked_inc_uncontended,
    "sync.lock.uncontended": sync_lock_uncontended,
    "sync.event.pingpong": sync_event_pingpong,
    "sync.array.sum_1m": sync_array_sum_1m,
    "queue.1p1c.small": queue_1p1c_small,
    "queue.2p2c.small": queue_2p2c_small,
    "queue.throughput.1mib": queue_throughput_1mib,
    "queue.throughput.1mib_maxsize4": queue_throughput_1mib_maxsize4,
    "queue.pingpong": queue_pingpong,
    "pool.map.chunksize1_100k": pool_map_chunksize1_100k,
    "pool.map.default_100k": pool_map_default_100k,
    "pool.apply_async.roundtrip": pool_apply_async_roundtrip,
    "pool.pool2.start_shutdown": pool_pool2_start_shutdown,
}


def main(argv):
    global QUICK
    mode = "unpinned"
    wanted = []
    for a in argv:
        if a == "--pinned":
            mode = "pinned"
        elif a == "--unpinned":
            mode = "unpinned"
        elif a == "--quick":
            QUICK = True
        elif a.startswith("-"):
            sys.exit(f"unknown option {a}")
        else:
            wanted.append(a)
    if mode == "pinned":
        os.sched_setaffinity(0, {0})
    for name in wanted:
        if name not in ROWS:
            sys.exit(f"no Python row named {name}")
    for name in wanted or ROWS:
        value, unit = ROWS[name]()
        print(f"{name}.{mode}.python\t{value:.6g}\t{unit}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
