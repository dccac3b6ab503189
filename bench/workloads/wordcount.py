"""Word count over a folder of text files (~50 MB), whole process: every file cut into 4 ranges
at line starts, Pool.map over the ranges, each worker reading its own; as wordcount.rhai."""

import glob
import os
import re
import sys
from collections import Counter
from multiprocessing import Pool

WORD = re.compile(r"[a-z']+")


def chunks(path, n):
    size = os.path.getsize(path)
    starts = [0]
    with open(path, "rb") as f:
        for share in range(1, n):
            target = size * share // n
            if target <= starts[-1]:
                continue
            f.seek(target - 1)
            f.readline()
            if f.tell() < size and f.tell() > starts[-1]:
                starts.append(f.tell())
    return [(path, s, e) for s, e in zip(starts, starts[1:] + [size])]


def count(chunk):
    path, start, end = chunk
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode()
    counts = Counter()
    for line in text.splitlines():
        counts.update(WORD.findall(line.lower()))
    return counts


if __name__ == "__main__":
    work = [c for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.txt"))) for c in chunks(p, 4)]
    total = Counter()
    with Pool() as pool:
        for counts in pool.map(count, work):
            total.update(counts)
    print(sum(total.values()))
