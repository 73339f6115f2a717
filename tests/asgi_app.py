"""A real FastAPI application for tests/test_asgi.py, served by the asgi plugin.

Its lifespan puts a value in the lifespan state and, when the environment
asks, fails; ``SHUTDOWN_FILE`` (when set) is written at shut-down, so a
test sees the shut-down ran.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from fastapi import FastAPI, Header, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    if os.environ.get("ASGI_APP_FAIL_STARTUP"):
        raise RuntimeError("the database is not there")
    yield {"greeting": "hello from the lifespan"}
    shutdown = os.environ.get("ASGI_APP_SHUTDOWN_FILE")
    if shutdown:
        Path(shutdown).write_text("shut down")


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.api_route("/items/{item_id}", methods=["GET", "HEAD"])
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.get("/sync")
def sync_endpoint() -> dict[str, Any]:
    """A plain function: FastAPI runs it in a worker thread (anyio's, on trio)."""
    return {"thread": threading.current_thread().name, "main": threading.main_thread().name}


@app.post("/items", status_code=201)
async def create_item(item: Item) -> dict[str, Any]:
    return {"created": item.model_dump()}


@app.get("/headers")
async def headers(x_token: str = Header(), accept: str | None = Header(None)) -> dict[str, Any]:
    return {"x_token": x_token, "accept": accept}


@app.get("/scope")
async def scope(request: Request) -> dict[str, Any]:
    s = request.scope
    return {
        "path": s["path"],
        "raw_path": s["raw_path"].decode("latin-1"),
        "root_path": s["root_path"],
        "query_string": s["query_string"].decode("latin-1"),
        "client": list(s["client"]) if s["client"] else None,
        "server": list(s["server"]) if s["server"] else None,
        "http_version": s["http_version"],
        "scheme": s["scheme"],
        "url": str(request.url),
        "url_for": str(request.url_for("read_item", item_id=1)),
        "state": request.state.greeting,
    }


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"piece {i}\n".encode()
            await trio.sleep(0)

    return StreamingResponse(pieces(), media_type="text/plain")


@app.get("/boom")
async def boom() -> dict[str, Any]:
    raise ZeroDivisionError("the application's own bug")


_gathering: list[trio.Event] = []


@app.get("/gather")
async def gather(n: int) -> dict[str, int]:
    """Answers once ``n`` requests are here together: served one at a time,
    the first would wait forever (and the test's client time out)."""
    arrived = trio.Event()
    _gathering.append(arrived)
    if len(_gathering) >= n:
        for event in _gathering:
            event.set()
        _gathering.clear()
    await arrived.wait()
    return {"gathered": n}


# The close codes the echo socket's application saw, for the tests to read.
disconnects: list[int] = []


@app.websocket("/ws/echo")
async def ws_echo(websocket: WebSocket) -> None:
    """Echoes text and bytes, with the subprotocol the client offered first;
    a message "bye" makes the application close (4000)."""
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol=offered[0] if offered else None)
    await websocket.send_json(
        {"path": websocket.url.path, "root_path": websocket.scope["root_path"]}
    )
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect as exc:
            disconnects.append(exc.code)
            return
        if message["type"] == "websocket.disconnect":
            disconnects.append(message["code"])
            return
        if message.get("text") == "bye":
            await websocket.close(code=4000)
            return
        if message.get("text") is not None:
            await websocket.send_text("echo: " + message["text"])
        else:
            await websocket.send_bytes(message["bytes"][::-1])


@app.get("/ws/disconnects")
async def ws_disconnects() -> list[int]:
    return disconnects


@app.websocket("/ws/refuse")
async def ws_refuse(websocket: WebSocket) -> None:
    await websocket.close(code=1008)


@app.websocket("/ws/fail")
async def ws_fail(websocket: WebSocket) -> None:
    raise RuntimeError("the application's WebSocket bug")


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI application without lifespan, that fails before it answers
    ``/fail`` and answers everything else with its path and body."""
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")
    if scope["path"] == "/fail":
        raise KeyError("the bare application's bug")
    message = await receive()
    body = f"{scope['method']} {scope['path']} {message['body'].decode()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
