"""Create a pool of CPU-count workers, run one tiny map, shut down (timed as a whole process)."""

import os
from multiprocessing import Pool


def identity(x):
    return x


if __name__ == "__main__":
    with Pool() as pool:
        pool.map(identity, range(os.cpu_count()))
