"""Admin answers both doors give the same way (the HTTP ``/api/*`` routes and IPC ops)."""

from __future__ import annotations

from typing import Any

import anyio

from hfd import __version__
from hfd.client.errors import NotSupported
from hfd.client.protocol import PROTOCOL_VERSION


def version() -> dict[str, Any]:
    return {"version": __version__, "protocol": PROTOCOL_VERSION}


async def hardware() -> dict[str, Any]:
    """What the box has and which engine serves each task. Detection probes drivers and may
    take a moment, so it runs off the event loop."""
    try:
        from hfd.backends.hardware import hardware_json
    except ImportError as exc:
        raise NotSupported("hardware detection is not part of this build") from exc
    report: dict[str, Any] = await anyio.to_thread.run_sync(hardware_json)
    return report
