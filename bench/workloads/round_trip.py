"""The parent and one process exchange a small message 20,000 times over a Pipe: microseconds per round trip."""

import time
from multiprocessing import Pipe, Process


def echo(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


if __name__ == "__main__":
    n = 20000
    here, there = Pipe()
    p = Process(target=echo, args=(there, n))
    p.start()
    here.send(0)
    here.recv()  # the process is up
    started = time.perf_counter()
    for i in range(1, n):
        here.send(i)
        assert here.recv() == i
    elapsed = time.perf_counter() - started
    p.join()
    print(elapsed / (n - 1) * 1e6)
