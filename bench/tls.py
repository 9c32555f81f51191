"""TLS benchmark: http-lite over TLS beside uvicorn --ssl-*, and new TLS connections per second.

Run from the repository root (needs ``pip install -e '.[test,bench]'`` for
trustme, uvicorn and uvloop, and ``wrk``, ``taskset`` on PATH)::

    python bench/tls.py --seconds 3 --repeat 3

Rows, each server pinned to one CPU and wrk to the other (as bench/run.py):

* keep-alive: wrk, 50 connections, each doing many requests over one TLS
  session, so handshakes do not dominate; the plain-HTTP http-lite row is
  the same server without TLS, for TLS's own cost;
* new connection per request: wrk with ``Connection: close``, so every
  request pays a full handshake (wrk does not resume sessions): this is
  handshakes per second.

The figure to read is the server's CPU µs per request (utime+stime from
/proc over the run), as in docs/performance.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from run import (  # noqa: E402
    LOAD_CPU,
    PY,
    cpu_seconds,
    free_port,
    median_of,
    missing_tools,
    reactorkit_config,
    server,
    table,
)


def make_certs(directory: str) -> tuple[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    return cert_path, key_path


def wrk(url: str, conns: int, seconds: float, close: bool) -> str:
    command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s"]
    if close:
        command += ["-H", "Connection: close"]
    done = subprocess.run(
        [*command, "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return done.stdout


def parse(out: str, cpu: float) -> dict[str, float]:
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1, "ms": 1e3, "s": 1e6}[p99.group(2)]  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p99_us": float(p99.group(1)) * scale,  # type: ignore[union-attr]
        "cpu_us": cpu / total * 1e6,
        "socket_errors": float(sum(map(int, errors.groups()))) if errors else 0.0,
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    missing = missing_tools("http")  # taskset and wrk
    if missing:
        for line in missing:
            print(f"bench: {line}", file=sys.stderr)
        sys.exit("bench: cannot run the TLS benchmark without them")
    directory = tempfile.mkdtemp(prefix="rk-bench-tls-")
    cert, key = make_certs(directory)
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    port = free_port()
    tls_table = f'[listen.tls]\ncert = "{cert}"\nkey = "{key}"\nalpn = ["http/1.1"]\n'
    rk = [PY, "-m", "reactorkit", "run"]
    plugins = 'plugins = ["rk_bench_routes"]'
    uvicorn = [
        PY, "-m", "uvicorn", "asgi_app:app", "--port", str(port), "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--backlog", "4096",
        "--ssl-certfile", cert, "--ssl-keyfile", key,
    ]  # fmt: skip
    servers = {
        "reactorkit http-lite, TLS": (
            [
                *rk,
                reactorkit_config("http-lite", port, "access_log = false\n" + tls_table, plugins),
            ],
            "https",
        ),
        "uvicorn (uvloop), TLS": ([*uvicorn, "--loop", "uvloop"], "https"),
        "uvicorn (asyncio), TLS": ([*uvicorn, "--loop", "asyncio"], "https"),
        "reactorkit http-lite, plain": (
            [*rk, reactorkit_config("http-lite", port, "access_log = false", plugins)],
            "http",
        ),
    }
    print(f"python {sys.version.split()[0]}; {args.seconds:g}s x {args.repeat}")
    loads = [
        ("keep-alive, 50 conns", 50, False),
        ("new TLS connection per request, 10 conns", 10, True),
    ]
    for label, conns, close in loads:
        rows = []
        for name, (command, scheme) in servers.items():
            if close and scheme == "http":
                continue
            runs = []
            for _ in range(args.repeat):
                with server(command, port, env=env) as proc:
                    before = cpu_seconds(proc.pid)
                    out = wrk(f"{scheme}://127.0.0.1:{port}/", conns, args.seconds, close)
                    runs.append(parse(out, cpu_seconds(proc.pid) - before))
            rows.append((label, name, median_of(runs)))
            errors = rows[-1][2]["socket_errors"]
            if errors:
                print(f"note: {name}: {errors:g} wrk socket errors ({label})")
        table(f"HTTP over TLS, {label} (wrk)", rows, "uvicorn (uvloop), TLS")


if __name__ == "__main__":
    main()
