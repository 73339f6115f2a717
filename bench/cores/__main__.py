"""Every core: ``python -m bench.cores [--quick] [--tier enterprise] [--duration S]``.

Issue 13's question: what does ``workers = 2`` buy with every plugin on? The
same daemon (orders, prices, payments with two emulated processors) runs
with one worker, then two, and each takes the same closed loops, one after
another (``wrk -t1 -c50``): ``POST /v1/orders``, ``GET /v1/book/BTC-USD``,
``POST /payments``. Nothing is pinned: the load generator shares the cores
with the daemon, and its own CPU time is reported beside the daemon's.

Then, with two workers, the cost of forwarding: one keep-alive connection
to each worker (told apart by the worker their ``/health`` names), the same
number of sequential orders on each, and the client's p50 on the one that
forwards over the one that does not.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.common import facts
from bench.common.cli import add_run_options, positive, say, start
from bench.common.net import ServerError, free_port, running
from bench.common.paths import BIN, REPO, short
from bench.common.plotting import figure, grouped_bars
from bench.common.processes import group_cpu_seconds
from bench.common.report import Target, commands, finish, not_measured, targets_table, write
from bench.serving.load import Load, LoadError, Result, Settings, command, run_load

WORKERS = (1, 2)
ORDER = {"symbol": "BTC-USD", "side": "buy", "price": "100.00", "qty": "0.001"}
LOADS = (
    Load("orders", "POST /v1/orders", "wrk", "POST", "/v1/orders", json.dumps(ORDER).encode()),
    Load("book", "GET /v1/book/BTC-USD", "wrk", "GET", "/v1/book/BTC-USD"),
    Load(
        "payments",
        "POST /payments",
        "wrk",
        "POST",
        "/payments",
        b'{"correlationId":"{id}","amount":19.90}',
    ),
)
TARGET_RATIO = 1.5
TARGET_FORWARDING = 1.3
PACKAGES = ("sprintd", "trio", "h11", "msgpack")


@dataclass
class Measured:
    workers: int
    load: str
    result: Result
    daemon_cpu_s: float
    # The journal over the load: (records written, fsyncs, seconds in fsync)
    journal: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Run:
    started: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    measured: list[Measured] = field(default_factory=list)
    # (sequential orders, p50 us at worker 0, p50 us at worker 1)
    forwarding: tuple[int, float, float] | None = None
    # p50 us of one round trip between two processes over a Unix socket
    hop_floor_us: float | None = None
    failures: dict[str, str] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)

    def find(self, workers: int, load: str) -> Measured | None:
        return next((m for m in self.measured if (m.workers, m.load) == (workers, load)), None)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started, out = start("cores", args.out, "logs", "raw")
    duration = args.duration or (3 if args.quick else 10)
    run = Run(started, vars(args) | {"duration": duration}, facts.collect(PACKAGES))
    say(f"cores bench: workers {WORKERS}, {duration}s per load; results in {short(out)}")
    interrupted = False
    try:
        with _processors(out) as urls:
            for workers in WORKERS:
                _measure(run, args, workers, duration, urls, out)
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: writing a partial report")
    targets = _targets(run)
    _plot(run, out)
    report = write(out, _results(run), _markdown(run, targets, interrupted))
    return finish(targets, report, interrupted=interrupted, failed=bool(run.failures))


@contextmanager
def _processors(out: Path) -> Iterator[tuple[str, str]]:
    """Two emulated payment processors (fees 5% and 15%); their URLs."""
    with ExitStack() as stack:
        urls = []
        for name, fee in (("default", "0.05"), ("fallback", "0.15")):
            port = free_port()
            argv = [sys.executable, "-m", "sprintd.plugins.payments.emulator"]
            argv += ["--port", str(port), "--fee", fee]
            log = out / "logs" / f"processor-{name}.log"
            stack.enter_context(
                running(argv, port, (REPO,), log, ready_path="/payments/service-health")
            )
            urls.append(f"http://127.0.0.1:{port}")
        yield urls[0], urls[1]


def _measure(
    run: Run,
    args: argparse.Namespace,
    workers: int,
    duration: int,
    urls: tuple[str, str],
    out: Path,
) -> None:
    port = free_port()
    argv = [f"{BIN}/sprintd", "run", "--tier", args.tier, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(workers)]
    argv += ["--data-dir", str(out / f"data-{workers}")]
    env = {
        "SPRINTD_PAYMENTS__DEFAULT_URL": urls[0],
        "SPRINTD_PAYMENTS__FALLBACK_URL": urls[1],
        # Free ports: the binary ports of a daemon left running cannot clash.
        "SPRINTD_ORDERS__ENTRY_PORT": str(free_port()),
        "SPRINTD_PRICES__FEED_PORT": str(free_port()),
    }
    run.commands.append(argv)
    say(f"workers = {workers}: sprintd on 127.0.0.1:{port}")
    log = out / "logs" / f"sprintd-{workers}.log"
    try:
        with running(argv, port, (REPO,), log, ready_path="/readyz", env=env) as daemon:
            # Every worker linked: /readyz of each (a balancer's view) says so.
            _wait_linked(port, workers)
            base = f"http://127.0.0.1:{port}"
            settings = Settings(duration, args.connections, 0, 0)
            for load in LOADS:
                raw = out / "raw" / f"{load.key}-{workers}.txt"
                before = group_cpu_seconds(daemon.pid)
                journal_before = _journal(port)
                try:
                    result = run_load(load, base + load.path, duration, settings, raw, cpus=None)
                except LoadError as exc:
                    run.failures[f"{load.key} with {workers} workers"] = str(exc)
                    say(f"  {load.key} FAILED: {exc}")
                    continue
                cpu = group_cpu_seconds(daemon.pid) - before
                (r0, f0, s0), (r1, f1, s1) = journal_before, _journal(port)
                journal = (r1 - r0, f1 - f0, s1 - s0)
                run.measured.append(Measured(workers, load.key, result, cpu, journal))
                if workers == WORKERS[0]:
                    url = base + load.path
                    run.commands.append(command(load, url, duration, settings, raw))
                say(
                    f"  {load.key:9} {result.rps:9,.0f} req/s  p50 {result.at(50.0):.3f}  "
                    f"p99 {result.at(99.0):.3f} ms  errors {result.errors}  "
                    f"daemon {cpu / duration:.0%} wrk {result.tool_cpu_s / duration:.0%} of a core"
                )
            if workers > 1:
                run.forwarding = _forwarding(port, args.sequential)
                run.hop_floor_us = _hop_floor(args.sequential)
                _, owner, sibling = run.forwarding
                say(
                    f"  forwarding: p50 {owner:.0f} us at the owner, {sibling:.0f} us via "
                    f"worker 1; a bare round trip between processes {run.hop_floor_us:.0f} us"
                )
    except ServerError as exc:
        run.failures[f"workers = {workers}"] = str(exc)
        say(f"  NOT MEASURED: {exc}")


def _journal(port: int) -> tuple[float, float, float]:
    """The journal's records written, fsyncs and seconds spent in them so far
    (every worker's, from one scrape of /metrics)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        _, body = _exchange(sock, b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
    wanted = (
        "sprintd_journal_records_written_total",
        "sprintd_journal_fsyncs_total",
        "sprintd_journal_fsync_duration_seconds_sum",
    )
    sums = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name in sums:
                sums[sample.name] += sample.value
    records, fsyncs, seconds = (sums[name] for name in wanted)
    return records, fsyncs, seconds


def _wait_linked(port: int, workers: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(_status(port, "/readyz") == 200 for _ in range(4 * workers)):
            return
        time.sleep(0.1)
    raise ServerError("a worker stayed unready (not linked to the owner?)")


def _status(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return _exchange(sock, f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())[0]


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send one request, read its whole answer: status and body."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), body


def _forwarding(port: int, count: int) -> tuple[int, float, float]:
    """p50 (us) of ``count`` sequential orders on a connection to worker 0, then to worker 1."""
    body = json.dumps(ORDER).encode()
    post = (
        b"POST /v1/orders HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    health = b"GET /health HTTP/1.1\r\nHost: b\r\n\r\n"
    p50 = {}
    for worker in (0, 1):
        while True:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if json.loads(_exchange(sock, health)[1])["runtime"]["worker"] == worker:
                break
            sock.close()
        with sock:
            samples = []
            for _ in range(count):
                t0 = time.perf_counter_ns()
                status, _ = _exchange(sock, post)
                samples.append(time.perf_counter_ns() - t0)
                if status != 201:
                    raise ServerError(f"an order through worker {worker} answered {status}")
        samples.sort()
        p50[worker] = samples[len(samples) // 2] / 1e3
    return count, p50[0], p50[1]


def _hop_floor(count: int) -> float:
    """p50 (us) of ``count`` round trips of a 200-byte message between this
    process and a child over a Unix socket pair, each on a core of its own as
    the tier pins the workers: what forwarding cannot avoid (two wake-ups of
    another process on another core), with none of sprintd's work."""
    cores = sorted(os.sched_getaffinity(0))
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:  # the echo: nothing but the two syscalls
        os.sched_setaffinity(0, {cores[-1]})
        here.close()
        while data := there.recv(4096):
            there.sendall(data)
        os._exit(0)
    there.close()
    os.sched_setaffinity(0, {cores[0]})
    message, samples = b"x" * 200, []
    with here:
        for _ in range(count):
            t0 = time.perf_counter_ns()
            here.sendall(message)
            received = 0
            while received < len(message):
                received += len(here.recv(4096))
            samples.append(time.perf_counter_ns() - t0)
    os.waitpid(child, 0)
    os.sched_setaffinity(0, cores)
    samples.sort()
    return samples[len(samples) // 2] / 1e3


# --- the report ------------------------------------------------------------------


def _targets(run: Run) -> list[Target]:
    targets = []
    for load in LOADS:
        one, two = run.find(1, load.key), run.find(2, load.key)
        goal = f"{load.title}: workers = 2 >= {TARGET_RATIO}x workers = 1, p99 no worse"
        if one is None or two is None:
            targets.append(Target(goal, "not measured", None))
            continue
        ratio = two.result.rps / one.result.rps
        p99_1, p99_2 = one.result.at(99.0), two.result.at(99.0)
        measured = (
            f"{ratio:.2f}x ({two.result.rps:,.0f} vs {one.result.rps:,.0f} req/s), "
            f"p99 {p99_2:.2f} vs {p99_1:.2f} ms"
        )
        targets.append(Target(goal, measured, ratio >= TARGET_RATIO and p99_2 <= p99_1))
    goal = f"an order through a forwarding worker <= {TARGET_FORWARDING}x one at the owner (p50)"
    if run.forwarding is None:
        targets.append(Target(goal, "not measured", None))
    else:
        count, owner, sibling = run.forwarding
        ratio = sibling / owner
        measured = f"{ratio:.2f}x ({sibling:.0f} vs {owner:.0f} us, {count:,} orders each)"
        targets.append(Target(goal, measured, ratio <= TARGET_FORWARDING))
    return targets


def _plot(run: Run, out: Path) -> None:
    fig, ax = figure()
    groups = [load.title for load in LOADS]
    series = []
    for workers, color in zip(WORKERS, ("#8c8c8c", "#1f77b4"), strict=True):
        values = []
        for load in LOADS:
            found = run.find(workers, load.key)
            values.append(None if found is None else found.result.rps)
        series.append((f"workers = {workers}", color, values))
    grouped_bars(ax, groups, series, lambda v: f"{v:,.0f}", 9)
    ax.set_ylabel("requests/s (closed loop, wrk -t1 -c50)")
    ax.set_title("One daemon, every plugin on: one worker against two")
    ax.legend()
    fig.savefig(out / "throughput.png", dpi=120, bbox_inches="tight")


def _markdown(run: Run, targets: list[Target], interrupted: bool) -> list[str]:
    s = run.settings
    lines = [f"# Cores benchmark, {run.started}", ""]
    if interrupted:
        lines += ["**The run was interrupted: the figures below are partial.**", ""]
    lines += [
        f"One sprintd at tier `{s['tier']}` with every plugin on (orders, prices, payments "
        "with two emulated processors), run with one worker and then with two (worker 0 owns "
        "the plugins' state, the other forwards to it). Each load is wrk's closed loop, one "
        f"thread, {s['connections']} connections, {s['duration']} s, one after another. "
        "Nothing is pinned: wrk shares the two cores with the daemon, and what each took "
        "is in the table.",
        "",
        *targets_table(targets),
        "",
        "## Loads",
        "",
        "![requests/s](throughput.png)",
        "",
        "| Load | workers | req/s | p50 ms | p99 ms | errors | daemon CPU | wrk CPU "
        "| fsyncs | mean fsync ms | records an fsync |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in run.measured:
        r = m.result
        duration = s["duration"]
        records, fsyncs, fsync_s = m.journal
        fsync_cells = (
            f"{fsyncs:,.0f} | {1000 * fsync_s / fsyncs:.2f} | {records / fsyncs:.1f}"
            if fsyncs
            else f"{fsyncs:,.0f} | | "
        )
        lines.append(
            f"| {m.load} | {m.workers} | {r.rps:,.0f} | {r.at(50.0):.3f} | {r.at(99.0):.3f} | "
            f"{r.errors} | {m.daemon_cpu_s / duration:.0%} | {r.tool_cpu_s / duration:.0%} | "
            f"{fsync_cells} |"
        )
    lines += [
        "",
        "An order is answered once its record is fsynced (at tiers whose journal fsyncs "
        "every batch), so each of wrk's connections has one order waiting at a time: the "
        "closed loop cannot pass connections / mean fsync time, whatever the cores, and "
        "the fsync columns show how near it came.",
    ]
    if run.forwarding is not None:
        count, owner, sibling = run.forwarding
        lines += [
            "",
            "## Forwarding",
            "",
            f"{count:,} sequential orders on one keep-alive connection to each worker of the "
            f"two-worker daemon: p50 **{owner:.0f} us** at the owner, **{sibling:.0f} us** "
            f"through worker 1, which forwards ({sibling / owner:.2f}x).",
        ]
        if run.hop_floor_us is not None:
            lines += [
                "",
                f"The floor under that difference ({sibling - owner:.0f} us): one round trip "
                f"of 200 bytes between two processes over a Unix socket pair, nothing else, "
                f"p50 **{run.hop_floor_us:.0f} us** on this machine ({count:,} of them).",
            ]
    machine = run.machine
    lines += ["", "## Machine", "", *(f"- {k}: {v}" for k, v in machine.items())]
    lines += not_measured(run.failures.items())
    lines += ["", "## Commands", "", *commands(run.commands)]
    return lines


def _results(run: Run) -> dict[str, Any]:
    return {
        "started": run.started,
        "settings": {k: str(v) for k, v in run.settings.items()},
        "machine": run.machine,
        "measured": [
            {
                "workers": m.workers,
                "load": m.load,
                "daemon_cpu_s": m.daemon_cpu_s,
                "journal_records_fsyncs_seconds": m.journal,
            }
            | asdict(m.result)
            for m in run.measured
        ],
        "forwarding": run.forwarding,
        "hop_floor_us": run.hop_floor_us,
        "failures": run.failures,
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cores", description=__doc__)
    add_run_options(parser, "cores", quick="3 s loads", pin=None)
    parser.add_argument("--tier", default="enterprise", help="the daemon's tier")
    parser.add_argument("--duration", type=positive, help="seconds per load")
    parser.add_argument("--connections", type=positive, default=50, help="wrk connections")
    parser.add_argument(
        "--sequential", type=positive, default=2000, help="orders per worker for forwarding"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
