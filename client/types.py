"""Response objects, shaped like the OpenAI SDK's so code moves between the two unchanged.

They are plain dataclasses built from the daemon's reply bodies (the same JSON objects the HTTP
door sends). Unknown keys are ignored, so a newer daemon can add fields. Embeddings are numpy
float32 arrays when numpy is installed, lists of floats otherwise.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hfd.client.logprob_types import ChoiceLogprobs, CompletionLogprobs

try:  # numpy is optional for the client
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where numpy is absent
    np = None  # type: ignore[assignment]


def _get(body: dict[str, Any], key: str, default: Any = None) -> Any:
    value = body.get(key, default)
    return default if value is None else value


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_dict(cls, body: dict[str, Any] | None) -> Usage | None:
        if not body:
            return None
        return cls(
            prompt_tokens=int(_get(body, "prompt_tokens", 0)),
            completion_tokens=int(_get(body, "completion_tokens", 0)),
            total_tokens=int(_get(body, "total_tokens", 0)),
        )


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Model:
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "hfd"
    task: str | None = None
    loaded: bool = False
    ref: str | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Model:
        return cls(
            id=str(body["id"]),
            object=str(_get(body, "object", "model")),
            created=int(_get(body, "created", 0)),
            owned_by=str(_get(body, "owned_by", "hfd")),
            task=body.get("task"),
            loaded=bool(body.get("loaded", False)),
            ref=body.get("ref"),
        )


@dataclass(frozen=True)
class ModelList:
    data: list[Model]
    object: str = "list"

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ModelList:
        return cls(data=[Model.from_dict(m) for m in _get(body, "data", [])])


@dataclass(frozen=True)
class RunningModel:
    """One loaded model, as ``hfd ps`` shows it."""

    name: str
    task: str
    engine: str
    device: str
    memory_bytes: int = 0
    in_use: int = 0
    keep_alive: float | None = None
    expires_in: float | None = None  # None while in use or kept forever
    load_seconds: float = 0.0
    path: str | None = None
    scheduler: dict[str, Any] = field(default_factory=dict)
    # What the daemon expected the model to need before loading it ({"weights", "kv_cache",
    # "activations", "overhead", "total"} in bytes), and what it reserved in ``memory_pool``.
    memory_estimate: dict[str, int] | None = None
    memory_reserved_bytes: int = 0
    memory_pool: str | None = None
    # The circuit breaker: {"state": "closed" | "half_open" | "open", "engines": {...}}.
    breaker: dict[str, Any] = field(default_factory=dict)
    # The engine the policy preferred, and why the serving engine is another one (None: it is).
    preferred_engine: str | None = None
    fallback_reason: str | None = None
    # What the engine computes in ("f32", "bf16", "f16"), how the weights are stored, threads.
    precision: str | None = None
    weight_format: str | None = None
    threads: int | None = None
    # Engines with their own KV cache (OpenVINO): {"planned_bytes", "allocated_bytes"}.
    kv_cache: dict[str, int] | None = None
    # Ollama's fields of the same row (/api/ps): the Ollama name ("chat:latest"), the unload
    # time (RFC 3339; None while in use or kept forever), a digest, and details (family ...).
    model: str | None = None
    expires_at: str | None = None
    digest: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def breaker_state(self) -> str:
        return str(self.breaker.get("state") or "closed")

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RunningModel:
        estimate = body.get("memory_estimate")
        return cls(
            name=str(body["name"]),
            task=str(_get(body, "task", "")),
            engine=str(_get(body, "engine", "")),
            device=str(_get(body, "device", "")),
            memory_bytes=int(_get(body, "memory_bytes", 0)),
            in_use=int(_get(body, "in_use", 0)),
            keep_alive=body.get("keep_alive"),
            expires_in=body.get("expires_in"),
            load_seconds=float(_get(body, "load_seconds", 0.0)),
            path=body.get("path"),
            scheduler=dict(_get(body, "scheduler", {})),
            memory_estimate={str(k): int(v) for k, v in estimate.items()}
            if isinstance(estimate, dict)
            else None,
            memory_reserved_bytes=int(_get(body, "memory_reserved_bytes", 0)),
            memory_pool=body.get("memory_pool"),
            breaker=dict(_get(body, "breaker", {})),
            preferred_engine=body.get("preferred_engine"),
            fallback_reason=body.get("fallback_reason"),
            precision=body.get("precision"),
            weight_format=body.get("weight_format"),
            threads=body.get("threads"),
            kv_cache=dict(body["kv_cache"]) if isinstance(body.get("kv_cache"), dict) else None,
            model=body.get("model"),
            expires_at=body["expires_at"] if isinstance(body.get("expires_at"), str) else None,
            digest=body.get("digest"),
            details=dict(body["details"]) if isinstance(body.get("details"), dict) else {},
        )


# ----------------------------------------------------------------------------- pulls


@dataclass(frozen=True)
class PullProgress:
    """One progress event of a pull (sent a few times a second, and at every status change).

    ``status`` goes ``resolving`` -> (``waiting``) -> ``downloading`` -> ``placing`` -> ``done``;
    a pull the store answers at once goes from ``resolving`` to ``done``.
    """

    ref: str
    status: str
    source: str | None = None  # "store", "ipfs", "hub"
    file: str | None = None  # the file being downloaded
    files_done: int = 0
    files_total: int = 0
    completed: int = 0  # bytes
    total: int = 0  # bytes
    speed: float = 0.0  # bytes per second
    eta: float | None = None  # seconds

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PullProgress:
        return cls(
            ref=str(_get(body, "ref", "")),
            # The daemon sends Ollama's progress text as "status" and its own status as "phase".
            status=str(_get(body, "phase", _get(body, "status", ""))),
            source=body.get("source"),
            file=body.get("file"),
            files_done=int(_get(body, "files_done", 0)),
            files_total=int(_get(body, "files_total", 0)),
            completed=int(_get(body, "completed", 0)),
            total=int(_get(body, "total", 0)),
            speed=float(_get(body, "speed", 0.0)),
            eta=body.get("eta"),
        )


@dataclass(frozen=True)
class PulledModel:
    """A pull's outcome: the snapshot now in the daemon's store."""

    model: str  # the reference that was pulled
    repo: str
    revision: str | None
    commit: str | None
    source: str  # where it came from: "store" (already there), "ipfs", "hub", ...
    path: str  # the snapshot directory on the daemon's machine
    status: str = "success"

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PulledModel:
        return cls(
            model=str(_get(body, "model", "")),
            repo=str(_get(body, "repo", "")),
            revision=body.get("revision"),
            commit=body.get("commit"),
            source=str(_get(body, "source", "")),
            path=str(_get(body, "path", "")),
            status=str(_get(body, "status", "success")),
        )


# ----------------------------------------------------------------------------- embeddings


def vectors_from_frame(frame: bytes, shape: tuple[int, int]) -> Any:
    """Little-endian float32 rows -> an (n, d) numpy array (a list of lists without numpy)."""
    n, d = shape
    if len(frame) != n * d * 4:
        from hfd.client.errors import ProtocolError

        raise ProtocolError(f"embedding frame has {len(frame)} bytes, expected {n * d * 4} for shape {shape}")
    if np is not None:
        return np.frombuffer(frame, dtype="<f4").reshape(n, d).astype(np.float32, copy=False)
    values = array("f")
    values.frombytes(frame)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    flat = values.tolist()
    return [flat[i * d : (i + 1) * d] for i in range(n)]


@dataclass(frozen=True)
class Embedding:
    embedding: Any  # numpy float32 (d,) array, or list[float] without numpy
    index: int
    object: str = "embedding"


@dataclass(frozen=True)
class EmbeddingResponse:
    data: list[Embedding]
    model: str
    usage: Usage | None
    embeddings: Any  # all vectors at once: numpy float32 (n, d), or list of lists
    object: str = "list"

    @classmethod
    def from_reply(cls, body: dict[str, Any], frames: list[bytes]) -> EmbeddingResponse:
        from hfd.client.errors import ProtocolError

        shape = body.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(x, int) for x in shape)):
            raise ProtocolError(f"embedding reply has no valid 'shape': {shape!r}")
        if len(frames) != 1:
            raise ProtocolError(f"embedding reply has {len(frames)} data frames, expected 1")
        vectors = vectors_from_frame(frames[0], (shape[0], shape[1]))
        data = [Embedding(embedding=vectors[i], index=i) for i in range(shape[0])]
        return cls(
            data=data,
            model=str(body.get("model", "")),
            usage=Usage.from_dict(body.get("usage")),
            embeddings=vectors,
        )


# ----------------------------------------------------------------------------- chat


@dataclass(frozen=True)
class Function:
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class ToolCall:
    id: str
    function: Function
    type: str = "function"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        fn = d.get("function") or {}
        return cls(str(d.get("id", "")), Function(str(fn.get("name", "")), str(fn.get("arguments", ""))))


@dataclass(frozen=True)
class ChatCompletionMessage:
    role: str
    content: str | None
    tool_calls: list[ToolCall] | None = None


@dataclass(frozen=True)
class Choice:
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


@dataclass(frozen=True)
class ChatCompletion:
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None
    object: str = "chat.completion"

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ChatCompletion:
        def choice(c: dict[str, Any], index: int) -> Choice:
            message = c.get("message") or {}
            role = str(_get(message, "role", "assistant"))
            raw = message.get("tool_calls")
            calls = [ToolCall.from_dict(x) for x in raw] if raw else None
            reply = ChatCompletionMessage(role, message.get("content"), calls)
            return Choice(index, reply, c.get("finish_reason"), ChoiceLogprobs.from_dict(c.get("logprobs")))

        return cls(**_generated(body, choice))


def _generated(body: dict[str, Any], choice: Callable[[dict[str, Any], int], Any]) -> dict[str, Any]:
    """The fields a chat completion, its chunks and a completion share; ``choice`` reads one
    choice (with its index)."""
    return {
        "id": str(_get(body, "id", "")),
        "created": int(_get(body, "created", 0)),
        "model": str(_get(body, "model", "")),
        "choices": [choice(c, int(_get(c, "index", 0))) for c in _get(body, "choices", [])],
        "usage": Usage.from_dict(body.get("usage")),
    }


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed call: the first has ``id`` and ``name``, the rest ``arguments``
    fragments to append (OpenAI's ``delta.tool_calls``)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCallDelta:
        fn = d.get("function") or {}
        return cls(int(d.get("index", 0)), d.get("id"), fn.get("name"), str(fn.get("arguments") or ""))


@dataclass(frozen=True)
class ChoiceDelta:
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


@dataclass(frozen=True)
class ChunkChoice:
    index: int
    delta: ChoiceDelta
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


@dataclass(frozen=True)
class ChatCompletionChunk:
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: str = "chat.completion.chunk"

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ChatCompletionChunk:
        def choice(c: dict[str, Any], index: int) -> ChunkChoice:
            delta = c.get("delta") or {}
            raw = delta.get("tool_calls")
            calls = [ToolCallDelta.from_dict(x) for x in raw] if raw else None
            return ChunkChoice(
                index,
                ChoiceDelta(delta.get("role"), delta.get("content"), calls),
                c.get("finish_reason"),
                ChoiceLogprobs.from_dict(c.get("logprobs")),
            )

        return cls(**_generated(body, choice))


# ----------------------------------------------------------------------------- completions


@dataclass(frozen=True)
class CompletionChoice:
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


@dataclass(frozen=True)
class Completion:
    """A completion, and (as in the OpenAI SDK) also each chunk of a streamed one."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None
    object: str = "text_completion"

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Completion:
        def choice(c: dict[str, Any], index: int) -> CompletionChoice:
            return CompletionChoice(
                index,
                str(_get(c, "text", "")),
                c.get("finish_reason"),
                CompletionLogprobs.from_dict(c.get("logprobs")),
            )

        return cls(**_generated(body, choice))
