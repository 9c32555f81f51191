"""GET /metrics through ``reactorkit run``: parsed by prometheus_client, values as the test did."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import TIMEOUT, ServerProcess, connect, recv_until_closed

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process metrics read /proc")

CONFIG = """
[[listen]]
name = "echo"
handler = "echo"
port = 0

[[listen]]
name = "guarded"
handler = "echo"
port = 0
deny = ["127.0.0.0/8"]

[[listen]]
name = "lines"
handler = "line-command"
port = 0
options = {{ max_line_length = 64 }}

[[listen]]
name = "admin"
handler = "http-lite"
port = 0
options = {{ metrics = {metrics} }}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    path = tmp_path / "app.toml"
    path.write_text(CONFIG.format(metrics="true"))
    proc = ServerProcess(["run", str(path)])
    try:
        proc.wait_serving(4)
        proc.keep_reading_log()
        yield proc
    finally:
        proc.terminate()


def http_get(address: tuple[str, int], path: str, accept: str = "") -> tuple[str, str, bytes]:
    """One request with Connection: close; returns (status line, headers, body)."""
    with connect(address) as sock:
        extra = f"Accept: {accept}\r\n" if accept else ""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
        raw = recv_until_closed(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, _, headers = head.decode().partition("\r\n")
    return status, headers.lower(), body


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, by (name, labels without worker/pid)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if k not in ("worker", "pid")
            )
            key = (sample.name, labels)
            out[key] = out.get(key, 0.0) + sample.value  # summed over workers
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


def echo_round_trip(address: tuple[str, int], payload: bytes) -> None:
    with connect(address) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "the echo server closed early"
            got += chunk
        assert got == payload


def wait_closed(address: tuple[str, int]) -> None:
    """Connect and read: a refused client is closed before any handler runs."""
    with connect(address) as sock:
        assert recv_until_closed(sock) == b""


def scrape_until(
    address: tuple[str, int], ready: object, timeout: float = TIMEOUT
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape until ``ready(samples)`` holds: closes are counted a loop pass after the client's."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = http_get(address, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        found = samples(body.decode())
        if ready(found) or time.monotonic() > deadline:  # type: ignore[operator]
            return found


def test_metrics_count_what_the_clients_did(server: ServerProcess) -> None:
    echo, admin = server.tcp("echo"), server.tcp("admin")
    sizes = [1, 1000, 70000, 5]
    for size in sizes:
        echo_round_trip(echo, b"x" * size)
    refusals = 3
    for _ in range(refusals):
        wait_closed(server.tcp("guarded"))
    for _ in range(2):
        assert http_get(admin, "/healthz")[0] == "HTTP/1.1 200 OK"
    assert http_get(admin, "/no/such/page")[0] == "HTTP/1.1 404 Not Found"

    def settled(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
        return value(found, "reactorkit_connections_open", listener="echo", handler="echo") == 0

    found = scrape_until(admin, settled)
    echo_labels = {"listener": "echo", "handler": "echo"}
    assert value(found, "reactorkit_connections_accepted_total", **echo_labels) == len(sizes)
    assert value(found, "reactorkit_connections_open", **echo_labels) == 0
    assert value(found, "reactorkit_received_bytes_total", **echo_labels) == sum(sizes)
    assert value(found, "reactorkit_sent_bytes_total", **echo_labels) == sum(sizes)
    guarded = {"listener": "guarded", "handler": "echo"}
    assert value(found, "reactorkit_connections_refused_total", reason="acl", **guarded) == refusals
    assert value(found, "reactorkit_connections_accepted_total", **guarded) == 0
    http = {"listener": "admin", "handler": "http-lite"}
    assert (
        value(found, "reactorkit_http_requests_total", route="/healthz", status="2xx", **http) == 2
    )
    assert (
        value(found, "reactorkit_http_requests_total", route="(unrouted)", status="4xx", **http)
        == 1
    )
    assert (
        value(found, "reactorkit_http_request_duration_seconds_count", route="/healthz", **http)
        == 2
    )
    assert (
        value(
            found,
            "reactorkit_http_request_duration_seconds_bucket",
            route="/healthz",
            le="+Inf",
            **http,
        )
        == 2
    )
    # The process and the loop are there, with real values.
    assert value(found, "process_resident_memory_bytes") > 1_000_000
    assert value(found, "process_open_fds") >= 5
    assert value(found, "reactorkit_loop_lag_seconds_count") >= 0
    assert ("reactorkit_timers", frozenset()) in found


def test_a_limit_closure_is_counted_and_logged_with_its_conn_id(server: ServerProcess) -> None:
    with connect(server.tcp("lines")) as sock:
        sock.sendall(b"x" * 200 + b"\r\n")
        assert b"-ERR line too long" in recv_until_closed(sock)

    def counted(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
        labels = {"listener": "lines", "handler": "line-command", "limit": "line_too_long"}
        return value(found, "reactorkit_connections_closed_by_limit_total", **labels) == 1

    assert counted(scrape_until(server.tcp("admin"), counted))
    _, log = server.terminate()
    line = next(line for line in log.splitlines() if "closed by limit line_too_long" in line)
    assert "reactorkit.limits: *" in line  # the text format names the connection: *ID


def test_openmetrics_when_the_scraper_asks_for_it(server: ServerProcess) -> None:
    status, headers, body = http_get(
        server.tcp("admin"), "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == "HTTP/1.1 200 OK"
    assert "content-type: application/openmetrics-text" in headers
    names = {family.name for family in openmetrics_families(body.decode())}
    assert "reactorkit_connections_accepted" in names
    assert body.endswith(b"# EOF\n")


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=garbage",
        "text/plain; version=1.x",
        "application/openmetrics-text; version=\u0661.0.0",
    ],
)
def test_a_hostile_accept_header_gets_the_text_format_not_a_500(
    server: ServerProcess, accept: str
) -> None:
    # prometheus_client's negotiation raises TypeError on a version it cannot compare.
    status, headers, body = http_get(server.tcp("admin"), "/metrics", accept=accept)
    assert status == "HTTP/1.1 200 OK"
    assert "content-type: text/plain; version=0.0.4" in headers
    assert "reactorkit_connections_open" in {
        f.name for f in text_string_to_metric_families(body.decode())
    }
    assert "raised" not in "".join(server.log)


def test_plain_scrapes_get_the_text_format(server: ServerProcess) -> None:
    _, headers, body = http_get(server.tcp("admin"), "/metrics")
    assert "content-type: text/plain; version=0.0.4" in headers
    assert b"# TYPE reactorkit_connections_open gauge" in body


def test_metrics_are_off_unless_the_listener_turns_them_on(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text(CONFIG.format(metrics="false"))
    proc = ServerProcess(["run", str(path)])
    try:
        proc.wait_serving(4)
        status, _, body = http_get(proc.tcp("admin"), "/metrics")
        assert status == "HTTP/1.1 404 Not Found"
        assert b"reactorkit_" not in body
    finally:
        proc.terminate()


WORKERS_CONFIG = """
[reactor]
workers = 2

[[listen]]
name = "echo"
handler = "echo"
port = 0

[[listen]]
name = "admin"
handler = "http-lite"
port = 0
options = { metrics = true }
"""


def test_one_scrape_shows_every_worker(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text(WORKERS_CONFIG)
    proc = ServerProcess(["run", str(path)])
    try:
        proc.wait_serving(2)
        deadline = time.monotonic() + 15
        while not all(f"worker {i} serving" in "".join(proc.log) for i in (0, 1)):
            assert time.monotonic() < deadline, "".join(proc.log)
            line = proc.proc.stderr.readline()  # type: ignore[union-attr]
            assert line, "".join(proc.log)
            proc.log.append(line)
        proc.keep_reading_log()
        connections = 6
        for _ in range(connections):
            echo_round_trip(proc.tcp("echo"), b"ping")
        # Whichever worker a scrape lands on (the kernel picks), it shows both.
        for _ in range(4):
            _, _, body = http_get(proc.tcp("admin"), "/metrics")
            workers = set()
            accepted = 0.0
            for family in text_string_to_metric_families(body.decode()):
                for sample in family.samples:
                    if sample.name == "reactorkit_connections_accepted_total":
                        workers.add(sample.labels["worker"])
                        if sample.labels["listener"] == "echo":
                            accepted += sample.value
            assert workers == {"0", "1"}
            assert accepted == connections
    finally:
        code, log = proc.terminate()
    assert code == 0, log


def test_a_closed_connection_still_counts_its_bytes(server: ServerProcess) -> None:
    # Open connections' bytes are read live; closed ones' were folded into the totals.
    echo = server.tcp("echo")
    held = connect(echo)
    try:
        held.sendall(b"abc")
        assert held.recv(16) == b"abc"

        def open_one(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
            return value(found, "reactorkit_connections_open", listener="echo", handler="echo") == 1

        found = scrape_until(server.tcp("admin"), open_one)
        assert value(found, "reactorkit_received_bytes_total", listener="echo", handler="echo") == 3
    finally:
        held.close()
