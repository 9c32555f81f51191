"""The route table of HTTP-lite: what ``reactorkit_http_routes()`` returns, by method and path.

One :class:`RouteTable` per listener, built once from every plugin's routes.
It answers one question, :meth:`RouteTable.find`: which route serves this
method and path, with which captures, or which methods the path does have
(a 405) or none (a 404). It also remembers which plugin gave each route
(:meth:`RouteTable.describe`, for the logs) and every method routed
(:attr:`RouteTable.methods`, for ``OPTIONS *``). It knows nothing of
sockets, parsing or files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from reactorkit.errors import PluginError
from reactorkit.web import Response, Route

if TYPE_CHECKING:
    from reactorkit.plugins import Contribution

__all__ = ["RouteTable", "not_routed"]

_ByMethod = dict[str, Route]


@attrs.define(eq=False)
class RouteTable:
    """Every route of one listener: exact paths in a dict, patterns in order.

    Attributes:
        exact: routes without captures, by path then method.
        patterns: routes with captures, in the order they came.
        methods: every method some route serves (HEAD with GET).
        sources: who contributed each route, by ``id(route)``.
    """

    exact: dict[str, _ByMethod] = attrs.field(factory=dict)
    patterns: list[tuple[re.Pattern[str], _ByMethod]] = attrs.field(factory=list)
    methods: set[str] = attrs.field(factory=set)
    sources: dict[int, str] = attrs.field(factory=dict)

    @classmethod
    def build(cls, contributions: Sequence[Contribution]) -> RouteTable:
        """Index the routes that plugins contributed.

        Raises:
            PluginError: a contribution is not a :class:`Route`, or two
                plugins route the same method and pattern (``/a/{x}`` and
                ``/a/{y}`` are the same pattern); the message names both.
        """
        table = cls()
        owners: dict[tuple[str, str], str] = {}
        shapes: dict[str, tuple[re.Pattern[str], _ByMethod]] = {}
        for contribution in contributions:
            route = contribution.item
            if not isinstance(route, Route):
                raise PluginError(
                    f"{contribution.source}: reactorkit_http_routes() must return Route "
                    f"objects, got {route!r}"
                )
            for method in route.method:
                key = (method, route.shape)
                if key in owners:
                    raise PluginError(
                        f"HTTP route {method} {route.path} is defined twice:\n"
                        f"  by {owners[key]}\n"
                        f"  and by {contribution.source}\n"
                        "uninstall one of them"
                    )
                owners[key] = contribution.source
                table.methods.add(method)
                table.sources[id(route)] = contribution.source
                if route.shape == route.path:
                    table.exact.setdefault(route.path, {})[method] = route
                else:
                    entry = shapes.get(route.shape)
                    if entry is None:
                        entry = shapes[route.shape] = (route.compile(), {})
                        table.patterns.append(entry)
                    entry[1][method] = route
        if "GET" in table.methods:
            table.methods.add("HEAD")
        return table

    def describe(self, route: Route) -> str:
        """``GET /users/{id} (user) from plugin 'x' (dist 1.0)``, for the logs."""
        name = route.name or getattr(route.function, "__name__", None) or repr(route.function)
        source = self.sources.get(id(route), "an unknown plugin")
        return f"{'/'.join(route.method)} {route.path} ({name}) from {source}"

    def match(self, path: str) -> tuple[_ByMethod | None, dict[str, str]]:
        """The routes of ``path`` by method (None if it has none), and the captures."""
        methods = self.exact.get(path)
        if methods is not None:
            return methods, {}
        for regex, by_method in self.patterns:
            found = regex.match(path)
            if found is not None:
                return by_method, found.groupdict()
        return None, {}

    def find(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """The route for ``method`` and ``path``.

        Returns:
            ``(route, captures, [])`` when routed; else ``(None, {}, allowed)``
            where ``allowed`` lists the path's methods (empty: no route at
            all). A GET route answers HEAD unless another route claims HEAD.
        """
        by_method, captures = self.match(path)
        if by_method is None:
            return None, {}, []
        route = by_method.get(method)
        if route is None and method == "HEAD":
            route = by_method.get("GET")
        if route is not None:
            return route, captures, []
        allowed = set(by_method)
        if "GET" in allowed:
            allowed.add("HEAD")
        return None, {}, sorted(allowed)


def not_routed(method: str, allowed: list[str]) -> Response:
    """The 404 (no route for the path) or 405 with ``Allow`` (none for the method)."""
    if not allowed:
        return Response(status=404, body="not found\n")
    allow = ", ".join(allowed)
    return Response(
        status=405,
        body=f"method {method} not allowed; allowed: {allow}\n",
        headers=[("Allow", allow)],
    )
