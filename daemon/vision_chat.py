"""Chat with images: ``image_url`` content parts on ``/v1/chat/completions`` (both doors), served
by a vision chat model (``hfd.daemon.tasks.vision``, engine ``hfd.backends.vlm_torch``).

A part is OpenAI's ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,...",
"detail": "auto" | "low" | "high"}}``; the Responses API's ``input_image`` and Anthropic's base64
``image`` blocks are translated to it. Images are decoded and bounded by ``hfd.daemon.images``
(``image_max_bytes``, ``image_max_pixels``; http(s) URLs only with ``image_fetch_urls``), at most
``image_max_per_request`` per request; every refusal is a 400 naming the part
(``messages.<i>.content.<j>``). ``detail: "low"`` shrinks an image to 512 pixels on its longer
side before the model's processor sees it (OpenAI's low-detail size); ``auto`` and ``high`` give
the processor the image as sent.

Requests go to the model's media scheduler (``hfd.daemon.media_worker``) through its batch hook:
those waiting together with a compatible sampling (``hfd.backends.vlm_batch.batch_key``: greedy,
or the same unseeded sampling) share one batched ``generate`` on an engine that has
``generate_batch`` (torch), at most ``max_running`` of them; others run one at a time. Tokens
stream as they are generated, through the incremental detokenizer and the stop-string matcher
the continuous batcher uses, and a request's reply ends when its own row does. A text-only chat model sent an image part answers 400; a
vision chat model also answers chats without images. Tools, structured output, ``n`` > 1 and
logprobs are refused with a 400 naming the field (the engine honours plain sampling only).
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio

from hfd.backends import capabilities
from hfd.client.errors import Cancelled, HfdError, InternalError, InvalidRequest, Overloaded
from hfd.daemon.images import decode_image
from hfd.daemon.scheduler.detok import IncrementalDetokenizer, StopMatcher
from hfd.daemon.scheduler.generation import TokenChunk
from hfd.daemon.schema import ChatCompletionRequest, parse_keep_alive
from hfd.daemon.tasks.vision import TASK

if TYPE_CHECKING:
    from hfd.backends.base import FinishReason, SamplingParams
    from hfd.backends.vlm_torch import TorchVisionChat, VisionPrompt
    from hfd.daemon.media_worker import MediaScheduler
    from hfd.daemon.models.loaded import LoadedModel
    from hfd.daemon.service import Generation, Service
    from hfd.daemon.settings import Settings

IMAGE_PART = "image_url"
LOW_DETAIL_SIDE = 512
# Streams closed while the call their row was in still serves others (kept until it ends).
_LEFT: set[asyncio.Task[None]] = set()


def image_parts(req: ChatCompletionRequest) -> list[str]:
    """The ``param`` of every image part of the request, in order."""
    out: list[str] = []
    for i, message in enumerate(req.messages):
        if isinstance(message.content, list):
            out.extend(
                f"messages.{i}.content.{j}" for j, p in enumerate(message.content) if p.type == IMAGE_PART
            )
    return out


def has_images(req: ChatCompletionRequest) -> bool:
    return bool(image_parts(req))


def _refuse_unsupported(req: ChatCompletionRequest) -> None:
    for name, value in (("tools", req.tools), ("tool_choice", req.tool_choice), ("response_format", req.response_format),
                        ("guided_json", req.guided_json), ("guided_regex", req.guided_regex),
                        ("guided_choice", req.guided_choice), ("guided_grammar", req.guided_grammar),
                        ("best_of", req.best_of)):  # fmt: skip
        if value is not None:
            raise InvalidRequest(f"{name} is not supported with vision chat models", param=name)
    if req.n != 1:
        raise InvalidRequest("n > 1 is not supported with vision chat models", param="n")
    if req.logprobs:
        raise InvalidRequest("logprobs are not supported with vision chat models", param="logprobs")


def hf_messages(req: ChatCompletionRequest) -> tuple[list[dict[str, Any]], list[tuple[str, str, str | None]]]:
    """The messages in Hugging Face's content-list form (image parts as ``{"type": "image"}``)
    and each image's (source, param, detail), in order."""
    messages: list[dict[str, Any]] = []
    images: list[tuple[str, str, str | None]] = []
    for i, message in enumerate(req.messages):
        if message.role == "tool" or message.tool_calls:
            raise InvalidRequest(
                "tool messages are not supported with vision chat models", param=f"messages.{i}"
            )
        parts: list[dict[str, Any]] = []
        content = message.content
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif content is not None:
            for j, part in enumerate(content):
                param = f"messages.{i}.content.{j}"
                if part.type == "text" and part.text is not None:
                    parts.append({"type": "text", "text": part.text})
                elif part.type == IMAGE_PART and part.image_url is not None:
                    parts.append({"type": "image"})
                    images.append((part.image_url.url, param, part.image_url.detail))
                else:
                    raise InvalidRequest(
                        f"content part of type {part.type!r} is not supported; send text and image_url parts",
                        param=param,
                    )
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": parts})
    return messages, images


def decode_images(images: list[tuple[str, str, str | None]], settings: Settings) -> list[Any]:
    """Decoded RGB images within the bounds (400 naming the part otherwise)."""
    if len(images) > settings.image_max_per_request:
        raise InvalidRequest(
            f"{len(images)} images exceed the limit of {settings.image_max_per_request} per request",
            param="messages", details={"images": len(images), "max_images": settings.image_max_per_request},
        )  # fmt: skip
    out: list[Any] = []
    for source, param, detail in images:
        image = decode_image(source, settings, f"{param}.image_url.url")
        if detail == "low" and max(image.size) > LOW_DETAIL_SIDE:
            image.thumbnail((LOW_DETAIL_SIDE, LOW_DETAIL_SIDE))
        out.append(image)
    return out


def _text_only(lm: LoadedModel, req: ChatCompletionRequest) -> InvalidRequest:
    return InvalidRequest(
        f"model {lm.name!r} is a {lm.task} model and does not take images; image_url parts need a vision "
        "chat model (LLaVA, Qwen2-VL, SmolVLM, Gemma 3 with a vision tower)",
        param=image_parts(req)[0],
    )


async def chat(service: Service, req: ChatCompletionRequest, lm: LoadedModel | None = None,
               stack: AsyncExitStack | None = None) -> Generation:  # fmt: skip
    """Serve a chat for a vision chat model: ``lm``/``stack`` when the caller holds the model
    already (a chat without images that reached one), else acquired here."""
    from hfd.daemon.service import Generation, sampling_params

    _refuse_unsupported(req)
    messages, sources = hf_messages(req)
    if len(sources) > service.settings.image_max_per_request:
        decode_images(sources, service.settings)  # refuses before the model is loaded
    stack = stack if stack is not None else AsyncExitStack()
    try:
        if lm is None:
            lm = await stack.enter_async_context(
                service.manager.acquire(req.model, parse_keep_alive(req.keep_alive))
            )
        if lm.task != TASK:
            raise _text_only(lm, req)
        model: TorchVisionChat = lm.model  # type: ignore[assignment]
        scheduler: MediaScheduler = lm.scheduler  # type: ignore[assignment]
        images = await anyio.to_thread.run_sync(decode_images, sources, service.settings)
        prompt = await anyio.to_thread.run_sync(model.prepare, messages, images)
        params = sampling_params(req, prompt.tokens, model.context_length)
        capabilities.check(model, params, model_name=f"model {lm.name!r}")
        if scheduler.active >= scheduler.max_queue:
            raise Overloaded(f"model {lm.name!r} has {scheduler.active} requests queued; try again shortly")
        stream = VisionStream(scheduler, model, prompt, params)
    except BaseException:
        await stack.aclose()
        raise
    return Generation(kind="chat", model=lm.name, stream=stream, stack=stack)


class VisionStream:
    """One vision chat's output, as the continuous batcher's streams give it: an async iterator
    of ``TokenChunk`` with ``prompt_tokens``, ``completion_tokens`` and ``finish_reason``.

    The engine call runs on the media scheduler's worker thread; each token is detokenized and
    stop-matched there and handed to the event loop. Closing early sets the engine's stop
    event (generation ends after the current token) or drops the request while it waits.
    """

    cached = False

    def __init__(self, scheduler: MediaScheduler, model: TorchVisionChat, prompt: VisionPrompt,
                 params: SamplingParams) -> None:  # fmt: skip
        self.prompt_tokens = prompt.tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._params = params
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[TokenChunk | HfdError] = asyncio.Queue()
        self._stop = threading.Event()
        self._detok = IncrementalDetokenizer(model.decode, prompt.ids)
        self._stops = StopMatcher(params.stop)
        self._generated = 0
        self._ended = False  # the last chunk was queued (worker side)
        self._done = False  # the reader saw the last chunk
        # Closing cancels through this scope, never task.cancel(): a native cancel would break
        # the scheduler's shield around an engine call the task is making for others too.
        self._scope = anyio.CancelScope()
        self._task = asyncio.ensure_future(self._run(scheduler, model, prompt))

    def _put(self, item: TokenChunk | HfdError) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _emit(self, ids: list[int]) -> None:  # on the worker thread
        if self._ended:
            return
        self._generated += len(ids)
        text = self._stops.push(self._detok.push(ids), match=self._generated >= self._params.min_tokens)
        if self._stops.stopped:
            self._ended = True
            self._stop.set()
            self._put(TokenChunk(text, ids, "stop"))
        else:
            self._put(TokenChunk(text, ids, None))

    def _tail(self) -> str:
        return self._stops.push(self._detok.flush(), match=False) + self._stops.flush()

    def _finished(self, finish: FinishReason) -> None:  # on the worker thread, as the row ends
        if not self._ended:
            self._ended = True
            self._put(TokenChunk(self._tail(), [], finish))

    async def _run(self, scheduler: MediaScheduler, model: TorchVisionChat, prompt: VisionPrompt) -> None:
        with self._scope:
            await self._serve(scheduler, model, prompt)

    async def _serve(self, scheduler: MediaScheduler, model: TorchVisionChat, prompt: VisionPrompt) -> None:
        from hfd.backends.vlm_batch import VisionRow, batch_key

        try:
            batched = getattr(model, "generate_batch", None)
            if batched is None:  # an engine that takes one request per call
                finish = await scheduler.run(model.generate, prompt, self._params, self._emit, self._stop)
            else:
                row = VisionRow(prompt, self._params, self._emit, self._stop, self._finished)
                finish = await scheduler.run_batched(batched, row, key=batch_key(self._params),
                                                     limit=int(getattr(model, "max_rows", 1)))  # fmt: skip
        except HfdError as exc:
            self._ended = True
            self._queue.put_nowait(exc)
            return
        except asyncio.CancelledError:
            self._ended = True
            self._queue.put_nowait(Cancelled("the request was cancelled"))
            raise
        except Exception as exc:  # the scheduler wraps engine errors; anything else is ours
            self._ended = True
            self._queue.put_nowait(InternalError(f"vision chat failed: {type(exc).__name__}: {exc}"))
            return
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(TokenChunk(self._tail(), [], finish))

    def __aiter__(self) -> VisionStream:
        return self

    async def __anext__(self) -> TokenChunk:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, HfdError):
            self._done = True
            self.finish_reason = "cancelled" if isinstance(item, Cancelled) else "error"
            raise item
        self.completion_tokens += len(item.token_ids)
        if item.finish_reason is not None:
            self._done = True
            self.finish_reason = item.finish_reason
        return item

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self.finish_reason = "cancelled"
        self._stop.set()  # a running generation ends after its current token
        if not self._task.done():
            self._scope.cancel()  # one still waiting for its turn never reaches the engine
            if self._ended:  # this row is over; the batched call it was in may go on for others
                _LEFT.add(self._task)
                self._task.add_done_callback(_LEFT.discard)
                return
        try:
            await self._task
        except (asyncio.CancelledError, HfdError):
            pass
