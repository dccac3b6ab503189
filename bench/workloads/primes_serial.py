"""Count primes up to N in one process (interpreter speed, no parallelism)."""

import sys

from primes_pool import is_prime

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    count = sum(1 for k in range(1, n + 1) if is_prime(k))
    print(f"Found {count} primes up to {n}")
