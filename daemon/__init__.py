"""sprintd: a tier-tuned, low-latency service daemon on Trio and h11.

This module is the plugin API: a plugin (the built-in ones included) imports
these names from ``sprintd`` and nothing from its submodules, which are the
core's own and may change. The README's "Plugin API" section documents each.

The core's modules never import from here (only from each other), so this
facade sits above every layer and importing it cannot close a cycle.
"""

from .app import App, BackgroundTask, CheckStatus, HealthCheck, Listener
from .framing import FrameDecoder, FrameError, PayloadError, decode_payload, encode_frame
from .hookspecs import hookimpl, hookspec
from .http import HTTPError, Request, Response, ResponseWriter, Streamed
from .journal import Journal, JournalError, JournalUnavailable
from .latency import RING_SIZE, Recorder, Summary, summarize
from .metrics import LATENCY_BUCKETS_S, add_histogram
from .redis import Redis, RedisError, Script
from .routing import Route
from .sections import PluginSection, Section
from .server.framed import (
    FrameHandler,
    TimedFrameHandler,
    error_reply,
    framed_listener,
    timed_framed_listener,
)
from .server.state import BUSY, FRAME, SEND, SESSION, Conn, Session
from .server.upgrade import Upgrade, asks_upgrade, websocket_accept
from .settings import ConfigError
from .snapshots import Snapshot, SnapshotSpec, SnapshotTable
from .sockio import connect, recv, send_all, send_now
from .version import __version__

__all__ = [
    "BUSY",
    "FRAME",
    "LATENCY_BUCKETS_S",
    "RING_SIZE",
    "SEND",
    "SESSION",
    "App",
    "BackgroundTask",
    "CheckStatus",
    "ConfigError",
    "Conn",
    "FrameDecoder",
    "FrameError",
    "FrameHandler",
    "HTTPError",
    "HealthCheck",
    "Journal",
    "JournalError",
    "JournalUnavailable",
    "Listener",
    "PayloadError",
    "PluginSection",
    "Recorder",
    "Redis",
    "RedisError",
    "Request",
    "Response",
    "ResponseWriter",
    "Route",
    "Script",
    "Section",
    "Session",
    "Snapshot",
    "SnapshotSpec",
    "SnapshotTable",
    "Streamed",
    "Summary",
    "TimedFrameHandler",
    "Upgrade",
    "__version__",
    "add_histogram",
    "asks_upgrade",
    "connect",
    "decode_payload",
    "encode_frame",
    "error_reply",
    "framed_listener",
    "hookimpl",
    "hookspec",
    "recv",
    "send_all",
    "send_now",
    "summarize",
    "timed_framed_listener",
    "websocket_accept",
]
