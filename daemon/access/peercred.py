"""Who is on the other end of a unix socket: uid, gid and (where the OS says) pid.

Two sources:

- a plain ``AF_UNIX`` socket: ``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` (+ ``LOCAL_PEERPID``)
  on macOS and the BSDs; the kernel records them at ``connect()`` time, so they cannot be
  forged by the peer;
- a ZeroMQ ``ipc://`` connection, where libzmq hides the file descriptor: libzmq reads the
  same credentials when it accepts the connection and appends them to the peer address it hands
  the ZAP handler (``"<host>:<uid>:<gid>:<pid>"`` on Linux, ``"<host>:<uid>:<gid>:"`` on macOS).
  :func:`parse_zmq_peer_address` reads them back.

:class:`PeerPolicy` decides whether such a peer may use the daemon.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hfd.client.errors import InvalidRequest, NotSupported

# macOS <sys/un.h>: SOL_LOCAL level, LOCAL_PEERCRED (struct xucred) and LOCAL_PEERPID options.
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 0x001
_LOCAL_PEERPID = 0x002
# struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
_XUCRED = struct.Struct("=IIh2x16I")


@dataclass(frozen=True)
class PeerCred:
    uid: int
    gid: int
    pid: int | None = None
    # Supplementary groups when the OS reports them with the credentials (macOS); else empty.
    groups: tuple[int, ...] = ()


def socket_peercred(sock: socket.socket) -> PeerCred:
    """The credentials of the process at the other end of a connected ``AF_UNIX`` socket."""
    if sock.family != socket.AF_UNIX:
        raise InvalidRequest("peer credentials exist only for unix sockets")
    if hasattr(socket, "SO_PEERCRED"):  # Linux
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return PeerCred(uid=uid, gid=gid, pid=pid or None)
    if sys.platform == "darwin" or "bsd" in sys.platform:
        raw = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED.size)
        _version, uid, ngroups, *groups = _XUCRED.unpack(raw[: _XUCRED.size])
        peer_pid: int | None
        try:
            peer_pid = struct.unpack("=i", sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERPID, 4))[0]
        except OSError:  # LOCAL_PEERPID is macOS-only
            peer_pid = None
        own = tuple(groups[: max(0, ngroups)])
        return PeerCred(uid=uid, gid=own[0] if own else -1, pid=peer_pid, groups=own)
    raise NotSupported(f"peer credentials are not available on {sys.platform}")


def parse_zmq_peer_address(address: str) -> PeerCred | None:
    """Credentials from libzmq's peer address of an ``ipc://`` connection, or None.

    libzmq appends ``:uid:gid:pid`` (pid empty on macOS) to the address when it could read the
    peer's credentials; an address without them (TCP, or a libzmq built without
    ``SO_PEERCRED``) gives None, which a policy must treat as "unknown", never as allowed.
    """
    parts = address.rsplit(":", 3)
    if len(parts) != 4:
        return None
    _host, uid, gid, pid = parts
    try:
        return PeerCred(uid=int(uid), gid=int(gid), pid=int(pid) if pid else None)
    except ValueError:
        return None


def resolve_uid(user: str | int) -> int:
    """A user name or a numeric uid, as a uid; raises InvalidRequest for an unknown name."""
    return _resolve_id(user, lambda name: pwd.getpwnam(name).pw_uid, "user")


def resolve_gid(group: str | int) -> int:
    """A group name or a numeric gid, as a gid; raises InvalidRequest for an unknown name."""
    return _resolve_id(group, lambda name: grp.getgrnam(name).gr_gid, "group")


def _resolve_id(value: str | int, lookup: Callable[[str], int], what: str) -> int:
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise InvalidRequest(f"unknown {what} {text!r}") from None


def peer_groups(cred: PeerCred) -> set[int]:
    """Every group the peer is in: its gid, the groups the OS reported, the live process's
    supplementary groups (Linux ``/proc``), and the user's groups in the group database."""
    groups = {cred.gid, *cred.groups}
    if cred.pid:
        try:
            with open(f"/proc/{cred.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("Groups:"):
                        groups.update(int(g) for g in line.split()[1:])
                        break
        except OSError:  # not Linux, or the process is gone: the group database still counts
            pass
    try:
        name = pwd.getpwuid(cred.uid).pw_name
        groups.update(os.getgrouplist(name, cred.gid))
    except (KeyError, OSError):
        pass
    return groups


@dataclass(frozen=True)
class PeerPolicy:
    """Which local peers may use the IPC socket.

    ``always`` are uids let in without being listed: by default root and the daemon's own
    user (both could read the daemon's memory anyway). A peer whose credentials are unknown is
    refused.
    """

    users: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()
    always: frozenset[int] = field(default_factory=lambda: frozenset({0, os.getuid()}))

    @classmethod
    def from_names(
        cls,
        users: Iterable[str | int] = (),
        groups: Iterable[str | int] = (),
        *,
        always: Iterable[int] | None = None,
    ) -> PeerPolicy:
        kwargs = {} if always is None else {"always": frozenset(always)}
        return cls(
            users=frozenset(resolve_uid(u) for u in users),
            groups=frozenset(resolve_gid(g) for g in groups),
            **kwargs,
        )

    def allows(self, cred: PeerCred | None) -> bool:
        if cred is None:
            return False
        if cred.uid in self.always or cred.uid in self.users:
            return True
        return bool(self.groups) and bool(self.groups & peer_groups(cred))
