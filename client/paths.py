"""Where the daemon's IPC socket is, by the same rule the daemon binds it.

The daemon reads its settings with ``hfd.daemon.settings``, which the client must not import
(it pulls in platformdirs and the daemon). This is the small part of that rule the client
needs, kept in step by a test (``tests/unit/test_client_paths.py``):

1. ``$HFD_IPC_PATH``, then the config file's ``[ipc] path``;
2. ``$HFD_RUNTIME_DIR/hfd.sock``, then the config file's ``[paths] runtime_dir`` (the file
   found as the daemon finds it, ``$HFD_CONFIG_FILE`` first: ``hfd.client.discovery``);
3. the system service (``HFD_SYSTEM=1``): ``$RUNTIME_DIRECTORY/hfd.sock``, else ``/run/hfd/hfd.sock``;
4. a user daemon: ``$RUNTIME_DIRECTORY`` (set by systemd for a user unit), else the user runtime
   directory platformdirs picks (``$XDG_RUNTIME_DIR/hfd``, ``/run/user/<uid>/hfd``, or
   ``<tmp>/runtime-<uid>/hfd``; ``~/Library/Caches/TemporaryItems/hfd`` on macOS);
5. the system service's ``/run/hfd/hfd.sock``, so a user on a box running the system
   service finds it with no configuration.

Among 4 and 5 the first socket that exists wins; platformdirs checks the runtime directory's
owner and mode before it uses one, and probing for the socket sidesteps duplicating those checks.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from hfd.client.discovery import config_socket

SOCKET_NAME = "hfd.sock"
SYSTEM_RUNTIME_DIR = Path("/run/hfd")
_TRUE = ("1", "true", "yes")


def _first_dir(value: str | None) -> Path | None:
    # systemd passes several directories separated by ':' when a unit names several.
    return Path(value.split(":")[0]) if value else None


def _expand(value: str) -> Path:
    return Path(os.path.expanduser(value))


def socket_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The places the daemon's socket may be, most specific first."""
    env = os.environ if environ is None else environ
    if env.get("HFD_IPC_PATH"):
        return [_expand(env["HFD_IPC_PATH"])]
    file_ipc_path, file_runtime = config_socket(env)
    if file_ipc_path is not None:
        return [file_ipc_path]
    if env.get("HFD_RUNTIME_DIR"):
        return [_expand(env["HFD_RUNTIME_DIR"]) / SOCKET_NAME]
    if file_runtime is not None:
        return [file_runtime]
    runtime = _first_dir(env.get("RUNTIME_DIRECTORY"))
    if env.get("HFD_SYSTEM", "").lower() in _TRUE:
        return [(runtime or SYSTEM_RUNTIME_DIR) / SOCKET_NAME]
    if runtime is not None:
        return [runtime / SOCKET_NAME, SYSTEM_RUNTIME_DIR / SOCKET_NAME]
    dirs: list[Path] = []
    if sys.platform == "darwin":
        dirs.append(Path.home() / "Library" / "Caches" / "TemporaryItems" / "hfd")
    else:
        xdg = env.get("XDG_RUNTIME_DIR")
        if xdg and os.path.isabs(xdg):
            dirs.append(Path(xdg) / "hfd")
        uid = os.geteuid() if hasattr(os, "geteuid") else 0
        dirs.append(Path(f"/run/user/{uid}") / "hfd")
        dirs.append(Path(tempfile.gettempdir()) / f"runtime-{uid}" / "hfd")
        cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        dirs.append(Path(cache) / "hfd" / "run")
    return [*(d / SOCKET_NAME for d in dirs), SYSTEM_RUNTIME_DIR / SOCKET_NAME]


def default_socket(environ: Mapping[str, str] | None = None) -> Path:
    """The first candidate whose socket exists, else the most likely one (for messages)."""
    candidates = socket_candidates(environ)
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


def default_endpoint(environ: Mapping[str, str] | None = None) -> str:
    return f"ipc://{default_socket(environ)}"


def normalize_endpoint(path: str | os.PathLike[str] | None) -> str:
    """``None`` -> the default endpoint; a path -> ``ipc://path``; an endpoint as given."""
    if path is None:
        return default_endpoint()
    text = os.fspath(path)
    if "://" in text:
        return text
    return f"ipc://{_expand(text)}"


def socket_path(endpoint: str) -> Path | None:
    """The file behind an ``ipc://`` endpoint (None for other transports)."""
    if endpoint.startswith("ipc://"):
        return Path(endpoint[len("ipc://") :])
    return None
