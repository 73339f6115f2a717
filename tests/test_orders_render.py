"""The orders renderer: an order's JSON text, made in one formatting call, is
byte for byte what ``json.dumps`` makes of the order's dict, whatever the
state and its fills (an engine of the hook's may name statuses, reasons and
symbols as it likes)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sprintd.plugins.orders.events import EV_ACCEPTED, EV_TRADE, MAX_PRICE, MAX_QTY, OrderState
from sprintd.plugins.orders.render import Renderer
from sprintd.plugins.orders.spec import SymbolSpec

SPECS = {
    "BTC-USD": SymbolSpec("BTC-USD", "0.01", "0.0001"),
    'ODD "ü\\\n': SymbolSpec('ODD "ü\\\n', "0.00000001", "1000"),
}
ids = st.integers(0, 2**63 - 1)
prices = st.integers(1, MAX_PRICE)
qtys = st.integers(0, MAX_QTY)
texts = st.one_of(
    st.sampled_from(["new", "filled", "expired", "rejected", "cancelled", "partially_filled"]),
    st.text(),
)


@st.composite
def orders(draw: Any) -> tuple[OrderState, list[tuple[Any, ...]]]:
    symbol = draw(st.sampled_from(sorted(SPECS)))
    state = OrderState(
        draw(ids),
        symbol,
        draw(st.sampled_from([0, 1])),
        draw(st.none() | prices),
        draw(qtys),
        draw(qtys),
        draw(qtys),
        draw(qtys),
        draw(texts),
        draw(st.none() | texts),
        0,
        draw(st.booleans()),
    )
    trade = st.tuples(st.just(EV_TRADE), ids, ids, ids, ids, prices, qtys, st.sampled_from([0, 1]))
    other = st.tuples(st.just(EV_ACCEPTED), ids, ids, st.just(0), prices, qtys)
    return state, draw(st.lists(trade | other, max_size=4))


@given(orders())
def test_an_orders_json_is_json_dumps_of_its_dict(
    order: tuple[OrderState, list[tuple[Any, ...]]],
) -> None:
    state, events = order
    render = Renderer(SPECS)
    expected = json.dumps(render.order(state, events), separators=(",", ":")).encode()
    assert render.order_json(state, events) == expected
    assert Renderer(SPECS).order_json(state, events) == expected  # cold caches too
