"""POST /payments's budget, counted as tests/test_budget.py counts the core's
hot paths: calls made by sprintd's code (the payments plugin is sprintd's
code) per request, so that accepting a payment cannot grow slower unseen.

The daemon's parts that accept a payment run for real in this process: the
strict parser, the router, the payments API, the memory store and the
core's journal (its writer task too, group commit per request). The
dispatcher does not run: the processors are never called while a client
waits, and its work is not the request's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import trio

from sprintd.plugins.payments import PaymentsPlugin
from sprintd.testing import drive, make_app, make_server

from .test_budget import REQUESTS, WARM_UP, _CallCounter

# Calls by sprintd code per accepted payment, counted exactly (131 before
# this budget, 127 since route() takes the default without a routing choice
# while it is up): the strict parse, dispatch, the body's validation
# (cysimdjson, the UUID, the decimal), route() and its instant, the store's
# accept and its journal record (msgpack, the append, the writer's batch and
# write), the queue's send_nowait, the answer and the recorder.
PAYMENT_CALLS = 128


def _payment(cid: str) -> bytes:
    body = b'{"correlationId":"%s","amount":19.90}' % cid.encode()
    return (
        b"POST /payments HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def _payments() -> Iterator[bytes]:
    while True:
        yield _payment(str(uuid.uuid4()))


async def test_post_payments_budget(tmp_path: Path) -> None:
    environ = {
        "SPRINTD_DATA_DIR": str(tmp_path / "data"),
        # Nothing listens there; nothing is sent there either.
        "SPRINTD_PAYMENTS__DEFAULT_URL": "http://127.0.0.1:9",
        "SPRINTD_PAYMENTS__FALLBACK_URL": "http://127.0.0.1:9",
        "SPRINTD_JOURNAL__FSYNC": "os",
    }
    plugin = PaymentsPlugin()
    app = make_app([plugin], environ)
    server = make_server(app)
    payments = _payments()
    counter = _CallCounter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.journal.run)
        await drive(server, next(payments), WARM_UP, None, more=payments)
        await drive(server, next(payments), REQUESTS, counter, more=payments)
        nursery.cancel_scope.cancel()
    app.teardown()
    assert plugin.parts is not None
    # Every one accepted (and the answer's size was the same for all).
    assert plugin.parts.store.details()["accepted"] == 2 + WARM_UP + REQUESTS
    calls = counter.calls / REQUESTS
    assert calls > 60, "the counter saw too little: was the payment accepted?"
    assert calls <= PAYMENT_CALLS, f"{calls:.1f} calls a payment, budget {PAYMENT_CALLS}"
