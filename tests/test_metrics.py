"""reactorkit.metrics: snapshots to the Prometheus text format and OpenMetrics."""

from __future__ import annotations

from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from reactorkit.metrics import exposition
from reactorkit.observe import LIMITS


def snapshot(worker: int, pid: int, accepted: int) -> dict[str, Any]:
    return {
        "pid": pid,
        "worker": worker,
        "time": 0.0,
        "uptime": 1.0,
        "loop": {
            "lag_last": 0.001,
            "lag_max": 0.002,
            "lag": {"buckets": [[0.001, 1], [0.01, 2]], "sum": 0.003, "count": 2},
            "timers": 3,
            "threads": 8,
            "threads_busy": 1,
        },
        "process": {"rss_bytes": 1000, "open_fds": 9, "cpu_seconds": 0.5},
        "listeners": [
            {
                "name": "web",
                "handler": "http-lite",
                "plugin": "plugin 'http-lite'",
                "open": 1,
                "accepted": accepted,
                "refused": 2,
                "tls_failures": 0,
                "proxy_failures": 0,
                "accept_paused": 0,
                "bytes_received": 10,
                "bytes_sent": 20,
                "reads_paused": 0,
                "errors": 0,
                "closed_by_limit": dict.fromkeys(LIMITS, 0),
                "routes": {
                    "/a/{b}": {
                        "status": {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 1, "5xx": 0},
                        "latency": {"buckets": [[0.01, 3], [0.1, 5]], "sum": 0.2, "count": 5},
                    }
                },
            }
        ],
    }


def test_text_format_labels_every_worker() -> None:
    body, content_type = exposition([snapshot(0, 10, 3), snapshot(1, 11, 4)])
    assert content_type.startswith("text/plain")
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "reactorkit_connections_accepted_total":
                found[(sample.labels["worker"], sample.labels["pid"])] = sample.value
            if sample.name == "reactorkit_http_request_duration_seconds_bucket":
                assert sample.labels["route"] == "/a/{b}"
    assert found == {("0", "10"): 3, ("1", "11"): 4}


def test_openmetrics_when_accepted() -> None:
    body, content_type = exposition(
        [snapshot(0, 10, 3)], "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    assert content_type.startswith("application/openmetrics-text")
    families = {family.name: family for family in om_families(body.decode())}
    assert families["reactorkit_http_requests"].type == "counter"
    assert families["reactorkit_loop_lag_seconds"].type == "histogram"
