"""The server's fixed limits, each with its reason. Configurable ones live in
``settings.ServerSettings``; these are the ones no deployment should need to move."""

from __future__ import annotations

import errno

__all__ = [
    "ACCEPT_CAPACITY_ERRNOS",
    "ACCEPT_SLEEP",
    "DRAIN_LINGER",
    "REAPER_TICK",
]

# accept() fails with these when the process or the system is out of file
# descriptors or memory; the connection stays queued, so back off and retry
# rather than spin (trio's serve_listeners does the same).
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_SLEEP = 0.100

# One task checks every connection's deadline this often, instead of a cancel
# scope per request: a deadline is then a field store on the hot path, and a
# timeout fires at most this late.
REAPER_TICK = 0.1

# A connection the drain closes has sent its FIN; what the peer sends after
# (a request already on its way) is read and dropped for at most this long,
# so the close is never a reset. A peer that reads sees the FIN and closes
# within a round trip; one that does not (an idle pooled client) is closed
# after this without loss, since nothing is left unread by then.
DRAIN_LINGER = 1.0
