#!/usr/bin/env python3
"""PyCSP 0.9.2 counterpart of benches/csp.rs: commstime (Prefix -> Delta ->
Succ -> Consumer ring, sequential Delta; microseconds per channel
communication) and ping-pong (microseconds per round trip), with PyCSP's
threads (@process) and OS processes (@multiprocess), unpinned and pinned
to CPU 0. Prints `name<TAB>value<TAB>unit` lines; notes go to stderr.

Setup: pip install pycsp==0.9.2. On Python 3.11 PyCSP needs
PYCSP_HOST=127.0.0.1 in the environment and collections.Callable, both set
below before the import.
"""
import collections
import collections.abc
import os
import sys
import time

collections.Callable = collections.abc.Callable
os.environ.setdefault("PYCSP_HOST", "127.0.0.1")

try:
    import pycsp.parallel as csp
except Exception as e:  # not installed, or does not import here
    print(f"note: PyCSP not available ({e}); install it with pip install pycsp==0.9.2",
          file=sys.stderr)
    sys.exit(0)

CYCLES = {"threads": 1000, "processes": 500}
ROUNDS = {"threads": 1000, "processes": 500}
RUNS = 3


def make(decorate):
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
        t = time.time()
        for _ in range(n):
            cin()
        result((time.time() - t) * 1e6 / (4 * n))
        csp.poison(cin)

    @decorate
    def pinger(cout, cin, n, result):
        for i in range(50):
            cout(i)
            cin()
        t = time.time()
        for i in range(n):
            cout(i)
            cin()
        result((time.time() - t) * 1e6 / n)
        csp.poison(cout)

    @decorate
    def ponger(cin, cout):
        while True:
            cout(cin())

    return prefix, delta, succ, consumer, pinger, ponger


@csp.process
def collector(cin, out):
    out.append(cin())


def commstime(kind):
    deco = csp.process if kind == "threads" else csp.multiprocess
    prefix, delta, succ, consumer, _, _ = make(deco)
    a, b, c, d, r = (csp.Channel() for _ in range(5))
    out = []
    csp.Parallel(prefix(c.reader(), a.writer()),
                 delta(a.reader(), b.writer(), d.writer()),
                 succ(b.reader(), c.writer()),
                 consumer(d.reader(), CYCLES[kind], r.writer()),
                 collector(r.reader(), out))
    return out[0]


def pingpong(kind):
    deco = csp.process if kind == "threads" else csp.multiprocess
    _, _, _, _, pinger, ponger = make(deco)
    a, b, r = (csp.Channel() for _ in range(3))
    out = []
    csp.Parallel(pinger(a.writer(), b.reader(), ROUNDS[kind], r.writer()),
                 ponger(a.reader(), b.writer()),
                 collector(r.reader(), out))
    return out[0]


def pin(on):
    os.sched_setaffinity(0, {0} if on else set(range(os.cpu_count())))


def main():
    for pinned in (False, True):
        pin(pinned)
        tag = "pinned" if pinned else "unpinned"
        for kind in ("threads", "processes"):
            for name, f, unit in (("commstime", commstime, "us/comm"),
                                  ("pingpong", pingpong, "us/roundtrip")):
                try:
                    runs = sorted(f(kind) for _ in range(RUNS))
                    print(f"pycsp/{name}/{kind}/{tag}\t{runs[len(runs) // 2]:.3f}\t{unit}",
                          flush=True)
                except Exception as e:
                    print(f"note: pycsp/{name}/{kind}/{tag} failed: {e!r}", file=sys.stderr)
    pin(False)
    csp.shutdown()


if __name__ == "__main__":
    main()
