"""The h11 path's router: exact and templated paths, 404, 405 with Allow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _mounted(*prefixes: str) -> Router:
    router = _router()
    for prefix in prefixes:
        router.add(Route("*", prefix, _ok, prefix=True), Recorder(prefix))
    return router


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/api", "/api"),
        (b"/api/", "/api"),
        (b"/api/users/7", "/api"),
        (b"/api/v2", "/api/v2"),
        (b"/api/v2/x", "/api/v2"),
        (b"/apix", "/"),
        (b"/v1/orders/", "/"),
    ],
)
def test_a_prefix_route_takes_its_path_and_those_under_it_longest_first(
    path: bytes, expected: str
) -> None:
    assert _resolve(_mounted("/", "/api", "/api/v2"), b"PATCH", path)[0] == expected


def test_a_prefix_route_never_takes_what_another_route_answers() -> None:
    router = _mounted("/")
    assert _resolve(router, b"GET", b"/v1/orders/42")[0] == "/v1/orders/{order_id}"
    assert _resolve(router, b"GET", b"/v1/stats")[0] == "/v1/stats"
    # A path of its own with another method is still its 405, not the mount's.
    with pytest.raises(HTTPError) as caught:
        _resolve(router, b"POST", b"/v1/stats")
    assert caught.value.status == 405


def test_without_a_prefix_route_a_path_under_none_is_404() -> None:
    with pytest.raises(HTTPError) as caught:
        _resolve(_mounted("/api"), b"GET", b"/apix")
    assert caught.value.status == 404


def test_a_prefix_route_with_one_method_refuses_the_others() -> None:
    router = Router()
    router.add(Route("GET", "/files", _ok, prefix=True), Recorder("/files"))
    assert _resolve(router, b"HEAD", b"/files/a")[0] == "/files"
    with pytest.raises(HTTPError) as caught:
        _resolve(router, b"PUT", b"/files/a")
    assert caught.value.status == 405


_SEGMENT = st.text(alphabet="abx/.%-", min_size=0, max_size=6)


@given(prefix=st.lists(st.sampled_from(["a", "ab", "x.b"]), min_size=1, max_size=3), rest=_SEGMENT)
def test_a_prefix_route_takes_exactly_its_path_and_those_under_it(
    prefix: list[str], rest: str
) -> None:
    mount = "/" + "/".join(prefix)
    router = Router()
    router.add(Route("*", mount, _ok, prefix=True), Recorder(mount))
    path = (mount + rest).encode()
    under = path == mount.encode() or path.startswith(mount.encode() + b"/")
    try:
        _resolve(router, b"GET", path)
    except HTTPError as exc:
        assert exc.status == 404
        assert not under
    else:
        assert under
