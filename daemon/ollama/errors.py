"""Errors on the Ollama routes, in Ollama's shape: ``{"error": "<message>"}`` with the status
Ollama gives (400 for a bad request, 404 for a model it does not have). The message and status
come from hfd's one error tree and its public-message rules (``hfd.daemon.http.errors``): a
validation error (hfd's 422) is a 400 here, as Ollama answers every malformed request."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from hfd.client.errors import HfdError
from hfd.daemon.http.errors import as_hfd_error, error_headers, public_message


def status_of(err: HfdError) -> int:
    return 400 if err.status == 422 else err.status


def error_line(exc: BaseException) -> dict[str, Any]:
    return {"error": public_message(as_hfd_error(exc))}


def error_response(exc: BaseException, *, method: str = "", path: str = "") -> JSONResponse:
    err = as_hfd_error(exc, method=method, path=path)
    return JSONResponse(
        {"error": public_message(err)}, status_code=status_of(err), headers=error_headers(err)
    )
