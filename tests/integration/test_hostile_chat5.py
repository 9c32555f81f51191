"""Hostile review of chat's subclass receivers on real sockets: careless plugins are contained.

A plugin's ChatHandler subclass gets broadcast lines through its own
``send_bytes``. Whatever that does (raise, close, re-enter the room, write
past the limit), the sender and the other members carry on, nothing reaches
the loop, and the failure is logged with the subclass's name.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reactorkit import HandlerType
from reactorkit.handlers.chat import ChatHandler, ChatOptions, ChatRooms
from reactorkit.testing import serve
from tests.helpers import TIMEOUT
from tests.integration.test_chat import ChatClient, clients
from tests.tlscerts import Certs, make_certs


def chat_type(cls: type[ChatHandler]) -> HandlerType:
    return HandlerType(
        name="hostile-chat",
        handler=cls,
        options=ChatOptions,
        state=ChatRooms.from_listener,
        description="test",
    )


def rename(client: ChatClient, nick: str, others: list[ChatClient]) -> None:
    old = client.nick
    client.send(f"/nick {nick}")
    assert client.line() == f"* you are now {nick}"
    for other in others:
        other.expect(f"* {old} is now {nick}")
    client.nick = nick


def raising_on(trigger: bytes, exc: BaseException, name: str = "Picky") -> type[ChatHandler]:
    """A careless plugin's ChatHandler: its send_bytes raises ``exc`` for the
    member nicknamed "picky" when a line holds ``trigger``."""

    def send_bytes(self: ChatHandler, data: bytes) -> None:
        if trigger in data and self.nick == "picky":
            raise exc
        ChatHandler.send_bytes(self, data)

    return type(name, (ChatHandler,), {"send_bytes": send_bytes})


def picky_fails_alone(a: ChatClient, b: ChatClient, c: ChatClient) -> None:
    """b, renamed "picky", raises on a's "boom": only b is closed; a and c carry on."""
    rename(b, "picky", [a, c])
    a.send("boom")
    assert c.line() == f"<{a.nick}> boom"
    with contextlib.suppress(OSError, ssl.SSLError):  # an abort may end TLS abruptly
        assert b.file.read() == b""  # closed, not hung
    a.expect("* picky left (disconnected)")
    a.send("still here")
    assert c.expect(f"<{a.nick}> still here") == ["* picky left (disconnected)"]
    for client in (a, b, c):
        client.close()


class PluginStop(BaseException):
    """What a careless plugin raises: a BaseException that is no Exception."""


@pytest.mark.parametrize("error", [RuntimeError, PluginStop])
def test_a_send_bytes_that_raises_is_the_receivers_failure_only(
    caplog, error: type[BaseException]
) -> None:
    # broadcast goes through a subclass's send_bytes; when that raises (an
    # Exception, or any BaseException but KeyboardInterrupt and SystemExit,
    # as the failure boundary catches), that receiver's connection is closed
    # and logged, and the sender and the other receivers carry on.
    Stopping = raising_on(b"boom", error("picky plugin stop"), "Stopping")

    with caplog.at_level(logging.ERROR), serve(handler=chat_type(Stopping)) as srv:
        a, b, c = clients(srv, 3)
        picky_fails_alone(a, b, c)
    assert "picky plugin stop" in caplog.text
    assert "Stopping" in caplog.text


class TLSChatClient(ChatClient):
    def __init__(self, certs: Certs, address: Any) -> None:
        raw = socket.create_connection(address[:2], timeout=TIMEOUT)
        self.sock = certs.client_context().wrap_socket(raw, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.nick = self.line().split(", ")[1].split("!")[0]
        self.line()
        self.line()


def test_a_subclass_send_bytes_that_raises_over_tls_closes_only_its_own_connection(
    tmp_path: Path, caplog
) -> None:
    # Over TLS a handler's transport is the TLS layer, not the Connection.
    Picky = raising_on(b"boom", RuntimeError("picky plugin bug"))

    certs = make_certs(tmp_path)
    with (
        caplog.at_level(logging.ERROR),
        serve(handler=chat_type(Picky), tls=certs.tls_table()) as srv,
    ):
        members: list[ChatClient] = []
        for _ in range(3):
            client = TLSChatClient(certs, srv.address())
            for earlier in members:
                assert earlier.line() == f"* {client.nick} joined #lobby"
            members.append(client)
        a, b, c = members
        picky_fails_alone(a, b, c)
    assert "picky plugin bug" in caplog.text
    assert "Picky" in caplog.text


def test_a_subclass_writing_past_super_is_still_a_slow_consumer() -> None:
    # A plugin that writes its own prefix straight to the transport still
    # gets every broadcast line; max_output_buffer must hold for it too.
    class Prefixed(ChatHandler):
        def send_bytes(self, data: bytes) -> None:
            self.connection.write(b"[x] " + data)

    options = {"max_output_buffer": 16384, "rate": 100000.0, "burst": 100000}
    with serve(handler=chat_type(Prefixed), options=options) as srv:
        talker = ChatClient(srv.address())
        listener = ChatClient(srv.address())
        talker.line()
        stuck = socket.create_connection(srv.address()[:2], timeout=5)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert talker.line().endswith("joined #lobby")
        assert listener.line().endswith("joined #lobby")
        payload = "z" * 900
        peak = 0
        for i in range(10000):  # ~9 MB: past any loopback socket buffer
            talker.sock.sendall(f"{i} {payload}\n".encode())
            if i % 100 == 99:
                for _ in range(100):
                    line = listener.line()
                    if "left (too slow reading)" in line:
                        line = listener.line()
                    assert line.startswith(f"[x] <{talker.nick}> ")
                peak = max(
                    peak,
                    srv.call(
                        lambda: max(c.get_write_buffer_size() for c in srv.server.connections)
                    ),
                )
        assert peak <= 16384 + 1024, f"a receiver held {peak} bytes unsent"
        open_count = srv.call(lambda: srv.listeners["hostile-chat"].open_connections)
        assert open_count == 2, "the never-reading client was not disconnected"
        stuck.close()
        talker.close()
        listener.close()


def test_a_receiver_that_replies_from_send_bytes_does_not_overtake_the_line() -> None:
    # A bot answering from send_bytes re-enters broadcast; the others must
    # see the line before the answer to it.
    class Bot(ChatHandler):
        def send_bytes(self, data: bytes) -> None:
            super().send_bytes(data)
            if self.nick == "bot" and data.endswith(b"> ping\r\n") and self.room is not None:
                self.rooms.broadcast(self.room, "<bot> pong", exclude=self)

    with serve(handler=chat_type(Bot)) as srv:
        a, bot, c = clients(srv, 3)
        rename(bot, "bot", [a, c])
        a.send("ping")
        assert c.line() == f"<{a.nick}> ping"
        assert c.line() == "<bot> pong"
        assert a.line() == "<bot> pong"
        for client in (a, bot, c):
            client.close()


def _close_self(me: ChatHandler, clients_: dict[str, ChatHandler]) -> None:
    me.connection.close()


def _abort_self(me: ChatHandler, clients_: dict[str, ChatHandler]) -> None:
    me.connection.abort()


def _abort_other(me: ChatHandler, clients_: dict[str, ChatHandler]) -> None:
    clients_["victim"].connection.abort()


def _close_sender(me: ChatHandler, clients_: dict[str, ChatHandler]) -> None:
    clients_["sender"].connection.close()


def _leave(me: ChatHandler, clients_: dict[str, ChatHandler]) -> None:
    me.cmd_join("elsewhere")


def _renick(me: ChatHandler, clients_: dict[str, ChatHandler]) -> None:
    me.cmd_nick("renamed")


def _quit(me: ChatHandler, clients_: dict[str, ChatHandler]) -> None:
    me.cmd_quit("bye from send_bytes")


@pytest.mark.parametrize(
    "act",
    [_close_self, _abort_self, _abort_other, _close_sender, _leave, _renick, _quit],
    ids=lambda f: f.__name__.strip("_"),
)
def test_whatever_a_receivers_send_bytes_does_the_others_get_the_line(
    act: Callable[[ChatHandler, dict[str, ChatHandler]], None], caplog
) -> None:
    acted: list[bool] = []

    class Meddler(ChatHandler):
        def send_bytes(self, data: bytes) -> None:
            super().send_bytes(data)
            if self.nick == "meddler" and b"> go\r\n" in data and not acted:
                acted.append(True)
                act(self, {h.nick: h for h in self.rooms.nicks.values()})

    with caplog.at_level(logging.ERROR), serve(handler=chat_type(Meddler)) as srv:
        sender, meddler, victim, last = clients(srv, 4)
        rename(meddler, "meddler", [sender, victim, last])
        rename(sender, "sender", [meddler, victim, last])
        rename(victim, "victim", [sender, meddler, last])
        sender.send("go")
        # Everyone after the meddler still gets the line, first.
        assert last.line() == "<sender> go"
        if act is not _abort_other:
            assert victim.line() == "<sender> go"
        assert srv.call(lambda: True)  # the loop is alive
        last.send("after")
        if act is _quit:
            last.expect("* meddler left (quit: bye from send_bytes)")
        if act is not _close_sender:
            sender.expect("<last> after".replace("last", last.nick))
        for client in (sender, meddler, victim, last):
            client.close()
    assert "raised" not in caplog.text  # nobody failed


def test_a_subclass_sender_reaches_plain_and_subclass_members() -> None:
    class Sub(ChatHandler):
        pass

    with serve(handler=chat_type(Sub), options={"rate": 1e9, "burst": 10**9}) as srv:
        a, b, c = clients(srv, 3)
        for i in range(50):
            a.send(f"line {i}")
        for reader in (b, c):
            assert [reader.line() for _ in range(50)] == [f"<{a.nick}> line {i}" for i in range(50)]
        for client in (a, b, c):
            client.close()


def test_a_private_message_to_a_raising_subclass_fails_only_the_target(caplog) -> None:
    Picky = raising_on(b"secret", RuntimeError("picky plugin bug"))

    with caplog.at_level(logging.ERROR), serve(handler=chat_type(Picky)) as srv:
        a, b, c = clients(srv, 3)
        rename(b, "picky", [a, c])
        a.send("/msg picky secret")
        assert a.line() == "-> *picky* secret"
        a.send("still here")
        assert c.expect(f"<{a.nick}> still here") == ["* picky left (disconnected)"]
        for client in (a, b, c):
            client.close()
    assert "Picky" in caplog.text


def test_two_bots_that_answer_each_other_do_not_hang_the_server(caplog) -> None:
    # A careless plugin: a bot that echoes every line of the others. Two of
    # them in one room answer each other without end.
    class Echo(ChatHandler):
        def send_bytes(self, data: bytes) -> None:
            super().send_bytes(data)
            if self.nick.startswith("echo") and data.startswith(b"<") and self.room is not None:
                self.rooms.broadcast(self.room, f"<{self.nick}> again", exclude=self)

    with caplog.at_level(logging.ERROR), serve(handler=chat_type(Echo)) as srv:
        a, e1, e2 = clients(srv, 3)
        rename(e1, "echo1", [a, e2])
        rename(e2, "echo2", [a, e1])
        started = time.monotonic()
        a.send("hi")
        # Each answer waits for the line it answers; past the chain's limit the
        # answering bot fails, so the chain (and a's output) is bounded.
        a.expect("* echo1 left (disconnected)")
        probe = ChatClient(srv.address())
        assert a.expect(f"* {probe.nick} joined #lobby").count("<echo1> again") <= 1000
        probe.send("still here")
        assert a.expect(f"<{probe.nick}> still here")[-1:] != ["<echo1> again"]
        assert time.monotonic() - started < 10
        for client in (a, e1, e2, probe):
            client.close()
    assert "broadcasts answer one line" in caplog.text
    assert "Echo" in caplog.text
