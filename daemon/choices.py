"""Requests with several choices or with logprobs: ``n``, ``best_of``, a list of prompts (or of
token-id lists) in one completions request, ``echo``, ``logprobs``.

Every choice is one sequence in the model's batch (they share steps; ``n`` sequences of one
prompt are separate rows). Choice ``index`` is prompt-major, ``n``-minor, as OpenAI numbers
them. ``Choices`` is the stream a ``Generation`` reads: it yields ``ChoiceChunk`` s (text, the
choice's index, its logprobs as text) and keeps each choice's result for the whole-body reply.
Streams are read one choice after another (each sequence still generates in the batch
meanwhile; its chunks wait in its buffer).

``echo`` puts the prompt text (and, with logprobs, its tokens' logprobs, the first ``None``) in
front of the choice; ``max_tokens: 0`` with echo generates one token and drops it, so only the
prompt is scored (what lm-eval's loglikelihood requests send).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hfd.backends import capabilities
from hfd.client.errors import InvalidRequest
from hfd.daemon.sampling_request import engine_fields
from hfd.daemon.tasks import seq2seq

if TYPE_CHECKING:
    from hfd.backends.base import SamplingParams
    from hfd.backends.constraints import ConstraintSpec
    from hfd.daemon.models.loaded import LoadedModel
    from hfd.daemon.scheduler.detok_logprobs import TextLogprob
    from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest
    from hfd.daemon.service import Generation, Service

Prompt = Callable[["LoadedModel"], Awaitable[list[int]]]


@dataclass
class ChoiceChunk:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[TextLogprob | None] | None = None


@dataclass
class ChoiceResult:
    index: int
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TextLogprob | None] | None = None  # None: not asked
    score: float = 0.0  # cumulative logprob of the generated tokens (best_of)
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Choice:
    index: int
    stream: Any
    echo: str | None  # the prompt text to put in front (echo), else None
    drop_output: bool  # max_tokens 0: the generated token is not part of the answer
    first_of_prompt: bool  # counts the prompt's tokens in usage
    result: ChoiceResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = ChoiceResult(self.index)


class Choices:
    """The stream of a several-choice generation (see the module's doc)."""

    def __init__(self, choices: list[_Choice], *, logprobs: bool, keep: int | None = None, group: int = 1):
        self._choices = choices
        self._logprobs = logprobs  # the request asked for them (best_of alone does not show them)
        self._keep = keep  # best_of: keep this many per group of ``group`` choices
        self._group = group
        self.results: list[ChoiceResult] = []

    @property
    def prompt_tokens(self) -> int:
        return sum(int(c.stream.prompt_tokens) for c in self._choices if c.first_of_prompt)

    @property
    def completion_tokens(self) -> int:
        return sum(0 if c.drop_output else int(c.stream.completion_tokens) for c in self._choices)

    @property
    def finish_reason(self) -> str | None:
        return self._choices[0].result.finish_reason if self._choices else None

    async def aclose(self) -> None:
        for c in self._choices:
            await c.stream.aclose()

    def __aiter__(self) -> AsyncIterator[ChoiceChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[ChoiceChunk]:
        best_of = self._keep is not None
        for c in self._choices:
            first = True
            async for piece in c.stream:
                chunk = self._chunk(c, piece, first)
                first = False
                r = c.result
                r.text += chunk.text
                r.finish_reason = chunk.finish_reason or r.finish_reason
                if piece.logprobs:
                    r.score += sum(e.logprob for e in piece.logprobs if e is not None)
                if chunk.logprobs is not None:
                    r.logprobs = (r.logprobs or []) + chunk.logprobs
                if not best_of:
                    yield chunk
            c.result.finish_reason = c.result.finish_reason or c.stream.finish_reason
        results = [c.result for c in self._choices]
        if best_of:
            results = self._best(results)
            for r in results:
                yield ChoiceChunk(r.index, r.text, [], r.finish_reason, r.logprobs)
        self.results = results

    def _chunk(self, c: _Choice, piece: Any, first: bool) -> ChoiceChunk:
        text = "" if c.drop_output else piece.text
        lps = None
        if self._logprobs:
            lps = [] if c.drop_output else list(piece.logprobs or [])
        if first and c.echo is not None:
            text = c.echo + text
            if lps is not None:
                lps = list(piece.prompt_logprobs or []) + lps
        finish = piece.finish_reason
        if c.drop_output and finish is not None:
            finish = "length"
        return ChoiceChunk(c.index, text, [] if c.drop_output else list(piece.token_ids), finish, lps)

    def _best(self, results: list[ChoiceResult]) -> list[ChoiceResult]:
        assert self._keep is not None
        kept: list[ChoiceResult] = []
        for start in range(0, len(results), self._group):
            group = sorted(results[start : start + self._group], key=lambda r: -r.score)[: self._keep]
            kept.extend(group)
        for i, r in enumerate(kept):
            r.index = i
        return kept


async def generate(
    service: Service,
    kind: str,
    req: ChatCompletionRequest | CompletionRequest,
    prompts: list[tuple[Prompt, Callable[[LoadedModel, list[int]], str] | None]],
    *,
    adjust: Callable[[LoadedModel, SamplingParams], Awaitable[SamplingParams]] | None = None,
) -> Generation:
    """Submit ``n`` (or ``best_of``) sequences per prompt; ``prompts`` pairs each prompt's ids
    with how its echo text is made (None: no echo)."""
    from hfd.daemon.schema import parse_keep_alive
    from hfd.daemon.service import Generation, sampling_params

    stack = AsyncExitStack()
    try:
        lm = await stack.enter_async_context(
            service.manager.acquire(req.model, parse_keep_alive(req.keep_alive))
        )
        if lm.task not in ("generate", seq2seq.TASK):
            raise InvalidRequest(
                f"model {lm.name!r} is an embedding model; use /v1/embeddings", param="model"
            )
        model: Any = lm.model
        best_of = getattr(req, "best_of", None) or req.n
        per_prompt = max(req.n, best_of)
        echo_only = getattr(req, "max_tokens", None) == 0
        extra = engine_fields(req)
        built = []
        for prompt, echo in prompts:
            ids = await prompt(lm)
            room = seq2seq.output_room(model, len(ids), req)  # an encoder-decoder's own limit
            if echo_only:
                params = sampling_params(
                    req.model_copy(update={"max_tokens": 1}), len(ids), model.context_length, room
                )
            else:
                params = sampling_params(req, len(ids), model.context_length, room)
            params = dataclasses.replace(params, **extra)
            if adjust is not None:  # a compiled constraint (structured output, a tool call)
                params = await adjust(lm, params)
            capabilities.check(model, params, model_name=f"model {lm.name!r}")
            built.append((ids, params, echo(lm, ids) if echo is not None else None))
        choices = []
        for p, (ids, params, echo_text) in enumerate(built):
            for j in range(per_prompt):
                # Seeded sampling: each of the n sequences of a prompt gets its own stream.
                seeded = (
                    params
                    if params.seed is None or j == 0
                    else dataclasses.replace(params, seed=params.seed + j)
                )
                stream = lm.generation().submit(ids, seeded)
                choices.append(_Choice(p * per_prompt + j, stream, echo_text, echo_only, j == 0))
                stack.push_async_callback(stream.aclose)
        keep = req.n if best_of > req.n else None
        wanted = extra["logprobs"] is not None and req.logprobs not in (None, False)
        stream_of = Choices(choices, logprobs=wanted, keep=keep, group=per_prompt)
    except BaseException:
        await stack.aclose()
        raise
    return Generation(kind=kind, model=lm.name, stream=stream_of, stack=stack)


async def complete(service: Service, req: CompletionRequest, spec: ConstraintSpec | None) -> Generation:
    """A completions request on the several-choices path: every prompt of ``req``."""
    import anyio

    from hfd.daemon import fim, structured
    from hfd.daemon.schema import utf8_length

    def prompt_of(value: str | list[int]) -> Prompt:
        async def prompt(lm: LoadedModel) -> list[int]:
            if isinstance(value, list):
                return value
            model: Any = lm.model
            text = value if not req.suffix else fim.prompt(model, value, req.suffix, lm.name)
            service._check_prompt_size(utf8_length(text), model, "prompt")
            return list(await anyio.to_thread.run_sync(model.encode_prompt, text))

        return prompt

    def echo_of(value: str | list[int]) -> Callable[[LoadedModel, list[int]], str]:
        def echo(lm: LoadedModel, ids: list[int]) -> str:
            return value if isinstance(value, str) else str(lm.model.decode(ids))  # type: ignore[union-attr]

        return echo

    async def adjust(lm: LoadedModel, params: SamplingParams) -> SamplingParams:
        return await structured.constrain(lm.model, spec, params)  # type: ignore[arg-type]

    prompts = [(prompt_of(v), echo_of(v) if req.echo else None) for v in req.prompt_values()]
    return await generate(service, "completion", req, prompts, adjust=adjust)
