"""With 500 processes alive (each waiting on an event), start 100 more: microseconds per new
process (fork start method)."""

import multiprocessing as mp
import sys
import time

if __name__ == "__main__":
    live = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    ctx = mp.get_context("fork")
    event = ctx.Event()
    procs = [ctx.Process(target=event.wait) for _ in range(live)]
    for p in procs:
        p.start()
    n = 100
    started = time.perf_counter()
    more = [ctx.Process(target=event.wait) for _ in range(n)]
    for p in more:
        p.start()
    per = (time.perf_counter() - started) / n * 1e6
    event.set()
    for p in procs + more:
        p.join()
    print(per)
