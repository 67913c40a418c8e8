"""Python's multiprocessing manager, measured the way benches/manager.rs
measures ours: proxy round trips from a child process (list append, dict
set/get, Namespace set/get), `ns.counter += 1` from two processes (count
and lost updates), and manager start + shutdown. Prints
`python/manager/<row>/<mode><TAB>value<TAB>unit`, unpinned then pinned to
CPU 0 (os.sched_setaffinity, inherited by the children)."""

import multiprocessing as mp
import os
import sys
import time


def row(name, value, unit):
    print(f"python/manager/{name}\t{value:.1f}\t{unit}", flush=True)


def list_append(lst, n, out):
    for i in range(100):
        lst.append(i)
    t = time.perf_counter()
    for i in range(n):
        lst.append(i)
    out.put(n / (time.perf_counter() - t))


def list_append_threads(lst, n, out):
    import threading

    lst.append(0)

    def work():
        for i in range(n // 4):
            lst.append(i)

    t = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(4)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    out.put(n / (time.perf_counter() - t))


def dict_set_get(d, n, out):
    keys = [f"key{i}" for i in range(64)]
    for k in keys:
        d[k] = 0
    t = time.perf_counter()
    for i in range(n):
        k = keys[i % 64]
        d[k] = i
        d[k]
    out.put(2 * n / (time.perf_counter() - t))


def ns_set_get(ns, n, out):
    ns.x = 0
    t = time.perf_counter()
    for i in range(n):
        ns.x = i
        ns.x
    out.put(2 * n / (time.perf_counter() - t))


def add(ns, n):
    for _ in range(n):
        ns.counter += 1


def in_child(target, *args):
    q = mp.Queue()
    p = mp.Process(target=target, args=(*args, q))
    p.start()
    v = q.get()
    p.join()
    return v


def run(mode, n):
    with mp.Manager() as m:
        row(f"list_append_child/{mode}", in_child(list_append, m.list(), n), "ops/s")
        row(f"list_append_4threads_child/{mode}", in_child(list_append_threads, m.list(), n), "ops/s")
        row(f"dict_set_get_child/{mode}", in_child(dict_set_get, m.dict(), n // 2), "ops/s")
        row(f"namespace_set_get_child/{mode}", in_child(ns_set_get, m.Namespace(), n // 2), "ops/s")
        ns = m.Namespace()
        ns.counter = 0
        per = n // 2
        t = time.perf_counter()
        ps = [mp.Process(target=add, args=(ns, per)) for _ in range(2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        secs = time.perf_counter() - t
        row(f"atomic_add_2proc_expected/{mode}", 2 * per, "count")
        row(f"atomic_add_2proc_count/{mode}", ns.counter, "count")
        # Each += is two round trips (get, set) and not atomic.
        row(f"atomic_add_2proc/{mode}", 2 * per / secs, "ops/s")
    rounds = 5
    t = time.perf_counter()
    for _ in range(rounds):
        m = mp.Manager()
        m.shutdown()
    row(f"start_shutdown/{mode}", (time.perf_counter() - t) * 1e3 / rounds, "ms")


if __name__ == "__main__":
    quick = "quick" in sys.argv[1:]
    n = 1_000 if quick else 10_000  # Python is slower: fewer ops, same rate
    run("unpinned", n)
    os.sched_setaffinity(0, {0})
    run("pinned", n)
