"""The daemon's operations, in one table both doors and access control are derived from.

Each :class:`Operation` names its IPC op (a constant of ``hfd.client.protocol``), its HTTP
routes, the scope a caller needs, the request type its body parses into, the service call that
answers it, its kind, and the method of ``hfd.client.Client`` / ``AsyncClient`` that calls it.
The HTTP routes (``hfd.daemon.http.app``), the IPC dispatch (``hfd.daemon.zmq.server``) and the
scope checks (``hfd.daemon.access.auth``) are read from :data:`OPERATIONS`; nothing else lists
operations. ``tests/unit/test_operations.py`` checks every row has a scope, a route or an op, and
a client method in both clients.

Adding an operation: a protocol constant, a row here, a service method, a client method.

Kinds, which say how each door answers:

- ``unary``: ``call(service, request)`` returns the reply body (a dict), or an awaitable of it.
- ``embedding``: ``call`` returns an ``EmbeddingResult``: JSON vectors over HTTP (float or
  base64), one float32 frame over IPC.
- ``generation``: ``call`` returns a ``Generation``; ``reply`` says how it is cut into stream
  chunks or one whole body (``stream`` in the request chooses).
- ``progress``: ``call(service, request, emit)`` forwards progress events to ``emit`` (NDJSON
  lines over HTTP, ``event`` messages over IPC) and returns the final body; ``check`` refuses
  a bad request before the first event is sent.

Rows with no ``call`` are answered by the door itself: ``cancel`` (the IPC door's receive loop),
``/ready`` and ``/metrics`` (``hfd.daemon.http.ops_routes``, from access control's state), and
the ``ollama.*`` rows, Ollama's API in Ollama's shapes (``hfd.daemon.ollama.routes``).
For an HTTP row without a request type, ``call`` gets the route's path parameters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel

from hfd.client import protocol as p
from hfd.daemon import responses, tokenize_ops
from hfd.daemon import transcribe as speech
from hfd.daemon.access.keys import SCOPE_ADMIN, SCOPE_INFERENCE, SCOPE_MODELS
from hfd.daemon.anthropic.schema import CountTokensRequest, MessagesRequest
from hfd.daemon.ollama import names as ollama_names
from hfd.daemon.ollama import shapes as ollama_shapes
from hfd.daemon.openai_responses.schema import ResponsesRequest
from hfd.daemon.pulls import PullRequest
from hfd.daemon.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelRequest,
    parse_keep_alive,
)
from hfd.daemon.tasks import text_heads
from hfd.daemon.tasks.text_requests import ClassifyRequest, NerRequest, RerankRequest, ScoreRequest

if TYPE_CHECKING:
    from hfd.daemon.pulls import Emit
    from hfd.daemon.service import Service

Kind = Literal["unary", "generation", "embedding", "progress"]
OPEN: Final = None  # a scope anyone has

GET: Final = "GET"
POST: Final = "POST"
DELETE: Final = "DELETE"
# Why the Responses and Anthropic APIs have no hfd.client method.
_FOREIGN = "another API's shape over the chat path, for that API's SDKs; hfd.client has chat"


@dataclass(frozen=True)
class Operation:
    name: str  # the IPC op where there is one; else a name for the HTTP route
    kind: Kind
    scope: str | None  # OPEN, or the scope a caller needs (hfd.daemon.access.keys)
    op: str | None = None  # the IPC op (hfd.client.protocol); None: HTTP only
    http: tuple[tuple[str, str], ...] = ()  # (method, path template); (): IPC only
    request: type[BaseModel] | None = None  # what the body parses into
    call: Callable[..., Any] | None = None  # the service call (see the module's doc)
    reply: responses.GenerationReply | None = None  # generation: chunks and whole body
    check: Callable[[Service, Any], object] | None = None  # progress: refuse before streaming
    # unary over HTTP: a client that hangs up cancels the call (model work, not admin actions).
    cancel_on_disconnect: bool = False
    client: str | None = None  # the method's attribute path in Client and AsyncClient
    no_client: str = ""  # why there is no client method (then client is None)

    @property
    def streams(self) -> bool:
        return self.kind in ("generation", "progress")


# ----------------------------------------------------------------------------- service calls


def _health(service: Service, _: object) -> dict[str, Any]:
    return service.health()


def _models(service: Service, _: object) -> dict[str, Any]:
    return responses.model_list(service.models())


def _model(service: Service, params: dict[str, str]) -> dict[str, Any]:
    return responses.model_entry(service.models(), params["model_id"])


def _ps(service: Service, _: object) -> dict[str, Any]:
    # Ollama's shape, hfd's fields beside it (hfd.daemon.ollama.shapes).
    return {"models": [ollama_shapes.ps_entry(m) for m in service.ps()]}


async def _load(service: Service, req: ModelRequest) -> dict[str, Any]:
    return await service.load(req.model, parse_keep_alive(req.keep_alive))


async def _unload(service: Service, req: ModelRequest) -> dict[str, Any]:
    return {"model": req.model, "unloaded": await service.unload(req.model)}


async def _pull(service: Service, req: PullRequest, emit: Emit | None) -> dict[str, Any]:
    ref = ollama_names.resolve(service.settings, req.model)  # Ollama's name:tag, or hfd's ref
    if emit is None:
        return await service.pulls.pull(ref, None)
    forward = emit

    async def as_ollama(event: dict[str, Any]) -> None:
        await forward(ollama_shapes.pull_event(event))

    return await service.pulls.pull(ref, as_ollama)


def _check_pull(service: Service, req: PullRequest) -> str:
    return service.pulls.check_ref(ollama_names.resolve(service.settings, req.model))


def _stats(service: Service, _: object) -> dict[str, Any]:
    return service.stats()


def _version(service: Service, _: object) -> dict[str, Any]:
    return responses.version()


async def _hardware(service: Service, _: object) -> dict[str, Any]:
    return await responses.hardware()


def _embed(service: Service, req: EmbeddingRequest) -> Awaitable[Any]:
    return service.embed(req)


def _chat(service: Service, req: ChatCompletionRequest) -> Awaitable[Any]:
    return service.chat(req)


def _complete(service: Service, req: CompletionRequest) -> Awaitable[Any]:
    return service.complete(req)


# ----------------------------------------------------------------------------- the table

_OLLAMA: Final = "Ollama's API in Ollama's shapes, for Ollama's clients"

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "health", "unary", OPEN, op=p.OP_HEALTH, http=((GET, "/health"),), call=_health, client="health"
    ),
    Operation(
        "ready",
        "unary",
        OPEN,
        http=((GET, "/ready"),),
        no_client="a probe for service managers and load balancers; IPC clients ask health",
    ),
    Operation(
        "metrics",
        "unary",
        SCOPE_ADMIN,  # open to anyone with metrics_public
        http=((GET, "/metrics"),),
        no_client="Prometheus scrapes it over HTTP",
    ),
    Operation(
        p.OP_CANCEL,
        "unary",
        OPEN,  # a client can only cancel its own requests
        op=p.OP_CANCEL,
        no_client="sent by the clients' streams when closed early, not called",
    ),
    Operation(
        p.OP_MODELS_LIST,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_MODELS_LIST,
        http=((GET, "/v1/models"),),
        call=_models,
        client="models.list",
    ),
    Operation(
        "models.retrieve",
        "unary",
        SCOPE_INFERENCE,
        # Model names may contain '/' (org/name), hence the path converter.
        http=((GET, "/v1/models/{model_id:path}"),),
        call=_model,
        client="models.retrieve",
    ),
    Operation(
        p.OP_CHAT,
        "generation",
        SCOPE_INFERENCE,
        op=p.OP_CHAT,
        http=((POST, "/v1/chat/completions"),),
        request=ChatCompletionRequest,
        call=_chat,
        reply=responses.CHAT,
        client="chat.completions.create",
    ),
    Operation(
        p.OP_COMPLETIONS,
        "generation",
        SCOPE_INFERENCE,
        op=p.OP_COMPLETIONS,
        http=((POST, "/v1/completions"),),
        request=CompletionRequest,
        call=_complete,
        reply=responses.COMPLETION,
        client="completions.create",
    ),
    Operation(
        p.OP_EMBEDDINGS,
        "embedding",
        SCOPE_INFERENCE,
        op=p.OP_EMBEDDINGS,
        http=((POST, "/v1/embeddings"),),
        request=EmbeddingRequest,
        call=_embed,
        client="embeddings.create",
    ),
    Operation(
        p.OP_MODELS_PS,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_MODELS_PS,
        http=((GET, "/api/ps"),),
        call=_ps,
        client="ps",
    ),
    Operation(
        p.OP_MODELS_LOAD,
        "unary",
        SCOPE_MODELS,
        op=p.OP_MODELS_LOAD,
        http=((POST, "/api/load"),),
        request=ModelRequest,
        call=_load,
        client="load",
    ),
    Operation(
        p.OP_MODELS_UNLOAD,
        "unary",
        SCOPE_MODELS,
        op=p.OP_MODELS_UNLOAD,
        http=((POST, "/api/unload"),),
        request=ModelRequest,
        call=_unload,
        client="unload",
    ),
    Operation(
        p.OP_PULL,
        "progress",
        SCOPE_MODELS,
        op=p.OP_PULL,
        http=((POST, "/api/pull"),),
        request=PullRequest,
        call=_pull,
        check=_check_pull,
        client="pull",
    ),
    Operation(
        p.OP_STATS,
        "unary",
        SCOPE_ADMIN,
        op=p.OP_STATS,
        http=((GET, "/api/stats"),),
        call=_stats,
        client="stats",
    ),
    Operation(
        "version",
        "unary",
        SCOPE_INFERENCE,
        http=((GET, "/api/version"),),
        call=_version,
        no_client="the client reads the daemon's version from health",
    ),
    Operation(
        p.OP_HARDWARE,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_HARDWARE,
        http=((GET, "/api/hardware"),),
        call=_hardware,
        client="hardware",
    ),
    # Answered by hfd.daemon.web: the API's own description, the web page and what it reads.
    Operation(
        "openapi",
        "unary",
        OPEN,  # shapes only, no data: tools read it before they have a key
        http=((GET, "/openapi.json"),),
        no_client="the API's description, for HTTP tools",
    ),
    Operation(
        "web",
        "unary",
        OPEN,  # the page asks for the key itself and sends it with each API call
        http=((GET, "/"),),
        no_client="the web page (http_web), for browsers",
    ),
    Operation(
        "web.static",
        "unary",
        OPEN,
        http=((GET, "/web/{path:path}"),),
        no_client="the web page's static files",
    ),
    Operation(
        "usage.recent",
        "unary",
        SCOPE_ADMIN,
        http=((GET, "/api/usage/recent"),),
        no_client="the web page's recent requests; hfd stats reads the usage log itself",
    ),
    Operation(
        p.OP_TOKENIZE,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_TOKENIZE,
        http=((POST, "/tokenize"),),
        request=tokenize_ops.TokenizeRequest,
        call=tokenize_ops.tokenize,
        client="tokenize",
    ),
    Operation(
        p.OP_DETOKENIZE,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_DETOKENIZE,
        http=((POST, "/detokenize"),),
        request=tokenize_ops.DetokenizeRequest,
        call=tokenize_ops.detokenize,
        client="detokenize",
    ),
    # Ollama's API (hfd.daemon.ollama.routes): HTTP only; Ollama's clients call these.
    Operation("ollama.chat", "generation", SCOPE_INFERENCE, http=((POST, "/api/chat"),), no_client=_OLLAMA),
    Operation(
        "ollama.generate", "generation", SCOPE_INFERENCE, http=((POST, "/api/generate"),), no_client=_OLLAMA
    ),
    Operation("ollama.embed", "embedding", SCOPE_INFERENCE, http=((POST, "/api/embed"),), no_client=_OLLAMA),
    Operation(
        "ollama.embeddings",
        "embedding",
        SCOPE_INFERENCE,
        http=((POST, "/api/embeddings"),),
        no_client=_OLLAMA,
    ),
    Operation("ollama.tags", "unary", SCOPE_INFERENCE, http=((GET, "/api/tags"),), no_client=_OLLAMA),
    Operation("ollama.show", "unary", SCOPE_INFERENCE, http=((POST, "/api/show"),), no_client=_OLLAMA),
    Operation("ollama.delete", "unary", SCOPE_MODELS, http=((DELETE, "/api/delete"),), no_client=_OLLAMA),
    Operation("ollama.copy", "unary", SCOPE_MODELS, http=((POST, "/api/copy"),), no_client=_OLLAMA),
    # The Responses and Anthropic Messages APIs: translations over the chat path, answered by
    # their own routes (hfd.daemon.http.responses_routes, anthropic_routes), HTTP only.
    Operation(
        "responses.create",
        "generation",
        SCOPE_INFERENCE,
        http=((POST, "/v1/responses"),),
        request=ResponsesRequest,
        no_client=_FOREIGN,
    ),
    Operation(
        "responses.retrieve",
        "unary",
        SCOPE_INFERENCE,
        http=((GET, "/v1/responses/{response_id}"),),
        no_client=_FOREIGN,
    ),
    Operation(
        "responses.delete",
        "unary",
        SCOPE_INFERENCE,
        http=((DELETE, "/v1/responses/{response_id}"),),
        no_client=_FOREIGN,
    ),
    Operation(
        "responses.input_items",
        "unary",
        SCOPE_INFERENCE,
        http=((GET, "/v1/responses/{response_id}/input_items"),),
        no_client=_FOREIGN,
    ),
    Operation(
        "messages.create",
        "generation",
        SCOPE_INFERENCE,
        http=((POST, "/v1/messages"),),
        request=MessagesRequest,
        no_client=_FOREIGN,
    ),
    Operation(
        "messages.count_tokens",
        "unary",
        SCOPE_INFERENCE,
        http=((POST, "/v1/messages/count_tokens"),),
        request=CountTokensRequest,
        no_client=_FOREIGN,
    ),
    # Text heads (hfd.daemon.tasks.text_heads): rerank as Cohere/Jina, score and classify as vLLM.
    Operation(
        p.OP_RERANK,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_RERANK,
        http=((POST, "/v1/rerank"), (POST, "/rerank")),
        request=RerankRequest,
        call=text_heads.rerank,
        client="rerank",
        cancel_on_disconnect=True,
    ),
    Operation(
        p.OP_SCORE,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_SCORE,
        http=((POST, "/v1/score"),),
        request=ScoreRequest,
        call=text_heads.score,
        client="score",
        cancel_on_disconnect=True,
    ),
    Operation(
        p.OP_CLASSIFY,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_CLASSIFY,
        http=((POST, "/v1/classify"),),
        request=ClassifyRequest,
        call=text_heads.classify,
        client="classify",
        cancel_on_disconnect=True,
    ),
    Operation(
        p.OP_NER,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_NER,
        http=((POST, "/v1/ner"),),
        request=NerRequest,
        call=text_heads.classify,
        client="ner",
        cancel_on_disconnect=True,
    ),
    # Speech recognition (hfd.daemon.transcribe): OpenAI's multipart upload over HTTP.
    Operation(
        p.OP_TRANSCRIBE,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_TRANSCRIBE,
        http=((POST, "/v1/audio/transcriptions"),),
        request=speech.TranscriptionRequest,
        call=speech.transcribe,
        client="transcribe",
        cancel_on_disconnect=True,
    ),
    Operation(
        p.OP_TRANSLATE,
        "unary",
        SCOPE_INFERENCE,
        op=p.OP_TRANSLATE,
        http=((POST, "/v1/audio/translations"),),
        request=speech.TranslationRequest,
        call=speech.transcribe,
        client="translate",
        cancel_on_disconnect=True,
    ),
)

BY_OP: Final[dict[str, Operation]] = {o.op: o for o in OPERATIONS if o.op is not None}
BY_NAME: Final[dict[str, Operation]] = {o.name: o for o in OPERATIONS}
