"""Metrics overhead: echo with metrics on vs off (issue 16), in interleaved rounds.

    python bench/metrics_overhead.py [--seconds S] [--rounds N] [--conns C] [--before DIR]

Servers pinned to CPU 0 with the load generator on CPU 1, as
``bench/run.py`` does: ``off`` serves echo alone; ``on`` adds an http-lite
listener with ``metrics = true`` (so the server observes: the loop-lag timer
runs, per-route stats exist) and a control socket; ``on+scrape`` is ``on``
scraped once per second by a thread of this script during the run;
``before`` (with ``--before DIR``, a checkout of the code before issue 16)
shows what the always-on parts cost (the conn_id, the
reads-paused counter). The figure is CPU time per request: its median with min-max,
the median of each round's ratio to ``off`` (runs seconds apart share the
machine's state), and the ratio of the best runs (interference only adds
cost). Requests/s is shown but disturbed by anything else on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import PY, build_loadgen, cpu_seconds, free_port, loadgen, server
from reactorkit import Reactor
from reactorkit.observe import LAG_INTERVAL, LoopLag


def config(port: int, metrics_port: int | None, control: str | None) -> str:
    text = f"""
[reactor]
log_level = "warning"
{f'control_socket = "{control}"' if control else ""}

[[listen]]
handler = "echo"
port = {port}
backlog = 4096
max_connections = 20000
"""
    if metrics_port is not None:
        text += f"""
[[listen]]
name = "admin"
handler = "http-lite"
port = {metrics_port}
options = {{ metrics = true }}
"""
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="rk-metrics-bench-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def scrape_every_second(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            reply.read()


def one_run(variant: str, seconds: float, conns: int, before: str | None) -> dict[str, float]:
    port = free_port()
    env = dict(os.environ)
    metrics_port = None
    control = None
    if variant in ("on", "on+scrape"):
        metrics_port = free_port()
        control = os.path.join(tempfile.mkdtemp(prefix="rk-metrics-bench-"), "control.sock")
    if variant == "before":
        assert before is not None
        env["PYTHONPATH"] = before
    command = [PY, "-m", "reactorkit", "run", config(port, metrics_port, control)]
    with server(command, port, env=env) as proc:
        stop = threading.Event()
        scraper = None
        if variant == "on+scrape":
            scraper = threading.Thread(target=scrape_every_second, args=(metrics_port, stop))
            scraper.start()
        start_cpu = cpu_seconds(proc.pid)
        run = loadgen("rr", port, conns, seconds, "@64", 64)
        used = cpu_seconds(proc.pid) - start_cpu
        stop.set()
        if scraper is not None:
            scraper.join(10)
    run["cpu_us"] = used / run["requests"] * 1e6
    return run


def fixed_costs(scrapes: int) -> None:
    """What metrics add per second, measured apart from the load (robust on a busy machine).

    Per scrape: the server's CPU over ``scrapes`` sequential scrapes. Per
    loop-lag sample: in this process, a reactor whose only work is the
    sampler (interval 0: a sample per pass), over ``process_time``.
    """
    port, metrics_port = free_port(), free_port()
    with server([PY, "-m", "reactorkit", "run", config(port, metrics_port, None)], port) as proc:
        start = cpu_seconds(proc.pid)
        for _ in range(scrapes):
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
        per_scrape = (cpu_seconds(proc.pid) - start) / scrapes * 1e6
    reactor = Reactor()
    lag = LoopLag(reactor, interval=0.0)
    samples = 100_000
    lag.start()
    reactor.call_later(3600, lambda: None)  # keep the loop from ever blocking idle

    def stop_after() -> None:
        if lag.histogram.count >= samples:
            reactor.stop()
        else:
            reactor.call_soon(stop_after)

    began = time.process_time()
    reactor.call_soon(stop_after)
    reactor.run()
    per_pass = (time.process_time() - began) / lag.histogram.count * 1e6
    reactor.close()
    timer = per_pass / LAG_INTERVAL
    print(
        f"\nfixed costs: one scrape {per_scrape:.0f} µs of server CPU; one loop-lag sample "
        f"(a loop pass with its timer) {per_pass:.1f} µs, {timer:.0f} µs/s at one per "
        f"{LAG_INTERVAL:g} s"
    )
    print(f"at one scrape per second: {(per_scrape + timer) / 1e4:.3f}% of a busy core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=200, help="for the per-scrape cost")
    parser.add_argument("--before", help="a checkout of reactorkit before issue 16 (PYTHONPATH)")
    args = parser.parse_args()
    build_loadgen()
    fixed_costs(args.scrapes)
    variants = ["off", "on", "on+scrape"] + (["before"] if args.before else [])
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:  # interleaved: drift on the machine hits all alike
            results[variant].append(one_run(variant, args.seconds, args.conns, args.before))
    off = [r["cpu_us"] for r in results["off"]]
    print(f"\necho, {args.conns} conns x 64 B, {args.rounds} rounds of {args.seconds:g} s\n")
    print(
        "| variant | CPU µs/request, median (min-max) | vs off, paired by round: "
        "median (min-max) | vs off, best run | requests/s, median |"
    )
    print("|---|---:|---:|---:|---:|")
    for variant, runs in results.items():
        cpu = [r["cpu_us"] for r in runs]
        # Each round's runs are seconds apart: their ratio cancels most of the
        # drift that other work on the machine causes between rounds.
        paired = [(c / o - 1) * 100 for c, o in zip(cpu, off, strict=True)]
        rps = statistics.median(r["rps"] for r in runs)
        print(
            f"| {variant} | {statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) | "
            f"{statistics.median(paired):+.1f}% ({min(paired):+.1f}% to {max(paired):+.1f}%) | "
            f"{(min(cpu) / min(off) - 1) * 100:+.1f}% | {rps:,.0f} |"
        )


if __name__ == "__main__":
    main()
