"""Workers: requests/s, server CPU per request and the connection spread, 1 vs 2 workers.

    python bench/workers.py [--seconds S] [--repeat N] [--conns C] [--load echo|http|both]

For echo (``loadgen rr``, 64-byte round trips) and HTTP-lite (``wrk``, a
13-byte route) it runs ``reactorkit run`` with ``workers = 1`` and ``= 2``,
each in two placements:

* ``pinned``: every server process on CPU 0 (``taskset``), the load
  generator on CPU 1. Both worker counts get exactly one core, so the
  CPU/request column compares like with like: it shows whether a second
  worker (and the supervisor) adds cost per request.
* ``free``: the server may use both CPUs, the load generator stays on CPU 1.
  On a 2-core machine the second worker can only take CPU time from the
  load generator, so this is what workers buy when the client shares the
  machine, not what they buy on a server with idle cores.

CPU is utime+stime of the supervisor and every worker (``/proc/PID/stat``)
over the run, divided by the requests served. "share" is each worker's part
of the load's connections, counted from its open sockets mid-run. The last
column is how busy the load generator was (near 100%: the client, not the
server, set the pace).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from run import (
    BENCH,
    LOAD_CPU,
    LOADGEN,
    PY,
    build_loadgen,
    cpu_seconds,
    free_port,
    reactorkit_config,
)

SERVER_CPU = "0"


def config(handler: str, port: int, workers: int, options: str = "", extra: str = "") -> str:
    # The supervisor logs each worker's pid at info: the runs read them there.
    return reactorkit_config(
        handler, port, options, extra=f"workers = {workers}\n{extra}", log_level="info"
    )


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def socket_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
    return count


@contextlib.contextmanager
def server(path: str, workers: int, pinned: bool) -> Iterator[list[int]]:
    """Start reactorkit; yields the pids that serve (the workers, or the one process)."""
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    command = [PY, "-m", "reactorkit", "run", path]
    if pinned:
        command = ["taskset", "-c", SERVER_CPU, *command]
    ready = "generation 1 serving" if workers > 1 else "serving 1 listener"
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                log.seek(0)
                if ready in log.read():
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"server did not start:\n{log.read()}")
                time.sleep(0.05)
            yield [proc.pid] if workers == 1 else children(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def tree_cpu(pid: int) -> float:
    return cpu_seconds(pid) + sum(cpu_seconds(c) for c in children(pid))


def measure(
    command: list[str], pids: list[int], supervisor: int, seconds: float
) -> dict[str, float]:
    """Run one load; returns requests, CPU and each worker's connection share."""
    baseline = {pid: socket_fds(pid) for pid in pids}
    before = tree_cpu(supervisor)
    load_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    time.sleep(seconds / 2)  # mid-run: every connection is open
    conns = [max(0, socket_fds(pid) - baseline[pid]) for pid in pids]
    out, _ = load.communicate(timeout=seconds + 60)
    elapsed = time.monotonic() - started
    used = tree_cpu(supervisor) - before
    load_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_used = (load_after.ru_utime - load_before.ru_utime) + (
        load_after.ru_stime - load_before.ru_stime
    )
    if command[3] == "wrk":
        requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    else:
        requests = float(re.search(r"requests=([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = sum(conns) or 1
    return {
        "rps": requests / elapsed,
        "cpu_us": used / requests * 1e6,
        "min_share": min(conns) / total,
        "max_share": max(conns) / total,
        "load_cpu_pct": 100 * load_used / elapsed,
    }


def load_command(handler: str, port: int, conns: int, seconds: float) -> list[str]:
    if handler == "echo":
        load = [str(LOADGEN), "rr", str(port), str(conns), f"{seconds:g}", "@64", "64"]
    else:
        load = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"]
    return ["taskset", "-c", LOAD_CPU, *load]


def run_pairs(
    handler: str, pinned: bool, conns: int, seconds: float, repeat: int
) -> tuple[dict[int, list[dict[str, float]]], list[float]]:
    """1 worker, then 2, ``repeat`` times in turn; the runs and each pair's CPU ratio.

    Taken in turn so that load from elsewhere on the machine hits both
    alike: the pair-by-pair ratio is steadier than a ratio of medians.
    """
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    ratios = []
    for _ in range(repeat):
        for workers in (1, 2):
            port = free_port()
            if handler == "echo":
                path = config("echo", port, workers)
            else:
                options, extra = "access_log = false", 'plugins = ["rk_bench_routes"]'
                path = config("http-lite", port, workers, options, extra)
            try:
                with server(path, workers, pinned) as pids:
                    supervisor = pids[0] if workers == 1 else _parent(pids[0])
                    command = load_command(handler, port, conns, seconds)
                    runs[workers].append(measure(command, pids, supervisor, seconds))
            finally:
                Path(path).unlink()
        ratios.append(runs[2][-1]["cpu_us"] / runs[1][-1]["cpu_us"])
    return runs, ratios


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="pairs of runs (medians)")
    parser.add_argument("--conns", type=int, default=50, help="concurrent connections")
    parser.add_argument("--load", choices=["echo", "http", "both"], default="both")
    args = parser.parse_args()
    build_loadgen()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load on CPU {LOAD_CPU}; "
        f"{args.conns} connections; {args.seconds:g}s x {args.repeat} pairs (medians)"
    )
    print()
    print(
        "| load | server placement | workers | requests/s | CPU µs/request | "
        "CPU/request vs 1 worker, pair by pair (median, min-max) | "
        "share of connections per worker (min-max) | load generator CPU |"
    )
    print("|---|---|---:|---:|---:|---|---|---:|")
    for handler, label in (("echo", "echo 64 B"), ("http", "HTTP-lite (wrk)")):
        if args.load not in (handler, "both"):
            continue
        for pinned in (True, False):
            placement = f"pinned to CPU {SERVER_CPU}" if pinned else "free (both CPUs)"
            runs, ratios = run_pairs(handler, pinned, args.conns, args.seconds, args.repeat)
            for workers in (1, 2):
                r = {key: statistics.median(x[key] for x in runs[workers]) for key in runs[1][0]}
                if workers == 1:
                    share, ratio = "100%", "1.00x"
                else:
                    low = min(x["min_share"] for x in runs[2])
                    high = max(x["max_share"] for x in runs[2])
                    share = f"{low * 100:.0f}%-{high * 100:.0f}%"
                    ratio = (
                        f"**{statistics.median(ratios):.2f}x** "
                        f"({min(ratios):.2f}-{max(ratios):.2f}x)"
                    )
                print(
                    f"| {label} | {placement} | {workers} | {r['rps']:,.0f} | "
                    f"{r['cpu_us']:.1f} | {ratio} | {share} | {r['load_cpu_pct']:.0f}% |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
