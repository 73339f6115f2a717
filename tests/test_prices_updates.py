"""The price update parser: every input is updates or a 4xx reason, never a crash."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.plugins.prices.updates import (
    FIELDS,
    MAX_TIMESTAMP_MS,
    InvalidUpdate,
    Update,
    check_symbol,
    decimal_text,
    parse_batch,
)

NOW = 1_700_000_000_000
GOOD = {"symbol": "BTC-USD", "price": 64000.5, "volume": 1.25, "timestamp_ms": 5, "change_24h": -1}

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=10)
)
_anything = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.sampled_from([*FIELDS, "extra", ""]) | st.text(max_size=8), inner)
    ),
    max_leaves=20,
)
# Updates that are nearly right, so the checks past the first are reached.
_near = st.fixed_dictionaries(
    {"symbol": st.sampled_from(["BTC-USD", "btc", "A.B.C.D.E", "X" * 33, "ES.Z25", "", 7])},
    optional={
        "price": _scalars | st.sampled_from(["1.5", "0", "-0", "00.00", "1e5", "1.0000"]),
        "volume": _scalars,
        "timestamp_ms": _scalars,
        "change_24h": _scalars,
    },
)
_symbols = st.from_regex(r"[A-Z0-9]{1,6}(-[A-Z0-9]{1,6}){0,2}", fullmatch=True)
# Floats from 1e-18 to 1e19 in size (or zero): what a decimal string may say.
_positive = st.floats(min_value=1e-18, max_value=1e19) | st.integers(1, 10**19)
_volume = _positive | st.just(0) | st.just(0.0)
_valid = st.fixed_dictionaries(
    {"symbol": _symbols, "price": _positive},
    optional={
        "volume": _volume,
        "timestamp_ms": st.integers(0, MAX_TIMESTAMP_MS),
        "change_24h": _volume | _positive.map(lambda v: -v),
    },
)


def _ok(updates: list[Update]) -> None:
    for update in updates:
        assert check_symbol(update.symbol) is None
        # Every number says itself as a plain decimal: safe inside the
        # snapshots' JSON strings.
        for number in (update.price, update.volume, update.change_24h):
            if number is not None:
                text = decimal_text(number)
                Decimal(text)
                assert set(text) <= set("-.0123456789"), text
                assert Decimal(text) != 0 or not text.startswith("-")  # never -0
        assert Decimal(decimal_text(update.price)) > 0
        assert update.volume is None or not decimal_text(update.volume).startswith("-")
        assert 0 <= update.timestamp_ms <= MAX_TIMESTAMP_MS


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(_anything | _near | st.lists(_near, max_size=4))
def test_any_input_is_updates_or_a_reason(data: Any) -> None:
    try:
        updates = parse_batch(data, NOW, max_batch=3)
    except InvalidUpdate as exc:
        assert exc.code and exc.message
        assert json.dumps({"code": exc.code, "message": exc.message})
        return
    _ok(updates)


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_any_msgpack_payload_is_updates_or_a_reason(payload: bytes) -> None:
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:  # not msgpack: the framing layer's business, not the parser's
        return
    with contextlib.suppress(InvalidUpdate):
        _ok(parse_batch(data, NOW, max_batch=100))


@settings(max_examples=300)
@given(st.lists(_valid, min_size=1, max_size=5))
def test_valid_updates_keep_their_values_and_order(items: list[dict[str, Any]]) -> None:
    updates = parse_batch(items, NOW, max_batch=10)
    assert [u.symbol for u in updates] == [i["symbol"] for i in items]
    for item, update in zip(items, updates, strict=True):
        assert Decimal(decimal_text(update.price)) == Decimal(repr(item["price"]))
        if "volume" in item:
            assert update.volume is not None
            assert Decimal(decimal_text(update.volume)) == Decimal(repr(item["volume"]))
        else:
            assert update.volume is None
        assert update.timestamp_ms == item.get("timestamp_ms", NOW)
    _ok(updates)


def test_an_array_update_is_the_same_fields_by_position() -> None:
    as_array = parse_batch([["BTC-USD", 64000.5, 1.25, 5, -1]], NOW, 10)
    as_object = parse_batch(GOOD, NOW, 10)
    assert as_array == as_object == [Update("BTC-USD", 64000.5, 1.25, 5, "-1")]
    assert parse_batch([["ETH-USD", "3000.10"]], NOW, 10) == [
        Update("ETH-USD", "3000.10", None, NOW, None)
    ]


def test_decimal_strings_are_kept_as_sent_and_floats_said_plainly() -> None:
    [update] = parse_batch({"symbol": "A", "price": "0.000100", "volume": 1e-05}, NOW, 1)
    assert update.volume is not None
    assert (decimal_text(update.price), decimal_text(update.volume)) == ("0.000100", "0.00001")
    [update] = parse_batch({"symbol": "A", "price": 1e16, "change_24h": -0.0}, NOW, 1)
    assert decimal_text(update.price) == "10000000000000000"
    assert update.change_24h is not None and decimal_text(update.change_24h) == "0.0"
    assert decimal_text(-1.5e-30) == "0"
    assert decimal_text(64000.5) == "64000.5"


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"price": -1}, "invalid_price", "must not be negative"),
        ({"price": "-0.5"}, "invalid_price", "must not be negative"),
        ({"price": 0}, "invalid_price", "greater than 0"),
        ({"price": "0.000"}, "invalid_price", "greater than 0"),
        ({"price": "12abc"}, "invalid_price", "not a decimal number"),
        ({"price": True}, "invalid_price", "not bool"),
        ({"price": [1]}, "invalid_price", "not list"),
        ({"price": float("nan")}, "invalid_price", "finite"),
        ({"price": float("inf")}, "invalid_price", "finite"),
        ({"price": 1e300}, "invalid_price", "out of range"),
        ({"price": 1e-19}, "invalid_price", "greater than 0"),
        ({"price": -0.0}, "invalid_price", "greater than 0"),
        ({"price": None}, "missing_field", "price is required"),
        ({"volume": -0.1}, "invalid_volume", "must not be negative"),
        ({"volume": "x"}, "invalid_volume", "not a decimal number"),
        ({"change_24h": {}}, "invalid_change_24h", "not dict"),
        ({"timestamp_ms": 1.5}, "invalid_timestamp_ms", "must be an integer"),
        ({"timestamp_ms": -1}, "invalid_timestamp_ms", "out of range"),
        ({"timestamp_ms": "5"}, "invalid_timestamp_ms", "not str"),
        ({"symbol": "btc-usd"}, "invalid_symbol", "upper-case"),
        ({"symbol": "BTC/USD"}, "invalid_symbol", "not a symbol"),
        ({"symbol": "A" * 33}, "invalid_symbol", "at most 32"),
        ({"symbol": 42}, "invalid_symbol", "must be a string"),
        ({"symbol": None}, "missing_field", "symbol is required"),
        ({"bid": 1}, "unknown_field", "unknown field 'bid'"),
    ],
)
def test_each_bad_field_has_its_code_and_reason(
    change: dict[str, Any], code: str, words: str
) -> None:
    with pytest.raises(InvalidUpdate) as caught:
        parse_batch({**GOOD, **change}, NOW, 10)
    assert caught.value.code == code
    assert words in caught.value.message


def test_one_bad_update_names_its_place_in_the_list() -> None:
    with pytest.raises(InvalidUpdate) as caught:
        parse_batch([GOOD, GOOD, {**GOOD, "volume": -1}], NOW, 10)
    assert caught.value.message.startswith("updates[2].volume:")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ([], "empty_batch"),
        ([GOOD] * 4, "too_many_updates"),
        ("BTC-USD", "invalid_update"),
        (None, "invalid_update"),
        ([["BTC-USD"]], "invalid_update"),
        ([["BTC-USD", 1, 2, 3, 4, 5]], "invalid_update"),
    ],
)
def test_batches_that_are_not_updates(data: Any, code: str) -> None:
    with pytest.raises(InvalidUpdate) as caught:
        parse_batch(data, NOW, max_batch=3)
    assert caught.value.code == code
