"""Benchmarks: reactorkit beside its peers and a C floor, in interleaved rounds.

    python bench/run.py echo|memory|line|chat|http|all [--seconds S] [--rounds N]
                        [--seed N] [--out DIR] [--no-charts] [--before DIR]

Every server runs pinned to CPU 0 and the load generator to CPU 1
(``taskset``). The figure to read is the server's CPU time per request:
utime+stime from ``/proc/PID/stat`` over the timed part of the run, divided
by the requests served (harness.py).

Rounds: each round starts every server of a comparison (one process each,
on its own port) and then, load row by load row, runs each server once in
an order shuffled by a seeded RNG (the seed is printed; ``--seed`` replays
it). A change in the machine's load therefore hits every server of a round
alike, and the tables give medians of per-round ratios with their min-max,
and each server's cost above the C floor (bench/floor.c) round by round.
Idle memory starts a fresh process per server and round instead.

Output: Markdown tables on stdout, and per comparison ``DIR/NAME.json``
(the raw samples; ``python bench/report.py`` reprints them) and
``DIR/NAME.svg`` (the chart; charts.py). DIR defaults to docs/perf.

Time: ``all`` at the defaults (``--seconds 2 --rounds 3``) takes about
7.5 minutes (``--rounds 4``: 592 s measured); a round of echo takes about
75 s, of memory, line, chat or http 15-20 s. ``--before DIR`` adds a server
to every comparison, about a fifth more time.

Before/after: ``--before DIR`` also runs the reactorkit package found in DIR
(an older checkout: ``git archive REV reactorkit | tar -x -C DIR``) as
"... before" in every comparison, in the same rounds as the current code.

Load: ``bench/loadgen.c`` (built here with gcc into bench/build/) for echo,
line-command, chat and memory; ``wrk`` for HTTP. Only 127.0.0.1 is used;
every run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Other bench scripts import these from here: `from run import ...`.
from harness import (
    BENCH,
    FLOOR,
    LOAD_CPU,
    LOADGEN,
    PY,
    build_loadgen,
    cpu_seconds,
    free_port,
    loadgen,
    measured_load,
    missing_modules,
    missing_tools,
    open_fds,
    raise_fd_limit,
    reactorkit_config,
    rss_kib,
    server,
    start,
    stop,
    wrk,
)
from report import Sample, Section, markdown

__all__ = [
    "BENCH",
    "LOADGEN",
    "LOAD_CPU",
    "PY",
    "build_loadgen",
    "cpu_seconds",
    "free_port",
    "loadgen",
    "median_of",
    "missing_tools",
    "reactorkit_config",
    "server",
    "table",
]

DOCS_PERF = BENCH.parent / "docs" / "perf"
FLOOR_NAME = "C floor"
CPU_COLUMNS = [("rps", "requests/s"), ("p99_us", "p99 µs"), ("load_cpu_pct", "load gen CPU")]

#: A server of a comparison: port -> (command, environment or None).
Make = Callable[[int], tuple[list[str], dict[str, str] | None]]
#: One measurement: (server pid, its port) -> a sample.
Measure = Callable[[int, int], Sample]


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median of each key over ``runs`` (used by tls.py and chat_bus.py)."""
    import statistics

    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def table(title: str, rows: list[tuple[str, str, dict[str, float]]], base: str) -> None:
    """A one-shot table of (load, server, sample) rows against ``base`` (tls.py uses it)."""
    section = Section(
        name="table",
        title=title,
        metric="cpu_us",
        metric_label="CPU µs/request",
        floor=None,
        baselines=[base],
        columns=CPU_COLUMNS,
    )
    for load, name, sample in rows:
        section.add(load, name, sample)
    print("\n" + markdown(section))
    sys.stdout.flush()


def peer(kind: str) -> Make:
    return lambda port: ([PY, str(BENCH / "peers.py"), kind, str(port)], None)


def floor(mode: str) -> Make:
    return lambda port: ([str(FLOOR), mode, str(port)], None)


def reactorkit(
    handler: str, options: str = "", extra: str = "", env: dict[str, str] | None = None
) -> Make:
    def make(port: int) -> tuple[list[str], dict[str, str] | None]:
        config = reactorkit_config(handler, port, options, extra=extra)
        return [PY, "-m", "reactorkit", "run", config], env

    return make


def rounds_of(
    section: Section,
    servers: dict[str, Make],
    loads: list[tuple[str, Callable[[int, int], Sample]]],
    rounds: int,
    rng: random.Random,
) -> None:
    """Run ``rounds`` rounds: all servers up, then each load row with the servers shuffled."""
    for row, _ in loads:
        section.runs.setdefault(row, {name: [] for name in servers})
    for number in range(1, rounds + 1):
        ports = {name: free_port() for name in servers}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        started = time.monotonic()
        try:
            for name, make in servers.items():
                command, env = make(ports[name])
                procs[name] = start(command, ports[name], env)
            time.sleep(0.2)  # the readiness probes' connections close
            for row, measure in loads:
                order = list(servers)
                rng.shuffle(order)
                for name in order:
                    section.add(row, name, attempt(section, measure, procs[name].pid, ports[name]))
        finally:
            for proc in procs.values():
                stop(proc)
        progress(f"{section.name}: round {number}/{rounds} took {time.monotonic() - started:.0f}s")


def attempt(section: Section, measure: Measure, pid: int, port: int) -> Sample:
    """One measurement; a failed one is reported and kept as a gap (NaN), not fatal."""
    try:
        return measure(pid, port)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        progress(f"{section.name}: a run of server {pid} failed, left out: {exc}")
        return {section.metric: math.nan}


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def rr(conns: int, seconds: float, request: str, reply: int) -> Measure:
    def measure(pid: int, port: int) -> Sample:
        return measured_load(pid, "requests", "rr", port, conns, seconds, request, reply)

    return measure


def cpu_section(name: str, title: str, baselines: list[str], note: str = "") -> Section:
    return Section(
        name=name,
        title=title,
        metric="cpu_us",
        metric_label="CPU µs/request",
        floor=FLOOR_NAME,
        baselines=baselines,
        columns=CPU_COLUMNS,
        note=note,
    )


# -- what is measured ----------------------------------------------------------


def reactorkit_servers(
    label: str, handler: str, options: str = "", extra: str = "", before: str | None = None
) -> dict[str, Make]:
    """reactorkit serving ``handler``; with ``before``, also the package found in that folder.

    ``before`` is an older checkout (``git archive REV reactorkit | tar -x -C DIR``)
    put first on the path: the same config served by that code, measured in
    the same rounds as "LABEL before", so a change's effect is read beside it.
    """
    env = dict(os.environ, PYTHONPATH=str(BENCH))  # BENCH: rk_bench_routes for http-lite
    servers = {label: reactorkit(handler, options, extra, env)}
    if before:
        old_env = dict(env, PYTHONPATH=f"{before}{os.pathsep}{BENCH}", PYTHONDONTWRITEBYTECODE="1")
        servers[f"{label} before"] = reactorkit(handler, options, extra, old_env)
    return servers


def echo_servers(before: str | None = None) -> dict[str, Make]:
    return {
        FLOOR_NAME: floor("echo"),
        **reactorkit_servers("reactorkit", "echo", before=before),
        "asyncio": peer("asyncio-echo"),
        "uvloop": peer("uvloop-echo"),
        "twisted": peer("twisted-echo"),
        "python epoll": peer("epoll-echo"),
    }


def bench_echo(
    seconds: float, rounds: int, rng: random.Random, before: str | None = None
) -> Section:
    section = cpu_section("echo", "Echo (RFC 862), closed loop", ["asyncio", "uvloop"])
    loads = [
        (f"{conns} conns x {size} B", rr(conns, seconds, f"@{size}", size))
        for conns in (1, 50, 500)
        for size in (64, 4096)
    ]
    rounds_of(section, echo_servers(before), loads, rounds, rng)
    return section


def bench_memory(
    rounds: int, rng: random.Random, before: str | None = None, conns: int = 10_000
) -> Section | None:
    if raise_fd_limit(conns * 2 + 1024) < conns + 100:
        progress(f"memory: skipped, RLIMIT_NOFILE's hard limit is below {conns}")
        return None
    section = Section(
        name="memory",
        title=f"Memory: RSS per idle connection, {conns:,} connections",
        metric="bytes_per_conn",
        metric_label="bytes RSS per connection",
        floor=FLOOR_NAME,
        baselines=["asyncio", "uvloop"],
        columns=[
            ("rss_before_kib", "RSS before KiB"),
            ("rss_after_kib", "RSS with connections KiB"),
        ],
    )
    servers = echo_servers(before)
    row = f"{conns:,} idle"
    section.runs[row] = {name: [] for name in servers}
    for number in range(1, rounds + 1):
        order = list(servers)
        rng.shuffle(order)
        for name in order:
            port = free_port()
            command, env = servers[name](port)
            proc = start(command, port, env)
            try:
                measure: Measure = lambda pid, port: idle_memory(pid, port, conns)  # noqa: E731
                section.add(row, name, attempt(section, measure, proc.pid, port))
            finally:
                stop(proc)
        progress(f"memory: round {number}/{rounds}")
    return section


def idle_memory(pid: int, port: int, conns: int) -> Sample:
    """RSS before and while holding ``conns`` idle connections, once all are accepted."""
    time.sleep(0.2)  # the readiness probe's connection closes
    before, fds = rss_kib(pid), open_fds(pid)
    gen = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, str(LOADGEN), "idle", str(port), str(conns), "120"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert gen.stdout is not None
        if gen.stdout.readline().strip() != "ready":
            raise RuntimeError("loadgen idle did not connect")
        deadline = time.monotonic() + 30
        while open_fds(pid) < fds + conns:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {pid} accepted only {open_fds(pid) - fds} of {conns}")
            time.sleep(0.05)
        time.sleep(0.2)  # connection_made callbacks of the last accepts
        after = rss_kib(pid)
    finally:
        gen.kill()
        gen.wait(10)
    return {
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_conn": (after - before) * 1024 / conns,
    }


def bench_line(
    seconds: float, rounds: int, rng: random.Random, before: str | None = None
) -> Section:
    section = cpu_section(
        "line",
        "line-command: PING round trips",
        ["asyncio", "uvloop"],
    )
    servers = {
        FLOOR_NAME: floor("line"),
        **reactorkit_servers(
            "reactorkit line-command", "line-command", "rate = 0  # flood control off", "", before
        ),
        "asyncio": peer("asyncio-ping"),
        "uvloop": peer("uvloop-ping"),
    }
    loads = [(f"{conns} conns PING", rr(conns, seconds, "PING\\r\\n", 7)) for conns in (1, 50)]
    rounds_of(section, servers, loads, rounds, rng)
    return section


def fanout(receivers: int, seconds: float) -> Measure:
    def measure(pid: int, port: int) -> Sample:
        run = measured_load(pid, "deliveries", "fanout", port, receivers, seconds)
        run["rps"] = run["deliveries_per_s"]
        return run

    return measure


def bench_chat(
    seconds: float, rounds: int, rng: random.Random, before: str | None = None
) -> Section:
    section = cpu_section(
        "chat",
        "chat: broadcast fan-out",
        ["asyncio", "uvloop"],
        note="(chat: requests/s means deliveries/s and CPU is per delivery; p99 is the time "
        "for one message to reach every receiver)",
    )
    options = "rate = 1e9\nburst = 1000000000\nmax_room_clients = 1000"
    servers = {
        FLOOR_NAME: floor("chat"),
        **reactorkit_servers("reactorkit chat", "chat", options, before=before),
        "asyncio": peer("asyncio-chat"),
        "uvloop": peer("uvloop-chat"),
    }
    loads = [(f"1 sender -> {n} receivers", fanout(n, seconds)) for n in (10, 100)]
    rounds_of(section, servers, loads, rounds, rng)
    return section


def http_servers(before: str | None) -> dict[str, Make]:
    env = dict(os.environ, PYTHONPATH=str(BENCH))

    def uvicorn(loop: str) -> Make:
        def make(port: int) -> tuple[list[str], dict[str, str] | None]:
            command = [PY, "-m", "uvicorn", "asgi_app:app", "--port", str(port)]
            command += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
            return [*command, "--backlog", "4096", "--loop", loop], env

        return make

    routes = 'plugins = ["rk_bench_routes"]'
    servers = {
        FLOOR_NAME: floor("http"),
        **reactorkit_servers(
            "reactorkit http-lite", "http-lite", "access_log = false", routes, before
        ),
    }
    servers["uvicorn (asyncio)"] = uvicorn("asyncio")
    servers["uvicorn (uvloop)"] = uvicorn("uvloop")
    return servers


def wrk_load(conns: int, seconds: float) -> Measure:
    def measure(pid: int, port: int) -> Sample:
        before = cpu_seconds(pid)
        total, rps, p99 = wrk(port, conns, seconds)
        return {"rps": rps, "p99_us": p99, "cpu_us": (cpu_seconds(pid) - before) / total * 1e6}

    return measure


def bench_http(
    seconds: float, rounds: int, rng: random.Random, before: str | None = None
) -> Section:
    """wrk at 50 and 500 connections against a route returning a 13-byte body."""
    section = Section(
        name="http",
        title="HTTP: a 13-byte response from a route (wrk)",
        metric="cpu_us",
        metric_label="CPU µs/request",
        floor=FLOOR_NAME,
        baselines=["uvicorn (asyncio)", "uvicorn (uvloop)"],
        columns=[("rps", "requests/s"), ("p99_us", "p99 µs")],
        note="(the C floor answers every request head with the same bytes, parsing nothing)",
    )
    loads = [(f"wrk {conns} conns", wrk_load(conns, seconds)) for conns in (50, 500)]
    rounds_of(section, http_servers(before), loads, rounds, rng)
    return section


def publish(
    section: Section | None, out: Path | None, charts: bool, header: dict[str, object]
) -> None:
    """Print the section's table; save its samples and chart under ``out``."""
    if section is None:
        return
    print("\n" + markdown(section))
    if out is not None:
        section.save(out, header)
        if charts:
            import charts as charts_module

            path = charts_module.write_svg(section, out / f"{section.name}.svg")
            print(f"![{section.title}]({os.path.relpath(path, BENCH.parent / 'docs')})\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["echo", "memory", "line", "chat", "http", "all"])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    parser.add_argument(
        "--rounds",
        "--repeat",  # its name before rounds were interleaved
        type=int,
        default=3,
        help="interleaved rounds (default 3)",
    )
    parser.add_argument("--seed", type=int, help="shuffle seed (default: a random one, printed)")
    parser.add_argument("--out", type=Path, default=DOCS_PERF, help="JSON and SVG folder")
    parser.add_argument("--no-save", action="store_true", help="print the tables only")
    parser.add_argument("--no-charts", action="store_true", help="save no SVG (no matplotlib)")
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also run the reactorkit package found in DIR (an older checkout) as "
        "'... before', in the same rounds",
    )
    args = parser.parse_args()
    missing = missing_tools(args.what)
    if missing:
        for line in missing:
            print(f"bench: {line}", file=sys.stderr)
        sys.exit(f"bench: cannot run {args.what!r} without them")
    charts = not (args.no_charts or args.no_save)
    missing = missing_modules(charts)
    if missing:
        for line in missing:
            print(f"bench: {line}", file=sys.stderr)
        sys.exit(f"bench: cannot run {args.what!r} without them")
    build_loadgen()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    raise_fd_limit(4096)
    command = shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"`{command}`, {date}: seed {seed}")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; server on CPU 0, load on "
        f"CPU {LOAD_CPU}; {args.rounds} rounds of {args.seconds:g}s per server and row; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    out = None if args.no_save else args.out
    header = {"command": command, "seed": seed, "date": date, "python": sys.version.split()[0]}
    begun = time.monotonic()
    what = args.what
    if what in ("echo", "all"):
        publish(bench_echo(args.seconds, args.rounds, rng, args.before), out, charts, header)
    if what in ("memory", "all"):
        publish(bench_memory(args.rounds, rng, args.before), out, charts, header)
    if what in ("line", "all"):
        publish(bench_line(args.seconds, args.rounds, rng, args.before), out, charts, header)
    if what in ("chat", "all"):
        publish(bench_chat(args.seconds, args.rounds, rng, args.before), out, charts, header)
    if what in ("http", "all"):
        publish(bench_http(args.seconds, args.rounds, rng, args.before), out, charts, header)
    print(
        f"total {time.monotonic() - begun:.0f}s; load average at the end {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
