"""The fixed response HTTP-lite serves in the HTTP benchmark (a route plugin).

Loaded by the benchmark's config through ``[reactor] plugins``, with
``bench/`` on PYTHONPATH. The same 13-byte body as ``asgi_app.py``.
"""

import reactorkit

HELLO = reactorkit.Response(body=b"Hello, World!", content_type="text/plain")


def hello(request: reactorkit.Request) -> reactorkit.Response:
    return HELLO


@reactorkit.hookimpl
def reactorkit_http_routes() -> list[reactorkit.Route]:
    return [reactorkit.Route(method="GET", path="/", function=hello)]
