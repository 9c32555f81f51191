"""User-space instructions per request of each server, under real load, by valgrind.

    python bench/server_instructions.py echo|line|chat [--only A,B] [--before DIR]

Time on this shared VM drifts 10-20 % between runs; an instruction count
does not. Each server of a comparison of ``run.py`` (echo: the C floor,
reactorkit, uvloop, asyncio and the hand-written pure-Python epoll loop;
line: line-command's PING beside the asyncio and uvloop line servers; chat:
the broadcast beside the asyncio and uvloop ones) runs under valgrind's
callgrind, and bench/loadgen.c drives it as ``run.py`` does.
The server is dumped (``callgrind_control -d``) after a short load and again
after a longer one; the second dump's count minus the first's, over the
requests between them, is its instructions per request: connecting and
start-up cancel out.

This is what the interpreter and the framework cost above the kernel: the
kernel's own part (the same system calls per request for every server
here: for echo, epoll_wait, read and write) is not counted. For chat a
request is one delivery (a message to one receiver). Under valgrind a
server runs some 50 times slower, so at 500 connections every poll finds
a full batch, as in the real run at that load.

Needs valgrind (``apt-get install valgrind``), gcc, taskset and the
``bench`` extra. About a minute per server and load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
from harness import (
    BENCH,
    FLOOR,
    LOAD_CPU,
    LOADGEN,
    PY,
    SERVER_CPU,
    build_loadgen,
    free_port,
    reactorkit_config,
    stop,
    wait_listening,
)

#: Where each tool comes from on Debian/Ubuntu.
PACKAGES = {
    "valgrind": "valgrind",
    "callgrind_control": "valgrind",
    "taskset": "util-linux",
    "gcc": "gcc",
}

#: The two loads, in seconds of loadgen time; the difference is counted.
SHORT, LONG = 2.0, 6.0


Command = tuple[list[str], dict[str, str] | None]


def comparison(what: str, before: str | None) -> tuple[dict[str, Command], list[Load]]:
    """The servers and loads of ``what``, as run.py's comparison of that name has them."""
    peers = str(BENCH / "peers.py")
    handler, options, kind = {
        "echo": ("echo", "", "echo"),
        "line": ("line-command", "rate = 0", "ping"),
        "chat": ("chat", "rate = 1e9\nburst = 1000000000\nmax_room_clients = 1000", "chat"),
    }[what]
    found: dict[str, Command] = {
        "C floor": ([str(FLOOR), what, "{port}"], None),
        "reactorkit": ([PY, "-m", "reactorkit", "run", "{config}"], None),
        "uvloop": ([PY, peers, f"uvloop-{kind}", "{port}"], None),
        "asyncio": ([PY, peers, f"asyncio-{kind}", "{port}"], None),
    }
    if what == "echo":
        found["python epoll"] = ([PY, peers, "epoll-echo", "{port}"], None)
    if before:
        env = dict(os.environ, PYTHONPATH=before)
        found["reactorkit before"] = ([PY, "-m", "reactorkit", "run", "{config}"], env)
    loads: list[Load] = {
        "echo": [
            Load(f"{c} conns x {n} B", "requests", ["rr", "{port}", str(c), "{s}", f"@{n}", str(n)])
            for c in (1, 500)
            for n in (64,)
        ],
        "line": [
            Load(f"{c} conns PING", "requests", ["rr", "{port}", str(c), "{s}", "PING\\r\\n", "7"])
            for c in (1, 50)
        ],
        "chat": [
            Load(f"1 sender -> {n} receivers", "deliveries", ["fanout", "{port}", str(n), "{s}"])
            for n in (10, 100)
        ],
    }[what]
    for load in loads:
        load.handler, load.options = handler, options
    return found, loads


@attrs.define
class Load:
    """One load row: loadgen's arguments ({port}, {s} filled in) and what it counts."""

    name: str
    key: str
    args: list[str]
    handler: str = ""
    options: str = ""


def total(dump: Path) -> int:
    text = dump.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no total in {dump}")
    return int(found.group(1))


def requests(port: int, load: Load, seconds: float) -> int:
    args = [a.format(port=port, s=seconds) for a in load.args]
    command = ["taskset", "-c", LOAD_CPU, str(LOADGEN), *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=180, check=True).stdout
    found = re.search(rf"{load.key}=(\d+)", out)
    if found is None:
        raise RuntimeError(f"loadgen printed no count: {out!r}")
    return int(found.group(1))


def measure(command: list[str], env: dict[str, str] | None, load: Load) -> float:
    """Instructions per request of one server under ``load``."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rk-cg-") as tmp:
        config = reactorkit_config(load.handler, port, load.options)
        argv = [part.format(port=port, config=config) for part in command]
        out = Path(tmp) / "cg.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *valgrind, *argv],
            cwd=BENCH,  # not a checkout's root: it would shadow a --before package
            env=dict(env or os.environ, PYTHONHASHSEED="0"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(proc, port, argv, timeout=300)
            time.sleep(1)  # the readiness probe's connection closes
            counts = [(0, dump(proc.pid, Path(tmp)))]  # start-up, left out
            for seconds in (SHORT, LONG):
                served = requests(port, load, seconds)
                time.sleep(1)  # the load's connections close before the dump
                counts.append((served, dump(proc.pid, Path(tmp))))
        finally:
            stop(proc)
            os.unlink(config)
    # Each dump holds what ran since the one before. Both loads connect and
    # close the same way, so the long one's count less the short one's is
    # the requests between them alone.
    (short, short_count), (long, long_count) = counts[1:]
    return (long_count - short_count) / (long - short)


def dump(pid: int, directory: Path) -> int:
    """Ask callgrind to dump; the instructions run since the last dump."""
    before = set(directory.glob("cg.out.*"))
    subprocess.run(
        ["callgrind_control", "-d", str(pid)], capture_output=True, check=True, timeout=60
    )
    deadline = time.monotonic() + 60
    while True:
        new = set(directory.glob("cg.out.*")) - before
        if new:
            (path,) = new
            try:
                return total(path)
            except RuntimeError:
                pass  # still being written
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind wrote no dump for {pid}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["echo", "line", "chat"])
    parser.add_argument("--before", metavar="DIR", help="also count the reactorkit in DIR")
    parser.add_argument("--only", help="comma-separated server names (default: all)")
    args = parser.parse_args()
    for tool in PACKAGES:
        if shutil.which(tool) is None:
            sys.exit(f"{tool}: not found on PATH; install it: apt-get install {PACKAGES[tool]}")
    build_loadgen()
    chosen, loads = comparison(args.what, args.before)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    print(f"`python bench/server_instructions.py {' '.join(sys.argv[1:])}`")
    print()
    print("| server | " + " | ".join(load.name for load in loads) + " |")
    print("|---|" + "---:|" * len(loads))
    for name, (command, env) in chosen.items():
        cells = [f"{measure(command, env, load):,.0f}" for load in loads]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
