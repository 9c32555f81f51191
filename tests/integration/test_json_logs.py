"""``log_format = "json"`` via ``reactorkit run``: every line parses, one conn_id per connection."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProcess, child_env, connect, recv_until_closed

BOOM_PLUGIN = """
import reactorkit

def boom(request):
    raise RuntimeError("route boom")

class Raiser(reactorkit.Handler):
    def data_received(self, data):
        raise RuntimeError("handler boom")

def careless(request):
    import logging
    log = logging.getLogger("rk_boom")
    cycle = []
    cycle.append(cycle)
    log.warning("careless tuple keys", extra={"data": {(1, 2): 3}})
    log.warning("careless cycle", extra={"data": cycle})
    log.warning("careless nan", extra={"data": float("nan")})
    log.warning("careless %s %s", "args")
    return reactorkit.Response(status=200, body=b"ok")

@reactorkit.hookimpl
def reactorkit_http_routes():
    return [
        reactorkit.Route(method="GET", path="/boom", function=boom),
        reactorkit.Route(method="GET", path="/careless", function=careless),
    ]

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="raiser", handler=Raiser)]
"""

CONFIG = """
[reactor]
log_format = "{log_format}"
plugins = ["rk_boom"]

[[listen]]
name = "web"
handler = "http-lite"
port = 0
options = {{ header_timeout = 0.3 }}

[[listen]]
name = "raiser"
handler = "raiser"
port = 0
"""


def start(tmp_path: Path, log_format: str) -> ServerProcess:
    (tmp_path / "rk_boom.py").write_text(BOOM_PLUGIN)
    path = tmp_path / "app.toml"
    path.write_text(CONFIG.format(log_format=log_format))
    return ServerProcess(["run", str(path)], env=child_env(PYTHONPATH=str(tmp_path)))


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start(tmp_path, "json")
    try:
        # The "listening" message sits inside JSON here: read the addresses from it.
        while len(proc.addresses) < 2:
            line = proc.proc.stderr.readline()  # type: ignore[union-attr]
            assert line, "".join(proc.log)
            proc.log.append(line)
            msg = json.loads(line)["msg"]
            match = ServerProcess.LISTENING.search(msg)
            if match:
                proc.addresses[match.group(1)] = match.group(3)
        proc.keep_reading_log()
        yield proc
    finally:
        proc.kill()


def peer_of(sock: socket.socket) -> str:
    """How the server's log names this client."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def records(log: str) -> list[dict[str, Any]]:
    """Every line of the log as JSON (fails the test on a line that is not)."""
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def test_every_line_is_json_and_one_connection_keeps_its_id(json_server: ServerProcess) -> None:
    web = json_server.tcp("web")
    # 1. a header block that never ends: 408, then closed by the header_timeout limit.
    slow = connect(web)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert recv_until_closed(slow).startswith(b"HTTP/1.1 408")
    slow_peer = peer_of(slow)
    slow.close()
    # 2. a route that raises: logged with a traceback, answered 500.
    with connect(web) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 500")
        boom_peer = peer_of(sock)
    # 3. a handler that raises: its connection is aborted and the error logged.
    with connect(json_server.tcp("raiser")) as sock:
        sock.sendall(b"x")
        recv_until_closed(sock)
        raiser_peer = peer_of(sock)
    code, log = json_server.terminate()
    assert code == 0
    lines = records(log)
    for line in lines:
        assert {"ts", "level", "logger", "msg", "pid"} <= line.keys(), line
        assert line["ts"].endswith("Z")

    about_slow = [r for r in lines if r.get("peer") == slow_peer]
    assert {r["logger"] for r in about_slow} == {"reactorkit.access", "reactorkit.limits"}
    assert len({r["conn_id"] for r in about_slow}) == 1
    access = next(r for r in about_slow if r["logger"] == "reactorkit.access")
    assert access["status"] == 408
    assert access["listener"] == "web"
    limit = next(r for r in about_slow if r["logger"] == "reactorkit.limits")
    assert "header_timeout" in limit["msg"]

    about_boom = [r for r in lines if r.get("peer") == boom_peer]
    assert {r["logger"] for r in about_boom} == {"reactorkit.access", "reactorkit.http"}
    assert len({r["conn_id"] for r in about_boom}) == 1
    error = next(r for r in about_boom if r["logger"] == "reactorkit.http")
    assert error["level"] == "error"
    assert "RuntimeError: route boom" in error["exc"]
    assert next(r for r in about_boom if r["logger"] == "reactorkit.access")["status"] == 500

    about_raiser = [r for r in lines if r.get("peer") == raiser_peer]
    error = next(r for r in about_raiser if r["logger"] == "reactorkit.connection")
    assert error["listener"] == "raiser"
    assert isinstance(error["conn_id"], int)
    assert "RuntimeError: handler boom" in error["exc"]
    # Ids are per connection: the three connections have three.
    ids = {about_slow[0]["conn_id"], about_boom[0]["conn_id"], error["conn_id"]}
    assert len(ids) == 3


def test_text_lines_name_the_connection_with_its_id(tmp_path: Path) -> None:
    proc = start(tmp_path, "text")
    try:
        proc.wait_serving(2)
        proc.keep_reading_log()
        with connect(proc.tcp("web")) as sock:
            sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            recv_until_closed(sock)
    finally:
        _, log = proc.terminate()
    error = next(line for line in log.splitlines() if "route GET /boom" in line)
    access = next(line for line in log.splitlines() if '"GET /boom HTTP/1.1" 500' in line)
    conn = error.split("reactorkit.http: ", 1)[1].split(" ", 1)[0]
    assert conn.startswith("*")
    assert f"reactorkit.access: {conn} " in access


def test_a_bad_log_format_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('[reactor]\nlog_format = "xml"\n[[listen]]\nhandler = "echo"\nport = 0\n')
    proc = ServerProcess(["check", str(path)])
    code, log = proc.wait_exit()
    assert code == 1
    assert "reactor.log_format must be one of text, json, got 'xml'" in log


def strict_records(log: str) -> list[dict[str, Any]]:
    """:func:`records`, refusing NaN and Infinity as jq, Go and log shippers do."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return [json.loads(line, parse_constant=refuse) for line in log.splitlines() if line.strip()]


def test_a_careless_plugins_log_calls_stay_json_lines(json_server: ServerProcess) -> None:
    with connect(json_server.tcp("web")) as sock:
        sock.sendall(b"GET /careless HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 200")
    code, log = json_server.terminate()
    assert code == 0
    assert "Logging error" not in log
    lines = strict_records(log)
    careless = [r["msg"] for r in lines if r["logger"] == "rk_boom"]
    assert careless[:3] == ["careless tuple keys", "careless cycle", "careless nan"]
    assert "careless %s %s" in careless[3]
    assert len(careless) == 4
