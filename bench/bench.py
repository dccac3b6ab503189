#!/usr/bin/env python3
"""Side-by-side benchmarks: every workload runs as an mpscript script and as its Python
multiprocessing equivalent, alternating, several times each; the table gives medians, the ratio
mpscript / Python and the target. Run through bench/run, which builds mpscript in release mode first.

Environment: BENCH_RUNS (runs per side, default 5), BENCH_ONLY (comma-separated workload names).
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MPSCRIPT = ROOT / "target" / "release" / "mpscript"
WORKLOADS = ROOT / "bench" / "workloads"
RESULTS = ROOT / "target" / "bench" / "results.json"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
ONLY = {w for w in os.environ.get("BENCH_ONLY", "").split(",") if w}


# Text files for the word count, made once: 40 files of 1.25 MB of words drawn from 5,000.
TEXTS = ROOT / "target" / "bench" / "texts"


def make_texts():
    if len(list(TEXTS.glob("*.txt"))) == 40:
        return
    import random
    TEXTS.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    for i in range(40):
        lines, size = [], 0
        while size < 1_250_000:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(5, 15)))
            line = (line.capitalize() if rng.random() < 0.3 else line) + "\n"
            lines.append(line)
            size += len(line)
        (TEXTS / f"t{i:02}.txt").write_text("".join(lines))


def mps(script, *args):
    return [str(MPSCRIPT), "run", str(WORKLOADS / script), *args]


def py(script, *args):
    return [sys.executable, str(WORKLOADS / script), *args]


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def wall(cmd):
    """Seconds for the whole process."""
    started = time.perf_counter()
    run(cmd)
    return time.perf_counter() - started


def printed(cmd):
    """The figure the workload measured itself (its last line of output)."""
    return float(run(cmd).strip().splitlines()[-1])


def peak_rss(cmd):
    """MiB: the peak resident set of the worker whose pid the workload prints first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    pid = int(proc.stdout.readline())
    time.sleep(0.7)
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    proc.communicate(timeout=60)
    return kib / 1024


# name, what is measured, unit, lower is better?, how, mpscript command, python command, target
# (a target "<= 0.2" is on the ratio mpscript / python).
ROWS = [
    ("primes_100k", "primes to 100,000, pool_map vs Pool.map", "s", True, wall,
     mps("primes_pool.rhai", "100000"), py("primes_pool.py", "100000"), None),
    ("primes_1m", "primes to 1,000,000, pool_map vs Pool.map", "s", True, wall,
     mps("primes_pool.rhai", "1000000"), py("primes_pool.py", "1000000"), "<= 0.5"),
    ("primes_serial_100k", "primes to 100,000 in one process", "s", True, wall,
     mps("primes_serial.rhai", "100000"), py("primes_serial.py", "100000"), None),
    ("spawn_fork", "spawn(f).join() vs Process(fork)", "us", True, printed,
     mps("spawn_latency.rhai"), py("spawn_latency.py", "fork"), "<= 0.2"),
    ("spawn_spawn", "spawn(f).join() vs Process(spawn)", "us", True, printed,
     mps("spawn_latency.rhai"), py("spawn_latency.py", "spawn"), None),
    ("spawn_crowded", "a new process with 500 alive, spawn vs Process(fork)", "us", True, printed,
     mps("spawn_crowded.rhai"), py("spawn_crowded.py"), None),
    ("pool_overhead", "identity over 200,000 ints, per item", "us", True, printed,
     mps("pool_overhead.rhai"), py("pool_overhead.py"), "<= 1.0"),
    ("queue", "200,000 ints through a queue", "msg/s", False, printed,
     mps("queue_throughput.rhai"), py("queue_throughput.py"), ">= 5"),
    ("round_trip", "small message there and back", "us", True, printed,
     mps("round_trip.rhai"), py("round_trip.py"), "<= 0.5"),
    ("mailbox_round_trip", "small message there and back, p.send/recv vs Pipe", "us", True,
     printed, mps("mailbox_round_trip.rhai"), py("round_trip.py"), None),
    ("payload", "64 x 1 MiB strings through pool_map", "MiB/s", False, printed,
     mps("payload.rhai"), py("payload.py"), ">= 2"),
    ("pool_start", "start a CPU-count pool, tiny map, shut down", "s", True, wall,
     mps("pool_start.rhai"), py("pool_start.py"), "<= 0.25"),
    ("worker_rss", "peak RSS of one idle worker", "MiB", True, peak_rss,
     mps("worker_rss.rhai"), py("worker_rss.py"), "<= 0.5"),
    ("shared_add", "atomic increments of a shared int array from 2 processes, a.add vs Array under its lock",
     "op/s", False, printed, mps("shared_add.rhai"), py("shared_add.py"), None),
    ("shared_map_add", "counter updates in a shared map from 2 processes, m.add vs Manager().dict() under a lock",
     "op/s", False, printed, mps("shared_map_add.rhai"), py("shared_map_add.py"), None),
    ("wordcount_50mb", "word count over 50 MB of text files, pool_map vs Pool.map", "s", True,
     wall, [str(MPSCRIPT), "run", f"--allow-read={TEXTS}", str(WORKLOADS / "wordcount.rhai"),
            str(TEXTS)], py("wordcount.py", str(TEXTS)), "<= 0.5"),
]


# Single-process kernels (the fast tier's targets), timed inside each script: numeric ones, `dot`
# (arrays of floats) with no target, and strings, maps and arrays as users write them.
KERNELS = {"primes": "<= 0.33", "fib": "<= 0.33", "collatz": "<= 0.33", "nested": "<= 0.33",
           "basel": "<= 0.33", "dot": "<= 0.5", "wordcount": "<= 1.0", "csv": "<= 1.0",
           "records": "<= 1.0", "build": "<= 1.0", "chars": "<= 1.0", "logs": "<= 1.0"}


def kernel_rows():
    """Each kernel three ways, alternating: mpscript, mpscript with the fast tier off (Rhai's
    interpreter alone) and CPython. The target is on mpscript / CPython."""
    rows = []
    for kernel, target in KERNELS.items():
        name = f"kernel_{kernel}"
        if ONLY and name not in ONLY and "kernels" not in ONLY:
            continue
        fast, rhai, cpython = [], [], []
        for _ in range(RUNS):
            fast.append(printed(mps("kernels.rhai", kernel)))
            rhai.append(printed([str(MPSCRIPT), "run", "--no-fast", str(WORKLOADS / "kernels.rhai"), kernel]))
            cpython.append(printed(py("kernels.py", kernel)))
        ours, interp, theirs = (statistics.median(x) for x in (fast, rhai, cpython))
        ratio = ours / theirs
        met = meets(ratio, target) if target else None
        verdict = {True: "yes", False: "NO", None: "-"}[met]
        print(f"{name:<20} {'s':<6} {fmt(ours):>10} {fmt(theirs):>10} {ratio:>7.3f} {target or '-':>7}  "
              f"{verdict}   (Rhai alone {fmt(interp)} s, {interp / theirs:.2f}x CPython)",
              flush=True)
        rows.append({"workload": name, "what": f"{kernel} kernel in one process", "unit": "s",
                     "lower_is_better": True, "mpscript": ours, "python": theirs, "ratio": ratio,
                     "target": target, "met": met, "rhai_interpreter": interp,
                     "mpscript_runs": fast, "rhai_runs": rhai, "python_runs": cpython})
    return rows


def meets(ratio, target):
    op, bound = target.split()
    return ratio <= float(bound) if op == "<=" else ratio >= float(bound)


def measure(how, mps_cmd, py_cmd, runs):
    """Alternates the two sides so both see the same machine load."""
    ours, theirs = [], []
    for _ in range(runs):
        ours.append(how(mps_cmd))
        theirs.append(how(py_cmd))
    return statistics.median(ours), statistics.median(theirs), ours, theirs


def printed_together(cmd, copies):
    """The figures `copies` of a command started at once measured themselves, averaged."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
             for _ in range(copies)]
    return statistics.mean(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def speedup_row():
    """Parallel speed-up of the primes map to 1M (timed around pool_map in the script): one worker
    against one per CPU, over the cores the machine actually delivers to this work: the
    one-worker map alone against one copy of it per CPU at once (independent copies are the
    ideal a parallel map can reach; what they lose to each other, a shared host's other tenants
    and the CPUs' shared caches, no runtime can win back). Every round runs all three back to
    back, so each figure sees the same machine (a shared host's speed drifts by half within a
    minute). The single-process time is reported beside it."""
    cpus = os.cpu_count()
    one_worker = [str(MPSCRIPT), "run", "-j", "1", str(WORKLOADS / "primes_map_time.rhai"), "1000000"]
    one, every, copies = [], [], []
    for _ in range(2 * RUNS):
        one.append(printed(one_worker))
        every.append(printed(mps("primes_map_time.rhai", "1000000")))
        copies.append(printed_together(one_worker, cpus))
    one, every, copies = statistics.median(one), statistics.median(every), statistics.median(copies)
    cores = cpus * one / copies
    serial = statistics.median(wall(mps("primes_serial.rhai", "1000000")) for _ in range(RUNS))
    speedup = one / every
    ratio = speedup / cores
    met = ratio >= 0.95
    print(f"{'speedup_1m':<20} {'x':<6} {fmt(speedup):>10} {'cores ' + fmt(cores):>10} {ratio:>7.3f} "
          f"{'>= 0.95':>7}  {'yes' if met else 'NO'}")
    print(f"  (primes to 1M, pool_map call: one worker {fmt(one)} s, {cpus} workers {fmt(every)} s,"
          f" {cpus} one-worker maps at once {fmt(copies)} s each;"
          f" whole script in one process with no workers {fmt(serial)} s)")
    return {"workload": "speedup_1m", "what": "primes 1M pool_map: one worker / all workers, over delivered cores",
            "unit": "x", "lower_is_better": False, "mpscript": speedup, "python": None, "ratio": ratio,
            "target": ">= 0.95", "met": met, "delivered_cores": cores, "one_worker_s": one,
            "all_workers_s": every, "one_worker_copies_s": copies, "single_process_s": serial}


def profile_rows():
    """What profiling costs: each side's run profiled over the same run unprofiled (mpscript
    --profile; python -m cProfile), alternating. Unprofiled, mpscript routes nothing through the
    profiler's stand-ins, so its ordinary rows above carry no profiling cost."""
    cases = [
        ("profile_fib", "fib(27) kernel (recursion, compiled)",
         ["kernels.rhai", "fib"], ["kernels.py", "fib"], printed),
        # `python -m cProfile` cannot run a Pool.map script at all: its functions live in a
        # __main__ the workers cannot import ("Can't pickle <function is_prime>").
        ("profile_primes_map", "primes to 100,000 through pool_map (whole process)",
         ["primes_pool.rhai", "100000"], None, wall),
    ]
    rows = []
    for name, what, ours, theirs, how in cases:
        if ONLY and name not in ONLY:
            continue
        plain_m, prof_m, plain_p, prof_p = [], [], [], []
        for _ in range(RUNS):
            plain_m.append(how([str(MPSCRIPT), "run", str(WORKLOADS / ours[0]), *ours[1:]]))
            prof_m.append(how([str(MPSCRIPT), "run", "--profile", str(WORKLOADS / ours[0]), *ours[1:]]))
            if theirs:
                plain_p.append(how(py(*theirs)))
                prof_p.append(how([sys.executable, "-m", "cProfile", "-o", os.devnull,
                                   str(WORKLOADS / theirs[0]), *theirs[1:]]))
        mine = statistics.median(prof_m) / statistics.median(plain_m)
        python = statistics.median(prof_p) / statistics.median(plain_p) if theirs else None
        ratio = mine / python if python else None
        print(f"{name:<20} {'x':<6} {fmt(mine):>10} {fmt(python) if python else 'n/a':>10} "
              f"{f'{ratio:.3f}' if ratio else '':>7} {'':>7}     (profiled / unprofiled; "
              f"mpscript unprofiled {fmt(statistics.median(plain_m))} s)", flush=True)
        rows.append({"workload": name, "what": f"profiling slowdown: {what}", "unit": "x",
                     "lower_is_better": True, "mpscript": mine, "python": python,
                     "ratio": ratio, "target": None, "met": None,
                     "mpscript_runs": plain_m, "mpscript_profiled_runs": prof_m,
                     "python_runs": plain_p, "python_profiled_runs": prof_p})
    return rows


def cluster_rows():
    """The cluster path on this machine: a nats-server on a free port and agents started here.
    Per-chunk cost against the local pool and the broker's floor, and the scaling of a
    sleep-bound map over 1, 2 and 3 agents of 4 slots against the ideal (items x time / slots);
    the primes map to 1M through 2 agents of 1 slot against the local pool (2 workers)."""
    import shutil
    import socket
    import tempfile
    names = {"cluster_chunks", "cluster_scaling", "cluster_primes"}
    if ONLY and not (ONLY & names):
        return []
    if not shutil.which("nats-server"):
        print("cluster rows skipped: nats-server is not installed (apt-get install nats-server)")
        return []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    store = tempfile.mkdtemp()
    server = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents = []

    def agent(name, slots):
        proc = subprocess.Popen([str(MPSCRIPT), "worker", "--cluster", url, "--name", name, "-j",
                                 str(slots)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        proc.stderr.readline()  # ready
        agents.append(proc)

    def stop_agents():
        for proc in agents:
            proc.terminate()
            proc.wait()
        agents.clear()

    rows = []
    try:
        time.sleep(0.5)
        if not ONLY or "cluster_chunks" in ONLY:
            agent("bench-a", 1)
            remote = [str(MPSCRIPT), "run", "--cluster", url, "--cluster-only",
                      str(WORKLOADS / "cluster_chunks.rhai")]
            local = [str(MPSCRIPT), "run", "-j", "1", str(WORKLOADS / "cluster_chunks.rhai")]
            ours, theirs, ours_all, theirs_all = measure(printed, remote, local, RUNS)
            floor = 160.0
            print(f"{'cluster_chunks':<20} {'us':<6} {fmt(ours):>10} {fmt(theirs):>10} "
                  f"{ours / theirs:>7.3f} {'':>7}     (per chunk: cluster vs local pool; broker "
                  f"floor ~{floor:.0f} us: {ours / floor:.2f}x of it, target <= 2)", flush=True)
            rows.append({"workload": "cluster_chunks", "what": "per-chunk cost, chunk_size 1, one agent "
                         "slot vs the local pool (-j 1)", "unit": "us", "lower_is_better": True,
                         "mpscript": ours, "python": None, "local_pool": theirs,
                         "ratio": ours / floor, "target": "<= 2 (of the broker floor)",
                         "met": ours / floor <= 2, "mpscript_runs": ours_all, "local_runs": theirs_all})
            stop_agents()
        if not ONLY or "cluster_scaling" in ONLY:
            for count in (1, 2, 3):
                for i in range(count):
                    agent(f"bench-{count}-{i}", 4)
                cmd = [str(MPSCRIPT), "run", "--cluster", url, "--cluster-only",
                       str(WORKLOADS / "cluster_sleep.rhai")]
                took = statistics.median(printed(cmd) for _ in range(RUNS))
                ideal = 300 * 0.05 / (4 * count)
                print(f"{'cluster_scaling_' + str(count):<20} {'s':<6} {fmt(took):>10} {fmt(ideal):>10} "
                      f"{ideal / took:>7.3f} {'>= 0.9':>7}  {'yes' if ideal / took >= 0.9 else 'NO'}"
                      f"   ({count} agent(s) x 4 slots; efficiency = ideal / measured)", flush=True)
                rows.append({"workload": f"cluster_scaling_{count}", "what": f"300 x 50 ms sleep over "
                             f"{count} agent(s) of 4 slots", "unit": "s", "lower_is_better": True,
                             "mpscript": took, "python": None, "ideal": ideal, "ratio": ideal / took,
                             "target": ">= 0.9", "met": ideal / took >= 0.9})
                stop_agents()
        if not ONLY or "cluster_primes" in ONLY:
            agent("bench-p1", 1)
            agent("bench-p2", 1)
            remote = [str(MPSCRIPT), "run", "--cluster", url, "--cluster-only",
                      str(WORKLOADS / "primes_pool.rhai"), "1000000"]
            local = mps("primes_pool.rhai", "1000000")
            ours, theirs, ours_all, theirs_all = measure(wall, remote, local, RUNS)
            ratio = ours / theirs
            print(f"{'cluster_primes':<20} {'s':<6} {fmt(ours):>10} {fmt(theirs):>10} "
                  f"{ratio:>7.3f} {'<= 1.2':>7}  {'yes' if ratio <= 1.2 else 'NO'}"
                  f"   (primes to 1M: 2 agents x 1 slot vs the local pool, whole runs)", flush=True)
            rows.append({"workload": "cluster_primes", "what": "primes map to 1M, 2 agents of 1 slot "
                         "vs the local pool of 2", "unit": "s", "lower_is_better": True,
                         "mpscript": ours, "python": None, "local_pool": theirs, "ratio": ratio,
                         "target": "<= 1.2", "met": ratio <= 1.2, "mpscript_runs": ours_all,
                         "local_runs": theirs_all})
            stop_agents()
    finally:
        stop_agents()
        server.terminate()
        server.wait()
        shutil.rmtree(store, ignore_errors=True)
    return rows


def fmt(x):
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def main():
    make_texts()
    rows = []
    print(f"mpscript vs Python {platform.python_version()} multiprocessing, {os.cpu_count()} CPUs, "
          f"{RUNS} alternating runs each, medians\n")
    header = f"{'workload':<20} {'unit':<6} {'mpscript':>10} {'python':>10} {'ratio':>7} {'target':>7}  met"
    print(header)
    print("-" * len(header))
    for name, what, unit, lower, how, mps_cmd, py_cmd, target in ROWS:
        if ONLY and name not in ONLY:
            continue
        runs = max(1, RUNS // 2) if name == "primes_1m" else RUNS
        ours, theirs, ours_all, theirs_all = measure(how, mps_cmd, py_cmd, runs)
        ratio = ours / theirs
        met = meets(ratio, target) if target else None
        rows.append({"workload": name, "what": what, "unit": unit, "lower_is_better": lower,
                     "mpscript": ours, "python": theirs, "ratio": ratio, "target": target,
                     "met": met, "mpscript_runs": ours_all, "python_runs": theirs_all})
        mark = {True: "yes", False: "NO", None: ""}[met]
        print(f"{name:<20} {unit:<6} {fmt(ours):>10} {fmt(theirs):>10} {ratio:>7.3f} {target or '':>7}  {mark}",
              flush=True)
    rows.extend(kernel_rows())
    rows.extend(profile_rows())
    rows.extend(cluster_rows())
    if not ONLY or "speedup" in ONLY:
        rows.append(speedup_row())
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "runs": RUNS,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nratio = mpscript / python; JSON: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
