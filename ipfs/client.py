"""An async client for the Kubo RPC API (also spoken by js-ipfs), on httpx.

Every call is ``POST /api/v0/<cmd>?arg=...``. Failures come back as JSON
``{"Message", "Code", "Type"}`` with a 4xx/5xx status, as ``{"Type": "error"}`` objects inside
newline-delimited JSON streams, or, once a byte stream has started, only in an
``X-Stream-Error`` HTTP trailer. httpx does not expose trailers, so a stream announced with
that trailer is checked for its full length instead (and every file is verified by digest
anyway). Every failure becomes ``FetchError`` with ``details["reason"]`` telling
``unreachable`` (fall back to another source) from ``error`` (the node answered no).

The connect timeout is short on purpose: a box whose IPFS node is down must fall back to the
Hub at once, not hang.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx

from hfd.client.errors import FetchError
from hfd.ipfs.cid import normalize_cid
from hfd.ipfs.errors import api_error, unreachable
from hfd.ipfs.multiaddr import parse_api_address
from hfd.ipfs.stream import stream_post

log = logging.getLogger(__name__)

STREAM_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class ImportOptions:
    """UnixFS import settings. The same bytes give the same CID only under the same settings."""

    cid_version: int = 1
    raw_leaves: bool = True
    chunker: str = "size-262144"
    hash: str = "sha2-256"

    def params(self) -> dict[str, str]:
        return {
            "cid-version": str(self.cid_version),
            "raw-leaves": str(self.raw_leaves).lower(),
            "chunker": self.chunker,
            "hash": self.hash,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "cid_version": self.cid_version,
            "raw_leaves": self.raw_leaves,
            "chunker": self.chunker,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AddEntry:
    """One part of a directory add: ``path`` is relative to the added root; ``source`` None is a directory."""

    path: str
    source: Path | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Link:
    name: str
    cid: str
    size: int
    is_dir: bool


class KuboClient:
    def __init__(
        self,
        api: str,
        *,
        auth: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 2.0,
    ) -> None:
        address = parse_api_address(api)
        self.api = api
        self._address = address
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        headers = {"Authorization": auth} if auth else {}
        self._headers = headers
        transport = httpx.AsyncHTTPTransport(uds=address.uds) if address.uds else None
        self._http = httpx.AsyncClient(
            base_url=address.base_url + "/api/v0/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            verify=_tls_context(),
            # The node is local or configured explicitly; never pick up a proxy from the environment.
            trust_env=False,
        )

    async def __aenter__(self) -> KuboClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing

    def _request(
        self, cmd: str, args: Sequence[str], params: dict[str, str] | None, **kw: Any
    ) -> httpx.Request:
        query: list[tuple[str, str | int | float | bool | None]] = [("arg", a) for a in args]
        query += list((params or {}).items())
        return self._http.build_request("POST", cmd, params=query, **kw)

    async def _send(self, request: httpx.Request, cmd: str) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise unreachable(self.api, exc) from exc
        except httpx.HTTPError as exc:
            raise FetchError(
                f"IPFS {cmd} failed: {exc!r}", details={"source": "ipfs", "reason": "error"}
            ) from exc
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            raise api_error(cmd, response.status_code, body)
        return response

    @asynccontextmanager
    async def _stream(
        self, cmd: str, args: Sequence[str] = (), params: dict[str, str] | None = None, **kw: Any
    ) -> AsyncIterator[httpx.Response]:
        response = await self._send(self._request(cmd, args, params, **kw), cmd)
        try:
            yield response
        except httpx.HTTPError as exc:
            raise FetchError(
                f"IPFS {cmd} failed mid-stream: {exc!r}", details={"source": "ipfs", "reason": "error"}
            ) from exc
        finally:
            await response.aclose()

    async def _json(self, cmd: str, args: Sequence[str] = (), params: dict[str, str] | None = None) -> Any:
        async with self._stream(cmd, args, params) as response:
            body = await response.aread()
        try:
            return json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise FetchError(f"IPFS {cmd}: the node answered with something that is not JSON") from exc

    async def _ndjson(
        self, cmd: str, args: Sequence[str] = (), params: dict[str, str] | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with self._stream(cmd, args, params, **kw) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                obj = json.loads(line)
                if isinstance(obj, dict) and obj.get("Type") == "error":
                    raise FetchError(
                        f"IPFS {cmd}: {obj.get('Message', 'error')}",
                        details={"source": "ipfs", "reason": "error"},
                    )
                out.append(obj)
        return out

    # ------------------------------------------------------------------ commands

    async def version(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("version")
        return result

    async def id(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("id")
        return result

    @asynccontextmanager
    async def cat(
        self, path: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a file's bytes. ``path`` is a CID or ``/ipfs/<cid>/<path>``."""
        params: dict[str, str] = {}
        if offset:
            params["offset"] = str(offset)
        if length is not None:
            params["length"] = str(length)
        async with self._stream("cat", [path], params) as response:
            yield response.aiter_bytes(STREAM_CHUNK)

    async def cat_into(
        self,
        path: str,
        consume: Callable[[memoryview], object],
        *,
        offset: int = 0,
        length: int | None = None,
    ) -> int:
        """Stream a file into ``consume`` (called on a worker thread) at close to wire speed; returns
        the bytes read. For large bodies; see ``hfd.ipfs.stream``."""
        params = [("arg", path)]
        if offset:
            params.append(("offset", str(offset)))
        if length is not None:
            params.append(("length", str(length)))
        run = functools.partial(
            stream_post,
            self._address,
            "cat",
            params,
            consume,
            headers=self._headers,
            connect_timeout=self._connect_timeout,
            read_timeout=self._timeout,
            tls=_tls_context(),
            api=self.api,
        )
        return await anyio.to_thread.run_sync(run)

    async def cat_bytes(self, path: str, *, max_bytes: int) -> bytes:
        buf = bytearray()
        async with self.cat(path) as chunks:
            async for chunk in chunks:
                buf += chunk
                if len(buf) > max_bytes:
                    raise FetchError(
                        f"IPFS object {path} is larger than {max_bytes} bytes", details={"source": "ipfs"}
                    )
        return bytes(buf)

    async def ls(self, path: str) -> list[Link]:
        data = await self._json("ls", [path])
        links: list[Link] = []
        for obj in data.get("Objects") or []:
            for link in obj.get("Links") or []:
                links.append(
                    Link(
                        str(link["Name"]),
                        normalize_cid(str(link["Hash"])),
                        int(link.get("Size") or 0),
                        int(link.get("Type", 2)) == 1,
                    )
                )
        return links

    async def add(
        self, root: str, entries: Sequence[AddEntry], *, options: ImportOptions, pin: bool = True
    ) -> dict[str, str]:
        """Add a directory named ``root`` holding ``entries``; returns ``{path: cid}`` with ``""`` for the root."""
        boundary = uuid.uuid4().hex
        parts = _multipart_parts(root, entries, boundary)
        length = sum(len(head) + size for head, _src, size in parts) + len(f"--{boundary}--\r\n")

        async def body() -> AsyncIterator[bytes]:
            for head, src, _size in parts:
                yield head
                if isinstance(src, bytes):
                    yield src
                elif isinstance(src, Path):
                    with src.open("rb") as fh:
                        while chunk := await anyio.to_thread.run_sync(fh.read, STREAM_CHUNK):
                            yield chunk
                yield b"\r\n"
            yield f"--{boundary}--\r\n".encode()

        params = {**options.params(), "pin": str(pin).lower(), "progress": "false", "quieter": "false"}
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
        rows = await self._ndjson("add", (), params, content=body(), headers=headers)
        out: dict[str, str] = {}
        for row in rows:
            name = str(row.get("Name", ""))
            if name == root:
                out[""] = normalize_cid(str(row["Hash"]))
            elif name.startswith(root + "/"):
                out[name[len(root) + 1 :]] = normalize_cid(str(row["Hash"]))
        if "" not in out:
            raise FetchError(
                f"IPFS add did not report the root directory {root!r}", details={"source": "ipfs"}
            )
        return out

    async def pin_add(self, cid: str) -> None:
        await self._json("pin/add", [cid], {"recursive": "true"})

    async def pins(self, cid: str) -> bool:
        try:
            data = await self._json("pin/ls", [cid], {"type": "recursive"})
        except FetchError:
            return False
        return bool(data.get("Keys"))

    async def swarm_connect(self, addr: str) -> None:
        await self._json("swarm/connect", [addr])

    async def swarm_peers(self) -> list[str]:
        data = await self._json("swarm/peers")
        return [str(p.get("Peer")) for p in data.get("Peers") or []]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Building a context loads the CA bundle (~0.1 s); every client of the process shares one.
    return ssl.create_default_context()


def _multipart_parts(
    root: str, entries: Sequence[AddEntry], boundary: str
) -> list[tuple[bytes, bytes | Path | None, int]]:
    """(part header, content, content size) for the root directory, its sub-directories and files."""
    dirs: set[str] = set()
    for entry in entries:
        pieces = entry.path.split("/")
        for i in range(1, len(pieces)):
            dirs.add("/".join(pieces[:i]))

    def head(name: str, ctype: str) -> bytes:
        return (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quote(name, safe="")}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()

    parts: list[tuple[bytes, bytes | Path | None, int]] = [(head(root, "application/x-directory"), None, 2)]
    for d in sorted(dirs):
        parts.append((head(f"{root}/{d}", "application/x-directory"), None, 2))
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.data is not None:
            parts.append(
                (head(f"{root}/{entry.path}", "application/octet-stream"), entry.data, len(entry.data) + 2)
            )
        elif entry.source is not None:
            size = os.stat(entry.source).st_size
            parts.append((head(f"{root}/{entry.path}", "application/octet-stream"), entry.source, size + 2))
    return parts
