"""The FastAPI application every server in ``bench.asgi`` serves, unchanged.

Two endpoints a service has: a read with a path parameter and a query
string, and a write whose JSON body pydantic validates and is answered back.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

__all__ = ["GET_PATH", "POST_BODY", "POST_PATH", "app"]

GET_PATH = "/items/42?q=book"
POST_PATH = "/items"
POST_BODY = b'{"symbol":"BTC-USD","side":"buy","qty":1.5,"price":64250.5}'

app = FastAPI()


class Order(BaseModel):
    symbol: str
    side: str
    qty: float
    price: float


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(order: Order) -> Order:
    return order
