"""reactorkit-kvstore through real line-command and http-lite servers."""

import http.client
import json
import socket

import pytest
import reactorkit_kvstore


@pytest.fixture(autouse=True)
def empty_store():
    reactorkit_kvstore.STORE.data.clear()
    yield
    reactorkit_kvstore.STORE.data.clear()


def ask(sock, reader, request, lines=1):
    sock.sendall(request)
    return [reader.readline().decode().rstrip("\r\n") for _ in range(lines)]


def test_line_commands(reactorkit_server):
    server = reactorkit_server(handler="line-command")
    with socket.create_connection(server.address(), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert ask(sock, reader, b'SET colour "deep blue"\r\n') == ["+OK"]
        assert ask(sock, reader, b"GET colour\r\n") == ["+deep blue"]
        assert ask(sock, reader, b"GET nope\r\n") == ["-ERR no such key: nope"]
        assert ask(sock, reader, b"INCR hits\r\nINCR hits\r\n", 2) == ["+1", "+2"]
        assert ask(sock, reader, b"INCR colour\r\n") == ["-ERR value of colour is not an integer"]
        assert ask(sock, reader, b"KEYS\r\n", 3) == ["*2", "colour", "hits"]
        assert ask(sock, reader, b"DEL colour nope\r\n") == ["+1"]
        assert ask(sock, reader, b"SET onlykey\r\n") == [
            "-ERR wrong number of arguments for SET; usage: SET KEY VALUE"
        ]


def test_value_size_limit(reactorkit_server):
    server = reactorkit_server(handler="line-command", options={"max_line_length": 200_000})
    with socket.create_connection(server.address(), timeout=5) as sock:
        reader = sock.makefile("rb")
        big = b"x" * (reactorkit_kvstore.MAX_VALUE + 1)
        assert ask(sock, reader, b"SET big " + big + b"\r\n") == [
            "-ERR value too large (limit 65536 bytes)"
        ]


def test_http_view(reactorkit_server):
    reactorkit_kvstore.STORE.set("a", "1")
    server = reactorkit_server(handler="http-lite")
    host, port = server.address()[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/kv")
    assert json.loads(conn.getresponse().read()) == {"a": "1"}
    conn.request("GET", "/kv/a")
    assert json.loads(conn.getresponse().read()) == {"key": "a", "value": "1"}
    conn.request("GET", "/kv/zzz")
    response = conn.getresponse()
    assert response.status == 404
    response.read()
    conn.close()
