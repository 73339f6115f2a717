"""The strict parser: request heads of any method, read byte by byte, for dispatch.

Strategy: as with the fast path (``fastpath``), a head is parsed here only
when this module is sure h11 would read it to the same request, and anything
it is not sure of is declined, untouched, to h11 (``h11path``), which stays
the reference. So it accepts a strict subset of RFC 9112:

- the request line is ``METHOD SP origin-form SP HTTP/1.1 CRLF``: an
  upper-case method, a target of visible ASCII starting with ``/`` (a query
  string is part of it); no leading empty lines, no absolute form, no other
  version (h11 takes each of those, and gives the errors);
- every header line is ``token ":" OWS value OWS CRLF`` with a value of
  visible ASCII or obs-text, single spaces and tabs only inside it;
- exactly one Host (none or two is h11's 400);
- at most one Content-Length, of 1 to 15 digits; no Transfer-Encoding (a
  chunked body is h11's), no Expect (100-continue is h11's), no Upgrade;
- at most one Connection, and only ``keep-alive`` or ``close``;
- the head ends in CRLF CRLF within the server's header limit, with no bare
  LF anywhere.

The body is not read here: the head says how long it is, and the connection
loop frames it from what follows the head. ``tests/test_parser.py`` holds
this module to h11, byte for byte, on generated and damaged heads.
"""

from __future__ import annotations

import re

__all__ = ["Head", "parse"]

# What parse() gives: method, target (path and query), the header fields
# (names lower-cased, values without their surrounding whitespace), the
# body's length, whether the connection stays open, and where the head ends.
Head = tuple[bytes, bytes, list[tuple[bytes, bytes]], int, bool, int]

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
# A value starts and ends with a visible byte; whitespace around it is
# possessive (``*+``), as in the fast path, so no input makes it backtrack.
_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
_FIELD_LINE = _TOKEN + rb":[ \t]*+" + _VALUE + rb"[ \t]*+\r\n"
# The whole head in one match, bounded by the header limit (``endpos``).
# Group 1: method; 2: target; 3: the header lines.
_HEAD = re.compile(rb"([A-Z]+) (/[\x21-\x7e]*) HTTP/1\.1\r\n((?:" + _FIELD_LINE + rb")*)\r\n")
# One field line: name and value, the value without its whitespace.
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*+(" + _VALUE + rb")[ \t]*+\r\n")
# Headers that change how the request is framed or the connection kept:
# each is checked below, or declines.
_FRAMING = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}
)
# More digits than any body limit needs; h11 allows 20.
MAX_LENGTH_DIGITS = 15


def parse(data: bytes, pos: int, max_head: int) -> Head | None:
    """The head at ``data[pos:]``, or None to leave it to h11."""
    found = _HEAD.match(data, pos, pos + max_head)
    if found is None:
        return None
    headers = []
    hosts = 0
    length = 0
    lengths = 0
    keep_alive = True
    connections = 0
    for raw_name, value in _FIELD.findall(data, found.start(3), found.end(3)):
        name = raw_name.lower()
        if name in _FRAMING:
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                if not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                    return None
                lengths += 1
                length = int(value)
            elif name == b"connection":
                token = value.lower()
                if token == b"close":
                    keep_alive = False
                elif token != b"keep-alive":
                    return None
                connections += 1
            else:
                return None
        headers.append((name, value))
    if hosts != 1 or lengths > 1 or connections > 1:
        return None
    return found.group(1), found.group(2), headers, length, keep_alive, found.end()
