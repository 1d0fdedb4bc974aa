"""The client's methods and namespaces (``client.models.list``, ``client.chat.completions
.create``, the admin methods), defined once for ``Client`` and ``AsyncClient``.

Each method builds a ``Call`` (``hfd.client._calls``) and hands it to the client's runner,
which performs it: ``Client``'s returns the value, ``AsyncClient``'s a coroutine. The type
parameter (``Sync`` or ``Async``) tells type checkers and IDEs which: ``op`` is a descriptor
whose ``__get__`` gives the builder's own signature with the flavour's return type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from hfd.client import _calls as calls
from hfd.client import _media_calls as media_calls
from hfd.client import _responses_calls as responses_calls
from hfd.client import _task_calls as task_calls
from hfd.client._common import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, RequestIds
from hfd.client.chat_types import ChatCompletion, ChatCompletionChunk, Completion
from hfd.client.curve import CurveKeys, KeySource, curve_keys
from hfd.client.paths import normalize_endpoint
from hfd.client.protocol import Request

if TYPE_CHECKING:
    from hfd.client.aio import AsyncStream
    from hfd.client.sync import Stream

P = ParamSpec("P")
T = TypeVar("T")
Runner = Callable[[calls.Call[Any]], Any]
Messages = Iterable[Mapping[str, Any]]


class Sync:
    """Flavour of ``Client``: a method returns its value."""


class Async:
    """Flavour of ``AsyncClient``: a method returns a coroutine of its value."""


F = TypeVar("F", Sync, Async)
X = TypeVar("X")  # the transport type


class Namespace(Generic[F]):
    """Methods that run their calls with ``self._run``."""

    _run: Runner

    def __init__(self, run: Runner) -> None:
        self._run = run


class op(Generic[P, T]):
    """A method made from a ``Call`` builder: same parameters, run by the client's runner."""

    def __init__(self, build: Callable[P, calls.Call[T]]) -> None:
        self._build = build
        self.__doc__ = build.__doc__
        # What help() and inspect.signature() show: the builder's parameters, not its Call.
        self._signature = inspect.signature(build).replace(return_annotation=inspect.Signature.empty)
        self.__name__ = build.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    @overload
    def __get__(self, obj: None, owner: type) -> op[P, T]: ...
    @overload
    def __get__(self, obj: Namespace[Sync], owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Namespace[Async], owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Namespace[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        build, run = self._build, obj._run

        def method(*args: Any, **kwargs: Any) -> Any:
            return run(build(*args, **kwargs))

        method.__name__ = method.__qualname__ = self.__name__
        method.__doc__ = self.__doc__
        method.__signature__ = self._signature  # type: ignore[attr-defined]
        return method


class Admin(Namespace[F]):
    """The daemon's own operations, as methods of the client itself."""

    health = op(calls.health)
    ps = op(calls.ps)
    load = op(calls.load)
    unload = op(calls.unload)
    tune = op(calls.tune)
    hardware = op(calls.hardware)
    stats = op(calls.stats)
    pull = op(calls.pull)
    tokenize = op(calls.tokenize)
    detokenize = op(calls.detokenize)
    rerank = op(task_calls.rerank)
    score = op(task_calls.score)
    classify = op(task_calls.classify)
    ner = op(task_calls.ner)
    transcribe = op(media_calls.transcribe)
    translate = op(media_calls.translate)


class Models(Namespace[F]):
    list = op(calls.models_list)
    retrieve = op(calls.models_retrieve)


class Embeddings(Namespace[F]):
    create = op(calls.embeddings)


# Streamed generation returns a stream object whose class depends on the flavour, and whether
# it streams depends on an argument: written out as overloads, with the parameters once.


class ChatCompletions(Namespace[F]):
    @overload
    def create(
        self: ChatCompletions[Sync],
        *,
        model: str,
        messages: Messages,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> ChatCompletion: ...
    @overload
    def create(
        self: ChatCompletions[Sync], *, model: str, messages: Messages, stream: Literal[True], **params: Any
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(
        self: ChatCompletions[Async],
        *,
        model: str,
        messages: Messages,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> Coroutine[Any, Any, ChatCompletion]: ...
    @overload
    def create(
        self: ChatCompletions[Async], *, model: str, messages: Messages, stream: Literal[True], **params: Any
    ) -> Coroutine[Any, Any, AsyncStream[ChatCompletionChunk]]: ...

    def create(self, *, model: str, messages: Messages, stream: bool = False, **params: Any) -> Any:
        """A chat completion; ``params``: max_tokens, temperature, top_p, seed, stop, timeout,
        and any other field the daemon takes. ``stream=True`` returns a stream of chunks."""
        return self._run(calls.chat(model, messages, stream, params))


class Chat(Namespace[F]):
    def __init__(self, run: Runner) -> None:
        super().__init__(run)
        self.completions: ChatCompletions[F] = ChatCompletions(run)


class Completions(Namespace[F]):
    @overload
    def create(
        self: Completions[Sync],
        *,
        model: str,
        prompt: str | list[int],
        stream: Literal[False] = ...,
        **params: Any,
    ) -> Completion: ...
    @overload
    def create(
        self: Completions[Sync], *, model: str, prompt: str | list[int], stream: Literal[True], **params: Any
    ) -> Stream[Completion]: ...
    @overload
    def create(
        self: Completions[Async],
        *,
        model: str,
        prompt: str | list[int],
        stream: Literal[False] = ...,
        **params: Any,
    ) -> Coroutine[Any, Any, Completion]: ...
    @overload
    def create(
        self: Completions[Async], *, model: str, prompt: str | list[int], stream: Literal[True], **params: Any
    ) -> Coroutine[Any, Any, AsyncStream[Completion]]: ...

    def create(self, *, model: str, prompt: str | list[int], stream: bool = False, **params: Any) -> Any:
        """A text completion of ``prompt`` (a string or token ids); ``params`` as for chat."""
        return self._run(calls.completions(model, prompt, stream, params))


class Responses(Namespace[F]):
    """The Responses API over IPC, as on the HTTP door; replies and events are its dicts."""

    retrieve = op(responses_calls.retrieve)
    delete = op(responses_calls.delete)
    input_items = op(responses_calls.input_items)

    def create(
        self, *, model: str, input: str | list[dict[str, Any]], stream: bool = False, **params: Any
    ) -> Any:
        """A response (a dict); ``params``: instructions, previous_response_id, store,
        max_output_tokens, tools, timeout, ... ``stream=True`` returns a stream of its events."""
        return self._run(responses_calls.create(model, input, stream, params))


class ClientBase(Admin[F], Generic[F, X]):
    """What ``Client`` and ``AsyncClient`` share: arguments, namespaces, request ids. Each
    names its default transport (made from the endpoint, ``connect_timeout`` and CURVE keys)
    and defines ``_call``, which performs a ``Call`` over ``self._transport``."""

    _default_transport: Callable[..., Any]

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        curve_server_key: KeySource | None = None,
        curve_public_key: KeySource | None = None,
        curve_secret_key: KeySource | None = None,
        transport: X | None = None,
    ) -> None:
        super().__init__(self._call)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        if transport is None:
            self.endpoint = normalize_endpoint(path)
            curve: CurveKeys | None = curve_keys(curve_server_key, curve_public_key, curve_secret_key)
            transport = self._default_transport(self.endpoint, connect_timeout=connect_timeout, curve=curve)
        else:
            self.endpoint = str(getattr(transport, "endpoint", "custom"))
        self._transport: X = transport
        self._ids = RequestIds()
        self.models: Models[F] = Models(self._run)
        self.embeddings: Embeddings[F] = Embeddings(self._run)
        self.chat: Chat[F] = Chat(self._run)
        self.completions: Completions[F] = Completions(self._run)
        self.responses: Responses[F] = Responses(self._run)

    def _call(self, call: calls.Call[Any]) -> Any:
        raise NotImplementedError

    def _request(self, call: calls.Call[Any]) -> tuple[Request, float | None]:
        """The request for ``call`` and the timeout that bounds each wait for its replies."""
        timeout = self.timeout if call.timeout is None else call.timeout
        return Request(id=self._ids.next(), op=call.op, body=call.body, frames=call.frames), timeout
