"""One atheris target per parser: feed it bytes, accept only its documented errors.

Each target returns normally for any input its parser answers (a value, or
the error value it documents); anything else escapes and atheris reports a
crash with the input that caused it. The hypothesis suites in
``tests/test_fuzz_*.py`` check the same contracts on every ``make test``;
these run for as long as you let them, guided by coverage.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

from sprintd.app import Route, SnapshotSpec
from sprintd.framing import FrameDecoder, FrameError, PayloadError, decode_payload
from sprintd.http import JSON, MSGPACK, HTTPError, Request
from sprintd.journal import JournalError, inspect, read_records
from sprintd.journal_format import segment_name
from sprintd.server.fastpath import guarded, match
from sprintd.settings import ConfigError, load_settings
from sprintd.testing import StaticPlugin, echo, exchange, make_app, make_server

__all__ = ["TARGETS"]

_SCRATCH = Path(tempfile.mkdtemp(prefix="sprintd-fuzz-"))
# What there is to aim at: snapshots of every status, type and scope, and
# routes on both methods; served as they are (h11path) and behind a key
# (the guarded matcher).
KEY = "fuzz-key-0123456789ab"
PLUGIN = StaticPlugin(
    [
        SnapshotSpec("/snap", b'{"price":"64250.50"}'),
        SnapshotSpec("/down", b'{"status":"fail"}', status=503),
        SnapshotSpec("/a/b", b"text", content_type=b"text/plain"),
        SnapshotSpec("/open", b"{}", scope="open"),
    ],
    [Route("POST", "/echo", echo), Route("GET", "/dyn", echo)],
)
SERVER = make_server(make_app([PLUGIN]))
KEYED = make_app(
    [PLUGIN],
    {
        "SPRINTD_AUTH__ENABLED": "true",
        "SPRINTD_AUTH__KEYS__F__KEY": KEY,
        # Never the limit: a refusal for speed would hide the matcher's answer.
        "SPRINTD_AUTH__LIMITS__FREE__BURST": "1000000000",
    },
)
assert KEYED.guard is not None
LINES = KEYED.snapshots.lines
GUARDED = guarded(KEYED.guard)


def fastpath(data: bytes) -> None:
    for matcher in (match, GUARDED):
        found = matcher(LINES, data, 0, 16 * 1024)
        if found is not None and not data[: found[1]].endswith(b"\r\n\r\n"):
            raise AssertionError("a head that does not end in CRLF CRLF")


def h11path(data: bytes) -> None:
    answer = trio.run(exchange, SERVER, data)
    if answer and not answer.startswith(b"HTTP/1.1 "):
        raise AssertionError(answer[:80])
    if b"HTTP/1.1 500 " in answer:
        raise AssertionError("a 500 for bytes from a client")


def _body(kind: bytes) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        try:
            Request(b"POST", b"/", b"", [(b"content-type", kind)], data).data()
        except HTTPError as exc:
            if exc.status != 400:
                raise

    return target


def framing(data: bytes) -> None:
    decoder = FrameDecoder(4096)
    decoder.feed(data)
    with contextlib.suppress(FrameError):
        for payload in decoder.frames():
            with contextlib.suppress(PayloadError):
                decode_payload(payload)


def settings(data: bytes) -> None:
    path = _SCRATCH / "config.toml"
    path.write_bytes(data)
    try:
        load_settings(config_path=str(path), environ={})
    except ConfigError as exc:
        if "\n" in str(exc):
            raise AssertionError("a config error of more than one line") from exc


def journal(data: bytes) -> None:
    directory = _SCRATCH / "journal"
    directory.mkdir(exist_ok=True)
    (directory / segment_name(1)).write_bytes(data)
    try:
        report = inspect(directory)
        list(read_records(report.segments))
    except JournalError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "fastpath": fastpath,
    "h11path": h11path,
    "json": _body(JSON),
    "msgpack": _body(MSGPACK),
    "framing": framing,
    "settings": settings,
    "journal": journal,
}
