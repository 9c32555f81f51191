"""Chat fan-out through the Redis bus, beside the same load in one process.

    python bench/chat_bus.py [--seconds S] [--repeat N] [--receivers 10,100]

One sender and RECEIVERS receivers in one room; the sender sends a line and
the next one as soon as every receiver has it (``bench/loadgen.c fanout``).
Three set-ups, for each receiver count:

* ``1 process``: plain chat, no bus (the baseline);
* ``1 process + bus``: the same, with ``bus`` set: every line is also
  published to Redis and comes back (and is dropped as an echo);
* ``2 processes + bus``: receivers alternate between two chat servers that
  share the room through Redis; the sender is on the first.

Chat servers run on CPU 0; the load generator and redis-server on CPU 1
(``taskset``). "chat CPU" is the chat processes' utime+stime during the load
run (all of them summed), per delivery and per message sent; "bus cost" is
the per-message figure minus the one-process figure; "redis CPU" is
redis-server's per message sent. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # bench/ is not a package: found through sys.path
    LOAD_CPU,
    PY,
    build_loadgen,
    cpu_seconds,
    free_port,
    loadgen,
    reactorkit_config,
    server,
)

OPTIONS = "rate = 1e9\nburst = 1000000000\nmax_room_clients = 1000"


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rk-bench-redis-") as directory:
        proc = subprocess.Popen(
            [
                *("taskset", "-c", LOAD_CPU, "redis-server", "--port", str(port)),
                *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
                ).stdout.strip()
                != "PONG"
            ):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield port, proc
        finally:
            proc.terminate()
            proc.wait(10)


def chat_command(port: int, bus: str | None, prefix: str) -> list[str]:
    options = OPTIONS + (f'\nbus = "{bus}"\nbus_prefix = "{prefix}"' if bus else "")
    return [PY, "-m", "reactorkit", "run", reactorkit_config("chat", port, options)]


def one_run(setup: str, receivers: int, seconds: float) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        redis_port, redis = stack.enter_context(redis_server())
        bus = f"redis://127.0.0.1:{redis_port}/0" if setup != "1 process" else None
        port1 = free_port()
        prefix = f"bench:{port1}:"  # the servers of one run share the room
        procs = [stack.enter_context(server(chat_command(port1, bus, prefix), port1))]
        args: list[object] = ["fanout", port1, receivers, seconds + 1]
        if setup == "2 processes + bus":
            port2 = free_port()
            procs.append(stack.enter_context(server(chat_command(port2, bus, prefix), port2)))
            args.append(port2)
        # CPU over the load run only (connects and joins included), not the
        # interpreter start-up, which would weigh double with two processes.
        chat_before = sum(cpu_seconds(p.pid) for p in procs)
        redis_before = cpu_seconds(redis.pid)
        run = loadgen(*args, timeout=120)
        chat_cpu = sum(cpu_seconds(p.pid) for p in procs) - chat_before
        run["cpu_us"] = chat_cpu / run["deliveries"] * 1e6
        run["cpu_us_per_msg"] = chat_cpu / run["messages"] * 1e6
        run["redis_us_per_msg"] = (cpu_seconds(redis.pid) - redis_before) / run["messages"] * 1e6
        run["rps"] = run["deliveries_per_s"]
        return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--receivers", default="10,100")
    args = parser.parse_args()
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        sys.exit("needs redis-server and redis-cli (apt-get install redis-server)")
    build_loadgen()
    setups = ["1 process", "1 process + bus", "2 processes + bus"]
    print("\n### chat: fan-out through the Redis bus\n")
    print(
        "| load | set-up | deliveries/s | p50 µs | p99 µs | chat CPU µs/delivery "
        "| chat CPU µs/message | bus cost µs/message | redis CPU µs/message "
        "| deliveries/s vs 1 process |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for receivers in [int(n) for n in args.receivers.split(",")]:
        base = None
        for setup in setups:
            runs = [one_run(setup, receivers, args.seconds) for _ in range(args.repeat)]
            r = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            base = base or r
            extra = r["cpu_us_per_msg"] - base["cpu_us_per_msg"]
            print(
                f"| 1 sender -> {receivers} receivers | {setup} | {r['rps']:,.0f} "
                f"| {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | {r['cpu_us']:.1f} "
                f"| {r['cpu_us_per_msg']:.0f} | {extra:+.0f} | {r['redis_us_per_msg']:.1f} "
                f"| {r['rps'] / base['rps']:.2f}x |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
