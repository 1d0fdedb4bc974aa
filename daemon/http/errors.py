"""The one place where errors become HTTP responses.

Every error leaves the HTTP door as the OpenAI envelope ``{"error": {"message", "type",
"param", "code"}}`` with the status of its class in ``hfd.client.errors``; errors that say when
to come back (``Overloaded``, ``RateLimited``, ``ModelUnavailable``) add ``Retry-After``. An
exception that is not an ``HfdError`` is a bug: it is logged with its traceback and answered
with a 500 ``internal_error`` that reveals nothing of it.

This is also the door's last line of defence against disclosing internals: whatever raised
the error, a client never reads a filesystem path of this machine, an engine binding's
signature dump, or (for a 5xx) the text of a foreign exception the error was built from. Those
go to the log with the request's id; the client gets the same code and status with a message
that says the log has the details.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from hfd.client.errors import Cancelled, HfdError, InternalError, MethodNotAllowed, NotFound, RequestTimeout
from hfd.daemon import reqctx

log = logging.getLogger(__name__)


def as_hfd_error(exc: BaseException, *, method: str = "", path: str = "") -> HfdError:
    """The error tree's view of any exception (unexpected ones are logged here, once)."""
    if isinstance(exc, HfdError):
        return exc
    if isinstance(exc, ClientDisconnect):
        log.info(
            "client disconnected before its request body was read", extra={"method": method, "path": path}
        )
        return Cancelled("the client disconnected")
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


# An absolute path whose first component is a directory of this machine (/home/..., /tmp/...,
# C:\\Users\\...): URL paths such as /v1/models are left alone.
_POSIX_PATH = re.compile(r"(?<![\w.~-])/([\w.@+-]+)(?:/[^\s'\"`,;()\[\]{}<>]*)?")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\[^\s'\"`,;()\[\]{}<>]*")
# pybind11's "incompatible function arguments" dump lists the binding's C++ signatures.
_BINDING_DUMP = re.compile(r"(incompatible function arguments|argument types are supported|Invoked with:)")
_HIDDEN = "<path>"
_LOGGED = "details are in the daemon's log"


def _hide_paths(text: str) -> str:
    ctx = reqctx.current()
    sent = ctx.model if ctx is not None else None  # the client's own model reference is no secret

    def posix(m: re.Match[str]) -> str:
        found = m.group(0)
        if sent and found in sent:
            return found
        return _HIDDEN if os.path.isdir("/" + m.group(1)) and found != "/" + m.group(1) + "/" else found

    return _WINDOWS_PATH.sub(_HIDDEN, _POSIX_PATH.sub(posix, text))


def _foreign_texts(err: BaseException) -> list[str]:
    """The messages of the non-HfdError exceptions an error was raised from."""
    texts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if cur is not err and not isinstance(cur, HfdError):
            text = str(cur).strip()
            if len(text) >= 8:
                texts.append(text)
        cur = cur.__cause__ or cur.__context__
    return texts


def public_message(err: HfdError) -> str:
    """The error's message as a client may read it."""
    message = str(err.message)
    if err.status >= 500:
        for text in _foreign_texts(err):
            if text in message:
                message = message.replace(text, _LOGGED)
                continue
            # Quoted in part (its first line, or a truncated head): cut from there.
            head = text.splitlines()[0][:40]
            at = message.find(head) if len(head) >= 8 else -1
            if at >= 0:
                message = message[:at] + _LOGGED
    dump = _BINDING_DUMP.search(message)
    if dump is not None:
        message = message[: dump.start()].rstrip(" :.\n") or "invalid argument"
        message += f" ({_LOGGED})"
    return _hide_paths(message)


def _public_value(value: Any) -> Any:
    if isinstance(value, str):
        return _hide_paths(value)
    if isinstance(value, dict):
        return {k: _public_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_public_value(v) for v in value]
    return value


def error_body(err: HfdError) -> dict[str, Any]:
    body = err.to_dict()
    message = public_message(err)
    if message != body["message"]:
        log.warning(
            "error message withheld from the client",
            extra={"code": err.code, "status": err.status, "error": body["message"], "sent": message},
        )
        body["message"] = message
    if "details" in body:
        body["details"] = _public_value(body["details"])
    return {"error": body}


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
    headers = error_headers(err)
    if isinstance(err, RequestTimeout):
        headers["Connection"] = "close"  # the rest of the body may still come: not reusable
    return JSONResponse(error_body(err), status_code=err.status, headers=headers)


def sse_error_event(exc: BaseException) -> bytes:
    """An error after a stream started: the last SSE event, in the same envelope."""
    err = as_hfd_error(exc)
    return b"data: " + json.dumps(error_body(err), separators=(",", ":")).encode() + b"\n\n"


Endpoint = Callable[[Request], Awaitable[Response]]
ErrorMapping = Callable[..., Response]  # (exc, *, method, path) -> the error reply


def guarded(fn: Endpoint, errors: ErrorMapping = error_response) -> Endpoint:
    """``fn``, with every exception it raises answered by ``errors`` (this door's mapping, or
    Ollama's or Anthropic's own envelope), so nothing a client sends can take the daemon down."""

    @functools.wraps(fn)
    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:
            return errors(exc, method=request.method, path=request.url.path)

    return run
