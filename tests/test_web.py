"""The HTTP-lite contract objects: the server's fast Request against the attrs constructor."""

from __future__ import annotations

import attrs
import pytest

import reactorkit
from reactorkit.web import build_request


def test_build_request_sets_every_attribute_as_the_constructor_does() -> None:
    fields = [("Host", "x"), ("Accept", "*/*")]
    fast = build_request(
        "GET", "/a%20b", "q=1&q=2", fields, "x", "1.1", "https", ("127.0.0.1", 5), None
    )
    slow = reactorkit.Request(
        method="GET",
        path="/a b",
        raw_path="/a%20b",
        query={"q": ["1", "2"]},
        query_string="q=1&q=2",
        headers=reactorkit.Headers(fields),
        host="x",
        http_version="1.1",
        scheme="https",
        peer=("127.0.0.1", 5),
    )
    for field in attrs.fields(reactorkit.Request):
        a, b = getattr(fast, field.name), getattr(slow, field.name)
        if isinstance(a, reactorkit.Headers):
            assert a.items_raw() == b.items_raw(), field.name
        else:
            assert a == b, field.name
    assert fast.headers["accept"] == "*/*"
    fast.trailers.add("X", "1")  # each request has its own, mutable, empty trailers
    assert not build_request("GET", "/", "", [], "", "1.1", "http", None, None).trailers


def test_what_build_request_leaves_unset_reads_as_set() -> None:
    fast = build_request("GET", "/", "a=1", [], "x", "1.1", "http", None, None)
    assert "query={'a': ['1']}" in repr(fast)  # made on first read, then kept
    assert fast.query is fast.query
    assert attrs.evolve(fast, body=b"x").body == b"x"
    assert (fast.body, fast.route, fast.captures) == (b"", None, {})
    fast.body = b"set"
    assert fast.body == b"set"
    with pytest.raises(AttributeError, match="nothing"):
        fast.nothing  # noqa: B018  # an unknown name is still an AttributeError
