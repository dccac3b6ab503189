"""Pool.map of an identity function over 200,000 small ints, default chunking: microseconds per item."""

import time
from multiprocessing import Pool


def identity(x):
    return x


if __name__ == "__main__":
    n = 200000
    with Pool() as pool:
        pool.map(identity, range(100))  # the pool is warm, as in the mpscript run
        started = time.perf_counter()
        result = pool.map(identity, range(n))
        elapsed = time.perf_counter() - started
    assert len(result) == n
    print(elapsed / n * 1e6)
