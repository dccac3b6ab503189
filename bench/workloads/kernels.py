"""Single-process numeric kernels, as kernels.rhai: `python3 kernels.py NAME` prints the seconds."""

import sys
import time


def is_prime(n):
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def primes(limit):
    count = 0
    for n in range(1, limit + 1):
        if is_prime(n):
            count += 1
    return count


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def collatz(limit):
    return sum(collatz_steps(n) for n in range(1, limit + 1))


def nested(size):
    s = 0
    for i in range(size):
        for j in range(size):
            s += i * j
    return s


def basel(terms):
    s = 0.0
    for k in range(1, terms + 1):
        s += 1.0 / float(k * k)
    return s


def dot(a, b):
    s = 0.0
    for i in range(len(a)):
        s += a[i] * b[i]
    return s


def dots(rounds):
    a = [i / 7.0 for i in range(1000)]
    b = [1.0 / (i + 1) for i in range(1000)]
    total = 0.0
    for _ in range(rounds):
        total += dot(a, b)
    return total


KERNELS = {
    "primes": lambda: primes(100000),
    "fib": lambda: fib(27),
    "collatz": lambda: collatz(100000),
    "nested": lambda: nested(1000),
    "basel": lambda: basel(1000000),
    "dot": lambda: dots(1000),
}

if __name__ == "__main__":
    kernel = sys.argv[1] if len(sys.argv) > 1 else "primes"
    started = time.perf_counter()
    result = KERNELS[kernel]()
    elapsed = time.perf_counter() - started
    if kernel == "primes":
        assert result == 9592
    print(elapsed)
