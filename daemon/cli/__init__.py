"""The ``hfd`` command line.

Every subcommand takes the daemon's settings as flags (``--http-port``, ``--state-dir`` ...,
one per setting, see docs/settings.md), so ``hfd ps --ipc-path X`` talks to the daemon that
``hfd serve --ipc-path X`` started. Subcommands live in small modules, each with an
``add_parsers(subparsers)`` that registers its commands with a handler
``(args, settings) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from hfd import __version__
from hfd.daemon.settings import Settings, SettingsError, load_settings

# Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "hfd.daemon.cli.serve",
    "hfd.daemon.cli.client_cmds",
    "hfd.daemon.cli.store_cmds",
    "hfd.daemon.cli.doctor",
    "hfd.daemon.cli.admin_cmds",
)


def settings_parent() -> argparse.ArgumentParser:
    """A parent parser with one flag per setting (all default to None = not given)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings (override HFD_* and the config file)")
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "models":
            group.add_argument(
                "--model",
                dest="models",
                action="append",
                metavar="[ALIAS=]REF",
                help="serve this model (repeatable): a directory, org/name[@rev] or ipfs://cid",
            )
            continue
        aliases = ["--config"] if f.name == "config_file" else []
        group.add_argument(
            flag,
            *aliases,
            dest=f.name,
            default=None,
            metavar=f.name.split("_")[-1].upper(),
            help=f.metadata["help"].replace("%", "%%"),
        )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfd", description="A per-machine model daemon.")
    parser.add_argument("--version", action="version", version=f"hfd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = settings_parent()
    sub.required = True
    version = sub.add_parser("version", help="print the version", parents=[parent])
    version.set_defaults(handler=_version)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        register = getattr(module, "add_parsers", None) or module.add_parser
        register(_WithParents(sub, parent))
    return parser


class _WithParents:
    """Wraps the subparsers action so every command gets the settings flags."""

    def __init__(self, sub: Any, parent: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._parent = parent

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs["parents"] = [*kwargs.get("parents", []), self._parent]
        return self._sub.add_parser(name, **kwargs)  # type: ignore[no-any-return]


def _version(args: argparse.Namespace, settings: Settings) -> int:
    print(f"hfd {__version__}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli = {f.name: getattr(args, f.name, None) for f in fields(Settings)}
    try:
        settings = load_settings(cli=cli)
    except SettingsError as exc:
        print(f"hfd: {exc}", file=sys.stderr)
        return 2
    handler = args.handler
    try:
        return int(handler(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
