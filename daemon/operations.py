"""The daemon's operations, in one table both doors and access control are derived from.

Each :class:`Operation` names its IPC op (a constant of ``hfd.client.protocol``), its HTTP
routes, the scope a caller needs, the request type its body parses into, the service call that
answers it, its kind, and the method of ``hfd.client.Client`` / ``AsyncClient`` that calls it.
The HTTP routes (``hfd.daemon.http.app``), the IPC dispatch (``hfd.daemon.zmq.server``) and the
scope checks (``hfd.daemon.access.auth``) are read from :data:`OPERATIONS`; nothing else lists
operations. ``tests/unit/test_operations.py`` checks every row has a scope, a route or an op, and
a client method in both clients.

Adding an operation: a protocol constant, a row here, a service method, a client method. The row
type, the builders of the common row shapes and the small service calls are in
``hfd.daemon.operation_rows``.

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

from typing import Final

from hfd.client import protocol as p
from hfd.daemon import operation_rows as call
from hfd.daemon import responses
from hfd.daemon.access.keys import SCOPE_ADMIN, SCOPE_INFERENCE, SCOPE_MODELS
from hfd.daemon.anthropic.schema import CountTokensRequest, MessagesRequest
from hfd.daemon.openai_responses import service as responses_service
from hfd.daemon.openai_responses.schema import ResponsesRequest
from hfd.daemon.operation_rows import (
    OPEN,
    Kind,
    Operation,
    both,
    generation,
    http_only,
    model_work,
    routes_of,
)
from hfd.daemon.pulls import PullRequest
from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelRequest
from hfd.daemon.tasks import text_heads
from hfd.daemon.tasks.text_requests import ClassifyRequest, NerRequest, RerankRequest, ScoreRequest
from hfd.daemon.tokenize_ops import DetokenizeRequest, TokenizeRequest, detokenize, tokenize
from hfd.daemon.transcribe import TranscriptionRequest, TranslationRequest, transcribe

__all__ = ["BY_NAME", "BY_OP", "OPEN", "OPERATIONS", "Kind", "Operation"]

INFER: Final = SCOPE_INFERENCE
MODELS: Final = SCOPE_MODELS
ADMIN: Final = SCOPE_ADMIN
# Why the Anthropic API has no hfd.client method.
_FOREIGN: Final = "another API's shape over the chat path, for that API's SDKs; hfd.client has chat"
_VERSION_WHY: Final = "the client reads the daemon's version from health"
_USAGE_WHY: Final = "the web page's recent requests; hfd stats reads the usage log itself"
_OLLAMA: Final = "Ollama's API in Ollama's shapes, for Ollama's clients"

# Ollama's routes: (name after "ollama.", scope, route, kind).
_OLLAMA_ROWS: Final[tuple[tuple[str, str, str, Kind], ...]] = (
    ("chat", INFER, "POST /api/chat", "generation"),
    ("generate", INFER, "POST /api/generate", "generation"),
    ("embed", INFER, "POST /api/embed", "embedding"),
    ("embeddings", INFER, "POST /api/embeddings", "embedding"),
    ("tags", INFER, "GET /api/tags", "unary"),
    ("show", INFER, "POST /api/show", "unary"),
    ("delete", MODELS, "DELETE /api/delete", "unary"),
    ("copy", MODELS, "POST /api/copy", "unary"),
)

OPERATIONS: Final[tuple[Operation, ...]] = (
    both(p.OP_HEALTH, OPEN, "GET /health", call=call.health),
    http_only(
        "ready", OPEN, "GET /ready", "a probe for service managers and load balancers; IPC clients ask health"
    ),
    # open to anyone with metrics_public
    http_only("metrics", ADMIN, "GET /metrics", "Prometheus scrapes it over HTTP"),
    Operation(
        p.OP_CANCEL,
        "unary",
        OPEN,  # a client can only cancel its own requests
        op=p.OP_CANCEL,
        no_client="sent by the clients' streams when closed early, not called",
    ),
    both(p.OP_MODELS_LIST, INFER, "GET /v1/models", call=call.models),
    # Model names may contain '/' (org/name), hence the path converter.
    Operation(
        "models.retrieve",
        "unary",
        INFER,
        http=routes_of("GET /v1/models/{model_id:path}"),
        call=call.model,
        client="models.retrieve",
    ),
    generation(p.OP_CHAT, ChatCompletionRequest, call.chat, responses.CHAT, "POST /v1/chat/completions"),
    generation(
        p.OP_COMPLETIONS, CompletionRequest, call.complete, responses.COMPLETION, "POST /v1/completions"
    ),
    both(
        p.OP_EMBEDDINGS,
        INFER,
        "POST /v1/embeddings",
        kind="embedding",
        request=EmbeddingRequest,
        call=call.embed,
    ),
    both(p.OP_MODELS_PS, INFER, "GET /api/ps", call=call.ps, client="ps"),
    both(p.OP_MODELS_LOAD, MODELS, "POST /api/load", request=ModelRequest, call=call.load, client="load"),
    both(
        p.OP_MODELS_UNLOAD,
        MODELS,
        "POST /api/unload",
        request=ModelRequest,
        call=call.unload,
        client="unload",
    ),
    both(p.OP_MODELS_TUNE, MODELS, "POST /api/tune", request=ModelRequest, call=call.tune, client="tune"),
    both(
        p.OP_PULL,
        MODELS,
        "POST /api/pull",
        kind="progress",
        request=PullRequest,
        call=call.pull,
        check=call.check_pull,
        client="pull",
    ),
    both(p.OP_STATS, ADMIN, "GET /api/stats", call=call.stats),
    http_only("version", INFER, "GET /api/version", _VERSION_WHY, call=call.version),
    both(p.OP_HARDWARE, INFER, "GET /api/hardware", call=call.hardware),
    # Answered by hfd.daemon.web: the API's own description, the web page and what it reads.
    # /openapi.json: shapes only, no data: tools read it before they have a key.
    http_only("openapi", OPEN, "GET /openapi.json", "the API's description, for HTTP tools"),
    # The page asks for the key itself and sends it with each API call.
    http_only("web", OPEN, "GET /", "the web page (http_web), for browsers"),
    http_only("web.static", OPEN, "GET /web/{path:path}", "the web page's static files"),
    http_only("usage.recent", ADMIN, "GET /api/usage/recent", _USAGE_WHY),
    both(p.OP_TOKENIZE, INFER, "POST /tokenize", request=TokenizeRequest, call=tokenize),
    both(p.OP_DETOKENIZE, INFER, "POST /detokenize", request=DetokenizeRequest, call=detokenize),
    # Ollama's API (hfd.daemon.ollama.routes): HTTP only; Ollama's clients call these.
    *(http_only(f"ollama.{name}", scope, route, _OLLAMA, kind) for name, scope, route, kind in _OLLAMA_ROWS),
    # The Responses and Anthropic Messages APIs: translations over the chat path, answered over
    # HTTP by their own routes (hfd.daemon.http.responses_routes, anthropic_routes). The
    # Responses API is on both doors: one implementation (hfd.daemon.openai_responses.service);
    # over IPC a streamed create is a progress op, its events as ``event`` messages.
    both(
        p.OP_RESPONSES_CREATE,
        INFER,
        "POST /v1/responses",
        kind="progress",
        request=ResponsesRequest,
        call=responses_service.create,
    ),
    both(p.OP_RESPONSES_RETRIEVE, INFER, "GET /v1/responses/{response_id}", call=responses_service.retrieve),
    both(p.OP_RESPONSES_DELETE, INFER, "DELETE /v1/responses/{response_id}", call=responses_service.delete),
    both(
        p.OP_RESPONSES_INPUT_ITEMS,
        INFER,
        "GET /v1/responses/{response_id}/input_items",
        call=responses_service.input_items,
    ),
    http_only("messages.create", INFER, "POST /v1/messages", _FOREIGN, "generation", request=MessagesRequest),
    http_only(
        "messages.count_tokens", INFER, "POST /v1/messages/count_tokens", _FOREIGN, request=CountTokensRequest
    ),
    # Text heads (hfd.daemon.tasks.text_heads): rerank as Cohere/Jina, score and classify as vLLM.
    model_work(p.OP_RERANK, RerankRequest, text_heads.rerank, "POST /v1/rerank", "POST /rerank"),
    model_work(p.OP_SCORE, ScoreRequest, text_heads.score, "POST /v1/score"),
    model_work(p.OP_CLASSIFY, ClassifyRequest, text_heads.classify, "POST /v1/classify"),
    model_work(p.OP_NER, NerRequest, text_heads.classify, "POST /v1/ner"),
    # Speech recognition (hfd.daemon.transcribe): OpenAI's multipart upload over HTTP.
    model_work(
        p.OP_TRANSCRIBE,
        TranscriptionRequest,
        transcribe,
        "POST /v1/audio/transcriptions",
        client="transcribe",
    ),
    model_work(
        p.OP_TRANSLATE, TranslationRequest, transcribe, "POST /v1/audio/translations", client="translate"
    ),
)

BY_OP: Final[dict[str, Operation]] = {o.op: o for o in OPERATIONS if o.op is not None}
BY_NAME: Final[dict[str, Operation]] = {o.name: o for o in OPERATIONS}
