"""One producer process puts 200,000 small ints on a Queue; the parent gets them: messages per second."""

import time
from multiprocessing import Process, Queue


def producer(q, n):
    for i in range(n):
        q.put(i)


if __name__ == "__main__":
    n = 200000
    q = Queue()
    started = time.perf_counter()
    p = Process(target=producer, args=(q, n))
    p.start()
    total = 0
    for _ in range(n):
        total += q.get()
    elapsed = time.perf_counter() - started
    p.join()
    assert total == n * (n - 1) // 2
    print(n / elapsed)
