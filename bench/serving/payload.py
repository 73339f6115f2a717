"""The bytes every server answers, so all of them serve exactly the same thing."""

from __future__ import annotations

__all__ = ["CONTENT_TYPE", "ECHO_BODY", "ECHO_PATH", "GET_BODY", "GET_PATH"]

GET_PATH = "/bench"
ECHO_PATH = "/echo"
CONTENT_TYPE = b"application/json"

GET_BODY = b'{"symbol":"BTC-USD","price":64250.50,"ts":1732233600000,"ok":1}'
ECHO_BODY = b'{"order":"ord-0001","symbol":"BTC-USD","side":"buy","qty":"0.25"}'

# The fast-path target is stated for a 63-byte body; a different size would
# quietly make the comparison with earlier runs meaningless.
if len(GET_BODY) != 63:
    raise AssertionError(f"GET_BODY is {len(GET_BODY)} bytes, not 63")
