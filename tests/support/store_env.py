"""Settings for a throw-away model store in a test's tmp directory."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from hfd.daemon.settings import Settings, load_settings


def closed_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_settings(tmp: Path, **overrides: Any) -> Settings:
    """Every source off unless the test turns it on: no HF cache, Hub offline, IPFS unreachable."""
    cli: dict[str, Any] = {
        "state_dir": tmp / "state",
        "cache_dir": tmp / "cache",
        "runtime_dir": tmp / "run",
        "store_use_hf_cache": False,
        "hub_offline": True,
        "ipfs_api": f"/ip4/127.0.0.1/tcp/{closed_port()}",
        "ipfs_connect_timeout": 2.0,
        "ipfs_timeout": 30.0,
    }
    cli.update(overrides)
    return load_settings(cli=cli, environ={})
