"""The row type of the operation table (``hfd.daemon.operations``), its row builders, and the
service calls the rows name.

Most rows come in a few shapes, each with a builder, so a row says only what sets it apart:

- :func:`both`: served on both doors, the IPC op is the row's name and there is a client method;
- :func:`http_only`: an HTTP route with no IPC op and no client method (with the reason);
- :func:`generation`: a generation on both doors, with its reply shapes;
- :func:`model_work`: a model call on both doors (``unary``, inference scope) that a client
  hanging up cancels: the text heads and speech.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel

from hfd.daemon import responses
from hfd.daemon.access.keys import SCOPE_INFERENCE
from hfd.daemon.ollama import names as ollama_names
from hfd.daemon.ollama import shapes as ollama_shapes
from hfd.daemon.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelRequest,
    parse_keep_alive,
)

if TYPE_CHECKING:
    from hfd.daemon.pulls import Emit, PullRequest
    from hfd.daemon.service import Service

Kind = Literal["unary", "generation", "embedding", "progress"]
OPEN: Final = None  # a scope anyone has

GET: Final = "GET"
POST: Final = "POST"
DELETE: Final = "DELETE"

Route = tuple[str, str]  # (method, path template)


@dataclass(frozen=True)
class Operation:
    name: str  # the IPC op where there is one; else a name for the HTTP route
    kind: Kind
    scope: str | None  # OPEN, or the scope a caller needs (hfd.daemon.access.keys)
    op: str | None = None  # the IPC op (hfd.client.protocol); None: HTTP only
    http: tuple[Route, ...] = ()  # (method, path template); (): IPC only
    request: type[BaseModel] | None = None  # what the body parses into
    call: Callable[..., Any] | None = None  # the service call (see hfd.daemon.operations)
    reply: responses.GenerationReply | None = None  # generation: chunks and whole body
    check: Callable[[Service, Any], object] | None = None  # progress: refuse before streaming
    # unary over HTTP: a client that hangs up cancels the call (model work, not admin actions).
    cancel_on_disconnect: bool = False
    client: str | None = None  # the method's attribute path in Client and AsyncClient
    no_client: str = ""  # why there is no client method (then client is None)

    @property
    def streams(self) -> bool:
        return self.kind in ("generation", "progress")


# ----------------------------------------------------------------------------- row builders
# A route is written "METHOD /path"; the client method defaults to the IPC op's name.


def routes_of(*routes: str) -> tuple[Route, ...]:
    """``"POST /v1/rerank"`` -> ``("POST", "/v1/rerank")``, for each route."""
    out = []
    for route in routes:
        method, path = route.split(" ", 1)
        out.append((method, path))
    return tuple(out)


def both(
    op: str, scope: str | None, *routes: str, kind: Kind = "unary", client: str | None = None, **more: Any
) -> Operation:
    """A row on both doors: IPC op ``op`` (also its name), ``routes`` over HTTP, a client method."""
    return Operation(op, kind, scope, op=op, http=routes_of(*routes), client=client or op, **more)


def http_only(
    name: str, scope: str | None, route: str, why: str, kind: Kind = "unary", **more: Any
) -> Operation:
    """An HTTP route with no IPC op and no client method; ``why`` says why not."""
    return Operation(name, kind, scope, http=routes_of(route), no_client=why, **more)


def generation(
    op: str, request: type[BaseModel], call: Callable[..., Any], reply: responses.GenerationReply, route: str
) -> Operation:
    """A generation on both doors (inference scope): ``reply`` cuts it into chunks or one body."""
    return both(op, SCOPE_INFERENCE, route, kind="generation", request=request, call=call, reply=reply)


def model_work(
    op: str, request: type[BaseModel], call: Callable[..., Any], *routes: str, client: str | None = None
) -> Operation:
    """Model work on both doors, cancelled over HTTP when the client hangs up."""
    return both(
        op, SCOPE_INFERENCE, *routes, request=request, call=call, client=client, cancel_on_disconnect=True
    )


# ----------------------------------------------------------------------------- service calls


def health(service: Service, _: object) -> dict[str, Any]:
    return service.health()


def models(service: Service, _: object) -> dict[str, Any]:
    return responses.model_list(service.models())


def model(service: Service, params: dict[str, str]) -> dict[str, Any]:
    return responses.model_entry(service.models(), params["model_id"])


def ps(service: Service, _: object) -> dict[str, Any]:
    # Ollama's shape, hfd's fields beside it (hfd.daemon.ollama.shapes).
    return {"models": [ollama_shapes.ps_entry(m) for m in service.ps()]}


async def load(service: Service, req: ModelRequest) -> dict[str, Any]:
    return await service.load(req.model, parse_keep_alive(req.keep_alive))


async def unload(service: Service, req: ModelRequest) -> dict[str, Any]:
    return {"model": req.model, "unloaded": await service.unload(req.model)}


async def tune(service: Service, req: ModelRequest) -> dict[str, Any]:
    return await service.manager.tune(req.model)


async def pull(service: Service, req: PullRequest, emit: Emit | None) -> dict[str, Any]:
    ref = ollama_names.resolve(service.settings, req.model)  # Ollama's name:tag, or hfd's ref
    if emit is None:
        return await service.pulls.pull(ref, None)
    forward = emit

    async def as_ollama(event: dict[str, Any]) -> None:
        await forward(ollama_shapes.pull_event(event))

    return await service.pulls.pull(ref, as_ollama)


def check_pull(service: Service, req: PullRequest) -> str:
    return service.pulls.check_ref(ollama_names.resolve(service.settings, req.model))


def stats(service: Service, _: object) -> dict[str, Any]:
    return service.stats()


def version(service: Service, _: object) -> dict[str, Any]:
    return responses.version()


async def hardware(service: Service, _: object) -> dict[str, Any]:
    return await responses.hardware()


def embed(service: Service, req: EmbeddingRequest) -> Awaitable[Any]:
    return service.embed(req)


def chat(service: Service, req: ChatCompletionRequest) -> Awaitable[Any]:
    return service.chat(req)


def complete(service: Service, req: CompletionRequest) -> Awaitable[Any]:
    return service.complete(req)
