"""Counter updates in a Manager().dict() from 2 processes, each under a manager lock (the atomic
way in Python): operations per second."""

import time
from multiprocessing import Manager, Process


def bump(d, lock, n):
    for i in range(n):
        key = f"k{i % 8}"
        with lock:
            d[key] = d.get(key, 0) + 1


if __name__ == "__main__":
    n = 20000
    with Manager() as manager:
        d = manager.dict()
        lock = manager.Lock()
        started = time.perf_counter()
        ps = [Process(target=bump, args=(d, lock, n)) for _ in range(2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        elapsed = time.perf_counter() - started
        assert sum(d.values()) == 2 * n
    print(2 * n / elapsed)
