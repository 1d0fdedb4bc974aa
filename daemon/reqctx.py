"""The request being answered, in a context variable: its id (for log lines), who sent it,
and what it used (model, tokens, time to first token), for metrics and the usage log.

A door binds a :class:`RequestContext` when a request arrives; code below it (the service, a
generation) notes what it knows with :func:`note_tokens` and :func:`note_first_token`. Tasks
started while serving the request copy the context variable, and all copies point to the same
object, so what a streaming task notes is seen by the door when the request ends.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hfd.daemon.access.auth import Principal

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class RequestContext:
    request_id: str
    door: str  # "http" | "ipc"
    route: str = ""
    principal: Principal | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started


_current: ContextVar[RequestContext | None] = ContextVar("hfd_request", default=None)


def new_request_id(suggested: str | None = None) -> str:
    """The client's id when it is a sane token (so logs on both sides match), else a new one."""
    if suggested and _REQUEST_ID.match(suggested):
        return suggested
    return uuid.uuid4().hex


def current() -> RequestContext | None:
    return _current.get()


def request_id() -> str | None:
    ctx = _current.get()
    return ctx.request_id if ctx is not None else None


@contextmanager
def bind(ctx: RequestContext) -> Iterator[RequestContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def note_tokens(
    prompt: int, completion: int = 0, *, model: str | None = None, ctx: RequestContext | None = None
) -> None:
    """Add the tokens a request used (prompt/input and generated)."""
    ctx = ctx or _current.get()
    if ctx is None:
        return
    ctx.prompt_tokens += int(prompt)
    ctx.completion_tokens += int(completion)
    if model and not ctx.model:
        ctx.model = model


def note_first_token(ctx: RequestContext | None = None) -> None:
    ctx = ctx or _current.get()
    if ctx is not None and ctx.first_token_at is None:
        ctx.first_token_at = time.perf_counter()
