"""Routes for the h11 path: exact paths in a dict, templated ones by regex,
prefixes (a mounted application's) last."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .access import Access
from .http import HTTPError, Request, Response, Streamed
from .latency import Recorder

__all__ = ["BoundRoute", "Handler", "Route", "Router", "method_not_allowed"]

Handler = Callable[[Request], Response | Streamed | Awaitable[Response | Streamed]]
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Route:
    """One method and path; ``name`` labels its latency (the path by default).

    ``scope`` is what a request needs when ``[auth]`` is enabled: an API key
    with that scope, or nothing for ``"open"``. It defaults to ``"read"``, so
    a route whose plugin forgot to declare it is closed, not open; writes
    should ask for ``"trade"``, destructive or operator actions (purge,
    reset) for ``"admin"``, which are also written to the audit log.

    ``prefix=True`` makes the route answer ``path`` and every path under it
    (``/api`` takes ``/api`` and ``/api/users/7``, not ``/apix``; ``/`` takes
    every path) that no other route answers: a mounted application. Its
    method may be ``"*"``, any method.
    """

    method: str
    path: str
    handler: Handler
    name: str | None = None
    scope: Access = "read"
    prefix: bool = False


class BoundRoute:
    """A route as the router dispatches it: its handler, scope and recorder, and
    whether the handler is a coroutine function, all looked up once at start-up."""

    __slots__ = ("handler", "is_async", "recorder", "route", "scope")

    def __init__(self, route: Route, recorder: Recorder) -> None:
        self.route = route
        self.handler = route.handler
        self.scope = route.scope
        # Decided once here, so dispatch never inspects a handler per request.
        self.is_async = inspect.iscoroutinefunction(route.handler)
        self.recorder = recorder


def _compile(template: str) -> re.Pattern[bytes]:
    """``/v1/orders/{order_id}`` as a regex: literal parts escaped, each
    ``{name}`` one path segment captured under that name."""
    parts = _PARAM.split(template)
    pattern = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)"
        for index, part in enumerate(parts)
    )
    return re.compile(pattern.encode("ascii") + b"$")


class Router:
    """The h11 path's routes: exact paths in a dict, templated ones
    (``/v1/orders/{order_id}``) as compiled patterns tried in order, then
    prefixes, the longest first, only for a path nothing else takes.

    ``add`` refuses a second route for one method and path; ``resolve`` gives
    the route, its parameters stored on the request, or raises the 404/405 to
    answer (405 with the ``Allow`` header listing the methods the path has).
    """

    def __init__(self) -> None:
        self._exact: dict[bytes, dict[bytes, BoundRoute]] = {}
        self._templated: list[tuple[re.Pattern[bytes], dict[bytes, BoundRoute]]] = []
        self._prefixes: list[tuple[bytes, dict[bytes, BoundRoute]]] = []
        self._by_template: dict[str, dict[bytes, BoundRoute]] = {}

    def add(self, route: Route, recorder: Recorder) -> None:
        method = route.method.upper().encode("ascii")
        key = route.path + "/*" if route.prefix else route.path
        methods = self._by_template.get(key)
        if methods is None:
            methods = self._by_template[key] = {}
            if route.prefix:
                self._prefixes.append((route.path.rstrip("/").encode("ascii"), methods))
                self._prefixes.sort(key=lambda entry: -len(entry[0]))
            elif _PARAM.search(route.path):
                self._templated.append((_compile(route.path), methods))
            else:
                self._exact[route.path.encode("ascii")] = methods
        if method in methods:
            raise ValueError(f"route {route.method} {route.path} is registered twice")
        methods[method] = BoundRoute(route, recorder)

    def has_route(self, method: bytes, path: bytes) -> bool:
        """Whether a route (not a snapshot) answers this method and path."""
        methods = self._exact.get(path)
        if methods is None:
            methods = next((m for p, m in self._templated if p.match(path)), None)
        return methods is not None and (
            method in methods or (method == b"HEAD" and b"GET" in methods)
        )

    def resolve(self, method: bytes, path: bytes, request: Request) -> BoundRoute:
        """The route for a request, its ``{name}`` segments stored on ``request``.

        Raises:
            HTTPError: 404 for no such path, 405 for a path without that method.
        """
        methods = self._exact.get(path)
        if methods is None:
            for pattern, candidate in self._templated:
                found = pattern.match(path)
                if found is not None:
                    request.params = {
                        k: v.decode("utf-8", "replace") for k, v in found.groupdict().items()
                    }
                    methods = candidate
                    break
            else:
                methods = self._prefixed(path)
                if methods is None:
                    raise HTTPError(404, "not_found", f"no route for {path.decode('latin-1')}")
        bound = methods.get(method)
        if bound is None and method == b"HEAD":
            bound = methods.get(b"GET")
        if bound is None:
            bound = methods.get(b"*")
            if bound is None:
                raise method_not_allowed(frozenset(methods))
        return bound

    def _prefixed(self, path: bytes) -> dict[bytes, BoundRoute] | None:
        """The methods of the longest prefix route that takes ``path``: the
        prefix itself or a path under it, a whole segment (``/api`` does not
        take ``/apix``)."""
        for prefix, methods in self._prefixes:
            size = len(prefix)
            if path.startswith(prefix) and (len(path) == size or path[size] == 0x2F):
                return methods
        return None


def method_not_allowed(methods: Iterable[bytes]) -> HTTPError:
    """A 405 with the ``Allow`` header RFC 9110 asks for; GET brings HEAD."""
    allowed = set(methods)
    if b"GET" in allowed:
        allowed.add(b"HEAD")
    listed = b", ".join(sorted(allowed))
    return HTTPError(
        405,
        "method_not_allowed",
        f"allowed: {listed.decode()}",
        ((b"allow", listed),),
        frozenset(allowed),
    )
