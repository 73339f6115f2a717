"""The h11 path's router: exact and templated paths, 404, 405 with Allow."""

from __future__ import annotations

import pytest

from sprintd.http import HTTPError, Request, Response
from sprintd.latency import Recorder
from sprintd.routing import Route, Router


def _ok(request: Request) -> Response:
    return Response(200, b"")


def _router() -> Router:
    router = Router()
    for method, path in [
        ("GET", "/v1/stats"),
        ("GET", "/v1/orders/{order_id}"),
        ("DELETE", "/v1/orders/{order_id}"),
        ("GET", "/a.b/{x}/c{y}"),
    ]:
        router.add(Route(method, path, _ok), Recorder(path))
    return router


def _resolve(router: Router, method: bytes, path: bytes) -> tuple[str, dict[str, str]]:
    request = Request(method, path, b"", [])
    bound = router.resolve(method, path, request)
    return bound.route.path, request.params


def test_templated_paths_capture_their_segments() -> None:
    router = _router()
    assert _resolve(router, b"GET", b"/v1/orders/42") == (
        "/v1/orders/{order_id}",
        {"order_id": "42"},
    )
    assert _resolve(router, b"DELETE", b"/v1/orders/7") == (
        "/v1/orders/{order_id}",
        {"order_id": "7"},
    )
    assert _resolve(router, b"GET", b"/a.b/1/c2") == ("/a.b/{x}/c{y}", {"x": "1", "y": "2"})
    assert _resolve(router, b"HEAD", b"/v1/stats")[0] == "/v1/stats"


@pytest.mark.parametrize("path", [b"/v1/orders/", b"/v1/orders/1/2", b"/aXb/1/c2", b"/nope"])
def test_what_no_route_matches_is_404(path: bytes) -> None:
    with pytest.raises(HTTPError) as caught:
        _resolve(_router(), b"GET", path)
    assert caught.value.status == 404


def test_a_wrong_method_is_405_with_allow() -> None:
    with pytest.raises(HTTPError) as caught:
        _resolve(_router(), b"POST", b"/v1/orders/1")
    assert caught.value.status == 405
    assert dict(caught.value.headers)[b"allow"] == b"DELETE, GET, HEAD"


def test_has_route_tells_routes_from_the_rest() -> None:
    router = _router()
    assert router.has_route(b"GET", b"/v1/orders/3")
    assert router.has_route(b"HEAD", b"/v1/orders/3")
    assert not router.has_route(b"POST", b"/v1/orders/3")
    assert not router.has_route(b"GET", b"/v1/nothing")
