"""``POST /tokenize`` and ``POST /detokenize`` (and the IPC ops ``tokenize`` / ``detokenize``):
a model's tokenizer, as vLLM and llama.cpp's server expose it.

Both shapes share the routes, as their fields do not clash:

- vLLM: ``{model, prompt}`` or ``{model, messages, add_generation_prompt}`` (the model's chat
  template applied, as a chat completion would render it) -> ``{tokens, count, max_model_len}``;
  ``{model, tokens}`` -> ``{prompt}``;
- llama.cpp: ``{content}`` -> ``{tokens}``; ``{tokens}`` -> ``{content}``. llama.cpp serves one
  model and its clients send none: without ``model``, the one generation model configured is
  meant (a 400 naming ``model`` when there are several).

Replies carry both spellings (``prompt`` and ``content``), so each client reads its own. Inputs
are bounded before any work: text by ``max_input_bytes``, token lists by ``MAX_TOKENS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from hfd.client.errors import InvalidRequest
from hfd.daemon.schema import ChatMessage, KeepAlive, parse_keep_alive, utf8_length

if TYPE_CHECKING:
    from hfd.daemon.models.loaded import LoadedModel
    from hfd.daemon.service import Service

# Most token ids one detokenize request may send (a long context's worth; 4 MiB of JSON ints).
MAX_TOKENS = 1 << 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class TokenizeRequest(_Body):
    model: Annotated[str, Field(min_length=1)] | None = None
    prompt: str | None = None  # vLLM
    content: str | None = None  # llama.cpp
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool | None = None
    with_pieces: bool = False  # llama.cpp: [{id, piece}] instead of ids
    keep_alive: KeepAlive = None


class DetokenizeRequest(_Body):
    model: Annotated[str, Field(min_length=1)] | None = None
    tokens: Annotated[list[Annotated[StrictInt, Field(ge=0, lt=2**31)]], Field(max_length=MAX_TOKENS)]
    keep_alive: KeepAlive = None


def _model_name(service: Service, model: str | None) -> str:
    if model is not None:
        return model
    names = [m["id"] for m in service.models() if m.get("task") == "generate"]
    if len(names) != 1:
        raise InvalidRequest(
            "name the model: this daemon serves "
            + (f"{len(names)} generation models" if names else "no generation model"),
            param="model",
        )
    return names[0]


def _text_input(req: TokenizeRequest) -> tuple[str, str | list[dict[str, Any]]]:
    """(param, value): the one input of a tokenize request."""
    given: list[tuple[str, str | list[dict[str, Any]]]] = [
        (n, v) for n, v in (("prompt", req.prompt), ("content", req.content)) if v is not None
    ]
    if req.messages is not None:
        given.append(("messages", [{"role": m.role, "content": m.text()} for m in req.messages]))
    if len(given) != 1:
        raise InvalidRequest(
            "send exactly one of prompt, content (text) or messages (a chat)",
            param=given[1][0] if given else "prompt",
        )
    return given[0]


def _size(value: str | list[dict[str, Any]]) -> int:
    if isinstance(value, str):
        return utf8_length(value)
    return sum(utf8_length(m["content"]) for m in value)


async def _ids(lm: LoadedModel, param: str, value: str | list[dict[str, Any]]) -> list[int]:
    if lm.task == "generate":
        model: Any = lm.model
        if isinstance(value, str):
            return list(await anyio.to_thread.run_sync(model.encode_prompt, value))
        return list(await anyio.to_thread.run_sync(model.apply_chat_template, value))
    if not isinstance(value, str):
        raise InvalidRequest(f"model {lm.name!r} is an embedding model: it has no chat template", param=param)
    batch = await anyio.to_thread.run_sync(lm.model.tokenize, [value])  # type: ignore[union-attr]
    return list(batch.ids[0])


async def tokenize(service: Service, req: TokenizeRequest) -> dict[str, Any]:
    param, value = _text_input(req)
    chat = param == "messages"
    # Rendering is what a chat completion or a completion does; other choices are not offered.
    if chat and not req.add_generation_prompt:
        raise InvalidRequest(
            "add_generation_prompt=false is not supported: the chat template is rendered as a chat "
            "completion renders it, with the generation prompt",
            param="add_generation_prompt",
        )
    if req.add_special_tokens is not None and req.add_special_tokens is chat:
        raise InvalidRequest(
            f"add_special_tokens={str(req.add_special_tokens).lower()} is not supported with {param}: "
            + ("the chat template places the special tokens" if chat else "the tokenizer's own rules apply"),
            param="add_special_tokens",
        )
    if req.with_pieces:
        raise InvalidRequest("with_pieces is not supported; detokenize the ids", param="with_pieces")
    size = _size(value)
    if size > service.settings.max_input_bytes:
        raise InvalidRequest(
            f"the input is {size} bytes; the limit is {service.settings.max_input_bytes} bytes", param=param
        )
    name = _model_name(service, req.model)
    async with service.manager.acquire(name, parse_keep_alive(req.keep_alive)) as lm:
        ids = await _ids(lm, param, value)
        context = int(getattr(lm.model, "context_length", 0) or getattr(lm.model, "max_length", 0) or 0)
    return {"tokens": ids, "count": len(ids), "max_model_len": context}


async def detokenize(service: Service, req: DetokenizeRequest) -> dict[str, Any]:
    name = _model_name(service, req.model)
    async with service.manager.acquire(name, parse_keep_alive(req.keep_alive)) as lm:
        if lm.task != "generate":
            raise InvalidRequest(
                f"model {lm.name!r} is an embedding model: it cannot detokenize", param="model"
            )
        model: Any = lm.model
        try:
            text = str(await anyio.to_thread.run_sync(model.decode, req.tokens))
        except (OverflowError, ValueError, TypeError, IndexError, KeyError) as exc:
            # Tokenizers refuse ids beyond their vocabulary in their own ways.
            raise InvalidRequest(
                "the token ids are not all in this model's vocabulary", param="tokens"
            ) from exc
    return {"prompt": text, "content": text}
