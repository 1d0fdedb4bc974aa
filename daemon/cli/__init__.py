"""The ``hfd`` command line.

``hfd serve`` (and ``hfd doctor``, which checks them) take every daemon setting as a flag
(``--http-port``, ``--state-dir`` ..., one per setting, see docs/settings.md). The other
commands take only the settings that apply to them (:data:`COMMAND_SETTINGS`): the client
commands where the daemon is (``hfd ps --ipc-path X`` talks to the daemon that ``hfd serve
--ipc-path X`` started), the store commands the store's, ``keys`` and ``stats`` the state
directory; every setting still applies to all of them through ``HFD_*`` and the config file.
Subcommands live in small modules, each with an ``add_parsers(subparsers)`` that registers its
commands with a handler ``(args, settings) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Final

from hfd import __version__
from hfd.daemon.settings import Settings, SettingsError, load_settings

# Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "hfd.daemon.cli.serve",
    "hfd.daemon.cli.client_cmds",
    "hfd.daemon.cli.store_cmds",
    "hfd.daemon.cli.doctor",
    "hfd.daemon.cli.admin_cmds",
    "hfd.daemon.cli.completion",
)


# The settings a command takes as flags (None: all of them).
CLIENT_SETTINGS: Final = ("config_file", "runtime_dir", "ipc_path")
STATE_SETTINGS: Final = ("config_file", "state_dir")
STORE_SETTINGS: Final = (
    "config_file", "state_dir", "cache_dir", "hf_cache_dir", "models", "log_level", "log_format",
    *(f.name for f in fields(Settings) if f.metadata["section"] in ("store", "ipfs", "hub")),
)  # fmt: skip
COMMAND_SETTINGS: Final[dict[str, tuple[str, ...] | None]] = {
    "serve": None,
    "doctor": None,
    **dict.fromkeys(("ps", "embed", "run", "load", "tune", "unload"), CLIENT_SETTINGS),
    **dict.fromkeys(("pull", "ls", "show", "rm", "verify", "publish", "export", "import"), STORE_SETTINGS),
    **dict.fromkeys(("keys", "stats"), STATE_SETTINGS),
    **dict.fromkeys(("version", "completion"), ("config_file",)),
}


def settings_parent(names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """A parent parser with one flag per setting in ``names`` (None: every setting); all
    default to None = not given."""
    parent = argparse.ArgumentParser(add_help=False)
    title = "settings" if names is None else "settings for this command"
    group = parent.add_argument_group(f"{title} (override HFD_* and the config file)")
    for f in fields(Settings):
        if names is not None and f.name not in names:
            continue
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
    sub.required = True
    with_settings = _WithParents(sub)
    version = with_settings.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        register = getattr(module, "add_parsers", None) or module.add_parser
        register(with_settings)
    return parser


class _WithParents:
    """Wraps the subparsers action so every command gets the flags of its settings
    (:data:`COMMAND_SETTINGS`; a command not listed there gets all of them)."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub
        self._parents: dict[tuple[str, ...] | None, argparse.ArgumentParser] = {}

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        names = COMMAND_SETTINGS.get(name)
        if names not in self._parents:
            self._parents[names] = settings_parent(names)
        kwargs["parents"] = [*kwargs.get("parents", []), self._parents[names]]
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
