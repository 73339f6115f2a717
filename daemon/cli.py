"""The ``sprintd`` command: run, config, tiers, journal, and the plugins' commands (top).

Any configuration that cannot start exits with status 2 and one line naming
the field, the value and where it came from; so does a listener that cannot
be opened (``sprintd: cannot listen on HOST:PORT (name): address already in
use``), which no restart can fix either. ``sprintd journal verify``
exits 0 when the journal is clean and 1 when it is not (a torn tail that
opening would cut, corruption that stops it opening, an unreadable
snapshot); neither journal command changes a file.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgpack
import pluggy

from .journal import JournalError, describe, in_use, inspect, read_records
from .logs import configure as configure_logging
from .manager import add_plugins, apply_enabled, make_manager, plugin_sections
from .server.listener import UNIX, UNIX_LISTENER, Exclusive, ListenError
from .server.workers import supervise
from .settings import EXIT_CONFIG, ConfigError, LoadedSettings, load_settings, read_plugin_names
from .tiers import TIERS, load_profile
from .version import version_line
from .worker import run_worker

__all__ = ["main"]


def _parser(pm: pluggy.PluginManager) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sprintd", description="A tier-tuned, low-latency service daemon."
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True)

    def settings_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", help="a JSON or TOML file (default: $SPRINTD_CONFIG)")
        sub.add_argument("--tier", help=f"one of {', '.join(TIERS)}")
        sub.add_argument("--host")
        # Values are strings here: the settings model validates them, so a bad
        # one gets the same one-line error as from any other layer.
        sub.add_argument("--port")
        sub.add_argument("--workers")
        sub.add_argument("--data-dir", help="where the journal and snapshots live")

    settings_flags(commands.add_parser("run", help="start the daemon"))
    settings_flags(
        commands.add_parser("config", help="print every effective setting and its origin")
    )
    commands.add_parser("tiers", help="list the tier profiles and what each sets")
    journal = commands.add_parser("journal", help="inspect the write-ahead journal (read only)")
    actions = journal.add_subparsers(dest="journal_command", required=True)
    settings_flags(
        actions.add_parser("verify", help="summarize the journal; exit 1 unless it is clean")
    )
    replay = actions.add_parser("replay", help="print every record, one line each")
    settings_flags(replay)
    replay.add_argument("--stream", action="append", help="only this stream (repeatable)")
    replay.add_argument("--after", type=int, default=0, help="only records after this seq")
    pm.hook.sprintd_add_commands(commands=commands)
    return parser


def _cli_layer(args: argparse.Namespace) -> dict[str, tuple[tuple[str, ...], Any]]:
    return {
        "--tier": (("tier",), args.tier),
        "--host": (("server", "host"), args.host),
        "--port": (("server", "port"), args.port),
        "--workers": (("server", "workers"), args.workers),
        "--data-dir": (("data_dir",), args.data_dir),
    }


def load(args: argparse.Namespace, pm: pluggy.PluginManager) -> LoadedSettings:
    """The settings from every layer, with the configuration's plugins added to ``pm``
    and the disabled ones taken out.

    Raises:
        ConfigError: with the one line to show.
    """
    config = args.config or os.environ.get("SPRINTD_CONFIG") or None
    add_plugins(pm, read_plugin_names(config))
    loaded = load_settings(cli=_cli_layer(args), config_path=config, sections=plugin_sections(pm))
    apply_enabled(pm, loaded.settings)
    return loaded


def _print_config(loaded: LoadedSettings) -> None:
    rows = list(loaded.effective())
    width = max(len(name) for name, _, _ in rows)
    for name, value, origin in rows:
        print(f"{name:<{width}}  {value!s:<24}  {origin}")


def _print_tiers() -> None:
    for name in TIERS:
        profile = load_profile(name)
        print(f"{name}  ({profile.optimization_level}, SLA p99.9 {profile.sla_p999_ms:g} ms)")
        print(f"    {profile.summary}")
        print(f"    includes: {' < '.join(profile.chain)}")
        for section, values in profile.settings.items():
            for key, value in values.items():
                print(f"    {section}.{key} = {value}")


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, msgpack.ExtType):
        return {"$ext": value.code, "$base64": base64.b64encode(value.data).decode("ascii")}
    return repr(value)


def _payload_json(payload: bytes) -> str:
    """The payload as msgpack-decoded JSON, or ``{"$raw": base64}`` if it is not msgpack."""
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:  # any payload that is not exactly one msgpack object
        return json.dumps({"$raw": base64.b64encode(payload).decode("ascii")})
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _journal(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    directory = loaded.settings.data_dir / "journal"
    if in_use(directory):
        print(
            f"sprintd: journal {directory} is open in a running daemon: "
            "its last records may be a write in progress",
            file=sys.stderr,
        )
    try:
        report = inspect(directory)
    except (JournalError, OSError) as exc:
        print(f"sprintd: journal {directory}: {exc}", file=sys.stderr)
        return 1
    if args.journal_command == "verify":
        settings = loaded.settings.journal
        policy = f"fsync {settings.fsync}"
        if settings.fsync == "interval":
            policy += f" every {settings.fsync_interval_ms:g} ms"
        print("\n".join(describe(report, policy)))
        return 0 if report.clean else 1
    streams = set(args.stream) if args.stream else None
    try:
        for seq, stream, payload in read_records(report.segments, args.after, streams):
            print(f"{seq}\t{stream}\t{_payload_json(payload)}")
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    except (JournalError, OSError) as exc:
        print(f"sprintd: journal {directory}: {exc}", file=sys.stderr)
        return 1
    if report.cut is not None:
        print(f"sprintd: torn tail not shown: {report.cut.describe()}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, loaded: LoadedSettings, pm: pluggy.PluginManager) -> int:
    def reload() -> LoadedSettings:
        # A fresh manager: the running plugins stay as they are until a restart.
        return load(args, make_manager())

    server = loaded.settings.server
    if server.workers == 1:
        binder = Exclusive(server.backlog)
        # Before the app is built: a port in use stops start-up before any
        # plugin opens its journal.
        binder.hold("http", server.host, server.port)
        try:
            if server.uds is not None:
                binder.hold(UNIX_LISTENER, f"{UNIX}{server.uds}", 0)
            run_worker(loaded, pm, reload=reload, binder=binder)
        finally:
            binder.release()
        return 0
    return supervise(
        loaded, lambda settings, index, binder: run_worker(settings, pm, index, reload, binder)
    )


def _reader_gone() -> int:
    """The reader of standard output has gone (``| head``): stop quietly, as
    other tools do. Standard output then points at /dev/null, so that the
    interpreter's last flush cannot fail a second time."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _main(argv)
        # Flushed here, not at exit, so a reader that left is seen below.
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return status


def _main(argv: Sequence[str] | None) -> int:
    try:
        # Built-ins and installed plugins: they may add commands (sprintd top).
        pm = make_manager()
        args = _parser(pm).parse_args(argv)
        if args.command == "tiers":
            _print_tiers()
            return 0
        handler = getattr(args, "command_handler", None)
        if handler is not None:
            status: int = handler(args)
            return status
        configure_logging()
        loaded = load(args, pm)
        configure_logging(loaded.settings.log.format)
        if args.command == "config":
            _print_config(loaded)
            return 0
        if args.command == "journal":
            return _journal(args, loaded)
        return _run(args, loaded, pm)
    except ConfigError as exc:
        print(f"sprintd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ListenError as exc:
        print(f"sprintd: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
