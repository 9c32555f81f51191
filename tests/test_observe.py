"""reactorkit.observe: histograms, per-route stats, the loop-lag sampler, limit closures."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

import reactorkit
from reactorkit.listener import ListenerStats
from reactorkit.observe import (
    LAG_INTERVAL,
    UNROUTED,
    Histogram,
    LoopLag,
    RequestStats,
    limit_closed,
)
from reactorkit.testing import FakeClock, FakeConnection, run_once


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    histogram = Histogram([0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    snap = histogram.snapshot()
    assert snap["buckets"] == [[0.1, 2], [1.0, 4]]
    assert snap["count"] == 5
    assert snap["sum"] == pytest.approx(8.65)


def route(path: str) -> reactorkit.Route:
    return reactorkit.Route(method="GET", path=path, function=lambda request: "")


def test_request_stats_key_by_route_pattern_so_clients_cannot_grow_them() -> None:
    clock = FakeClock(100.0)
    stats = RequestStats(clock)
    user = route("/users/{id}")
    for n in range(50):  # fifty different paths, one route
        request = reactorkit.Request(method="GET", path=f"/users/{n}", route=user)
        clock.advance(0.01)
        stats.record(request, 200, clock() - 0.01)
    for n in range(50):
        stats.record(reactorkit.Request(method="GET", path=f"/nope/{n}"), 404, clock())
    stats.record(None, 400, clock())  # a malformed request has none
    snap = stats.snapshot()
    assert sorted(snap) == [UNROUTED, "/users/{id}"]
    assert snap["/users/{id}"]["status"]["2xx"] == 50
    assert snap["/users/{id}"]["latency"]["count"] == 50
    assert snap["/users/{id}"]["latency"]["sum"] == pytest.approx(0.5)
    assert snap[UNROUTED]["status"] == {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 51, "5xx": 0}


def test_loop_lag_measures_how_late_its_timer_runs() -> None:
    clock = FakeClock()
    reactor = reactorkit.Reactor(clock=clock)
    try:
        lag = LoopLag(reactor)
        lag.start()
        clock.advance(LAG_INTERVAL + 0.25)  # the loop was busy 0.25 s past the due time
        run_once(reactor)
        assert lag.last == pytest.approx(0.25)
        assert lag.histogram.count == 1
        clock.advance(LAG_INTERVAL)  # on time
        run_once(reactor)
        assert lag.last == pytest.approx(0.0)
        assert lag.max == pytest.approx(0.25)
        assert reactor.timers_pending == 1
        lag.stop()
        assert reactor.timers_pending == 0
    finally:
        reactor.close()


def test_limit_closed_counts_on_the_listener_and_logs_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = SimpleNamespace(name="chat", stats=ListenerStats())
    connection = FakeConnection(
        reactorkit.Handler(), listener=listener, peername=("10.0.0.7", 5000)
    )
    connection.conn_id = 42  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG, logger="reactorkit.limits")
    limit_closed(connection, "flood")
    limit_closed(connection, "flood")
    limit_closed(connection, "idle", "no I/O for 5s")
    assert listener.stats.closed_by_limit == {"flood": 2, "idle": 1}
    record = caplog.records[-1]
    assert record.conn_id == 42  # type: ignore[attr-defined]
    assert record.listener == "chat"  # type: ignore[attr-defined]
    assert record.peer == "10.0.0.7:5000"  # type: ignore[attr-defined]
    assert "closed by limit idle (no I/O for 5s)" in record.getMessage()
    assert record.levelno == logging.DEBUG  # routine: every keep-alive client ends so
    assert caplog.records[0].levelno == logging.INFO


def test_limit_closed_without_a_listener_only_logs() -> None:
    connection = FakeConnection(reactorkit.Handler())  # a handler test's: no listener
    limit_closed(connection, "line_too_long")
    assert not connection.is_closing()  # the caller closes, not the counting
