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

* echo over TLS: reactorkit's echo with ``[listen.tls]`` beside the same
  ``asyncio.Protocol`` echo as bench/peers.py served with ``ssl=`` on uvloop
  and on asyncio (uvicorn speaks only HTTP), and reactorkit's plain echo.
  wrk and bench/loadgen.c speak no raw TLS, so the load is this script's own
  client on uvloop (``--load-echo``): 10 TLS connections, each sending 64
  bytes and reading them back, over and over. The client is the bottleneck,
  so requests/s say little; CPU per round trip is the figure.

The figure to read is the server's CPU µs per request (utime+stime from
/proc over the run), as in docs/performance.md. Every part interleaves the
servers round by round (a change in the machine's load hits them all) and
gives the median; the echo rows also min-max.
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


ECHO_PAYLOAD = b"x" * 64


def serve_tls_echo(runtime: str, port: int, cert: str, key: str) -> None:
    """The peer: bench/peers.py's echo ``Protocol`` over ``ssl=`` on asyncio or uvloop."""
    import asyncio
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", port, ssl=context, backlog=4096)
        await srv.serve_forever()

    if runtime == "uvloop":
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


def load_echo(port: int, conns: int, seconds: float, tls: bool) -> None:
    """Ping-pong ``ECHO_PAYLOAD`` on ``conns`` connections for ``seconds``; print the count."""
    import asyncio
    import ssl

    import uvloop

    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # a benchmark client: the server is ours

    async def one(deadline: float) -> int:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost" if tls else None
        )
        count = 0
        while loop.time() < deadline:
            writer.write(ECHO_PAYLOAD)
            await reader.readexactly(len(ECHO_PAYLOAD))
            count += 1
        writer.close()
        return count

    async def run() -> int:
        deadline = asyncio.get_running_loop().time() + seconds
        return sum(await asyncio.gather(*(one(deadline) for _ in range(conns))))

    print(f"round_trips={uvloop.run(run())}")


def echo_rows(cert: str, key: str, seconds: float, repeat: int) -> None:
    """Echo over TLS, servers interleaved round by round; median and min-max per server."""
    import statistics

    port = free_port()
    tls_table = f'[listen.tls]\ncert = "{cert}"\nkey = "{key}"\n'
    me = [PY, str(Path(__file__).resolve())]
    rk = [PY, "-m", "reactorkit", "run"]
    peer = [*me, "--serve-echo"]
    servers = {
        "reactorkit echo, TLS": ([*rk, reactorkit_config_tls(port, tls_table)], True),
        "asyncio echo (uvloop), TLS": ([*peer, "uvloop", str(port), cert, key], True),
        "asyncio echo (asyncio), TLS": ([*peer, "asyncio", str(port), cert, key], True),
        "reactorkit echo, plain": ([*rk, reactorkit_config("echo", port)], False),
    }  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in servers}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(repeat):
        for name, (command, tls) in servers.items():
            with server(command, port) as proc:
                before = cpu_seconds(proc.pid)
                out = subprocess.run(
                    ["taskset", "-c", LOAD_CPU, *me, "--load-echo", str(port), "10",
                     f"{seconds:g}", "tls" if tls else "plain"],
                    capture_output=True, text=True, timeout=seconds + 60, check=True,
                ).stdout  # fmt: skip
                cpu = cpu_seconds(proc.pid) - before
            trips = int(out.split("=")[1])
            samples[name].append(cpu / trips * 1e6)
            rates[name].append(trips / seconds)
    base = statistics.median(samples["asyncio echo (uvloop), TLS"])
    print("\n### echo over TLS, 10 conns, 64-byte round trips (this script's uvloop client)\n")
    print(
        "| server | round trips/s | CPU µs/round trip, median (min-max) "
        "| CPU vs asyncio echo (uvloop), TLS |"
    )
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        median = statistics.median(values)
        spread = f"{min(values):.1f}-{max(values):.1f}"
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:,.0f} | {median:.1f} ({spread}) | {median / base:.2f}x |")


def reactorkit_config_tls(port: int, tls_table: str) -> str:
    """An echo config on ``port`` with ``tls_table`` appended after the listener."""
    path = reactorkit_config("echo", port)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("[listen.options]", tls_table + "[listen.options]"))
    return path


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
    parser.add_argument("--only", choices=["http", "echo"], help="run one part only")
    args = parser.parse_args()
    if args.only == "echo":
        directory = tempfile.mkdtemp(prefix="rk-bench-tls-")
        print(f"python {sys.version.split()[0]}; {args.seconds:g}s x {args.repeat}")
        echo_rows(*make_certs(directory), args.seconds, args.repeat)
        return
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
        chosen = {n: c for n, c in servers.items() if not (close and c[1] == "http")}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
        for _ in range(args.repeat):  # round by round: load changes hit every server
            for name, (command, scheme) in chosen.items():
                with server(command, port, env=env) as proc:
                    before = cpu_seconds(proc.pid)
                    out = wrk(f"{scheme}://127.0.0.1:{port}/", conns, args.seconds, close)
                    runs[name].append(parse(out, cpu_seconds(proc.pid) - before))
        for name in chosen:
            rows.append((label, name, median_of(runs[name])))
            errors = rows[-1][2]["socket_errors"]
            if errors:
                print(f"note: {name}: {errors:g} wrk socket errors ({label})")
        table(f"HTTP over TLS, {label} (wrk)", rows, "uvicorn (uvloop), TLS")
    if args.only is None:
        echo_rows(cert, key, args.seconds, args.repeat)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-echo"]:
        runtime, port_text, cert_path, key_path = sys.argv[2:6]
        serve_tls_echo(runtime, int(port_text), cert_path, key_path)
    elif sys.argv[1:2] == ["--load-echo"]:
        load_echo(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "tls")
    else:
        main()
