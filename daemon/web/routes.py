"""Routes answered by the door from the web module (rows of ``hfd.daemon.operations`` with no
service call): ``openapi``, ``web``, ``web.static``, ``usage.recent``.

Static files are read into memory once, when the app is made (a few tens of kilobytes), so a
path from a client is only ever a key into that dict: nothing under ``/web/`` can reach the
file system. Each is sent with its content type, an ETag, ``Cache-Control: no-cache`` (the
browser revalidates, and gets 304, so a daemon upgrade is seen at the next load) and a strict
Content-Security-Policy: scripts and styles only from the daemon, no inline script, no
framing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfd.client.errors import InvalidRequest, NotFound
from hfd.daemon import openapi
from hfd.daemon.access.auth import keys_required
from hfd.daemon.access.control import Access
from hfd.daemon.http.errors import error_response
from hfd.daemon.operations import Operation
from hfd.daemon.settings import Settings

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
RECENT_DEFAULT: Final = 50
RECENT_MAX: Final = 500


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def static_files() -> dict[str, StaticFile]:
    """The page's files, by name under ``/web/``."""
    out: dict[str, StaticFile] = {}
    root = resources.files("hfd.daemon.web") / "static"
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        out[entry.name] = StaticFile(body, _TYPES[suffix], etag)
    return out


def _send(request: Request, file: StaticFile) -> Response:
    headers = {"ETag": file.etag, "Cache-Control": "no-cache", **_SECURITY_HEADERS}
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


def routes(settings: Settings, access: Access, served: Callable[[Operation], bool]) -> dict[str, Route]:
    """The routes by operation name; the page's only with ``http_web``. ``served`` says which
    rows the door serves (the OpenAPI document lists those), read when the document is made."""
    cache: dict[str, bytes] = {}

    async def openapi_json(request: Request) -> Response:
        if "doc" not in cache:  # made on first use: every row is in the table by then
            doc = openapi.document(served=served, keys_required=keys_required(settings))
            cache["doc"] = json.dumps(doc, separators=(",", ":")).encode()
        return Response(cache["doc"], media_type="application/json", headers={"Cache-Control": "no-cache"})

    async def usage_recent(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", RECENT_DEFAULT))
        except ValueError:
            limit = -1
        if not 1 <= limit <= RECENT_MAX:
            return error_response(InvalidRequest(f"limit must be 1..{RECENT_MAX}", param="limit"))
        log = access.usage
        if log is None:
            return JSONResponse({"data": []})
        rows = await anyio.to_thread.run_sync(log.recent, limit)
        return JSONResponse({"data": rows})

    out = {
        "openapi": Route("/openapi.json", openapi_json, methods=["GET"]),
        "usage.recent": Route("/api/usage/recent", usage_recent, methods=["GET"]),
    }
    if settings.http_web:
        files = static_files()
        index = files["index.html"]

        async def page(request: Request) -> Response:
            return _send(request, index)

        async def asset(request: Request) -> Response:
            file = files.get(request.path_params["path"])
            if file is None:
                return error_response(NotFound(f"no file {request.url.path}"))
            return _send(request, file)

        out["web"] = Route("/", page, methods=["GET"])
        out["web.static"] = Route("/web/{path:path}", asset, methods=["GET"])
    return out
