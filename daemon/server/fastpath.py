"""The fast path: a strict byte-level matcher for body-less GET and HEAD.

Strategy: a request is answered here only if the fast path is sure h11 would
parse it to the same thing and the h11 path would answer the same bytes; any
doubt declines, and the bytes go to h11 untouched. So the matcher accepts a
strict subset of RFC 9112 (and of h11):

- the request line is exactly ``GET|HEAD <registered path> HTTP/1.1`` (one
  dict lookup on the whole line: method, target and version at once);
- every header line is ``token ":" OWS value OWS CRLF`` with values of visible
  ASCII or obs-text only (h11 also admits control characters; we decline,
  and the h11 path refuses them);
- exactly one Host (RFC 9112 section 3.2 makes none or two a 400);
- no header that changes framing or the connection: Content-Length and
  Transfer-Encoding (a body), Connection (close or upgrade), Expect, Upgrade;
- no X-Request-ID: a pre-encoded response cannot echo it, so a request that
  brings one is answered by dispatch, which does (a snapshot's answer with
  the id re-encoded); a snapshot request without one gets none;
- the head ends in CRLF CRLF, with no bare LF anywhere, and is no longer than
  the server's header limit.

Anything else, including a head that has not arrived whole, is h11's. The
differential test in tests/test_fastpath.py holds the two paths to this.

With ``[auth]`` enabled the server matches with ``guarded(guard)`` instead:
an open snapshot is answered as before; a protected one only when the head's
first credential header names a key that has the scope and a token to spend,
which is exactly when the h11 path would answer it. Everything else (no key,
a wrong one, no scope, no token) is declined, and the h11 path gives the
refusal. With auth off the plain ``match`` runs, at its old cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..auth import Guard, presented
from ..snapshots import FastEntry

__all__ = ["CREDENTIAL", "HEAD", "Matcher", "guarded", "match"]

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
_SPECIAL = rb"(?:host|content-length|transfer-encoding|connection|expect|upgrade|x-request-id):"
# The whitespace around a value is possessive (``*+``): a value starts and
# ends with a visible character, so giving whitespace back never helps, and
# backtracking into it made a line of 60,000 tabs cost 3 s of the loop.
_OTHER = rb"(?!" + _SPECIAL + rb")" + _TOKEN + rb":[ \t]*+" + _VALUE + rb"[ \t]*+\r\n"
_HOST = rb"host:[ \t]*+" + _VALUE + rb"[ \t]*+\r\n"
# One pass of the regex engine over the whole head: the request line (method
# and version case-sensitive, as RFC 9112 has them), then the header lines
# (names case-insensitive), then the empty line. Group 1 is the table key.
# It never looks past the header limit (``endpos``), so its work is bounded
# by the limit, not by what one read brought in.
HEAD = re.compile(
    rb"((?:GET|HEAD) /[\x21-\x7e]* HTTP/1\.1)\r\n(?i:(?:"
    + _OTHER
    + rb")*"
    + _HOST
    + rb"(?:"
    + _OTHER
    + rb")*)\r\n"
)


def match(
    lines: dict[bytes, FastEntry], data: bytes, pos: int, max_head: int
) -> tuple[FastEntry, int] | None:
    """The entry for a complete head at ``data[pos:]`` and where the head ends,
    or None to decline."""
    found = HEAD.match(data, pos, pos + max_head)
    if found is None:
        return None
    entry = lines.get(found.group(1))
    if entry is None:
        return None
    return entry, found.end()


Matcher = Callable[[dict[bytes, FastEntry], bytes, int, int], tuple[FastEntry, int] | None]

# The first credential header line of a head ``HEAD`` accepted: its name, and
# its value after the leading whitespace (the trailing is stripped after, as
# h11 does: a lazy group before it would backtrack quadratically).
CREDENTIAL = re.compile(rb"\r\n(x-api-key|authorization):[ \t]*+([^\r\n]*)\r\n", re.IGNORECASE)


def guarded(guard: Guard) -> Matcher:
    """``match``, taking a protected snapshot only when ``guard`` would admit it."""
    identify = guard.identify
    search = CREDENTIAL.search

    def match_guarded(
        lines: dict[bytes, FastEntry], data: bytes, pos: int, max_head: int
    ) -> tuple[FastEntry, int] | None:
        found = match(lines, data, pos, max_head)
        if found is None:
            return None
        entry, end = found
        scope = entry.scope
        if scope == "open":
            return found
        credential = search(data, pos, end)
        if credential is None:
            return None
        value = credential.group(2).rstrip(b" \t")
        key = identify(presented(credential.group(1).lower(), value))
        # The scope before the token: a refused request spends none here, and
        # the h11 path, which answers it, spends what it would have anyway.
        if key is None or scope not in key.scopes or key.bucket.take():
            return None
        return found

    return match_guarded
