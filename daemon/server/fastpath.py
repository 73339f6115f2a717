"""The fast path: a strict byte-level matcher for body-less GET and HEAD.

Strategy: a request is answered here only if the fast path is sure h11 would
parse it to the same thing and the h11 path would answer the same bytes; any
doubt declines, and the bytes go to h11 untouched. So the matcher accepts a
strict subset of RFC 9112 (and of h11):

- the request line is exactly ``GET|HEAD <registered path> HTTP/1.1`` (one
  dict lookup on the whole line: method, target and version at once);
- every header line is ``token ":" OWS value OWS CRLF`` with values of visible
  ASCII or obs-text only (h11 also admits control characters; we decline);
- exactly one Host (RFC 9112 section 3.2 makes none or two a 400);
- no header that changes framing or the connection: Content-Length and
  Transfer-Encoding (a body), Connection (close or upgrade), Expect, Upgrade;
- the head ends in CRLF CRLF, with no bare LF anywhere, and is no longer than
  the server's header limit.

Anything else, including a head that has not arrived whole, is h11's. The
differential test in tests/test_fastpath.py holds the two paths to this.
"""

from __future__ import annotations

import re

from ..snapshots import FastEntry

__all__ = ["HEADERS", "match"]

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
_SPECIAL = rb"(?:host|content-length|transfer-encoding|connection|expect|upgrade):"
_OTHER = rb"(?!" + _SPECIAL + rb")" + _TOKEN + rb":[ \t]*" + _VALUE + rb"[ \t]*\r\n"
_HOST = rb"host:[ \t]*" + _VALUE + rb"[ \t]*\r\n"
# The header block, from the line after the request line through the CRLF
# that ends the last header (not the empty line).
HEADERS = re.compile(rb"(?:" + _OTHER + rb")*" + _HOST + rb"(?:" + _OTHER + rb")*", re.IGNORECASE)


def match(
    lines: dict[bytes, FastEntry], data: bytes, pos: int, end: int, max_head: int
) -> FastEntry | None:
    """The entry for a complete head at ``data[pos:end]``, or None to decline.

    On a match the head ends at the first CRLF CRLF after ``pos``.
    """
    head_end = data.find(b"\r\n\r\n", pos, end)
    if head_end < 0 or head_end + 4 - pos > max_head:
        return None
    line_end = data.find(b"\r\n", pos, head_end + 2)
    entry = lines.get(data[pos:line_end])
    if entry is None or HEADERS.fullmatch(data, line_end + 2, head_end + 2) is None:
        return None
    return entry
