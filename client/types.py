"""Response objects, shaped like the OpenAI SDK's so code moves between the two unchanged.

They are plain dataclasses built from the daemon's reply bodies (the same JSON objects the HTTP
door sends); chat and completion replies and their chunks are in ``chat_types``. Unknown keys are ignored, so a newer daemon can add fields. Embeddings are numpy
float32 arrays when numpy is installed, lists of floats otherwise.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

try:  # numpy is optional for the client
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where numpy is absent
    np = None  # type: ignore[assignment]


def get_field(body: dict[str, Any], key: str, default: Any = None) -> Any:
    """``body[key]``, or ``default`` where it is missing or null."""
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
            prompt_tokens=int(get_field(body, "prompt_tokens", 0)),
            completion_tokens=int(get_field(body, "completion_tokens", 0)),
            total_tokens=int(get_field(body, "total_tokens", 0)),
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
            object=str(get_field(body, "object", "model")),
            created=int(get_field(body, "created", 0)),
            owned_by=str(get_field(body, "owned_by", "hfd")),
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
        return cls(data=[Model.from_dict(m) for m in get_field(body, "data", [])])


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
    # Why this engine was tried first: "measured on this machine: ..." or "static order: ...".
    engine_reason: str | None = None
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
    # "ready" once loaded; a model still loading is listed with its phase ("resolving",
    # "exporting", "compiling", "loading", "warming", "measuring"), the seconds since its load began, and a
    # percent only where the engine reports one (None otherwise).
    state: str = "ready"
    elapsed_seconds: float | None = None
    percent: float | None = None

    @property
    def breaker_state(self) -> str:
        return str(self.breaker.get("state") or "closed")

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RunningModel:
        estimate = body.get("memory_estimate")
        return cls(
            name=str(body["name"]),
            task=str(get_field(body, "task", "")),
            engine=str(get_field(body, "engine", "")),
            device=str(get_field(body, "device", "")),
            memory_bytes=int(get_field(body, "memory_bytes", 0)),
            in_use=int(get_field(body, "in_use", 0)),
            keep_alive=body.get("keep_alive"),
            expires_in=body.get("expires_in"),
            load_seconds=float(get_field(body, "load_seconds", 0.0)),
            path=body.get("path"),
            scheduler=dict(get_field(body, "scheduler", {})),
            memory_estimate={str(k): int(v) for k, v in estimate.items()}
            if isinstance(estimate, dict)
            else None,
            memory_reserved_bytes=int(get_field(body, "memory_reserved_bytes", 0)),
            memory_pool=body.get("memory_pool"),
            breaker=dict(get_field(body, "breaker", {})),
            preferred_engine=body.get("preferred_engine"),
            fallback_reason=body.get("fallback_reason"),
            engine_reason=body.get("engine_reason"),
            precision=body.get("precision"),
            weight_format=body.get("weight_format"),
            threads=body.get("threads"),
            kv_cache=dict(body["kv_cache"]) if isinstance(body.get("kv_cache"), dict) else None,
            model=body.get("model"),
            expires_at=body["expires_at"] if isinstance(body.get("expires_at"), str) else None,
            digest=body.get("digest"),
            details=dict(body["details"]) if isinstance(body.get("details"), dict) else {},
            state=str(body.get("state") or "ready"),
            elapsed_seconds=body.get("elapsed_seconds"),
            percent=body.get("percent"),
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
            ref=str(get_field(body, "ref", "")),
            # The daemon sends Ollama's progress text as "status" and its own status as "phase".
            status=str(get_field(body, "phase", get_field(body, "status", ""))),
            source=body.get("source"),
            file=body.get("file"),
            files_done=int(get_field(body, "files_done", 0)),
            files_total=int(get_field(body, "files_total", 0)),
            completed=int(get_field(body, "completed", 0)),
            total=int(get_field(body, "total", 0)),
            speed=float(get_field(body, "speed", 0.0)),
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
            model=str(get_field(body, "model", "")),
            repo=str(get_field(body, "repo", "")),
            revision=body.get("revision"),
            commit=body.get("commit"),
            source=str(get_field(body, "source", "")),
            path=str(get_field(body, "path", "")),
            status=str(get_field(body, "status", "success")),
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
