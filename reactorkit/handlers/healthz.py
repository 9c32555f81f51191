"""healthz: ``GET /healthz`` for load balancers, as an HTTP-lite route plugin.

It answers ``200 ok`` while the server is serving and ``503 shutting down``
once a graceful shutdown has begun (the listener has stopped accepting), so
a load balancer takes the server out of rotation while connections drain.
When chat listeners in this process use a bus, one line per bus follows
(``chat bus NAME: up`` or ``down``); a bus that is down keeps the status 200,
since local chat still works.
"""

from __future__ import annotations

import reactorkit


def healthz(request: reactorkit.Request) -> reactorkit.Response:
    """200 while serving, 503 during graceful shutdown."""
    if request.listener is not None and request.listener.is_closed:
        return reactorkit.Response(
            status=503, body="shutting down\n", headers=[("Cache-Control", "no-store")]
        )
    body = "ok\n" + "".join(
        f"chat bus {name}: {'up' if up else 'down'}\n" for name, up in reactorkit.running_buses()
    )
    return reactorkit.Response(status=200, body=body, headers=[("Cache-Control", "no-store")])


@reactorkit.hookimpl
def reactorkit_http_routes() -> list[reactorkit.Route]:
    return [reactorkit.Route(method="GET", path="/healthz", function=healthz, name="healthz")]
