"""Increments of a multiprocessing.Array('i') from 2 processes, each under the array's lock (the
atomic way in Python): operations per second."""

import time
from multiprocessing import Array, Process


def bump(a, n):
    for i in range(n):
        with a.get_lock():
            a[i % 8] += 1


if __name__ == "__main__":
    n = 200000
    a = Array("i", 8)
    started = time.perf_counter()
    ps = [Process(target=bump, args=(a, n)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    elapsed = time.perf_counter() - started
    assert sum(a[:]) == 2 * n
    print(2 * n / elapsed)
