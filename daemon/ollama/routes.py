"""The endpoints of Ollama's API that hfd has no route of its own for: ``/api/chat``,
``/api/generate``, ``/api/embed``, ``/api/embeddings``, ``/api/tags``, ``/api/show``,
``/api/delete`` and ``/api/copy``. Their rows in ``hfd.daemon.operations`` have no service
call: the HTTP door takes these routes from :func:`routes` (as it takes ``/ready`` from
``ops_routes``), so their scopes, usage log and metrics are the table's as for every route.

Durations in the replies are nanoseconds, as Ollama's: ``load_duration`` until the model was
held and the prompt submitted (loading it, if it was not loaded, and tokenising),
``prompt_eval_duration`` from then to the first token, ``eval_duration`` from the first
token to the last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfd.client.errors import InvalidRequest, ModelNotFound
from hfd.daemon.http.disconnect import until_disconnect
from hfd.daemon.http.errors import guarded
from hfd.daemon.ollama import requests as oreq
from hfd.daemon.ollama import shapes
from hfd.daemon.ollama.errors import error_response
from hfd.daemon.ollama.names import aliases_for, resolve, to_ref
from hfd.daemon.ollama.ndjson import ndjson_stream
from hfd.daemon.schema import parse, parse_keep_alive
from hfd.daemon.service import Generation, Service
from hfd.daemon.store.gguf_tags import ref_name

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


async def _body(request: Request) -> Any:
    from hfd.daemon.http.app import read_json  # the door's one body reader (errors included)

    return await read_json(request)


class _Clock:
    """The timestamps behind a reply's durations (nanoseconds, monotonic)."""

    def __init__(self) -> None:
        self.start = time.perf_counter_ns()
        self.submitted = self.start
        self.first: int | None = None

    def token(self) -> None:
        if self.first is None:
            self.first = time.perf_counter_ns()

    def durations(self, gen: Generation) -> dict[str, int]:
        end = time.perf_counter_ns()
        first = self.first if self.first is not None else end
        return {
            "total_duration": end - self.start,
            "load_duration": self.submitted - self.start,
            "prompt_eval_count": gen.prompt_tokens,
            "prompt_eval_duration": first - self.submitted,
            "eval_count": gen.completion_tokens,
            "eval_duration": end - first,
        }


def _done_reason(gen: Generation) -> str:
    return gen.finish_reason or "stop"


def _dir_size(path: Path | None) -> int:
    if path is None:
        return 0
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path is not None else None
    except OSError:
        return None


class OllamaRoutes:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.aliases = aliases_for(service.settings.state_dir)

    # ------------------------------------------------------------------ names

    def resolve(self, name: str) -> str:
        return resolve(self.settings, name)

    def _configured(self) -> frozenset[str]:
        return frozenset(n for s in self.settings.models for n in (s.public_name, s.ref))

    def find(self, ref: str) -> Any:
        """The snapshot ``ref`` names, if this machine has it (never fetches); None if not.
        A client's name is never taken as a directory to read."""
        store = self.service.pulls.store
        spec = self.settings.model(ref)
        if spec is None and store.parse(ref).kind == "path":
            return None
        return store.find(spec if spec is not None else ref)

    def _not_found(self, name: str) -> ModelNotFound:
        return ModelNotFound(f"model {name!r} not found, try pulling it first", param="model")

    # ------------------------------------------------------------------ generation

    async def chat(self, request: Request) -> Response:
        clock = _Clock()
        body = parse(oreq.ChatBody, await _body(request))
        model = self.resolve(body.model)
        if not body.messages:  # Ollama: an empty chat loads the model (keep_alive 0: unloads)
            return await self._load_or_unload(body.model, model, body.keep_alive, chat=True)
        gen = await self.service.chat(oreq.chat_request(body, model))
        clock.submitted = time.perf_counter_ns()
        return await self._answer(request, gen, body.model, body.stream, clock, chat=True)

    async def generate(self, request: Request) -> Response:
        clock = _Clock()
        body = parse(oreq.GenerateBody, await _body(request))
        model = self.resolve(body.model)
        if not body.prompt and not body.system:
            return await self._load_or_unload(body.model, model, body.keep_alive, chat=False)
        req = oreq.generate_request(body, model)
        gen = await (
            self.service.complete(req) if isinstance(req, oreq.CompletionRequest) else self.service.chat(req)
        )
        clock.submitted = time.perf_counter_ns()
        return await self._answer(request, gen, body.model, body.stream, clock, chat=False)

    async def _load_or_unload(self, name: str, model: str, keep_alive: Any, *, chat: bool) -> Response:
        seconds = parse_keep_alive(oreq.keep_alive(keep_alive))
        if seconds == 0:
            await self.service.unload(model)
            reason = "unload"
        else:
            await self.service.load(model, seconds)
            reason = "load"
        out: dict[str, Any] = {"model": name, "created_at": shapes.timestamp()}
        if chat:
            out["message"] = {"role": "assistant", "content": ""}
        else:
            out["response"] = ""
        out.update({"done": True, "done_reason": reason})
        return JSONResponse(out)

    async def _answer(
        self, request: Request, gen: Generation, name: str, stream: bool, clock: _Clock, *, chat: bool
    ) -> Response:
        tools = getattr(gen, "tools", None) if chat else None  # a chat with tools: calls are read

        def line(text: str, *, whole: bool = False) -> dict[str, Any]:
            out: dict[str, Any] = {"model": name, "created_at": shapes.timestamp()}
            if chat:
                out["message"] = shapes.chat_message(text, tools if whole else None)
            else:
                out["response"] = text
            out["done"] = False
            return out

        def last(text: str, *, whole: bool = False) -> dict[str, Any]:
            out = line(text, whole=whole)
            out.update({"done": True, "done_reason": _done_reason(gen), **clock.durations(gen)})
            return out

        if stream:

            async def lines() -> AsyncIterator[dict[str, Any]]:
                held: list[str] = []
                async with gen:
                    async for piece in gen:
                        clock.token()
                        if piece.text and tools is None:
                            yield line(piece.text)
                        elif piece.text:
                            held.append(piece.text)
                if tools is not None:
                    # Tool calls are read from the whole reply: it comes as one line, as
                    # Ollama sends a reply that made calls.
                    yield line("".join(held), whole=True)
                yield last("")

            return ndjson_stream(lines(), gen.aclose)

        async def whole() -> str:
            parts = []
            async with gen:
                async for piece in gen:
                    clock.token()
                    parts.append(piece.text)
            return "".join(parts)

        finished, text = await until_disconnect(whole, request.receive)
        if not finished:
            log.info("client disconnected; generation cancelled", extra={"id": gen.id, "model": gen.model})
            return Response(status_code=499)
        return JSONResponse(last(text or "", whole=True))

    # ------------------------------------------------------------------ embeddings

    async def embed(self, request: Request) -> Response:
        return await self._embed(request, legacy=False)

    async def embeddings(self, request: Request) -> Response:
        return await self._embed(request, legacy=True)

    async def _embed(self, request: Request, *, legacy: bool) -> Response:
        start = time.perf_counter_ns()
        data = await _body(request)
        body: oreq.EmbedBody | oreq.EmbeddingsBody = (
            parse(oreq.EmbeddingsBody, data) if legacy else parse(oreq.EmbedBody, data)
        )
        req = oreq.embed_request(body, self.resolve(body.model))
        finished, result = await until_disconnect(lambda: self.service.embed(req), request.receive)
        if not finished:
            log.info("client disconnected; embeddings cancelled", extra={"model": req.model})
            return Response(status_code=499)
        assert result is not None
        vectors = result.vectors.tolist()
        if legacy:
            return JSONResponse({"embedding": vectors[0]})
        return JSONResponse(
            {
                "model": body.model,
                "embeddings": vectors,
                "total_duration": time.perf_counter_ns() - start,
                "load_duration": 0,
                "prompt_eval_count": result.prompt_tokens,
            }
        )

    # ------------------------------------------------------------------ models

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": await anyio.to_thread.run_sync(self._tags)})

    def _tags(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, str | None]] = set()
        for spec in self.settings.models:
            snap = self.find(spec.public_name)
            path = snap.path if snap is not None else None
            if snap is not None:
                seen.add((snap.repo, snap.commit))
            commit = snap.commit if snap is not None else None
            out.append(
                shapes.tag_entry(
                    spec.public_name, path, commit=commit, size=_dir_size(path), modified=_mtime(path)
                )
            )
        for info in self.service.pulls.store.list_snapshots():
            snap = info.snapshot
            if (snap.repo, snap.commit) in seen:
                continue
            seen.add((snap.repo, snap.commit))
            if not info.refs or "main" in info.refs:
                name = snap.repo if info.refs else f"{snap.repo}@{snap.commit}"
            else:  # a branch, or a GGUF tag's pull (org/name:Q4_K_M)
                name = ref_name(snap.repo, info.refs[0])
            modified = info.pulled_at.timestamp() if info.pulled_at else _mtime(snap.path)
            out.append(
                shapes.tag_entry(name, snap.path, commit=snap.commit, size=info.size, modified=modified)
            )
        for alias, target in sorted(self.aliases.table().items()):
            snap = self.find(to_ref(target, self._configured()))
            if snap is None:
                continue
            out.append(
                shapes.tag_entry(
                    alias,
                    snap.path,
                    commit=snap.commit,
                    size=_dir_size(snap.path),
                    modified=_mtime(snap.path),
                )
            )
        return out

    async def show(self, request: Request) -> Response:
        body = parse(oreq.ModelBody, await _body(request))
        ref = self.resolve(body.model)
        snap = await anyio.to_thread.run_sync(self.find, ref)
        if snap is None:
            raise self._not_found(body.model)
        reply = await anyio.to_thread.run_sync(
            lambda: shapes.show(body.model, ref, snap.path, modified=_mtime(snap.path))
        )
        return JSONResponse(reply)

    async def delete(self, request: Request) -> Response:
        body = parse(oreq.ModelBody, await _body(request))
        if self.aliases.remove(body.model):  # a copy: only the copy goes, as in Ollama
            return Response(status_code=200)
        ref = self.resolve(body.model)
        spec = self.settings.model(ref)
        target = spec.ref if spec is not None else ref
        if self.service.pulls.store.parse(target).kind == "path":
            raise InvalidRequest(
                f"model {body.model!r} is a local directory; hfd does not delete it", param="model"
            )
        for lm in self.service.manager.loaded():
            if lm.name in (ref, target) or (spec is not None and lm.name == spec.public_name):
                await self.service.unload(lm.name)
        try:
            await anyio.to_thread.run_sync(self.service.pulls.store.remove, target)
        except ModelNotFound:
            raise self._not_found(body.model) from None
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        body = parse(oreq.CopyBody, await _body(request))
        target = self.resolve(body.source)
        if await anyio.to_thread.run_sync(self.find, target) is None:
            raise self._not_found(body.source)
        destination = body.destination.strip()
        if destination in self._configured() or to_ref(destination) in self._configured():
            raise InvalidRequest(
                f"{destination!r} is a model configured here; choose another name", param="destination"
            )
        if not destination or "://" in destination or "@" in destination:
            raise InvalidRequest("the destination must be a plain name[:tag]", param="destination")
        await anyio.to_thread.run_sync(self.aliases.set, destination, target)
        return Response(status_code=200)


def routes(service: Service) -> dict[str, Route]:
    """The routes by operation name (the table's ``ollama.*`` rows)."""
    r = OllamaRoutes(service)
    table = {
        "ollama.chat": ("/api/chat", "POST", r.chat),
        "ollama.generate": ("/api/generate", "POST", r.generate),
        "ollama.embed": ("/api/embed", "POST", r.embed),
        "ollama.embeddings": ("/api/embeddings", "POST", r.embeddings),
        "ollama.tags": ("/api/tags", "GET", r.tags),
        "ollama.show": ("/api/show", "POST", r.show),
        "ollama.delete": ("/api/delete", "DELETE", r.delete),
        "ollama.copy": ("/api/copy", "POST", r.copy),
    }
    return {
        name: Route(path, guarded(fn, error_response), methods=[method])
        for name, (path, method, fn) in table.items()
    }
