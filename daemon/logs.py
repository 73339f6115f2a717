"""The daemon's log lines, as text or JSON, and the access log.

Log lines (``[log] format``): ``configure`` gives the root logger's handler
its formatter once the settings are read (before then, and in ``text``, the
line is ``TIME sprintd[PID] LEVEL LOGGER: MESSAGE``). ``json`` writes one
object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, ``worker`` (the worker's index; null in a supervisor), ``pid``,
``request_id`` when the record has one (``extra={"request_id": ...}``, as
dispatch gives a failed handler's line, and as a handler can from
``request.request_id``) and ``exc`` with a traceback. In ``text`` a request
id follows the message as ``[request_id=...]``.

Access log (``[log] access``): one line per request answered by dispatch,
strict parser or h11 (method, target, status, bytes on the wire, duration
in ms from the request's bytes in hand to the response sent, request id,
key name), in the log format. It is written off the loop by the audit log's
writer (``audit.LineWriter``): the loop puts one tuple on a queue, and a
thread formats and writes batches. A request refused before it parsed
(``<malformed>`` in /metrics: 400, 413, 431, 505 from the h11 path) has no
line. With the access log on, the fast path is off, so that snapshots are
logged too: they are then answered by dispatch, still pre-encoded.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from typing import Any

from .audit import LineWriter, utc_stamp
from .settings import LogSettings

__all__ = ["AccessLog", "JSONFormatter", "TextFormatter", "configure", "set_worker"]

TEXT_FORMAT = "%(asctime)s sprintd[%(process)d] %(levelname)s %(name)s: %(message)s"
# This process's worker index; None in a supervisor (and before a worker starts).
_worker: list[int | None] = [None]


def set_worker(index: int) -> None:
    """Name the worker this process is, in every JSON line it logs from now on."""
    _worker[0] = index


class TextFormatter(logging.Formatter):
    """The text line, with ``[request_id=...]`` after a message that has one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request_id={request_id}]" if request_id else line


class JSONFormatter(logging.Formatter):
    """One JSON object per record (the module's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": utc_stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": _worker[0],
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def configure(kind: str = "text") -> None:
    """Log INFO and above to standard error as ``kind`` ("text" or "json");
    called again, it changes the format of the handler it made."""
    formatter = JSONFormatter() if kind == "json" else TextFormatter()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(formatter)


# One access line's fields, as the loop queues them: time, method, target,
# the status line's code, bytes, nanoseconds, request id, key name.
_Access = tuple[float, bytes, bytes, bytes, int, int, bytes, str | None]


def _access_text(worker: int, item: _Access) -> str:
    ts, method, target, status, size, elapsed, request_id, key = item
    request = json.dumps(f"{method.decode('latin-1')} {target.decode('latin-1')}")
    return (
        f"{utc_stamp(ts)} {worker} {request} {status.decode('latin-1')} {size} "
        f"{elapsed / 1e6:.3f} {request_id.decode('latin-1') or '-'} {key or '-'}\n"
    )


def _access_json(worker: int, item: _Access) -> str:
    ts, method, target, status, size, elapsed, request_id, key = item
    line = {
        "time": utc_stamp(ts),
        "worker": worker,
        "method": method.decode("latin-1"),
        "target": target.decode("latin-1"),
        "status": int(status),
        "bytes": size,
        "duration_ms": round(elapsed / 1e6, 3),
        "request_id": request_id.decode("latin-1") or None,
        "key": key,
    }
    return json.dumps(line, separators=(",", ":")) + "\n"


class AccessLog:
    """The worker's access log (the module's strategy); ``start`` opens it.

    Raises:
        OSError: from ``start``, when its file cannot be opened.
    """

    def __init__(self, settings: LogSettings, worker: int = 0) -> None:
        access = settings.access
        line = _access_json if settings.format == "json" else _access_text
        self.writer = LineWriter(
            "sprintd-access",
            None if access == "stdout" else access or None,
            settings.access_max_bytes,
            settings.access_backups,
            settings.access_queue_size,
            functools.partial(line, worker),
        )

    def request(
        self,
        method: bytes,
        target: bytes,
        response: bytes,
        elapsed_ns: int,
        request_id: bytes,
        key: str | None,
    ) -> None:
        """Queue the line for one request answered with ``response``."""
        # The status is the status line's code: HTTP/1.1 NNN.
        self.writer.put(
            (
                time.time(),
                method,
                target,
                response[9:12],
                len(response),
                elapsed_ns,
                request_id,
                key,
            )
        )

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        self.writer.close()
