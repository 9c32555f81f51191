"""reactorkit.testing: FakeClock, FakeConnection, run_until, serve() and the pytest plugin."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import reactorkit
from reactorkit.testing import FakeClock, FakeConnection, RunningServer, run_until, serve
from tests.helpers import connect, recv_until_closed

pytest_plugins = ["pytester"]


class Recorder(reactorkit.Handler):
    """Echoes data and records every callback it gets."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def connection_made(self, connection: reactorkit.Connection) -> None:
        super().connection_made(connection)
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append("data")
        self.connection.write(data)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock(start=5.0)
    assert clock() == 5.0
    clock.advance(2.5)
    assert clock() == 7.5


def test_fake_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="only moves forward"):
        FakeClock().advance(-1)


def test_feed_reaches_the_handler_and_take_returns_its_writes_once() -> None:
    handler = Recorder()
    conn = FakeConnection(handler)
    conn.feed(b"hello")
    assert conn.take() == b"hello"
    assert conn.take() == b""
    assert handler.events == ["made", "data"]
    assert conn.bytes_received == conn.bytes_sent == 5


def test_value_keeps_what_was_written() -> None:
    conn = FakeConnection(Recorder())
    conn.feed(b"a")
    conn.feed(b"b")
    assert conn.value() == b"ab"
    assert conn.value() == b"ab"


def test_eof_closes_unless_the_handler_keeps_it_open() -> None:
    handler = Recorder()
    conn = FakeConnection(handler)
    conn.feed_eof()
    assert conn.eof
    assert conn.closed
    assert not conn.aborted
    assert handler.events == ["made", "eof"]  # as on a socket: lost on the next pass
    conn.settle()
    assert handler.events == ["made", "eof", "lost"]
    assert conn.lost == [None]


def test_abort_drops_buffered_writes() -> None:
    conn = FakeConnection(Recorder())
    conn.block_writes()
    conn.feed(b"pending")
    conn.abort()
    assert conn.aborted
    assert conn.closed
    assert conn.get_write_buffer_size() == 0
    assert conn.value() == b""


def test_close_waits_for_buffered_writes_to_drain() -> None:
    handler = Recorder()
    conn = FakeConnection(handler)
    conn.block_writes()
    conn.feed(b"tail")
    conn.close()
    assert conn.is_closing()
    assert not conn.closed
    conn.drain()
    assert conn.closed
    assert conn.take() == b"tail"


def test_water_marks_pause_and_resume_writing() -> None:
    handler = Recorder()
    conn = FakeConnection(handler)
    conn.set_write_buffer_limits(high=4)
    conn.block_writes()
    conn.feed(b"12345")
    assert handler.events[-1] == "pause"
    conn.drain()
    assert handler.events[-1] == "resume"
    assert conn.take() == b"12345"


def test_feeding_while_reading_is_paused_is_a_test_bug() -> None:
    conn = FakeConnection(Recorder())
    conn.pause_reading()
    with pytest.raises(AssertionError, match="paused reading"):
        conn.feed(b"x")


def test_advance_fires_due_timers_without_sleeping() -> None:
    conn = FakeConnection(Recorder())
    fired: list[float] = []
    conn.reactor.call_later(10, lambda: fired.append(conn.reactor.time))
    conn.advance(9.9)
    assert fired == []
    conn.advance(0.1)
    assert len(fired) == 1


def test_advance_needs_the_connections_own_clock() -> None:
    own = FakeConnection(Recorder())
    shared = FakeConnection(Recorder(), reactor=own.reactor)
    with pytest.raises(RuntimeError, match="FakeClock"):
        shared.advance(1)


def test_run_until_waits_for_a_worker_thread_result() -> None:
    conn = FakeConnection(Recorder())
    future = conn.reactor.run_in_thread(sum, [1, 2, 3])
    done: list[int] = []
    future.add_done_callback(lambda fut: done.append(fut.result()))
    run_until(conn.reactor, lambda: bool(done))
    assert done == [6]


def test_run_until_times_out_on_a_predicate_that_never_holds() -> None:
    conn = FakeConnection(Recorder())
    with pytest.raises(TimeoutError):
        run_until(conn.reactor, lambda: False, timeout=0.05)


def test_serve_runs_a_handler_type_object_on_an_ephemeral_port() -> None:
    shout = reactorkit.HandlerType(name="test-shout", handler=lambda _state: Recorder())
    with serve(handler=shout) as server:
        assert server.port > 0
        with connect(server.address()) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
            sock.shutdown(1)
            assert recv_until_closed(sock) == b""


def test_running_server_call_runs_on_the_reactor_thread() -> None:
    with serve(handler="echo") as server:
        name = server.call(lambda: threading.current_thread().name)
        assert name == "reactorkit-test-server"
        (listener,) = server.listeners.values()
        assert server.call(lambda: listener.open_connections) == 0


def test_serve_stops_the_server_on_exit() -> None:
    with serve(handler="echo") as server:
        address = server.address()
    with pytest.raises(OSError):
        connect(address, timeout=1).close()


def test_serve_needs_a_config_or_a_handler() -> None:
    with pytest.raises(TypeError, match="config or a handler"), serve():
        pass


def test_the_reactorkit_server_fixture_serves_and_stops(
    reactorkit_server: Callable[..., RunningServer],
) -> None:
    server = reactorkit_server(handler="echo")
    with connect(server.address()) as sock:
        sock.sendall(b"fixture")
        assert sock.recv(7) == b"fixture"


def test_the_plugin_fixtures_work_in_a_third_party_test_suite(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import socket

        import reactorkit

        class Echo(reactorkit.Handler):
            def data_received(self, data):
                self.connection.write(data)

        def test_fake(fake_connection):
            conn = fake_connection(Echo())
            conn.feed(b"hi")
            assert conn.take() == b"hi"

        def test_clock(fake_clock):
            fake_clock.advance(3)
            assert fake_clock() == 1003.0

        def test_server(reactorkit_server):
            server = reactorkit_server(handler="echo")
            with socket.create_connection(server.address(), timeout=5) as sock:
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=3)
