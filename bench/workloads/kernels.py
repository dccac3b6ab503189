"""Single-process kernels, as kernels.rhai: `python3 kernels.py NAME` prints the kernel's result,
then the seconds it takes."""

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


def next_random(x):
    return (x * 1103515245 + 12345) % 2147483648


def make_data(kernel):
    x = 42
    if kernel == "wordcount":
        lines = []
        for _ in range(20000):
            words = []
            for _ in range(10):
                x = next_random(x)
                words.append(f"w{x % 500}")
            lines.append(" ".join(words))
        return lines
    if kernel == "csv":
        lines = []
        for i in range(50000):
            x = next_random(x)
            a = x % 1000
            x = next_random(x)
            lines.append(f"key{x % 200},{a},{x % 77},item {i}")
        return lines
    if kernel == "chars":
        return "".join(f"The {i} quick brown fox. " for i in range(40000))
    if kernel == "logs":
        levels = ["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"]
        lines = []
        for i in range(50000):
            x = next_random(x)
            level = levels[x % 6]
            hour = (x // 7) % 24
            x = next_random(x)
            status = 500 if x % 9 == 0 else 200
            lines.append(f"{level} 2026-12-03T{hour:02}:05:09 user{x % 50} GET /api/items/{i} {status} {x % 300}ms")
        return lines
    return None


def wordcount(lines):
    counts = {}
    for line in lines:
        for word in line.split(" "):
            counts[word] = counts.get(word, 0) + 1
    most = 0
    for n in counts.values():
        if n > most:
            most = n
    return len(counts) * 100000 + most


def csv(lines):
    sums = {}
    for line in lines:
        fields = line.split(",")
        key = fields[0]
        sums[key] = sums.get(key, 0) + int(fields[1]) * int(fields[2])
    total = 0
    for v in sums.values():
        total += v
    return total


def records(n):
    everything = []
    x = 7
    for i in range(n):
        x = next_random(x)
        everything.append({"id": i, "name": f"user{i}", "score": x % 10000})
    kept = [r for r in everything if r["score"] >= 2500]
    kept.sort(key=lambda r: r["score"], reverse=True)
    total = 0
    for r in kept[:100]:
        total += r["id"]
    return total


def build(n):
    text = ""
    for i in range(n):
        text += f"line {i}: value {i * 3}\\n"  # a backslash and n, as in a Rhai backtick string
    return len(text)


def chars(text):
    vowels = 0
    digits = 0
    for c in text:
        if c in "aeiou":
            vowels += 1
        elif "0" <= c <= "9":
            digits += 1
    return vowels * 1000000 + digits


def logs(lines):
    levels = {}
    hours = [0] * 24
    errors = 0
    slow = 0
    for line in lines:
        fields = line.split(" ")
        level = fields[0]
        levels[level] = levels.get(level, 0) + 1
        hour = int(fields[1][11:13])
        hours[hour] += 1
        match fields[5]:
            case "500":
                errors += 1
            case "404" | "403":
                pass
            case _:
                pass
        ms = fields[6]
        if int(ms[:-2]) > 250:
            slow += 1
    return len(levels) * 1000000000 + hours[13] * 1000000 + errors * 1000 + slow


KERNELS = {
    "primes": lambda: primes(100000),
    "fib": lambda: fib(27),
    "collatz": lambda: collatz(100000),
    "nested": lambda: nested(1000),
    "basel": lambda: basel(1000000),
    "dot": lambda: dots(1000),
    "wordcount": lambda: wordcount(DATA),
    "csv": lambda: csv(DATA),
    "records": lambda: records(20000),
    "build": lambda: build(100000),
    "chars": lambda: chars(DATA),
    "logs": lambda: logs(DATA),
}

if __name__ == "__main__":
    kernel = sys.argv[1] if len(sys.argv) > 1 else "primes"
    DATA = make_data(kernel)
    started = time.perf_counter()
    result = KERNELS[kernel]()
    elapsed = time.perf_counter() - started
    if kernel == "primes":
        assert result == 9592
    print(result)
    print(elapsed)
