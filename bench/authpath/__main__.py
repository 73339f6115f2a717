"""``python -m bench.authpath [--requests N] [--keys K] [--rounds R]``.

The measurement behind the fast path's handling of protected snapshots: with
``[auth]`` enabled, either the matcher declines them (h11 parses every
keyed GET) or it checks the key itself (``fastpath.guarded``). One keyed GET
of a snapshot is served over a socketpair by the server's real connection
loop in this process, three ways, and the CPU time per request (client and
server together, one process) is compared in the same run:

- auth off, plain fast path (the baseline);
- auth on, guarded fast path;
- auth on, fast path off (what declining would cost).

CPU time (``time.process_time``), best of ``--rounds``: the machine is
shared, and the best round is the least disturbed one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

from bench.common.cli import add_run_options, positive, say, start
from bench.common.plotting import DPI, figure
from bench.common.report import Target, finish
from sprintd.app import Route, SnapshotSpec
from sprintd.server.connection import HTTPServer
from sprintd.testing import StaticPlugin, drive, echo, make_app, make_server

KEY = "bench-key-0123456789ab"
GET = b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
# A snapshot read with the read scope every key has; the trade-scoped route
# makes [auth] protect more than the snapshot, as a real deployment does.
PLUGIN = StaticPlugin(
    [SnapshotSpec("/bench", b'{"symbol":"BTC-USD","price":"64250.50","ts":1732233600000}')],
    [Route("POST", "/echo", echo, scope="trade")],
)


def _environ(keys: int) -> dict[str, str]:
    env = {
        "SPRINTD_AUTH__ENABLED": "true",
        "SPRINTD_AUTH__KEYS__BENCH__KEY": KEY,
        "SPRINTD_AUTH__LIMITS__FREE__RATE": "1000000000",
        "SPRINTD_AUTH__LIMITS__FREE__BURST": "1000000000",
    }
    for n in range(1, keys):
        env[f"SPRINTD_AUTH__KEYS__K{n}__KEY"] = f"other-key-{n:04d}-0123456789"
    return env


async def _per_request_us(server: HTTPServer, request: bytes, count: int) -> float:
    # One connection, request after request.
    start = time.process_time()
    await drive(server, request, count)
    return (time.process_time() - start) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.authpath", description=__doc__)
    parser.add_argument("--requests", type=positive, default=20_000)
    parser.add_argument("--keys", type=positive, default=9, help="configured keys")
    parser.add_argument("--rounds", type=positive, default=3)
    add_run_options(parser, "authpath", pin=None)
    args = parser.parse_args(argv)
    _, out = start("authpath", args.out)
    plain = make_app([PLUGIN])
    guarded = make_app([PLUGIN], _environ(args.keys))
    keyed = GET.replace(b"\r\n\r\n", f"\r\nX-API-Key: {KEY}\r\n\r\n".encode())
    ways = {
        "auth off, fast path": (make_server(plain), GET),
        "auth on, guarded fast path": (make_server(guarded), keyed),
        "auth on, h11 (matcher declines)": (make_server(guarded, fast_path=False), keyed),
    }
    best: dict[str, float] = {}
    for round_ in range(1, args.rounds + 1):
        for name, (server, request) in ways.items():
            us = trio.run(_per_request_us, server, request, args.requests)
            best[name] = min(best.get(name, us), us)
        say(
            f"round {round_}/{args.rounds}: "
            + ", ".join(f"{n} {v:.1f} us" for n, v in best.items())
        )
    base, fast, slow = best.values()
    targets = [
        Target(
            "the guarded fast path beats declining to h11",
            f"{fast:.1f} us against {slow:.1f} us a request ({slow / fast:.2f}x)",
            fast < slow,
        ),
        Target(
            "what a key costs the fast path",
            f"{fast - base:+.1f} us over {base:.1f} us with auth off ({args.keys} keys)",
            None,
        ),
    ]
    _write(out, args, best, targets)
    return finish(targets, out / "report.md", interrupted=False, failed=False)


def _write(
    out: Path, args: argparse.Namespace, best: dict[str, float], targets: list[Target]
) -> None:
    fig, ax = figure(8, 3.2)
    names = list(best)
    ax.barh(names, [best[n] for n in names], color=["#999999", "#1f77b4", "#d62728"])
    for y, name in enumerate(names):
        ax.text(best[name], y, f" {best[name]:.1f} us", va="center")
    ax.set_xlabel("CPU per keyed GET of a snapshot, us (client and server in one process)")
    ax.invert_yaxis()
    ax.set_xlim(0, max(best.values()) * 1.25)
    fig.tight_layout()
    fig.savefig(out / "authpath.png", dpi=DPI)
    lines = [
        "# What API keys cost a request",
        "",
        f"`python -m bench.authpath --requests {args.requests} --keys {args.keys} "
        f"--rounds {args.rounds}`; best of {args.rounds} rounds, "
        f"{args.requests} requests each, on a shared machine.",
        "",
        "| way | CPU a request |",
        "|---|---|",
        *[f"| {name} | {us:.1f} us |" for name, us in best.items()],
        "",
        "![CPU per request](authpath.png)",
        "",
        *[f"- {t.goal}: {t.measured}" for t in targets],
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), "utf-8")


if __name__ == "__main__":
    sys.exit(main())
