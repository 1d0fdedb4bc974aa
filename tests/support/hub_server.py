"""A local Hugging Face Hub-compatible HTTP endpoint on 127.0.0.1.

It implements the routes huggingface_hub's download code uses, with the Hub's headers:

- ``GET /api/models/{repo}[/revision/{rev}]``: the commit and ``siblings`` (with ``?blobs=true``:
  size, ``blobId``, and ``lfs: {sha256, size, pointerSize}`` for LFS files);
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1, or the
  sha256 for LFS), ``X-Linked-Etag``/``X-Linked-Size`` and a redirect to ``/lfs/{sha256}`` for
  LFS files, as the Hub redirects to its CDN; ``Range`` requests answer 206;
- errors with ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).

Knobs for tests: ``corrupt`` serves different bytes than the listing promises for some paths;
``rate`` throttles file bodies (bytes per second) so a pull can be killed mid-way; ``requests``
records every request line.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".onnx", ".gguf", ".h5", ".msgpack")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str = ""
    branches: dict[str, str] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                h.update(path.encode() + hashlib.sha256(self.files[path]).digest())
            self.commit = h.hexdigest()
        self.branches.setdefault("main", self.commit)
        if not self.lfs:
            self.lfs = {p for p, d in self.files.items() if p.endswith(LFS_SUFFIXES) or len(d) > 1_000_000}

    @classmethod
    def from_dir(cls, repo_id: str, path: Path, **kw: object) -> HubRepo:
        files = {
            p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        }
        return cls(repo_id, files, **kw)  # type: ignore[arg-type]

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if path in self.lfs else git_blob_sha1(data)

    def sibling(self, path: str) -> dict[str, object]:
        data = self.files[path]
        out: dict[str, object] = {"rfilename": path, "size": len(data)}
        if path in self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()
            out["blobId"] = git_blob_sha1(pointer)
            out["lfs"] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "pointerSize": len(pointer),
            }
        else:
            out["blobId"] = git_blob_sha1(data)
        return out


class HubServer:
    def __init__(self, repos: list[HubRepo] | None = None, *, rate: float | None = None) -> None:
        self.repos: dict[str, HubRepo] = {r.repo_id: r for r in repos or []}
        self.corrupt: set[tuple[str, str]] = set()
        self.rate = rate  # bytes per second for file bodies; None: as fast as possible
        self.requests: list[str] = []
        self.ranges: list[str] = []  # Range headers received
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def only_source_flags(self) -> list[str]:
        """The ``hfd`` flags that make this server the only place models come from: its endpoint,
        the Hub online, no shared Hugging Face cache, no IPFS."""
        flags = {"--hub-endpoint": self.url, "--hub-offline": "false", "--store-use-hf-cache": "false"}
        flags["--ipfs-enabled"] = "false"
        return [word for pair in flags.items() for word in pair]

    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def body(self, repo: HubRepo, path: str) -> bytes:
        data = repo.files[path]
        if (repo.repo_id, path) in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
        return data


_API_RE = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_LFS_RE = re.compile(r"^/lfs/(?P<repo>.+)/(?P<sha>[0-9a-f]{64})$")


class _Handler(BaseHTTPRequestHandler):
    server_hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read .requests instead
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self, *, head: bool) -> None:
        hub = self.server_hub
        hub.requests.append(f"{self.command} {self.path}")
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if m := _API_RE.match(path):
            return self._model_info(m["repo"], m["rev"] or "main", "blobs" in parse_qs(parts.query))
        if m := _RESOLVE_RE.match(path):
            return self._resolve(m["repo"], m["rev"], m["path"], head=head)
        if m := _LFS_RE.match(path):
            repo = hub.repos.get(m["repo"])
            if repo is not None:
                for name in repo.lfs:
                    if repo.etag(name) == m["sha"]:
                        return self._send_file(hub.body(repo, name), etag=m["sha"], commit=None, head=head)
        return self._error(404, "EntryNotFound", f"no route for {path}")

    def _repo_rev(self, repo_id: str, rev: str) -> tuple[HubRepo, str] | None:
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        commit = repo.branches.get(rev) or (rev if rev == repo.commit else None)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Revision {rev} not found")
            return None
        return repo, commit

    def _model_info(self, repo_id: str, rev: str, blobs: bool) -> None:
        found = self._repo_rev(repo_id, unquote(rev))
        if found is None:
            return
        repo, commit = found
        siblings = [repo.sibling(p) if blobs else {"rfilename": p} for p in sorted(repo.files)]
        body = json.dumps(
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit,
                "private": False,
                "siblings": siblings,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo_id: str, rev: str, path: str, *, head: bool) -> None:
        found = self._repo_rev(repo_id, rev)
        if found is None:
            return
        repo, commit = found
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} not found in {repo_id}")
        etag = repo.etag(path)
        if path in repo.lfs:
            # The Hub answers LFS files with a redirect to its CDN, carrying the linked etag and size.
            self.send_response(302)
            self.send_header("Location", f"http://{self.headers['Host']}/lfs/{repo_id}/{etag}")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(repo.files[path])))
            self.send_header("ETag", f'"{git_blob_sha1(repo.files[path])}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(self.server_hub.body(repo, path), etag=etag, commit=commit, head=head)

    def _send_file(self, data: bytes, *, etag: str, commit: str | None, head: bool) -> None:
        start, end = 0, len(data) - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            self.server_hub.ranges.append(rng)
        if rng and (m := re.match(r"bytes=(\d+)-(\d*)$", rng.strip())):
            start = int(m[1])
            end = int(m[2]) if m[2] else len(data) - 1
            status = 206
        chunk = data[start : end + 1]
        self.send_response(status)
        self.send_header("ETag", f'"{etag}"')
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        rate = self.server_hub.rate
        step = 64 * 1024 if rate is None else max(int(rate / 20), 1)
        try:
            for i in range(0, len(chunk), step):
                self.wfile.write(chunk[i : i + step])
                if rate is not None:
                    time.sleep(step / rate)
        except (BrokenPipeError, ConnectionResetError):
            pass
