"""How the node's failures become ``FetchError``: one shape for every call, sync or async.

``details["reason"]`` tells ``unreachable`` (nothing answered: fall back to another source at
once) from ``error`` (the node answered no, or failed mid-way).
"""

from __future__ import annotations

import json
from typing import Any, Final

from hfd.client.errors import FetchError

UNREACHABLE: Final = "unreachable"


def unreachable(api: str, exc: BaseException) -> FetchError:
    return FetchError(
        f"IPFS node at {api} is unreachable: {exc}", details={"source": "ipfs", "reason": UNREACHABLE}
    )


def failed(cmd: str, what: str) -> FetchError:
    return FetchError(f"IPFS {cmd} failed: {what}", details={"source": "ipfs", "reason": "error"})


def api_error(cmd: str, status: int, body: bytes) -> FetchError:
    """An error answer: JSON ``{"Message", "Code", "Type"}`` (or plain text) with a 4xx/5xx status."""
    message = body.decode(errors="replace").strip()[:500]
    code: Any = None
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "Message" in data:
            message, code = str(data["Message"]), data.get("Code")
    except ValueError:
        pass
    return FetchError(
        f"IPFS {cmd} failed ({status}): {message}",
        details={"source": "ipfs", "reason": "error", "status": status, "ipfs_code": code},
    )
