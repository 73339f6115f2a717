"""The server's fixed limits, each with its reason. Configurable ones live in
``settings.ServerSettings``; these are the ones no deployment should need to move."""

from __future__ import annotations

import errno

__all__ = [
    "ACCEPT_CAPACITY_ERRNOS",
    "ACCEPT_SLEEP",
    "DRAIN_LINGER",
    "LINGER_BYTES",
    "LINGER_TIME",
    "LINGER_TIMEOUT",
    "MAX_EMPTY_LINES",
    "REAPER_TICK",
]

# accept() fails with these when the process or the system is out of file
# descriptors or memory; the connection stays queued, so back off and retry
# rather than spin (trio's serve_listeners does the same).
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_SLEEP = 0.100

# One task checks every connection's deadline this often, instead of a cancel
# scope per request: a deadline is then a field store on the hot path, and a
# timeout fires up to two ticks late (``state``: timed from the tick that
# first saw the connection's state).
REAPER_TICK = 0.1

# A lingering close (after a response that ends the connection while the
# peer may still be sending): how long to read and discard its input before
# the close, so that the close is a FIN the peer reads after the response,
# not a reset that loses it. nginx waits 30 s in all and 5 s between reads
# (lingering_time, lingering_timeout), sized for uploads over slow links;
# these clients are near and a connection held is a task and a buffer, so a
# few seconds, and a byte cap so a fast sender cannot keep the loop reading.
LINGER_TIME = 3.0
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 1 << 20

# Empty lines skipped before a request line (RFC 9112 section 2.2 asks for at
# least one; a client ending a body with an extra CRLF sends one). More than
# a handful is not a client's slip but a peer spending the header timeout.
MAX_EMPTY_LINES = 8
# A connection the drain closes has sent its FIN; what the peer sends after
# (a request already on its way) is read and dropped for at most this long,
# so the close is never a reset. A peer that reads sees the FIN and closes
# within a round trip; one that does not (an idle pooled client) is closed
# after this without loss, since nothing is left unread by then.
DRAIN_LINGER = 1.0
