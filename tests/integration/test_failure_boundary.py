"""The failure boundary on real sockets: what plugins and the OS do never reaches the loop."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Any

import pytest

import reactorkit
from reactorkit import Handler, HandlerType
from reactorkit.testing import serve
from tests.helpers import connect, recv_until_closed


def echo_round_trip(address: Any, payload: bytes = b"ping\r\n") -> bytes:
    with connect(address) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


class RaisingObserver:
    """A plugin whose observation and lifecycle hooks all raise."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @reactorkit.hookimpl
    def reactorkit_connection_made(self, listener: Any, connection: Any) -> None:
        self.calls.append("made")
        raise RuntimeError("observer bug in connection_made")

    @reactorkit.hookimpl
    def reactorkit_connection_lost(self, listener: Any, connection: Any, reason: Any) -> None:
        self.calls.append("lost")
        raise RuntimeError("observer bug in connection_lost")

    @reactorkit.hookimpl
    def reactorkit_reactor_started(self, reactor: Any) -> None:
        raise RuntimeError("observer bug in reactor_started")

    @reactorkit.hookimpl
    def reactorkit_reactor_stopping(self, reactor: Any) -> None:
        raise RuntimeError("observer bug in reactor_stopping")


class CountingObserver:
    """A well-behaved plugin beside the raising one: it must still be called."""

    def __init__(self) -> None:
        self.made = 0
        self.lost = 0

    @reactorkit.hookimpl
    def reactorkit_connection_made(self, listener: Any, connection: Any) -> None:
        self.made += 1

    @reactorkit.hookimpl
    def reactorkit_connection_lost(self, listener: Any, connection: Any, reason: Any) -> None:
        self.lost += 1


def test_a_raising_connection_made_hook_costs_no_connection(caplog) -> None:
    bad, good = RaisingObserver(), CountingObserver()
    with (
        caplog.at_level(logging.ERROR),
        serve(handler="echo", plugins=[good, bad]) as srv,
    ):
        for _ in range(3):
            assert echo_round_trip(srv.address()) == b"ping\r\n"
        srv.call(lambda: None)
    assert good.made == 3
    assert "observer bug in connection_made" in caplog.text
    assert "test-plugin-1" in caplog.text  # the plugin is named


def test_a_raising_connection_lost_hook_does_not_stop_accepting(caplog) -> None:
    # With max_connections = 1, a listener whose bookkeeping never ran after
    # the hook raised would never accept the second client.
    bad, good = RaisingObserver(), CountingObserver()
    with serve(handler="echo", max_connections=1, plugins=[bad, good]) as srv:
        for _ in range(3):
            assert echo_round_trip(srv.address()) == b"ping\r\n"
    assert good.lost == 3
    assert bad.calls.count("lost") == 3


def test_a_raising_reactor_stopping_hook_does_not_block_shutdown() -> None:
    with serve(handler="echo", plugins=[RaisingObserver()]) as srv:
        client = connect(srv.address())
        assert echo_round_trip(srv.address()) == b"ping\r\n"
        srv.stop(timeout=10)  # raises TimeoutError if the shutdown never finishes
        assert not srv.thread.is_alive()
        assert recv_until_closed(client) == b""  # the open connection was closed
        client.close()


def _handler_type(name: str, handler: Any) -> HandlerType:
    return HandlerType(name=name, handler=handler, description="test")


def test_a_handler_whose_init_raises_costs_only_that_connection(caplog) -> None:
    made = []

    class Flaky(Handler):
        def __init__(self, state: Any = None) -> None:
            made.append(1)
            if len(made) % 2:
                raise RuntimeError("init bug")
            super().__init__(state)

        def data_received(self, data: bytes) -> None:
            self.connection.write(data)

    with caplog.at_level(logging.ERROR), serve(handler=_handler_type("flaky", Flaky)) as srv:
        with connect(srv.address()) as first:
            assert recv_until_closed(first) == b""  # closed, not hung
        assert echo_round_trip(srv.address()) == b"ping\r\n"
        assert srv.call(lambda: srv.listeners["flaky"].stats.errors) == 1
    assert "init bug" in caplog.text
    assert "creating the handler" in caplog.text


def test_accept_errors_other_than_out_of_fds_are_skipped(caplog) -> None:
    with serve(handler="echo") as srv:
        listener = srv.listeners["echo"]
        real = listener.sock

        class FailingOnce:
            def __init__(self) -> None:
                self.failed = False

            def accept(self) -> Any:
                if not self.failed:
                    self.failed = True
                    raise OSError(errno.EPROTO, "Protocol error")
                return real.accept()

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        srv.call(lambda: setattr(listener, "sock", FailingOnce()))
        with connect(srv.address()) as sock:
            sock.sendall(b"x")
            # The first readiness event hit EPROTO; the client is still queued
            # and accepted on the next one.
            assert sock.recv(1) == b"x"
        srv.call(lambda: setattr(listener, "sock", real))


def test_closing_a_listener_inside_its_own_select_batch_is_harmless() -> None:
    with serve(handler="echo") as srv:
        listener = srv.listeners["echo"]

        def close_then_dispatch() -> None:
            listener.close()
            listener._accept_ready(1)  # the stale event of the same select() batch

        srv.call(close_then_dispatch)
        assert srv.thread.is_alive()


def test_a_handler_closing_its_listener_while_a_client_queues_in_one_batch() -> None:
    # The reporter's EBADF: a command closes its own listener while the
    # listener's readiness waits in the same poll() batch. The loop is held
    # (on an event, not a sleep) while the command arrives and a client
    # queues, so both events come out of one poll.
    class Closer(Handler):
        def data_received(self, data: bytes) -> None:
            if data == b"close":
                self.connection.listener.close()
            self.connection.write(data)

    held, release = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        held.set()
        assert release.wait(10)

    with serve(handler=_handler_type("closer", Closer)) as srv, connect(srv.address()) as first:
        first.sendall(b"hi")
        assert first.recv(2) == b"hi"
        srv.reactor.call_soon_threadsafe(hold_the_loop)
        assert held.wait(5)
        first.sendall(b"close")  # ready first...
        queued = connect(srv.address())  # ...then the listener: same batch
        release.set()
        assert first.recv(5) == b"close"
        first.sendall(b"still")  # the loop and this connection go on
        assert first.recv(5) == b"still"
        assert srv.call(lambda: srv.listeners["closer"].is_closed)
        # The queued client was reset with the listener (or accepted just
        # before the close, if its event came first): never left hanging.
        try:
            queued.sendall(b"q")
            reply = queued.recv(1)
        except ConnectionResetError:
            reply = b""
        assert reply in (b"", b"q")
        queued.close()
        assert srv.thread.is_alive()


def test_timer_and_thread_callbacks_of_a_handler_are_attributed_and_close_it(caplog) -> None:
    class Scheduler(Handler):
        def data_received(self, data: bytes) -> None:
            if data.startswith(b"timer"):
                self.connection.reactor.call_later(0, self.boom, "timer")
            elif data.startswith(b"thread"):
                future = self.connection.reactor.run_in_thread(lambda: 42)
                future.add_done_callback(lambda f: self.boom("thread"))
            elif data.startswith(b"soon"):
                self.connection.reactor.call_soon(self.boom, "soon")
            else:
                self.connection.write(data)

        def boom(self, what: str) -> None:
            raise RuntimeError(f"{what} callback bug")

    with caplog.at_level(logging.ERROR), serve(handler=_handler_type("sched", Scheduler)) as srv:
        bystander = connect(srv.address())
        for what in ("timer", "thread", "soon"):
            with connect(srv.address()) as sock:
                sock.sendall(what.encode())
                assert recv_until_closed(sock) == b""  # that connection, closed
            assert f"{what} callback bug" in caplog.text
        bystander.sendall(b"still here")
        assert bystander.recv(100) == b"still here"
        bystander.close()
        assert srv.call(lambda: srv.listeners["sched"].stats.errors) == 3
    assert "listener 'sched'" in caplog.text
    assert "127.0.0.1:" in caplog.text  # the peer


def test_a_client_that_only_listens_is_not_idle() -> None:
    class Ticker(Handler):
        def connection_made(self, connection: reactorkit.Transport) -> None:
            super().connection_made(connection)
            self.tick()

        def tick(self) -> None:
            if not self.connection.is_closing():
                self.connection.write(b".")
                self.connection.reactor.call_later(0.05, self.tick)

    with (
        serve(handler=_handler_type("ticker", Ticker), idle_timeout=0.3) as srv,
        connect(srv.address()) as sock,
    ):
        got = 0
        while got < 20:  # 1 s of ticks: well past the idle timeout
            chunk = sock.recv(100)
            assert chunk, "closed as idle although bytes kept flowing to it"
            got += len(chunk)


REFUSAL = b"-ERR too much, go away\r\n" + b"." * (512 * 1024) + b"\r\n"


def test_a_refusal_written_over_unread_input_reaches_the_client() -> None:
    # A long refusal to a client with a small receive window: when the server
    # closes, most of it still sits in the kernel's send queue. A plain close
    # over unread input sends RST and the kernel drops that queue.
    class Refuser(Handler):
        def data_received(self, data: bytes) -> None:
            self.connection.write(REFUSAL)
            self.connection.close()

    with serve(handler=_handler_type("refuser", Refuser)) as srv, connect(srv.address()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        # Keep writing well past what the server reads before refusing: a
        # plain close() over that unread input would answer with RST.
        while sent < 4 << 20:
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                break
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(5)
        assert recv_until_closed(sock) == REFUSAL


@pytest.mark.parametrize("family", ["tcp"])
def test_backlog_clients_are_served_at_shutdown_not_reset(family: str) -> None:
    with serve(handler="echo", max_connections=1) as srv:
        first = connect(srv.address())
        first.sendall(b"a")
        assert first.recv(1) == b"a"
        # The listener is full: these wait in the kernel's accept queue.
        waiting = [connect(srv.address()) for _ in range(10)]
        for i, sock in enumerate(waiting):
            sock.sendall(b"queued %d" % i)
        done = threading.Event()
        srv.reactor.call_soon_threadsafe(lambda: (srv.server.shutdown(), done.set()))
        assert done.wait(5)
        for i, sock in enumerate(waiting):
            assert recv_until_closed(sock) == b"queued %d" % i
            sock.close()
        first.close()
        srv.thread.join(10)
        assert not srv.thread.is_alive()


def test_sigterm_serves_the_http_clients_queued_in_the_backlog(tmp_path, run_server) -> None:
    # The reporter's case through `reactorkit run`: 30 clients wait in the
    # accept queue of a full listener when SIGTERM comes; none gets a reset.
    config = tmp_path / "web.toml"
    config.write_text(
        "[reactor]\nshutdown_timeout = 10\n"
        '[[listen]]\nhandler = "http-lite"\nport = 0\nmax_connections = 1\n'
    )
    proc = run_server("run", str(config))
    proc.wait_serving(1)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(proc.tcp("http-lite")) as first:
        first.sendall(request)
        assert first.recv(100).startswith(b"HTTP/1.1 200 ")
        waiting = [connect(proc.tcp("http-lite")) for _ in range(30)]
        for sock in waiting:
            sock.sendall(request)
        code, log = proc.terminate()
        replies = [recv_until_closed(sock) for sock in waiting]
        for sock in waiting:
            sock.close()
    assert code == 0, log
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 30, log
    # Each is told the connection ends (RFC 9112 section 9.6), as nginx does at shutdown.
    heads = [r.split(b"\r\n\r\n")[0].lower() + b"\r\n" for r in replies]
    assert all(b"\r\nconnection: close\r\n" in head for head in heads), replies[0]
    assert "accepted 30 queued clients" in log


def test_server_close_leaves_a_reactor_it_was_given_open() -> None:
    reactor = reactorkit.Reactor()
    try:
        config = reactorkit.Config.from_dict(
            {"listen": [{"handler": "echo", "port": 0}]}, path="<test>"
        )
        server = reactorkit.Server.from_config(config, reactor=reactor)
        server.close()
        reactor.call_soon(reactor.stop)
        reactor.run()  # still usable: it is the caller's
    finally:
        reactor.close()


def test_bind_socket_closes_the_socket_when_listen_fails(monkeypatch) -> None:
    from reactorkit.listener import bind_socket

    made: list[socket.socket] = []
    real_socket = socket.socket

    class Tracking(real_socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

        def listen(self, backlog: int = 0) -> None:
            raise OSError(errno.EOPNOTSUPP, "listen refused")

    monkeypatch.setattr(socket, "socket", Tracking)
    with pytest.raises(OSError, match="listen refused"):
        bind_socket(host="127.0.0.1", port=0, path=None, backlog=8)
    assert made
    assert all(s.fileno() == -1 for s in made)


class TimingWrapper:
    """A careless observer written as a pluggy wrapper around the others."""

    def __init__(self) -> None:
        self.wrapped = 0

    @reactorkit.hookimpl(wrapper=True)
    def reactorkit_connection_lost(self, listener: Any, connection: Any, reason: Any) -> Any:
        result = yield
        self.wrapped += 1
        return result


class OldStyleWrapper:
    @reactorkit.hookimpl(hookwrapper=True)
    def reactorkit_connection_made(self, listener: Any, connection: Any) -> Any:
        yield
        raise RuntimeError("wrapper bug after yield")


def test_a_wrapper_hook_keeps_each_plugin_isolated(caplog) -> None:
    # One plugin's wrapper made notify() hand the whole call to pluggy, so a
    # raising implementation skipped the others and lost the plugin's name.
    bad, good, wrapper, old = (
        RaisingObserver(),
        CountingObserver(),
        TimingWrapper(),
        OldStyleWrapper(),
    )
    with (
        caplog.at_level(logging.ERROR),
        serve(handler="echo", max_connections=1, plugins=[good, bad, wrapper, old]) as srv,
    ):
        for _ in range(3):
            assert echo_round_trip(srv.address()) == b"ping\r\n"
        srv.call(lambda: None)
    assert (good.made, good.lost, wrapper.wrapped) == (3, 3, 3)
    assert bad.calls.count("lost") == 3
    assert "observer bug in connection_lost" in caplog.text
    assert "wrapper bug after yield" in caplog.text
    for record in caplog.records:
        if record.exc_info and "bug" in str(record.exc_info[1]):
            assert "plugin 'test-plugin-" in record.getMessage(), record.getMessage()


def test_after_emfile_accepting_resumes_as_soon_as_a_connection_closes(monkeypatch) -> None:
    import reactorkit.listener

    # A back-off far longer than the test: only a freed descriptor can end it.
    monkeypatch.setattr(reactorkit.listener, "EMFILE_BACKOFF", 60.0)
    with serve(handler="echo") as srv:
        listener = srv.listeners["echo"]
        holder = connect(srv.address())
        holder.sendall(b"h")
        assert holder.recv(1) == b"h"
        real = listener.sock

        class OutOfDescriptors:
            def accept(self) -> Any:
                raise OSError(errno.EMFILE, "Too many open files")

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        srv.call(lambda: setattr(listener, "sock", OutOfDescriptors()))
        waiting = connect(srv.address())  # queued: the accept hits EMFILE
        waiting.sendall(b"w")
        srv.call(lambda: None)  # one pass: the listener is backing off now
        assert srv.call(lambda: listener._backoff is not None)
        srv.call(lambda: setattr(listener, "sock", real))  # descriptors are back...
        holder.close()  # ...and this close frees one: accepting resumes at once
        assert waiting.recv(1) == b"w"  # long before the 60 s back-off
        waiting.close()
