"""The ``sprintd`` command: run, config, tiers.

Any configuration that cannot start exits with status 2 and one line naming
the field, the value and where it came from.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .manager import apply_enabled, make_manager, plugin_sections
from .server.workers import supervise
from .settings import EXIT_CONFIG, ConfigError, LoadedSettings, load_settings, read_plugin_names
from .tiers import TIERS, load_profile
from .worker import run_worker

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sprintd", description="A tier-tuned, low-latency service daemon."
    )
    parser.add_argument("--version", action="version", version=f"sprintd {__version__}")
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
    return parser


def _cli_layer(args: argparse.Namespace) -> dict[str, tuple[tuple[str, ...], Any]]:
    return {
        "--tier": (("tier",), args.tier),
        "--host": (("server", "host"), args.host),
        "--port": (("server", "port"), args.port),
        "--workers": (("server", "workers"), args.workers),
        "--data-dir": (("data_dir",), args.data_dir),
    }


def load(args: argparse.Namespace) -> tuple[LoadedSettings, Any]:
    """Settings and the plugin manager, from every layer.

    Raises:
        ConfigError: with the one line to show.
    """
    config = args.config or os.environ.get("SPRINTD_CONFIG") or None
    pm = make_manager(read_plugin_names(config))
    loaded = load_settings(cli=_cli_layer(args), config_path=config, sections=plugin_sections(pm))
    apply_enabled(pm, loaded.settings)
    return loaded, pm


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


def _run(args: argparse.Namespace, loaded: LoadedSettings, pm: Any) -> int:
    def reload() -> LoadedSettings:
        return load(args)[0]

    if loaded.settings.server.workers == 1:
        run_worker(loaded, pm, reload=reload)
        return 0
    return supervise(loaded, lambda settings, index: run_worker(settings, pm, index, reload))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tiers":
        _print_tiers()
        return 0
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s sprintd[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    try:
        loaded, pm = load(args)
        if args.command == "config":
            _print_config(loaded)
            return 0
        return _run(args, loaded, pm)
    except ConfigError as exc:
        print(f"sprintd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
