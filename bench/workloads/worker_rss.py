"""One idle worker started with the spawn method: prints its pid, then idles while the harness reads its RSS."""

import multiprocessing as mp
import time

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=time.sleep, args=(1.5,))
    p.start()
    print(p.pid, flush=True)
    p.join()
