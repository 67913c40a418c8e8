#!/usr/bin/env python3
"""Python's multiprocessing on the rows of benches/sync.rs.

Prints one `name<TAB>value<TAB>unit` line per figure (median of a few
repetitions), names prefixed `python_`, units as in sync.rs:

    python3 benches/sync.py            # all sections
    python3 benches/sync.py pingpong   # sections whose name contains a word

Python has no lock-free atomic counter on a shared Value, so the
`value_fetch_add_2proc` row has no counterpart here.
"""

import multiprocessing as mp
import os
import statistics
import sys
import time

REPS = 5
INCS = 50_000
PINGS = 1_000


def row(name, value, unit):
    print(f"python_{name}\t{value:.3f}\t{unit}", flush=True)


def inc_locked(v, go):
    go.wait()
    for _ in range(INCS):
        with v.get_lock():
            v.value += 1


def value_locked_inc_2proc():
    times = []
    for _ in range(REPS):
        v = mp.Value("q", 0)
        go = mp.Event()
        ps = [mp.Process(target=inc_locked, args=(v, go)) for _ in range(2)]
        for p in ps:
            p.start()
        time.sleep(0.05)
        t = time.perf_counter()
        go.set()
        for p in ps:
            p.join()
        times.append((time.perf_counter() - t) * 1e9 / (2 * INCS))
        assert v.value == 2 * INCS
    return statistics.median(times)


def per_op(n, f):
    best = float("inf")
    for _ in range(REPS * 2):
        t = time.perf_counter()
        f(n)
        best = min(best, (time.perf_counter() - t) * 1e9 / n)
    return best


def lock_uncontended():
    lock = mp.Lock()

    def loop(n):
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    return per_op(200_000, loop)


def value_locked_inc_uncontended():
    v = mp.Value("q", 0)

    def loop(n):
        for _ in range(n):
            with v.get_lock():
                v.value += 1

    return per_op(100_000, loop)


def pong(ping, pong_, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong_.set()


def event_pingpong():
    times = []
    for _ in range(REPS):
        ping, pong_ = mp.Event(), mp.Event()
        p = mp.Process(target=pong, args=(ping, pong_, PINGS))
        p.start()
        t = time.perf_counter()
        for _ in range(PINGS):
            ping.set()
            pong_.wait()
            pong_.clear()
        times.append((time.perf_counter() - t) * 1e6 / PINGS)
        p.join()
    return statistics.median(times)


def pinned_pingpong(q):
    os.sched_setaffinity(0, {0})
    q.put(event_pingpong())


def sums():
    n = 1_000_000
    arr = mp.Array("d", n)
    with arr.get_lock():
        raw = arr.get_obj()
        for i in range(n):
            raw[i] = float(i)
    plain = [float(i) for i in range(n)]

    def timed(f, reps=REPS):
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            out.append((time.perf_counter() - t) * 1e3)
        return statistics.median(out)

    def one_lock():
        with arr.get_lock():
            return sum(arr.get_obj())

    return [
        # Item by item through the synchronized wrapper: a lock per item.
        ("array_sum_1m_per_item_lock", timed(lambda: sum(arr), reps=3)),
        ("array_sum_1m_locked", timed(one_lock)),
        ("list_sum_1m", timed(lambda: sum(plain))),
    ]


def main():
    mp.set_start_method("fork")
    only = [a for a in sys.argv[1:] if not a.startswith("-")]

    def run(section):
        return not only or any(o in section for o in only)

    if run("contended"):
        row("value_locked_inc_2proc", value_locked_inc_2proc(), "ns/op")
    if run("uncontended"):
        row("lock_uncontended", lock_uncontended(), "ns/op")
        row("value_locked_inc_uncontended", value_locked_inc_uncontended(), "ns/op")
    if run("pingpong"):
        row("event_pingpong", event_pingpong(), "us/roundtrip")
        q = mp.Queue()
        p = mp.Process(target=pinned_pingpong, args=(q,))
        p.start()
        row("event_pingpong_pinned", q.get(), "us/roundtrip")
        p.join()
    if run("sum"):
        for name, value in sums():
            row(name, value, "ms")


if __name__ == "__main__":
    main()
