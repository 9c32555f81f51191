"""Benchmarks: reactorkit beside its peers, in one run, as ratios.

    python bench/run.py echo|memory|line|chat|http|all [--seconds S] [--repeat N] [--before DIR]

Every server runs pinned to CPU 0 and the load generator to CPU 1
(``taskset``), so they do not compete for a core. Beside requests/s and
latency, each row reports the server's CPU time per request: utime+stime
from ``/proc/PID/stat`` over the run, divided by the requests served. That
figure, and its ratio to the peer, is what tells implementations apart.

Load: ``bench/loadgen.c`` (built here with gcc into bench/build/) for echo,
line-command and chat; ``wrk`` for HTTP. Only 127.0.0.1 is used; every run
is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
LOADGEN = BUILD / "loadgen"
PY = sys.executable
SERVER_CPU, LOAD_CPU = "0", "1"


#: External programs the benchmarks run, and how to get each one.
TOOLS = {
    "gcc": "apt-get install gcc (Debian/Ubuntu), dnf install gcc (Fedora)",
    "wrk": "apt-get install wrk (Debian/Ubuntu), dnf install wrk (Fedora), "
    "or build it from https://github.com/wg/wrk",
    "taskset": "apt-get install util-linux (Debian/Ubuntu), dnf install util-linux (Fedora)",
}


def missing_tools(what: str) -> list[str]:
    """The programs ``what`` needs that are not on PATH, each with how to install it."""
    needed = ["taskset"]
    if what in ("echo", "memory", "line", "chat", "all"):
        needed.append("gcc")  # builds bench/loadgen.c
    if what in ("http", "all"):
        needed.append("wrk")
    return [
        f"{tool}: not found on PATH; install it: {TOOLS[tool]}"
        for tool in needed
        if shutil.which(tool) is None
    ]


def build_loadgen() -> None:
    source = BENCH / "loadgen.c"
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(LOADGEN), str(source)], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def reactorkit_config(
    handler: str, port: int, options: str = "", extra: str = "", log_level: str = "warning"
) -> str:
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="rk-bench-")
    with os.fdopen(fd, "w") as f:
        f.write(f"""
[reactor]
log_level = "{log_level}"
{extra}

[[listen]]
handler = "{handler}"
port = {port}
backlog = 4096
max_connections = 20000
[listen.options]
{options}
""")
    return path


@contextlib.contextmanager
def server(
    command: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {command}") from None
                time.sleep(0.05)
        time.sleep(0.3)  # let the accepted probe connection go
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def loadgen(*args: object, timeout: float = 120) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, str(LOADGEN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # How busy the load generator's core was: near 100% means the req/s
    # column is capped by the client, and CPU/request is the figure to read.
    result["load_cpu_pct"] = 100 * used / (time.monotonic() - started)
    return result


def measured(
    proc: subprocess.Popen[bytes], run: dict[str, float], before: float, count_key: str
) -> dict[str, float]:
    used = cpu_seconds(proc.pid) - before
    count = run[count_key]
    run["cpu_us"] = used / count * 1e6 if count else float("nan")
    return run


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


# -- what is measured ----------------------------------------------------------


def echo_servers(port: int) -> dict[str, list[str]]:
    return {
        "reactorkit": [PY, "-m", "reactorkit", "run", reactorkit_config("echo", port)],
        "asyncio": [PY, str(BENCH / "peers.py"), "asyncio-echo", str(port)],
        "uvloop": [PY, str(BENCH / "peers.py"), "uvloop-echo", str(port)],
        "twisted": [PY, str(BENCH / "peers.py"), "twisted-echo", str(port)],
    }


def run_rr(
    command: list[str], port: int, conns: int, seconds: float, request: str, reply: int, repeat: int
) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        with server(command, port) as proc:
            before = cpu_seconds(proc.pid)
            run = loadgen("rr", port, conns, seconds, request, reply)
            runs.append(measured(proc, run, before, "requests"))
    return median_of(runs)


def table(title: str, rows: list[tuple[str, str, dict[str, float]]], base: str) -> None:
    print(f"\n### {title}\n")
    print(
        "| load | server | requests/s | p99 µs | CPU µs/request | req/s vs "
        f"{base} | CPU/request vs {base} | load generator CPU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    baseline = {load: r for load, name, r in rows if name == base}
    for load, name, r in rows:
        b = baseline.get(load)
        rps_ratio = r["rps"] / b["rps"] if b else float("nan")
        cpu_ratio = r["cpu_us"] / b["cpu_us"] if b else float("nan")
        print(
            f"| {load} | {name} | {r['rps']:,.0f} | {r.get('p99_us', 0):,.0f} | "
            f"{r['cpu_us']:.1f} | {rps_ratio:.2f}x | {cpu_ratio:.2f}x | "
            f"{_pct(r.get('load_cpu_pct'))} |"
        )
    sys.stdout.flush()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def bench_echo(seconds: float, repeat: int) -> None:
    rows = []
    for conns in (1, 50, 500):
        for size in (64, 4096):
            port = free_port()
            for name, command in echo_servers(port).items():
                r = run_rr(command, port, conns, seconds, f"@{size}", size, repeat)
                rows.append((f"{conns} conns x {size} B", name, r))
    table("Echo (RFC 862), closed loop", rows, "asyncio")


def bench_memory(conns: int = 10_000) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, conns * 2 + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < conns + 100:
        print(f"\nmemory: skipped, RLIMIT_NOFILE hard limit {hard} is below {conns}")
        return
    print(f"\n### Memory: RSS per idle connection, {conns:,} connections\n")
    print(
        "| server | RSS before KiB | RSS with connections KiB | bytes per connection | vs asyncio |"
    )
    print("|---|---:|---:|---:|---:|")
    results = {}
    port = free_port()
    for name, command in echo_servers(port).items():
        with server(command, port) as proc:
            before = rss_kib(proc.pid)
            gen = subprocess.Popen(
                ["taskset", "-c", LOAD_CPU, str(LOADGEN), "idle", str(port), str(conns), "4"],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert gen.stdout is not None
            assert gen.stdout.readline().strip() == "ready"
            time.sleep(1.0)  # let the server accept the backlog
            after = rss_kib(proc.pid)
            gen.wait(30)
        results[name] = (before, after, (after - before) * 1024 / conns)
    for name, (before, after, per) in results.items():
        print(
            f"| {name} | {before:,} | {after:,} | {per:,.0f} | {per / results['asyncio'][2]:.2f}x |"
        )


def bench_line(seconds: float, repeat: int) -> None:
    rows = []
    for conns in (1, 50):
        port = free_port()
        servers = {
            "reactorkit line-command": [
                PY,
                "-m",
                "reactorkit",
                "run",
                reactorkit_config("line-command", port, "rate = 0  # flood control off"),
            ],
            "asyncio": [PY, str(BENCH / "peers.py"), "asyncio-ping", str(port)],
            "uvloop": [PY, str(BENCH / "peers.py"), "uvloop-ping", str(port)],
        }
        for name, command in servers.items():
            r = run_rr(command, port, conns, seconds, "PING\\r\\n", 7, repeat)
            rows.append((f"{conns} conns PING", name, r))
    table("line-command: PING round trips", rows, "asyncio")


def bench_chat(seconds: float, repeat: int) -> None:
    rows = []
    for receivers in (10, 100):
        port = free_port()
        options = "rate = 1e9\nburst = 1000000000\nmax_room_clients = 1000"
        servers = {
            "reactorkit chat": [
                PY,
                "-m",
                "reactorkit",
                "run",
                reactorkit_config("chat", port, options),
            ],
            "asyncio": [PY, str(BENCH / "peers.py"), "asyncio-chat", str(port)],
            "uvloop": [PY, str(BENCH / "peers.py"), "uvloop-chat", str(port)],
        }
        for name, command in servers.items():
            runs = []
            for _ in range(repeat):
                with server(command, port) as proc:
                    run = loadgen("fanout", port, receivers, seconds + 1, timeout=120)
                    # CPU over the whole run, including the joins; per delivery.
                    run["cpu_us"] = cpu_seconds(proc.pid) / run["deliveries"] * 1e6
                    run["rps"] = run["deliveries_per_s"]
                    runs.append(run)
            rows.append((f"1 sender -> {receivers} receivers", name, median_of(runs)))
    print(
        "\n(chat: requests/s means deliveries/s; p99 is the time for one message to "
        "reach every receiver; CPU counts the whole server process life)"
    )
    table("chat: broadcast fan-out", rows, "asyncio")


def wrk(port: int, conns: int, seconds: float) -> tuple[float, float, float]:
    """(requests, requests/s, p99 µs) of one ``wrk -t1`` run, pinned to the load CPU."""
    url = f"http://127.0.0.1:{port}/"
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds:g}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if total is None or rps is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    scale = {"us": 1, "ms": 1e3, "s": 1e6}[p99.group(2)]
    return float(total.group(1)), float(rps.group(1)), float(p99.group(1)) * scale


def http_servers(port: int, before: str | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    config = reactorkit_config(
        "http-lite", port, "access_log = false", extra='plugins = ["rk_bench_routes"]'
    )
    uvicorn = [PY, "-m", "uvicorn", "asgi_app:app", "--port", str(port), "--http", "httptools"]
    uvicorn += ["--no-access-log", "--log-level", "warning", "--backlog", "4096"]
    servers = {"reactorkit http-lite": ([PY, "-m", "reactorkit", "run", config], env)}
    if before:
        # An older checkout (e.g. ``git archive REV reactorkit | tar -x -C DIR``) first
        # on the path: the same config, served by that code.
        old_env = dict(env, PYTHONPATH=f"{before}{os.pathsep}{BENCH}", PYTHONDONTWRITEBYTECODE="1")
        servers["reactorkit before"] = ([PY, "-m", "reactorkit", "run", config], old_env)
    servers["uvicorn (asyncio)"] = ([*uvicorn, "--loop", "asyncio"], env)
    servers["uvicorn (uvloop)"] = ([*uvicorn, "--loop", "uvloop"], env)
    return servers


def bench_http(seconds: float, repeat: int, before: str | None = None) -> None:
    """wrk at 50 and 500 connections; rounds interleave the servers so drift hits all alike."""
    port = free_port()
    servers = http_servers(port, before)
    loads = (50, 500)
    runs: dict[tuple[int, str], list[dict[str, float]]] = {}
    for _ in range(repeat):
        for conns in loads:
            for name, (command, env) in servers.items():
                with server(command, port, env=env) as proc:
                    before_cpu = cpu_seconds(proc.pid)
                    total, rps, p99 = wrk(port, conns, seconds)
                    cpu_us = (cpu_seconds(proc.pid) - before_cpu) / total * 1e6
                runs.setdefault((conns, name), []).append(
                    {"rps": rps, "p99_us": p99, "cpu_us": cpu_us}
                )
    base = "uvicorn (uvloop)"
    print(f"\n### HTTP: a 13-byte response from a route (wrk), {repeat} interleaved rounds\n")
    print(
        "| load | server | requests/s median (min-max) | p99 µs | CPU µs/request median "
        f"(min-max) | req/s vs {base} | CPU/request vs {base} |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for conns in loads:
        baseline = median_of(runs[conns, base])
        for name in servers:
            r = runs[conns, name]
            m = median_of(r)
            rps = [x["rps"] for x in r]
            cpu = [x["cpu_us"] for x in r]
            print(
                f"| wrk {conns} conns | {name} | {m['rps']:,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"
                f" | {m['p99_us']:,.0f} | {m['cpu_us']:.1f} ({min(cpu):.1f}-{max(cpu):.1f}) | "
                f"{m['rps'] / baseline['rps']:.2f}x | {m['cpu_us'] / baseline['cpu_us']:.2f}x |"
            )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["echo", "memory", "line", "chat", "http", "all"])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (median)")
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="http: also run the reactorkit package found in DIR (an older checkout)",
    )
    args = parser.parse_args()
    missing = missing_tools(args.what)
    if missing:
        for line in missing:
            print(f"bench: {line}", file=sys.stderr)
        sys.exit(f"bench: cannot run {args.what!r} without them")
    if args.what != "http":
        build_loadgen()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; server on CPU "
        f"{SERVER_CPU}, load on CPU {LOAD_CPU}; {args.seconds:g}s x {args.repeat}"
    )
    what = args.what
    if what in ("echo", "all"):
        bench_echo(args.seconds, args.repeat)
    if what in ("memory", "all"):
        bench_memory()
    if what in ("line", "all"):
        bench_line(args.seconds, args.repeat)
    if what in ("chat", "all"):
        bench_chat(args.seconds, args.repeat)
    if what in ("http", "all"):
        bench_http(args.seconds, args.repeat, args.before)


if __name__ == "__main__":
    main()
