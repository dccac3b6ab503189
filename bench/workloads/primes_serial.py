"""Count primes up to N in one process (interpreter speed, no parallelism)."""

import sys


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
    count = sum(1 for k in range(1, n + 1) if is_prime(k))
    print(f"Found {count} primes up to {n}")
