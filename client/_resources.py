"""The client's methods and namespaces (``client.models.list``, ``client.chat.completions
.create``, the admin methods), defined once for ``Client`` and ``AsyncClient``.

Each method builds a ``Call`` (``hfd.client._calls``) and hands it to the client's runner,
which performs it: ``Client``'s returns the value, ``AsyncClient``'s a coroutine. The type
parameter (``Sync`` or ``Async``) tells type checkers and IDEs which: ``op`` is a descriptor
whose ``__get__`` gives the builder's own signature with the flavour's return type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from hfd.client import _calls as calls
from hfd.client.types import ChatCompletion, ChatCompletionChunk, Completion

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

        @functools.wraps(build)
        def method(*args: Any, **kwargs: Any) -> Any:
            return run(build(*args, **kwargs))

        return method


class Admin(Namespace[F]):
    """The daemon's own operations, as methods of the client itself."""

    health = op(calls.health)
    ps = op(calls.ps)
    load = op(calls.load)
    unload = op(calls.unload)
    hardware = op(calls.hardware)
    stats = op(calls.stats)
    pull = op(calls.pull)


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
