"""Python's multiprocessing.Queue, measured like benches/queue.rs measures
the crate's queue: one producer to one consumer (small messages), two to
two, and a ping-pong round trip over two queues; unpinned, then pinned to
CPU 0 (children inherit the affinity). Prints name<TAB>value<TAB>unit
lines. QUEUE_BENCH_QUICK=1 for a short run."""

import os
import sys

# This file is named like the standard library's `queue`, which
# multiprocessing imports: keep its own folder off the import path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import multiprocessing as mp  # noqa: E402
import time  # noqa: E402

QUICK = bool(os.environ.get("QUEUE_BENCH_QUICK"))


def scale(n):
    return max(1, n // 20) if QUICK else n


def row(name, mode, value, unit):
    print(f"{name}_{mode}\t{value:.3f}\t{unit}", flush=True)


def put_n(q, n):
    for i in range(n):
        q.put(i)


def py_1p1c(n):
    q = mp.Queue()
    p = mp.Process(target=put_n, args=(q, n))
    p.start()
    q.get()
    t = time.perf_counter()
    for _ in range(n - 1):
        q.get()
    el = time.perf_counter() - t
    p.join()
    return (n - 1) / el


def put_n_after_go(go, q, n):
    go.get()
    for i in range(n):
        q.put(i)


def get_until_sentinel(q, out):
    count = 0
    while True:
        v = q.get()
        if v is None:
            out.put((count, time.time()))
            return
        count += 1


def py_2p2c(n_each):
    q, go, out = mp.Queue(), mp.Queue(), mp.Queue()
    consumers = [mp.Process(target=get_until_sentinel, args=(q, out)) for _ in range(2)]
    producers = [mp.Process(target=put_n_after_go, args=(go, q, n_each)) for _ in range(2)]
    for p in consumers + producers:
        p.start()
    time.sleep(0.2)
    t0 = time.time()
    go.put(0)
    go.put(0)
    for p in producers:
        p.join()
    q.put(None)
    q.put(None)
    results = [out.get() for _ in range(2)]
    for p in consumers:
        p.join()
    total = sum(c for c, _ in results)
    last = max(t for _, t in results)
    assert total == 2 * n_each
    return total / (last - t0)


def echo(ping, pong):
    while True:
        v = ping.get()
        pong.put(v)
        if v is None:
            return


def py_pingpong(budget):
    ping, pong = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo, args=(ping, pong))
    p.start()
    for i in range(100):
        ping.put(i)
        pong.get()
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < budget:
        for _ in range(100):
            ping.put(n)
            pong.get()
            n += 1
    el = time.perf_counter() - t
    ping.put(None)
    pong.get()
    p.join()
    return el * 1e6 / n


def run(mode):
    budget = 0.1 if QUICK else 1.0
    row("py_queue_1p1c_small", mode, py_1p1c(scale(400_000)) / 1e6, "M msg/s")
    row("py_queue_2p2c_small", mode, py_2p2c(scale(200_000)) / 1e6, "M msg/s")
    row("py_queue_pingpong", mode, py_pingpong(budget), "us/round trip")


if __name__ == "__main__":
    run("unpinned")
    os.sched_setaffinity(0, {0})
    run("pinned")
