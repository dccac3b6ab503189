"""The seed program: count primes up to N with multiprocessing.Pool.map (the Python side of
scripts/primes.rhai, same trial-division loop)."""

import sys
from multiprocessing import Pool


def is_prime(n):
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    with Pool() as pool:
        count = sum(pool.map(is_prime, range(1, n + 1)))
    print(f"Found {count} primes up to {n}")
