"""Requests and replies, written once for ``Client`` and ``AsyncClient``: no sockets here.

A builder turns a method's arguments into a ``Call`` (the operation, its body, how to read
the final reply); a client's runner sends it over its transport and feeds the replies back
through ``outcome`` and ``StreamBase``. Nothing here waits or touches a socket, so the two
clients differ only in how they wait, and this is tested without a daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from hfd.client import types as t
from hfd.client._common import expect_kind, raise_for_error
from hfd.client.chat_types import ChatCompletion, ChatCompletionChunk, Completion
from hfd.client.errors import ModelNotFound, Timeout
from hfd.client.protocol import (
    KIND_CHUNK,
    KIND_END,
    KIND_EVENT,
    KIND_RESULT,
    OP_CHAT,
    OP_COMPLETIONS,
    OP_DETOKENIZE,
    OP_EMBEDDINGS,
    OP_HARDWARE,
    OP_HEALTH,
    OP_MODELS_LIST,
    OP_MODELS_LOAD,
    OP_MODELS_PS,
    OP_MODELS_TUNE,
    OP_MODELS_UNLOAD,
    OP_PULL,
    OP_STATS,
    OP_TOKENIZE,
    Reply,
)

T = TypeVar("T")

KeepAlive = float | str | None
Progress = Callable[[t.PullProgress], object]

UNARY: Final = "unary"  # one final ``result``
STREAM: Final = "stream"  # ``chunk``s, then ``end``: the caller gets a stream object
PULL: Final = "pull"  # ``event``s for ``progress``, then ``result``


def _no_progress(event: t.PullProgress) -> None:
    return None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to make. ``parse`` reads the final ``result`` (unary, pull) or, for a
    stream, each chunk's body. ``timeout`` None means the client's default."""

    op: str
    body: dict[str, Any]
    parse: Callable[[Any], T]
    timeout: float | None = None
    kind: str = UNARY
    progress: Progress = _no_progress
    frames: list[bytes] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading replies


def result(call: Call[T], reply: Reply) -> T:
    """The value of a final reply (an ``error`` reply raises its class)."""
    return call.parse(expect_kind(reply, KIND_RESULT))


def outcome(call: Call[T], reply: Reply | None, timeout: float | None) -> tuple[bool, Any]:
    """What one reply to a unary or pull call means: ``(True, value)`` for the final reply,
    ``(False, progress or None)`` for one before it; silence raises ``Timeout``."""
    if reply is None:
        raise timed_out(call.op, timeout)
    if reply.final:
        return True, result(call, reply)
    return False, t.PullProgress.from_dict(reply.body) if reply.kind == KIND_EVENT else None


def timed_out(op: str, seconds: float | None) -> Timeout:
    return Timeout(f"{op}: nothing from the daemon for {seconds or 0:g}s; the request was cancelled")


def stream_timed_out(seconds: float | None) -> Timeout:
    return Timeout(f"no data from the daemon for {seconds or 0:g}s; the request was cancelled")


class StreamBase(Generic[T]):
    """What ``Stream`` and ``AsyncStream`` share: the replies of one stream in order.

    ``_take`` returns a chunk's value, or None for the ``end`` (whose usage and finish reason
    it keeps) and other kinds; an ``error`` raises its class, a silence (None) ``Timeout``.
    The exchange is given up (cancelled unless it ended) once the stream is done.
    """

    def __init__(self, exchange: Any, call: Call[T], timeout: float | None) -> None:
        self._exchange = exchange  # it keeps the transport (and its sockets) alive
        self._parse = call.parse
        self._timeout = timeout
        self._done = False
        self.usage: t.Usage | None = None
        self.finish_reason: str | None = None

    def _take(self, reply: Reply | None) -> T | None:
        if reply is None:
            self._finish()
            raise stream_timed_out(self._timeout)
        if reply.final:
            self._finish()
        raise_for_error(reply)
        # event: a stream of events (the Responses API's), whose result ends it
        if reply.kind in (KIND_CHUNK, KIND_EVENT):
            return self._parse(reply.body)
        if reply.kind == KIND_END:
            self.usage = t.Usage.from_dict(reply.body.get("usage"))
            self.finish_reason = reply.body.get("finish_reason")
        return None

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._exchange.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._done = True
            try:
                self._exchange.close_from_anywhere()
            except Exception:
                pass  # interpreter shutdown: the daemon cancels streams of gone clients


# ----------------------------------------------------------------------------- bodies


def clean(params: Mapping[str, Any]) -> dict[str, Any]:
    """A request body: parameters left at None are not sent (the daemon applies its defaults)."""
    return {k: v for k, v in params.items() if v is not None}


def _body(reply: Reply) -> dict[str, Any]:
    return reply.body


def _generation(
    op: str,
    body: dict[str, Any],
    stream: bool,
    params: dict[str, Any],
    chunk: Callable[[dict[str, Any]], Any],
) -> Call[Any]:
    timeout = params.pop("timeout", None)
    body = clean({**body, "stream": stream, **params})
    if stream:
        return Call(op, body, chunk, timeout, STREAM)
    whole = ChatCompletion.from_dict if op == OP_CHAT else Completion.from_dict
    return Call(op, body, lambda reply: whole(reply.body), timeout)


# ----------------------------------------------------------------------------- the operations


def health(*, timeout: float | None = None) -> Call[dict[str, Any]]:
    """The daemon's health: ``{"status": "ok", ...}``."""
    return Call(OP_HEALTH, {}, _body, timeout)


def ps(*, timeout: float | None = None) -> Call[list[t.RunningModel]]:
    """The loaded models, as ``hfd ps`` shows them."""
    return Call(
        OP_MODELS_PS, {}, lambda r: [t.RunningModel.from_dict(m) for m in r.body.get("models", [])], timeout
    )


def load(model: str, *, keep_alive: KeepAlive = None, timeout: float | None = None) -> Call[t.RunningModel]:
    """Load ``model`` now. ``keep_alive``: how long it stays loaded when idle, in seconds or
    as a duration ("5m", "1h"); negative keeps it loaded, 0 unloads it once idle."""
    body = clean({"model": model, "keep_alive": keep_alive})
    return Call(OP_MODELS_LOAD, body, lambda r: t.RunningModel.from_dict(r.body), timeout)


def unload(model: str, *, timeout: float | None = None) -> Call[bool]:
    """Unload ``model``; False when it was not loaded."""
    return Call(OP_MODELS_UNLOAD, {"model": model}, lambda r: bool(r.body.get("unloaded")), timeout)


def tune(model: str, *, timeout: float | None = None) -> Call[dict[str, Any]]:
    """Measure ``model``'s candidate engines on the daemon's machine now (each loaded and timed
    on a short workload) and keep the ranking its loads then follow: ``{"measured", "ranking",
    "figures", ...}``, or ``{"measured": False, "reason"}`` when there is nothing to choose."""
    return Call(OP_MODELS_TUNE, {"model": model}, _body, timeout)


def hardware(*, timeout: float | None = None) -> Call[dict[str, Any]]:
    """What the daemon found on its machine: CPU, memory, accelerators, engines."""
    return Call(OP_HARDWARE, {}, _body, timeout)


def stats(*, timeout: float | None = None) -> Call[dict[str, Any]]:
    """The daemon's counters: ``{"cache": {...}, "models": {...}}`` (response cache hits and
    misses, loads and evictions, memory pools, open circuit breakers). Needs ``admin``."""
    return Call(OP_STATS, {}, _body, timeout)


def pull(
    model: str, *, progress: Progress | None = None, timeout: float | None = None
) -> Call[t.PulledModel]:
    """Pull ``model`` (``org/name[@revision]``, ``ipfs://<cid>`` or an alias) into the
    daemon's store; ``progress`` is called with each progress event (in the calling thread;
    with ``AsyncClient`` it may also be a coroutine function).

    ``timeout`` bounds the wait for each event (the daemon repeats the last one every few
    seconds while nothing moves), not the whole pull. A timeout, an exception from
    ``progress`` or cancelling the awaiting task cancels the pull on the daemon.
    """
    body = {"model": model, "stream": True}
    parse = lambda r: t.PulledModel.from_dict(r.body)  # noqa: E731
    return Call(OP_PULL, body, parse, timeout, PULL, progress or _no_progress)


def tokenize(
    model: str | None = None,
    prompt: str | None = None,
    *,
    messages: Iterable[Mapping[str, Any]] | None = None,
    keep_alive: KeepAlive = None,
    timeout: float | None = None,
) -> Call[dict[str, Any]]:
    """The model's token ids for ``prompt`` (as a completion tokenises it) or for ``messages``
    (the chat template applied, as a chat completion renders it): ``{"tokens", "count",
    "max_model_len"}``. ``model`` may be left out when the daemon serves one generation model."""
    body = clean(
        {
            "model": model,
            "prompt": prompt,
            "messages": [dict(m) for m in messages] if messages is not None else None,
            "keep_alive": keep_alive,
        }
    )
    return Call(OP_TOKENIZE, body, _body, timeout)


def detokenize(
    tokens: Iterable[int],
    model: str | None = None,
    *,
    keep_alive: KeepAlive = None,
    timeout: float | None = None,
) -> Call[str]:
    """The text of ``tokens`` (special tokens skipped)."""
    body = clean({"model": model, "tokens": [int(x) for x in tokens], "keep_alive": keep_alive})
    return Call(OP_DETOKENIZE, body, lambda r: str(r.body["prompt"]), timeout)


def models_list(*, timeout: float | None = None) -> Call[t.ModelList]:
    """The models this daemon serves."""
    return Call(OP_MODELS_LIST, {}, lambda r: t.ModelList.from_dict(r.body), timeout)


def models_retrieve(model: str, *, timeout: float | None = None) -> Call[t.Model]:
    """One served model by name; ``ModelNotFound`` when it is not served here."""

    def find(reply: Reply) -> t.Model:
        for m in t.ModelList.from_dict(reply.body).data:
            if m.id == model:
                return m
        raise ModelNotFound(f"model {model!r} is not served here", param="model")

    return Call(OP_MODELS_LIST, {}, find, timeout)


def embeddings(
    *,
    model: str,
    input: str | Iterable[str],
    dimensions: int | None = None,
    timeout: float | None = None,
    **extra: Any,
) -> Call[t.EmbeddingResponse]:
    """Embed ``input`` (one text or many); the vectors come as one float32 array."""
    texts = input if isinstance(input, str) else list(input)
    body = clean({"model": model, "input": texts, "dimensions": dimensions, **extra})
    return Call(OP_EMBEDDINGS, body, lambda r: t.EmbeddingResponse.from_reply(r.body, r.frames), timeout)


def chat(
    model: str, messages: Iterable[Mapping[str, Any]], stream: bool, params: dict[str, Any]
) -> Call[Any]:
    """A chat completion (``params``: max_tokens, temperature, top_p, seed, stop, timeout, ...)."""
    body = {"model": model, "messages": [dict(m) for m in messages]}
    return _generation(OP_CHAT, body, stream, params, ChatCompletionChunk.from_dict)


def completions(
    model: str, prompt: str | list[int] | list[str] | list[list[int]], stream: bool, params: dict[str, Any]
) -> Call[Any]:
    """A text completion of ``prompt`` (a string or token ids, or a list of either: one choice
    per prompt); ``params`` as for ``chat`` (n, best_of, echo, logprobs, logit_bias, ...)."""
    return _generation(
        OP_COMPLETIONS, {"model": model, "prompt": prompt}, stream, params, Completion.from_dict
    )
