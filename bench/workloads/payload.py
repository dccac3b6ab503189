"""Pool.map over 64 strings of 1 MiB, returning their lengths: MiB per second through the pipes."""

import time
from multiprocessing import Pool


def length(s):
    return len(s)


if __name__ == "__main__":
    items = ["x" * (1 << 20) for _ in range(64)]
    with Pool() as pool:
        pool.map(length, ["warm"])
        started = time.perf_counter()
        result = pool.map(length, items)
        elapsed = time.perf_counter() - started
    assert sum(result) == 64 << 20
    print(64 / elapsed)
