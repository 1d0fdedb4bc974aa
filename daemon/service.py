"""The core service: what both doors call. Transports translate; all model logic is here
and below (manager -> scheduler -> engine).

``chat``/``complete`` validate everything that can fail before the first token (unknown
model, wrong task, prompt too long, queue full), so a transport can still answer with a
proper status even for a streamed request; they return a ``Generation`` to iterate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import numpy as np

from hfd import __version__
from hfd.backends import capabilities
from hfd.backends.base import GenerationModel, SamplingParams
from hfd.client.errors import ContextLengthExceeded, InvalidRequest
from hfd.daemon import cache as rcache
from hfd.daemon import choices, embedding_ids, images, reqctx, sampling_request, structured, vision_chat
from hfd.daemon.cache import ResponseCache
from hfd.daemon.cache_streams import RecordingStream, ReplayStream
from hfd.daemon.models.loaded import LoadedModel
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.pulls import Pulls
from hfd.daemon.results import EmbeddingResult, Generation
from hfd.daemon.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse_keep_alive,
    utf8_length,
)
from hfd.daemon.settings import Settings
from hfd.daemon.tasks import seq2seq
from hfd.daemon.tasks.listing import listed_task
from hfd.daemon.tools.chat import ChatTools

__all__ = ["EmbeddingResult", "Generation", "Service", "sampling_params"]

log = logging.getLogger(__name__)

# OpenAI's default when a request gives no temperature.
DEFAULT_TEMPERATURE = 1.0


class Service:
    def __init__(
        self,
        settings: Settings,
        manager: ModelManager,
        *,
        cache: ResponseCache | None = None,
        pulls: Pulls | None = None,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.cache = cache if cache is not None else ResponseCache.from_settings(settings)
        # Pulls into the daemon's one store (hfd.daemon.app passes it; a service made alone
        # for a test gets one of its own).
        self.pulls = pulls if pulls is not None else Pulls(settings)
        self.started_at = time.time()

    # ------------------------------------------------------------------ models

    def models(self) -> list[dict[str, Any]]:
        loaded = {lm.name: lm for lm in self.manager.loaded()}
        out = []
        for spec in self.manager.specs():
            lm = loaded.get(spec.public_name)
            out.append(
                {
                    "id": spec.public_name,
                    "object": "model",
                    "created": int(self.started_at),
                    "owned_by": "hfd",
                    "ref": spec.ref,
                    "task": lm.task if lm else listed_task(spec, self.pulls.store),
                    "loaded": lm is not None,
                }
            )
        return out

    def ps(self) -> list[dict[str, Any]]:
        """The loaded models (``state`` "ready"), then each load in progress with its phase."""
        now = self.manager.now()
        return [{**lm.info(now), "state": "ready"} for lm in self.manager.loaded()] + self.manager.loading()

    def stats(self) -> dict[str, Any]:
        """Response cache and model manager counters, memory budgets and their use."""
        return {
            "cache": self.cache.stats() if self.cache is not None else {"enabled": False},
            "models": self.manager.stats(),
        }

    async def load(self, name: str, keep_alive: float | None = None) -> dict[str, Any]:
        lm = await self.manager.load(name, keep_alive)
        return lm.info(self.manager.now())

    async def unload(self, name: str) -> bool:
        return await self.manager.unload(name)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "uptime": round(time.time() - self.started_at, 3)}

    # ------------------------------------------------------------------ embeddings

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResult:
        if images.has_images(req):  # image items: an image-text model (CLIP, SigLIP)
            return await images.embed(self, req)
        ids = embedding_ids.token_ids(req)
        if ids is not None:  # the model's own token ids (LangChain's OpenAIEmbeddings sends them)
            return await embedding_ids.embed(self, req, ids)
        texts = req.texts()
        if len(texts) > self.settings.max_inputs_per_request:
            raise InvalidRequest(
                f"{len(texts)} inputs exceed the limit of {self.settings.max_inputs_per_request} per request",
                param="input",
            )
        # Bounded before tokenising: the tokenizer's work grows with the bytes, not the inputs.
        size = sum(utf8_length(t) for t in texts)
        if size > self.settings.max_input_bytes:
            raise InvalidRequest(
                f"the inputs are {size} bytes together; the limit is {self.settings.max_input_bytes} bytes per "
                "request. Send them in several requests.",
                param="input",
            )
        keep_alive = parse_keep_alive(req.keep_alive)
        cache = self.cache if req.cache else None
        identity = self.manager.identity(req.model) if cache is not None else None
        if cache is not None and identity is not None:
            hit = await _embedding_hit(cache, identity, req, self.manager.spec(req.model).public_name)
            if hit is not None:
                reqctx.note_tokens(hit.prompt_tokens)
                return hit
        async with self.manager.acquire(req.model, keep_alive) as lm:
            if lm.task == images.TASK:  # texts into an image-text model's space
                return await images.embed(self, req)
            if lm.task != "embed":
                raise InvalidRequest(
                    f"model {lm.name!r} is a {lm.task} model, not an embedding model", param="model"
                )
            if cache is not None and lm.identity != identity:
                hit = await _embedding_hit(cache, lm.identity, req, lm.name)
                if hit is not None:
                    reqctx.note_tokens(hit.prompt_tokens)
                    return hit
            result = await lm.encoder().embed(texts)
        vectors = result.vectors
        if req.dimensions is not None:
            vectors = _shorten(vectors, req.dimensions)
        if cache is not None:
            key = rcache.request_key("embed", lm.identity, req)
            await cache.aput(key, rcache.encode_embedding(vectors, result.prompt_tokens))
        reqctx.note_tokens(result.prompt_tokens)
        return EmbeddingResult(model=lm.name, vectors=vectors, prompt_tokens=result.prompt_tokens)

    # ------------------------------------------------------------------ generation

    async def chat(self, req: ChatCompletionRequest) -> Generation:
        req.check_supported()
        if vision_chat.has_images(req):  # image_url parts: a vision chat model (LLaVA, Qwen2-VL)
            return await vision_chat.chat(self, req)
        chat = ChatTools(req, getattr(self.manager.spec(req.model), "tool_parser", None))

        async def prompt(lm: LoadedModel) -> list[int]:
            seq2seq.refuse_chat(lm.task, req)  # tools, which a seq2seq model cannot call
            model: GenerationModel = lm.model  # type: ignore[assignment]
            self._check_prompt_size(chat.prompt_bytes(), model, "messages")
            return await anyio.to_thread.run_sync(chat.template_call(lm))

        spec = structured.constraint_spec(req)

        async def adjust(lm: LoadedModel, params: SamplingParams) -> SamplingParams:
            params = await chat.constrain(lm, params)  # a required or named tool call comes first
            return (
                params
                if params.constraint is not None
                else await structured.constrain(lm.model, spec, params)
            )

        req = chat.cache_request(req, self.manager.identity(req.model))
        if sampling_request.wants_choices(req):  # n > 1, logprobs
            gen = await choices.generate(self, "chat", req, [(prompt, None)], adjust=adjust)
        else:
            gen = await self._generate("chat", req, prompt, adjust=adjust)
        gen.tools = chat.output()
        return gen

    async def complete(self, req: CompletionRequest) -> Generation:
        req.check_supported()
        if sampling_request.wants_choices(req):  # n, best_of, echo, logprobs, several prompts
            return await choices.complete(self, req, structured.constraint_spec(req))
        value = req.prompt_value()

        async def prompt(lm: LoadedModel) -> list[int]:
            if isinstance(value, list):
                return value
            model: GenerationModel = lm.model  # type: ignore[assignment]
            self._check_prompt_size(utf8_length(value), model, "prompt")
            return await anyio.to_thread.run_sync(model.encode_prompt, value)

        spec = structured.constraint_spec(req)

        async def adjust(lm: LoadedModel, params: SamplingParams) -> SamplingParams:
            return await structured.constrain(lm.model, spec, params)

        return await self._generate("completion", req, prompt, adjust=adjust)

    def _check_prompt_size(self, size: int, model: GenerationModel, param: str) -> None:
        """Refuse, before tokenising, a prompt that cannot fit the context at any plausible
        tokenisation: no ordinary token spans more than ``prompt_bytes_per_token`` bytes, so a
        longer prompt would be refused after tokenising anyway, having cost seconds of CPU."""
        context = int(model.context_length)
        limit = context * self.settings.prompt_bytes_per_token
        if context > 0 and size > limit:
            raise ContextLengthExceeded(
                f"this model's maximum context length is {context} tokens; the prompt is {size} bytes, more "
                f"than {context} tokens of text can hold (at most {limit} bytes). Shorten the prompt.",
                param=param,
                details={"prompt_bytes": size, "max_prompt_bytes": limit, "context_length": context},
            )

    async def _generate(
        self,
        kind: str,
        req: ChatCompletionRequest | CompletionRequest,
        prompt: Callable[[LoadedModel], Awaitable[list[int]]],
        adjust: Callable[[LoadedModel, SamplingParams], Awaitable[SamplingParams]] | None = None,
    ) -> Generation:
        keep_alive = parse_keep_alive(req.keep_alive)
        cacheable = req.cache and rcache.generation_cacheable(req.temperature, req.seed)
        cache = self.cache if cacheable else None
        identity = self.manager.identity(req.model) if cache is not None else None
        if cache is not None and identity is not None:
            hit = await _generation_hit(cache, kind, identity, req, self.manager.spec(req.model).public_name)
            if hit is not None:
                return hit
        stack = AsyncExitStack()
        try:
            lm = await stack.enter_async_context(self.manager.acquire(req.model, keep_alive))
            if lm.task == vision_chat.TASK and isinstance(
                req, ChatCompletionRequest
            ):  # a chat without images
                return await vision_chat.chat(self, req, lm, stack)
            if lm.task not in ("generate", seq2seq.TASK):
                raise InvalidRequest(
                    f"model {lm.name!r} is an embedding model; use /v1/embeddings", param="model"
                )
            if cache is not None and lm.identity != identity:
                hit = await _generation_hit(cache, kind, lm.identity, req, lm.name)
                if hit is not None:
                    await stack.aclose()
                    return hit
            ids = await prompt(lm)
            room = seq2seq.output_room(lm.model, len(ids), req)  # an encoder-decoder's own limit
            params = sampling_params(req, len(ids), lm.model.context_length, room)  # type: ignore[union-attr]
            if adjust is not None:  # per-request engine state (a compiled constraint)
                params = await adjust(lm, params)
            capabilities.check(lm.model, params, model_name=f"model {lm.name!r}")
            stream: Any = lm.generation().submit(ids, params)
            if cache is not None:
                stream = RecordingStream(stream, cache, rcache.request_key(kind, lm.identity, req))
        except BaseException:
            await stack.aclose()
            raise
        return Generation(kind=kind, model=lm.name, stream=stream, stack=stack)


async def _embedding_hit(
    cache: ResponseCache, identity: str, req: EmbeddingRequest, model: str
) -> EmbeddingResult | None:
    value = await cache.aget(rcache.request_key("embed", identity, req))
    if value is None:
        return None
    vectors, prompt_tokens = rcache.decode_embedding(value)
    return EmbeddingResult(model=model, vectors=vectors, prompt_tokens=prompt_tokens, cached=True)


async def _generation_hit(
    cache: ResponseCache, kind: str, identity: str, req: ChatCompletionRequest | CompletionRequest, model: str
) -> Generation | None:
    value = await cache.aget(rcache.request_key(kind, identity, req))
    if value is None:
        return None
    chunks, prompt_tokens = rcache.decode_generation(value)
    return Generation(
        kind=kind, model=model, stream=ReplayStream(chunks, prompt_tokens), stack=AsyncExitStack()
    )


def sampling_params(
    req: ChatCompletionRequest | CompletionRequest, prompt_len: int, context: int, room: int | None = None
) -> SamplingParams:
    """Per-request sampling; refuses prompts (plus the asked-for output) beyond the context.
    ``room``: the completion's own limit (an encoder-decoder's decoder), else what the context leaves."""
    if prompt_len == 0:
        raise InvalidRequest("the prompt is empty", param="prompt")
    room = context - prompt_len if room is None else room
    limit = req.token_limit()
    if room < 1 or (limit is not None and limit > room):
        asked = f" and {limit} for the completion" if limit is not None else ""
        raise ContextLengthExceeded(
            f"this model's maximum context length is {context} tokens; the request has {prompt_len} "
            f"tokens in the prompt{asked}. Shorten the prompt or lower max_tokens.",
            param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
        )
    temperature = DEFAULT_TEMPERATURE if req.temperature is None else req.temperature
    return SamplingParams(
        max_tokens=limit if limit is not None else room,
        temperature=temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.engine_seed(),
        ignore_eos=req.ignore_eos,
        min_tokens=min(req.min_tokens, limit if limit is not None else room),
        stop=req.stop_list(),
        **sampling_request.engine_fields(req),
    )


def _shorten(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Matryoshka-style truncation, re-normalised; refuses growing the vector."""
    if dimensions > vectors.shape[1]:
        raise InvalidRequest(
            f"dimensions={dimensions} exceeds the model's {vectors.shape[1]}", param="dimensions"
        )
    cut = np.ascontiguousarray(vectors[:, :dimensions])
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.maximum(norms, 1e-12)).astype(np.float32)
