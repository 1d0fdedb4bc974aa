"""Response types of the HTTP API, for the OpenAPI document (``hfd.daemon.openapi``).

The daemon builds its reply bodies as plain dicts (``hfd.daemon.responses``, the service);
these pydantic models describe them, so ``/openapi.json`` documents each reply and
``tests/e2e/test_openapi.py`` checks that real replies validate against them. They are never
used to build a reply: a field added to a reply is an addition (``extra="allow"``), documented
when it is added here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Reply(BaseModel):
    # Replies may carry fields beyond the documented ones (engine details, additions of newer
    # versions): clients must ignore what they do not know, as with OpenAI's API.
    model_config = ConfigDict(extra="allow")


# ----------------------------------------------------------------------------- errors


class ErrorDetail(_Reply):
    message: str
    type: str
    param: str | None = None
    code: str
    details: dict[str, Any] | None = None


class ErrorBody(_Reply):
    """Every error, in OpenAI's envelope; ``code`` is one of ``hfd.client.errors``' codes."""

    error: ErrorDetail


# ----------------------------------------------------------------------------- OpenAI shapes


class Usage(_Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Reply):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None


class ChatChoice(_Reply):
    index: int
    message: AssistantMessage
    logprobs: Any = None
    finish_reason: str | None


class ChatCompletion(_Reply):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(_Reply):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Reply):
    index: int
    delta: ChatDelta
    logprobs: Any = None
    finish_reason: str | None


class ChatCompletionChunk(_Reply):
    """One ``data:`` event of a streamed chat completion (``text/event-stream``); the stream
    ends with ``data: [DONE]``. With ``stream_options.include_usage`` the last chunk has no
    choices and the usage."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Reply):
    index: int
    text: str
    logprobs: Any = None
    finish_reason: str | None


class Completion(_Reply):
    """A completion, and (with ``usage`` null or absent) one ``data:`` event of a streamed one."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(_Reply):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: little-endian float32, base64 (encoding_format)


class EmbeddingUsage(_Reply):
    prompt_tokens: int
    total_tokens: int


class Embeddings(_Reply):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(_Reply):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    ref: str | None = None
    task: str | None = None
    loaded: bool | None = None


class ModelList(_Reply):
    object: Literal["list"]
    data: list[Model]


# ----------------------------------------------------------------------------- hfd's own


class Health(_Reply):
    status: str
    version: str
    uptime: float


class Ready(_Reply):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Any]


class Version(_Reply):
    version: str
    protocol: int | str


class LoadedModel(_Reply):
    """One loaded model (a row of ``hfd ps``); engines add fields of their own. Times are
    loose: the route also answers Ollama clients, whose ``expires_at`` is a date string."""

    name: str
    task: str | None = None
    engine: str | None = None
    device: str | None = None
    memory_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    memory_pool: str | None = None
    in_use: int | None = None
    load_seconds: float | None = None
    keep_alive: float | str | None = None
    expires_in: float | None = None
    expires_at: float | str | None = None
    scheduler: dict[str, Any] | None = None
    preferred_engine: str | None = None
    fallback_reason: str | None = None
    engine_reason: str | None = None


class EngineMeasurement(_Reply):
    """``hfd tune``: the candidate engines timed here, fastest first (``figures``: each engine's
    score, its workloads' rates, its load time or its error)."""

    measured: bool
    model: str | None = None
    reason: str | None = None
    ranking: list[str] | None = None
    figures: list[dict[str, Any]] | None = None
    unit: str | None = None


class LoadedModels(_Reply):
    models: list[LoadedModel]


class Unloaded(_Reply):
    model: str
    unloaded: bool


class PullProgress(_Reply):
    """One NDJSON line of a streamed pull (``application/x-ndjson``) before the result line."""

    status: str
    ref: str | None = None
    source: str | None = None
    file: str | None = None
    files_done: int | None = None
    files_total: int | None = None
    completed: int | None = None
    total: int | None = None
    speed: float | None = None
    eta: float | None = None


class Pulled(_Reply):
    """The result of a pull (the body, or the last NDJSON line of a streamed one)."""

    status: Literal["success"]
    model: str
    path: str | None = None
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    source: str | None = None


class Stats(_Reply):
    cache: dict[str, Any]
    models: dict[str, Any]


class Hardware(_Reply):
    """What the box has (CPU, memory, accelerators) and each engine's probe."""


class UsageRow(_Reply):
    ts: float
    request_id: str | None
    door: str | None
    key: str | None
    model: str | None
    route: str | None
    status: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None


class RecentUsage(_Reply):
    data: list[UsageRow]


class AnyObject(_Reply):
    """A JSON object (an operation whose reply has no documented type yet)."""


# The documented reply of each operation, by its name in ``hfd.daemon.operations``. A row not
# named here is documented as a JSON object (``AnyObject``).
REPLIES: dict[str, type[BaseModel]] = {
    "health": Health,
    "ready": Ready,
    "models.list": ModelList,
    "models.retrieve": Model,
    "chat.completions.create": ChatCompletion,
    "completions.create": Completion,
    "embeddings.create": Embeddings,
    "models.ps": LoadedModels,
    "models.load": LoadedModel,
    "models.unload": Unloaded,
    "models.tune": EngineMeasurement,
    "models.pull": Pulled,
    "stats": Stats,
    "version": Version,
    "hardware": Hardware,
    "usage.recent": RecentUsage,
}

# Stream items: the SSE event of a generation, the NDJSON line of a progress operation.
STREAM_ITEMS: dict[str, type[BaseModel]] = {
    "chat.completions.create": ChatCompletionChunk,
    "completions.create": Completion,
    "models.pull": PullProgress,
}
