"""A bare ASGI app for uvicorn serving the HTTP benchmark's fixed response."""

from typing import Any

HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
