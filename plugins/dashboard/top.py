"""``sprintd top``: the dashboard's figures in a terminal, refreshed every second.

It is a client: it reads a running daemon's /v1/stats,
/v1/price-engine/metrics and /health over HTTP (``--url``) and draws them
with rich, in the terminal's alternate screen so the shell's screen comes
back as it was. Rates (requests and updates a second) are the difference
between two polls; the first frame shows averages since start.

Keys: ``q`` quits; so does Ctrl-C. The terminal is put in cbreak mode (keys
arrive unbuffered, unechoed; Ctrl-C still interrupts) only while a real
terminal is on standard input, and restored on any way out. ``--once``
prints one frame to standard output and exits, for scripts and tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["Sample", "fetch", "main", "render"]

ENDPOINTS = {"stats": "/v1/stats", "metrics": "/v1/price-engine/metrics", "health": "/health"}
# A poll that takes longer than this shows the daemon as unreachable rather
# than freezing the screen.
FETCH_TIMEOUT_S = 2.0
SLA_US = 1000.0
SPARK = " ▁▂▃▄▅▆▇█"
SPARK_POINTS = 60
ROUTES_SHOWN = 15


@dataclass
class Sample:
    """One poll of the daemon: each endpoint's JSON, or why it is missing."""

    at: float
    data: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.data.get(name)


def fetch(url: str, timeout: float = FETCH_TIMEOUT_S, key: str | None = None) -> Sample:
    """Poll the three endpoints of the daemon at ``url`` (with an API key, if given)."""
    sample = Sample(time.monotonic())
    headers = {"X-API-Key": key} if key else {}
    for name, path in ENDPOINTS.items():
        request = urllib.request.Request(url.rstrip("/") + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                sample.data[name] = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            # /health answers 503 with its body when it fails: still worth showing.
            body = exc.read()
            if exc.code == 503 and name == "health":
                sample.data[name] = json.loads(body)
            elif exc.code == 404 and name == "metrics":
                pass  # the prices plugin is off on that daemon: nothing to show
            else:
                sample.errors[name] = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            sample.errors[name] = str(getattr(exc, "reason", exc))
    return sample


# --- drawing -----------------------------------------------------------------


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.1f}"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _status_style(status: str) -> str:
    return {"pass": "bold green", "warn": "bold yellow"}.get(status, "bold red")


def spark(values: list[float | None]) -> str:
    """A one-line chart of ``values`` (None: a gap), scaled to their largest."""
    top = max((v for v in values if v is not None), default=0.0)
    if top <= 0:
        return " " * len(values)
    steps = len(SPARK) - 1
    return "".join(" " if v is None else SPARK[max(1, round(v / top * steps))] for v in values)


def _totals(stats: dict[str, Any]) -> tuple[int, int]:
    routes = stats["routes"].values()
    count = sum(r["count"] for r in routes)
    return count, sum(r["client_errors"] + r["server_errors"] for r in routes)


def _header(sample: Sample, previous: Sample | None, url: str) -> RenderableType:
    grid = Table.grid(padding=(0, 3))
    line = Text()
    health = sample.get("health")
    stats = sample.get("stats")
    if health is not None:
        line.append("status ")
        line.append(health["status"].upper(), _status_style(health["status"]))
        line.append(f"   tier {health['tier']} ({health['optimization_level']})")
        line.append(f"   version {health['version']}")
    if stats is not None:
        line.append(f"   uptime {stats['uptime_s']:.0f}s")
    grid.add_row(Text("sprintd top", "bold"), line)
    if stats is not None:
        count, errors = _totals(stats)
        rps, since = None, "avg since start"
        if previous is not None and previous.get("stats") is not None:
            before, before_errors = _totals(previous.get("stats"))
            seconds = sample.at - previous.at
            if seconds > 0:
                rps, since = (count - before) / seconds, "now"
                if count > before:
                    errors, count = errors - before_errors, count - before
        elif stats["uptime_s"] > 0:
            rps = count / stats["uptime_s"]
        perf = stats["performance_stats"]
        figures = Text()
        figures.append(f"req/s {_rate(rps)} ({since})   ")
        figures.append(f"error rate {_pct(errors / count if count else 0.0)}   ")
        figures.append("SLA compliance ")
        figures.append(_pct(perf["sla_compliance"]), "green" if perf["sla_met"] else "yellow")
        figures.append(
            f" (p99.9 {_ms(perf['p99_9_latency_ms'])} ms, target {stats['sla_target_ms']} ms)"
        )
        grid.add_row("", figures)
    if sample.errors:
        problems = ", ".join(f"{ENDPOINTS[name]}: {why}" for name, why in sample.errors.items())
        grid.add_row("", Text(f"cannot read {url}: {problems}", "red"))
    return grid


def _engine(sample: Sample, previous: Sample | None) -> RenderableType:
    metrics = sample.get("metrics")
    if metrics is None:
        why = sample.errors.get("metrics")
        if why is not None:
            return Text(f"price engine: cannot read it ({why})", "red")
        return Text("price engine: not served by this daemon", "dim")
    latency = metrics["latency"]
    # Since the last poll; on the first frame, the engine's own average.
    rate = metrics["throughput"]
    if previous is not None and previous.get("metrics") is not None and sample.at > previous.at:
        done = metrics["messages_processed"] - previous.get("metrics")["messages_processed"]
        rate = max(0.0, done / (sample.at - previous.at))
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    figures = Text()
    for name in ("p50", "p95", "p99", "mean", "min", "max"):
        style = ""
        if name == "p95" and latency["sample_count"]:
            style = "bold green" if latency["p95"] < SLA_US else "bold red"
        figures.append(f"{name} ")
        figures.append(_us(latency[name]), style)
        figures.append("   ")
    figures.append(f"over {latency['sample_count']:,} updates", "dim")
    grid.add_row("latency", figures)
    grid.add_row(
        "updates",
        f"{_rate(rate)}/s   received {metrics['messages_received']:,}   "
        f"processed {metrics['messages_processed']:,}   errors {metrics['errors']:,} "
        f"({_pct(metrics['error_rate'])})   symbols {metrics['symbols']:,}",
    )
    history = [point["p95"] for point in metrics["history"][-SPARK_POINTS:]]
    grid.add_row("p95, 60 s", Text(spark(history), "cyan"))
    return Group(Text("price engine: wire to published snapshot, promise p95 < 1 ms", "bold"), grid)


def _routes(sample: Sample, previous: Sample | None) -> RenderableType:
    stats = sample.get("stats")
    if stats is None:
        return Text("")
    table = Table(
        title="routes (latency in ms over each one's last 10,000 requests)", box=box.SIMPLE
    )
    table.add_column("route", overflow="ellipsis", min_width=10, max_width=34)
    # Wide enough for their figures (264.50, 12,345): the route name gives way first.
    for name in ("req/s", "count", "p50", "p95", "p99", "4xx/5xx", "in SLA"):
        table.add_column(name, justify="right", no_wrap=True, min_width=max(6, len(name)))
    before = previous.get("stats") if previous is not None else None
    seconds = sample.at - previous.at if previous is not None else 0.0
    shown = sorted(
        ((name, r) for name, r in stats["routes"].items() if r["count"]),
        key=lambda item: -item[1]["count"],
    )
    for name, route in shown[:ROUTES_SHOWN]:
        rate = None
        if before is not None and seconds > 0:
            old = before["routes"].get(name, {"count": 0})["count"]
            rate = (route["count"] - old) / seconds
        recent = route["recent_ms"]
        table.add_row(
            name,
            _rate(rate),
            f"{route['count']:,}",
            _ms(recent["p50"]),
            _ms(recent["p95"]),
            _ms(recent["p99"]),
            Text(
                f"{route['client_errors']:,}/{route['server_errors']:,}",
                "red" if route["server_errors"] else "",
            ),
            _pct(route["sla_compliance"]),
        )
    if len(shown) > ROUTES_SHOWN:
        table.caption = f"and {len(shown) - ROUTES_SHOWN} more"
    return table


def _tuning(sample: Sample) -> RenderableType:
    health = sample.get("health")
    if health is None:
        return Text("")
    table = Table(title="tuning (requested -> applied)", box=box.SIMPLE)
    table.add_column("knob", no_wrap=True)
    # A knob's values can be whole dicts (the GC's state): one line each.
    table.add_column("requested", no_wrap=True, overflow="ellipsis", max_width=34)
    table.add_column("applied", no_wrap=True, overflow="ellipsis", max_width=34)
    table.add_column("", overflow="fold")
    for name, knob in health["tuning"].items():
        verdict = Text("applied", "green") if knob["ok"] else Text("refused", "yellow")
        if not knob["ok"] and knob.get("reason"):
            verdict.append(f": {knob['reason']}")
        table.add_row(name, _compact(knob["requested"]), _compact(knob["applied"]), verdict)
    return table


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_compact(v)}" for k, v in value.items())
    return json.dumps(value, separators=(",", ":"))


def render(sample: Sample, previous: Sample | None, url: str) -> RenderableType:
    """One frame: the header, the price engine, the routes and the tuning."""
    return Group(
        _header(sample, previous, url),
        _engine(sample, previous),
        _routes(sample, previous),
        _tuning(sample),
        Text("q or Ctrl-C to quit", "dim"),
    )


# --- the terminal ----------------------------------------------------------------


@contextlib.contextmanager
def _cbreak() -> Iterator[int | None]:
    """Standard input's descriptor in cbreak mode, restored on the way out;
    None when it is not a terminal (then keys are not read)."""
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):
        yield None
        return
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_quit(fd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds``; True when ``q`` was pressed meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if fd is None:
            time.sleep(left)
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 1) in (b"q", b"Q"):
            return True
    return False


def main(url: str, interval: float = 1.0, *, once: bool = False, key: str | None = None) -> int:
    """Run ``sprintd top`` against ``url``; the exit status."""
    if once:
        sample = fetch(url, key=key)
        Console().print(render(sample, None, url))
        return 1 if len(sample.errors) == len(ENDPOINTS) else 0
    console = Console()
    previous: Sample | None = None
    try:
        with _cbreak() as fd, Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                sample = fetch(url, key=key)
                live.update(render(sample, previous, url), refresh=True)
                previous = sample
                if _wait_for_quit(fd, interval - (time.monotonic() - sample.at)):
                    return 0
    except KeyboardInterrupt:
        return 0
