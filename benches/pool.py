"""Python's multiprocessing.Pool on the rows of benches/pool.rs.

Prints `name<TAB>value<TAB>unit` lines. `--pin` pins the process (and so
its workers) to CPU 0 first. Each row is the median of a few runs (one run
for the slow chunksize=1 map).
"""
import multiprocessing as mp
import os
import statistics
import sys
import time

N = 100_000


def trivial(x):
    return x * x


def median_of(runs, f):
    return statistics.median(f() for _ in range(runs))


def main():
    pinned = "--pin" in sys.argv
    if pinned:
        os.sched_setaffinity(0, {0})
    suffix = "pinned" if pinned else "unpinned"
    reps = int(os.environ.get("POOL_BENCH_REPS", "3"))
    with mp.Pool(2) as p:
        p.map(trivial, range(1000))

        def cs1():
            t = time.perf_counter()
            p.map(trivial, range(N), chunksize=1)
            return time.perf_counter() - t

        def default():
            t = time.perf_counter()
            p.map(trivial, range(N))
            return time.perf_counter() - t

        def apply_rt():
            k = 1000
            t = time.perf_counter()
            for i in range(k):
                p.apply_async(trivial, (i,)).get()
            return (time.perf_counter() - t) / k

        print(f"py_map_chunksize1_100k_{suffix}\t{cs1() * 1e3:.1f}\tms", flush=True)
        print(f"py_map_default_100k_{suffix}\t{median_of(reps, default) * 1e3:.2f}\tms", flush=True)
        print(f"py_apply_async_roundtrip_{suffix}\t{median_of(reps, apply_rt) * 1e6:.1f}\tus", flush=True)

    def lifecycle():
        k = 5
        t = time.perf_counter()
        for _ in range(k):
            q = mp.Pool(2)
            q.close()
            q.join()
        return (time.perf_counter() - t) / k

    print(f"py_pool2_start_shutdown_{suffix}\t{median_of(reps, lifecycle) * 1e3:.2f}\tms", flush=True)


if __name__ == "__main__":
    main()
