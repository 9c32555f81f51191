"""Observation without a cost on the hot path: a pull model.

Nothing here runs per read or per write. What a server counts lives where
it happens, as plain integers (:class:`~reactorkit.listener.ListenerStats`,
each connection's byte counts); an :class:`Observatory` reads them only when
asked (a ``/metrics`` scrape, ``reactorkit status``) and turns them into one
JSON-able *snapshot* of this process. Three things are measured actively,
each as cheaply as possible:

* the loop's lag: a timer every :data:`LAG_INTERVAL` seconds notes how late
  it runs (the time from its due moment, through the select and the I/O
  callbacks of that pass, to its callback), into a histogram;
* per http-lite route, requests by status class and a latency histogram
  (:class:`RequestStats`, fed by http-lite where it writes its access log);
* connections closed by a limit (:func:`limit_closed`, called by the handler
  or listener that enforces it; it also logs the closure).

The observatory exists only when the config asks for it (a listener with
``metrics = true`` or a ``[reactor] control_socket``); without one, the
per-request recording is skipped altogether.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, final

from reactorkit.chatbus import bus_snapshots

if TYPE_CHECKING:
    from reactorkit.listener import Listener
    from reactorkit.reactor import Reactor, TimerHandle
    from reactorkit.web import Request

__all__ = [
    "LAG_BUCKETS",
    "LAG_INTERVAL",
    "LATENCY_BUCKETS",
    "LIMITS",
    "Histogram",
    "LoopLag",
    "Observatory",
    "RequestStats",
    "access_fields",
    "connection_fields",
    "limit_closed",
    "process_stats",
    "request_stats",
]

log = logging.getLogger("reactorkit.limits")

#: The limits whose closures are counted (label ``limit``).
LIMITS = (
    "idle",
    "line_too_long",
    "line_timeout",
    "flood",
    "slow_consumer",
    "header_timeout",
    "body_timeout",
)
#: Seconds between two loop-lag samples.
LAG_INTERVAL = 0.5
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The ``route`` label of requests no route matched (404, 405, static files, 400s).
UNROUTED = "(unrouted)"

_OBSERVATORIES: weakref.WeakKeyDictionary[Reactor, Observatory] = weakref.WeakKeyDictionary()


def connection_fields(connection: Any) -> dict[str, Any]:
    """The ``extra`` of every log line about ``connection``: conn_id, listener, peer."""
    from reactorkit.connection import format_peer  # connection -> handler -> this module

    listener = getattr(connection, "listener", None)
    return {
        "conn_id": getattr(connection, "conn_id", None),
        "listener": getattr(listener, "name", None),
        "peer": format_peer(getattr(connection, "peername", None)),
    }


def access_fields(
    connection: Any, request: Request | None, status: int, size: int, elapsed_ms: float
) -> dict[str, Any]:
    """The ``extra`` of an http-lite access log line: the connection's fields and the request's."""
    fields = connection_fields(connection)
    fields["method"] = request.method if request is not None else None
    fields["path"] = request.raw_path if request is not None else None
    fields["query"] = request.query_string if request is not None else ""
    fields["status"] = status
    fields["bytes"] = size
    fields["duration_ms"] = round(elapsed_ms, 3)
    fields["scheme"] = "https" if getattr(connection, "is_tls", False) else "http"
    return fields


def limit_closed(connection: Any, limit: str, detail: str = "") -> None:
    """Count and log that ``connection`` is being closed by ``limit`` (one of :data:`LIMITS`).

    The caller closes it; this only counts (``listener.stats.closed_by_limit``)
    and writes one line carrying the connection's fields: at info, except an
    idle close, which is routine (every keep-alive client ends so) and is
    logged at debug, as nginx keeps its keep-alive timeouts out of the log.
    """
    stats = getattr(getattr(connection, "listener", None), "stats", None)
    if stats is not None:
        counts = stats.closed_by_limit
        counts[limit] = counts.get(limit, 0) + 1
    level = logging.DEBUG if limit == "idle" else logging.INFO
    if log.isEnabledFor(level):
        fields = connection_fields(connection)
        log.log(
            level,
            "listener %r, peer %s: closed by limit %s%s",
            fields["listener"],
            fields["peer"],
            limit,
            f" ({detail})" if detail else "",
            extra=fields,
        )


@final
class Histogram:
    """Counts of observations per bucket (``le`` upper bounds), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [[le, cumulative count], ...], "sum": s, "count": n}``."""
        cumulative, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            cumulative.append([bound, running])
        return {"buckets": cumulative, "sum": self.sum, "count": self.count}


@final
class RequestStats:
    """Per-route request counts by status class and latency, for one http-lite listener.

    Keyed by the route's path pattern (``/users/{id}``), never by the
    request's path, so a client cannot grow it: its size is the number of
    routes plus one (:data:`UNROUTED`).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.routes: dict[str, tuple[list[int], Histogram]] = {}

    def record(self, request: Request | None, status: int, started: float) -> None:
        """One response: ``started`` is the reactor time the request began."""
        route = getattr(request, "route", None) if request is not None else None
        key = route.path if route is not None else UNROUTED
        entry = self.routes.get(key)
        if entry is None:
            entry = self.routes[key] = ([0, 0, 0, 0, 0], Histogram(LATENCY_BUCKETS))
        index = status // 100 - 1
        entry[0][index if 0 <= index < 5 else 4] += 1
        entry[1].observe(max(0.0, self._clock() - started))

    def snapshot(self) -> dict[str, Any]:
        """``{route: {"status": {"2xx": n, ...}, "latency": histogram}}``."""
        return {
            route: {
                "status": {f"{i + 1}xx": n for i, n in enumerate(classes)},
                "latency": histogram.snapshot(),
            }
            for route, (classes, histogram) in sorted(self.routes.items())
        }


@final
class LoopLag:
    """Samples how late the reactor runs a timer, every :data:`LAG_INTERVAL` seconds."""

    def __init__(self, reactor: Reactor, interval: float = LAG_INTERVAL) -> None:
        self.reactor = reactor
        self.interval = interval
        self.histogram = Histogram(LAG_BUCKETS)
        self.last = 0.0
        self.max = 0.0
        self._due = 0.0
        self._timer: TimerHandle | None = None

    def start(self) -> None:
        """Begin sampling (reactor thread)."""
        self._due = self.reactor.clock() + self.interval
        self._timer = self.reactor.call_at(self._due, self._sample)

    def stop(self) -> None:
        """Stop sampling."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sample(self) -> None:
        lag = max(0.0, self.reactor.clock() - self._due)
        self.last = lag
        self.max = max(self.max, lag)
        self.histogram.observe(lag)
        self.start()


def process_stats() -> dict[str, Any]:
    """This process's resident memory, open descriptors and CPU seconds (Linux /proc)."""
    times = os.times()
    out: dict[str, Any] = {"cpu_seconds": times.user + times.system}
    try:
        with open("/proc/self/statm", "rb") as f:
            out["rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        out["rss_bytes"] = None
    try:
        out["open_fds"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        out["open_fds"] = None
    return out


def request_stats(listener: Listener) -> RequestStats | None:
    """The :class:`RequestStats` of ``listener`` when its server observes, else None.

    http-lite calls it once per listener; several listeners of one name (a
    worker serving two sockets) share one.
    """
    observatory = _OBSERVATORIES.get(listener.reactor)
    if observatory is None:
        return None
    stats = observatory.requests.get(listener.name)
    if stats is None:
        stats = observatory.requests[listener.name] = RequestStats(listener.reactor.clock)
    return stats


@final
class Observatory:
    """What one process knows about itself, read on demand.

    Args:
        reactor: the server's reactor.
        listeners: returns the server's listeners (read at snapshot time).
        worker: the worker index (0 without workers).
    """

    def __init__(
        self, reactor: Reactor, listeners: Callable[[], Iterable[Listener]], *, worker: int = 0
    ) -> None:
        self.reactor = reactor
        self.worker = worker
        self._listeners = listeners
        self.requests: dict[str, RequestStats] = {}
        self.lag = LoopLag(reactor)
        self.started = time.time()
        #: Other processes of this service to ask too (workers' peer sockets).
        self.peer_dir: str | None = None
        #: This process's own socket in ``peer_dir`` (not asked: it is us).
        self.peer_path: str | None = None
        self.closers: list[Callable[[], object]] = []
        _OBSERVATORIES[reactor] = self

    @classmethod
    def of(cls, reactor: Reactor) -> Observatory | None:
        """The observatory of ``reactor``'s server, if it has one."""
        return _OBSERVATORIES.get(reactor)

    def start(self) -> None:
        """Start sampling the loop lag."""
        self.lag.start()

    def serve_control(self, path: str) -> None:
        """Answer ``reactorkit status`` on the UNIX socket ``path`` (mode 0600)."""
        from reactorkit.control import serve_control

        self.closers.append(serve_control(self.reactor, path, self))

    def serve_peers(self, directory: str) -> None:
        """As worker ``self.worker``: answer the other workers from ``directory``."""
        from reactorkit.control import peer_path, serve_control

        self.peer_dir = directory
        self.peer_path = peer_path(directory, self.worker)
        self.closers.append(serve_control(self.reactor, self.peer_path, self))

    def close(self) -> None:
        """Stop sampling; close the control and peer sockets (removing their files)."""
        self.lag.stop()
        for close in self.closers:
            close()
        self.closers.clear()
        if _OBSERVATORIES.get(self.reactor) is self:
            del _OBSERVATORIES[self.reactor]

    # -- reading -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This process's numbers as one JSON-able dict. Reactor thread only."""
        reactor = self.reactor
        by_name: dict[str, dict[str, Any]] = {}
        for listener in self._listeners():
            entry = by_name.get(listener.name)
            if entry is None:
                entry = by_name[listener.name] = _listener_entry(listener)
                requests = self.requests.get(listener.name)
                if requests is not None:
                    entry["routes"] = requests.snapshot()
            _add_listener(entry, listener)
        lag = self.lag
        return {
            "pid": os.getpid(),
            "worker": self.worker,
            "time": time.time(),
            "uptime": time.time() - self.started,
            "loop": {
                "lag_last": lag.last,
                "lag_max": lag.max,
                "lag": lag.histogram.snapshot(),
                "timers": reactor.timers_pending,
                "threads": reactor.threads,
                "threads_busy": reactor.threads_busy,
            },
            "process": process_stats(),
            "listeners": list(by_name.values()),
            "buses": bus_snapshots(),
        }

    def snapshot_threadsafe(self, timeout: float) -> dict[str, Any] | None:
        """:meth:`snapshot`, asked from another thread; None if the loop took too long."""
        done = threading.Event()
        box: list[dict[str, Any]] = []

        def take() -> None:
            box.append(self.snapshot())
            done.set()

        self.reactor.call_soon_threadsafe(take)
        done.wait(timeout)
        return box[0] if box else None

    def has_peers(self) -> bool:
        """True for a worker: ``all`` asks the other workers too."""
        return self.peer_dir is not None

    def gather(self, timeout: float) -> list[dict[str, Any]]:
        """Every process's snapshot: this one and each peer's. Never on the reactor thread."""
        from reactorkit.control import query_peers

        own = self.snapshot_threadsafe(timeout)
        snapshots = [own] if own is not None else []
        if self.peer_dir is not None:
            snapshots.extend(query_peers(self.peer_dir, exclude=self.peer_path, timeout=timeout))
        return sorted(snapshots, key=lambda s: (s["worker"], s["pid"]))


def _listener_entry(listener: Listener) -> dict[str, Any]:
    return {
        "name": listener.name,
        "handler": listener.handler_type.name,
        "plugin": listener.plugin,
        "open": 0,
        "accepted": 0,
        "refused": 0,
        "tls_failures": 0,
        "proxy_failures": 0,
        "accept_paused": 0,
        "bytes_received": 0,
        "bytes_sent": 0,
        "reads_paused": 0,
        "errors": 0,
        "closed_by_limit": dict.fromkeys(LIMITS, 0),
    }


def _add_listener(entry: dict[str, Any], listener: Listener) -> None:
    stats = listener.stats
    connections = list(listener.connections)
    entry["open"] += len(connections)
    entry["accepted"] += stats.total_connections
    entry["refused"] += stats.refused
    entry["tls_failures"] += stats.tls_failures
    entry["proxy_failures"] += stats.proxy_failures
    entry["accept_paused"] += stats.accept_paused
    entry["bytes_received"] += stats.closed_bytes_received + sum(
        c.bytes_received for c in connections
    )
    entry["bytes_sent"] += stats.closed_bytes_sent + sum(c.bytes_sent for c in connections)
    entry["reads_paused"] += stats.reads_paused + sum(c.reads_paused for c in connections)
    entry["errors"] += stats.errors
    limits = entry["closed_by_limit"]
    for limit, count in stats.closed_by_limit.items():
        limits[limit] = limits.get(limit, 0) + count
