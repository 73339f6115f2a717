"""Live market data over WebSocket: ``GET /v1/ws`` (wsproto on the core's ``Upgrade``).

The client's first message subscribes:
``{"subscribe": ["book:BTC-USD", "trades:BTC-USD", "prices", "orders"]}``.
Every message the server sends is ``{"channel", "seq", "data"}``, ``seq``
counting 1, 2, 3... per channel on this connection, with no gap.

- ``book:{symbol}``: the book as ``GET /v1/book/{symbol}`` answers it (the
  top ``book_depth`` levels and the engine's ``sequence``), at once, then
  after every change, published where the books' snapshots are.
- ``trades:{symbol}``: each trade, as ``GET /v1/trades/{symbol}`` lists it,
  with its ``symbol``.
- ``prices``: the ``/v1/prices`` snapshot of the prices plugin whenever it
  changed, looked at every ``PRICES_POLL`` seconds.
- ``orders``, with an API key: the key's own orders as the API answered its
  commands (``POST``, ``PATCH``, ``DELETE /v1/orders``), and each fill of
  its resting orders. Orders entered through the binary port carry no key,
  and a restart forgets whose the resting orders were.

Keys and scopes are HTTP's: ``/v1/ws`` needs ``read``, ``orders`` a key.

A slow consumer never slows the engine: publishing only stores into each
subscriber's outbox, and each connection's own task writes it out. The
book and prices channels are states: a subscriber behind gets the latest
one, never a stale one (the book's ``sequence`` shows how many changes it
skipped). Trades and orders are events: a subscriber more than
``[orders] feed_max_pending`` of them behind is dropped with close code
1013 (try again later), or, when the server is mid-frame to it, its TCP
connection is closed; either way it resubscribes and rereads the state
over HTTP.

Close codes: 1000 when the client closes; 1001 when the daemon drains;
1008 for a bad first message (not JSON, not a subscribe, an unknown
channel, ``orders`` without a key) or none within ``[server]
header_timeout``; 1009 for a message over ``MAX_MESSAGE`` bytes; 1013 for a
slow consumer. Pings are answered; messages after the first are ignored.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import Mapping, Sequence

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Message, Ping, TextMessage
from wsproto.utilities import RemoteProtocolError

from sprintd import (
    Conn,
    HTTPError,
    Request,
    Response,
    Snapshot,
    SnapshotTable,
    Upgrade,
    asks_upgrade,
    recv,
    send_all,
    websocket_accept,
)

from .events import EV_TRADE
from .render import Renderer
from .service import OrderService, Outcome

__all__ = ["CLOSE_BAD_SUBSCRIBE", "CLOSE_SLOW", "MAX_MESSAGE", "PRICES_POLL", "Feed"]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_BAD_SUBSCRIBE = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SLOW = 1013
# A client message larger than this is refused (1009): a subscribe is small.
MAX_MESSAGE = 64 * 1024
PRICES_POLL = 0.1
PRICES_PATH = "/v1/prices"
# How long a closing connection waits for the peer's close frame.
CLOSE_WAIT = 2.0
# The kernel's send buffer of a subscriber's socket: a bound on what a
# reader that stopped reading holds there, so it falls behind in its
# outbox, where it is seen, and not in megabytes of autotuned buffer.
SEND_BUFFER = 64 * 1024


class _Closed(Exception):
    """Ends a session with a close code (not on any hot path: once a connection)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Subscriber:
    """One connection's outbox: the latest state per state channel, the
    events in order, and the wake-up of its writer."""

    __slots__ = ("dropped", "events", "key", "latest", "max_pending", "scope", "wake")

    def __init__(self, key: str | None, max_pending: int) -> None:
        self.key = key
        self.max_pending = max_pending
        self.latest: dict[str, str] = {}
        self.events: deque[tuple[str, str]] = deque()
        self.dropped = False
        self.wake = trio.Event()
        # The scope of the connection's reader and writer: a drop cancels it,
        # so a writer stuck on a reader that stopped reading stops too.
        self.scope = trio.CancelScope()

    def state(self, channel: str, data: str) -> None:
        self.latest[channel] = data
        self.wake.set()

    def event(self, channel: str, data: str) -> None:
        if len(self.events) < self.max_pending:
            self.events.append((channel, data))
            self.wake.set()
        else:
            self.drop()

    def drop(self) -> None:
        self.dropped = True
        self.scope.cancel()


class Feed:
    """The channels' subscribers, what the orders API publishes to them, and
    the ``/v1/ws`` route (module doc)."""

    def __init__(
        self,
        service: OrderService,
        render: Renderer,
        books: Mapping[str, Snapshot],
        snapshots: SnapshotTable,
        *,
        first_message_timeout: float,
        send_timeout: float,
        max_pending: int,
    ) -> None:
        self.service = service
        self.render = render
        self.books = books
        self.snapshots = snapshots
        self.first_message_timeout = first_message_timeout
        self.send_timeout = send_timeout
        self.max_pending = max_pending
        self.channels: dict[str, set[Subscriber]] = {}
        # The last frame encoded per channel: (seq, data, frame) (_Session._frame).
        self.frames: dict[str, tuple[int, str, bytes]] = {}
        # Whose the resting orders entered with a key are: order id -> key name.
        self.owners: dict[int, str] = {}
        # The newest trade id each symbol's subscribers have been given.
        self.last_trade = {
            symbol: trades[-1][0] if trades else 0 for symbol, trades in service.trades.items()
        }

    # --- publishing (the orders API calls these; never awaits) --------------

    def changed(self, symbol: str) -> None:
        """A book was republished: its subscribers get it, and its new trades."""
        channels = self.channels
        subscribers = channels.get("book:" + symbol)
        if subscribers:
            body = self.books[symbol].body.decode()
            for sub in subscribers:
                sub.state("book:" + symbol, body)
        trades = self.service.trades[symbol]
        last = self.last_trade[symbol]
        if not trades or trades[-1][0] == last:
            return
        self.last_trade[symbol] = trades[-1][0]
        subscribers = channels.get("trades:" + symbol)
        if not subscribers:
            return
        new = []
        for trade in reversed(trades):
            if trade[0] <= last:
                break
            new.append(trade)
        channel = "trades:" + symbol
        for trade in reversed(new):
            data = json.dumps({"symbol": symbol, **self.render.trade(symbol, trade)})
            for sub in subscribers:
                sub.event(channel, data)

    def answered(self, key: str | None, outcome: Outcome) -> None:
        """A keyed command's answer: to its key's ``orders`` subscribers, and
        each fill of a resting order to its owner's."""
        if key is None:
            return
        state = outcome.state
        if state.remaining_qty and state.status not in ("cancelled", "rejected", "expired"):
            self.owners[state.order_id] = key
        else:
            self.owners.pop(state.order_id, None)
        subscribers = self.channels.get("orders")
        if subscribers:
            order = self.render.order(state, outcome.events)
            self._to_key(subscribers, key, json.dumps(order))
        for event in outcome.events:
            if event[0] != EV_TRADE:
                continue
            maker = event[3]
            owner = self.owners.get(maker)
            if owner is None:
                continue
            _, maker_state = self.service.find(maker)
            if not maker_state.remaining_qty:
                del self.owners[maker]
            if subscribers:
                data = json.dumps(self.render.order(maker_state, [event]))
                self._to_key(subscribers, owner, data)

    @staticmethod
    def _to_key(subscribers: set[Subscriber], key: str, data: str) -> None:
        for sub in subscribers:
            if sub.key == key:
                sub.event("orders", data)

    # --- the route ----------------------------------------------------------

    def upgrade(self, request: Request) -> Response:
        """``GET /v1/ws``: the WebSocket handshake (RFC 6455 section 4.2)."""
        if asks_upgrade(request) != b"websocket":
            raise HTTPError(
                426,
                "upgrade_required",
                "GET /v1/ws is a WebSocket: send Upgrade: websocket, Connection: Upgrade",
                ((b"upgrade", b"websocket"), (b"connection", b"Upgrade")),
            )
        accept = websocket_accept(request)
        key = request.key

        async def session(conn: Conn, rest: bytes) -> None:
            await _Session(self, conn, key, rest).serve()

        return Upgrade(session, b"websocket", ((b"sec-websocket-accept", accept),))

    def _subscribe(self, names: Sequence[str], sub: Subscriber) -> None:
        for name in names:
            self.channels.setdefault(name, set()).add(sub)
            kind, _, symbol = name.partition(":")
            if kind == "book":
                sub.state(name, self.books[symbol].body.decode())

    def _unsubscribe(self, names: Sequence[str], sub: Subscriber) -> None:
        for name in names:
            found = self.channels.get(name)
            if found is not None:
                found.discard(sub)
                if not found:
                    del self.channels[name]
                    self.frames.pop(name, None)

    def _check(self, message: str, key: str | None) -> list[str]:
        """The channels a first message subscribes to, or ``_Closed`` (1008)."""
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):  # nested past the interpreter's limit
            raise _Closed(CLOSE_BAD_SUBSCRIBE, "the first message is not JSON") from None
        names = data.get("subscribe") if isinstance(data, dict) else None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _Closed(
                CLOSE_BAD_SUBSCRIBE, 'the first message is {"subscribe": ["channel", ...]}'
            )
        for name in names:
            kind, _, symbol = name.partition(":")
            if kind in ("book", "trades") and symbol in self.books:
                continue
            if name == "prices" and self.snapshots.get(PRICES_PATH) is not None:
                continue
            if name == "orders":
                if key is None:
                    raise _Closed(CLOSE_BAD_SUBSCRIBE, "orders needs an API key")
                continue
            raise _Closed(CLOSE_BAD_SUBSCRIBE, f"no channel {name[:64]!r}")
        return list(dict.fromkeys(names))


class _Session:
    """One WebSocket connection: the subscribe, then its reader and writer."""

    def __init__(self, feed: Feed, conn: Conn, key: str | None, rest: bytes) -> None:
        self.feed = feed
        self.conn = conn
        self.ws = Connection(ConnectionType.SERVER, trailing_data=rest)
        self.sub = Subscriber(key, feed.max_pending)
        self.view = memoryview(conn.buf)
        self.seqs: dict[str, int] = {}
        # Mid-frame to the peer: no close frame can follow.
        self.sending = False
        self.message: list[str] = []
        self.size = 0
        # The reader's pongs and the writer's frames share the socket.
        self.lock = trio.Lock()

    async def serve(self) -> None:
        conn = self.conn
        assert conn.takeover is not None  # the h11 path's, before the session
        code, reason = CLOSE_GOING_AWAY, "the server is shutting down"
        names: list[str] = []
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        try:
            with conn.takeover:
                with trio.fail_after(self.feed.first_message_timeout):
                    first = await self._next_message()
                if first is None:
                    return
                names = self.feed._check(first, self.sub.key)
                self.feed._subscribe(names, self.sub)
                with self.sub.scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write)
                        if "prices" in names:
                            nursery.start_soon(self._prices)
                        await self._read()
                        nursery.cancel_scope.cancel()
                if self.sub.dropped:
                    code, reason = CLOSE_SLOW, "too slow: resubscribe"
                else:
                    return  # the peer closed (answered in _read) or went away
        except _Closed as closed:
            code, reason = closed.code, closed.reason
        except trio.TooSlowError:
            code, reason = CLOSE_BAD_SUBSCRIBE, "no subscribe message in time"
        except RemoteProtocolError as exc:
            code, reason = 1002, str(exc)
        finally:
            self.feed._unsubscribe(names, self.sub)
        if not self.sending:
            await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        """Send a close frame, and read until the peer's (RFC 6455 section 7.1.1)."""
        ws = self.ws
        if ws.state is not ConnectionState.OPEN:
            return
        with trio.move_on_after(CLOSE_WAIT):
            await self._send(ws.send(CloseConnection(code, reason[:120])))
            while _still_closing(ws):
                data = await recv(self.conn.sock, self.view)
                if not data:
                    return
                self.ws.receive_data(data)
                for _ in self.ws.events():
                    pass

    async def _send(self, data: bytes) -> None:
        lock = self.lock
        # Taken without a checkpoint when free, as it almost always is: a
        # fan-out to thousands pays no scheduling round for it.
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            self.sending = True
            await send_all(self.conn.sock, data)
            self.sending = False
        finally:
            lock.release()

    async def _events(self) -> list[Event]:
        """The peer's next events; [] at its end of stream."""
        ws = self.ws
        while True:
            found = list(ws.events())
            if found:
                return found
            data = await recv(self.conn.sock, self.view)
            if not data:
                return []
            ws.receive_data(data)

    async def _handle(self, event: Event) -> str | None:
        """Answer a ping or a close; a whole message's text, else None."""
        if isinstance(event, Ping):
            await self._send(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self.ws.state is not ConnectionState.REMOTE_CLOSING:
                # wsproto's word for a frame it could not parse: ours to send.
                raise _Closed(event.code, event.reason or "protocol error")
            await self._send(self.ws.send(event.response()))
        elif isinstance(event, Message):
            part = event.data if isinstance(event.data, str) else event.data.decode("latin-1")
            self.size += len(part)
            if self.size > MAX_MESSAGE:
                raise _Closed(CLOSE_TOO_BIG, f"a message over {MAX_MESSAGE} bytes")
            self.message.append(part)
            if event.message_finished:
                whole = "".join(self.message)
                self.message.clear()
                self.size = 0
                return whole
        return None

    async def _next_message(self) -> str | None:
        """The first whole message; None if the peer closed or went first."""
        while self.ws.state is ConnectionState.OPEN:
            events = await self._events()
            if not events:
                return None
            for event in events:
                found = await self._handle(event)
                if found is not None:
                    return found
        return None

    async def _read(self) -> None:
        """Answer pings and the peer's close; ignore its messages; until it ends."""
        while self.ws.state is ConnectionState.OPEN:
            events = await self._events()
            if not events:
                return
            for event in events:
                await self._handle(event)

    async def _write(self) -> None:
        sub = self.sub
        seqs = self.seqs
        while True:
            await sub.wake.wait()
            sub.wake = trio.Event()
            if self.ws.state is not ConnectionState.OPEN:
                return  # the reader answered the peer's close
            frames = []
            for channel, data in sub.latest.items():
                frames.append(self._frame(seqs, channel, data))
            sub.latest.clear()
            events = sub.events
            while events:
                channel, data = events.popleft()
                frames.append(self._frame(seqs, channel, data))
            # A reader that takes nothing for the send timeout is as slow as
            # one that fell max_pending events behind.
            with trio.move_on_after(self.feed.send_timeout):
                await self._send(b"".join(frames))
            if self.sending:
                sub.drop()

    def _frame(self, seqs: dict[str, int], channel: str, data: str) -> bytes:
        seq = seqs[channel] = seqs.get(channel, 0) + 1
        # Subscribers in step (the same seq for the same data, as every
        # subscriber since the same moment is) share one encoded frame: a
        # server's frame is unmasked, and a whole message leaves wsproto's
        # state as it found it, so the bytes are the same for each.
        frames = self.feed.frames
        cached = frames.get(channel)
        if cached is not None and cached[0] == seq and cached[1] is data:
            return cached[2]
        frame = self.ws.send(TextMessage(f'{{"channel":"{channel}","seq":{seq},"data":{data}}}'))
        frames[channel] = (seq, data, frame)
        return frame

    async def _prices(self) -> None:
        snapshot = self.feed.snapshots.get(PRICES_PATH)
        assert snapshot is not None  # _check refused "prices" without it
        last = None
        while True:
            body = snapshot.body
            if body is not last:
                last = body
                self.sub.state("prices", body.decode())
            await trio.sleep(PRICES_POLL)


def _still_closing(ws: Connection) -> bool:
    """Whether the peer's close frame is still to come (a call, so that the
    type checker does not keep the state it saw before the send)."""
    return ws.state is not ConnectionState.CLOSED
