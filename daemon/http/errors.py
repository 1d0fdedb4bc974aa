"""The one place where errors become HTTP responses.

Every error leaves the HTTP door as the OpenAI envelope ``{"error": {"message", "type",
"param", "code"}}`` with the status of its class in ``hfd.client.errors``; errors that say when
to come back (``Overloaded``, ``RateLimited``, ``ModelUnavailable``) add ``Retry-After``. An
exception that is not an ``HfdError`` is a bug: it is logged with its traceback and answered
with a 500 ``internal_error`` that reveals nothing of it.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from hfd.client.errors import HfdError, InternalError, MethodNotAllowed, NotFound

log = logging.getLogger(__name__)


def as_hfd_error(exc: BaseException, *, method: str = "", path: str = "") -> HfdError:
    """The error tree's view of any exception (unexpected ones are logged here, once)."""
    if isinstance(exc, HfdError):
        return exc
    if isinstance(exc, HTTPException):
        # Raised by Starlette's router for unknown routes and wrong methods.
        if exc.status_code == 404:
            return NotFound(f"no route {method} {path}".strip(), details={"path": path} if path else None)
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            return MethodNotAllowed(
                f"method {method} is not allowed on {path}" + (f"; allowed: {allow}" if allow else ""),
                details={"allow": allow} if allow else None,
            )
        err = HfdError(str(exc.detail))
        err.status = exc.status_code  # type: ignore[misc]
        return err
    log.error(
        "unexpected error while serving a request",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"method": method, "path": path, "error_type": type(exc).__name__},
    )
    return InternalError("internal error; the daemon's log has the details")


def error_body(err: HfdError) -> dict[str, Any]:
    return {"error": err.to_dict()}


def error_headers(err: HfdError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if err.retry_after is not None:
        # Retry-After takes whole seconds; round up so a client never comes back too early.
        headers["Retry-After"] = str(max(0, math.ceil(err.retry_after)))
    allow = err.details.get("allow") if isinstance(err, MethodNotAllowed) else None
    if allow:
        headers["Allow"] = str(allow)
    return headers


def error_response(exc: BaseException, *, method: str = "", path: str = "") -> JSONResponse:
    err = as_hfd_error(exc, method=method, path=path)
    return JSONResponse(error_body(err), status_code=err.status, headers=error_headers(err))


def sse_error_event(exc: BaseException) -> bytes:
    """An error after a stream started: the last SSE event, in the same envelope."""
    err = as_hfd_error(exc)
    return b"data: " + json.dumps(error_body(err), separators=(",", ":")).encode() + b"\n\n"
