"""reactorkit-daytime: in memory and through a real server found by its entry point."""

import datetime
import socket

from reactorkit_daytime import DaytimeHandler, DaytimeOptions

import reactorkit


def test_sends_one_line_then_closes(fake_connection):
    conn = fake_connection(DaytimeHandler(DaytimeOptions(format="%Y-%m-%d")))
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    assert conn.take() == today.encode() + b"\r\n"
    assert conn.closed


def test_discovered_through_its_entry_point():
    found = reactorkit.load_plugins().handler_types()["daytime"]
    assert found.distribution.startswith("reactorkit-daytime ")
    assert found.item.default_port == 7013


def test_served_for_real(reactorkit_server):
    server = reactorkit_server(handler="daytime", options={"format": "%Y"})
    with socket.create_connection(server.address(), timeout=5) as sock:
        data = b""
        while chunk := sock.recv(100):
            data += chunk
    assert data == str(datetime.datetime.now(datetime.UTC).year).encode() + b"\r\n"
