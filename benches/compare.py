#!/usr/bin/env python3
"""Python multiprocessing side of `cargo bench --bench compare`.

One function per row, named like the Rust rows (`pipe.pingpong.small` is
`pipe_pingpong_small`), each returning (value, unit) in the Rust row's
unit. Prints one TSV line per row: `<row>.<mode>.python<TAB>value<TAB>unit`.

    python3 benches/compare.py [--unpinned|--same_core|--cross_core] [--quick] [row ...]

--same_core (or its old name --pinned) restricts the process (and its
children) to CPU 0 first. --cross_core pins the process to CPU 0 and the
far end of every round trip (the child calling `pin_child`) to CPU 1; the
Rust side asks for it on round-trip rows only.
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

# benches/ holds other scripts (a queue.py, say) that must not shadow the
# standard modules multiprocessing imports (managers imports `queue`).
if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]

QUICK = os.environ.get("MULTIPROC_BENCH_QUICK", "") not in ("", "0")

SMALL = 16
BIG = 1 << 20


# The CPU the far end of a round trip pins itself to (--cross_core), or None.
CHILD_CPU = None


def pin_child(cpu=None):
    """Called first thing by the far end of a round trip (an echoing child,
    a pool worker's initializer, a manager client): with --cross_core pins
    this process to CPU 1, otherwise does nothing."""
    cpu = CHILD_CPU if cpu is None else cpu
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def pinned_call(target, *args):
    """Runs target(*args) after pin_child (a Process target)."""
    pin_child()
    return target(*args)


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
        self.proc = mp.get_context("fork").Process(
            target=pinned_call, args=(target, theirs, *args)
        )
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


def small_stream(c, n, more):
    """Asks the sender on `c` for `n` messages and receives them (`more()`
    is false at the terminator); messages/s."""
    t0 = time.perf_counter()
    c.send(n)
    got = 0
    while more():
        got += 1
    secs = time.perf_counter() - t0
    if got != n:
        raise RuntimeError(f"{got} of {n} messages")
    return n / secs


def pipe_throughput_small():
    peer = Peer(blast, "small")
    c = peer.conn
    warm, reps, n = small_sizes()

    def batch():
        return small_stream(c, n, lambda: c.recv_bytes())

    v = batches(warm, reps, batch)
    c.send(0)
    peer.proc.join()
    return v, "msgs/s"


def pipe_throughput_small_typed():
    peer = Peer(blast, "typed")
    c = peer.conn
    warm, reps, n = small_sizes()

    def batch():
        return small_stream(c, n, lambda: c.recv() is not None)

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
    pin_child()
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
    pin_child()
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
    with mp.Pool(2, initializer=pin_child, initargs=(CHILD_CPU,)) as p:
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


# ---- CSP: PyCSP 0.9.2 (the "python" figure of the csp.* rows) ----


def pycsp():
    """Imports PyCSP 0.9.2 (pip install pycsp==0.9.2), or exits with a note
    that the harness prints. On Python 3.11 it needs PYCSP_HOST and
    collections.Callable set before the import."""
    import collections
    import collections.abc

    collections.Callable = collections.abc.Callable
    os.environ.setdefault("PYCSP_HOST", "127.0.0.1")
    try:
        import pycsp.parallel as csp
    except Exception as e:
        sys.exit(f"PyCSP not available ({e!r}); pip install pycsp==0.9.2: row skipped")
    return csp


def pycsp_network(csp, decorate):
    @decorate
    def prefix(cin, cout):
        cout(0)
        while True:
            cout(cin())

    @decorate
    def delta(cin, cout1, cout2):
        while True:
            x = cin()
            cout1(x)
            cout2(x)

    @decorate
    def succ(cin, cout):
        while True:
            cout(cin() + 1)

    @decorate
    def consumer(cin, n, result):
        for _ in range(50):
            cin()
        t0 = time.perf_counter()
        for _ in range(n):
            cin()
        result((time.perf_counter() - t0) * 1e6 / (4 * n))
        csp.poison(cin)

    @decorate
    def pinger(cout, cin, n, result):
        for i in range(50):
            cout(i)
            cin()
        t0 = time.perf_counter()
        for i in range(n):
            cout(i)
            cin()
        result((time.perf_counter() - t0) * 1e6 / n)
        csp.poison(cout)

    @decorate
    def ponger(cin, cout):
        pin_child()
        while True:
            cout(cin())

    @csp.process
    def collector(cin, out):
        out.append(cin())

    return prefix, delta, succ, consumer, pinger, ponger, collector


def pycsp_row(bench, flavour):
    """Commstime (us per communication) or ping-pong (us per round trip)
    with PyCSP threads (@process) or OS processes (@multiprocess); the
    median of a few networks."""
    csp = pycsp()
    deco = csp.process if flavour == "threads" else csp.multiprocess
    prefix, delta, succ, consumer, pinger, ponger, collector = pycsp_network(csp, deco)
    n = pick(200, 1000) if flavour == "threads" else pick(100, 500)

    def commstime():
        a, b, c, d, r = (csp.Channel() for _ in range(5))
        out = []
        csp.Parallel(
            prefix(c.reader(), a.writer()),
            delta(a.reader(), b.writer(), d.writer()),
            succ(b.reader(), c.writer()),
            consumer(d.reader(), n, r.writer()),
            collector(r.reader(), out),
        )
        return out[0]

    def pingpong():
        a, b, r = (csp.Channel() for _ in range(3))
        out = []
        csp.Parallel(
            pinger(a.writer(), b.reader(), n, r.writer()),
            ponger(a.reader(), b.writer()),
            collector(r.reader(), out),
        )
        return out[0]

    v = batches(0, pick(1, 3), commstime if bench == "commstime" else pingpong)
    csp.shutdown()
    return v, "us"


def csp_commstime_processes():
    return pycsp_row("commstime", "processes")


def csp_pingpong_processes():
    return pycsp_row("pingpong", "processes")


def csp_commstime_threads():
    return pycsp_row("commstime", "threads")


def csp_pingpong_threads():
    return pycsp_row("pingpong", "threads")


def pycsp_greenlets():
    """Imports PyCSP's greenlets mode (needs `pip install greenlet` beside
    PyCSP 0.9.2), or exits with a note that the harness prints."""
    import collections
    import collections.abc

    collections.Callable = collections.abc.Callable
    os.environ.setdefault("PYCSP_HOST", "127.0.0.1")
    try:
        import greenlet  # noqa: F401  (pycsp.greenlets imports it lazily)
        import pycsp.greenlets as csp
    except Exception as e:
        sys.exit(
            f"PyCSP greenlets mode not available ({e!r}); "
            "pip install greenlet pycsp==0.9.2: row skipped"
        )
    return csp


def csp_commstime_light():
    """Commstime with PyCSP's greenlets (all four processes greenlets of
    one thread, PyCSP's lightweight mode), ns per communication; the
    median of a few networks."""
    csp = pycsp_greenlets()
    n = pick(2_000, 20_000)

    @csp.process
    def prefix(cin, cout):
        cout(0)
        while True:
            cout(cin())

    @csp.process
    def delta(cin, cout1, cout2):
        while True:
            x = cin()
            cout1(x)
            cout2(x)

    @csp.process
    def succ(cin, cout):
        while True:
            cout(cin() + 1)

    @csp.process
    def consumer(cin, out):
        for _ in range(100):
            cin()
        t0 = time.perf_counter()
        for _ in range(n):
            cin()
        out.append((time.perf_counter() - t0) * 1e9 / (4 * n))
        csp.poison(cin)

    def commstime():
        a, b, c, d = (csp.Channel() for _ in range(4))
        out = []
        csp.Parallel(
            prefix(+c, -a),
            delta(+a, -b, -d),
            succ(+b, -c),
            consumer(+d, out),
        )
        return out[0]

    v = batches(pick(0, 1), pick(2, 5), commstime)
    csp.shutdown()
    return v, "ns"


# ---- the Manager ----


def manager_sizes():
    # (warm-up runs, measured runs, operations per run), as on the Rust side
    return 0, pick(1, 3), pick(1_000, 10_000)


def mgr_list_append(lst, n, out):
    for i in range(100):
        lst.append(i)
    t0 = time.perf_counter()
    for i in range(n):
        lst.append(i)
    out.put(n / (time.perf_counter() - t0))


def mgr_list_append_threads(lst, n, out):
    import threading

    lst.append(0)

    def work():
        for i in range(n // 4):
            lst.append(i)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(n // 4 * 4 / (time.perf_counter() - t0))


def mgr_dict_set_get(d, n, out):
    keys = [f"key{i}" for i in range(64)]
    for k in keys:
        d[k] = 0
    t0 = time.perf_counter()
    for i in range(n):
        k = keys[i % 64]
        d[k] = i
        d[k]
    out.put(2 * n / (time.perf_counter() - t0))


def mgr_ns_set_get(ns, n, out):
    ns.x = 0
    t0 = time.perf_counter()
    for i in range(n):
        ns.x = i
        ns.x
    out.put(2 * n / (time.perf_counter() - t0))


def mgr_in_child(target, *args):
    q = mp.Queue()
    p = mp.get_context("fork").Process(target=pinned_call, args=(target, *args, q))
    p.start()
    v = q.get(timeout=300)
    p.join()
    return v


def manager_proxy_row(target, make, divide):
    warm, reps, n = manager_sizes()
    with mp.Manager() as m:
        v = batches(warm, reps, lambda: mgr_in_child(target, make(m), n // divide))
    return v, "ops/s"


def manager_list_append_child():
    return manager_proxy_row(mgr_list_append, lambda m: m.list(), 1)


def manager_list_append_4threads_child():
    return manager_proxy_row(mgr_list_append_threads, lambda m: m.list(), 1)


def manager_dict_set_get_child():
    return manager_proxy_row(mgr_dict_set_get, lambda m: m.dict(), 2)


def manager_namespace_set_get_child():
    return manager_proxy_row(mgr_ns_set_get, lambda m: m.Namespace(), 2)


def mgr_add(ns, ready, go, n, ends, i):
    ready.release()
    go.wait()
    for _ in range(n):
        ns.counter += 1  # a get and a set: not atomic
    ends[i] = time.monotonic_ns()


def mgr_adds(m, per):
    """Two children add 1 to ns.counter `per` times each; (ops/s from the
    start signal to the last child's last add, final count)."""
    ctx = mp.get_context("fork")
    ns = m.Namespace()
    ns.counter = 0
    ready, go = ctx.Semaphore(0), ctx.Event()
    ends = ctx.RawArray("q", 2)
    ps = [ctx.Process(target=mgr_add, args=(ns, ready, go, per, ends, i)) for i in range(2)]
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
    return 2 * per * 1e9 / (max(ends) - t0), ns.counter


def manager_atomic_add_2proc():
    warm, reps, n = manager_sizes()
    with mp.Manager() as m:
        v = batches(warm, reps, lambda: mgr_adds(m, n // 2)[0])
    return v, "ops/s"


def manager_atomic_add_2proc_count():
    # The same increments per process as the Rust side's count row.
    with mp.Manager() as m:
        return mgr_adds(m, pick(1_000, 5_000))[1], "count"


def manager_bytes_1mib():
    # A 1 MiB bytes stored in a Namespace attribute and read back, us per
    # store and read (as on the Rust side).
    reps, n = pick(1, 5), pick(3, 20)
    big = bytes(i % 251 for i in range(1 << 20))
    with mp.Manager() as m:
        ns = m.Namespace()

        def once():
            t0 = time.perf_counter()
            for _ in range(n):
                ns.data = big
                if len(ns.data) != len(big):
                    raise RuntimeError("bytes read back differ")
            return (time.perf_counter() - t0) * 1e6 / n

        return batches(1, reps, once), "us"


def manager_start_shutdown():
    def once():
        t0 = time.perf_counter()
        m = mp.Manager()
        m.shutdown()
        return (time.perf_counter() - t0) * 1e6

    return batches(pick(0, 1), pick(3, 11), once), "us"


ROWS.update(
    {
        "csp.commstime.processes": csp_commstime_processes,
        "csp.pingpong.processes": csp_pingpong_processes,
        "csp.commstime.threads": csp_commstime_threads,
        "csp.commstime.threads_shm": csp_commstime_threads,
        "csp.pingpong.threads": csp_pingpong_threads,
        "csp.pingpong.threads_shm": csp_pingpong_threads,
        "manager.list_append_child": manager_list_append_child,
        "manager.list_append_4threads_child": manager_list_append_4threads_child,
        "manager.dict_set_get_child": manager_dict_set_get_child,
        "manager.namespace_set_get_child": manager_namespace_set_get_child,
        "manager.atomic_add_2proc": manager_atomic_add_2proc,
        "manager.atomic_add_2proc_count": manager_atomic_add_2proc_count,
        "manager.bytes_1mib": manager_bytes_1mib,
        "manager.start_shutdown": manager_start_shutdown,
    }
)


# ---- pickle codec ----


def pickle_ints():
    return [(i * 7919) % 1_000_003 - 500_000 for i in range(1 << 17)]


def pickle_time(f, n):
    samples = []
    for i in range(1 + pick(3, 11)):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        if i >= 1:
            samples.append((time.perf_counter() - t0) * 1e6 / n)
    return statistics.median(samples)


def codec_pickle_encode_1mib_ints():
    import pickle
    v = pickle_ints()
    return pickle_time(lambda: pickle.dumps(v, protocol=4), pick(2, 20)), "us"


def codec_pickle_decode_1mib_ints():
    import pickle
    v = pickle_ints()
    data = pickle.dumps(v, protocol=4)
    if pickle.loads(data) != v:
        raise RuntimeError("pickle round trip")
    return pickle_time(lambda: pickle.loads(data), pick(2, 20)), "us"


ROWS.update(
    {
        "codec.pickle.encode_1mib_ints": codec_pickle_encode_1mib_ints,
        "codec.pickle.decode_1mib_ints": codec_pickle_decode_1mib_ints,
        # A Python client of a Python manager: the same measurement as
        # manager.list_append_child (the Rust row serves the manager itself).
        "manager.python_client.list_append": manager_list_append_child,
        "csp.commstime.light": csp_commstime_light,
    }
)


# ---- the cluster: CSP channels across two processes over TCP ----


def cluster_commstime_2proc():
    """Commstime across two OS processes over PyCSP's network channels
    (its own TCP protocol on 127.0.0.1, PYCSP_HOST): the main process
    creates the four channels (their home) and runs Prefix and Consumer as
    threads; one `@multiprocess` process runs Delta and Succ as threads,
    reaching the channels over TCP. us per communication (four per
    cycle), the median of a few networks; as `cluster.commstime.2proc`."""
    csp = pycsp()
    prefix, delta, succ, consumer, _, _, collector = pycsp_network(csp, csp.process)
    n = pick(100, 500)

    @csp.multiprocess
    def far(a_in, b_out, b_in, c_out, d_out):
        csp.Parallel(delta(a_in, b_out, d_out), succ(b_in, c_out))

    def commstime():
        a, b, c, d, r = (csp.Channel() for _ in range(5))
        out = []
        csp.Parallel(
            prefix(c.reader(), a.writer()),
            consumer(d.reader(), n, r.writer()),
            far(a.reader(), b.writer(), b.reader(), c.writer(), d.writer()),
            collector(r.reader(), out),
        )
        return out[0]

    v = batches(0, pick(2, 5), commstime)
    csp.shutdown()
    return v, "us"


ROWS["cluster.commstime.2proc"] = cluster_commstime_2proc


def main(argv):
    global QUICK, CHILD_CPU
    mode = "unpinned"
    wanted = []
    for a in argv:
        if a in ("--pinned", "--same_core"):
            mode = "same_core"
        elif a == "--unpinned":
            mode = "unpinned"
        elif a == "--cross_core":
            mode = "cross_core"
        elif a == "--quick":
            QUICK = True
        elif a.startswith("-"):
            sys.exit(f"unknown option {a}")
        else:
            wanted.append(a)
    if mode in ("same_core", "cross_core"):
        os.sched_setaffinity(0, {0})
    if mode == "cross_core":
        CHILD_CPU = 1
    for name in wanted:
        if name not in ROWS:
            sys.exit(f"no Python row named {name}")
    for name in wanted or ROWS:
        value, unit = ROWS[name]()
        print(f"{name}.{mode}.python\t{value:.6g}\t{unit}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
