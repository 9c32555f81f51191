"""The benchmarks' machinery: tools, C builds, pinned servers, one measured run.

Every server runs pinned to CPU 0 and every load generator to CPU 1
(``taskset``). A run's figure is the server's CPU time per request:
utime+stime from ``/proc/PID/stat`` between the load generator's "go" line
(connections made, the timed part starting) and its exit, divided by the
requests it counted. bench/run.py, chat_bus.py, workers.py and tls.py all
build on this module.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
LOADGEN = BUILD / "loadgen"
FLOOR = BUILD / "floor"
PY = sys.executable
SERVER_CPU, LOAD_CPU = "0", "1"

#: External programs the benchmarks run, and how to get each one.
TOOLS = {
    "gcc": "apt-get install gcc (Debian/Ubuntu), dnf install gcc (Fedora)",
    "wrk": "apt-get install wrk (Debian/Ubuntu), dnf install wrk (Fedora), "
    "or build it from https://github.com/wg/wrk",
    "taskset": "apt-get install util-linux (Debian/Ubuntu), dnf install util-linux (Fedora)",
}

#: Python modules the peers and the charts need: all in the ``bench`` extra.
MODULES = ("matplotlib", "twisted", "uvicorn", "uvloop")


def missing_tools(what: str) -> list[str]:
    """The programs ``what`` needs that are not on PATH, each with how to install it."""
    needed = ["taskset"]
    if what in ("echo", "memory", "line", "chat", "http", "all"):
        needed.append("gcc")  # builds bench/loadgen.c and the C floor, bench/floor.c
    if what in ("http", "all"):
        needed.append("wrk")
    return [
        f"{tool}: not found on PATH; install it: {TOOLS[tool]}"
        for tool in needed
        if shutil.which(tool) is None
    ]


def missing_modules(charts: bool) -> list[str]:
    """The ``bench`` extra's modules that cannot be imported, each with how to install it."""
    import importlib.util

    wanted = [m for m in MODULES if charts or m != "matplotlib"]
    return [
        f"python module {name}: not installed; install it: pip install -e '.[bench]'"
        for name in wanted
        if importlib.util.find_spec(name) is None
    ]


def build(name: str) -> Path:
    """Compile ``bench/NAME.c`` into ``bench/build/NAME`` unless it is up to date."""
    source, binary = BENCH / f"{name}.c", BUILD / name
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def build_loadgen() -> None:
    """Build the load generator (and the C floor server beside it)."""
    build("loadgen")
    build("floor")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` so far, in seconds (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by servers and load generators); returns the soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = min(hard, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


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


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, what: object, timeout: float = 20
) -> None:
    """Return once ``port`` accepts a connection; raise if ``proc`` dies or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {what}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start(
    command: list[str], port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` pinned to the server CPU and wait until it listens on ``port``."""
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *command],
        env=env,
        # Not the caller's directory: from a checkout's root, `python -m
        # reactorkit` would import that checkout's package ahead of the one
        # PYTHONPATH names, and a --before server would run the current code.
        cwd=BENCH,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(proc, port, command)
    except BaseException:
        stop(proc)
        raise
    return proc


@contextlib.contextmanager
def server(
    command: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """One server pinned to the server CPU, listening, for the ``with`` block."""
    proc = start(command, port, env)
    try:
        time.sleep(0.3)  # let the accepted probe connection go
        yield proc
    finally:
        stop(proc)


def _parse(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}


def loadgen(*args: object, timeout: float = 120) -> dict[str, float]:
    """Run ``bench/build/loadgen ARGS`` pinned to the load CPU; its key=value results."""
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
    result = _parse(out)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # How busy the load generator's core was: near 100% means the req/s
    # column is capped by the client, and CPU/request is the figure to read.
    result["load_cpu_pct"] = 100 * used / (time.monotonic() - started)
    return result


def measured_load(
    pid: int, count_key: str, *args: object, timeout: float = 120
) -> dict[str, float]:
    """One loadgen run (rr or fanout) against server ``pid``, with its CPU per ``count_key``.

    The server's CPU is read at loadgen's "go" line and again at its exit,
    so connecting (and chat's greetings) are not counted.
    """
    command = ["taskset", "-c", LOAD_CPU, str(LOADGEN), *map(str, args)]
    before_load = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            go = proc.stdout.readline()
            cpu_before, started = cpu_seconds(pid), time.monotonic()
            if go.strip() != "go":
                raise RuntimeError(f"loadgen {args}: expected 'go', got {go!r}")
            out, _ = proc.communicate(timeout=timeout)
        except BaseException:
            proc.kill()
            raise
        elapsed = time.monotonic() - started
        used = cpu_seconds(pid) - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen {args} failed with exit status {proc.returncode}")
    after_load = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = _parse(out)
    count = result[count_key]
    result["cpu_us"] = used / count * 1e6 if count else float("nan")
    load_used = (after_load.ru_utime - before_load.ru_utime) + (
        after_load.ru_stime - before_load.ru_stime
    )
    result["load_cpu_pct"] = 100 * load_used / elapsed
    return result


def wrk(port: int, conns: int, seconds: float) -> tuple[float, float, float]:
    """(requests, requests/s, p99 µs) of one ``wrk -t1`` run, pinned to the load CPU.

    wrk takes whole seconds: ``seconds`` is rounded up.
    """
    url = f"http://127.0.0.1:{port}/"
    args = ["-t1", f"-c{conns}", f"-d{math.ceil(seconds)}s", "--latency", url]
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", *args],
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
