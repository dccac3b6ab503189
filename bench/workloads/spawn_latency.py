"""Start a process running a no-op and join it, 200 times: microseconds per start+join.
argv[1] is the start method: fork or spawn."""

import multiprocessing as mp
import sys
import time


def noop():
    pass


if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1] if len(sys.argv) > 1 else "fork")
    n = 200
    started = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    print((time.perf_counter() - started) / n * 1e6)
