"""Creating the IPC socket file so that it never exists, even for an instant, with a mode
other than ``[ipc] mode``.

``bind()`` creates a unix socket file with the process umask's mode (0777 under umask 000),
and a chmod afterwards leaves a window in which anyone may connect. Changing the umask around
the bind is no fix: the umask is process-wide, and other threads create files meanwhile. So
the socket is bound inside a private directory (``mkdtemp``: mode 0700 whatever the umask)
beside the final path, given its mode and group there, and only then linked into place.
``link`` (not ``rename``) so that a socket another daemon put at the path meanwhile is never
replaced: the second daemon gets ``EADDRINUSE``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hfd.daemon.unix_paths import claim_socket_path

log = logging.getLogger(__name__)


def bind_private(path: Path, bind: Callable[[str], None], *, mode: int, group: str | None = None) -> None:
    """Bind a unix socket at ``path`` with ``bind(endpoint_path)``, with ``mode`` and ``group``
    set before the file is reachable at ``path``.

    ``bind`` binds at the path it is given (an ipc:// bind of ZeroMQ, a ``socket.bind``); the
    socket keeps working after the file is moved, since a unix socket is found by its inode.
    Raises ``OSError`` (nothing is left behind at ``path`` or beside it).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    claim_socket_path(path)
    # Short names: unix socket paths are limited to ~100 bytes, and this one is only 4 longer.
    private = Path(tempfile.mkdtemp(prefix=".b", dir=path.parent))
    staged = private / "s"
    try:
        bind(str(staged))
        try:
            os.chmod(staged, mode)
            if group:
                shutil.chown(staged, group=group)
        except (OSError, LookupError) as exc:
            raise OSError(f"cannot set the owner or mode of {path}: {exc}") from exc
        try:
            os.link(staged, path)
        except FileExistsError:
            raise OSError(errno.EADDRINUSE, f"another daemon is listening on {path}") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            # A filesystem without hard links: rename, which replaces what a racing daemon
            # bound in the instant since the path was claimed.
            os.rename(staged, path)
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()
        with contextlib.suppress(OSError):
            private.rmdir()
