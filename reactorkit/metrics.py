"""metrics: ``GET /metrics`` in the Prometheus format, as an HTTP-lite route plugin.

It answers on each http-lite listener whose options set ``metrics = true``
(off by default: metrics reveal internals); elsewhere the route is a plain
404. The body is made by ``prometheus_client``'s own exposition code, in the
text format or, when the scraper's ``Accept`` asks for it, OpenMetrics.

The numbers are read at scrape time (:mod:`reactorkit.observe`), of every
process of the service: with workers, the worker that gets the scrape asks
the others over their peer sockets (:mod:`reactorkit.control`), and every
series carries ``worker`` and ``pid`` labels. That wait runs on the thread
pool (the route is ``blocking``), never on the loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

import reactorkit
from reactorkit.observe import Observatory

__all__ = ["SnapshotCollector", "exposition", "metrics"]

#: Seconds a scrape waits for each process's numbers.
SCRAPE_TIMEOUT = 2.0

_LISTENER_LABELS = ["worker", "pid", "listener", "handler"]
_PROCESS_LABELS = ["worker", "pid"]


class SnapshotCollector:
    """A ``prometheus_client`` collector over process snapshots (see :mod:`reactorkit.observe`).

    Args:
        snapshots: one per process, each with its ``worker`` and ``pid``.
    """

    def __init__(self, snapshots: Sequence[dict[str, Any]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        """Every metric family, one sample per process (and listener, route)."""
        yield from self._listener_metrics()
        yield from self._request_metrics()
        yield from self._loop_metrics()

    def _listener_metrics(self) -> Iterator[Metric]:
        labels = _LISTENER_LABELS
        open_ = GaugeMetricFamily(
            "reactorkit_connections_open", "Connections open now.", labels=labels
        )
        accepted = CounterMetricFamily(
            "reactorkit_connections_accepted", "Connections accepted.", labels=labels
        )
        refused = CounterMetricFamily(
            "reactorkit_connections_refused",
            "Connections closed at accept: acl (allow/deny, proxy_from), "
            "tls (failed handshake), proxy (missing or bad PROXY header).",
            labels=[*labels, "reason"],
        )
        paused_accept = CounterMetricFamily(
            "reactorkit_accept_paused",
            "Times accepting paused at max_connections (new clients wait in the backlog).",
            labels=labels,
        )
        received = CounterMetricFamily(
            "reactorkit_received_bytes", "Bytes read from clients.", labels=labels
        )
        sent = CounterMetricFamily(
            "reactorkit_sent_bytes", "Bytes written to clients.", labels=labels
        )
        reads_paused = CounterMetricFamily(
            "reactorkit_reads_paused", "Times reading paused for flow control.", labels=labels
        )
        closed = CounterMetricFamily(
            "reactorkit_connections_closed_by_limit",
            "Connections closed by a limit (idle, line_too_long, flood, slow_consumer...).",
            labels=[*labels, "limit"],
        )
        errors = CounterMetricFamily(
            "reactorkit_handler_errors",
            "Handler or route exceptions (each closed its connection or answered 500).",
            labels=[*labels, "plugin"],
        )
        for snapshot, listener in self._listeners():
            values = _listener_labels(snapshot, listener)
            open_.add_metric(values, listener["open"])
            accepted.add_metric(values, listener["accepted"])
            refused.add_metric([*values, "acl"], listener["refused"])
            refused.add_metric([*values, "tls"], listener["tls_failures"])
            refused.add_metric([*values, "proxy"], listener["proxy_failures"])
            paused_accept.add_metric(values, listener["accept_paused"])
            received.add_metric(values, listener["bytes_received"])
            sent.add_metric(values, listener["bytes_sent"])
            reads_paused.add_metric(values, listener["reads_paused"])
            for limit, count in sorted(listener["closed_by_limit"].items()):
                closed.add_metric([*values, limit], count)
            errors.add_metric([*values, listener["plugin"]], listener["errors"])
        yield from (
            open_,
            accepted,
            refused,
            paused_accept,
            received,
            sent,
            reads_paused,
            closed,
            errors,
        )

    def _request_metrics(self) -> Iterator[Metric]:
        labels = [*_LISTENER_LABELS, "route"]
        requests = CounterMetricFamily(
            "reactorkit_http_requests",
            "http-lite responses by route pattern and status class.",
            labels=[*labels, "status"],
        )
        latency = HistogramMetricFamily(
            "reactorkit_http_request_duration_seconds",
            "http-lite time from a request's first byte to its response (headers) being ready.",
            labels=labels,
        )
        for snapshot, listener in self._listeners():
            values = _listener_labels(snapshot, listener)
            for route, entry in listener.get("routes", {}).items():
                for status, count in entry["status"].items():
                    requests.add_metric([*values, route, status], count)
                latency.add_metric([*values, route], *_histogram(entry["latency"]))
        yield requests
        yield latency

    def _loop_metrics(self) -> Iterator[Metric]:
        labels = _PROCESS_LABELS
        lag = HistogramMetricFamily(
            "reactorkit_loop_lag_seconds",
            "How late the loop ran a timer (sampled every 0.5 s): time from ready to callback.",
            labels=labels,
        )
        timers = GaugeMetricFamily("reactorkit_timers", "Timers scheduled.", labels=labels)
        queue = GaugeMetricFamily(
            "reactorkit_thread_pool_queue",
            "run_in_thread work submitted and not finished (queued or running).",
            labels=labels,
        )
        rss = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.", labels=labels
        )
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors.", labels=labels)
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "User and system CPU time spent, in seconds.", labels=labels
        )
        for snapshot in self.snapshots:
            values = [str(snapshot["worker"]), str(snapshot["pid"])]
            loop = snapshot["loop"]
            lag.add_metric(values, *_histogram(loop["lag"]))
            timers.add_metric(values, loop["timers"])
            queue.add_metric(values, loop["threads_busy"])
            process = snapshot["process"]
            if process.get("rss_bytes") is not None:
                rss.add_metric(values, process["rss_bytes"])
            if process.get("open_fds") is not None:
                fds.add_metric(values, process["open_fds"])
            cpu.add_metric(values, process["cpu_seconds"])
        yield from (lag, timers, queue, rss, fds, cpu)

    def _listeners(self) -> Iterable[tuple[dict[str, Any], dict[str, Any]]]:
        for snapshot in self.snapshots:
            for listener in snapshot["listeners"]:
                yield snapshot, listener


def _listener_labels(snapshot: dict[str, Any], listener: dict[str, Any]) -> list[str]:
    return [str(snapshot["worker"]), str(snapshot["pid"]), listener["name"], listener["handler"]]


def _histogram(value: dict[str, Any]) -> tuple[list[tuple[str, float]], float]:
    buckets = [(_le(bound), count) for bound, count in value["buckets"]]
    buckets.append(("+Inf", value["count"]))
    return buckets, value["sum"]


def _le(bound: float) -> str:
    return repr(float(bound))


def exposition(snapshots: Sequence[dict[str, Any]], accept: str = "") -> tuple[bytes, str]:
    """The body and Content-Type for ``snapshots``, in the format ``accept`` asks for.

    An ``Accept`` whose version prometheus_client cannot compare (it raises
    TypeError on ``version=garbage``) or would echo back as a non-ASCII
    header (``int()`` reads any Unicode digit) gets the text format.
    """
    try:
        encoder, content_type = choose_encoder(accept)
    except (TypeError, ValueError):
        encoder, content_type = choose_encoder("")
    if not (content_type.isascii() and content_type.isprintable()):
        encoder, content_type = choose_encoder("")
    return encoder(SnapshotCollector(snapshots)), content_type  # type: ignore[arg-type]


def metrics(request: reactorkit.Request) -> reactorkit.Response:
    """``GET /metrics``: every process's numbers; 404 unless the listener has ``metrics = true``."""
    listener = request.listener
    if listener is None or not getattr(listener.options, "metrics", False):
        raise reactorkit.HttpError(404, "not found")
    observatory = Observatory.of(listener.reactor)
    if observatory is None:  # pragma: no cover - the server makes one for metrics = true
        raise reactorkit.HttpError(503, "metrics are not collected in this process")
    snapshots = observatory.gather(SCRAPE_TIMEOUT)
    body, content_type = exposition(snapshots, request.headers.get("accept", ""))
    return reactorkit.Response(
        status=200, body=body, headers=[("Cache-Control", "no-store")], content_type=content_type
    )


@reactorkit.hookimpl
def reactorkit_http_routes() -> list[reactorkit.Route]:
    return [
        reactorkit.Route(
            method="GET", path="/metrics", function=metrics, name="metrics", blocking=True
        )
    ]
