"""Taking over a unix socket path at start-up, for both doors: a stale socket file left by a
daemon that died is removed; a live one (something answers a connect) or a file that is not a
socket is never replaced."""

from __future__ import annotations

import errno
import logging
import socket
import stat
from pathlib import Path

log = logging.getLogger(__name__)


def claim_socket_path(path: Path) -> None:
    """Make room for binding at ``path``: remove a stale socket, refuse a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing a stale unix socket", extra={"path": str(path)})
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
