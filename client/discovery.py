"""Where the daemon's configuration file is, and the socket it names: the part of the daemon's
settings rule (``hfd.daemon.settings``) the client needs to find a daemon the way ``hfd ps``
does, with only the standard library (the client must not import the daemon's settings, which
pull in pydantic, platformdirs and the daemon). ``tests/unit/test_client_discovery.py`` checks
both give the same answers.

The config file, as the daemon looks for it:

1. ``$HFD_CONFIG_FILE``;
2. the system service (``HFD_SYSTEM=1``): ``$CONFIGURATION_DIRECTORY/config.toml``, else
   ``/etc/hfd/config.toml``;
3. a user daemon: ``$CONFIGURATION_DIRECTORY`` when set, else the user config directory
   (``$XDG_CONFIG_HOME/hfd`` or ``~/.config/hfd``; ``~/Library/Application Support/hfd`` on
   macOS), ``config.toml`` in it, when that file exists.

From it, the socket, as the daemon binds it (``ipc_path`` from anywhere wins over
``runtime_dir`` from anywhere; within each, the environment wins over the file):
``$HFD_IPC_PATH``, ``[ipc] path``, ``$HFD_RUNTIME_DIR/hfd.sock``, ``[paths] runtime_dir/hfd.sock``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the daemon's dependency list installs tomli there
    import tomli as tomllib

APP_NAME = "hfd"
CONFIG_NAME = "config.toml"
_TRUE = ("1", "true", "yes")


def _first_dir(value: str | None) -> Path | None:
    return Path(value.split(":")[0]) if value else None


def user_config_dir(environ: Mapping[str, str]) -> Path:
    """platformdirs' ``user_config_dir("hfd")`` on Linux and macOS."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    xdg = environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / APP_NAME


def config_dir(environ: Mapping[str, str]) -> Path:
    configured = _first_dir(environ.get("CONFIGURATION_DIRECTORY"))
    if environ.get("HFD_SYSTEM", "").lower() in _TRUE:
        return configured or Path("/etc/hfd")
    return configured or user_config_dir(environ)


def config_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file the daemon would read, or None when there is none."""
    env = os.environ if environ is None else environ
    if env.get("HFD_CONFIG_FILE"):
        return Path(os.path.expanduser(env["HFD_CONFIG_FILE"]))
    candidate = config_dir(env) / CONFIG_NAME
    return candidate if candidate.is_file() else None


def _setting(data: Mapping[str, Any], section: str, key: str) -> Any:
    """``[section] key`` (or ``[section] section_key``), or the top-level ``section_key``/``key``
    — the spellings the daemon's TOML reader accepts."""
    table = data.get(section)
    if isinstance(table, dict):
        for name in (key, f"{section}_{key}"):
            if name in table:
                return table[name]
    full = key if key.startswith(f"{section}_") else f"{section}_{key}"
    return data.get(full, data.get(key))


def config_socket(environ: Mapping[str, str] | None = None) -> tuple[Path | None, Path | None]:
    """(``[ipc] path``, ``[paths] runtime_dir`` + ``hfd.sock``) from the config file, each None
    when not set; both None when there is no config file or it cannot be read (the daemon
    would refuse to start with it, and says why)."""
    path = config_file(environ)
    if path is None:
        return None, None
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None, None
    ipc_path = _setting(data, "ipc", "path")
    runtime = _setting(data, "paths", "runtime_dir")
    return (
        Path(os.path.expanduser(ipc_path)) if isinstance(ipc_path, str) and ipc_path else None,
        Path(os.path.expanduser(runtime)) / "hfd.sock" if isinstance(runtime, str) and runtime else None,
    )
